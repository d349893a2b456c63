"""The engine: the seen-items ledger, step execution, retries, replay, leases, idempotency."""
from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter

import pytest
from marshmallow import Schema, fields

from connector import (
    Action,
    FatalAPIError,
    RetriableAPIError,
    engine,
    flows,
)
from connector.errors import IdempotencyConflict, OutcomeUnknown
from connector.intake import ingest
from connector.store import (
    IdempotencyRecord,
    Run,
    SeenItem,
    StepAttempt,
    StepRun,
    utcnow,
)

from .conftest import wait_for
from .hooks import HookPlugin

CALLS: Counter = Counter()
PLAN: dict = {}


class EchoInputs(Schema):
    value = fields.Raw(required=True)
    count = fields.Integer(load_default=0)


class Echo(Action):
    key = "t.echo"
    app = "t"
    label = "Echo"
    Inputs = EchoInputs

    def run(self, ctx, inputs):
        CALLS[("echo", ctx.step_name)] += 1
        return {"value": inputs["value"], "key": ctx.idempotency_key}


class Scripted(Action):
    """Fails as PLAN[step_name] says, one entry per attempt, then succeeds."""

    key = "t.scripted"
    app = "t"
    label = "Scripted"
    Inputs = EchoInputs

    def run(self, ctx, inputs):
        CALLS[("scripted", ctx.step_name)] += 1
        script = PLAN.get(ctx.step_name, [])
        if script:
            outcome = script.pop(0)
            if isinstance(outcome, BaseException):
                raise outcome
        return {"ok": True}


def FakePlugin():
    """The test hook with the two actions above (other test modules use it too)."""
    return HookPlugin(Echo, Scripted)


@pytest.fixture
def thost(make_host):
    CALLS.clear()
    PLAN.clear()
    return make_host(extra_plugins=[FakePlugin()], max_attempts=3)


def make_flow(host, steps, name="f"):
    return flows.save(host, {"name": name, "trigger": {"key": "t.hook"}, "steps": steps})


def queue(host, flow, key="k1", item=None):
    return ingest(flow, host.catalog.trigger("t.hook"), [(key, item or {"id": key, "n": 7})])


def test_same_key_twice_queues_one_run(thost):
    flow = make_flow(thost, [{"action": "t.echo", "inputs": {"value": 1}}])
    first = queue(thost, flow)
    second = queue(thost, flow)
    assert len(first.created) == 1 and first.duplicates == 0
    assert second.created == [] and second.duplicates == 1
    assert Run.select().count() == 1 and SeenItem.select().count() == 1


def test_a_batch_with_a_duplicate_keeps_the_others(thost):
    flow = make_flow(thost, [{"action": "t.echo", "inputs": {"value": 1}}])
    queue(thost, flow, "a")
    trigger = thost.catalog.trigger("t.hook")
    result = ingest(flow, trigger, [("b", {}), ("a", {}), ("c", {})])
    assert len(result.created) == 2 and result.duplicates == 1
    assert Run.select().count() == 3


def test_concurrent_deliveries_of_one_key_make_one_run(thost):
    flow = make_flow(thost, [{"action": "t.echo", "inputs": {"value": 1}}])
    results, barrier = [], threading.Barrier(16)

    def deliver():
        barrier.wait()
        results.append(queue(thost, flow, "same"))

    threads = [threading.Thread(target=deliver) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(r.created) for r in results) == 1
    assert sum(r.duplicates for r in results) == 15
    assert Run.select().count() == 1


def test_webhook_dedupe_keys_kept_at_least_76_hours(thost):
    flow = make_flow(thost, [{"action": "t.echo", "inputs": {"value": 1}}])
    queue(thost, flow)
    seen = SeenItem.get()
    assert seen.expires_at - utcnow() >= dt.timedelta(hours=76)


def test_steps_map_trigger_and_earlier_outputs(thost):
    flow = make_flow(thost, [
        {"name": "first", "action": "t.echo", "inputs": {"value": "{{ trigger.n }}"}},
        {"name": "second", "action": "t.echo",
         "inputs": {"value": "got {{ steps.first.value }}", "count": "{{ trigger.n }}"}},
    ])
    queue(thost, flow)
    assert engine.run_due(thost) == 1
    run = Run.get()
    assert run.status == Run.SUCCEEDED and run.finished_at is not None
    steps = {s.name: s for s in run.step_runs}
    assert steps["first"].output["value"] == 7
    assert steps["second"].inputs == {"value": "got 7", "count": 7}
    assert steps["second"].output["value"] == "got 7"
    assert steps["first"].output["key"] != steps["second"].output["key"]


def test_retriable_failure_waits_retry_after_then_succeeds(thost):
    flow = make_flow(thost, [{"name": "s", "action": "t.scripted", "inputs": {"value": 1}}])
    PLAN["s"] = [RetriableAPIError("slow down", status=429, retry_after=0.4)]
    queue(thost, flow)
    before = utcnow()
    engine.run_due(thost)
    run = Run.get()
    assert run.status == Run.QUEUED
    assert "HTTP 429: slow down" in run.error
    assert (run.next_attempt_at - before).total_seconds() >= 0.4
    assert engine.run_due(thost) == 0  # not due yet
    time.sleep(0.5)
    assert engine.run_due(thost) == 1
    run = Run.get()
    step = StepRun.get()
    assert run.status == Run.SUCCEEDED and step.attempts == 2
    history = [(a.number, a.status) for a in StepAttempt.select().order_by(StepAttempt.number)]
    assert history == [(1, "retrying"), (2, "succeeded")]
    assert StepAttempt.get(number=1).error == "HTTP 429: slow down"


def test_retries_stop_after_max_attempts(thost):
    flow = make_flow(thost, [{"name": "s", "action": "t.scripted", "inputs": {"value": 1}}])
    PLAN["s"] = [RetriableAPIError("down", status=503, retry_after=0)] * 5
    queue(thost, flow)
    for _ in range(5):
        engine.run_due(thost)
        time.sleep(0.02)
    run = Run.get()
    assert run.status == Run.FAILED
    assert "gave up after 3 attempts" in run.error and "HTTP 503: down" in run.error
    assert CALLS[("scripted", "s")] == 3


def test_fatal_failure_keeps_the_services_message_and_stops(thost):
    flow = make_flow(thost, [
        {"name": "s", "action": "t.scripted", "inputs": {"value": 1}},
        {"name": "after", "action": "t.echo", "inputs": {"value": 1}},
    ])
    PLAN["s"] = [FatalAPIError("Sub-account not found", status=404, code="SUBACCOUNT_NOT_FOUND")]
    queue(thost, flow)
    engine.run_due(thost)
    run = Run.get()
    assert run.status == Run.FAILED and run.failed_step == "s"
    assert run.error == "step s: HTTP 404 SUBACCOUNT_NOT_FOUND: Sub-account not found"
    assert CALLS[("echo", "after")] == 0
    assert StepRun.get(name="s").attempts == 1


def test_a_crashing_plugin_fails_the_run_not_the_worker(thost, monkeypatch):
    flow = make_flow(thost, [{"name": "s", "action": "t.scripted", "inputs": {"value": 1}}])
    PLAN["s"] = [ZeroDivisionError("oops")]
    queue(thost, flow)
    engine.run_due(thost)
    assert "internal error in action t.scripted: ZeroDivisionError" in Run.get().error


def test_inputs_invalid_after_rendering_name_the_field(thost):
    flow = make_flow(thost, [{"name": "s", "action": "t.echo",
                              "inputs": {"value": 1, "count": "{{ trigger.id }}"}}])
    queue(thost, flow, key="not-a-number")
    engine.run_due(thost)
    run = Run.get()
    assert run.status == Run.FAILED
    assert "count: Not a valid integer" in run.error


def test_filter_stops_the_run_before_its_step(thost):
    flow = make_flow(thost, [
        {"name": "a", "action": "t.echo", "inputs": {"value": 1}},
        {"name": "b", "action": "t.echo", "inputs": {"value": 2},
         "filter": [{"field": "trigger.n", "op": "gt", "value": 100}]},
    ])
    queue(thost, flow)
    engine.run_due(thost)
    assert Run.get().status == Run.FILTERED
    assert CALLS[("echo", "a")] == 1 and CALLS[("echo", "b")] == 0


def test_replay_resumes_at_the_failed_step(thost):
    flow = make_flow(thost, [
        {"name": "a", "action": "t.echo", "inputs": {"value": 1}},
        {"name": "b", "action": "t.scripted", "inputs": {"value": 1}},
    ])
    PLAN["b"] = [FatalAPIError("bad request", status=400)]
    queue(thost, flow)
    engine.run_due(thost)
    run = Run.get()
    assert run.status == Run.FAILED
    with pytest.raises(Exception, match=f"no run with id {run.id + 999}"):
        engine.replay(run.id + 999)
    engine.replay(run.id)
    assert Run.get().status == Run.QUEUED
    engine.run_due(thost)
    assert Run.get().status == Run.SUCCEEDED
    assert CALLS[("echo", "a")] == 1  # the succeeded step was not repeated
    assert CALLS[("scripted", "b")] == 2


def test_replay_refuses_a_run_that_did_not_fail(thost):
    flow = make_flow(thost, [{"action": "t.echo", "inputs": {"value": 1}}])
    queue(thost, flow)
    engine.run_due(thost)
    with pytest.raises(Exception, match="only failed runs can be replayed"):
        engine.replay(Run.get().id)


def test_claims_are_exclusive_and_expired_leases_are_taken_again(thost):
    flow = make_flow(thost, [{"action": "t.echo", "inputs": {"value": 1}}])
    run_id = queue(thost, flow).created[0]
    lease = engine.claim(run_id, 60)
    assert lease is not None
    assert engine.claim(run_id, 60) is None  # held
    assert engine.due_runs(10) == []
    Run.update(lease_until=utcnow() - dt.timedelta(seconds=1)).where(Run.id == run_id).execute()
    assert engine.due_runs(10) == [run_id]  # a dead worker's run is due again
    second = engine.claim(run_id, 60)
    assert second is not None
    with pytest.raises(engine.LostLease):  # the first worker may no longer write
        with engine.store.write_tx():
            engine._hold(run_id, lease, 60)
    assert engine.execute(thost, run_id) is None  # still held by the second claim
    Run.update(lease_until=utcnow() - dt.timedelta(seconds=1)).where(Run.id == run_id).execute()
    assert engine.execute(thost, run_id) == Run.SUCCEEDED
    assert Run.get_by_id(run_id).attempts == 3


def test_backoff_grows_with_full_jitter_and_honours_retry_after():
    for attempt in range(1, 12):
        for _ in range(50):
            delay = engine.backoff(attempt, 2.0, 300.0, None, 3600.0)
            assert 0 <= delay <= min(300.0, 2.0 * 2 ** (attempt - 1))
    assert 30 <= engine.backoff(1, 2.0, 300.0, 30, 3600.0) <= 30.2
    assert 3600 <= engine.backoff(1, 2.0, 300.0, 10 ** 6, 3600.0) <= 3600.2  # capped


# -- the idempotency ledger ---------------------------------------------------------------

def test_once_runs_a_call_once_and_replays_its_result(thost):
    calls = []
    call = lambda: calls.append(1) or {"granted": len(calls)}  # noqa: E731
    assert engine.once("s", "key-1", {"amount": 5}, call) == {"granted": 1}
    assert engine.once("s", "key-1", {"amount": 5}, call) == {"granted": 1}
    assert len(calls) == 1
    assert engine.once("other-scope", "key-1", {"amount": 5}, call) == {"granted": 2}


def test_once_refuses_the_same_key_with_different_inputs(thost):
    engine.once("s", "key-1", {"amount": 5}, lambda: {"ok": 1})
    with pytest.raises(IdempotencyConflict, match="different inputs"):
        engine.once("s", "key-1", {"amount": 6}, lambda: {"ok": 2})


def test_once_releases_the_key_when_the_service_said_no(thost):
    def refuse():
        raise RetriableAPIError("busy", status=503)

    with pytest.raises(RetriableAPIError):
        engine.once("s", "k", {"a": 1}, refuse)
    assert IdempotencyRecord.select().count() == 0
    assert engine.once("s", "k", {"a": 1}, lambda: {"ok": True}) == {"ok": True}


def test_once_keeps_a_maybe_applied_call_pending_and_refuses_to_guess(thost):
    def timeout():
        raise RetriableAPIError("no answer in 30 s", maybe_applied=True)

    with pytest.raises(RetriableAPIError):
        engine.once("s", "k", {"a": 1}, timeout)
    assert IdempotencyRecord.get().status == IdempotencyRecord.PENDING
    with pytest.raises(OutcomeUnknown, match="may or may not have taken effect"):
        engine.once("s", "k", {"a": 1}, lambda: {"ok": True})
    assert engine.release_key("s", "k") == 1
    assert engine.once("s", "k", {"a": 1}, lambda: {"ok": True}) == {"ok": True}


def test_a_key_held_by_a_live_run_makes_others_wait_then_share_its_result(thost):
    flow = make_flow(thost, [{"action": "t.echo", "inputs": {"value": 1}}])
    holder = queue(thost, flow, "h").created[0]
    engine.claim(holder, 60)  # the holder is mid-call, its lease alive
    IdempotencyRecord.create(scope="s", key="k", request_hash=engine.request_hash({"a": 1}),
                             run_id=holder, step_name="grant")
    with pytest.raises(RetriableAPIError, match=f"being used by run {holder}"):
        engine.once("s", "k", {"a": 1}, lambda: {"second": True}, run_id=holder + 1)
    IdempotencyRecord.update(status=IdempotencyRecord.DONE, response={"first": True}).execute()
    assert engine.once("s", "k", {"a": 1}, lambda: {"second": True},
                       run_id=holder + 1) == {"first": True}


def test_a_key_left_pending_by_a_dead_run_is_outcome_unknown(thost):
    flow = make_flow(thost, [{"action": "t.echo", "inputs": {"value": 1}}])
    holder = queue(thost, flow, "h").created[0]
    engine.claim(holder, 60)
    Run.update(lease_until=utcnow() - dt.timedelta(seconds=1)).execute()  # it died
    IdempotencyRecord.create(scope="s", key="k", request_hash=engine.request_hash({"a": 1}),
                             run_id=holder, step_name="grant")
    with pytest.raises(OutcomeUnknown):
        engine.once("s", "k", {"a": 1}, lambda: {"second": True}, run_id=holder + 1)
    with pytest.raises(OutcomeUnknown):  # and the same run, claimed again, refuses too
        engine.once("s", "k", {"a": 1}, lambda: {"second": True}, run_id=holder)


def test_throttled_waits_without_using_up_attempts(thost):
    from connector import Throttled

    flow = make_flow(thost, [{"name": "s", "action": "t.scripted", "inputs": {"value": 1}}])
    PLAN["s"] = [Throttled(0)] * 5  # more waits than max_attempts (3)
    queue(thost, flow)
    for _ in range(7):
        engine.run_due(thost)
        time.sleep(0.01)
    assert Run.get().status == Run.SUCCEEDED
    assert CALLS[("scripted", "s")] == 6


def test_a_holder_that_finished_between_the_two_reads_shares_its_result(thost, monkeypatch):
    from connector import ledger

    flow = make_flow(thost, [{"action": "t.echo", "inputs": {"value": 1}}])
    holder = queue(thost, flow, "h").created[0]
    IdempotencyRecord.create(scope="s", key="k", request_hash=engine.request_hash({"a": 1}),
                             run_id=holder, step_name="grant")
    real_get = ledger.Run.get_or_none

    def holder_finishes_now(*args, **kwargs):  # the holder completes right between the reads
        IdempotencyRecord.update(status=IdempotencyRecord.DONE, response={"first": 1}).execute()
        Run.update(status=Run.SUCCEEDED).where(Run.id == holder).execute()
        return real_get(*args, **kwargs)

    monkeypatch.setattr(ledger.Run, "get_or_none", holder_finishes_now)
    assert engine.once("s", "k", {"a": 1}, lambda: {"second": 1},
                       run_id=holder + 1) == {"first": 1}


# -- failing flows: pause and error flows; replay with an edited item -------------------------

def failing_flow(thost, pause_after=0, error_flow=None, name="f"):
    data = {"name": name, "trigger": {"key": "t.hook"},
            "steps": [{"name": "s", "action": "t.scripted", "inputs": {"value": 1}}]}
    if pause_after or error_flow:
        data["on_failure"] = {k: v for k, v in (("pause_after", pause_after),
                                                ("error_flow", error_flow)) if v}
    return flows.save(thost, data)


def test_a_flow_that_keeps_failing_is_paused_and_its_runs_wait(thost):
    flow = failing_flow(thost, pause_after=2)
    PLAN["s"] = [FatalAPIError("bad", status=400)] * 2
    for key in ("a", "b", "c"):
        queue(thost, flow, key)
    engine.run_due(thost)
    flow = flows.get("f")
    assert flow.failure_streak == 2 and "paused after 2 failed runs" in flow.paused_reason
    third = Run.get(Run.dedupe_key == "c")
    assert third.status == Run.QUEUED and engine.due_runs(10) == []  # held, not lost
    flows.resume(flow)
    engine.run_due(thost)
    assert Run.get(Run.dedupe_key == "c").status == Run.SUCCEEDED
    assert flows.get("f").failure_streak == 0


def test_a_success_resets_the_failure_streak(thost):
    flow = failing_flow(thost, pause_after=2)
    PLAN["s"] = [FatalAPIError("bad", status=400), None]
    queue(thost, flow, "a")
    queue(thost, flow, "b")
    engine.run_due(thost)
    flow = flows.get("f")
    assert flow.failure_streak == 0 and flow.paused_reason is None


@pytest.mark.covers("errors.run_failed")
def test_a_failed_run_starts_the_error_flow_with_its_details(thost):
    notify = flows.save(thost, {"name": "notify", "trigger": {"key": "errors.run_failed"},
                                "steps": [{"name": "tell", "action": "t.echo",
                                           "inputs": {"value": "{{ trigger.error }}"}}]})
    flows.enable(thost, notify)
    flow = failing_flow(thost, error_flow="notify")
    PLAN["s"] = [FatalAPIError("Sub-account not found", status=404)]
    queue(thost, flow, "a", {"id": "a", "email": "x@y.example"})
    engine.run_due(thost)
    engine.run_due(thost)
    told = Run.get(Run.flow == notify)
    assert told.item["flow"] == "f" and told.item["failed_step"] == "s"
    assert told.item["trigger_item"] == {"id": "a", "email": "x@y.example"}
    assert told.status == Run.SUCCEEDED
    assert StepRun.get(StepRun.run == told).output["value"] == (
        "step s: HTTP 404: Sub-account not found")


def test_a_flow_cannot_be_its_own_error_flow(thost):
    with pytest.raises(Exception, match="on_failure.error_flow"):
        failing_flow(thost, error_flow="f")


def test_replay_with_an_edited_item_is_a_new_linked_run(thost):
    flow = failing_flow(thost)
    PLAN["s"] = [FatalAPIError("bad email", status=400)]
    queue(thost, flow, "a", {"id": "a", "email": "typo@"})
    engine.run_due(thost)
    failed = Run.get()
    new = engine.replay(failed.id, item={"id": "a", "email": "fixed@example.com"})
    assert new.id != failed.id and new.replay_of == failed.id and new.dedupe_key is None
    engine.run_due(thost)
    assert Run.get_by_id(new.id).status == Run.SUCCEEDED
    assert Run.get_by_id(failed.id).status == Run.FAILED  # the original stays as it was
    assert engine.step_key(Run.get_by_id(new.id), "s") != engine.step_key(failed, "s")


def drain_in_batches(host, workers=6, batch=7):
    """``workers`` threads claim in batches (engine.open_batch) until nothing is due;
    return how many runs each one executed."""
    barrier = threading.Barrier(workers)

    def worker():
        barrier.wait()
        done = 0
        while True:
            claimed = engine.open_batch(host, batch)
            if not claimed and not Run.select().where(Run.status == Run.QUEUED).exists():
                return done
            for job in claimed:
                assert engine.execute_claimed(host, job) == Run.SUCCEEDED
                done += 1
            engine.store.db.close()

    threads_done = []
    threads = [threading.Thread(target=lambda: threads_done.append(worker()))
               for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return threads_done


def test_batch_claims_take_each_run_once_across_threads(thost):
    flow = make_flow(thost, [{"name": "one", "action": "t.echo", "inputs": {"value": 1}},
                             {"name": "two", "action": "t.echo", "inputs": {"value": 2}}])
    for i in range(120):
        queue(thost, flow, f"k{i}")
    counts = drain_in_batches(thost)
    assert sum(counts) == 120 and CALLS[("echo", "one")] == CALLS[("echo", "two")] == 120
    assert Run.select().where((Run.status == Run.SUCCEEDED) & (Run.attempts == 1)).count() == 120
    assert StepRun.select().where(StepRun.status == StepRun.SUCCEEDED).count() == 240
    assert StepAttempt.select().count() == 240  # one attempt each: the opened step was reused


def test_a_batch_claim_skips_paused_and_limited_flows_and_whatever_is_excluded(thost):
    free = make_flow(thost, [{"name": "one", "action": "t.echo", "inputs": {"value": 1}}])
    paused = make_flow(thost, [{"action": "t.echo", "inputs": {"value": 1}}], name="p")
    limited = flows.save(thost, {"name": "l", "trigger": {"key": "t.hook"}, "concurrency": 1,
                                 "steps": [{"action": "t.echo", "inputs": {"value": 1}}]})
    ids = [queue(thost, free, f"k{i}").created[0] for i in range(3)]
    paused_id = queue(thost, paused, "p1").created[0]
    limited_id = queue(thost, limited, "l1").created[0]
    engine.store.Flow.update(paused_reason="by hand").where(
        engine.store.Flow.id == paused.id).execute()
    claimed = engine.open_batch(thost, 10, exclude={ids[1]})
    assert [c.run.id for c in claimed] == [ids[0], ids[2]]  # oldest first
    assert all(c.run.status == Run.RUNNING and c.run.lease_until for c in claimed)
    assert [c.pending.name for c in claimed] == ["one", "one"]
    assert engine.open_batch(thost, 10, exclude={ids[1]}) == []  # held now
    assert engine.due_limited(10) == [limited_id]  # left to claim_run, which counts slots
    assert Run.get_by_id(paused_id).status == Run.QUEUED


def test_released_runs_are_due_at_once_and_reuse_their_opened_step(thost):
    flow = make_flow(thost, [{"name": "one", "action": "t.echo", "inputs": {"value": 1}}])
    run_id = queue(thost, flow).created[0]
    claimed = engine.open_batch(thost, 5)
    engine.release(claimed)  # an executor stopped before starting it
    assert Run.get_by_id(run_id).status == Run.QUEUED
    assert engine.run_due(thost) == 1
    sr = StepRun.get(StepRun.run == run_id)
    assert (sr.status, sr.attempts, CALLS[("echo", "one")]) == (StepRun.SUCCEEDED, 1, 1)
    assert StepAttempt.select().where(StepAttempt.step_run == sr).count() == 1


def test_an_executor_that_stops_gives_back_what_it_claimed_but_never_started(thost):
    flow = make_flow(thost, [{"name": "one", "action": "t.scripted", "inputs": {"value": 1}}])
    gate = threading.Event()

    def slow(ctx, inputs):
        gate.wait(10)
        return {"ok": True}

    ids = [queue(thost, flow, f"k{i}").created[0] for i in range(6)]
    executor = engine.Executor(thost, workers=1)
    original = Scripted.run
    Scripted.run = lambda self, ctx, inputs: slow(ctx, inputs)
    try:
        executor.dispatch()  # claims 3 (3 x workers), starts one
        assert Run.select().where(Run.status == Run.RUNNING).count() == 3
        stopper = threading.Thread(target=executor.stop)
        stopper.start()
        # the queued claims are cancelled once the pool shuts down; only then let the
        # running one finish (else its thread would start the next claimed run)
        assert wait_for(lambda: executor._pool._shutdown, timeout=5)
        gate.set()
        stopper.join(10)
    finally:
        Scripted.run = original
    statuses = Counter(Run.get_by_id(i).status for i in ids)
    assert statuses == Counter({Run.SUCCEEDED: 1, Run.QUEUED: 5})  # none left leased
    assert engine.run_due(thost) == 5


def test_a_claimed_run_whose_lease_ran_out_before_it_started_is_left_alone(thost):
    flow = make_flow(thost, [{"name": "one", "action": "t.echo", "inputs": {"value": 1}}])
    run_id = queue(thost, flow).created[0]
    (claimed,) = engine.open_batch(thost, 5)
    Run.update(lease_until=utcnow() - dt.timedelta(seconds=1)).where(Run.id == run_id).execute()
    claimed.run.lease_until = utcnow() - dt.timedelta(seconds=1)  # it waited too long
    assert engine.execute_claimed(thost, claimed) is None
    assert CALLS[("echo", "one")] == 0  # nothing sent
    assert engine.run_due(thost) == 1 and Run.get_by_id(run_id).status == Run.SUCCEEDED
    assert CALLS[("echo", "one")] == 1
