"""Render step inputs from the trigger item and earlier steps' outputs, in Jinja2's sandbox.

A string that is exactly one ``{{ expression }}`` keeps the expression's type (a number stays
a number, a dict a dict); any other string renders as text. Undefined names are errors that
say which field they were in, not silent blanks; ``| default(...)`` covers an optional one,
even several levels deep (``trigger.context.name | default('')``).

Jinja2's ``ImmutableSandboxedEnvironment`` stops attribute walks to Python internals and
mutation of the data a template reads, but not resource exhaustion: ``'a' * 10**9`` allocates
a gigabyte and nested loops run for hours. :class:`BoundedEnvironment` adds limits, each
refusal a :class:`~jinja2.exceptions.SecurityError` that :func:`render` turns into a
FlowError naming the field:

- no value built by an operator (``*``, ``+``, ``**``, ``%``, ``~``), a call or a filter may
  hold more than :data:`MAX_SIZE` characters or items, nor an integer more than
  :data:`MAX_INT_BITS` bits; amplifying operations (``*``, ``str.ljust``, ``|indent``,
  ``|replace``, ``|join``, format widths, ...) are checked *before* they allocate;
- one render may build at most :data:`MAX_WORK` characters or items in all, run at most
  :data:`MAX_STEPS` loop iterations, calls and filters, and take at most
  :data:`MAX_SECONDS` seconds (checked at each of those steps);
- ``{% include %}``, ``{% import %}`` and ``{% extends %}`` are refused (there are no other
  templates to load), and a template cannot output a function, class or method: its text
  would reveal Python internals.
"""
from __future__ import annotations

import contextvars
import functools
import inspect
import re
import time
import types
from functools import wraps
from typing import Any

from jinja2 import ChainableUndefined, StrictUndefined, TemplateError, Undefined, nodes
from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.filters import make_attrgetter
from jinja2.runtime import markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.utils import Namespace, generate_lorem_ipsum, pass_context
from jinja2.visitor import NodeTransformer
from markupsafe import EscapeFormatter, Markup

from .errors import FlowError

#: the most characters (or list items) one value built by a template may hold
MAX_SIZE = 4 * 1024 * 1024
#: the most characters or items one render may build in all
MAX_WORK = 16 * 1024 * 1024
#: the most loop iterations, calls and filters one render may run
MAX_STEPS = 250_000
#: the longest one render may take, checked at every step
MAX_SECONDS = 5.0
#: the largest integer a template may compute, in bits
MAX_INT_BITS = 65_536

_SINGLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*$", re.S)
_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")
_SPEC = re.compile(r"^(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[,_]?(?:\.(\d+))?[a-zA-Z%]?$", re.S)
_SEQUENCES = (str, bytes, bytearray, list, tuple)


# -- the budget of one render -----------------------------------------------------------------

class _Budget:
    def __init__(self):
        self.steps, self.work = MAX_STEPS, MAX_WORK
        self.deadline = time.monotonic() + MAX_SECONDS

    def step(self) -> None:
        self.steps -= 1
        if self.steps < 0:
            raise SecurityError(f"template refused: it runs more than {MAX_STEPS} loop "
                                "iterations, calls and filters")
        self.tick()

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise SecurityError(f"template refused: it runs longer than {MAX_SECONDS:g} s")

    def spend(self, size: int) -> None:
        self.work -= size
        if self.work < 0:
            raise SecurityError(f"template refused: it builds more than {MAX_WORK} "
                                "characters or items in all")


_current: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "connector_template_budget", default=None)


def _budget() -> _Budget:
    # Outside render() (the environment used directly) each operation gets its own budget:
    # the size limits still hold.
    return _current.get() or _Budget()


def _too_big(size: int) -> SecurityError:
    return SecurityError(f"template refused: it would build a value of {size} characters or "
                         f"items (the limit is {MAX_SIZE})")


def _limit(size: int) -> None:
    if size > MAX_SIZE:
        raise _too_big(size)


def _is_code(value) -> bool:
    """A function, class, method, loop or other template machinery: its text shows Python
    internals (names, addresses)."""
    if isinstance(value, (Undefined, Markup)):
        return False
    return callable(value) or type(value).__module__.startswith("jinja2.")


def _measure(value, output: bool = False, indent: int = 0) -> int:
    """Count the characters and items in ``value``, walking containers; stop past MAX_SIZE.

    ``output``: the value is about to become text, so code objects are refused.
    ``indent``: add that many characters per nesting level per item (pretty-printing).
    """
    total, stack, checkpoint = 0, [(value, 0)], 65_536
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        total += 1 + indent * depth
        if kind is str or kind is bytes:
            total += len(item)
        elif kind is int:
            total += item.bit_length() // 3
        elif kind is float or kind is bool or item is None:
            pass
        elif kind is list or kind is tuple or kind is dict:
            total += len(item)
            if total <= MAX_SIZE:
                children = (v for pair in item.items() for v in pair) if kind is dict else item
                stack.extend((v, depth + 1) for v in children)
        else:
            total += _measure_other(item, depth, stack, output)
        if total > checkpoint:  # a walk of millions of items takes time: keep to the deadline
            checkpoint = total + 65_536
            _budget().tick()
        if total > MAX_SIZE:
            return total
    return total


def _measure_other(item, depth: int, stack: list, output: bool) -> int:
    if output and isinstance(item, Undefined):
        str(item)  # inside a list or dict too: raises, naming what is missing or unsafe
    if output and _is_code(item):
        raise SecurityError("template refused: a template cannot output a function, "
                            "class, method or template object")
    if isinstance(item, (str, bytes, bytearray)):
        return len(item)
    if isinstance(item, int) and not isinstance(item, bool):
        return item.bit_length() // 3
    if isinstance(item, dict):
        stack.extend((v, depth + 1) for pair in item.items() for v in pair)
        return len(item)
    if isinstance(item, (list, tuple, set, frozenset)):
        stack.extend((v, depth + 1) for v in item)
        return len(item)
    if isinstance(item, Namespace):
        stack.append((object.__getattribute__(item, "_Namespace__attrs"), depth))
    return 0


def _produced(value, output: bool = False):
    """Check a value a template built against MAX_SIZE, charge it to the budget, return it."""
    size = _measure(value, output)
    _limit(size)
    _budget().spend(size)
    return value


# -- estimates for operations that can amplify their input ------------------------------------

def _length(value) -> int:
    return len(value) if isinstance(value, _SEQUENCES) else _measure(value)


def _replaced(s, old, new, count=None) -> int:
    if not isinstance(s, (str, bytes)) or not isinstance(old, (str, bytes)) or not isinstance(
            new, (str, bytes)):
        return _length(s)
    found = s.count(old) if old else len(s) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(s) + found * max(len(new) - len(old), 0)


def _joined(sep, parts: list) -> int:
    return sum(_measure(p, output=True) for p in parts) + _length(sep) * max(len(parts) - 1, 0)


def _percent(fmt, args) -> int:
    """The most characters ``fmt % args`` can produce, refusing '*' widths."""
    if not isinstance(fmt, (str, bytes)):
        return 0
    text = fmt if isinstance(fmt, str) else fmt.decode("latin-1")
    size = len(text) + _measure(args, output=True)
    for width, precision in _PERCENT.findall(text):
        if "*" in (width, precision):
            raise SecurityError("template refused: a '*' width in % formatting")
        size += int(width or 0) + int(precision or 0)
    return size


def _check_spec(spec: str) -> None:
    match = _SPEC.match(spec or "")
    if match:
        _limit(int(match.group(1) or 0) + int(match.group(2) or 0))


def _check_method(obj, args: tuple, kwargs: dict) -> tuple:
    """Check a call of a str, bytes or int method that can build a large value before it
    runs; return the arguments to call it with (an iterable given to join, materialized)."""
    owner, name = getattr(obj, "__self__", None), getattr(obj, "__name__", "")
    if isinstance(owner, (str, bytes, bytearray)):
        if name in ("ljust", "rjust", "center", "zfill") and args and isinstance(args[0], int):
            _limit(args[0])
        elif name == "expandtabs":
            size = args[0] if args else kwargs.get("tabsize", 8)
            tab = "\t" if isinstance(owner, str) else b"\t"
            if isinstance(size, int):
                _limit(len(owner) + owner.count(tab) * max(size, 0))
        elif name == "replace" and len(args) >= 2:
            _limit(_replaced(owner, args[0], args[1], args[2] if len(args) > 2 else
                             kwargs.get("count")))
        elif name == "join" and args:
            parts = list(args[0])
            _limit(_joined(owner, parts))
            args = (parts, *args[1:])
        elif name == "translate" and args and isinstance(args[0], dict):
            longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
            _limit(len(owner) * max(longest, 1))
    elif isinstance(owner, int) and name == "to_bytes":
        length = args[0] if args else kwargs.get("length", 1)
        if isinstance(length, int):
            _limit(length)
    elif obj is generate_lorem_ipsum:
        bound = inspect.signature(obj).bind(*args, **kwargs)
        bound.apply_defaults()
        n, most = bound.arguments["n"], bound.arguments["max"]
        if isinstance(n, int) and isinstance(most, int):
            _limit(max(n, 0) * max(most, 0) * 16)
    return args


# -- filters: the amplifying ones are estimated first, every result is measured ---------------

def _f_center(a):
    return max(_length(a["value"]), a["width"] if isinstance(a["width"], int) else 0)


def _f_indent(a):
    s, width = a["s"], a["width"]
    text = s if isinstance(s, str) else ""
    w = len(width) if isinstance(width, str) else (width if isinstance(width, int) else 0)
    return _length(s) + (text.count("\n") + 1) * max(w, 0)


def _f_wordwrap(a):
    s, width = a["s"], a["width"]
    n = _length(s)
    lines = n // max(width if isinstance(width, int) else 1, 1) + (
        s.count("\n") if isinstance(s, str) else 0) + 1
    return n + lines * len(a["wrapstring"] or "\n")


def _f_replace(a):
    return _replaced(a["s"], a["old"], a["new"], a["count"])


def _f_format(a):
    return _percent(a["value"], a["kwargs"] or a["args"])


def _f_batch(a):
    return a["linecount"] if a["fill_with"] is not None and isinstance(
        a["linecount"], int) else 0


def _f_slice(a):
    return a["slices"] if isinstance(a["slices"], int) else 0


def _f_tojson(a):
    indent = a["indent"]
    width = len(indent) if isinstance(indent, str) else (indent or 0)
    return _measure(a["value"], output=True, indent=max(width, 0) + 2)


def _f_pprint(a):
    return _measure(a["value"], output=True, indent=2)


def _f_urlize(a):
    extra = sum(_length(x) for x in (a["target"], a["rel"], a["extra_schemes"]) if x)
    return _length(a["value"]) * 3 + extra * (_length(a["value"]) // 4 + 1)


_ESTIMATES = {"center": _f_center, "indent": _f_indent, "wordwrap": _f_wordwrap,
              "replace": _f_replace, "format": _f_format, "batch": _f_batch,
              "slice": _f_slice, "tojson": _f_tojson, "pprint": _f_pprint,
              "urlize": _f_urlize}
#: filters that turn their value into text: a function or class must not become text
_TEXT_FILTERS = {"string", "e", "escape", "forceescape", "safe", "pprint", "upper", "lower",
                 "title", "capitalize", "trim", "center", "indent", "wordwrap", "truncate",
                 "urlize", "urlencode", "striptags", "replace", "format"}


def _bounded_filter(name: str, func):
    estimate = _ESTIMATES.get(name)
    signature = inspect.signature(func) if estimate else None
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0
    # Jinja2's async-capable filters take an eval context their own signature does not name.
    hidden = skip and signature is not None and next(iter(signature.parameters)) not in (
        "eval_ctx", "environment", "context")

    @wraps(func)
    def bounded(*args, **kwargs):
        _budget().step()
        if name in _TEXT_FILTERS and len(args) > skip:
            _measure(args[skip], output=True)
        if estimate:
            bound = signature.bind(*(args[1:] if hidden else args), **kwargs)
            bound.apply_defaults()
            _limit(estimate(bound.arguments))
        return _produced(func(*args, **kwargs))

    return bounded


def _bounded_join(func):
    @wraps(func)
    def join(eval_ctx, value, d="", attribute=None):
        _budget().step()
        items = list(value)
        if attribute is not None:
            getter = make_attrgetter(eval_ctx.environment, attribute)
            _limit(_joined(d, [getter(item) for item in items]))
        else:
            _limit(_joined(d, items))
        return _produced(func(eval_ctx, items, d, attribute))

    return join


def _bounded_sum(func):
    @wraps(func)
    def total(environment, iterable, attribute=None, start=0):
        _budget().step()
        items = list(iterable)
        if attribute is not None:
            items = list(map(make_attrgetter(environment, attribute), items))
        if isinstance(start, (list, tuple)):
            # Python's sum() copies the whole list at every step: quadratic. Extend instead.
            _limit(len(start) + sum(_length(item) for item in items))
            out = list(start)
            for item in items:
                if not isinstance(item, (list, tuple)):
                    raise TypeError(f"can only add lists or tuples to a list, not "
                                    f"{type(item).__name__}")
                out.extend(item)
            return _produced(out if isinstance(start, list) else tuple(out))
        return _produced(func(environment, items, None, start))

    return total


@pass_context
def _loop_budget(_context, iterable):
    """Wraps every for loop's iterable (see _Guard): each iteration is a step."""
    budget = _budget()
    for item in iterable:
        budget.step()
        yield item


@pass_context
def _concat(context, parts):
    """``a ~ b``: measured before the text is built."""
    _limit(sum(_measure(p, output=True) for p in parts))
    return _produced((markup_join if context.eval_ctx.autoescape else str_join)(parts))


# -- compile: reroute loops and ~ through the checks; no other templates ---------------------

_FORBIDDEN = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)


def _refuse_loading(tree: nodes.Node) -> None:
    for node in tree.find_all(_FORBIDDEN):
        tag = {"Include": "include", "Import": "import", "FromImport": "from ... import",
               "Extends": "extends"}[type(node).__name__]
        raise TemplateSyntaxError(f"{{% {tag} %}} is not available: a flow's template cannot "
                                  "load other templates", node.lineno)


def _filter(node: nodes.Expr, name: str) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


class _Guard(NodeTransformer):
    def visit_For(self, node: nodes.For) -> nodes.For:
        node = self.generic_visit(node)
        node.iter = _filter(node.iter, "_loop_budget")
        return node

    def visit_Call(self, node: nodes.Call) -> nodes.Call:
        node = self.generic_visit(node)
        # loop(children) in a recursive for loop iterates again: count those steps too
        if isinstance(node.node, nodes.Name) and node.node.name == "loop" and node.args:
            node.args[0] = _filter(node.args[0], "_loop_budget")
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Filter:
        node = self.generic_visit(node)
        return _filter(nodes.List(list(node.nodes), lineno=node.lineno), "_concat")


class _Generator(CodeGenerator):
    def visit_Template(self, node: nodes.Template, frame=None) -> None:
        _refuse_loading(node)
        node = _Guard().visit(node)
        node.set_environment(self.environment)
        super().visit_Template(node, frame)


class _BoundedFormatter(SandboxedFormatter):
    """``'{}'.format(...)``: widths are checked and each field is measured."""

    def convert_field(self, value, conversion):
        _measure(value, output=True)
        return super().convert_field(value, conversion)

    def format_field(self, value, format_spec):
        _budget().step()
        _measure(value, output=True)
        _check_spec(format_spec)
        return _produced(super().format_field(value, format_spec))


class _BoundedEscapeFormatter(_BoundedFormatter, EscapeFormatter):
    pass


def _finalize(value):
    """Every ``{{ }}`` in text passes here before it becomes text."""
    return value if isinstance(value, Undefined) else _produced(value, output=True)


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox plus the size, step and time limits above."""

    code_generator_class = _Generator
    intercepted_binops = frozenset({"*", "+", "**", "%"})

    def __init__(self, **kwargs):
        super().__init__(finalize=_finalize, **kwargs)
        self.filters = {name: _bounded_filter(name, func) for name, func in self.filters.items()}
        self.filters["join"] = _bounded_join(self.filters["join"].__wrapped__)
        self.filters["sum"] = _bounded_sum(self.filters["sum"].__wrapped__)
        self.filters["_loop_budget"] = _loop_budget
        self.filters["_concat"] = _concat

    def _parse(self, source, name, filename):
        tree = super()._parse(source, name, filename)
        _refuse_loading(tree)
        return tree

    def call_binop(self, context, operator, left, right):
        _budget().step()
        if operator in ("*", "+"):
            _check_arithmetic(operator, left, right)
        elif operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and abs(left) > 1 and abs(left).bit_length() * right > MAX_INT_BITS:
                raise SecurityError(f"template refused: the result has more than "
                                    f"{MAX_INT_BITS} bits")
        elif operator == "%" and isinstance(left, (str, bytes)):
            _limit(_percent(left, right))
        return _produced(super().call_binop(context, operator, left, right))

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (as Jinja2 spells it)
        _budget().step()
        args = _check_method(__obj, args, kwargs)
        return _produced(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value):
        """Jinja2's own wrapper for ``str.format``/``format_map``, with a bounded formatter."""
        if not isinstance(value, (types.MethodType, types.BuiltinMethodType)) or (
                value.__name__ not in ("format", "format_map")):
            return None
        owner = value.__self__
        if not isinstance(owner, str):
            return None
        formatter = (_BoundedEscapeFormatter(self, escape=owner.escape)
                     if isinstance(owner, Markup) else _BoundedFormatter(self))
        is_map, str_type = value.__name__ == "format_map", type(owner)

        def wrapper(*args, **kwargs):
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one positional argument")
                args, kwargs = (), args[0]
            return str_type(formatter.vformat(owner, args, kwargs))

        return wraps(value)(wrapper)


def _check_arithmetic(operator: str, left, right) -> None:
    ints = [v for v in (left, right) if isinstance(v, int) and not isinstance(v, bool)]
    seqs = [v for v in (left, right) if isinstance(v, _SEQUENCES)]
    if operator == "*" and len(seqs) == 1 and len(ints) == 1:
        _limit(len(seqs[0]) * max(ints[0], 0))
    elif operator == "*" and len(ints) == 2:
        if left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise SecurityError(f"template refused: the result has more than {MAX_INT_BITS} bits")
    elif operator == "+" and len(seqs) == 2:
        _limit(len(left) + len(right))


class _Missing(ChainableUndefined, StrictUndefined):
    """A missing value: ``a.b.c | default(x)`` works on an absent ``a``, but rendering or
    testing a missing value is an error naming it, never a silent blank."""


_ENV = BoundedEnvironment(undefined=_Missing, autoescape=False)


# -- the API ------------------------------------------------------------------------------------

def check(value: Any, where: str) -> None:
    """Raise FlowError naming ``where`` if any template inside ``value`` does not parse."""
    for path, text in _strings(value, where):
        try:
            _ENV.parse(text)
        except TemplateError as exc:
            raise FlowError(f"template does not parse: {exc}", path) from None
        except (RecursionError, MemoryError):
            raise FlowError("template does not parse: it is nested too deeply", path) from None


def render(value: Any, context: dict, where: str = "inputs") -> Any:
    """Return ``value`` with every template string rendered against ``context``.

    One call is one budget (MAX_WORK, MAX_STEPS, MAX_SECONDS) for all the strings inside.
    Any error a template raises, refusals included, is a FlowError naming the field.
    """
    if _current.get() is not None:
        return _render(value, context, where)
    token = _current.set(_Budget())
    try:
        return _render(value, context, where)
    finally:
        _current.reset(token)


def _render(value: Any, context: dict, where: str) -> Any:
    if isinstance(value, dict):
        return {k: _render(v, context, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, context, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "{" not in value:
        return value
    try:
        match = _SINGLE.match(value)
        if match:
            result = _expression(match.group("expr"))(**context)
            if isinstance(result, Undefined):
                str(result)  # StrictUndefined raises, naming the missing attribute
            return _produced(result, output=True)
        return _produced(_template(value).render(**context), output=True)
    except TemplateError as exc:
        raise FlowError(f"template error: {exc}", where) from None
    except (ArithmeticError, LookupError, TypeError, ValueError, RecursionError,
            MemoryError) as exc:
        # A template's own mistake (1/0, 'a' + 1, a range too big, endless recursion):
        # a user error, never a crash of the step.
        raise FlowError(f"template error: {type(exc).__name__}: {exc}", where) from None


# A flow renders the same few templates for every run: compile each once. The budget is
# checked while rendering, not compiling, so a cached template is held to it every time.
@functools.lru_cache(maxsize=2048)
def _expression(source: str):
    return _ENV.compile_expression(source, undefined_to_none=False)


@functools.lru_cache(maxsize=2048)
def _template(source: str):
    return _ENV.from_string(source)


def _strings(value: Any, where: str):
    """Yield (place, text) for every template string inside ``value``, in order.

    Iterative, so a deep structure cannot overflow the stack; a structure that contains
    itself (a YAML alias inside its own value) is a FlowError naming the place.
    """
    stack = [(value, where, ())]
    while stack:
        item, path, parents = stack.pop()
        if isinstance(item, (dict, list)):
            if id(item) in parents:
                raise FlowError("refers to itself (a YAML alias used inside its own value)",
                                path)
            inner = (*parents, id(item))
            children = ([(v, f"{path}.{k}") for k, v in item.items()] if isinstance(item, dict)
                        else [(v, f"{path}[{i}]") for i, v in enumerate(item)])
            stack.extend((v, p, inner) for v, p in reversed(children))
        elif isinstance(item, str) and "{" in item:
            yield path, item
