"""The run routes: list, show with each step's attempts, replay."""
from __future__ import annotations

from .. import api_schemas as s
from .. import engine, flows
from ..errors import NotFound, UserError
from ..store import Flow, Run, StepAttempt, StepRun
from . import Conflict, load_body, load_query, notify_queued, paginate, reply, route


def run_row(run: Run) -> dict:
    """Return a run as a list shows it."""
    duration = None
    if run.finished_at and run.started_at:
        duration = (run.finished_at - run.started_at).total_seconds() * 1000
    return {"id": run.id, "flow": run.flow.name, "status": run.status,
            "attempts": run.attempts, "error": run.error, "failed_step": run.failed_step,
            "replay_of": run.replay_of, "created_at": run.created_at,
            "started_at": run.started_at, "finished_at": run.finished_at,
            "duration_ms": duration}


def run_detail(run: Run) -> dict:
    """Return a run with its trigger item and each step's inputs, output and attempts."""
    steps = list(StepRun.select().where(StepRun.run == run).order_by(StepRun.id))
    history: dict[int, list] = {sr.id: [] for sr in steps}
    if steps:
        for a in (StepAttempt.select().where(StepAttempt.step_run.in_(list(history)))
                  .order_by(StepAttempt.step_run, StepAttempt.number)):
            history[a.step_run_id].append({
                "number": a.number, "status": a.status, "error": a.error,
                "retry_at": a.retry_at, "started_at": a.started_at,
                "duration_ms": a.duration_ms})
    return {**run_row(run), "item": run.item or {}, "steps": [
        {"name": sr.name, "action": sr.action_key, "status": sr.status,
         "attempts": sr.attempts, "inputs": sr.inputs, "output": sr.output, "error": sr.error,
         "started_at": sr.started_at, "finished_at": sr.finished_at,
         "resume_at": sr.resume_at, "history": history[sr.id]} for sr in steps]}


def get_run(run_id: int) -> Run:
    """Return the run ``run_id`` with its flow, or raise NotFound."""
    run = Run.select(Run, Flow).join(Flow).where(Run.id == run_id).first()
    if run is None:
        raise NotFound(f"no run with id {run_id}")
    return run


@route("/runs", "GET", "read", "Runs, newest first, filtered by flow and status", "runs",
       query=s.RunsQuery, response=s.paged(s.RunSchema, "RunPage"))
def runs_list():
    args = load_query(s.RunsQuery)
    query = Run.select(Run, Flow).join(Flow).order_by(Run.id.desc())
    if args["flow"]:
        query = query.where(Run.flow == flows.get(args["flow"]))
    if args["status"]:
        query = query.where(Run.status == args["status"])
    return reply(s.paged(s.RunSchema, "RunPage"), paginate(query, args, run_row))


@route("/runs/<int:run_id>", "GET", "read", "One run: the trigger item and each step's inputs, "
       "output, error and attempts", "runs", response=s.RunDetail)
def runs_get(run_id):
    return reply(s.RunDetail, run_detail(get_run(run_id)))


@route("/runs/<int:run_id>/replay", "POST", "write", "Replay a failed run from its failed step "
       "(finished steps are not repeated), or with an item: a new run with the edited trigger "
       "item", "runs", body=s.ReplayRequest, response=s.RunSchema, errors=(409,))
def runs_replay(run_id):
    data = load_body(s.ReplayRequest)
    run = get_run(run_id)
    try:
        if data["item"] is not None:
            new = engine.replay(run.id, item=data["item"])
            notify_queued()
            return reply(s.RunSchema, run_row(get_run(new.id)), 201)
        engine.replay(run.id, force_key=data["force_key"])
    except UserError as exc:
        raise Conflict(str(exc)) from None
    notify_queued()
    return reply(s.RunSchema, run_row(get_run(run.id)))
