"""Samva (messaging over SMS, WhatsApp and email): the app, its auth and its credential test.

Base URL https://samva.app/api/v1 (staging: https://staging.samva.app/api/v1, set as the
connection's base URL); every path is relative to it. Decisions where the document (seeds/002)
is vague, kept in step with the sandbox (connector/sandbox/samva.py):

- Auth: the document's Authentication section and reference example send ``X-API-Key:
  <key>``, while its headers table marks ``Authorization: Bearer <key>`` required. By default
  the app sends **both**, carrying the same key: a server that reads either header accepts
  the request, the key goes to the same host either way, and nothing breaks whichever half
  of the document a server follows. The connection's ``auth_header`` narrows it to
  ``x-api-key`` or ``bearer`` should a deployment object to the other header. (The sandbox
  accepts either, and both only when they carry the same key.)
- ``X-Organization-Id`` is sent when the connection names an organization (it overrides the
  key's default one; one the key cannot reach is 403). ``X-Request-Id`` is a fresh
  ``req_<uuid>`` on every request, for tracking with Samva's support.
- Paths: send is ``POST /messages/send`` (the idempotency example). The document's ``GET
  /v1/messages`` (pagination and filter examples) is the base URL's ``/messages``: its
  ``/v1`` is the version already in the base URL (``https://samva.app/api`` +
  ``/v1/messages``), not a second prefix. The others, in the document's REST spirit: ``GET
  /messages/{id}``, ``GET /templates``, ``GET /templates/{id}``, ``GET /conversations``,
  ``GET /conversations/{id}``, ``GET /conversations/{id}/messages``, ``GET|POST
  /conversations/{id}/participants`` {participant_id} (adding is a set: 200 either way),
  ``GET|POST /participants``, ``GET /participants/{id}``, and ``POST /webhooks`` {url,
  events, secret, description}, ``GET /webhooks``, ``GET|DELETE /webhooks/{id}``.
- Send body: ``channel`` (sms | whatsapp | email), ``to`` (E.164 for sms and whatsapp, an
  email address for email), ``content`` with either ``template_id`` + ``variables`` (filling
  the template's ``{name}`` placeholders) or ``body`` (+ ``subject``, required for email
  without a template), optional ``from``, ``conversation_id``, ``metadata``. It answers
  202 Accepted (the table's "Request queued") with the message in status ``queued``; any
  2xx is taken as success. A message without ``conversation_id`` joins the recipient's
  latest open conversation, or a new one.
- Idempotency: ``X-Idempotency-Key`` carries the step's idempotency key on every POST that
  creates something (send, create participant, add participant). A repeat of the same
  request gets the first answer back; the same key with a different request is 409
  IDEMPOTENCY_KEY_REUSED. Only a 2xx is remembered (24 hours), so a refused request may be
  fixed and retried under the same key.
- Errors: the envelope ``{"error": {"code", "message", "details"}}`` reaches the run as
  ``HTTP <status> <code>: <message> (<details>)``, details flattened to ``key: value``
  pairs, so which field, which value and what was expected are in the run's error as Samva
  wrote them. 400 is a malformed request (missing or mistyped field, bad query parameter,
  INVALID_PHONE_NUMBER, INVALID_EMAIL); 422 a well-formed one that cannot be carried out
  (TEMPLATE_NOT_APPROVED, TEMPLATE_CHANNEL_MISMATCH, MISSING_VARIABLES, and
  DLT_TEMPLATE_REQUIRED for free-text SMS to +91 numbers, which Indian DLT rules forbid);
  404 an unknown id, in the path or the body; 409 a reused idempotency key or a duplicate
  participant (phone and email are unique). All of these fail the run; 429 and 5xx are
  retried after ``Retry-After`` or ``X-RateLimit-Reset`` (epoch seconds), which come with
  ``X-RateLimit-Limit/Remaining`` on every authenticated response.
- Rate limit: the document's example headers show ``X-RateLimit-Limit: 100`` with a Reset
  time, and name no window; the app's default is 100 requests a minute per connection,
  shared by every worker (``rate_limit``), which a connection may override with its real
  plan's figure (``connections add --rate-limit``).
- Lists are ``{"data": [...], "pagination": {page, limit, total, pages}}``; ``page``
  (default 1) and ``limit`` (default 20, at most 100; outside 1..100 is 400); a page past
  the end is empty. ``sort`` is ``created_at`` or ``updated_at``, ``-`` for descending
  (default ``-created_at``); ``created_after``/``created_before`` take a date or an ISO
  8601 time, both inclusive (a bare ``created_before`` date covers that whole day).
  Filters: messages ``status``; templates ``channel``, ``status``; conversations
  ``status``, ``participant_id``; participants ``phone``, ``email``, ``conversation_id``.
  Searches return one page, with its pagination.
- Test keys (``sk_test_*``) simulate delivery: queued -> sent -> delivered, or -> failed
  (error code UNDELIVERABLE) for the test recipients: a phone ending in ``0000`` or an
  email whose local part is ``fail``.
- Webhooks: the client chooses the secret (16+ characters); the document names no
  signature scheme, so triggers generate a ``whsec_`` secret and verify Standard Webhooks.
  Events: message.sent, message.delivered, message.failed; the body is ``{"type",
  "timestamp", "data": message}``; ``webhook-id`` is ``evt_<message id>_<status>``.
"""
from __future__ import annotations

import json
import uuid

from marshmallow import Schema, fields, validate

from connector import App, hookimpl
from connector.sdk import RateLimit

AUTH_HEADERS = ("both", "x-api-key", "bearer")


class Credentials(Schema):
    api_key = fields.String(required=True, validate=validate.Length(min=1), metadata={
        "label": "API key", "secret": True,
        "help": "Settings > API Keys in Samva (sk_test_... keys simulate deliveries)."})
    organization_id = fields.String(load_default=None, metadata={
        "label": "Organization id",
        "help": "Optional: act in this organization instead of the key's default one."})
    auth_header = fields.String(load_default="both", validate=validate.OneOf(AUTH_HEADERS),
                                metadata={"label": "Auth header",
                                          "help": "Where the key goes: both X-API-Key and "
                                                  "Authorization: Bearer (default), or one."})


def describe_details(details) -> str:
    """Flatten an error's ``details`` to ``key: value; ...`` for a one-line run error."""
    if isinstance(details, dict):
        parts = []
        for key, value in details.items():
            shown = value if isinstance(value, (str, int, float)) else json.dumps(value)
            parts.append(f"{key}: {shown}")
        text = "; ".join(parts)
    elif isinstance(details, list):
        text = "; ".join(d if isinstance(d, str) else json.dumps(d) for d in details)
    else:
        text = str(details)
    return text if len(text) <= 500 else text[:497] + "..."


class Samva(App):
    key = "samva"
    label = "Samva"
    help = "Messaging over SMS, WhatsApp and email: send, track delivery, templates, conversations."
    base_url = "https://samva.app/api/v1"
    docs_url = "https://samva.app/api/v1/openapi.json"
    Credentials = Credentials
    rate_limit = RateLimit(100, 60)  # the document's X-RateLimit-Limit example; no window given
    idempotency_header = "X-Idempotency-Key"

    def authenticate(self, request, credentials):
        mode = credentials.get("auth_header") or "both"
        if mode in ("both", "x-api-key"):
            request.headers["X-API-Key"] = credentials["api_key"]
        if mode in ("both", "bearer"):
            request.headers["Authorization"] = f"Bearer {credentials['api_key']}"
        if credentials.get("organization_id"):
            request.headers["X-Organization-Id"] = credentials["organization_id"]
        request.headers.setdefault("X-Request-Id", f"req_{uuid.uuid4().hex}")

    def error_details(self, status, body):
        code, message = super().error_details(status, body)
        error = body.get("error") if isinstance(body, dict) else None
        details = error.get("details") if isinstance(error, dict) else None
        if details:
            message = f"{message} ({describe_details(details)})"
        return code, message

    def test(self, client):
        page = client.get("/templates", params={"limit": 1})
        pagination = page.get("pagination") if isinstance(page, dict) else None
        return {"ok": True,
                "templates": pagination.get("total") if isinstance(pagination, dict) else None}


@hookimpl
def register_apps(register):
    register(Samva)
