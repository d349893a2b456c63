"""Retention: old history goes, what keeps effects single never does."""
from __future__ import annotations

import datetime as dt

from connector.retention import prune
from connector.store import IdempotencyRecord, Run, SeenItem, StepRun, utcnow

from .test_engine import FakePlugin, make_flow, queue  # noqa: F401  (the same tiny plugin)


def test_prune_by_age_and_count_keeps_what_must_stay(make_host):
    host = make_host(extra_plugins=[FakePlugin()], keep_runs_days=30, keep_runs_per_flow=3)
    flow = make_flow(host, [{"action": "t.echo", "inputs": {"value": 1}}])
    for i in range(6):
        queue(host, flow, f"k{i}")
    from connector.engine import run_due

    run_due(host)
    queue(host, flow, "waiting")  # not finished: never pruned, however old
    old = utcnow() - dt.timedelta(days=40)
    Run.update(created_at=old).where(Run.dedupe_key.in_(["k0", "waiting"])).execute()
    SeenItem.update(expires_at=utcnow() - dt.timedelta(seconds=1)).where(
        SeenItem.key == "k1").execute()
    SeenItem.update(expires_at=None).where(SeenItem.key == "k2").execute()  # a credit key
    IdempotencyRecord.create(scope="s", key="forever", request_hash="h", status="done")
    removed = prune(host.settings)
    assert removed == {"runs": 3, "seen_keys": 1}  # k0 by age; k1, k2 beyond the newest 3
    left = {r.dedupe_key for r in Run.select()}
    assert left == {"k3", "k4", "k5", "waiting"}
    assert StepRun.select().count() == 3  # the pruned runs' steps went with them
    assert {s.key for s in SeenItem.select()} == {"k0", "k2", "k3", "k4", "k5", "waiting"}
    assert IdempotencyRecord.select().count() == 1
    assert prune(host.settings) == {"runs": 0, "seen_keys": 0}
