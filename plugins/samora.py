"""Samora AI (AI voice calls): the app, its auth, its credential test and shared fields.

Every request carries the organization key in the X-API-Key header (seeds/001). Errors carry
no documented envelope, so the generic reader takes ``error.message``, ``detail`` or the text.
Decisions where the document is vague, kept in step with the sandbox
(connector/sandbox/samora.py):

- Phone numbers: the document's pattern (``+`` then 10-15 digits) is checked after spaces,
  dashes, dots and brackets are removed, and the number must also be a possible one for
  its country code (phonenumbers).
- Agents: the document lists no endpoint for agents, so ``agent_id`` is a free UUID field
  (Samora's agent id, from its dashboard), with no dropdown. Campaign ids come from the
  ``samora.find_campaigns`` search of the agent chosen.
- Answers: a JSON object, or one wrapped in ``data``; campaign ids read as ``id`` or
  ``campaign_id``; lists read ``data`` (or ``campaigns``, ``calls``, ``items``,
  ``results``) with ``page``, ``page_size``, ``total`` and ``has_more`` when present.
  Lists are asked for with ``page`` (from 1) and ``page_size`` (1-100).
- ``retry_config`` is checked before sending exactly as documented: when given it has all
  of ``max_retries`` (1-5), ``retry_delay_minutes`` (1-1440) and ``retry_on`` (a non-empty
  subset of UNANSWERED, REJECTED, VOICEMAIL, FAILED). PUT may replace or merge settings
  depending on the service, so the update action reads the campaign first and sends its
  full settings (``name`` and ``retry_config``, null to drop retries).
- Recipients (undocumented shape): POST .../scheduled-calls sends ``{"recipients":
  [{"phone_number": "+919876543210", "call_variables": {...}}]}``; ``call_variables`` is
  measured as compact UTF-8 JSON against the 4 KiB (4096 bytes) per-number limit.
- No request body may exceed 2 MiB as JSON: an action that would send more fails before
  sending, except add recipients, which splits into batches under both limits.
- Start, stop and cancel are POSTs without a body. A 409 answered for a campaign that is
  already in the wanted status (a retried start that had gone through) counts as done.
- Rate limit: the document states none, so the app sets no default (``rate_limit = None``);
  a connection may set one (``connections add --rate-limit``). No idempotency key is
  documented: calls and campaigns go through the host's ledger.
- Webhook payloads (undocumented): ``{"event", "call_id", "timestamp", "data": call}``,
  signed the Standard Webhooks way (``webhook-id``, ``webhook-timestamp``,
  ``webhook-signature``) with the ``whsec_`` secret returned when the webhook is created.
"""
from __future__ import annotations

import re
import uuid

from marshmallow import Schema, ValidationError, fields, validate

from connector import App, Phone, hookimpl
from connector.fields import to_e164

E164 = re.compile(r"^\+\d{10,15}$")
E164_HELP = "E.164 with country code, e.g. +919876543210."


def normalize_e164(value: str, field: str | None = None) -> str:
    """Return ``value`` as the E.164 number Samora accepts, or raise a ValidationError.

    Spaces, dashes, dots and brackets are dropped; the result must match the document's
    pattern (+ then 10-15 digits) and be a possible number for its country code.
    """
    cleaned = re.sub(r"[\s\-().]", "", str(value if value is not None else ""))

    def fail():
        return ValidationError(
            f"expected an E.164 number, + then 10-15 digits with the country code "
            f"(e.g. +919876543210), got {value!r}", *([field] if field else []))

    if not E164.match(cleaned):
        raise fail()
    number = to_e164(cleaned, None, fail)
    if not E164.match(number):
        raise fail()
    return number


class SamoraPhone(Phone):
    """A phone number as Samora takes it: E.164, + then 10 to 15 digits."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = fields.String._deserialize(self, value, attr, data, **kwargs)
        try:
            return normalize_e164(text)
        except ValidationError as err:
            raise ValidationError(err.messages) from None


class AgentId(fields.UUID):
    """A Samora agent id: a UUID, loaded as its lowercase string."""

    def _deserialize(self, value, attr, data, **kwargs):
        loaded = super()._deserialize(value, attr, data, **kwargs)
        return str(loaded) if isinstance(loaded, uuid.UUID) else loaded


class Credentials(Schema):
    api_key = fields.String(required=True, validate=validate.Length(min=1),
                            metadata={"label": "Organization API key", "secret": True,
                                      "help": "Sent in the X-API-Key header."})


class Samora(App):
    key = "samora"
    label = "Samora AI"
    help = "AI voice agents: trigger outbound calls, run campaigns, get call results."
    base_url = "https://api.samora.ai"
    docs_url = "https://api.samora.ai"
    Credentials = Credentials

    def authenticate(self, request, credentials):
        request.headers["X-API-Key"] = credentials["api_key"]

    def test(self, client):
        hooks = client.get("/v2/webhooks")
        data = hooks.get("data", hooks) if isinstance(hooks, dict) else hooks
        return {"ok": True, "webhooks": len(data) if isinstance(data, list) else None}


@hookimpl
def register_apps(register):
    register(Samora)
