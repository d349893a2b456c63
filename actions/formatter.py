"""Formatter actions: reshape text, numbers, dates, phone numbers and lookups between steps.

One action per kind of data, each with an `operation` choice, as Zapier's Formatter and
n8n's core nodes do: a builder looks for "a date thing", not for one of thirty keys, and
every step's output has a `result` to map (`{{ steps.fmt.result }}`) plus extras.
Parsing CSV-like text into rows is its own action because its inputs and its output
(`rows`, `count`) have nothing in common with the text operations.

Fields that only some operations use are checked when the step runs ("find: required when
operation is replace"); literal values are still checked field by field when the flow is
saved (a bad regex, time zone or country code is refused then). Input that cannot be read
(a date in no known form, "12abc" as a number, a division by zero) fails the run with a
message naming the input and what it accepts. Everything is computed locally: no network,
no connection. Numbers are computed as decimals (0.1 + 0.2 is 0.3) and returned as JSON
numbers, with a `text` extra that keeps the exact digits. Dates are read from a fixed list
of common forms (English month names), listed under `formatter.date`; there is no guessing
beyond it.
"""
from __future__ import annotations

import calendar
import csv
import datetime as dt
import decimal
import email.utils
import io
import math
import re
import unicodedata
import zoneinfo
from decimal import Decimal

import phonenumbers
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from connector import Action, UserError, hookimpl

# -- shared fields --------------------------------------------------------------------------------


class Text(fields.String):
    """A string that also takes a number or boolean (a template can render either)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float, Decimal)):
            value = str(value)
        return super()._deserialize(value, attr, data, **kwargs)


class NumberOrText(fields.Raw):
    """A number, or text holding one ("1,234.50", "$12", "(5.00)"); read when the step runs."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValidationError("expected a number or text holding one")
        return value


class DateOrTimestamp(fields.Raw):
    """A date as text in one of the forms formatter.date lists, or a unix timestamp."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValidationError("expected a date as text, or a unix timestamp")
        return value


class StringList(fields.List):
    """A list of strings, or one string of comma-separated names."""

    def __init__(self, **kwargs):
        super().__init__(fields.String(), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",")]
        return super()._deserialize(value, attr, data, **kwargs)


class TimeZone(fields.String):
    """An IANA time zone name such as Europe/Paris or America/New_York; UTC is accepted."""

    def _deserialize(self, value, attr, data, **kwargs):
        name = super()._deserialize(value, attr, data, **kwargs).strip()
        if name.upper() in ("UTC", "Z", "GMT"):
            return "UTC"
        _zone(name, attr)
        return name


class CountryCode(fields.String):
    """An ISO 3166 alpha-2 country code (US, GB, IN), as phonenumbers knows them."""

    def _deserialize(self, value, attr, data, **kwargs):
        code = super()._deserialize(value, attr, data, **kwargs).strip().upper()
        if code not in phonenumbers.SUPPORTED_REGIONS:
            raise ValidationError(f"expected an ISO 3166 alpha-2 country code such as US, GB "
                                  f"or IN; got {value!r}")
        return code


def _zone(name: str, field: str) -> dt.tzinfo:
    if name.upper() in ("UTC", "Z", "GMT"):
        return dt.timezone.utc
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ValidationError(f"unknown time zone {name!r}; expected an IANA name such as "
                              "Europe/Paris, America/New_York or UTC", field) from None


def _require(data: dict, needs: dict[str, tuple[str, ...]]) -> None:
    """Raise naming the first field the chosen operation needs and did not get."""
    op = data.get("operation")
    for name in needs.get(op, ()):
        if data.get(name) is None:
            raise ValidationError(f"required when operation is {op}", name)


def _compile(pattern: str, ignore_case: bool, field: str) -> re.Pattern:
    try:
        return re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        raise ValidationError(f"not a valid regular expression: {exc}", field) from None


def _valid_regex(pattern: str) -> None:
    _compile(pattern, False, "pattern")


# -- text ------------------------------------------------------------------------------------------

TEXT_OPERATIONS = ["trim", "upper", "lower", "title", "capitalize", "replace", "split", "lines",
                   "extract", "truncate", "default"]
_ESCAPES = {"\\n": "\n", "\\t": "\t", "\\r": "\r"}
_WORD = re.compile(r"(?<![\w'’])[^\W\d_]+(?:['’][^\W\d_]+)*")


class TextInputs(Schema):
    operation = fields.String(required=True, validate=validate.OneOf(TEXT_OPERATIONS), metadata={
        "label": "Operation", "help": "What to do with the text; each field below names the "
                                      "operations that use it."})
    text = Text(required=True, allow_none=True, metadata={
        "label": "Text", "help": "The text to transform, usually mapped from an earlier step. "
                                 "Empty or null counts as empty text."})
    find = Text(load_default=None, validate=validate.Length(min=1), metadata={
        "label": "Find", "help": "replace: the text to find, or a regular expression when "
                                 "regex is on."})
    replace_with = Text(load_default="", metadata={
        "label": "Replace with", "help": "replace: the replacement (empty deletes); with regex, "
                                         "`\\1` or `\\g<name>` insert a captured group."})
    regex = fields.Boolean(load_default=False, metadata={
        "label": "Regular expression", "help": "replace: treat find as a Python regular "
                                               "expression."})
    ignore_case = fields.Boolean(load_default=False, metadata={
        "label": "Ignore case", "help": "replace and extract: match letters in any case."})
    separator = Text(load_default=",", validate=validate.Length(min=1), metadata={
        "label": "Separator", "help": "split: the text between parts (default a comma); "
                                      "`\\n`, `\\t` and `\\r` may be written as escapes."})
    index = fields.Integer(load_default=None, metadata={
        "label": "Pick part", "help": "split: return only this part (0 is the first, -1 the "
                                      "last); empty returns the whole list."})
    trim_parts = fields.Boolean(load_default=True, metadata={
        "label": "Trim parts", "help": "split: strip spaces around each part."})
    pattern = Text(load_default=None, validate=_valid_regex, metadata={
        "label": "Pattern", "help": "extract: a Python regular expression, e.g. "
                                    "`(?P<order>ORD-\\d+)`."})
    mode = fields.String(load_default="first", validate=validate.OneOf(["first", "all", "named"]),
                         metadata={"label": "Extract", "help": "extract: the first match, all "
                                   "matches, or the named groups of the first match."})
    group = Text(load_default="0", metadata={
        "label": "Group", "help": "extract (first, all): which group to return, by number or "
                                  "name; 0 is the whole match."})
    length = fields.Integer(load_default=None, validate=validate.Range(min=1), metadata={
        "label": "Maximum length", "help": "truncate: the longest result, in characters, "
                                           "suffix included."})
    suffix = Text(load_default="", metadata={
        "label": "Suffix", "help": "truncate: added when the text was cut, e.g. `…`"})
    default = fields.Raw(load_default=None, allow_none=True, metadata={
        "label": "Default", "help": "default: the value to return when the text is empty or "
                                    "only spaces."})

    @validates_schema
    def per_operation(self, data, **_):
        _require(data, {"replace": ("find",), "extract": ("pattern",), "truncate": ("length",),
                        "default": ("default",)})
        op = data["operation"]
        if op == "replace" and data["regex"]:
            _compile(data["find"], data["ignore_case"], "find")
        if op == "extract":
            rx = _compile(data["pattern"], data["ignore_case"], "pattern")
            if data["mode"] == "named" and not rx.groupindex:
                raise ValidationError("mode named needs a pattern with named groups, "
                                      "e.g. (?P<order>\\d+)", "pattern")
            group = _group(data["group"])
            if (group not in rx.groupindex) if isinstance(group, str) else group > rx.groups:
                raise ValidationError(f"the pattern has no group {data['group']!r}", "group")
        if op == "truncate" and len(data["suffix"]) >= data["length"]:
            raise ValidationError("must be shorter than length", "suffix")


def _group(value: str) -> int | str:
    value = value.strip()
    return int(value) if value.isdigit() else value


def _title(text: str) -> str:
    return _WORD.sub(lambda m: m.group(0)[:1].upper() + m.group(0)[1:].lower(), text)


def _unescape(separator: str) -> str:
    for escape, char in _ESCAPES.items():
        separator = separator.replace(escape, char)
    return separator


def transform_text(inputs: dict) -> dict:
    """Apply one text operation; see :class:`TextTransform` for each one's output."""
    op, text = inputs["operation"], inputs["text"] or ""
    if op == "trim":
        return {"result": text.strip()}
    if op == "upper":
        return {"result": text.upper()}
    if op == "lower":
        return {"result": text.lower()}
    if op == "title":
        return {"result": _title(text)}
    if op == "capitalize":
        return {"result": text[:1].upper() + text[1:].lower()}
    if op == "replace":
        if inputs["regex"]:
            rx = re.compile(inputs["find"], re.IGNORECASE if inputs["ignore_case"] else 0)
            try:
                result, count = rx.subn(inputs["replace_with"], text)
            except re.error as exc:
                raise UserError(f"replace_with: {exc}") from None
            return {"result": result, "count": count}
        if inputs["ignore_case"]:
            rx = re.compile(re.escape(inputs["find"]), re.IGNORECASE)
            result, count = rx.subn(lambda _m: inputs["replace_with"], text)
            return {"result": result, "count": count}
        return {"result": text.replace(inputs["find"], inputs["replace_with"]),
                "count": text.count(inputs["find"])}
    if op == "split":
        parts = text.split(_unescape(inputs["separator"])) if text else []
        if inputs["trim_parts"]:
            parts = [part.strip() for part in parts]
        index = inputs["index"]
        if index is None:
            return {"result": parts, "parts": parts, "count": len(parts)}
        picked = parts[index] if -len(parts) <= index < len(parts) else None
        return {"result": picked, "parts": parts, "count": len(parts)}
    if op == "lines":
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return {"result": lines, "count": len(lines)}
    if op == "extract":
        return _extract(inputs, text)
    if op == "truncate":
        length, suffix = inputs["length"], inputs["suffix"]
        if len(text) <= length:
            return {"result": text, "truncated": False}
        return {"result": text[:length - len(suffix)].rstrip() + suffix, "truncated": True}
    # default
    empty = not text.strip()
    return {"result": inputs["default"] if empty else text, "was_empty": empty}


def _extract(inputs: dict, text: str) -> dict:
    rx = re.compile(inputs["pattern"], re.IGNORECASE if inputs["ignore_case"] else 0)
    group = _group(inputs["group"])
    if inputs["mode"] == "all":
        matches = list(rx.finditer(text))
        return {"result": [m.group(group) for m in matches], "count": len(matches),
                "found": bool(matches), "named": [m.groupdict() for m in matches]}
    match = rx.search(text)
    if inputs["mode"] == "named":
        names = {name: None for name in rx.groupindex}
        return {"result": match.groupdict() if match else names, "found": match is not None}
    return {"result": match.group(group) if match else None, "found": match is not None,
            "named": match.groupdict() if match else {}}


class TextTransform(Action):
    """Operations and their output (`result` is always set):

    - `trim`: strip spaces and line breaks at both ends.
    - `upper`, `lower`: change the case of every letter.
    - `title`: capitalize every word ("jean-luc o'neil" gives "Jean-Luc O'neil").
    - `capitalize`: first letter upper case, the rest lower case.
    - `replace`: replace every occurrence of `find` (literal, or a regular expression with
      `regex`) with `replace_with`; `count` is how many were replaced.
    - `split`: split on `separator` into a list (`parts`, `count`); with `index`, `result` is
      that one part, or null when there are fewer parts.
    - `lines`: the non-blank lines, trimmed, as a list: the usual input of a for-each.
    - `extract`: search with the regular expression `pattern`. `first` gives the match (or
      `group`) and `named`, the named groups; `all` gives a list of matches and `count`;
      `named` gives the named groups of the first match as an object. `found` says whether
      anything matched; no match is not an error.
    - `truncate`: cut to `length` characters, ending in `suffix`; `truncated` says whether it
      was cut.
    - `default`: the text, or `default` when it is empty; `was_empty` says which.
    """

    key = "formatter.text"
    app = "formatter"
    label = "Text"
    help = ("Transform text: trim, change case, replace, split, extract with a regular "
            "expression, truncate, or fall back to a default.")
    needs_connection = False
    Inputs = TextInputs
    sample = {"result": "ORD-20417", "found": True, "named": {"order": "ORD-20417"}}

    def run(self, ctx, inputs):
        return transform_text(inputs)


# -- text to rows ----------------------------------------------------------------------------------

DELIMITERS = {"comma": ",", "semicolon": ";", "tab": "\t", "pipe": "|"}
#: ties between delimiters that split every sampled line alike go to the first listed
_SNIFF_ORDER = ["\t", ";", "|", ","]


class RowsInputs(Schema):
    text = Text(required=True, allow_none=True, metadata={
        "label": "Text", "help": "CSV-like text: one record per line, fields separated by a "
                                 "delimiter, \"double quotes\" around fields that contain it."})
    delimiter = fields.String(load_default="auto",
                              validate=validate.OneOf(["auto", *DELIMITERS]), metadata={
        "label": "Delimiter", "help": "auto picks the one (tab, semicolon, pipe, comma) that "
                                      "splits the first lines into the same number of fields."})
    has_header = fields.Boolean(load_default=True, metadata={
        "label": "First line is a header", "help": "The first line names the columns."})
    columns = StringList(load_default=None, metadata={
        "label": "Column names", "help": "Names for the columns, in order (a list, or one "
                                         "comma-separated string). They replace the header "
                                         "line if there is one; without either, columns are "
                                         "named column_1, column_2 and so on."})
    trim = fields.Boolean(load_default=True, metadata={
        "label": "Trim values", "help": "Strip spaces around every value."})


def _sniff(text: str) -> str:
    best, best_count = ",", 1
    for delimiter in _SNIFF_ORDER:
        reader = csv.reader(io.StringIO(text), delimiter=delimiter)
        counts = {len(row) for _, row in zip(range(10), (r for r in reader if any(r)))}
        if len(counts) == 1 and (count := counts.pop()) > best_count:
            best, best_count = delimiter, count
    return best


def text_to_rows(inputs: dict) -> dict:
    """Parse CSV-like text into a list of row objects keyed by column name."""
    text = (inputs["text"] or "").lstrip("\ufeff")
    clean = (lambda v: v.strip()) if inputs["trim"] else (lambda v: v)
    try:
        delimiter = (_sniff(text) if inputs["delimiter"] == "auto"
                     else DELIMITERS[inputs["delimiter"]])
        records = [(n, row) for n, row in _numbered(csv.reader(io.StringIO(text),
                                                               delimiter=delimiter))
                   if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        raise UserError(f"text: not readable as CSV: {exc}") from None
    columns = list(inputs["columns"] or [])
    if inputs["has_header"] and records:
        _, header = records.pop(0)
        columns = columns or [clean(name) for name in header]
    width = max([len(columns)] + [len(row) for _, row in records]) if not columns else len(columns)
    columns = [name or f"column_{i}" for i, name in enumerate(columns, 1)]
    columns += [f"column_{i}" for i in range(len(columns) + 1, width + 1)]
    dupes = sorted({name for name in columns if columns.count(name) > 1})
    if dupes:
        raise UserError(f"{'columns' if inputs['columns'] else 'text'}: column names must be "
                        f"unique; repeated: {', '.join(dupes)}")
    rows = []
    for line, row in records:
        if len(row) > len(columns):
            raise UserError(f"text: line {line} has {len(row)} fields but there are "
                            f"{len(columns)} columns; put double quotes around values that "
                            f"contain the delimiter {delimiter!r}")
        row = row + [""] * (len(columns) - len(row))
        rows.append({name: clean(value) for name, value in zip(columns, row)})
    name = next((k for k, v in DELIMITERS.items() if v == delimiter), delimiter)
    return {"rows": rows, "count": len(rows), "columns": columns, "delimiter": name}


def _numbered(reader):
    for row in reader:
        yield reader.line_num, row


class TextToRows(Action):
    """Each line after the header becomes an object keyed by column name, e.g.
    `{"email": "ann@client.example", "amount": "500"}`; values stay text (map them through
    `formatter.number` to compute). Blank lines are skipped; a line with fewer fields is
    padded with empty values, one with more fields than columns fails the run (usually an
    unquoted value containing the delimiter). Output: `rows`, `count`, `columns` and the
    `delimiter` used. Feed `rows` to a for-each to act once per line.
    """

    key = "formatter.text_to_rows"
    app = "formatter"
    label = "Text to rows (CSV)"
    help = "Parse CSV-like text (a header line or given column names) into a list of rows."
    needs_connection = False
    Inputs = RowsInputs
    sample = {"rows": [{"email": "ann@client.example", "amount": "500"},
                       {"email": "bo@client.example", "amount": "1,250.00"}],
              "count": 2, "columns": ["email", "amount"], "delimiter": "comma"}

    def run(self, ctx, inputs):
        return text_to_rows(inputs)


# -- numbers ---------------------------------------------------------------------------------------

ROUNDING = {"half_up": decimal.ROUND_HALF_UP, "half_down": decimal.ROUND_HALF_DOWN,
            "half_even": decimal.ROUND_HALF_EVEN, "ceil": decimal.ROUND_CEILING,
            "floor": decimal.ROUND_FLOOR, "truncate": decimal.ROUND_DOWN}
#: format styles, named by how they write 1234.56: (thousands separator, decimal separator)
STYLES = {"1,234.56": (",", "."), "1.234,56": (".", ","), "1 234,56": (" ", ","),
          "1'234.56": ("'", "."), "1234.56": ("", "."), "1234,56": ("", ",")}
_GROUPING = " \u00a0\u202f'’"
_CODE = re.compile(r"^[A-Z]{3}\s*|\s*[A-Z]{3}$")
_EXPONENT = re.compile(r"[eE][+-]?\d+$")
_TOO_LARGE = Decimal("1e300")


class NumberInputs(Schema):
    operation = fields.String(required=True, validate=validate.OneOf(
        ["parse", "round", "math", "format"]), metadata={
        "label": "Operation", "help": "What to do with the number; each field below names the "
                                      "operations that use it."})
    value = NumberOrText(load_default=None, metadata={
        "label": "Value", "help": "A number, or text holding one: \"1,234.50\", \"$12\", "
                                  "\"1.234,50 €\", \"(5.00)\" for a negative amount. "
                                  "Required except for math, where it is the first "
                                  "operand."})
    decimal_separator = fields.String(load_default=".", validate=validate.OneOf([".", ","]),
                                      metadata={
        "label": "Decimal separator in text", "help": "How text values write decimals: "
                                                      "\".\" (1,234.50) or \",\" (1.234,50)."})
    decimals = fields.Integer(load_default=None, validate=validate.Range(min=-10, max=20),
                              metadata={
        "label": "Decimal places", "help": "round: places to keep (default 0; negative rounds "
                                           "to tens, hundreds...). format: places to show "
                                           "(default as many as the number has)."})
    mode = fields.String(load_default="half_up", validate=validate.OneOf(list(ROUNDING)),
                         metadata={"label": "Rounding", "help": "round and format: half_up "
                                   "(2.5 to 3), half_down, half_even (banker's), ceil, floor, "
                                   "truncate (toward zero)."})
    operator = fields.String(load_default=None, validate=validate.OneOf(
        ["add", "subtract", "multiply", "divide", "min", "max"]), metadata={
        "label": "Math operation", "help": "math: applied left to right over value (if "
                                           "given) and the operands."})
    operands = fields.List(NumberOrText(), load_default=list, metadata={
        "label": "Operands", "help": "math: numbers or text holding numbers, e.g. "
                                     "`[\"{{ trigger.price }}\", 3]`."})
    style = fields.String(load_default="1,234.56", validate=validate.OneOf(list(STYLES)),
                          metadata={"label": "Style", "help": "format: the separators, shown "
                                    "on 1234.56."})
    prefix = Text(load_default="", metadata={
        "label": "Prefix", "help": "format: put before the number, e.g. $."})
    suffix = Text(load_default="", metadata={
        "label": "Suffix", "help": "format: put after the number, e.g. \" EUR\"."})

    @validates_schema
    def per_operation(self, data, **_):
        _require(data, {"parse": ("value",), "round": ("value",), "format": ("value",),
                        "math": ("operator",)})
        if data["operation"] == "math":
            count = len(data["operands"]) + (data["value"] is not None)
            need = 2 if data["operator"] in ("subtract", "divide") else 1
            if count < need:
                raise ValidationError(f"{data['operator']} needs at least {need} numbers "
                                      "(value and operands together)", "operands")


def parse_number(value, field: str, decimal_separator: str = ".") -> Decimal:
    """Read a number from a JSON number or from text; raise UserError naming ``field``."""
    if isinstance(value, bool):
        raise UserError(f"{field}: expected a number, got {value!r}")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UserError(f"{field}: expected a finite number, got {value!r}")
        return Decimal(repr(value))
    if not isinstance(value, str):
        raise UserError(f"{field}: expected a number or text holding one, "
                        f"got {type(value).__name__}")
    number = _read_number(value, decimal_separator)
    if number is None:
        other = "," if decimal_separator == "." else "."
        hint = (f"; set decimal_separator to {other!r}"
                if _read_number(value, other) is not None else "")
        raise UserError(f"{field}: {value!r} is not a number written with "
                        f"{decimal_separator!r} as the decimal separator{hint}")
    return _in_range(number, field)


def _in_range(number: Decimal, field: str) -> Decimal:
    if abs(number) >= _TOO_LARGE:
        raise UserError(f"{field}: the number is too large (at most 1e300)")
    return number


def _read_number(text: str, point: str) -> Decimal | None:
    text = "".join(c for c in text.strip() if unicodedata.category(c) != "Sc")
    text = _CODE.sub("", text.strip()).strip().replace("\u2212", "-").rstrip("%").strip()
    negative = text.startswith("(") and text.endswith(")")
    if negative:
        text = text[1:-1].strip()
    if text and text[0] in "+-":
        negative, text = negative ^ (text[0] == "-"), text[1:].strip()
    exponent = _EXPONENT.search(text)
    body = text[:exponent.start()] if exponent else text
    whole, _, fraction = body.partition(point)
    if not (whole or fraction) or point in fraction or (fraction and not fraction.isdigit()):
        return None
    grouping = set(_GROUPING + ("," if point == "." else "."))
    seps = {c for c in whole if c in grouping}
    if seps:
        groups = re.split("[" + re.escape("".join(seps)) + "]", whole)
        if (len(seps) > 1 or not all(g.isdigit() for g in groups) or len(groups[0]) > 3
                or len(groups[-1]) != 3 or any(len(g) not in (2, 3) for g in groups[1:])):
            return None
        whole = "".join(groups)
    elif whole and not whole.isdigit():
        return None
    number = Decimal((whole or "0") + ("." + fraction if fraction else "")
                     + (exponent.group(0) if exponent else ""))
    return -number if negative else number


def to_json_number(number: Decimal) -> int | float:
    """Return an int when the number is whole (and exact as a float), else a float."""
    if number == number.to_integral_value() and abs(number) < 2 ** 53:
        return int(number)
    return float(number)


def _plain(number: Decimal) -> str:
    text = format(number, "f")
    return text.lstrip("-") if number == 0 else text


def _round(number: Decimal, decimals: int, mode: str) -> Decimal:
    with decimal.localcontext(prec=80):
        return number.quantize(Decimal(1).scaleb(-decimals), rounding=ROUNDING[mode])


def format_number(number: Decimal, style: str, decimals: int | None, mode: str) -> str:
    """Write ``number`` with the separators of ``style``, rounded to ``decimals`` if given."""
    if decimals is not None:
        number = _round(number, decimals, mode)
        if decimals < 0:
            number = number.quantize(Decimal(1))
    thousands, point = STYLES[style]
    sign, text = ("-", _plain(-number)) if number < 0 else ("", _plain(number))
    whole, _, fraction = text.partition(".")
    groups = [whole[max(i - 3, 0):i] for i in range(len(whole), 0, -3)][::-1]
    return sign + thousands.join(groups) + (point + fraction if fraction else "")


def number_operation(inputs: dict) -> dict:
    """Apply one number operation; see :class:`NumberTransform` for each one's output."""
    op, sep = inputs["operation"], inputs["decimal_separator"]
    if op == "math":
        named = ([("value", inputs["value"])] if inputs["value"] is not None else []) + [
            (f"operands[{i}]", v) for i, v in enumerate(inputs["operands"])]
        numbers = [(name, parse_number(v, name, sep)) for name, v in named]
        result = _in_range(_math(inputs["operator"], numbers), "result")
        return {"result": to_json_number(result), "text": _plain(result)}
    number = parse_number(inputs["value"], "value", sep)
    if op == "parse":
        return {"result": to_json_number(number), "text": _plain(number)}
    if op == "round":
        rounded = _round(number, inputs["decimals"] or 0, inputs["mode"])
        return {"result": to_json_number(rounded), "text": _plain(rounded)}
    text = format_number(number, inputs["style"], inputs["decimals"], inputs["mode"])
    return {"result": f"{inputs['prefix']}{text}{inputs['suffix']}",
            "number": to_json_number(number)}


def _math(operator: str, numbers: list[tuple[str, Decimal]]) -> Decimal:
    values = [n for _, n in numbers]
    if operator == "min":
        return min(values)
    if operator == "max":
        return max(values)
    with decimal.localcontext(prec=34):
        result = values[0]
        for name, number in numbers[1:]:
            if operator == "add":
                result += number
            elif operator == "subtract":
                result -= number
            elif operator == "multiply":
                result *= number
            elif number == 0:
                raise UserError(f"{name}: cannot divide by zero")
            else:
                result /= number
        return result.normalize() if operator == "divide" else result


class NumberTransform(Action):
    """Operations and their output:

    - `parse`: read `value` as a number. Currency symbols and codes ($, €, USD), percent
      signs, spaces and thousands separators (including 1'234 and Indian 1,23,456) are
      dropped; "(12.50)" and "-12.50" are negative. `result` is the number, `text` its
      digits.
    - `round`: round to `decimals` places with `mode`; `text` keeps trailing zeros ("12.50").
    - `math`: `operator` over `value` (when given) and `operands`, left to right:
      add, subtract, multiply, divide, min, max. Dividing by zero fails the run naming the
      operand. `text` keeps the exact digits.
    - `format`: write `value` as text in `style`, with `decimals` places, between `prefix`
      and `suffix`: 1234.5 with style "1.234,56", 2 decimals and suffix " €" gives
      "1.234,50 €". `number` is the value as a number.
    """

    key = "formatter.number"
    app = "formatter"
    label = "Numbers"
    help = "Read a number from text, round it, do arithmetic, or format it for display."
    needs_connection = False
    Inputs = NumberInputs
    sample = {"result": 1234.5, "text": "1234.50"}

    def run(self, ctx, inputs):
        return number_operation(inputs)


# -- dates -----------------------------------------------------------------------------------------

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
        _require(data, {"add": ("amount",), "subtract": ("amount",),
                        "to_timezone": ("to_timezone",), "difference": ("other_date",)})


def parse_date(value, field: str, day_first: bool = False, zone: str = "UTC") -> dt.datetime:
    """Return an aware datetime read from ``value``; raise UserError naming ``field``."""
    default_tz = _zone(zone, "timezone")
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
            return _zone(text, field)
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
        value = value.astimezone(_zone(inputs["to_timezone"], "to_timezone"))
    return {"result": format_date(value, inputs["format"]), "iso": _iso(value),
            "date": value.date().isoformat(), "time": value.strftime("%H:%M:%S"),
            "timezone": _zone_name(value), "weekday": value.strftime("%A"),
            "timestamp": format_date(value, "unix")}


class DateTransform(Action):
    """Dates are read in these forms, and no others:

    - ISO 8601 with or without a time and offset: `2026-01-15`, `2026-01-15T10:30:00Z`,
      `2026-01-15T10:30:00.250+02:00`, `2026-01-15 10:30`, basic `20260115T103000Z`
      and `20260115`; also `2026/01/15`.
    - Numeric day and month: `15/01/2026` or `01/15/2026`, as `day_first` says (`-` and `.`
      work too). A date that is invalid the chosen way fails; it is never swapped.
    - English month names: `Jan 15, 2026`, `January 15 2026`, `15 January 2026`,
      `15-Jan-2026`, with or without a weekday; RFC 2822 `Thu, 15 Jan 2026 10:30:00 +0000`.
    - Unix timestamps, as a number or digits: seconds, or milliseconds from 100000000000 up.

    The text forms may end with a time (`10:30`, `10:30:15`, `10:30 PM`, `at 10:30`) and
    then an offset or zone (`Z`, `UTC`, `+0200`, `+02:00`, `GMT-3`, `Europe/Paris`). A date
    without one is in `timezone`; results keep the offset the date was read in.

    Operations (`result` is in `format`, except for difference):

    - `parse`, `format`: the date in `format`.
    - `add`, `subtract`: move by `amount` `unit`s. Minutes and hours are elapsed time; days
      and weeks keep the wall-clock time across a DST change; months and years clamp to the
      month's end (Jan 31 + 1 month is Feb 28 or 29).
    - `to_timezone`: the same instant in `to_timezone`.
    - `difference`: `other_date` minus `date` in `unit`: whole months or years (counted on
      the calendar), else a number that may be fractional. Extras: `seconds` (exact),
      `later` (whether other_date is after date).

    Extras for the other operations: `iso`, `date`, `time`, `timezone`, `weekday`,
    `timestamp` (unix seconds).
    """

    key = "formatter.date"
    app = "formatter"
    label = "Dates"
    help = ("Read a date in any common form, format it, add or subtract time, convert it to "
            "a time zone, or measure the time between two dates.")
    needs_connection = False
    Inputs = DateInputs
    sample = {"result": "2026-02-15T10:30:00+01:00", "iso": "2026-02-15T10:30:00+01:00",
              "date": "2026-02-15", "time": "10:30:00", "timezone": "Europe/Paris",
              "weekday": "Sunday", "timestamp": 1771147800}

    def run(self, ctx, inputs):
        return date_operation(inputs)


# -- phone numbers ---------------------------------------------------------------------------------

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


class PhoneFormat(Action):
    """Output: `result` and `e164` (+14155550132), `national` ((415) 555-0132),
    `international` (+1 415-555-0132), `country_code` (1), `region` (US), `valid`,
    `possible` (the right length), and `type`: mobile, fixed_line, fixed_line_or_mobile
    (where the numbering plan does not tell them apart, as in the US), toll_free,
    premium_rate, shared_cost, voip, personal_number, pager, uan, voicemail or unknown.
    A number written with + and its country code ignores `country`. An invalid number is
    returned with `valid` false unless `require_valid` is set; text that is no phone number
    at all fails the run.
    """

    key = "formatter.phone"
    app = "formatter"
    label = "Phone number"
    help = "Format a phone number as E.164 (+14155550132) from a national number and a country."
    needs_connection = False
    Inputs = PhoneInputs
    sample = {"result": "+14155550132", "e164": "+14155550132", "national": "(415) 555-0132",
              "international": "+1 415-555-0132", "country_code": 1, "region": "US",
              "valid": True, "possible": True, "type": "fixed_line_or_mobile"}

    def run(self, ctx, inputs):
        return phone_details(inputs["phone"], inputs["country"], inputs["require_valid"])


# -- lookup table ----------------------------------------------------------------------------------


class LookupInputs(Schema):
    key = Text(required=True, allow_none=True, metadata={
        "label": "Lookup key", "help": "The value to look up, e.g. `{{ trigger.plan }}`; spaces "
                                       "around it are ignored."})
    table = fields.Dict(required=True, metadata={
        "label": "Table", "help": "A mapping of keys to results, e.g. `{basic: 100, pro: 500}`."})
    default = fields.Raw(load_default=None, allow_none=True, metadata={
        "label": "Default", "help": "The result when the key is not in the table (default "
                                    "null)."})
    case_insensitive = fields.Boolean(load_default=False, metadata={
        "label": "Ignore case", "help": "Match keys whatever their letter case."})

    @validates_schema
    def distinct_keys(self, data, **_):
        if data["case_insensitive"]:
            folded = [str(k).strip().casefold() for k in data["table"]]
            clash = sorted({k for k in folded if folded.count(k) > 1})
            if clash:
                raise ValidationError(f"keys that differ only in case clash when ignoring "
                                      f"case: {', '.join(clash)}", "table")


def lookup(inputs: dict) -> dict:
    """Return the table's value for the key, or the default."""
    key = (inputs["key"] or "").strip()
    fold = (lambda s: s.casefold()) if inputs["case_insensitive"] else (lambda s: s)
    for table_key, value in inputs["table"].items():
        if fold(str(table_key).strip()) == fold(key):
            return {"result": value, "found": True, "key": str(table_key)}
    return {"result": inputs["default"], "found": False, "key": None}


class LookupTable(Action):
    """Output: `result` (the matched value, or `default`), `found`, and the table `key` that
    matched. Keys are compared as text, so a key of 1 in the table matches "1"; values may
    be anything (text, numbers, objects).
    """

    key = "formatter.lookup"
    app = "formatter"
    label = "Lookup table"
    help = "Turn one value into another with a table, e.g. a plan name into a credit amount."
    needs_connection = False
    Inputs = LookupInputs
    sample = {"result": 500, "found": True, "key": "pro"}

    def run(self, ctx, inputs):
        return lookup(inputs)


@hookimpl
def register_actions(register):
    for action in (TextTransform, TextToRows, NumberTransform, DateTransform, PhoneFormat,
                   LookupTable):
        register(action)
