"""Marshmallow fields plugins share: phone numbers normalised to E.164 with phonenumbers."""
from __future__ import annotations

import re

import phonenumbers
from marshmallow import ValidationError, fields
from phonenumbers import PhoneMetadata, PhoneNumber, ValidationResult

#: strict E.164 in ASCII digits: + then 8 to 15 digits, the first (the country code's) not 0
STRICT_E164 = re.compile(r"\+([1-9][0-9]{7,14})", re.ASCII)
_POSSIBLE = (ValidationResult.IS_POSSIBLE, ValidationResult.IS_POSSIBLE_LOCAL_ONLY)
#: lengths after a national prefix that make phonenumbers.parse strip the prefix
_STRIPPED = (ValidationResult.IS_POSSIBLE, ValidationResult.TOO_LONG)
_RULES: dict[str, tuple | None] = {}


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
    """Return ``text`` as E.164, or raise ``error()`` (a ValidationError by default).

    Text already in strict E.164 (``+`` then 8-15 ASCII digits, no spaces) takes a fast
    path that gives exactly what the slow one (``phonenumbers.parse``) gives: the same
    country-code and length rules, read once per country code from phonenumbers' own
    metadata, so nothing the slow path refuses gets through. Anything the fast path cannot
    settle (other text, a national prefix parse might strip) goes the slow way.
    """
    raw = str(text or "").strip()
    if raw.startswith("+") and fast_e164(raw):
        return raw
    fail = error or (lambda: ValidationError(
        f"expected a phone number with its country code, e.g. +15551234567; got {text!r}"))
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


def fast_e164(text: str) -> bool:
    """Return True when ``text`` is strict E.164 that phonenumbers takes unchanged as possible.

    False means "not settled here": the caller asks phonenumbers, which may still accept
    (or reformat) the number.
    """
    match = STRICT_E164.fullmatch(text)
    if match is None:
        return False
    digits = match.group(1)
    for size in (1, 2, 3):  # country codes are prefix-free, 1 to 3 digits
        code = digits[:size]
        rule = _RULES.get(code, False)
        if rule is False:
            rule = _RULES[code] = _rule(int(code))
        if rule is not None:
            break
    else:
        return False
    national = digits[size:]
    possible, prefix, transform, stripped = rule
    if len(national) not in possible:
        return False
    if prefix is None:
        return True
    found = prefix.match(national)
    if found is None or (found.end() == 0 and not transform):
        return True  # no national prefix for parse to strip
    return not transform and len(national) - found.end() not in stripped


def _rule(code: int) -> tuple | None:
    """Return (possible lengths, national prefix pattern, transform?, stripping lengths)."""
    if code not in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
        return None
    region = phonenumbers.region_code_for_country_code(code)
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, region)
    if metadata is None:
        return None

    def result(length):
        number = PhoneNumber(country_code=code, national_number=int("5" * length))
        return phonenumbers.is_possible_number_with_reason(number)

    lengths = range(1, 18)  # phonenumbers' national numbers are at most 17 digits
    possible = frozenset(n for n in lengths if result(n) in _POSSIBLE)
    stripped = frozenset(n for n in lengths if result(n) in _STRIPPED)
    pattern = metadata.national_prefix_for_parsing
    prefix = re.compile(pattern) if pattern else None
    return possible, prefix, bool(metadata.national_prefix_transform_rule), stripped
