"""AI Connector actions: create contact, add contact to list, grant credits to a sub-account.

- create contact: the service returns the existing contact for a known phone, which makes
  it naturally idempotent; without a phone we look the email up first for the same effect.
- add to list: adding a member twice is harmless.
- grant credits: the service has no idempotency key, so the grant goes through the host's
  ledger keyed by the auto-recharge ``idempotency_key`` (kept forever): the same key never
  grants twice, and the same key with a different email or amount is refused.
"""
from __future__ import annotations

from urllib.parse import quote

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from connector import Action, FatalAPIError, hookimpl


class CreateContactInputs(Schema):
    firstName = fields.String(load_default=None, metadata={"label": "First name"})
    lastName = fields.String(load_default=None, metadata={"label": "Last name"})
    phone = fields.String(load_default=None, metadata={
        "label": "Phone", "help": "With country code, e.g. +15551234567."})
    email = fields.Email(load_default=None, metadata={"label": "Email"})

    @validates_schema
    def phone_or_email(self, data, **_):
        if not data.get("phone") and not data.get("email"):
            raise ValidationError("give a phone (with country code) or an email", "phone")


class CreateContact(Action):
    key = "aiconnector.create_contact"
    app = "aiconnector"
    label = "Create contact"
    help = "Create a contact, or get the existing one with the same phone (POST /contacts)."
    Inputs = CreateContactInputs
    sample = {"id": "abc123xyz", "firstName": "Jane", "lastName": "Smith",
              "phone": "+15551234567", "email": "jane@example.com",
              "createdAt": "2026-01-15T10:30:00Z"}

    def run(self, ctx, inputs):
        body = {k: v for k, v in inputs.items() if v not in (None, "")}
        if not body.get("phone"):
            try:
                return ctx.client.get("/contacts", params={"email": body["email"]})
            except FatalAPIError as exc:
                if exc.status != 404:
                    raise
        return ctx.client.post("/contacts", json=body)


class AddToListInputs(Schema):
    list_id = fields.String(required=True, validate=validate.Length(min=1), metadata={
        "label": "List", "help": "The list id (Contacts > Lists in the app)."})
    contact_id = fields.String(required=True, validate=validate.Length(min=1), metadata={
        "label": "Contact id", "help": "Usually mapped from a create-contact step."})


class AddToList(Action):
    key = "aiconnector.add_to_list"
    app = "aiconnector"
    label = "Add contact to list"
    help = "Add an existing contact to a contact list (POST /lists/:listId/contacts)."
    Inputs = AddToListInputs
    sample = {"success": True, "listId": "lst_demo", "contactId": "abc123xyz"}

    def run(self, ctx, inputs):
        result = ctx.client.post(f"/lists/{quote(inputs['list_id'], safe='')}/contacts",
                                 json={"contactId": inputs["contact_id"]})
        out = dict(result) if isinstance(result, dict) else {}
        out.setdefault("listId", inputs["list_id"])
        out.setdefault("contactId", inputs["contact_id"])
        return out


class GrantCreditsInputs(Schema):
    email = fields.Email(required=True, metadata={
        "label": "Sub-account email", "help": "Must match a sub-account under your agency."})
    amount = fields.Float(required=True, validate=validate.Range(min=0, min_inclusive=False),
                          metadata={"label": "Credits", "help": "How many credits to add."})
    description = fields.String(load_default="Auto-recharge via connector", metadata={
        "label": "Description", "help": "Shown in the sub-account's credit history."})
    idempotency_key = fields.String(load_default=None, metadata={
        "label": "Idempotency key",
        "help": "Map the auto-recharge idempotency_key here; the same key never grants twice."})


class GrantCredits(Action):
    key = "aiconnector.grant_credits"
    app = "aiconnector"
    label = "Grant credits to sub-account"
    help = "Agency accounts: add credits to a sub-account (POST /subaccounts/credits)."
    Inputs = GrantCreditsInputs
    sample = {"success": True, "sub_account_id": "abc123xyz", "credits_added": 500,
              "new_balance": 542}

    def run(self, ctx, inputs):
        amount = inputs["amount"]
        body = {"email": inputs["email"], "amount": int(amount) if amount.is_integer() else amount,
                "description": inputs["description"]}
        key = inputs.get("idempotency_key") or ctx.idempotency_key
        request = {"email": body["email"], "amount": body["amount"]}
        return ctx.once(key, request, lambda: ctx.client.post(
            "/subaccounts/credits", json=body, auth="header"))


@hookimpl
def register_actions(register):
    register(CreateContact)
    register(AddToList)
    register(GrantCredits)
