"""The error trigger: start a flow when a run of another flow fails (to notify someone).

A flow names its error flow (``on_failure: {error_flow: NAME}``); that flow starts with
``errors.run_failed`` and gets one item per failed run: the flow, the run id, the failed
step, the error, the trigger item and when it failed. An error flow's own failures are
not reported to itself.
"""
from __future__ import annotations

from connector import hookimpl
from connector.sdk import EventTrigger


class RunFailed(EventTrigger):
    """Pushed by the engine when a run fails; deduped on the failed run's id."""

    key = "errors.run_failed"
    app = "errors"
    label = "Run failed"
    help = "Starts when a run of a flow that names this flow as its error flow fails."
    dedupe_ttl = None
    sample = {"flow": "auto-recharge-credits", "run_id": 42, "failed_step": "grant",
              "error": "step grant: HTTP 404 SUBACCOUNT_NOT_FOUND: No sub-account of this "
                       "agency has that email.", "attempts": 1,
              "trigger_item": {"email": "nobody@agency.example", "amount": 500},
              "failed_at": "2026-01-15T10:31:00Z", "paused": False}

    def dedupe_key(self, item):
        return f"run-{item['run_id']}"


@hookimpl
def register_triggers(register):
    register(RunFailed)
