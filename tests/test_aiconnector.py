"""AI Connector against its sandbox over real HTTP: every trigger, action and search, and the
emulator's own rules (custom channels, the bot's replies, admin routes).

Actions run in saved flows (``engine.run_due``) or through a real ActionContext whose
``once`` is the host's ledger; triggers through real signed deliveries to the runtime.
Outcomes are checked in the sandbox's state.
"""
from __future__ import annotations

import json
import threading
from contextlib import contextmanager

import pytest
import requests
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from connector import FatalAPIError, IdempotencyConflict, engine, flows, intake
from connector.errors import FlowError
from connector.sdk import ActionContext
from connector.signatures import sign, verify
from connector.store import Run, StepRun, TriggerState

from .conftest import wait_for

CONN = "aiconnector"
KEY = {"apiKey": "aic_test_key"}
OUTBOUND = "aiconnector.outbound_message"


def ai(sandbox) -> dict:
    return sandbox.state()["aiconnector"]


def aic_url(sandbox, path: str) -> str:
    return sandbox.urls["aiconnector"] + path


def admin(sandbox, path: str) -> str:
    return sandbox.root_url + "/_sandbox/aiconnector" + path


def run_steps(host, steps, item, key, name="aic-steps"):
    """Save a flow with these steps, feed it one trigger item, run it; return the run."""
    flow = flows.save(host, {"name": name, "trigger": {"key": OUTBOUND, "connection": CONN},
                             "steps": steps})
    intake.ingest(flow, host.catalog.trigger(OUTBOUND), [(key, item)])
    engine.run_due(host)
    return Run.get((Run.flow == flow) & (Run.dedupe_key == key))


def outputs(run) -> dict:
    return {s.name: s.output for s in StepRun.select().where(StepRun.run == run)}


@contextmanager
def action_ctx(host, action_key, idempotency_key="a" * 40, connection=CONN):
    """A real ActionContext: the connection's client and the host's idempotency ledger."""
    client = host.client(host.connection(connection))
    try:
        yield ActionContext(flow_name="test", run_id=0, step_name="step",
                            idempotency_key=idempotency_key, client=client,
                            once=lambda key, request, call: engine.once(action_key, key,
                                                                        request, call))
    finally:
        client.close()


def run_action(host, key, inputs, **ctx_args):
    action = host.catalog.action(key)
    with action_ctx(host, key, **ctx_args) as ctx:
        return action.run(ctx, action.Inputs().load(inputs))


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args):
        pass


class Receiver:
    """A local webhook endpoint recording requests and answering scripted statuses."""

    def __init__(self):
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        self._lock = threading.Lock()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True,
                                   request_handler=_Quiet)
        self.url = f"http://127.0.0.1:{self._server.port}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def _app(self, environ, start_response):
        request = Request(environ)
        with self._lock:
            self.requests.append({"headers": dict(request.headers), "body": request.get_data()})
            status = self.statuses.pop(0) if self.statuses else 200
        return Response("ok", status=status)(environ, start_response)

    def payloads(self) -> list[dict]:
        with self._lock:
            return [json.loads(r["body"]) for r in self.requests]

    def close(self):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture
def receiver():
    rec = Receiver()
    yield rec
    rec.close()


@pytest.fixture
def http():
    with requests.Session() as session:
        session.trust_env = False
        yield session


def error_code(response, status):
    assert response.status_code == status, response.text
    return response.json()["error"]["code"]


# -- contacts --------------------------------------------------------------------------------

CREATE = {"name": "contact", "action": "aiconnector.create_contact", "connection": CONN,
          "inputs": {"phone": "{{ trigger.phone | default('') }}",
                     "email": "{{ trigger.email | default('') }}",
                     "firstName": "{{ trigger.first | default('') }}"}}


@pytest.mark.covers("aiconnector.create_contact")
def test_create_contact_returns_the_existing_contact_for_a_known_phone(connected, sandbox):
    first = run_steps(connected, [CREATE], {"phone": "+1 (555) 123-4567", "first": "Jane"}, "i1")
    again = run_steps(connected, [CREATE], {"phone": "+15551234567", "first": "Other"}, "i2")
    assert first.status == again.status == Run.SUCCEEDED
    assert outputs(first)["contact"]["id"] == outputs(again)["contact"]["id"]
    contacts = ai(sandbox)["contacts"]
    assert [(c["phone"], c["firstName"]) for c in contacts] == [("+15551234567", "Jane")]
    inputs = connected.catalog.action("aiconnector.create_contact").Inputs()
    assert inputs.load({"phone": "+44 20 7946 0958"})["phone"] == "+442079460958"


@pytest.mark.covers("aiconnector.create_contact")
def test_create_contact_refuses_a_phone_without_country_code(connected, sandbox):
    with pytest.raises(FlowError) as caught:
        flows.save(connected, {"name": "bad", "trigger": {"key": OUTBOUND, "connection": CONN},
                               "steps": [{**CREATE, "inputs": {"phone": "5551234567"}}]})
    assert "country code" in str(caught.value) and "steps[0].inputs.phone" in str(caught.value)
    run = run_steps(connected, [CREATE], {"phone": "5551234567"}, "i1")
    assert run.status == Run.FAILED and "country code" in run.error
    nothing = run_steps(connected, [CREATE], {"first": "Nobody"}, "i2")
    assert nothing.status == Run.FAILED and "phone" in nothing.error
    assert ai(sandbox)["contacts"] == []


@pytest.mark.covers("aiconnector.create_contact")
def test_create_contact_by_email_only_is_not_duplicated(connected, sandbox):
    runs = [run_steps(connected, [CREATE], {"email": "ada@example.com", "first": "Ada"}, key)
            for key in ("i1", "i2")]
    assert {r.status for r in runs} == {Run.SUCCEEDED}
    contacts = ai(sandbox)["contacts"]
    assert [(c["email"], c["phone"]) for c in contacts] == [("ada@example.com", None)]
    assert {outputs(r)["contact"]["id"] for r in runs} == {contacts[0]["id"]}


FIND = {"name": "find", "action": "aiconnector.find_contact", "connection": CONN,
        "inputs": {"phone": "{{ trigger.phone | default('') }}",
                   "email": "{{ trigger.email | default('') }}"}}
ADD_FOUND = {"name": "add", "action": "aiconnector.add_to_list", "connection": CONN,
             "filter": [{"field": "steps.find.found", "op": "equals", "value": True}],
             "inputs": {"list_id": "lst_vip", "contact_id": "{{ steps.find.first.id }}"}}


@pytest.mark.covers("aiconnector.find_contact", "aiconnector.add_to_list")
def test_find_contact_by_phone_or_email_and_nobody_found_is_not_an_error(connected, sandbox):
    jane, _ = sandbox.aiconnector.create_contact({"firstName": "Jane", "lastName": "Smith",
                                                 "phone": "+15551234567",
                                                 "email": "jane@example.com"})
    by_phone = run_steps(connected, [FIND, ADD_FOUND], {"phone": "+1 555-123-4567"}, "i1")
    by_email = run_steps(connected, [FIND, ADD_FOUND],
                         {"phone": "+15550001111", "email": "JANE@example.com"}, "i2")
    nobody = run_steps(connected, [FIND, ADD_FOUND], {"email": "nobody@example.com"}, "i3")
    assert by_phone.status == by_email.status == Run.SUCCEEDED
    for run in (by_phone, by_email):
        found = outputs(run)["find"]
        assert found["found"] is True and found["count"] == 1 and found["first"] == jane
    assert nobody.status == Run.FILTERED
    assert outputs(nobody)["find"] == {"found": False, "count": 0, "first": None, "results": []}
    vip = next(lst for lst in ai(sandbox)["lists"] if lst["id"] == "lst_vip")
    assert vip["members"] == [jane["id"]]
    assert connected.options("aiconnector.find_contact", CONN, {"email": "jane@example.com"}) == [
        {"value": jane["id"], "label": "Jane Smith"}]


@pytest.mark.covers("aiconnector.find_contact")
def test_find_contact_fails_on_errors_other_than_not_found(connected, sandbox):
    connected.add_connection("aic-wrong", "aiconnector", {"api_key": "aic_wrong_value"},
                             sandbox.urls["aiconnector"])
    search = connected.catalog.action("aiconnector.find_contact")
    with action_ctx(connected, search.key, connection="aic-wrong") as ctx:
        with pytest.raises(FatalAPIError) as caught:
            search.run(ctx, search.Inputs().load({"email": "jane@example.com"}))
    assert caught.value.status == 401 and "aic_wrong_value" not in str(caught.value)
    with pytest.raises(Exception, match="phone"):
        search.Inputs().load({"phone": "", "email": ""})


@pytest.mark.covers("aiconnector.create_contact", "aiconnector.add_to_list")
def test_add_to_list_twice_is_one_member_and_an_unknown_list_fails(connected, sandbox):
    add = {"name": "add", "action": "aiconnector.add_to_list", "connection": CONN,
           "inputs": {"list_id": "{{ trigger.list }}", "contact_id": "{{ steps.contact.id }}"}}
    runs = [run_steps(connected, [CREATE, add], {"phone": "+14155550140", "list": "lst_demo"},
                      key) for key in ("i1", "i2")]
    assert {r.status for r in runs} == {Run.SUCCEEDED}
    contact_id = outputs(runs[0])["contact"]["id"]
    assert outputs(runs[1])["add"] == {"success": True, "listId": "lst_demo",
                                       "contactId": contact_id}
    demo = next(lst for lst in ai(sandbox)["lists"] if lst["id"] == "lst_demo")
    assert demo["members"] == [contact_id]
    missing = run_steps(connected, [CREATE, add], {"phone": "+14155550140", "list": "lst_x"},
                        "i3")
    assert missing.status == Run.FAILED and "HTTP 404 LIST_NOT_FOUND" in missing.error
    # The document has no endpoint listing lists: the list id is typed, not a dropdown.
    list_field = connected.catalog.action("aiconnector.add_to_list").Inputs().fields["list_id"]
    assert "choices_from" not in list_field.metadata


# -- custom-channel messages -------------------------------------------------------------------

SEND = {"name": "send", "action": "aiconnector.send_custom_channel_message", "connection": CONN,
        "inputs": {"fromId": "{{ trigger.fromId }}", "customChannel": "crm",
                   "body": "{{ trigger.body }}",
                   "campaignId": "{{ trigger.campaign | default('') }}", "firstName": "Jane",
                   "lastName": "Smith", "email": "jane@example.com"}}


@pytest.mark.covers("aiconnector.send_custom_channel_message")
def test_send_custom_channel_message_sends_the_documented_custom_data(connected, sandbox):
    run = run_steps(connected, [SEND], {"fromId": "crm-7", "body": "Your order shipped"}, "i1")
    assert run.status == Run.SUCCEEDED
    sent = [m for m in ai(sandbox)["messages"] if m["direction"] == "outbound"]
    assert len(sent) == 1
    assert {k: sent[0][k] for k in ("fromId", "customChannel", "body", "campaignId",
                                    "firstName", "lastName", "email")} == {
        "fromId": "crm-7", "customChannel": "crm", "body": "Your order shipped",
        "campaignId": None, "firstName": "Jane", "lastName": "Smith",
        "email": "jane@example.com"}
    out = outputs(run)["send"]
    assert out["success"] is True and out["messageId"] == sent[0]["messageId"]
    contact = next(c for c in ai(sandbox)["contacts"] if c["id"] == out["contactId"])
    assert (contact["firstName"], contact["email"]) == ("Jane", "jane@example.com")
    empty = run_steps(connected, [SEND], {"fromId": "crm-7", "body": ""}, "i2")
    assert empty.status == Run.FAILED and "body" in empty.error
    assert len([m for m in ai(sandbox)["messages"] if m["direction"] == "outbound"]) == 1


@pytest.mark.covers("aiconnector.send_custom_channel_message")
def test_send_custom_channel_message_is_sent_once_per_step_key(connected, sandbox):
    key = "aiconnector.send_custom_channel_message"
    inputs = {"fromId": "crm-7", "customChannel": "crm", "body": "Hello"}
    first = run_action(connected, key, inputs, idempotency_key="k" * 40)
    repeat = run_action(connected, key, inputs, idempotency_key="k" * 40)  # a retried step
    assert repeat == first
    with pytest.raises(IdempotencyConflict):
        run_action(connected, key, {**inputs, "body": "Other"}, idempotency_key="k" * 40)
    other = run_action(connected, key, inputs, idempotency_key="m" * 40)  # another run
    assert other["messageId"] != first["messageId"]
    sent = [m["body"] for m in ai(sandbox)["messages"] if m["direction"] == "outbound"]
    assert sent == ["Hello", "Hello"]


PUSH = {"name": "push", "action": "aiconnector.push_incoming_message", "connection": CONN,
        "inputs": {"messageSid": "{{ trigger.sid | default('') }}",
                   "fromId": "{{ trigger.fromId }}", "toId": "biz-1",
                   "body": "{{ trigger.body }}", "channel": "livechat",
                   "messageType": "{{ trigger.type | default('text') }}"}}


@pytest.mark.covers("aiconnector.push_incoming_message")
def test_push_incoming_message_never_duplicates_on_retry(connected, sandbox):
    key = "aiconnector.push_incoming_message"
    inputs = {"fromId": "cust-1", "toId": "biz-1", "body": "Do you ship to Utrecht?"}
    first = run_action(connected, key, inputs, idempotency_key="p" * 40)
    retry = run_action(connected, key, inputs, idempotency_key="p" * 40)
    assert first["messageSid"] == retry["messageSid"] == "connector-" + "p" * 40
    assert first["duplicate"] is False and retry["duplicate"] is True
    assert retry["messageId"] == first["messageId"]
    inbound = [m for m in ai(sandbox)["messages"] if m["direction"] == "inbound"]
    assert [(m["messageSid"], m["body"], m["messageType"], m["status"]) for m in inbound] == [
        ("connector-" + "p" * 40, "Do you ship to Utrecht?", "text", "received")]


@pytest.mark.covers("aiconnector.push_incoming_message")
def test_push_incoming_message_sends_a_mapped_message_sid(connected, sandbox):
    runs = [run_steps(connected, [PUSH], {"sid": "crm-msg-42", "fromId": "cust-1",
                                          "body": "👍", "type": "reaction"}, key)
            for key in ("i1", "i2")]  # the same CRM message reaching the flow twice
    assert {r.status for r in runs} == {Run.SUCCEEDED}
    assert [outputs(r)["push"]["duplicate"] for r in runs] == [False, True]
    inbound = [m for m in ai(sandbox)["messages"] if m["direction"] == "inbound"]
    assert [(m["messageSid"], m["channel"], m["toId"], m["messageType"]) for m in inbound] == [
        ("crm-msg-42", "livechat", "biz-1", "reaction")]
    with pytest.raises(FlowError, match="messageType"):
        flows.save(connected, {"name": "bad", "trigger": {"key": OUTBOUND, "connection": CONN},
                               "steps": [{**PUSH, "inputs": {**PUSH["inputs"],
                                                             "messageType": "image"}}]})


# -- credits and auto-recharge ---------------------------------------------------------------

@pytest.mark.covers("aiconnector.grant_credits")
def test_grant_credits_once_per_key_and_a_changed_amount_is_refused(connected, sandbox):
    key = "aiconnector.grant_credits"
    grant = {"email": "client@agency.example", "amount": 10, "idempotency_key": "ar-1"}
    first = run_action(connected, key, grant)
    again = run_action(connected, key, grant, idempotency_key="b" * 40)  # another flow, same key
    assert first == again == {"success": True, "sub_account_id": "sub_demo",
                              "credits_added": 10, "new_balance": 52}
    with pytest.raises(IdempotencyConflict):
        run_action(connected, key, {**grant, "amount": 20})
    ledger = ai(sandbox)["credit_ledger"]
    assert [(e["email"], e["amount"]) for e in ledger] == [("client@agency.example", 10)]


def enable(host, name, trigger_inputs=None, steps=None):
    flow = flows.save(host, {"name": name,
                             "trigger": {"key": OUTBOUND if steps else "aiconnector.auto_recharge",
                                         "connection": CONN, "inputs": trigger_inputs or {}},
                             "steps": steps or [{"name": "grant",
                                                 "action": "aiconnector.grant_credits",
                                                 "connection": CONN,
                                                 "inputs": {"email": "{{ trigger.email }}",
                                                            "amount": "{{ trigger.amount }}",
                                                            "idempotency_key":
                                                                "{{ trigger.idempotency_key }}"}}]})
    flows.enable(host, flow)
    secret = host.box.open(TriggerState.get(TriggerState.flow == flow).sealed_subscription)
    return flow, secret["secret"]


def post_signed(url, secret, msg_id, payload):
    body = json.dumps(payload).encode()
    headers = {**sign(secret, msg_id, body), "Content-Type": "application/json"}
    return requests.post(url, data=body, headers=headers, timeout=10)


def final(flow):
    return [r for r in Run.select().where(Run.flow == flow) if r.status in Run.FINAL]


@pytest.mark.covers("aiconnector.auto_recharge", "aiconnector.grant_credits")
def test_auto_recharge_checks_signature_and_payload_and_keeps_its_secret(runtime, sandbox):
    host = runtime.host
    flow, secret = enable(host, "recharge")
    url = flows.webhook_url(host, flow)
    payload = {"event": "auto_recharge", "data": {"idempotency_key": "ar-7", "amount": 5,
                                                  "sub_account_email": "client@agency.example"}}
    assert post_signed(url, "whsec_" + "A" * 32, "ar-7", payload).status_code == 401
    incomplete = post_signed(url, secret, "ar-8", {"idempotency_key": "ar-8", "amount": 5})
    assert error_code(incomplete, 400) == "INVALID_PAYLOAD" and "email" in incomplete.text
    assert post_signed(url, secret, "ar-7", payload).json() == {"accepted": 1, "duplicates": 0}
    assert post_signed(url, secret, "other-id", payload).json() == {"accepted": 0,
                                                                    "duplicates": 1}
    assert wait_for(lambda: len(final(flow)) == 1)
    assert final(flow)[0].status == Run.SUCCEEDED
    assert [e["amount"] for e in ai(sandbox)["credit_ledger"]] == [5]
    flows.disable(host, flow)
    flows.enable(host, flow)  # the pasted secret still holds after off and on
    again = host.box.open(TriggerState.get(TriggerState.flow == flow).sealed_subscription)
    assert again["secret"] == secret


# -- the bot's outbound messages on a custom channel --------------------------------------------

ARCHIVE = {"name": "archive", "action": "aiconnector.send_custom_channel_message",
           "connection": CONN,
           "inputs": {"fromId": "{{ trigger.fromId }}", "customChannel": "archive",
                      "body": "{{ trigger.source | default('?') }}: {{ trigger.body }}"}}


@pytest.mark.covers("aiconnector.outbound_message", "aiconnector.push_incoming_message",
                    "aiconnector.send_custom_channel_message")
def test_the_bots_reply_on_a_custom_channel_fires_the_trigger(runtime, sandbox, http):
    host = runtime.host
    flow, secret = enable(host, "bot-replies", {"custom_channel": "livechat"}, [ARCHIVE])
    configured = http.put(admin(sandbox, "/custom-channels/livechat"),
                          json={"url": flows.webhook_url(host, flow), "secret": secret,
                                "reply_delay": 0})
    assert configured.status_code == 200 and configured.json()["secret"] == secret
    inputs = {"fromId": "cust-9", "toId": "biz-1", "body": "Is it in stock?",
              "channel": "livechat"}
    pushed = run_action(host, "aiconnector.push_incoming_message", inputs)
    run_action(host, "aiconnector.push_incoming_message", inputs)  # a retry: no second reply
    assert wait_for(lambda: len(final(flow)) == 1 and sandbox.wait_idle(0.1))
    run = final(flow)[0]
    assert run.status == Run.SUCCEEDED
    item = run.item
    assert item["inReplyTo"] == pushed["messageSid"] and item["source"] == "bot"
    assert (item["fromId"], item["toId"], item["customChannel"]) == ("cust-9", "biz-1",
                                                                     "livechat")
    assert item["contactId"] == pushed["contactId"] and "Is it in stock?" in item["body"]
    assert run.dedupe_key == item["messageId"]
    archived = [m for m in ai(sandbox)["messages"] if m.get("customChannel") == "archive"]
    assert [m["body"] for m in archived] == ["bot: " + item["body"]]
    assert len(Run.select().where(Run.flow == flow)) == 1


@pytest.mark.covers("aiconnector.outbound_message")
def test_outbound_message_redelivery_other_channels_and_forgeries(runtime, sandbox, http):
    host = runtime.host
    flow, secret = enable(host, "bot-out", {"custom_channel": "sms-bridge"}, [ARCHIVE])
    url = flows.webhook_url(host, flow)
    for channel in ("sms-bridge", "other"):  # one URL pasted into two channels
        http.put(admin(sandbox, f"/custom-channels/{channel}"),
                 json={"url": url, "secret": secret}).raise_for_status()
    emitted = http.post(admin(sandbox, "/custom-channels/sms-bridge/bot-messages"),
                        json={"fromId": "cust-2", "body": "Your table is booked", "times": 2})
    assert [d["status"] for d in emitted.json()["deliveries"]] == [200, 200]
    ignored = http.post(admin(sandbox, "/custom-channels/other/bot-messages"),
                        json={"fromId": "cust-2", "body": "Not for this flow"})
    assert ignored.json()["deliveries"][0]["status"] == 200
    flat = {"messageId": "m-flat", "customChannel": "sms-bridge", "fromId": "cust-3",
            "body": "Sent with top-level fields"}
    assert post_signed(url, "whsec_" + "B" * 32, "m-flat", flat).status_code == 401
    assert error_code(post_signed(url, secret, "m-x", {"customData": {"body": "no id"}}),
                      400) == "INVALID_PAYLOAD"
    assert post_signed(url, secret, "m-flat", flat).json() == {"accepted": 1, "duplicates": 0}
    assert wait_for(lambda: len(final(flow)) == 2)
    items = sorted((r.item for r in final(flow)), key=lambda i: i["messageId"] != "m-flat")
    assert [(i["messageId"], i["fromId"], i["body"]) for i in items] == [
        ("m-flat", "cust-3", "Sent with top-level fields"),
        (emitted.json()["messageId"], "cust-2", "Your table is booked")]
    assert {r.status for r in final(flow)} == {Run.SUCCEEDED}


# -- the emulator's own rules ------------------------------------------------------------------

def test_sandbox_bot_replies_once_to_each_new_text_message(sandbox, http, receiver):
    configured = http.put(admin(sandbox, "/custom-channels/custom"),
                          json={"url": receiver.url, "reply_delay": 0}).json()
    assert configured["secret"].startswith("whsec_") and configured["auto_reply"] is True
    incoming = aic_url(sandbox, "/incoming_custom_channel_message")
    message = {"customData": {"messageSid": "sid-1", "fromId": "c1", "toId": "biz",
                              "body": "Hello?"}, "messageType": "text"}  # no channel: custom
    for body in (message, message,
                 {**message, "customData": {**message["customData"], "messageSid": "sid-2"},
                  "messageType": "reaction"},
                 {"customData": {**message["customData"], "messageSid": "sid-3",
                                 "status": "read"}}):
        assert http.post(incoming, params=KEY, json=body).status_code == 200
    assert sandbox.wait_idle(5)
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    payload = json.loads(request["body"])
    assert verify(configured["secret"], request["headers"], request["body"]) == payload["messageId"]
    assert payload["event"] == "outbound_custom_channel_message"
    assert payload["customData"] == {
        "messageId": payload["messageId"], "customChannel": "custom", "fromId": "c1",
        "contactId": payload["customData"]["contactId"], "toId": "biz",
        "body": "Thanks for your message! You wrote: Hello?", "inReplyTo": "sid-1",
        "source": "bot"}
    out = [m for m in ai(sandbox)["messages"] if m["direction"] == "outbound"]
    assert [(m["source"], m["inReplyTo"]) for m in out] == [("bot", "sid-1")]


def test_sandbox_sends_api_messages_out_on_the_channel_and_retries(sandbox, http, receiver):
    secret = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
    sandbox.aiconnector.configure_channel("crm", receiver.url, secret, auto_reply=False)
    receiver.statuses = [500]
    send = aic_url(sandbox, "/send_custom_channel_message")
    data = {"fromId": "crm-1", "customChannel": "crm", "body": "Hi", "firstName": "Ada"}
    first = http.post(send, params=KEY, json={"customData": data}).json()
    assert sandbox.wait_idle(5)  # answered 500 once, then delivered again with the same id
    second = http.post(send, params=KEY, json={"customData": {**data, "body": "Again"}}).json()
    assert first["contactId"] == second["contactId"]  # the same fromId is the same contact
    assert sandbox.wait_idle(5)
    ids = [verify(secret, r["headers"], r["body"]) for r in receiver.requests]
    assert ids == [first["messageId"], first["messageId"], second["messageId"]]
    payload = receiver.payloads()[-1]["customData"]
    assert payload["source"] == "api" and payload["firstName"] == "Ada"
    contacts = [c for c in ai(sandbox)["contacts"] if c["id"] == first["contactId"]]
    assert [(c["firstName"], c["phone"]) for c in contacts] == [("Ada", None)]
    bad_email = http.post(send, params=KEY, json={"customData": {**data, "email": "nope"}})
    assert error_code(bad_email, 400) == "VALIDATION_ERROR"
    assert error_code(http.post(send, json={"customData": data}), 401) == "UNAUTHORIZED"
    incoming = aic_url(sandbox, "/incoming_custom_channel_message")
    assert error_code(http.post(incoming, json={}), 401) == "UNAUTHORIZED"


def test_sandbox_custom_channel_admin_rules(sandbox, http, receiver):
    channel = admin(sandbox, "/custom-channels/livechat")
    assert error_code(http.post(channel + "/bot-messages", json={"fromId": "c1"}),
                      409) == "CUSTOM_CHANNEL_NOT_CONFIGURED"
    for body in ({"url": "ftp://x"}, {"url": receiver.url, "secret": ""},
                 {"url": receiver.url, "reply_delay": 61}, {"url": receiver.url,
                                                            "auto_reply": "yes"}):
        assert error_code(http.put(channel, json=body), 400) == "VALIDATION_ERROR"
    http.put(channel, json={"url": receiver.url}).raise_for_status()
    assert error_code(http.post(channel + "/bot-messages", json={"fromId": "c1", "times": 11}),
                      400) == "VALIDATION_ERROR"
    assert error_code(http.post(channel + "/bot-messages", json={}), 400) == "VALIDATION_ERROR"
    chosen = http.post(channel + "/bot-messages", json={"fromId": "c1", "messageId": "m-1"})
    assert chosen.json()["messageId"] == "m-1"
    assert receiver.requests[-1]["headers"]["Webhook-Id"] == "m-1"
    listed = http.get(sandbox.root_url + "/_sandbox/state").json()["aiconnector"]
    assert listed["custom_channels"] == [{"channel": "livechat", "url": receiver.url,
                                          "auto_reply": True, "reply_delay": 0.5}]
    assert "whsec_" not in json.dumps(listed)
    assert http.delete(channel).status_code == 204
    assert error_code(http.delete(channel), 404) == "CUSTOM_CHANNEL_NOT_FOUND"
    http.put(channel, json={"url": receiver.url}).raise_for_status()
    sandbox.reset()
    assert ai(sandbox)["custom_channels"] == []
