"""AI Connector (AI chat bot platform): the app, its two auth placements, its credential test.

The document (seeds/003) puts the key in the ``apiKey`` query parameter for every call except
POST /subaccounts/credits, which takes it in the ``x-api-key`` header "not as a query
parameter"; actions ask for that placement with ``auth="header"``. The document's base URL,
https://api.example.com/v1/, is a placeholder (example.com is reserved), so a connection must
give the platform's real one, ending in /v1.
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
