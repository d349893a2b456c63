"""Contacts API poll triggers: new contact, contact updated, tag added, contact newly in a view.

The document gives no webhooks, no list order and no page shape, so each trigger polls and
reads the common shapes (a bare list, or ``items``/``data``/``contacts``/``results`` with
``total``), pages with ``limit``/``offset`` (100 a page) and leaves repeats to the host's
ledger. The first poll after switch-on records what exists without firing.

- new contact (GET /api/v1/contacts): dedupe on the id. It stops paging early only when the
  pages are visibly newest-first and it has reached contacts older than the newest one seen
  last time.
- contact updated (GET /api/v1/contacts?sort=-updated_at): dedupe on id + updated_at; a
  contact never changed since creation (updated_at equal to created_at) is not an update.
  ``sort`` is our own request, not documented (a 400/422 to it makes the trigger stop
  sending it): paging stops early only when the answer is visibly sorted by updated_at,
  newest first (otherwise every page up to the cap is read), and only contacts changed
  since the last poll minus a 5-minute overlap are returned.
- tag added (GET /api/v1/contacts?tag=<name>): every contact carrying the tag, checked here
  too; dedupe on contact id + tag, kept forever: a contact that loses and regains the tag
  does not fire again.
- contact newly in a saved view (GET /api/v1/contacts/views, then POST
  /api/v1/contacts/search with the view's query and q): dedupe on view id + contact id, kept
  forever: a contact that leaves the view and comes back does not fire again. A deleted view
  fails the poll with a message naming it.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from marshmallow import Schema, fields, validate

from connector import FatalAPIError, PollTrigger, hookimpl
from connector.plugins.contacts_api import API, items_of

PAGE_SIZE = 100
OLDEST = ""  # sorts before any timestamp: the first poll reads every page
OVERLAP = timedelta(minutes=5)  # changes committed late still get a poll to be seen in


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


def pages(fetch, max_pages: int):
    """Yield each page's contacts from ``fetch(offset)`` until the last page or the cap."""
    for page_no in range(max_pages):
        items, total = page_items(fetch(page_no * PAGE_SIZE))
        yield [c for c in items if isinstance(c, dict) and c.get("id") is not None]
        if len(items) < PAGE_SIZE or (total is not None and (page_no + 1) * PAGE_SIZE >= total):
            return


def parse_time(value) -> datetime | None:
    """Return an ISO 8601 timestamp as an aware datetime, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _max_pages(default: int = 20):
    return fields.Integer(load_default=default, validate=validate.Range(min=1, max=1000),
                          metadata={"label": "Pages per poll",
                                    "help": "At most this many pages of 100 per poll."})


CONTACT_SAMPLE = {"id": "5b0c1f9e-8d3c-4bb7-9a57-0c0d0e4b1a11", "name": "Jane Smith",
                  "email": "jane@example.com", "phone": "+15551234567", "company": "Acme",
                  "source": "web", "tags": ["lead"], "dnc": False, "custom": {},
                  "assigned_to": None, "created_at": "2026-01-15T10:30:00Z",
                  "updated_at": "2026-01-15T10:30:00Z"}


class Inputs(Schema):
    tag = fields.String(load_default=None, metadata={
        "label": "Only with tag", "help": "Fire only for contacts carrying this tag.",
        "choices_from": "contacts_api.list_tags"})
    max_pages = _max_pages()


class NewContact(PollTrigger):
    """Polls GET /api/v1/contacts (limit/offset pages, optional tag); dedupe on the id."""

    key = "contacts_api.new_contact"
    app = "contacts_api"
    label = "New contact"
    help = "Fires once for each contact created after the flow is switched on."
    Inputs = Inputs
    default_interval = 60
    sample = CONTACT_SAMPLE

    def poll(self, ctx):
        params = {"limit": PAGE_SIZE}
        if ctx.inputs.get("tag"):
            params["tag"] = ctx.inputs["tag"]
        since = ctx.state.get("newest_created_at") or OLDEST
        since_at = parse_time(since)
        resume = int(ctx.state.get("resume_offset") or 0)
        found, newest, reached_old, exhausted, read = [], since, False, False, 0
        budget = ctx.inputs.get("max_pages") or 20
        for page_no in range(budget):
            offset = resume + page_no * PAGE_SIZE
            items, total = page_items(_get_page(ctx, params, offset))
            contacts = [c for c in items if isinstance(c, dict) and c.get("id") is not None]
            read += len(items)
            found.extend(contacts)
            stamps = [parse_time(c.get("created_at")) for c in contacts]
            known = [t for t in stamps if t is not None]
            if known:
                newest = max([newest, *[c["created_at"] for c, t in zip(contacts, stamps)
                                        if t is not None and t == max(known)]],
                             key=lambda s: parse_time(s) or datetime.min.replace(
                                 tzinfo=timezone.utc))
            newest_first = bool(known) and len(known) == len(stamps) and known == sorted(
                known, reverse=True)
            if len(items) < PAGE_SIZE or (total is not None and offset + PAGE_SIZE >= total):
                exhausted = True
                break
            if newest_first and since_at is not None and known[-1] < since_at:
                reached_old = True  # everything further down is older than what we saw
                break
        if exhausted or reached_old:
            # Done with this sweep: the cursor moves to the newest contact seen in it.
            pending = ctx.state.pop("pending_newest", None)
            ctx.state.pop("resume_offset", None)
            ctx.state["newest_created_at"] = _later(newest, pending)
        else:
            # Stopped at the page cap before reaching what we already saw (a burst, or a
            # list that is not newest first): keep the cursor, and carry on further down
            # next time, so the unread rest is never skipped.
            ctx.state["resume_offset"] = resume + read
            ctx.state["pending_newest"] = _later(newest, ctx.state.get("pending_newest"))
            ctx.state["newest_created_at"] = since
            ctx.more = True
        fresh, ctx.state["window"] = recent(found, since, ctx.state["newest_created_at"],
                                            ctx.state.get("window") or {})
        return fresh


def _later(a, b):
    """Return whichever timestamp text is later (by parsed time); None counts as earliest."""
    if not b:
        return a
    if not a:
        return b
    pa, pb = parse_time(a), parse_time(b)
    if pa is None:
        return b
    if pb is None:
        return a
    return a if pa >= pb else b


def _get_page(ctx, params: dict, offset: int):
    """GET one page; a flaky page is retried so it does not throw a whole poll away."""
    return ctx.client.get(f"{API}/contacts", params={**params, "offset": offset}, retries=2)


#: how far before the newest contact already seen a poll still looks (late writes, skew)
NEW_CONTACT_OVERLAP = timedelta(hours=1)


def _when(text) -> datetime | None:
    try:
        value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def recent(contacts: list[dict], since: str, newest: str,
           window: dict[str, str]) -> tuple[list[dict], dict[str, str]]:
    """Return (contacts to hand to the ledger, the new window of ids already seen).

    The host's ledger drops repeats, but its keys expire (7 days). So the poll itself never
    returns a contact created before the newest one already seen minus NEW_CONTACT_OVERLAP, nor one in
    the window (ids created within that overlap of the newest, remembered in the cursor, which is
    saved in the same transaction as the runs). The first poll returns everything.
    """
    cutoff = _when(since)
    cutoff = cutoff - NEW_CONTACT_OVERLAP if cutoff else None
    fresh = []
    for contact in contacts:
        created = _when(contact.get("created_at"))
        if cutoff is not None and created is not None and created < cutoff:
            continue
        if str(contact["id"]) in window:
            continue
        fresh.append(contact)
    edge = _when(newest)
    edge = edge - NEW_CONTACT_OVERLAP if edge else None
    kept = dict(window)
    for contact in contacts:
        created = _when(contact.get("created_at"))
        if created is not None and (edge is None or created >= edge):
            kept[str(contact["id"])] = created.isoformat()
    kept = {cid: at for cid, at in kept.items() if edge is None or _when(at) >= edge}
    if len(kept) > WINDOW_CAP:  # a burst beyond this leans on the ledger alone
        kept = dict(sorted(kept.items(), key=lambda pair: pair[1])[-WINDOW_CAP:])
    return fresh, kept


WINDOW_CAP = 5000


class UpdatedInputs(Schema):
    max_pages = _max_pages()


class ContactUpdated(PollTrigger):
    """Polls GET /api/v1/contacts?sort=-updated_at; dedupe on id + updated_at, so each
    change fires once; contacts never changed since creation are left out."""

    key = "contacts_api.contact_updated"
    app = "contacts_api"
    label = "Contact updated"
    help = "Fires each time an existing contact is changed (fields, tags or custom values)."
    Inputs = UpdatedInputs
    default_interval = 60
    sample = {**CONTACT_SAMPLE, "company": "Acme Inc", "updated_at": "2026-01-16T09:00:00Z"}

    def poll(self, ctx):
        since = parse_time(ctx.state.get("newest_updated_at"))
        floor = since - OVERLAP if since else None
        newest = since
        found = []

        def fetch(offset):
            params = {"limit": PAGE_SIZE, "offset": offset}
            if not ctx.state.get("sort_refused"):
                try:
                    return ctx.client.get(f"{API}/contacts",
                                          params={**params, "sort": "-updated_at"})
                except FatalAPIError as exc:
                    if exc.status not in (400, 422):
                        raise
                    ctx.state["sort_refused"] = True  # a service that validates params
            return ctx.client.get(f"{API}/contacts", params=params)

        for contacts in pages(fetch, ctx.inputs.get("max_pages") or 20):
            stamps = [parse_time(c.get("updated_at")) for c in contacts]
            for contact, stamp in zip(contacts, stamps):
                if stamp is None:
                    continue
                newest = max(newest, stamp) if newest else stamp
                changed = contact.get("updated_at") != contact.get("created_at")
                if changed and (floor is None or stamp >= floor):
                    found.append(contact)
            known = [s for s in stamps if s is not None]
            newest_first = len(known) == len(stamps) and known == sorted(known, reverse=True)
            if floor is not None and newest_first and known and known[-1] < floor:
                break  # sorted by updated_at: the rest changed before the last poll
        if newest:
            ctx.state["newest_updated_at"] = newest.isoformat()
        return found

    def dedupe_key(self, item):
        return f"{item['id']}:{item.get('updated_at')}"


class TagInputs(Schema):
    tag = fields.String(required=True, validate=validate.Length(min=1), metadata={
        "label": "Tag", "help": "Fire when a contact gets this tag.",
        "choices_from": "contacts_api.list_tags"})
    max_pages = _max_pages(50)


class TagAdded(PollTrigger):
    """Polls GET /api/v1/contacts?tag=<name> (every page); dedupe on contact id + tag,
    kept forever."""

    key = "contacts_api.tag_added"
    app = "contacts_api"
    label = "Tag added to contact"
    help = "Fires when a contact gets the chosen tag (once per contact)."
    Inputs = TagInputs
    default_interval = 60
    dedupe_ttl = None  # membership, not an event: a forgotten key would fire again
    sample = {**CONTACT_SAMPLE, "tags": ["lead", "vip"], "tag": "vip"}

    def poll(self, ctx):
        tag = ctx.inputs["tag"]
        fetch = lambda offset: ctx.client.get(f"{API}/contacts", params={  # noqa: E731
            "limit": PAGE_SIZE, "offset": offset, "tag": tag})
        found = []
        for contacts in pages(fetch, ctx.inputs.get("max_pages") or 50):
            found.extend({**c, "tag": tag} for c in contacts if tag in (c.get("tags") or []))
        return found

    def dedupe_key(self, item):
        return f"{item['id']}:{item['tag']}"


class ViewInputs(Schema):
    view = fields.String(required=True, validate=validate.Length(min=1), metadata={
        "label": "Saved view", "help": "Fire when a contact starts matching this view.",
        "choices_from": "contacts_api.list_views"})
    max_pages = _max_pages(50)


class ContactEnteredView(PollTrigger):
    """Reads the view from GET /api/v1/contacts/views, then polls POST
    /api/v1/contacts/search with its query and q (every page); dedupe on view id + contact
    id, kept forever. The first poll records the view's current matches."""

    key = "contacts_api.contact_entered_view"
    app = "contacts_api"
    label = "Contact newly matches a saved view"
    help = "Fires when a contact starts matching a saved smart-list view."
    Inputs = ViewInputs
    default_interval = 60
    dedupe_ttl = None  # membership, not an event: a forgotten key would fire again
    sample = {**CONTACT_SAMPLE, "view_id": "view_hot_leads", "view_name": "Hot leads"}

    def poll(self, ctx):
        ref = ctx.inputs["view"]
        views = items_of(ctx.client.get(f"{API}/contacts/views"))
        view = (next((v for v in views if str(v.get("id")) == ref), None)
                or next((v for v in views if str(v.get("name", "")).lower() == ref.lower()),
                        None))
        if view is None:
            raise FatalAPIError(f"saved view {ref!r} no longer exists; pick another view",
                                status=404)
        body = {"query": view.get("query") or {"groups": []}, "limit": PAGE_SIZE}
        if view.get("q"):
            body["q"] = view["q"]
        fetch = lambda offset: ctx.client.post(f"{API}/contacts/search",  # noqa: E731
                                               json={**body, "offset": offset},
                                               idempotent=True)  # a read sent as POST
        found = []
        for contacts in pages(fetch, ctx.inputs.get("max_pages") or 50):
            found.extend({**c, "view_id": view.get("id"), "view_name": view.get("name")}
                         for c in contacts)
        return found

    def dedupe_key(self, item):
        return f"{item['view_id']}:{item['id']}"


@hookimpl
def register_triggers(register):
    register(NewContact)
    register(ContactUpdated)
    register(TagAdded)
    register(ContactEnteredView)
