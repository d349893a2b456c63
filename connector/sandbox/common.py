"""What every sandbox service shares: the error envelope, body checks, auth hook, rate limit.

Each service is one Flask app built by :func:`create_service_app`. A request goes through,
in order: the 2 MiB body limit (413), the service's ``authenticate`` hook (401/400/403), the
per-key rate limit (429), then the content type and JSON checks for POST/PUT/PATCH bodies
(415/400). Every error is ``{"error": {"code", "message", "details"?}}``; no message ever
carries a key.
"""
from __future__ import annotations

import json
import math
import re
import secrets
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ..web import read_body

MAX_BODY_BYTES = 2 * 1024 * 1024
E164 = re.compile(r"^\+\d{10,15}$")
_NO_BODY = object()


class ApiError(Exception):
    """An error answered with the envelope: HTTP status, UPPER_SNAKE code, sentence, details."""

    def __init__(self, status: int, code: str, message: str, details: dict | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, details: dict | None = None,
                   headers: dict | None = None) -> Response:
    """Return the envelope response for one error."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    response = jsonify({"error": error})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def now_iso(moment: datetime | None = None) -> str:
    """Return ``moment`` (default now) as ISO 8601 UTC with a ``Z``, to the second."""
    moment = moment or datetime.now(timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def random_id(prefix: str = "", nbytes: int = 12) -> str:
    """Return ``prefix`` plus a random lowercase hex string."""
    return prefix + secrets.token_hex(nbytes)


def json_body(validation_status: int = 400) -> dict:
    """Return the request's JSON object, or raise the service's validation error."""
    body = g.get("json_body", _NO_BODY)
    if body is _NO_BODY or not isinstance(body, dict):
        raise ApiError(validation_status, "VALIDATION_ERROR",
                       "The request body must be a JSON object.")
    return body


class RateLimiter:
    """Count requests per key in a 60-second window opened by the key's first request."""

    def __init__(self, limit_per_minute: int, clock: Callable[[], float] = time.time):
        self.limit = limit_per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[Any, list[float]] = {}

    def hit(self, key: Any) -> dict[str, str]:
        """Count one request; return the rate-limit headers, or raise a 429 ApiError."""
        now = self._clock()
        with self._lock:
            window = self._windows.get(key)
            if window is None or now >= window[0] + 60:
                window = self._windows[key] = [now, 0]
            window[1] += 1
            used, reset_at = window[1], window[0] + 60
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.limit - used)),
            # Epoch seconds, as GitHub and most APIs send it; Retry-After carries the delay.
            "X-RateLimit-Reset": str(math.ceil(reset_at)),
        }
        if used > self.limit:
            retry_after = max(1, math.ceil(reset_at - now))
            headers["Retry-After"] = str(retry_after)
            raise ApiError(429, "RATE_LIMITED",
                           f"Rate limit of {self.limit} requests per minute exceeded; "
                           f"retry after {retry_after} seconds.", headers=headers)
        return headers

    def reset(self) -> None:
        """Forget every window."""
        with self._lock:
            self._windows.clear()


def raw_body() -> bytes:
    """Return the request body, raising 413 past 2 MiB even for chunked uploads."""
    if "raw_body" not in g:
        try:
            g.raw_body = read_body(MAX_BODY_BYTES, cache=True)
        except RequestEntityTooLarge:
            raise _too_large() from None
    return g.raw_body


def _too_large() -> ApiError:
    return ApiError(413, "PAYLOAD_TOO_LARGE",
                    f"The request body exceeds the limit of {MAX_BODY_BYTES} bytes (2 MiB).")


def _is_json_type(mimetype: str) -> bool:
    return mimetype == "application/json" or mimetype.endswith("+json")


def _check_body() -> None:
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    data = raw_body()
    if not data.strip():
        return
    if not _is_json_type(request.mimetype):
        raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE",
                       "The request body must be sent as Content-Type: application/json.")
    try:
        g.json_body = json.loads(data)
    except ValueError:
        raise ApiError(400, "INVALID_JSON", "The request body is not valid JSON.") from None


def create_service_app(
    import_name: str,
    authenticate: Callable[[], Any] | None = None,
    limiter: RateLimiter | None = None,
    public: Callable[[], bool] | None = None,
) -> Flask:
    """Build a Flask app with the shared checks and envelope error handlers.

    ``authenticate`` raises :class:`ApiError` or returns the key to rate-limit on;
    ``public`` says whether the current request skips authentication (presigned files).
    """
    app = Flask(import_name)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False

    @app.before_request
    def _guard():
        if (request.content_length or 0) > MAX_BODY_BYTES:
            raise _too_large()
        if authenticate is not None and not (public and public()):
            key = authenticate()
            if limiter is not None and key is not None:
                g.rate_headers = limiter.hit(key)
        _check_body()

    @app.after_request
    def _rate_headers(response):
        for name, value in g.get("rate_headers", {}).items():
            response.headers.setdefault(name, value)
        return response

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = {
            404: ("NOT_FOUND", "No such endpoint."),
            405: ("METHOD_NOT_ALLOWED", f"Method {request.method} is not allowed here."),
            413: ("PAYLOAD_TOO_LARGE",
                  f"The request body exceeds the limit of {MAX_BODY_BYTES} bytes (2 MiB)."),
        }.get(exc.code or 500)
        name, message = code or (
            (exc.name or "error").upper().replace(" ", "_").replace("'", ""),
            exc.description or "Request failed.")
        response = error_response(exc.code or 500, name, message)
        if exc.code == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        app.logger.exception("sandbox error")
        return error_response(500, "INTERNAL_ERROR", "The sandbox failed to handle this request.")

    return app


def require_str(body: dict, field: str, status: int = 400, required: bool = True,
                label: str | None = None) -> str | None:
    """Return ``body[field]`` as a non-empty string (or None when optional and absent)."""
    label = label or field
    value = body.get(field)
    if value is None or value == "":
        if required:
            raise ApiError(status, "VALIDATION_ERROR", f"Field {label} is required.",
                           {"field": label})
        return None
    if not isinstance(value, str):
        raise ApiError(status, "VALIDATION_ERROR", f"Field {label} must be a string.",
                       {"field": label})
    return value
