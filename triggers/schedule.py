"""Schedule triggers: every N minutes/hours/days, or a cron expression in a time zone.

Both hand APScheduler a trigger; the host's scheduler computes the fire times since the
flow's last firing and queues one run per time, deduped on it, so a restart or a second
scheduler never fires a time twice. Intervals are anchored (at ``start``, or 2000-01-01
00:00 in the flow's time zone) so every process computes the same times. After the host was
down, only the latest missed firing runs; switching a flow on again does not backfill.
"""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

from connector import ScheduleTrigger, hookimpl

ANCHOR = dt.datetime(2000, 1, 1)
UNITS = {"minutes": 60, "hours": 3600, "days": 86400, "weeks": 604800}


def _zone(value: str) -> ZoneInfo:
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"unknown time zone {value!r}; use an IANA name such as "
                              "America/New_York") from None


class IntervalInputs(Schema):
    every = fields.Integer(required=True, validate=validate.Range(min=1), metadata={
        "label": "Every", "help": "How many units between firings."})
    unit = fields.String(load_default="minutes", validate=validate.OneOf(list(UNITS)),
                         metadata={"label": "Unit"})
    start = fields.NaiveDateTime(load_default=None, metadata={
        "label": "Starting at", "help": "Align firings to this local time (ISO 8601), e.g. "
                                        "2026-01-01T09:00 for every day at 09:00."})
    timezone = fields.String(load_default="UTC", metadata={
        "label": "Time zone", "help": "IANA name the start time is read in."})

    @validates("timezone")
    def known_zone(self, value, **_):
        _zone(value)

    @validates_schema
    def at_least_a_minute(self, data, **_):
        if data.get("every") and data["every"] * UNITS[data.get("unit", "minutes")] < 60:
            raise ValidationError("the shortest interval is 1 minute", "every")


class Interval(ScheduleTrigger):
    """Fire every N minutes, hours, days or weeks."""

    key = "schedule.interval"
    app = "schedule"
    label = "Every interval"
    help = "Start the flow every N minutes, hours, days or weeks."
    Inputs = IntervalInputs
    sample = {"scheduled_at": "2026-01-15T09:00:00+00:00", "timezone": "UTC"}

    def schedule(self, inputs):
        zone = _zone(inputs.get("timezone") or "UTC")
        start = inputs.get("start") or ANCHOR
        if isinstance(start, str):  # stored flows hold inputs as JSON
            start = dt.datetime.fromisoformat(start)
        start = start.replace(tzinfo=zone)
        return IntervalTrigger(seconds=inputs["every"] * UNITS[inputs.get("unit", "minutes")],
                               start_date=start, timezone=zone)

    def item(self, ctx, scheduled_at):
        return {"scheduled_at": scheduled_at.isoformat(),
                "timezone": ctx.inputs.get("timezone") or "UTC"}


class CronInputs(Schema):
    cron = fields.String(required=True, metadata={
        "label": "Cron expression", "help": "Five fields: minute hour day-of-month month "
                                            "day-of-week, e.g. 0 9 1 * * (09:00 on the 1st)."})
    timezone = fields.String(load_default="UTC", metadata={
        "label": "Time zone", "help": "IANA name the expression is read in."})

    @validates("timezone")
    def known_zone(self, value, **_):
        _zone(value)

    @validates("cron")
    def parses(self, value, **_):
        try:
            CronTrigger.from_crontab(value, timezone="UTC")
        except ValueError as exc:
            raise ValidationError(f"not a valid cron expression: {exc}") from None


class Cron(ScheduleTrigger):
    """Fire on a cron expression in a time zone (daylight saving handled by the zone)."""

    key = "schedule.cron"
    app = "schedule"
    label = "Cron schedule"
    help = "Start the flow on a cron expression, e.g. at 09:00 on the first of every month."
    Inputs = CronInputs
    sample = {"scheduled_at": "2026-02-01T09:00:00+01:00", "timezone": "Europe/Amsterdam"}

    def schedule(self, inputs):
        return CronTrigger.from_crontab(inputs["cron"], timezone=_zone(inputs["timezone"]))

    def item(self, ctx, scheduled_at):
        return {"scheduled_at": scheduled_at.isoformat(), "timezone": ctx.inputs["timezone"]}


@hookimpl
def register_triggers(register):
    register(Interval)
    register(Cron)
