"""The REST API under /api/v1: catalog, connections, options, flows, tests, runs and keys.

Every view is declared with :func:`route`, which records its path, method, scope and
marshmallow schemas in ``api_schemas.ROUTES``; the views load and dump with those schemas and
``api_schemas.openapi_document`` builds /api/v1/openapi.json from the same records. Lists are
paginated like the services' (``{"data": [...], "pagination": {page, limit, total, pages}}``)
and every error is the services' envelope ``{"error": {"code", "message", "details"}}``.
Callers authenticate with the connector's API keys or the UI's session cookie (connector/
auth.py); ``read`` reads (and calls services only to read), ``write`` changes things or runs
an action for real, ``admin`` manages keys.
"""
from __future__ import annotations

import re
import secrets
from functools import wraps

import yaml
from flask import Blueprint, Response, current_app, g, jsonify, request
from marshmallow import Schema, ValidationError
from peewee import fn

from . import api_schemas as s
from . import auth, engine, flows, store, templates, throttle
from .errors import (
    APIError, ConfigurationError, ConnectorError, FlowError, IdempotencyConflict, NotFound,
    OutcomeUnknown, PluginError, UserError,
)
from .ledger import once
from .sdk import ActionContext, Park, PollTrigger, TriggerContext, WebhookTrigger
from .store import Connection, Flow, Run, Step, StepAttempt, StepRun, TriggerState

API_PREFIX = "/api/v1"
api = Blueprint("api", __name__, url_prefix=API_PREFIX)
SAMPLE_ITEMS = 10  # a test poll shows at most this many items
YAML_TYPES = ("text/yaml", "application/yaml", "application/x-yaml", "text/x-yaml",
              "text/plain")


class Conflict(UserError):
    """The request is valid but clashes with the current state (HTTP 409)."""

    def __init__(self, message: str, details: dict | None = None):
        self.details = details
        super().__init__(message)


def route(rule: str, method: str, scope: str | None, summary: str, tag: str, *,
          body=None, query=None, response=None, status: int = 200, errors=()):
    """Register a view on the blueprint and in ``api_schemas.ROUTES``; check the scope."""
    def decorate(view):
        s.ROUTES.append(s.Route(API_PREFIX + rule, method, view.__name__, scope, summary,
                                tag, body, query, response, status, tuple(errors)))

        @wraps(view)
        def guarded(**kwargs):
            if scope is not None:
                g.principal = auth.authenticate(request, auth.app_sessions(current_app))
                auth.require(g.principal, scope)
            return view(**kwargs)

        api.add_url_rule(rule, view.__name__, guarded, methods=[method])
        return view
    return decorate


def _host():
    return current_app.extensions["connector"]


def _queued() -> None:
    """Wake the executor: a replay or a resume has runs to execute."""
    notify = current_app.extensions.get("connector.on_queued")
    if notify:
        notify()


# -- requests, answers and errors --------------------------------------------------------------

def _json_body() -> dict:
    """Return the JSON object sent; an empty body counts as ``{}``."""
    if not request.get_data(cache=True).strip():
        return {}
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise UserError("expected a JSON object as the request body "
                        "(Content-Type: application/json)")
    return data


def load_body(schema: type[Schema]) -> dict:
    return schema().load(_json_body())


def load_query(schema: type[Schema]) -> dict:
    return schema().load(request.args.to_dict())


def reply(schema: type[Schema], data, status: int = 200):
    return jsonify(schema().dump(data)), status


def paginate(query, args: dict, row) -> dict:
    """Return one page of ``query`` as ``{"data", "pagination"}``; ``row`` shapes each item."""
    total = query.count()
    page, limit = args["page"], args["limit"]
    items = [row(obj) for obj in query.paginate(page, limit)]
    return {"data": items, "pagination": {"page": page, "limit": limit, "total": total,
                                          "pages": -(-total // limit)}}


def envelope(status: int, code: str, message: str, details=None, headers=None):
    error = {"code": code, "message": message}
    if details:
        error["details"] = details
    return jsonify({"error": error}), status, headers or {}


def field_errors(messages, prefix: str = "") -> dict[str, list[str]]:
    """Flatten marshmallow's messages to ``{"steps[0].inputs.x": ["..."]}`` (flows' paths)."""
    out: dict[str, list[str]] = {}

    def walk(value, path):
        if isinstance(value, dict):
            for key, sub in value.items():
                if key == "_schema":
                    walk(sub, path)
                elif isinstance(key, int):
                    walk(sub, f"{path}[{key}]")
                else:
                    walk(sub, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            out.setdefault(path or "_body", []).extend(value)
        elif isinstance(value, list):
            for i, sub in enumerate(value):
                walk(sub, f"{path}[{i}]")
        else:
            out.setdefault(path or "_body", []).append(str(value))

    walk(messages, prefix)
    return out


def validation_error(err: ValidationError):
    """The app-wide handler: marshmallow's ValidationError as 422 with each field's errors."""
    details = field_errors(err.messages)
    message = "; ".join(f"{k}: {' '.join(v)}" if k != "_body" else " ".join(v)
                        for k, v in details.items())
    return envelope(422, "VALIDATION_ERROR", message or "invalid request", details)


_PLACE = re.compile(r"^([A-Za-z_][\w]*(?:\[\d+\]|\.[\w-]+)*): (.+)$", re.S)


def _flow_error(exc: FlowError):
    """A FlowError names its place, like `steps[0].inputs.agent_id: Not a valid UUID.`;
    flows.FlowErrors holds several, and the details list every one."""
    details: dict[str, list[str]] = {}
    for one in getattr(exc, "errors", None) or [exc]:
        for place, message in _flow_places(one).items():
            details.setdefault(place, []).extend(message)
    return envelope(422, "VALIDATION_ERROR", str(exc), details)


def _flow_places(exc: FlowError) -> dict[str, list[str]]:
    message = str(exc)
    if exc.field:
        return {exc.field: [message[len(exc.field) + 2:]]}
    match = _PLACE.match(message)  # a message that starts with its place
    if match:
        return {match.group(1): [match.group(2)]}
    return {"_body": [message]}


@api.errorhandler(ConnectorError)
def connector_error(exc: ConnectorError):
    if isinstance(exc, auth.Unauthorized):
        return envelope(401, "UNAUTHORIZED", str(exc),
                        headers={"WWW-Authenticate": 'Bearer realm="connector"'})
    if isinstance(exc, auth.Forbidden):
        return envelope(403, "FORBIDDEN", str(exc))
    if isinstance(exc, NotFound):
        return envelope(404, "NOT_FOUND", str(exc))
    if isinstance(exc, FlowError):
        return _flow_error(exc)
    if isinstance(exc, (Conflict, IdempotencyConflict, OutcomeUnknown)):
        return envelope(409, "CONFLICT", str(exc), getattr(exc, "details", None))
    if isinstance(exc, ConfigurationError):
        return envelope(500, "CONFIGURATION_ERROR", str(exc))
    if isinstance(exc, UserError):
        return envelope(400, "BAD_REQUEST", str(exc))
    if isinstance(exc, APIError):  # a service refused a call made for this request
        return envelope(502, "SERVICE_ERROR", str(exc),
                        {"status": exc.status, "code": exc.code, "retriable": exc.retriable})
    if isinstance(exc, PluginError):
        return envelope(500, "PLUGIN_ERROR", str(exc))
    current_app.logger.exception("unhandled connector error")
    return envelope(500, "INTERNAL", "internal error")


def _service_error(exc: Exception) -> dict:
    if isinstance(exc, APIError):
        return {"message": exc.message, "code": exc.code, "status": exc.status,
                "retriable": exc.retriable}
    return {"message": str(exc), "code": None, "status": None, "retriable": False}


def _invalid(place: str, message: str) -> ValidationError:
    return ValidationError({place: [message]})


def _prefixed(place: str, err: ValidationError) -> ValidationError:
    return ValidationError({place: err.messages})


# -- who am I, the document --------------------------------------------------------------------

@route("/openapi.json", "GET", None, "This API's OpenAPI 3 document", "meta",
       response="application/json")
def openapi():
    if "connector.openapi" not in current_app.extensions:
        current_app.extensions["connector.openapi"] = s.openapi_document(
            "connector REST API", __doc__.split("\n\n")[0])
    return jsonify(current_app.extensions["connector.openapi"])


@route("/me", "GET", "read", "Who the credentials belong to, and their scope", "meta",
       response=s.Me)
def me():
    p = g.principal
    return reply(s.Me, {"kind": p.kind, "name": p.name, "scope": p.scope})


# -- catalog -----------------------------------------------------------------------------------

def _component(kind: str, entry) -> dict:
    from .registry import describe_schema

    cls = entry.cls
    return {"kind": kind, "key": entry.key, "app": cls.app, "label": cls.label,
            "help": cls.help, "plugin": entry.plugin,
            "type": getattr(cls, "kind", None) if kind == "trigger" else None,
            "control": getattr(cls, "control", None),
            "needs_connection": getattr(cls, "needs_connection", True),
            "any_connection": bool(getattr(cls, "any_connection", False)),
            "inputs": describe_schema(cls.Inputs), "sample": dict(cls.sample or {})}


def _app(entry) -> dict:
    from .registry import describe_schema

    catalog, cls = _host().catalog, entry.cls

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
    entries = sorted(_host().catalog.apps.values(), key=lambda e: e.key)
    start = (args["page"] - 1) * args["limit"]
    page = {"data": [_app(e) for e in entries[start:start + args["limit"]]],
            "pagination": {"page": args["page"], "limit": args["limit"],
                           "total": len(entries), "pages": -(-len(entries) // args["limit"])}}
    return reply(s.paged(s.AppSchema, "AppPage"), page)


@route("/apps/<key>", "GET", "read", "One app, its credentials, triggers, actions and searches",
       "catalog", response=s.AppSchema)
def apps_get(key):
    entry = _host().catalog.apps.get(key)
    if entry is None:
        _host().catalog.app(key)  # raises NotFound naming the known apps
    return reply(s.AppSchema, _app(entry))


# -- connections -------------------------------------------------------------------------------

MASK = "********"


def _used_by(conn: Connection) -> list[str]:
    names = {f.name for f in Flow.select(Flow.name).where(Flow.trigger_connection == conn)}
    names |= {st.flow.name for st in Step.select(Step, Flow).join(Flow)
              .where(Step.connection == conn)}
    return sorted(names)


def _connection(conn: Connection) -> dict:
    host = _host()
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
    host = _host()
    if app_key not in host.catalog.apps:
        raise _invalid("app", f"unknown app {app_key!r}; known: "
                              f"{', '.join(sorted(host.catalog.apps))}")
    app = host.catalog.app(app_key)
    try:
        app.Credentials().load(data["credentials"])
    except ValidationError as err:
        raise _prefixed("credentials", err) from None
    if not data.get("base_url") and not app.base_url:
        raise _invalid("base_url", f"required: {app.label} has no public default host")


@route("/connections", "GET", "read", "Connections (never their secrets)", "connections",
       query=s.PageQuery, response=s.paged(s.ConnectionSchema, "ConnectionPage"))
def connections_list():
    page = paginate(Connection.select().order_by(Connection.name), load_query(s.PageQuery),
                    _connection)
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
    conn = _host().add_connection(data["name"], data["app"], data["credentials"],
                                  data["base_url"])
    conn = _set_rate_limit(conn, data["rate_limit"])
    return reply(s.ConnectionSchema, _connection(conn), 201)


@route("/connections/<name>", "GET", "read", "One connection (never its secrets)",
       "connections", response=s.ConnectionSchema)
def connections_get(name):
    return reply(s.ConnectionSchema, _connection(_host().connection(name)))


@route("/connections/<name>", "PUT", "write", "Replace a connection's credentials",
       "connections", body=s.ConnectionReplace, response=s.ConnectionSchema)
def connections_replace(name):
    conn = _host().connection(name)
    data = load_body(s.ConnectionReplace)
    app_key = data["app"] or conn.app
    _check_credentials(app_key, data)
    if app_key != conn.app and _used_by(conn):
        raise _invalid("app", f"connection {name!r} is used by flows for app {conn.app}")
    conn = _host().add_connection(name, app_key, data["credentials"], data["base_url"],
                                  replace=True)
    conn = _set_rate_limit(conn, data["rate_limit"])
    return reply(s.ConnectionSchema, _connection(conn))


def _set_rate_limit(conn: Connection, limit: dict | None) -> Connection:
    count = None if limit is None else limit["requests"]
    return throttle.set_override(conn, count, limit["per_seconds"] if count else None)


@route("/connections/<name>", "DELETE", "write", "Delete a connection no flow uses",
       "connections", errors=(409,), status=204)
def connections_delete(name):
    conn = _host().connection(name)
    users = _used_by(conn)
    if users:
        raise Conflict(f"connection {name!r} is used by flows: {', '.join(users)}; change or "
                       "delete them first", {"flows": users})
    with store.write_tx():
        Connection.delete().where(Connection.id == conn.id).execute()
    return "", 204


@route("/connections/<name>/test", "POST", "read", "Call the service with the connection; "
       "a failure carries the service's own message", "connections",
       response=s.ConnectionTestResult)
def connections_test(name):
    _host().connection(name)  # 404 before any call
    try:
        result = _host().test_connection(name)
    except (APIError, NotImplementedError) as exc:
        return reply(s.ConnectionTestResult, {"ok": False, "result": None,
                                              "error": _service_error(exc)})
    return reply(s.ConnectionTestResult, {"ok": True, "result": result, "error": None})


def _connection_for(cls, name: str | None, place: str = "connection") -> Connection | None:
    """Return the connection a trigger/action/search would use, or raise ValidationError."""
    host = _host()
    if name:
        conn = Connection.get_or_none(Connection.name == name)
        if conn is None:
            raise _invalid(place, f"no connection named {name!r}")
        if conn.app != cls.app and not getattr(cls, "any_connection", False):
            raise _invalid(place, f"connection {name!r} is for app {conn.app}, "
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
    raise _invalid(place, f"expected the name of a {cls.app} connection ({hint})")


@route("/options", "POST", "read", "Dropdown values: run a search and return its records as "
       "options", "connections", body=s.OptionsRequest, response=s.OptionList, errors=(502,))
def options():
    data = load_body(s.OptionsRequest)
    host = _host()
    if data["search"] not in host.catalog.searches:
        raise _invalid("search", f"unknown search {data['search']!r}")
    search = host.catalog.search(data["search"])
    try:
        search.Inputs().load(data["inputs"])
    except ValidationError as err:
        raise _prefixed("inputs", err) from None
    conn = _connection_for(type(search), data["connection"])
    if conn is None:
        raise _invalid("connection", f"expected the name of a {search.app} connection")
    return reply(s.OptionList, {"data": host.options(data["search"], conn.name,
                                                     data["inputs"])})


# -- flows -------------------------------------------------------------------------------------

def _trigger_kind(flow: Flow) -> str | None:
    entry = _host().catalog.triggers.get(flow.trigger_key)
    return entry.cls.kind if entry else None


def _flow(flow: Flow, counts: dict | None = None, last: dict | None = None) -> dict:
    if counts is None:
        counts = {r.status: r.n for r in Run.select(Run.status, fn.COUNT(Run.id).alias("n"))
                  .where(Run.flow == flow).group_by(Run.status)}
    if last is None:
        last_at = Run.select(fn.MAX(Run.created_at)).where(Run.flow == flow).scalar()
    else:
        last_at = last.get(flow.id)
    kind = _trigger_kind(flow)
    return {"name": flow.name, "description": flow.description, "trigger": flow.trigger_key,
            "trigger_kind": kind, "enabled": flow.enabled, "paused_reason": flow.paused_reason,
            "failure_streak": flow.failure_streak, "pause_after": flow.pause_after,
            "error_flow": flow.error_flow, "concurrency": flow.concurrency,
            "webhook_url": flows.webhook_url(_host(), flow) if kind == "webhook" else None,
            "runs": counts, "last_run_at": last_at, "created_at": flow.created_at,
            "updated_at": flow.updated_at}


def _flow_detail(flow: Flow) -> dict:
    state = TriggerState.get_or_none(TriggerState.flow == flow)
    return {**_flow(flow), "definition": flows.export(flow),
            "trigger_state": None if state is None else {
                "primed": state.primed, "last_poll_at": state.last_poll_at,
                "last_error": state.last_error}}


def _setup(flow: Flow) -> dict:
    """Return what a hand-set-up webhook's sender needs (its signing secret), if anything."""
    from .cli import SHOWN_SECRETS

    state = TriggerState.get_or_none(TriggerState.flow == flow)
    sub = (_host().box.open(state.sealed_subscription)
           if state and state.sealed_subscription else {})
    return {k: str(v) for k, v in sub.items() if k in SHOWN_SECRETS}


@route("/flows", "GET", "read", "Flows with their state (on, off, paused and why) and run "
       "counts", "flows", query=s.PageQuery, response=s.paged(s.FlowSummary, "FlowPage"))
def flows_list():
    args = load_query(s.PageQuery)
    query = Flow.select().order_by(Flow.name)
    rows = list(query.paginate(args["page"], args["limit"]))
    ids = [f.id for f in rows]
    counts: dict[int, dict] = {i: {} for i in ids}
    last: dict[int, object] = {}
    if ids:
        for r in (Run.select(Run.flow, Run.status, fn.COUNT(Run.id).alias("n"),
                             fn.MAX(Run.created_at).alias("last"))
                  .where(Run.flow.in_(ids)).group_by(Run.flow, Run.status)):
            counts[r.flow_id][r.status] = r.n
            last[r.flow_id] = max(filter(None, [last.get(r.flow_id), r.last]))
    total = query.count()
    page = {"data": [_flow(f, counts[f.id], last) for f in rows],
            "pagination": {"page": args["page"], "limit": args["limit"], "total": total,
                           "pages": -(-total // args["limit"])}}
    return reply(s.paged(s.FlowSummary, "FlowPage"), page)


def _save_and_maybe_enable(data: dict, enable: bool = False) -> Flow:
    flow = flows.save(_host(), data)
    if enable or data.get("enabled"):
        flows.enable(_host(), flow)
    return flow


@route("/flows", "POST", "write", "Create a flow from its definition (the YAML model as "
       "JSON); errors name the place, e.g. steps[0].inputs.agent_id", "flows",
       body=flows.FlowSpec, response=s.FlowDetail, status=201, errors=(409,))
def flows_create():
    data = _json_body()
    name = data.get("name")
    if isinstance(name, str) and Flow.get_or_none(Flow.name == name) is not None:
        raise Conflict(f"flow {name!r} already exists (PUT /api/v1/flows/{name} replaces it)")
    flow = _save_and_maybe_enable(data)
    return reply(s.FlowDetail, _flow_detail(flow), 201)


@route("/flows/<name>", "GET", "read", "One flow: its state and its definition", "flows",
       response=s.FlowDetail)
def flows_get(name):
    return reply(s.FlowDetail, _flow_detail(flows.get(name)))


@route("/flows/<name>", "PUT", "write", "Replace a flow's definition (an enabled flow keeps "
       "its trigger)", "flows", body=flows.FlowSpec, response=s.FlowDetail)
def flows_replace(name):
    flows.get(name)
    data = _json_body()
    data.setdefault("name", name)
    if data["name"] != name:
        raise _invalid("name", f"expected {name!r}, the flow's name in the URL (a flow "
                               "cannot be renamed)")
    data.pop("enabled", None)  # switching on and off has its own endpoints
    return reply(s.FlowDetail, _flow_detail(flows.save(_host(), data)))


@route("/flows/<name>", "PATCH", "write", "Change a flow's settings (description, concurrency, "
       "on_failure) without resending its definition; what is left out stays as it is",
       "flows", body=flows.FlowSettings, response=s.FlowDetail)
def flows_patch(name):
    flow = flows.get(name)
    changes = load_body(flows.FlowSettings)
    return reply(s.FlowDetail, _flow_detail(flows.update_settings(flow, changes)))


@route("/flows/<name>", "DELETE", "write", "Switch a flow off and delete it with its runs",
       "flows", status=204, errors=(409,))
def flows_delete(name):
    flow = flows.get(name)
    users = [f.name for f in Flow.select(Flow.name).where(
        (Flow.error_flow == name) & (Flow.id != flow.id)).order_by(Flow.name)]
    if users:
        raise Conflict(f"flow {name!r} is the error flow of: {', '.join(users)}; change them "
                       "first", {"flows": users})
    if flow.enabled:
        flows.disable(_host(), flow)
    with store.write_tx():
        Flow.delete().where(Flow.id == flow.id).execute()
    return "", 204


@route("/flows/<name>/enable", "POST", "write", "Switch a flow on (subscribes its webhook, or "
       "records what exists as seen unless backfill)", "flows", body=s.EnableRequest,
       response=s.FlowSwitch)
def flows_enable(name):
    data = load_body(s.EnableRequest)
    flow = flows.enable(_host(), flows.get(name), backfill=data["backfill"])
    trigger = _host().catalog.trigger(flow.trigger_key)
    setup = _setup(flow) if getattr(trigger, "manual_setup", False) else {}
    return reply(s.FlowSwitch, {**_flow(flow), "warnings": [], "setup": setup})


@route("/flows/<name>/disable", "POST", "write", "Switch a flow off (removes its webhook "
       "subscription)", "flows", response=s.FlowSwitch)
def flows_disable(name):
    flow = flows.get(name)
    warnings = flows.disable(_host(), flow)
    return reply(s.FlowSwitch, {**_flow(flows.get(name)), "warnings": warnings, "setup": {}})


@route("/flows/<name>/resume", "POST", "write", "Lift a pause: the runs it held are executed",
       "flows", response=s.FlowSummary, errors=(409,))
def flows_resume(name):
    flow = flows.get(name)
    if not flow.paused_reason:
        raise Conflict(f"flow {name} is not paused")
    flow = flows.resume(flow)
    _queued()
    return reply(s.FlowSummary, _flow(flow))


@route("/flows/<name>/webhook", "GET", "write", "The webhook URL and, for a webhook set up by "
       "hand, the signing secret to paste into the sender", "flows",
       response=s.WebhookSetup, errors=(409,))
def flows_webhook(name):
    flow = flows.get(name)
    if _trigger_kind(flow) != "webhook":
        raise Conflict(f"flow {name} has no webhook trigger")
    return reply(s.WebhookSetup, {"url": flows.webhook_url(_host(), flow),
                                  "secrets": _setup(flow)})


@route("/flows/<name>/export", "GET", "read", "The flow as the YAML `connector flows add` "
       "loads (the same text as `connector flows export`)", "flows", response="text/yaml")
def flows_export(name):
    text = yaml.safe_dump(flows.export(flows.get(name)), sort_keys=False)
    return Response(text, mimetype="text/yaml",
                    headers={"Content-Disposition": f'inline; filename="{name}.yaml"'})


@route("/flows/import", "POST", "write", "Create (or with replace, overwrite) a flow from a "
       "YAML flow file", "flows", body="text/yaml", query=s.ImportQuery,
       response=s.FlowDetail, status=201, errors=(409, 415))
def flows_import():
    args = load_query(s.ImportQuery)
    if (request.mimetype or "").lower() not in YAML_TYPES:
        return envelope(415, "UNSUPPORTED_MEDIA_TYPE",
                        f"Content-Type {request.mimetype or '(none)'} is not accepted; "
                        "send text/yaml")
    try:
        data = yaml.safe_load(request.get_data(as_text=True))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise _invalid("_body", f"not valid YAML{where}: {getattr(exc, 'problem', exc)}"
                       ) from None
    if not isinstance(data, dict):
        raise _invalid("_body", "expected a mapping with name, trigger and steps")
    name = data.get("name")
    exists = isinstance(name, str) and Flow.get_or_none(Flow.name == name) is not None
    if exists and not args["replace"]:
        raise Conflict(f"flow {name!r} already exists (import with ?replace=true to "
                       "overwrite it)")
    flow = _save_and_maybe_enable(data, args["enable"])
    return reply(s.FlowDetail, _flow_detail(flow), 200 if exists else 201)


@route("/flows/<name>/replay-failed", "POST", "write", "Replay every failed run of a flow "
       "from its failed step", "runs", body=s.ReplayFailedRequest,
       response=s.ReplayFailedResult)
def flows_replay_failed(name):
    data = load_body(s.ReplayFailedRequest)
    flow = flows.get(name)
    ids = [r.id for r in Run.select(Run.id).where((Run.flow == flow) &
                                                  (Run.status == Run.FAILED)).order_by(Run.id)]
    for run_id in ids:
        engine.replay(run_id, force_key=data["force_key"])
    if ids:
        _queued()
    return reply(s.ReplayFailedResult, {"replayed": ids, "count": len(ids)})


# -- trying a trigger or a step while building -------------------------------------------------

@route("/triggers/<key>/test", "POST", "read", "Fetch sample items: one poll, recording "
       "nothing (or the trigger's sample for webhooks and schedules)", "build",
       body=s.TriggerTestRequest, response=s.TriggerTestResult)
def triggers_test(key):
    host = _host()
    trigger = host.catalog.trigger(key)
    data = load_body(s.TriggerTestRequest)
    try:
        inputs = type(trigger).Inputs().load(data["inputs"])
    except ValidationError as err:
        raise _prefixed("inputs", err) from None
    sample = {"ok": True, "source": "sample", "items": [dict(trigger.sample or {})],
              "count": 1, "error": None}
    if not isinstance(trigger, PollTrigger):
        how = ("arrive at the flow's URL once it is on" if isinstance(trigger, WebhookTrigger)
               else "are made by the host")
        return reply(s.TriggerTestResult, {**sample, "message": f"{trigger.label}: real items "
                                           f"{how}; this is the trigger's sample"})
    conn = _connection_for(type(trigger), data["connection"])
    ctx = TriggerContext(flow_name=f"test:{key}", inputs=inputs, client=host.client(conn))
    try:
        items = [i for i in (trigger.poll(ctx) or []) if isinstance(i, dict)]
    except APIError as exc:
        return reply(s.TriggerTestResult, {"ok": False, "items": [], "count": 0,
                                           "error": _service_error(exc), "message": None})
    finally:
        if ctx.client is not None:
            ctx.client.close()
    if not items:
        return reply(s.TriggerTestResult, {**sample, "message": "the service has no items "
                                           "yet; this is the trigger's sample"})
    return reply(s.TriggerTestResult, {"ok": True, "source": "service", "count": len(items),
                                       "items": items[:SAMPLE_ITEMS], "message": None,
                                       "error": None})


@route("/actions/<key>/test", "POST", "write", "Run one action or search for real with inputs "
       "rendered against a sample context; returns its output or the service's error",
       "build", body=s.StepTestRequest, response=s.StepTestResult)
def actions_test(key):
    host = _host()
    action = host.catalog.action(key)
    data = load_body(s.StepTestRequest)
    if action.control:
        raise _invalid("action", f"{key} is a {action.control} step: it only runs inside a "
                                 "flow")
    context = {"trigger": {}, "steps": {}, "run": {"id": 0, "flow": "test"},
               **data["context"]}
    rendered = templates.render(data["inputs"], context, "inputs")
    try:
        inputs = action.Inputs().load(rendered)
    except ValidationError as err:
        raise _prefixed("inputs", err) from None
    conn = (_connection_for(type(action), data["connection"])
            if action.needs_connection or data["connection"] else None)
    client = host.client(conn)
    ctx = ActionContext(flow_name="test", run_id=0, step_name=key,
                        idempotency_key=data["idempotency_key"] or f"test-{secrets.token_hex(16)}",
                        client=client,
                        # the ledger guards a test too: a grant tested with a key is not
                        # granted again when a real run brings the same key
                        once=lambda k, req, call: once(action.key, k, req, call, None, key))
    try:
        output = action.run(ctx, inputs)
    except Park as park:
        output = {**park.output, "would_wait_until": park.until.isoformat()}
    except (APIError, IdempotencyConflict, OutcomeUnknown) as exc:
        return reply(s.StepTestResult, {"ok": False, "inputs": rendered, "output": None,
                                        "error": _service_error(exc)})
    finally:
        if client is not None:
            client.close()
    if output is not None and not isinstance(output, dict):
        raise PluginError(f"action {key} returned {type(output).__name__}, expected a mapping")
    return reply(s.StepTestResult, {"ok": True, "inputs": rendered, "output": output or {},
                                    "error": None})


# -- runs --------------------------------------------------------------------------------------

def _run(run: Run) -> dict:
    duration = None
    if run.finished_at and run.started_at:
        duration = (run.finished_at - run.started_at).total_seconds() * 1000
    return {"id": run.id, "flow": run.flow.name, "status": run.status,
            "attempts": run.attempts, "error": run.error, "failed_step": run.failed_step,
            "replay_of": run.replay_of, "created_at": run.created_at,
            "started_at": run.started_at, "finished_at": run.finished_at,
            "duration_ms": duration}


def _run_detail(run: Run) -> dict:
    steps = list(StepRun.select().where(StepRun.run == run).order_by(StepRun.id))
    history: dict[int, list] = {sr.id: [] for sr in steps}
    if steps:
        for a in (StepAttempt.select().where(StepAttempt.step_run.in_(list(history)))
                  .order_by(StepAttempt.step_run, StepAttempt.number)):
            history[a.step_run_id].append({
                "number": a.number, "status": a.status, "error": a.error,
                "retry_at": a.retry_at, "started_at": a.started_at,
                "duration_ms": a.duration_ms})
    return {**_run(run), "item": run.item or {}, "steps": [
        {"name": sr.name, "action": sr.action_key, "status": sr.status,
         "attempts": sr.attempts, "inputs": sr.inputs, "output": sr.output, "error": sr.error,
         "started_at": sr.started_at, "finished_at": sr.finished_at,
         "resume_at": sr.resume_at, "history": history[sr.id]} for sr in steps]}


def _get_run(run_id: int) -> Run:
    run = Run.select(Run, Flow).join(Flow).where(Run.id == run_id).first()
    if run is None:
        raise NotFound(f"no run with id {run_id}")
    return run


@route("/runs", "GET", "read", "Runs, newest first, filtered by flow and status", "runs",
       query=s.RunsQuery, response=s.paged(s.RunSchema, "RunPage"))
def runs_list():
    args = load_query(s.RunsQuery)
    query = Run.select(Run, Flow).join(Flow).order_by(Run.id.desc())
    if args["flow"]:
        query = query.where(Run.flow == flows.get(args["flow"]))
    if args["status"]:
        query = query.where(Run.status == args["status"])
    return reply(s.paged(s.RunSchema, "RunPage"), paginate(query, args, _run))


@route("/runs/<int:run_id>", "GET", "read", "One run: the trigger item and each step's inputs, "
       "output, error and attempts", "runs", response=s.RunDetail)
def runs_get(run_id):
    return reply(s.RunDetail, _run_detail(_get_run(run_id)))


@route("/runs/<int:run_id>/replay", "POST", "write", "Replay a failed run from its failed step "
       "(finished steps are not repeated), or with an item: a new run with the edited trigger "
       "item", "runs", body=s.ReplayRequest, response=s.RunSchema, errors=(409,))
def runs_replay(run_id):
    data = load_body(s.ReplayRequest)
    run = _get_run(run_id)
    try:
        if data["item"] is not None:
            new = engine.replay(run.id, item=data["item"])
            _queued()
            return reply(s.RunSchema, _run(_get_run(new.id)), 201)
        engine.replay(run.id, force_key=data["force_key"])
    except UserError as exc:
        raise Conflict(str(exc)) from None
    _queued()
    return reply(s.RunSchema, _run(_get_run(run.id)))


# -- keys --------------------------------------------------------------------------------------

def _key(row) -> dict:
    return {"id": row.id, "name": row.name, "prefix": row.prefix, "scope": row.scope,
            "created_at": row.created_at, "last_used_at": row.last_used_at,
            "revoked_at": row.revoked_at}


@route("/keys", "GET", "admin", "API keys (never the keys themselves)", "keys",
       query=s.PageQuery, response=s.paged(s.KeySchema, "KeyPage"))
def keys_list():
    query = store.ApiKey.select().order_by(store.ApiKey.id)
    return reply(s.paged(s.KeySchema, "KeyPage"), paginate(query, load_query(s.PageQuery),
                                                            _key))


@route("/keys", "POST", "admin", "Make an API key; the answer is the only time it is shown",
       "keys", body=s.KeyCreate, response=s.KeyCreated, status=201)
def keys_create():
    data = load_body(s.KeyCreate)
    row, raw = auth.create_key(data["name"], data["scope"])
    return reply(s.KeyCreated, {**_key(row), "key": raw}, 201)


@route("/keys/<int:key_id>", "DELETE", "admin", "Revoke an API key (at once)", "keys",
       response=s.KeySchema)
def keys_revoke(key_id):
    return reply(s.KeySchema, _key(auth.revoke_key(key_id)))
