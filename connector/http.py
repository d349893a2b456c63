"""The HTTP client every plugin gets: one session per connection, a timeout on every call,
and the one place where HTTP outcomes become RetriableAPIError or FatalAPIError.

No retry loop lives here: a retriable failure goes back to the engine, which persists the
attempt and reschedules the step (honouring ``retry_after``), so a crash between attempts
loses nothing. A POST or PATCH is repeated only when guarded: when it may have taken effect
(a lost answer, a gateway error) and carries no idempotency key, is not marked
``idempotent``, and runs outside the ledger (``ctx.once``), it raises OutcomeUnknown instead
of a retriable error. A connection's rate limit is applied before every request
(:mod:`connector.throttle`).
"""
from __future__ import annotations

import email.utils
import logging
import os
import re
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator, Mapping
from urllib.parse import urljoin

import requests
from requests.structures import CaseInsensitiveDict

from .errors import APIError, FatalAPIError, OutcomeUnknown, RetriableAPIError
from .sdk import App, JSONBody, OutgoingRequest

RETRIABLE_STATUSES = {408, 425, 429, 500, 502, 503, 504}
# A gateway answering for the service may have forwarded the request before failing: the
# effect may have happened. Any other error status came from the service itself, refusing.
GATEWAY_STATUSES = {502, 504}
USER_AGENT = "connector/0.1 (+https://github.com/connector)"
#: methods that may change something each time they are sent
UNSAFE_METHODS = frozenset({"POST", "PATCH"})
_IDEMPOTENCY_HEADER = re.compile(r"idempot", re.I)
_ledger_guard: ContextVar[bool] = ContextVar("connector_ledger_guard", default=False)


@contextmanager
def ledger_guard() -> Iterator[None]:
    """Mark the calls made inside as guarded by the idempotency ledger (``ctx.once``)."""
    token = _ledger_guard.set(True)
    try:
        yield
    finally:
        _ledger_guard.reset(token)


def repeat_is_safe(method: str, headers: Mapping[str, str], app: App | None = None,
                   idempotent: bool = False) -> bool:
    """Return True when sending this request twice cannot double its effect.

    Safe are: methods other than POST and PATCH; a call its caller marks ``idempotent``
    (a search sent as POST, adding to a set); one carrying the app's idempotency header or
    any header named like an idempotency key; one made inside the ledger's ``ctx.once``.
    """
    if method.upper() not in UNSAFE_METHODS or idempotent or _ledger_guard.get():
        return True
    return carries_idempotency_key(headers, app)


def carries_idempotency_key(headers: Mapping[str, str], app: App | None = None) -> bool:
    """Return True when ``headers`` hold a non-empty idempotency key: the app's declared
    header, or any header whose name contains "idempotency"."""
    wanted = (app.idempotency_header or "").lower() if app is not None else ""
    return any(value and (name.lower() == wanted or _IDEMPOTENCY_HEADER.search(name))
               for name, value in headers.items())


def unknown_outcome(exc: APIError, method: str, label: str) -> OutcomeUnknown:
    """Return the error for an unguarded POST/PATCH that may have taken effect."""
    return OutcomeUnknown(
        f"{label} may have carried out this {method.upper()} ({exc}); it is not sent again "
        "because it carries no idempotency key and the ledger does not guard it: check the "
        "service before sending it again")


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Return seconds to wait from Retry-After (seconds or HTTP date) or X-RateLimit-Reset."""
    now = time.time() if now is None else now
    value = headers.get("Retry-After")
    if value:
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            when = None
        if when is not None:
            return max(0.0, when.timestamp() - now)
    reset = headers.get("X-RateLimit-Reset")
    if reset:
        try:
            number = float(reset)
        except ValueError:
            return None
        # Epoch seconds when large, else a delta in seconds (both conventions exist).
        return max(0.0, number - now) if number > 1e9 else max(0.0, number)
    return None


class _NoQueryStrings(logging.Filter):
    """Cut query strings out of urllib3's request lines: some services take keys there."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(re.sub(r"\?\S*", "?…", a) if isinstance(a, str) else a
                                for a in record.args)
        return True


def _quiet_urllib3() -> None:
    pool = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, _NoQueryStrings) for f in pool.filters):
        pool.addFilter(_NoQueryStrings())


#: What requests reads from the environment for every request of a ``trust_env`` session,
#: besides the CA bundle variables (which are read here once instead).
_ENVIRONMENT = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "netrc")


def new_session() -> requests.Session:
    """Return a requests Session that reads the environment once, not on every request.

    With ``trust_env`` (the default) requests looks up the proxy variables, the no-proxy
    list, ~/.netrc and the CA bundle variables on every request: about a sixth of the
    connector's CPU per outbound call. When no proxy variable is set and no netrc file
    exists, the session takes the CA bundle (REQUESTS_CA_BUNDLE, else CURL_CA_BUNDLE, as
    requests picks it) now and stops looking; otherwise it is left as requests makes it.
    """
    session = requests.Session()
    if not any(name.lower() in _ENVIRONMENT for name in os.environ) and not any(
            os.path.exists(os.path.expanduser(f"~/{name}")) for name in (".netrc", "_netrc")):
        session.trust_env = False
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            session.verify = bundle
    return session


class ApiClient:
    """Call one app with one connection's credentials; return parsed JSON or raise APIError."""

    def __init__(self, app: App, credentials: Mapping[str, Any], base_url: str | None = None,
                 session: requests.Session | None = None, timeout: float | None = None,
                 connection=None):
        from .throttle import gate_for

        self.app = app
        self.credentials = dict(credentials)
        self.base_url = (base_url or app.base_url).rstrip("/") + "/"
        _quiet_urllib3()
        self.session = session or new_session()
        self.session.headers.setdefault("User-Agent", USER_AGENT)
        self.timeout = timeout or app.timeout
        #: the connection's rate limit (its own, else the app's), shared by every worker
        self.gate = gate_for(app, connection) if connection is not None else None

    def url(self, path: str) -> str:
        return urljoin(self.base_url, path.lstrip("/"))

    def request(self, method: str, path: str, *, params: Mapping | None = None,
                json: Any = None, headers: Mapping | None = None, auth: str | None = None,
                expect_json: bool = True, idempotent: bool = False) -> Any:
        """Send one request; 2xx returns the parsed body (None when empty).

        ``idempotent`` says a POST or PATCH is safe to send again (a search, a set
        membership), so a lost answer stays retriable instead of raising OutcomeUnknown.
        """
        if isinstance(json, JSONBody):  # encoded once already: send its bytes
            headers = {"Content-Type": "application/json", **(headers or {})}
            response = self.raw_request(method, path, params=params, data=json.data,
                                        headers=headers, auth=auth, idempotent=idempotent)
        else:
            response = self.raw_request(method, path, params=params, json=json,
                                        headers=headers, auth=auth, idempotent=idempotent)
        try:
            return self._result(response, expect_json)
        except APIError as exc:
            if exc.retriable and exc.maybe_applied and not repeat_is_safe(
                    method, headers or {}, self.app, idempotent):
                raise unknown_outcome(exc, method, self.app.label) from exc
            raise

    def raw_request(self, method: str, url: str, *, idempotent: bool = False,
                    **kwargs) -> requests.Response:
        """Send one authenticated request and return the Response as it came, any status.

        For callers that judge statuses themselves (the generic HTTP action). Connection
        errors still raise RetriableAPIError (OutcomeUnknown for an unguarded POST or PATCH
        that may have taken effect, see :func:`repeat_is_safe`); ``timeout`` defaults to the
        app's. Waits for the connection's rate limit first, or raises Throttled.
        """
        outgoing = OutgoingRequest(method.upper(), url, dict(kwargs.pop("headers", None) or {}),
                                   dict(kwargs.pop("params", None) or {}), kwargs.pop("auth", None))
        self.app.authenticate(outgoing, self.credentials)
        kwargs.setdefault("timeout", self.timeout)
        kwargs.setdefault("allow_redirects", False)
        if self.gate is not None:
            self.gate.wait_turn()
        try:
            return self._send(outgoing, url, kwargs)
        except APIError as exc:
            if exc.maybe_applied and not repeat_is_safe(outgoing.method, outgoing.headers,
                                                        self.app, idempotent):
                raise unknown_outcome(exc, outgoing.method, self.app.label) from exc
            raise

    def _send(self, outgoing: OutgoingRequest, url: str, kwargs: dict) -> requests.Response:
        try:
            return self.session.request(outgoing.method, self.url(url),
                                        params=outgoing.params or None,
                                        headers=outgoing.headers, **kwargs)
        except (requests.ConnectTimeout, requests.exceptions.SSLError) as exc:
            reason = "connect timed out" if isinstance(exc, requests.ConnectTimeout) else (
                "TLS handshake failed")
            raise RetriableAPIError(f"cannot reach {self.app.label}: {reason}") from None
        except requests.Timeout:
            raise RetriableAPIError(
                f"{self.app.label} did not answer within {kwargs['timeout']} s",
                maybe_applied=True) from None
        except requests.ConnectionError as exc:
            reason = _reason(exc)
            raise RetriableAPIError(f"cannot reach {self.app.label}: {reason}",
                                    maybe_applied=reason not in _NOT_SENT) from None

    def get(self, path: str, retries: int = 0, **kwargs):
        """GET ``path``; ``retries`` repeats a transient failure (a GET is safe to repeat)
        after a short wait, honouring Retry-After up to 2 s, for callers with no engine
        retry behind them (a poll reading many pages)."""
        for attempt in range(retries + 1):
            try:
                return self.request("GET", path, **kwargs)
            except RetriableAPIError as exc:
                if attempt == retries:
                    raise
                wait = exc.retry_after if exc.retry_after is not None else 0.2 * (attempt + 1)
                time.sleep(min(wait, 2.0))

    def post(self, path: str, **kwargs):
        """POST ``path``; pass ``idempotent=True`` when sending it twice is harmless."""
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs):
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs):
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs):
        return self.request("DELETE", path, **kwargs)

    def _result(self, response: requests.Response, expect_json: bool):
        body = _body(response)
        if 200 <= response.status_code < 300:
            if expect_json and body is not None and not isinstance(body, (dict, list)):
                raise FatalAPIError(f"{self.app.label} answered with a body that is not JSON",
                                    status=response.status_code)
            return body
        code, message = self.app.error_details(response.status_code, body)
        status = response.status_code
        if status in RETRIABLE_STATUSES:
            # X-RateLimit-Reset says when a rate window reopens: it explains a 429, or a 503
            # that says the window is used up; any other failure just backs off.
            exhausted = status == 429 or (
                status == 503 and response.headers.get("X-RateLimit-Remaining") == "0")
            headers = response.headers if exhausted else CaseInsensitiveDict(
                {"Retry-After": response.headers.get("Retry-After", "")})
            raise RetriableAPIError(message, status=status, code=code,
                                    retry_after=parse_retry_after(headers),
                                    maybe_applied=status in GATEWAY_STATUSES)
        if 300 <= status < 400:
            target = response.headers.get("Location", "?").split("?")[0]
            message = f"unexpected redirect to {target}"
        raise FatalAPIError(message, status=status, code=code)

    def close(self) -> None:
        self.session.close()


def _body(response: requests.Response):
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


_NOT_SENT = {"connection refused", "name or service not known", "failed to establish"}


def _reason(exc: Exception) -> str:
    """Describe a connection error without the URL (it may carry a key in its query)."""
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "Failed to establish",
                   "timed out",
                   "Connection reset", "Remote end closed", "certificate verify failed"):
        if marker.lower() in text.lower():
            return marker.lower()
    return exc.__class__.__name__
