"""The runs pages: every run or one flow's, filtered by status and paginated; one run's page.

Replays are buttons calling ``POST /api/v1/runs/<id>/replay`` and
``POST /api/v1/flows/<name>/replay-failed`` from the page.
"""
from __future__ import annotations

from flask import render_template
from marshmallow import fields, validate

from .. import api, flows
from ..api_schemas import RUN_STATUSES
from ..store import Flow, Run
from . import signed_in, ui
from .pages import ListQuery, page_of, query_args

ACTIVE = (Run.QUEUED, Run.RUNNING, Run.WAITING)


class RunsQuery(ListQuery):
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    status = fields.String(load_default=None, validate=validate.OneOf(RUN_STATUSES))


def _runs(flow: Flow | None):
    args = query_args(RunsQuery)
    query = Run.select(Run, Flow).join(Flow).order_by(Run.id.desc())
    if flow is not None:
        query = query.where(Run.flow == flow)
    if args["status"]:
        query = query.where(Run.status == args["status"])
    page = page_of(query, args, api.run_row)
    failed = 0
    if flow is not None:
        failed = Run.select().where((Run.flow == flow) & (Run.status == Run.FAILED)).count()
    active = any(r["status"] in ACTIVE for r in page["data"])
    return render_template("ui/runs.html", page=page, flow=flow, status=args["status"],
                           statuses=RUN_STATUSES, failed_count=failed, active=active)


@ui.get("/ui/runs")
@signed_in
def runs_list():
    return _runs(None)


@ui.get("/ui/flows/<name>/runs")
@signed_in
def flow_runs(name: str):
    return _runs(flows.get(name))


@ui.get("/ui/runs/<int:run_id>")
@signed_in
def run_page(run_id: int):
    run = api.run_detail(api.get_run(run_id))
    replays = [r.id for r in Run.select(Run.id).where(Run.replay_of == run_id)
               .order_by(Run.id)]
    return render_template("ui/run.html", run=run, replays=replays,
                           active=run["status"] in ACTIVE)
