"""AI Connector (AI chat bot platform): the app, its two auth placements, its credential test.

The document (seeds/003) puts the key in the ``apiKey`` query parameter for every call except
POST /subaccounts/credits, which takes it in the ``x-api-key`` header "not as a query
parameter"; actions ask for that placement with ``auth="header"``. The document's base URL,
https://api.example.com/v1/, is a placeholder (example.com is reserved), so a connection must
give the platform's real one, ending in /v1.

Decisions where the document is vague, kept in step with the sandbox
(connector/sandbox/aiconnector.py):

- Errors carry the document's envelope ``{"error": {"code", "message"}}``, read as is. A 429
  is retried after "the time indicated in the response headers": Retry-After, else
  X-RateLimit-Reset (the client's rule for every app).
- Rate limit: "limited per API key per minute", with no number, so the app sets no default
  (``rate_limit = None``); give a connection its plan's figure with ``connections add
  --rate-limit N/min`` to stay under it across workers instead of meeting 429s. No endpoint
  takes an idempotency key (``idempotency_header = None``).
- Phones are sent in E.164 (``connector.Phone``); the document asks for the country code.
- GET /contacts?phoneNumber=X or ?email=X answers the contact; 404 means no contact
  matches, which a search reports as ``found: false``, not as an error.
- No endpoint lists contact lists or campaigns, so their ids are typed (copied from the
  app), never offered in a dropdown.
- POST /send_custom_channel_message takes no idempotency key: the host's ledger sends it at
  most once per step. POST /incoming_custom_channel_message drops a repeated
  ``messageSid``: the action sends the one mapped, else ``connector-<step idempotency
  key>``, so a retry never duplicates.
- Neither webhook (auto-recharge; a custom channel's outbound messages, from the Custom
  Channels guide the document refers to but does not include) has an API: the user pastes
  the flow's URL and the signing secret the connector generates into the dashboard. Both
  are verified the Standard Webhooks way. A custom channel's delivery is ``{"event":
  "outbound_custom_channel_message", "messageId", "messageType", "createdAt",
  "customData": {"messageId", "customChannel", "body", "fromId" (the contact's id on your
  platform, as in the send endpoint), "contactId", "source" (bot or api), "toId"?,
  "campaignId"?, "firstName"?, "lastName"?, "email"?, "inReplyTo"?}}``; the trigger also
  takes these fields at the top level, and dedupes on the messageId. The auto-recharge
  body is ``{"event": "auto_recharge", "idempotency_key", "sub_account_id", "email",
  "amount", "current_balance", "threshold", "created_at"}``, deduped on the
  idempotency_key forever.
"""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from connector import App, FatalAPIError, hookimpl


class Credentials(Schema):
    api_key = fields.String(required=True, validate=validate.Length(min=1),
                            metadata={"label": "API key", "secret": True,
                                      "help": "Settings > Account > API Key in the app."})


class AIConnector(App):
    key = "aiconnector"
    label = "AI Connector"
    help = "AI chat bot platform: contacts, lists, custom-channel messages, agency credits."
    base_url = ""  # the document's https://api.example.com/v1/ is a placeholder
    Credentials = Credentials

    def authenticate(self, request, credentials):
        if request.auth == "header":
            request.headers["x-api-key"] = credentials["api_key"]
        else:
            request.params["apiKey"] = credentials["api_key"]

    def test(self, client):
        # A lookup that finds nothing proves the key works (404) without touching data.
        try:
            client.get("/contacts", params={"email": "connection-test@connector.invalid"})
        except FatalAPIError as exc:
            if exc.status != 404:
                raise
        return {"ok": True}


@hookimpl
def register_apps(register):
    register(AIConnector)
