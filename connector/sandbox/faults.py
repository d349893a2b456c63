"""Fault mode: make a sandbox service fail the way real services and networks do.

Each service (``contacts_api``, ``samora``, ``aiconnector``, ``sami_os``, ``samva``; the
dashed spelling ``contacts-api`` is accepted too) holds at most one fault plan, set and
cleared at run time. Faults never touch the ``/_sandbox`` admin app or the root index, and
``Sandbox.reset()`` clears every plan and the log.

Python::

    sandbox.faults.set("aiconnector", error_rate=0.3, throttle_rate=0.1, retry_after=2,
                       paths=["/v1/subaccounts/credits"], methods=["POST"], seed=7)
    sandbox.faults.get("aiconnector")      # the plan, with its counters
    sandbox.faults.entries()               # every fault injected so far, oldest first
    sandbox.faults.clear("aiconnector")    # or clear() for every service

HTTP (the admin app, no authentication)::

    PUT    /_sandbox/faults/<service>   body: the options below   -> 200 the plan
    DELETE /_sandbox/faults/<service>                             -> 200 {"service", "cleared"}
    DELETE /_sandbox/faults                                       -> 200 {"cleared": [...]}
    GET    /_sandbox/faults    -> {"faults": {service: plan | null}, "log": [entries]}

A bad option is 400 ``VALIDATION_ERROR`` naming it (``details.field``); an unknown service
is 404 ``UNKNOWN_SERVICE``. ``set`` replaces the service's whole plan.

Options (all optional; a rate is a probability from 0 to 1, and the five rates together
are at most 1, because a request gets at most one of these faults):

- ``error_rate``: answer ``error_status`` (500 by default; 502, 503 or 504 also allowed)
  with the error envelope, code ``INTERNAL_ERROR`` (``BAD_GATEWAY``,
  ``SERVICE_UNAVAILABLE``, ``GATEWAY_TIMEOUT``), and no Retry-After.
  ``error_when``: ``"before"`` (default: the request is refused and nothing happens) or
  ``"after"`` (the handler runs, its effect is kept, and the answer is replaced by the
  error: the service did the work but the client is told it failed).
- ``throttle_rate``: 429 ``RATE_LIMITED`` with ``Retry-After: <retry_after>`` (seconds).
- ``throttle_date_rate``: 429 ``RATE_LIMITED`` with Retry-After as an HTTP date,
  ``retry_after`` seconds ahead (rounded up to the next whole second, so the wait is never
  shorter than asked). ``retry_after``: whole seconds, 0 to 86400, default 1. Both 429s
  happen before the handler: nothing takes effect.
- ``slow_rate``: the answer is held ``delay`` seconds (default 1.0, at most 600).
  ``slow_when``: ``"after"`` (default: the effect happens at once, the answer comes late;
  with ``delay`` above the client's timeout the client sees a read timeout although the
  work was done) or ``"before"`` (the handler starts after the delay).
- ``drop_rate``: close the connection without sending a byte of the answer. The client
  sees a connection error ("remote end closed connection without response", or a reset),
  never an HTTP status. ``drop_when``: ``"before"`` (default: nothing happens) or
  ``"after"`` (the effect happens, the answer is lost).
- Scope: ``paths`` (glob patterns matched against the path inside the service, e.g.
  ``/v1/subaccounts/credits`` for AI Connector, ``/api/v1/contacts*`` for the Contacts
  API), ``methods`` (e.g. ``["POST"]``) and ``orgs`` (the org the request authenticated
  into, for services that have one: Contacts API ``X-Org-Id``). A request outside the
  scope is never faulted. Faults apply only to requests that passed authentication.
- ``limit``: inject at most this many faults, then answer normally (``None``: no limit).
  With a rate of 1 it fails exactly the first ``limit`` requests in scope.
- ``seed``: makes the choices deterministic. Each request's fate is drawn from a generator
  seeded with (seed, method, path and query, a digest of the body, how many identical
  requests came before), so the same sequence of requests meets the same faults even when
  a threaded client sends them in a different order. Without a seed, choices are random.
- List faults, honoured by the Contacts API's lists (``GET /api/v1/contacts`` and
  ``POST /api/v1/contacts/search``):

  - ``list_overlap``: each page after the first also starts with this many items of the
    page before it (the page holds up to ``limit + list_overlap`` items; nothing is
    skipped), as when contacts are inserted at the top while a client pages by offset.
  - ``list_shuffle``: the items of each page come in a random order.
  - ``list_order``: ``"oldest_first"`` or ``"random"`` (a stable order unrelated to time,
    by a hash of the id and the seed) replaces the requested sort: the pages are not
    newest first at all.
  - ``list_rate``: the fraction of list answers that get ``list_overlap`` and
    ``list_shuffle`` (default 1). ``list_order`` applies to every list answer in scope.

  List faults are not counted against ``limit`` and are not logged.

Every injected fault is logged (:meth:`Faults.entries`; at most the last 10,000):
``{"service", "method", "path", "fault", "when", "status", "retry_after", "delay", "at"}``
where ``fault`` is ``error``, ``throttle``, ``throttle_date``, ``slow`` or ``drop``,
``retry_after`` is the Retry-After header sent (a 429 only) and ``at`` the epoch time the
fault was applied (for a 429, when the answer was made). The plan's counters say how many
requests it saw in scope and how many faults of each kind it injected.
"""
from __future__ import annotations

import collections
import email.utils
import fnmatch
import hashlib
import math
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from flask import Flask, Response, g, request

from .common import ApiError, error_response

KINDS = ("error", "throttle", "throttle_date", "slow", "drop")
RATES = {"error": "error_rate", "throttle": "throttle_rate",
         "throttle_date": "throttle_date_rate", "slow": "slow_rate", "drop": "drop_rate"}
ERROR_CODES = {500: "INTERNAL_ERROR", 502: "BAD_GATEWAY", 503: "SERVICE_UNAVAILABLE",
               504: "GATEWAY_TIMEOUT"}
LIST_ORDERS = ("oldest_first", "random")
WHEN = ("before", "after")
LOG_SIZE = 10_000
MAX_DELAY = 600.0
MAX_RETRY_AFTER = 86_400
DROP_KEY = "sandbox.fault.drop"


class FaultError(ValueError):
    """A fault option is invalid; ``field`` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class ConnectionDropped(ConnectionAbortedError):
    """Raised past Flask so the server closes the connection without an answer."""


def _rate(options: dict, name: str) -> float:
    value = options.get(name, 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            0.0 <= float(value) <= 1.0):
        raise FaultError(name, f"{name} must be a number from 0 to 1.")
    return float(value)


def _when(options: dict, name: str, default: str) -> str:
    value = options.get(name, default)
    if value not in WHEN:
        raise FaultError(name, f"{name} must be \"before\" or \"after\".")
    return value


def _strings(options: dict, name: str, upper: bool = False) -> tuple[str, ...] | None:
    value = options.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(
            isinstance(v, str) and v for v in value):
        raise FaultError(name, f"{name} must be a non-empty list of strings.")
    return tuple(v.upper() for v in value) if upper else tuple(value)


def _number(options: dict, name: str, default, low: float, high: float,
            integer: bool = False):
    value = options.get(name, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            low <= value <= high) or (integer and int(value) != value):
        kind = "a whole number" if integer else "a number"
        raise FaultError(name, f"{name} must be {kind} from {low:g} to {high:g}.")
    return int(value) if integer else float(value)


OPTIONS = {"error_rate", "error_status", "error_when", "throttle_rate", "throttle_date_rate",
           "retry_after", "slow_rate", "delay", "slow_when", "drop_rate", "drop_when",
           "paths", "methods", "orgs", "limit", "seed", "list_overlap", "list_shuffle",
           "list_order", "list_rate"}


@dataclass
class FaultPlan:
    """One service's validated fault options, with its counters."""

    service: str
    rates: dict[str, float]
    error_status: int = 500
    error_when: str = "before"
    retry_after: int = 1
    delay: float = 1.0
    slow_when: str = "after"
    drop_when: str = "before"
    paths: tuple[str, ...] | None = None
    methods: tuple[str, ...] | None = None
    orgs: tuple[str, ...] | None = None
    limit: int | None = None
    seed: Any = None
    list_overlap: int = 0
    list_shuffle: bool = False
    list_order: str | None = None
    list_rate: float = 1.0
    seen: int = 0
    injected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    _repeats: dict[str, int] = field(default_factory=dict, repr=False)
    _random: random.Random = field(default_factory=random.Random, repr=False)

    @classmethod
    def build(cls, service: str, options: dict) -> "FaultPlan":
        if not isinstance(options, dict):
            raise FaultError("body", "The fault options must be a JSON object.")
        unknown = sorted(set(options) - OPTIONS)
        if unknown:
            raise FaultError(unknown[0], f"Unknown fault option {unknown[0]}; known: "
                                         f"{', '.join(sorted(OPTIONS))}.")
        rates = {kind: _rate(options, name) for kind, name in RATES.items()}
        if sum(rates.values()) > 1.0 + 1e-9:
            raise FaultError("error_rate", "The five fault rates together must be at most 1 "
                                           "(a request gets at most one fault).")
        status = options.get("error_status", 500)
        if status not in ERROR_CODES or isinstance(status, bool):
            raise FaultError("error_status", "error_status must be 500, 502, 503 or 504.")
        order = options.get("list_order")
        if order is not None and order not in LIST_ORDERS:
            raise FaultError("list_order", "list_order must be \"oldest_first\" or \"random\".")
        shuffle = options.get("list_shuffle", False)
        if not isinstance(shuffle, bool):
            raise FaultError("list_shuffle", "list_shuffle must be true or false.")
        seed = options.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, str))):
            raise FaultError("seed", "seed must be an integer or a string.")
        return cls(
            service=service, rates=rates, error_status=status,
            error_when=_when(options, "error_when", "before"),
            retry_after=_number(options, "retry_after", 1, 0, MAX_RETRY_AFTER, integer=True),
            delay=_number(options, "delay", 1.0, 0, MAX_DELAY),
            slow_when=_when(options, "slow_when", "after"),
            drop_when=_when(options, "drop_when", "before"),
            paths=_strings(options, "paths"), methods=_strings(options, "methods", upper=True),
            orgs=_strings(options, "orgs"),
            limit=_number(options, "limit", None, 0, 10**9, integer=True),
            seed=seed, list_overlap=_number(options, "list_overlap", 0, 0, 1000, integer=True),
            list_shuffle=shuffle, list_order=order,
            list_rate=_rate({"list_rate": options.get("list_rate", 1.0)}, "list_rate"),
        )

    def describe(self) -> dict:
        """Return the plan as JSON-ready data: options, then counters."""
        return {"service": self.service, **{RATES[k]: v for k, v in self.rates.items()},
                "error_status": self.error_status, "error_when": self.error_when,
                "retry_after": self.retry_after, "delay": self.delay,
                "slow_when": self.slow_when, "drop_when": self.drop_when,
                "paths": list(self.paths) if self.paths else None,
                "methods": list(self.methods) if self.methods else None,
                "orgs": list(self.orgs) if self.orgs else None, "limit": self.limit,
                "seed": self.seed, "list_overlap": self.list_overlap,
                "list_shuffle": self.list_shuffle, "list_order": self.list_order,
                "list_rate": self.list_rate, "requests_seen": self.seen,
                "injected": dict(self.injected)}

    def in_scope(self, method: str, path: str, org: str | None) -> bool:
        if self.methods and method.upper() not in self.methods:
            return False
        if self.paths and not any(fnmatch.fnmatchcase(path, p) for p in self.paths):
            return False
        if self.orgs and org not in self.orgs:
            return False
        return True

    def generator(self, identity: str) -> random.Random:
        """Return the generator for one request (call with the plan's lock held)."""
        if self.seed is None:
            return random.Random(self._random.random())
        n = self._repeats.get(identity, 0)
        self._repeats[identity] = n + 1
        return random.Random(f"{self.seed}|{identity}|{n}")

    def choose(self, rng: random.Random) -> str | None:
        """Pick this request's fault (or None), honouring ``limit`` (lock held)."""
        draw, edge = rng.random(), 0.0
        picked = None
        for kind in KINDS:
            edge += self.rates[kind]
            if draw < edge:
                picked = kind
                break
        if picked is None:
            return None
        if self.limit is not None and sum(self.injected.values()) >= self.limit:
            return None
        self.injected[picked] += 1
        return picked

    @property
    def lists(self) -> bool:
        return bool(self.list_overlap or self.list_shuffle or self.list_order)


class Faults:
    """Every service's fault plan, the log of injected faults, and the Flask hooks."""

    def __init__(self, services: Iterable[str]):
        self.services = tuple(services)
        self._lock = threading.Lock()
        self._plans: dict[str, FaultPlan] = {}
        self._log: collections.deque = collections.deque(maxlen=LOG_SIZE)

    # -- configuration -------------------------------------------------------------------

    def _service(self, service: str) -> str:
        name = str(service).replace("-", "_")
        if name not in self.services:
            raise KeyError(f"No sandbox service named {service!r}; known: "
                           f"{', '.join(self.services)}.")
        return name

    def set(self, service: str, **options) -> dict:
        """Replace ``service``'s fault plan with ``options``; return it (see the docstring)."""
        name = self._service(service)
        plan = FaultPlan.build(name, options)
        with self._lock:
            self._plans[name] = plan
            return plan.describe()

    def clear(self, service: str | None = None) -> list[str]:
        """Remove one service's plan (or every plan, and the log); return what was cleared."""
        with self._lock:
            if service is None:
                cleared = sorted(self._plans)
                self._plans.clear()
                self._log.clear()
                return cleared
            name = self._service(service)
            return [name] if self._plans.pop(name, None) is not None else []

    def get(self, service: str) -> dict | None:
        """Return ``service``'s plan with its counters, or None."""
        name = self._service(service)
        with self._lock:
            plan = self._plans.get(name)
            return plan.describe() if plan else None

    def describe(self) -> dict:
        """Return every service's plan (None when it has none)."""
        with self._lock:
            return {name: (self._plans[name].describe() if name in self._plans else None)
                    for name in self.services}

    def entries(self, service: str | None = None) -> list[dict]:
        """Return the injected faults, oldest first (only ``service``'s when given)."""
        name = self._service(service) if service else None
        with self._lock:
            return [dict(e) for e in self._log if name is None or e["service"] == name]

    def _record(self, service: str, fault: str, when: str, **extra) -> None:
        entry = {"service": service, "method": request.method, "path": request.path,
                 "fault": fault, "when": when, "status": None, "retry_after": None,
                 "delay": None, "at": time.time()}
        entry.update(extra)
        with self._lock:
            self._log.append(entry)

    # -- the hooks ------------------------------------------------------------------------

    def install(self, app: Flask, service: str) -> Flask:
        """Add the fault hooks to one service's app (after its auth guard); return it."""
        name = self._service(service)

        @app.before_request
        def _fault_before():
            return self._before(name)

        @app.after_request
        def _fault_after(response):
            return self._after(name, response)

        app.wsgi_app = _DropMiddleware(app.wsgi_app)
        return app

    def _before(self, service: str):
        with self._lock:
            plan = self._plans.get(service)
            if plan is None or not plan.in_scope(request.method, request.path,
                                                 g.get("org_id")):
                return None
            plan.seen += 1
            body = g.get("raw_body") or b""
            identity = "|".join((request.method, request.full_path,
                                 hashlib.sha256(body).hexdigest()[:16]))
            rng = plan.generator(identity)
            fault = plan.choose(rng)
            if plan.lists:
                g.list_faults = {
                    "overlap": plan.list_overlap, "shuffle": plan.list_shuffle,
                    "order": plan.list_order, "rate": plan.list_rate, "seed": plan.seed,
                    "rng": random.Random(rng.random())}
            settings = {"status": plan.error_status, "error_when": plan.error_when,
                        "retry_after": plan.retry_after, "delay": plan.delay,
                        "slow_when": plan.slow_when, "drop_when": plan.drop_when}
        if fault is None:
            return None
        g.fault = (fault, settings)
        if fault in ("throttle", "throttle_date"):
            g.fault_done = True
            raise self._throttle(service, fault, settings["retry_after"])
        when = settings[{"error": "error_when", "slow": "slow_when",
                         "drop": "drop_when"}[fault]]
        if when == "after":
            return None
        g.fault_done = True
        if fault == "error":
            self._record(service, "error", "before", status=settings["status"])
            return self._error(settings["status"])
        if fault == "slow":
            self._record(service, "slow", "before", delay=settings["delay"])
            time.sleep(settings["delay"])
            return None
        self._record(service, "drop", "before")
        request.environ[DROP_KEY] = True
        return Response(b"", status=204)  # never sent: the middleware drops the connection

    def _after(self, service: str, response: Response) -> Response:
        planned = g.get("fault")
        if planned is None or g.get("fault_done"):
            return response
        g.fault_done = True
        fault, settings = planned
        if fault == "error":
            self._record(service, "error", "after", status=settings["status"])
            return self._error(settings["status"])
        if fault == "slow":
            self._record(service, "slow", "after", delay=settings["delay"])
            time.sleep(settings["delay"])
            return response
        self._record(service, "drop", "after")
        request.environ[DROP_KEY] = True
        return response

    def _throttle(self, service: str, fault: str, seconds: int) -> ApiError:
        now = time.time()
        if fault == "throttle":
            header = str(seconds)
        else:
            header = email.utils.formatdate(math.ceil(now + seconds), usegmt=True)
        self._record(service, fault, "before", status=429, retry_after=header)
        return ApiError(429, "RATE_LIMITED", f"Too many requests; retry after {seconds} "
                                             "seconds.", headers={"Retry-After": header})

    @staticmethod
    def _error(status: int) -> Response:
        messages = {500: "The service failed to handle this request.",
                    502: "The gateway got no valid answer from the service.",
                    503: "The service is temporarily unavailable.",
                    504: "The gateway timed out waiting for the service."}
        return error_response(status, ERROR_CODES[status], messages[status])


class _DropMiddleware:
    """Run the Flask app; when a hook marked the request dropped, close the socket unanswered.

    The connection is shut down both ways before anything is written, then ConnectionDropped
    (a ConnectionError) tells werkzeug's server that the connection is gone, so it writes
    nothing and logs nothing. Outside a real server (no ``werkzeug.socket``) the exception
    alone stands in for the drop.
    """

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        started: list = []

        def hold(status, headers, exc_info=None):
            started[:] = [status, headers, exc_info]
            return lambda data: None  # Flask never uses write(); a drop discards it anyway

        body = self.app(environ, hold)
        if environ.get(DROP_KEY):
            if hasattr(body, "close"):
                body.close()
            sock = environ.get("werkzeug.socket")
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            raise ConnectionDropped("sandbox fault: connection dropped")
        start_response(*started)
        return body
