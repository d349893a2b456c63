"""List, save and delete the organisation's saved smart-list views."""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from connector import Action, Search, UserError
from connector.plugins.contacts_api import API, items_of

from .search import QUERY_HELP, Query, query_body
from .shared import missing_ok_field

VIEW_SAMPLE = {"id": "view_hot_leads", "name": "Hot leads", "q": None, "query": {"groups": [
    {"conditions": [{"field": "tags", "op": "contains", "value": "vip"}]}]},
    "created_at": "2026-01-15T10:30:00.000000Z", "updated_at": "2026-01-15T10:30:00.000000Z"}


def read_views(client) -> list[dict]:
    return items_of(client.get(f"{API}/contacts/views"))


def find_view(views: list[dict], ref: str) -> dict | None:
    """Return the view whose id is ``ref``, else the one named ``ref`` (any case)."""
    return (next((v for v in views if str(v.get("id")) == ref), None)
            or next((v for v in views if str(v.get("name", "")).lower() == ref.lower()), None))


class ListViews(Search):
    """GET /api/v1/contacts/views (org-shared smart lists); a read that fills dropdowns."""

    key = "contacts_api.list_views"
    app = "contacts_api"
    label = "List saved views"
    help = "List the organisation's saved smart-list views."
    sample = {"found": True, "count": 1, "first": VIEW_SAMPLE, "results": [VIEW_SAMPLE]}

    def search(self, ctx, inputs):
        return read_views(ctx.client)


class SaveViewInputs(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=100), metadata={
        "label": "View name", "help": "A view with this name (any case) is replaced."})
    query = fields.Nested(Query, required=True, metadata={"label": "Filter",
                                                          "help": QUERY_HELP})
    q = fields.String(load_default=None, metadata={
        "label": "Search text", "help": "Free text the view also matches."})
    view = fields.String(load_default=None, metadata={
        "label": "Replace view", "help": "Replace (and rename) this view instead of the one "
                                         "with the same name.",
        "choices_from": "contacts_api.list_views"})


class SaveView(Action):
    """GET then PUT /api/v1/contacts/views. PUT replaces ALL views, so this reads the list,
    replaces or adds this one view, and puts the whole list back (other views as read);
    naturally idempotent. A view someone else saves between the read and the put is lost:
    the document offers no version check."""

    key = "contacts_api.save_view"
    app = "contacts_api"
    label = "Save view"
    help = "Create or replace a saved smart-list view, keeping every other view."
    Inputs = SaveViewInputs
    sample = {**VIEW_SAMPLE, "created": True}

    def run(self, ctx, inputs):
        views = read_views(ctx.client)
        ref = inputs.get("view")
        target = find_view(views, ref) if ref else find_view(views, inputs["name"])
        if ref and target is None:
            raise UserError(f"no saved view {ref!r}; pick one from the list")
        if target is not None and str(target.get("name", "")).lower() != inputs["name"].lower():
            clash = find_view([v for v in views if v is not target], inputs["name"])
            if clash is not None:
                raise UserError(f"another view is already named {inputs['name']!r}")
        entry = {**(target or {}), "name": inputs["name"], "query": query_body(inputs["query"]),
                 "q": inputs.get("q")}
        merged = [entry if v is target else v for v in views] if target else [*views, entry]
        saved = items_of(ctx.client.put(f"{API}/contacts/views", json={"views": merged}))
        result = (find_view(saved, str(target["id"])) if target and target.get("id") else None
                  ) or find_view(saved, inputs["name"]) or entry
        return {**result, "created": target is None}


class DeleteViewInputs(Schema):
    view = fields.String(required=True, validate=validate.Length(min=1), metadata={
        "label": "View", "help": "The view's id or name.",
        "choices_from": "contacts_api.list_views"})
    missing_ok = missing_ok_field()


class DeleteView(Action):
    """GET then PUT /api/v1/contacts/views without the view (PUT replaces ALL views, so the
    others are put back as read); naturally idempotent."""

    key = "contacts_api.delete_view"
    app = "contacts_api"
    label = "Delete view"
    help = "Remove one saved smart-list view, keeping every other view."
    Inputs = DeleteViewInputs
    sample = {"id": "view_hot_leads", "name": "Hot leads", "deleted": True}

    def run(self, ctx, inputs):
        views = read_views(ctx.client)
        target = find_view(views, inputs["view"])
        if target is None:
            if inputs["missing_ok"]:
                return {"id": None, "name": inputs["view"], "deleted": False}
            raise UserError(f"no saved view {inputs['view']!r}")
        ctx.client.put(f"{API}/contacts/views",
                       json={"views": [v for v in views if v is not target]})
        return {"id": target.get("id"), "name": target.get("name"), "deleted": True}
