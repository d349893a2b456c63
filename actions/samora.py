"""Samora AI actions: trigger an outbound call.

Samora documents no idempotency key, so the call is placed through the host's ledger
(``ctx.once``): a retried or replayed step never dials the same person twice.
"""
from __future__ import annotations

from marshmallow import Schema, fields, post_load, validate

from connector import Action, hookimpl
from connector.plugins.samora import normalize_e164


class TriggerCallInputs(Schema):
    agent_id = fields.UUID(required=True, metadata={
        "label": "Agent", "help": "The id of the Samora AI agent that places the call."})
    to_number = fields.String(required=True, metadata={
        "label": "Phone number", "help": "E.164 with country code, e.g. +919876543210."})
    context = fields.Dict(keys=fields.String(), load_default=None, metadata={
        "label": "Call context", "help": "Per-call variables the agent can use."})

    @post_load
    def clean(self, data, **_):
        data["agent_id"] = str(data["agent_id"])
        data["to_number"] = normalize_e164(data["to_number"], "to_number")
        return data


class TriggerCall(Action):
    key = "samora.trigger_call"
    app = "samora"
    label = "Trigger call"
    help = "Start an outbound call with one of your AI agents (POST /v1/call/trigger)."
    Inputs = TriggerCallInputs
    sample = {"call_id": "c0a8012e-6f1b-4c9e-9f3a-2b7d1e5a9c44", "status": "PENDING",
              "agent_id": "123e4567-e89b-12d3-a456-426614174000",
              "to_number": "+919876543210"}

    def run(self, ctx, inputs):
        body = {"agent_id": inputs["agent_id"], "to_number": inputs["to_number"]}
        if inputs.get("context"):
            body["context"] = inputs["context"]
        result = ctx.once(ctx.idempotency_key, body,
                          lambda: ctx.client.post("/v1/call/trigger", json=body))
        out = dict(result.get("data", result) if isinstance(result, dict) else {})
        out.setdefault("call_id", out.get("id"))
        return out


@hookimpl
def register_actions(register):
    register(TriggerCall)
