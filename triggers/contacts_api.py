"""Contacts API triggers: "new contact" polls GET /api/v1/contacts.

The document does not state the list's order or page shape, so the poll reads the common
shapes (a bare list, or ``items``/``data``/``contacts``/``results`` with ``total``), pages
with ``limit``/``offset``, and stops early only when pages are visibly newest-first and it
has reached contacts older than the newest one seen last time (minus an overlap window).
The host's ledger removes every repeat, so overlapping pages are harmless.
"""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from connector import PollTrigger, hookimpl

PAGE_SIZE = 100
OLDEST = ""  # sorts before any timestamp: the first poll reads every page


def page_items(page) -> tuple[list, int | None]:
    """Return (items, total) from any of the list shapes a contacts endpoint may use."""
    if isinstance(page, list):
        return page, None
    if isinstance(page, dict):
        for key in ("items", "data", "contacts", "results"):
            if isinstance(page.get(key), list):
                total = page.get("total")
                if total is None and isinstance(page.get("pagination"), dict):
                    total = page["pagination"].get("total")
                return page[key], total if isinstance(total, int) else None
    raise ValueError("the contacts list answer holds no list of contacts")


class Inputs(Schema):
    tag = fields.String(load_default=None, metadata={
        "label": "Only with tag", "help": "Fire only for contacts carrying this tag."})
    max_pages = fields.Integer(load_default=20, validate=validate.Range(min=1, max=1000),
                               metadata={"label": "Pages per poll",
                                         "help": "At most this many pages of 100 per poll."})


class NewContact(PollTrigger):
    key = "contacts_api.new_contact"
    app = "contacts_api"
    label = "New contact"
    help = "Fires once for each contact created after the flow is switched on."
    Inputs = Inputs
    default_interval = 60
    sample = {"id": "5b0c1f9e-8d3c-4bb7-9a57-0c0d0e4b1a11", "name": "Jane Smith",
              "email": "jane@example.com", "phone": "+15551234567", "company": "Acme",
              "tags": ["lead"], "created_at": "2026-01-15T10:30:00Z"}

    def poll(self, ctx):
        params = {"limit": PAGE_SIZE}
        if ctx.inputs.get("tag"):
            params["tag"] = ctx.inputs["tag"]
        since = ctx.state.get("newest_created_at") or OLDEST
        found, newest = [], since
        for page_no in range(ctx.inputs.get("max_pages") or 20):
            page = ctx.client.get("/api/v1/contacts", params={**params, "offset": page_no * PAGE_SIZE})
            items, total = page_items(page)
            contacts = [c for c in items if isinstance(c, dict) and c.get("id") is not None]
            found.extend(contacts)
            stamps = [str(c.get("created_at") or "") for c in contacts]
            newest = max([newest, *[s for s in stamps if s]])
            newest_first = stamps == sorted(stamps, reverse=True) and all(stamps)
            if len(items) < PAGE_SIZE or (total is not None and (page_no + 1) * PAGE_SIZE >= total):
                break
            if newest_first and stamps and stamps[-1] < since:
                break  # everything further down is older than what we already saw
        ctx.state["newest_created_at"] = newest
        return found


@hookimpl
def register_triggers(register):
    register(NewContact)
