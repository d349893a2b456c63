"""The catalog routes: every app with its triggers, actions and searches."""
from __future__ import annotations

from .. import api_schemas as s
from . import current_host, load_query, reply, route


def _component(kind: str, entry) -> dict:
    from ..registry import describe_schema

    cls = entry.cls
    return {"kind": kind, "key": entry.key, "app": cls.app, "label": cls.label,
            "help": cls.help, "plugin": entry.plugin,
            "type": getattr(cls, "kind", None) if kind == "trigger" else None,
            "control": getattr(cls, "control", None),
            "needs_connection": getattr(cls, "needs_connection", True),
            "any_connection": bool(getattr(cls, "any_connection", False)),
            "inputs": describe_schema(cls.Inputs), "sample": dict(cls.sample or {})}


def app_row(entry) -> dict:
    """Return an app as the API shows it, with its triggers, actions and searches."""
    from ..registry import describe_schema

    catalog, cls = current_host().catalog, entry.cls

    def of(table, kind):
        return [_component(kind, e) for e in sorted(table.values(), key=lambda e: e.key)
                if e.cls.app == entry.key]

    return {"key": entry.key, "label": cls.label, "help": cls.help, "plugin": entry.plugin,
            "base_url": cls.base_url or None, "docs_url": cls.docs_url or None,
            "credentials": describe_schema(cls.Credentials),
            "triggers": of(catalog.triggers, "trigger"), "actions": of(catalog.actions, "action"),
            "searches": of(catalog.searches, "search")}


@route("/apps", "GET", "read", "The catalog: apps with their triggers, actions and searches",
       "catalog", query=s.PageQuery, response=s.paged(s.AppSchema, "AppPage"))
def apps_list():
    args = load_query(s.PageQuery)
    entries = sorted(current_host().catalog.apps.values(), key=lambda e: e.key)
    start = (args["page"] - 1) * args["limit"]
    page = {"data": [app_row(e) for e in entries[start:start + args["limit"]]],
            "pagination": {"page": args["page"], "limit": args["limit"],
                           "total": len(entries), "pages": -(-len(entries) // args["limit"])}}
    return reply(s.paged(s.AppSchema, "AppPage"), page)


@route("/apps/<key>", "GET", "read", "One app, its credentials, triggers, actions and searches",
       "catalog", response=s.AppSchema)
def apps_get(key):
    entry = current_host().catalog.apps.get(key)
    if entry is None:
        current_host().catalog.app(key)  # raises NotFound naming the known apps
    return reply(s.AppSchema, app_row(entry))
