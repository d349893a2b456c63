"""Samora AI webhook triggers: CALL_FINISHED (and the base the other call events share).

Switching a flow on registers its URL through POST /v2/webhooks with the one event and keeps
the returned signing secret (sent only at creation); switching off deletes the webhook. The
document names a signing secret but no scheme, so payloads are verified the Standard Webhooks
way. The payload shape is undocumented: the item is the event's ``data`` (the call) plus
``event`` and ``call_id``; the dedupe key is call_id + event.
"""
from __future__ import annotations

from urllib.parse import quote

from marshmallow import Schema, fields

from connector import FatalAPIError, WebhookTrigger, hookimpl
from connector.signatures import verify_subscription


class Inputs(Schema):
    include_transcript = fields.Boolean(load_default=False, metadata={
        "label": "Include transcript", "help": "Ask Samora to put the transcript in the event."})
    include_recording_url = fields.Boolean(load_default=False, metadata={
        "label": "Include recording URL", "help": "Ask Samora for the recording URL too."})


class CallEvent(WebhookTrigger):
    """A Samora call event delivered to a webhook this trigger registers."""

    app = "samora"
    event = ""
    Inputs = Inputs

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

    def unsubscribe(self, ctx, subscription):
        try:
            ctx.client.delete(f"/v2/webhooks/{quote(subscription['id'], safe='')}",
                              expect_json=False)
        except FatalAPIError as exc:
            if exc.status != 404:  # already gone is what we wanted
                raise

    def verify(self, ctx, request, subscription):
        verify_subscription(subscription, request.headers, request.body)

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


class CallFinished(CallEvent):
    key = "samora.call_finished"
    label = "Call finished"
    help = "Fires when a Samora call ends (transcript and recording available)."
    event = "CALL_FINISHED"
    sample = {"call_id": "c0a8012e-6f1b-4c9e-9f3a-2b7d1e5a9c44", "event": "CALL_FINISHED",
              "agent_id": "123e4567-e89b-12d3-a456-426614174000", "to_number": "+919876543210",
              "status": "CALL_FINISHED", "duration_seconds": 42,
              "transcript_url": "https://files.samora.ai/t/...", "context": {},
              "occurred_at": "2026-01-15T10:31:00Z"}


@hookimpl
def register_triggers(register):
    register(CallFinished)
