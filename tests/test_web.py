"""The webhook receiver: envelopes, limits, signatures, dedupe (Flask's test client and real HTTP).

Flows are switched on through connector.flows against the sandbox, so a Samora subscription's
signing secret is the one the sandbox really issued; requests are signed with it the Standard
Webhooks way, exactly as the service does.
"""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml

from connector import flows
from connector.signatures import new_secret, sign
from connector.store import Run, TriggerState
from connector.web import MAX_BODY, create_app
from .conftest import wait_for

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "flows"


def example(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())


def switch_on(host, name: str):
    """Save and enable an example flow; return (flow, its signing secret)."""
    flow = flows.enable(host, flows.save(host, example(name)))
    state = TriggerState.get(TriggerState.flow == flow)
    return flow, host.box.open(state.sealed_subscription)["secret"]


@pytest.fixture
def client(connected):
    return create_app(connected).test_client()


def assert_envelope(response, status: int, code: str | None = None) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert set(error) >= {"code", "message"}
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code
    return error["message"]


def post_signed(client, flow, secret: str, body: bytes, msg_id: str | None = None,
                timestamp: int | None = None, content_type: str = "application/json"):
    headers = sign(secret, msg_id or f"msg_{uuid.uuid4().hex}", body, timestamp)
    return client.post(f"/hooks/{flow.webhook_token}", data=body, headers=headers,
                       content_type=content_type)


def call_finished(call_id: str) -> bytes:
    return json.dumps({
        "event": "CALL_FINISHED", "timestamp": "2026-01-15T10:31:00Z",
        "data": {"call_id": call_id, "agent_id": "123e4567-e89b-12d3-a456-426614174000",
                 "to_number": "+919876543210", "status": "CALL_FINISHED",
                 "context": {"contact_name": "Jane"}},
    }).encode()


def runs_of(flow) -> list[Run]:
    return list(Run.select().where(Run.flow == flow).order_by(Run.id))


# -- routing and envelopes ------------------------------------------------------------------------

def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"ok": True}


def test_unknown_token_is_404_envelope(client):
    response = client.post("/hooks/no-such-token", json={"event": "CALL_FINISHED"})
    assert_envelope(response, 404, "NOT_FOUND")


def test_unknown_path_is_404_envelope(client):
    assert_envelope(client.get("/nowhere"), 404, "NOT_FOUND")


def test_disabled_flow_token_is_404(connected, client):
    flow = flows.save(connected, example("auto-recharge-credits"))
    assert not flow.enabled
    response = client.post(f"/hooks/{flow.webhook_token}", json={"amount": 1})
    assert_envelope(response, 404, "NOT_FOUND")
    assert runs_of(flow) == []


def test_switched_off_flow_token_is_404(connected, client, sandbox):
    flow, secret = switch_on(connected, "call-finished-add-to-list")
    flows.disable(connected, flow)
    response = post_signed(client, flow, secret, call_finished("c-off"))
    assert_envelope(response, 404, "NOT_FOUND")
    assert runs_of(flow) == []


def test_body_over_2_mib_is_413_envelope(connected, client):
    flow, _secret = switch_on(connected, "auto-recharge-credits")
    response = client.post(f"/hooks/{flow.webhook_token}", data=b"x" * (MAX_BODY + 1),
                           content_type="application/json")
    message = assert_envelope(response, 413, "PAYLOAD_TOO_LARGE")
    assert "2 MiB" in message
    assert runs_of(flow) == []


def test_body_of_exactly_2_mib_is_not_refused_for_size(connected, client):
    flow, _secret = switch_on(connected, "auto-recharge-credits")
    response = client.post(f"/hooks/{flow.webhook_token}", data=b" " * MAX_BODY,
                           content_type="application/json")
    assert response.status_code == 401  # reaches the signature check: unsigned


def test_xml_body_is_415_envelope(connected, client):
    flow, secret = switch_on(connected, "auto-recharge-credits")
    body = b"<recharge><amount>5</amount></recharge>"
    response = post_signed(client, flow, secret, body, content_type="text/xml")
    message = assert_envelope(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert "text/xml" in message
    assert runs_of(flow) == []


# -- Samora CALL_FINISHED: signatures and dedupe --------------------------------------------------

@pytest.fixture
def call_flow(connected, sandbox):
    flow, secret = switch_on(connected, "call-finished-add-to-list")
    [hook] = sandbox.state()["samora"]["webhooks"]
    assert hook["url"] == flows.webhook_url(connected, flow)
    return flow, secret


def test_signed_call_finished_queues_one_run(client, call_flow):
    flow, secret = call_flow
    response = post_signed(client, flow, secret, call_finished("call-1"))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"accepted": 1, "duplicates": 0}
    [run] = runs_of(flow)
    assert run.status == Run.QUEUED
    assert run.item["call_id"] == "call-1"
    assert run.item["event"] == "CALL_FINISHED"
    assert run.item["to_number"] == "+919876543210"


def test_same_delivery_twice_is_one_run(client, call_flow):
    flow, secret = call_flow
    body = call_finished("call-2")
    first = post_signed(client, flow, secret, body, msg_id="msg_same")
    again = post_signed(client, flow, secret, body, msg_id="msg_same")
    assert first.status_code == 200 and first.get_json()["accepted"] == 1
    assert again.status_code == 200
    assert again.get_json() == {"accepted": 0, "duplicates": 1}
    assert len(runs_of(flow)) == 1


def test_same_call_under_a_new_delivery_id_is_still_one_run(client, call_flow):
    flow, secret = call_flow
    body = call_finished("call-3")
    assert post_signed(client, flow, secret, body).get_json()["accepted"] == 1
    assert post_signed(client, flow, secret, body).get_json()["duplicates"] == 1
    assert len(runs_of(flow)) == 1


def test_bad_signature_is_401_and_no_run(client, call_flow):
    flow, _secret = call_flow
    response = post_signed(client, flow, new_secret(), call_finished("call-4"))
    message = assert_envelope(response, 401, "INVALID_SIGNATURE")
    assert "signature" in message
    assert runs_of(flow) == []


def test_tampered_body_is_401(client, call_flow):
    flow, secret = call_flow
    headers = sign(secret, "msg_t", call_finished("call-5"))
    response = client.post(f"/hooks/{flow.webhook_token}", data=call_finished("call-6"),
                           headers=headers, content_type="application/json")
    assert_envelope(response, 401, "INVALID_SIGNATURE")
    assert runs_of(flow) == []


def test_unsigned_request_is_401_naming_the_header(client, call_flow):
    flow, _secret = call_flow
    response = client.post(f"/hooks/{flow.webhook_token}", data=call_finished("call-7"),
                           content_type="application/json")
    message = assert_envelope(response, 401, "INVALID_SIGNATURE")
    assert "webhook-" in message
    assert runs_of(flow) == []


@pytest.mark.parametrize("skew", [-600, 600])
def test_stale_or_future_timestamp_is_401(client, call_flow, skew):
    flow, secret = call_flow
    response = post_signed(client, flow, secret, call_finished("call-8"),
                           timestamp=int(time.time()) + skew)
    message = assert_envelope(response, 401, "INVALID_SIGNATURE")
    assert "timestamp" in message
    assert runs_of(flow) == []


def test_signed_body_that_is_not_json_is_400(client, call_flow):
    flow, secret = call_flow
    response = post_signed(client, flow, secret, b"CALL_FINISHED call-9, not json")
    message = assert_envelope(response, 400)
    assert "JSON" in message
    assert runs_of(flow) == []


def test_signed_call_event_without_call_id_is_400_naming_it(client, call_flow):
    flow, secret = call_flow
    body = json.dumps({"event": "CALL_FINISHED", "data": {"status": "CALL_FINISHED"}}).encode()
    message = assert_envelope(post_signed(client, flow, secret, body), 400)
    assert "call_id" in message
    assert runs_of(flow) == []


# -- AI Connector auto-recharge -------------------------------------------------------------------

def recharge(**fields) -> bytes:
    payload = {"event": "auto_recharge", "idempotency_key": "ar_web_1",
               "email": "client@agency.example", "amount": 500, "sub_account_id": "sub_1"}
    payload.update(fields)
    return json.dumps({k: v for k, v in payload.items() if v is not None}).encode()


def test_auto_recharge_missing_amount_is_400_naming_it(connected, client):
    flow, secret = switch_on(connected, "auto-recharge-credits")
    response = post_signed(client, flow, secret, recharge(amount=None))
    message = assert_envelope(response, 400)
    assert "'amount'" in message
    assert runs_of(flow) == []


def test_auto_recharge_same_idempotency_key_is_one_run(connected, client):
    flow, secret = switch_on(connected, "auto-recharge-credits")
    assert post_signed(client, flow, secret, recharge()).get_json() == {
        "accepted": 1, "duplicates": 0}
    assert post_signed(client, flow, secret, recharge()).get_json() == {
        "accepted": 0, "duplicates": 1}
    [run] = runs_of(flow)
    assert run.item["amount"] == 500 and run.item["email"] == "client@agency.example"


# -- over real HTTP -------------------------------------------------------------------------------

def test_runtime_serves_healthz_and_envelopes(runtime):
    root = runtime.host.settings.webhook_base()
    assert requests.get(f"{root}/healthz", timeout=5).json() == {"ok": True}
    response = requests.post(f"{root}/hooks/nope", json={}, timeout=5)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"


def test_runtime_refuses_a_body_over_2_mib_with_413(runtime):
    host = runtime.host
    flow, secret = switch_on(host, "auto-recharge-credits")
    body = b" " * (MAX_BODY + 1)
    response = requests.post(flows.webhook_url(host, flow), data=body, timeout=10,
                             headers={"Content-Type": "application/json",
                                      **sign(secret, "msg_big", body)})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


def test_runtime_refuses_a_chunked_body_over_2_mib_with_413(runtime):
    # No Content-Length: the size is only known while reading. The body must not be cut at
    # 2 MiB and then checked (it would fail as a bad signature, or worse, parse).
    host = runtime.host
    flow, secret = switch_on(host, "auto-recharge-credits")
    body = json.dumps({"idempotency_key": "ar_big", "email": "client@agency.example",
                       "amount": 5, "pad": " " * MAX_BODY}).encode()
    chunks = (body[i:i + 65536] for i in range(0, len(body), 65536))
    response = requests.post(flows.webhook_url(host, flow), data=chunks, timeout=10,
                             headers={"Content-Type": "application/json",
                                      **sign(secret, "msg_chunked", body)})
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert runs_of(flow) == []


def test_runtime_accepts_a_small_chunked_body(runtime):
    host = runtime.host
    flow, secret = switch_on(host, "auto-recharge-credits")
    body = recharge(idempotency_key="ar_chunked_small")
    response = requests.post(flows.webhook_url(host, flow), data=iter([body]), timeout=10,
                             headers={"Content-Type": "application/json",
                                      **sign(secret, "msg_small", body)})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1


def test_sandbox_auto_recharge_delivered_twice_grants_once(runtime, sandbox):
    host = runtime.host
    flow, secret = switch_on(host, "auto-recharge-credits")
    sandbox.configure_auto_recharge(flows.webhook_url(host, flow), secret)
    fired = sandbox.fire_auto_recharge("client@agency.example", 300, times=2)
    assert [d["status"] for d in fired["deliveries"]] == [200, 200]

    def ledger():
        return sandbox.state()["aiconnector"]["credit_ledger"]

    def done():
        runs = runs_of(flow)
        return runs if runs and all(r.status in Run.FINAL for r in runs) else None

    runs = wait_for(done)
    assert runs and [r.status for r in runs] == [Run.SUCCEEDED]
    assert [e["amount"] for e in ledger()] == [300]
