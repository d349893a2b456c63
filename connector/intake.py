"""Turn trigger items into queued runs: polls, priming, webhook requests.

The rule that makes duplicates harmless lives here: an item's dedupe key goes into the
seen-items ledger (unique per flow) in the same transaction that creates its queued run, so
a repeated delivery or an overlapping poll creates nothing, and a crash creates both or
neither.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field

from peewee import IntegrityError

from . import statements, store
from .errors import APIError, SignatureError
from .host import Host
from .sdk import (
    PollTrigger, ScheduleTrigger, Trigger, TriggerContext, WebhookRequest, WebhookTrigger,
)
from .store import Flow, Run, SeenItem, StepRun, TriggerState, fit_key, utcnow

log = logging.getLogger("connector.intake")
_SEE = statements.Insert(SeenItem, [SeenItem.flow, SeenItem.key, SeenItem.expires_at])
_QUEUE = statements.Insert(Run, [Run.flow, Run.item, Run.dedupe_key])
#: the flow listening at a webhook token, with its trigger state (None if it has none yet)
_HOOKED_FLOW = statements.SelectOne(Flow, [(Flow.webhook_token, "=")],
                                    join=(TriggerState, TriggerState.flow, "state"))
PRIME_ROUNDS = 1000  # polls of one priming at most (100,000 items at 100 a page)


@dataclass
class Intake:
    """What one poll or one webhook request produced."""

    created: list[int] = field(default_factory=list)
    duplicates: int = 0
    primed: int = 0
    reply_timeout: float | None = None  # set for a synchronous webhook


def _expires(trigger: Trigger) -> dt.datetime | None:
    return None if trigger.dedupe_ttl is None else utcnow() + dt.timedelta(
        seconds=trigger.dedupe_ttl)


def _keyed(trigger: Trigger, items: list[dict]) -> list[tuple[str, dict]]:
    keyed = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError(f"trigger {trigger.key} produced an item that is not a mapping")
        keyed.append((fit_key(trigger.dedupe_key(item)), item))
    return keyed


def ingest(flow: Flow, trigger: Trigger, keyed: list[tuple[str, dict]],
           state: TriggerState | None = None, cursor: dict | None = None) -> Intake:
    """Record each (key, item) in the ledger and queue its run, all in one transaction.

    ``cursor``, when given, is saved to ``state`` in the same transaction, so a crash between
    the fetch and the save re-fetches items that the ledger then drops.
    """
    result = Intake()
    expires = _expires(trigger)
    fresh = _unseen(flow, keyed)
    result.duplicates = len(keyed) - len(fresh)
    saves_cursor = state is not None and cursor is not None
    if len(fresh) == 1 and not saves_cursor:
        # One item and nothing else to save (a webhook): concurrent webhooks share their
        # transactions (store.grouped, each in its own savepoint when grouped); a twin that
        # won the race makes this one's insert fail, which is the answer.
        key, item = fresh[0]

        def record():
            _SEE.execute(flow.id, key, expires)
            return _QUEUE.execute(flow.id, item, key)

        try:
            result.created.append(store.grouped(record))
        except IntegrityError:
            result.duplicates += 1
        return result
    with store.write_tx():
        for key, item in fresh:
            try:
                with store.db.atomic():  # a savepoint: one duplicate must not undo the rest
                    SeenItem.insert(flow=flow, key=key, expires_at=expires).execute()
                    run_id = Run.insert(flow=flow, item=item, dedupe_key=key).execute()
            except IntegrityError:
                result.duplicates += 1
                continue
            result.created.append(run_id)
        if saves_cursor:
            TriggerState.update(cursor=cursor, last_poll_at=utcnow(), last_error=None,
                                updated_at=utcnow()).where(TriggerState.id == state.id).execute()
    return result


def _unseen(flow: Flow, keyed: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """Drop the items whose key the ledger already holds (and repeats within ``keyed``).

    For several items, one indexed lookup per 500 keys before taking the write lock, so a poll that re-reads
    a page of known items costs a read, not a failed insert per item. The unique index
    still decides races inside the transaction.
    """
    if len(keyed) < 2:
        return list(keyed)  # a lone item: its insert is the check
    seen: set[str] = set()
    keys = list(dict.fromkeys(k for k, _ in keyed))
    for i in range(0, len(keys), 500):
        chunk = keys[i:i + 500]
        seen.update(k for (k,) in SeenItem.select(SeenItem.key).where(
            (SeenItem.flow == flow) & SeenItem.key.in_(chunk)).tuples())
    fresh = []
    for key, item in keyed:
        if key not in seen:
            seen.add(key)
            fresh.append((key, item))
    return fresh


def prime(host: Host, flow: Flow, trigger: PollTrigger, ctx: TriggerContext,
          state: TriggerState) -> Intake:
    """Record what the service holds now as already seen, firing nothing.

    A poll that says more items wait beyond its budget (``ctx.more``) is repeated, so that
    everything that exists at switch-on is recorded, however long the list.
    """
    ctx.more = False
    items = trigger.poll(ctx)
    for _ in range(PRIME_ROUNDS):
        if not ctx.more:
            break
        ctx.more = False
        items += trigger.poll(ctx)
    keyed = _keyed(trigger, items)
    expires = _expires(trigger)
    with store.write_tx():
        for key, _item in keyed:
            SeenItem.insert(flow=flow, key=key, expires_at=expires).on_conflict_ignore().execute()
        TriggerState.update(cursor=ctx.state, last_poll_at=utcnow(), last_error=None,
                            updated_at=utcnow()).where(TriggerState.id == state.id).execute()
    return Intake(primed=len(keyed))


def poll_flow(host: Host, flow: Flow) -> Intake:
    """Poll one enabled flow once; APIError is recorded on the trigger state and re-raised."""
    from .flows import trigger_context

    trigger = host.catalog.trigger(flow.trigger_key)
    if not isinstance(trigger, PollTrigger):
        raise ValueError(f"flow {flow.name}: trigger {flow.trigger_key} does not poll")
    state, _ = TriggerState.get_or_create(flow=flow)
    ctx = trigger_context(host, flow, state)
    try:
        if not state.primed:
            result = prime(host, flow, trigger, ctx, state)
            TriggerState.update(primed=True).where(TriggerState.id == state.id).execute()
            return result
        items = trigger.poll(ctx)
        return ingest(flow, trigger, _keyed(trigger, items), state, ctx.state)
    except APIError as exc:
        TriggerState.update(last_error=str(exc), last_poll_at=utcnow()).where(
            TriggerState.id == state.id).execute()
        raise
    finally:
        if ctx.client:
            ctx.client.close()


def fire_times(trigger, after: dt.datetime, until: dt.datetime, cap: int) -> list[dt.datetime]:
    """Return the APScheduler ``trigger``'s fire times in (after, until], the last ``cap``."""
    times: list[dt.datetime] = []
    tick = dt.timedelta(microseconds=1)
    nxt = trigger.get_next_fire_time(None, after + tick)
    while nxt is not None and nxt <= until:
        times.append(nxt)
        times = times[-cap:]
        nxt = trigger.get_next_fire_time(nxt, nxt + tick)
    return times


def fire_schedule(host: Host, flow: Flow, now: dt.datetime | None = None) -> Intake:
    """Queue a run for each firing of a schedule flow due since its last one."""
    from .flows import trigger_context

    trigger = host.catalog.trigger(flow.trigger_key)
    if not isinstance(trigger, ScheduleTrigger):
        raise ValueError(f"flow {flow.name}: trigger {flow.trigger_key} is not a schedule")
    now = now or dt.datetime.now(dt.timezone.utc)
    state, _ = TriggerState.get_or_create(flow=flow)
    cursor = dict(state.cursor or {})
    last = cursor.get("last_fire")
    after = (dt.datetime.fromisoformat(last) if last else
             (flow.enabled_at or utcnow()).replace(tzinfo=dt.timezone.utc))
    times = fire_times(trigger.schedule(flow.trigger_inputs or {}), after, now, trigger.catch_up)
    if not times:
        return Intake()
    ctx = trigger_context(host, flow, state)
    keyed = _keyed(trigger, [trigger.item(ctx, t) for t in times])
    return ingest(flow, trigger, keyed, state, {**cursor, "last_fire": times[-1].isoformat()})


@dataclass
class Reply:
    """The HTTP answer to a webhook request."""

    status: int
    body: dict


def receive_webhook(host: Host, token: str, request: WebhookRequest) -> tuple[Reply, Intake]:
    """Verify, parse and ingest one webhook request for the flow owning ``token``."""
    flow = _HOOKED_FLOW.execute(token)
    if flow is None or not flow.enabled:
        return Reply(404, _error("NOT_FOUND", "no enabled flow listens at this URL")), Intake()
    trigger = host.catalog.trigger(flow.trigger_key)
    if not isinstance(trigger, WebhookTrigger):
        return Reply(404, _error("NOT_FOUND", "no enabled flow listens at this URL")), Intake()
    state = flow.state
    subscription = host.open_sealed(state.sealed_subscription) if (
        state and state.sealed_subscription) else {}
    ctx = TriggerContext(flow_name=flow.name, inputs=dict(flow.trigger_inputs or {}),
                         state=dict((state.cursor if state else None) or {}))
    try:
        trigger.verify(ctx, request, subscription)
    except SignatureError as exc:
        log.warning("flow %s: webhook rejected: %s", flow.name, exc)
        return Reply(401, _error("INVALID_SIGNATURE", str(exc))), Intake()
    try:
        items = trigger.parse(ctx, request)
        keyed = []
        for i, item in enumerate(items):
            key = trigger.request_dedupe_key(item, request)
            keyed.append((fit_key(f"{key}#{i}" if len(items) > 1 else key), item))
    except (ValueError, KeyError, TypeError) as exc:
        return Reply(400, _error("INVALID_PAYLOAD", _reason(exc))), Intake()
    result = ingest(flow, trigger, keyed)
    result.reply_timeout = trigger.reply_timeout(dict(flow.trigger_inputs or {}))
    return Reply(200, {"accepted": len(result.created), "duplicates": result.duplicates}), result


def await_reply(run_ids: list[int], timeout: float, poll: float = 0.01) -> Reply:
    """Wait for runs to finish; answer with the last top-level step's output (or 202).

    For a synchronous webhook: one run gives its output, several a list of outputs; a failed
    run answers 500 with its error; past ``timeout`` the answer is 202 with the run ids.
    """
    deadline = time.monotonic() + timeout
    while True:
        runs = list(Run.select().where(Run.id.in_(run_ids)).order_by(Run.id))
        if all(run.status in Run.FINAL for run in runs):
            break
        if time.monotonic() >= deadline:
            return Reply(202, {"accepted": len(run_ids), "runs": run_ids, "status": "running"})
        time.sleep(poll)
    failed = [run for run in runs if run.status == Run.FAILED]
    if failed:
        return Reply(500, _error("RUN_FAILED", failed[0].error or "the run failed"))
    outputs = [_last_output(run) for run in runs]
    return Reply(200, outputs[0] if len(outputs) == 1 else {"results": outputs})


def _last_output(run: Run) -> dict:
    from .flows import step_tree

    names = [node.name for node in step_tree(run.flow)]
    done = {sr.name: sr for sr in StepRun.select().where(
        (StepRun.run == run) & (StepRun.name.in_(names)))}
    for name in reversed(names):
        sr = done.get(name)
        if sr is not None and sr.status == StepRun.SUCCEEDED:
            return sr.output or {}
    return {"filtered": run.status == Run.FILTERED}


def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"payload is missing field {exc.args[0]!r}"
    return str(exc)


def _error(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}
