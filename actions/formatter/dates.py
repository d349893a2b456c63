"""formatter.date: the inputs, reading dates in a fixed list of forms, and date arithmetic."""
from __future__ import annotations

import calendar
import datetime as dt
import email.utils
import re
import zoneinfo
from decimal import Decimal

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from connector import UserError

from .numbers import to_json_number
from .shared import Text, require_for_operation


class DateOrTimestamp(fields.Raw):
    """A date as text in one of the forms formatter.date lists, or a unix timestamp."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValidationError("expected a date as text, or a unix timestamp")
        return value


class TimeZone(fields.String):
    """An IANA time zone name such as Europe/Paris or America/New_York; UTC is accepted."""

    def _deserialize(self, value, attr, data, **kwargs):
        name = super()._deserialize(value, attr, data, **kwargs).strip()
        if name.upper() in ("UTC", "Z", "GMT"):
            return "UTC"
        tz_from_name(name, attr)
        return name


def tz_from_name(name: str, field: str) -> dt.tzinfo:
    """Return the tzinfo an IANA name (or UTC, Z, GMT) names; raise naming ``field``."""
    if name.upper() in ("UTC", "Z", "GMT"):
        return dt.timezone.utc
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ValidationError(f"unknown time zone {name!r}; expected an IANA name such as "
                              "Europe/Paris, America/New_York or UTC", field) from None


DATE_OPERATIONS = ["parse", "format", "add", "subtract", "to_timezone", "difference"]
UNITS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400, "weeks": 604800}
NAMED_FORMATS = ["iso", "date", "time", "datetime", "rfc2822", "unix", "unix_ms"]
ACCEPTED_DATES = ("ISO 8601 (2026-01-15, 2026-01-15T10:30:00+02:00, 20260115), "
                  "2026-01-15 10:30, 2026/01/15, 15/01/2026 or 01/15/2026 (see day_first; "
                  "also with - or .), Jan 15, 2026, 15 January 2026, RFC 2822 "
                  "(Thu, 15 Jan 2026 10:30:00 +0000), each optionally followed by a time "
                  "(10:30, 10:30:15, 10:30 PM) and an offset or zone (Z, +02:00, UTC, "
                  "Europe/Paris); or unix seconds or milliseconds")
_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_MONTH_ABBR = {name.lower(): i for i, name in enumerate(calendar.month_abbr) if name}
_WEEKDAY = re.compile(r"^(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*\.?,?\s+", re.I)
_DATE_FORMS = [re.compile(p, re.I) for p in (
    r"(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})",
    r"(?P<y>\d{4})/(?P<m>\d{1,2})/(?P<d>\d{1,2})",
    r"(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})(?=T|$)",
    r"(?P<a>\d{1,2})(?P<sep>[/.-])(?P<b>\d{1,2})(?P=sep)(?P<y>\d{4})",
    r"(?P<mon>[a-z]{3,9})\.?\s+(?P<d>\d{1,2})(?:st|nd|rd|th)?,?\s+(?P<y>\d{4})",
    r"(?P<d>\d{1,2})(?:st|nd|rd|th)?(?:\s+of)?[\s-]+(?P<mon>[a-z]{3,9})\.?,?[\s-]+(?P<y>\d{4})",
)]
_REST = re.compile(
    r"(?:(?P<sep>\s*,\s*|\s+at\s+|T|\s+)"
    r"(?P<H>\d{1,2})(?:(?P<colon>:?)(?P<M>\d{2})(?::?(?P<S>\d{2})(?:[.,](?P<f>\d{1,9}))?)?)?"
    r"\s*(?P<ampm>[ap]\.?m\.?)?"
    r"(?:\s*(?P<tz>Z|(?:UTC|GMT)?\s*[+-]\d{1,2}(?::?\d{2})?|UTC|GMT|[A-Za-z]+/[A-Za-z_/+-]+))?"
    r")?\s*", re.I)
_UNIX = re.compile(r"[+-]?\d+(?:\.\d+)?")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _valid_format(value: str) -> None:
    if value in NAMED_FORMATS or "%" in value:
        return
    raise ValidationError(f"expected one of {', '.join(NAMED_FORMATS)} or a strftime pattern "
                          f"containing %; got {value!r}")


class DateInputs(Schema):
    operation = fields.String(required=True, validate=validate.OneOf(DATE_OPERATIONS), metadata={
        "label": "Operation", "help": "What to do with the date; each field below names the "
                                      "operations that use it."})
    date = DateOrTimestamp(required=True, metadata={
        "label": "Date", "help": "A date in a common form (see above) or a unix timestamp."})
    day_first = fields.Boolean(load_default=False, metadata={
        "label": "Day first", "help": "Read 05/01/2026 as 5 January (day/month/year) instead "
                                      "of May 1 (month/day/year)."})
    timezone = TimeZone(load_default="UTC", metadata={
        "label": "Time zone of the input", "help": "IANA name (e.g. Europe/Paris) for dates "
                                                   "written without an offset; default UTC."})
    format = Text(load_default="iso", validate=_valid_format, metadata={
        "label": "Output format", "help": "iso, date, time, datetime, rfc2822, unix, unix_ms, or "
                                          "a strftime pattern such as `%d/%m/%Y %H:%M`."})
    amount = fields.Integer(load_default=None, metadata={
        "label": "Amount", "help": "add and subtract: how many units (may be negative)."})
    unit = fields.String(load_default="days", validate=validate.OneOf(
        [*UNITS, "months", "years"]), metadata={
        "label": "Unit", "help": "add, subtract: the unit of amount; difference: the unit of "
                                 "the result."})
    to_timezone = TimeZone(load_default=None, metadata={
        "label": "Convert to time zone", "help": "to_timezone: IANA name, e.g. "
                                                 "America/New_York."})
    other_date = DateOrTimestamp(load_default=None, metadata={
        "label": "Other date", "help": "difference: the result is other_date minus date "
                                       "(negative when it is earlier)."})

    @validates_schema
    def per_operation(self, data, **_):
        require_for_operation(data, {"add": ("amount",), "subtract": ("amount",),
                        "to_timezone": ("to_timezone",), "difference": ("other_date",)})


def parse_date(value, field: str, day_first: bool = False, zone: str = "UTC") -> dt.datetime:
    """Return an aware datetime read from ``value``; raise UserError naming ``field``."""
    default_tz = tz_from_name(zone, "timezone")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _from_unix(value, field, default_tz)
    text = " ".join(str(value).split())
    if _UNIX.fullmatch(text) and not re.fullmatch(r"\d{8}", text):
        return _from_unix(float(text) if "." in text else int(text), field, default_tz)
    text = _WEEKDAY.sub("", text)
    for form in _DATE_FORMS:
        match = form.match(text)
        rest = match and _REST.fullmatch(text, match.end())
        if rest:
            return _build(match, rest, value, field, day_first, default_tz)
    raise UserError(f"{field}: could not read {value!r} as a date; accepted forms: "
                    f"{ACCEPTED_DATES}")


def _from_unix(number, field: str, tz: dt.tzinfo) -> dt.datetime:
    unit = "milliseconds" if abs(number) >= 1e11 else "seconds"
    try:
        return (_EPOCH + dt.timedelta(**{unit: number})).astimezone(tz)
    except (OverflowError, ValueError):
        raise UserError(f"{field}: {number!r} is out of range for a unix timestamp") from None


def _build(match, rest, raw, field: str, day_first: bool, tz: dt.tzinfo) -> dt.datetime:
    parts = match.groupdict()
    if parts.get("mon"):
        name = parts["mon"].lower()
        month = _MONTHS.get(name) or _MONTH_ABBR.get(name) or (9 if name == "sept" else None)
        if month is None:
            raise UserError(f"{field}: {parts['mon']!r} in {raw!r} is not an English month "
                            f"name; accepted forms: {ACCEPTED_DATES}")
        parts["m"] = month
    if parts.get("a"):
        parts["d"], parts["m"] = (parts["a"], parts["b"]) if day_first else (parts["b"], parts["a"])
    hour = int(rest["H"] or 0)
    if rest["H"] and (not rest["M"] and not rest["ampm"] or rest["M"] and not rest["colon"]
                      and rest["sep"].upper() != "T"):
        raise UserError(f"{field}: could not read the time in {raw!r}; write it as 10:30, "
                        "10:30:15 or 10 PM")
    if rest["ampm"]:
        if not 1 <= hour <= 12:
            raise UserError(f"{field}: {raw!r} has hour {hour} with AM/PM")
        hour = hour % 12 + (12 if rest["ampm"].lower().startswith("p") else 0)
    try:
        value = dt.datetime(int(parts["y"]), int(parts["m"]), int(parts["d"]), hour,
                            int(rest["M"] or 0), int(rest["S"] or 0),
                            int((rest["f"] or "0").ljust(6, "0")[:6]))
    except ValueError as exc:
        hint = ""
        if parts.get("a"):
            hint = (f"; set day_first to {str(not day_first).lower()} to read it as "
                    f"{'day/month' if not day_first else 'month/day'}/year")
        raise UserError(f"{field}: {raw!r} is not a valid date ({exc}){hint}") from None
    offset = _offset(rest["tz"], raw, field) if rest["tz"] else tz
    return _normalize(value.replace(tzinfo=offset))


def _offset(text: str, raw, field: str) -> dt.tzinfo:
    text = text.strip()
    if "/" in text:
        try:
            return tz_from_name(text, field)
        except ValidationError:
            raise UserError(f"{field}: unknown time zone {text!r} in {raw!r}") from None
    sign_at = max(text.find("+"), text.find("-"))
    if sign_at < 0:
        return dt.timezone.utc
    digits = text[sign_at + 1:].replace(":", "").strip()
    hours, minutes = (digits[:-2], digits[-2:]) if len(digits) > 2 else (digits, "0")
    delta = dt.timedelta(hours=int(hours), minutes=int(minutes))
    if delta >= dt.timedelta(hours=24):
        raise UserError(f"{field}: the offset in {raw!r} is out of range")
    return dt.timezone(-delta if text[sign_at] == "-" else delta)


def _normalize(value: dt.datetime) -> dt.datetime:
    """Resolve wall-clock times that a DST change skips or repeats."""
    return value.astimezone(dt.timezone.utc).astimezone(value.tzinfo)


def _zone_name(value: dt.datetime) -> str:
    if isinstance(value.tzinfo, zoneinfo.ZoneInfo):
        return value.tzinfo.key
    offset = value.utcoffset()
    if not offset:
        return "UTC"
    minutes = int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _iso(value: dt.datetime) -> str:
    precision = ("seconds" if not value.microsecond else
                 "milliseconds" if not value.microsecond % 1000 else "microseconds")
    return value.isoformat(timespec=precision)


def format_date(value: dt.datetime, fmt: str):
    """Write ``value`` in a named format or a strftime pattern."""
    if fmt == "iso":
        return _iso(value)
    if fmt == "date":
        return value.date().isoformat()
    if fmt == "time":
        return value.strftime("%H:%M:%S")
    if fmt == "datetime":
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if fmt == "rfc2822":
        return email.utils.format_datetime(value)
    if fmt == "unix":
        return (value - _EPOCH) // dt.timedelta(seconds=1)
    if fmt == "unix_ms":
        return (value - _EPOCH) // dt.timedelta(milliseconds=1)
    try:
        return value.strftime(fmt)
    except ValueError as exc:
        raise UserError(f"format: {fmt!r} is not a usable strftime pattern: {exc}") from None


def _add(value: dt.datetime, amount: int, unit: str) -> dt.datetime:
    if unit in ("months", "years"):
        months = amount * (12 if unit == "years" else 1)
        year, month0 = divmod(value.month - 1 + months, 12)
        year += value.year
        if not 1 <= year <= 9999:
            raise OverflowError
        day = min(value.day, calendar.monthrange(year, month0 + 1)[1])
        return _normalize(value.replace(year=year, month=month0 + 1, day=day))
    delta = dt.timedelta(seconds=amount * UNITS[unit])
    if unit in ("days", "weeks"):  # calendar days: same wall-clock time across a DST change
        return _normalize(value + delta)
    return (value.astimezone(dt.timezone.utc) + delta).astimezone(value.tzinfo)


def _difference(start: dt.datetime, end: dt.datetime, unit: str) -> int | float:
    if unit in ("months", "years"):
        end = end.astimezone(start.tzinfo).replace(tzinfo=None)
        begin = start.replace(tzinfo=None)
        months = (end.year - begin.year) * 12 + end.month - begin.month
        if months > 0 and _add(start, months, "months").replace(tzinfo=None) > end:
            months -= 1
        elif months < 0 and _add(start, months, "months").replace(tzinfo=None) < end:
            months += 1
        return int(months / 12) if unit == "years" else months
    if unit in ("days", "weeks"):
        seconds = (end.astimezone(start.tzinfo).replace(tzinfo=None)
                   - start.replace(tzinfo=None)).total_seconds()
    else:
        seconds = _elapsed(start, end)
    result = round(seconds / UNITS[unit], 6)
    return int(result) if result == int(result) else result


def _elapsed(start: dt.datetime, end: dt.datetime) -> float:
    """Return real seconds between two instants (Python ignores the offsets in one zone)."""
    utc = dt.timezone.utc
    return (end.astimezone(utc) - start.astimezone(utc)).total_seconds()


def date_operation(inputs: dict) -> dict:
    """Apply one date operation; see :class:`DateTransform` for each one's output."""
    op = inputs["operation"]
    read = lambda name: parse_date(inputs[name], name, inputs["day_first"],  # noqa: E731
                                   inputs["timezone"])
    value = read("date")
    if op == "difference":
        other = read("other_date")
        result = _difference(value, other, inputs["unit"])
        seconds = _elapsed(value, other)
        return {"result": result, "unit": inputs["unit"],
                "seconds": to_json_number(Decimal(str(seconds))), "later": seconds > 0}
    if op in ("add", "subtract"):
        amount = inputs["amount"] * (-1 if op == "subtract" else 1)
        try:
            value = _add(value, amount, inputs["unit"])
        except (OverflowError, ValueError):
            raise UserError(f"amount: {inputs['amount']} {inputs['unit']} takes the date "
                            "outside years 1 to 9999") from None
    if op == "to_timezone":
        value = value.astimezone(tz_from_name(inputs["to_timezone"], "to_timezone"))
    return {"result": format_date(value, inputs["format"]), "iso": _iso(value),
            "date": value.date().isoformat(), "time": value.strftime("%H:%M:%S"),
            "timezone": _zone_name(value), "weekday": value.strftime("%A"),
            "timestamp": format_date(value, "unix")}
