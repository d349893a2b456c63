"""formatter.number: the inputs, reading numbers from text, rounding, arithmetic, formatting."""
from __future__ import annotations

import decimal
import math
import re
import unicodedata
from decimal import Decimal

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from connector import UserError

from .shared import Text, require_for_operation


class NumberOrText(fields.Raw):
    """A number, or text holding one ("1,234.50", "$12", "(5.00)"); read when the step runs."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValidationError("expected a number or text holding one")
        return value


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
        require_for_operation(data, {"parse": ("value",), "round": ("value",), "format": ("value",),
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
