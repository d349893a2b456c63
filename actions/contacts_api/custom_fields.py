"""Define custom fields of contacts and set a contact's value of one."""
from __future__ import annotations

import re

from marshmallow import ValidationError, fields, post_load, validate, validates_schema

from connector import Action, FatalAPIError, InputSchema, Search, UserError
from connector.plugins.contacts_api import API, items_of, seg

from .contacts import ContactIdInputs, CreateContact
from .shared import delete, missing_ok_field, tag_list

FIELD_TYPES = ("text", "number", "date", "boolean", "select", "multi_select")
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
    missing_ok = missing_ok_field()


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
        deleted = delete(ctx, f"{API}/custom-fields/{seg(field['id'])}", inputs["missing_ok"])
        return {"id": field["id"], "key": field.get("key"), "deleted": deleted}


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
        return tag_list(text)
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
