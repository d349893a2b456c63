"""Read, set and delete the {{custom_values.x}} tokens used in message copy."""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from connector import Action, Search
from connector.plugins.contacts_api import API, items_of, seg

from .shared import delete, missing_ok_field

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
    missing_ok = missing_ok_field()


class DeleteCustomValue(Action):
    """DELETE /api/v1/custom-values/{key} (204); already gone counts as done (missing_ok)."""

    key = "contacts_api.delete_custom_value"
    app = "contacts_api"
    label = "Delete custom value"
    help = "Remove a {{custom_values.x}} token."
    Inputs = DeleteValueInputs
    sample = {"key": "calendar_link", "deleted": True}

    def run(self, ctx, inputs):
        deleted = delete(ctx, f"{API}/custom-values/{seg(inputs['key'])}", inputs["missing_ok"])
        return {"key": inputs["key"], "deleted": deleted}
