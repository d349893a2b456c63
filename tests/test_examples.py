"""The example flows in examples/flows, run as a user would after copying them."""
from __future__ import annotations

import datetime as dt
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from connector import flows
from connector.engine import run_due
from connector.scheduler import Scheduler
from connector.store import Run, StepRun, TriggerState

from .conftest import wait_for

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "flows"
CSV = b"email,amount\nclient@agency.example, 500\nother@agency.example,250\nnobody@agency.example,0\n"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_example_loads_and_exports_back(connected, path):
    flow = flows.save(connected, flows.load_file(path))
    again = flows.save(connected, flows.export(flow))
    assert flows.export(again) == flows.export(flow)


class _Billing(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/csv")
        self.send_header("Content-Length", str(len(CSV)))
        self.end_headers()
        self.wfile.write(CSV)

    def log_message(self, *args):
        pass


@pytest.fixture
def billing(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Billing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("CONNECTOR_HTTP_ALLOW", "127.0.0.1")  # the operator allows it
    yield f"http://127.0.0.1:{server.server_port}/agency/topups.csv"
    server.shutdown()
    server.server_close()


def balances(sandbox):
    return {s["email"]: s["balance"] for s in sandbox.state()["aiconnector"]["subaccounts"]}


@pytest.mark.covers("schedule.cron", "http.request", "formatter.text_to_rows",
                    "looping.for_each", "aiconnector.grant_credits")
def test_monthly_topup_grants_each_listed_subaccount_once_a_month(connected, sandbox, billing):
    data = flows.load_file(EXAMPLES / "monthly-topup.yaml")
    data["steps"][0]["inputs"]["url"] = billing  # the one line a user changes
    flow = flows.save(connected, data)
    flows.enable(connected, flow)
    before = balances(sandbox)
    TriggerState.update(cursor={"last_fire": "2026-01-15T00:00:00+00:00"}).execute()
    scheduler = Scheduler(connected)
    assert scheduler.fire_schedules(dt.datetime.fromisoformat("2026-02-01T09:30:00+01:00")) == 1
    run_due(connected)
    run = Run.get()
    assert run.status == Run.SUCCEEDED, run.error
    after = balances(sandbox)
    assert after["client@agency.example"] == before["client@agency.example"] + 500
    assert after["other@agency.example"] == before["other@agency.example"] + 250
    assert StepRun.get(name="each[2].grant").status == StepRun.FILTERED  # amount 0: skipped
    # the same month fired again (a second scheduler lagging, a replayed run): no new grant
    TriggerState.update(cursor={"last_fire": "2026-01-15T00:00:00+00:00"}).execute()
    Run.delete().execute()
    from connector.store import SeenItem
    SeenItem.delete().execute()
    scheduler.fire_schedules(dt.datetime.fromisoformat("2026-02-01T09:30:00+01:00"))
    run_due(connected)
    assert balances(sandbox) == after
    ledger = sandbox.state()["aiconnector"]["credit_ledger"]
    assert [e["description"] for e in ledger] == ["Monthly top-up 2026-02"] * 2
    # next month grants again
    assert scheduler.fire_schedules(dt.datetime.fromisoformat("2026-03-01T09:30:00+01:00")) == 1
    run_due(connected)
    assert balances(sandbox)["client@agency.example"] == before["client@agency.example"] + 1000


@pytest.mark.covers("webhook.catch", "formatter.phone", "samva.send_message")
def test_webhook_sms_texts_each_lead_once(runtime, sandbox):
    host = runtime.host
    flow = flows.save(host, flows.load_file(EXAMPLES / "webhook-sms.yaml"))
    flows.enable(host, flow)
    token = host.box.open(TriggerState.get(TriggerState.flow == flow).sealed_subscription)[
        "token"]
    url = flows.webhook_url(host, flow)
    form = {"submission_id": "f-1", "name": "Ada", "phone": "(415) 555-0132"}
    for _ in range(2):  # the visitor double-clicks
        answer = requests.post(url, data=form, headers={"X-Webhook-Token": token}, timeout=5)
        assert answer.status_code == 200
    requests.post(url, data={"submission_id": "f-2", "name": "Bo", "phone": "12"},
                  headers={"X-Webhook-Token": token}, timeout=5)
    assert requests.post(url, data=form, timeout=5).status_code == 401  # no token
    assert wait_for(lambda: Run.select().where(Run.status.in_(Run.FINAL)).count() == 2)
    sent = sandbox.state()["samva"]["messages"]
    texts = [m for m in sent if m.get("channel") == "sms" and "Ada" in str(m)]
    assert len(texts) == 1 and texts[0]["to"] == "+14155550132"
    statuses = sorted(r.status for r in Run.select())
    assert statuses == [Run.FILTERED, Run.SUCCEEDED]  # the invalid number texts nobody
