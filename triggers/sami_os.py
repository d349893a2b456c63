"""SAMI OS triggers: every one polls (the document gives SAMI OS no webhooks API).

Each trigger reads one list of the surface tabled in plugins/sami_os.py by a time field
and keeps the newest time it saw as its cursor:

- Without a cursor (the first poll, which the host records as seen without firing) it
  reads newest first (``sort=-<time>``) up to ``Pages per poll`` pages of 100 and takes
  the newest time as the cursor; an empty list starts the cursor at the epoch (everything
  that comes later is new).
- With a cursor it reads oldest first from the cursor minus a 60-second overlap
  (``sort=<time>&<time>_since=...``), page by page, up to ``Pages per poll`` pages that hold
  something new; what is left waits for the next poll, so a burst is delayed, never
  dropped. The overlap catches records a slow writer committed late. The cursor also keeps
  the dedupe keys of what it saw inside the overlap (the window): those are never handed
  out again, and pages holding nothing else do not count against the budget, so a burst
  larger than a page within one minute still moves forward poll by poll.
- Items are handed over oldest first, so runs follow the order things happened.

| trigger | list | time | dedupe key |
|---|---|---|---|
| new contact | GET /api/v1/contacts | created_at | contact id |
| new contact in smart list | GET /api/v1/smart-lists/{id}/contacts | added_to_list_at | list id + contact id + added_to_list_at (leaving and matching again fires again) |
| deal entered stage | GET /api/v1/deal-stage-changes | entered_at | deal id + stage id + entered_at |
| new appointment | GET /api/v1/appointments | created_at | appointment id |
| new inbound SMS | GET /api/v1/sms?direction=inbound | created_at | message id |
| call completed | GET /api/v1/calls?status=completed | completed_at | call id |
"""
from __future__ import annotations

import datetime as dt
from urllib.parse import quote

from marshmallow import fields, validate

from connector import PollTrigger, hookimpl
from connector.actions.sami_os import (APPOINTMENT_SAMPLE, CONTACT_SAMPLE, DEAL_SAMPLE,
                                       DIRECTIONS, Inputs, opt, req)
from connector.plugins.sami_os import data_of

API = "/api/v1"
PAGE = 100
OVERLAP = dt.timedelta(seconds=60)
EPOCH = "1970-01-01T00:01:00.000000Z"  # minus the overlap stays after year 1


def parse(stamp: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(str(stamp).strip().replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def fmt(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pages_input():
    return fields.Integer(load_default=10, validate=validate.Range(min=1, max=100), metadata={
        "label": "Pages per poll", "help": "At most this many pages of 100 per poll; the rest "
                                           "waits for the next poll."})


class FeedTrigger(PollTrigger):
    """Poll one list by a time field; subclasses say which list, field and filters."""

    app = "sami_os"
    default_interval = 60
    time_field = "created_at"
    since_param = "created_since"

    def path(self, ctx) -> str:
        raise NotImplementedError

    def params(self, ctx) -> dict:
        return {}

    def keep(self, ctx, record: dict) -> bool:
        return True

    def item(self, record: dict) -> dict:
        return record

    def poll(self, ctx):
        path, params = self.path(ctx), self.params(ctx)
        cursor = ctx.state.get("since")
        window: dict[str, str] = dict(ctx.state.get("window") or {})
        if cursor:
            query = {**params, "sort": self.time_field,
                     self.since_param: fmt(parse(cursor) - OVERLAP)}
        else:
            query = {**params, "sort": f"-{self.time_field}"}
        pages = ctx.inputs.get("max_pages") or 10
        allowance = pages * PAGE  # new records per poll; known ones page by for free
        records, number = [], 0
        while len(records) < allowance and number < pages + len(window) // PAGE + 2:
            number += 1
            answer = ctx.client.get(path, params={**query, "page": number, "limit": PAGE},
                                    retries=2)
            batch = data_of(answer) or []
            records.extend(r for r in batch if self._key(r) not in window)
            more = (answer.get("pagination") or {}).get("has_more") \
                if isinstance(answer, dict) else None
            if len(batch) < PAGE or more is False:
                break
        if cursor:  # oldest first: keep the allowance, the rest waits for the next poll
            records = records[:allowance]
        stamps = [parse(r[self.time_field]) for r in records if r.get(self.time_field)]
        if stamps:
            ctx.state["since"] = fmt(max(stamps + ([parse(cursor)] if cursor else [])))
        elif not cursor:
            ctx.state["since"] = EPOCH  # the list was empty: everything that comes is new
        ctx.state["window"] = self._window(window, records, ctx.state["since"])
        records.sort(key=lambda r: str(r.get(self.time_field) or ""))  # oldest fires first
        return [self.item(r) for r in records if self.keep(ctx, r)]

    def _key(self, record: dict) -> str:
        return self.dedupe_key(self.item(record))

    def _window(self, window: dict, records: list[dict], since: str) -> dict[str, str]:
        """Keep the keys seen within OVERLAP of the cursor (at most WINDOW_CAP, newest)."""
        edge = parse(since) - OVERLAP
        kept = dict(window)
        for record in records:
            if record.get(self.time_field):
                kept[self._key(record)] = fmt(parse(record[self.time_field]))
        kept = {key: at for key, at in kept.items() if parse(at) >= edge}
        if len(kept) > WINDOW_CAP:
            kept = dict(sorted(kept.items(), key=lambda pair: pair[1])[-WINDOW_CAP:])
        return kept


WINDOW_CAP = 5000


class NewContactInputs(Inputs):
    lead_source_id = opt(label="Only from lead source",
                         help="Fire only for contacts from this lead source.",
                         source="list_lead_sources")
    tag = opt(label="Only with tag", help="Tagged so when created.", source="list_tags")
    max_pages = pages_input()


class NewContact(FeedTrigger):
    """Polls GET /api/v1/contacts by created_at; the dedupe key is the contact id."""

    key = "sami_os.new_contact"
    label = "New contact"
    help = "Fires once for each contact created after the flow is switched on."
    Inputs = NewContactInputs
    sample = CONTACT_SAMPLE

    def path(self, ctx):
        return f"{API}/contacts"

    def params(self, ctx):
        return {k: ctx.inputs[k] for k in ("lead_source_id", "tag") if ctx.inputs.get(k)}


class SmartListInputs(Inputs):
    smart_list_id = req(label="Smart list", source="list_smart_lists")
    max_pages = pages_input()


class NewSmartListContact(FeedTrigger):
    """Polls GET /api/v1/smart-lists/{id}/contacts by added_to_list_at; the dedupe key is
    list id + contact id + added_to_list_at, so a contact that leaves the list and matches
    again fires again."""

    key = "sami_os.new_smart_list_contact"
    label = "New contact in smart list"
    help = "Fires when a contact starts matching a smart list (new, or updated to match)."
    Inputs = SmartListInputs
    sample = {**CONTACT_SAMPLE, "smart_list_id": "sl_hot_buyers",
              "added_to_list_at": "2026-03-04T09:12:00.000000Z"}
    time_field, since_param = "added_to_list_at", "added_since"

    def path(self, ctx):
        return f"{API}/smart-lists/{quote(ctx.inputs['smart_list_id'], safe='')}/contacts"

    def dedupe_key(self, item):
        return f"{item['smart_list_id']}:{item['id']}:{item['added_to_list_at']}"


class DealStageInputs(Inputs):
    pipeline_id = req(label="Pipeline", help="The pipeline to watch.", source="list_pipelines")
    stage_id = opt(label="Stage", help="Empty: any stage of the pipeline.",
                   source="list_stages")
    max_pages = pages_input()


class DealEnteredStage(FeedTrigger):
    """Polls GET /api/v1/deal-stage-changes by entered_at (a deal created in a stage enters
    it too); the dedupe key is deal id + stage id + entered_at, so a deal that comes back to
    a stage fires again. The item is the deal as it is now, with the entry's stage_id,
    stage_name, from_stage_id, entered_at and moved_by (current_stage_id says where the deal
    is now)."""

    key = "sami_os.deal_entered_stage"
    label = "Deal entered stage"
    help = "Fires when a deal is moved into (or created in) a pipeline stage."
    Inputs = DealStageInputs
    sample = {**DEAL_SAMPLE, "deal_id": DEAL_SAMPLE["id"], "change_id": "dsc_5a6b7c8d9e0f",
              "from_stage_id": "stg_buyers_showing", "from_stage_name": "Showing",
              "entered_at": "2026-03-10T18:20:00.000000Z", "moved_by": "usr_jordan",
              "current_stage_id": "stg_buyers_offer", "current_stage_name": "Offer made"}
    time_field, since_param = "entered_at", "entered_since"

    def path(self, ctx):
        return f"{API}/deal-stage-changes"

    def params(self, ctx):
        return {k: ctx.inputs[k] for k in ("pipeline_id", "stage_id") if ctx.inputs.get(k)}

    def item(self, record):
        deal = record.get("deal") or {}
        return {**deal, "id": record["deal_id"], "deal_id": record["deal_id"],
                "change_id": record.get("id"), "pipeline_id": record.get("pipeline_id"),
                "stage_id": record["stage_id"], "stage_name": record.get("stage_name"),
                "from_stage_id": record.get("from_stage_id"),
                "from_stage_name": record.get("from_stage_name"),
                "entered_at": record["entered_at"], "moved_by": record.get("moved_by"),
                "current_stage_id": deal.get("stage_id"),
                "current_stage_name": deal.get("stage_name")}

    def dedupe_key(self, item):
        return f"{item['deal_id']}:{item['stage_id']}:{item['entered_at']}"


class NewAppointmentInputs(Inputs):
    assigned_to = opt(label="Only for agent", help="Fire only for this team member's appointments.",
                      source="list_team_members")
    max_pages = pages_input()


class NewAppointment(FeedTrigger):
    """Polls GET /api/v1/appointments by created_at; the dedupe key is the appointment id."""

    key = "sami_os.new_appointment"
    label = "New appointment"
    help = "Fires once for each appointment booked after the flow is switched on."
    Inputs = NewAppointmentInputs
    sample = APPOINTMENT_SAMPLE

    def path(self, ctx):
        return f"{API}/appointments"

    def params(self, ctx):
        return {"assigned_to": ctx.inputs["assigned_to"]} if ctx.inputs.get("assigned_to") else {}


class PagesOnly(Inputs):
    max_pages = pages_input()


class NewInboundSms(FeedTrigger):
    """Polls GET /api/v1/sms?direction=inbound by created_at; the dedupe key is the message
    id."""

    key = "sami_os.new_inbound_sms"
    label = "New inbound SMS"
    help = "Fires for each text message a contact (or anyone) sends to your SAMI OS number."
    Inputs = PagesOnly
    sample = {"id": "sms_1a2b3c4d5e6f", "direction": "inbound", "from": "+15125550114",
              "to": "+15125550100", "body": "Thanks! Are you free Saturday?",
              "status": "received", "contact_id": "con_3b4c5d6e7f80", "user_id": None,
              "created_at": "2026-03-12T14:03:00.000000Z"}

    def path(self, ctx):
        return f"{API}/sms"

    def params(self, ctx):
        return {"direction": "inbound"}


class CallCompletedInputs(Inputs):
    direction = opt(label="Direction", help="Empty: both.", validate=validate.OneOf(DIRECTIONS))
    source = fields.String(load_default="any", validate=validate.OneOf(["any", "dialer",
                                                                        "logged"]),
                           metadata={"label": "Calls",
                                     "help": "dialer: calls made in SAMI OS; logged: calls "
                                             "recorded through the API; any: both."})
    max_pages = pages_input()


class CallCompleted(FeedTrigger):
    """Polls GET /api/v1/calls?status=completed by completed_at; the dedupe key is the call
    id (a call completes once)."""

    key = "sami_os.call_completed"
    label = "Call completed"
    help = "Fires when a call with a contact ends (dialer calls, and calls logged by API)."
    Inputs = CallCompletedInputs
    sample = {"id": "call_0f1e2d3c4b5a", "direction": "inbound", "phone": "+15125550113",
              "contact_id": "con_2c3d4e5f6a7b", "user_id": "usr_sam", "status": "completed",
              "outcome": "connected", "duration_seconds": 184, "notes": None,
              "source": "dialer", "started_at": "2026-03-09T15:00:00.000000Z",
              "completed_at": "2026-03-09T15:03:04.000000Z",
              "created_at": "2026-03-09T15:00:00.000000Z"}
    time_field, since_param = "completed_at", "completed_since"

    def path(self, ctx):
        return f"{API}/calls"

    def params(self, ctx):
        params = {"status": "completed"}
        if ctx.inputs.get("direction"):
            params["direction"] = ctx.inputs["direction"]
        return params

    def keep(self, ctx, record):
        source = ctx.inputs.get("source") or "any"
        return source == "any" or record.get("source") == source


TRIGGERS = (NewContact, NewSmartListContact, DealEnteredStage, NewAppointment, NewInboundSms,
            CallCompleted)


@hookimpl
def register_triggers(register):
    for cls in TRIGGERS:
        register(cls)
