"""The flow builder's pages through Flask's test client: who may open them, and the data the
page's script starts from (the catalog as the API lists it, the connections, the filter
operators, and a YAML-loaded flow's whole definition: one model, two views).

What the script does with that data (mapping, tests, saving) runs in a real browser:
tests/test_ui_builder_browser.py.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from connector import auth, conditions, flows
from connector.store import Connection, Flow
from connector.web import create_app

from .test_ui import csrf_of, sign_in

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples" / "flows").glob("*.yaml"))


@pytest.fixture
def client(host):
    return create_app(host).test_client()


@pytest.fixture
def writer(client):
    auth.add_user("ada", "analytical-engine", scope="write")
    assert sign_in(client).status_code == 302
    return client


@pytest.fixture
def with_connections(connected):
    """The host holding one sandbox connection per service, named as examples/flows do."""
    return connected


def page_data(page) -> dict:
    """The JSON block builder.js starts from."""
    match = re.search(r'<script type="application/json" id="builder-data">(.*?)</script>',
                      page.text, re.S)
    assert match, "the builder page has no #builder-data block"
    return json.loads(match.group(1))


def test_only_writers_open_the_builder(client, host):
    flows.save(host, {"name": "catch", "trigger": {"key": "webhook.catch"},
                      "steps": [{"action": "formatter.text",
                                 "inputs": {"operation": "upper", "text": "x"}}]})
    stranger = client.get("/ui/flows/new")
    assert stranger.status_code == 302
    assert stranger.headers["Location"] == "/ui/login?next=/ui/flows/new"
    auth.add_user("reader", "reads-only-please", scope="read")
    assert sign_in(client, "reader", "reads-only-please").status_code == 302
    for path in ("/ui/flows/new", "/ui/flows/catch/edit"):
        refused = client.get(path)
        assert refused.status_code == 403, path
        assert "This page needs the write scope; you have read." in refused.text
        assert "builder-data" not in refused.text


def test_the_page_keeps_to_the_content_security_policy(writer):
    page = writer.get("/ui/flows/new")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "style=" not in page.text
    for tag in re.findall(r"<script\b[^>]*>", page.text):
        assert 'src="/ui/static/' in tag or 'type="application/json"' in tag, tag
    assert '<script src="/ui/static/builder.js" defer></script>' in page.text
    assert '<link rel="stylesheet" href="/ui/static/builder.css">' in page.text
    for asset in ("builder.js", "builder.css"):
        answer = writer.get(f"/ui/static/{asset}")
        assert answer.status_code == 200 and len(answer.data) > 1000
        assert b"http://" not in answer.data and b"https://" not in answer.data  # nothing fetched
        answer.close()
    assert 'data-error-for="name"' in page.text and 'data-error-for="description"' in page.text
    assert page_data(page)["flow"] is None


def test_the_page_carries_the_catalog_as_the_api_lists_it(writer, with_connections):
    data = page_data(writer.get("/ui/flows/new"))
    listed = writer.get("/api/v1/apps?limit=100").get_json()["data"]
    mine = {a["key"]: a for a in data["apps"]}
    assert set(mine) == {a["key"] for a in listed}
    for app in listed:
        for kind in ("triggers", "actions", "searches"):
            assert mine[app["key"]][kind] == app[kind], (app["key"], kind)
    # the marks the script needs: who may use any connection, what fills a dropdown
    http = next(a for a in mine["http"]["actions"] if a["key"] == "http.request")
    assert http["any_connection"] is True
    create = next(a for a in mine["aiconnector"]["actions"]
                  if a["key"] == "aiconnector.create_contact")
    assert create["any_connection"] is False and create["sample"]["id"] == "abc123xyz"
    campaign = next(f for a in mine["samora"]["actions"] if a["key"] == "samora.get_campaign"
                    for f in a["inputs"] if f["name"] == "campaign_id")
    assert campaign["choices_from"] == "samora.find_campaigns"
    assert [o["op"] for o in data["ops"]] == list(conditions.OPS)
    assert {o["op"] for o in data["ops"] if o["unary"]} == conditions.UNARY
    assert all(o["label"] for o in data["ops"])
    assert {(c["name"], c["app"]) for c in data["connections"]} == {
        (c.name, c.app) for c in Connection.select()}
    assert ("samora", "samora") in {(c["name"], c["app"]) for c in data["connections"]}
    assert all(set(c) == {"name", "app"} for c in data["connections"])  # never a credential


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_a_yaml_flow_opens_in_the_builder_with_everything_it_has(writer, with_connections,
                                                                 path):
    flow = flows.save(with_connections, flows.load_file(path))
    page = writer.get(f"/ui/flows/{flow.name}/edit")
    assert page.status_code == 200
    data = page_data(page)
    exported = flows.export(Flow.get_by_id(flow.id))
    assert data["flow"]["definition"] == exported
    assert data["flow"]["definition"] == writer.get(
        f"/api/v1/flows/{flow.name}").get_json()["definition"]
    assert data["flow"]["name"] == flow.name and data["flow"]["enabled"] is False
    assert f'value="{flow.name}" readonly' in page.text  # a flow keeps its name
    # saved back as the page holds it, the flow exports the same YAML
    csrf = csrf_of(page)
    answer = writer.put(f"/api/v1/flows/{flow.name}", json=data["flow"]["definition"],
                        headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 200, answer.get_json()
    assert flows.export(Flow.get_by_id(flow.id)) == exported


def test_the_builder_of_an_unknown_flow_is_a_page_saying_so(writer):
    answer = writer.get("/ui/flows/nope/edit")
    assert answer.status_code == 404 and answer.mimetype == "text/html"
    assert "no flow named &#39;nope&#39;" in answer.text
    assert "Traceback" not in answer.text


def test_a_save_the_api_refuses_names_the_field_the_page_has_a_slot_for(writer, with_connections):
    """The places the page's error slots carry are the places the API's 422 names."""
    csrf = csrf_of(writer.get("/ui/flows/new"))
    definition = {"name": "calls", "trigger": {"key": "samora.call_finished",
                                               "connection": "samora",
                                               "inputs": {"include_transcript": "maybe"}},
                  "steps": [{"name": "contact", "action": "aiconnector.create_contact",
                             "connection": "aiconnector", "inputs": {"phone": "555"}}]}
    refused = writer.post("/api/v1/flows", json=definition, headers={"X-CSRF-Token": csrf})
    assert refused.status_code == 422
    details = refused.get_json()["error"]["details"]  # every bad field in one answer
    assert set(details) == {"trigger.inputs.include_transcript", "steps[0].inputs.phone"}
    assert details["trigger.inputs.include_transcript"] == ["Not a valid boolean."]
    assert details["steps[0].inputs.phone"][0].startswith("expected a phone number")
    definition["trigger"]["inputs"]["include_transcript"] = False
    refused = writer.post("/api/v1/flows", json=definition, headers={"X-CSRF-Token": csrf})
    details = refused.get_json()["error"]["details"]
    assert list(details) == ["steps[0].inputs.phone"]
    assert not Flow.select().where(Flow.name == "calls").exists()
