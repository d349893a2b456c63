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
from functools import wraps

from flask import Blueprint, current_app, g, jsonify, request
from marshmallow import Schema, ValidationError

from .. import api_schemas as s
from .. import auth
from ..errors import (
    APIError, ConfigurationError, ConnectorError, FlowError, IdempotencyConflict, NotFound,
    OutcomeUnknown, PluginError, UserError,
)

API_PREFIX = "/api/v1"
api = Blueprint("api", __name__, url_prefix=API_PREFIX)


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


def current_host():
    """Return the Host this app serves."""
    return current_app.extensions["connector"]


def notify_queued() -> None:
    """Wake the executor: a replay or a resume has runs to execute."""
    notify = current_app.extensions.get("connector.on_queued")
    if notify:
        notify()


# -- requests, answers and errors --------------------------------------------------------------

def json_body() -> dict:
    """Return the JSON object sent; an empty body counts as ``{}``."""
    if not request.get_data(cache=True).strip():
        return {}
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise UserError("expected a JSON object as the request body "
                        "(Content-Type: application/json)")
    return data


def load_body(schema: type[Schema]) -> dict:
    return schema().load(json_body())


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


def service_error(exc: Exception) -> dict:
    """Describe a failed service call as the ``error`` of a test result."""
    if isinstance(exc, APIError):
        return {"message": exc.message, "code": exc.code, "status": exc.status,
                "retriable": exc.retriable}
    return {"message": str(exc), "code": None, "status": None, "retriable": False}


def invalid(place: str, message: str) -> ValidationError:
    """Return a 422 error naming ``place``."""
    return ValidationError({place: [message]})


def prefixed(place: str, err: ValidationError) -> ValidationError:
    """Return ``err`` with its fields nested under ``place`` (e.g. ``inputs.agent_id``)."""
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


# The route modules register their views, and so their OpenAPI entries, in this order; the
# row helpers are re-exported for the UI, which shows what the API answers.
from . import apps, connections, flows, build, runs, keys  # noqa: E402,F401,I001
from .apps import app_row  # noqa: E402
from .connections import connection_row  # noqa: E402
from .flows import flow_detail, flow_row, flow_rows  # noqa: E402
from .runs import get_run, run_detail, run_row  # noqa: E402
