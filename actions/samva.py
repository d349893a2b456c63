"""Samva actions and searches: send a message, get messages, templates, conversations and
participants, create and add participants.

Idempotency: every POST that creates something carries the step's ``ctx.idempotency_key``
in ``X-Idempotency-Key`` (the document's idempotency header), so a retried or replayed step
gets Samva's first answer back instead of a second message or participant; the host's
ledger is not needed. Reads are naturally repeatable, and adding a participant to a
conversation is a set.

Searches read one page (``page``, ``limit`` up to the documented 100) and add Samva's
``pagination`` ({page, limit, total, pages}) to the usual found/count/first/results. The
dropdown sources (templates, conversations, participants) default to 100 a page so a
dropdown shows as many as one request can carry; the others keep the documented 20.
Dates for ``created_after``/``created_before`` are sent as given (a date or an ISO 8601
time), both inclusive in the sandbox.
"""
from __future__ import annotations

from datetime import date, datetime
from urllib.parse import quote

from marshmallow import (Schema, ValidationError, fields, post_load, validate,
                         validates_schema)

from connector import Action, Phone, Search, hookimpl
from connector.fields import to_e164
from connector.plugins.samva import Samva

CHANNELS = ("sms", "whatsapp", "email")
MESSAGE_STATUSES = ("queued", "sent", "delivered", "failed")
SORTS = ("-created_at", "created_at", "-updated_at", "updated_at")
IDEMPOTENCY_HEADER = Samva.idempotency_header  # a POST carrying it may be sent again


def _path_id(value: str) -> str:
    return quote(str(value), safe="")


def _iso_moment(value: str) -> None:
    """Refuse anything that is not a date (2024-01-31) or an ISO 8601 time."""
    try:
        (date if len(value) == 10 else datetime).fromisoformat(value)
    except ValueError:
        raise ValidationError("expected a date like 2024-01-31 or an ISO 8601 time like "
                              "2024-01-31T12:00:00Z") from None


def _scalars(value: dict) -> None:
    if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool)
               for v in value.values()):
        raise ValidationError("each variable must be text or a number")


def page_of(answer) -> tuple[list, dict]:
    """Return (records, pagination) from a list answer (``data`` + ``pagination``)."""
    if isinstance(answer, list):
        return answer, {"total": len(answer)}
    if isinstance(answer, dict) and isinstance(answer.get("data"), list):
        pagination = answer.get("pagination")
        return answer["data"], dict(pagination) if isinstance(pagination, dict) else {}
    raise ValueError("Samva's list answer holds no data list")


# Send a message ---------------------------------------------------------------------------

class SendMessageInputs(Schema):
    channel = fields.String(required=True, validate=validate.OneOf(CHANNELS), metadata={
        "label": "Channel", "help": "sms, whatsapp or email."})
    to = fields.String(required=True, validate=validate.Length(min=1), metadata={
        "label": "To", "help": "A phone number with country code (+919876543210) for sms and "
                               "whatsapp; an email address for email."})
    template_id = fields.String(load_default=None, metadata={
        "label": "Template", "choices_from": "samva.list_templates",
        "help": "An approved template of the same channel; fill its variables below."})
    variables = fields.Dict(keys=fields.String(), values=fields.Raw(), load_default=None,
                            validate=_scalars, metadata={
                                "label": "Template variables",
                                "help": "Values for the template's {placeholders}, e.g. "
                                        "otp: 123456."})
    body = fields.String(load_default=None, metadata={
        "label": "Message text", "help": "Free text instead of a template (SMS to India "
                                         "needs a DLT template)."})
    subject = fields.String(load_default=None, metadata={
        "label": "Email subject", "help": "Required for an email sent without a template."})
    sender = fields.String(load_default=None, metadata={
        "label": "From", "help": "Optional sender: sender ID, WhatsApp number or email "
                                 "address; empty uses your account's default."})
    conversation_id = fields.String(load_default=None, metadata={
        "label": "Conversation", "choices_from": "samva.list_conversations",
        "help": "Optional: thread the message into this conversation."})
    metadata = fields.Dict(keys=fields.String(), load_default=None, metadata={
        "label": "Metadata", "help": "Your own key-value data, returned with the message."})

    @validates_schema
    def content_rules(self, data, **_):
        has_template, has_body = bool(data.get("template_id")), bool(data.get("body"))
        if has_template == has_body:
            raise ValidationError("give either a template or a message text, not both",
                                  "template_id")
        if data.get("channel") == "email" and has_body and not data.get("subject"):
            raise ValidationError("an email without a template needs a subject", "subject")

    @post_load
    def clean(self, data, **_):
        if data["channel"] == "email":
            try:
                validate.Email()(data["to"].strip())
            except ValidationError:
                raise ValidationError(f"expected an email address for the email channel; got "
                                      f"{data['to']!r}", "to") from None
            data["to"] = data["to"].strip()
        else:
            data["to"] = to_e164(data["to"], error=lambda: ValidationError(
                f"expected a phone number in E.164 format with its country code, e.g. "
                f"+919876543210; got {data['to']!r}", "to"))
        return data


_MESSAGE = {"id": "msg_6441a867c15a772d417b358a", "organization_id": "org_demo",
            "direction": "outbound", "channel": "sms", "to": "+919876543210", "from": "SAMVA",
            "status": "queued",
            "content": {"template_id": "dlt_template_123", "variables": {"otp": "123456"}},
            "body": "Your Samva verification code is 123456. It is valid for 10 minutes.",
            "subject": None, "conversation_id": "conv_demo", "participant_id": "par_demo_asha",
            "credits_used": 1, "metadata": {}, "error": None,
            "created_at": "2024-01-15T10:30:00Z", "updated_at": "2024-01-15T10:30:00Z",
            "sent_at": None, "delivered_at": None, "failed_at": None}


class SendMessage(Action):
    """POST /messages/send with X-Idempotency-Key: the step's idempotency key.

    The body is ``{channel, to, content: {template_id, variables} | {body, subject}, from?,
    conversation_id?, metadata?}``. Samva answers 202 with the queued message; a retried
    step gets the same message back, and the same key with other inputs is refused (409).
    """

    key = "samva.send_message"
    app = "samva"
    label = "Send message"
    help = "Send an SMS, WhatsApp message or email, from a template or as free text."
    Inputs = SendMessageInputs
    sample = _MESSAGE

    def run(self, ctx, inputs):
        if inputs.get("template_id"):
            content = {"template_id": inputs["template_id"],
                       "variables": dict(inputs.get("variables") or {})}
        else:
            content = {"body": inputs["body"]}
            if inputs.get("subject"):
                content["subject"] = inputs["subject"]
        body = {"channel": inputs["channel"], "to": inputs["to"], "content": content}
        for name, sent_as in (("sender", "from"), ("conversation_id", "conversation_id"),
                              ("metadata", "metadata")):
            if inputs.get(name):
                body[sent_as] = inputs[name]
        return ctx.client.post("/messages/send", json=body,
                               headers={IDEMPOTENCY_HEADER: ctx.idempotency_key})


# Get one record ---------------------------------------------------------------------------

class GetMessageInputs(Schema):
    message_id = fields.String(required=True, validate=validate.Length(min=1), metadata={
        "label": "Message id", "help": "Usually mapped from a send-message step (its id)."})


class GetMessage(Action):
    """GET /messages/{id}; a read, safe to repeat."""

    key = "samva.get_message"
    app = "samva"
    label = "Get message"
    help = "Get a message with its current delivery status."
    Inputs = GetMessageInputs
    sample = {**_MESSAGE, "status": "delivered", "sent_at": "2024-01-15T10:30:01Z",
              "delivered_at": "2024-01-15T10:30:03Z", "updated_at": "2024-01-15T10:30:03Z"}

    def run(self, ctx, inputs):
        return ctx.client.get(f"/messages/{_path_id(inputs['message_id'])}")


_TEMPLATE = {"id": "dlt_template_123", "organization_id": "org_demo", "name": "OTP verification",
             "channel": "sms", "category": "authentication", "language": "en",
             "status": "approved", "subject": None,
             "body": "Your Samva verification code is {otp}. It is valid for 10 minutes.",
             "variables": ["otp"],
             "dlt": {"entity_id": "1101234567890123456", "template_id": "1107161234567890123",
                     "sender_id": "SAMVAO"},
             "created_at": "2024-01-02T08:00:00Z", "updated_at": "2024-01-02T08:00:00Z"}


class GetTemplateInputs(Schema):
    template_id = fields.String(required=True, validate=validate.Length(min=1), metadata={
        "label": "Template", "choices_from": "samva.list_templates",
        "help": "The template to read."})


class GetTemplate(Action):
    """GET /templates/{id}; a read, safe to repeat."""

    key = "samva.get_template"
    app = "samva"
    label = "Get template"
    help = "Get a message template with its text, channel, status and variables."
    Inputs = GetTemplateInputs
    sample = _TEMPLATE

    def run(self, ctx, inputs):
        return ctx.client.get(f"/templates/{_path_id(inputs['template_id'])}")


_CONVERSATION = {"id": "conv_demo", "organization_id": "org_demo",
                 "subject": "Order #1042 delivery", "status": "open",
                 "channels": ["sms", "email"],
                 "participant_ids": ["par_demo_asha", "par_demo_ben"], "message_count": 3,
                 "last_message_at": "2024-02-03T14:00:00Z",
                 "created_at": "2024-01-10T09:00:00Z", "updated_at": "2024-02-03T14:00:00Z"}


class ConversationInputs(Schema):
    conversation_id = fields.String(required=True, validate=validate.Length(min=1), metadata={
        "label": "Conversation", "choices_from": "samva.list_conversations",
        "help": "The conversation to read."})


class GetConversation(Action):
    """GET /conversations/{id}; a read, safe to repeat."""

    key = "samva.get_conversation"
    app = "samva"
    label = "Get conversation"
    help = "Get a conversation with its participants, channels and last activity."
    Inputs = ConversationInputs
    sample = _CONVERSATION

    def run(self, ctx, inputs):
        return ctx.client.get(f"/conversations/{_path_id(inputs['conversation_id'])}")


# Participants -----------------------------------------------------------------------------

_PARTICIPANT = {"id": "par_demo_asha", "organization_id": "org_demo", "name": "Asha Rao",
                "phone": "+919876543210", "email": "asha.rao@example.com", "metadata": {},
                "conversation_ids": ["conv_demo"], "created_at": "2024-01-10T09:00:00Z",
                "updated_at": "2024-01-10T09:00:00Z"}


class CreateParticipantInputs(Schema):
    name = fields.String(load_default=None, metadata={
        "label": "Name", "help": "The person's name as you want to see it in Samva."})
    phone = Phone(load_default=None, metadata={
        "label": "Phone", "help": "With country code, e.g. +919876543210."})
    email = fields.Email(load_default=None, metadata={"label": "Email",
                                                      "help": "The person's email address."})
    conversation_id = fields.String(load_default=None, metadata={
        "label": "Add to conversation", "choices_from": "samva.list_conversations",
        "help": "Optional: also add the new participant to this conversation."})
    metadata = fields.Dict(keys=fields.String(), load_default=None, metadata={
        "label": "Metadata", "help": "Your own key-value data about the person."})

    @validates_schema
    def phone_or_email(self, data, **_):
        if not data.get("phone") and not data.get("email"):
            raise ValidationError("give a phone (with country code) or an email", "phone")


class CreateParticipant(Action):
    """POST /participants with X-Idempotency-Key: the step's idempotency key.

    A retried step gets the first participant back. Samva keeps phone and email unique: a
    participant that already exists fails the run with 409 DUPLICATE_PARTICIPANT and its
    id in the error (find it with samva.list_participants).
    """

    key = "samva.create_participant"
    app = "samva"
    label = "Create participant"
    help = "Add a person (phone and/or email) to Samva, optionally into a conversation."
    Inputs = CreateParticipantInputs
    sample = {**_PARTICIPANT, "id": "par_9f1c2d3e4b5a69788c7d6e5f", "name": "Jane Smith",
              "phone": "+15551234567", "email": "jane@example.com",
              "created_at": "2026-01-15T10:30:00Z", "updated_at": "2026-01-15T10:30:00Z"}

    def run(self, ctx, inputs):
        body = {k: v for k, v in inputs.items() if v not in (None, "", {})}
        return ctx.client.post("/participants", json=body,
                               headers={IDEMPOTENCY_HEADER: ctx.idempotency_key})


class AddParticipantInputs(Schema):
    conversation_id = fields.String(required=True, validate=validate.Length(min=1), metadata={
        "label": "Conversation", "choices_from": "samva.list_conversations",
        "help": "The conversation to add the person to."})
    participant_id = fields.String(required=True, validate=validate.Length(min=1), metadata={
        "label": "Participant", "choices_from": "samva.list_participants",
        "help": "The participant to add, e.g. from a create-participant step."})


class AddParticipant(Action):
    """POST /conversations/{id}/participants {participant_id}.

    Membership is a set, so a repeat changes nothing; the step's idempotency key travels in
    X-Idempotency-Key all the same. Answers the conversation.
    """

    key = "samva.add_participant"
    app = "samva"
    label = "Add participant to conversation"
    help = "Add an existing participant to a conversation."
    Inputs = AddParticipantInputs
    sample = _CONVERSATION

    def run(self, ctx, inputs):
        return ctx.client.post(
            f"/conversations/{_path_id(inputs['conversation_id'])}/participants",
            json={"participant_id": inputs["participant_id"]},
            headers={IDEMPOTENCY_HEADER: ctx.idempotency_key})


# Searches ---------------------------------------------------------------------------------

def _page_fields(default_limit: int) -> dict:
    return {
        "page": fields.Integer(load_default=1, validate=validate.Range(min=1), metadata={
            "label": "Page", "help": "Which page of results, from 1."}),
        "limit": fields.Integer(load_default=default_limit, validate=validate.Range(1, 100),
                                metadata={"label": "Per page",
                                          "help": f"Results per page, at most 100 (default "
                                                  f"{default_limit})."}),
    }


def _dates() -> dict:
    return {
        "created_after": fields.String(load_default=None, validate=_iso_moment, metadata={
            "label": "Created on or after", "help": "A date (2024-01-01) or an ISO 8601 time."}),
        "created_before": fields.String(load_default=None, validate=_iso_moment, metadata={
            "label": "Created on or before",
            "help": "A date (2024-01-31, the whole day) or an ISO 8601 time."}),
    }


def _sort() -> fields.Field:
    return fields.String(load_default="-created_at", validate=validate.OneOf(SORTS), metadata={
        "label": "Sort", "help": "-created_at (newest first, default), created_at, "
                                 "-updated_at or updated_at."})


def _message_status() -> fields.Field:
    return fields.String(load_default=None, validate=validate.OneOf(MESSAGE_STATUSES),
                         metadata={"label": "Status",
                                   "help": "Only messages in this status; empty for all."})


class SamvaSearch(Search):
    """A search over one Samva list endpoint: one page, with Samva's pagination."""

    app = "samva"
    path = ""
    #: inputs sent as query parameters when set (besides page and limit)
    filters: tuple = ()

    def path_for(self, inputs: dict) -> str:
        return self.path

    def fetch(self, ctx, inputs) -> tuple[list, dict]:
        params = {"page": inputs["page"], "limit": inputs["limit"]}
        params.update({name: inputs[name] for name in self.filters
                       if inputs.get(name) not in (None, "")})
        return page_of(ctx.client.get(self.path_for(inputs), params=params))

    def search(self, ctx, inputs):
        return self.fetch(ctx, inputs)[0]

    def run(self, ctx, inputs):
        results, pagination = self.fetch(ctx, inputs)
        return {"found": bool(results), "count": len(results),
                "first": results[0] if results else None, "results": results,
                "pagination": pagination}


def _found(record: dict, total: int = 1) -> dict:
    return {"found": True, "count": 1, "first": record, "results": [record],
            "pagination": {"page": 1, "limit": 20, "total": total, "pages": 1}}


ListMessagesInputs = Schema.from_dict({"status": _message_status(), "sort": _sort(),
                                       **_dates(), **_page_fields(20)},
                                      name="ListMessagesInputs")


class ListMessages(SamvaSearch):
    """GET /messages?status=&sort=&created_after=&created_before=&page=&limit=; a read."""

    key = "samva.list_messages"
    label = "Find messages"
    help = "List sent messages, filtered by status and date, newest first by default."
    Inputs = ListMessagesInputs
    path = "/messages"
    filters = ("status", "sort", "created_after", "created_before")
    sample = _found({**_MESSAGE, "status": "delivered", "delivered_at": "2024-01-15T10:30:03Z"})


ListTemplatesInputs = Schema.from_dict({
    "channel": fields.String(load_default=None, validate=validate.OneOf(CHANNELS), metadata={
        "label": "Channel", "help": "Only templates for sms, whatsapp or email."}),
    "status": fields.String(load_default=None,
                            validate=validate.OneOf(("approved", "pending", "rejected")),
                            metadata={"label": "Status",
                                      "help": "approved, pending or rejected; empty for all."}),
    **_page_fields(100)}, name="ListTemplatesInputs")


class ListTemplates(SamvaSearch):
    """GET /templates?channel=&status=&page=&limit=; a read. Fills template dropdowns."""

    key = "samva.list_templates"
    label = "Find templates"
    help = "List your message templates, optionally for one channel."
    Inputs = ListTemplatesInputs
    path = "/templates"
    filters = ("channel", "status")
    sample = _found(_TEMPLATE)

    def option(self, record):
        name = record.get("name") or record.get("id")
        channel = record.get("channel")
        return {"value": record.get("id"), "label": f"{name} ({channel})" if channel else name}


ListConversationsInputs = Schema.from_dict({
    "status": fields.String(load_default=None, validate=validate.OneOf(("open", "closed")),
                            metadata={"label": "Status", "help": "open or closed; empty for all."}),
    "participant_id": fields.String(load_default=None, metadata={
        "label": "With participant", "choices_from": "samva.list_participants",
        "help": "Only conversations this participant is in."}),
    "sort": _sort(), **_page_fields(100)}, name="ListConversationsInputs")


class ListConversations(SamvaSearch):
    """GET /conversations?status=&participant_id=&sort=&page=&limit=; a read."""

    key = "samva.list_conversations"
    label = "Find conversations"
    help = "List conversations, optionally only open ones or those of one participant."
    Inputs = ListConversationsInputs
    path = "/conversations"
    filters = ("status", "participant_id", "sort")
    sample = _found(_CONVERSATION)

    def option(self, record):
        label = record.get("subject") or ", ".join(record.get("participant_ids") or []) \
            or record.get("id")
        return {"value": record.get("id"), "label": str(label)}


ListConversationMessagesInputs = Schema.from_dict({
    "conversation_id": fields.String(required=True, validate=validate.Length(min=1), metadata={
        "label": "Conversation", "choices_from": "samva.list_conversations",
        "help": "The conversation whose messages to list."}),
    "status": _message_status(), "sort": _sort(), **_page_fields(20)},
    name="ListConversationMessagesInputs")


class ListConversationMessages(SamvaSearch):
    """GET /conversations/{id}/messages?status=&sort=&page=&limit=; a read."""

    key = "samva.list_conversation_messages"
    label = "Find messages in a conversation"
    help = "List the messages of one conversation, across its channels."
    Inputs = ListConversationMessagesInputs
    filters = ("status", "sort")
    sample = _found({**_MESSAGE, "status": "delivered"}, total=3)

    def path_for(self, inputs):
        return f"/conversations/{_path_id(inputs['conversation_id'])}/messages"


ListParticipantsInputs = Schema.from_dict({
    "phone": Phone(load_default=None, metadata={
        "label": "Phone", "help": "Only the participant with this number (with country code)."}),
    "email": fields.Email(load_default=None, metadata={
        "label": "Email", "help": "Only the participant with this email address."}),
    "conversation_id": fields.String(load_default=None, metadata={
        "label": "In conversation", "choices_from": "samva.list_conversations",
        "help": "Only the participants of this conversation."}),
    **_page_fields(100)}, name="ListParticipantsInputs")


class ListParticipants(SamvaSearch):
    """GET /participants?phone=&email=&conversation_id=&page=&limit=; a read."""

    key = "samva.list_participants"
    label = "Find participants"
    help = "Find participants by phone or email, or list those of a conversation."
    Inputs = ListParticipantsInputs
    path = "/participants"
    filters = ("phone", "email", "conversation_id")
    sample = _found(_PARTICIPANT)

    def option(self, record):
        label = (record.get("name") or record.get("phone") or record.get("email")
                 or record.get("id"))
        return {"value": record.get("id"), "label": str(label)}


@hookimpl
def register_actions(register):
    for action in (SendMessage, GetMessage, GetTemplate, GetConversation, CreateParticipant,
                   AddParticipant):
        register(action)


@hookimpl
def register_searches(register):
    for search in (ListMessages, ListTemplates, ListConversations, ListConversationMessages,
                   ListParticipants):
        register(search)
