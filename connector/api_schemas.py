"""Marshmallow schemas of the REST API's requests and responses, and the OpenAPI document.

The views load request bodies and query strings with these and dump every answer through
them; each view's path, scope and schemas are recorded in :data:`ROUTES`, from which
:func:`openapi_document` generates /api/v1/openapi.json with apispec, so the document and
the views cannot drift apart. A flow's definition is :class:`connector.flows.FlowSpec`, the
schema the YAML loader uses: one model, two views.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from importlib import metadata

from marshmallow import Schema, fields, validate

from .auth import CSRF_HEADER, SESSION_COOKIE
from .flows import FlowSpec
from .store import ApiKey, Run

RUN_STATUSES = (Run.QUEUED, Run.RUNNING, Run.WAITING, Run.SUCCEEDED, Run.FAILED, Run.FILTERED)
MAX_LIMIT = 100


class UTCDateTime(fields.DateTime):
    """A naive UTC datetime (how the store keeps them) written as ISO 8601 with +00:00."""

    def _serialize(self, value, attr, obj, **kwargs):
        if isinstance(value, dt.datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return super()._serialize(value, attr, obj, **kwargs)


def _when(**kwargs) -> UTCDateTime:
    return UTCDateTime(allow_none=True, **kwargs)


def _object(**kwargs) -> fields.Dict:
    """A free-form JSON object (a trigger item, a step's inputs or output)."""
    return fields.Dict(keys=fields.String(), **kwargs)


# -- envelopes ---------------------------------------------------------------------------------

class ErrorBody(Schema):
    code = fields.String(required=True, metadata={"description": "UPPER_SNAKE error code"})
    message = fields.String(required=True, metadata={"description": "What went wrong and "
                                                     "what to fix, in one sentence"})
    details = fields.Dict(keys=fields.String(), metadata={
        "description": "For VALIDATION_ERROR: each bad place (`steps[0].inputs.agent_id`, "
                       "`credentials.api_key`) with its messages"})


class ErrorEnvelope(Schema):
    error = fields.Nested(ErrorBody, required=True)


class Pagination(Schema):
    page = fields.Integer(required=True)
    limit = fields.Integer(required=True)
    total = fields.Integer(required=True)
    pages = fields.Integer(required=True)


class PageQuery(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1))
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=MAX_LIMIT))


_pages: dict[str, type[Schema]] = {}


def paged(item: type[Schema], name: str) -> type[Schema]:
    """Return the schema ``{"data": [item...], "pagination": {...}}`` named ``name``."""
    if name not in _pages:
        _pages[name] = Schema.from_dict({
            "data": fields.List(fields.Nested(item), required=True),
            "pagination": fields.Nested(Pagination, required=True)}, name=name)
    return _pages[name]


class ServiceError(Schema):
    """A service's own answer to a failed call (a test, a search)."""

    message = fields.String(required=True)
    code = fields.String(allow_none=True)
    status = fields.Integer(allow_none=True, metadata={"description": "HTTP status from the "
                                                       "service; null for a connection error"})
    retriable = fields.Boolean()


class Me(Schema):
    kind = fields.String(required=True, validate=validate.OneOf(("key", "user")))
    name = fields.String(required=True)
    scope = fields.String(required=True, validate=validate.OneOf(ApiKey.SCOPES))


# -- catalog -----------------------------------------------------------------------------------

class InputField(Schema):
    """One input of a trigger, action or search, or one credential of an app."""

    name = fields.String(required=True)
    type = fields.String(required=True)
    required = fields.Boolean(required=True)
    label = fields.String(required=True)
    help = fields.String(required=True)
    secret = fields.Boolean(required=True)
    choices_from = fields.String(metadata={"description": "The search that fills this "
                                           "field's dropdown (POST /api/v1/options)"})
    choices = fields.List(fields.Raw())


class Component(Schema):
    """A trigger, action or search."""

    kind = fields.String(required=True, validate=validate.OneOf(("trigger", "action",
                                                                 "search")))
    key = fields.String(required=True)
    app = fields.String(required=True)
    label = fields.String(required=True)
    help = fields.String(required=True)
    plugin = fields.String(required=True)
    type = fields.String(allow_none=True, metadata={"description": "A trigger's kind: poll, "
                                                    "webhook, schedule or event"})
    control = fields.String(allow_none=True, metadata={"description": "loop or paths for "
                                                       "steps that nest other steps"})
    needs_connection = fields.Boolean()
    any_connection = fields.Boolean(metadata={
        "description": "True when a step may use a connection of any app, or none"})
    inputs = fields.List(fields.Nested(InputField), required=True)
    sample = _object(metadata={"description": "A sample item or output, for mapping fields"})


class AppSchema(Schema):
    key = fields.String(required=True)
    label = fields.String(required=True)
    help = fields.String(required=True)
    plugin = fields.String(required=True)
    base_url = fields.String(allow_none=True)
    docs_url = fields.String(allow_none=True)
    credentials = fields.List(fields.Nested(InputField), required=True)
    triggers = fields.List(fields.Nested(Component), required=True)
    actions = fields.List(fields.Nested(Component), required=True)
    searches = fields.List(fields.Nested(Component), required=True)


# -- connections -------------------------------------------------------------------------------

_url = validate.URL(schemes={"http", "https"}, require_tld=False,
                    error="expected an http(s) URL")


class RateLimitSchema(Schema):
    requests = fields.Integer(required=True, validate=validate.Range(min=0, max=10_000_000),
                              metadata={"description": "Requests per window; 0 turns the "
                                                       "limit off for this connection"})
    per_seconds = fields.Float(load_default=60.0,
                               validate=validate.Range(min=0.01, max=86400 * 31),
                               metadata={"description": "The window, in seconds (default 60)"})


_RATE_LIMIT = ("This connection's rate limit, shared by every worker; null (or left out) "
               "takes the app's documented default")


class ConnectionSchema(Schema):
    name = fields.String(required=True)
    app = fields.String(required=True)
    base_url = fields.String(allow_none=True)
    rate_limit = fields.Nested(RateLimitSchema, allow_none=True,
                               metadata={"description": _RATE_LIMIT})
    effective_rate_limit = fields.Nested(RateLimitSchema, allow_none=True, metadata={
        "description": "The limit its calls obey: its own, else the app's; null for none"})
    credentials = fields.Dict(keys=fields.String(), values=fields.Raw(), metadata={
        "description": "Non-secret credentials as stored; secret ones as ******** (never "
                       "shown again)"})
    used_by = fields.List(fields.String(), required=True,
                          metadata={"description": "Flows that use this connection"})
    created_at = _when()
    updated_at = _when()


class ConnectionCreate(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    app = fields.String(required=True)
    credentials = fields.Dict(keys=fields.String(), load_default=dict)
    base_url = fields.String(load_default=None, allow_none=True, validate=_url)
    rate_limit = fields.Nested(RateLimitSchema, load_default=None, allow_none=True,
                               metadata={"description": _RATE_LIMIT})


class ConnectionReplace(Schema):
    app = fields.String(load_default=None, metadata={"description": "Defaults to the app the "
                                                     "connection is for"})
    credentials = fields.Dict(keys=fields.String(), load_default=dict)
    base_url = fields.String(load_default=None, allow_none=True, validate=_url)
    rate_limit = fields.Nested(RateLimitSchema, load_default=None, allow_none=True,
                               metadata={"description": _RATE_LIMIT})


class ConnectionTestResult(Schema):
    ok = fields.Boolean(required=True)
    result = _object(allow_none=True, metadata={"description": "What the test call returned"})
    error = fields.Nested(ServiceError, allow_none=True,
                          metadata={"description": "The service's own error, when not ok"})


class OptionsRequest(Schema):
    search = fields.String(required=True, metadata={"description": "A search key, as in a "
                                                    "field's choices_from"})
    connection = fields.String(load_default=None, allow_none=True)
    inputs = fields.Dict(keys=fields.String(), load_default=dict)


class Option(Schema):
    value = fields.Raw(required=True)
    label = fields.String(required=True)


class OptionList(Schema):
    data = fields.List(fields.Nested(Option), required=True)


# -- flows -------------------------------------------------------------------------------------

class FlowSummary(Schema):
    name = fields.String(required=True)
    description = fields.String(required=True)
    trigger = fields.String(required=True, metadata={"description": "The trigger key"})
    trigger_kind = fields.String(allow_none=True)
    enabled = fields.Boolean(required=True)
    paused_reason = fields.String(allow_none=True, metadata={
        "description": "Set while the flow is paused after failing runs; resume to go on"})
    failure_streak = fields.Integer(required=True)
    pause_after = fields.Integer(required=True)
    error_flow = fields.String(allow_none=True)
    concurrency = fields.Integer(required=True, metadata={
        "description": "Runs executing at once across all workers; 0: no limit"})
    webhook_url = fields.String(allow_none=True)
    runs = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True,
                       metadata={"description": "Run counts by status"})
    last_run_at = _when()
    created_at = _when()
    updated_at = _when()


class TriggerStateSchema(Schema):
    primed = fields.Boolean()
    last_poll_at = _when()
    last_error = fields.String(allow_none=True)


class FlowDetail(FlowSummary):
    definition = fields.Nested(FlowSpec, required=True, metadata={
        "description": "The flow as `flows export` writes it and POST/PUT take it"})
    trigger_state = fields.Nested(TriggerStateSchema, allow_none=True)


class FlowSwitch(FlowSummary):
    warnings = fields.List(fields.String(), required=True)
    setup = fields.Dict(keys=fields.String(), values=fields.String(), metadata={
        "description": "For a webhook set up by hand: the secrets to paste into the sender"})


class EnableRequest(Schema):
    backfill = fields.Boolean(load_default=False, metadata={
        "description": "A poll trigger fires for what exists now instead of recording it"})


class ImportQuery(Schema):
    replace = fields.Boolean(load_default=False, metadata={
        "description": "Overwrite a flow of the same name"})
    enable = fields.Boolean(load_default=False)


class WebhookSetup(Schema):
    url = fields.String(required=True)
    secrets = fields.Dict(keys=fields.String(), values=fields.String(), required=True)


class TriggerTestRequest(Schema):
    connection = fields.String(load_default=None, allow_none=True)
    inputs = fields.Dict(keys=fields.String(), load_default=dict)


class TriggerTestResult(Schema):
    ok = fields.Boolean(required=True)
    source = fields.String(validate=validate.OneOf(("service", "sample")), metadata={
        "description": "service: polled now (nothing recorded); sample: the trigger's "
                       "declared sample"})
    items = fields.List(_object(), required=True)
    count = fields.Integer(required=True)
    message = fields.String(allow_none=True)
    error = fields.Nested(ServiceError, allow_none=True)


class StepTestRequest(Schema):
    connection = fields.String(load_default=None, allow_none=True)
    inputs = fields.Dict(keys=fields.String(), load_default=dict, metadata={
        "description": "The step's inputs; templates are rendered against `context`"})
    context = fields.Dict(keys=fields.String(), load_default=dict, metadata={
        "description": "What templates see: {trigger: sample item, steps: {name: output}}"})
    idempotency_key = fields.String(load_default=None, allow_none=True)


class StepTestResult(Schema):
    ok = fields.Boolean(required=True)
    inputs = _object(allow_none=True, metadata={"description": "The rendered inputs sent"})
    output = _object(allow_none=True)
    error = fields.Nested(ServiceError, allow_none=True)


# -- runs --------------------------------------------------------------------------------------

class RunsQuery(PageQuery):
    flow = fields.String(load_default=None)
    status = fields.String(load_default=None, validate=validate.OneOf(RUN_STATUSES))


class RunSchema(Schema):
    id = fields.Integer(required=True)
    flow = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(RUN_STATUSES))
    attempts = fields.Integer(required=True)
    error = fields.String(allow_none=True)
    failed_step = fields.String(allow_none=True)
    replay_of = fields.Integer(allow_none=True)
    created_at = _when()
    started_at = _when()
    finished_at = _when()
    duration_ms = fields.Float(allow_none=True)


class AttemptSchema(Schema):
    number = fields.Integer(required=True)
    status = fields.String(required=True)
    error = fields.String(allow_none=True)
    retry_at = _when()
    started_at = _when()
    duration_ms = fields.Float(allow_none=True)


class StepRunSchema(Schema):
    name = fields.String(required=True, metadata={"description": "The step's path: `grant`, "
                                                  "or `each[3].grant` inside a loop"})
    action = fields.String(required=True)
    status = fields.String(required=True)
    attempts = fields.Integer(required=True)
    inputs = _object(allow_none=True)
    output = _object(allow_none=True)
    error = fields.String(allow_none=True)
    started_at = _when()
    finished_at = _when()
    resume_at = _when()
    history = fields.List(fields.Nested(AttemptSchema), required=True)


class RunDetail(RunSchema):
    item = _object(required=True, metadata={"description": "The trigger item"})
    steps = fields.List(fields.Nested(StepRunSchema), required=True)


class ReplayRequest(Schema):
    force_key = fields.Boolean(load_default=False, metadata={
        "description": "Release a pending idempotency key of the failed step first (after "
                       "checking the service)"})
    item = fields.Dict(keys=fields.String(), load_default=None, allow_none=True, metadata={
        "description": "Replay as a new run with this edited trigger item"})


class ReplayFailedRequest(Schema):
    force_key = fields.Boolean(load_default=False)


class ReplayFailedResult(Schema):
    replayed = fields.List(fields.Integer(), required=True)
    count = fields.Integer(required=True)


# -- keys --------------------------------------------------------------------------------------

class KeySchema(Schema):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    prefix = fields.String(required=True, metadata={"description": "The key's first "
                                                    "characters, to tell keys apart"})
    scope = fields.String(required=True, validate=validate.OneOf(ApiKey.SCOPES))
    created_at = _when()
    last_used_at = _when()
    revoked_at = _when()


class KeyCreate(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    scope = fields.String(load_default=ApiKey.READ, validate=validate.OneOf(ApiKey.SCOPES))


class KeyCreated(KeySchema):
    key = fields.String(required=True, metadata={"description": "The key itself: shown "
                                                 "only in this answer"})


# -- the route registry and the document generated from it -------------------------------------

@dataclass
class Route:
    """One view: where it lives, who may call it, and the schemas it loads and dumps."""

    rule: str  # the Flask rule, e.g. /api/v1/runs/<int:run_id>
    method: str
    endpoint: str
    scope: str | None  # None: public
    summary: str
    tag: str
    body: type[Schema] | str | None = None  # a schema, or a media type for a raw body
    query: type[Schema] | None = None
    response: type[Schema] | str | None = None  # a schema, a media type, or None (204)
    status: int = 200
    errors: tuple[int, ...] = field(default_factory=tuple)


ROUTES: list[Route] = []
_PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")
_REASONS = {400: "The request body is not a JSON object", 401: "No valid API key or session",
            403: "The credentials' scope is too small", 404: "No such thing",
            409: "Conflicts with the current state", 415: "Unsupported content type",
            422: "Field errors, each place with its messages",
            502: "The service refused the call"}


def openapi_path(rule: str) -> str:
    """Turn a Flask rule (``/runs/<int:run_id>``) into an OpenAPI path (``/runs/{run_id}``)."""
    return _PARAM.sub(lambda m: "{" + m.group(2) + "}", rule)


def _content(kind) -> dict:
    if isinstance(kind, str):
        schema = {"type": "object"} if kind == "application/json" else {"type": "string"}
        return {kind: {"schema": schema}}
    return {"application/json": {"schema": kind}}


def _operation(r: Route) -> dict:
    params = [{"in": "path", "name": m.group(2), "required": True,
               "schema": {"type": "integer" if m.group(1) == "int" else "string"}}
              for m in _PARAM.finditer(r.rule)]
    codes = set(r.errors) | ({404} if params else set())
    if r.query is not None:
        params.append({"in": "query", "schema": r.query})
        codes.add(422)
    if r.body is not None:
        codes |= {400, 422}
    if r.scope is not None:
        codes |= {401, 403}
    ok = {"description": r.summary}
    if r.status != 204 and r.response is not None:
        ok["content"] = _content(r.response)
    responses = {str(r.status): ok}
    for code in sorted(codes):
        responses[str(code)] = {"description": _REASONS[code], "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    op = {"operationId": r.endpoint, "summary": r.summary, "tags": [r.tag],
          "responses": responses, "security": []}
    if r.scope is not None:
        op.update(description=f"Needs the {r.scope} scope.", security=[
            {"bearer": []}, {"apiKey": []}, {"session": []}])
        op["x-scope"] = r.scope
    if params:
        op["parameters"] = params
    if r.body is not None:
        required = not isinstance(r.body, type) or any(
            f.required for f in r.body().fields.values())
        op["requestBody"] = {"required": required, "content": _content(r.body)}
    return op


def openapi_document(title: str, description: str) -> dict:
    """Build the OpenAPI 3 document from :data:`ROUTES` and their marshmallow schemas."""
    from apispec import APISpec
    from apispec.ext.marshmallow import MarshmallowPlugin

    try:
        version = metadata.version("connector")
    except metadata.PackageNotFoundError:
        version = "0"
    spec = APISpec(title=title, version=version, openapi_version="3.0.3",
                   plugins=[MarshmallowPlugin()], info={"description": description})
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.security_scheme("apiKey", {"type": "apiKey", "in": "header",
                                               "name": "X-API-Key"})
    spec.components.security_scheme("session", {
        "type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
        "description": f"The UI's session; unsafe methods also send {CSRF_HEADER}"})
    spec.components.schema("Error", schema=ErrorEnvelope)
    spec.components.schema("FlowDefinition", schema=FlowSpec)
    paths: dict[str, dict] = {}
    for r in ROUTES:
        paths.setdefault(openapi_path(r.rule), {})[r.method.lower()] = _operation(r)
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()
