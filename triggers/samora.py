"""Samora AI webhook triggers: CALL_STARTED, CALL_FINISHED and CALL_FAILED.

Switching a flow on registers its URL through POST /v2/webhooks with the one event and the
flow's ``data_options`` (include the transcript, include the recording URL), and keeps the
returned signing secret (sent only at creation); switching off deletes the webhook with
DELETE /v2/webhooks/{id} (one already gone counts as deleted). The document names a signing
secret but no scheme, so payloads are verified the Standard Webhooks way, on the raw body.
The payload shape is undocumented: the item is the event's ``data`` (the call) plus
``event``, ``call_id`` and ``occurred_at``; a delivery for another event is ignored. The
dedupe key is call_id + event, so a redelivery (whatever its webhook-id) fires once; each
retry of a campaign call is a new call, with its own call_id.
"""
from __future__ import annotations


from marshmallow import Schema, fields

from connector import FatalAPIError, ServiceWebhookTrigger, hookimpl


class DataOptions(Schema):
    include_transcript = fields.Boolean(load_default=False, metadata={
        "label": "Include transcript",
        "help": "Ask Samora to put the call's transcript in the event, when it has one."})
    include_recording_url = fields.Boolean(load_default=False, metadata={
        "label": "Include recording URL",
        "help": "Ask Samora for the call's recording URL too, when it has one."})


class CallEvent(ServiceWebhookTrigger):
    """A Samora call event delivered to a webhook this trigger registers."""

    hooks_path = "/v2/webhooks"

    app = "samora"
    event = ""

    def subscribe(self, ctx, url):
        body = {"url": url, "events": [self.event],
                "description": f"connector flow {ctx.flow_name}",
                "data_options": {"include_transcript": bool(ctx.inputs.get("include_transcript")),
                                 "include_recording_url":
                                     bool(ctx.inputs.get("include_recording_url"))}}
        created = ctx.client.post("/v2/webhooks", json=body)
        hook = created.get("data", created) if isinstance(created, dict) else {}
        hook_id = hook.get("id") or hook.get("webhook_id")
        secret = hook.get("secret") or hook.get("signing_secret")
        if not hook_id or not secret:
            raise FatalAPIError("Samora created the webhook but returned no id or signing secret")
        return {"id": str(hook_id), "secret": secret}

    def parse(self, ctx, request):
        body = request.json()
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        event = body.get("event") or body.get("type")
        if event != self.event:
            return []  # a webhook registered for one event should get no other; ignore it
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        call_id = body.get("call_id") or data.get("call_id") or data.get("id")
        if not call_id:
            raise ValueError("payload is missing field 'call_id'")
        return [{**data, "event": event, "call_id": call_id,
                 "occurred_at": body.get("timestamp")}]

    def dedupe_key(self, item):
        return f"{item['call_id']}:{item['event']}"

    def request_dedupe_key(self, item, request):
        return self.dedupe_key(item)


class CallStarted(CallEvent):
    """POST /v2/webhooks (events: CALL_STARTED) on switch-on, DELETE /v2/webhooks/{id} off.

    Deliveries are verified (Standard Webhooks) and fire once per ``<call_id>:CALL_STARTED``.
    """

    key = "samora.call_started"
    label = "Call started"
    help = "Fires when a Samora call begins: the person picked up and the agent is talking."
    event = "CALL_STARTED"
    sample = {"call_id": "c0a8012e-6f1b-4c9e-9f3a-2b7d1e5a9c44", "event": "CALL_STARTED",
              "agent_id": "123e4567-e89b-12d3-a456-426614174000", "campaign_id": None,
              "to_number": "+919876543210", "status": "ONGOING", "duration_seconds": None,
              "created_at": "2026-01-15T10:30:00Z", "started_at": "2026-01-15T10:30:12Z",
              "ended_at": None, "context": {"first_name": "Asha"},
              "occurred_at": "2026-01-15T10:30:12Z"}


class CallFinished(CallEvent):
    """POST /v2/webhooks (events: CALL_FINISHED, data_options) on switch-on, DELETE off.

    Deliveries are verified (Standard Webhooks) and fire once per ``<call_id>:CALL_FINISHED``.
    """

    key = "samora.call_finished"
    label = "Call finished"
    help = "Fires when a Samora call ends (transcript and recording available)."
    event = "CALL_FINISHED"
    Inputs = DataOptions
    sample = {"call_id": "c0a8012e-6f1b-4c9e-9f3a-2b7d1e5a9c44", "event": "CALL_FINISHED",
              "agent_id": "123e4567-e89b-12d3-a456-426614174000", "campaign_id": None,
              "to_number": "+919876543210", "status": "CALL_FINISHED", "duration_seconds": 42,
              "created_at": "2026-01-15T10:30:00Z", "started_at": "2026-01-15T10:30:12Z",
              "ended_at": "2026-01-15T10:31:00Z",
              "transcript_url": "https://files.samora.ai/calls/c0a8012e/transcript.txt?...",
              "recording_url": "https://files.samora.ai/calls/c0a8012e/recording.wav?...",
              "context": {"first_name": "Asha"}, "occurred_at": "2026-01-15T10:31:00Z"}


class CallFailed(CallEvent):
    """POST /v2/webhooks (events: CALL_FAILED, data_options) on switch-on, DELETE off.

    Fires for a call that ends UNANSWERED, REJECTED (or, where Samora reports them,
    VOICEMAIL or FAILED). Deliveries are verified (Standard Webhooks) and fire once per
    ``<call_id>:CALL_FAILED``; each retry of a campaign call is a new call_id.
    """

    key = "samora.call_failed"
    label = "Call failed"
    help = "Fires when a Samora call fails, is rejected, or goes unanswered."
    event = "CALL_FAILED"
    Inputs = DataOptions
    sample = {"call_id": "c0a8012e-6f1b-4c9e-9f3a-2b7d1e5a9c44", "event": "CALL_FAILED",
              "agent_id": "123e4567-e89b-12d3-a456-426614174000",
              "campaign_id": "5b0e2f7c-3d4a-4e8b-9c1d-7a6f5e4d3c2b",
              "to_number": "+919876543210", "status": "UNANSWERED", "duration_seconds": 0,
              "created_at": "2026-01-15T10:30:00Z", "started_at": None,
              "ended_at": "2026-01-15T10:30:40Z", "context": {"first_name": "Asha"},
              "occurred_at": "2026-01-15T10:30:40Z"}


@hookimpl
def register_triggers(register):
    for trigger in (CallStarted, CallFinished, CallFailed):
        register(trigger)
