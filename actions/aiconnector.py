"""AI Connector actions and searches: contacts, lists, custom-channel messages, agency credits.

- create contact: the service returns the existing contact for a known phone, which makes
  it naturally idempotent; without a phone we look the email up first for the same effect.
- find contact: GET /contacts?phoneNumber= first when a phone is given, then ?email= when
  the phone matches nobody; 404 is "no match" (``found: false``), never an error. The
  answer is read as one contact, or a list of them, or a list under ``contacts``/``data``.
- add to list: adding a member twice is harmless. The document has no endpoint that lists
  lists, so ``list_id`` is typed, not a dropdown.
- send custom-channel message: no idempotency key in the document, so the send goes through
  the host's ledger (``ctx.once``) keyed by the step: a retry or a crash never sends twice.
- push incoming message: the service drops a repeated ``messageSid``; the action sends the
  one mapped, else ``connector-<step idempotency key>``, so a retry never duplicates. The
  document names two ``messageType`` values, ``text`` and ``reaction``: those are the
  choices, ``text`` by default; ``status`` is sent only when given (the service defaults it
  to ``received``).
- grant credits: the service has no idempotency key, so the grant goes through the host's
  ledger keyed by the auto-recharge ``idempotency_key`` (kept forever): the same key never
  grants twice, and the same key with a different email or amount is refused.

Optional inputs rendered empty by a template count as not given, so they are not sent.
"""
from __future__ import annotations

from urllib.parse import quote

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from connector import Action, FatalAPIError, InputSchema, Phone, Search, hookimpl

REQUIRED = validate.Length(min=1)


def _text(label: str, help: str = "", required: bool = False):
    if required:
        return fields.String(required=True, validate=REQUIRED,
                             metadata={"label": label, "help": help})
    return fields.String(load_default=None, allow_none=True,
                         metadata={"label": label, "help": help})


_Inputs = InputSchema  # an input that rendered empty means "not given"


def _given(inputs: dict, names) -> dict:
    return {name: inputs[name] for name in names if inputs.get(name) not in (None, "")}


def _contacts(answer) -> list[dict]:
    """Return the contacts in a lookup answer: one contact, a list, or a wrapped list."""
    if isinstance(answer, dict):
        for key in ("contacts", "data", "results", "items"):
            if isinstance(answer.get(key), list):
                answer = answer[key]
                break
        else:
            if isinstance(answer.get("contact"), dict):
                return [answer["contact"]]
            return [answer] if answer.get("id") is not None else []
    if isinstance(answer, list):
        return [c for c in answer if isinstance(c, dict)]
    return []


def _lookup(client, param: str, value: str) -> list[dict]:
    try:
        return _contacts(client.get("/contacts", params={param: value}))
    except FatalAPIError as exc:
        if exc.status == 404:
            return []
        raise


def _phone():
    return Phone(load_default=None, allow_none=True, metadata={
        "label": "Phone", "help": "With country code, e.g. +15551234567."})


def _email(help: str = ""):
    return fields.Email(load_default=None, allow_none=True,
                        metadata={"label": "Email", "help": help})


class _PhoneOrEmail(_Inputs):
    @validates_schema
    def phone_or_email(self, data, **_):
        if not data.get("phone") and not data.get("email"):
            raise ValidationError("give a phone (with country code) or an email", "phone")


class CreateContactInputs(_PhoneOrEmail):
    firstName = _text("First name", "The contact's first name.")
    lastName = _text("Last name", "The contact's last name.")
    phone = _phone()
    email = _email("Used to find an existing contact when no phone is given.")


class FindContactInputs(_PhoneOrEmail):
    phone = _phone()
    email = _email("Looked up when no phone is given, or when the phone matches nobody.")


class CreateContact(Action):
    """POST /contacts; idempotent by the service: a known phone returns the existing contact.

    Without a phone, GET /contacts?email= first and create only when that finds nobody, so a
    retried step does not create a second contact either.
    """

    key = "aiconnector.create_contact"
    app = "aiconnector"
    label = "Create contact"
    help = "Create a contact, or get the existing one with the same phone (POST /contacts)."
    Inputs = CreateContactInputs
    sample = {"id": "abc123xyz", "firstName": "Jane", "lastName": "Smith",
              "phone": "+15551234567", "email": "jane@example.com",
              "createdAt": "2026-01-15T10:30:00Z"}

    def run(self, ctx, inputs):
        body = _given(inputs, ("firstName", "lastName", "phone", "email"))
        if not body.get("phone"):
            found = _lookup(ctx.client, "email", body["email"])
            if found:
                return found[0]
        # idempotent: the service answers the existing contact for a known phone, and one
        # given by email only was looked up first
        return ctx.client.post("/contacts", json=body, idempotent=True)


class FindContact(Search):
    """GET /contacts?phoneNumber=X, then ?email=X; a read, so naturally idempotent.

    404 means no contact matches: the step succeeds with ``found: false`` (a filter on
    ``steps.<name>.found`` can stop the run), and only other errors fail it.
    """

    key = "aiconnector.find_contact"
    app = "aiconnector"
    label = "Find contact"
    help = "Look a contact up by phone number or email; finding nobody is not an error."
    Inputs = FindContactInputs
    sample = {"found": True, "count": 1,
              "first": CreateContact.sample, "results": [CreateContact.sample]}

    def search(self, ctx, inputs):
        for param, value in (("phoneNumber", inputs.get("phone")),
                             ("email", inputs.get("email"))):
            if value:
                found = _lookup(ctx.client, param, value)
                if found:
                    return found
        return []

    def option(self, record):
        name = " ".join(p for p in (record.get("firstName"), record.get("lastName")) if p)
        label = name or record.get("phone") or record.get("email") or record.get("id")
        return {"value": record.get("id"), "label": str(label)}


class AddToListInputs(Schema):
    list_id = fields.String(required=True, validate=REQUIRED, metadata={
        "label": "List id",
        "help": "Copy it from Contacts > Lists in the app (the API cannot list lists)."})
    contact_id = fields.String(required=True, validate=REQUIRED, metadata={
        "label": "Contact id", "help": "Usually mapped from a create or find contact step."})


class AddToList(Action):
    """POST /lists/:listId/contacts; naturally idempotent: a member added twice is one member."""

    key = "aiconnector.add_to_list"
    app = "aiconnector"
    label = "Add contact to list"
    help = "Add an existing contact to a contact list (POST /lists/:listId/contacts)."
    Inputs = AddToListInputs
    sample = {"success": True, "listId": "lst_demo", "contactId": "abc123xyz"}

    def run(self, ctx, inputs):
        result = ctx.client.post(f"/lists/{quote(inputs['list_id'], safe='')}/contacts",
                                 json={"contactId": inputs["contact_id"]},
                                 idempotent=True)  # membership is a set
        out = dict(result) if isinstance(result, dict) else {}
        out.setdefault("listId", inputs["list_id"])
        out.setdefault("contactId", inputs["contact_id"])
        return out


class SendMessageInputs(_Inputs):
    fromId = _text("Contact id on your platform", "customData.fromId: the contact's id in "
                   "your system (the fromId of their incoming messages).", required=True)
    customChannel = _text("Custom channel", "The name of your custom channel.", required=True)
    body = _text("Message", "The message text to send.", required=True)
    campaignId = _text("Campaign id", "Route the message to a specific campaign (copy the id "
                       "from the app; the API cannot list campaigns).")
    firstName = _text("First name", "Used when the message creates a new contact.")
    lastName = _text("Last name", "Used when the message creates a new contact.")
    email = _email("Used when the message creates a new contact.")


class SendCustomChannelMessage(Action):
    """POST /send_custom_channel_message; not repeatable, so sent through ``ctx.once``.

    The service takes no idempotency key: the host's ledger, keyed by the step's idempotency
    key, sends it at most once however often the step is retried or the run replayed.
    """

    key = "aiconnector.send_custom_channel_message"
    app = "aiconnector"
    label = "Send custom-channel message"
    help = "Send a message to a contact through one of your custom channels."
    Inputs = SendMessageInputs
    sample = {"success": True, "messageId": "9f2c41d0a7b3e5c8d6f1",
              "fromId": "external-contact-id", "customChannel": "my-channel"}

    def run(self, ctx, inputs):
        custom = _given(inputs, ("fromId", "customChannel", "body", "campaignId", "firstName",
                                 "lastName", "email"))
        payload = {"customData": custom}
        result = ctx.once(ctx.idempotency_key, payload, lambda: ctx.client.post(
            "/send_custom_channel_message", json=payload))
        out = dict(result) if isinstance(result, dict) else {}
        out.setdefault("fromId", custom["fromId"])
        out.setdefault("customChannel", custom["customChannel"])
        return out


class PushIncomingInputs(_Inputs):
    messageSid = _text("Message id", "A unique id for this message in your system; the "
                       "service drops a repeat. Leave empty to use one derived from this run.")
    fromId = _text("Sender id", "The sender's id in your external system (e.g. a customer "
                   "id from your CRM).", required=True)
    toId = _text("Business id", "Your business identifier.", required=True)
    body = _text("Message", "The message text.", required=True)
    channel = _text("Channel label", "A label for the source, e.g. email, livechat, custom.")
    status = _text("Status", "Message status; the service defaults to received.")
    messageType = fields.String(load_default="text", validate=validate.OneOf(["text", "reaction"]),
                                metadata={"label": "Message type",
                                          "help": "text, or reaction for an emoji reaction."})


class PushIncomingMessage(Action):
    """POST /incoming_custom_channel_message; idempotent by the service's messageSid dedupe.

    The messageSid sent is the mapped one, else ``connector-<step idempotency key>``, which
    is stable across retries and replays: a repeat is answered ``duplicate: true`` and the
    bot sees the message once.
    """

    key = "aiconnector.push_incoming_message"
    app = "aiconnector"
    label = "Push incoming custom-channel message"
    help = ("Hand a message from your platform to the AI bot as an incoming message on a "
            "custom channel.")
    Inputs = PushIncomingInputs
    sample = {"success": True, "messageId": "4e1d2c3b4a5968778695",
              "messageSid": "unique-message-id", "contactId": "abc123xyz", "duplicate": False}

    def run(self, ctx, inputs):
        custom = _given(inputs, ("fromId", "toId", "body", "channel", "status"))
        custom["messageSid"] = inputs.get("messageSid") or f"connector-{ctx.idempotency_key}"
        payload = {"customData": custom, "messageType": inputs["messageType"]}
        result = ctx.client.post("/incoming_custom_channel_message", json=payload,
                                 idempotent=True)  # the service drops a repeated messageSid
        out = dict(result) if isinstance(result, dict) else {}
        out.setdefault("messageSid", custom["messageSid"])
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
    """POST /subaccounts/credits with the key in the x-api-key header; through ``ctx.once``.

    The service takes no idempotency key: the host's ledger, keyed by the mapped
    ``idempotency_key`` (else the step's), grants at most once per key, forever, and refuses
    the same key with a different email or amount.
    """

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
    register(SendCustomChannelMessage)
    register(PushIncomingMessage)
    register(GrantCredits)


@hookimpl
def register_searches(register):
    register(FindContact)
