"""Make any HTTP request: method, URL, query, headers, a JSON, form or raw body, and auth.

- **Addresses.** The URL, and every redirect hop, goes through `connector.ssrf`. Private,
  loopback, link-local, shared and cloud metadata addresses are refused, in any spelling,
  unless the operator allows them with `CONNECTOR_HTTP_ALLOW` (host names, addresses, CIDR
  ranges) or `CONNECTOR_HTTP_ALLOW_PRIVATE=1`. The socket is opened to the address that was
  checked, so a DNS answer that changes in between cannot send it elsewhere. Proxy settings
  from the environment are not used.
- **Auth.** `none`, `bearer`, `basic` or a custom `header`, from the inputs; inputs are
  stored in the flow unencrypted, so prefer a connection for a real secret. Or name a
  connection of any app on the step: that app's own auth is applied, and `url` may then be
  a path relative to the connection's base URL. A connection's credentials go only to its
  own host: an absolute URL on another host is refused, and a redirect to another host
  drops every credential (connection, auth inputs, cookies), as browsers do.
- **Statuses.** A status in `success_statuses` gives the output. Otherwise 408, 425, 429
  and 5xx are retried later (honouring Retry-After, and X-RateLimit-Reset on 429/503), and
  anything else fails the run with the status and the body's own message. Credentials
  never appear in those messages.
- **Idempotency.** GET, HEAD, OPTIONS, PUT and DELETE are repeatable and simply sent again
  on a retry. A POST or PATCH is repeated only when guarded: name an `idempotency_header`
  (e.g. `Idempotency-Key`) and the step's stable idempotency key travels in it, for a
  service that deduplicates on it; a header of your own named like an idempotency key
  (`Idempotency-Key`, `X-Idempotency-Key`, ...) guards it the same way. Without either the
  call goes through the host's ledger (`ctx.once`), so a retried or replayed step never
  sends it twice. A POST that timed out mid-answer then fails the run with OutcomeUnknown,
  for a human to check; outside a flow (no ledger) the client raises it at once.
- **Answers.** The body is read up to `max_response_bytes` (5 MiB by default); a larger
  answer fails the run. A JSON content type (`application/json`, `*+json`) is parsed,
  falling back to text when it does not parse; anything else is text (UTF-8 unless the
  content type names a charset). An empty body is null. Header names are lower-case.
"""
from __future__ import annotations

import base64
import json
import re
import socket
import time
from urllib.parse import urljoin, urlsplit

import requests
from marshmallow import Schema, ValidationError, fields, validate, validates_schema
from requests.structures import CaseInsensitiveDict

from connector import Action, App, FatalAPIError, RetriableAPIError, hookimpl
from connector import ssrf
from connector.errors import UserError
from connector.http import (GATEWAY_STATUSES, RETRIABLE_STATUSES, ApiClient,
                            carries_idempotency_key, parse_retry_after, repeat_is_safe,
                            unknown_outcome)

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
REPEATABLE = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
BODY_TYPES = ("none", "json", "form", "raw")
AUTH_TYPES = ("none", "bearer", "basic", "header")
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_HOPS = 10
MIB = 1024 * 1024
# Dropped when a redirect leaves the URL's host; the auth inputs' header is dropped too.
CREDENTIAL_HEADERS = ("Authorization", "Proxy-Authorization", "Cookie")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_STATUS = re.compile(r"^([1-5]xx|[1-5]\d\d)$")


def _header_name(value: str) -> None:
    if not _TOKEN.match(value or ""):
        raise ValidationError(f"{value!r} is not a valid header name")


def _url(value: str) -> None:
    if not (value.lower().startswith(("http://", "https://")) or value.startswith("/")):
        raise ValidationError("expected an http:// or https:// URL (or, with a connection on "
                              "the step, a path starting with /)")


class Statuses(fields.Field):
    """Status codes and classes: "2xx", "200,404" or a list such as [200, "3xx"]."""

    def _deserialize(self, value, attr, data, **kwargs):
        items = value.split(",") if isinstance(value, str) else (
            value if isinstance(value, list) else [value])
        found: list[str] = []
        for item in items:
            text = str(item).strip().lower()
            if isinstance(item, (bool, float, dict, list)) or not _STATUS.match(text):
                raise ValidationError("expected status codes such as 200 and classes such as "
                                      f"2xx, got {item!r}")
            if text not in found:
                found.append(text)
        if not found:
            raise ValidationError("expected at least one status, e.g. 2xx")
        return found


def is_success(status: int, statuses: list[str]) -> bool:
    """Return True when ``status`` is one of ``statuses`` ("200", or a class such as "2xx")."""
    code = str(status)
    return any(s == code or (s.endswith("xx") and s[0] == code[0]) for s in statuses)


class Inputs(Schema):
    method = fields.String(load_default="GET", validate=validate.OneOf(METHODS), metadata={
        "label": "Method",
        "help": "In capitals; GET by default. POST and PATCH are sent at most once."})
    url = fields.String(required=True, validate=_url, metadata={
        "label": "URL", "help": "An http(s) URL; with a connection on the step, also a path "
                                "relative to the connection's base URL."})
    query = fields.Dict(keys=fields.String(), load_default=dict, metadata={
        "label": "Query parameters",
        "help": "Added to the URL; a list value repeats the name."})
    headers = fields.Dict(keys=fields.String(validate=_header_name), load_default=dict,
                          metadata={"label": "Headers", "help": "Name to value."})
    body_type = fields.String(load_default="none", validate=validate.OneOf(BODY_TYPES),
                              metadata={"label": "Body type", "help": "none by default."})
    body = fields.Raw(load_default=None, allow_none=True, metadata={
        "label": "Body", "help": "json: any value; form: a mapping of fields; raw: text."})
    content_type = fields.String(load_default=None, metadata={
        "label": "Content type", "help": "For a raw body (default text/plain; charset=utf-8) "
                                         "or a JSON one (default application/json)."})
    auth = fields.String(load_default="none", validate=validate.OneOf(AUTH_TYPES), metadata={
        "label": "Auth", "help": "Or leave none and name a connection of any app on the step."})
    token = fields.String(load_default=None, metadata={
        "label": "Bearer token", "secret": True, "help": "For auth bearer."})
    username = fields.String(load_default=None, metadata={
        "label": "Username", "help": "For auth basic."})
    password = fields.String(load_default="", metadata={
        "label": "Password", "secret": True, "help": "For auth basic."})
    auth_header = fields.String(load_default=None, validate=_header_name, metadata={
        "label": "Auth header name", "help": "For auth header, e.g. X-API-Key."})
    auth_value = fields.String(load_default=None, metadata={
        "label": "Auth header value", "secret": True, "help": "For auth header."})
    timeout = fields.Float(load_default=30, validate=validate.Range(min=1, max=120), metadata={
        "label": "Timeout", "help": "Seconds to wait for the answer, 1 to 120 (default 30)."})
    success_statuses = Statuses(load_default=lambda: ["2xx"], metadata={
        "label": "Success statuses", "help": 'Statuses that give the output instead of an '
                                             'error: "2xx" (default), or e.g. [200, 404].'})
    follow_redirects = fields.Boolean(load_default=False, metadata={
        "label": "Follow redirects",
        "help": "Off by default; up to 10 hops, each checked like the URL."})
    max_response_bytes = fields.Integer(
        load_default=5 * MIB, validate=validate.Range(min=1, max=50 * MIB), metadata={
            "label": "Maximum answer size",
            "help": "Bytes of body to read: 5 MiB by default, up to 50 MiB."})
    idempotency_header = fields.String(load_default=None, validate=_header_name, metadata={
        "label": "Idempotency header",
        "help": "A header the service deduplicates on (e.g. Idempotency-Key): it carries the "
                "step's stable key, and a POST or PATCH is then retried freely."})

    @validates_schema
    def consistent(self, data, **_):
        body_type, body = data.get("body_type", "none"), data.get("body")
        if body_type == "none" and body not in (None, ""):
            raise ValidationError("set body_type to json, form or raw to send a body",
                                  "body_type")
        if body_type in ("json", "form") and body is None:
            raise ValidationError(f"required for body_type {body_type}", "body")
        if body_type == "form":
            if not isinstance(body, dict):
                raise ValidationError("a form body is a mapping of field names to values",
                                      "body")
            for value in body.values():
                for item in value if isinstance(value, list) else [value]:
                    if isinstance(item, (dict, list)):
                        raise ValidationError("form values are text, numbers or lists of "
                                              "them; use body_type json for nested data",
                                              "body")
        if body_type == "raw" and isinstance(body, (dict, list)):
            raise ValidationError("a raw body is text; use body_type json for objects and "
                                  "lists", "body")
        if data.get("content_type") and body_type not in ("json", "raw"):
            raise ValidationError("only a json or raw body takes a content type",
                                  "content_type")
        for name, value in (data.get("headers") or {}).items():
            if isinstance(value, (dict, list)) or "\r" in str(value) or "\n" in str(value):
                raise ValidationError(f"header {name}: expected one line of text", "headers")
        auth = data.get("auth", "none")
        needed = {"bearer": ("token",), "basic": ("username",),
                  "header": ("auth_header", "auth_value")}.get(auth, ())
        for name in needed:
            if not data.get(name):
                raise ValidationError(f"required for auth {auth}", name)


class _Direct(App):
    """The far end of a request sent without a connection: no credentials, generic errors."""

    key = "http"

    def __init__(self, host: str):
        self.label = host


def _origin(url: str) -> tuple:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").rstrip("."), parts.port or (
        443 if scheme == "https" else 80)


def _seconds(value: float):
    return int(value) if float(value).is_integer() else value


class _Exchange:
    """One request as the inputs describe it, with its redirects, read and judged."""

    def __init__(self, ctx, inputs: dict):
        self.inputs = inputs
        self.client = ctx.client
        self.timeout = _seconds(inputs["timeout"])
        self.url = self._target(inputs["url"])
        self.headers = CaseInsensitiveDict(
            {k: str(v) for k, v in inputs["headers"].items() if v is not None})
        self.secrets: list[str] = []
        self.dropped = list(CREDENTIAL_HEADERS)  # what a redirect to another host loses
        self._auth()
        if inputs["idempotency_header"]:
            self.headers[inputs["idempotency_header"]] = ctx.idempotency_key
        self.body = self._body()
        #: the service deduplicates on a header: sending it again is harmless
        self.keyed = bool(inputs["idempotency_header"]) or carries_idempotency_key(
            self.headers)
        if self.client is not None:
            self.secrets += [str(v) for v in getattr(self.client, "credentials", {}).values()
                             if isinstance(v, str) and len(v) >= 4]

    def _target(self, url: str) -> str:
        if self.client is None:
            if url.startswith("/"):
                raise UserError("url: a path needs a connection on the step to say which "
                                "host; give a full http:// or https:// URL")
            return url
        if self.inputs["auth"] != "none":
            raise UserError("auth: the step's connection already authenticates the "
                            "request; set auth to none, or remove the connection")
        absolute = self.client.url(url)
        if _origin(absolute) != _origin(self.client.base_url):
            raise UserError(
                f"url: {_origin(absolute)[1]} is not the host of the step's connection "
                f"({self.client.app.label} at {_origin(self.client.base_url)[1]}); a "
                "connection's credentials are only sent to its own host. Remove the "
                "connection and use the auth inputs to call another host")
        return absolute

    def _auth(self) -> None:
        inputs, kind = self.inputs, self.inputs["auth"]
        if kind == "bearer":
            self.headers["Authorization"] = f"Bearer {inputs['token']}"
            self.secrets.append(inputs["token"])
        elif kind == "basic":
            pair = f"{inputs['username']}:{inputs['password'] or ''}".encode()
            encoded = base64.b64encode(pair).decode()
            self.headers["Authorization"] = f"Basic {encoded}"
            self.secrets += [encoded, inputs["password"] or ""]
        elif kind == "header":
            self.headers[inputs["auth_header"]] = inputs["auth_value"]
            self.secrets.append(inputs["auth_value"])
            self.dropped.append(inputs["auth_header"])
        self.secrets = [s for s in self.secrets if s and len(s) >= 4]

    def _body(self) -> dict:
        kind, body = self.inputs["body_type"], self.inputs["body"]
        content_type = self.inputs["content_type"]
        if kind == "json":
            if content_type:
                self.headers.setdefault("Content-Type", content_type)
            return {"json": body}
        if kind == "form":
            return {"data": body}
        if kind == "raw":
            self.headers.setdefault("Content-Type", content_type or "text/plain; charset=utf-8")
            return {"data": ("" if body is None else str(body)).encode("utf-8")}
        return {}

    def describe(self) -> dict:
        """What the request does, for the ledger (no headers: a rotated token is no new effect)."""
        keep = ("method", "url", "query", "body_type", "body", "content_type")
        return {key: self.inputs[key] for key in keep}

    # -- sending ---------------------------------------------------------------------------------
    def send(self) -> dict:
        """Send the request, following redirects if asked; an unguarded POST or PATCH that
        may have taken effect raises OutcomeUnknown instead of a retriable error."""
        try:
            return self._send()
        except RetriableAPIError as exc:
            method = self.inputs["method"]
            if exc.maybe_applied and not repeat_is_safe(method, {}, idempotent=self.keyed):
                raise unknown_outcome(exc, method, _origin(self.url)[1]) from exc
            raise

    def _send(self) -> dict:
        method, url, params, body = self.inputs["method"], self.url, self.inputs["query"], self.body
        home = _origin(url)
        for hop in range(MAX_HOPS + 1):
            response, app, raw = self._hop(method, url, params, body, _origin(url) == home)
            status = response.status_code
            location = response.headers.get("Location")
            if not (self.inputs["follow_redirects"] and status in REDIRECTS and location):
                return self._judge(response, app, raw)
            if hop == MAX_HOPS:
                raise FatalAPIError(f"more than {MAX_HOPS} redirects", status=status)
            url = urljoin(url, location)
            if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
                method, body = "GET", {}
                self.headers.pop("Content-Type", None)
            params = None  # the query is part of the URL the redirect gave
        raise AssertionError("unreachable")

    def _hop(self, method, url, params, body, home: bool):
        """Check ``url``'s address, then send one request without following redirects."""
        host = _origin(url)[1]
        try:
            ssrf.check_url(url)
        except socket.gaierror:
            raise RetriableAPIError(f"cannot reach {host}: name or service not known") from None
        headers = self.headers
        if not home:
            headers = CaseInsensitiveDict(headers)
            for name in self.dropped:
                headers.pop(name, None)
        if home and self.client is not None:
            client, app, own = self.client, self.client.app, False
            ssrf.guard(client.session)
        else:
            app = _Direct(host)
            client, own = ApiClient(app, {}, session=ssrf.guarded_session()), True
        started = time.monotonic()
        try:
            response = client.raw_request(method, url, params=params or None,
                                          idempotent=self.keyed,
                                          headers=dict(headers), timeout=self.timeout,
                                          allow_redirects=False, stream=True, **body)
            raw = self._read(response, method, app, started)
        finally:
            if own:
                client.close()
        return response, app, raw

    def _read(self, response, method: str, app: App, started: float) -> bytes:
        """Read the body up to the cap and within the timeout."""
        limit = self.inputs["max_response_bytes"]
        too_big = FatalAPIError(
            f"the answer is larger than max_response_bytes ({limit} bytes); raise "
            "max_response_bytes (up to 50 MiB) or ask the service for less",
            status=response.status_code, maybe_applied=True)
        declared = response.headers.get("Content-Length", "")
        try:
            if method != "HEAD" and declared.isdigit() and int(declared) > limit:
                raise too_big
            chunks, size = [], 0
            for chunk in response.iter_content(64 * 1024):
                size += len(chunk)
                if size > limit:
                    raise too_big
                if time.monotonic() - started > self.timeout:
                    raise RetriableAPIError(f"{app.label} did not finish its answer within "
                                            f"{self.timeout} s", maybe_applied=True)
                chunks.append(chunk)
            return b"".join(chunks)
        except requests.RequestException:
            raise RetriableAPIError(f"{app.label} stopped sending its answer midway",
                                    maybe_applied=True) from None
        finally:
            response.close()

    # -- judging -----------------------------------------------------------------------------------
    def _judge(self, response, app: App, raw: bytes) -> dict:
        status = response.status_code
        body = _parse(response.headers.get("Content-Type", ""), raw)
        if is_success(status, self.inputs["success_statuses"]):
            return {"status": status, "ok": 200 <= status < 300, "body": body,
                    "headers": {k.lower(): v for k, v in response.headers.items()}}
        wanted = ", ".join(self.inputs["success_statuses"])
        code = None
        if status in REDIRECTS:
            where = (response.headers.get("Location") or "?").split("?")[0]
            message = f"redirected to {where}" + (
                "; set follow_redirects to follow it" if not self.inputs["follow_redirects"]
                else "")
        elif status < 400:
            message = f"the status is not one of the success statuses ({wanted})"
        else:
            code, message = app.error_details(status, body)
        message = self._scrub(message)
        if status in RETRIABLE_STATUSES:
            # X-RateLimit-Reset says when a rate window reopens: it only explains a 429/503.
            headers = response.headers if status in (429, 503) else CaseInsensitiveDict(
                {"Retry-After": response.headers.get("Retry-After", "")})
            raise RetriableAPIError(message, status=status, code=code,
                                    retry_after=parse_retry_after(headers),
                                    maybe_applied=status in GATEWAY_STATUSES)
        raise FatalAPIError(message, status=status, code=code)

    def _scrub(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text


def _parse(content_type: str, raw: bytes):
    """Return JSON for a JSON content type (text if it does not parse), else text; None if empty."""
    if not raw:
        return None
    mime, _, params = content_type.partition(";")
    mime = mime.strip().lower()
    charset = "utf-8"
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"')
    try:
        text = raw.decode(charset, errors="replace")
    except LookupError:
        text = raw.decode("utf-8", errors="replace")
    if mime == "application/json" or mime.endswith("+json"):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


class HttpRequest(Action):
    """Send one request; output `status`, `headers`, `body` and `ok`.

    `ok` is true for a 2xx status; a status outside 2xx that `success_statuses` lists
    (e.g. a 404 meaning "not there yet") gives the output with `ok` false.
    """

    key = "http.request"
    app = "http"
    label = "HTTP request"
    help = "Call any URL: method, query, headers, JSON/form/raw body, auth or a connection."
    Inputs = Inputs
    needs_connection = False
    any_connection = True
    guarded_client = True  # the host keeps its guarded client per connection and thread
    sample = {"status": 200, "ok": True,
              "headers": {"content-type": "application/json"},
              "body": {"id": "wgt_42", "name": "Widget", "in_stock": True}}

    def run(self, ctx, inputs):
        exchange = _Exchange(ctx, inputs)
        guarded = inputs["method"] not in REPEATABLE and not exchange.keyed
        if guarded and ctx.once is not None:
            return ctx.once(ctx.idempotency_key, exchange.describe(), exchange.send)
        return exchange.send()


@hookimpl
def register_actions(register):
    register(HttpRequest)
