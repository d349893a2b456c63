"""Templates (sandboxed Jinja2 mapping) and filter conditions."""
import pytest

from connector import conditions, templates
from connector.errors import FlowError

CTX = {"trigger": {"phone": "+15551234567", "amount": 500, "tags": ["vip", "lead"],
                   "nested": {"a": 1}, "empty": "", "status": "CALL_FINISHED"},
       "steps": {"contact": {"id": "abc123"}}}


def test_single_expression_keeps_its_type():
    out = templates.render({"n": "{{ trigger.amount }}", "d": "{{ trigger.nested }}",
                            "l": "{{ trigger.tags }}"}, CTX)
    assert out == {"n": 500, "d": {"a": 1}, "l": ["vip", "lead"]}


def test_mixed_text_renders_as_string_and_steps_are_reachable():
    out = templates.render({"s": "id={{ steps.contact.id }} to {{ trigger.phone }}"}, CTX)
    assert out == {"s": "id=abc123 to +15551234567"}


def test_literals_and_nested_structures_pass_through():
    value = {"a": 1, "b": [True, None, "{{ trigger.amount }}"], "c": {"d": "plain"}}
    assert templates.render(value, CTX) == {"a": 1, "b": [True, None, 500], "c": {"d": "plain"}}


def test_undefined_names_the_field():
    with pytest.raises(FlowError, match=r"call\.inputs\.to_number.*'nope'"):
        templates.render({"to_number": "{{ trigger.nope }}"}, CTX, "call.inputs")


def test_default_filter_covers_a_missing_field():
    assert templates.render("{{ trigger.nope | default('x') }}", CTX) == "x"


@pytest.mark.parametrize("evil", [
    "{{ trigger.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ trigger.tags.append('x') }}",
])
def test_sandbox_blocks_python_internals_and_mutation(evil):
    with pytest.raises(FlowError):
        templates.render({"x": evil}, CTX)
    assert CTX["trigger"]["tags"] == ["vip", "lead"]


def test_check_reports_syntax_errors_with_their_place():
    with pytest.raises(FlowError, match=r"steps\[0\]\.inputs\.x"):
        templates.check({"x": "{{ trigger.phone "}, "steps[0].inputs")
    templates.check({"x": "{{ trigger.phone }}"}, "steps[0].inputs")


@pytest.mark.parametrize("cond,expected", [
    ({"field": "trigger.amount", "op": "gt", "value": 100}, True),
    ({"field": "trigger.amount", "op": "lt", "value": 100}, False),
    ({"field": "trigger.amount", "op": "gte", "value": "500"}, True),
    ({"field": "trigger.amount", "op": "lte", "value": 499}, False),
    ({"field": "trigger.status", "op": "equals", "value": "CALL_FINISHED"}, True),
    ({"field": "trigger.status", "op": "not_equals", "value": "CALL_FINISHED"}, False),
    ({"field": "trigger.amount", "op": "equals", "value": "500"}, True),
    ({"field": "trigger.tags", "op": "contains", "value": "vip"}, True),
    ({"field": "trigger.phone", "op": "contains", "value": "555"}, True),
    ({"field": "trigger.phone", "op": "not_contains", "value": "555"}, False),
    ({"field": "trigger.phone", "op": "starts_with", "value": "+1"}, True),
    ({"field": "trigger.phone", "op": "ends_with", "value": "4567"}, True),
    ({"field": "trigger.phone", "op": "exists"}, True),
    ({"field": "trigger.missing", "op": "exists"}, False),
    ({"field": "trigger.missing", "op": "not_exists"}, True),
    ({"field": "trigger.empty", "op": "is_empty"}, True),
    ({"field": "trigger.missing", "op": "is_empty"}, True),
    ({"field": "trigger.phone", "op": "not_empty"}, True),
    ({"field": "trigger.phone", "op": "matches", "value": r"^\+1\d{10}$"}, True),
    ({"field": "trigger.status", "op": "in", "value": ["CALL_FINISHED", "X"]}, True),
    ({"field": "trigger.status", "op": "not_in", "value": ["CALL_FINISHED"]}, False),
    ({"field": "trigger.tags.0", "op": "equals", "value": "vip"}, True),
    ({"field": "trigger.status", "op": "gt", "value": 1}, False),  # not a number: no match
    ({"field": "{{ steps.contact.id }}", "op": "equals", "value": "abc123"}, True),
])
def test_operators(cond, expected):
    conditions.validate([cond])
    assert conditions.evaluate([cond], CTX) is expected


def test_all_and_any():
    yes = {"field": "trigger.amount", "op": "gt", "value": 1}
    no = {"field": "trigger.amount", "op": "gt", "value": 10_000}
    assert conditions.evaluate([yes, yes], CTX) is True
    assert conditions.evaluate({"all": [yes, no]}, CTX) is False
    assert conditions.evaluate({"any": [no, yes]}, CTX) is True
    assert conditions.evaluate({"any": [no]}, CTX) is False


@pytest.mark.parametrize("spec,where", [
    ("nope", "filter"),
    ([{"op": "equals", "value": 1}], r"filter\[0\]\.field"),
    ([{"field": "trigger.a", "op": "bigger", "value": 1}], r"filter\[0\]\.op"),
    ([{"field": "trigger.a", "op": "gt"}], r"filter\[0\]\.value"),
    ([{"field": "trigger.a", "op": "in", "value": "x"}], r"filter\[0\]\.value"),
    ([{"field": "trigger.a", "op": "matches", "value": "("}], r"filter\[0\]\.value"),
    ({"any": {"field": "x"}}, r"filter\.any"),
])
def test_invalid_filters_name_the_place(spec, where):
    with pytest.raises(FlowError, match=where):
        conditions.validate(spec)


def test_default_covers_a_missing_chain_but_a_bare_missing_chain_is_an_error():
    assert templates.render("{{ trigger.context.name | default('') }}", CTX) == ""
    assert templates.render("Hi {{ trigger.context.name | default('there') }}", CTX) == "Hi there"
    with pytest.raises(FlowError, match="'context'"):
        templates.render({"x": "{{ trigger.context.name }}"}, CTX)
    with pytest.raises(FlowError):
        templates.render({"x": "{% if trigger.context.name %}y{% endif %}"}, CTX)
