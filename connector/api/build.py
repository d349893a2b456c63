"""Try a trigger or a step while building a flow: a test poll, a test run."""
from __future__ import annotations

import secrets

from marshmallow import ValidationError

from .. import api_schemas as s
from .. import templates
from ..errors import APIError, IdempotencyConflict, OutcomeUnknown, PluginError
from ..ledger import once
from ..sdk import ActionContext, Park, PollTrigger, TriggerContext, WebhookTrigger
from . import current_host, invalid, load_body, prefixed, reply, route, service_error
from .connections import connection_for

SAMPLE_ITEMS = 10  # a test poll shows at most this many items


@route("/triggers/<key>/test", "POST", "read", "Fetch sample items: one poll, recording "
       "nothing (or the trigger's sample for webhooks and schedules)", "build",
       body=s.TriggerTestRequest, response=s.TriggerTestResult)
def triggers_test(key):
    host = current_host()
    trigger = host.catalog.trigger(key)
    data = load_body(s.TriggerTestRequest)
    try:
        inputs = type(trigger).Inputs().load(data["inputs"])
    except ValidationError as err:
        raise prefixed("inputs", err) from None
    sample = {"ok": True, "source": "sample", "items": [dict(trigger.sample or {})],
              "count": 1, "error": None}
    if not isinstance(trigger, PollTrigger):
        how = ("arrive at the flow's URL once it is on" if isinstance(trigger, WebhookTrigger)
               else "are made by the host")
        return reply(s.TriggerTestResult, {**sample, "message": f"{trigger.label}: real items "
                                           f"{how}; this is the trigger's sample"})
    conn = connection_for(type(trigger), data["connection"])
    ctx = TriggerContext(flow_name=f"test:{key}", inputs=inputs, client=host.client(conn))
    try:
        items = [i for i in (trigger.poll(ctx) or []) if isinstance(i, dict)]
    except APIError as exc:
        return reply(s.TriggerTestResult, {"ok": False, "items": [], "count": 0,
                                           "error": service_error(exc), "message": None})
    finally:
        if ctx.client is not None:
            ctx.client.close()
    if not items:
        return reply(s.TriggerTestResult, {**sample, "message": "the service has no items "
                                           "yet; this is the trigger's sample"})
    return reply(s.TriggerTestResult, {"ok": True, "source": "service", "count": len(items),
                                       "items": items[:SAMPLE_ITEMS], "message": None,
                                       "error": None})


@route("/actions/<key>/test", "POST", "write", "Run one action or search for real with inputs "
       "rendered against a sample context; returns its output or the service's error",
       "build", body=s.StepTestRequest, response=s.StepTestResult)
def actions_test(key):
    host = current_host()
    action = host.catalog.action(key)
    data = load_body(s.StepTestRequest)
    if action.control:
        raise invalid("action", f"{key} is a {action.control} step: it only runs inside a "
                                 "flow")
    context = {"trigger": {}, "steps": {}, "run": {"id": 0, "flow": "test"},
               **data["context"]}
    rendered = templates.render(data["inputs"], context, "inputs")
    try:
        inputs = action.Inputs().load(rendered)
    except ValidationError as err:
        raise prefixed("inputs", err) from None
    conn = (connection_for(type(action), data["connection"])
            if action.needs_connection or data["connection"] else None)
    client = host.client(conn)
    ctx = ActionContext(flow_name="test", run_id=0, step_name=key,
                        idempotency_key=data["idempotency_key"] or f"test-{secrets.token_hex(16)}",
                        client=client,
                        # the ledger guards a test too: a grant tested with a key is not
                        # granted again when a real run brings the same key
                        once=lambda k, req, call: once(action.key, k, req, call, None, key))
    try:
        output = action.run(ctx, inputs)
    except Park as park:
        output = {**park.output, "would_wait_until": park.until.isoformat()}
    except (APIError, IdempotencyConflict, OutcomeUnknown) as exc:
        return reply(s.StepTestResult, {"ok": False, "inputs": rendered, "output": None,
                                        "error": service_error(exc)})
    finally:
        if client is not None:
            client.close()
    if output is not None and not isinstance(output, dict):
        raise PluginError(f"action {key} returned {type(output).__name__}, expected a mapping")
    return reply(s.StepTestResult, {"ok": True, "inputs": rendered, "output": output or {},
                                    "error": None})
