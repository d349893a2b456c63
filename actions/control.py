"""Flow control steps: paths (branch), for each (loop) and delay (wait without a worker).

They are registered like any action; the engine gives the ``control`` ones their meaning:

- ``looping.for_each`` returns the list to loop over; the engine runs the steps nested
  under it (``steps:``) once per element, with ``{{ item }}``, ``{{ index }}`` and
  ``{{ loop.count }}`` in their templates. Each element's steps are recorded and idempotent
  on their own (``each[3].grant``), and a run resumed after a crash keeps the very same
  list. A filter inside the loop skips the rest of that element only.
- ``paths.split`` runs the steps of each branch (``branches:``, each with a name, optional
  ``conditions`` in the filter format, and steps) whose conditions hold, in order, or only
  the first (``mode: first``); a branch without conditions always matches (a fallback when
  it comes last with ``mode: first``). The choice is recorded, so a resumed run takes the
  same branches.
- ``delay.for`` and ``delay.until`` park the run in the database (status ``waiting``); the
  scheduler's due-runs job resumes it at the time, after a restart too.
"""
from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from marshmallow import Schema, ValidationError, fields, validate, validates

from connector import Action, Park, UserError, hookimpl

MAX_ITEMS = 10_000
MAX_DELAY = dt.timedelta(days=31)
UNITS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400, "weeks": 604800}


class ForEachInputs(Schema):
    items = fields.Raw(required=True, metadata={
        "label": "List", "help": "A list from the trigger or an earlier step; text is split "
                                 "into lines, and a JSON array in text is read as a list."})
    max_items = fields.Integer(load_default=500, validate=validate.Range(min=1, max=MAX_ITEMS),
                               metadata={"label": "At most",
                                         "help": f"The cap on elements (up to {MAX_ITEMS})."})
    over_limit = fields.String(load_default="fail",
                               validate=validate.OneOf(["fail", "first"]),
                               metadata={"label": "When the list is longer",
                                         "help": "fail the run, or loop over the first ones"})


def as_list(value) -> list:
    """Return ``value`` as a list: a list as is, JSON array text parsed, other text by line."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        raise UserError("items: expected a list, got a mapping (pick the list inside it)")
    if value is None:
        return []
    text = str(value).strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, list):
            return parsed
    return [line.strip() for line in text.splitlines() if line.strip()]


class ForEach(Action):
    """Loop: run the nested steps once per element (no HTTP call of its own)."""

    key = "looping.for_each"
    app = "looping"
    label = "For each"
    help = "Run the steps nested under this one once for each element of a list."
    Inputs = ForEachInputs
    needs_connection = False
    control = "loop"
    sample = {"count": 2, "items": [{"email": "a@agency.example", "amount": 500},
                                    {"email": "b@agency.example", "amount": 300}],
              "iterations": [{"grant": {"success": True}}, {"grant": {"success": True}}]}

    def run(self, ctx, inputs):
        items = as_list(inputs["items"])
        cap = inputs["max_items"]
        if len(items) > cap:
            if inputs["over_limit"] == "fail":
                raise UserError(f"items: the list has {len(items)} elements, more than "
                                f"max_items ({cap}); raise max_items or set over_limit: first")
            items = items[:cap]
        return {"items": items}


class PathsInputs(Schema):
    mode = fields.String(load_default="all", validate=validate.OneOf(["all", "first"]),
                         metadata={"label": "Run", "help": "every branch whose conditions "
                                                           "hold, or only the first"})


class Split(Action):
    """Branch: the engine evaluates each branch's conditions and runs the chosen steps."""

    key = "paths.split"
    app = "paths"
    label = "Split into paths"
    help = "Run the steps of each branch whose conditions hold (or only the first that does)."
    Inputs = PathsInputs
    needs_connection = False
    control = "paths"
    sample = {"matched": ["large"]}


def _aware(value: dt.datetime, zone: str) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=ZoneInfo(zone))


class DelayForInputs(Schema):
    amount = fields.Float(required=True, validate=validate.Range(min=0, min_inclusive=False),
                          metadata={"label": "Wait", "help": "How long, in the unit below."})
    unit = fields.String(load_default="minutes", validate=validate.OneOf(list(UNITS)),
                         metadata={"label": "Unit"})


class DelayFor(Action):
    """Wait a duration (at most 31 days), parked in the database."""

    key = "delay.for"
    app = "delay"
    label = "Delay for"
    help = "Pause the run for a while before the next step."
    Inputs = DelayForInputs
    needs_connection = False
    sample = {"until": "2026-01-15T10:45:00+00:00", "resumed_at": "2026-01-15T10:45:00.2Z"}

    def run(self, ctx, inputs):
        wait = dt.timedelta(seconds=inputs["amount"] * UNITS[inputs["unit"]])
        if wait > MAX_DELAY:
            raise UserError(f"amount: at most {MAX_DELAY.days} days")
        until = dt.datetime.now(dt.timezone.utc) + wait
        raise Park(until, {"until": until.isoformat()})


class DelayUntilInputs(Schema):
    until = fields.String(required=True, metadata={
        "label": "Until", "help": "An ISO 8601 date and time, e.g. 2026-01-15T09:00 or with "
                                  "an offset; without one it is read in the time zone below."})
    timezone = fields.String(load_default="UTC", metadata={
        "label": "Time zone", "help": "IANA name, e.g. Europe/Amsterdam."})

    @validates("timezone")
    def known_zone(self, value, **_):
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValidationError(f"unknown time zone {value!r}; use an IANA name such as "
                                  "Europe/Amsterdam") from None


class DelayUntil(Action):
    """Wait until a date and time (at most 31 days ahead); a past time continues at once."""

    key = "delay.until"
    app = "delay"
    label = "Delay until"
    help = "Pause the run until a date and time; a time already past continues at once."
    Inputs = DelayUntilInputs
    needs_connection = False
    sample = {"until": "2026-01-16T09:00:00+01:00", "waited": True}

    def run(self, ctx, inputs):
        try:
            when = dt.datetime.fromisoformat(str(inputs["until"]).strip().replace("Z", "+00:00"))
        except ValueError:
            raise UserError(f"until: expected an ISO 8601 date and time, got "
                            f"{inputs['until']!r}") from None
        until = _aware(when, inputs["timezone"])
        now = dt.datetime.now(dt.timezone.utc)
        if until <= now:
            return {"until": until.isoformat(), "waited": False}
        if until - now > MAX_DELAY:
            raise UserError(f"until: at most {MAX_DELAY.days} days ahead")
        raise Park(until, {"until": until.isoformat(), "waited": True})


@hookimpl
def register_actions(register):
    for action in (ForEach, Split, DelayFor, DelayUntil):
        register(action)
