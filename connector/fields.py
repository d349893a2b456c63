"""Marshmallow fields plugins share: phone numbers normalised to E.164 with phonenumbers."""
from __future__ import annotations

import phonenumbers
from marshmallow import ValidationError, fields


class Phone(fields.String):
    """A phone number, loaded as E.164 (``+15551234567``).

    Spaces, dashes and brackets are accepted; a number without ``+`` and country code is
    read in ``default_region`` (an ISO country code such as "US" or "IN") when one is given,
    and refused otherwise. ``max_digits`` narrows what a service accepts (Samora: 15).
    """

    default_error_messages = {
        "phone": "expected a phone number with its country code, e.g. +15551234567; got {input!r}",
    }

    def __init__(self, *, default_region: str | None = None, **kwargs):
        self.default_region = default_region
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        return to_e164(text, self.default_region, lambda: self.make_error("phone", input=text))


def to_e164(text: str, default_region: str | None = None, error=None) -> str:
    """Return ``text`` as E.164, or raise ``error()`` (a ValidationError by default)."""
    fail = error or (lambda: ValidationError(
        f"expected a phone number with its country code, e.g. +15551234567; got {text!r}"))
    raw = str(text or "").strip()
    region = None if raw.startswith("+") else default_region
    if not raw or (region is None and not raw.startswith("+")):
        raise fail()
    try:
        parsed = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        raise fail() from None
    if not phonenumbers.is_possible_number(parsed):
        raise fail()
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
