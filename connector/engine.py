"""Execute queued runs: claim with a lease, run steps in order, commit each before the next.

Claims and leases live in :mod:`connector.claims` (re-exported here). A run's last step
commits with the run's end, so a one-step run costs a claim, one read, the pending step
run, and one write transaction.
Retriable failures put the run back in the queue with capped exponential backoff and full
jitter, honouring Retry-After; fatal ones fail it with the service's own message. Every
attempt is recorded. :class:`Executor` drives this from a thread pool; :func:`run_due` is the
deterministic "one tick" tests use.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from marshmallow import ValidationError

from . import conditions, plans, statements, store, templates
from .claims import (  # noqa: F401  (re-exported)
    LostLease, claim, claim_batch, claim_run, due_limited, due_runs, hold as _hold,
)
from .errors import APIError, ConnectorError, FatalAPIError, Throttled, UserError
from .flows import StepNode
from .host import Host, validation_message
from .loops import DispatchLoop
from .ledger import once, release_key  # noqa: F401  (re-exported: engine.once, release_key)
from .sdk import ActionContext, Park, request_hash  # noqa: F401
from .store import Flow, IdempotencyRecord, Run, StepAttempt, StepRun, utcnow

log = logging.getLogger("connector.engine")

# Sent for every step and run: compiled once (connector.statements), not built each time.
_END_RUN = statements.Update(
    Run, [Run.status, Run.error, Run.failed_step, Run.finished_at, Run.lease_until],
    [(Run.id, "=")])
_END_LEASED_RUN = statements.Update(  # ... only while this lease holds it
    Run, [Run.status, Run.error, Run.failed_step, Run.finished_at, Run.lease_until],
    [(Run.id, "="), (Run.status, "="), (Run.lease_until, "=")])
_CLEAR_STREAK = statements.Update(Flow, [Flow.failure_streak],
                                  [(Flow.id, "="), (Flow.failure_streak, ">")])
_SAVE_STEP = statements.Update(
    StepRun, [StepRun.status, StepRun.error, StepRun.attempts, StepRun.inputs, StepRun.output,
              StepRun.resume_at, StepRun.started_at, StepRun.finished_at],
    [(StepRun.id, "=")])
_OPEN_STEPS = statements.InsertMany(  # a batch's first steps, pending while they run
    StepRun, [StepRun.run, StepRun.name, StepRun.position, StepRun.action_key],
    returning=[StepRun.run, StepRun.id])
_RECORD_ATTEMPT = statements.Insert(
    StepAttempt, [StepAttempt.step_run, StepAttempt.number, StepAttempt.status,
                  StepAttempt.error, StepAttempt.retry_at, StepAttempt.started_at,
                  StepAttempt.duration_ms])


def backoff(attempt: int, base: float, cap: float, retry_after: float | None,
            retry_after_cap: float) -> float:
    """Return seconds before attempt ``attempt + 1``: Retry-After if given, else full jitter."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), retry_after_cap) + random.uniform(0, 0.1 * base)
    return random.uniform(0, min(cap, base * (2 ** (attempt - 1))))


def step_key(run: Run, step_name: str) -> str:
    """Return a step's idempotency key: stable across retries, replays and restarts."""
    ident = run.dedupe_key or f"run-{run.id}"
    raw = f"{run.flow_id}:{ident}:{step_name}"
    return hashlib.sha256(raw.encode()).hexdigest()[:40]


# -- executing a run ----------------------------------------------------------------------------

def execute(host: Host, run_id: int) -> str | None:
    """Claim and execute one run; return its status afterwards, or None if not claimed."""
    run = claim_run(run_id, host.settings.lease_seconds)
    if run is None:
        return None
    return execute_claimed(host, Claimed(run))


class Claimed:
    """A run this worker holds the lease of, with what :func:`open_batch` read for it."""

    __slots__ = ("run", "plan", "pending")

    def __init__(self, run: Run, plan: tuple | None = None, pending: StepRun | None = None):
        self.run = run
        self.plan = plan  # (flow, step tree) from plans.load, or None to load it
        self.pending = pending  # the first step's run, opened in the claim's transaction


def open_batch(host: Host, limit: int, exclude: set[int] = frozenset()) -> list[Claimed]:
    """Claim up to ``limit`` due runs and open each new run's first step, in one transaction.

    One claim statement, one read of each distinct flow, and one insert of the pending
    first steps serve the whole batch, where claiming run by run costs a transaction and
    three statements each. Runs of flows with a concurrency limit are not taken here
    (:func:`claim_run` counts their slots).
    """
    with store.write_tx():
        runs = claim_batch(limit, host.settings.lease_seconds, exclude)
        if not runs:
            return []
        plan = {flow_id: plans.load(flow_id) for flow_id in {run.flow_id for run in runs}}
        batch = [Claimed(run, plan[run.flow_id]) for run in runs]
        fresh = [c for c in batch if c.run.attempts == 1 and c.plan[1]]
        if fresh:
            rows = [(c.run.id, c.plan[1][0].name, c.plan[1][0].row.position,
                     c.plan[1][0].row.action_key) for c in fresh]
            ids = dict(_OPEN_STEPS.execute(rows))
            for c, (_, name, position, action_key) in zip(fresh, rows):
                c.pending = StepRun(id=ids[c.run.id], run=c.run, name=name, position=position,
                                    action_key=action_key)
                c.pending.logged = 0
    return batch


def release(batch: list[Claimed]) -> None:
    """Give back the leases of claimed runs that were never started (an executor stopping):
    they are due again at once, with the step their claim opened still pending."""
    with store.write_tx():
        for claimed in batch:
            run = claimed.run
            Run.update(status=Run.QUEUED, lease_until=None, next_attempt_at=utcnow()).where(
                (Run.id == run.id) & (Run.status == Run.RUNNING) &
                (Run.lease_until == run.lease_until)).execute()


def execute_claimed(host: Host, claimed: Claimed) -> str | None:
    """Execute a run already claimed; return its status, or None if the lease was lost.

    A run that waited in the pool's queue past its lease is not started: another worker
    may have claimed it since, and starting would repeat its first call for nothing.
    """
    run = claimed.run
    if run.lease_until <= utcnow():
        log.warning("run %s: its lease ran out while it waited to start; leaving it", run.id)
        return None
    try:
        return _execute(host, run, run.lease_until, claimed)
    except LostLease:
        log.warning("run %s: lease lost to another worker; leaving it", run.id)
        return None


def _execute(host: Host, run: Run, lease: dt.datetime, claimed: Claimed) -> str:
    run.flow, tree = claimed.plan or plans.load(run.flow_id)
    walk = _Walk(host, run, lease, tree, claimed.pending)
    context = {"trigger": run.item, "steps": {}, "run": {"id": run.id, "flow": run.flow.name}}
    try:
        outcome = walk.steps(tree, "", context)
    except _Stop as stop:
        return stop.status
    if walk.finished:
        return Run.SUCCEEDED
    status = Run.FILTERED if outcome == Run.FILTERED else Run.SUCCEEDED
    with store.write_tx():
        _hold(run.id, walk.lease, host.settings.lease_seconds)
        _finish_run(run, status, None, None, host)
    return status


class _Stop(Exception):
    """End this execution of the run now; ``status`` is what execute() reports."""

    def __init__(self, status: str):
        self.status = status


class _Walk:
    """One execution of a run: walk the step tree, skipping what an earlier one finished.

    A step run is keyed by its path: its name, prefixed by ``loop[i].`` for each loop it
    runs in, so every element's steps are recorded (and idempotent) on their own. A filter
    that fails stops its scope: the run at the top level, one element inside a loop, one
    branch inside paths.
    """

    def __init__(self, host: Host, run: Run, lease: dt.datetime, tree: list[StepNode],
                 pending: StepRun | None = None):
        self.host = host
        self.settings = host.settings
        self.run = run
        self.lease = lease
        # The first claim of a run finds no step runs but the one its claim opened (if it
        # was claimed in a batch): the first execution writes them.
        self.done = ({} if pending is None else {pending.name: pending}) if (
            run.attempts == 1) else {sr.name: sr for sr in
                                     StepRun.select().where(StepRun.run == run)}
        #: the last top-level step: its success also ends the run, in the same transaction
        self.last = tree[-1] if tree else None
        self.finished = False

    def steps(self, nodes: list[StepNode], prefix: str, context: dict) -> str | None:
        """Run ``nodes`` in order; return Run.FILTERED if a filter stopped this scope."""
        for node in nodes:
            if self.step(node, prefix, context) == Run.FILTERED:
                return Run.FILTERED
        return None

    def step(self, node: StepNode, prefix: str, context: dict) -> str | None:
        path = prefix + node.name
        sr = self.done.get(path)
        if sr is not None and sr.status == StepRun.SUCCEEDED:
            context["steps"][node.name] = sr.output
            return None
        if sr is not None and sr.status == StepRun.FILTERED:
            return Run.FILTERED
        if sr is None:  # pending while its action runs, so the step in flight shows
            with store.write_tx():
                sr = StepRun.create(run=self.run, name=path, position=node.row.position,
                                    action_key=node.row.action_key)
            sr.logged = 0
            self.done[path] = sr
        started, started_at = time.monotonic(), utcnow()
        row = node.row
        try:
            if sr.status == StepRun.PARKED:
                return self._resume(node, sr, context, started, started_at)
            if row.filter is not None and not conditions.evaluate(row.filter, context):
                self._commit(sr, StepRun.FILTERED, started_at, started, None)
                return Run.FILTERED
            action = self.host.catalog.action(row.action_key)
            if action.control == "loop":
                return self._loop(node, sr, action, path, context, started, started_at)
            if action.control == "paths":
                return self._paths(node, sr, action, context, started, started_at)
            output = self._call(action, row, sr, path, context)
        except Park as park:
            return self._park(sr, park, started, started_at)
        except APIError as exc:
            return self._api_error(exc, sr, path, started, started_at)
        except (_Stop, LostLease):
            raise
        except (ConnectorError, ValueError) as exc:
            return self._fail(sr, path, str(exc), started_at, started)
        except Exception as exc:  # a plugin bug must fail the run, not kill the worker
            log.exception("run %s step %s: action %s crashed", self.run.id, path, row.action_key)
            return self._fail(sr, path, f"internal error in action {row.action_key}: "
                              f"{exc.__class__.__name__}: {exc}", started_at, started)
        sr.output = output
        if node is self.last and not prefix:
            self._finish(sr, started_at, started)
        else:
            self._commit(sr, StepRun.SUCCEEDED, started_at, started, None)
        context["steps"][node.name] = output
        return None

    # -- kinds of step ----------------------------------------------------------------------

    def _inputs(self, action, row, sr, context, path) -> dict:
        rendered = templates.render(row.inputs, context, f"{path}.inputs")
        sr.inputs = rendered
        try:
            return action.Inputs().load(rendered)
        except ValidationError as err:  # _fail names the step; the message names the field
            raise UserError(validation_message(err)) from None

    def _call(self, action, row, sr, path, context) -> dict:
        inputs = self._inputs(action, row, sr, context, path)
        conn = row.connection if row.connection_id else None
        guarded = action.guarded_client
        client = self.host.kept_client(conn, guarded)
        ctx = ActionContext(flow_name=self.run.flow.name, run_id=self.run.id, step_name=path,
                            idempotency_key=step_key(self.run, path), client=client,
                            once=lambda key, request, call: once(
                                action.key, key, request, call, self.run.id, path))
        try:
            output = action.run(ctx, inputs)
        finally:
            if client is not None:
                self.host.check_client(conn, client, guarded)
        if output is None:
            return {}
        if not isinstance(output, dict):
            raise FatalAPIError(f"action {action.key} returned {type(output).__name__}, "
                                "expected a mapping")
        return output

    def _loop(self, node, sr, action, path, context, started, started_at) -> None:
        if sr.output and "items" in sr.output:  # resumed: the very same elements as before
            items = sr.output["items"]
        else:
            items = self._call(action, node.row, sr, path, context).get("items")
            if not isinstance(items, list):
                raise FatalAPIError(f"action {action.key} returned no list of items")
            sr.output = {"items": items, "count": len(items)}
            self._commit(sr, StepRun.RUNNING, started_at, started, None, counts=False)
        iterations = []
        for index, item in enumerate(items):
            scope = {**context, "item": item, "index": index,
                     "loop": {"name": node.name, "index": index, "count": len(items),
                              "first": index == 0, "last": index == len(items) - 1},
                     "steps": dict(context["steps"])}
            self.steps(node.children, f"{path}[{index}].", scope)
            iterations.append({child.name: scope["steps"].get(child.name)
                               for child in node.children})
        sr.output = {"items": items, "count": len(items), "iterations": iterations}
        self._commit(sr, StepRun.SUCCEEDED, started_at, started, None, counts=False)
        context["steps"][node.name] = sr.output

    def _paths(self, node, sr, action, context, started, started_at) -> None:
        if sr.output and "matched" in sr.output:  # resumed: the branches chosen before
            matched = sr.output["matched"]
        else:
            mode = self._inputs(action, node.row, sr, context, sr.name).get("mode", "all")
            matched = []
            for branch in node.branches:
                if branch["conditions"] is None or conditions.evaluate(branch["conditions"],
                                                                       context):
                    matched.append(branch["name"])
                    if mode == "first":
                        break
            sr.output = {"matched": matched}
            self._commit(sr, StepRun.RUNNING, started_at, started, None, counts=False)
        prefix = sr.name[: len(sr.name) - len(node.name)]
        for branch in node.branches:
            if branch["name"] in matched:
                self.steps(branch["steps"], prefix, context)
        self._commit(sr, StepRun.SUCCEEDED, started_at, started, None, counts=False)
        context["steps"][node.name] = sr.output

    def _park(self, sr, park: Park, started, started_at) -> None:
        until = park.until.astimezone(dt.timezone.utc).replace(tzinfo=None)
        sr.output, sr.resume_at = park.output, until
        with store.write_tx():
            _hold(self.run.id, self.lease, self.settings.lease_seconds)
            _finish_step(sr, StepRun.PARKED, started_at, started, None, until)
            Run.update(status=Run.WAITING, next_attempt_at=until, lease_until=None,
                       error=None).where(Run.id == self.run.id).execute()
        raise _Stop(Run.WAITING)

    def _resume(self, node, sr, context, started, started_at) -> None:
        if sr.resume_at is not None and sr.resume_at > utcnow():  # woken early: wait again
            with store.write_tx():
                _hold(self.run.id, self.lease, self.settings.lease_seconds)
                Run.update(status=Run.WAITING, next_attempt_at=sr.resume_at,
                           lease_until=None).where(Run.id == self.run.id).execute()
            raise _Stop(Run.WAITING)
        sr.output = {**(sr.output or {}), "resumed_at": utcnow().isoformat() + "Z"}
        self._commit(sr, StepRun.SUCCEEDED, started_at, started, None, counts=False)
        context["steps"][node.name] = sr.output

    # -- outcomes ---------------------------------------------------------------------------

    def _api_error(self, exc: APIError, sr, path, started, started_at) -> None:
        settings = self.settings
        # Throttled means "not yet", not "failed": it waits without using up attempts.
        if isinstance(exc, Throttled) or (exc.retriable and sr.attempts + 1 <
                                          settings.max_attempts):
            delay = backoff(sr.attempts + 1, settings.backoff_base, settings.backoff_cap,
                            exc.retry_after, settings.retry_after_cap)
            retry_at = utcnow() + dt.timedelta(seconds=delay)
            with store.write_tx():
                _hold(self.run.id, self.lease, settings.lease_seconds)
                _finish_step(sr, StepRun.RETRYING, started_at, started, str(exc), retry_at,
                             counts=not isinstance(exc, Throttled))
                Run.update(status=Run.QUEUED, next_attempt_at=retry_at, lease_until=None,
                           error=f"step {path}: {exc}").where(Run.id == self.run.id).execute()
            log.info("run %s step %s: %s; retry in %.1f s", self.run.id, path, exc, delay)
            raise _Stop(Run.QUEUED)
        message = str(exc) if not exc.retriable else (
            f"gave up after {sr.attempts + 1} attempts: {exc}")
        self._fail(sr, path, message, started_at, started)

    def _fail(self, sr, path, message, started_at, started) -> None:
        with store.write_tx():
            _hold(self.run.id, self.lease, self.settings.lease_seconds)
            _finish_step(sr, StepRun.FAILED, started_at, started, message)
            _finish_run(self.run, Run.FAILED, f"step {path}: {message}", path, self.host)
        log.warning("run %s failed at step %s: %s", self.run.id, path, message)
        raise _Stop(Run.FAILED)

    def _commit(self, sr, status, started_at, started, error, counts=True) -> None:
        def write():  # run by whichever thread commits the group (store.grouped)
            lease = _hold(self.run.id, self.lease, self.settings.lease_seconds)
            _finish_step(sr, status, started_at, started, error, counts=counts,
                         record=status != StepRun.RUNNING)
            return lease

        self.lease = store.grouped(write)

    def _finish(self, sr, started_at, started) -> None:
        """Commit the last top-level step's success and the run's end as one transaction."""
        def write():
            _finish_run(self.run, Run.SUCCEEDED, None, None, self.host, lease=self.lease)
            _finish_step(sr, StepRun.SUCCEEDED, started_at, started, None)

        store.grouped(write)
        self.finished = True


def _finish_step(sr: StepRun, status: str, started_at, started: float, error, retry_at=None,
                 counts: bool = True, record: bool = True):
    """Save a step's state and record the attempt.

    ``counts`` is False for a Throttled wait (it spends no attempt) and for the bookkeeping
    of loop and paths steps; ``record`` False saves without an attempt entry.
    """
    if counts:
        sr.attempts += 1
    sr.status, sr.error = status, error
    sr.started_at = sr.started_at or started_at
    if status not in (StepRun.RETRYING, StepRun.RUNNING, StepRun.PARKED):
        sr.finished_at = utcnow()
    _SAVE_STEP.execute(sr.status, sr.error, sr.attempts, sr.inputs, sr.output, sr.resume_at,
                       sr.started_at, sr.finished_at, sr.id)
    if not record:
        return
    # A step run made by this execution counts its attempts itself (``logged``); one read
    # from the database counts them once.
    logged = getattr(sr, "logged", None)
    if logged is None:
        logged = StepAttempt.select().where(StepAttempt.step_run == sr).count()
    number = sr.logged = logged + 1
    _RECORD_ATTEMPT.execute(sr.id, number, status, error, retry_at, started_at,
                            round((time.monotonic() - started) * 1000, 3))


def _finish_run(run: Run, status: str, error, failed_step, host: Host | None = None,
                lease: dt.datetime | None = None) -> None:
    """End a run, then keep the flow's failure streak, pausing and error flow up to date.

    With ``lease`` the end also checks the lease (raising LostLease), instead of a hold.
    """
    end = (status, error, failed_step, utcnow(), None, run.id)
    if lease is None:
        _END_RUN.execute(*end)
    elif _END_LEASED_RUN.execute(*end, Run.RUNNING, lease) != 1:
        raise LostLease(run.id)
    if status != Run.FAILED:  # the common case: no read, and a write only after failures
        _CLEAR_STREAK.execute(0, run.flow_id, 0)
        return
    flow = Flow.get_by_id(run.flow_id)
    streak = flow.failure_streak + 1
    paused = bool(flow.paused_reason)
    changes = {"failure_streak": streak}
    if flow.pause_after and streak >= flow.pause_after and not paused:
        paused = True
        changes["paused_reason"] = (f"paused after {streak} failed runs in a row; the last "
                                    f"one (run {run.id}) failed at {error}")
        log.warning("flow %s %s", flow.name, changes["paused_reason"])
    Flow.update(**changes).where(Flow.id == flow.id).execute()
    if flow.error_flow and host is not None:
        _report_failure(host, flow, run, error, failed_step, paused)


def _report_failure(host: Host, flow: Flow, run: Run, error, failed_step, paused: bool) -> None:
    """Queue a run of the flow's error flow with the failed run's details."""
    target = Flow.get_or_none(Flow.name == flow.error_flow)
    if target is None or target.id == flow.id or not target.enabled:
        log.warning("flow %s: error flow %r is missing, off, or itself; failure not reported",
                    flow.name, flow.error_flow)
        return
    try:
        trigger = host.catalog.trigger(target.trigger_key)
    except ConnectorError:
        return
    item = {"flow": flow.name, "run_id": run.id, "failed_step": failed_step, "error": error,
            "attempts": run.attempts, "trigger_item": run.item, "paused": paused,
            "failed_at": utcnow().isoformat() + "Z"}
    from .intake import ingest

    ingest(target, trigger, [(trigger.dedupe_key(item), item)])


def replay(run_id: int, force_key: bool = False, item: dict | None = None) -> Run:
    """Queue a failed run again from its failed step; steps that succeeded are not repeated.

    ``force_key`` first releases a pending idempotency key of the failed step, for when a
    human has checked that the interrupted call did not take effect. With ``item`` the run
    is not touched: a new run of the same flow starts from the first step with the edited
    trigger item (its own idempotency keys), linked to it by ``replay_of``.
    """
    run = Run.get_or_none(Run.id == run_id)
    if run is None:
        raise UserError(f"no run with id {run_id}")
    if item is not None:
        if not isinstance(item, dict):
            raise UserError("item: expected a mapping (the edited trigger item)")
        with store.write_tx():
            return Run.create(flow=run.flow_id, item=item, replay_of=run.id)
    if run.status != Run.FAILED:
        raise UserError(f"run {run_id} is {run.status}; only failed runs can be replayed")
    with store.write_tx():
        failed = StepRun.select().where((StepRun.run == run) &
                                        (StepRun.status != StepRun.SUCCEEDED))
        for sr in failed:
            sr.status, sr.error, sr.attempts = StepRun.PENDING, None, 0
            sr.save()
        if force_key and run.failed_step:
            IdempotencyRecord.delete().where(
                (IdempotencyRecord.status == IdempotencyRecord.PENDING) &
                (IdempotencyRecord.run_id == run.id) &
                (IdempotencyRecord.step_name == run.failed_step)).execute()
        Run.update(status=Run.QUEUED, next_attempt_at=utcnow(), error=None, failed_step=None,
                   finished_at=None, lease_until=None).where(Run.id == run.id).execute()
    return Run.get_by_id(run_id)


def run_due(host: Host, limit: int = 1000) -> int:
    """Execute every run due now, one after another in this thread; return how many ran."""
    count = 0
    for run_id in due_runs(limit):
        if execute(host, run_id) is not None:
            count += 1
    return count


class Executor(DispatchLoop):
    """A dispatcher thread that claims due runs into a thread pool; wake() skips the wait."""

    def __init__(self, host: Host, workers: int | None = None):
        super().__init__(host.settings.dispatch_interval)
        self.host = host
        self.workers = workers or host.settings.workers
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="connector-run")
        self._inflight: set[int] = set()
        self._waiting: dict[int, Claimed] = {}  # claimed in a batch, not started yet
        self._lock = threading.Lock()

    def stop(self, timeout: float = 30.0) -> None:
        self._halt(timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            unstarted, self._waiting = list(self._waiting.values()), {}
        if unstarted:  # claimed in a batch, never started: due again now, not in 5 minutes
            release(unstarted)

    def idle(self) -> bool:
        with self._lock:
            return not self._inflight

    def dispatch(self) -> None:
        """Claim what is due into the pool; safe to call from any thread."""
        try:
            self._dispatch()
        except Exception:  # the database may be briefly unavailable; keep dispatching
            log.exception("dispatch failed; trying again")
        finally:
            if threading.current_thread() is not self._thread and not store.db.is_closed():
                store.db.close()

    def _dispatch(self) -> None:
        # Claiming and marking in-flight under one lock keeps two dispatching threads (the
        # wake-up loop and the scheduler's due-runs job) from submitting the same run twice.
        # Runs are claimed in batches: only when a thread is idle, up to ``3 x workers``
        # runs in flight, so a busy executor claims a handful at a time, not one for each
        # finished run or each webhook's wake-up.
        with self._lock:
            if len(self._inflight) >= self.workers or self._stop.is_set():
                return  # every thread has a run: more now would only make batches smaller
            room = self.workers * 3 - len(self._inflight)
            exclude = set(self._inflight)
            batch = open_batch(self.host, room, exclude)
            self._inflight.update(c.run.id for c in batch)
            self._waiting.update((c.run.id, c) for c in batch)
            limited = due_limited(room - len(batch), exclude)
            self._inflight.update(limited)
        for claimed in batch:
            self._pool.submit(self._work, claimed)
        for run_id in limited:
            self._pool.submit(self._work, run_id)

    def _work(self, job: Claimed | int) -> None:
        run_id = job.run.id if isinstance(job, Claimed) else job
        with self._lock:
            self._waiting.pop(run_id, None)
        try:
            if isinstance(job, Claimed):
                execute_claimed(self.host, job)
            else:
                execute(self.host, job)
        except Exception:
            log.exception("run %s: executor error", run_id)
        finally:
            with self._lock:
                self._inflight.discard(run_id)
                idle = len(self._inflight) < self.workers
            if not store.db.is_closed():
                store.db.close()  # pool threads are reused; don't pin a connection per thread
            if idle:  # a thread has nothing queued behind it: claim more now
                self._wake.set()
