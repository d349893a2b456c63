"""The three example flows end to end: the runtime serving, the sandbox over real HTTP.

Outcomes are checked in the sandbox's own state (calls placed, list members, balances), not
only in the connector's run table.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from connector import flows
from connector.signatures import sign
from connector.store import Run, StepRun, TriggerState

from .conftest import wait_for

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "flows"


def load(host, example: str, **changes):
    data = flows.load_file(EXAMPLES / f"{example}.yaml")
    data.update(changes)
    return flows.save(host, data)


def runs(flow, status=None):
    query = Run.select().where(Run.flow == flow)
    if status:
        query = query.where(Run.status == status)
    return list(query)


def final(flow):
    return [r for r in runs(flow) if r.status in Run.FINAL]


def samora_calls(sandbox):
    return sandbox.state()["samora"]["calls"]


def new_contact(sandbox, name, phone=None):
    fields = {"name": name}
    if phone:
        fields["phone"] = phone
    return sandbox.contacts_api.add_contact("org_demo", **fields)


# -- new contact -> trigger call ------------------------------------------------------------

@pytest.mark.covers("contacts_api.new_contact", "samora.trigger_call")
def test_new_contacts_are_called_once_and_old_ones_never(runtime, sandbox):
    host = runtime.host
    flow = load(host, "new-contact-call")
    flows.enable(host, flow)
    assert SeenCount(flow) == 3  # the seeded contacts were recorded, not fired
    new_contact(sandbox, "Katherine Johnson", "+14155550111")
    new_contact(sandbox, "Edsger Dijkstra", "+31205550112")
    for _ in range(4):
        runtime.scheduler.poll(flow.id)
    assert wait_for(lambda: len(final(flow)) == 2)
    assert all(r.status == Run.SUCCEEDED for r in runs(flow))
    assert wait_for(lambda: len(samora_calls(sandbox)) == 2)
    calls = samora_calls(sandbox)
    assert sorted(c["to_number"] for c in calls) == ["+14155550111", "+31205550112"]
    assert {c["context"]["contact_name"] for c in calls} == {"Katherine Johnson",
                                                            "Edsger Dijkstra"}
    assert all(c["agent_id"] == sandbox.seeded["samora"]["agent_id"] for c in calls)
    runtime.scheduler.poll(flow.id)
    assert len(runs(flow)) == 2


def SeenCount(flow):
    from connector.store import SeenItem
    return SeenItem.select().where(SeenItem.flow == flow).count()


def test_a_contact_without_phone_is_filtered_not_called(runtime, sandbox):
    host = runtime.host
    flow = load(host, "new-contact-call")
    flows.enable(host, flow)
    new_contact(sandbox, "No Phone")
    runtime.scheduler.poll(flow.id)
    assert wait_for(lambda: len(final(flow)) == 1)
    assert runs(flow)[0].status == Run.FILTERED
    assert samora_calls(sandbox) == []


def test_reenabling_does_not_backfill_unless_asked(runtime, sandbox):
    host = runtime.host
    flow = load(host, "new-contact-call")
    flows.enable(host, flow)
    flows.disable(host, flow)
    new_contact(sandbox, "While Off", "+14155550120")
    flows.enable(host, flow)
    runtime.scheduler.poll(flow.id)
    assert runs(flow) == []
    flows.disable(host, flow)
    new_contact(sandbox, "Backfilled", "+14155550121")
    flows.enable(host, flow, backfill=True)
    runtime.scheduler.poll(flow.id)
    assert wait_for(lambda: len(final(flow)) == 1)
    assert runs(flow)[0].item["phone"] == "+14155550121"


def test_a_service_error_fails_the_run_with_its_own_message(runtime, sandbox):
    host = runtime.host
    flow = load(host, "new-contact-call")
    data = flows.export(flow)
    data["steps"][0]["inputs"]["agent_id"] = "00000000-0000-4000-8000-000000000000"
    flow = flows.save(host, data)
    flows.enable(host, flow)
    new_contact(sandbox, "Unknown Agent", "+14155550130")
    runtime.scheduler.poll(flow.id)
    assert wait_for(lambda: len(final(flow)) == 1)
    run = runs(flow)[0]
    assert run.status == Run.FAILED and "HTTP 404 AGENT_NOT_FOUND" in run.error


# -- call finished -> create contact -> add to list -----------------------------------------

def trigger_call(sandbox, number):
    creds = sandbox.connections()["samora"]
    answer = requests.post(f"{creds['base_url']}/v1/call/trigger", timeout=10,
                           headers={"X-API-Key": creds["credentials"]["api_key"]},
                           json={"agent_id": sandbox.seeded["samora"]["agent_id"],
                                 "to_number": number, "context": {"contact_name": "Ada"}})
    answer.raise_for_status()
    return answer.json()["call_id"]


@pytest.mark.covers("samora.call_finished", "aiconnector.create_contact",
                     "aiconnector.add_to_list")
def test_finished_call_creates_contact_and_adds_it_to_the_list(runtime, sandbox):
    host = runtime.host
    flow = load(host, "call-finished-add-to-list")
    flows.enable(host, flow)
    hooks = sandbox.state()["samora"]["webhooks"]
    assert len(hooks) == 1 and hooks[0]["events"] == ["CALL_FINISHED"]
    assert hooks[0]["url"] == flows.webhook_url(host, flow)
    trigger_call(sandbox, "+14155550140")
    trigger_call(sandbox, "+14155550140")  # a second call to the same person
    assert wait_for(lambda: len(final(flow)) == 2, timeout=20)
    assert all(r.status == Run.SUCCEEDED for r in runs(flow))
    ai = sandbox.state()["aiconnector"]
    contacts = [c for c in ai["contacts"] if c["phone"] == "+14155550140"]
    assert len(contacts) == 1  # the service returned the existing contact the second time
    members = next(lst for lst in ai["lists"] if lst["id"] == "lst_demo")["members"]
    assert members == [contacts[0]["id"]]
    for run in runs(flow):
        steps = {s.name: s for s in run.step_runs}
        assert steps["add_to_list"].inputs["contact_id"] == steps["contact"].output["id"]
        assert steps["contact"].inputs["firstName"] == "Ada"


def test_switching_off_deletes_the_samora_webhook(runtime, sandbox):
    host = runtime.host
    flow = load(host, "call-finished-add-to-list")
    flows.enable(host, flow)
    url = flows.webhook_url(host, flow)
    assert len(sandbox.state()["samora"]["webhooks"]) == 1
    assert flows.disable(host, flow) == []
    assert sandbox.state()["samora"]["webhooks"] == []
    assert TriggerState.get(TriggerState.flow == flow).sealed_subscription is None
    answer = requests.post(url, json={"event": "CALL_FINISHED"}, timeout=10)
    assert answer.status_code == 404


def test_a_replayed_delivery_and_a_forged_one_make_no_run(runtime, sandbox):
    host = runtime.host
    flow = load(host, "call-finished-add-to-list")
    flows.enable(host, flow)
    secret = host.box.open(TriggerState.get(TriggerState.flow == flow).sealed_subscription)
    body = json.dumps({"event": "CALL_FINISHED", "call_id": "call-x",
                       "data": {"call_id": "call-x", "to_number": "+14155550150",
                                "status": "CALL_FINISHED"}}).encode()
    url = flows.webhook_url(host, flow)
    for msg_id, expected in (("msg_1", {"accepted": 1, "duplicates": 0}),
                             ("msg_2", {"accepted": 0, "duplicates": 1})):
        headers = {**sign(secret["secret"], msg_id, body), "Content-Type": "application/json"}
        answer = requests.post(url, data=body, headers=headers, timeout=10)
        assert answer.status_code == 200 and answer.json() == expected
    forged = {**sign("whsec_" + "A" * 32, "msg_3", body), "Content-Type": "application/json"}
    answer = requests.post(url, data=body, headers=forged, timeout=10)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "INVALID_SIGNATURE"
    assert wait_for(lambda: len(final(flow)) == 1)
    assert len(runs(flow)) == 1


# -- auto-recharge -> grant credits --------------------------------------------------------

def enable_recharge(host, sandbox, name="auto-recharge-credits"):
    flow = load(host, "auto-recharge-credits", name=name)
    flows.enable(host, flow)
    secret = host.box.open(TriggerState.get(TriggerState.flow == flow).sealed_subscription)
    assert secret["secret"].startswith("whsec_")
    return flow, secret["secret"]


def post_recharge(host, flow, secret, key, email, amount):
    body = json.dumps({"event": "auto_recharge", "idempotency_key": key, "email": email,
                       "amount": amount}).encode()
    headers = {**sign(secret, key, body), "Content-Type": "application/json"}
    return requests.post(flows.webhook_url(host, flow), data=body, headers=headers, timeout=10)


def balance(sandbox, email="client@agency.example"):
    subs = sandbox.state()["aiconnector"]["subaccounts"]
    return next(s["balance"] for s in subs if s["email"] == email)


@pytest.mark.covers("aiconnector.auto_recharge", "aiconnector.grant_credits")
def test_auto_recharge_delivered_twice_grants_once(runtime, sandbox):
    host = runtime.host
    flow, secret = enable_recharge(host, sandbox)
    sandbox.configure_auto_recharge(flows.webhook_url(host, flow), secret)
    before = balance(sandbox)
    fired = sandbox.fire_auto_recharge("client@agency.example", 500, times=2)
    assert wait_for(lambda: len(final(flow)) == 1)
    sandbox.wait_idle(5)
    assert balance(sandbox) == before + 500
    ledger = sandbox.state()["aiconnector"]["credit_ledger"]
    assert len(ledger) == 1 and fired["idempotency_key"] in ledger[0]["description"]
    assert len(runs(flow)) == 1 and runs(flow)[0].status == Run.SUCCEEDED
    step = StepRun.get(StepRun.run == runs(flow)[0])
    assert step.output["new_balance"] == before + 500
    sandbox.fire_auto_recharge("client@agency.example", 100)  # a new key grants again
    assert wait_for(lambda: len(final(flow)) == 2)
    assert balance(sandbox) == before + 600


def test_one_recharge_reaching_two_flows_still_grants_once(runtime, sandbox):
    host = runtime.host
    first, first_secret = enable_recharge(host, sandbox, "recharge-a")
    second, second_secret = enable_recharge(host, sandbox, "recharge-b")
    before = balance(sandbox)
    for flow, secret in ((first, first_secret), (second, second_secret)):
        answer = post_recharge(host, flow, secret, "ar-shared-1", "client@agency.example", 250)
        assert answer.status_code == 200
    assert wait_for(lambda: len(final(first)) == 1 and len(final(second)) == 1)
    assert balance(sandbox) == before + 250
    assert len(sandbox.state()["aiconnector"]["credit_ledger"]) == 1
    assert {r.status for r in runs(first) + runs(second)} == {Run.SUCCEEDED}


def test_recharge_for_an_unknown_subaccount_fails_with_the_services_message(runtime, sandbox):
    host = runtime.host
    flow, secret = enable_recharge(host, sandbox)
    assert post_recharge(host, flow, secret, "ar-9", "nobody@agency.example", 5).status_code == 200
    assert wait_for(lambda: len(final(flow)) == 1)
    run = runs(flow)[0]
    assert run.status == Run.FAILED and "HTTP 404 SUBACCOUNT_NOT_FOUND" in run.error


# -- the demo, as a user runs it --------------------------------------------------------------

@pytest.mark.slow
def test_connector_demo_exits_zero_with_its_summary_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    done = subprocess.run([sys.executable, "-m", "connector.cli", "demo"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == "demo: 7 runs succeeded, 0 failed"
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing left in the working directory


def test_auto_recharge_keeps_its_signing_secret_across_off_and_on(runtime, sandbox):
    host = runtime.host
    flow, secret = enable_recharge(host, sandbox)
    flows.disable(host, flow)
    assert post_recharge(host, flow, secret, "ar-off", "client@agency.example", 1
                         ).status_code == 404  # off: nobody listens
    flows.enable(host, flow)
    again = host.box.open(TriggerState.get(TriggerState.flow == flow).sealed_subscription)
    assert again["secret"] == secret  # what the user pasted into AI Connector still works
    assert post_recharge(host, flow, secret, "ar-on", "client@agency.example", 1
                         ).status_code == 200


def test_webhook_urls_follow_the_running_serve_from_another_process(runtime, sandbox,
                                                                     settings):
    from connector.host import Host

    assert settings.port == 0  # this shell's settings know nothing of the serve's port
    other = Host(settings)  # another shell on the same database
    flow = load(other, "call-finished-add-to-list")
    flows.enable(other, flow)
    served = f"http://127.0.0.1:{runtime.host.settings.port}/hooks/"
    assert sandbox.state()["samora"]["webhooks"][0]["url"].startswith(served)
    trigger_call(sandbox, "+14155550160")
    assert wait_for(lambda: len(final(flow)) == 1, timeout=20)


def test_new_contact_polls_ignore_old_contacts_even_when_their_keys_are_gone(runtime, sandbox):
    from connector.store import SeenItem

    host = runtime.host
    flow = load(host, "new-contact-call")
    flows.enable(host, flow)
    SeenItem.delete().execute()  # as if retention had pruned the keys of the old contacts
    new_contact(sandbox, "Fresh", "+14155550170")
    runtime.scheduler.poll(flow.id)
    assert wait_for(lambda: len(final(flow)) == 1)
    assert [r.item["name"] for r in runs(flow)] == ["Fresh"]


def test_switching_on_keeps_the_cursor_the_priming_poll_saved(runtime, sandbox):
    host = runtime.host
    flow = load(host, "new-contact-call")
    flows.enable(host, flow)
    cursor = TriggerState.get(TriggerState.flow == flow).cursor
    newest = max(c["created_at"] for c in sandbox.state()["contacts_api"]["contacts"]["org_demo"])
    assert cursor["newest_created_at"] == newest
    assert set(cursor["window"]) <= {c["id"] for c in
                                     sandbox.state()["contacts_api"]["contacts"]["org_demo"]}
