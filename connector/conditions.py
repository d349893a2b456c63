"""Evaluate filter conditions (and, later, path branches) against a run's data.

A filter is a list of conditions that must all hold, or ``{"all": [...]}`` / ``{"any": [...]}``.
A condition is ``{"field": "trigger.amount", "op": "gt", "value": 100}``; ``field`` is a dotted
path into the run's data or a template string.
"""
from __future__ import annotations

import re
from typing import Any

from . import templates
from .errors import FlowError

_MISSING = object()


def _number(value):
    if isinstance(value, bool):
        raise ValueError
    return float(value)


def _compare(fn):
    def op(left, right):
        try:
            return fn(_number(left), _number(right))
        except (TypeError, ValueError):
            return False
    return op


def _empty(value) -> bool:
    return value is _MISSING or value is None or value == "" or value == [] or value == {}


OPS = {
    "equals": lambda a, b: a is not _MISSING and (a == b or str(a) == str(b)),
    "not_equals": lambda a, b: not (a is not _MISSING and (a == b or str(a) == str(b))),
    "contains": lambda a, b: a is not _MISSING and a is not None and (
        b in a if isinstance(a, (list, dict)) else str(b) in str(a)),
    "not_contains": lambda a, b: not OPS["contains"](a, b),
    "starts_with": lambda a, b: a is not _MISSING and str(a).startswith(str(b)),
    "ends_with": lambda a, b: a is not _MISSING and str(a).endswith(str(b)),
    "gt": _compare(lambda a, b: a > b),
    "gte": _compare(lambda a, b: a >= b),
    "lt": _compare(lambda a, b: a < b),
    "lte": _compare(lambda a, b: a <= b),
    "exists": lambda a, b: a is not _MISSING and a is not None,
    "not_exists": lambda a, b: a is _MISSING or a is None,
    "is_empty": lambda a, b: _empty(a),
    "not_empty": lambda a, b: not _empty(a),
    "matches": lambda a, b: a is not _MISSING and re.search(str(b), str(a)) is not None,
    "in": lambda a, b: a is not _MISSING and isinstance(b, list) and (
        a in b or str(a) in [str(x) for x in b]),
    "not_in": lambda a, b: not OPS["in"](a, b),
}
UNARY = {"exists", "not_exists", "is_empty", "not_empty"}


def validate(spec: Any, where: str = "filter") -> None:
    """Raise FlowError naming the place when ``spec`` is not a well-formed filter."""
    mode, conditions = _split(spec, where)
    for i, cond in enumerate(conditions):
        here = f"{where}.{mode}[{i}]" if mode else f"{where}[{i}]"
        if not isinstance(cond, dict):
            raise FlowError("expected a mapping with field, op and value", here)
        if not isinstance(cond.get("field"), str) or not cond["field"]:
            raise FlowError("expected a non-empty string (a path like trigger.amount)",
                            f"{here}.field")
        op = cond.get("op")
        if op not in OPS:
            raise FlowError(f"expected one of {', '.join(OPS)}; got {op!r}", f"{here}.op")
        if op not in UNARY and "value" not in cond:
            raise FlowError(f"operator {op} needs a value", f"{here}.value")
        if op in ("in", "not_in") and not isinstance(cond.get("value"), list):
            raise FlowError("expected a list", f"{here}.value")
        if op == "matches":
            try:
                re.compile(str(cond["value"]))
            except re.error as exc:
                raise FlowError(f"not a valid regular expression: {exc}", f"{here}.value")
        templates.check(cond["field"], f"{here}.field")


def evaluate(spec: Any, context: dict) -> bool:
    """Return whether the filter passes for ``context`` (trigger, steps)."""
    mode, conditions = _split(spec, "filter")
    results = (_holds(cond, context) for cond in conditions)
    return any(results) if mode == "any" else all(results)


def _split(spec: Any, where: str):
    if isinstance(spec, list):
        return None, spec
    if isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in ("all", "any"):
        mode = next(iter(spec))
        if not isinstance(spec[mode], list):
            raise FlowError("expected a list of conditions", f"{where}.{mode}")
        return mode, spec[mode]
    raise FlowError("expected a list of conditions, or a mapping with 'all' or 'any'", where)


def _holds(cond: dict, context: dict) -> bool:
    left = _resolve(cond["field"], context)
    right = cond.get("value")
    if isinstance(right, str) and "{" in right:
        right = templates.render(right, context, "filter.value")
    return bool(OPS[cond["op"]](left, right))


def _resolve(field: str, context: dict):
    if "{{" in field:
        try:
            return templates.render(field, context, "filter.field")
        except FlowError:
            return _MISSING
    value: Any = context
    for part in field.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value
