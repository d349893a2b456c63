"""Samva emulator (seed 002): messages over SMS, WhatsApp and email, templates,
conversations, participants, webhooks.

The connection's base URL (``<root>/samva``) stands for https://samva.app/api/v1; every path
below is relative to it. Decisions where the document is vague (plugins/samva.py says the
same, keep the two in step):

- Auth: the document shows ``X-API-Key: <key>`` and a headers table marking
  ``Authorization: Bearer <key>`` required. Either is accepted; both together must name the
  same key (else 401 CONFLICTING_API_KEYS). A missing key is 401 MISSING_API_KEY, an unknown
  one 401 INVALID_API_KEY. Each key belongs to a default organization and may reach others:
  ``X-Organization-Id`` picks one, and an organization the key cannot reach is 403
  FORBIDDEN. Every record is scoped to its organization. The one seeded key,
  ``sk_test_samva_demo``, is a test key (org_demo by default, also org_partner).
- ``X-Request-Id`` is echoed on every response, or a fresh ``req_...`` is made up.
- Rate limit: ``X-RateLimit-Limit/Remaining/Reset`` (epoch seconds) on every authenticated
  response, counted per key in the sandbox's shared one-minute window; past it 429
  RATE_LIMITED with ``Retry-After``. A 401 carries none (there is no key to count).
- Errors are ``{"error": {"code", "message", "details"}}``. 400 is a malformed request: a
  missing or mistyped field, a bad query parameter, a phone that is not E.164
  (INVALID_PHONE_NUMBER, details field/value/expected as in the document) or a bad email
  (INVALID_EMAIL). 422 is a well-formed request that cannot be carried out: a template not
  approved (TEMPLATE_NOT_APPROVED), of another channel (TEMPLATE_CHANNEL_MISMATCH), missing
  variables (MISSING_VARIABLES, details.missing), free text by SMS to an Indian (+91) number
  where DLT requires a registered template (DLT_TEMPLATE_REQUIRED). 404 for an unknown id,
  in the path or the body (MESSAGE_NOT_FOUND, TEMPLATE_NOT_FOUND, ...). 409 for a reused
  idempotency key and a duplicate participant.
- Sending is ``POST /messages/send`` (the idempotency example) and answers 202 Accepted
  (the table's "Request queued") with the message, status ``queued``. Body: ``channel``
  (sms | whatsapp | email), ``to`` (E.164 for sms and whatsapp, an email address for
  email), ``content`` with either ``template_id`` (+ ``variables``, filling ``{name}``
  placeholders) or ``body`` (+ ``subject``, required for email), optional ``from``,
  ``conversation_id``, ``metadata``. SMS bodies are at most 1600 characters, WhatsApp 4096;
  an SMS costs one credit per 160-character segment (70 with non-GSM text), anything else
  one. Test keys are not charged, but ``credits_used`` reports what would be.
- ``GET /v1/messages`` in the document's pagination and filter examples is the same
  resource as the base URL's ``/messages``: ``/v1`` there is the version part of the base
  URL (``https://samva.app/api`` + ``/v1/messages``), not a second prefix.
- Threading: a message joins ``conversation_id`` when given, else the latest open
  conversation of the participant with that phone (sms, whatsapp) or email, else a new one;
  an unknown recipient becomes a participant.
- ``X-Idempotency-Key`` is honoured on every POST, per organization, for 24 hours: a repeat
  of the same method, path and JSON body answers the first response again (with
  ``Idempotent-Replayed: true``), the same key with anything else is 409
  IDEMPOTENCY_KEY_REUSED. Only a 2xx answer is remembered, so a refused request may be
  fixed and sent again under the same key.
- Lists answer ``{"data": [...], "pagination": {page, limit, total, pages}}``; ``page``
  (default 1) and ``limit`` (default 20, at most 100; outside 1..100 is 400); a page past
  the end is empty. ``sort`` takes ``created_at`` or ``updated_at``, ``-`` for descending
  (default ``-created_at``). ``created_after`` / ``created_before`` take a date or an ISO
  8601 time, both inclusive (a bare ``created_before`` date covers that whole day).
  ``status`` filters (comma-separated for several). Messages: ``status``; conversations:
  ``status``, ``participant_id``; templates: ``status``, ``channel``; participants:
  ``phone``, ``email``, ``conversation_id``.
- Delivery simulation (test keys): a message goes queued -> sent -> delivered, one step
  every ``step_delay`` seconds (0.1). The documented failing test recipients: a phone
  ending in ``0000`` or an email whose local part is ``fail`` (fail@example.com) go
  queued -> sent -> failed, with ``error`` {code UNDELIVERABLE}.
- Webhooks: ``POST /webhooks`` {url, events, secret (chosen by the client, 16+ chars),
  description?} answers 201 without the secret; ``GET /webhooks``, ``GET
  /webhooks/{id}``, ``DELETE /webhooks/{id}`` (204). Events: message.sent,
  message.delivered, message.failed. Deliveries are signed the Standard Webhooks way with
  that secret (the document names no scheme); the body is ``{"type", "timestamp",
  "data": message}`` and ``webhook-id`` is ``evt_<message id>_<status>``.
- Other paths: ``GET /messages/{id}``, ``GET /templates``, ``GET /templates/{id}``, ``GET
  /conversations``, ``GET /conversations/{id}``, ``GET /conversations/{id}/messages``,
  ``GET|POST /conversations/{id}/participants`` (adding is a set: 200 either way), ``GET
  /participants``, ``POST /participants`` (201; phone and email unique per organization,
  else 409 DUPLICATE_PARTICIPANT with the existing id), ``GET /participants/{id}``.
"""
from __future__ import annotations

import json
import math
import re
import threading
import time
from datetime import date, datetime, timedelta, timezone
from urllib.parse import urlparse

from flask import Flask, g, jsonify, request

from .common import (E164, ApiError, RateLimiter, create_service_app, json_body, now_iso,
                     random_id, raw_body)
from .delivery import Deliverer, Scheduler

DEFAULT_KEY = "sk_test_samva_demo"
DEMO_ORG, PARTNER_ORG = "org_demo", "org_partner"
CHANNELS = ("sms", "whatsapp", "email")
MESSAGE_STATUSES = ("queued", "sent", "delivered", "failed")
FINAL = ("delivered", "failed")
EVENTS = ("message.sent", "message.delivered", "message.failed")
DEFAULT_LIMIT, MAX_LIMIT = 20, 100
IDEMPOTENCY_TTL = 24 * 3600
MAX_BODY = {"sms": 1600, "whatsapp": 4096}
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PLACEHOLDER = re.compile(r"\{(\w+)\}")
DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
GSM = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOP"
          "QRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà^{}\\[~]|€")
SENDERS = {"sms": "SAMVA", "whatsapp": "+14155550100", "email": "notifications@samva.app"}


def fails(to: str) -> bool:
    """Say whether a test recipient is the documented undeliverable one."""
    return to.endswith("0000") or to.split("@", 1)[0].lower() == "fail"


def credits_for(channel: str, body: str) -> int:
    if channel != "sms":
        return 1
    size = 160 if set(body) <= GSM else 70
    return max(1, math.ceil(len(body) / size))


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _copy(record: dict) -> dict:
    return json.loads(json.dumps({k: v for k, v in record.items() if not k.startswith("_")}))


def _seed_templates() -> list[dict]:
    base = {"language": "en", "status": "approved", "subject": None, "dlt": None}
    return [
        {**base, "id": "dlt_template_123", "name": "OTP verification", "channel": "sms",
         "category": "authentication", "organization_id": DEMO_ORG,
         "body": "Your Samva verification code is {otp}. It is valid for 10 minutes.",
         "dlt": {"entity_id": "1101234567890123456", "template_id": "1107161234567890123",
                 "sender_id": "SAMVAO"},
         "created_at": "2024-01-02T08:00:00Z"},
        {**base, "id": "wa_order_shipped", "name": "Order shipped", "channel": "whatsapp",
         "category": "utility", "organization_id": DEMO_ORG,
         "body": "Hi {name}, your order {order_id} has shipped and arrives by {date}.",
         "created_at": "2024-01-03T08:00:00Z"},
        {**base, "id": "wa_spring_promo", "name": "Spring promotion", "channel": "whatsapp",
         "category": "marketing", "organization_id": DEMO_ORG, "status": "pending",
         "body": "Hi {name}, enjoy {discount} off everything this week.",
         "created_at": "2024-01-04T08:00:00Z"},
        {**base, "id": "email_welcome", "name": "Welcome email", "channel": "email",
         "category": "onboarding", "organization_id": DEMO_ORG,
         "subject": "Welcome to {company}, {name}!",
         "body": "Hi {name},\n\nThanks for joining {company}. Reply to this email any time.",
         "created_at": "2024-01-05T08:00:00Z"},
        {**base, "id": "partner_alert", "name": "Partner alert", "channel": "sms",
         "category": "utility", "organization_id": PARTNER_ORG, "body": "Alert: {text}",
         "created_at": "2024-01-06T08:00:00Z"},
    ]


class Samva:
    """State and routes of Samva; every access holds ``lock``."""

    name, prefix = "samva", "/samva"
    step_delay = 0.1  # seconds between two delivery statuses of a test message

    def __init__(self, lock: threading.RLock, limiter: RateLimiter, scheduler: Scheduler,
                 deliverer: Deliverer):
        self.lock = lock
        self.limiter = limiter
        self.scheduler = scheduler
        self.deliverer = deliverer
        self.reset(False)

    def reset(self, seed: bool = True) -> None:
        """Forget everything; with ``seed``, add the demo templates, people and messages."""
        with self.lock:
            self.keys = {DEFAULT_KEY: {"organization_id": DEMO_ORG, "mode": "test",
                                       "organizations": [DEMO_ORG, PARTNER_ORG]}}
            self.templates: dict[str, dict] = {}
            self.participants: dict[str, dict] = {}
            self.conversations: dict[str, dict] = {}
            self.messages: dict[str, dict] = {}
            self.webhooks: dict[str, dict] = {}
            self.idempotency: dict[tuple[str, str], dict] = {}
            self._pending: dict[str, tuple | None] = {}
            self._seq = 0
            if seed:
                self._seed()

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _seed(self) -> None:
        for template in _seed_templates():
            template["updated_at"] = template["created_at"]
            template["variables"] = self._variables(template)
            template["_seq"] = self._next()
            self.templates[template["id"]] = template
        for pid, name, phone, email, stamp in (
                ("par_demo_asha", "Asha Rao", "+919876543210", "asha.rao@example.com",
                 "2024-01-10T09:00:00Z"),
                ("par_demo_ben", "Ben Carter", "+14155550123", "ben.carter@example.com",
                 "2024-01-10T09:05:00Z")):
            self.participants[pid] = {
                "id": pid, "organization_id": DEMO_ORG, "name": name, "phone": phone,
                "email": email, "metadata": {}, "conversation_ids": ["conv_demo"],
                "created_at": stamp, "updated_at": stamp, "_seq": self._next()}
        self.conversations["conv_demo"] = {
            "id": "conv_demo", "organization_id": DEMO_ORG, "subject": "Order #1042 delivery",
            "status": "open", "channels": [], "participant_ids": ["par_demo_asha",
                                                                 "par_demo_ben"],
            "message_count": 0, "last_message_at": None, "created_at": "2024-01-10T09:00:00Z",
            "updated_at": "2024-01-10T09:00:00Z", "_seq": self._next()}
        for mid, channel, to, pid, content, status, stamp in (
                ("msg_seed_otp", "sms", "+919876543210", "par_demo_asha",
                 {"template_id": "dlt_template_123", "variables": {"otp": "482913"}},
                 "delivered", "2024-01-15T10:30:00Z"),
                ("msg_seed_welcome", "email", "ben.carter@example.com", "par_demo_ben",
                 {"template_id": "email_welcome",
                  "variables": {"name": "Ben", "company": "Acme"}}, "delivered",
                 "2024-01-20T09:00:00Z"),
                ("msg_seed_failed", "sms", "+14155550123", "par_demo_ben",
                 {"body": "Your order #1042 is out for delivery."}, "failed",
                 "2024-02-03T14:00:00Z")):
            body, subject = self._render(DEMO_ORG, channel, to, content)
            message = self._new_message(DEMO_ORG, channel, to, content, body, subject,
                                        None, {}, self.conversations["conv_demo"],
                                        self.participants[pid], stamp)
            message.update(status=status, sent_at=stamp, updated_at=stamp)
            if status == "delivered":
                message["delivered_at"] = stamp
            else:
                message["failed_at"] = stamp
                message["error"] = {"code": "UNDELIVERABLE",
                                    "message": "The carrier rejected the message."}
            self.messages[mid] = {**message, "id": mid}
        conversation = self.conversations["conv_demo"]
        conversation.update(channels=["sms", "email"], message_count=3,
                            last_message_at="2024-02-03T14:00:00Z",
                            updated_at="2024-02-03T14:00:00Z")

    # Auth and request helpers

    def _authenticate(self):
        header_key = request.headers.get("X-API-Key", "").strip()
        bearer = ""
        authorization = request.headers.get("Authorization", "").strip()
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise ApiError(401, "INVALID_API_KEY",
                               "The Authorization header must be 'Bearer <api key>'.")
            bearer = value.strip()
        if header_key and bearer and header_key != bearer:
            raise ApiError(401, "CONFLICTING_API_KEYS",
                           "X-API-Key and Authorization carry different API keys; send one "
                           "key (in either header, or the same key in both).")
        key = header_key or bearer
        if not key:
            raise ApiError(401, "MISSING_API_KEY",
                           "Missing API key: send it in the X-API-Key header or as "
                           "Authorization: Bearer <key>.")
        with self.lock:
            account = self.keys.get(key)
        if account is None:
            raise ApiError(401, "INVALID_API_KEY", "The API key is invalid or revoked.")
        org = request.headers.get("X-Organization-Id", "").strip() or account["organization_id"]
        if org not in account["organizations"]:
            raise ApiError(403, "FORBIDDEN",
                           f"This API key has no access to organization {org}.",
                           {"header": "X-Organization-Id", "value": org})
        g.samva_org = org
        return ("samva", key)

    @staticmethod
    def _org() -> str:
        return g.samva_org

    def _get(self, table: dict, kind: str, record_id: str, field: str = "id") -> dict:
        record = table.get(record_id)
        if record is None or record["organization_id"] != self._org():
            raise ApiError(404, f"{kind.upper()}_NOT_FOUND",
                           f"{kind.capitalize()} {record_id} does not exist.",
                           {"field": field, "value": record_id})
        return record

    def _listing(self, records, statuses=(), filters=()) -> dict:
        """Filter, sort and paginate ``records`` as the query string asks."""
        page = _int_arg("page", 1, 1, None)
        limit = _int_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        sort = request.args.get("sort") or "-created_at"
        if sort.lstrip("-") not in ("created_at", "updated_at"):
            raise _bad_query("sort", sort, "created_at, -created_at, updated_at or -updated_at")
        after = _bound("created_after", end_of_day=False)
        before = _bound("created_before", end_of_day=True)
        wanted = {}
        if statuses:
            raw = request.args.get("status")
            if raw:
                wanted["status"] = set(raw.split(","))
                if not wanted["status"] <= set(statuses):
                    raise _bad_query("status", raw, "one or more of " + ", ".join(statuses))
        for name in filters:
            if request.args.get(name):
                wanted[name] = request.args[name]
        out = []
        for record in records:
            if record["organization_id"] != self._org():
                continue
            stamp = _moment(record["created_at"])
            if (after and stamp < after) or (before and stamp > before):
                continue
            if "status" in wanted and record.get("status") not in wanted["status"]:
                continue
            if not all(_matches(record, k, v) for k, v in wanted.items() if k != "status"):
                continue
            out.append(record)
        field = sort.lstrip("-")
        out.sort(key=lambda r: (_moment(r[field]), r["_seq"]), reverse=sort.startswith("-"))
        total = len(out)
        chunk = out[(page - 1) * limit:page * limit]
        return {"data": [self._public(r) for r in chunk],
                "pagination": {"page": page, "limit": limit, "total": total,
                               "pages": math.ceil(total / limit)}}

    def _public(self, record: dict) -> dict:
        return _copy(record)

    def _idempotent(self, handler):
        """Run ``handler`` (returning (body, status)) at most once per X-Idempotency-Key."""
        key = request.headers.get("X-Idempotency-Key", "").strip()
        if not key:
            return handler()
        if len(key) > 255:
            raise ApiError(400, "VALIDATION_ERROR",
                           "Header X-Idempotency-Key must be at most 255 characters.",
                           {"header": "X-Idempotency-Key"})
        fingerprint = json.dumps([request.method, request.path, g.get("json_body")],
                                 sort_keys=True)
        with self.lock:
            slot = (self._org(), key)
            record = self.idempotency.get(slot)
            if record is not None and record["expires"] < time.time():
                del self.idempotency[slot]
                record = None
            if record is not None:
                if record["fingerprint"] != fingerprint:
                    raise ApiError(409, "IDEMPOTENCY_KEY_REUSED",
                                   "This idempotency key was already used with a different "
                                   "request; use a new key for a new request.",
                                   {"idempotency_key": key,
                                    "original_path": record["path"]})
                response = jsonify(record["body"])
                response.status_code = record["status"]
                response.headers["Idempotent-Replayed"] = "true"
                return response
            body, status = handler()
            self.idempotency[slot] = {"fingerprint": fingerprint, "path": request.path,
                                      "body": body, "status": status,
                                      "expires": time.time() + IDEMPOTENCY_TTL}
            return body, status

    # Messages

    def _variables(self, template: dict) -> list[str]:
        text = (template.get("subject") or "") + "\n" + template["body"]
        return list(dict.fromkeys(PLACEHOLDER.findall(text)))

    def _render(self, org: str, channel: str, to: str, content: dict) -> tuple[str, str | None]:
        """Return (body, subject) for ``content``, enforcing the template rules."""
        template_id = content.get("template_id")
        if template_id is None:
            if channel == "sms" and to.startswith("+91"):
                raise ApiError(422, "DLT_TEMPLATE_REQUIRED",
                               "SMS to Indian numbers must use a DLT-registered template "
                               "(content.template_id), not free text.",
                               {"field": "content.template_id", "to": to})
            return content["body"], content.get("subject")
        template = self.templates.get(template_id)
        if template is None or template["organization_id"] != org:
            raise ApiError(404, "TEMPLATE_NOT_FOUND", f"Template {template_id} does not exist.",
                           {"field": "content.template_id", "value": template_id})
        if template["channel"] != channel:
            raise ApiError(422, "TEMPLATE_CHANNEL_MISMATCH",
                           f"Template {template_id} is for {template['channel']}, not "
                           f"{channel}.", {"field": "content.template_id",
                                           "template_channel": template["channel"]})
        if template["status"] != "approved":
            raise ApiError(422, "TEMPLATE_NOT_APPROVED",
                           f"Template {template_id} is {template['status']}; only approved "
                           "templates can be sent.", {"field": "content.template_id",
                                                      "status": template["status"]})
        variables = content.get("variables") or {}
        missing = [v for v in template["variables"] if v not in variables]
        if missing:
            raise ApiError(422, "MISSING_VARIABLES",
                           f"Template {template_id} needs variables: {', '.join(missing)}.",
                           {"field": "content.variables", "missing": missing})

        def fill(text):
            return PLACEHOLDER.sub(lambda m: str(variables.get(m.group(1), m.group(0))), text)

        return fill(template["body"]), fill(template["subject"]) if template["subject"] else None

    def _new_message(self, org, channel, to, content, body, subject, sender, metadata,
                     conversation, participant, stamp) -> dict:
        return {
            "id": random_id("msg_"), "organization_id": org, "direction": "outbound",
            "channel": channel, "to": to, "from": sender or SENDERS[channel],
            "status": "queued", "content": content, "body": body, "subject": subject,
            "conversation_id": conversation["id"], "participant_id": participant["id"],
            "credits_used": credits_for(channel, body), "metadata": metadata, "error": None,
            "created_at": stamp, "updated_at": stamp, "sent_at": None, "delivered_at": None,
            "failed_at": None, "_seq": self._next()}

    def send(self, body: dict) -> tuple[dict, int]:
        """Validate a send request, queue the message and start its delivery; answer 202."""
        channel, to, content, sender, metadata, conversation_id = _send_fields(body)
        org = self._org()
        with self.lock:
            text, subject = self._render(org, channel, to, content)
            conversation = (self._get(self.conversations, "conversation", conversation_id,
                                      "conversation_id") if conversation_id else None)
            participant = self._participant_for(org, channel, to)
            if conversation is None:
                conversation = self._conversation_for(participant)
            stamp = now_iso()
            message = self._new_message(org, channel, to, content, text, subject, sender,
                                        metadata, conversation, participant, stamp)
            self.messages[message["id"]] = message
            if participant["id"] not in conversation["participant_ids"]:
                conversation["participant_ids"].append(participant["id"])
            if conversation["id"] not in participant["conversation_ids"]:
                participant["conversation_ids"].append(conversation["id"])
            if channel not in conversation["channels"]:
                conversation["channels"].append(channel)
            conversation["message_count"] += 1
            conversation["last_message_at"] = conversation["updated_at"] = stamp
            self._later(message["id"], "queued")
            return self._public(message), 202

    def _participant_for(self, org: str, channel: str, to: str) -> dict:
        field = "email" if channel == "email" else "phone"
        for participant in self.participants.values():
            if participant["organization_id"] == org and participant[field] == to:
                return participant
        stamp = now_iso()
        participant = {"id": random_id("par_"), "organization_id": org, "name": None,
                       "phone": None, "email": None, field: to, "metadata": {},
                       "conversation_ids": [], "created_at": stamp, "updated_at": stamp,
                       "_seq": self._next()}
        self.participants[participant["id"]] = participant
        return participant

    def _conversation_for(self, participant: dict) -> dict:
        open_ones = [self.conversations[c] for c in participant["conversation_ids"]
                     if self.conversations[c]["status"] == "open"]
        if open_ones:
            return max(open_ones, key=lambda c: (c["updated_at"], c["_seq"]))
        stamp = now_iso()
        conversation = {"id": random_id("conv_"), "organization_id": participant["organization_id"],
                        "subject": None, "status": "open", "channels": [],
                        "participant_ids": [participant["id"]], "message_count": 0,
                        "last_message_at": None, "created_at": stamp, "updated_at": stamp,
                        "_seq": self._next()}
        self.conversations[conversation["id"]] = conversation
        return conversation

    def _later(self, message_id: str, expected: str) -> None:
        self._pending[message_id] = self.scheduler.schedule(
            self.step_delay, lambda: self._advance(message_id, expected))

    def _advance(self, message_id: str, expected: str) -> None:
        with self.lock:
            message = self.messages.get(message_id)
            if message is None or message["status"] != expected:
                return  # moved by hand, or the sandbox was reset
            self._pending.pop(message_id, None)
            if expected == "queued":
                self._set(message, "sent")
                self._later(message_id, "sent")
            else:
                self._set(message, "failed" if fails(message["to"]) else "delivered")

    def _set(self, message: dict, status: str) -> None:
        stamp = now_iso()
        message["status"], message["updated_at"] = status, stamp
        message[f"{status}_at"] = stamp
        if status == "failed":
            message["error"] = {"code": "UNDELIVERABLE",
                                "message": f"The {message['channel']} message to "
                                           f"{message['to']} could not be delivered."}
        self._emit(message)

    def set_status(self, message_id: str, status: str) -> dict:
        """Move a message on now (through ``sent`` if still queued), firing its events."""
        if status not in ("sent", *FINAL):
            raise ApiError(400, "VALIDATION_ERROR", "Field status must be sent, delivered "
                           "or failed.", {"field": "status"})
        with self.lock:
            message = self.messages.get(message_id)
            if message is None:
                raise ApiError(404, "MESSAGE_NOT_FOUND", f"Message {message_id} does not exist.")
            if message["status"] in FINAL or message["status"] == status:
                raise ApiError(409, "MESSAGE_FINAL" if message["status"] in FINAL else
                               "ALREADY_IN_STATUS",
                               f"Message {message_id} is already {message['status']}.")
            self.scheduler.cancel(self._pending.pop(message_id, None))
            if message["status"] == "queued":
                self._set(message, "sent")
            if status != "sent":
                self._set(message, status)
            else:
                self._later(message_id, "sent")
            return self._public(message)

    def _emit(self, message: dict) -> None:
        event = f"message.{message['status']}"
        payload = {"type": event, "timestamp": message["updated_at"],
                   "data": self._public(message)}
        for hook in self.webhooks.values():
            if hook["organization_id"] == message["organization_id"] and event in hook["events"]:
                self.deliverer.send(hook["url"], hook["_secret"], event, payload,
                                    msg_id=f"evt_{message['id']}_{message['status']}",
                                    source=f"samva:{hook['id']}")

    # Participants and webhooks

    def create_participant(self, body: dict) -> tuple[dict, int]:
        name = _opt_str(body, "name")
        phone = _opt_str(body, "phone")
        email = _opt_str(body, "email")
        if not phone and not email:
            raise ApiError(400, "VALIDATION_ERROR", "Give a phone or an email.",
                           {"field": "phone"})
        if phone:
            _check_phone(phone, "phone")
        if email:
            _check_email(email, "email")
        metadata = _opt_dict(body, "metadata")
        conversation_id = _opt_str(body, "conversation_id")
        org = self._org()
        with self.lock:
            conversation = (self._get(self.conversations, "conversation", conversation_id,
                                      "conversation_id") if conversation_id else None)
            for other in self.participants.values():
                if other["organization_id"] != org:
                    continue
                for field, value in (("phone", phone), ("email", email)):
                    if value and other[field] == value:
                        raise ApiError(409, "DUPLICATE_PARTICIPANT",
                                       f"A participant with this {field} already exists.",
                                       {"field": field, "participant_id": other["id"]})
            stamp = now_iso()
            participant = {"id": random_id("par_"), "organization_id": org, "name": name,
                           "phone": phone, "email": email, "metadata": metadata,
                           "conversation_ids": [], "created_at": stamp, "updated_at": stamp,
                           "_seq": self._next()}
            self.participants[participant["id"]] = participant
            if conversation is not None:
                self._join(conversation, participant)
            return self._public(participant), 201

    def _join(self, conversation: dict, participant: dict) -> None:
        if participant["id"] not in conversation["participant_ids"]:
            conversation["participant_ids"].append(participant["id"])
            conversation["updated_at"] = now_iso()
        if conversation["id"] not in participant["conversation_ids"]:
            participant["conversation_ids"].append(conversation["id"])
            participant["updated_at"] = now_iso()

    def create_webhook(self, body: dict) -> tuple[dict, int]:
        url = _opt_str(body, "url")
        parsed = urlparse(url or "")
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ApiError(400, "VALIDATION_ERROR", "Field url must be an http or https URL.",
                           {"field": "url"})
        events = body.get("events")
        if (not isinstance(events, list) or not events
                or not all(isinstance(e, str) and e in EVENTS for e in events)):
            raise ApiError(400, "VALIDATION_ERROR", "Field events must be a non-empty list of "
                           + ", ".join(EVENTS) + ".", {"field": "events"})
        secret = body.get("secret")
        if not isinstance(secret, str) or len(secret) < 16:
            raise ApiError(400, "VALIDATION_ERROR",
                           "Field secret must be a string of at least 16 characters; it "
                           "signs every delivery.", {"field": "secret"})
        description = _opt_str(body, "description")
        stamp = now_iso()
        with self.lock:
            hook = {"id": random_id("wh_"), "organization_id": self._org(), "url": url,
                    "events": list(dict.fromkeys(events)), "description": description,
                    "active": True, "created_at": stamp, "updated_at": stamp,
                    "_secret": secret, "_seq": self._next()}
            self.webhooks[hook["id"]] = hook
            return self._public(hook), 201

    # The sandbox composes services through these (see app.py).

    def state(self) -> dict:
        """Return every record (webhook secrets left out) for tests and demos."""
        with self.lock:
            def rows(table):
                return [_copy(r) for r in sorted(table.values(), key=lambda r: r["_seq"])]
            return {"templates": rows(self.templates), "participants": rows(self.participants),
                    "conversations": rows(self.conversations), "messages": rows(self.messages),
                    "webhooks": rows(self.webhooks),
                    "idempotency_keys": [{"organization_id": org, "key": key,
                                          "path": r["path"], "status": r["status"]}
                                         for (org, key), r in self.idempotency.items()]}

    def connection(self, root: str) -> dict:
        return {"base_url": root + self.prefix, "credentials": {"api_key": DEFAULT_KEY}}

    def seeded(self) -> dict:
        return {"api_key": DEFAULT_KEY, "organization_id": DEMO_ORG,
                "other_organization_id": PARTNER_ORG, "template_id": "dlt_template_123",
                "conversation_id": "conv_demo",
                "participant_ids": ["par_demo_asha", "par_demo_ben"],
                "failing_phone": "+14155550000", "failing_email": "fail@example.com"}

    def register_admin(self, app) -> None:
        """Add /_sandbox/samva/messages/<id>/status: move a message's delivery on now."""

        @app.post("/samva/messages/<message_id>/status")
        def samva_status(message_id):
            data = json_body() if raw_body().strip() else {}
            return self.set_status(message_id, data.get("status", "delivered"))

    def create_app(self) -> Flask:
        """Build the Flask app serving every path of the module docstring."""
        app = create_service_app(__name__, self._authenticate, self.limiter)

        @app.after_request
        def _request_id(response):
            response.headers["X-Request-Id"] = (request.headers.get("X-Request-Id")
                                                or random_id("req_"))
            return response

        @app.post("/messages/send")
        def send():
            return self._idempotent(lambda: self.send(json_body()))

        @app.get("/messages")
        def list_messages():
            with self.lock:
                return self._listing(self.messages.values(), MESSAGE_STATUSES)

        @app.get("/messages/<message_id>")
        def get_message(message_id):
            with self.lock:
                return self._public(self._get(self.messages, "message", message_id))

        @app.get("/templates")
        def list_templates():
            with self.lock:
                return self._listing(self.templates.values(),
                                     ("approved", "pending", "rejected"), ("channel",))

        @app.get("/templates/<template_id>")
        def get_template(template_id):
            with self.lock:
                return self._public(self._get(self.templates, "template", template_id))

        @app.get("/conversations")
        def list_conversations():
            with self.lock:
                return self._listing(self.conversations.values(), ("open", "closed"),
                                     ("participant_id",))

        @app.get("/conversations/<conversation_id>")
        def get_conversation(conversation_id):
            with self.lock:
                return self._public(self._get(self.conversations, "conversation",
                                              conversation_id))

        @app.get("/conversations/<conversation_id>/messages")
        def conversation_messages(conversation_id):
            with self.lock:
                self._get(self.conversations, "conversation", conversation_id)
                return self._listing([m for m in self.messages.values()
                                      if m["conversation_id"] == conversation_id],
                                     MESSAGE_STATUSES)

        @app.get("/conversations/<conversation_id>/participants")
        def conversation_participants(conversation_id):
            with self.lock:
                conversation = self._get(self.conversations, "conversation", conversation_id)
                return self._listing([self.participants[p]
                                      for p in conversation["participant_ids"]])

        @app.post("/conversations/<conversation_id>/participants")
        def add_participant(conversation_id):
            def handler():
                body = json_body()
                participant_id = _opt_str(body, "participant_id")
                if not participant_id:
                    raise ApiError(400, "VALIDATION_ERROR", "Field participant_id is required.",
                                   {"field": "participant_id"})
                with self.lock:
                    conversation = self._get(self.conversations, "conversation",
                                             conversation_id)
                    participant = self._get(self.participants, "participant", participant_id,
                                            "participant_id")
                    self._join(conversation, participant)
                    return self._public(conversation), 200
            return self._idempotent(handler)

        @app.get("/participants")
        def list_participants():
            with self.lock:
                return self._listing(self.participants.values(), (),
                                     ("phone", "email", "conversation_id"))

        @app.post("/participants")
        def create_participant():
            return self._idempotent(lambda: self.create_participant(json_body()))

        @app.get("/participants/<participant_id>")
        def get_participant(participant_id):
            with self.lock:
                return self._public(self._get(self.participants, "participant",
                                              participant_id))

        @app.post("/webhooks")
        def create_webhook():
            return self._idempotent(lambda: self.create_webhook(json_body()))

        @app.get("/webhooks")
        def list_webhooks():
            with self.lock:
                return self._listing(self.webhooks.values())

        @app.get("/webhooks/<webhook_id>")
        def get_webhook(webhook_id):
            with self.lock:
                return self._public(self._get(self.webhooks, "webhook", webhook_id))

        @app.delete("/webhooks/<webhook_id>")
        def delete_webhook(webhook_id):
            with self.lock:
                self._get(self.webhooks, "webhook", webhook_id)
                del self.webhooks[webhook_id]
            return "", 204

        return app


# Validation helpers (raise the envelope's 400s)

def _bad_query(name: str, value: str, expected: str) -> ApiError:
    return ApiError(400, "INVALID_PARAMETER", f"Query parameter {name} must be {expected}.",
                    {"field": name, "value": value, "expected": expected})


def _int_arg(name: str, default: int, low: int, high: int | None) -> int:
    raw = request.args.get(name)
    if raw in (None, ""):
        return default
    expected = f"an integer from {low} to {high}" if high else f"an integer of at least {low}"
    try:
        value = int(raw)
    except ValueError:
        raise _bad_query(name, raw, expected) from None
    if value < low or (high is not None and value > high):
        raise _bad_query(name, raw, expected)
    return value


def _bound(name: str, end_of_day: bool) -> datetime | None:
    raw = request.args.get(name)
    if not raw:
        return None
    try:
        if DATE_ONLY.match(raw):
            day = datetime.combine(date.fromisoformat(raw), datetime.min.time(), timezone.utc)
            return day + timedelta(days=1, microseconds=-1) if end_of_day else day
        return _moment(raw)
    except ValueError:
        raise _bad_query(name, raw, "a date (2024-01-31) or an ISO 8601 time "
                                    "(2024-01-31T12:00:00Z)") from None


def _matches(record: dict, name: str, value: str) -> bool:
    if name == "participant_id":
        return value in record["participant_ids"]
    if name == "conversation_id":
        return value in record["conversation_ids"]
    return str(record.get(name) or "").lower() == value.lower()


def _opt_str(body: dict, field: str) -> str | None:
    value = body.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ApiError(400, "VALIDATION_ERROR", f"Field {field} must be a string.",
                       {"field": field})
    return value.strip()


def _opt_dict(body: dict, field: str) -> dict:
    value = body.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, "VALIDATION_ERROR", f"Field {field} must be an object.",
                       {"field": field})
    return value


def _check_phone(value: str, field: str) -> None:
    if not E164.match(value):
        raise ApiError(400, "INVALID_PHONE_NUMBER", "The phone number format is invalid",
                       {"field": field, "value": value,
                        "expected": "+919876543210 or E.164 format"})


def _check_email(value: str, field: str) -> None:
    if not EMAIL.match(value):
        raise ApiError(400, "INVALID_EMAIL", "The email address is invalid",
                       {"field": field, "value": value, "expected": "name@example.com"})


def _send_fields(body: dict):
    """Check a send body; return channel, to, content, from, metadata, conversation_id."""
    channel = body.get("channel")
    if channel not in CHANNELS:
        raise ApiError(400, "VALIDATION_ERROR",
                       "Field channel must be one of sms, whatsapp, email.",
                       {"field": "channel", "value": channel, "expected": list(CHANNELS)})
    to = _opt_str(body, "to")
    if not to:
        raise ApiError(400, "VALIDATION_ERROR", "Field to is required.", {"field": "to"})
    (_check_email if channel == "email" else _check_phone)(to, "to")
    content = body.get("content")
    if not isinstance(content, dict):
        raise ApiError(400, "VALIDATION_ERROR", "Field content must be an object.",
                       {"field": "content"})
    template_id = _opt_str(content, "template_id")
    text = content.get("body")
    if (template_id is None) == (text in (None, "")):
        raise ApiError(400, "VALIDATION_ERROR", "Give either content.template_id or "
                       "content.body, not both and not neither.",
                       {"field": "content"})
    variables = content.get("variables")
    if variables is not None and (not isinstance(variables, dict) or not all(
            isinstance(v, (str, int, float)) and not isinstance(v, bool)
            for v in variables.values())):
        raise ApiError(400, "VALIDATION_ERROR", "Field content.variables must be an object "
                       "of strings or numbers.", {"field": "content.variables"})
    clean: dict = {}
    if template_id is not None:
        clean = {"template_id": template_id, "variables": dict(variables or {})}
    else:
        if not isinstance(text, str):
            raise ApiError(400, "VALIDATION_ERROR", "Field content.body must be a string.",
                           {"field": "content.body"})
        if channel in MAX_BODY and len(text) > MAX_BODY[channel]:
            raise ApiError(400, "VALIDATION_ERROR",
                           f"Field content.body is longer than {MAX_BODY[channel]} "
                           f"characters, the {channel} limit.",
                           {"field": "content.body", "max_length": MAX_BODY[channel]})
        clean = {"body": text}
        subject = _opt_str(content, "subject")
        if channel == "email":
            if not subject:
                raise ApiError(400, "VALIDATION_ERROR",
                               "Field content.subject is required for an email without a "
                               "template.", {"field": "content.subject"})
            clean["subject"] = subject
    sender = _opt_str(body, "from")
    if sender and channel == "email":
        _check_email(sender, "from")
    conversation_id = _opt_str(body, "conversation_id")
    return channel, to, clean, sender, _opt_dict(body, "metadata"), conversation_id
