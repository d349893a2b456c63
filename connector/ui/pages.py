"""The flows, connections and catalog pages: what the API answers, rendered for people.

Each view reads through the REST API's own row helpers (``connector.api``), so a page shows
exactly what ``GET /api/v1/...`` would; changes are made by the page's JavaScript through
the API.
"""
from __future__ import annotations

import yaml
from flask import current_app, render_template, request
from marshmallow import Schema, ValidationError, fields, validate

from .. import api, flows
from ..errors import UserError
from ..host import validation_message
from ..registry import describe_schema
from ..store import Connection, Flow
from . import signed_in, ui


def host():
    return current_app.extensions["connector"]


def query_args(schema: type[Schema]) -> dict:
    """Load the query string with ``schema``; bad values raise UserError naming the field."""
    try:
        return schema().load(request.args.to_dict())
    except ValidationError as err:
        raise UserError(f"Bad address: {validation_message(err)}") from None


class ListQuery(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=100))


def page_of(query, args: dict, row) -> dict:
    """Return ``{"data", "pagination"}`` for ``query`` (the API's pagination, for pages)."""
    return api.paginate(query, args, row)


@ui.app_template_global("component_label")
def component_label(key: str | None) -> str:
    """Return a trigger's, action's or search's label, or the key when nothing knows it."""
    catalog = host().catalog
    for table in (catalog.triggers, catalog.actions, catalog.searches):
        entry = table.get(key)
        if entry is not None:
            return entry.cls.label
    return key or ""


# -- flows -------------------------------------------------------------------------------------

@ui.get("/ui/flows")
@signed_in
def flows_list():
    args = query_args(ListQuery)
    query = Flow.select().order_by(Flow.name)
    page = page_of(query, args, lambda f: f)
    page["data"] = api.flow_rows(page["data"])
    return render_template("ui/flows.html", page=page)


@ui.get("/ui/flows/<name>")
@signed_in
def flow_page(name: str):
    flow = flows.get(name)
    detail = api.flow_detail(flow)
    others = [f.name for f in Flow.select(Flow.name).where(Flow.id != flow.id)
              .order_by(Flow.name)]
    text = yaml.safe_dump(detail["definition"], sort_keys=False)
    return render_template("ui/flow.html", flow=detail, yaml_text=text, other_flows=others)


# -- connections -------------------------------------------------------------------------------

def credential_apps() -> list[dict]:
    """Return the apps a connection can be made for, with their credential fields."""
    apps = []
    for key, entry in sorted(host().catalog.apps.items(), key=lambda kv: kv[1].cls.label):
        creds = describe_schema(entry.cls.Credentials)
        if creds:
            apps.append({"key": key, "label": entry.cls.label, "credentials": creds,
                         "base_url": entry.cls.base_url or None})
    return apps


@ui.get("/ui/connections")
@signed_in
def connections_list():
    args = query_args(ListQuery)
    page = page_of(Connection.select().order_by(Connection.name), args, api.connection_row)
    apps = credential_apps()
    labels = {e.key: e.cls.label for e in host().catalog.apps.values()}
    return render_template("ui/connections.html", page=page, apps=apps, app_labels=labels,
                           apps_by_key={a["key"]: a for a in apps})


# -- catalog -----------------------------------------------------------------------------------

@ui.get("/ui/catalog")
@signed_in
def catalog():
    entries = sorted(host().catalog.apps.values(), key=lambda e: e.cls.label.lower())
    return render_template("ui/catalog.html", apps=[api.app_row(e) for e in entries])


@ui.get("/ui/catalog/<key>")
@signed_in
def catalog_app(key: str):
    entry = host().catalog.apps.get(key)
    if entry is None:
        host().catalog.app(key)  # raises NotFound naming the known apps
    return render_template("ui/app.html", app=api.app_row(entry))
