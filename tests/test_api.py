"""The REST API under /api/v1: the builder's journey over real HTTP against the sandbox, then
scopes, errors, pagination, YAML and the OpenAPI document through Flask's test client.

The journey drives the product as the UI will: connections added and tested, dropdowns filled
from a search, a trigger and a step tried, the call-finished -> add-to-list flow created from
JSON and switched on, a signed webhook delivered with the secret Samora issued, and runs
watched and replayed, all through the API. Outcomes are checked in the sandbox's state too.
"""
from __future__ import annotations

import json
import uuid
from functools import partial
from pathlib import Path

import pytest
import requests
import yaml
from click.testing import CliRunner

from connector import RateLimit, auth, engine, flows, throttle
from connector.runtime import Runtime
from connector.signatures import sign
from connector.store import ApiKey, Flow, RateWindow, Run, SeenItem, TriggerState
from connector.web import create_app

from .conftest import wait_for

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "flows"
API = "/api/v1"


def example(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())


def bearer(raw: str) -> dict:
    return {"Authorization": f"Bearer {raw}"}


def assert_error(response, status: int, code: str) -> dict:
    body = response.json() if hasattr(response, "json") and callable(response.json) else (
        response.get_json())
    assert response.status_code == status, body
    assert set(body) == {"error"} and body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def call_finished(call_id: str, number: str, name: str = "Ada") -> bytes:
    return json.dumps({"event": "CALL_FINISHED", "call_id": call_id,
                       "data": {"call_id": call_id, "to_number": number,
                                "status": "CALL_FINISHED",
                                "context": {"contact_name": name}}}).encode()


def deliver(host, flow_name: str, body: bytes, url: str | None = None, client=None):
    """POST a webhook signed with the secret Samora issued when the flow was switched on."""
    flow = Flow.get(Flow.name == flow_name)
    secret = host.box.open(TriggerState.get(TriggerState.flow == flow).sealed_subscription)
    headers = {**sign(secret["secret"], f"msg_{uuid.uuid4().hex}", body),
               "Content-Type": "application/json"}
    if client is not None:
        return client.post(f"/hooks/{flow.webhook_token}", data=body, headers=headers)
    return requests.post(url, data=body, headers=headers, timeout=10)


# -- fixtures ----------------------------------------------------------------------------------

@pytest.fixture
def keys(host) -> dict[str, str]:
    """One raw API key per scope."""
    return {scope: auth.create_key(f"{scope}-key", scope)[1] for scope in ApiKey.SCOPES}


@pytest.fixture
def client(host):
    return create_app(host).test_client()


@pytest.fixture
def as_write(client, keys):
    """Call the API with the write key: ``as_write("post", "/flows", json=...)``."""
    def call(method, path, **kwargs):
        headers = {**bearer(keys["write"]), **kwargs.pop("headers", {})}
        return getattr(client, method)(API + path, headers=headers, **kwargs)
    return call


@pytest.fixture
def serving(host, sandbox):
    """The embedded product on an ephemeral port, no connections yet, and an HTTP session
    holding a write key; yields (runtime, session, root URL)."""
    rt = Runtime(host)
    root = rt.start(port=0).replace("0.0.0.0", "127.0.0.1")
    session = requests.Session()
    session.trust_env = False
    session.headers.update(bearer(auth.create_key("builder", "write")[1]))
    try:
        yield rt, session, root
    finally:
        session.close()
        rt.stop()


def add_connections(post, sandbox, apps=("samora", "aiconnector", "samva")):
    for app in apps:
        info = sandbox.connections()[app]
        answer = post("/connections", json={"name": app, "app": app,
                                            "credentials": info["credentials"],
                                            "base_url": info["base_url"]})
        assert answer.status_code == 201, answer.text if hasattr(answer, "text") else answer


def catch_flow(name="catch", **changes) -> dict:
    """A flow needing no connection: any webhook -> upper-case its text."""
    data = {"name": name, "trigger": {"key": "webhook.catch"},
            "steps": [{"name": "shout", "action": "formatter.text",
                       "inputs": {"operation": "upper", "text": "{{ trigger.text }}"}}]}
    data.update(changes)
    return data


# -- the builder's journey, over HTTP ----------------------------------------------------------

@pytest.mark.covers("samora.call_finished", "aiconnector.create_contact",
                     "aiconnector.add_to_list", "samva.list_templates")
def test_a_builder_wires_call_finished_to_add_to_list_through_the_api(serving, sandbox, host):
    rt, http, root = serving

    def post(path, **kw):
        return http.post(root + API + path, timeout=15, **kw)

    def get(path, **kw):
        return http.get(root + API + path, timeout=15, **kw)

    # 1. the catalog, with labels and help
    samora = get("/apps/samora").json()
    finished = next(t for t in samora["triggers"] if t["key"] == "samora.call_finished")
    assert finished["label"] and finished["help"] and finished["type"] == "webhook"
    assert {f["name"] for f in samora["credentials"]} >= {"api_key"}
    assert next(f for f in samora["credentials"] if f["name"] == "api_key")["secret"]
    add = next(a for a in get("/apps/aiconnector").json()["actions"]
               if a["key"] == "aiconnector.add_to_list")
    assert [f["label"] for f in add["inputs"]] == ["List id", "Contact id"]

    # 2. connections: added (secrets masked, never shown again) and tested
    add_connections(post, sandbox)
    key = sandbox.connections()["samora"]["credentials"]["api_key"]
    listed = get("/connections").json()
    assert [c["name"] for c in listed["data"]] == ["aiconnector", "samora", "samva"]
    assert key not in json.dumps(listed)
    assert listed["data"][1]["credentials"]["api_key"] == "********"
    assert post("/connections/samora/test").json()["ok"] is True
    bad = post("/connections", json={"name": "samora-typo", "app": "samora",
                                     "credentials": {"api_key": "sk_wrong"},
                                     "base_url": sandbox.urls["samora"]})
    assert bad.status_code == 201
    failed = post("/connections/samora-typo/test").json()
    assert failed["ok"] is False
    assert failed["error"] == {"status": 401, "code": "UNAUTHORIZED", "retriable": False,
                               "message": "The API key is invalid or revoked."}
    assert http.delete(root + API + "/connections/samora-typo").status_code == 204

    # 3. a dropdown filled from a search
    options = post("/options", json={"search": "samva.list_templates",
                                     "connection": "samva"}).json()["data"]
    assert {"value": "wa_order_shipped", "label": "Order shipped (whatsapp)"} in options
    only_sms = post("/options", json={"search": "samva.list_templates", "connection": "samva",
                                      "inputs": {"channel": "sms"}}).json()["data"]
    assert [o["value"] for o in only_sms] == ["dlt_template_123"]

    # 4. test the trigger (a webhook: its sample) and a step, for real
    tried = post("/triggers/samora.call_finished/test", json={"connection": "samora"}).json()
    assert tried["ok"] and tried["source"] == "sample" and tried["items"] == [finished["sample"]]
    step = post("/actions/aiconnector.create_contact/test", json={
        "connection": "aiconnector",
        "inputs": {"phone": "{{ trigger.to_number }}",
                   "firstName": "{{ trigger.context.contact_name | default('') }}"},
        "context": {"trigger": {"to_number": "+14155550199",
                                "context": {"contact_name": "Grace"}}}}).json()
    assert step["ok"] is True, step
    assert step["inputs"] == {"phone": "+14155550199", "firstName": "Grace"}
    assert any(c["id"] == step["output"]["id"] and c["phone"] == "+14155550199"
               for c in sandbox.state()["aiconnector"]["contacts"])
    refused = post("/actions/aiconnector.add_to_list/test", json={
        "inputs": {"list_id": "lst_missing", "contact_id": step["output"]["id"]}}).json()
    assert refused["ok"] is False and refused["error"]["code"] == "LIST_NOT_FOUND"
    assert refused["error"]["status"] == 404 and "lst_missing" in refused["error"]["message"]

    # 5. the flow, from the same JSON shape the YAML file has, then switched on
    definition = example("call-finished-add-to-list")
    created = post("/flows", json=definition)
    assert created.status_code == 201, created.text
    flow = created.json()
    assert flow["enabled"] is False and flow["trigger_kind"] == "webhook"
    assert flow["definition"] == flows.export(Flow.get(Flow.name == definition["name"]))
    on = post(f"/flows/{definition['name']}/enable").json()
    assert on["enabled"] is True and on["webhook_url"].startswith("http://127.0.0.1:")
    hooks = sandbox.state()["samora"]["webhooks"]
    assert [h["url"] for h in hooks] == [on["webhook_url"]]

    # 6. a signed webhook arrives; the run shows as succeeded
    answer = deliver(host, definition["name"], call_finished("call-1", "+14155550140"),
                     url=on["webhook_url"])
    assert answer.status_code == 200 and answer.json() == {"accepted": 1, "duplicates": 0}
    done = wait_for(lambda: get("/runs", params={"flow": definition["name"],
                                                  "status": "succeeded"}).json()["data"])
    assert len(done) == 1 and done[0]["duration_ms"] is not None
    detail = get(f"/runs/{done[0]['id']}").json()
    assert detail["item"]["to_number"] == "+14155550140"
    steps = {s["name"]: s for s in detail["steps"]}
    assert steps["add_to_list"]["inputs"]["contact_id"] == steps["contact"]["output"]["id"]
    assert [a["status"] for a in steps["contact"]["history"]] == ["succeeded"]
    members = next(lst for lst in sandbox.state()["aiconnector"]["lists"]
                   if lst["id"] == "lst_demo")["members"]
    assert members == [steps["contact"]["output"]["id"]]
    summary = get(f"/flows/{definition['name']}").json()
    assert summary["runs"] == {"succeeded": 1} and summary["paused_reason"] is None

    # 7. switched off: Samora's webhook is deleted
    off = post(f"/flows/{definition['name']}/disable").json()
    assert off["enabled"] is False and off["warnings"] == []
    assert sandbox.state()["samora"]["webhooks"] == []


@pytest.mark.covers("samora.call_finished", "aiconnector.add_to_list")
def test_failed_runs_are_replayed_one_all_and_with_an_edited_item(serving, sandbox, host):
    rt, http, root = serving

    def post(path, **kw):
        return http.post(root + API + path, timeout=15, **kw)

    def get(path, **kw):
        return http.get(root + API + path, timeout=15, **kw)

    add_connections(post, sandbox, ("samora", "aiconnector"))
    definition = example("call-finished-add-to-list")
    definition["steps"][1]["inputs"]["list_id"] = "lst_missing"
    name = definition["name"]
    assert post("/flows", json=definition).status_code == 201
    url = post(f"/flows/{name}/enable").json()["webhook_url"]
    for i, number in enumerate(("+14155550141", "+14155550142")):
        assert deliver(host, name, call_finished(f"call-{i}", number), url=url).ok
    def failed():
        return get("/runs", params={"flow": name, "status": "failed"}).json()["data"]

    assert wait_for(lambda: len(failed()) == 2)
    second, first = [r["id"] for r in failed()]  # newest first
    detail = get(f"/runs/{first}").json()
    assert detail["failed_step"] == "add_to_list" and "LIST_NOT_FOUND" in detail["error"]
    steps = {s["name"]: s for s in detail["steps"]}
    assert steps["contact"]["status"] == "succeeded"
    assert steps["add_to_list"]["status"] == "failed"
    assert "lst_missing" in steps["add_to_list"]["error"]

    # fix the list id (the trigger is unchanged, so the flow may stay on), replay one run
    definition["steps"][1]["inputs"]["list_id"] = "lst_demo"
    assert http.put(root + API + f"/flows/{name}", json=definition).status_code == 200
    replayed = post(f"/runs/{first}/replay")
    assert replayed.status_code == 200  # queued, and the executor is woken at once
    assert replayed.json()["status"] in ("queued", "running", "succeeded")
    assert wait_for(lambda: get(f"/runs/{first}").json()["status"] == "succeeded")
    steps = {s["name"]: s for s in get(f"/runs/{first}").json()["steps"]}
    assert steps["contact"]["attempts"] == 1  # not repeated
    assert [a["status"] for a in steps["add_to_list"]["history"]] == ["failed", "succeeded"]
    assert_error(post(f"/runs/{first}/replay"), 409, "CONFLICT")

    # replay all failed runs of the flow at once
    again = post(f"/flows/{name}/replay-failed").json()
    assert again == {"replayed": [second], "count": 1}
    assert wait_for(lambda: get(f"/runs/{second}").json()["status"] == "succeeded")

    # replay one with an edited trigger item: a new run, linked to the old one
    item = get(f"/runs/{second}").json()["item"]
    item["to_number"] = "+14155550143"
    new = post(f"/runs/{second}/replay", json={"item": item})
    assert new.status_code == 201 and new.json()["replay_of"] == second
    assert wait_for(lambda: get(f"/runs/{new.json()['id']}").json()["status"] == "succeeded")
    assert get(f"/runs/{new.json()['id']}").json()["item"]["to_number"] == "+14155550143"
    phones = {c["id"]: c["phone"] for c in sandbox.state()["aiconnector"]["contacts"]}
    members = next(lst for lst in sandbox.state()["aiconnector"]["lists"]
                   if lst["id"] == "lst_demo")["members"]
    assert sorted(phones[m] for m in members) == ["+14155550141", "+14155550142",
                                                  "+14155550143"]
    assert post(f"/flows/{name}/replay-failed").json() == {"replayed": [], "count": 0}


def test_a_flow_that_keeps_failing_is_paused_with_its_reason_and_resumed(
        host, sandbox, as_write, client):
    add_connections(partial(as_write, "post"), sandbox, ("samora", "aiconnector"))
    definition = example("call-finished-add-to-list")
    definition["steps"][1]["inputs"]["list_id"] = "lst_missing"
    definition["on_failure"] = {"pause_after": 1}
    name = definition["name"]
    assert as_write("post", "/flows", json=definition).status_code == 201
    assert as_write("post", f"/flows/{name}/enable").status_code == 200
    assert deliver(host, name, call_finished("call-p", "+14155550144"),
                   client=client).status_code == 200
    engine.run_due(host)
    flow = as_write("get", f"/flows/{name}").get_json()
    assert flow["paused_reason"].startswith("paused after 1 failed runs in a row")
    listed = as_write("get", "/flows").get_json()["data"]
    assert listed[0]["paused_reason"] == flow["paused_reason"]
    resumed = as_write("post", f"/flows/{name}/resume")
    assert resumed.status_code == 200 and resumed.get_json()["paused_reason"] is None
    assert_error(as_write("post", f"/flows/{name}/resume"), 409, "CONFLICT")


def test_test_trigger_polls_once_and_records_nothing(host, sandbox, as_write):
    info = sandbox.connections()["contacts_api"]
    assert as_write("post", "/connections", json={
        "name": "contacts-api", "app": "contacts_api", "credentials": info["credentials"],
        "base_url": info["base_url"]}).status_code == 201
    tried = as_write("post", "/triggers/contacts_api.new_contact/test", json={}).get_json()
    assert tried["ok"] is True and tried["source"] == "service"
    seeded = sandbox.state()["contacts_api"]["contacts"]["org_demo"]
    assert tried["count"] == len(seeded) and {i["id"] for i in tried["items"]} == {
        c["id"] for c in seeded}
    assert SeenItem.select().count() == 0 and Run.select().count() == 0
    wrong = as_write("post", "/triggers/contacts_api.new_contact/test",
                     json={"inputs": {"nonsense": 1}})
    assert "inputs.nonsense" in assert_error(wrong, 422, "VALIDATION_ERROR")["details"]


# -- auth and scopes ---------------------------------------------------------------------------

def test_no_key_or_a_bad_key_is_401(client, keys):
    for headers in ({}, bearer("cnk_not_a_real_key_at_all"), {"X-API-Key": "nope"}):
        answer = client.get(f"{API}/flows", headers=headers)
        assert_error(answer, 401, "UNAUTHORIZED")
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get(f"{API}/flows", headers={"X-API-Key": keys["read"]}).status_code == 200


def test_a_read_key_reads_but_cannot_change_anything(client, keys):
    read = bearer(keys["read"])
    assert client.get(f"{API}/me", headers=read).get_json() == {
        "kind": "key", "name": "read-key", "scope": "read"}
    for method, path, body in (("post", "/flows", catch_flow()),
                               ("post", "/connections", {"name": "x", "app": "samora"}),
                               ("delete", "/connections/x", None),
                               ("post", "/flows/catch/enable", None),
                               ("post", "/runs/1/replay", None),
                               ("post", "/actions/formatter.text/test", {}),
                               ("post", "/keys", {"name": "x"})):
        answer = getattr(client, method)(API + path, headers=read, json=body)
        error = assert_error(answer, 403, "FORBIDDEN")
        need = "admin" if path == "/keys" else "write"
        assert error["message"] == f"this needs the {need} scope; API key 'read-key' has read"
    assert Flow.select().count() == 0


def test_only_admin_manages_keys(client, keys):
    assert_error(client.get(f"{API}/keys", headers=bearer(keys["write"])), 403, "FORBIDDEN")
    admin = bearer(keys["admin"])
    made = client.post(f"{API}/keys", headers=admin, json={"name": "dashboard"})
    assert made.status_code == 201
    new = made.get_json()
    assert new["scope"] == "read" and new["key"].startswith(new["prefix"])
    listed = client.get(f"{API}/keys", headers=admin).get_json()
    assert [k["name"] for k in listed["data"]] == ["read-key", "write-key", "admin-key",
                                                    "dashboard"]
    assert new["key"] not in json.dumps(listed) and "digest" not in json.dumps(listed)
    assert client.get(f"{API}/flows", headers=bearer(new["key"])).status_code == 200
    revoked = client.delete(f"{API}/keys/{new['id']}", headers=admin)
    assert revoked.status_code == 200 and revoked.get_json()["revoked_at"]
    assert_error(client.get(f"{API}/flows", headers=bearer(new["key"])), 401, "UNAUTHORIZED")
    assert_error(client.delete(f"{API}/keys/999", headers=admin), 404, "NOT_FOUND")
    bad = client.post(f"{API}/keys", headers=admin, json={"name": "x", "scope": "root"})
    assert assert_error(bad, 422, "VALIDATION_ERROR")["details"] == {
        "scope": ["Must be one of: read, write, admin."]}


def test_the_ui_session_cookie_works_with_its_csrf_token(host, client):
    user = auth.add_user("ada", "analytical-engine", scope="admin")
    sessions = auth.Sessions(auth.session_secret(host))
    cookie, csrf = sessions.issue(auth.user_principal(user))
    client.set_cookie(auth.SESSION_COOKIE, cookie)
    assert client.get(f"{API}/me").get_json() == {"kind": "user", "name": "ada",
                                                  "scope": "admin"}
    assert_error(client.post(f"{API}/keys", json={"name": "x"}), 403, "FORBIDDEN")
    made = client.post(f"{API}/keys", json={"name": "x"}, headers={auth.CSRF_HEADER: csrf})
    assert made.status_code == 201


# -- errors, validation and pagination ---------------------------------------------------------

def test_flow_errors_are_422_naming_the_place_as_the_yaml_loader_does(host, sandbox, as_write):
    add_connections(partial(as_write, "post"), sandbox, ("samora", "aiconnector"))
    definition = example("call-finished-add-to-list")
    cases = [
        (lambda d: d["steps"][1]["inputs"].pop("list_id"), "steps[1].inputs.list_id",
         "required input of aiconnector.add_to_list is missing"),
        (lambda d: d["steps"][0].update(action="aiconnector.nope"), "steps[0].action", None),
        (lambda d: d["trigger"].update(connection="nobody"), "trigger.connection", None),
        (lambda d: d["steps"][0].pop("action"), "steps[0].action",
         "Missing data for required field."),
        (lambda d: d.update(name="no spaces please"), "name", None),
        (lambda d: d["steps"][1]["inputs"].update(contact_id="{{ steps.later.id }}"),
         "steps[1].inputs", None),
    ]
    for change, place, message in cases:
        data = json.loads(json.dumps(definition))
        change(data)
        error = assert_error(as_write("post", "/flows", json=data), 422, "VALIDATION_ERROR")
        assert list(error["details"]) == [place], error
        try:
            flows.validate_definition(host, json.loads(json.dumps(data)))
        except flows.FlowError as exc:
            assert error["message"] == str(exc)  # the very words the YAML loader uses
        if message:
            assert error["details"][place] == [message]
    assert Flow.select().count() == 0


def test_every_bad_field_of_a_flow_is_in_one_422(as_write):
    bad = {"name": "loud", "trigger": {"key": "webhook.catch"},
           "on_failure": {"error_flow": "nobody"},
           "steps": [{"name": "a", "action": "formatter.text",
                      "inputs": {"operation": "shout", "text": "{{ trigger.text }}"}},
                     {"name": "b", "action": "formatter.text",
                      "inputs": {"operation": "upper", "text": "x"}},
                     {"name": "c", "action": "formatter.text",
                      "inputs": {"operation": "louder", "text": "{{ trigger.text }}"}}]}
    error = assert_error(as_write("post", "/flows", json=bad), 422, "VALIDATION_ERROR")
    assert list(error["details"]) == ["on_failure.error_flow", "steps[0].inputs.operation",
                                      "steps[2].inputs.operation"]
    assert error["details"]["on_failure.error_flow"] == ["no flow named 'nobody'"]
    assert error["message"].startswith("on_failure.error_flow: no flow named 'nobody'; "
                                       "steps[0].inputs.operation: Must be one of: ")
    named_new = assert_error(as_write("post", "/flows", json=catch_flow("new")), 422,
                             "VALIDATION_ERROR")
    assert named_new["details"] == {"name": [
        "'new' is reserved (/ui/flows/new is the page that builds a new flow); choose "
        "another name"]}
    assert Flow.select().count() == 0


def test_patch_changes_a_flows_settings_and_never_its_steps(as_write, client, keys):
    assert as_write("post", "/flows", json=catch_flow("notify")).status_code == 201
    assert as_write("post", "/flows", json=catch_flow()).status_code == 201
    # someone else edits the steps meanwhile; a settings change must not undo that
    edited = catch_flow(steps=[{"name": "whisper", "action": "formatter.text",
                                "inputs": {"operation": "lower", "text": "{{ trigger.text }}"}}])
    assert as_write("put", "/flows/catch", json=edited).status_code == 200
    answer = as_write("patch", "/flows/catch", json={
        "on_failure": {"pause_after": 3, "error_flow": "notify"}, "concurrency": 2})
    assert answer.status_code == 200, answer.get_json()
    flow = answer.get_json()
    assert (flow["pause_after"], flow["error_flow"], flow["concurrency"]) == (3, "notify", 2)
    assert flow["description"] == ""
    assert [s["name"] for s in flow["definition"]["steps"]] == ["whisper"]
    assert flow["definition"]["on_failure"] == {"pause_after": 3, "error_flow": "notify"}
    flow = as_write("patch", "/flows/catch", json={"description": "Shouts"}).get_json()
    assert (flow["description"], flow["pause_after"], flow["error_flow"]) == (
        "Shouts", 3, "notify")
    flow = as_write("patch", "/flows/catch", json={"on_failure": {"error_flow": None}}
                    ).get_json()
    assert (flow["error_flow"], flow["pause_after"]) == (None, 3)
    for body, details in (
            ({"on_failure": {"pause_after": -1}, "concurrency": "many"},
             {"on_failure.pause_after": ["Must be greater than or equal to 0 and less than "
                                         "or equal to 1000."],
              "concurrency": ["Not a valid integer."]}),
            ({"on_failure": {"error_flow": "ghost"}},
             {"on_failure.error_flow": ["no flow named 'ghost'"]}),
            ({"on_failure": {"error_flow": "catch"}},
             {"on_failure.error_flow": ["a flow cannot be its own error flow"]}),
            ({"steps": []}, {"steps": ["Unknown field."]})):
        error = assert_error(as_write("patch", "/flows/catch", json=body), 422,
                             "VALIDATION_ERROR")
        assert error["details"] == details, body
    assert_error(as_write("patch", "/flows/nope", json={}), 404, "NOT_FOUND")
    read = client.patch(f"{API}/flows/catch", headers=bearer(keys["read"]),
                        json={"description": "x"})
    assert_error(read, 403, "FORBIDDEN")
    assert Flow.get(Flow.name == "catch").description == "Shouts"


def test_components_say_whether_a_step_may_use_any_connection(as_write):
    http = as_write("get", "/apps/http").get_json()
    assert next(a for a in http["actions"] if a["key"] == "http.request")["any_connection"]
    samora = as_write("get", "/apps/samora").get_json()
    assert {a["any_connection"] for a in samora["actions"] + samora["triggers"]} == {False}


def test_request_bodies_are_checked_field_by_field(as_write, sandbox):
    error = assert_error(as_write("post", "/connections", json={"app": "samora",
                                                                "credentials": {}}),
                         422, "VALIDATION_ERROR")
    assert error["details"] == {"name": ["Missing data for required field."]}
    error = assert_error(as_write("post", "/connections", json={
        "name": "s", "app": "samora", "credentials": {}, "base_url": "ftp://x"}),
        422, "VALIDATION_ERROR")
    assert error["details"] == {"base_url": ["expected an http(s) URL"]}
    error = assert_error(as_write("post", "/connections", json={
        "name": "s", "app": "samora", "credentials": {}}), 422, "VALIDATION_ERROR")
    assert error["details"] == {"credentials.api_key": ["Missing data for required field."]}
    error = assert_error(as_write("post", "/connections", json={"name": "s", "app": "nope"}),
                         422, "VALIDATION_ERROR")
    assert list(error["details"]) == ["app"]
    assert_error(as_write("post", "/connections", data="[1, 2]",
                          content_type="application/json"), 400, "BAD_REQUEST")
    error = assert_error(as_write("post", "/options", json={"search": "samva.list_templates",
                                                            "inputs": {"channel": "fax"}}),
                         422, "VALIDATION_ERROR")
    assert list(error["details"]) == ["inputs.channel"]
    error = assert_error(as_write("post", "/actions/formatter.text/test", json={
        "inputs": {"operation": "upper", "text": "{{ trigger.missing }}"}}),
        422, "VALIDATION_ERROR")
    assert list(error["details"]) == ["inputs.text"]
    assert_error(as_write("get", "/flows/nope"), 404, "NOT_FOUND")
    assert_error(as_write("get", "/runs/12345"), 404, "NOT_FOUND")
    assert_error(as_write("get", "/nothing-here"), 404, "NOT_FOUND")


def test_a_step_is_tested_with_inputs_rendered_from_a_sample(as_write):
    tried = as_write("post", "/actions/formatter.text/test", json={
        "inputs": {"operation": "upper", "text": "{{ trigger.text }}"},
        "context": {"trigger": {"text": "hello"}}}).get_json()
    assert tried == {"ok": True, "inputs": {"operation": "upper", "text": "hello"},
                     "output": {"result": "HELLO"}, "error": None}
    loop = as_write("post", "/actions/looping.for_each/test", json={})
    assert list(assert_error(loop, 422, "VALIDATION_ERROR")["details"]) == ["action"]


def test_a_connection_in_use_cannot_be_deleted(host, sandbox, as_write):
    add_connections(partial(as_write, "post"), sandbox, ("samora", "aiconnector"))
    assert as_write("post", "/flows", json=example("call-finished-add-to-list")
                    ).status_code == 201
    error = assert_error(as_write("delete", "/connections/aiconnector"), 409, "CONFLICT")
    assert error["details"] == {"flows": ["call-finished-add-to-list"]}
    assert "call-finished-add-to-list" in error["message"]
    assert as_write("get", "/connections/aiconnector").get_json()["used_by"] == [
        "call-finished-add-to-list"]
    assert as_write("delete", "/flows/call-finished-add-to-list").status_code == 204
    conn = host.connection("aiconnector")
    for per in (60.0, 1.0):  # what its calls counted, in windows of two lengths
        assert throttle.acquire(f"conn:{conn.id}:{per:g}", RateLimit(10, per)) == 0.0
    throttle.acquire("conn:1000:60", RateLimit(10, 60))  # another connection's
    assert as_write("delete", "/connections/aiconnector").status_code == 204
    assert_error(as_write("get", "/connections/aiconnector"), 404, "NOT_FOUND")
    # a later connection may get the id: it must not inherit the deleted one's counts
    assert [w.key for w in RateWindow.select()] == ["conn:1000:60"]


def test_runs_are_paginated_newest_first_and_filtered(host, as_write):
    assert as_write("post", "/flows", json=catch_flow()).status_code == 201
    assert as_write("post", "/flows", json=catch_flow("other")).status_code == 201
    flow, other = Flow.get(Flow.name == "catch"), Flow.get(Flow.name == "other")
    for i in range(25):
        Run.create(flow=flow, item={"n": i}, status=Run.FAILED if i % 5 == 0 else Run.SUCCEEDED)
    Run.create(flow=other, item={"n": 99})
    page = as_write("get", "/runs?flow=catch&limit=10&page=3").get_json()
    assert page["pagination"] == {"page": 3, "limit": 10, "total": 25, "pages": 3}
    assert [r["id"] for r in page["data"]] == [5, 4, 3, 2, 1]
    first = as_write("get", "/runs").get_json()
    assert first["pagination"] == {"page": 1, "limit": 20, "total": 26, "pages": 2}
    assert first["data"][0]["flow"] == "other"
    failed = as_write("get", "/runs?flow=catch&status=failed").get_json()
    assert [r["id"] for r in failed["data"]] == [21, 16, 11, 6, 1]
    beyond = as_write("get", "/runs?page=9").get_json()
    assert beyond["data"] == [] and beyond["pagination"]["total"] == 26
    for query in ("limit=0", "limit=101", "page=0", "page=x", "status=lost"):
        assert_error(as_write("get", f"/runs?{query}"), 422, "VALIDATION_ERROR")
    assert_error(as_write("get", "/runs?flow=nope"), 404, "NOT_FOUND")
    flows_page = as_write("get", "/flows?limit=1&page=2").get_json()
    assert [f["name"] for f in flows_page["data"]] == ["other"]
    assert flows_page["pagination"] == {"page": 2, "limit": 1, "total": 2, "pages": 2}
    assert as_write("get", "/flows?limit=1").get_json()["data"][0]["runs"] == {
        "failed": 5, "succeeded": 20}
    apps = as_write("get", "/apps?limit=2").get_json()
    assert len(apps["data"]) == 2 and apps["pagination"]["total"] == len(host.catalog.apps)


def test_a_webhook_flow_without_connections_runs_and_shows_its_setup(host, as_write, client):
    made = as_write("post", "/flows", json=catch_flow(description="Shout it"))
    assert made.status_code == 201 and made.get_json()["webhook_url"].endswith(
        Flow.get(Flow.name == "catch").webhook_token)
    on = as_write("post", "/flows/catch/enable").get_json()
    assert on["enabled"] is True
    setup = as_write("get", "/flows/catch/webhook").get_json()
    assert setup["url"] == on["webhook_url"]
    answer = client.post(f"/hooks/{Flow.get(Flow.name == 'catch').webhook_token}",
                         json={"text": "hi"}, headers={"webhook-id": "m1"})
    assert answer.status_code == 200, answer.get_json()
    engine.run_due(host)
    run = as_write("get", "/runs?flow=catch").get_json()["data"][0]
    assert run["status"] == "succeeded"
    detail = as_write("get", f"/runs/{run['id']}").get_json()
    assert detail["steps"][0]["output"] and detail["item"] == {"text": "hi"}
    assert_error(as_write("put", "/flows/catch", json=catch_flow("renamed")), 422,
                 "VALIDATION_ERROR")
    changed = catch_flow(description="Louder")
    assert as_write("put", "/flows/catch", json=changed).get_json()["description"] == "Louder"
    assert_error(as_write("put", "/flows/missing", json=catch_flow("missing")), 404,
                 "NOT_FOUND")
    assert_error(as_write("post", "/flows", json=catch_flow()), 409, "CONFLICT")


# -- YAML: one model, two views ----------------------------------------------------------------

def test_yaml_export_equals_the_cli_and_imports_back(host, sandbox, as_write, settings,
                                                      monkeypatch):
    from connector.cli import main

    add_connections(partial(as_write, "post"), sandbox, ("samora", "aiconnector"))
    assert as_write("post", "/flows", json=example("call-finished-add-to-list")
                    ).status_code == 201
    exported = as_write("get", "/flows/call-finished-add-to-list/export")
    assert exported.status_code == 200 and exported.mimetype == "text/yaml"
    text = exported.get_data(as_text=True)
    monkeypatch.setenv("CONNECTOR_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CONNECTOR_SECRET_KEY", settings.secret_key)
    cli = CliRunner().invoke(main, ["flows", "export", "call-finished-add-to-list"])
    assert cli.exit_code == 0, cli.output
    assert text == cli.output
    assert yaml.safe_load(text) == as_write(
        "get", "/flows/call-finished-add-to-list").get_json()["definition"]

    yaml_headers = {"Content-Type": "text/yaml"}
    again = as_write("post", "/flows/import", data=text, headers=yaml_headers)
    assert_error(again, 409, "CONFLICT")
    replaced = as_write("post", "/flows/import?replace=true", data=text, headers=yaml_headers)
    assert replaced.status_code == 200
    copy = text.replace("name: call-finished-add-to-list", "name: copy-of-it")
    created = as_write("post", "/flows/import", data=copy, headers=yaml_headers)
    assert created.status_code == 201 and created.get_json()["name"] == "copy-of-it"
    assert as_write("get", "/flows/copy-of-it/export").get_data(as_text=True) == copy
    broken = as_write("post", "/flows/import", data="name: x\nsteps: [\n", headers=yaml_headers)
    assert "at line" in assert_error(broken, 422, "VALIDATION_ERROR")["message"]
    bad_step = copy.replace("list_id: lst_demo", "list_id: lst_demo\n    colour: red")
    error = assert_error(as_write("post", "/flows/import?replace=true", data=bad_step,
                                  headers=yaml_headers), 422, "VALIDATION_ERROR")
    assert list(error["details"]) == ["steps[1].inputs.colour"]
    assert_error(as_write("post", "/flows/import", data=copy,
                          headers={"Content-Type": "image/png"}), 415,
                 "UNSUPPORTED_MEDIA_TYPE")


# -- the OpenAPI document ----------------------------------------------------------------------

def _resolve(doc: dict, schema: dict) -> dict:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = doc["components"]["schemas"][name]
    return schema


def conforms(doc: dict, schema: dict, value, where: str = "$") -> list[str]:
    """Check ``value`` against an OpenAPI 3.0 schema (the subset apispec writes)."""
    schema = _resolve(doc, schema)
    if value is None:
        return [] if schema.get("nullable") or not schema else [f"{where}: null"]
    problems: list[str] = []
    for part in schema.get("allOf", []):
        problems += conforms(doc, part, value, where)
    if "anyOf" in schema:
        if all(conforms(doc, part, value, where) for part in schema["anyOf"]):
            problems.append(f"{where}: matches none of anyOf")
    kind = schema.get("type")
    checks = {"object": dict, "array": list, "string": str, "boolean": bool,
              "integer": int, "number": (int, float)}
    if kind and not isinstance(value, checks[kind]) or (
            kind in ("integer", "number") and isinstance(value, bool)):
        return [f"{where}: expected {kind}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} not in {schema['enum']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                problems.append(f"{where}.{name}: required")
        extra = schema.get("additionalProperties", True)
        for name, sub in value.items():
            if name in props:
                problems += conforms(doc, props[name], sub, f"{where}.{name}")
            elif extra is False:
                problems.append(f"{where}.{name}: not in the schema")
            elif isinstance(extra, dict):
                problems += conforms(doc, extra, sub, f"{where}.{name}")
    if isinstance(value, list) and "items" in schema:
        for i, sub in enumerate(value):
            problems += conforms(doc, schema["items"], sub, f"{where}[{i}]")
    return problems


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_the_openapi_document_describes_every_route_and_its_schemas(client):
    from connector.api_schemas import openapi_path

    answer = client.get(f"{API}/openapi.json")  # public: no key needed
    assert answer.status_code == 200
    doc = answer.get_json()
    assert doc["openapi"].startswith("3.") and doc["info"]["title"]
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer"}
    assert schemes["apiKey"]["name"] == "X-API-Key"
    rules = [r for r in client.application.url_map.iter_rules() if r.rule.startswith(API)]
    assert len(rules) > 20
    for rule in rules:
        path = openapi_path(rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            op = doc["paths"].get(path, {}).get(method.lower())
            assert op is not None, f"{method} {path} is not in the OpenAPI document"
            assert op["responses"] and op["operationId"]
            if path != f"{API}/openapi.json":
                assert op["x-scope"] in ApiKey.SCOPES and op["security"]
                assert "401" in op["responses"] and "403" in op["responses"]
            for param in op.get("parameters", []):
                if param["in"] == "path":
                    assert "{" + param["name"] + "}" in path
    assert len(doc["paths"]) == len({openapi_path(r.rule) for r in rules})
    defined = set(doc["components"]["schemas"])
    missing = {ref for ref in _refs(doc) if ref.rsplit("/", 1)[-1] not in defined}
    assert not missing and all(ref.startswith("#/components/") for ref in _refs(doc))
    scopes = {(p, m): op["x-scope"] for p, ops in doc["paths"].items()
              for m, op in ops.items() if "x-scope" in op}
    assert scopes[(f"{API}/keys", "post")] == "admin"
    assert scopes[(f"{API}/flows", "post")] == "write"
    assert scopes[(f"{API}/runs", "get")] == "read"
    body = doc["paths"][f"{API}/flows"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/FlowDefinition"}
    patch = doc["paths"][f"{API}/flows/{{name}}"]["patch"]
    assert patch["x-scope"] == "write" and "422" in patch["responses"]
    settings = _resolve(doc, patch["requestBody"]["content"]["application/json"]["schema"])
    assert set(settings["properties"]) == {"description", "concurrency", "on_failure"}
    assert "any_connection" in doc["components"]["schemas"]["Component"]["properties"]
    assert "steps" in doc["components"]["schemas"]["FlowDefinition"]["required"]


def test_responses_conform_to_their_openapi_schemas(host, as_write, client):
    doc = client.get(f"{API}/openapi.json").get_json()

    def schema_of(path, method, status):
        content = doc["paths"][API + path][method]["responses"][str(status)]["content"]
        return content["application/json"]["schema"]

    assert as_write("post", "/flows", json=catch_flow()).status_code == 201
    flow = Flow.get(Flow.name == "catch")
    run = Run.create(flow=flow, item={"text": "x"}, status=Run.FAILED, error="step x: boom",
                     failed_step="shout")
    checks = [("/flows", "get", "/flows", 200), ("/flows/catch", "get", "/flows/{name}", 200),
              (f"/runs/{run.id}", "get", "/runs/{run_id}", 200), ("/runs", "get", "/runs", 200),
              ("/apps/samora", "get", "/apps/{key}", 200), ("/me", "get", "/me", 200)]
    for url, method, path, status in checks:
        answer = as_write(method, url)
        assert answer.status_code == status
        assert conforms(doc, schema_of(path, method, status), answer.get_json()) == [], url
    error = as_write("get", "/flows/nope")
    assert conforms(doc, schema_of("/flows/{name}", "get", 404), error.get_json()) == []
    invalid = as_write("post", "/flows", json={"name": "x"})
    assert conforms(doc, schema_of("/flows", "post", 422), invalid.get_json()) == []
    # and the checker does catch a response that breaks the schema
    broken = dict(as_write("get", "/flows/catch").get_json())
    broken.pop("enabled")
    broken["surprise"] = 1
    problems = conforms(doc, schema_of("/flows/{name}", "get", 200), broken)
    assert "$.enabled: required" in problems and "$.surprise: not in the schema" in problems
