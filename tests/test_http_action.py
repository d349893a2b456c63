"""The generic HTTP action (http.request) and the SSRF guard it goes through (connector.ssrf).

The action runs against a small HTTP server on 127.0.0.1, which every test has to allow
explicitly (CONNECTOR_HTTP_ALLOW), as an operator would.
"""
from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from connector.actions.http import HttpRequest

from connector import (
    ActionContext,
    FatalAPIError,
    RetriableAPIError,
    engine,
    flows,
    ssrf,
)
from connector.errors import ConfigurationError, FlowError, UserError
from connector.http import ApiClient
from connector.intake import ingest
from connector.ssrf import AddressNotAllowed, check_url
from connector.store import IdempotencyRecord, Run, StepAttempt, StepRun, utcnow

from .hooks import HookPlugin

# -- a server that records what it was sent ---------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle_one(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        query = {k: v if len(v) > 1 else v[0] for k, v in parse_qs(parts.query).items()}
        seen = {"method": self.command, "path": parts.path, "query": query,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": raw.decode("utf-8", "replace")}
        self.server.seen.append(seen)
        route = parts.path.strip("/").split("/")
        if route[0] == "echo":
            return self.reply(200, json.dumps(seen), "application/json")
        if route[0] == "status":
            code = int(route[1])
            extra = {}
            if "retry_after" in query:
                extra["Retry-After"] = query["retry_after"]
            if "reset" in query:
                extra["X-RateLimit-Reset"] = query["reset"]
            body = {"error": {"code": query.get("code", "NOT_FOUND"),
                              "message": query.get("message", "No widget wgt_9.")}}
            return self.reply(code, json.dumps(body), "application/json", extra)
        if route[0] == "text":
            charset = query.get("charset", "utf-8")
            return self.reply(200, "héllo, world".encode(charset),
                              f"text/plain; charset={charset}")
        if route[0] == "problem":
            return self.reply(200, json.dumps({"title": "fine"}), "application/problem+json")
        if route[0] == "badjson":
            return self.reply(200, "not json {", "application/json")
        if route[0] == "slow":
            time.sleep(float(query.get("s", 2)))
            return self.reply(200, "{}", "application/json")
        if route[0] == "redirect":
            return self.reply(int(query.get("code", 302)), "", "text/plain",
                              {"Location": query.get("to", "/redirect")})
        if route[0] == "big":
            return self.reply(200, b"x" * int(query["n"]), "text/plain",
                              length="nolength" not in query)
        if route[0] == "created":
            return self.reply(201, json.dumps({"id": f"wgt_{len(self.server.seen)}"}),
                              "application/json")
        return self.reply(404, "no such route", "text/plain")

    def reply(self, status, body, content_type, headers=None, length=True):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if length:
            self.send_header("Content-Length", str(len(data)))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            try:
                self.wfile.write(data)
            except OSError:  # the client stopped reading (the response cap)
                pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = handle_one


@pytest.fixture(scope="module")
def web_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def web(web_server, monkeypatch):
    """The server's root URL, with its loopback address allowed as an operator would."""
    monkeypatch.setenv(ssrf.ALLOW_VAR, "127.0.0.1")
    web_server.seen.clear()
    return f"http://127.0.0.1:{web_server.server_address[1]}"


def seen(web_server, method=None):
    return [s for s in web_server.seen if method is None or s["method"] == method]


def call(client=None, once=None, **inputs):
    """Run the action once, outside any flow."""
    ctx = ActionContext(flow_name="f", run_id=1, step_name="s", idempotency_key="k" * 40,
                        client=client, once=once)
    return HttpRequest().run(ctx, HttpRequest.Inputs().load(inputs))


# -- the guard ------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "http://127.0.0.1/", "http://127.1/", "http://2130706433/", "http://0x7f000001/",
    "http://localhost:8080/x", "http://10.1.2.3/", "http://172.16.0.1/", "http://172.31.255.255/",
    "http://192.168.1.1/", "http://169.254.169.254/latest/meta-data/", "http://169.254.1.1/",
    "http://[::1]/", "http://[fc00::1]/", "http://[fd12:3456::1]/", "http://[fe80::1]/",
    "http://[::ffff:127.0.0.1]/", "http://[::ffff:10.0.0.1]/", "http://[2002:7f00:1::]/",
    "http://[64:ff9b::a9fe:a9fe]/", "http://[fd00:ec2::254]/", "http://0.0.0.0/",
    "http://[::]/", "http://224.0.0.1/", "http://100.64.0.1/", "http://240.0.0.1/",
])
def test_the_guard_refuses_non_public_addresses(url):
    with pytest.raises(AddressNotAllowed) as err:
        check_url(url)
    message = str(err.value)
    assert "refusing to connect to" in message and ssrf.ALLOW_VAR in message
    assert "/x" not in message and "meta-data" not in message  # the host, never the path


def test_the_guard_names_the_host_the_address_and_how_to_allow_it():
    with pytest.raises(AddressNotAllowed) as err:
        check_url("http://localhost:9/admin?token=abc")
    assert str(err.value).startswith(
        "refusing to connect to localhost: it resolves to 127.0.0.1, a loopback address.")
    assert "add localhost or 127.0.0.1 to CONNECTOR_HTTP_ALLOW" in str(err.value)
    assert "CONNECTOR_HTTP_ALLOW_PRIVATE=1" in str(err.value)
    assert "abc" not in str(err.value)
    with pytest.raises(AddressNotAllowed, match=r"a loopback address \(IPv4-mapped 127.0.0.1\)"):
        check_url("http://[::ffff:127.0.0.1]/")
    with pytest.raises(AddressNotAllowed, match="a cloud metadata address") as err:
        check_url("http://169.254.169.254/")
    assert "ALLOW_PRIVATE" not in str(err.value)  # only an explicit entry opens metadata


@pytest.mark.parametrize("url, expected", [
    ("ftp://example.com/", "expected an http:// or https:// URL, got scheme 'ftp'"),
    ("file:///etc/passwd", "got scheme 'file'"),
    ("gopher://127.0.0.1:6379/", "got scheme 'gopher'"),
    ("http://user:secret@93.184.216.34/", "credentials in the URL are not accepted"),
    ("http:///path", "has no host"),
])
def test_the_guard_refuses_other_schemes_and_credentials_in_the_url(url, expected):
    with pytest.raises(AddressNotAllowed, match=expected) as err:
        check_url(url)
    assert "secret" not in str(err.value)


def test_public_addresses_pass():
    assert check_url("http://93.184.216.34/") == ["93.184.216.34"]
    assert check_url("https://[2606:2800:220:1:248:1893:25c8:1946]:8443/x") == [
        "2606:2800:220:1:248:1893:25c8:1946"]
    assert check_url("http://[::ffff:93.184.216.34]/")  # a public address, IPv4-mapped


def test_a_name_with_any_refused_address_is_refused(monkeypatch):
    answers = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 80)),
               (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", 80))]
    monkeypatch.setattr(ssrf, "_lookup", lambda host, port: answers)
    with pytest.raises(AddressNotAllowed, match="mixed.example: it resolves to 10.0.0.7"):
        check_url("http://mixed.example/")


def test_the_operator_allows_hosts_addresses_and_ranges(monkeypatch):
    monkeypatch.setenv(ssrf.ALLOW_VAR, "127.0.0.1, 10.0.0.0/8 ,fd00::/8,intranet.example")
    assert check_url("http://127.0.0.1:8080/") == ["127.0.0.1"]
    assert check_url("http://127.1/") == ["127.0.0.1"]  # any spelling of an allowed address
    assert check_url("http://[::ffff:127.0.0.1]/")  # ... and its IPv4-mapped form
    assert check_url("http://localhost/") == ["127.0.0.1"]  # resolves to an allowed address
    assert check_url("http://10.9.8.7/") and check_url("http://[fd12::1]/")
    for url in ("http://127.0.0.2/", "http://192.168.0.1/", "http://169.254.169.254/"):
        with pytest.raises(AddressNotAllowed):
            check_url(url)
    monkeypatch.setattr(ssrf, "_lookup", lambda host, port: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.168.7.7", port))])
    assert check_url("http://INTRANET.example./") == ["192.168.7.7"]  # a trusted name


def test_allow_private_opens_everything_but_metadata(monkeypatch):
    monkeypatch.setenv(ssrf.ALLOW_PRIVATE_VAR, "1")
    for url in ("http://127.0.0.1/", "http://10.0.0.1/", "http://[::1]/", "http://[fc00::1]/",
                "http://169.254.1.1/", "http://localhost/"):
        assert check_url(url)
    for url in ("http://169.254.169.254/", "http://[fd00:ec2::254]/"):
        with pytest.raises(AddressNotAllowed, match="cloud metadata"):
            check_url(url)
    monkeypatch.setenv(ssrf.ALLOW_VAR, "169.254.169.254")
    assert check_url("http://169.254.169.254/") == ["169.254.169.254"]


@pytest.mark.parametrize("name, value", [
    (ssrf.ALLOW_VAR, "127.0.0.1:8080"), (ssrf.ALLOW_VAR, "http://example.com"),
    (ssrf.ALLOW_VAR, "10.0.0.0/33"), (ssrf.ALLOW_PRIVATE_VAR, "maybe"),
])
def test_a_bad_allow_list_is_a_configuration_error(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name):
        check_url("http://93.184.216.34/")


def test_connections_go_to_the_address_that_was_checked(web, web_server, monkeypatch):
    """DNS rebinding: the first answer is public, the one at connect time is loopback."""
    port = web_server.server_address[1]
    monkeypatch.delenv(ssrf.ALLOW_VAR)
    answers = iter([("93.184.216.34",), ("127.0.0.1",)])
    monkeypatch.setattr(ssrf, "_lookup", lambda host, port: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers)[0], port))])
    assert check_url(f"http://rebind.example:{port}/echo") == ["93.184.216.34"]
    with pytest.raises(AddressNotAllowed, match="rebind.example: it resolves to 127.0.0.1"):
        ssrf.guarded_session().get(f"http://rebind.example:{port}/echo", timeout=5)
    assert seen(web_server) == []


def test_a_pinned_connection_keeps_the_host_name(web, web_server, monkeypatch):
    port = web_server.server_address[1]
    monkeypatch.setattr(ssrf, "_lookup", lambda host, port: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))])
    response = ssrf.guarded_session().get(f"http://pinned.example:{port}/echo", timeout=5)
    assert response.json()["headers"]["host"] == f"pinned.example:{port}"


def test_a_pinned_tls_connection_checks_the_certificate_against_the_host_name(
        tmp_path, monkeypatch):
    import ssl

    import requests
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pinned.example")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("pinned.example")]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads, server.seen = True, []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    try:
        port = server.server_address[1]
        monkeypatch.setenv(ssrf.ALLOW_VAR, "127.0.0.1")
        monkeypatch.setattr(ssrf, "_lookup", lambda host, port: [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))])
        session = ssrf.guarded_session()
        response = session.get(f"https://pinned.example:{port}/echo", timeout=5,
                               verify=str(tmp_path / "cert.pem"))
        assert response.json()["headers"]["host"] == f"pinned.example:{port}"
        with pytest.raises(requests.exceptions.SSLError):  # the name, not the address, counts
            session.get(f"https://other.example:{port}/echo", timeout=5,
                        verify=str(tmp_path / "cert.pem"))
    finally:
        server.shutdown()
        server.server_close()


def test_a_guarded_session_ignores_proxies_from_the_environment(web, web_server, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://10.0.0.1:3128")
    monkeypatch.setenv("NO_PROXY", "")
    assert ssrf.guarded_session().get(web + "/echo", timeout=5).status_code == 200
    with pytest.raises(AddressNotAllowed, match="proxies"):
        ssrf.guarded_session().get(web + "/echo", timeout=5,
                                   proxies={"http": "http://10.0.0.1:3128"})


# -- the action -----------------------------------------------------------------------------------

@pytest.mark.covers("http.request")
def test_the_action_refuses_loopback_unless_allowed(web_server, monkeypatch):
    url = f"http://127.0.0.1:{web_server.server_address[1]}/echo"
    web_server.seen.clear()
    with pytest.raises(AddressNotAllowed, match="127.0.0.1, a loopback address"):
        call(url=url)
    assert seen(web_server) == []
    monkeypatch.setenv(ssrf.ALLOW_VAR, "127.0.0.1")
    assert call(url=url)["status"] == 200


@pytest.mark.covers("http.request")
@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_methods(web, web_server, method):
    out = call(method=method, url=web + "/echo")
    assert out["status"] == 200 and out["ok"] is True
    assert out["body"]["method"] == method
    assert seen(web_server, method)


@pytest.mark.covers("http.request")
def test_head_reads_no_body(web, web_server):
    out = call(method="HEAD", url=web + "/big?n=9999999", max_response_bytes=10)
    assert out["status"] == 200 and out["body"] is None
    assert out["headers"]["content-length"] == "9999999"


@pytest.mark.covers("http.request")
def test_query_and_headers(web):
    out = call(url=web + "/echo?fixed=1", query={"q": "a b&c", "tag": ["x", "y"], "n": 3},
               headers={"X-Trace": "t-1", "Accept": "application/json", "X-Num": 7})
    body = out["body"]
    assert body["query"] == {"fixed": "1", "q": "a b&c", "tag": ["x", "y"], "n": "3"}
    assert body["headers"]["x-trace"] == "t-1" and body["headers"]["x-num"] == "7"
    assert out["headers"]["content-type"] == "application/json"  # lower-case names


@pytest.mark.covers("http.request")
def test_json_form_and_raw_bodies(web):
    out = call(method="POST", url=web + "/echo", body_type="json",
               body={"name": "Ada", "tags": [1, 2], "vip": True})
    assert json.loads(out["body"]["body"]) == {"name": "Ada", "tags": [1, 2], "vip": True}
    assert out["body"]["headers"]["content-type"] == "application/json"

    out = call(method="PUT", url=web + "/echo", body_type="json", body=[1, "two"],
               content_type="application/vnd.api+json")
    assert out["body"]["headers"]["content-type"] == "application/vnd.api+json"

    out = call(method="POST", url=web + "/echo", body_type="form",
               body={"name": "Ada Lovelace", "n": 3, "tag": ["a", "b"]})
    assert out["body"]["body"] == "name=Ada+Lovelace&n=3&tag=a&tag=b"
    assert out["body"]["headers"]["content-type"] == "application/x-www-form-urlencoded"

    out = call(method="POST", url=web + "/echo", body_type="raw", body="<a>ü</a>",
               content_type="application/xml")
    assert out["body"]["body"] == "<a>ü</a>"
    assert out["body"]["headers"]["content-type"] == "application/xml"
    out = call(method="PATCH", url=web + "/echo", body_type="raw", body="plain")
    assert out["body"]["headers"]["content-type"] == "text/plain; charset=utf-8"


@pytest.mark.covers("http.request")
@pytest.mark.parametrize("inputs, field, message", [
    ({"body": {"a": 1}}, "body_type", "set body_type to json, form or raw"),
    ({"body_type": "json"}, "body", "required for body_type json"),
    ({"body_type": "form", "body": "a=1"}, "body", "a mapping of field names"),
    ({"body_type": "form", "body": {"a": {"b": 1}}}, "body", "nested data"),
    ({"body_type": "raw", "body": {"a": 1}}, "body", "a raw body is text"),
    ({"content_type": "text/csv"}, "content_type", "only a json or raw body"),
    ({"auth": "bearer"}, "token", "required for auth bearer"),
    ({"auth": "basic"}, "username", "required for auth basic"),
    ({"auth": "header", "auth_value": "v"}, "auth_header", "required for auth header"),
    ({"headers": {"X-A": "one\r\nX-B: two"}}, "headers", "one line of text"),
    ({"headers": {"Bad Name": "x"}}, "headers", "not a valid header name"),
    ({"method": "TRACE"}, "method", "Must be one of"),
    ({"url": "ftp://example.com/"}, "url", "expected an http:// or https:// URL"),
    ({"timeout": 0}, "timeout", "greater than or equal to 1"),
    ({"timeout": 121}, "timeout", "less than or equal to 120"),
    ({"success_statuses": "2xx,600"}, "success_statuses", "expected status codes"),
    ({"success_statuses": [200, "ok"]}, "success_statuses", "expected status codes"),
])
def test_inputs_are_checked(inputs, field, message):
    from marshmallow import ValidationError

    with pytest.raises(ValidationError) as err:
        HttpRequest.Inputs().load({"url": "https://example.com/", **inputs})
    assert field in err.value.messages and message in str(err.value.messages[field])


@pytest.mark.covers("http.request")
def test_basic_bearer_and_header_auth(web):
    out = call(url=web + "/echo", auth="basic", username="ada", password="pa:ss")
    assert out["body"]["headers"]["authorization"] == "Basic YWRhOnBhOnNz"
    out = call(url=web + "/echo", auth="bearer", token="tok_123",
               headers={"Authorization": "replaced"})
    assert out["body"]["headers"]["authorization"] == "Bearer tok_123"
    out = call(url=web + "/echo", auth="header", auth_header="X-API-Key", auth_value="k_9")
    assert out["body"]["headers"]["x-api-key"] == "k_9"


@pytest.mark.covers("http.request")
def test_success_statuses(web):
    with pytest.raises(FatalAPIError) as err:
        call(url=web + "/status/404")
    assert err.value.status == 404 and err.value.code == "NOT_FOUND"
    assert str(err.value) == "HTTP 404 NOT_FOUND: No widget wgt_9."

    out = call(url=web + "/status/404", success_statuses=[200, 404])
    assert out["status"] == 404 and out["ok"] is False
    assert out["body"]["error"]["code"] == "NOT_FOUND"
    assert call(url=web + "/status/404", success_statuses="2xx,4xx")["status"] == 404
    assert call(url=web + "/created", method="PUT", success_statuses="201")["status"] == 201
    with pytest.raises(FatalAPIError, match=r"HTTP 200: the status is not one of the "
                                            r"success statuses \(201\)"):
        call(url=web + "/echo", success_statuses=201)


@pytest.mark.covers("http.request")
def test_error_messages_never_carry_credentials(web):
    with pytest.raises(FatalAPIError) as err:
        call(url=web + "/status/401", query={"message": "bad token tok_secret_1"},
             auth="bearer", token="tok_secret_1")
    assert "tok_secret_1" not in str(err.value) and "bad token ***" in str(err.value)


@pytest.mark.covers("http.request")
def test_429_with_retry_after_and_503_are_retried(web):
    with pytest.raises(RetriableAPIError) as err:
        call(url=web + "/status/429", query={"retry_after": "7", "code": "RATE_LIMITED",
                                             "message": "Slow down."})
    assert err.value.status == 429 and err.value.retry_after == 7
    assert str(err.value) == "HTTP 429 RATE_LIMITED: Slow down."
    assert not err.value.maybe_applied

    with pytest.raises(RetriableAPIError) as err:
        call(url=web + "/status/503", query={"reset": "30"})
    assert err.value.status == 503 and err.value.retry_after == 30
    # X-RateLimit-Reset only explains a 429 or 503; a 502 may have been forwarded.
    with pytest.raises(RetriableAPIError) as err:
        call(url=web + "/status/502", query={"reset": "30"})
    assert err.value.retry_after is None and err.value.maybe_applied
    for status in (408, 425, 500, 504):
        with pytest.raises(RetriableAPIError):
            call(url=web + f"/status/{status}")
    for status in (400, 401, 403, 409, 422):
        with pytest.raises(FatalAPIError):
            call(url=web + f"/status/{status}")


@pytest.mark.covers("http.request")
def test_timeout(web):
    started = time.monotonic()
    with pytest.raises(RetriableAPIError, match="did not answer within 1 s") as err:
        call(url=web + "/slow", query={"s": 2.5}, timeout=1)
    assert err.value.maybe_applied  # the server may have acted on it
    assert time.monotonic() - started < 2.4


@pytest.mark.covers("http.request")
def test_redirects_off_by_default(web, web_server):
    with pytest.raises(FatalAPIError) as err:
        call(url=web + "/redirect", query={"to": "/echo?secret=1"})
    assert err.value.status == 302
    assert "redirected to /echo; set follow_redirects" in str(err.value)
    assert "secret" not in str(err.value)
    out = call(url=web + "/redirect", query={"to": "/echo"}, success_statuses="2xx,3xx")
    assert out["status"] == 302 and out["headers"]["location"] == "/echo"
    assert [s["path"] for s in seen(web_server)] == ["/redirect", "/redirect"]


@pytest.mark.covers("http.request")
def test_redirects_followed_when_asked(web, web_server):
    out = call(url=web + "/redirect", query={"to": "/echo?from=redirect"},
               follow_redirects=True)
    assert out["status"] == 200 and out["body"]["query"] == {"from": "redirect"}
    # 303 turns a POST into a GET without its body; 307 keeps both.
    web_server.seen.clear()
    out = call(method="POST", url=web + "/redirect", query={"to": "/echo", "code": 303},
               body_type="json", body={"a": 1}, follow_redirects=True)
    assert out["body"]["method"] == "GET" and out["body"]["body"] == ""
    out = call(method="POST", url=web + "/redirect", query={"to": "/echo", "code": 307},
               body_type="json", body={"a": 1}, follow_redirects=True)
    assert out["body"]["method"] == "POST" and json.loads(out["body"]["body"]) == {"a": 1}
    with pytest.raises(FatalAPIError, match="more than 10 redirects"):
        call(url=web + "/redirect", query={"to": "/redirect"},
             follow_redirects=True)


@pytest.mark.covers("http.request")
def test_every_redirect_hop_is_checked(web, web_server):
    port = web_server.server_address[1]
    for target in (f"http://127.0.0.2:{port}/echo", "http://169.254.169.254/latest/meta-data",
                   "http://10.0.0.1/", f"http://[::1]:{port}/echo"):
        web_server.seen.clear()
        with pytest.raises(AddressNotAllowed):
            call(url=web + "/redirect", query={"to": target}, follow_redirects=True)
        assert [s["path"] for s in seen(web_server)] == ["/redirect"]
    with pytest.raises(AddressNotAllowed, match="got scheme 'file'"):
        call(url=web + "/redirect", query={"to": "file:///etc/passwd"}, follow_redirects=True)


@pytest.mark.covers("http.request")
def test_a_redirect_to_another_host_drops_credentials(web, web_server, monkeypatch):
    port = web_server.server_address[1]
    monkeypatch.setenv(ssrf.ALLOW_VAR, "127.0.0.1,localhost")
    out = call(url=web + "/redirect", query={"to": f"http://localhost:{port}/echo"},
               follow_redirects=True, auth="header", auth_header="X-API-Key",
               auth_value="k_secret", headers={"Cookie": "s=1", "X-Keep": "yes"})
    headers = out["body"]["headers"]
    assert headers["host"] == f"localhost:{port}" and headers["x-keep"] == "yes"
    assert "x-api-key" not in headers and "cookie" not in headers
    assert seen(web_server)[0]["headers"]["x-api-key"] == "k_secret"
    out = call(url=web + "/redirect", query={"to": "/echo"}, follow_redirects=True,
               auth="bearer", token="tok_1")
    assert out["body"]["headers"]["authorization"] == "Bearer tok_1"  # same host keeps it


@pytest.mark.covers("http.request")
@pytest.mark.parametrize("variant", ["length", "nolength"])
def test_the_answer_is_capped(web, variant):
    query = {"n": 5000} if variant == "length" else {"n": 5000, "nolength": 1}
    with pytest.raises(FatalAPIError, match=r"larger than max_response_bytes \(1000 b") as err:
        call(url=web + "/big", query=query, max_response_bytes=1000)
    assert err.value.maybe_applied  # the server answered: a POST took effect
    assert len(call(url=web + "/big", query=query, max_response_bytes=5000)["body"]) == 5000


@pytest.mark.covers("http.request")
def test_json_or_text(web):
    assert call(url=web + "/echo")["body"]["path"] == "/echo"
    assert call(url=web + "/problem")["body"] == {"title": "fine"}
    assert call(url=web + "/badjson")["body"] == "not json {"
    assert call(url=web + "/text")["body"] == "héllo, world"
    assert call(url=web + "/text", query={"charset": "latin-1"})["body"] == "héllo, world"
    assert call(url=web + "/big", query={"n": 0})["body"] is None


@pytest.mark.covers("http.request")
def test_a_path_needs_a_connection():
    with pytest.raises(UserError, match="a path needs a connection"):
        call(url="/v2/webhooks")


@pytest.mark.covers("http.request")
def test_a_post_without_a_guard_goes_through_the_ledger(web, web_server):
    calls = []

    def once(key, request, fn):
        calls.append((key, request))
        return fn()

    call(once=once, method="POST", url=web + "/created", body_type="json", body={"a": 1})
    assert calls == [("k" * 40, {"method": "POST", "url": web + "/created", "query": {},
                                 "body_type": "json", "body": {"a": 1},
                                 "content_type": None})]
    calls.clear()
    for method in ("GET", "PUT", "DELETE"):
        call(once=once, method=method, url=web + "/echo")
    out = call(once=once, method="POST", url=web + "/echo", idempotency_header="Idempotency-Key")
    assert calls == []
    assert out["body"]["headers"]["idempotency-key"] == "k" * 40


# -- through flows and the engine -----------------------------------------------------------------

def save_flow(host, steps, name="http-flow"):
    return flows.save(host, {"name": name, "trigger": {"key": "t.hook"}, "steps": steps})


def queue(host, flow, key="d1", item=None):
    return ingest(flow, host.catalog.trigger("t.hook"), [(key, item or {"id": key})])


def crash_after_the_call():
    """Forget the steps' outcomes and queue the run again, as if the worker died before
    recording them: every step runs a second time."""
    StepAttempt.delete().execute()
    StepRun.delete().execute()
    Run.update(status=Run.QUEUED, next_attempt_at=utcnow(), finished_at=None, error=None,
               failed_step=None, lease_until=None).execute()


@pytest.mark.covers("http.request")
def test_a_post_in_a_flow_is_sent_once(make_host, web, web_server):
    host = make_host(extra_plugins=[HookPlugin()])
    flow = save_flow(host, [{"name": "create", "action": "http.request", "inputs": {
        "method": "POST", "url": web + "/created", "body_type": "json",
        "body": {"name": "{{ trigger.name }}"}}}])
    queue(host, flow, item={"id": "d1", "name": "Ada"})
    engine.run_due(host)
    run = Run.get()
    assert run.status == Run.SUCCEEDED
    first = StepRun.get().output
    assert first["status"] == 201 and first["body"]["id"].startswith("wgt_")

    crash_after_the_call()
    assert engine.run_due(host) == 1
    assert Run.get().status == Run.SUCCEEDED
    assert StepRun.get().output == first  # the ledger's stored answer
    posts = seen(web_server, "POST")
    assert len(posts) == 1 and json.loads(posts[0]["body"]) == {"name": "Ada"}
    assert IdempotencyRecord.get().status == IdempotencyRecord.DONE


@pytest.mark.covers("http.request")
def test_a_post_with_an_idempotency_header_is_repeated_with_the_same_key(make_host, web,
                                                                         web_server):
    host = make_host(extra_plugins=[HookPlugin()])
    flow = save_flow(host, [{"name": "create", "action": "http.request", "inputs": {
        "method": "POST", "url": web + "/echo", "idempotency_header": "Idempotency-Key"}}])
    queue(host, flow)
    engine.run_due(host)
    crash_after_the_call()
    engine.run_due(host)
    keys = [s["headers"]["idempotency-key"] for s in seen(web_server, "POST")]
    assert len(keys) == 2 and keys[0] == keys[1] == engine.step_key(Run.get(), "create")
    assert IdempotencyRecord.select().count() == 0


@pytest.mark.covers("http.request")
def test_a_post_that_timed_out_is_not_sent_again(make_host, web, web_server):
    host = make_host(extra_plugins=[HookPlugin()])
    flow = save_flow(host, [{"name": "create", "action": "http.request", "inputs": {
        "method": "POST", "url": web + "/slow", "query": {"s": 2}, "timeout": 1}}])
    queue(host, flow)
    engine.run_due(host)
    assert Run.get().status == Run.QUEUED and StepRun.get().status == StepRun.RETRYING
    Run.update(next_attempt_at=utcnow()).execute()
    engine.run_due(host)
    run = Run.get()
    assert run.status == Run.FAILED and "stopped mid-call" in run.error
    assert len(seen(web_server, "POST")) == 1


@pytest.mark.covers("http.request")
def test_a_429_in_a_flow_waits_for_retry_after(make_host, web):
    host = make_host(extra_plugins=[HookPlugin()])
    flow = save_flow(host, [{"name": "fetch", "action": "http.request", "inputs": {
        "url": web + "/status/429", "query": {"retry_after": "120", "message": "Slow down."}}}])
    queue(host, flow)
    engine.run_due(host)
    run, step = Run.get(), StepRun.get()
    assert run.status == Run.QUEUED and step.status == StepRun.RETRYING
    assert "HTTP 429 NOT_FOUND: Slow down." in step.error
    wait = (run.next_attempt_at - utcnow()).total_seconds()
    assert 110 < wait <= 121


@pytest.mark.covers("http.request")
def test_a_refused_address_fails_the_run_without_retrying(make_host, web_server):
    host = make_host(extra_plugins=[HookPlugin()])
    port = web_server.server_address[1]
    flow = save_flow(host, [{"name": "fetch", "action": "http.request", "inputs": {
        "url": f"http://127.0.0.1:{port}/echo?key=s3cret"}}])
    web_server.seen.clear()
    queue(host, flow)
    engine.run_due(host)
    run = Run.get()
    assert run.status == Run.FAILED and "a loopback address" in run.error
    assert "s3cret" not in run.error and seen(web_server) == []


def samora_host(make_host, sandbox, monkeypatch):
    """A host with the sandbox's Samora as connection ``samora``, loopback allowed."""
    monkeypatch.setenv(ssrf.ALLOW_VAR, "127.0.0.1")
    host = make_host(extra_plugins=[HookPlugin()])
    info = sandbox.connections()["samora"]
    host.add_connection("samora", "samora", info["credentials"], info["base_url"])
    return host, info


@pytest.mark.covers("http.request")
def test_a_step_uses_a_connection_of_any_app(make_host, sandbox, monkeypatch):
    host, info = samora_host(make_host, sandbox, monkeypatch)
    flow = save_flow(host, [
        {"name": "create", "action": "http.request", "connection": "samora", "inputs": {
            "method": "POST", "url": info["base_url"] + "/v2/webhooks", "body_type": "json",
            "body": {"url": "https://example.com/hooks/{{ trigger.id }}",
                     "events": ["CALL_FINISHED"]}}},
        {"name": "list", "action": "http.request", "connection": "samora",
         "inputs": {"url": "/v2/webhooks"}},
    ])
    queue(host, flow, key="c1")
    engine.run_due(host)
    run = Run.get()
    assert run.status == Run.SUCCEEDED, run.error
    outputs = {sr.name: sr.output for sr in StepRun.select()}
    assert outputs["create"]["status"] == 201
    assert [h["url"] for h in outputs["list"]["body"]["data"]] == [
        "https://example.com/hooks/c1"]
    assert [h["url"] for h in sandbox.state()["samora"]["webhooks"]] == [
        "https://example.com/hooks/c1"]
    assert IdempotencyRecord.select().count() == 1  # the POST went through the ledger


@pytest.mark.covers("http.request")
def test_http_steps_on_a_connection_keep_one_guarded_session(make_host, sandbox, monkeypatch):
    host, _ = samora_host(make_host, sandbox, monkeypatch)
    sessions, send = [], ApiClient.raw_request

    def spy(client, method, url, **kwargs):
        sessions.append(client.session)
        return send(client, method, url, **kwargs)

    monkeypatch.setattr(ApiClient, "raw_request", spy)
    flow = save_flow(host, [
        {"name": name, "action": "http.request", "connection": "samora",
         "inputs": {"url": "/v2/webhooks"}} for name in ("a", "b")])
    for key in ("k1", "k2"):
        queue(host, flow, key=key)
    assert engine.run_due(host) == 2
    assert Run.select().where(Run.status == Run.SUCCEEDED).count() == 2
    # four steps, one kept-alive session, guarded; other actions get an unguarded one
    assert len(sessions) == 4 and all(s is sessions[0] for s in sessions)
    assert ssrf.is_guarded(sessions[0])
    plain = host.kept_client(host.connection("samora"))
    assert plain.session is not sessions[0] and not ssrf.is_guarded(plain.session)
    monkeypatch.setenv(ssrf.ALLOW_VAR, "127.0.0.1,localhost")  # the allow-list changed
    queue(host, flow, key="k3")
    assert engine.run_due(host) == 1
    assert sessions[-1] is sessions[-2] is not sessions[0] and ssrf.is_guarded(sessions[-1])


@pytest.mark.covers("http.request")
def test_without_the_connection_the_service_refuses(sandbox, monkeypatch):
    monkeypatch.setenv(ssrf.ALLOW_VAR, "127.0.0.1")
    with pytest.raises(FatalAPIError) as err:
        call(url=sandbox.connections()["samora"]["base_url"] + "/v2/webhooks")
    assert err.value.status == 401 and "X-API-Key" in str(err.value)


@pytest.mark.covers("http.request")
def test_a_connection_is_only_sent_to_its_own_host(connected, sandbox, monkeypatch):
    monkeypatch.setenv(ssrf.ALLOW_VAR, "127.0.0.1,localhost")
    client = connected.client(connected.connection("samora"))
    port = urlsplit(client.base_url).port
    with pytest.raises(UserError, match="not the host of the step's connection"):
        call(client=client, url=f"http://localhost:{port}/samora/v2/webhooks")
    with pytest.raises(UserError, match="already authenticates"):
        call(client=client, url="/v2/webhooks", auth="bearer", token="tok_1")
    out = call(client=client, url="/v2/webhooks")
    assert out["status"] == 200 and out["body"] == {"data": []}


@pytest.mark.covers("http.request")
def test_a_flow_names_a_connection_that_exists(make_host):
    host = make_host(extra_plugins=[HookPlugin()])
    with pytest.raises(FlowError, match="no connection named 'nope'"):
        save_flow(host, [{"action": "http.request", "connection": "nope",
                          "inputs": {"url": "https://example.com/"}}])

