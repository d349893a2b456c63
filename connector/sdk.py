"""What a plugin author subclasses: App, PollTrigger, WebhookTrigger, ScheduleTrigger, Action.

Each is a declarative class: a key, a label, help text, a marshmallow schema of its inputs
and a sample, plus a few small methods to override. ``metadata={"secret": True}`` marks a
field as a secret: an app's Credentials are sealed at rest and never printed; trigger and
action inputs are stored as given, so credentials belong in a connection, not in inputs.
The host builds the contexts and calls them; plugins never touch the database, the
scheduler or Flask.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, NamedTuple

from marshmallow import Schema, pre_load

from .errors import SignatureError

DAY = 24 * 3600


class NoInputs(Schema):
    """The empty input schema."""


class InputSchema(Schema):
    """An input schema where a blank value (None, or text that is empty or only spaces)
    counts as not given, as a builder expects when a mapped field rendered nothing."""

    @pre_load
    def drop_blanks(self, data, **_):
        if not isinstance(data, dict):
            return data
        return {k: v for k, v in data.items()
                if v is not None and not (isinstance(v, str) and not v.strip())}


class RateLimit(NamedTuple):
    """At most ``requests`` calls in each window of ``per_seconds`` seconds."""

    requests: int
    per_seconds: float

    def describe(self) -> str:
        per = self.per_seconds
        return f"{self.requests}/{int(per) if float(per).is_integer() else per}s"


class App:
    """An external service: how to authenticate, where it lives, how it reports errors.

    Override :meth:`authenticate` to place credentials (header, query, org header) and
    :meth:`test` with a cheap call that fails on bad credentials. ``rate_limit`` is the
    service's documented limit per connection (a connection may override it; None: the
    document states none), and ``idempotency_header`` the header in which the service
    takes an idempotency key: a POST or PATCH that carries it may be sent again.
    """

    key: ClassVar[str] = ""
    label: ClassVar[str] = ""
    help: ClassVar[str] = ""
    base_url: ClassVar[str] = ""
    docs_url: ClassVar[str] = ""
    Credentials: ClassVar[type[Schema]] = NoInputs
    timeout: ClassVar[float] = 30.0
    rate_limit: ClassVar[RateLimit | tuple[int, float] | None] = None
    idempotency_header: ClassVar[str | None] = None

    def authenticate(self, request: "OutgoingRequest", credentials: Mapping[str, Any]) -> None:
        """Put the credentials on ``request`` (headers or params); the default adds nothing."""

    def test(self, client) -> dict:
        """Make one cheap authenticated call; return something to show; raise APIError."""
        raise NotImplementedError(f"app {self.key} has no connection test")

    def error_details(self, status: int, body: Any) -> tuple[str | None, str]:
        """Return (code, message) from an error response body, in the service's own words."""
        if isinstance(body, dict):
            err = body.get("error")
            if isinstance(err, dict):
                return err.get("code"), str(err.get("message") or err.get("code") or body)
            if isinstance(err, str):
                return None, err
            detail = body.get("detail") or body.get("message")
            if detail is not None:
                if isinstance(detail, list):  # FastAPI-style validation errors
                    parts = []
                    for entry in detail:
                        if isinstance(entry, dict):
                            loc = ".".join(str(p) for p in entry.get("loc", []) if p != "body")
                            msg = entry.get("msg")
                            parts.append(f"{loc}: {msg}" if loc else str(msg))
                        else:
                            parts.append(str(entry))
                    return None, "; ".join(parts)
                return None, str(detail)
        text = body if isinstance(body, str) else json.dumps(body)
        return None, (text or "").strip()[:300] or f"HTTP {status}"


@dataclass
class OutgoingRequest:
    """A request being built by the client; App.authenticate may edit headers and params."""

    method: str
    path: str
    headers: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    auth: str | None = None  # a variant name an app may honour (e.g. "header")


@dataclass
class WebhookRequest:
    """An inbound webhook as the receiver saw it: raw body first, parsed only after verify."""

    headers: Mapping[str, str]
    body: bytes
    args: Mapping[str, str]
    content_type: str = ""

    def json(self):
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            raise ValueError("request body is not valid JSON") from None

    def form(self) -> dict:
        """Return the fields of a urlencoded or multipart body (a list where repeated)."""
        from io import BytesIO

        from werkzeug.formparser import parse_form_data

        ctype = next((v for k, v in self.headers.items() if k.lower() == "content-type"),
                     self.content_type)
        environ = {"wsgi.input": BytesIO(self.body), "CONTENT_LENGTH": str(len(self.body)),
                   "CONTENT_TYPE": ctype, "REQUEST_METHOD": "POST"}
        _stream, form, files = parse_form_data(environ)
        data = {k: (v[0] if len(v) == 1 else v) for k, v in form.to_dict(flat=False).items()}
        for name, upload in files.items():
            data[name] = {"filename": upload.filename, "content_type": upload.content_type,
                          "size": len(upload.read())}
        return data


@dataclass
class TriggerContext:
    """What a trigger method gets: its validated inputs, a client, and its saved state."""

    flow_name: str
    inputs: dict
    client: Any = None
    state: dict = field(default_factory=dict)
    #: the subscription kept from an earlier switch-on, for subscribe() to reuse
    previous_subscription: dict = field(default_factory=dict)
    #: a poll sets this when items wait beyond its budget (priming then polls again)
    more: bool = False
    log: logging.Logger = logging.getLogger("connector.trigger")


@dataclass
class ActionContext:
    """What Action.run gets: a client, the step's stable idempotency key, and the ledger."""

    flow_name: str
    run_id: int
    step_name: str
    idempotency_key: str
    client: Any = None
    once: Callable[..., Any] | None = None
    log: logging.Logger = logging.getLogger("connector.action")
    #: where :meth:`progress` reports; None logs it at debug level (the engine's runs)
    on_progress: Callable[[int, int], None] | None = None

    def progress(self, done: int, total: int) -> None:
        """Report that ``done`` of ``total`` units (rows, batches) are finished."""
        if self.on_progress is not None:
            self.on_progress(done, total)
        else:
            self.log.debug("%s %s: %d of %d done", self.flow_name, self.step_name, done, total)


class _Component:
    key: ClassVar[str] = ""
    app: ClassVar[str] = ""
    label: ClassVar[str] = ""
    help: ClassVar[str] = ""
    Inputs: ClassVar[type[Schema]] = NoInputs
    sample: ClassVar[dict] = {}


class Trigger(_Component):
    """Base of the three trigger kinds; ``dedupe_key`` names an item uniquely per flow."""

    kind: ClassVar[str] = ""
    #: seconds a dedupe key is kept; None keeps it forever (credit grants)
    dedupe_ttl: ClassVar[int | None] = 7 * DAY

    def dedupe_key(self, item: dict) -> str:
        """Return the item's identity; the default takes ``id``."""
        if "id" not in item:
            raise ValueError(f"trigger {self.key} item has no 'id'; override dedupe_key")
        return str(item["id"])


class PollTrigger(Trigger):
    """Fetch recent items; the first poll after enabling records them without firing."""

    kind = "poll"
    default_interval: ClassVar[int] = 60

    def poll(self, ctx: TriggerContext) -> list[dict]:
        raise NotImplementedError


class WebhookTrigger(Trigger):
    """Receive items pushed to the flow's URL; subscribe where the service has an API.

    ``manual_setup`` triggers have no subscription API: the user pastes the URL (and the
    secret subscribe() returns) into the service, so switching off keeps the subscription
    and switching on again reuses it.
    """

    kind = "webhook"
    manual_setup: ClassVar[bool] = False

    def subscribe(self, ctx: TriggerContext, url: str) -> dict:
        """Register ``url`` with the service; return what unsubscribe and verify need.

        The default registers nothing: the user pastes the URL into the service.
        """
        return {}

    def unsubscribe(self, ctx: TriggerContext, subscription: dict) -> None:
        """Undo :meth:`subscribe`; the default does nothing."""

    def verify(self, ctx: TriggerContext, request: WebhookRequest, subscription: dict) -> None:
        """Raise SignatureError unless the request is authentic; the default refuses all."""
        raise SignatureError(f"trigger {self.key} does not say how to verify its webhooks")

    def parse(self, ctx: TriggerContext, request: WebhookRequest) -> list[dict]:
        """Turn a verified request into items; the default takes the JSON body as one item."""
        body = request.json()
        return body if isinstance(body, list) else [body]

    def request_dedupe_key(self, item: dict, request: WebhookRequest) -> str:
        """Return the delivery id: webhook-id when sent, else :meth:`dedupe_key`."""
        msg_id = request.headers.get("webhook-id")
        return str(msg_id) if msg_id else self.dedupe_key(item)

    def reply_timeout(self, inputs: dict) -> float | None:
        """Seconds to hold the request for the run's result; None answers at once (2xx).

        A synchronous webhook answers with the output of the flow's last step, or 202 when
        the run takes longer than this.
        """
        return None


class ServiceWebhookTrigger(WebhookTrigger):
    """A webhook the service registers through its API and signs the Standard Webhooks way.

    Subclasses write :meth:`subscribe` (return at least ``id`` and ``secret``) and
    :meth:`parse`; switching off deletes ``{hooks_path}/{id}``, where "already gone" (404)
    counts as done.
    """

    hooks_path: ClassVar[str] = ""

    def unsubscribe(self, ctx: TriggerContext, subscription: dict) -> None:
        from urllib.parse import quote

        from .errors import FatalAPIError

        try:
            ctx.client.delete(f"{self.hooks_path}/{quote(str(subscription['id']), safe='')}",
                              expect_json=False)
        except FatalAPIError as exc:
            if exc.status != 404:
                raise

    def verify(self, ctx: TriggerContext, request: WebhookRequest, subscription: dict) -> None:
        from .signatures import verify_subscription

        verify_subscription(subscription, request.headers, request.body)


class EventTrigger(Trigger):
    """Items the host itself produces (e.g. a failed run, for an error flow); nothing to poll
    or subscribe. The host pushes items with :func:`connector.intake.ingest`."""

    kind = "event"


class ScheduleTrigger(Trigger):
    """Fire on a schedule; each firing's scheduled time is its dedupe key.

    :meth:`schedule` returns an APScheduler trigger (IntervalTrigger, CronTrigger...) built
    from the inputs. Its fire times must not depend on when it is built: anchor an interval
    with ``start_date``, so that every process and every restart computes the same times
    and the ledger can drop a firing a second scheduler already recorded.
    """

    kind = "schedule"
    #: after a pause (host down), fire at most this many of the missed times, latest first
    catch_up: ClassVar[int] = 1

    def schedule(self, inputs: dict):
        raise NotImplementedError

    def item(self, ctx: TriggerContext, scheduled_at) -> dict:
        """Return the item for one firing; the default carries its ISO time."""
        return {"scheduled_at": scheduled_at.isoformat()}

    def dedupe_key(self, item: dict) -> str:
        return str(item["scheduled_at"])


class Action(_Component):
    """Do one thing in a service; ``run`` returns a dict later steps can map from.

    Stay idempotent: send ``ctx.idempotency_key`` where the service takes one, or wrap a
    non-repeatable call in ``ctx.once(key, request, call)`` so the host's ledger guards it.
    """

    needs_connection: ClassVar[bool] = True
    #: "loop" (run the nested steps once per element of what run() returns as ``items``) or
    #: "paths" (run the steps of the branches whose conditions hold); None for plain actions
    control: ClassVar[str | None] = None
    #: the step may name a connection of ANY app (its auth is applied to the request), or none
    any_connection: ClassVar[bool] = False
    #: ``ctx.client``'s session is SSRF-guarded (connector.ssrf) before the action runs; the
    #: host keeps such clients apart from the ones other actions get (the generic HTTP action)
    guarded_client: ClassVar[bool] = False

    def run(self, ctx: ActionContext, inputs: dict) -> dict:
        raise NotImplementedError


class Park(Exception):
    """Raised by an action to park its run until ``until`` (aware datetime) without a worker.

    The run waits in the database; the scheduler resumes it at ``until`` (after a restart
    too), and the step then succeeds with ``output``.
    """

    def __init__(self, until, output: dict | None = None):
        self.until = until
        self.output = output or {}
        super().__init__(f"parked until {until.isoformat()}")


class Search(Action):
    """Find records in a service: a step whose output is ``found``/``count``/``first``/``results``.

    Override :meth:`search` (return a list of records). A search also fills dropdowns: an
    input field whose metadata names it (``{"choices_from": "samora.list_agents"}``) offers
    each record as :meth:`option` describes it.
    """

    def search(self, ctx: ActionContext, inputs: dict) -> list[dict]:
        raise NotImplementedError

    def option(self, record: dict) -> dict:
        """Return ``{"value", "label"}`` for one record in a dropdown."""
        value = record.get("id")
        label = (record.get("name") or record.get("label") or record.get("title")
                 or record.get("email") or value)
        return {"value": value, "label": str(label)}

    def run(self, ctx: ActionContext, inputs: dict) -> dict:
        results = list(self.search(ctx, inputs) or [])
        return {"found": bool(results), "count": len(results),
                "first": results[0] if results else None, "results": results}


class JSONBody:
    """A request body encoded as JSON once, for both the ledger and the wire.

    A bulk action hands the same large body to ``ctx.once`` (which hashes it) and to the
    client (which encodes it): two encodings of up to 2 MiB per batch. ``JSONBody(body)``
    encodes it once, keys sorted; ``client.post(path, json=JSONBody(...))`` sends those
    bytes, and :func:`request_hash` of it, or of a request holding it, is the digest of the
    plain body, so keys recorded before stay valid (held at the top level of a mapping with
    text keys, it is not even decoded).
    """

    __slots__ = ("text", "data")

    def __init__(self, body: Any):
        self.text = json.dumps(body, sort_keys=True, default=str, allow_nan=False)
        self.data = self.text.encode()


def _plain(value: Any) -> Any:
    """json.dumps' fallback: a JSONBody deeper in a request as its body, anything else as
    text."""
    return json.loads(value.text) if isinstance(value, JSONBody) else str(value)


def _encoded(value: Any) -> str:
    return value.text if isinstance(value, JSONBody) else json.dumps(
        value, sort_keys=True, default=_plain)


def request_hash(value: Any) -> str:
    """Return a stable digest of a request, to tell a repeat from a conflicting reuse."""
    if isinstance(value, JSONBody):
        text = value.text
    elif (isinstance(value, dict) and all(type(k) is str for k in value)
          and any(isinstance(v, JSONBody) for v in value.values())):
        # the text json.dumps(sort_keys=True) gives for the plain mapping, without
        # encoding the body again
        text = "{" + ", ".join(f"{json.dumps(k)}: {_encoded(value[k])}"
                               for k in sorted(value)) + "}"
    else:
        text = json.dumps(value, sort_keys=True, default=_plain)
    return hashlib.sha256(text.encode()).hexdigest()
