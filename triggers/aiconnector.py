"""AI Connector triggers: the agency auto-recharge webhook.

The document mentions the webhook only through its ``idempotency_key`` (grant-credits tip)
and has no API to register it: the user pastes the flow's URL, and the signing secret the
connector generates on switch-on, into the AI Connector dashboard. With no documented
signature scheme we verify Standard Webhooks; ``signature: none`` relies on the unguessable
URL alone. The idempotency_key is the dedupe key and is kept forever (credits).
"""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from connector import WebhookTrigger, hookimpl
from connector.signatures import new_secret, verify_subscription

REQUIRED = ("idempotency_key", "email", "amount")


class Inputs(Schema):
    signature = fields.String(load_default="standard_webhooks",
                              validate=validate.OneOf(["standard_webhooks", "none"]),
                              metadata={"label": "Signature check",
                                        "help": "standard_webhooks, or none to rely on the "
                                                "secret URL alone."})


class AutoRecharge(WebhookTrigger):
    key = "aiconnector.auto_recharge"
    app = "aiconnector"
    label = "Sub-account auto-recharge"
    help = ("Fires when a sub-account's credits fall below its threshold; carries the "
            "sub-account email, the amount and an idempotency_key.")
    Inputs = Inputs
    manual_setup = True
    dedupe_ttl = None  # credit grants: a key is remembered forever
    sample = {"idempotency_key": "ar_7f3c2a9d", "email": "client@agency.example",
              "amount": 500, "sub_account_id": "sub_123", "current_balance": 12,
              "threshold": 50, "event": "auto_recharge"}

    def subscribe(self, ctx, url):
        # The user pasted this secret into AI Connector: keep it across off and on.
        return {"secret": ctx.previous_subscription.get("secret") or new_secret(), "url": url}

    def verify(self, ctx, request, subscription):
        if ctx.inputs.get("signature") == "none":
            return
        verify_subscription(subscription, request.headers, request.body)

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

    def request_dedupe_key(self, item, request):
        return self.dedupe_key(item)


@hookimpl
def register_triggers(register):
    register(AutoRecharge)
