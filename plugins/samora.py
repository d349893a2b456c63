"""Samora AI (AI voice calls): the app, its auth and its credential test.

Every request carries the organization key in the X-API-Key header (seeds/001). Errors carry
no documented envelope, so the generic reader takes ``error.message``, ``detail`` or the text.
"""
from __future__ import annotations

import re

from marshmallow import Schema, ValidationError, fields, validate

from connector import App, hookimpl

E164 = re.compile(r"^\+\d{10,15}$")


def normalize_e164(value: str, field: str) -> str:
    """Return ``value`` without spaces, dashes, dots or brackets if it is E.164 as documented."""
    cleaned = re.sub(r"[\s\-().]", "", str(value or ""))
    if not E164.match(cleaned):
        raise ValidationError(
            f"expected an E.164 number, + then 10-15 digits with the country code "
            f"(e.g. +919876543210), got {value!r}", field)
    return cleaned


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
