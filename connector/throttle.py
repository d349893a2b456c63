"""Throttles every worker shares through the database: a connection's rate limit and a flow's
concurrency.

**Rate limit.** Time is cut into fixed windows of ``per_seconds`` seconds, numbered from the
epoch. One :class:`~connector.store.RateWindow` row per connection (and window length)
counts the requests of its current window. A request is admitted by one atomic statement:
``UPDATE ... SET count = count + 1 WHERE count < limit`` on the current window, or an
``UPDATE`` that moves the row to a newer window with ``count = 1``, or the ``INSERT`` of the
first row. SQLite runs one writer at a time; PostgreSQL re-checks the ``WHERE`` on the row it
locked, so however many processes race, no window admits more than the limit. A request
over the limit waits in place when its window reopens within ``MAX_WAIT`` seconds, else
raises :class:`~connector.errors.Throttled` so the engine puts the run back until then
without spending an attempt.

**Concurrency.** :func:`free_slots` tells the dispatcher how many more runs of each limited
flow may start; ``engine.claim`` enforces the limit atomically (see there).
"""
from __future__ import annotations

import random
import re
import time
from typing import Callable

from peewee import IntegrityError, fn

from . import store
from .errors import Throttled, UserError
from .sdk import App, RateLimit
from .store import Connection, Flow, RateWindow, Run

#: a wait for the next window up to this many seconds happens in place, inside the call
MAX_WAIT = 1.0
_UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0,
          "minute": 60.0, "h": 3600.0, "hour": 3600.0, "d": 86400.0, "day": 86400.0}
_SPEC = re.compile(r"^\s*(\d+)\s*(?:/|\s+per\s+)\s*(\d+(?:\.\d+)?)?\s*([a-z]*?)s?\s*$", re.I)


def as_limit(value) -> RateLimit | None:
    """Return ``value`` (a RateLimit, a (requests, seconds) pair, or None) as a RateLimit."""
    if value is None:
        return None
    requests, per = value
    if int(requests) < 1 or float(per) <= 0:
        raise ValueError(f"a rate limit needs at least 1 request per a positive number of "
                         f"seconds, got {value!r}")
    return RateLimit(int(requests), float(per))


def parse(text: str, field: str = "rate_limit") -> tuple[int | None, float | None]:
    """Read a rate-limit option: ``100/60`` (per 60 s), ``100/min``, ``5/s``, ``1000/h``;
    ``off`` for none, ``default`` for the app's. Return (requests, seconds) as stored:
    (0, None) for off, (None, None) for the default."""
    value = (text or "").strip().lower()
    if value in ("off", "none", "0"):
        return 0, None
    if value in ("default", ""):
        return None, None
    match = _SPEC.match(value)
    unit = _UNITS.get(match.group(3).lower()) if match else None
    if match is None or unit is None:
        raise UserError(f"{field}: expected REQUESTS/SECONDS such as 100/60, or 100/min, 5/s, "
                        f"1000/h, or off, or default; got {text!r}")
    requests, count = int(match.group(1)), float(match.group(2) or 1)
    if requests < 1 or count * unit <= 0:
        raise UserError(f"{field}: expected at least 1 request per a positive time; got "
                        f"{text!r}")
    return requests, count * unit


def describe(requests: int | None, seconds: float | None) -> str:
    """Return a stored override as the option text: ``100/60s``, ``off`` or ``default``."""
    if requests is None:
        return "default"
    if requests <= 0:
        return "off"
    return RateLimit(requests, seconds or 60.0).describe()


def effective(app: App, conn: Connection | None) -> RateLimit | None:
    """Return the limit a connection's calls obey: its override, else the app's default."""
    if conn is not None and conn.rate_limit is not None:
        if conn.rate_limit <= 0:
            return None
        return RateLimit(conn.rate_limit, conn.rate_window or 60.0)
    return as_limit(app.rate_limit)


def set_override(conn: Connection, requests: int | None, seconds: float | None) -> Connection:
    """Store ``conn``'s own rate limit: (None, None) takes the app's, 0 requests none."""
    if requests is not None and requests > 0 and not (seconds and seconds > 0):
        raise UserError(f"connection {conn.name}: rate_limit: expected a window of more than "
                        "0 seconds")
    with store.write_tx():
        Connection.update(rate_limit=requests, rate_window=seconds if requests else None,
                          updated_at=store.utcnow()).where(Connection.id == conn.id).execute()
    return Connection.get_by_id(conn.id)


def acquire(key: str, limit: RateLimit, now: float | None = None) -> float:
    """Count one request against ``limit`` under ``key``; return 0.0 when admitted, else the
    seconds until the window reopens (nothing counted)."""
    now = time.time() if now is None else now
    per = float(limit.per_seconds)
    window = int(now // per)
    for _ in range(5):
        with store.write_tx():  # queued with the other writers (see ledger.once)
            waited = _count(key, limit, window, now, per)
        if waited is not None:
            return waited
    return 0.01  # the row kept changing under us: try again in a moment


def _count(key: str, limit: RateLimit, window: int, now: float, per: float) -> float | None:
    """One try of :func:`acquire`: 0.0 admitted, seconds to wait, or None to try again."""
    # A row already in a newer window (a worker whose clock runs ahead) counts us there.
    if RateWindow.update(count=RateWindow.count + 1).where(
            (RateWindow.key == key) & (RateWindow.window >= window) &
            (RateWindow.count < limit.requests)).execute():
        return 0.0
    if RateWindow.update(window=window, count=1).where(
            (RateWindow.key == key) & (RateWindow.window < window)).execute():
        return 0.0
    row = RateWindow.get_or_none(RateWindow.key == key)
    if row is None:
        try:
            with store.db.atomic():
                RateWindow.create(key=key, window=window, count=1)
            return 0.0
        except IntegrityError:
            return None  # another worker made the row first: count against it
    if row.window >= window and row.count >= limit.requests:
        return max((row.window + 1) * per - now, 0.001)
    return None


class RateGate:
    """Hold each request of one connection until its rate limit admits it."""

    def __init__(self, key: str, limit: RateLimit, name: str, max_wait: float = MAX_WAIT,
                 sleep: Callable[[float], None] = time.sleep):
        self.key, self.limit, self.name = key, limit, name
        self.max_wait, self.sleep = max_wait, sleep

    def wait_turn(self) -> None:
        """Return when admitted: wait in place up to ``max_wait`` s, else raise Throttled."""
        waited = 0.0
        while True:
            delay = acquire(self.key, self.limit)
            if delay <= 0:
                return
            if waited + delay > self.max_wait:
                raise Throttled(delay, f"rate limit of {self.limit.describe()} for connection "
                                       f"{self.name} is used up; waiting {delay:.1f} s for "
                                       "the next window")
            pause = delay + random.uniform(0, 0.01)
            self.sleep(pause)
            waited += pause


def gate_for(app: App, conn: Connection | None) -> RateGate | None:
    """Return the gate for ``conn``'s calls, or None when no limit applies."""
    limit = effective(app, conn)
    if conn is None or limit is None:
        return None
    return RateGate(f"{_prefix(conn.id)}{limit.per_seconds:g}", limit, conn.name)


def _prefix(conn_id: int) -> str:
    return f"conn:{conn_id}:"


def forget(conn_id: int) -> int:
    """Delete a deleted connection's rate windows (a later connection may get its id)."""
    return RateWindow.delete().where(RateWindow.key.startswith(_prefix(conn_id))).execute()


# -- concurrency --------------------------------------------------------------------------------

def busy(flow_id, now, other_than=None):
    """Return a subquery counting the flow's runs executing now (running, lease alive)."""
    other = Run.alias()
    query = other.select(fn.COUNT(other.id)).where(
        (other.flow == flow_id) & (other.status == Run.RUNNING) & (other.lease_until >= now))
    if other_than is not None:
        query = query.where(other.id != other_than)
    return query


def free_slots(now) -> dict[int, int]:
    """Return, for each unpaused flow with a concurrency limit, how many more runs may start."""
    rows = (Flow.select(Flow.id, Flow.concurrency, busy(Flow.id, now).alias("busy"))
            .where((Flow.concurrency > 0) & Flow.paused_reason.is_null()).tuples())
    return {flow_id: limit - running for flow_id, limit, running in rows}
