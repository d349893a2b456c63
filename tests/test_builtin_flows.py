"""Built-in apps over HTTP: catch webhook, schedules, for each, paths, delay (with restarts)."""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json

import pytest
import requests

from connector import Action, App, flows, hookimpl
from connector.engine import run_due
from connector.host import Host
from connector.runtime import Runtime
from connector.scheduler import Scheduler
from connector.signatures import sign
from connector.store import Run, StepRun, TriggerState, utcnow

from .conftest import connection_name, wait_for

CRASH_AT: dict = {}


class Crash(BaseException):
    """Stands for the process dying mid-run: nothing in the engine catches it."""


class ProbeApp(App):
    key = "probe"
    label = "Probe"


class Maybe(Action):
    """Dies (Crash) the first time it runs at a path listed in CRASH_AT, else echoes."""

    key = "probe.maybe_crash"
    app = "probe"
    label = "Maybe crash"
    needs_connection = False

    def run(self, ctx, inputs):
        if CRASH_AT.pop(ctx.step_name, None):
            raise Crash(ctx.step_name)
        return {"at": ctx.step_name}


class ProbePlugin:
    @hookimpl
    def register_apps(self, register):
        register(ProbeApp)

    @hookimpl
    def register_actions(self, register):
        register(Maybe)


@pytest.fixture
def built(make_host, sandbox):
    CRASH_AT.clear()
    host = make_host(extra_plugins=[ProbePlugin()])
    for app, info in sandbox.connections().items():
        if app in host.catalog.apps:
            host.add_connection(connection_name(app), app, info["credentials"],
                                info["base_url"])
    return host


@pytest.fixture
def served(built):
    runtime = Runtime(built)
    runtime.start(port=0)
    yield runtime
    runtime.stop()


def catch_flow(host, name="catch", steps=None, **inputs):
    flow = flows.save(host, {"name": name, "trigger": {"key": "webhook.catch", "inputs": inputs},
                             "steps": steps or [{"name": "echo", "action": "probe.maybe_crash"}]})
    flows.enable(host, flow)
    return flows.get(name)


def subscription(host, flow) -> dict:
    return host.box.open(TriggerState.get(TriggerState.flow == flow).sealed_subscription)


def items(flow):
    return [r.item for r in Run.select().where(Run.flow == flow).order_by(Run.id)]


# -- webhook.catch ----------------------------------------------------------------------------

@pytest.mark.covers("webhook.catch")
def test_catch_turns_json_form_and_text_posts_into_items(served):
    host = served.host
    flow = catch_flow(host)
    url = flows.webhook_url(host, flow)
    assert requests.post(url, json={"order": 1}, timeout=5).status_code == 200
    assert requests.post(url, data={"name": "Ada", "tag": ["a", "b"]}, timeout=5).status_code == 200
    assert requests.post(url, data="hello", headers={"Content-Type": "text/plain"},
                         timeout=5).status_code == 200
    assert requests.post(url, json=[{"n": 1}, {"n": 2}], timeout=5).json()["accepted"] == 2
    assert items(flow) == [{"order": 1}, {"name": "Ada", "tag": ["a", "b"]}, {"body": "hello"},
                           {"n": 1}, {"n": 2}]
    assert wait_for(lambda: Run.select().where(Run.status == Run.SUCCEEDED).count() == 5)


@pytest.mark.covers("webhook.catch")
def test_items_path_and_dedupe_field(served):
    host = served.host
    flow = catch_flow(host, items_path="data.orders", dedupe_field="id")
    url = flows.webhook_url(host, flow)
    body = {"data": {"orders": [{"id": "A1"}, {"id": "A2"}]}}
    assert requests.post(url, json=body, timeout=5).json() == {"accepted": 2, "duplicates": 0}
    body["data"]["orders"].append({"id": "A3"})
    assert requests.post(url, json=body, timeout=5).json() == {"accepted": 1, "duplicates": 2}
    missing = requests.post(url, json={"data": {}}, timeout=5)
    assert missing.status_code == 400 and "data.orders" in missing.json()["error"]["message"]
    no_id = requests.post(url, json={"data": {"orders": [{"x": 1}]}}, timeout=5)
    assert no_id.status_code == 400 and "dedupe_field 'id'" in no_id.json()["error"]["message"]
    assert [i["id"] for i in items(flow)] == ["A1", "A2", "A3"]


@pytest.mark.covers("webhook.catch")
def test_without_a_unique_field_every_request_is_new_unless_webhook_id(served):
    host = served.host
    flow = catch_flow(host)
    url = flows.webhook_url(host, flow)
    for _ in range(2):
        requests.post(url, json={"same": True}, timeout=5)
    for _ in range(2):
        requests.post(url, json={"same": True}, headers={"webhook-id": "msg_1"}, timeout=5)
    assert len(items(flow)) == 3


@pytest.mark.covers("webhook.catch")
def test_token_protection(served):
    host = served.host
    flow = catch_flow(host, auth="token")
    token = subscription(host, flow)["token"]
    url = flows.webhook_url(host, flow)
    assert requests.post(url, json={}, timeout=5).status_code == 401
    assert requests.post(url, json={}, headers={"X-Webhook-Token": "nope"},
                         timeout=5).status_code == 401
    assert requests.post(url, json={}, headers={"X-Webhook-Token": token},
                         timeout=5).status_code == 200
    assert requests.post(f"{url}?token={token}", json={}, timeout=5).status_code == 200
    flows.disable(host, flow)
    flows.enable(host, flows.get("catch"))
    assert subscription(host, flow)["token"] == token  # the sender keeps working


@pytest.mark.covers("webhook.catch")
def test_basic_protection(served):
    host = served.host
    flow = catch_flow(host, auth="basic", username="billing")
    password = subscription(host, flow)["password"]
    url = flows.webhook_url(host, flow)
    assert requests.post(url, json={}, auth=("billing", password), timeout=5).status_code == 200
    assert requests.post(url, json={}, auth=("billing", "x"), timeout=5).status_code == 401
    assert requests.post(url, json={}, auth=("other", password), timeout=5).status_code == 401
    assert requests.post(url, json={}, timeout=5).status_code == 401


@pytest.mark.covers("webhook.catch")
def test_standard_webhooks_protection(served):
    host = served.host
    flow = catch_flow(host, auth="standard_webhooks")
    secret = subscription(host, flow)["secret"]
    url = flows.webhook_url(host, flow)
    body = b'{"event": "paid"}'
    good = {**sign(secret, "msg_9", body), "Content-Type": "application/json"}
    assert requests.post(url, data=body, headers=good, timeout=5).status_code == 200
    bad = {**good, "webhook-signature": "v1,AAAA"}
    assert requests.post(url, data=body, headers=bad, timeout=5).status_code == 401


@pytest.mark.covers("webhook.catch")
@pytest.mark.parametrize("encoding,prefix", [("hex", "sha256="), ("base64", "")])
def test_plain_hmac_protection(served, encoding, prefix):
    host = served.host
    flow = catch_flow(host, auth="hmac_sha256", secret="s3cret", signature_header="X-Hub-Sig",
                      signature_encoding=encoding, signature_prefix=prefix)
    url = flows.webhook_url(host, flow)
    body = b'{"ref": "main"}'
    digest = hmac.new(b"s3cret", body, hashlib.sha256).digest()
    value = prefix + (digest.hex() if encoding == "hex" else base64.b64encode(digest).decode())
    headers = {"Content-Type": "application/json", "X-Hub-Sig": value}
    assert requests.post(url, data=body, headers=headers, timeout=5).status_code == 200
    assert requests.post(url, data=body + b" ", headers=headers, timeout=5).status_code == 401
    assert requests.post(url, data=body, headers={"Content-Type": "application/json"},
                         timeout=5).status_code == 401


@pytest.mark.covers("webhook.catch")
def test_synchronous_flow_answers_with_its_last_step(served):
    host = served.host
    flow = catch_flow(host, respond="last_step", respond_timeout=5, steps=[
        {"name": "first", "action": "probe.maybe_crash"},
        {"name": "answer", "action": "probe.maybe_crash"}])
    answer = requests.post(flows.webhook_url(host, flow), json={"plan": "gold"}, timeout=10)
    assert answer.status_code == 200 and answer.json() == {"at": "answer"}
    CRASH_AT.clear()
    failing = catch_flow(host, "failing", respond="last_step", steps=[
        {"name": "grant", "action": "aiconnector.grant_credits", "connection": "aiconnector",
         "inputs": {"email": "nobody@agency.example", "amount": 1}}])
    answer = requests.post(flows.webhook_url(host, failing), json={}, timeout=10)
    assert answer.status_code == 500 and answer.json()["error"]["code"] == "RUN_FAILED"
    assert "SUBACCOUNT_NOT_FOUND" in answer.json()["error"]["message"]


# -- schedules --------------------------------------------------------------------------------

@pytest.mark.covers("schedule.interval")
def test_interval_schedule_fires_on_its_grid(built):
    flow = flows.save(built, {"name": "every", "trigger": {
        "key": "schedule.interval", "inputs": {"every": 15, "unit": "minutes",
                                               "start": "2026-01-01T09:05:00",
                                               "timezone": "Europe/Amsterdam"}},
        "steps": [{"action": "probe.maybe_crash"}]})
    flows.enable(built, flow)
    TriggerState.update(cursor={"last_fire": "2026-03-02T10:00:00+01:00"}).execute()
    scheduler = Scheduler(built)
    now = dt.datetime.fromisoformat("2026-03-02T10:21:00+01:00")
    assert scheduler.fire_schedules(now) == 1
    assert Run.get().item == {"scheduled_at": "2026-03-02T10:20:00+01:00",
                              "timezone": "Europe/Amsterdam"}
    assert scheduler.fire_schedules(now) == 0


@pytest.mark.covers("schedule.cron")
def test_cron_schedule_in_a_time_zone(built):
    flow = flows.save(built, {"name": "monthly", "trigger": {
        "key": "schedule.cron", "inputs": {"cron": "0 9 1 * *", "timezone": "America/New_York"}},
        "steps": [{"action": "probe.maybe_crash"}]})
    flows.enable(built, flow)
    TriggerState.update(cursor={"last_fire": "2026-01-15T00:00:00+00:00"}).execute()
    assert Scheduler(built).fire_schedules(
        dt.datetime.fromisoformat("2026-02-01T14:30:00+00:00")) == 1
    assert Run.get().item["scheduled_at"] == "2026-02-01T09:00:00-05:00"
    run_due(built)
    assert Run.get().status == Run.SUCCEEDED


@pytest.mark.parametrize("inputs,field", [
    ({"cron": "61 * * * *"}, "cron"), ({"cron": "0 9 * * *", "timezone": "Mars/Base"}, "timezone"),
])
def test_bad_schedules_name_the_field(built, inputs, field):
    with pytest.raises(Exception, match=f"trigger.inputs.{field}"):
        flows.save(built, {"name": "bad", "trigger": {"key": "schedule.cron", "inputs": inputs},
                           "steps": [{"action": "probe.maybe_crash"}]})


# -- for each -----------------------------------------------------------------------------------

def credit_ledger(sandbox):
    return [(e["email"], e["amount"]) for e in sandbox.state()["aiconnector"]["credit_ledger"]]


LOOP_STEPS = [{"name": "each", "action": "looping.for_each",
               "inputs": {"items": "{{ trigger.accounts }}", "max_items": 10},
               "steps": [
                   {"name": "grant", "action": "aiconnector.grant_credits",
                    "connection": "aiconnector",
                    "inputs": {"email": "{{ item.email }}", "amount": "{{ item.amount }}",
                               "idempotency_key": "{{ trigger.batch }}-{{ index }}"}},
                   {"name": "after", "action": "probe.maybe_crash"}]}]
ACCOUNTS = [{"email": "client@agency.example", "amount": 5},
            {"email": "other@agency.example", "amount": 7},
            {"email": "client@agency.example", "amount": 11}]


@pytest.mark.covers("looping.for_each", "aiconnector.grant_credits")
def test_for_each_runs_nested_steps_per_element(served, sandbox):
    host = served.host
    flow = catch_flow(host, steps=LOOP_STEPS)
    requests.post(flows.webhook_url(host, flow), json={"batch": "b1", "accounts": ACCOUNTS},
                  timeout=5)
    assert wait_for(lambda: Run.get().status == Run.SUCCEEDED)
    assert credit_ledger(sandbox) == [("client@agency.example", 5),
                                      ("other@agency.example", 7),
                                      ("client@agency.example", 11)]
    names = [s.name for s in StepRun.select().order_by(StepRun.id)]
    assert names == ["each", "each[0].grant", "each[0].after", "each[1].grant",
                     "each[1].after", "each[2].grant", "each[2].after"]
    loop = StepRun.get(name="each").output
    assert loop["count"] == 3 and loop["iterations"][1]["grant"]["credits_added"] == 7


def test_for_each_resumes_after_a_crash_without_repeating_an_element(built, sandbox):
    flow = catch_flow(built, steps=LOOP_STEPS)
    from connector.intake import ingest

    ingest(flow, built.catalog.trigger("webhook.catch"),
           [("k", {"batch": "b2", "accounts": ACCOUNTS})])
    CRASH_AT["each[1].after"] = True  # dies after element 1's credits were granted
    with pytest.raises(Crash):
        run_due(built)
    assert Run.get().status == Run.RUNNING
    assert len(credit_ledger(sandbox)) == 2
    Run.update(lease_until=utcnow() - dt.timedelta(seconds=1)).execute()  # the lease runs out
    restarted = Host(built.settings, catalog=built.catalog)  # a new process, same database
    assert run_due(restarted) == 1
    assert Run.get().status == Run.SUCCEEDED
    assert len(credit_ledger(sandbox)) == 3  # element 1 was not granted twice
    assert StepRun.get(name="each[1].grant").attempts == 1


def test_for_each_caps_the_list(built):
    flow = catch_flow(built, steps=[{"name": "each", "action": "looping.for_each",
                                     "inputs": {"items": "{{ trigger.rows }}", "max_items": 2},
                                     "steps": [{"name": "x", "action": "probe.maybe_crash"}]}])
    from connector.intake import ingest

    ingest(flow, built.catalog.trigger("webhook.catch"), [("k", {"rows": "a\nb\nc"})])
    run_due(built)
    assert Run.get().status == Run.FAILED and "more than max_items (2)" in Run.get().error


def test_nested_steps_are_validated_with_their_place(built):
    with pytest.raises(Exception, match=r"steps\[0\]\.steps\[0\]\.inputs\.email"):
        flows.save(built, {"name": "bad", "trigger": {"key": "webhook.catch"}, "steps": [
            {"name": "each", "action": "looping.for_each", "inputs": {"items": []},
             "steps": [{"action": "aiconnector.grant_credits", "inputs": {"amount": 1}}]}]})
    with pytest.raises(Exception, match=r"steps\[0\]\.steps"):
        flows.save(built, {"name": "bad", "trigger": {"key": "webhook.catch"}, "steps": [
            {"name": "each", "action": "looping.for_each", "inputs": {"items": []}}]})
    with pytest.raises(Exception, match="runs inside a loop"):
        flows.save(built, {"name": "bad", "trigger": {"key": "webhook.catch"}, "steps": [
            {"name": "each", "action": "looping.for_each", "inputs": {"items": []},
             "steps": [{"name": "inner", "action": "probe.maybe_crash"}]},
            {"name": "out", "action": "looping.for_each",
             "inputs": {"items": "{{ steps.inner.at }}"},
             "steps": [{"name": "z", "action": "probe.maybe_crash"}]}]})


# -- paths --------------------------------------------------------------------------------------

PATH_STEPS = [{"name": "route", "action": "paths.split", "inputs": {"mode": "all"}, "branches": [
    {"name": "large", "conditions": [{"field": "trigger.amount", "op": "gte", "value": 100}],
     "steps": [{"name": "big", "action": "probe.maybe_crash"},
               {"name": "big2", "action": "probe.maybe_crash"}]},
    {"name": "vip", "conditions": [{"field": "trigger.vip", "op": "equals", "value": True}],
     "steps": [{"name": "vip_step", "action": "probe.maybe_crash"}]},
    {"name": "otherwise", "steps": [{"name": "small", "action": "probe.maybe_crash"}]}]},
    {"name": "end", "action": "probe.maybe_crash"}]


@pytest.mark.covers("paths.split")
@pytest.mark.parametrize("mode,item,expected", [
    ("all", {"amount": 500, "vip": True}, ["large", "vip", "otherwise"]),
    ("first", {"amount": 500, "vip": True}, ["large"]),
    ("first", {"amount": 5, "vip": True}, ["vip"]),
    ("first", {"amount": 5, "vip": False}, ["otherwise"]),
])
def test_paths_run_the_matching_branches(served, mode, item, expected):
    host = served.host
    steps = json.loads(json.dumps(PATH_STEPS))
    steps[0]["inputs"]["mode"] = mode
    flow = catch_flow(host, steps=steps)
    requests.post(flows.webhook_url(host, flow), json=item, timeout=5)
    assert wait_for(lambda: Run.get().status == Run.SUCCEEDED)
    assert StepRun.get(name="route").output == {"matched": expected}
    ran = {s.name for s in StepRun.select()}
    branch_steps = {"large": {"big", "big2"}, "vip": {"vip_step"}, "otherwise": {"small"}}
    for branch, names in branch_steps.items():
        assert (names <= ran) == (branch in expected)
    assert "end" in ran


def test_paths_resume_in_the_chosen_branch_after_a_crash(built):
    flow = catch_flow(built, steps=PATH_STEPS)
    from connector.intake import ingest

    ingest(flow, built.catalog.trigger("webhook.catch"), [("k", {"amount": 500})])
    CRASH_AT["big2"] = True
    with pytest.raises(Crash):
        run_due(built)
    Run.update(item={"amount": 1}, lease_until=utcnow() - dt.timedelta(seconds=1)).execute()
    run_due(Host(built.settings, catalog=built.catalog))
    assert Run.get().status == Run.SUCCEEDED
    assert StepRun.get(name="route").output == {"matched": ["large", "otherwise"]}
    assert StepRun.get(name="big").attempts == 1 and StepRun.get(name="big2").attempts == 1


# -- delay ---------------------------------------------------------------------------------------

@pytest.mark.covers("delay.for")
def test_delay_parks_the_run_and_survives_a_restart(built, sandbox):
    flow = catch_flow(built, steps=[
        {"name": "wait", "action": "delay.for", "inputs": {"amount": 1, "unit": "seconds"}},
        {"name": "after", "action": "probe.maybe_crash"}])
    first = Runtime(built)
    first.start(port=0)
    requests.post(flows.webhook_url(built, flow), json={}, timeout=5)
    assert wait_for(lambda: Run.get().status == Run.WAITING)
    assert StepRun.get(name="wait").status == StepRun.PARKED
    assert first.executor.idle()  # no worker is held while it waits
    first.stop()  # the host goes down
    parked = Run.get()
    assert parked.status == Run.WAITING and parked.next_attempt_at > utcnow() - dt.timedelta(
        seconds=1)
    second = Runtime(Host(built.settings, catalog=built.catalog))
    second.start(port=0)
    try:
        assert wait_for(lambda: Run.get().status == Run.SUCCEEDED, timeout=10)
    finally:
        second.stop()
    wait = StepRun.get(name="wait")
    assert wait.output["resumed_at"] >= wait.output["until"][:19]
    assert StepRun.get(name="after").status == StepRun.SUCCEEDED


@pytest.mark.covers("delay.until")
def test_delay_until_a_time_past_or_ahead(built):
    flow = catch_flow(built, steps=[
        {"name": "wait", "action": "delay.until",
         "inputs": {"until": "{{ trigger.when }}", "timezone": "Asia/Kolkata"}},
        {"name": "after", "action": "probe.maybe_crash"}])
    from connector.intake import ingest

    trigger = built.catalog.trigger("webhook.catch")
    ingest(flow, trigger, [("past", {"when": "2020-01-01T09:00"})])
    ahead = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)).isoformat()
    ingest(flow, trigger, [("ahead", {"when": ahead})])
    run_due(built)
    past, later = list(Run.select().order_by(Run.id))
    assert past.status == Run.SUCCEEDED
    assert later.status == Run.WAITING
    assert abs((later.next_attempt_at - (utcnow() + dt.timedelta(hours=2))).total_seconds()) < 5
    assert run_due(built) == 0  # not due: nothing is claimed


@pytest.mark.covers("formatter.text", "formatter.number", "formatter.date", "formatter.lookup")
def test_formatters_over_http_answer_a_synchronous_webhook(served):
    host = served.host
    flow = catch_flow(host, "format", respond="last_step", steps=[
        {"name": "name", "action": "formatter.text",
         "inputs": {"operation": "title", "text": "{{ trigger.name }}"}},
        {"name": "total", "action": "formatter.number",
         "inputs": {"operation": "parse", "value": "{{ trigger.total }}",
                    "decimal_separator": ","}},
        {"name": "due", "action": "formatter.date",
         "inputs": {"operation": "add", "date": "{{ trigger.ordered }}", "amount": 1,
                    "unit": "months", "format": "date"}},
        {"name": "answer", "action": "formatter.lookup",
         "inputs": {"key": "{{ trigger.plan }}", "table": {"gold": "Priority", "basic": "Std"},
                    "default": "Unknown"}}])
    answer = requests.post(flows.webhook_url(host, flow), timeout=10, json={
        "name": "ada lovelace", "total": "1.234,50", "ordered": "2026-01-31", "plan": "gold"})
    assert answer.status_code == 200 and answer.json()["result"] == "Priority"
    outputs = {s.name: s.output for s in StepRun.select()}
    assert outputs["name"]["result"] == "Ada Lovelace"
    assert outputs["total"]["result"] == 1234.5
    assert outputs["due"]["result"] == "2026-02-28"  # a month after Jan 31 clamps to Feb 28
