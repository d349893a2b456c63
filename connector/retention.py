"""Prune history so a long-running connector stays small: never what keeps effects single.

Pruned: finished runs (succeeded, failed, filtered) older than ``keep_runs_days``, and beyond
the newest ``keep_runs_per_flow`` of each flow, with their step runs and attempts; and
dedupe keys whose ``expires_at`` has passed (webhook and poll keys after 7 days). Never
pruned: queued, running or waiting runs; dedupe keys kept forever (credit grants); the
idempotency ledger (every side effect ever recorded).
"""
from __future__ import annotations

import datetime as dt

from peewee import fn

from . import store
from .config import Settings
from .store import Run, SeenItem, StepAttempt, StepRun, utcnow

BATCH = 500


def prune(settings: Settings, now: dt.datetime | None = None) -> dict[str, int]:
    """Delete what the settings say may go; return how many runs and keys went."""
    now = now or utcnow()
    removed = {"runs": 0, "seen_keys": 0}
    cutoff = now - dt.timedelta(days=settings.keep_runs_days)
    removed["runs"] += _delete_runs(Run.select(Run.id).where(
        Run.status.in_(Run.FINAL) & (Run.created_at < cutoff)))
    over = (Run.select(Run.flow, fn.COUNT(Run.id).alias("n")).where(Run.status.in_(Run.FINAL))
            .group_by(Run.flow).having(fn.COUNT(Run.id) > settings.keep_runs_per_flow))
    for row in list(over):
        newest = (Run.select(Run.id).where((Run.flow == row.flow_id) &
                                           Run.status.in_(Run.FINAL))
                  .order_by(Run.id.desc()).offset(settings.keep_runs_per_flow).limit(1))
        edge = newest.scalar()
        if edge is not None:
            removed["runs"] += _delete_runs(Run.select(Run.id).where(
                (Run.flow == row.flow_id) & Run.status.in_(Run.FINAL) & (Run.id <= edge)))
    while True:
        with store.write_tx():
            ids = [s.id for s in SeenItem.select(SeenItem.id).where(
                SeenItem.expires_at.is_null(False) & (SeenItem.expires_at < now)).limit(BATCH)]
            if not ids:
                break
            removed["seen_keys"] += SeenItem.delete().where(SeenItem.id.in_(ids)).execute()
    return removed


def _delete_runs(query) -> int:
    """Delete the runs ``query`` selects, in batches, children first (no cascade needed)."""
    total = 0
    while True:
        with store.write_tx():
            ids = [r.id for r in query.limit(BATCH)]
            if not ids:
                return total
            steps = StepRun.select(StepRun.id).where(StepRun.run.in_(ids))
            StepAttempt.delete().where(StepAttempt.step_run.in_(steps)).execute()
            StepRun.delete().where(StepRun.run.in_(ids)).execute()
            total += Run.delete().where(Run.id.in_(ids)).execute()
