"""Execute queued runs: claim with a lease, run steps in order, commit each before the next.

A claim is one atomic UPDATE (queued and due, or running with an expired lease), so two
workers never run the same run at once and a crashed worker's runs are taken up again.
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
from typing import Callable

from marshmallow import ValidationError
from peewee import IntegrityError, fn

from . import conditions, store, templates
from .errors import (
    APIError, ConnectorError, FatalAPIError, IdempotencyConflict, OutcomeUnknown, Throttled,
    UserError,
)
from .host import Host, validation_message
from .sdk import ActionContext, request_hash
from .store import IdempotencyRecord, Run, Step, StepAttempt, StepRun, utcnow

log = logging.getLogger("connector.engine")


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


# -- claims -----------------------------------------------------------------------------------

def due_runs(limit: int, exclude: set[int] = frozenset()) -> list[int]:
    """Return ids of runs that can be claimed now (due, or with an expired lease)."""
    now = utcnow()
    query = (Run.select(Run.id)
             .where(((Run.status == Run.QUEUED) & (Run.next_attempt_at <= now)) |
                    ((Run.status == Run.RUNNING) & (Run.lease_until < now)))
             .order_by(Run.next_attempt_at, Run.id).limit(limit + len(exclude)))
    return [r.id for r in query if r.id not in exclude][:limit]


def claim(run_id: int, lease_seconds: int) -> dt.datetime | None:
    """Atomically take ``run_id``; return the lease deadline, or None if someone else has it."""
    now = utcnow()
    lease = now + dt.timedelta(seconds=lease_seconds)
    rows = (Run.update(status=Run.RUNNING, lease_until=lease, attempts=Run.attempts + 1,
                       started_at=fn.COALESCE(Run.started_at, now))
            .where((Run.id == run_id) &
                   (((Run.status == Run.QUEUED) & (Run.next_attempt_at <= now)) |
                    ((Run.status == Run.RUNNING) & (Run.lease_until < now))))
            .execute())
    return lease if rows == 1 else None


class LostLease(Exception):
    """Another worker took the run after our lease expired: stop without writing."""


def _hold(run_id: int, lease: dt.datetime, lease_seconds: int) -> dt.datetime:
    """Renew the lease inside the current transaction, or raise LostLease."""
    new = utcnow() + dt.timedelta(seconds=lease_seconds)
    rows = Run.update(lease_until=new).where(
        (Run.id == run_id) & (Run.status == Run.RUNNING) & (Run.lease_until == lease)).execute()
    if rows != 1:
        raise LostLease(run_id)
    return new


# -- the idempotency ledger ---------------------------------------------------------------------

def once(scope: str, key: str, request, call: Callable[[], dict], run_id: int | None = None,
         step_name: str | None = None) -> dict:
    """Run ``call`` at most once per (scope, key); a repeat returns the first result.

    The key is recorded as pending before the call. An answer from the service that means
    "not done" (an HTTP error status, or no connection made) releases it so a retry may call
    again; a call that may have taken effect (a read timeout, a crash) keeps it pending.
    Another run finding the key pending waits (a retriable error) while the holder's lease is
    alive, then gets the stored result; a key left pending by a dead attempt raises
    OutcomeUnknown instead of risking a second effect.
    """
    digest = request_hash(request)
    key = store.fit_key(key)
    record = IdempotencyRecord.get_or_none(scope=scope, key=key)
    if record is None:
        try:
            with store.write_tx():
                record = IdempotencyRecord.create(scope=scope, key=key, request_hash=digest,
                                                  run_id=run_id, step_name=step_name)
        except IntegrityError:
            record = IdempotencyRecord.get(scope=scope, key=key)
            return _repeat(record, digest, key, run_id)
    else:
        return _repeat(record, digest, key, run_id)
    try:
        response = call()
    except APIError as exc:
        if not exc.maybe_applied:
            IdempotencyRecord.delete().where(IdempotencyRecord.id == record.id).execute()
        raise
    except Exception:
        IdempotencyRecord.delete().where(IdempotencyRecord.id == record.id).execute()
        raise
    IdempotencyRecord.update(status=IdempotencyRecord.DONE, response=response,
                             updated_at=utcnow()).where(
        IdempotencyRecord.id == record.id).execute()
    return response


def _repeat(record: IdempotencyRecord, digest: str, key: str, run_id: int | None) -> dict:
    """Answer a second use of a key: the stored result, a wait, or OutcomeUnknown."""
    _check_repeat(record, digest, key)
    if record.status == IdempotencyRecord.DONE:
        return record.response
    if record.run_id is not None and record.run_id != run_id:
        holder = Run.get_or_none(Run.id == record.run_id)
        if holder is not None and holder.status == Run.RUNNING and (
                holder.lease_until is not None and holder.lease_until > utcnow()):
            raise Throttled(1.0, f"idempotency key {key} is being used by run {holder.id}; "
                                 "waiting for its result")
    raise OutcomeUnknown(
        f"an earlier attempt with idempotency key {key} stopped mid-call, so it may or may "
        "not have taken effect; check the service, then replay with --force-key to send "
        "it again")


def _check_repeat(record: IdempotencyRecord, digest: str, key: str) -> None:
    if record.request_hash != digest:
        raise IdempotencyConflict(
            f"idempotency key {key} was already used with different inputs; refusing to "
            "apply a second, different effect")


def release_key(scope: str, key: str) -> int:
    """Forget a pending key after a human checked it did not take effect."""
    return IdempotencyRecord.delete().where(
        (IdempotencyRecord.scope == scope) & (IdempotencyRecord.key == store.fit_key(key)) &
        (IdempotencyRecord.status == IdempotencyRecord.PENDING)).execute()


# -- executing a run ----------------------------------------------------------------------------

def execute(host: Host, run_id: int) -> str | None:
    """Claim and execute one run; return its status afterwards, or None if not claimed."""
    settings = host.settings
    lease = claim(run_id, settings.lease_seconds)
    if lease is None:
        return None
    try:
        return _execute(host, Run.get_by_id(run_id), lease)
    except LostLease:
        log.warning("run %s: lease lost to another worker; leaving it", run_id)
        return None


def _execute(host: Host, run: Run, lease: dt.datetime) -> str:
    settings = host.settings
    flow = run.flow
    steps = list(Step.select().where(Step.flow == flow).order_by(Step.position))
    done = {sr.name: sr for sr in StepRun.select().where(StepRun.run == run)}
    outputs = {name: sr.output for name, sr in done.items() if sr.status == StepRun.SUCCEEDED}
    for step in steps:
        sr = done.get(step.name)
        if sr is not None and sr.status == StepRun.SUCCEEDED:
            continue
        if sr is None:
            sr = StepRun.create(run=run, name=step.name, position=step.position,
                                action_key=step.action_key)
        context = {"trigger": run.item, "steps": outputs,
                   "run": {"id": run.id, "flow": flow.name}}
        started = time.monotonic()
        started_at = utcnow()
        try:
            if step.filter is not None and not conditions.evaluate(step.filter, context):
                with store.write_tx():
                    lease = _hold(run.id, lease, settings.lease_seconds)
                    _finish_step(sr, StepRun.FILTERED, started_at, started, None)
                    _finish_run(run, Run.FILTERED, None, None)
                return Run.FILTERED
            action = host.catalog.action(step.action_key)
            rendered = templates.render(step.inputs, context, f"{step.name}.inputs")
            sr.inputs = rendered
            try:
                inputs = action.Inputs().load(rendered)
            except ValidationError as err:
                raise UserError(f"step {step.name}: {validation_message(err)}") from None
            client = host.client(step.connection if step.connection_id else None)
            ctx = ActionContext(flow_name=flow.name, run_id=run.id, step_name=step.name,
                                idempotency_key=step_key(run, step.name), client=client,
                                once=lambda key, request, call, _a=action, _s=step.name: once(
                                    _a.key, key, request, call, run.id, _s))
            try:
                output = action.run(ctx, inputs)
            finally:
                if client is not None:
                    client.close()
            if output is None:
                output = {}
            if not isinstance(output, dict):
                raise FatalAPIError(f"action {action.key} returned {type(output).__name__}, "
                                    "expected a mapping")
        except APIError as exc:
            # Throttled means "not yet", not "failed": it waits without using up attempts.
            if isinstance(exc, Throttled) or (
                    exc.retriable and sr.attempts + 1 < settings.max_attempts):
                delay = backoff(sr.attempts + 1, settings.backoff_base, settings.backoff_cap,
                                exc.retry_after, settings.retry_after_cap)
                retry_at = utcnow() + dt.timedelta(seconds=delay)
                with store.write_tx():
                    _hold(run.id, lease, settings.lease_seconds)
                    _finish_step(sr, StepRun.RETRYING, started_at, started, str(exc), retry_at,
                                 counts=not isinstance(exc, Throttled))
                    Run.update(status=Run.QUEUED, next_attempt_at=retry_at, lease_until=None,
                               error=f"step {step.name}: {exc}").where(
                        Run.id == run.id).execute()
                log.info("run %s step %s: %s; retry in %.1f s", run.id, step.name, exc, delay)
                return Run.QUEUED
            message = str(exc) if not exc.retriable else (
                f"gave up after {sr.attempts + 1} attempts: {exc}")
            return _fail(run, sr, step.name, message, started_at, started, lease, settings)
        except (ConnectorError, ValueError) as exc:
            return _fail(run, sr, step.name, str(exc), started_at, started, lease, settings)
        except LostLease:
            raise
        except Exception as exc:  # a plugin bug must fail the run, not kill the worker
            log.exception("run %s step %s: action %s crashed", run.id, step.name, step.action_key)
            return _fail(run, sr, step.name, f"internal error in action {step.action_key}: "
                         f"{exc.__class__.__name__}: {exc}", started_at, started, lease, settings)
        with store.write_tx():
            lease = _hold(run.id, lease, settings.lease_seconds)
            sr.output = output
            _finish_step(sr, StepRun.SUCCEEDED, started_at, started, None)
        outputs[step.name] = output
    with store.write_tx():
        _hold(run.id, lease, settings.lease_seconds)
        _finish_run(run, Run.SUCCEEDED, None, None)
    return Run.SUCCEEDED


def _fail(run, sr, step_name, message, started_at, started, lease, settings) -> str:
    with store.write_tx():
        _hold(run.id, lease, settings.lease_seconds)
        _finish_step(sr, StepRun.FAILED, started_at, started, message)
        _finish_run(run, Run.FAILED, f"step {step_name}: {message}", step_name)
    log.warning("run %s failed at step %s: %s", run.id, step_name, message)
    return Run.FAILED


def _finish_step(sr: StepRun, status: str, started_at, started: float, error, retry_at=None,
                 counts: bool = True):
    """Record an attempt; ``counts`` is False for a Throttled wait, which spends no attempt."""
    if counts:
        sr.attempts += 1
    sr.status, sr.error = status, error
    sr.started_at = sr.started_at or started_at
    if status != StepRun.RETRYING:
        sr.finished_at = utcnow()
    sr.save()
    number = StepAttempt.select().where(StepAttempt.step_run == sr).count() + 1
    StepAttempt.create(step_run=sr, number=number, status=status, error=error,
                       retry_at=retry_at, started_at=started_at,
                       duration_ms=round((time.monotonic() - started) * 1000, 3))


def _finish_run(run: Run, status: str, error, failed_step) -> None:
    Run.update(status=status, error=error, failed_step=failed_step, finished_at=utcnow(),
               lease_until=None).where(Run.id == run.id).execute()


def replay(run_id: int, force_key: bool = False) -> Run:
    """Queue a failed run again from its failed step; steps that succeeded are not repeated.

    ``force_key`` first releases a pending idempotency key of the failed step, for when a
    human has checked that the interrupted call did not take effect.
    """
    run = Run.get_or_none(Run.id == run_id)
    if run is None:
        raise UserError(f"no run with id {run_id}")
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


class Executor:
    """A dispatcher thread that claims due runs into a thread pool; wake() skips the wait."""

    def __init__(self, host: Host, workers: int | None = None):
        self.host = host
        self.workers = workers or host.settings.workers
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="connector-run")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._inflight: set[int] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="connector-dispatch",
                                        daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def idle(self) -> bool:
        with self._lock:
            return not self._inflight

    def _loop(self) -> None:
        interval = self.host.settings.dispatch_interval
        while not self._stop.is_set():
            self.dispatch()
            self._wake.wait(interval)
            self._wake.clear()

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
        # Selecting and marking in-flight under one lock keeps two dispatching threads (the
        # wake-up loop and the scheduler's due-runs job) from submitting the same run twice.
        with self._lock:
            free = self.workers * 2 - len(self._inflight)
            if free <= 0 or self._stop.is_set():
                return
            picked = due_runs(free, set(self._inflight))
            self._inflight.update(picked)
        for run_id in picked:
            self._pool.submit(self._work, run_id)

    def _work(self, run_id: int) -> None:
        try:
            execute(self.host, run_id)
        except Exception:
            log.exception("run %s: executor error", run_id)
        finally:
            with self._lock:
                self._inflight.discard(run_id)
            if not store.db.is_closed():
                store.db.close()  # pool threads are reused; don't pin a connection per thread
            self._wake.set()
