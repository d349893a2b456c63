"""Find contacts: the OR-of-AND filter model, the plain list and the advanced search."""
from __future__ import annotations

from datetime import date, datetime

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from connector import InputSchema, Search
from connector.plugins.contacts_api import API, items_of

from .contacts import CreateContact
from .shared import limit_field, offset_field

TEXT_COLUMNS = ("name", "email", "phone", "company", "source", "notes")
FIELDS = (*TEXT_COLUMNS, "tags", "dnc", "created_at")
TEXT_OPS = ("eq", "neq", "contains", "not_contains", "starts_with", "ends_with", "in",
            "not_in", "exists", "not_exists")
OPERATORS = (*TEXT_OPS, "gt", "gte", "lt", "lte")
OPS_BY_FIELD = {**{f: TEXT_OPS for f in TEXT_COLUMNS},
                "tags": ("contains", "not_contains", "in", "not_in", "exists", "not_exists"),
                "dnc": ("eq", "neq"), "created_at": ("gt", "gte", "lt", "lte")}
FIELD_PATTERN = r"^(%s|custom\.[A-Za-z0-9_]{1,64})$" % "|".join(FIELDS)
MAX_GROUPS = MAX_CONDITIONS = 20
MAX_IN_VALUES = 100


class Condition(Schema):
    field = fields.String(required=True, validate=validate.Regexp(
        FIELD_PATTERN, error="unknown field; use one of " + ", ".join(FIELDS)
        + " or custom.<key>"), metadata={
        "label": "Field", "help": "A contact column (" + ", ".join(FIELDS)
        + ") or custom.<key>."})
    op = fields.String(required=True, validate=validate.OneOf(OPERATORS), metadata={
        "label": "Operator", "help": ", ".join(OPERATORS) + "."})
    value = fields.Raw(load_default=None, allow_none=True, metadata={
        "label": "Value", "help": "Text, number or boolean; a list for in/not_in; "
                                  "nothing for exists/not_exists."})

    @validates_schema
    def operator_fits_field(self, data, **_):
        field, op, value = data["field"], data["op"], data.get("value")
        custom = field.startswith("custom.")
        allowed = OPERATORS if custom else OPS_BY_FIELD[field]
        if op not in allowed:
            raise ValidationError(f"operator {op} does not apply to {field}; use one of "
                                  f"{', '.join(allowed)}", "op")
        if op in ("exists", "not_exists"):
            return
        kind = "custom" if custom else ("text" if field in TEXT_COLUMNS else field)
        if op in ("in", "not_in"):
            if not isinstance(value, list) or not 1 <= len(value) <= MAX_IN_VALUES:
                raise ValidationError(f"{op} takes a list of 1 to {MAX_IN_VALUES} values",
                                      "value")
            for item in value:
                _check_value(kind, "eq", item)
            return
        _check_value(kind, op, value)


def _check_value(kind: str, op: str, value) -> None:
    def fail(message):
        raise ValidationError(message, "value")

    if kind == "dnc":
        if not isinstance(value, bool):
            fail("dnc compares with true or false")
    elif kind == "created_at":
        text = value.strip() if isinstance(value, str) else ""
        try:
            (date.fromisoformat if len(text) == 10 else
             lambda t: datetime.fromisoformat(t.replace("Z", "+00:00")))(text)
        except ValueError:
            fail("created_at compares with an ISO 8601 date or datetime, e.g. 2026-01-15")
    elif kind in ("text", "tags") or op in ("contains", "not_contains", "starts_with",
                                            "ends_with"):
        if not isinstance(value, str) or (kind == "tags" and not value.strip()):
            fail(f"{op} takes a text value")
    elif op in ("gt", "gte", "lt", "lte"):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            fail(f"{op} takes a number or a text value")
    elif not isinstance(value, (str, int, float, bool)):
        fail(f"{op} takes a text, number or boolean value")


class Group(Schema):
    conditions = fields.List(fields.Nested(Condition), required=True,
                             validate=validate.Length(min=1, max=MAX_CONDITIONS), metadata={
                                 "label": "Conditions", "help": "All must hold (AND)."})


class Query(Schema):
    groups = fields.List(fields.Nested(Group), load_default=list,
                         validate=validate.Length(max=MAX_GROUPS), metadata={
                             "label": "Groups", "help": "A contact matches when any group "
                                                        "matches (OR)."})


QUERY_HELP = ('OR-of-AND filter: {"groups": [{"conditions": [{"field": "tags", "op": '
              '"contains", "value": "vip"}]}]}; OR across groups, AND within a group.')


def query_body(query: dict | None) -> dict:
    return {"groups": [{"conditions": [{"field": c["field"], "op": c["op"],
                                        **({"value": c["value"]} if c.get("value") is not None
                                           else {})}
                                       for c in g["conditions"]]}
                       for g in (query or {}).get("groups", [])]}


class ListContactsInputs(InputSchema):
    q = fields.String(load_default=None, metadata={
        "label": "Search text", "help": "Matches name, email, phone or company."})
    tag = fields.String(load_default=None, metadata={
        "label": "Tag", "help": "Only contacts with this tag.",
        "choices_from": "contacts_api.list_tags"})
    limit = limit_field()
    offset = offset_field()


class ListContacts(Search):
    """GET /api/v1/contacts with q, tag, limit and offset; a read."""

    key = "contacts_api.list_contacts"
    app = "contacts_api"
    label = "Find contacts"
    help = "List contacts, newest first, optionally matching a text or carrying a tag."
    Inputs = ListContactsInputs
    sample = {"found": True, "count": 1, "first": CreateContact.sample,
              "results": [CreateContact.sample]}

    def search(self, ctx, inputs):
        params = {k: inputs[k] for k in ("q", "tag") if inputs.get(k)}
        params.update(limit=inputs["limit"], offset=inputs["offset"])
        return items_of(ctx.client.get(f"{API}/contacts", params=params))


class SearchContactsInputs(InputSchema):
    query = fields.Nested(Query, load_default=None, metadata={
        "label": "Filter", "help": QUERY_HELP})
    q = fields.String(load_default=None, metadata={
        "label": "Search text", "help": "Free text, combined with the filter (AND)."})
    limit = limit_field()
    offset = offset_field()


class SearchContacts(Search):
    """POST /api/v1/contacts/search with {"query": {"groups": [...]}, "q", "limit",
    "offset"}; a read (POST only to carry the filter). The filter is validated here, and the
    service answers 422 naming the group and condition it refuses."""

    key = "contacts_api.search_contacts"
    app = "contacts_api"
    label = "Search contacts (advanced)"
    help = "Find contacts with a smart-list filter: any group of all-true conditions."
    Inputs = SearchContactsInputs
    sample = ListContacts.sample

    def search(self, ctx, inputs):
        body = {"query": query_body(inputs.get("query")), "limit": inputs["limit"],
                "offset": inputs["offset"]}
        if inputs.get("q"):
            body["q"] = inputs["q"]
        return items_of(ctx.client.post(f"{API}/contacts/search", json=body,
                                        idempotent=True))  # a read sent as POST
