"""Contacts API (org-scoped CRM): the app, its auth, its credential test, shared helpers.

The document (seeds/004) prefixes every path with /api/v1, scopes every call with the
X-Org-Id header and says each caller sees only what its data-scoping allows (a member
restricted to "only assigned data" sees only its assigned contacts). It gives no public
host, no key header, no page or error shape and no limits. What we decided, in step with
the sandbox (connector/sandbox/contacts_api.py):

- Auth: ``Authorization: Bearer <api_key>`` plus ``X-Org-Id: <org_id>`` on every request.
  A connection must set its base URL (the part before /api/v1).
- Errors: ``{"error": {"code", "message", "details"}}`` (FastAPI-style ``detail`` is read
  too); 422 for validation, 404 ``*_NOT_FOUND``, 409 for a duplicate tag or custom-field key.
  Answers: 201 on create, 204 on delete.
- Lists answer ``{"items", "total", ...}``; the plugins also read a bare list and ``data``/
  ``results``/``contacts``/``views``. ``GET /contacts`` pages with ``limit`` (1..200) and
  ``offset`` and filters with ``q`` and ``tag``; the triggers ask for 100 a page.
- Bulk import ``POST /contacts/import``: ``{"contacts": [...], "match_by": "email" | "phone"
  | "none", "on_match": "update" | "skip"}``, at most 500 rows a request; the answer is the
  summary ``{"total", "created", "updated", "skipped", "errors": [{"index", "field",
  "message"}]}``. The import action splits larger lists (and bodies near the 2 MiB limit)
  into batches, each guarded by its own ``ctx.once`` key, and sums the summaries with
  error indexes counted from the start of the whole list.
- Advanced search ``POST /contacts/search``: the document's OR-of-AND model (OR across
  groups, AND within one) with ``q``, ``limit`` and ``offset``. Operators: eq, neq, contains,
  not_contains, starts_with, ends_with, in, not_in, exists, not_exists on the text columns
  (name, email, phone, company, source, notes); contains / not_contains / in / not_in /
  exists / not_exists on tags; eq / neq (boolean) on dnc; gt / gte / lt / lte (ISO date or
  datetime) on created_at; every operator on custom.<key>. At most 20 groups of 1..20
  conditions; in/not_in take 1..100 values. The action's schema checks all of this before
  the call; the service answers 422 naming the bad group and condition.
- Saved views: ``GET /contacts/views`` and ``PUT /contacts/views`` carry ``{"views": [{"id",
  "name", "query", "q"}]}``. PUT replaces every view, so saving or deleting one view reads
  the list, changes that view and puts the whole list back (a view another user saves
  between our read and our put is lost: the document offers no version check).
- Tags are names (exact, case-sensitive); dropdowns offer tag names. Deleting a tag takes
  its id, so the delete action accepts a name or an id and looks the id up. Removing a tag
  from a contact sends the name URL-encoded (``/`` too).
- Custom fields have an id and a ``key`` (used as custom.<key> and in
  ``PUT /contacts/{id}/custom/{key}``); dropdowns offer keys, and update/delete accept a key
  or an id and look the id up. Custom values (the ``{{custom_values.x}}`` token store) are
  text, keyed by name.
- Rate limit: the document states none, so the app sets no default (``rate_limit = None``);
  a connection may set one (``connections add --rate-limit``).
- Idempotency: the document names no idempotency key. Creating a contact and each import
  batch go through the host's ledger (``ctx.once``); creating a tag or a custom field that
  already exists (409) returns the existing one; updates, puts, tag adds and removes are
  naturally idempotent; deletes treat "already gone" (404) as done unless told otherwise.
"""
from __future__ import annotations

from urllib.parse import quote

from marshmallow import Schema, fields, validate

from connector import App, hookimpl

API = "/api/v1"
LIST_KEYS = ("items", "data", "results", "contacts", "views", "tags", "custom_fields",
             "custom_values", "opportunities")


def seg(value) -> str:
    """Return ``value`` encoded as one URL path segment ("/" and spaces included)."""
    return quote(str(value), safe="")


def items_of(answer) -> list[dict]:
    """Return the records of a list answer, whichever common shape the service uses."""
    if isinstance(answer, list):
        return [r for r in answer if isinstance(r, dict)]
    if isinstance(answer, dict):
        for key in LIST_KEYS:
            if isinstance(answer.get(key), list):
                return [r for r in answer[key] if isinstance(r, dict)]
    raise ValueError("the Contacts API answered a list request without a list")


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
        page = client.get(f"{API}/contacts", params={"limit": 1})
        total = page.get("total") if isinstance(page, dict) else None
        return {"ok": True, "contacts": total}


@hookimpl
def register_apps(register):
    register(ContactsApi)
