"""Claims and leases: which runs are due, taking one atomically, and holding it.

A claim is one conditional UPDATE (queued and due, or running with an expired lease), so two
workers never run the same run at once and a crashed worker's runs are taken up again. It
returns the claimed row itself (UPDATE ... RETURNING, SQLite >= 3.35 and PostgreSQL), so
the executor reads nothing more to start. Every later write of the run renews the lease
inside its own transaction (:func:`hold`), or stops with :class:`LostLease`.
"""
from __future__ import annotations

import datetime as dt
import sqlite3

from peewee import fn

from . import statements, store, throttle
from .store import Flow, Run, utcnow

_HOLD = statements.Update(Run, [Run.lease_until],  # sent before every step's commit
                          [(Run.id, "="), (Run.status, "="), (Run.lease_until, "=")])


class LostLease(Exception):
    """Another worker took the run after our lease expired: stop without writing."""


def _due(now):
    return (((Run.status.in_(Run.DUE)) & (Run.next_attempt_at <= now)) |
            ((Run.status == Run.RUNNING) & (Run.lease_until < now)))


def due_runs(limit: int, exclude: set[int] = frozenset()) -> list[int]:
    """Return ids of runs that can be claimed now (due, or with an expired lease).

    A flow with a concurrency limit offers only as many runs as it has free slots, and
    none while it is at its limit, so its queued runs wait without being claimed in vain.
    """
    now = utcnow()
    query = (Run.select(Run.id, Run.next_attempt_at).join(Flow)
             .where(_due(now) & Flow.paused_reason.is_null() &  # a paused flow's runs wait
                    (Flow.concurrency == 0))
             .order_by(Run.next_attempt_at, Run.id).limit(limit + len(exclude)))
    picked = [(r.next_attempt_at, r.id) for r in query if r.id not in exclude]
    picked += _limited(now, exclude)
    picked.sort()
    return [run_id for _, run_id in picked[:limit]]


def due_limited(limit: int, exclude: set[int] = frozenset()) -> list[int]:
    """Return ids of due runs of flows with a concurrency limit, within their free slots
    (the runs :func:`claim_batch` leaves alone)."""
    if limit <= 0:
        return []
    return [run_id for _, run_id in sorted(_limited(utcnow(), exclude))[:limit]]


def _limited(now, exclude) -> list[tuple]:
    picked = []
    for flow_id, free in throttle.free_slots(now).items():
        if free <= 0:
            continue
        limited = (Run.select(Run.id, Run.next_attempt_at)
                   .where((Run.flow == flow_id) & _due(now))
                   .order_by(Run.next_attempt_at, Run.id).limit(free + len(exclude)))
        picked += [(r.next_attempt_at, r.id) for r in limited if r.id not in exclude][:free]
    return picked


def claim_batch(limit: int, lease_seconds: int, exclude: set[int] = frozenset()) -> list[Run]:
    """Take up to ``limit`` due runs of unpaused flows without a concurrency limit at once.

    One UPDATE ... RETURNING picks the oldest due runs and leases them, so an executor
    pays one statement for a batch instead of a read plus a claim per run. Call it inside
    :func:`connector.store.write_tx` (the caller usually writes more in the same
    transaction). Another claimer racing for the same rows takes each at most once: the
    outer condition is checked again on the row being updated (SQLite writes one at a
    time; PostgreSQL re-reads a row another transaction changed before updating it).
    Returns the claimed rows oldest first; flows with a limit go through :func:`claim_run`.
    """
    if limit <= 0:
        return []
    now = utcnow()
    lease = now + dt.timedelta(seconds=lease_seconds)
    if store.is_sqlite() and sqlite3.sqlite_version_info < (3, 35):  # no RETURNING yet
        due = (Run.select(Run.id).join(Flow)
               .where(_due(now) & Flow.paused_reason.is_null() & (Flow.concurrency == 0) &
                      Run.id.not_in(sorted(exclude)))
               .order_by(Run.next_attempt_at, Run.id).limit(limit))
        return [run for run in (claim_run(r.id, lease_seconds) for r in due)
                if run is not None]
    stamp = Run.next_attempt_at.db_value
    due = (*Run.DUE, stamp(now), Run.RUNNING, stamp(now))
    params = [Run.RUNNING, stamp(lease), 1, stamp(now), *due, *sorted(exclude), limit, *due]
    rows = store.db.execute_sql(_claim_sql(len(exclude)), params).fetchall()
    runs = [statements.instance(Run, row) for row in rows]
    runs.sort(key=lambda run: (run.next_attempt_at, run.id))
    return runs


_CLAIMS: dict[int, statements.Sql] = {}  # by the number of excluded ids


def _claim_sql(excluded: int) -> str:
    """The batch claim as SQL, written once per dialect and number of excluded ids: building
    it with peewee cost more than running it, and an executor claims many times a second.
    Equivalent to ``Run.update(...).where(Run.id.in_(<oldest due runs of unpaused,
    unlimited flows>) & <still due>).returning(Run)``."""
    statement = _CLAIMS.get(excluded)
    if statement is None:
        statement = _CLAIMS[excluded] = statements.Sql(
            lambda param, postgres: _write_claim(param, excluded))
    return statement.sql()[0]


def _write_claim(param: str, excluded: int) -> str:
    run, flow = f'"{Run._meta.table_name}"', f'"{Flow._meta.table_name}"'
    statuses = ", ".join([param] * len(Run.DUE))

    def due(t):  # _due(now) on the table prefix t
        return (f'(({t}"status" IN ({statuses}) AND {t}"next_attempt_at" <= {param})'
                f' OR ({t}"status" = {param} AND {t}"lease_until" < {param}))')

    run_due = due('"r".')
    skip = f' AND "r"."id" NOT IN ({", ".join([param] * excluded)})' if excluded else ""
    return (f'UPDATE {run} SET "status" = {param}, "lease_until" = {param}, '
            f'"attempts" = ("attempts" + {param}), '
            f'"started_at" = COALESCE("started_at", {param}) '
            f'WHERE "id" IN (SELECT "r"."id" FROM {run} AS "r" '
            f'INNER JOIN {flow} AS "f" ON ("r"."flow_id" = "f"."id") '
            f'WHERE {run_due} AND "f"."paused_reason" IS NULL '
            f'AND "f"."concurrency" = 0{skip} '
            f'ORDER BY "r"."next_attempt_at", "r"."id" LIMIT {param}) '
            f'AND {due("")} RETURNING {statements.columns(Run)}')


def claim(run_id: int, lease_seconds: int) -> dt.datetime | None:
    """Atomically take ``run_id``; return the lease deadline, or None if someone else has it
    (or its flow is paused, or runs as many runs as its concurrency allows)."""
    run = claim_run(run_id, lease_seconds)
    return None if run is None else run.lease_until


def claim_run(run_id: int, lease_seconds: int) -> Run | None:
    """Atomically take ``run_id``; return the claimed row (``lease_until`` is the lease).

    A flow without a concurrency limit is claimed by one UPDATE ... RETURNING. When that
    finds nothing, the run is either taken, not due, paused, or its flow has a limit; only
    the last case goes on: the UPDATE then also counts the flow's executing runs, inside a
    transaction that serializes the flow's claims (BEGIN IMMEDIATE on SQLite, the flow row
    locked FOR UPDATE on PostgreSQL).
    """
    now = utcnow()
    lease = now + dt.timedelta(seconds=lease_seconds)
    update = (Run.update(status=Run.RUNNING, lease_until=lease, attempts=Run.attempts + 1,
                         started_at=fn.COALESCE(Run.started_at, now))
              .where((Run.id == run_id) & _due(now)))
    unlimited = Run.flow.not_in(Flow.select(Flow.id).where(
        Flow.paused_reason.is_null(False) | (Flow.concurrency != 0)))
    with store.write_tx():  # queue with the other writers of this process (see write_tx)
        run = _returning(update.where(unlimited), run_id)
    if run is not None:
        return run
    flow_id = (Run.select(Run.flow).join(Flow)
               .where((Run.id == run_id) & (Flow.concurrency != 0)).scalar())
    if flow_id is None:
        return None
    with store.write_tx():
        locked = Flow.select(Flow.concurrency).where(
            (Flow.id == flow_id) & Flow.paused_reason.is_null())
        limit = (locked if store.is_sqlite() else locked.for_update()).scalar()
        if limit is None:  # paused meanwhile
            return None
        if limit:
            update = update.where(throttle.busy(flow_id, now, other_than=run_id) < limit)
        return _returning(update, run_id)


def _returning(update, run_id: int) -> Run | None:
    if store.is_sqlite() and sqlite3.sqlite_version_info < (3, 35):  # no RETURNING yet
        return Run.get_by_id(run_id) if update.execute() == 1 else None
    rows = list(update.returning(Run).execute())
    return rows[0] if rows else None


def hold(run_id: int, lease: dt.datetime, lease_seconds: int) -> dt.datetime:
    """Renew the lease inside the current transaction, or raise LostLease."""
    new = utcnow() + dt.timedelta(seconds=lease_seconds)
    if _HOLD.execute(new, run_id, Run.RUNNING, lease) != 1:
        raise LostLease(run_id)
    return new
