"""formatter.phone: the inputs and the reading of a phone number into E.164 and its facts."""
from __future__ import annotations

import re

import phonenumbers
from marshmallow import Schema, ValidationError, fields, validate

from connector import UserError

from .shared import Text


class CountryCode(fields.String):
    """An ISO 3166 alpha-2 country code (US, GB, IN), as phonenumbers knows them."""

    def _deserialize(self, value, attr, data, **kwargs):
        code = super()._deserialize(value, attr, data, **kwargs).strip().upper()
        if code not in phonenumbers.SUPPORTED_REGIONS:
            raise ValidationError(f"expected an ISO 3166 alpha-2 country code such as US, GB "
                                  f"or IN; got {value!r}")
        return code


_FORMATS = phonenumbers.PhoneNumberFormat


class PhoneInputs(Schema):
    phone = Text(required=True, validate=validate.Length(min=1), metadata={
        "label": "Phone number", "help": "With +country code, or national (e.g. (415) 555-0132) "
                                         "with a country below. Spaces, dashes and brackets "
                                         "are fine."})
    country = CountryCode(load_default=None, metadata={
        "label": "Default country", "help": "ISO 3166 alpha-2 code (US, GB, IN) for numbers "
                                            "written without +country code."})
    require_valid = fields.Boolean(load_default=False, metadata={
        "label": "Require a valid number", "help": "Fail the run when the number is not a "
                                                   "valid one (otherwise valid is false)."})


def phone_details(text: str, country: str | None, require_valid: bool = False) -> dict:
    """Parse a phone number into E.164 and its other formats and facts."""
    raw = text.strip()
    if not raw.startswith("+") and country is None:
        raise UserError(f"phone: {text!r} has no +country code; give it with one (e.g. "
                        "+14155550132) or set country")
    try:
        number = phonenumbers.parse(raw, country)
    except phonenumbers.NumberParseException as exc:
        reason = re.sub(r"^\(\d+\)\s*", "", str(exc)).rstrip(".")
        raise UserError(f"phone: could not read {text!r} as a phone number: {reason}") from None
    valid = phonenumbers.is_valid_number(number)
    if require_valid and not valid:
        where = f" in {country}" if country and not raw.startswith("+") else ""
        raise UserError(f"phone: {text!r} is not a valid phone number{where}")
    kind_name = phonenumbers.PhoneNumberType.to_string(phonenumbers.number_type(number))
    e164 = phonenumbers.format_number(number, _FORMATS.E164)
    return {"result": e164, "e164": e164,
            "national": phonenumbers.format_number(number, _FORMATS.NATIONAL),
            "international": phonenumbers.format_number(number, _FORMATS.INTERNATIONAL),
            "country_code": number.country_code,
            "region": phonenumbers.region_code_for_number(number),
            "valid": valid, "possible": phonenumbers.is_possible_number(number),
            "type": kind_name.lower()}
