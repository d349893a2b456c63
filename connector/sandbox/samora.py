"""Samora AI emulator (seed 001): trigger and get calls, signed call-event webhooks.

Auth is the ``X-API-Key`` header. Decisions where the document is vague: body validation
errors are 400 VALIDATION_ERROR (INVALID_PHONE_NUMBER for ``to_number``), an ``agent_id``
that is not a UUID is 400 and an unknown one 404 AGENT_NOT_FOUND; unknown body fields are
ignored. A call moves PENDING -> TRIGGERED -> ONGOING (CALL_STARTED) -> CALL_FINISHED,
one step every ``call_delay`` seconds; a number ending in 0000 goes TRIGGERED -> UNANSWERED
and one ending in 9999 TRIGGERED -> REJECTED, both delivering CALL_FAILED without a
CALL_STARTED. PUT /v2/webhooks/{id} updates only the fields it is given. Webhooks are signed
the Standard Webhooks way (the document shows a ``whsec_``-style secret and no scheme).
Transcript and recording URLs are presigned sandbox URLs (``expires`` + ``signature``)
valid 60 minutes, freshly signed on each read.
"""
from __future__ import annotations

import hashlib
import hmac
import io
import re
import secrets
import threading
import time
import uuid
import wave
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
FINAL = {"CALL_FINISHED", "UNANSWERED", "REJECTED"}
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                     r"[0-9a-fA-F]{12}$")
FILES = {"transcript.txt": "text/plain; charset=utf-8", "recording.wav": "audio/wav"}


def _outcome(to_number: str) -> str:
    if to_number.endswith("0000"):
        return "UNANSWERED"
    if to_number.endswith("9999"):
        return "REJECTED"
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


class Samora:
    """State and routes of Samora AI; every access holds ``lock``."""

    def __init__(self, lock: threading.RLock, limiter: RateLimiter, scheduler: Scheduler,
                 deliverer: Deliverer, call_delay: float = 0.3):
        self.lock = lock
        self.limiter = limiter
        self.scheduler = scheduler
        self.deliverer = deliverer
        self.call_delay = call_delay
        self._url_key = secrets.token_bytes(32)
        self.keys: set[str] = set()
        self.agents: dict[str, dict] = {}
        self.calls: dict[str, dict] = {}
        self.webhooks: dict[str, dict] = {}
        self._pending: dict[str, tuple | None] = {}

    def reset(self, seed: bool = True) -> None:
        """Forget everything; with ``seed``, add the demo key and agent."""
        with self.lock:
            self.keys = {DEFAULT_KEY}
            self.calls, self.webhooks, self.agents, self._pending = {}, {}, {}, {}
            if seed:
                self.agents[DEMO_AGENT_ID] = {"id": DEMO_AGENT_ID, "name": "Demo agent"}

    def add_agent(self, name: str = "Agent", agent_id: str | None = None) -> str:
        """Register an agent that calls may use; return its id."""
        agent_id = (agent_id or str(uuid.uuid4())).lower()
        with self.lock:
            self.agents[agent_id] = {"id": agent_id, "name": name}
        return agent_id

    # Calls

    def trigger_call(self, agent_id: str, to_number: str, context: dict | None = None,
                     base_url: str = "") -> dict:
        """Create a PENDING call and start its progress; return the trigger response."""
        with self.lock:
            if agent_id.lower() not in self.agents:
                raise ApiError(404, "AGENT_NOT_FOUND", f"Agent {agent_id} does not exist.",
                               {"field": "agent_id"})
            stamp = now_iso()
            call = {
                "call_id": str(uuid.uuid4()), "agent_id": agent_id.lower(),
                "to_number": to_number, "status": "PENDING", "context": dict(context or {}),
                "created_at": stamp, "updated_at": stamp, "started_at": None,
                "ended_at": None, "duration_seconds": None, "base_url": base_url,
            }
            self.calls[call["call_id"]] = call
            self._later(call["call_id"], "PENDING")
            return {k: call[k] for k in ("call_id", "status", "agent_id", "to_number",
                                         "context", "created_at")}

    def _later(self, call_id: str, expected: str) -> None:
        self._pending[call_id] = self.scheduler.schedule(
            self.call_delay, lambda: self._advance(call_id, expected))

    def _advance(self, call_id: str, expected: str) -> None:
        with self.lock:
            call = self.calls.get(call_id)
            if call is None or call["status"] != expected:
                return  # finished by hand, or the sandbox was reset
            self._pending.pop(call_id, None)
            if expected == "PENDING":
                self._set(call, "TRIGGERED")
                self._later(call_id, "TRIGGERED")
            elif expected == "TRIGGERED" and _outcome(call["to_number"]) != "CALL_FINISHED":
                self._end(call, _outcome(call["to_number"]))
            elif expected == "TRIGGERED":
                self._start(call)
                self._later(call_id, "ONGOING")
            elif expected == "ONGOING":
                self._end(call, "CALL_FINISHED")

    def _set(self, call: dict, status: str) -> None:
        call["status"] = status
        call["updated_at"] = now_iso()

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
        return f"{call['base_url']}{path}?expires={expires}&signature={sig}"

    def _file_signature(self, call_id: str, name: str, expires: int) -> str:
        message = f"{call_id}/{name}:{expires}".encode()
        return hmac.new(self._url_key, message, hashlib.sha256).hexdigest()

    def call_details(self, call_id: str) -> dict:
        """Return what GET /v1/call/{call_id} answers."""
        with self.lock:
            call = self._call(call_id)
            details = {k: v for k, v in call.items() if k != "base_url"}
            details["context"] = dict(call["context"])
            if call["status"] == "CALL_FINISHED":
                details["transcript_url"] = self._file_url(call, "transcript.txt")
                details["recording_url"] = self._file_url(call, "recording.wav")
            return details

    def _emit(self, event: str, call: dict) -> None:
        data = {k: call[k] for k in ("call_id", "agent_id", "to_number", "status",
                                     "duration_seconds", "created_at", "started_at",
                                     "ended_at")}
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
        """Return agents, calls and webhooks (without secrets)."""
        with self.lock:
            return {
                "agents": [dict(a) for a in self.agents.values()],
                "calls": [self.call_details(cid) for cid in self.calls],
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
        """Add /_sandbox/samora/... routes: finish a call now."""

        @app.post("/samora/calls/<call_id>/finish")
        def samora_finish(call_id):
            data = json_body() if raw_body().strip() else {}
            return self.finish_call(call_id, data.get("status", "CALL_FINISHED"))

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
        """Build the Flask app serving ``/v1/call/...``, ``/v2/webhooks...`` and ``/_files``."""
        app = create_service_app(__name__, self._authenticate, self.limiter,
                                 public=lambda: request.path.startswith("/_files/"))

        @app.post("/v1/call/trigger")
        def trigger():
            body = json_body()
            agent_id = require_str(body, "agent_id")
            if not UUID_RE.match(agent_id):
                raise ApiError(400, "VALIDATION_ERROR", "Field agent_id must be a UUID.",
                               {"field": "agent_id"})
            to_number = body.get("to_number")
            if not isinstance(to_number, str) or not E164.match(to_number):
                raise ApiError(400, "INVALID_PHONE_NUMBER",
                               "Field to_number must be in E.164 format: + followed by 10 to "
                               "15 digits, e.g. +919876543210.", {"field": "to_number"})
            context = body.get("context")
            if context is not None and not isinstance(context, dict):
                raise ApiError(400, "VALIDATION_ERROR", "Field context must be an object.",
                               {"field": "context"})
            base = request.host_url.rstrip("/") + request.script_root
            return self.trigger_call(agent_id, to_number, context, base), 201

        @app.get("/v1/call/<call_id>")
        def get_call(call_id):
            return self.call_details(call_id)

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
            raise ApiError(400, "VALIDATION_ERROR", "Field url must be an http or https URL.",
                           {"field": "url"})
        out["url"] = url
    if not partial or "events" in body:
        events = body.get("events")
        if (not isinstance(events, list) or not events
                or not all(isinstance(e, str) and e in EVENTS for e in events)):
            raise ApiError(400, "VALIDATION_ERROR",
                           "Field events must be a non-empty list of "
                           f"{', '.join(EVENTS)}.", {"field": "events"})
        out["events"] = list(dict.fromkeys(events))
    if not partial or "data_options" in body:
        options = body.get("data_options") or {}
        if not isinstance(options, dict):
            raise ApiError(400, "VALIDATION_ERROR", "Field data_options must be an object.",
                           {"field": "data_options"})
        out["data_options"] = {}
        for name in ("include_transcript", "include_recording_url"):
            value = options.get(name, False)
            if not isinstance(value, bool):
                raise ApiError(400, "VALIDATION_ERROR",
                               f"Field data_options.{name} must be true or false.",
                               {"field": f"data_options.{name}"})
            out["data_options"][name] = value
    if not partial or "description" in body:
        out["description"] = require_str(body, "description", required=False)
    return out


def _public_hook(hook: dict) -> dict:
    return {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
            for k, v in hook.items() if k != "secret"}
