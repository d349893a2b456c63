"""Render step inputs from the trigger item and earlier steps' outputs, in Jinja2's sandbox.

A string that is exactly one ``{{ expression }}`` keeps the expression's type (a number stays
a number, a dict a dict); any other string renders as text. Undefined names are errors that
say which field they were in, not silent blanks; ``| default(...)`` covers an optional one,
even several levels deep (``trigger.context.name | default('')``).
"""
from __future__ import annotations

import re
from typing import Any

from jinja2 import ChainableUndefined, StrictUndefined, TemplateError, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import FlowError


class _Missing(ChainableUndefined, StrictUndefined):
    """A missing value: ``a.b.c | default(x)`` works on an absent ``a``, but rendering or
    testing a missing value is an error naming it, never a silent blank."""


_ENV = ImmutableSandboxedEnvironment(undefined=_Missing, autoescape=False)
_SINGLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*$", re.S)


def check(value: Any, where: str) -> None:
    """Raise FlowError naming ``where`` if any template inside ``value`` does not parse."""
    for path, text in _strings(value, where):
        try:
            _ENV.parse(text)
        except TemplateError as exc:
            raise FlowError(f"template does not parse: {exc}", path) from None


def render(value: Any, context: dict, where: str = "inputs") -> Any:
    """Return ``value`` with every template string rendered against ``context``."""
    if isinstance(value, dict):
        return {k: render(v, context, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "{" not in value:
        return value
    try:
        match = _SINGLE.match(value)
        if match:
            result = _ENV.compile_expression(match.group("expr"), undefined_to_none=False)(
                **context)
            if isinstance(result, Undefined):
                str(result)  # StrictUndefined raises, naming the missing attribute
            return result
        return _ENV.from_string(value).render(**context)
    except TemplateError as exc:
        raise FlowError(f"template error: {exc}", where) from None


def _strings(value: Any, where: str):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{where}[{i}]")
    elif isinstance(value, str) and "{" in value:
        yield where, value
