"""The sandbox over real HTTP: auth, validation, envelopes, limits, calls and signed webhooks."""
from __future__ import annotations

import json
import threading

import pytest
import requests
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from connector.errors import SignatureError
from connector.sandbox import Sandbox
from connector.signatures import verify

from .conftest import wait_for

AGENT = "123e4567-e89b-12d3-a456-426614174000"
CA_HEADERS = {"Authorization": "Bearer ca_test_key", "X-Org-Id": "org_demo"}
SAM_HEADERS = {"X-API-Key": "sam_test_key"}
AIC = {"apiKey": "aic_test_key"}


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args):
        pass


class Receiver:
    """A local webhook endpoint that records requests and answers scripted statuses."""

    def __init__(self):
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        self.default_status = 200
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
            status = self.statuses.pop(0) if self.statuses else self.default_status
        return Response("ok", status=status)(environ, start_response)

    def events(self) -> list[str]:
        return [json.loads(r["body"])["event"] for r in self.requests]

    def close(self):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox(call_delay=0.02, delivery_retry_delays=(0.05, 0.1), delivery_timeout=2)
    box.start()
    yield box
    box.stop()


@pytest.fixture(autouse=True)
def fresh(sandbox):
    sandbox.reset()
    yield
    assert sandbox.wait_idle(5)


@pytest.fixture
def http():
    with requests.Session() as session:
        session.trust_env = False
        yield session


@pytest.fixture
def receiver():
    rec = Receiver()
    yield rec
    rec.close()


def assert_error(response, status, code, field=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    if field is not None:
        assert error["details"]["field"] == field
    return error


def ca_url(sandbox, path=""):
    return sandbox.urls["contacts_api"] + "/api/v1/contacts" + path


def samora_url(sandbox, path):
    return sandbox.urls["samora"] + path


def aic_url(sandbox, path):
    return sandbox.urls["aiconnector"] + path


def make_webhook(http, sandbox, url, events, **extra):
    response = http.post(samora_url(sandbox, "/v2/webhooks"), headers=SAM_HEADERS,
                         json={"url": url, "events": events, **extra})
    assert response.status_code == 201, response.text
    return response.json()


def trigger(http, sandbox, to_number="+919876543210", **extra):
    response = http.post(samora_url(sandbox, "/v1/call/trigger"), headers=SAM_HEADERS,
                         json={"agent_id": AGENT, "to_number": to_number, **extra})
    assert response.status_code == 201, response.text
    return response.json()


# Sandbox object


def test_urls_connections_and_seed(sandbox, http):
    root = sandbox.root_url
    assert sandbox.urls == {"contacts_api": root + "/contacts-api", "samora": root + "/samora",
                            "aiconnector": root + "/aiconnector/v1", "sami_os": root + "/sami-os",
                            "samva": root + "/samva"}
    connections = sandbox.connections()
    assert connections["contacts_api"]["credentials"] == {"api_key": "ca_test_key",
                                                          "org_id": "org_demo"}
    assert connections["samora"]["credentials"] == {"api_key": "sam_test_key"}
    assert connections["aiconnector"]["base_url"] == sandbox.urls["aiconnector"]
    assert sandbox.seeded["samora"]["agent_id"] == AGENT
    assert sandbox.seeded["aiconnector"]["list_id"] == "lst_demo"
    assert http.get(root + "/_sandbox/connections").json() == connections


def test_state_has_no_secrets_and_reset_restores_seed(sandbox, http, receiver):
    hook = make_webhook(http, sandbox, receiver.url, ["CALL_FINISHED"])
    configured = http.put(sandbox.root_url + "/_sandbox/aiconnector/auto-recharge",
                          json={"url": receiver.url}).json()
    assert configured["secret"].startswith("whsec_")
    http.post(ca_url(sandbox), headers=CA_HEADERS, json={"name": "New"})
    state = http.get(sandbox.root_url + "/_sandbox/state")
    assert hook["secret"] not in state.text and configured["secret"] not in state.text
    body = state.json()
    assert len(body["contacts_api"]["contacts"]["org_demo"]) == 4
    assert body["samora"]["webhooks"][0]["id"] == hook["id"]
    assert body["aiconnector"]["subaccounts"][0]["balance"] == 42
    assert http.post(sandbox.root_url + "/_sandbox/reset").json() == {"reset": True}
    body = http.get(sandbox.root_url + "/_sandbox/state").json()
    assert len(body["contacts_api"]["contacts"]["org_demo"]) == 3
    assert body["samora"]["webhooks"] == [] and body["aiconnector"]["auto_recharge"] is None


# Shared limits


@pytest.mark.parametrize("path, headers", [
    ("/contacts-api/api/v1/contacts", CA_HEADERS),
    ("/samora/v1/call/trigger", SAM_HEADERS),
    ("/aiconnector/v1/contacts?apiKey=aic_test_key", {}),
    ("/_sandbox/aiconnector/auto-recharge/fire", {}),
])
def test_body_over_2_mib_is_413(sandbox, http, path, headers):
    body = b'{"pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    response = http.post(sandbox.root_url + path, data=body,
                         headers={**headers, "Content-Type": "application/json"})
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


def test_chunked_body_over_2_mib_is_413(sandbox, http):
    chunks = (b" " * 65536 for _ in range(40))
    response = http.post(aic_url(sandbox, "/contacts"), params=AIC, data=chunks,
                         headers={"Content-Type": "application/json"})
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


def test_non_json_bodies(sandbox, http):
    url = samora_url(sandbox, "/v1/call/trigger")
    assert_error(http.post(url, headers={**SAM_HEADERS, "Content-Type": "text/plain"},
                           data="agent"), 415, "UNSUPPORTED_MEDIA_TYPE")
    assert_error(http.post(url, headers={**SAM_HEADERS, "Content-Type": "application/json"},
                           data="{nope"), 400, "INVALID_JSON")
    assert_error(http.post(url, headers=SAM_HEADERS, json=[1]), 400, "VALIDATION_ERROR")
    assert_error(http.post(ca_url(sandbox), headers=CA_HEADERS), 422, "VALIDATION_ERROR")


def test_rate_limit_returns_429_with_retry_after():
    before = set(threading.enumerate())
    box = Sandbox(rate_limit_per_minute=3)
    url = box.start() + "/samora/v2/webhooks/events"
    try:
        with requests.Session() as http:
            http.trust_env = False
            seen = [http.get(url, headers=SAM_HEADERS) for _ in range(3)]
            assert [r.status_code for r in seen] == [200, 200, 200]
            assert seen[-1].headers["X-RateLimit-Remaining"] == "0"
            over = http.get(url, headers=SAM_HEADERS)
            assert_error(over, 429, "RATE_LIMITED")
            assert 1 <= int(over.headers["Retry-After"]) <= 60
            assert over.headers["X-RateLimit-Limit"] == "3"
            assert over.headers["X-RateLimit-Remaining"] == "0"
            assert int(over.headers["X-RateLimit-Reset"]) > 0
            # The limit is per key: another service's key is unaffected.
            ok = http.get(box.urls["aiconnector"] + "/contacts", params={**AIC, "email": "x@y.z"})
            assert ok.status_code == 404
    finally:
        box.stop()
    # a request thread may still be closing its socket just after stop() returns
    assert wait_for(lambda: set(threading.enumerate()) <= before, timeout=5)


# Contacts API


def test_contacts_api_auth_and_org(sandbox, http):
    url = ca_url(sandbox)
    assert_error(http.get(url, headers={"X-Org-Id": "org_demo"}), 401, "UNAUTHORIZED")
    wrong = http.get(url, headers={"Authorization": "Bearer secret-guess", "X-Org-Id": "org_demo"})
    assert_error(wrong, 401, "UNAUTHORIZED")
    assert "secret-guess" not in wrong.text
    assert_error(http.get(url, headers={"Authorization": "Bearer ca_test_key"}), 400,
                 "MISSING_ORG_ID", "X-Org-Id")
    assert_error(http.get(url, headers={**CA_HEADERS, "X-Org-Id": "org_other"}), 403, "FORBIDDEN")
    other = {"Authorization": "Bearer ca_other_key", "X-Org-Id": "org_other"}
    assert http.get(url, headers=other).json()["total"] == 0
    contact_id = http.get(url, headers=CA_HEADERS).json()["items"][0]["id"]
    assert_error(http.get(ca_url(sandbox, f"/{contact_id}"), headers=other), 404,
                 "CONTACT_NOT_FOUND")


def test_contacts_api_create_validate_update_delete(sandbox, http):
    assert_error(http.post(ca_url(sandbox), headers=CA_HEADERS, json={"name": "A",
                                                                      "phone": "5551234567"}),
                 422, "VALIDATION_ERROR", "phone")
    assert_error(http.post(ca_url(sandbox), headers=CA_HEADERS, json={}), 422, "VALIDATION_ERROR")
    assert_error(http.post(ca_url(sandbox), headers=CA_HEADERS, json={"name": "A", "tags": "x"}),
                 422, "VALIDATION_ERROR", "tags")
    created = http.post(ca_url(sandbox), headers=CA_HEADERS, json={
        "name": "Jane Smith", "phone": "+15551234567", "email": "jane@example.com",
        "tags": ["lead"], "custom": {"budget": 5}, "unknown": 1})
    assert created.status_code == 201
    contact = created.json()
    assert contact["dnc"] is False and contact["custom"] == {"budget": 5}
    assert contact["created_at"].endswith("Z") and "unknown" not in contact
    one = ca_url(sandbox, f"/{contact['id']}")
    assert http.get(one, headers=CA_HEADERS).json() == contact
    patched = http.patch(one, headers=CA_HEADERS, json={"company": "Acme", "dnc": True}).json()
    assert patched["company"] == "Acme" and patched["dnc"] is True
    assert patched["updated_at"] > contact["updated_at"]
    assert_error(http.patch(one, headers=CA_HEADERS, json={"phone": "+1"}), 422,
                 "VALIDATION_ERROR", "phone")
    assert http.delete(one, headers=CA_HEADERS).status_code == 204
    assert_error(http.get(one, headers=CA_HEADERS), 404, "CONTACT_NOT_FOUND")
    assert_error(http.delete(one, headers=CA_HEADERS), 404, "CONTACT_NOT_FOUND")


def test_contacts_api_pagination_newest_first_and_filters(sandbox, http):
    names = [f"Person {i}" for i in range(5)]
    for name in names:
        http.post(ca_url(sandbox), headers=CA_HEADERS, json={"name": name, "tags": ["batch"]})
    first = http.get(ca_url(sandbox), headers=CA_HEADERS, params={"limit": 2}).json()
    assert first["total"] == 8 and first["limit"] == 2 and first["offset"] == 0
    assert [c["name"] for c in first["items"]] == ["Person 4", "Person 3"]
    rest = http.get(ca_url(sandbox), headers=CA_HEADERS, params={"limit": 200, "offset": 2}).json()
    assert [c["name"] for c in rest["items"]] == [
        "Person 2", "Person 1", "Person 0", "Alan Turing", "Grace Hopper", "Ada Lovelace"]
    everything = first["items"] + rest["items"]
    keys = [(c["created_at"], c["id"]) for c in everything]
    assert keys == sorted(keys, reverse=True)
    assert_error(http.get(ca_url(sandbox), headers=CA_HEADERS, params={"limit": 201}), 422,
                 "VALIDATION_ERROR", "limit")
    assert_error(http.get(ca_url(sandbox), headers=CA_HEADERS, params={"limit": "ten"}), 422,
                 "VALIDATION_ERROR", "limit")
    assert_error(http.get(ca_url(sandbox), headers=CA_HEADERS, params={"offset": -1}), 422,
                 "VALIDATION_ERROR", "offset")
    tagged = http.get(ca_url(sandbox), headers=CA_HEADERS, params={"tag": "batch"}).json()
    assert tagged["total"] == 5
    found = http.get(ca_url(sandbox), headers=CA_HEADERS, params={"q": "GRACE"}).json()
    assert [c["name"] for c in found["items"]] == ["Grace Hopper"]
    assert http.get(ca_url(sandbox), headers=CA_HEADERS, params={"q": "+4477"}).json()["total"] == 1


def test_contacts_api_python_helper(sandbox):
    contact = sandbox.contacts_api.add_contact("org_demo", name="Direct", phone="+14155550199")
    listed = sandbox.contacts_api.list_contacts("org_demo", limit=1)
    assert listed["items"][0]["id"] == contact["id"] and listed["total"] == 4


# Samora


def test_samora_auth(sandbox, http):
    url = samora_url(sandbox, "/v2/webhooks")
    assert_error(http.get(url), 401, "UNAUTHORIZED")
    wrong = http.get(url, headers={"X-API-Key": "sam_wrong_value"})
    assert_error(wrong, 401, "UNAUTHORIZED")
    assert "sam_wrong_value" not in wrong.text
    assert_error(http.get(url, headers={"Authorization": "Bearer sam_test_key"}), 401,
                 "UNAUTHORIZED")


def test_samora_trigger_validation(sandbox, http):
    url = samora_url(sandbox, "/v1/call/trigger")
    for bad in ("919876543210", "+91987654", "+9198765432101234", "+91 9876543210", 919876543210):
        response = http.post(url, headers=SAM_HEADERS, json={"agent_id": AGENT, "to_number": bad})
        assert_error(response, 400, "INVALID_PHONE_NUMBER", "to_number")
    assert_error(http.post(url, headers=SAM_HEADERS, json={"to_number": "+919876543210"}), 400,
                 "VALIDATION_ERROR", "agent_id")
    assert_error(http.post(url, headers=SAM_HEADERS, json={"agent_id": "agent-1",
                                                           "to_number": "+919876543210"}),
                 400, "VALIDATION_ERROR", "agent_id")
    unknown = "00000000-0000-4000-8000-000000000000"
    assert_error(http.post(url, headers=SAM_HEADERS, json={"agent_id": unknown,
                                                           "to_number": "+919876543210"}),
                 404, "AGENT_NOT_FOUND")
    assert_error(http.get(samora_url(sandbox, f"/v1/call/{unknown}"), headers=SAM_HEADERS), 404,
                 "CALL_NOT_FOUND")


def test_call_lifecycle_delivers_signed_events(sandbox, http, receiver):
    hook = make_webhook(http, sandbox, receiver.url, ["CALL_STARTED", "CALL_FINISHED"],
                        data_options={"include_transcript": True})
    call = trigger(http, sandbox, context={"first_name": "Jane"}, extra_field="ignored")
    assert call["status"] == "PENDING" and call["context"] == {"first_name": "Jane"}
    assert set(call) == {"call_id", "status", "agent_id", "to_number", "context", "created_at"}
    assert sandbox.wait_idle(5)
    details = http.get(samora_url(sandbox, f"/v1/call/{call['call_id']}"),
                       headers=SAM_HEADERS).json()
    assert details["status"] == "CALL_FINISHED" and details["duration_seconds"] > 0
    # Deliveries run on a pool, so two events of one call may arrive in either order.
    assert sorted(receiver.events()) == ["CALL_FINISHED", "CALL_STARTED"]
    finished = next(r for r in receiver.requests if b'"CALL_FINISHED"' in r["body"])
    msg_id = verify(hook["secret"], finished["headers"], finished["body"])
    assert msg_id.startswith("msg_")
    with pytest.raises(SignatureError):
        verify(hook["secret"], finished["headers"], finished["body"] + b" ")
    payload = json.loads(finished["body"])
    assert payload["call_id"] == call["call_id"] and payload["timestamp"].endswith("Z")
    data = payload["data"]
    assert data["status"] == "CALL_FINISHED" and data["context"] == {"first_name": "Jane"}
    assert "Jane" in data["transcript"] and "recording_url" not in data
    transcript = http.get(data["transcript_url"])
    assert transcript.status_code == 200 and "Jane" in transcript.text
    recording = http.get(details["recording_url"])
    assert recording.status_code == 200 and recording.content.startswith(b"RIFF")
    assert_error(http.get(details["recording_url"].replace("signature=", "signature=0")), 403,
                 "INVALID_SIGNATURE")
    log = sandbox.delivery_log
    assert sorted((e["event"], e["status"], e["attempt"]) for e in log) == [
        ("CALL_FINISHED", 200, 1), ("CALL_STARTED", 200, 1)]


def test_call_failed_for_unanswered_and_rejected(sandbox, http, receiver):
    make_webhook(http, sandbox, receiver.url, ["CALL_STARTED", "CALL_FINISHED", "CALL_FAILED"],
                 data_options={"include_transcript": True, "include_recording_url": True})
    unanswered = trigger(http, sandbox, "+14155550000")
    assert sandbox.wait_idle(5)
    rejected = trigger(http, sandbox, "+14155559999")
    assert sandbox.wait_idle(5)
    assert receiver.events() == ["CALL_FAILED", "CALL_FAILED"]
    statuses = [json.loads(r["body"])["data"]["status"] for r in receiver.requests]
    assert statuses == ["UNANSWERED", "REJECTED"]
    for call in (unanswered, rejected):
        details = http.get(samora_url(sandbox, f"/v1/call/{call['call_id']}"),
                           headers=SAM_HEADERS).json()
        assert "transcript_url" not in details and "recording_url" not in details
    assert "transcript" not in json.loads(receiver.requests[0]["body"])["data"]


def test_webhook_crud_and_secret_only_at_creation(sandbox, http, receiver):
    base = samora_url(sandbox, "/v2/webhooks")
    assert_error(http.post(base, headers=SAM_HEADERS, json={"url": receiver.url, "events": []}),
                 400, "VALIDATION_ERROR", "events")
    assert_error(http.post(base, headers=SAM_HEADERS, json={"url": receiver.url,
                                                            "events": ["CALL_DONE"]}),
                 400, "VALIDATION_ERROR", "events")
    assert_error(http.post(base, headers=SAM_HEADERS, json={"url": "ftp://x", "events":
                                                            ["CALL_FAILED"]}),
                 400, "VALIDATION_ERROR", "url")
    hook = make_webhook(http, sandbox, receiver.url, ["CALL_FINISHED"], description="crm")
    assert hook["secret"].startswith("whsec_")
    assert hook["data_options"] == {"include_transcript": False, "include_recording_url": False}
    one = f"{base}/{hook['id']}"
    assert "secret" not in http.get(one, headers=SAM_HEADERS).json()
    assert "secret" not in http.get(base, headers=SAM_HEADERS).json()["data"][0]
    events = http.get(base + "/events", headers=SAM_HEADERS).json()["data"]
    assert [e["name"] for e in events] == ["CALL_STARTED", "CALL_FINISHED", "CALL_FAILED"]
    updated = http.put(one, headers=SAM_HEADERS, json={"events": ["CALL_FAILED"]}).json()
    assert updated["events"] == ["CALL_FAILED"] and updated["description"] == "crm"
    assert "secret" not in updated
    assert http.delete(one, headers=SAM_HEADERS).status_code == 204
    assert_error(http.get(one, headers=SAM_HEADERS), 404, "WEBHOOK_NOT_FOUND")
    assert_error(http.delete(one, headers=SAM_HEADERS), 404, "WEBHOOK_NOT_FOUND")


def test_webhook_delete_stops_deliveries(sandbox, http, receiver):
    hook = make_webhook(http, sandbox, receiver.url, ["CALL_FINISHED"])
    trigger(http, sandbox)
    assert sandbox.wait_idle(5)
    assert receiver.events() == ["CALL_FINISHED"]
    http.delete(samora_url(sandbox, f"/v2/webhooks/{hook['id']}"), headers=SAM_HEADERS)
    trigger(http, sandbox)
    assert sandbox.wait_idle(5)
    assert receiver.events() == ["CALL_FINISHED"]
    assert len(sandbox.delivery_log) == 1


def test_delivery_retries_after_500_with_the_same_id(sandbox, http, receiver):
    hook = make_webhook(http, sandbox, receiver.url, ["CALL_FINISHED"])
    receiver.statuses = [500]
    trigger(http, sandbox)
    assert sandbox.wait_idle(5)
    assert len(receiver.requests) == 2
    ids = {verify(hook["secret"], r["headers"], r["body"]) for r in receiver.requests}
    assert len(ids) == 1
    assert receiver.requests[0]["body"] == receiver.requests[1]["body"]
    log = sandbox.delivery_log
    assert [(e["attempt"], e["status"], e["ok"]) for e in log] == [(1, 500, False), (2, 200, True)]


def test_delivery_gives_up_after_the_last_retry(sandbox, http, receiver):
    make_webhook(http, sandbox, receiver.url, ["CALL_FINISHED"])
    receiver.default_status = 503
    trigger(http, sandbox)
    assert sandbox.wait_idle(5)
    log = sandbox.delivery_log
    assert [e["attempt"] for e in log] == [1, 2, 3]
    assert [e["gave_up"] for e in log] == [False, False, True]


def test_delivery_connection_error_is_logged_and_retried(sandbox, http, receiver):
    url = receiver.url
    receiver.close()
    make_webhook(http, sandbox, url, ["CALL_FINISHED"])
    trigger(http, sandbox)
    assert sandbox.wait_idle(5)
    log = sandbox.delivery_log
    assert len(log) == 3 and all(e["status"] is None and e["error"] for e in log)
    receiver.close = lambda: None


def test_finish_call_by_hand(sandbox, http, receiver):
    make_webhook(http, sandbox, receiver.url, ["CALL_STARTED", "CALL_FINISHED", "CALL_FAILED"])
    sandbox.samora.call_delay = 30
    try:
        call = trigger(http, sandbox)
        other = trigger(http, sandbox)
        finished = http.post(f"{sandbox.root_url}/_sandbox/samora/calls/{call['call_id']}/finish")
        assert finished.status_code == 200 and finished.json()["status"] == "CALL_FINISHED"
        assert "transcript_url" in finished.json()
        assert sandbox.finish_call(other["call_id"], "REJECTED")["status"] == "REJECTED"
        again = http.post(f"{sandbox.root_url}/_sandbox/samora/calls/{call['call_id']}/finish",
                          json={"status": "REJECTED"})
        assert_error(again, 409, "CALL_ALREADY_ENDED")
        assert sandbox.wait_idle(5)
    finally:
        sandbox.samora.call_delay = 0.02
    assert sorted(receiver.events()) == ["CALL_FAILED", "CALL_FINISHED", "CALL_STARTED"]


# AI Connector


def test_aiconnector_auth(sandbox, http):
    contacts = aic_url(sandbox, "/contacts")
    body = {"phone": "+15551234567"}
    assert_error(http.post(contacts, json=body), 401, "UNAUTHORIZED")
    wrong = http.post(contacts, params={"apiKey": "aic_wrong_value"}, json=body)
    assert_error(wrong, 401, "UNAUTHORIZED")
    assert "aic_wrong_value" not in wrong.text
    assert_error(http.post(contacts, headers={"x-api-key": "aic_test_key"}, json=body), 401,
                 "UNAUTHORIZED")
    credits = aic_url(sandbox, "/subaccounts/credits")
    grant = {"email": "client@agency.example", "amount": 5}
    assert_error(http.post(credits, params=AIC, json=grant), 401, "UNAUTHORIZED")
    assert_error(http.post(credits, headers={"x-api-key": "nope"}, json=grant), 401,
                 "UNAUTHORIZED")
    assert sandbox.aiconnector.credit_ledger == []


def test_aiconnector_contacts_phone_rules_and_dedupe(sandbox, http):
    url = aic_url(sandbox, "/contacts")
    for bad in ("5551234567", "+999123", "not a phone"):
        response = http.post(url, params=AIC, json={"firstName": "Jane", "phone": bad})
        assert response.status_code == 400
        assert response.json() == {"error": {"code": "INVALID_PHONE",
                                             "message": "Phone number must include a valid "
                                                        "country code."}}
    assert_error(http.post(url, params=AIC, json={"firstName": "Jane"}), 400, "VALIDATION_ERROR")
    created = http.post(url, params=AIC, json={"firstName": "Jane", "lastName": "Smith",
                                               "phone": "+15551234567",
                                               "email": "jane@example.com"})
    assert created.status_code == 201
    contact = created.json()
    assert set(contact) == {"id", "firstName", "lastName", "phone", "email", "createdAt"}
    again = http.post(url, params=AIC, json={"firstName": "Other", "phone": "+1 555 123 4567"})
    assert again.status_code == 200 and again.json() == contact
    assert len(sandbox.aiconnector.contacts) == 1
    assert http.get(url, params={**AIC, "phoneNumber": "+15551234567"}).json() == contact
    assert http.get(url, params={**AIC, "email": "JANE@example.com"}).json() == contact
    assert_error(http.get(url, params={**AIC, "email": "nobody@example.com"}), 404,
                 "CONTACT_NOT_FOUND")
    assert_error(http.get(url, params=AIC), 400, "VALIDATION_ERROR")


def test_aiconnector_list_add_is_idempotent(sandbox, http):
    contact = http.post(aic_url(sandbox, "/contacts"), params=AIC,
                        json={"email": "a@example.com"}).json()
    url = aic_url(sandbox, "/lists/lst_demo/contacts")
    for _ in range(2):
        response = http.post(url, params=AIC, json={"contactId": contact["id"]})
        assert response.status_code == 200
        assert response.json() == {"success": True, "listId": "lst_demo",
                                   "contactId": contact["id"]}
    assert sandbox.aiconnector.lists["lst_demo"]["members"] == [contact["id"]]
    assert_error(http.post(aic_url(sandbox, "/lists/lst_missing/contacts"), params=AIC,
                           json={"contactId": contact["id"]}), 404, "LIST_NOT_FOUND")
    assert_error(http.post(url, params=AIC, json={"contactId": "missing"}), 404,
                 "CONTACT_NOT_FOUND")
    assert_error(http.post(url, params=AIC, json={}), 400, "VALIDATION_ERROR", "contactId")


def test_aiconnector_custom_channel_messages(sandbox, http):
    send = aic_url(sandbox, "/send_custom_channel_message")
    assert_error(http.post(send, params=AIC, json={"customData": {"fromId": "c1",
                                                                  "customChannel": "crm"}}),
                 400, "VALIDATION_ERROR", "customData.body")
    sent = http.post(send, params=AIC, json={"customData": {"fromId": "c1", "customChannel": "crm",
                                                            "body": "Hello"}})
    assert sent.status_code == 200 and sent.json()["success"] is True
    incoming = aic_url(sandbox, "/incoming_custom_channel_message")
    message = {"customData": {"messageSid": "sid-1", "fromId": "c1", "toId": "biz",
                              "body": "Hi"}, "messageType": "text"}
    first = http.post(incoming, params=AIC, json=message).json()
    second = http.post(incoming, params=AIC, json=message).json()
    assert first["duplicate"] is False and second["duplicate"] is True
    assert first["messageId"] == second["messageId"]
    assert_error(http.post(incoming, params=AIC, json={"customData": {"fromId": "c1"}}), 400,
                 "VALIDATION_ERROR", "customData.messageSid")
    inbound = [m for m in sandbox.aiconnector.messages if m["direction"] == "inbound"]
    assert len(inbound) == 1 and inbound[0]["status"] == "received"


def test_credits_grant_and_ledger(sandbox, http):
    url = aic_url(sandbox, "/subaccounts/credits")
    headers = {"x-api-key": "aic_test_key"}
    granted = http.post(url, headers=headers, json={"email": "client@agency.example", "amount": 500,
                                                    "description": "Auto-recharge via webhook"})
    assert granted.status_code == 200
    assert granted.json() == {"success": True, "sub_account_id": "sub_demo",
                              "credits_added": 500, "new_balance": 542}
    ledger = sandbox.aiconnector.credit_ledger
    assert [(e["email"], e["amount"], e["description"]) for e in ledger] == [
        ("client@agency.example", 500, "Auto-recharge via webhook")]
    assert_error(http.post(url, headers=headers, json={"email": "nobody@agency.example",
                                                       "amount": 5}),
                 404, "SUBACCOUNT_NOT_FOUND")
    for amount in (0, -5, "5", True, None):
        assert_error(http.post(url, headers=headers, json={"email": "client@agency.example",
                                                           "amount": amount}),
                     400, "VALIDATION_ERROR", "amount")
    assert len(sandbox.aiconnector.credit_ledger) == 1


def test_auto_recharge_fire_delivers_same_signed_payload_twice(sandbox, http, receiver):
    admin = sandbox.root_url + "/_sandbox/aiconnector/auto-recharge"
    assert_error(http.post(admin + "/fire", json={"email": "client@agency.example",
                                                  "amount": 500}),
                 409, "AUTO_RECHARGE_NOT_CONFIGURED")
    configured = http.put(admin, json={"url": receiver.url}).json()
    fired = http.post(admin + "/fire", json={"email": "client@agency.example", "amount": 500,
                                             "times": 2})
    assert fired.status_code == 200
    key = fired.json()["idempotency_key"]
    assert [d["status"] for d in fired.json()["deliveries"]] == [200, 200]
    assert len(receiver.requests) == 2
    first, second = receiver.requests
    assert first["body"] == second["body"]
    assert first["headers"]["Webhook-Id"] == second["headers"]["Webhook-Id"] == key
    for request in receiver.requests:
        assert verify(configured["secret"], request["headers"], request["body"]) == key
    payload = json.loads(first["body"])
    assert payload == {**payload, "event": "auto_recharge", "idempotency_key": key,
                       "sub_account_id": "sub_demo", "email": "client@agency.example",
                       "amount": 500, "current_balance": 42}
    assert {"threshold", "created_at"} <= set(payload)
    chosen = sandbox.fire_auto_recharge("client@agency.example", 10, idempotency_key="ar_fixed")
    assert chosen["idempotency_key"] == "ar_fixed"
    assert receiver.requests[-1]["headers"]["Webhook-Id"] == "ar_fixed"
    assert_error(http.post(admin + "/fire", json={"email": "nobody@agency.example", "amount": 5}),
                 404, "SUBACCOUNT_NOT_FOUND")


def test_auto_recharge_with_given_secret_retries_a_failed_delivery(sandbox, http, receiver):
    secret = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
    sandbox.configure_auto_recharge(receiver.url, secret)
    receiver.statuses = [500]
    fired = sandbox.fire_auto_recharge("client@agency.example", 25)
    assert fired["deliveries"][0]["status"] == 500
    assert sandbox.wait_idle(5)
    assert len(receiver.requests) == 2
    assert {verify(secret, r["headers"], r["body"]) for r in receiver.requests} == {
        fired["idempotency_key"]}
