"""The ``email.send_email`` action: one message over the connection's SMTP server.

SMTP has no idempotency key, so the send goes through the host's ledger (``ctx.once``):
a retried or replayed step returns the first result instead of sending again. The
Message-ID is derived from ``ctx.idempotency_key`` (``<key@sender's domain>``), so should
a message go out twice anyway (a connection lost after the server took it), the copies
share one Message-ID and mail clients show one.
"""
from __future__ import annotations

from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate

from marshmallow import ValidationError, fields, validate, validates_schema

from connector import Action, InputSchema

from .smtp import session, smtp_errors

MAX_RECIPIENTS = 100


class Addresses(fields.Field):
    """One address or several: a list, or text separated by commas or semicolons."""

    def _deserialize(self, value, attr, data, **kwargs):
        parts = value if isinstance(value, list) else str(value).replace(";", ",").split(",")
        addresses = [str(p).strip() for p in parts if str(p).strip()]
        check = validate.Email(error="not an email address: {input}")
        for address in addresses:
            check(address)
        if len(addresses) > MAX_RECIPIENTS:
            raise ValidationError(f"at most {MAX_RECIPIENTS} addresses")
        return addresses


class SendInputs(InputSchema):
    to = Addresses(required=True, metadata={
        "label": "To", "help": "One or more addresses, separated by commas."})
    cc = Addresses(load_default=list, metadata={"label": "Cc", "help": "Optional."})
    reply_to = fields.Email(load_default=None, metadata={"label": "Reply to"})
    subject = fields.String(required=True, validate=validate.Length(min=1, max=998),
                            metadata={"label": "Subject"})
    text = fields.String(load_default=None, metadata={
        "label": "Text body", "help": "Plain text; give it, the HTML body, or both."})
    html = fields.String(load_default=None, metadata={
        "label": "HTML body", "help": "Sent with the text body as its alternative."})

    @validates_schema
    def has_a_body(self, data, **_):
        if not data.get("text") and not data.get("html"):
            raise ValidationError("give a text body, an HTML body, or both", "text")
        if not data.get("to"):
            raise ValidationError("give at least one address", "to")


class SendEmail(Action):
    """SMTP send, guarded by the ledger; Message-ID from the step's idempotency key."""

    key = "email.send_email"
    app = "email"
    label = "Send email"
    help = "Send an email (text, HTML or both) from the connection's address."
    Inputs = SendInputs
    sample = {"message_id": "<3f9a0c1d2e4b5a6978c0d1e2f3a4b5c6d7e8f901@example.com>",
              "to": ["jane@example.com"], "cc": [], "subject": "Your order A-1001",
              "refused": {}}

    def run(self, ctx, inputs):
        creds = ctx.client.credentials
        domain = creds["from_address"].rpartition("@")[2]
        message_id = f"<{ctx.idempotency_key}@{domain}>"
        request = {"to": inputs["to"], "cc": inputs["cc"], "reply_to": inputs["reply_to"],
                   "subject": inputs["subject"], "text": inputs["text"],
                   "html": inputs["html"], "from": creds["from_address"]}
        message = build_message(creds, inputs, message_id)
        timeout = ctx.client.app.timeout

        def send() -> dict:
            with session(creds, timeout) as smtp:
                with smtp_errors(f"SMTP server {creds['host']}", sending=True):
                    refused = smtp.send_message(message)
            return {"message_id": message_id, "to": inputs["to"], "cc": inputs["cc"],
                    "subject": inputs["subject"],
                    "refused": {addr: f"{code} {msg.decode('utf-8', 'replace')}"
                                for addr, (code, msg) in (refused or {}).items()}}

        return ctx.once(ctx.idempotency_key, request, send)


def build_message(creds: dict, inputs: dict, message_id: str) -> EmailMessage:
    """Return the message: headers, then text and/or HTML parts."""
    message = EmailMessage()
    sender = creds["from_address"]
    if creds.get("from_name"):
        user, _, domain = sender.rpartition("@")
        sender = Address(creds["from_name"], user, domain)
    message["From"] = sender
    message["To"] = ", ".join(inputs["to"])
    if inputs["cc"]:
        message["Cc"] = ", ".join(inputs["cc"])
    if inputs.get("reply_to"):
        message["Reply-To"] = inputs["reply_to"]
    message["Subject"] = inputs["subject"]
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = message_id
    if inputs.get("text"):
        message.set_content(inputs["text"])
        if inputs.get("html"):
            message.add_alternative(inputs["html"], subtype="html")
    else:
        message.set_content(inputs["html"], subtype="html")
    return message
