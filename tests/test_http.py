"""The API client: statuses mapped to retriable or fatal in one place, no secrets in errors."""
from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from connector.errors import FatalAPIError, RetriableAPIError
from connector.http import ApiClient, parse_retry_after
from connector.plugins.aiconnector import AIConnector
from connector.plugins.samora import Samora


def client(sandbox, app_cls, app_key, **creds):
    info = sandbox.connections()[app_key]
    return ApiClient(app_cls(), {**info["credentials"], **creds}, info["base_url"])


def test_wrong_key_is_fatal_with_the_services_message_and_no_key(sandbox):
    api = client(sandbox, Samora, "samora", api_key="sam_wrong_key_123")
    with pytest.raises(FatalAPIError) as caught:
        api.get("/v2/webhooks")
    assert caught.value.status == 401 and caught.value.code
    assert "sam_wrong_key_123" not in str(caught.value)


def test_query_string_keys_never_reach_error_messages(sandbox):
    api = client(sandbox, AIConnector, "aiconnector", api_key="aic_secret_in_query")
    with pytest.raises(FatalAPIError) as caught:
        api.get("/contacts", params={"email": "x@example.com"})
    assert caught.value.status == 401
    assert "aic_secret_in_query" not in str(caught.value)


def test_credits_use_the_header_and_other_calls_the_query(sandbox):
    api = client(sandbox, AIConnector, "aiconnector")
    granted = api.post("/subaccounts/credits", json={"email": "client@agency.example",
                                                     "amount": 1}, auth="header")
    assert granted["credits_added"] == 1
    with pytest.raises(FatalAPIError) as caught:  # the query key does not authenticate credits
        api.post("/subaccounts/credits", json={"email": "client@agency.example", "amount": 1})
    assert caught.value.status == 401


def test_validation_errors_carry_the_documented_envelope(sandbox):
    api = client(sandbox, AIConnector, "aiconnector")
    with pytest.raises(FatalAPIError) as caught:
        api.post("/contacts", json={"phone": "5551234567"})
    assert caught.value.status == 400 and caught.value.code == "INVALID_PHONE"
    assert caught.value.message == "Phone number must include a valid country code."


def test_rate_limit_is_retriable_with_retry_after():
    from connector.sandbox import Sandbox

    with Sandbox(rate_limit_per_minute=2) as box:
        api = client(box, Samora, "samora")
        api.get("/v2/webhooks")
        api.get("/v2/webhooks")
        with pytest.raises(RetriableAPIError) as caught:
            api.get("/v2/webhooks")
    assert caught.value.status == 429 and 0 < caught.value.retry_after <= 60


def test_refused_connection_is_retriable_and_surely_not_applied():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api = ApiClient(Samora(), {"api_key": "k"}, f"http://127.0.0.1:{port}")
    with pytest.raises(RetriableAPIError) as caught:
        api.post("/v1/call/trigger", json={})
    assert caught.value.status is None and caught.value.maybe_applied is False
    assert "connection refused" in str(caught.value)


class _Slow(BaseHTTPRequestHandler):
    def do_POST(self):
        time.sleep(1.0)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_read_timeout_is_retriable_and_maybe_applied():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        api = ApiClient(Samora(), {"api_key": "k"}, f"http://127.0.0.1:{server.server_port}",
                        timeout=0.2)
        with pytest.raises(RetriableAPIError) as caught:
            api.post("/v1/call/trigger", json={})
        assert caught.value.maybe_applied is True
        assert "did not answer within 0.2 s" in str(caught.value)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("headers,expected", [
    ({"Retry-After": "120"}, 120.0),
    ({"Retry-After": "Wed, 21 Oct 2015 07:28:30 GMT"}, 30.0),
    ({"Retry-After": "Wed, 21 Oct 2015 07:27:00 GMT"}, 0.0),  # in the past: no wait
    ({"X-RateLimit-Reset": "1445412510"}, 30.0),  # epoch seconds
    ({"X-RateLimit-Reset": "45"}, 45.0),  # a delta
    ({"Retry-After": "soon"}, None),
    ({}, None),
])
def test_parse_retry_after(headers, expected):
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after(headers, now=now) == expected


def test_e164_numbers_are_cleaned_and_checked_as_documented():
    from marshmallow import ValidationError

    from connector.actions.samora import TriggerCallInputs

    data = TriggerCallInputs().load({"agent_id": "123e4567-e89b-12d3-a456-426614174000",
                                     "to_number": "+91 98765-43210"})
    assert data["to_number"] == "+919876543210"
    for bad in ("919876543210", "+12345", "+1234567890123456", "+91abc4567890"):
        with pytest.raises(ValidationError, match="E.164"):
            TriggerCallInputs().load({"agent_id": "123e4567-e89b-12d3-a456-426614174000",
                                      "to_number": bad})
