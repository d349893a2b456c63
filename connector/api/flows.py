"""The flow routes: create, change, delete, switch on and off, webhook setup, YAML, replays."""
from __future__ import annotations

import yaml
from flask import Response, request
from peewee import fn

from .. import api_schemas as s
from .. import engine, flows, store
from ..store import Flow, Run, TriggerState
from . import (
    Conflict, current_host, envelope, invalid, json_body, load_body, load_query,
    notify_queued, reply, route,
)

YAML_TYPES = ("text/yaml", "application/yaml", "application/x-yaml", "text/x-yaml",
              "text/plain")


def _trigger_kind(flow: Flow) -> str | None:
    entry = current_host().catalog.triggers.get(flow.trigger_key)
    return entry.cls.kind if entry else None


def flow_row(flow: Flow, counts: dict | None = None, last: dict | None = None) -> dict:
    """Return a flow's state and run counts (``counts``/``last`` when a page has them)."""
    if counts is None:
        counts = {r.status: r.n for r in Run.select(Run.status, fn.COUNT(Run.id).alias("n"))
                  .where(Run.flow == flow).group_by(Run.status)}
    if last is None:
        last_at = Run.select(fn.MAX(Run.created_at)).where(Run.flow == flow).scalar()
    else:
        last_at = last.get(flow.id)
    kind = _trigger_kind(flow)
    return {"name": flow.name, "description": flow.description, "trigger": flow.trigger_key,
            "trigger_kind": kind, "enabled": flow.enabled, "paused_reason": flow.paused_reason,
            "failure_streak": flow.failure_streak, "pause_after": flow.pause_after,
            "error_flow": flow.error_flow, "concurrency": flow.concurrency,
            "webhook_url": flows.webhook_url(current_host(), flow) if kind == "webhook" else None,
            "runs": counts, "last_run_at": last_at, "created_at": flow.created_at,
            "updated_at": flow.updated_at}


def flow_detail(flow: Flow) -> dict:
    """Return a flow's state with its definition and its trigger's state."""
    state = TriggerState.get_or_none(TriggerState.flow == flow)
    return {**flow_row(flow), "definition": flows.export(flow),
            "trigger_state": None if state is None else {
                "primed": state.primed, "last_poll_at": state.last_poll_at,
                "last_error": state.last_error}}


def _setup(flow: Flow) -> dict:
    """Return what a hand-set-up webhook's sender needs (its signing secret), if anything."""
    from ..cli import SHOWN_SECRETS

    state = TriggerState.get_or_none(TriggerState.flow == flow)
    sub = (current_host().box.open(state.sealed_subscription)
           if state and state.sealed_subscription else {})
    return {k: str(v) for k, v in sub.items() if k in SHOWN_SECRETS}


def flow_rows(rows: list[Flow]) -> list[dict]:
    """Return the flow summaries for ``rows`` with one query for all their run counts."""
    ids = [f.id for f in rows]
    counts: dict[int, dict] = {i: {} for i in ids}
    last: dict[int, object] = {}
    if ids:
        for r in (Run.select(Run.flow, Run.status, fn.COUNT(Run.id).alias("n"),
                             fn.MAX(Run.created_at).alias("last"))
                  .where(Run.flow.in_(ids)).group_by(Run.flow, Run.status)):
            counts[r.flow_id][r.status] = r.n
            last[r.flow_id] = max(filter(None, [last.get(r.flow_id), r.last]), default=None)
    return [flow_row(f, counts[f.id], last) for f in rows]


@route("/flows", "GET", "read", "Flows with their state (on, off, paused and why) and run "
       "counts", "flows", query=s.PageQuery, response=s.paged(s.FlowSummary, "FlowPage"))
def flows_list():
    args = load_query(s.PageQuery)
    query = Flow.select().order_by(Flow.name)
    rows = list(query.paginate(args["page"], args["limit"]))
    total = query.count()
    page = {"data": flow_rows(rows),
            "pagination": {"page": args["page"], "limit": args["limit"], "total": total,
                           "pages": -(-total // args["limit"])}}
    return reply(s.paged(s.FlowSummary, "FlowPage"), page)


def _save_and_maybe_enable(data: dict, enable: bool = False) -> Flow:
    flow = flows.save(current_host(), data)
    if enable or data.get("enabled"):
        flows.enable(current_host(), flow)
    return flow


@route("/flows", "POST", "write", "Create a flow from its definition (the YAML model as "
       "JSON); errors name the place, e.g. steps[0].inputs.agent_id", "flows",
       body=flows.FlowSpec, response=s.FlowDetail, status=201, errors=(409,))
def flows_create():
    data = json_body()
    name = data.get("name")
    if isinstance(name, str) and Flow.get_or_none(Flow.name == name) is not None:
        raise Conflict(f"flow {name!r} already exists (PUT /api/v1/flows/{name} replaces it)")
    flow = _save_and_maybe_enable(data)
    return reply(s.FlowDetail, flow_detail(flow), 201)


@route("/flows/<name>", "GET", "read", "One flow: its state and its definition", "flows",
       response=s.FlowDetail)
def flows_get(name):
    return reply(s.FlowDetail, flow_detail(flows.get(name)))


@route("/flows/<name>", "PUT", "write", "Replace a flow's definition (an enabled flow keeps "
       "its trigger)", "flows", body=flows.FlowSpec, response=s.FlowDetail)
def flows_replace(name):
    flows.get(name)
    data = json_body()
    data.setdefault("name", name)
    if data["name"] != name:
        raise invalid("name", f"expected {name!r}, the flow's name in the URL (a flow "
                               "cannot be renamed)")
    data.pop("enabled", None)  # switching on and off has its own endpoints
    return reply(s.FlowDetail, flow_detail(flows.save(current_host(), data)))


@route("/flows/<name>", "PATCH", "write", "Change a flow's settings (description, concurrency, "
       "on_failure) without resending its definition; what is left out stays as it is",
       "flows", body=flows.FlowSettings, response=s.FlowDetail)
def flows_patch(name):
    flow = flows.get(name)
    changes = load_body(flows.FlowSettings)
    return reply(s.FlowDetail, flow_detail(flows.update_settings(flow, changes)))


@route("/flows/<name>", "DELETE", "write", "Switch a flow off and delete it with its runs",
       "flows", status=204, errors=(409,))
def flows_delete(name):
    flow = flows.get(name)
    users = [f.name for f in Flow.select(Flow.name).where(
        (Flow.error_flow == name) & (Flow.id != flow.id)).order_by(Flow.name)]
    if users:
        raise Conflict(f"flow {name!r} is the error flow of: {', '.join(users)}; change them "
                       "first", {"flows": users})
    if flow.enabled:
        flows.disable(current_host(), flow)
    with store.write_tx():
        Flow.delete().where(Flow.id == flow.id).execute()
    return "", 204


@route("/flows/<name>/enable", "POST", "write", "Switch a flow on (subscribes its webhook, or "
       "records what exists as seen unless backfill)", "flows", body=s.EnableRequest,
       response=s.FlowSwitch)
def flows_enable(name):
    data = load_body(s.EnableRequest)
    flow = flows.enable(current_host(), flows.get(name), backfill=data["backfill"])
    trigger = current_host().catalog.trigger(flow.trigger_key)
    setup = _setup(flow) if getattr(trigger, "manual_setup", False) else {}
    return reply(s.FlowSwitch, {**flow_row(flow), "warnings": [], "setup": setup})


@route("/flows/<name>/disable", "POST", "write", "Switch a flow off (removes its webhook "
       "subscription)", "flows", response=s.FlowSwitch)
def flows_disable(name):
    flow = flows.get(name)
    warnings = flows.disable(current_host(), flow)
    return reply(s.FlowSwitch, {**flow_row(flows.get(name)), "warnings": warnings, "setup": {}})


@route("/flows/<name>/resume", "POST", "write", "Lift a pause: the runs it held are executed",
       "flows", response=s.FlowSummary, errors=(409,))
def flows_resume(name):
    flow = flows.get(name)
    if not flow.paused_reason:
        raise Conflict(f"flow {name} is not paused")
    flow = flows.resume(flow)
    notify_queued()
    return reply(s.FlowSummary, flow_row(flow))


@route("/flows/<name>/webhook", "GET", "write", "The webhook URL and, for a webhook set up by "
       "hand, the signing secret to paste into the sender", "flows",
       response=s.WebhookSetup, errors=(409,))
def flows_webhook(name):
    flow = flows.get(name)
    if _trigger_kind(flow) != "webhook":
        raise Conflict(f"flow {name} has no webhook trigger")
    return reply(s.WebhookSetup, {"url": flows.webhook_url(current_host(), flow),
                                  "secrets": _setup(flow)})


@route("/flows/<name>/export", "GET", "read", "The flow as the YAML `connector flows add` "
       "loads (the same text as `connector flows export`)", "flows", response="text/yaml")
def flows_export(name):
    text = yaml.safe_dump(flows.export(flows.get(name)), sort_keys=False)
    return Response(text, mimetype="text/yaml",
                    headers={"Content-Disposition": f'inline; filename="{name}.yaml"'})


@route("/flows/import", "POST", "write", "Create (or with replace, overwrite) a flow from a "
       "YAML flow file", "flows", body="text/yaml", query=s.ImportQuery,
       response=s.FlowDetail, status=201, errors=(409, 415))
def flows_import():
    args = load_query(s.ImportQuery)
    if (request.mimetype or "").lower() not in YAML_TYPES:
        return envelope(415, "UNSUPPORTED_MEDIA_TYPE",
                        f"Content-Type {request.mimetype or '(none)'} is not accepted; "
                        "send text/yaml")
    try:
        data = yaml.safe_load(request.get_data(as_text=True))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise invalid("_body", f"not valid YAML{where}: {getattr(exc, 'problem', exc)}"
                       ) from None
    if not isinstance(data, dict):
        raise invalid("_body", "expected a mapping with name, trigger and steps")
    name = data.get("name")
    exists = isinstance(name, str) and Flow.get_or_none(Flow.name == name) is not None
    if exists and not args["replace"]:
        raise Conflict(f"flow {name!r} already exists (import with ?replace=true to "
                       "overwrite it)")
    flow = _save_and_maybe_enable(data, args["enable"])
    return reply(s.FlowDetail, flow_detail(flow), 200 if exists else 201)


@route("/flows/<name>/replay-failed", "POST", "write", "Replay every failed run of a flow "
       "from its failed step", "runs", body=s.ReplayFailedRequest,
       response=s.ReplayFailedResult)
def flows_replay_failed(name):
    data = load_body(s.ReplayFailedRequest)
    flow = flows.get(name)
    ids = [r.id for r in Run.select(Run.id).where((Run.flow == flow) &
                                                  (Run.status == Run.FAILED)).order_by(Run.id)]
    for run_id in ids:
        engine.replay(run_id, force_key=data["force_key"])
    if ids:
        notify_queued()
    return reply(s.ReplayFailedResult, {"replayed": ids, "count": len(ids)})
