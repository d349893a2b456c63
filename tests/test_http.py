"""The API client: statuses mapped to retriable or fatal in one place, no secrets in errors."""
from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from connector.errors import FatalAPIError, OutcomeUnknown, RetriableAPIError
from connector.http import ApiClient, ledger_guard, parse_retry_after
from connector.plugins.aiconnector import AIConnector
from connector.plugins.samora import Samora
from connector.plugins.samva import Samva


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
            api.post("/v1/call/trigger", json={}, idempotent=True)
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


class _Status(BaseHTTPRequestHandler):
    """Answer every request with the status and headers the test put on the server."""

    def do_POST(self):
        self.send_response(self.server.status)
        for name, value in self.server.extra_headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST

    def log_message(self, *args):
        pass


@pytest.fixture
def status_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    server.status, server.extra_headers = 200, {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("status,maybe", [(500, False), (503, False), (429, False),
                                          (408, False), (502, True), (504, True)])
def test_only_gateway_errors_may_have_applied_the_call(status_server, status, maybe):
    status_server.status = status
    api = ApiClient(Samora(), {"api_key": "k"}, f"http://127.0.0.1:{status_server.server_port}")
    with pytest.raises(RetriableAPIError) as caught:
        api.post("/v1/call/trigger", json={}, idempotent=True)
    assert caught.value.status == status and caught.value.maybe_applied is maybe


def test_rate_limit_reset_only_explains_a_429(status_server):
    reset = {"X-RateLimit-Reset": "45"}
    api = ApiClient(Samora(), {"api_key": "k"}, f"http://127.0.0.1:{status_server.server_port}")
    status_server.status, status_server.extra_headers = 500, reset
    with pytest.raises(RetriableAPIError) as caught:
        api.post("/x", json={})
    assert caught.value.retry_after is None
    status_server.status = 429
    with pytest.raises(RetriableAPIError) as caught:
        api.post("/x", json={})
    assert caught.value.retry_after == 45
    status_server.status, status_server.extra_headers = 500, {"retry-after": "7"}
    with pytest.raises(RetriableAPIError) as caught:
        api.post("/x", json={})
    assert caught.value.retry_after == 7


def test_tls_failure_sent_nothing(status_server):
    api = ApiClient(Samora(), {"api_key": "k"},
                    f"https://127.0.0.1:{status_server.server_port}")  # plain HTTP behind it
    with pytest.raises(RetriableAPIError) as caught:
        api.post("/v1/call/trigger", json={})
    assert caught.value.maybe_applied is False and "TLS" in str(caught.value)


def test_verbose_logging_never_prints_a_query_string_key(sandbox, tmp_path):
    import os
    import subprocess
    import sys

    from connector.crypto import new_key

    info = sandbox.connections()["aiconnector"]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")},
           "CONNECTOR_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}",
           "CONNECTOR_SECRET_KEY": new_key()}
    cli = [sys.executable, "-m", "connector.cli"]
    subprocess.run([*cli, "connections", "add", "ai", "--app", "aiconnector", "--base-url",
                    info["base_url"], "--field", "api_key=aic_test_key"], env=env, check=True,
                   capture_output=True, cwd=tmp_path)
    done = subprocess.run([*cli, "-vv", "connections", "test", "ai"], env=env,
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "aic_test_key" not in done.stdout + done.stderr


def test_get_with_retries_repeats_a_transient_failure_only(status_server):
    status_server.status, status_server.extra_headers = 503, {"Retry-After": "0"}
    api = ApiClient(Samora(), {"api_key": "k"}, f"http://127.0.0.1:{status_server.server_port}")
    seen = []
    real = api.request

    def counting(method, path, **kwargs):
        seen.append(method)
        return real(method, path, **kwargs)

    api.request = counting
    with pytest.raises(RetriableAPIError):
        api.get("/x", retries=2)
    assert seen == ["GET"] * 3
    status_server.status = 404
    seen.clear()
    with pytest.raises(FatalAPIError):
        api.get("/x", retries=2)
    assert seen == ["GET"]  # a permanent error is not repeated


# -- a POST or PATCH is repeated only when guarded ------------------------------------------------

class _SlowAll(BaseHTTPRequestHandler):
    """Answer every method after 1 s (past the client's timeout), counting requests."""

    def _slow(self):
        self.server.seen += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(1.0)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _slow

    def log_message(self, *args):
        pass


@pytest.fixture
def slow_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowAll)
    server.seen = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_an_unguarded_post_or_patch_that_timed_out_is_outcome_unknown(slow_server, method):
    api = ApiClient(Samora(), {"api_key": "k"}, f"http://127.0.0.1:{slow_server.server_port}",
                    timeout=0.2)
    with pytest.raises(OutcomeUnknown) as caught:
        api.request(method, "/v1/call/trigger", json={})
    message = str(caught.value)
    assert f"may have carried out this {method}" in message
    assert "carries no idempotency key" in message and "check the service" in message
    assert caught.value.__cause__.maybe_applied is True
    assert slow_server.seen == 1


@pytest.mark.parametrize("how", ["idempotent", "app_header", "any_key_header", "ledger",
                                 "GET", "PUT", "DELETE"])
def test_a_guarded_or_repeatable_call_that_timed_out_stays_retriable(slow_server, how):
    app = Samva() if how == "app_header" else Samora()
    api = ApiClient(app, {"api_key": "k"}, f"http://127.0.0.1:{slow_server.server_port}",
                    timeout=0.2)
    method = how if how in ("GET", "PUT", "DELETE") else "POST"
    kwargs = {"idempotent": True} if how == "idempotent" else {}
    if how == "app_header":
        kwargs["headers"] = {"X-Idempotency-Key": "step-key-1"}
    if how == "any_key_header":
        kwargs["headers"] = {"Idempotency-Key": "step-key-1"}
    with pytest.raises(RetriableAPIError) as caught:
        if how == "ledger":
            with ledger_guard():
                api.request(method, "/x", json={}, **kwargs)
        else:
            api.request(method, "/x", **kwargs)
    assert caught.value.maybe_applied is True


def test_an_empty_idempotency_header_is_no_guard(slow_server):
    api = ApiClient(Samva(), {"api_key": "k"}, f"http://127.0.0.1:{slow_server.server_port}",
                    timeout=0.2)
    with pytest.raises(OutcomeUnknown):
        api.post("/x", json={}, headers={"X-Idempotency-Key": ""})


@pytest.mark.parametrize("status,unknown", [(502, True), (504, True), (500, False),
                                            (503, False), (429, False)])
def test_an_unguarded_post_answered_by_a_gateway_error_is_outcome_unknown(status_server, status,
                                                                          unknown):
    status_server.status = status
    api = ApiClient(Samora(), {"api_key": "k"}, f"http://127.0.0.1:{status_server.server_port}")
    with pytest.raises(OutcomeUnknown if unknown else RetriableAPIError):
        api.post("/v1/call/trigger", json={})


def test_the_http_action_outside_the_ledger_repeats_a_post_only_with_a_key(slow_server,
                                                                           monkeypatch):
    from connector.actions.http import HttpRequest
    from connector.sdk import ActionContext

    monkeypatch.setenv("CONNECTOR_HTTP_ALLOW", "127.0.0.1")
    action = HttpRequest()
    ctx = ActionContext(flow_name="f", run_id=1, step_name="call", idempotency_key="k1")
    url = f"http://127.0.0.1:{slow_server.server_port}/orders"
    base = {"method": "POST", "url": url, "body_type": "json", "body": {"n": 1}, "timeout": 1}
    plain = action.Inputs().load(base)
    plain["timeout"] = 0.2  # below the schema's minimum, to keep the test short
    with pytest.raises(OutcomeUnknown, match="may have carried out this POST"):
        action.run(ctx, plain)
    for extra in ({"headers": {"Idempotency-Key": "order-1"}},
                  {"idempotency_header": "X-Dedupe"}):
        keyed = {**action.Inputs().load({**base, **extra}), "timeout": 0.2}
        with pytest.raises(RetriableAPIError) as caught:
            action.run(ctx, keyed)
        assert caught.value.maybe_applied is True
    assert slow_server.seen == 3
