"""formatter.text: the inputs and the operations on text (case, replace, split, extract...)."""
from __future__ import annotations

import re

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from connector import UserError

from .shared import Text, require_for_operation


def _compile(pattern: str, ignore_case: bool, field: str) -> re.Pattern:
    try:
        return re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        raise ValidationError(f"not a valid regular expression: {exc}", field) from None


def _valid_regex(pattern: str) -> None:
    _compile(pattern, False, "pattern")


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
        require_for_operation(data, {"replace": ("find",), "extract": ("pattern",), "truncate": ("length",),
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
