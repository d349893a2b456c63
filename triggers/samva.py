"""Samva webhook triggers: message.delivered and message.failed.

Switching a flow on registers its URL through ``POST /webhooks`` with the one event and a
secret the connector generates (``whsec_`` + 24 random bytes: the document has the client
choose the secret); switching off deletes it (``DELETE /webhooks/{id}``, a 404 counts as
done). The document names no signature scheme, so deliveries are verified the Standard
Webhooks way (webhook-id, webhook-timestamp, webhook-signature over the raw body). The
payload shape is undocumented: the item is the message (``data``, else the body itself)
plus ``event`` (from ``type`` or ``event``), ``message_id`` and ``occurred_at``; an event
other than the flow's is ignored. The dedupe key is message id + event, so a redelivery under
a new webhook-id still fires once.
"""
from __future__ import annotations


from marshmallow import Schema, fields, validate

from connector import FatalAPIError, ServiceWebhookTrigger, hookimpl
from connector.signatures import new_secret

CHANNELS = ("sms", "whatsapp", "email")


class Inputs(Schema):
    channel = fields.String(load_default=None, validate=validate.OneOf(CHANNELS), metadata={
        "label": "Only on channel", "help": "Fire only for sms, whatsapp or email messages; "
                                            "empty fires for all three."})


class MessageEvent(ServiceWebhookTrigger):
    """A Samva message status event delivered to a webhook this trigger registers."""

    hooks_path = "/webhooks"

    app = "samva"
    event = ""
    Inputs = Inputs

    def subscribe(self, ctx, url):
        secret = new_secret()
        created = ctx.client.post("/webhooks", json={
            "url": url, "events": [self.event], "secret": secret,
            "description": f"connector flow {ctx.flow_name}"})
        hook = created.get("data", created) if isinstance(created, dict) else {}
        hook_id = hook.get("id") if isinstance(hook, dict) else None
        if not hook_id:
            raise FatalAPIError("Samva created the webhook but returned no id")
        return {"id": str(hook_id), "secret": secret}

    def parse(self, ctx, request):
        body = request.json()
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        event = body.get("type") or body.get("event")
        if event != self.event:
            return []  # a webhook registered for one event should get no other; ignore it
        data = body.get("data") if isinstance(body.get("data"), dict) else body
        message_id = data.get("id") or data.get("message_id")
        if not message_id:
            raise ValueError("payload is missing the message id ('data.id')")
        channel = (ctx.inputs or {}).get("channel")
        if channel and data.get("channel") != channel:
            return []
        item = {k: v for k, v in data.items() if k not in ("type", "event")}
        return [{**item, "event": event, "message_id": str(message_id),
                 "occurred_at": body.get("timestamp") or data.get("updated_at")}]

    def dedupe_key(self, item):
        return f"{item['message_id']}:{item['event']}"

    def request_dedupe_key(self, item, request):
        return self.dedupe_key(item)


_SAMPLE = {"id": "msg_6441a867c15a772d417b358a", "message_id": "msg_6441a867c15a772d417b358a",
           "organization_id": "org_demo", "direction": "outbound", "channel": "sms",
           "to": "+919876543210", "from": "SAMVA",
           "content": {"template_id": "dlt_template_123", "variables": {"otp": "123456"}},
           "body": "Your Samva verification code is 123456. It is valid for 10 minutes.",
           "subject": None, "conversation_id": "conv_demo", "participant_id": "par_demo_asha",
           "credits_used": 1, "metadata": {}, "created_at": "2024-01-15T10:30:00Z",
           "sent_at": "2024-01-15T10:30:01Z"}


class MessageDelivered(MessageEvent):
    """On: POST /webhooks {url, events: ["message.delivered"], secret}; off: DELETE
    /webhooks/{id}. Fires once per message (dedupe key ``<message id>:message.delivered``)."""

    key = "samva.message_delivered"
    label = "Message delivered"
    help = "Fires when Samva reports a message you sent as delivered."
    event = "message.delivered"
    sample = {**_SAMPLE, "status": "delivered", "event": "message.delivered", "error": None,
              "delivered_at": "2024-01-15T10:30:03Z", "failed_at": None,
              "updated_at": "2024-01-15T10:30:03Z", "occurred_at": "2024-01-15T10:30:03Z"}


class MessageFailed(MessageEvent):
    """On: POST /webhooks {url, events: ["message.failed"], secret}; off: DELETE
    /webhooks/{id}. Fires once per message (dedupe key ``<message id>:message.failed``);
    the item's ``error`` carries Samva's code and reason."""

    key = "samva.message_failed"
    label = "Message failed"
    help = "Fires when a message you sent could not be delivered, with Samva's reason."
    event = "message.failed"
    sample = {**_SAMPLE, "status": "failed", "event": "message.failed",
              "error": {"code": "UNDELIVERABLE",
                        "message": "The sms message to +919876543210 could not be delivered."},
              "delivered_at": None, "failed_at": "2024-01-15T10:30:03Z",
              "updated_at": "2024-01-15T10:30:03Z", "occurred_at": "2024-01-15T10:30:03Z"}


@hookimpl
def register_triggers(register):
    register(MessageDelivered)
    register(MessageFailed)
