"""AI Connector triggers: the agency auto-recharge webhook, a custom channel's outbound messages.

Neither webhook has an API to register it: the user pastes the flow's URL, and the signing
secret the connector generates on switch-on (kept across off and on), into the AI Connector
dashboard: the auto-recharge settings, or the custom channel's webhook URL (the Custom
Channels guide the document refers to is not included). With no documented signature
scheme both verify Standard Webhooks; ``signature: none`` relies on the unguessable URL
alone.

- auto-recharge: the idempotency_key is the dedupe key and is kept forever (credits).
- outbound message: what the platform sends out on a custom channel (the bot's replies,
  and messages sent through POST /send_custom_channel_message) arrives as
  ``{"event", "messageId", "messageType", "createdAt", "customData": {...}}``; the item is
  the top-level fields with customData's merged over them, so ``body``, ``fromId`` (the
  contact's id on your platform), ``customChannel``, ``contactId``, ``inReplyTo`` and
  ``source`` map directly. Fields sent at the top level instead of in customData are read
  the same way. The messageId (else messageSid or id) is the dedupe key, so a redelivery
  under a new ``webhook-id`` still fires once.
"""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from connector import WebhookTrigger, hookimpl
from connector.signatures import new_secret, verify_subscription

REQUIRED = ("idempotency_key", "email", "amount")


def _signature_field():
    return fields.String(load_default="standard_webhooks",
                         validate=validate.OneOf(["standard_webhooks", "none"]),
                         metadata={"label": "Signature check",
                                   "help": "standard_webhooks, or none to rely on the "
                                           "secret URL alone."})


class PastedWebhook(WebhookTrigger):
    """A webhook the user sets up in the AI Connector dashboard, signed with our secret."""

    app = "aiconnector"
    manual_setup = True

    def subscribe(self, ctx, url):
        # The user pasted this secret into AI Connector: keep it across off and on.
        return {"secret": ctx.previous_subscription.get("secret") or new_secret(), "url": url}

    def verify(self, ctx, request, subscription):
        if ctx.inputs.get("signature") == "none":
            return
        verify_subscription(subscription, request.headers, request.body)

    def request_dedupe_key(self, item, request):
        return self.dedupe_key(item)


class Inputs(Schema):
    signature = _signature_field()


class AutoRecharge(PastedWebhook):
    """POST <flow URL> from AI Connector when a sub-account's auto-recharge fires.

    No subscription API: paste the URL and secret into the auto-recharge settings. Idempotent
    through the payload's ``idempotency_key``, the dedupe key, remembered forever: a
    redelivered recharge never starts a second run (and grant credits keys its ledger on it).
    """

    key = "aiconnector.auto_recharge"
    label = "Sub-account auto-recharge"
    help = ("Fires when a sub-account's credits fall below its threshold; carries the "
            "sub-account email, the amount and an idempotency_key.")
    Inputs = Inputs
    dedupe_ttl = None  # credit grants: a key is remembered forever
    sample = {"idempotency_key": "ar_7f3c2a9d", "email": "client@agency.example",
              "amount": 500, "sub_account_id": "sub_123", "current_balance": 12,
              "threshold": 50, "event": "auto_recharge"}

    def parse(self, ctx, request):
        body = request.json()
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        item = {**body, **body["data"]} if isinstance(body.get("data"), dict) else dict(body)
        item.setdefault("email", item.get("sub_account_email"))
        for name in REQUIRED:
            if item.get(name) in (None, ""):
                raise ValueError(f"payload is missing field {name!r}")
        return [item]

    def dedupe_key(self, item):
        return str(item["idempotency_key"])


class OutboundMessageInputs(Schema):
    custom_channel = fields.String(load_default=None, allow_none=True, metadata={
        "label": "Only this channel",
        "help": "The custom channel's name; messages on other channels are ignored. Leave "
                "empty to take every channel whose webhook points here."})
    signature = _signature_field()


class OutboundMessage(PastedWebhook):
    """POST <flow URL> from AI Connector for each message sent out on a custom channel.

    No subscription API: paste the URL and secret as the custom channel's webhook URL in the
    dashboard (one URL may serve several channels). Idempotent through the ``messageId``,
    the dedupe key: a redelivered message fires once.
    """

    key = "aiconnector.outbound_message"
    label = "Message sent on a custom channel"
    help = ("Fires when the bot (or the API) sends a message out on your custom channel, for "
            "you to deliver to the contact on your platform.")
    Inputs = OutboundMessageInputs
    sample = {"event": "outbound_custom_channel_message", "messageId": "9f2c41d0a7b3e5c8d6f1",
              "messageType": "text", "createdAt": "2026-01-15T10:31:00Z",
              "customChannel": "my-channel", "fromId": "external-contact-id",
              "contactId": "abc123xyz", "toId": "your-user-id",
              "body": "Thanks for your message! How can I help?",
              "inReplyTo": "unique-message-id", "source": "bot"}

    def parse(self, ctx, request):
        body = request.json()
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        data = body.get("customData")
        if data is not None and not isinstance(data, dict):
            raise ValueError("field 'customData' must be an object")
        item = {k: v for k, v in body.items() if k != "customData"} | (data or {})
        message_id = item.get("messageId") or item.get("messageSid") or item.get("id")
        if message_id in (None, ""):
            raise ValueError("payload is missing field 'messageId'")
        item["messageId"] = str(message_id)
        if not isinstance(item.get("body"), str):
            raise ValueError("payload is missing field 'body'")
        item.setdefault("customChannel", item.get("channel"))
        wanted = ctx.inputs.get("custom_channel")
        if wanted and item.get("customChannel") != wanted:
            return []  # a channel this flow does not listen to
        return [item]

    def dedupe_key(self, item):
        return str(item["messageId"])


@hookimpl
def register_triggers(register):
    register(AutoRecharge)
    register(OutboundMessage)
