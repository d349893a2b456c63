"""The idempotency ledger: a side effect done at most once per (scope, key), kept forever.

Actions reach it as ``ctx.once(key, request, call)``; the engine binds the scope (the action
key) and the run and step that hold the key.
"""
from __future__ import annotations

from typing import Callable

from peewee import IntegrityError

from . import statements, store
from .errors import APIError, IdempotencyConflict, OutcomeUnknown, Throttled
from .http import ledger_guard
from .sdk import request_hash
from .store import IdempotencyRecord, Run, utcnow


def once(scope: str, key: str, request, call: Callable[[], dict], run_id: int | None = None,
         step_name: str | None = None) -> dict:
    """Run ``call`` at most once per (scope, key); a repeat returns the first result.

    The key is recorded as pending before the call. An answer from the service that means
    "not done" (an HTTP error status, or no connection made) releases it so a retry may call
    again; a call that may have taken effect (a read timeout, a crash) keeps it pending.
    Another run finding the key pending waits (a retriable error) while the holder's lease is
    alive, then gets the stored result; a key left pending by a dead attempt raises
    OutcomeUnknown instead of risking a second effect. The calls made inside are marked as
    guarded, so the client lets a POST whose answer was lost raise a retriable error: the
    pending key, not the client, stops the repeat.
    """
    digest = request_hash(request)
    key = store.fit_key(key)
    record = _FIND.execute(scope, key)
    if record is None:
        try:
            with store.write_tx():
                new_id = _RECORD.execute(scope, key, digest, run_id, step_name)
            record = IdempotencyRecord(id=new_id, scope=scope, key=key, request_hash=digest,
                                       run_id=run_id, step_name=step_name)
        except IntegrityError:
            record = IdempotencyRecord.get(scope=scope, key=key)
            return _repeat(record, digest, key, run_id)
    else:
        return _repeat(record, digest, key, run_id)
    try:
        with ledger_guard():
            response = call()
    except APIError as exc:
        if not exc.maybe_applied:
            _release(record)
        raise
    except Exception:
        _release(record)
        raise
    # Every write queues on write_tx: a lone statement waiting on SQLite's busy handler
    # can be passed over by the queued writers until its 30 s run out ("database is locked").
    with store.write_tx():
        _DONE.execute(IdempotencyRecord.DONE, response, utcnow(), record.id)
    return response


def _release(record: IdempotencyRecord) -> None:
    with store.write_tx():
        _FORGET.execute(record.id)


# A bulk action sends hundreds of batches through here: written once (connector.statements).
_FIND = statements.SelectOne(IdempotencyRecord, [(IdempotencyRecord.scope, "="),
                                                 (IdempotencyRecord.key, "=")])
_RECORD = statements.Insert(IdempotencyRecord, [
    IdempotencyRecord.scope, IdempotencyRecord.key, IdempotencyRecord.request_hash,
    IdempotencyRecord.run_id, IdempotencyRecord.step_name])
_DONE = statements.Update(IdempotencyRecord, [
    IdempotencyRecord.status, IdempotencyRecord.response, IdempotencyRecord.updated_at],
    [(IdempotencyRecord.id, "=")])
_FORGET = statements.Delete(IdempotencyRecord, [(IdempotencyRecord.id, "=")])


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
        # The holder may have finished between our two reads: it marks the record done (or
        # releases it) before its run leaves RUNNING, so a fresh read tells which.
        fresh = IdempotencyRecord.get_or_none(IdempotencyRecord.id == record.id)
        if fresh is None:
            raise Throttled(0.1, f"idempotency key {key} was released; trying again")
        if fresh.status == IdempotencyRecord.DONE:
            return fresh.response
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
