"""The web UI's pages through Flask's test client: signing in and out, CSRF, scopes, and each
page showing the real state of a host whose flows received webhooks and ran.

Runs are made the way production makes them: a webhook POSTed to the flow's URL, then one
synchronous executor tick (``engine.run_due``).
"""
from __future__ import annotations

import re

import pytest

from connector import auth, engine, flows
from connector.store import Flow, Run
from connector.web import create_app

SECRET = "sk_live_do_not_show_me"


def catch_flow(name: str, **changes) -> dict:
    """Any webhook -> upper-case its text; an item without text fails the step."""
    data = {"name": name, "description": f"{name}: shout the text",
            "trigger": {"key": "webhook.catch"},
            "steps": [{"name": "shout", "action": "formatter.text",
                       "inputs": {"operation": "upper", "text": "{{ trigger.text }}"}}]}
    data.update(changes)
    return data


@pytest.fixture
def app(host):
    return create_app(host)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def world(host, client):
    """Two flows on webhooks: `catch` with 2 succeeded runs and 1 failed, `fragile` paused
    after its first failure, `idle` off; one Samora connection."""
    host.add_connection("samora", "samora", {"api_key": SECRET}, "http://127.0.0.1:9/samora")
    for name, extra in (("catch", {}), ("fragile", {"on_failure": {"pause_after": 1}}),
                        ("idle", {})):
        flow = flows.save(host, catch_flow(name, **extra))
        if name != "idle":
            flows.enable(host, flow)
    for name, body in (("catch", {"text": "hello"}), ("catch", {"text": "again"}),
                       ("catch", {"other": 1}), ("fragile", {"nothing": True})):
        token = Flow.get(Flow.name == name).webhook_token
        assert client.post(f"/hooks/{token}", json=body).status_code == 200
        engine.run_due(host)
    return host


def login_token(client, path="/ui/login") -> str:
    page = client.get(path)
    assert page.status_code == 200
    return re.search(r'name="login_token" value="([^"]+)"', page.text).group(1)


def sign_in(client, username="ada", password="analytical-engine", **extra):
    data = {"method": "password", "username": username, "password": password,
            "login_token": login_token(client), **extra}
    return client.post("/ui/login", data=data)


def csrf_of(page) -> str:
    return re.search(r'<meta name="csrf-token" content="([^"]*)"', page.text).group(1)


@pytest.fixture
def writer(client):
    auth.add_user("ada", "analytical-engine", scope="write")
    assert sign_in(client).status_code == 302
    return client


# -- signing in and out ------------------------------------------------------------------------

def test_pages_send_strangers_to_the_sign_in_page(client):
    assert client.get("/").headers["Location"] == "/ui/"
    assert client.get("/ui/").headers["Location"] == "/ui/flows"
    answer = client.get("/ui/runs?status=failed")
    assert answer.status_code == 302
    assert answer.headers["Location"] == "/ui/login?next=/ui/runs?status%3Dfailed"
    page = client.get("/ui/login")
    assert "Sign in to connector" in page.text and 'for="f-username"' in page.text
    assert ">None<" not in page.text
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
    missing = client.get("/ui/no-such-page")
    assert missing.status_code == 404 and missing.mimetype == "text/html"
    assert "There is no such page." in missing.text
    assert client.get("/api/v1/nope").get_json()["error"]["code"] == "NOT_FOUND"


def test_a_user_signs_in_with_a_password_and_lands_where_they_were_going(client, world):
    auth.add_user("ada", "analytical-engine", scope="write")
    answer = sign_in(client, next="/ui/runs?status=failed")
    assert answer.status_code == 302 and answer.headers["Location"] == "/ui/runs?status=failed"
    cookie = next(h for h in answer.headers.getlist("Set-Cookie")
                  if h.startswith(auth.SESSION_COOKIE + "="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    page = client.get("/ui/runs?status=failed")
    assert page.status_code == 200 and '<span class="user"' in page.text and ">ada<" in page.text
    assert client.get("/ui/login").headers["Location"] == "/ui/flows"  # already signed in


def test_over_https_the_session_cookie_is_secure(client):
    auth.add_user("ada", "analytical-engine")
    token = re.search(r'name="login_token" value="([^"]+)"',
                      client.get("/ui/login", base_url="https://ui.example").text).group(1)
    answer = client.post("/ui/login", base_url="https://ui.example", data={
        "method": "password", "username": "ada", "password": "analytical-engine",
        "login_token": token})
    cookie = next(h for h in answer.headers.getlist("Set-Cookie")
                  if h.startswith(auth.SESSION_COOKIE + "="))
    assert "Secure" in cookie


def test_a_wrong_password_or_an_unknown_user_gets_one_message_and_no_session(client):
    auth.add_user("ada", "analytical-engine")
    for username, password in (("ada", "wrong-password"), ("nobody", "analytical-engine")):
        answer = sign_in(client, username, password)
        assert answer.status_code == 401
        assert '<p class="form-error" role="alert">Wrong username or password.</p>' in answer.text
        assert client.get_cookie(auth.SESSION_COOKIE) is None
    empty = sign_in(client, "", "")
    assert empty.status_code == 400
    assert 'data-error-for="username">Enter your username.</p>' in empty.text
    assert 'data-error-for="password">Enter your password.</p>' in empty.text


def test_an_api_key_signs_in_and_a_revoked_one_does_not(client):
    row, raw = auth.create_key("dashboard", "read")
    data = {"method": "key", "api_key": raw, "login_token": login_token(client)}
    assert client.post("/ui/login", data=data).status_code == 302
    assert ">dashboard<" in client.get("/ui/flows").text
    auth.revoke_key(row.id)
    assert client.get("/ui/flows").status_code == 302  # its session ended with it
    data["login_token"] = login_token(client)
    refused = client.post("/ui/login", data=data)
    assert refused.status_code == 401
    assert 'data-error-for="api_key">This API key is not valid or was revoked.</p>' in refused.text


def test_the_sign_in_form_needs_its_own_token(client):
    auth.add_user("ada", "analytical-engine")
    login_token(client)  # the cookie is set, but the form's token is not sent
    answer = client.post("/ui/login", data={"method": "password", "username": "ada",
                                            "password": "analytical-engine"})
    assert answer.status_code == 400 and "The sign-in form expired" in answer.text
    assert client.get_cookie(auth.SESSION_COOKIE) is None


def test_next_never_leaves_the_ui(client):
    auth.add_user("ada", "analytical-engine")
    for target in ("//evil.example/ui/", "https://evil.example/", "/api/v1/keys", "/ui\\x"):
        client.delete_cookie(auth.SESSION_COOKIE)
        assert sign_in(client, next=target).headers["Location"] == "/ui/flows"


def test_changes_need_the_csrf_token_and_sign_out_needs_it_too(writer, world):
    page = writer.get("/ui/flows")
    csrf = csrf_of(page)
    assert csrf
    refused = writer.post("/api/v1/flows/idle/enable", json={})
    assert refused.status_code == 403 and "CSRF" in refused.get_json()["error"]["message"]
    assert not Flow.get(Flow.name == "idle").enabled
    done = writer.post("/api/v1/flows/idle/enable", json={}, headers={"X-CSRF-Token": csrf})
    assert done.status_code == 200 and Flow.get(Flow.name == "idle").enabled
    forged = writer.post("/ui/logout", data={"csrf_token": "forged"})
    assert forged.status_code == 403 and "Not signed out" in forged.text
    assert writer.get("/ui/flows").status_code == 200
    out = writer.post("/ui/logout", data={"csrf_token": csrf})
    assert out.status_code == 302 and out.headers["Location"] == "/ui/login"
    assert writer.get_cookie(auth.SESSION_COOKIE) is None
    assert writer.get("/ui/flows").status_code == 302


# -- the pages, with real data -----------------------------------------------------------------

def test_the_flows_page_shows_state_counts_and_the_switches(writer, world):
    page = writer.get("/ui/flows").text
    rows = {m.group(1): m.group(0) for m in
            re.finditer(r'<tr data-flow="([^"]+)">.*?</tr>', page, re.S)}
    assert list(rows) == ["catch", "fragile", "idle"]
    assert "state-on" in rows["catch"] and "2 succeeded" in rows["catch"]
    assert "1 failed" in rows["catch"] and 'data-toggle-flow="catch"' in rows["catch"]
    assert re.search(r'data-toggle-flow="catch"\s+checked', rows["catch"])
    assert "state-paused" in rows["fragile"]
    assert "paused after 1 failed runs in a row" in rows["fragile"]
    assert 'data-path="/flows/fragile/resume"' in rows["fragile"]
    assert "state-off" in rows["idle"] and "never" in rows["idle"]
    assert "Catch webhook" in rows["catch"]  # the trigger's label
    assert 'href="/api/v1/flows/catch/export"' in rows["catch"]
    assert 'href="/ui/flows/new"' in page and 'href="/ui/flows/catch/edit"' in page


def test_the_flow_page_shows_its_definition_and_failure_settings(writer, world):
    page = writer.get("/ui/flows/fragile").text
    assert "Paused:</strong> paused after 1 failed runs in a row" in page
    assert 'name="on_failure.pause_after" type="number" value="1"' in page
    assert re.search(r'<option value="catch">catch</option>', page)  # error flow choices
    assert '<option value="fragile"' not in page  # not its own error flow
    assert "/hooks/" in page  # the webhook URL
    assert "trigger:\n  key: webhook.catch" in page  # the exported YAML
    assert writer.get("/ui/flows/nope").status_code == 404


def test_runs_are_listed_filtered_and_paginated(writer, world):
    every = writer.get("/ui/runs").text
    assert re.findall(r'data-status="(\w+)"', every) == ["failed", "failed", "succeeded",
                                                           "succeeded"]
    failed = writer.get("/ui/flows/catch/runs?status=failed").text
    assert re.findall(r'data-status="(\w+)"', failed) == ["failed"]
    assert "Replay all failed (1)" in failed
    assert "template error: &#39;dict object&#39; has no attribute" in failed  # the error
    first = writer.get("/ui/runs?limit=3").text
    assert len(re.findall(r"<tr data-run=", first)) == 3
    assert "Page 1 of 2" in first and 'href="/ui/runs?limit=3&amp;page=2"' in first
    second = writer.get("/ui/runs?limit=3&page=2").text
    assert len(re.findall(r"<tr data-run=", second)) == 1
    bad = writer.get("/ui/runs?status=lost")
    assert bad.status_code == 400 and "status: Must be one of" in bad.text


def test_the_run_page_shows_the_item_and_each_step(writer, world):
    ok = Run.select().where(Run.status == Run.SUCCEEDED).order_by(Run.id).first()
    page = writer.get(f"/ui/runs/{ok.id}").text
    assert "&#34;text&#34;: &#34;hello&#34;" in page  # the trigger item
    assert "HELLO" in page  # the step's output
    assert 'id="step-shout"' in page and "<code>formatter.text</code>" in page
    assert "Replay from" not in page  # only failed runs replay from a step
    bad = Run.select().where(Run.status == Run.FAILED).order_by(Run.id).first()
    page = writer.get(f"/ui/runs/{bad.id}").text
    assert "Replay from shout" in page and 'data-path="/runs/%d/replay"' % bad.id in page
    assert 'id="replay-item"' in page and 'data-error-for="item"' in page
    assert "has no attribute" in page and "<caption>Attempts</caption>" in page
    assert writer.get("/ui/runs/9999").status_code == 404


def test_connections_never_show_a_secret(writer, world):
    page = writer.get("/ui/connections").text
    assert SECRET not in page and "********" in page
    assert 'data-test-connection="samora"' in page
    assert 'id="add-samora-api_key" name="credentials.api_key"' in page
    assert 'type="password"' in page
    assert 'data-app="contacts_api"' in page and 'add-contacts_api-org_id' in page
    assert 'data-app="formatter"' not in page  # nothing to connect to


def test_the_catalog_lists_apps_with_their_triggers_actions_and_inputs(writer, world):
    index = writer.get("/ui/catalog").text
    assert 'href="/ui/catalog/samora"' in index and "Samora AI" in index
    samora = writer.get("/ui/catalog/samora").text
    assert "Call finished" in samora and "samora.call_finished" in samora
    assert "Organization API key" in samora and "Sent in the X-API-Key header." in samora
    assert "Triggers" in samora and "Actions" in samora
    assert writer.get("/ui/catalog/nope").status_code == 404


def test_a_read_scope_user_sees_everything_but_no_button_that_changes_things(client, world):
    auth.add_user("reader", "reads-only-please", scope="read")
    assert sign_in(client, "reader", "reads-only-please").status_code == 302
    pages = [client.get(p) for p in ("/ui/flows", "/ui/flows/catch", "/ui/flows/catch/runs",
                                     "/ui/connections")]
    bad = Run.select().where(Run.status == Run.FAILED).first()
    pages.append(client.get(f"/ui/runs/{bad.id}"))
    for page in pages:
        assert page.status_code == 200
        for mutating in ("data-toggle-flow", 'data-call="', "New flow", "/edit",
                         'id="add-connection"', "data-replace-connection", 'id="replay-item"',
                         'id="flow-settings"'):
            assert mutating not in page.text, (page.request.path, mutating)
    assert "catch" in pages[0].text and "2 succeeded" in pages[0].text
    assert "Pause after" in pages[1].text  # the settings, read-only
    assert 'data-test-connection="samora"' in pages[3].text  # a test changes nothing
    csrf = csrf_of(pages[0])
    refused = client.post("/api/v1/flows/idle/enable", headers={"X-CSRF-Token": csrf})
    assert refused.status_code == 403
