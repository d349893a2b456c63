"""The flow builder: /ui/flows/new and /ui/flows/<name>/edit, one page for writers.

The page is server-rendered around one JSON block (``#builder-data``): the catalog as
``GET /api/v1/apps`` answers it, the connections, the filter operators and, when editing,
the flow's definition exactly as ``GET /api/v1/flows/<name>`` (and the YAML export) gives
it. ``static/builder.js`` edits that definition in place, keeping whatever it has no editor
for, and saves it through ``POST /api/v1/flows`` or ``PUT /api/v1/flows/<name>``: one
model, two views. Nothing here changes anything; the API does.
"""
from __future__ import annotations

from flask import render_template

from .. import api, conditions, flows
from ..store import Connection
from . import signed_in, ui
from .pages import host

#: how each filter operator reads in the builder (conditions.OPS is the list offered)
OP_LABELS = {
    "equals": "equals", "not_equals": "does not equal", "contains": "contains",
    "not_contains": "does not contain", "starts_with": "starts with",
    "ends_with": "ends with", "gt": "is greater than", "gte": "is at least",
    "lt": "is less than", "lte": "is at most", "exists": "exists",
    "not_exists": "does not exist", "is_empty": "is empty", "not_empty": "is not empty",
    "matches": "matches the pattern", "in": "is one of", "not_in": "is not one of",
}


def catalog_data() -> list[dict]:
    """Return the apps as ``GET /api/v1/apps`` lists them, sorted by label."""
    catalog = host().catalog
    return [api.app_row(entry)
            for entry in sorted(catalog.apps.values(), key=lambda e: e.cls.label.lower())]


def builder_data(detail: dict | None) -> dict:
    """Return everything builder.js starts from (``detail``: the flow being edited)."""
    connections = [{"name": c.name, "app": c.app}
                   for c in Connection.select(Connection.name, Connection.app)
                   .order_by(Connection.name)]
    return {
        "apps": catalog_data(),
        "connections": connections,
        "ops": [{"op": op, "label": OP_LABELS.get(op, op.replace("_", " ")),
                 "unary": op in conditions.UNARY} for op in conditions.OPS],
        "flow": None if detail is None else {
            "name": detail["name"], "enabled": detail["enabled"],
            "paused_reason": detail["paused_reason"], "webhook_url": detail["webhook_url"],
            "definition": detail["definition"]},
    }


@ui.get("/ui/flows/new")
@signed_in("write")
def builder_new():
    return render_template("ui/builder.html", flow=None, data=builder_data(None))


@ui.get("/ui/flows/<name>/edit")
@signed_in("write")
def builder_edit(name: str):
    detail = api.flow_detail(flows.get(name))
    return render_template("ui/builder.html", flow=detail, data=builder_data(detail))
