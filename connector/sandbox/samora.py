"""Samora AI emulator (seed 001): calls, campaigns with their lifecycle, signed call webhooks.

Auth is the ``X-API-Key`` header. Errors are ``{"error": {"code", "message", "details"?}}``.
Decisions where the document is vague, kept in step with the app's docstring
(connector/plugins/samora.py):

- Validation errors are 400 VALIDATION_ERROR naming the field in ``details.field``
  (INVALID_PHONE_NUMBER for a phone: ``+`` then 10-15 digits); an ``agent_id`` that is not a
  UUID is 400, an unknown one 404 AGENT_NOT_FOUND. Unknown body fields are ignored.
- Agents: the document has no endpoint listing agents; the seed has one
  (123e4567-e89b-12d3-a456-426614174000) and POST /_sandbox/samora/agents adds more.
- A call moves PENDING -> TRIGGERED -> ONGOING (CALL_STARTED) -> CALL_FINISHED, one step
  every ``call_delay`` seconds. The number decides the outcome: ending in 0000 UNANSWERED,
  9999 REJECTED, 8888 VOICEMAIL, 7777 FAILED (the last two are not in the document's call
  status list but ``retry_on`` names them, so calls end with them), 1000 UNANSWERED on the
  first attempt only; each of those delivers CALL_FAILED without a CALL_STARTED.
- GET /v1/call/{call_id} adds ``transcript_url`` and ``recording_url`` for a CALL_FINISHED
  call: presigned sandbox URLs (``expires`` + ``signature``) valid 60 minutes, freshly signed
  on each read. Calls placed by a campaign carry its ``campaign_id`` (null otherwise).
- Campaigns: ``{"id", "agent_id", "name", "status", "retry_config", "created_at",
  "updated_at", "started_at", "finished_at", "cancelled_at", "stats"}``. Create (201) takes
  ``name`` (1-120 characters) and optional ``retry_config``; PUT changes only the fields it
  is given (``"retry_config": null`` removes retries) and is refused (409) once the
  campaign is FINISHED, FAILED or CANCELLED. ``retry_config`` is checked exactly as
  documented: all three keys, ``max_retries`` an integer 1-5, ``retry_delay_minutes`` an
  integer 1-1440, ``retry_on`` a non-empty list of UNANSWERED, REJECTED, VOICEMAIL, FAILED.
- Lists (campaigns, campaign calls) take ``page`` (from 1) and ``page_size`` (1-100,
  default 20) and answer ``{"data", "page", "page_size", "total", "has_more"}``; campaigns
  newest first, calls in the order their recipients were added.
- Recipients (shape undocumented): POST .../scheduled-calls takes ``{"recipients":
  [{"phone_number", "call_variables"?}]}``, 1-5000 entries; ``call_variables`` is an object
  of at most 4096 bytes as compact UTF-8 JSON (the error names the number). A number
  already in the campaign, or twice in the request, is skipped and counted. 201 answers
  ``{"campaign_id", "added", "duplicates", "total_recipients"}``. A recipient ("scheduled
  call") is SCHEDULED until dialled, then mirrors its live call (PENDING, TRIGGERED,
  ONGOING) and ends CALL_FINISHED, UNANSWERED, REJECTED, VOICEMAIL, FAILED, or CANCELLED
  when the campaign ends before it was dialled. The call's ``context`` is its
  ``call_variables``.
- Lifecycle, as documented, each refusal a 409 INVALID_CAMPAIGN_STATUS naming the current
  status and what it allows (``details.status``, ``details.allowed``): recipients only in
  DRAFT or PAUSED, start only from DRAFT or PAUSED (409 NO_RECIPIENTS for an empty
  campaign), stop (-> PAUSED) only from IN_PROGRESS, cancel unless FINISHED, FAILED or
  CANCELLED. A started campaign dials its SCHEDULED recipients in order, at most
  ``campaign_concurrency`` (5) at once, and is FINISHED when none is left or in flight.
  Stopping lets live calls end but dials no more; cancelling also marks undialled
  recipients CANCELLED. SCHEDULED (a timed start) and FAILED (a platform fault) are never
  reached by themselves: POST /_sandbox/samora/campaigns/{id}/status sets them.
- Retries: a call ending with a status in ``retry_on`` is dialled again after
  ``retry_delay_minutes`` (one sandbox minute lasts ``minute_seconds``, ``call_delay`` by
  default), up to ``max_retries`` more times, unless the campaign was cancelled or failed.
  Each attempt is a new call_id; the recipient keeps ``attempts``, ``call_ids``,
  ``last_outcome`` and ``next_attempt_at``.
- Webhooks: PUT /v2/webhooks/{id} updates only the fields it is given; payloads are
  ``{"event", "call_id", "timestamp", "webhook_id", "data": call}``, signed the Standard
  Webhooks way (the document shows a ``whsec_``-style secret and no scheme). CALL_FINISHED
  always carries ``transcript_url``; ``data_options.include_transcript`` adds the text and
  ``include_recording_url`` the ``recording_url``.
"""
from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
import secrets
import threading
import time
import uuid
import wave
from collections import deque
from datetime import datetime, timedelta, timezone
from urllib.parse import urlparse

from flask import Flask, Response, request

from connector.signatures import new_secret

from .common import (E164, ApiError, RateLimiter, create_service_app, json_body, now_iso,
                     raw_body, require_str)
from .delivery import Deliverer, Scheduler

DEFAULT_KEY = "sam_test_key"
DEMO_AGENT_ID = "123e4567-e89b-12d3-a456-426614174000"
URL_TTL_SECONDS = 3600
EVENTS = {
    "CALL_STARTED": "Triggered when a call begins.",
    "CALL_FINISHED": "Triggered when a call ends (transcript and recording available).",
    "CALL_FAILED": "Triggered when a call fails, is rejected, or goes unanswered.",
}
FINAL = {"CALL_FINISHED", "UNANSWERED", "REJECTED", "VOICEMAIL", "FAILED"}
LIVE = ("PENDING", "TRIGGERED", "ONGOING")
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                     r"[0-9a-fA-F]{12}$")
FILES = {"transcript.txt": "text/plain; charset=utf-8", "recording.wav": "audio/wav"}

CAMPAIGN_STATUSES = ("DRAFT", "SCHEDULED", "IN_PROGRESS", "PAUSED", "FINISHED", "FAILED",
                     "CANCELLED")
OVER = ("FINISHED", "FAILED", "CANCELLED")
RETRY_ON = ("UNANSWERED", "REJECTED", "VOICEMAIL", "FAILED")
MAX_NAME = 120
MAX_PAGE_SIZE = 100
MAX_RECIPIENTS = 5000
MAX_VARIABLES_BYTES = 4096
# operation -> (the statuses it may start from, the documented rule in words)
RULES = {
    "add_recipients": (("DRAFT", "PAUSED"),
                       "recipients can be added only when a campaign is DRAFT or PAUSED"),
    "start": (("DRAFT", "PAUSED"), "a campaign starts only from DRAFT or PAUSED"),
    "stop": (("IN_PROGRESS",), "a campaign stops only from IN_PROGRESS"),
    "cancel": (("DRAFT", "SCHEDULED", "IN_PROGRESS", "PAUSED"),
               "a FINISHED, FAILED or CANCELLED campaign cannot be cancelled"),
    "update": (("DRAFT", "SCHEDULED", "IN_PROGRESS", "PAUSED"),
               "a FINISHED, FAILED or CANCELLED campaign cannot be changed"),
}


def _outcome(to_number: str, attempt: int = 1) -> str:
    if to_number.endswith("0000") or (to_number.endswith("1000") and attempt == 1):
        return "UNANSWERED"
    if to_number.endswith("9999"):
        return "REJECTED"
    if to_number.endswith("8888"):
        return "VOICEMAIL"
    if to_number.endswith("7777"):
        return "FAILED"
    return "CALL_FINISHED"


def _transcript(call: dict) -> str:
    lines = ["Agent: Hello, this is the Samora AI assistant calling."]
    for key, value in sorted((call.get("context") or {}).items()):
        lines.append(f"Agent: I have {key} noted as {value}.")
    lines += ["Customer: Thanks, that sounds right.", "Agent: Great, goodbye!"]
    return "\n".join(lines) + "\n"


def _recording() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(1)
        out.setframerate(8000)
        out.writeframes(b"\x80" * 8000)
    return buffer.getvalue()


def _bad(field: str, message: str, code: str = "VALIDATION_ERROR", **details) -> ApiError:
    return ApiError(400, code, message, {"field": field, **details})


def _int(value, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad(field, f"Field {field} must be an integer from {low} to {high}.")
    return value


def variables_size(variables: dict) -> int:
    """Return the size the 4 KiB limit counts: compact JSON, UTF-8 bytes."""
    return len(json.dumps(variables, separators=(",", ":"), ensure_ascii=False).encode())


def check_retry_config(value) -> dict | None:
    """Return a cleaned retry_config (None for null), or raise the documented 400."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad("retry_config", "Field retry_config must be an object with max_retries, "
                                   "retry_delay_minutes and retry_on.")
    for name in ("max_retries", "retry_delay_minutes", "retry_on"):
        if name not in value:
            raise _bad(f"retry_config.{name}", f"Field retry_config.{name} is required.")
    retry_on = value["retry_on"]
    if (not isinstance(retry_on, list) or not retry_on
            or not all(isinstance(s, str) and s in RETRY_ON for s in retry_on)):
        raise _bad("retry_config.retry_on", "Field retry_config.retry_on must include at "
                   f"least one of {', '.join(RETRY_ON)}, and nothing else.")
    return {"max_retries": _int(value["max_retries"], "retry_config.max_retries", 1, 5),
            "retry_delay_minutes": _int(value["retry_delay_minutes"],
                                        "retry_config.retry_delay_minutes", 1, 1440),
            "retry_on": list(dict.fromkeys(retry_on))}


def _check_name(body: dict) -> str:
    name = require_str(body, "name")
    if not name.strip():
        raise _bad("name", "Field name must not be blank.")
    if len(name) > MAX_NAME:
        raise _bad("name", f"Field name must be at most {MAX_NAME} characters; "
                           f"got {len(name)}.")
    return name


def _page_args() -> tuple[int, int]:
    values = {}
    for name, default, high in (("page", 1, 10 ** 9), ("page_size", 20, MAX_PAGE_SIZE)):
        raw = request.args.get(name)
        try:
            number = default if raw in (None, "") else int(raw)
        except ValueError:
            number = 0
        if not 1 <= number <= high:
            limit = f"from 1 to {high}" if name == "page_size" else "1 or more"
            raise _bad(name, f"Query parameter {name} must be an integer {limit}.")
        values[name] = number
    return values["page"], values["page_size"]


def _page(items: list, page: int, page_size: int) -> dict:
    start = (page - 1) * page_size
    return {"data": items[start:start + page_size], "page": page, "page_size": page_size,
            "total": len(items), "has_more": start + page_size < len(items)}


def _status_conflict(campaign: dict, operation: str, verb: str) -> ApiError:
    status = campaign["status"]
    allowed = [op for op, (sources, _) in RULES.items() if status in sources]
    rule = RULES[operation][1]
    can = ", ".join(op.replace("_", " ") for op in allowed) or "nothing (it is over)"
    return ApiError(409, "INVALID_CAMPAIGN_STATUS",
                    f"Cannot {verb} campaign {campaign['id']}: it is {status}, and {rule}. "
                    f"A {status} campaign allows: {can}.",
                    {"status": status, "allowed": allowed})


class Samora:
    """State and routes of Samora AI; every access holds ``lock``."""

    def __init__(self, lock: threading.RLock, limiter: RateLimiter, scheduler: Scheduler,
                 deliverer: Deliverer, call_delay: float = 0.3):
        self.lock = lock
        self.limiter = limiter
        self.scheduler = scheduler
        self.deliverer = deliverer
        self.call_delay = call_delay
        #: how long one retry_delay_minutes minute lasts here, in seconds
        self.minute_seconds = call_delay
        #: how many calls one campaign has in flight at most
        self.campaign_concurrency = 5
        self._url_key = secrets.token_bytes(32)
        self.keys: set[str] = set()
        self.agents: dict[str, dict] = {}
        self.calls: dict[str, dict] = {}
        self.webhooks: dict[str, dict] = {}
        self.campaigns: dict[str, dict] = {}
        self.recipients: dict[str, dict] = {}
        self._pending: dict[str, tuple | None] = {}
        self._order: dict[str, list[str]] = {}     # campaign id -> recipient ids, as added
        self._phones: dict[str, set[str]] = {}     # campaign id -> numbers it holds
        self._queue: dict[str, deque] = {}         # campaign id -> recipients ready to dial
        self._live: dict[str, set[str]] = {}       # campaign id -> recipients being called
        self._timers: dict[str, tuple] = {}        # recipient id -> (campaign id, handle)
        self._base: dict[str, str] = {}            # campaign id -> URL root for file links

    def reset(self, seed: bool = True) -> None:
        """Forget everything; with ``seed``, add the demo key and agent."""
        with self.lock:
            self.keys = {DEFAULT_KEY}
            self.calls, self.webhooks, self.agents, self._pending = {}, {}, {}, {}
            self.campaigns, self.recipients = {}, {}
            self._order, self._phones, self._queue, self._live = {}, {}, {}, {}
            self._timers, self._base = {}, {}
            self.minute_seconds = self.call_delay
            self.campaign_concurrency = 5
            if seed:
                self.agents[DEMO_AGENT_ID] = {"id": DEMO_AGENT_ID, "name": "Demo agent"}

    def add_agent(self, name: str = "Agent", agent_id: str | None = None) -> str:
        """Register an agent that calls and campaigns may use; return its id."""
        agent_id = (agent_id or str(uuid.uuid4())).lower()
        if not UUID_RE.match(agent_id):
            raise _bad("id", "Field id must be a UUID.")
        with self.lock:
            self.agents[agent_id] = {"id": agent_id, "name": name}
        return agent_id

    def _agent(self, agent_id: str) -> str:
        if not UUID_RE.match(agent_id or ""):
            raise _bad("agent_id", "Field agent_id must be a UUID.")
        if agent_id.lower() not in self.agents:
            raise ApiError(404, "AGENT_NOT_FOUND", f"Agent {agent_id} does not exist.",
                           {"field": "agent_id"})
        return agent_id.lower()

    # Calls

    def trigger_call(self, agent_id: str, to_number: str, context: dict | None = None,
                     base_url: str = "") -> dict:
        """Create a PENDING call and start its progress; return the trigger response."""
        with self.lock:
            call = self._new_call(self._agent(agent_id), to_number, context, base_url)
            return {k: call[k] for k in ("call_id", "status", "agent_id", "to_number",
                                         "context", "created_at")}

    def _new_call(self, agent_id: str, to_number: str, context: dict | None, base_url: str,
                  campaign_id: str | None = None, recipient_id: str | None = None,
                  attempt: int = 1) -> dict:
        stamp = now_iso()
        call = {
            "call_id": str(uuid.uuid4()), "agent_id": agent_id, "campaign_id": campaign_id,
            "to_number": to_number, "status": "PENDING", "context": dict(context or {}),
            "created_at": stamp, "updated_at": stamp, "started_at": None,
            "ended_at": None, "duration_seconds": None,
            "_base_url": base_url, "_recipient": recipient_id, "_attempt": attempt,
        }
        self.calls[call["call_id"]] = call
        self._later(call["call_id"], "PENDING")
        return call

    def _later(self, call_id: str, expected: str) -> None:
        self._pending[call_id] = self.scheduler.schedule(
            self.call_delay, lambda: self._advance(call_id, expected))

    def _advance(self, call_id: str, expected: str) -> None:
        with self.lock:
            call = self.calls.get(call_id)
            if call is None or call["status"] != expected:
                return  # finished by hand, or the sandbox was reset
            self._pending.pop(call_id, None)
            outcome = _outcome(call["to_number"], call["_attempt"])
            if expected == "PENDING":
                self._set(call, "TRIGGERED")
                self._later(call_id, "TRIGGERED")
            elif expected == "TRIGGERED" and outcome != "CALL_FINISHED":
                self._end(call, outcome)
            elif expected == "TRIGGERED":
                self._start(call)
                self._later(call_id, "ONGOING")
            elif expected == "ONGOING":
                self._end(call, "CALL_FINISHED")

    def _set(self, call: dict, status: str) -> None:
        call["status"] = status
        call["updated_at"] = now_iso()
        recipient = self.recipients.get(call["_recipient"] or "")
        if recipient is not None and status not in FINAL:
            recipient.update(status=status, updated_at=call["updated_at"])

    def _start(self, call: dict) -> None:
        self._set(call, "ONGOING")
        call["started_at"] = call["updated_at"]
        self._emit("CALL_STARTED", call)

    def _end(self, call: dict, status: str) -> None:
        self._set(call, status)
        call["ended_at"] = call["updated_at"]
        if status == "CALL_FINISHED":
            call["duration_seconds"] = 30 + sum(map(int, call["to_number"][1:])) % 90
            self._emit("CALL_FINISHED", call)
        else:
            call["duration_seconds"] = 0
            self._emit("CALL_FAILED", call)
        if call["_recipient"]:
            self._recipient_ended(call)

    def finish_call(self, call_id: str, status: str = "CALL_FINISHED") -> dict:
        """End a call now with ``status`` (delivering its events); return its details."""
        if status not in FINAL:
            raise ApiError(400, "VALIDATION_ERROR",
                           f"Field status must be one of {', '.join(sorted(FINAL))}.",
                           {"field": "status"})
        with self.lock:
            call = self._call(call_id)
            if call["status"] in FINAL:
                raise ApiError(409, "CALL_ALREADY_ENDED",
                               f"Call {call_id} already ended with status {call['status']}.")
            # Its scheduled step must not keep wait_idle() waiting for nothing.
            self.scheduler.cancel(self._pending.pop(call_id, None))
            if status == "CALL_FINISHED" and call["status"] != "ONGOING":
                self._start(call)
            self._end(call, status)
            return self.call_details(call_id)

    def _call(self, call_id: str) -> dict:
        call = self.calls.get(call_id)
        if call is None:
            raise ApiError(404, "CALL_NOT_FOUND", f"Call {call_id} does not exist.",
                           {"field": "call_id"})
        return call

    def _file_url(self, call: dict, name: str) -> str:
        expires = int(time.time()) + URL_TTL_SECONDS
        sig = self._file_signature(call["call_id"], name, expires)
        path = f"/_files/{call['call_id']}/{name}"
        return f"{call['_base_url']}{path}?expires={expires}&signature={sig}"

    def _file_signature(self, call_id: str, name: str, expires: int) -> str:
        message = f"{call_id}/{name}:{expires}".encode()
        return hmac.new(self._url_key, message, hashlib.sha256).hexdigest()

    def call_details(self, call_id: str) -> dict:
        """Return what GET /v1/call/{call_id} answers."""
        with self.lock:
            call = self._call(call_id)
            details = {k: v for k, v in call.items() if not k.startswith("_")}
            details["context"] = dict(call["context"])
            if call["status"] == "CALL_FINISHED":
                details["transcript_url"] = self._file_url(call, "transcript.txt")
                details["recording_url"] = self._file_url(call, "recording.wav")
            return details

    def _emit(self, event: str, call: dict) -> None:
        data = {k: call[k] for k in ("call_id", "agent_id", "campaign_id", "to_number",
                                     "status", "duration_seconds", "created_at",
                                     "started_at", "ended_at")}
        data["context"] = dict(call["context"])
        for hook in self.webhooks.values():
            if event not in hook["events"]:
                continue
            item = dict(data)
            if event == "CALL_FINISHED":
                item["transcript_url"] = self._file_url(call, "transcript.txt")
                if hook["data_options"]["include_transcript"]:
                    item["transcript"] = _transcript(call)
                if hook["data_options"]["include_recording_url"]:
                    item["recording_url"] = self._file_url(call, "recording.wav")
            payload = {"event": event, "call_id": call["call_id"], "timestamp": now_iso(),
                       "webhook_id": hook["id"], "data": item}
            self.deliverer.send(hook["url"], hook["secret"], event, payload,
                                source=f"samora:{hook['id']}")

    # Campaigns

    def create_campaign(self, agent_id: str, body: dict, base_url: str = "") -> dict:
        """Create a DRAFT campaign from a request body; return it."""
        name = _check_name(body)
        retry_config = check_retry_config(body.get("retry_config"))
        with self.lock:
            agent_id = self._agent(agent_id)
            stamp = now_iso()
            campaign = {"id": str(uuid.uuid4()), "agent_id": agent_id, "name": name,
                        "status": "DRAFT", "retry_config": retry_config,
                        "created_at": stamp, "updated_at": stamp, "started_at": None,
                        "finished_at": None, "cancelled_at": None}
            cid = campaign["id"]
            self.campaigns[cid] = campaign
            self._order[cid], self._phones[cid] = [], set()
            self._queue[cid], self._live[cid] = deque(), set()
            self._base[cid] = base_url
            return self.campaign_view(campaign)

    def campaign(self, agent_id: str, campaign_id: str) -> dict:
        """Return the campaign of this agent, or raise 404."""
        agent_id = self._agent(agent_id)
        campaign = self.campaigns.get(campaign_id)
        if campaign is None or campaign["agent_id"] != agent_id:
            raise ApiError(404, "CAMPAIGN_NOT_FOUND",
                           f"Campaign {campaign_id} does not exist for agent {agent_id}.",
                           {"field": "campaign_id"})
        return campaign

    def campaign_view(self, campaign: dict) -> dict:
        """Return a campaign as the API shows it, with its recipient counts."""
        counts = {"recipients": 0, "scheduled": 0, "in_progress": 0, "completed": 0,
                  "failed": 0, "cancelled": 0}
        for rid in self._order[campaign["id"]]:
            status = self.recipients[rid]["status"]
            counts["recipients"] += 1
            key = {"SCHEDULED": "scheduled", "CALL_FINISHED": "completed",
                   "CANCELLED": "cancelled"}.get(status)
            counts[key or ("in_progress" if status in LIVE else "failed")] += 1
        view = dict(campaign, stats=counts)
        if campaign["retry_config"]:
            view["retry_config"] = dict(campaign["retry_config"],
                                        retry_on=list(campaign["retry_config"]["retry_on"]))
        return view

    def list_campaigns(self, agent_id: str, page: int, page_size: int) -> dict:
        with self.lock:
            agent_id = self._agent(agent_id)
            mine = [self.campaign_view(c) for c in reversed(list(self.campaigns.values()))
                    if c["agent_id"] == agent_id]
            return _page(mine, page, page_size)

    def update_campaign(self, agent_id: str, campaign_id: str, body: dict) -> dict:
        """Change the name and/or retry_config given in ``body``; return the campaign."""
        changes = {}
        if "name" in body:
            changes["name"] = _check_name(body)
        if "retry_config" in body:
            changes["retry_config"] = check_retry_config(body["retry_config"])
        if not changes:
            raise _bad("name", "Give name and/or retry_config to change.")
        with self.lock:
            campaign = self.campaign(agent_id, campaign_id)
            self._allow(campaign, "update", "update")
            campaign.update(changes, updated_at=now_iso())
            return self.campaign_view(campaign)

    def _allow(self, campaign: dict, operation: str, verb: str) -> None:
        if campaign["status"] not in RULES[operation][0]:
            raise _status_conflict(campaign, operation, verb)

    def add_recipients(self, agent_id: str, campaign_id: str, body: dict) -> dict:
        """Schedule the body's recipients in a DRAFT or PAUSED campaign; return counts."""
        recipients = body.get("recipients")
        if not isinstance(recipients, list) or not recipients:
            raise _bad("recipients", "Field recipients must be a non-empty list of "
                                     "{phone_number, call_variables} objects.")
        if len(recipients) > MAX_RECIPIENTS:
            raise _bad("recipients", f"At most {MAX_RECIPIENTS} phone numbers per request; "
                                     f"got {len(recipients)}.")
        cleaned = []
        for i, entry in enumerate(recipients):
            where = f"recipients[{i}]"
            if not isinstance(entry, dict):
                raise _bad(where, f"Field {where} must be an object with phone_number.")
            phone = entry.get("phone_number")
            if not isinstance(phone, str) or not E164.match(phone):
                raise _bad(f"{where}.phone_number",
                           f"Field {where}.phone_number must be in E.164 format: + followed "
                           "by 10 to 15 digits, e.g. +919876543210.", "INVALID_PHONE_NUMBER")
            variables = entry.get("call_variables") or {}
            if not isinstance(variables, dict):
                raise _bad(f"{where}.call_variables",
                           f"Field {where}.call_variables must be an object.")
            size = variables_size(variables)
            if size > MAX_VARIABLES_BYTES:
                raise _bad(f"{where}.call_variables",
                           f"call_variables for {phone} are {size} bytes; the limit is "
                           f"{MAX_VARIABLES_BYTES} bytes (4 KiB) per phone number.",
                           phone_number=phone)
            cleaned.append((phone, variables))
        with self.lock:
            campaign = self.campaign(agent_id, campaign_id)
            self._allow(campaign, "add_recipients", "add recipients to")
            cid = campaign["id"]
            added = duplicates = 0
            for phone, variables in cleaned:
                if phone in self._phones[cid]:
                    duplicates += 1
                    continue
                stamp = now_iso()
                recipient = {"id": str(uuid.uuid4()), "campaign_id": cid,
                             "phone_number": phone, "call_variables": variables,
                             "status": "SCHEDULED", "attempts": 0, "call_id": None,
                             "call_ids": [], "last_outcome": None, "next_attempt_at": None,
                             "created_at": stamp, "updated_at": stamp}
                self.recipients[recipient["id"]] = recipient
                self._order[cid].append(recipient["id"])
                self._phones[cid].add(phone)
                self._queue[cid].append(recipient["id"])
                added += 1
            campaign["updated_at"] = now_iso()
            return {"campaign_id": cid, "added": added, "duplicates": duplicates,
                    "total_recipients": len(self._order[cid])}

    def list_recipients(self, agent_id: str, campaign_id: str, page: int,
                        page_size: int) -> dict:
        with self.lock:
            campaign = self.campaign(agent_id, campaign_id)
            items = [self._recipient_view(rid) for rid in self._order[campaign["id"]]]
            return _page(items, page, page_size)

    def _recipient_view(self, rid: str) -> dict:
        recipient = self.recipients[rid]
        return dict(recipient, call_variables=dict(recipient["call_variables"]),
                    call_ids=list(recipient["call_ids"]))

    def start_campaign(self, agent_id: str, campaign_id: str, base_url: str = "") -> dict:
        with self.lock:
            campaign = self.campaign(agent_id, campaign_id)
            self._allow(campaign, "start", "start")
            if not self._order[campaign["id"]]:
                raise ApiError(409, "NO_RECIPIENTS",
                               f"Campaign {campaign['id']} has no recipients; add some "
                               "(POST .../scheduled-calls) before starting it.")
            if base_url:
                self._base[campaign["id"]] = base_url
            stamp = now_iso()
            campaign.update(status="IN_PROGRESS", updated_at=stamp)
            campaign["started_at"] = campaign["started_at"] or stamp
            self._pump(campaign)
            return self.campaign_view(campaign)

    def stop_campaign(self, agent_id: str, campaign_id: str) -> dict:
        with self.lock:
            campaign = self.campaign(agent_id, campaign_id)
            self._allow(campaign, "stop", "stop")
            campaign.update(status="PAUSED", updated_at=now_iso())
            return self.campaign_view(campaign)

    def cancel_campaign(self, agent_id: str, campaign_id: str) -> dict:
        with self.lock:
            campaign = self.campaign(agent_id, campaign_id)
            self._allow(campaign, "cancel", "cancel")
            self._close(campaign, "CANCELLED")
            campaign["cancelled_at"] = campaign["updated_at"]
            return self.campaign_view(campaign)

    def force_status(self, campaign_id: str, status: str) -> dict:
        """Admin: put a campaign in SCHEDULED (from DRAFT) or FAILED (unless over)."""
        with self.lock:
            campaign = self.campaigns.get(campaign_id)
            if campaign is None:
                raise ApiError(404, "CAMPAIGN_NOT_FOUND", f"Campaign {campaign_id} does not "
                               "exist.", {"field": "campaign_id"})
            if status == "SCHEDULED" and campaign["status"] == "DRAFT":
                campaign.update(status="SCHEDULED", updated_at=now_iso())
            elif status == "FAILED" and campaign["status"] not in OVER:
                self._close(campaign, "FAILED")
            else:
                raise ApiError(409, "INVALID_CAMPAIGN_STATUS",
                               f"The sandbox sets SCHEDULED from DRAFT and FAILED from any "
                               f"status but FINISHED, FAILED or CANCELLED; campaign "
                               f"{campaign_id} is {campaign['status']}.")
            return self.campaign_view(campaign)

    def _close(self, campaign: dict, status: str) -> None:
        """End a campaign early: undialled recipients are CANCELLED, live calls run out."""
        cid = campaign["id"]
        stamp = now_iso()
        waiting = list(self._queue[cid])
        for rid, (owner, handle) in list(self._timers.items()):
            if owner == cid:
                self.scheduler.cancel(handle)
                del self._timers[rid]
                waiting.append(rid)
        for rid in waiting:
            self.recipients[rid].update(status="CANCELLED", next_attempt_at=None,
                                        updated_at=stamp)
        self._queue[cid].clear()
        campaign.update(status=status, updated_at=stamp)

    def _pump(self, campaign: dict) -> None:
        """Dial what an IN_PROGRESS campaign may; mark it FINISHED when nothing is left."""
        if campaign["status"] != "IN_PROGRESS":
            return
        cid = campaign["id"]
        queue, live = self._queue[cid], self._live[cid]
        while queue and len(live) < self.campaign_concurrency:
            self._dial(campaign, self.recipients[queue.popleft()])
        if not queue and not live and not any(c == cid for c, _ in self._timers.values()):
            stamp = now_iso()
            campaign.update(status="FINISHED", finished_at=stamp, updated_at=stamp)

    def _dial(self, campaign: dict, recipient: dict) -> None:
        recipient["attempts"] += 1
        call = self._new_call(campaign["agent_id"], recipient["phone_number"],
                              recipient["call_variables"], self._base[campaign["id"]],
                              campaign["id"], recipient["id"], recipient["attempts"])
        recipient["call_ids"].append(call["call_id"])
        recipient.update(call_id=call["call_id"], status="PENDING", next_attempt_at=None,
                         updated_at=call["created_at"])
        self._live[campaign["id"]].add(recipient["id"])

    def _recipient_ended(self, call: dict) -> None:
        """Record a campaign call's outcome; schedule a retry when retry_config says so."""
        recipient = self.recipients.get(call["_recipient"])
        campaign = self.campaigns.get(call["campaign_id"] or "")
        if recipient is None or campaign is None:
            return
        cid, rid, outcome = campaign["id"], recipient["id"], call["status"]
        self._live[cid].discard(rid)
        config = campaign["retry_config"]
        retry = (config is not None and campaign["status"] in ("IN_PROGRESS", "PAUSED")
                 and outcome in config["retry_on"]
                 and recipient["attempts"] <= config["max_retries"])
        recipient.update(last_outcome=outcome, updated_at=call["updated_at"])
        if retry:
            delay = config["retry_delay_minutes"] * self.minute_seconds
            due = datetime.now(timezone.utc) + timedelta(seconds=delay)
            recipient.update(status="SCHEDULED", next_attempt_at=now_iso(due))
            self._timers[rid] = (cid, self.scheduler.schedule(
                delay, lambda: self._retry_due(rid)))
        else:
            recipient["status"] = outcome
        self._pump(campaign)

    def _retry_due(self, rid: str) -> None:
        with self.lock:
            entry = self._timers.pop(rid, None)
            recipient = self.recipients.get(rid)
            if entry is None or recipient is None or recipient["status"] != "SCHEDULED":
                return
            recipient["next_attempt_at"] = None
            self._queue[entry[0]].append(rid)
            self._pump(self.campaigns[entry[0]])

    # Webhooks

    def create_webhook(self, body: dict) -> dict:
        """Register a webhook from a request body; return it with its secret (only here)."""
        fields = _webhook_fields(body, partial=False)
        hook = {"id": str(uuid.uuid4()), **fields, "created_at": now_iso(),
                "secret": new_secret()}
        hook["updated_at"] = hook["created_at"]
        with self.lock:
            self.webhooks[hook["id"]] = hook
        return _public_hook(hook) | {"secret": hook["secret"]}

    def update_webhook(self, webhook_id: str, body: dict) -> dict:
        """Change the fields given in ``body``; return the webhook without its secret."""
        fields = _webhook_fields(body, partial=True)
        with self.lock:
            hook = self._hook(webhook_id)
            hook.update(fields, updated_at=now_iso())
            return _public_hook(hook)

    def delete_webhook(self, webhook_id: str) -> None:
        """Remove a webhook; deliveries already queued still run."""
        with self.lock:
            self._hook(webhook_id)
            del self.webhooks[webhook_id]

    def _hook(self, webhook_id: str) -> dict:
        hook = self.webhooks.get(webhook_id)
        if hook is None:
            raise ApiError(404, "WEBHOOK_NOT_FOUND", f"Webhook {webhook_id} does not exist.",
                           {"field": "webhook_id"})
        return hook

    def snapshot(self) -> dict:
        """Return agents, calls, campaigns (with their recipients) and webhooks, no secrets."""
        with self.lock:
            return {
                "agents": [dict(a) for a in self.agents.values()],
                "calls": [self.call_details(cid) for cid in self.calls],
                "campaigns": [dict(self.campaign_view(c), recipients=[
                    self._recipient_view(rid) for rid in self._order[c["id"]]])
                    for c in self.campaigns.values()],
                "webhooks": [_public_hook(h) for h in self.webhooks.values()],
            }

    # The sandbox composes services through these (see app.py).
    name, prefix = "samora", "/samora"

    def connection(self, root: str) -> dict:
        return {"base_url": root + self.prefix, "credentials": {"api_key": DEFAULT_KEY}}

    def seeded(self) -> dict:
        return {"api_key": DEFAULT_KEY, "agent_id": DEMO_AGENT_ID}

    def state(self) -> dict:
        return self.snapshot()

    def register_admin(self, app) -> None:
        """Add /_sandbox/samora/...: finish a call, add an agent, set a campaign's status."""

        def body() -> dict:
            return json_body() if raw_body().strip() else {}

        @app.post("/samora/calls/<call_id>/finish")
        def samora_finish(call_id):
            return self.finish_call(call_id, body().get("status", "CALL_FINISHED"))

        @app.post("/samora/agents")
        def samora_add_agent():
            data = body()
            agent_id = self.add_agent(require_str(data, "name", required=False) or "Agent",
                                      require_str(data, "id", required=False))
            return dict(self.agents[agent_id]), 201

        @app.post("/samora/campaigns/<campaign_id>/status")
        def samora_campaign_status(campaign_id):
            status = require_str(body(), "status")
            if status not in ("SCHEDULED", "FAILED"):
                raise _bad("status", "Field status must be SCHEDULED or FAILED.")
            return self.force_status(campaign_id, status)

    def _authenticate(self):
        key = request.headers.get("X-API-Key", "").strip()
        if not key:
            raise ApiError(401, "UNAUTHORIZED", "Missing API key: send it in the X-API-Key header.")
        with self.lock:
            known = key in self.keys
        if not known:
            raise ApiError(401, "UNAUTHORIZED", "The API key is invalid or revoked.")
        return ("samora", key)

    def create_app(self) -> Flask:
        """Build the Flask app: ``/v1/call...``, ``/v1/external/campaigns...``,
        ``/v2/webhooks...`` and the presigned ``/_files``."""
        app = create_service_app(__name__, self._authenticate, self.limiter,
                                 public=lambda: request.path.startswith("/_files/"))
        campaigns = "/v1/external/campaigns/<agent_id>"

        def base() -> str:
            return request.host_url.rstrip("/") + request.script_root

        @app.post("/v1/call/trigger")
        def trigger():
            body = json_body()
            agent_id = require_str(body, "agent_id")
            if not UUID_RE.match(agent_id):
                raise _bad("agent_id", "Field agent_id must be a UUID.")
            to_number = body.get("to_number")
            if not isinstance(to_number, str) or not E164.match(to_number):
                raise _bad("to_number", "Field to_number must be in E.164 format: + followed "
                           "by 10 to 15 digits, e.g. +919876543210.", "INVALID_PHONE_NUMBER")
            context = body.get("context")
            if context is not None and not isinstance(context, dict):
                raise _bad("context", "Field context must be an object.")
            return self.trigger_call(agent_id, to_number, context, base()), 201

        @app.get("/v1/call/<call_id>")
        def get_call(call_id):
            return self.call_details(call_id)

        @app.post(campaigns)
        def create_campaign(agent_id):
            return self.create_campaign(agent_id, json_body(), base()), 201

        @app.get(campaigns)
        def list_campaigns(agent_id):
            return self.list_campaigns(agent_id, *_page_args())

        @app.get(campaigns + "/<campaign_id>")
        def get_campaign(agent_id, campaign_id):
            with self.lock:
                return self.campaign_view(self.campaign(agent_id, campaign_id))

        @app.put(campaigns + "/<campaign_id>")
        def update_campaign(agent_id, campaign_id):
            return self.update_campaign(agent_id, campaign_id, json_body())

        @app.post(campaigns + "/<campaign_id>/scheduled-calls")
        def add_recipients(agent_id, campaign_id):
            return self.add_recipients(agent_id, campaign_id, json_body()), 201

        @app.get(campaigns + "/<campaign_id>/calls")
        def campaign_calls(agent_id, campaign_id):
            return self.list_recipients(agent_id, campaign_id, *_page_args())

        @app.post(campaigns + "/<campaign_id>/start")
        def start_campaign(agent_id, campaign_id):
            return self.start_campaign(agent_id, campaign_id, base())

        @app.post(campaigns + "/<campaign_id>/stop")
        def stop_campaign(agent_id, campaign_id):
            return self.stop_campaign(agent_id, campaign_id)

        @app.post(campaigns + "/<campaign_id>/cancel")
        def cancel_campaign(agent_id, campaign_id):
            return self.cancel_campaign(agent_id, campaign_id)

        @app.post("/v2/webhooks")
        def create_webhook():
            return self.create_webhook(json_body()), 201

        @app.get("/v2/webhooks")
        def list_webhooks():
            with self.lock:
                return {"data": [_public_hook(h) for h in self.webhooks.values()]}

        @app.get("/v2/webhooks/events")
        def list_events():
            return {"data": [{"name": n, "description": d} for n, d in EVENTS.items()]}

        @app.get("/v2/webhooks/<webhook_id>")
        def get_webhook(webhook_id):
            with self.lock:
                return _public_hook(self._hook(webhook_id))

        @app.put("/v2/webhooks/<webhook_id>")
        def update_webhook(webhook_id):
            return self.update_webhook(webhook_id, json_body())

        @app.delete("/v2/webhooks/<webhook_id>")
        def delete_webhook(webhook_id):
            self.delete_webhook(webhook_id)
            return "", 204

        @app.get("/_files/<call_id>/<name>")
        def call_file(call_id, name):
            try:
                expires = int(request.args.get("expires", ""))
            except ValueError:
                raise ApiError(403, "INVALID_SIGNATURE", "This file URL is not signed.") from None
            offered = request.args.get("signature", "")
            expected = self._file_signature(call_id, name, expires)
            if not hmac.compare_digest(offered.encode(), expected.encode()):
                raise ApiError(403, "INVALID_SIGNATURE", "This file URL signature is invalid.")
            if expires < time.time():
                raise ApiError(403, "URL_EXPIRED",
                               "This file URL has expired; get the call again for a fresh one.")
            with self.lock:
                call = self.calls.get(call_id)
                if call is None or call["status"] != "CALL_FINISHED" or name not in FILES:
                    raise ApiError(404, "NOT_FOUND", "No such call file.")
                data = _transcript(call).encode() if name == "transcript.txt" else _recording()
            return Response(data, mimetype=FILES[name])

        return app


def _webhook_fields(body: dict, partial: bool) -> dict:
    out: dict = {}
    if not partial or "url" in body:
        url = require_str(body, "url")
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise _bad("url", "Field url must be an http or https URL.")
        out["url"] = url
    if not partial or "events" in body:
        events = body.get("events")
        if (not isinstance(events, list) or not events
                or not all(isinstance(e, str) and e in EVENTS for e in events)):
            raise _bad("events", f"Field events must be a non-empty list of {', '.join(EVENTS)}.")
        out["events"] = list(dict.fromkeys(events))
    if not partial or "data_options" in body:
        options = body.get("data_options") or {}
        if not isinstance(options, dict):
            raise _bad("data_options", "Field data_options must be an object.")
        out["data_options"] = {}
        for name in ("include_transcript", "include_recording_url"):
            value = options.get(name, False)
            if not isinstance(value, bool):
                raise _bad(f"data_options.{name}",
                           f"Field data_options.{name} must be true or false.")
            out["data_options"][name] = value
    if not partial or "description" in body:
        out["description"] = require_str(body, "description", required=False)
    return out


def _public_hook(hook: dict) -> dict:
    return {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
            for k, v in hook.items() if k != "secret"}
