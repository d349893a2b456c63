"""Contacts API actions and searches: contacts, import, search, views, tags, custom data.

Every path is under /api/v1 (see plugins/contacts_api.py for the decisions on shapes and
limits where the document is vague). How each step stays safe to retry:

- create contact and each import batch: the service takes no idempotency key, so the call
  goes through the host's ledger (``ctx.once``); import batches use
  ``<idempotency key>:batch<i>``, so a retry after batch 3 failed re-sends only batches 3+.
- create tag / create custom field: a 409 (it exists) returns the existing record with
  ``created: false``, so a retry after a lost answer ends in the same state.
- update (PATCH), set values (PUT), add tags (a set union), remove a tag, save/delete a view
  (read, merge, put the whole list): naturally idempotent.
- deletes: a 404 means the goal already holds; with ``missing_ok`` (the default) the step
  succeeds with ``deleted: false``, so a retry after a lost 204 does not fail the run.

Fields left empty in a step (an unmapped template renders "") are not sent: an update
changes only what it is given, and ``clear`` names the fields to empty.
"""
from __future__ import annotations

import json
import re
from datetime import date, datetime

from marshmallow import (
    Schema, ValidationError, fields, post_load, validate, validates_schema,
)

from connector import (
    Action, FatalAPIError, InputSchema, Phone, Search, UserError, hookimpl,
)
from connector.plugins.contacts_api import API, items_of, seg

MAX_LIMIT = 200
IMPORT_BATCH = 500            # rows per POST /contacts/import
IMPORT_BATCH_BYTES = 1_500_000  # and well under the 2 MiB body limit
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
CLEARABLE = ("name", "email", "phone", "company", "source", "notes", "tags", "assigned_to")
FIELD_TYPES = ("text", "number", "date", "boolean", "select", "multi_select")


def _tag_list(value):
    """Accept "a, b" as well as ["a", "b"] for a tags input."""
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    return value


class TagList(fields.List):
    """A list of tag names that also takes comma-separated text ("lead, vip")."""

    def __init__(self, **kwargs):
        super().__init__(fields.String(validate=validate.Length(min=1, max=100)), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        return super()._deserialize(_tag_list(value), attr, data, **kwargs)


def _missing(exc: FatalAPIError, missing_ok: bool) -> bool:
    return missing_ok and exc.status == 404


def _missing_ok():
    return fields.Boolean(load_default=True, metadata={
        "label": "Succeed if already gone",
        "help": "False fails the step when there is nothing to delete."})


def _limit():
    return fields.Integer(load_default=50, validate=validate.Range(min=1, max=MAX_LIMIT),
                          metadata={"label": "How many", "help": "1 to 200, newest first."})


def _offset():
    return fields.Integer(load_default=0, validate=validate.Range(min=0), metadata={
        "label": "Skip", "help": "Skip this many (to page)."})


# The OR-of-AND filter model ---------------------------------------------------------------


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


def _query(query: dict | None) -> dict:
    return {"groups": [{"conditions": [{"field": c["field"], "op": c["op"],
                                        **({"value": c["value"]} if c.get("value") is not None
                                           else {})}
                                       for c in g["conditions"]]}
                       for g in (query or {}).get("groups", [])]}


# Contacts -----------------------------------------------------------------------------------


class ContactFields(InputSchema):
    name = fields.String(validate=validate.Length(max=200), metadata={"label": "Name"})
    email = fields.Email(metadata={"label": "Email"})
    phone = Phone(metadata={"label": "Phone", "help": "With country code, e.g. +15551234567."})
    company = fields.String(metadata={"label": "Company"})
    source = fields.String(metadata={"label": "Source",
                                     "help": "Where the contact came from, e.g. web, import."})
    notes = fields.String(metadata={"label": "Notes"})
    tags = TagList(metadata={
        "label": "Tags", "help": "Tag names (a list, or comma-separated text).",
        "choices_from": "contacts_api.list_tags"})
    dnc = fields.Boolean(metadata={"label": "Do not contact",
                                   "help": "True to mark the contact do-not-contact."})
    custom = fields.Dict(keys=fields.String(), metadata={
        "label": "Custom fields", "help": "Values by custom-field key, e.g. {budget: 5000}."})
    assigned_to = fields.String(metadata={
        "label": "Assigned to", "help": "A member id of the organisation."})


def _contact_body(inputs: dict) -> dict:
    return {k: inputs[k] for k in ContactFields().fields if k in inputs}


class CreateContactInputs(ContactFields):
    @validates_schema
    def identity(self, data, **_):
        if not any(data.get(f) for f in ("name", "email", "phone")):
            raise ValidationError("give at least one of name, email or phone", "name")


class CreateContact(Action):
    """POST /api/v1/contacts (201); guarded by the host's ledger (ctx.once) because the
    service takes no idempotency key: a retried step never creates a second contact."""

    key = "contacts_api.create_contact"
    app = "contacts_api"
    label = "Create contact"
    help = "Add a new contact to the CRM."
    Inputs = CreateContactInputs
    sample = {"id": "5b0c1f9e-8d3c-4bb7-9a57-0c0d0e4b1a11", "name": "Jane Smith",
              "email": "jane@example.com", "phone": "+15551234567", "company": "Acme",
              "source": "web", "notes": None, "tags": ["lead"], "dnc": False,
              "custom": {"budget": 5000}, "assigned_to": None,
              "created_at": "2026-01-15T10:30:00.000000Z",
              "updated_at": "2026-01-15T10:30:00.000000Z"}

    def run(self, ctx, inputs):
        body = _contact_body(inputs)
        return ctx.once(ctx.idempotency_key, body,
                        lambda: ctx.client.post(f"{API}/contacts", json=body))


class ContactIdInputs(Schema):
    contact_id = fields.String(required=True, validate=validate.Length(min=1), metadata={
        "label": "Contact id", "help": "Usually mapped from a trigger or an earlier step."})


class GetContact(Action):
    """GET /api/v1/contacts/{contact_id}; a read, safe to repeat."""

    key = "contacts_api.get_contact"
    app = "contacts_api"
    label = "Get contact"
    help = "Fetch one contact with all its fields."
    Inputs = ContactIdInputs
    sample = CreateContact.sample

    def run(self, ctx, inputs):
        return ctx.client.get(f"{API}/contacts/{seg(inputs['contact_id'])}")


class UpdateContactInputs(ContactFields, ContactIdInputs):
    clear = fields.List(fields.String(validate=validate.OneOf(CLEARABLE)), load_default=list,
                        metadata={"label": "Fields to empty",
                                  "help": "Empty these fields (tags: remove every tag)."})

    @validates_schema
    def not_both(self, data, **_):
        both = sorted(set(data.get("clear") or []) & set(data))
        if both:
            raise ValidationError(f"{', '.join(both)}: give a value or clear it, not both",
                                  "clear")


class UpdateContact(Action):
    """PATCH /api/v1/contacts/{contact_id} with only the fields given; setting fields is
    naturally idempotent. Tags given here replace the contact's tags."""

    key = "contacts_api.update_contact"
    app = "contacts_api"
    label = "Update contact"
    help = "Change some fields of a contact; fields left empty stay as they are."
    Inputs = UpdateContactInputs
    sample = CreateContact.sample

    def run(self, ctx, inputs):
        body = _contact_body(inputs)
        for name in inputs.get("clear") or []:
            body[name] = [] if name == "tags" else None
        path = f"{API}/contacts/{seg(inputs['contact_id'])}"
        if not body:
            return ctx.client.get(path)  # nothing to change: show the contact as it is
        return ctx.client.patch(path, json=body, idempotent=True)  # sets the same fields


class DeleteInputs(ContactIdInputs):
    missing_ok = _missing_ok()


class DeleteContact(Action):
    """DELETE /api/v1/contacts/{contact_id} (204); a 404 counts as done (missing_ok)."""

    key = "contacts_api.delete_contact"
    app = "contacts_api"
    label = "Delete contact"
    help = "Delete a contact and its opportunities."
    Inputs = DeleteInputs
    sample = {"id": "5b0c1f9e-8d3c-4bb7-9a57-0c0d0e4b1a11", "deleted": True}

    def run(self, ctx, inputs):
        try:
            ctx.client.delete(f"{API}/contacts/{seg(inputs['contact_id'])}", expect_json=False)
        except FatalAPIError as exc:
            if not _missing(exc, inputs["missing_ok"]):
                raise
            return {"id": inputs["contact_id"], "deleted": False}
        return {"id": inputs["contact_id"], "deleted": True}


class ListContactsInputs(InputSchema):
    q = fields.String(load_default=None, metadata={
        "label": "Search text", "help": "Matches name, email, phone or company."})
    tag = fields.String(load_default=None, metadata={
        "label": "Tag", "help": "Only contacts with this tag.",
        "choices_from": "contacts_api.list_tags"})
    limit = _limit()
    offset = _offset()


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
    limit = _limit()
    offset = _offset()


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
        body = {"query": _query(inputs.get("query")), "limit": inputs["limit"],
                "offset": inputs["offset"]}
        if inputs.get("q"):
            body["q"] = inputs["q"]
        return items_of(ctx.client.post(f"{API}/contacts/search", json=body,
                                        idempotent=True))  # a read sent as POST


class Rows(fields.List):
    """A list of objects with text keys; checked in one pass when every row is well formed.

    Only a list holding something else goes through marshmallow's per-row fields, for the
    same error messages; 100,000 good rows load in milliseconds instead of seconds.
    """

    def __init__(self, **kwargs):
        super().__init__(fields.Dict(keys=fields.String()), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if type(value) is list and all(type(row) is dict and all(type(k) is str for k in row)
                                       for row in value):
            return [dict(row) for row in value]
        return super()._deserialize(value, attr, data, **kwargs)


class ImportInputs(Schema):
    contacts = Rows(required=True,
                           validate=validate.Length(min=1, max=100_000), metadata={
                               "label": "Contacts", "help": "A list of contacts (name, email, "
                               "phone, company, source, notes, tags, dnc, custom)."})
    match_by = fields.String(load_default="email", validate=validate.OneOf(
        ["email", "phone", "none"]), metadata={
        "label": "Match existing by", "help": "How a row finds a contact that already exists."})
    on_match = fields.String(load_default="update", validate=validate.OneOf(["update", "skip"]),
                             metadata={"label": "When it exists",
                                       "help": "update it (tags are added), or skip the row."})
    batch_size = fields.Integer(load_default=IMPORT_BATCH,
                                validate=validate.Range(min=1, max=IMPORT_BATCH), metadata={
                                    "label": "Rows per request", "help": "At most 500."})


def batches(rows: list, size: int, max_bytes: int = IMPORT_BATCH_BYTES) -> list[list]:
    """Split ``rows`` into runs of at most ``size`` rows and about ``max_bytes`` of JSON.

    Each run is the longest that fits, as adding one row at a time would make it (a row
    counts its compact JSON plus one byte). A run of ``size`` rows is measured with one
    encoding; only where that is too big are the rows measured one by one, each once.
    """
    weights: list[int | None] = [None] * len(rows)
    out, start = [], 0
    while start < len(rows):
        run = rows[start:start + size]
        if weights[start] is not None or (
                len(json.dumps(run, separators=(",", ":"))) - 1 > max_bytes):
            weight = 0
            for n, row in enumerate(run):
                if weights[start + n] is None:
                    weights[start + n] = len(json.dumps(row, separators=(",", ":"))) + 1
                if n and weight + weights[start + n] > max_bytes:
                    run = run[:n]
                    break
                weight += weights[start + n]
        out.append(run)
        start += len(run)
    return out


class ImportContacts(Action):
    """POST /api/v1/contacts/import, in batches of at most 500 rows; each batch goes
    through the host's ledger under ``<idempotency key>:batch<i>``, so a retry re-sends
    only the batches that did not complete."""

    key = "contacts_api.import_contacts"
    app = "contacts_api"
    label = "Import contacts"
    help = "Create or update many contacts at once and get a summary of what happened."
    Inputs = ImportInputs
    sample = {"total": 2, "created": 1, "updated": 0, "skipped": 0, "batches": 1,
              "errors": [{"index": 1, "field": "phone",
                          "message": "Field phone must be in E.164 format."}]}

    def run(self, ctx, inputs):
        summary = {"total": 0, "created": 0, "updated": 0, "skipped": 0, "errors": []}
        start = 0
        parts = batches(inputs["contacts"], inputs["batch_size"])
        for i, rows in enumerate(parts):
            body = {"contacts": rows, "match_by": inputs["match_by"],
                    "on_match": inputs["on_match"]}
            result = ctx.once(f"{ctx.idempotency_key}:batch{i}", body,
                              lambda body=body: ctx.client.post(f"{API}/contacts/import",
                                                                json=body)) or {}
            summary["total"] += result.get("total", len(rows))
            for name in ("created", "updated", "skipped"):
                summary[name] += int(result.get(name) or 0)
            for error in result.get("errors") or []:
                error = dict(error)
                if isinstance(error.get("index"), int):
                    error["index"] += start
                summary["errors"].append(error)
            start += len(rows)
            ctx.progress(start, len(inputs["contacts"]))
        summary["batches"] = len(parts)
        return summary


class ListOpportunities(Search):
    """GET /api/v1/contacts/{contact_id}/opportunities; a read."""

    key = "contacts_api.list_opportunities"
    app = "contacts_api"
    label = "Find opportunities of a contact"
    help = "List the opportunities (deals) linked to a contact."
    Inputs = ContactIdInputs
    sample = {"found": True, "count": 1, "first": {
        "id": "opp_1a2b3c4d5e6f", "contact_id": "5b0c1f9e-8d3c-4bb7-9a57-0c0d0e4b1a11",
        "name": "Engine licence", "pipeline": "Sales", "stage": "proposal", "value": 24000,
        "currency": "USD", "status": "open", "created_at": "2026-01-15T10:30:00.000000Z",
        "updated_at": "2026-01-15T10:30:00.000000Z"}, "results": []}
    sample["results"] = [sample["first"]]

    def search(self, ctx, inputs):
        return items_of(ctx.client.get(
            f"{API}/contacts/{seg(inputs['contact_id'])}/opportunities"))


# Saved views -----------------------------------------------------------------------------------

VIEW_SAMPLE = {"id": "view_hot_leads", "name": "Hot leads", "q": None, "query": {"groups": [
    {"conditions": [{"field": "tags", "op": "contains", "value": "vip"}]}]},
    "created_at": "2026-01-15T10:30:00.000000Z", "updated_at": "2026-01-15T10:30:00.000000Z"}


def read_views(client) -> list[dict]:
    return items_of(client.get(f"{API}/contacts/views"))


def find_view(views: list[dict], ref: str) -> dict | None:
    """Return the view whose id is ``ref``, else the one named ``ref`` (any case)."""
    return (next((v for v in views if str(v.get("id")) == ref), None)
            or next((v for v in views if str(v.get("name", "")).lower() == ref.lower()), None))


class ListViews(Search):
    """GET /api/v1/contacts/views (org-shared smart lists); a read that fills dropdowns."""

    key = "contacts_api.list_views"
    app = "contacts_api"
    label = "List saved views"
    help = "List the organisation's saved smart-list views."
    sample = {"found": True, "count": 1, "first": VIEW_SAMPLE, "results": [VIEW_SAMPLE]}

    def search(self, ctx, inputs):
        return read_views(ctx.client)


class SaveViewInputs(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=100), metadata={
        "label": "View name", "help": "A view with this name (any case) is replaced."})
    query = fields.Nested(Query, required=True, metadata={"label": "Filter",
                                                          "help": QUERY_HELP})
    q = fields.String(load_default=None, metadata={
        "label": "Search text", "help": "Free text the view also matches."})
    view = fields.String(load_default=None, metadata={
        "label": "Replace view", "help": "Replace (and rename) this view instead of the one "
                                         "with the same name.",
        "choices_from": "contacts_api.list_views"})


class SaveView(Action):
    """GET then PUT /api/v1/contacts/views. PUT replaces ALL views, so this reads the list,
    replaces or adds this one view, and puts the whole list back (other views as read);
    naturally idempotent. A view someone else saves between the read and the put is lost:
    the document offers no version check."""

    key = "contacts_api.save_view"
    app = "contacts_api"
    label = "Save view"
    help = "Create or replace a saved smart-list view, keeping every other view."
    Inputs = SaveViewInputs
    sample = {**VIEW_SAMPLE, "created": True}

    def run(self, ctx, inputs):
        views = read_views(ctx.client)
        ref = inputs.get("view")
        target = find_view(views, ref) if ref else find_view(views, inputs["name"])
        if ref and target is None:
            raise UserError(f"no saved view {ref!r}; pick one from the list")
        if target is not None and str(target.get("name", "")).lower() != inputs["name"].lower():
            clash = find_view([v for v in views if v is not target], inputs["name"])
            if clash is not None:
                raise UserError(f"another view is already named {inputs['name']!r}")
        entry = {**(target or {}), "name": inputs["name"], "query": _query(inputs["query"]),
                 "q": inputs.get("q")}
        merged = [entry if v is target else v for v in views] if target else [*views, entry]
        saved = items_of(ctx.client.put(f"{API}/contacts/views", json={"views": merged}))
        result = (find_view(saved, str(target["id"])) if target and target.get("id") else None
                  ) or find_view(saved, inputs["name"]) or entry
        return {**result, "created": target is None}


class DeleteViewInputs(Schema):
    view = fields.String(required=True, validate=validate.Length(min=1), metadata={
        "label": "View", "help": "The view's id or name.",
        "choices_from": "contacts_api.list_views"})
    missing_ok = _missing_ok()


class DeleteView(Action):
    """GET then PUT /api/v1/contacts/views without the view (PUT replaces ALL views, so the
    others are put back as read); naturally idempotent."""

    key = "contacts_api.delete_view"
    app = "contacts_api"
    label = "Delete view"
    help = "Remove one saved smart-list view, keeping every other view."
    Inputs = DeleteViewInputs
    sample = {"id": "view_hot_leads", "name": "Hot leads", "deleted": True}

    def run(self, ctx, inputs):
        views = read_views(ctx.client)
        target = find_view(views, inputs["view"])
        if target is None:
            if inputs["missing_ok"]:
                return {"id": None, "name": inputs["view"], "deleted": False}
            raise UserError(f"no saved view {inputs['view']!r}")
        ctx.client.put(f"{API}/contacts/views",
                       json={"views": [v for v in views if v is not target]})
        return {"id": target.get("id"), "name": target.get("name"), "deleted": True}


# Tags -----------------------------------------------------------------------------------------

TAG_SAMPLE = {"id": "tag_5f2a9c1d7e3b", "name": "vip", "color": "#d97706", "contact_count": 12,
              "created_at": "2026-01-15T10:30:00.000000Z"}


def read_tags(client) -> list[dict]:
    return items_of(client.get(f"{API}/tags"))


class ListTagsInputs(Schema):
    q = fields.String(load_default=None, metadata={
        "label": "Name contains", "help": "Only tags whose name contains this text."})


class ListTags(Search):
    """GET /api/v1/tags (filtered here by name); a read that fills tag dropdowns, whose
    value is the tag's name (contacts carry tag names)."""

    key = "contacts_api.list_tags"
    app = "contacts_api"
    label = "List tags"
    help = "List the organisation's tags."
    Inputs = ListTagsInputs
    sample = {"found": True, "count": 1, "first": TAG_SAMPLE, "results": [TAG_SAMPLE]}

    def search(self, ctx, inputs):
        needle = (inputs.get("q") or "").lower()
        return [t for t in read_tags(ctx.client) if needle in str(t.get("name", "")).lower()]

    def option(self, record):
        return {"value": record.get("name"), "label": str(record.get("name"))}


class CreateTagInputs(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=100), metadata={
        "label": "Tag name"})
    color = fields.String(load_default=None, metadata={"label": "Color",
                                                       "help": "e.g. #d97706."})


class CreateTag(Action):
    """POST /api/v1/tags (201); a 409 (the name exists) returns the existing tag with
    ``created: false``, which keeps a retry harmless."""

    key = "contacts_api.create_tag"
    app = "contacts_api"
    label = "Create tag"
    help = "Add a tag to the organisation's list, or get it if it already exists."
    Inputs = CreateTagInputs
    sample = {**TAG_SAMPLE, "created": True}

    def run(self, ctx, inputs):
        body = {"name": inputs["name"].strip()}
        if inputs.get("color"):
            body["color"] = inputs["color"]
        try:  # a repeat is answered 409 and finds the existing tag below: safe to resend
            created = ctx.client.post(f"{API}/tags", json=body, idempotent=True)
            return {**created, "created": True}
        except FatalAPIError as exc:
            if exc.status != 409:
                raise
            existing = next((t for t in read_tags(ctx.client) if t.get("name") == body["name"]),
                            None)
            if existing is None:
                raise
            return {**existing, "created": False}


class DeleteTagInputs(Schema):
    tag = fields.String(required=True, validate=validate.Length(min=1), metadata={
        "label": "Tag", "help": "The tag's name or id.", "choices_from": "contacts_api.list_tags"})
    missing_ok = _missing_ok()


class DeleteTag(Action):
    """GET /api/v1/tags to find the tag's id by name, then DELETE /api/v1/tags/{tag_id}
    (204; it leaves every contact too); a tag already gone counts as done (missing_ok)."""

    key = "contacts_api.delete_tag"
    app = "contacts_api"
    label = "Delete tag"
    help = "Delete a tag from the organisation and from every contact carrying it."
    Inputs = DeleteTagInputs
    sample = {"id": "tag_5f2a9c1d7e3b", "name": "vip", "deleted": True}

    def run(self, ctx, inputs):
        ref = inputs["tag"]
        tags = read_tags(ctx.client)
        tag = (next((t for t in tags if t.get("name") == ref), None)
               or next((t for t in tags if str(t.get("id")) == ref), None))
        gone = {"id": None, "name": ref, "deleted": False}
        if tag is None:
            if inputs["missing_ok"]:
                return gone
            raise UserError(f"no tag named {ref!r}")
        try:
            ctx.client.delete(f"{API}/tags/{seg(tag['id'])}", expect_json=False)
        except FatalAPIError as exc:
            if not _missing(exc, inputs["missing_ok"]):
                raise
            return {**gone, "id": tag["id"]}
        return {"id": tag["id"], "name": tag.get("name"), "deleted": True}


class AddTagsInputs(ContactIdInputs):
    tags = TagList(required=True, validate=validate.Length(min=1, max=50), metadata={
                           "label": "Tags", "help": "Tag names (a list, or comma-separated "
                                                    "text); new names are created.",
                           "choices_from": "contacts_api.list_tags"})


class AddTags(Action):
    """POST /api/v1/contacts/{contact_id}/tags {"tags": [...]}; adding a tag the contact
    has changes nothing, so a retry is harmless."""

    key = "contacts_api.add_tags"
    app = "contacts_api"
    label = "Add tags to contact"
    help = "Add one or more tags to a contact, keeping the tags it has."
    Inputs = AddTagsInputs
    sample = CreateContact.sample

    def run(self, ctx, inputs):
        return ctx.client.post(f"{API}/contacts/{seg(inputs['contact_id'])}/tags",
                               json={"tags": inputs["tags"]}, idempotent=True)  # a set


class RemoveTagInputs(ContactIdInputs):
    tag = fields.String(required=True, validate=validate.Length(min=1), metadata={
        "label": "Tag", "help": "The tag name to remove.",
        "choices_from": "contacts_api.list_tags"})


class RemoveTag(Action):
    """DELETE /api/v1/contacts/{contact_id}/tags/{name} with the name URL-encoded. A 404 is
    checked with GET /api/v1/contacts/{contact_id}: when the contact exists without the tag
    the goal holds and the step succeeds; when the contact is gone the step fails."""

    key = "contacts_api.remove_tag"
    app = "contacts_api"
    label = "Remove tag from contact"
    help = "Take a tag off a contact."
    Inputs = RemoveTagInputs
    sample = {"contact_id": "5b0c1f9e-8d3c-4bb7-9a57-0c0d0e4b1a11", "tag": "lead",
              "removed": True}

    def run(self, ctx, inputs):
        contact = f"{API}/contacts/{seg(inputs['contact_id'])}"
        try:
            ctx.client.delete(f"{contact}/tags/{seg(inputs['tag'])}", expect_json=False)
        except FatalAPIError as exc:
            if exc.status != 404:
                raise
            current = ctx.client.get(contact)  # raises when the contact itself is missing
            if inputs["tag"] in (current.get("tags") or []):
                raise
        return {"contact_id": inputs["contact_id"], "tag": inputs["tag"], "removed": True}


# Custom fields and values ---------------------------------------------------------------------

FIELD_SAMPLE = {"id": "cf_3e9d2b7a1c4f", "key": "budget", "name": "Budget", "type": "number",
                "options": None, "folder": "Qualification",
                "created_at": "2026-01-15T10:30:00.000000Z",
                "updated_at": "2026-01-15T10:30:00.000000Z"}


def read_fields(client) -> list[dict]:
    return items_of(client.get(f"{API}/custom-fields"))


def find_field(found: list[dict], ref: str) -> dict | None:
    return (next((f for f in found if f.get("key") == ref), None)
            or next((f for f in found if str(f.get("id")) == ref), None))


class ListCustomFields(Search):
    """GET /api/v1/custom-fields; a read that fills dropdowns with field keys."""

    key = "contacts_api.list_custom_fields"
    app = "contacts_api"
    label = "List custom fields"
    help = "List the custom-field definitions of contacts."
    sample = {"found": True, "count": 1, "first": FIELD_SAMPLE, "results": [FIELD_SAMPLE]}

    def search(self, ctx, inputs):
        return read_fields(ctx.client)

    def option(self, record):
        return {"value": record.get("key"),
                "label": f"{record.get('name') or record.get('key')} ({record.get('key')})"}


class FieldDefinition(InputSchema):
    options = fields.List(fields.String(validate=validate.Length(min=1)), load_default=None,
                          metadata={"label": "Options", "help": "The choices of a select or "
                                                                "multi_select field."})
    folder = fields.String(load_default=None, metadata={
        "label": "Folder", "help": "Group the field under this folder name."})


class CreateFieldInputs(FieldDefinition):
    name = fields.String(required=True, validate=validate.Length(min=1, max=100), metadata={
        "label": "Field name"})
    key = fields.String(load_default=None, validate=validate.Regexp(
        r"^[a-z][a-z0-9_]{0,63}$", error="a key starts with a-z and holds only a-z, 0-9 and _"),
        metadata={"label": "Key", "help": "Used as custom.<key>; made from the name when "
                                          "empty (Lead score -> lead_score)."})
    type = fields.String(required=True, validate=validate.OneOf(FIELD_TYPES), metadata={
        "label": "Type"})

    @validates_schema
    def options_for_selects(self, data, **_):
        selects = data["type"] in ("select", "multi_select")
        if selects and not data.get("options"):
            raise ValidationError(f"a {data['type']} field needs options", "options")
        if not selects and data.get("options"):
            raise ValidationError("options only apply to select and multi_select", "options")

    @post_load
    def derive_key(self, data, **_):
        if not data.get("key"):
            key = re.sub(r"[^a-z0-9]+", "_", data["name"].lower()).strip("_")[:64]
            data["key"] = key if key[:1].isalpha() else ("f_" + key)[:64]
        return data


class CreateCustomField(Action):
    """POST /api/v1/custom-fields (201) with the key always sent (made from the name when
    empty); a 409 returns the existing field of that key and type with ``created: false``."""

    key = "contacts_api.create_custom_field"
    app = "contacts_api"
    label = "Create custom field"
    help = "Define a new custom field on contacts, or get it if it already exists."
    Inputs = CreateFieldInputs
    sample = {**FIELD_SAMPLE, "created": True}

    def run(self, ctx, inputs):
        body = {k: v for k, v in inputs.items() if v is not None}
        try:  # a repeat is answered 409 and finds the existing field below: safe to resend
            created = ctx.client.post(f"{API}/custom-fields", json=body, idempotent=True)
            return {**created, "created": True}
        except FatalAPIError as exc:
            if exc.status != 409:
                raise
            existing = find_field(read_fields(ctx.client), body["key"])
            if existing is None or existing.get("type") != body["type"]:
                raise
            return {**existing, "created": False}


class FieldRefInputs(InputSchema):
    field = fields.String(required=True, validate=validate.Length(min=1), metadata={
        "label": "Custom field", "help": "The field's key or id.",
        "choices_from": "contacts_api.list_custom_fields"})


def _resolve_field(ctx, ref: str) -> dict | None:
    return find_field(read_fields(ctx.client), ref)


class UpdateFieldInputs(FieldDefinition, FieldRefInputs):
    name = fields.String(load_default=None, validate=validate.Length(min=1, max=100),
                         metadata={"label": "New name"})


class UpdateCustomField(Action):
    """GET /api/v1/custom-fields to find the id, then PATCH /api/v1/custom-fields/{id}
    with the name, options or folder given (key and type cannot change); naturally
    idempotent."""

    key = "contacts_api.update_custom_field"
    app = "contacts_api"
    label = "Update custom field"
    help = "Rename a custom field, change its options or move it to another folder."
    Inputs = UpdateFieldInputs
    sample = FIELD_SAMPLE

    def run(self, ctx, inputs):
        field = _resolve_field(ctx, inputs["field"])
        if field is None:
            raise UserError(f"no custom field with key or id {inputs['field']!r}")
        body = {k: inputs[k] for k in ("name", "options", "folder") if inputs.get(k) is not None}
        if not body:
            return field
        return ctx.client.patch(f"{API}/custom-fields/{seg(field['id'])}", json=body,
                                idempotent=True)  # sets the same fields


class DeleteFieldInputs(FieldRefInputs):
    missing_ok = _missing_ok()


class DeleteCustomField(Action):
    """GET /api/v1/custom-fields to find the id, then DELETE /api/v1/custom-fields/{id}
    (204; contacts lose their values of it); already gone counts as done (missing_ok)."""

    key = "contacts_api.delete_custom_field"
    app = "contacts_api"
    label = "Delete custom field"
    help = "Delete a custom field and every contact's value of it."
    Inputs = DeleteFieldInputs
    sample = {"id": "cf_3e9d2b7a1c4f", "key": "budget", "deleted": True}

    def run(self, ctx, inputs):
        field = _resolve_field(ctx, inputs["field"])
        if field is None:
            if inputs["missing_ok"]:
                return {"id": None, "key": inputs["field"], "deleted": False}
            raise UserError(f"no custom field with key or id {inputs['field']!r}")
        try:
            ctx.client.delete(f"{API}/custom-fields/{seg(field['id'])}", expect_json=False)
        except FatalAPIError as exc:
            if not _missing(exc, inputs["missing_ok"]):
                raise
            return {"id": field["id"], "key": field.get("key"), "deleted": False}
        return {"id": field["id"], "key": field.get("key"), "deleted": True}


class ContactValueInputs(ContactIdInputs):
    key = fields.String(required=True, validate=validate.Length(min=1), metadata={
        "label": "Custom field", "help": "The field's key.",
        "choices_from": "contacts_api.list_custom_fields"})
    value = fields.Raw(required=True, allow_none=True, metadata={
        "label": "Value", "help": "Fits the field's type; empty clears it."})


def _coerce(field: dict | None, value):
    """Turn text from a template into the number or boolean a field of that type takes."""
    if field is None or not isinstance(value, str):
        return value
    text = value.strip()
    if text == "":
        return None
    kind = field.get("type")
    if kind == "number":
        try:
            number = float(text)
        except ValueError:
            return value
        return int(number) if number.is_integer() and "." not in text else number
    if kind == "boolean" and text.lower() in ("true", "false", "yes", "no", "1", "0"):
        return text.lower() in ("true", "yes", "1")
    if kind == "multi_select":
        return _tag_list(text)
    return value


class SetContactCustomField(Action):
    """PUT /api/v1/contacts/{contact_id}/custom/{key} {"value"}; a put, naturally
    idempotent. Text mapped into a number, boolean or multi_select field is converted
    first (the field's type comes from GET /api/v1/custom-fields)."""

    key = "contacts_api.set_contact_custom_field"
    app = "contacts_api"
    label = "Set contact's custom field"
    help = "Set (or clear) one custom-field value of a contact."
    Inputs = ContactValueInputs
    sample = CreateContact.sample

    def run(self, ctx, inputs):
        value = _coerce(find_field(read_fields(ctx.client), inputs["key"]), inputs["value"])
        return ctx.client.put(
            f"{API}/contacts/{seg(inputs['contact_id'])}/custom/{seg(inputs['key'])}",
            json={"value": value})


VALUE_SAMPLE = {"key": "calendar_link", "value": "https://cal.example.com/acme",
                "updated_at": "2026-01-15T10:30:00.000000Z"}
VALUE_KEY = validate.Regexp(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", error=(
    "a key starts with a letter or _ and holds only letters, digits and _ (at most 64)"))


class ListValuesInputs(Schema):
    key = fields.String(load_default=None, metadata={
        "label": "Key", "help": "Only this key (leave empty for all)."})


class ListCustomValues(Search):
    """GET /api/v1/custom-values (filtered here by key); a read that fills dropdowns."""

    key = "contacts_api.list_custom_values"
    app = "contacts_api"
    label = "Get custom values"
    help = "Read the {{custom_values.x}} tokens used in message copy: all, or one by key."
    Inputs = ListValuesInputs
    sample = {"found": True, "count": 1, "first": VALUE_SAMPLE, "results": [VALUE_SAMPLE]}

    def search(self, ctx, inputs):
        found = items_of(ctx.client.get(f"{API}/custom-values"))
        return [v for v in found if not inputs.get("key") or v.get("key") == inputs["key"]]

    def option(self, record):
        return {"value": record.get("key"), "label": str(record.get("key"))}


class SetValueInputs(Schema):
    key = fields.String(required=True, validate=VALUE_KEY, metadata={
        "label": "Key", "help": "The token name: {{custom_values.<key>}}."})
    value = fields.String(required=True, validate=validate.Length(max=10_000), metadata={
        "label": "Value", "help": "The text the token stands for."})


class SetCustomValue(Action):
    """PUT /api/v1/custom-values/{key} {"value"}: creates or replaces; naturally idempotent."""

    key = "contacts_api.set_custom_value"
    app = "contacts_api"
    label = "Set custom value"
    help = "Create or change a {{custom_values.x}} token used in message copy."
    Inputs = SetValueInputs
    sample = VALUE_SAMPLE

    def run(self, ctx, inputs):
        return ctx.client.put(f"{API}/custom-values/{seg(inputs['key'])}",
                              json={"value": inputs["value"]})


class DeleteValueInputs(Schema):
    key = fields.String(required=True, validate=VALUE_KEY, metadata={
        "label": "Key", "help": "The token name.",
        "choices_from": "contacts_api.list_custom_values"})
    missing_ok = _missing_ok()


class DeleteCustomValue(Action):
    """DELETE /api/v1/custom-values/{key} (204); already gone counts as done (missing_ok)."""

    key = "contacts_api.delete_custom_value"
    app = "contacts_api"
    label = "Delete custom value"
    help = "Remove a {{custom_values.x}} token."
    Inputs = DeleteValueInputs
    sample = {"key": "calendar_link", "deleted": True}

    def run(self, ctx, inputs):
        try:
            ctx.client.delete(f"{API}/custom-values/{seg(inputs['key'])}", expect_json=False)
        except FatalAPIError as exc:
            if not _missing(exc, inputs["missing_ok"]):
                raise
            return {"key": inputs["key"], "deleted": False}
        return {"key": inputs["key"], "deleted": True}


ACTIONS = (CreateContact, GetContact, UpdateContact, DeleteContact, ImportContacts, SaveView,
           DeleteView, CreateTag, DeleteTag, AddTags, RemoveTag, CreateCustomField,
           UpdateCustomField, DeleteCustomField, SetContactCustomField, SetCustomValue,
           DeleteCustomValue)
SEARCHES = (ListContacts, SearchContacts, ListOpportunities, ListViews, ListTags,
            ListCustomFields, ListCustomValues)


@hookimpl
def register_actions(register):
    for cls in ACTIONS:
        register(cls)


@hookimpl
def register_searches(register):
    for cls in SEARCHES:
        register(cls)
