"""Create, get, update and delete one contact; list a contact's opportunities."""
from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from connector import Action, InputSchema, Phone, Search
from connector.plugins.contacts_api import API, items_of, seg

from .shared import TagList, delete, missing_ok_field

CLEARABLE = ("name", "email", "phone", "company", "source", "notes", "tags", "assigned_to")


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
    missing_ok = missing_ok_field()


class DeleteContact(Action):
    """DELETE /api/v1/contacts/{contact_id} (204); a 404 counts as done (missing_ok)."""

    key = "contacts_api.delete_contact"
    app = "contacts_api"
    label = "Delete contact"
    help = "Delete a contact and its opportunities."
    Inputs = DeleteInputs
    sample = {"id": "5b0c1f9e-8d3c-4bb7-9a57-0c0d0e4b1a11", "deleted": True}

    def run(self, ctx, inputs):
        deleted = delete(ctx, f"{API}/contacts/{seg(inputs['contact_id'])}",
                         inputs["missing_ok"])
        return {"id": inputs["contact_id"], "deleted": deleted}


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
