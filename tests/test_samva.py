"""Samva: the sandbox's rules over HTTP, and every trigger, action and search against it.

Actions and searches run as flow steps through ``engine.run_due`` (or straight through
``Action.run`` with a real ActionContext where a repeat is the point); triggers are
switched on with the runtime serving, so the sandbox's signed deliveries reach them.
Outcomes are checked in the sandbox's state.
"""
from __future__ import annotations

import json
import threading
import uuid

import pytest
import requests
from marshmallow import ValidationError
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from connector import FatalAPIError, RetriableAPIError, engine, flows, intake
from connector.http import ApiClient
from connector.sandbox import Sandbox
from connector.sdk import ActionContext, OutgoingRequest
from connector.signatures import new_secret, sign, verify
from connector.store import Run, TriggerState

from .conftest import wait_for

KEY = "sk_test_samva_demo"
H = {"X-API-Key": KEY}


@pytest.fixture
def http():
    with requests.Session() as session:
        session.trust_env = False
        yield session


def url(sandbox, path):
    return sandbox.urls["samva"] + path


def state(sandbox):
    return sandbox.state()["samva"]


def message(sandbox, message_id):
    return next(m for m in state(sandbox)["messages"] if m["id"] == message_id)


def error_of(response, status, code):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    return error


def send(http, sandbox, body, headers=None, status=202):
    response = http.post(url(sandbox, "/messages/send"), headers={**H, **(headers or {})},
                         json=body)
    assert response.status_code == status, response.text
    return response.json()


OTP = {"channel": "sms", "to": "+919876543210",
       "content": {"template_id": "dlt_template_123", "variables": {"otp": "123456"}}}


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args):
        pass


class Receiver:
    """A local webhook endpoint that records what it is sent."""

    def __init__(self):
        self.requests: list[dict] = []
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True,
                                   request_handler=_Quiet)
        self.url = f"http://127.0.0.1:{self._server.port}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def _app(self, environ, start_response):
        request = Request(environ)
        self.requests.append({"headers": dict(request.headers), "body": request.get_data()})
        return Response("ok")(environ, start_response)

    def close(self):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture
def receiver():
    rec = Receiver()
    yield rec
    rec.close()


# -- the sandbox's own rules --------------------------------------------------------------

def test_either_auth_header_works_and_they_must_agree(sandbox, http):
    path = url(sandbox, "/templates")
    for headers in ({"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"},
                    {"X-API-Key": KEY, "Authorization": f"Bearer {KEY}"}):
        answer = http.get(path, headers=headers)
        assert answer.status_code == 200, headers
        assert answer.headers["X-RateLimit-Limit"] and answer.headers["X-RateLimit-Reset"]
        assert int(answer.headers["X-RateLimit-Remaining"]) >= 0
    error_of(http.get(path, headers={"X-API-Key": KEY, "Authorization": "Bearer sk_test_x"}),
             401, "CONFLICTING_API_KEYS")
    error_of(http.get(path), 401, "MISSING_API_KEY")
    error_of(http.get(path, headers={"X-API-Key": "sk_test_nope"}), 401, "INVALID_API_KEY")
    denied = http.get(path, headers={"Authorization": f"Basic {KEY}"})
    error = error_of(denied, 401, "INVALID_API_KEY")
    assert KEY not in denied.text and "X-RateLimit-Limit" not in denied.headers
    assert error["message"] == "The Authorization header must be 'Bearer <api key>'."


def test_request_id_is_echoed_or_made_up(sandbox, http):
    mine = http.get(url(sandbox, "/templates"), headers={**H, "X-Request-Id": "req-mine-1"})
    assert mine.headers["X-Request-Id"] == "req-mine-1"
    made = http.get(url(sandbox, "/nowhere"), headers=H)
    error_of(made, 404, "NOT_FOUND")
    assert made.headers["X-Request-Id"].startswith("req_")


def test_organization_header_scopes_every_record(sandbox, http):
    partner = {**H, "X-Organization-Id": "org_partner"}
    names = [t["id"] for t in http.get(url(sandbox, "/templates"), headers=partner).json()["data"]]
    assert names == ["partner_alert"]
    error_of(http.get(url(sandbox, "/templates/dlt_template_123"), headers=partner),
             404, "TEMPLATE_NOT_FOUND")
    assert http.get(url(sandbox, "/messages"), headers=partner).json()["data"] == []
    error = error_of(http.get(url(sandbox, "/templates"),
                              headers={**H, "X-Organization-Id": "org_other"}), 403, "FORBIDDEN")
    assert error["details"] == {"header": "X-Organization-Id", "value": "org_other"}


def test_rate_limit_is_429_with_headers():
    with Sandbox(rate_limit_per_minute=2) as box, requests.Session() as http:
        http.trust_env = False
        path = box.urls["samva"] + "/templates"
        seen = [http.get(path, headers=H) for _ in range(3)]
        assert [r.status_code for r in seen] == [200, 200, 429]
        assert [r.headers["X-RateLimit-Remaining"] for r in seen] == ["1", "0", "0"]
        assert seen[2].json()["error"]["code"] == "RATE_LIMITED"
        assert int(seen[2].headers["Retry-After"]) >= 1


def test_pagination_defaults_limits_and_pages(sandbox, http):
    for n in range(23):
        send(http, sandbox, {"channel": "email", "to": f"user{n}@example.com",
                             "content": {"subject": "Hi", "body": f"Message {n}"}})
    first = http.get(url(sandbox, "/messages"), headers=H).json()
    assert len(first["data"]) == 20
    assert first["pagination"] == {"page": 1, "limit": 20, "total": 26, "pages": 2}
    last = http.get(url(sandbox, "/messages"), headers=H, params={"page": 3, "limit": 10}).json()
    assert last["pagination"] == {"page": 3, "limit": 10, "total": 26, "pages": 3}
    assert len(last["data"]) == 6
    assert [m["id"] for m in last["data"]][-3:] == ["msg_seed_failed", "msg_seed_welcome",
                                                    "msg_seed_otp"]
    assert http.get(url(sandbox, "/messages"), headers=H,
                    params={"page": 9}).json()["data"] == []
    for params in ({"limit": 101}, {"limit": 0}, {"page": 0}, {"limit": "ten"}):
        error = error_of(http.get(url(sandbox, "/messages"), headers=H, params=params),
                         400, "INVALID_PARAMETER")
        assert error["details"]["field"] in params
    assert http.get(url(sandbox, "/messages"), headers=H,
                    params={"limit": 100}).json()["pagination"]["pages"] == 1


def test_filters_sort_and_date_range(sandbox, http):
    def ids(**params):
        answer = http.get(url(sandbox, "/messages"), headers=H, params=params)
        assert answer.status_code == 200, answer.text
        return [m["id"] for m in answer.json()["data"]]

    assert ids() == ["msg_seed_failed", "msg_seed_welcome", "msg_seed_otp"]
    assert ids(sort="created_at") == ["msg_seed_otp", "msg_seed_welcome", "msg_seed_failed"]
    assert ids(status="delivered") == ["msg_seed_welcome", "msg_seed_otp"]
    assert ids(status="delivered,failed") == ids()
    assert ids(created_after="2024-01-01", created_before="2024-01-31") == [
        "msg_seed_welcome", "msg_seed_otp"]
    assert ids(created_before="2024-01-15") == ["msg_seed_otp"]  # the whole day counts
    assert ids(created_after="2024-01-20T09:00:00Z") == ["msg_seed_failed", "msg_seed_welcome"]
    for params in ({"status": "lost"}, {"sort": "name"}, {"created_after": "last week"}):
        error_of(http.get(url(sandbox, "/messages"), headers=H, params=params), 400,
                 "INVALID_PARAMETER")


def test_send_validation_follows_the_documented_envelope(sandbox, http):
    bad_phone = {**OTP, "to": "9876543210"}
    error = error_of(http.post(url(sandbox, "/messages/send"), headers=H, json=bad_phone),
                     400, "INVALID_PHONE_NUMBER")
    assert error == {"code": "INVALID_PHONE_NUMBER",
                     "message": "The phone number format is invalid",
                     "details": {"field": "to", "value": "9876543210",
                                 "expected": "+919876543210 or E.164 format"}}
    cases = [
        ({"channel": "fax", "to": "+919876543210", "content": {"body": "x"}}, 400,
         "VALIDATION_ERROR"),
        ({"channel": "email", "to": "not-an-email", "content": {"subject": "s", "body": "x"}},
         400, "INVALID_EMAIL"),
        ({"channel": "email", "to": "a@example.com", "content": {"body": "x"}}, 400,
         "VALIDATION_ERROR"),
        ({**OTP, "content": {**OTP["content"], "body": "and text"}}, 400, "VALIDATION_ERROR"),
        ({**OTP, "content": {"template_id": "nope"}}, 404, "TEMPLATE_NOT_FOUND"),
        ({**OTP, "channel": "whatsapp"}, 422, "TEMPLATE_CHANNEL_MISMATCH"),
        ({"channel": "whatsapp", "to": "+14155550123",
          "content": {"template_id": "wa_spring_promo", "variables": {"name": "A",
                                                                      "discount": "5%"}}},
         422, "TEMPLATE_NOT_APPROVED"),
        ({**OTP, "content": {"template_id": "dlt_template_123"}}, 422, "MISSING_VARIABLES"),
        ({"channel": "sms", "to": "+919876543210", "content": {"body": "hello"}}, 422,
         "DLT_TEMPLATE_REQUIRED"),
        ({"channel": "sms", "to": "+14155550123", "content": {"body": "x" * 1601}}, 400,
         "VALIDATION_ERROR"),
        ({**OTP, "conversation_id": "conv_nope"}, 404, "CONVERSATION_NOT_FOUND"),
    ]
    for body, status, code in cases:
        answer = http.post(url(sandbox, "/messages/send"), headers=H, json=body)
        assert answer.status_code == status and answer.json()["error"]["code"] == code, (
            body, answer.text)
    missing = http.post(url(sandbox, "/messages/send"), headers=H,
                        json={**OTP, "content": {"template_id": "dlt_template_123"}})
    assert missing.json()["error"]["details"]["missing"] == ["otp"]
    error_of(http.post(url(sandbox, "/messages/send"), headers=H), 400, "VALIDATION_ERROR")
    error_of(http.post(url(sandbox, "/messages/send"), headers={**H, "Content-Type": "text/plain"},
                       data="hi"), 415, "UNSUPPORTED_MEDIA_TYPE")
    assert len(state(sandbox)["messages"]) == 3  # nothing was queued


def test_idempotency_key_replays_the_first_answer_and_refuses_another_body(sandbox, http):
    key = {"X-Idempotency-Key": "order-1042-otp"}
    first = http.post(url(sandbox, "/messages/send"), headers={**H, **key}, json=OTP)
    again = http.post(url(sandbox, "/messages/send"), headers={**H, **key}, json=OTP)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    other = http.post(url(sandbox, "/messages/send"), headers={**H, **key},
                      json={**OTP, "to": "+14155550123"})
    error = error_of(other, 409, "IDEMPOTENCY_KEY_REUSED")
    assert error["details"]["idempotency_key"] == "order-1042-otp"
    # a refused request is not remembered: fixed, it goes through under the same key
    fresh = {"X-Idempotency-Key": "k-2"}
    error_of(http.post(url(sandbox, "/messages/send"), headers={**H, **fresh},
                       json={**OTP, "to": "12"}), 400, "INVALID_PHONE_NUMBER")
    assert http.post(url(sandbox, "/messages/send"), headers={**H, **fresh},
                     json=OTP).status_code == 202
    # keys are per organization
    partner = {**H, **key, "X-Organization-Id": "org_partner"}
    body = {"channel": "sms", "to": "+14155550123",
            "content": {"template_id": "partner_alert", "variables": {"text": "hi"}}}
    assert http.post(url(sandbox, "/messages/send"), headers=partner, json=body).status_code == 202
    assert len(state(sandbox)["messages"]) == 6
    assert len(state(sandbox)["idempotency_keys"]) == 3


def test_test_key_lifecycle_and_signed_webhooks(sandbox, http, receiver):
    secret = new_secret()
    hook = http.post(url(sandbox, "/webhooks"), headers=H, json={
        "url": receiver.url, "events": ["message.delivered", "message.failed"],
        "secret": secret})
    assert hook.status_code == 201 and "secret" not in hook.json()
    ok = send(http, sandbox, OTP)
    bad = send(http, sandbox, {"channel": "email", "to": "fail@example.com",
                               "content": {"subject": "Hi", "body": "Will bounce"}})
    assert ok["status"] == bad["status"] == "queued" and ok["credits_used"] == 1
    assert wait_for(lambda: len(receiver.requests) == 2)
    assert message(sandbox, ok["id"])["status"] == "delivered"
    failed = message(sandbox, bad["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "UNDELIVERABLE"
    assert failed["sent_at"] and failed["failed_at"]
    events = {}
    for request in receiver.requests:
        verify(secret, request["headers"], request["body"])
        body = json.loads(request["body"])
        events[body["type"]] = body
        data = body["data"]
        assert request["headers"]["Webhook-Id"] == f"evt_{data['id']}_{data['status']}"
    assert events["message.delivered"]["data"]["id"] == ok["id"]
    assert events["message.failed"]["data"]["id"] == bad["id"]


def test_webhooks_api_validates_lists_and_deletes(sandbox, http, receiver):
    base = {"url": receiver.url, "events": ["message.delivered"], "secret": new_secret()}
    for change, field in (({"secret": "short"}, "secret"), ({"events": ["message.read"]}, "events"),
                          ({"url": "ftp://x"}, "url")):
        error = error_of(http.post(url(sandbox, "/webhooks"), headers=H, json={**base, **change}),
                         400, "VALIDATION_ERROR")
        assert error["details"]["field"] == field
    hook = http.post(url(sandbox, "/webhooks"), headers=H, json=base).json()
    listed = http.get(url(sandbox, "/webhooks"), headers=H).json()
    assert [h["id"] for h in listed["data"]] == [hook["id"]]
    assert http.get(url(sandbox, f"/webhooks/{hook['id']}"), headers=H).json()["events"] == [
        "message.delivered"]
    assert http.delete(url(sandbox, f"/webhooks/{hook['id']}"), headers=H).status_code == 204
    error_of(http.delete(url(sandbox, f"/webhooks/{hook['id']}"), headers=H), 404,
             "WEBHOOK_NOT_FOUND")
    assert base["secret"] not in json.dumps(sandbox.state())


def test_threading_participants_and_admin_status(sandbox, http):
    sent = send(http, sandbox, {"channel": "email", "to": "asha.rao@example.com",
                                "content": {"subject": "Update", "body": "On its way"}})
    assert sent["conversation_id"] == "conv_demo" and sent["participant_id"] == "par_demo_asha"
    stranger = send(http, sandbox, {"channel": "whatsapp", "to": "+447700900123",
                                    "content": {"body": "Hello"}})
    assert stranger["conversation_id"] != "conv_demo"
    new = next(p for p in state(sandbox)["participants"] if p["phone"] == "+447700900123")
    assert new["conversation_ids"] == [stranger["conversation_id"]]
    dup = http.post(url(sandbox, "/participants"), headers=H,
                    json={"name": "Asha", "email": "asha.rao@example.com"})
    assert error_of(dup, 409, "DUPLICATE_PARTICIPANT")["details"] == {
        "field": "email", "participant_id": "par_demo_asha"}
    error_of(http.post(url(sandbox, "/participants"), headers=H, json={"name": "Nobody"}),
             400, "VALIDATION_ERROR")
    for _ in range(2):
        added = http.post(url(sandbox, "/conversations/conv_demo/participants"), headers=H,
                          json={"participant_id": new["id"]})
        assert added.status_code == 200
    assert added.json()["participant_ids"] == ["par_demo_asha", "par_demo_ben", new["id"]]
    members = http.get(url(sandbox, "/conversations/conv_demo/participants"), headers=H).json()
    assert members["pagination"]["total"] == 3
    admin = sandbox.root_url + f"/_sandbox/samva/messages/{stranger['id']}/status"
    moved = http.post(admin, json={"status": "failed"})
    assert moved.status_code == 200 and moved.json()["status"] == "failed"
    assert http.post(admin, json={"status": "delivered"}).status_code == 409


# -- the plugin: actions and searches ------------------------------------------------------

def run_steps(host, steps, item=None, name=None):
    """Save a flow with ``steps``, feed it one item, run it; return (run, step runs)."""
    flow = flows.save(host, {"name": name or f"samva-{uuid.uuid4().hex[:8]}",
                             "trigger": {"key": "samva.message_delivered",
                                         "connection": "samva"},
                             "steps": steps})
    trigger = host.catalog.trigger("samva.message_delivered")
    intake.ingest(flow, trigger, [(uuid.uuid4().hex, item or {"message_id": "m"})])
    engine.run_due(host)
    run = Run.select().where(Run.flow == flow).order_by(Run.id.desc()).get()
    return run, {s.name: s for s in run.step_runs}


def step(name, action, /, **inputs):
    return {"name": name, "action": action, "connection": "samva", "inputs": inputs}


@pytest.mark.covers("samva.send_message", "samva.get_message")
def test_send_on_all_three_channels_then_get(connected, sandbox):
    run, steps = run_steps(connected, [
        step("sms", "samva.send_message", channel="sms", to="+91 98765 43210",
             template_id="dlt_template_123", variables={"otp": "{{ trigger.otp }}"}),
        step("whatsapp", "samva.send_message", channel="whatsapp", to="+1 (415) 555-0123",
             template_id="wa_order_shipped",
             variables={"name": "Ben", "order_id": "#1042", "date": "Friday"}),
        step("email", "samva.send_message", channel="email", to="jane@example.com",
             subject="Your receipt", body="Thanks, {{ trigger.name }}!", sender="shop@acme.test",
             metadata={"order": "1042"}),
        step("check", "samva.get_message", message_id="{{ steps.sms.id }}"),
    ], item={"message_id": "m1", "otp": "778899", "name": "Jane"})
    assert run.status == Run.SUCCEEDED, run.error
    sent = {m["channel"]: m for m in state(sandbox)["messages"]
            if not m["id"].startswith("msg_seed")}
    assert sent["sms"]["to"] == "+919876543210" and "778899" in sent["sms"]["body"]
    assert sent["whatsapp"]["to"] == "+14155550123"
    assert sent["whatsapp"]["body"] == "Hi Ben, your order #1042 has shipped and arrives by Friday."
    assert sent["email"]["subject"] == "Your receipt" and sent["email"]["from"] == "shop@acme.test"
    assert sent["email"]["body"] == "Thanks, Jane!"
    assert sent["email"]["metadata"] == {"order": "1042"}
    assert steps["sms"].output["status"] == "queued"
    assert steps["check"].output["id"] == sent["sms"]["id"]
    keys = {k["key"] for k in state(sandbox)["idempotency_keys"]}
    assert len(keys) == 3 and all(len(k) == 40 for k in keys)  # the steps' own keys


def action_ctx(host, key="a" * 40):
    client = host.client(host.connection("samva"))
    return ActionContext(flow_name="t", run_id=1, step_name="send", idempotency_key=key,
                         client=client)


@pytest.mark.covers("samva.send_message")
def test_a_retried_send_sends_once_and_a_changed_one_is_refused(connected, sandbox):
    action = connected.catalog.action("samva.send_message")
    inputs = action.Inputs().load({"channel": "sms", "to": "+14155550123", "body": "Hi Ben"})
    ctx = action_ctx(connected)
    first = action.run(ctx, inputs)
    assert action.run(ctx, inputs) == first
    assert len([m for m in state(sandbox)["messages"] if m["body"] == "Hi Ben"]) == 1
    changed = dict(inputs, body="Hi again")
    with pytest.raises(FatalAPIError) as err:
        action.run(ctx, changed)
    assert err.value.status == 409 and err.value.code == "IDEMPOTENCY_KEY_REUSED"


def test_send_inputs_are_checked_before_calling(connected):
    schema = connected.catalog.action("samva.send_message").Inputs()
    loaded = schema.load({"channel": "whatsapp", "to": "+1 415-555-0123", "body": "x"})
    assert loaded["to"] == "+14155550123"
    for data, field in (({"channel": "sms", "to": "9876543210", "body": "x"}, "to"),
                        ({"channel": "email", "to": "+14155550123", "subject": "s",
                          "body": "x"}, "to"),
                        ({"channel": "email", "to": "a@example.com", "body": "x"}, "subject"),
                        ({"channel": "sms", "to": "+14155550123"}, "template_id"),
                        ({"channel": "sms", "to": "+14155550123", "body": "x",
                          "template_id": "t"}, "template_id"),
                        ({"channel": "pigeon", "to": "+14155550123", "body": "x"}, "channel"),
                        ({"channel": "sms", "to": "+14155550123", "template_id": "t",
                          "variables": {"a": [1]}}, "variables")):
        with pytest.raises(ValidationError) as err:
            schema.load(data)
        assert field in err.value.messages, (data, err.value.messages)


@pytest.mark.covers("samva.send_message")
def test_the_services_error_and_details_reach_the_run(connected, sandbox):
    run, steps = run_steps(connected, [
        step("otp", "samva.send_message", channel="sms", to="+919876543210",
             template_id="dlt_template_123")])
    assert run.status == Run.FAILED
    assert ("HTTP 422 MISSING_VARIABLES: Template dlt_template_123 needs variables: otp. "
            "(field: content.variables; missing: [\"otp\"])") in run.error
    run, _ = run_steps(connected, [
        step("text", "samva.send_message", channel="sms", to="+919876543210", body="Hi")])
    assert "HTTP 422 DLT_TEMPLATE_REQUIRED" in run.error
    assert "field: content.template_id" in run.error
    assert len(state(sandbox)["messages"]) == 3


@pytest.mark.covers("samva.list_messages", "samva.get_template", "samva.get_conversation",
                    "samva.list_conversation_messages")
def test_reading_messages_templates_and_conversations(connected, sandbox):
    run, steps = run_steps(connected, [
        step("january", "samva.list_messages", status="delivered", sort="created_at",
             created_after="2024-01-01", created_before="2024-01-31", limit=1, page=2),
        step("failed", "samva.list_messages", status="failed"),
        step("template", "samva.get_template", template_id="dlt_template_123"),
        step("conversation", "samva.get_conversation", conversation_id="conv_demo"),
        step("thread", "samva.list_conversation_messages",
             conversation_id="{{ steps.conversation.id }}", sort="created_at"),
    ])
    assert run.status == Run.SUCCEEDED, run.error
    january = steps["january"].output
    assert january["first"]["id"] == "msg_seed_welcome" and january["count"] == 1
    assert january["pagination"] == {"page": 2, "limit": 1, "total": 2, "pages": 2}
    assert [m["id"] for m in steps["failed"].output["results"]] == ["msg_seed_failed"]
    assert steps["template"].output["variables"] == ["otp"]
    assert steps["conversation"].output["participant_ids"] == ["par_demo_asha", "par_demo_ben"]
    assert [m["id"] for m in steps["thread"].output["results"]] == [
        "msg_seed_otp", "msg_seed_welcome", "msg_seed_failed"]
    run, _ = run_steps(connected, [step("gone", "samva.get_template", template_id="nope")])
    assert run.status == Run.FAILED and "HTTP 404 TEMPLATE_NOT_FOUND" in run.error


@pytest.mark.covers("samva.list_templates", "samva.list_conversations",
                    "samva.list_participants")
def test_dropdown_sources(connected, sandbox):
    templates = connected.options("samva.list_templates", "samva")
    assert {"value": "dlt_template_123", "label": "OTP verification (sms)"} in templates
    assert [o["value"] for o in connected.options("samva.list_templates", "samva",
                                                  {"channel": "whatsapp", "status": "approved"})
            ] == ["wa_order_shipped"]
    assert connected.options("samva.list_conversations", "samva") == [
        {"value": "conv_demo", "label": "Order #1042 delivery"}]
    people = connected.options("samva.list_participants", "samva")
    assert {o["label"] for o in people} == {"Asha Rao", "Ben Carter"}
    fields = connected.catalog.action("samva.send_message").Inputs().fields
    assert fields["template_id"].metadata["choices_from"] == "samva.list_templates"
    run, steps = run_steps(connected, [
        step("open", "samva.list_conversations", status="open", participant_id="par_demo_ben"),
        step("ben", "samva.list_participants", phone="+1 415 555 0123"),
        step("nobody", "samva.list_participants", email="nobody@example.com"),
        step("members", "samva.list_participants", conversation_id="conv_demo", limit=1),
    ])
    assert run.status == Run.SUCCEEDED, run.error
    assert steps["open"].output["first"]["id"] == "conv_demo"
    assert steps["ben"].output["first"]["id"] == "par_demo_ben"
    assert steps["nobody"].output == {"found": False, "count": 0, "first": None, "results": [],
                                      "pagination": {"page": 1, "limit": 100, "total": 0,
                                                     "pages": 0}}
    assert steps["members"].output["pagination"]["total"] == 2


@pytest.mark.covers("samva.create_participant", "samva.add_participant", "samva.send_message")
def test_create_a_participant_add_it_and_message_it_in_the_conversation(connected, sandbox):
    run, steps = run_steps(connected, [
        step("person", "samva.create_participant", name="Jane Smith", phone="+1 555 123 4567",
             email="jane@example.com", metadata={"crm_id": "42"}),
        step("join", "samva.add_participant", conversation_id="conv_demo",
             participant_id="{{ steps.person.id }}"),
        step("hello", "samva.send_message", channel="sms", to="{{ steps.person.phone }}",
             body="Welcome to the thread", conversation_id="conv_demo"),
    ])
    assert run.status == Run.SUCCEEDED, run.error
    person = steps["person"].output
    assert person["phone"] == "+15551234567" and person["metadata"] == {"crm_id": "42"}
    conv = next(c for c in state(sandbox)["conversations"] if c["id"] == "conv_demo")
    assert conv["participant_ids"] == ["par_demo_asha", "par_demo_ben", person["id"]]
    assert conv["message_count"] == 4
    sent = next(m for m in state(sandbox)["messages"] if m["body"] == "Welcome to the thread")
    assert sent["participant_id"] == person["id"] and sent["conversation_id"] == "conv_demo"
    # a retried create gets the same participant back (the step's idempotency key)
    action = connected.catalog.action("samva.create_participant")
    inputs = action.Inputs().load({"name": "Lee", "email": "lee@example.com"})
    ctx = action_ctx(connected, "b" * 40)
    assert action.run(ctx, inputs)["id"] == action.run(ctx, inputs)["id"]
    assert len([p for p in state(sandbox)["participants"] if p["email"] == "lee@example.com"]) == 1
    run, _ = run_steps(connected, [step("again", "samva.create_participant",
                                        email="asha.rao@example.com")])
    assert run.status == Run.FAILED
    assert "HTTP 409 DUPLICATE_PARTICIPANT" in run.error
    assert "participant_id: par_demo_asha" in run.error


# -- the app: auth variants, organization, credential test, 429 ---------------------------

def test_each_auth_header_choice_and_the_organization_reach_the_service(connected, sandbox):
    conn = sandbox.connections()["samva"]
    seen = []
    for mode in ("both", "x-api-key", "bearer"):
        connected.add_connection(f"samva-{mode}", "samva", {**conn["credentials"],
                                                           "auth_header": mode},
                                 conn["base_url"])
        assert connected.test_connection(f"samva-{mode}") == {"ok": True, "templates": 4}
        client = connected.client(connected.connection(f"samva-{mode}"))
        outgoing = OutgoingRequest("GET", "/templates")
        client.app.authenticate(outgoing, client.credentials)
        seen.append(sorted(h for h in outgoing.headers if h != "X-Request-Id"))
    assert seen == [["Authorization", "X-API-Key"], ["X-API-Key"], ["Authorization"]]
    connected.add_connection("samva-partner", "samva", {**conn["credentials"],
                                                       "organization_id": "org_partner"},
                             conn["base_url"])
    assert [o["value"] for o in connected.options("samva.list_templates", "samva-partner")] == [
        "partner_alert"]
    connected.add_connection("samva-wrong", "samva", {"api_key": "sk_test_wrong"},
                             conn["base_url"])
    with pytest.raises(FatalAPIError) as err:
        connected.test_connection("samva-wrong")
    assert err.value.status == 401 and "sk_test_wrong" not in str(err.value)
    connected.add_connection("samva-elsewhere", "samva", {**conn["credentials"],
                                                         "organization_id": "org_x"},
                             conn["base_url"])
    with pytest.raises(FatalAPIError) as err:
        connected.test_connection("samva-elsewhere")
    assert str(err.value) == ("HTTP 403 FORBIDDEN: This API key has no access to organization "
                              "org_x. (header: X-Organization-Id; value: org_x)")


def test_a_429_is_retriable_after_the_reset(connected):
    with Sandbox(rate_limit_per_minute=1) as box:
        app = connected.catalog.app("samva")
        client = ApiClient(app, box.connections()["samva"]["credentials"], box.urls["samva"])
        client.session.trust_env = False
        client.get("/templates")
        with pytest.raises(RetriableAPIError) as err:
            client.get("/templates")
        assert err.value.status == 429 and err.value.code == "RATE_LIMITED"
        assert 0 < err.value.retry_after <= 60
        client.close()


# -- the triggers ---------------------------------------------------------------------------

def trigger_flow(host, key, steps=None, **inputs):
    flow = flows.save(host, {"name": key.replace(".", "-"),
                             "trigger": {"key": key, "connection": "samva", "inputs": inputs},
                             "steps": steps or [step("look", "samva.get_message",
                                                     message_id="{{ trigger.message_id }}")]})
    flows.enable(host, flow)
    return flow


def final(flow):
    return [r for r in Run.select().where(Run.flow == flow) if r.status in Run.FINAL]


@pytest.mark.covers("samva.message_failed", "samva.send_message")
def test_a_failed_sms_alerts_by_email(runtime, sandbox, http):
    host = runtime.host
    flow = trigger_flow(host, "samva.message_failed", steps=[
        step("alert", "samva.send_message", channel="email", to="ops@example.com",
             subject="SMS to {{ trigger.to }} failed",
             body="{{ trigger.error.code }}: {{ trigger.error.message }}")])
    hooks = state(sandbox)["webhooks"]
    assert len(hooks) == 1 and hooks[0]["events"] == ["message.failed"]
    assert hooks[0]["url"] == flows.webhook_url(host, flow)
    secret = host.box.open(TriggerState.get(TriggerState.flow == flow).sealed_subscription)
    assert secret["secret"].startswith("whsec_") and secret["id"] == hooks[0]["id"]
    send(http, sandbox, {"channel": "sms", "to": "+14155550000", "content": {"body": "Hi"}})
    send(http, sandbox, {"channel": "sms", "to": "+14155550123", "content": {"body": "Fine"}})
    assert wait_for(lambda: len(final(flow)) == 1, timeout=20)
    sandbox.wait_idle(5)
    run = final(flow)[0]
    assert run.status == Run.SUCCEEDED, run.error
    assert run.item["message_id"] and run.item["event"] == "message.failed"
    alert = next(m for m in state(sandbox)["messages"] if m["to"] == "ops@example.com")
    assert alert["subject"] == "SMS to +14155550000 failed"
    assert alert["body"].startswith("UNDELIVERABLE: The sms message to +14155550000")
    assert len(final(flow)) == 1  # the delivered one fired nothing here
    assert flows.disable(host, flow) == []
    assert state(sandbox)["webhooks"] == []


@pytest.mark.covers("samva.message_delivered", "samva.get_message")
def test_delivered_fires_once_per_message_on_its_channel(runtime, sandbox, http):
    host = runtime.host
    flow = trigger_flow(host, "samva.message_delivered", channel="whatsapp")
    wa = send(http, sandbox, {"channel": "whatsapp", "to": "+14155550123",
                              "content": {"body": "Parcel at your door"}})
    send(http, sandbox, OTP)  # delivered too, but by SMS
    assert wait_for(lambda: len(final(flow)) == 1, timeout=20)
    sandbox.wait_idle(5)
    run = final(flow)[0]
    assert run.status == Run.SUCCEEDED, run.error
    assert run.item["message_id"] == wa["id"] and run.item["channel"] == "whatsapp"
    looked = {s.name: s for s in run.step_runs}["look"].output
    assert looked["status"] == "delivered" and looked["delivered_at"]
    # a redelivery of the same event (under another webhook-id) is a duplicate
    secret = host.box.open(TriggerState.get(TriggerState.flow == flow).sealed_subscription)
    body = json.dumps({"type": "message.delivered", "timestamp": "2026-01-01T00:00:00Z",
                       "data": message(sandbox, wa["id"])}).encode()
    answer = http.post(flows.webhook_url(host, flow), data=body,
                       headers={**sign(secret["secret"], "evt_again", body),
                                "Content-Type": "application/json"})
    assert answer.json() == {"accepted": 0, "duplicates": 1}
    forged = http.post(flows.webhook_url(host, flow), data=body,
                       headers={**sign(new_secret(), "evt_forged", body),
                                "Content-Type": "application/json"})
    assert forged.status_code == 401
    assert len(Run.select().where(Run.flow == flow)) == 1
