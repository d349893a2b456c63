"""Contacts API (org-scoped CRM): the app, its auth and its credential test.

The document (seeds/004) prefixes every path with /api/v1 and scopes every call with the
X-Org-Id header; it names a "caller" but no key header, so we send the key as
``Authorization: Bearer <api_key>`` (the sandbox requires it). It gives no public host:
a connection must set its base URL.
"""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from connector import App, hookimpl


class Credentials(Schema):
    api_key = fields.String(required=True, validate=validate.Length(min=1),
                            metadata={"label": "API key", "secret": True,
                                      "help": "Sent as Authorization: Bearer <key>."})
    org_id = fields.String(required=True, validate=validate.Length(min=1),
                           metadata={"label": "Organization id",
                                     "help": "Sent as X-Org-Id on every request."})


class ContactsApi(App):
    key = "contacts_api"
    label = "Contacts API"
    help = "Org-scoped CRM: contacts, smart lists, tags, custom fields, opportunities."
    base_url = ""
    Credentials = Credentials

    def authenticate(self, request, credentials):
        request.headers["Authorization"] = f"Bearer {credentials['api_key']}"
        request.headers["X-Org-Id"] = credentials["org_id"]

    def test(self, client):
        page = client.get("/api/v1/contacts", params={"limit": 1})
        total = page.get("total") if isinstance(page, dict) else None
        return {"ok": True, "contacts": total}


@hookimpl
def register_apps(register):
    register(ContactsApi)
