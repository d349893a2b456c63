"""Splitting the product across processes: web-only receivers, a scheduler, WSGI workers."""
from __future__ import annotations

import json

import pytest
import requests

from connector import flows
from connector.runtime import Runtime
from connector.signatures import sign
from connector.store import Run, TriggerState

from .conftest import wait_for
from .test_flows_e2e import EXAMPLES


def test_a_web_role_receives_and_executes_but_never_polls(connected):
    runtime = Runtime(connected, role="web")
    runtime.start(port=0)
    try:
        assert runtime.scheduler is None
        flow = flows.save(connected, flows.load_file(EXAMPLES / "auto-recharge-credits.yaml"))
        flows.enable(connected, flow)
        secret = connected.box.open(
            TriggerState.get(TriggerState.flow == flow).sealed_subscription)["secret"]
        body = json.dumps({"idempotency_key": "r-1", "email": "client@agency.example",
                           "amount": 1}).encode()
        answer = requests.post(flows.webhook_url(connected, flow), data=body, timeout=10,
                               headers={**sign(secret, "r-1", body),
                                        "Content-Type": "application/json"})
        assert answer.status_code == 200
        assert wait_for(lambda: Run.get().status == Run.SUCCEEDED)
    finally:
        runtime.stop()


def test_a_wsgi_worker_only_records_and_queues(settings, monkeypatch, host):
    from connector.wsgi import create

    monkeypatch.setenv("CONNECTOR_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CONNECTOR_SECRET_KEY", settings.secret_key)
    app = create()
    flow = flows.save(host, {"name": "catch", "trigger": {"key": "webhook.catch"},
                             "steps": [{"action": "formatter.lookup",
                                        "inputs": {"key": "a", "table": {"a": "b"}}}]})
    flows.enable(host, flow)
    answer = app.test_client().post(f"/hooks/{flow.webhook_token}", json={"x": 1})
    assert answer.status_code == 200 and answer.get_json()["accepted"] == 1
    assert Run.get().status == Run.QUEUED  # executing is another process's job


def test_unknown_role_is_refused(host):
    with pytest.raises(ValueError, match="role must be one of"):
        Runtime(host, role="worker")
