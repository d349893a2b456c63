"""Samora AI actions and searches: calls, and campaigns through their lifecycle.

Samora documents no idempotency key. What cannot be repeated goes through the host's ledger
(``ctx.once``): placing a call, creating a campaign, and each batch of recipients (its own
key, ``<step key>:batch<i>``), so a retried or replayed step never dials twice, never makes
a second campaign and never adds a batch twice. Reads need nothing; an update sends the
campaign's full settings with PUT, which is naturally idempotent; start, stop and cancel
treat a 409 for a campaign already in the wanted status as done.

Limits are checked before anything is sent, with an error naming what to fix: a campaign
name of at most 120 characters, ``page_size`` at most 100, ``retry_config`` exactly as
documented, ``call_variables`` of at most 4 KiB per phone number (compact UTF-8 JSON), and
no JSON body over 2 MiB. Add recipients takes any number of recipients and sends them in
batches of at most 5000 numbers and 2 MiB each. Its payload shape is undocumented; this
sends ``{"recipients": [{"phone_number": "+919876543210", "call_variables": {...}}]}``.
Samora has no API listing agents, so ``agent_id`` is a UUID to copy from its dashboard;
campaign fields offer the agent's campaigns from ``samora.find_campaigns``.
"""
from __future__ import annotations

import json
from urllib.parse import quote

from marshmallow import (Schema, ValidationError, fields, post_load, validate,
                         validates_schema)

from connector import Action, FatalAPIError, JSONBody, Search, UserError, hookimpl
from connector.fields import fast_e164
from connector.plugins.samora import E164_HELP, AgentId, SamoraPhone, normalize_e164

MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_RECIPIENTS = 5000
MAX_VARIABLES_BYTES = 4096
MAX_NAME = 120
MAX_PAGE_SIZE = 100
MAX_PAGES = 50  # a search reads at most 5000 campaigns
CAMPAIGN_STATUSES = ("DRAFT", "SCHEDULED", "IN_PROGRESS", "PAUSED", "FINISHED", "FAILED",
                     "CANCELLED")
RETRY_ON = ("UNANSWERED", "REJECTED", "VOICEMAIL", "FAILED")
RETRY_FIELDS = ("max_retries", "retry_delay_minutes", "retry_on")
LIST_KEYS = ("data", "campaigns", "calls", "items", "results")

AGENT_ID = "123e4567-e89b-12d3-a456-426614174000"
CAMPAIGN_ID = "5b0e2f7c-3d4a-4e8b-9c1d-7a6f5e4d3c2b"
CALL_ID = "c0a8012e-6f1b-4c9e-9f3a-2b7d1e5a9c44"
SAMPLE_CAMPAIGN = {
    "id": CAMPAIGN_ID, "campaign_id": CAMPAIGN_ID, "agent_id": AGENT_ID,
    "name": "January renewals", "status": "DRAFT",
    "retry_config": {"max_retries": 2, "retry_delay_minutes": 30,
                     "retry_on": ["UNANSWERED", "REJECTED", "VOICEMAIL"]},
    "created_at": "2026-01-15T10:30:00Z", "updated_at": "2026-01-15T10:30:00Z",
    "started_at": None, "finished_at": None, "cancelled_at": None,
    "stats": {"recipients": 0, "scheduled": 0, "in_progress": 0, "completed": 0,
              "failed": 0, "cancelled": 0},
}
SAMPLE_CAMPAIGN_CALL = {
    "id": "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a", "campaign_id": CAMPAIGN_ID,
    "phone_number": "+919876543210", "call_variables": {"first_name": "Asha"},
    "status": "CALL_FINISHED", "attempts": 1, "call_id": CALL_ID, "call_ids": [CALL_ID],
    "last_outcome": "CALL_FINISHED", "next_attempt_at": None,
    "created_at": "2026-01-15T10:31:00Z", "updated_at": "2026-01-15T10:33:00Z",
}


# Requests and answers

def body_size(body) -> int:
    """Return the bytes ``body`` takes as JSON, encoded the way the HTTP client sends it."""
    return len(json.dumps(body, allow_nan=False).encode())


def variables_size(variables: dict) -> int:
    """Return the size the 4 KiB call_variables limit counts: compact UTF-8 JSON."""
    return len(json.dumps(variables, separators=(",", ":"), ensure_ascii=False).encode())


def surely_fits(variables: dict) -> bool:
    """Return True when text-only ``variables`` fit in 4 KiB whatever their characters.

    A character takes at most 6 bytes in compact UTF-8 JSON (``\\u001f``), so this bounds
    the size without encoding; False means "measure it" (:func:`variables_size`).
    """
    bound = 2  # {}
    for key, value in variables.items():
        if type(key) is not str or type(value) is not str:
            return False
        bound += 6 * (len(key) + len(value)) + 6  # four quotes, a colon, a comma
    return bound <= MAX_VARIABLES_BYTES


def samora_number(phone) -> str:
    """Return ``phone`` as Samora's E.164 (:func:`normalize_e164`), or raise ValidationError.

    Text already in strict E.164 of 10-15 digits that phonenumbers would take unchanged
    (:func:`connector.fields.fast_e164`) is returned as it is, without parsing it again.
    """
    if type(phone) is str and 11 <= len(phone) <= 16 and fast_e164(phone):
        return phone
    return normalize_e164(phone)


def check_body(body, what: str):
    """Return ``body``, or raise UserError when its JSON would exceed Samora's 2 MiB."""
    size = body_size(body)
    if size > MAX_BODY_BYTES:
        raise UserError(f"{what}: the request body would be {size} bytes as JSON; Samora "
                        f"accepts at most {MAX_BODY_BYTES} bytes (2 MiB) per request")
    return body


def campaign_path(agent_id: str, campaign_id: str | None = None, tail: str = "") -> str:
    path = f"/v1/external/campaigns/{quote(str(agent_id), safe='')}"
    if campaign_id is not None:
        path += f"/{quote(str(campaign_id), safe='')}"
    return path + tail


def unwrap(result) -> dict:
    """Return the object an answer holds: itself, or its ``data`` object."""
    if not isinstance(result, dict):
        return {}
    data = result.get("data")
    return dict(data) if isinstance(data, dict) else dict(result)


def campaign_out(result) -> dict:
    """Return a campaign with both ``id`` and ``campaign_id`` set, for mapping."""
    out = unwrap(result)
    campaign_id = out.get("id") or out.get("campaign_id")
    if campaign_id is not None:
        out["id"] = out["campaign_id"] = campaign_id
    return out


def list_items(result) -> tuple[list, dict]:
    """Return (items, paging fields) from a list answer, bare or wrapped."""
    if isinstance(result, list):
        return result, {}
    if isinstance(result, dict):
        for key in LIST_KEYS:
            if isinstance(result.get(key), list):
                return result[key], result
    return [], {}


def page_out(result, page: int, page_size: int, name: str, each=dict) -> dict:
    items, meta = list_items(result)
    total = meta.get("total")
    has_more = meta.get("has_more")
    if has_more is None:
        has_more = (page * page_size < total if isinstance(total, int)
                    else len(items) >= page_size)
    return {name: [each(item) for item in items if isinstance(item, dict)],
            "page": meta.get("page", page), "page_size": meta.get("page_size", page_size),
            "total": total, "has_more": bool(has_more)}


# Fields

def agent_field() -> AgentId:
    return AgentId(required=True, metadata={
        "label": "Agent", "help": "The Samora AI agent's id (a UUID, from the Samora "
                                  "dashboard: Samora has no API listing agents)."})


def campaign_field() -> fields.String:
    return fields.String(required=True, validate=validate.Length(min=1), metadata={
        "label": "Campaign", "help": "The campaign's id; the list shows the agent's campaigns.",
        "choices_from": "samora.find_campaigns"})


def page_fields():
    return (fields.Integer(load_default=1, validate=validate.Range(min=1), metadata={
                "label": "Page", "help": "Which page of results, from 1."}),
            fields.Integer(load_default=20, validate=validate.Range(min=1, max=MAX_PAGE_SIZE),
                           metadata={"label": "Page size",
                                     "help": f"How many per page, 1 to {MAX_PAGE_SIZE}."}))


class RetryOn(fields.List):
    """Call outcomes to retry: a list, or a comma-separated text such as "UNANSWERED, VOICEMAIL"."""

    def __init__(self, **kwargs):
        super().__init__(fields.String(validate=validate.OneOf(RETRY_ON)),
                         validate=validate.Length(min=1, error="give at least one status"),
                         **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            value = [part for part in (p.strip() for p in value.split(",")) if part]
        if isinstance(value, (list, tuple)):
            value = [v.strip().upper() if isinstance(v, str) else v for v in value]
        return list(dict.fromkeys(super()._deserialize(value, attr, data, **kwargs)))


def retry_fields():
    """Return the documented retry_config as three fields, flattened for the builder."""
    return (
        fields.Integer(load_default=None, validate=validate.Range(min=1, max=5), metadata={
            "label": "Max retries", "help": "Retry a call up to this many times, 1-5."}),
        fields.Integer(load_default=None, validate=validate.Range(min=1, max=1440), metadata={
            "label": "Retry delay (minutes)",
            "help": "Wait this long before retrying, 1-1440 minutes."}),
        RetryOn(load_default=None, metadata={
            "label": "Retry on", "help": "Which outcomes to retry: UNANSWERED, REJECTED, "
                                         "VOICEMAIL and/or FAILED."}))


class WholeRetryConfig(Schema):
    """Refuse retry settings given in part: Samora needs all three together."""

    @validates_schema
    def whole_retry_config(self, data, **_):
        given = [name for name in RETRY_FIELDS if data.get(name) is not None]
        if given and len(given) < len(RETRY_FIELDS):
            raise ValidationError({
                name: ["retries need max_retries, retry_delay_minutes and retry_on together"]
                for name in RETRY_FIELDS if data.get(name) is None})


def retry_config(inputs: dict) -> dict | None:
    """Return the documented retry_config from the flattened inputs (None when not given)."""
    if inputs.get("max_retries") is None:
        return None
    return {name: inputs[name] for name in RETRY_FIELDS}


# Calls

class TriggerCallInputs(Schema):
    agent_id = agent_field()
    to_number = SamoraPhone(required=True, metadata={"label": "Phone number",
                                                     "help": E164_HELP})
    context = fields.Dict(keys=fields.String(), load_default=None, metadata={
        "label": "Call context", "help": "Per-call variables the agent can use."})


class TriggerCall(Action):
    """POST /v1/call/trigger with ``agent_id``, ``to_number`` and ``context``.

    Samora takes no idempotency key: the call goes through the host's ledger under the
    step's key, so a retried or replayed step never dials the same person twice.
    """

    key = "samora.trigger_call"
    app = "samora"
    label = "Trigger call"
    help = "Start an outbound call with one of your AI agents (POST /v1/call/trigger)."
    Inputs = TriggerCallInputs
    sample = {"call_id": CALL_ID, "status": "PENDING", "agent_id": AGENT_ID,
              "to_number": "+919876543210", "context": {"first_name": "Asha"},
              "created_at": "2026-01-15T10:30:00Z"}

    def run(self, ctx, inputs):
        body = {"agent_id": inputs["agent_id"], "to_number": inputs["to_number"]}
        if inputs.get("context"):
            body["context"] = inputs["context"]
        check_body(body, "trigger call")
        result = ctx.once(ctx.idempotency_key, body,
                          lambda: ctx.client.post("/v1/call/trigger", json=body))
        out = unwrap(result)
        out.setdefault("call_id", out.get("id"))
        return out


class GetCallInputs(Schema):
    call_id = fields.String(required=True, validate=validate.Length(min=1), metadata={
        "label": "Call id", "help": "The call_id a trigger call step or call event gave."})


class GetCall(Action):
    """GET /v1/call/{call_id}; a read, safe to repeat."""

    key = "samora.get_call"
    app = "samora"
    label = "Get call"
    help = ("Get a call's status and details, with transcript and recording links once it "
            "has finished (valid 60 minutes).")
    Inputs = GetCallInputs
    sample = {"call_id": CALL_ID, "agent_id": AGENT_ID, "campaign_id": None,
              "to_number": "+919876543210", "status": "CALL_FINISHED",
              "context": {"first_name": "Asha"}, "duration_seconds": 42,
              "created_at": "2026-01-15T10:30:00Z", "updated_at": "2026-01-15T10:31:00Z",
              "started_at": "2026-01-15T10:30:12Z", "ended_at": "2026-01-15T10:31:00Z",
              "transcript_url": "https://files.samora.ai/calls/c0a8012e/transcript.txt?...",
              "recording_url": "https://files.samora.ai/calls/c0a8012e/recording.wav?..."}

    def run(self, ctx, inputs):
        out = unwrap(ctx.client.get(f"/v1/call/{quote(inputs['call_id'], safe='')}"))
        out.setdefault("call_id", out.get("id") or inputs["call_id"])
        return out


# Campaigns

class CreateCampaignInputs(WholeRetryConfig):
    agent_id = agent_field()
    name = fields.String(required=True, validate=validate.Length(min=1, max=MAX_NAME),
                         metadata={"label": "Campaign name",
                                   "help": f"Up to {MAX_NAME} characters."})
    max_retries, retry_delay_minutes, retry_on = retry_fields()


class CreateCampaign(Action):
    """POST /v1/external/campaigns/{agent_id} with ``name`` and optional ``retry_config``.

    Creating twice would make two campaigns, so the create goes through the host's ledger
    under the step's key.
    """

    key = "samora.create_campaign"
    app = "samora"
    label = "Create campaign"
    help = "Create a draft outbound campaign for an agent, optionally retrying unanswered calls."
    Inputs = CreateCampaignInputs
    sample = SAMPLE_CAMPAIGN

    def run(self, ctx, inputs):
        body = {"name": inputs["name"]}
        if retry_config(inputs):
            body["retry_config"] = retry_config(inputs)
        path = campaign_path(inputs["agent_id"])
        check_body(body, "create campaign")
        return campaign_out(ctx.once(ctx.idempotency_key, {"path": path, "body": body},
                                     lambda: ctx.client.post(path, json=body)))


class ListCampaignsInputs(Schema):
    agent_id = agent_field()
    page, page_size = page_fields()


class ListCampaigns(Action):
    """GET /v1/external/campaigns/{agent_id}?page=&page_size= (at most 100); a read."""

    key = "samora.list_campaigns"
    app = "samora"
    label = "List campaigns"
    help = "List one page of an agent's campaigns (up to 100 per page)."
    Inputs = ListCampaignsInputs
    sample = {"campaigns": [SAMPLE_CAMPAIGN], "page": 1, "page_size": 20, "total": 1,
              "has_more": False}

    def run(self, ctx, inputs):
        result = ctx.client.get(campaign_path(inputs["agent_id"]),
                                params={"page": inputs["page"],
                                        "page_size": inputs["page_size"]})
        return page_out(result, inputs["page"], inputs["page_size"], "campaigns",
                        campaign_out)


class FindCampaignsInputs(Schema):
    agent_id = agent_field()
    status = fields.String(load_default=None, validate=validate.OneOf(CAMPAIGN_STATUSES),
                           metadata={"label": "Status",
                                     "help": "Only campaigns in this status."})
    name = fields.String(load_default=None, metadata={
        "label": "Name contains", "help": "Only campaigns whose name contains this text."})


class FindCampaigns(Search):
    """GET /v1/external/campaigns/{agent_id}, page after page of 100; a read.

    The document gives no filters, so status and name are matched here. It reads at most
    50 pages (5000 campaigns), newest first as the service orders them.
    """

    key = "samora.find_campaigns"
    app = "samora"
    label = "Find campaigns"
    help = "Find an agent's campaigns by status or name; also fills the campaign dropdowns."
    Inputs = FindCampaignsInputs
    sample = {"found": True, "count": 1, "first": SAMPLE_CAMPAIGN,
              "results": [SAMPLE_CAMPAIGN]}

    def search(self, ctx, inputs):
        found, seen = [], set()
        needle = (inputs.get("name") or "").casefold()
        for page in range(1, MAX_PAGES + 1):
            result = ctx.client.get(campaign_path(inputs["agent_id"]),
                                    params={"page": page, "page_size": MAX_PAGE_SIZE})
            listed = page_out(result, page, MAX_PAGE_SIZE, "campaigns", campaign_out)
            fresh = [c for c in listed["campaigns"] if c.get("id") not in seen]
            seen.update(c.get("id") for c in fresh)
            found += [c for c in fresh
                      if (not inputs.get("status") or c.get("status") == inputs["status"])
                      and needle in str(c.get("name") or "").casefold()]
            if not fresh or not listed["has_more"]:
                break  # no more pages (or a service that ignores ``page``)
        return found

    def option(self, record):
        name = record.get("name") or record.get("id")
        status = record.get("status")
        return {"value": record.get("id"), "label": f"{name} ({status})" if status else name}


class CampaignInputs(Schema):
    agent_id = agent_field()
    campaign_id = campaign_field()


class GetCampaign(Action):
    """GET /v1/external/campaigns/{agent_id}/{campaign_id}; a read."""

    key = "samora.get_campaign"
    app = "samora"
    label = "Get campaign"
    help = "Get a campaign's status, settings and call counts."
    Inputs = CampaignInputs
    sample = {**SAMPLE_CAMPAIGN, "status": "IN_PROGRESS",
              "started_at": "2026-01-15T11:00:00Z",
              "stats": {"recipients": 250, "scheduled": 180, "in_progress": 5,
                        "completed": 52, "failed": 13, "cancelled": 0}}

    def run(self, ctx, inputs):
        return campaign_out(ctx.client.get(campaign_path(inputs["agent_id"],
                                                         inputs["campaign_id"])))


class UpdateCampaignInputs(CampaignInputs, WholeRetryConfig):
    name = fields.String(load_default=None, validate=validate.Length(max=MAX_NAME),
                         metadata={"label": "New name",
                                   "help": f"Up to {MAX_NAME} characters; empty keeps it."})
    max_retries, retry_delay_minutes, retry_on = retry_fields()
    remove_retry_config = fields.Boolean(load_default=False, metadata={
        "label": "Stop retrying", "help": "Remove the campaign's retry settings."})

    @validates_schema
    def something_to_change(self, data, **_):
        retries = any(data.get(name) is not None for name in RETRY_FIELDS)
        if data.get("remove_retry_config") and retries:
            raise ValidationError("either remove the retry settings or give new ones, "
                                  "not both", "remove_retry_config")
        if not (data.get("name") or retries or data.get("remove_retry_config")):
            raise ValidationError("give a new name, new retry settings, or remove them",
                                  "name")


class UpdateCampaign(Action):
    """GET then PUT /v1/external/campaigns/{agent_id}/{campaign_id}.

    The document does not say whether PUT replaces or merges, so this reads the campaign
    and sends its full settings (``name``, ``retry_config``) with the changes applied.
    Sending the same settings again changes nothing: safe to repeat.
    """

    key = "samora.update_campaign"
    app = "samora"
    label = "Update campaign"
    help = "Rename a campaign or change its retry settings."
    Inputs = UpdateCampaignInputs
    sample = {**SAMPLE_CAMPAIGN, "name": "January renewals (second wave)",
              "updated_at": "2026-01-16T09:00:00Z"}

    def run(self, ctx, inputs):
        path = campaign_path(inputs["agent_id"], inputs["campaign_id"])
        current = campaign_out(ctx.client.get(path))
        settings = {"name": inputs.get("name") or current.get("name")}
        old = current.get("retry_config")
        settings["retry_config"] = (
            None if inputs["remove_retry_config"] else retry_config(inputs)
            or ({k: old[k] for k in RETRY_FIELDS if k in old} if isinstance(old, dict)
                else None))
        if settings["name"] is None:
            del settings["name"]
        check_body(settings, "update campaign")
        return campaign_out(ctx.client.put(path, json=settings))


class Recipients(fields.List):
    """Phone numbers, or {phone_number, call_variables} objects; text splits on , ; and lines."""

    def __init__(self, **kwargs):
        super().__init__(fields.Raw(), validate=validate.Length(
            min=1, error="give at least one phone number"), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            value = [p.strip() for p in value.replace(";", ",").replace("\n", ",").split(",")
                     if p.strip()]
        if type(value) is list and None not in value:
            return list(value)  # what Raw() would give; AddRecipientsInputs.clean checks each
        return super()._deserialize(value, attr, data, **kwargs)


class AddRecipientsInputs(CampaignInputs):
    """Every recipient is checked before anything is sent: one bad row sends nothing.

    Checking costs a few microseconds a number (the E.164 fast path, a size bound instead
    of encoding each call_variables), so 100,000 numbers are ready in well under a second.
    """

    recipients = Recipients(required=True, metadata={
        "label": "Recipients", "help": "Phone numbers (E.164), or objects with phone_number "
                                       "and call_variables; any number, sent 5000 at a time."})
    call_variables = fields.Dict(keys=fields.String(), load_default=None, metadata={
        "label": "Call variables for everyone", "help": "Variables every recipient gets; "
                                                        "a recipient's own ones win."})

    @post_load
    def clean(self, data, **_):
        shared = data.get("call_variables") or {}
        cleaned, seen, errors = [], set(), []
        for i, entry in enumerate(data["recipients"]):
            phone, own = entry, None
            if isinstance(entry, dict):
                phone = (entry.get("phone_number") or entry.get("phone")
                         or entry.get("to_number") or None)
                own = entry.get("call_variables") or None
                if own is not None and not isinstance(own, dict):
                    errors.append(f"recipients[{i}]: call_variables must be an object")
                    continue
            try:
                number = samora_number(phone)
            except ValidationError as err:
                errors.append(f"recipients[{i}]: {err.messages[0]}")
                continue
            variables = {**shared, **own} if own else shared
            if variables and not surely_fits(variables):
                size = variables_size(variables)
                if size > MAX_VARIABLES_BYTES:
                    errors.append(f"recipients[{i}]: call_variables for {number} are {size} "
                                  f"bytes as JSON; Samora allows at most {MAX_VARIABLES_BYTES} "
                                  "bytes (4 KiB) per phone number")
                    continue
            if number not in seen:
                seen.add(number)
                cleaned.append({"phone_number": number, "call_variables": variables}
                               if variables else {"phone_number": number})
        if errors:
            more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
            raise ValidationError("; ".join(errors[:5]) + more, "recipients")
        data["repeated"] = len(data["recipients"]) - len(cleaned)
        data["recipients"] = cleaned
        return data


def recipient_batches(recipients: list[dict]):
    """Yield (batch, body): runs of recipients whose request holds at most 5000 numbers and
    2 MiB, each with its request body encoded once (connector.JSONBody).

    Each batch is the longest run that fits, as adding one recipient at a time would make
    it. A run of 5000 is measured by its own encoding, which is then sent; only where that
    is too big are the recipients measured one by one, each once.
    """
    sizes: list[int | None] = [None] * len(recipients)  # a recipient's JSON, once measured
    empty = body_size({"recipients": []})
    start = 0
    while start < len(recipients):
        batch = recipients[start:start + MAX_RECIPIENTS]
        body = None if sizes[start] is not None else JSONBody({"recipients": batch})
        if body is None or len(body.data) > MAX_BODY_BYTES:  # as long as body_size says
            size = empty
            for n, recipient in enumerate(batch):
                if sizes[start + n] is None:
                    sizes[start + n] = body_size(recipient)
                extra = sizes[start + n] + (2 if n else 0)  # ", " between items
                if n and size + extra > MAX_BODY_BYTES:
                    batch = batch[:n]
                    break
                size += extra
            body = JSONBody({"recipients": batch})
        yield batch, body
        start += len(batch)


class AddRecipients(Action):
    """POST /v1/external/campaigns/{agent_id}/{campaign_id}/scheduled-calls, in batches.

    Sends ``{"recipients": [{"phone_number", "call_variables"}]}``, at most 5000 numbers
    and 2 MiB a request. Each batch goes through the host's ledger under its own key
    (``<step key>:batch<i>``): a retry after batch 2 failed sends batch 2 again, never
    batch 1. A number listed twice is sent once. Samora takes recipients only while the
    campaign is DRAFT or PAUSED.
    """

    key = "samora.add_campaign_recipients"
    app = "samora"
    label = "Add campaign recipients"
    help = "Add phone numbers, each with its own call variables, to a draft or paused campaign."
    Inputs = AddRecipientsInputs
    sample = {"campaign_id": CAMPAIGN_ID, "requested": 3, "sent": 3, "added": 2,
              "duplicates": 1, "batches": 1, "total_recipients": 2}

    def run(self, ctx, inputs):
        path = campaign_path(inputs["agent_id"], inputs["campaign_id"], "/scheduled-calls")
        added = duplicates = 0
        total = None
        batches = list(recipient_batches(inputs["recipients"]))
        done, count = 0, len(inputs["recipients"])
        for i, (batch, body) in enumerate(batches):  # body: hashed and sent, encoded once
            result = unwrap(ctx.once(f"{ctx.idempotency_key}:batch{i}",
                                     {"path": path, "body": body},
                                     lambda: ctx.client.post(path, json=body)))
            added += int(result.get("added", len(batch)) or 0)
            duplicates += int(result.get("duplicates", 0) or 0)
            total = result.get("total_recipients", total)
            done += len(batch)
            ctx.progress(done, count)
        return {"campaign_id": inputs["campaign_id"],
                "requested": len(inputs["recipients"]) + inputs["repeated"],
                "sent": len(inputs["recipients"]), "added": added,
                "duplicates": duplicates + inputs["repeated"], "batches": len(batches),
                "total_recipients": total}


class CampaignTransition(Action):
    """POST /v1/external/campaigns/{agent_id}/{campaign_id}/<verb>, without a body.

    A 409 for a campaign already in the wanted status counts as done (a retried call that
    had gone through), so repeating is harmless; any other 409 fails with Samora's message.
    """

    app = "samora"
    Inputs = CampaignInputs
    verb = ""
    target = ""

    def run(self, ctx, inputs):
        path = campaign_path(inputs["agent_id"], inputs["campaign_id"])
        try:
            result = ctx.client.post(f"{path}/{self.verb}", expect_json=False,
                                     idempotent=True)  # a repeat is the 409 handled below
        except FatalAPIError as exc:
            if exc.status != 409:
                raise
            current = campaign_out(ctx.client.get(path))
            if current.get("status") != self.target:
                raise
            return {**current, "changed": False}
        out = campaign_out(result)
        if not out.get("status"):  # an empty or bare answer: read the campaign
            out = campaign_out(ctx.client.get(path))
        return {**out, "changed": True}


class StartCampaign(CampaignTransition):
    __doc__ = CampaignTransition.__doc__.replace("<verb>", "start")
    key = "samora.start_campaign"
    label = "Start campaign"
    help = "Start calling a draft or paused campaign's recipients."
    verb, target = "start", "IN_PROGRESS"
    sample = {**SAMPLE_CAMPAIGN, "status": "IN_PROGRESS", "started_at": "2026-01-15T11:00:00Z",
              "changed": True}


class StopCampaign(CampaignTransition):
    __doc__ = CampaignTransition.__doc__.replace("<verb>", "stop")
    key = "samora.stop_campaign"
    label = "Stop campaign"
    help = "Pause a running campaign; start it again later to go on calling."
    verb, target = "stop", "PAUSED"
    sample = {**SAMPLE_CAMPAIGN, "status": "PAUSED", "started_at": "2026-01-15T11:00:00Z",
              "changed": True}


class CancelCampaign(CampaignTransition):
    __doc__ = CampaignTransition.__doc__.replace("<verb>", "cancel")
    key = "samora.cancel_campaign"
    label = "Cancel campaign"
    help = "Cancel a campaign for good; recipients not yet called are not called."
    verb, target = "cancel", "CANCELLED"
    sample = {**SAMPLE_CAMPAIGN, "status": "CANCELLED",
              "cancelled_at": "2026-01-15T12:00:00Z", "changed": True}


class ListCampaignCallsInputs(CampaignInputs):
    page, page_size = page_fields()


class ListCampaignCalls(Action):
    """GET /v1/external/campaigns/{agent_id}/{campaign_id}/calls?page=&page_size=; a read."""

    key = "samora.list_campaign_calls"
    app = "samora"
    label = "List campaign calls"
    help = "List one page of a campaign's calls: each recipient's status, attempts and call id."
    Inputs = ListCampaignCallsInputs
    sample = {"calls": [SAMPLE_CAMPAIGN_CALL], "page": 1, "page_size": 20, "total": 1,
              "has_more": False}

    def run(self, ctx, inputs):
        result = ctx.client.get(
            campaign_path(inputs["agent_id"], inputs["campaign_id"], "/calls"),
            params={"page": inputs["page"], "page_size": inputs["page_size"]})
        return page_out(result, inputs["page"], inputs["page_size"], "calls")


@hookimpl
def register_actions(register):
    for action in (TriggerCall, GetCall, CreateCampaign, ListCampaigns, GetCampaign,
                   UpdateCampaign, AddRecipients, StartCampaign, StopCampaign,
                   CancelCampaign, ListCampaignCalls):
        register(action)


@hookimpl
def register_searches(register):
    register(FindCampaigns)
