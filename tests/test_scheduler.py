"""The scheduler: schedule-trigger firings (deduped on their time) and one deterministic tick."""
from __future__ import annotations

import datetime as dt

import pytest
from apscheduler.triggers.interval import IntervalTrigger
from marshmallow import Schema, fields

from connector import Action, App, ScheduleTrigger, flows, hookimpl
from connector.intake import fire_times
from connector.scheduler import Scheduler
from connector.store import Run, TriggerState

UTC = dt.timezone.utc
ANCHOR = dt.datetime(2000, 1, 1, tzinfo=UTC)
DONE: list = []


class ClockApp(App):
    key = "clock"
    label = "Clock"


class EveryInputs(Schema):
    seconds = fields.Integer(required=True)


class Every(ScheduleTrigger):
    key = "clock.every"
    app = "clock"
    label = "Every N seconds"
    Inputs = EveryInputs

    def schedule(self, inputs):
        return IntervalTrigger(seconds=inputs["seconds"], start_date=ANCHOR)


class Note(Action):
    key = "clock.note"
    app = "clock"
    label = "Note"

    def run(self, ctx, inputs):
        DONE.append(ctx.run_id)
        return {}


class ClockPlugin:
    @hookimpl
    def register_apps(self, register):
        register(ClockApp)

    @hookimpl
    def register_triggers(self, register):
        register(Every)

    @hookimpl
    def register_actions(self, register):
        register(Note)


@pytest.fixture
def clock_flow(make_host):
    DONE.clear()
    host = make_host(extra_plugins=[ClockPlugin()])
    flow = flows.save(host, {"name": "tick", "trigger": {"key": "clock.every",
                                                          "inputs": {"seconds": 60}},
                             "steps": [{"action": "clock.note"}]})
    flows.enable(host, flow)
    start = dt.datetime.fromisoformat(TriggerState.get(TriggerState.flow == flow).cursor[
        "last_fire"])
    return host, flow, start


def next_fire(after: dt.datetime) -> dt.datetime:
    """The first multiple of 60 s after the anchor that is later than ``after``."""
    done = (after - ANCHOR) // dt.timedelta(seconds=60)
    return ANCHOR + dt.timedelta(seconds=60) * (done + 1)


def test_fire_times_lists_the_window_and_keeps_the_latest():
    trig = IntervalTrigger(seconds=10, start_date=ANCHOR)
    after = ANCHOR + dt.timedelta(seconds=5)
    times = fire_times(trig, after, after + dt.timedelta(seconds=30), cap=10)
    assert [t - ANCHOR for t in times] == [dt.timedelta(seconds=s) for s in (10, 20, 30)]
    assert fire_times(trig, after, after + dt.timedelta(seconds=30), cap=1) == times[-1:]
    assert fire_times(trig, ANCHOR + dt.timedelta(seconds=10),
                      ANCHOR + dt.timedelta(seconds=19), cap=5) == []


def test_each_firing_queues_one_run_with_its_time(clock_flow):
    host, flow, start = clock_flow
    scheduler = Scheduler(host)
    first = next_fire(start)
    assert scheduler.fire_schedules(first - dt.timedelta(microseconds=1)) == 0
    later = first + dt.timedelta(seconds=1)
    scheduler.tick(later)
    runs = list(Run.select())
    assert len(runs) == 1 and runs[0].status == Run.SUCCEEDED and DONE == [runs[0].id]
    assert dt.datetime.fromisoformat(runs[0].item["scheduled_at"]) == first
    assert scheduler.fire_schedules(later) == 0  # the same moment again: nothing new


def test_a_second_scheduler_never_fires_the_same_time_again(clock_flow):
    host, flow, start = clock_flow
    later = start + dt.timedelta(seconds=61)
    assert Scheduler(host).fire_schedules(later) == 1
    TriggerState.update(cursor={"last_fire": start.isoformat()}).execute()  # it lagged behind
    assert Scheduler(host).fire_schedules(later) == 0
    assert Run.select().count() == 1


def test_after_a_pause_only_the_latest_missed_firing_runs(clock_flow):
    host, flow, start = clock_flow
    assert Scheduler(host).fire_schedules(start + dt.timedelta(hours=1)) == 1


def test_switching_on_again_does_not_backfill(clock_flow):
    host, flow, start = clock_flow
    flows.disable(host, flow)
    flows.enable(host, flows.get("tick"))
    restarted = dt.datetime.fromisoformat(
        TriggerState.get(TriggerState.flow == flow).cursor["last_fire"])
    assert restarted >= start
    scheduler = Scheduler(host)
    first = next_fire(restarted)
    assert scheduler.fire_schedules(first - dt.timedelta(microseconds=1)) == 0
    assert scheduler.fire_schedules(first + dt.timedelta(hours=1)) == 1
    assert dt.datetime.fromisoformat(Run.get().item["scheduled_at"]) > restarted
