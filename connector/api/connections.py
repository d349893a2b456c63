"""The connection routes (never showing a secret) and dropdown options from searches."""
from __future__ import annotations

from marshmallow import ValidationError

from .. import api_schemas as s
from .. import store, throttle
from ..errors import APIError, ConfigurationError
from ..store import Connection, Flow, Step
from . import (
    Conflict, current_host, invalid, load_body, load_query, paginate, prefixed, reply, route,
    service_error,
)

MASK = "********"


def _used_by(conn: Connection) -> list[str]:
    names = {f.name for f in Flow.select(Flow.name).where(Flow.trigger_connection == conn)}
    names |= {st.flow.name for st in Step.select(Step, Flow).join(Flow)
              .where(Step.connection == conn)}
    return sorted(names)


def connection_row(conn: Connection) -> dict:
    """Return a connection as the API shows it: secrets masked, the flows using it."""
    host = current_host()
    shown = {}
    entry = host.catalog.apps.get(conn.app)
    try:
        stored = host.credentials(conn) if entry is not None else {}
    except ConfigurationError:  # sealed with another CONNECTOR_SECRET_KEY: list it anyway
        stored = {}
    if stored:
        for name, fld in entry.cls.Credentials().fields.items():
            key = fld.data_key or name
            if stored.get(key) is None:
                continue
            shown[key] = MASK if fld.metadata.get("secret") else stored[key]
    own = None if conn.rate_limit is None else {"requests": conn.rate_limit,
                                                "per_seconds": conn.rate_window or 60.0}
    limit = throttle.effective(entry.cls, conn) if entry is not None else None
    return {"name": conn.name, "app": conn.app, "base_url": conn.base_url,
            "rate_limit": own, "effective_rate_limit": limit and limit._asdict(),
            "credentials": shown, "used_by": _used_by(conn), "created_at": conn.created_at,
            "updated_at": conn.updated_at}


def _check_credentials(app_key: str, data: dict) -> None:
    """Raise ValidationError naming ``app``, ``credentials.FIELD`` or ``base_url``."""
    host = current_host()
    if app_key not in host.catalog.apps:
        raise invalid("app", f"unknown app {app_key!r}; known: "
                              f"{', '.join(sorted(host.catalog.apps))}")
    app = host.catalog.app(app_key)
    try:
        app.Credentials().load(data["credentials"])
    except ValidationError as err:
        raise prefixed("credentials", err) from None
    if not data.get("base_url") and not app.base_url:
        raise invalid("base_url", f"required: {app.label} has no public default host")


@route("/connections", "GET", "read", "Connections (never their secrets)", "connections",
       query=s.PageQuery, response=s.paged(s.ConnectionSchema, "ConnectionPage"))
def connections_list():
    page = paginate(Connection.select().order_by(Connection.name), load_query(s.PageQuery),
                    connection_row)
    return reply(s.paged(s.ConnectionSchema, "ConnectionPage"), page)


@route("/connections", "POST", "write", "Add a connection: credentials are checked against "
       "the app's schema and sealed", "connections", body=s.ConnectionCreate,
       response=s.ConnectionSchema, status=201, errors=(409,))
def connections_create():
    data = load_body(s.ConnectionCreate)
    _check_credentials(data["app"], data)
    if Connection.get_or_none(Connection.name == data["name"]) is not None:
        raise Conflict(f"connection {data['name']!r} already exists (PUT "
                       f"/api/v1/connections/{data['name']} replaces it)")
    conn = current_host().add_connection(data["name"], data["app"], data["credentials"],
                                  data["base_url"])
    conn = _set_rate_limit(conn, data["rate_limit"])
    return reply(s.ConnectionSchema, connection_row(conn), 201)


@route("/connections/<name>", "GET", "read", "One connection (never its secrets)",
       "connections", response=s.ConnectionSchema)
def connections_get(name):
    return reply(s.ConnectionSchema, connection_row(current_host().connection(name)))


@route("/connections/<name>", "PUT", "write", "Replace a connection's credentials",
       "connections", body=s.ConnectionReplace, response=s.ConnectionSchema)
def connections_replace(name):
    conn = current_host().connection(name)
    data = load_body(s.ConnectionReplace)
    app_key = data["app"] or conn.app
    _check_credentials(app_key, data)
    if app_key != conn.app and _used_by(conn):
        raise invalid("app", f"connection {name!r} is used by flows for app {conn.app}")
    conn = current_host().add_connection(name, app_key, data["credentials"], data["base_url"],
                                  replace=True)
    conn = _set_rate_limit(conn, data["rate_limit"])
    return reply(s.ConnectionSchema, connection_row(conn))


def _set_rate_limit(conn: Connection, limit: dict | None) -> Connection:
    count = None if limit is None else limit["requests"]
    return throttle.set_override(conn, count, limit["per_seconds"] if count else None)


@route("/connections/<name>", "DELETE", "write", "Delete a connection no flow uses",
       "connections", errors=(409,), status=204)
def connections_delete(name):
    conn = current_host().connection(name)
    users = _used_by(conn)
    if users:
        raise Conflict(f"connection {name!r} is used by flows: {', '.join(users)}; change or "
                       "delete them first", {"flows": users})
    with store.write_tx():
        Connection.delete().where(Connection.id == conn.id).execute()
        throttle.forget(conn.id)
    return "", 204


@route("/connections/<name>/test", "POST", "read", "Call the service with the connection; "
       "a failure carries the service's own message", "connections",
       response=s.ConnectionTestResult)
def connections_test(name):
    current_host().connection(name)  # 404 before any call
    try:
        result = current_host().test_connection(name)
    except (APIError, NotImplementedError) as exc:
        return reply(s.ConnectionTestResult, {"ok": False, "result": None,
                                              "error": service_error(exc)})
    return reply(s.ConnectionTestResult, {"ok": True, "result": result, "error": None})


def connection_for(cls, name: str | None, place: str = "connection") -> Connection | None:
    """Return the connection a trigger/action/search would use, or raise ValidationError."""
    host = current_host()
    if name:
        conn = Connection.get_or_none(Connection.name == name)
        if conn is None:
            raise invalid(place, f"no connection named {name!r}")
        if conn.app != cls.app and not getattr(cls, "any_connection", False):
            raise invalid(place, f"connection {name!r} is for app {conn.app}, "
                                  f"expected {cls.app}")
        return conn
    if not (host.catalog.app(cls.app).Credentials().fields
            and getattr(cls, "needs_connection", True)):
        return None
    candidates = list(Connection.select().where(Connection.app == cls.app)
                      .order_by(Connection.name))
    if len(candidates) == 1:
        return candidates[0]
    hint = (f"one of {', '.join(c.name for c in candidates)}" if candidates
            else "add one first")
    raise invalid(place, f"expected the name of a {cls.app} connection ({hint})")


@route("/options", "POST", "read", "Dropdown values: run a search and return its records as "
       "options", "connections", body=s.OptionsRequest, response=s.OptionList, errors=(502,))
def options():
    data = load_body(s.OptionsRequest)
    host = current_host()
    if data["search"] not in host.catalog.searches:
        raise invalid("search", f"unknown search {data['search']!r}")
    search = host.catalog.search(data["search"])
    try:
        search.Inputs().load(data["inputs"])
    except ValidationError as err:
        raise prefixed("inputs", err) from None
    conn = connection_for(type(search), data["connection"])
    if conn is None:
        raise invalid("connection", f"expected the name of a {search.app} connection")
    return reply(s.OptionList, {"data": host.options(data["search"], conn.name,
                                                     data["inputs"])})
