"""Samora AI against its sandbox over HTTP: calls, campaigns and their lifecycle, call events.

Actions run with a real ActionContext (the host's client and idempotency ledger) or inside
saved flows run by the engine; triggers through switched-on flows receiving the sandbox's
signed deliveries. Outcomes are checked in the sandbox's own state.
"""
from __future__ import annotations

import pytest
import requests
from marshmallow import ValidationError

from connector import (
    FatalAPIError, JSONBody, RetriableAPIError, UserError, engine, flows, intake,
)
from connector.sdk import ActionContext
from connector.store import IdempotencyRecord, Run, StepRun

from .conftest import wait_for

AGENT = "123e4567-e89b-12d3-a456-426614174000"
OTHER_AGENT = "9f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f"
HEADERS = {"X-API-Key": "sam_test_key"}


# Helpers

def act(host, key, inputs, idem="step-key-1", client=None):
    """Load ``inputs`` as the engine does and run action ``key`` with a real context."""
    action = host.catalog.action(key)
    data = action.Inputs().load(inputs)
    own = client is None
    client = client or host.client(host.connection("samora"))
    ctx = ActionContext(flow_name="test", run_id=0, step_name="step", idempotency_key=idem,
                        client=client,
                        once=lambda k, request, call: engine.once(key, k, request, call))
    try:
        return action.run(ctx, data)
    finally:
        if own:
            client.close()


def load(host, key, inputs):
    return host.catalog.action(key).Inputs().load(inputs)


def api(sandbox, method, path, **kwargs):
    with requests.Session() as session:
        session.trust_env = False
        return session.request(method, sandbox.urls["samora"] + path,
                               headers={**HEADERS, **kwargs.pop("headers", {})}, timeout=10,
                               **kwargs)


def error_of(response, status, code):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    return error


def campaign_state(sandbox, campaign_id):
    return next(c for c in sandbox.state()["samora"]["campaigns"] if c["id"] == campaign_id)


def new_campaign(host, name="Renewals", **retry):
    return act(host, "samora.create_campaign", {"agent_id": AGENT, "name": name, **retry},
               idem=f"create-{name}")


class Recording:
    """Wrap an API client: record each POST body's size; fail the POSTs listed in ``fail``."""

    def __init__(self, client, fail=()):
        self.client, self.fail, self.sizes, self.posts = client, set(fail), [], 0

    def post(self, path, **kwargs):
        self.posts += 1
        if self.posts in self.fail:
            raise RetriableAPIError("Samora AI is unavailable (simulated)", status=503)
        body = kwargs["json"]  # bulk bodies come encoded once (connector.JSONBody)
        self.sizes.append(len(body.data) if isinstance(body, JSONBody) else
                          len(requests.models.complexjson.dumps(body).encode()))
        return self.client.post(path, **kwargs)

    def __getattr__(self, name):
        return getattr(self.client, name)


# Calls

@pytest.mark.covers("samora.trigger_call", "samora.get_call")
def test_trigger_call_once_then_get_it_with_transcript_and_recording(connected, sandbox):
    inputs = {"agent_id": AGENT, "to_number": "+91 98765-43210",
              "context": {"first_name": "Asha"}}
    placed = act(connected, "samora.trigger_call", inputs)
    again = act(connected, "samora.trigger_call", inputs)  # a retried step: the ledger answers
    assert again == placed and placed["status"] == "PENDING"
    calls = sandbox.state()["samora"]["calls"]
    assert [c["to_number"] for c in calls] == ["+919876543210"]
    assert calls[0]["context"] == {"first_name": "Asha"}
    with pytest.raises(Exception, match="different inputs"):
        act(connected, "samora.trigger_call", {**inputs, "to_number": "+14155550199"})

    assert sandbox.wait_idle(5)
    call = act(connected, "samora.get_call", {"call_id": placed["call_id"]})
    assert call["status"] == "CALL_FINISHED" and call["campaign_id"] is None
    transcript = requests.get(call["transcript_url"], timeout=10)
    assert transcript.status_code == 200 and "Asha" in transcript.text
    assert requests.get(call["recording_url"], timeout=10).content.startswith(b"RIFF")

    unanswered = act(connected, "samora.trigger_call",
                     {"agent_id": AGENT, "to_number": "+14155550000"}, idem="step-key-2")
    assert sandbox.wait_idle(5)
    details = act(connected, "samora.get_call", {"call_id": unanswered["call_id"]})
    assert details["status"] == "UNANSWERED"
    assert "transcript_url" not in details and "recording_url" not in details
    with pytest.raises(FatalAPIError, match="CALL_NOT_FOUND|does not exist") as err:
        act(connected, "samora.get_call", {"call_id": "00000000-0000-4000-8000-000000000000"})
    assert err.value.status == 404


def test_phone_numbers_follow_the_document_and_phonenumbers(connected):
    for good, expected in (("+1 (415) 555-0199", "+14155550199"),
                           ("+91.98765.43210", "+919876543210")):
        assert load(connected, "samora.trigger_call",
                    {"agent_id": AGENT, "to_number": good})["to_number"] == expected
    for bad in ("4155550199", "+1415", "+1234567890123456", "+91abc4567890", "+99912345678"):
        with pytest.raises(ValidationError, match="E.164"):
            load(connected, "samora.trigger_call", {"agent_id": AGENT, "to_number": bad})
    with pytest.raises(ValidationError, match="agent_id"):
        load(connected, "samora.trigger_call", {"agent_id": "agent-1",
                                                "to_number": "+14155550199"})


def test_a_body_over_2_mib_fails_before_sending(connected, sandbox):
    big = {"notes": "x" * (2 * 1024 * 1024)}
    with pytest.raises(UserError, match=r"2 MiB"):
        act(connected, "samora.trigger_call",
            {"agent_id": AGENT, "to_number": "+14155550199", "context": big})
    assert sandbox.state()["samora"]["calls"] == []
    assert IdempotencyRecord.select().count() == 0  # nothing left pending in the ledger


# Call events

def event_flow(host, key, name, **inputs):
    return flows.save(host, {
        "name": name, "trigger": {"key": key, "connection": "samora", "inputs": inputs},
        "steps": [{"name": "details", "action": "samora.get_call", "connection": "samora",
                   "inputs": {"call_id": "{{ trigger.call_id }}"}}]})


def items(flow):
    return sorted((r.item for r in Run.select().where(Run.flow == flow)),
                  key=lambda item: item["to_number"])


@pytest.mark.covers("samora.call_started", "samora.call_finished", "samora.call_failed",
                    "samora.get_call")
def test_call_events_subscribe_fire_once_each_and_unsubscribe(runtime, sandbox):
    host = runtime.host
    started = event_flow(host, "samora.call_started", "started")
    finished = event_flow(host, "samora.call_finished", "finished", include_transcript=True)
    failed = event_flow(host, "samora.call_failed", "failed", include_recording_url=True)
    for flow in (started, finished, failed):
        flows.enable(host, flow)
    hooks = {h["events"][0]: h for h in sandbox.state()["samora"]["webhooks"]}
    assert set(hooks) == {"CALL_STARTED", "CALL_FINISHED", "CALL_FAILED"}
    assert hooks["CALL_FINISHED"]["data_options"] == {"include_transcript": True,
                                                      "include_recording_url": False}
    assert hooks["CALL_FAILED"]["data_options"]["include_recording_url"] is True
    assert hooks["CALL_STARTED"]["url"] == flows.webhook_url(host, started)

    for number in ("+14155550140", "+14155550000", "+14155559999"):
        sandbox.samora.trigger_call(AGENT, number, {"name": "Ada"})
    done = lambda f, n: len([r for r in Run.select().where(Run.flow == f)  # noqa: E731
                             if r.status in Run.FINAL]) == n
    assert wait_for(lambda: done(started, 1) and done(finished, 1) and done(failed, 2),
                    timeout=20)
    assert sandbox.wait_idle(5)
    assert [i["to_number"] for i in items(started)] == ["+14155550140"]
    assert [i["event"] for i in items(started)] == ["CALL_STARTED"]
    (call,) = items(finished)
    assert call["status"] == "CALL_FINISHED" and "Ada" in call["transcript"]
    assert call["call_id"] and call["context"] == {"name": "Ada"}
    assert [(i["to_number"], i["status"]) for i in items(failed)] == [
        ("+14155550000", "UNANSWERED"), ("+14155559999", "REJECTED")]
    for run in Run.select():
        assert run.status == Run.SUCCEEDED, run.error
        step = StepRun.get(StepRun.run == run)
        assert step.output["call_id"] == run.item["call_id"]
    assert StepRun.get(StepRun.run == Run.get(Run.flow == finished)).output["transcript_url"]

    for flow in (started, finished, failed):
        assert flows.disable(host, flow) == []
    assert sandbox.state()["samora"]["webhooks"] == []


# Campaigns

@pytest.mark.covers("samora.create_campaign", "samora.add_campaign_recipients",
                    "samora.start_campaign", "samora.get_campaign")
def test_a_flow_creates_fills_and_starts_a_campaign_that_runs_to_the_end(connected, sandbox):
    flow = flows.save(connected, {
        "name": "campaign-from-call",
        "trigger": {"key": "samora.call_finished", "connection": "samora"},
        "steps": [
            {"name": "create", "action": "samora.create_campaign", "connection": "samora",
             "inputs": {"agent_id": AGENT, "name": "Follow up {{ trigger.to_number }}",
                        "max_retries": 1, "retry_delay_minutes": 1,
                        "retry_on": "UNANSWERED, VOICEMAIL"}},
            {"name": "fill", "action": "samora.add_campaign_recipients", "connection": "samora",
             "inputs": {"agent_id": AGENT, "campaign_id": "{{ steps.create.id }}",
                        "call_variables": {"source": "connector"},
                        "recipients": ["{{ trigger.to_number }}",
                                       {"phone_number": "+14155550142",
                                        "call_variables": {"first_name": "Grace"}},
                                       "+1 415 555 0141"]}},
            {"name": "start", "action": "samora.start_campaign", "connection": "samora",
             "inputs": {"agent_id": AGENT, "campaign_id": "{{ steps.create.campaign_id }}"}},
            {"name": "check", "action": "samora.get_campaign", "connection": "samora",
             "inputs": {"agent_id": AGENT, "campaign_id": "{{ steps.start.id }}"}},
        ]})
    trigger = connected.catalog.trigger("samora.call_finished")
    item = {"call_id": "c-1", "event": "CALL_FINISHED", "to_number": "+14155550141"}
    intake.ingest(flow, trigger, [("c-1:CALL_FINISHED", item)])
    engine.run_due(connected)
    run = Run.get(Run.flow == flow)
    assert run.status == Run.SUCCEEDED, run.error
    outputs = {s.name: s.output for s in run.step_runs}
    assert outputs["create"]["name"] == "Follow up +14155550141"
    assert outputs["create"]["retry_config"] == {"max_retries": 1, "retry_delay_minutes": 1,
                                                 "retry_on": ["UNANSWERED", "VOICEMAIL"]}
    assert outputs["fill"] == {"campaign_id": outputs["create"]["id"], "requested": 3,
                               "sent": 2, "added": 2, "duplicates": 1, "batches": 1,
                               "total_recipients": 2}
    assert outputs["start"]["status"] == "IN_PROGRESS" and outputs["start"]["changed"]
    assert outputs["check"]["stats"]["recipients"] == 2

    assert sandbox.wait_idle(5)
    campaign = campaign_state(sandbox, outputs["create"]["id"])
    assert campaign["status"] == "FINISHED" and campaign["finished_at"]
    by_phone = {r["phone_number"]: r for r in campaign["recipients"]}
    assert by_phone["+14155550142"]["call_variables"] == {"source": "connector",
                                                          "first_name": "Grace"}
    assert {r["status"] for r in by_phone.values()} == {"CALL_FINISHED"}
    calls = {c["call_id"]: c for c in sandbox.state()["samora"]["calls"]}
    placed = calls[by_phone["+14155550142"]["call_id"]]
    assert placed["campaign_id"] == campaign["id"] and placed["context"]["first_name"] == "Grace"


@pytest.mark.covers("samora.create_campaign", "samora.start_campaign",
                    "samora.list_campaign_calls")
def test_retry_config_is_honoured_for_the_outcomes_it_names(connected, sandbox):
    campaign = new_campaign(connected, max_retries=2, retry_delay_minutes=3,
                            retry_on=["UNANSWERED", "REJECTED"])
    numbers = ["+14155550000", "+14155551000", "+14155558888", "+14155550143"]
    act(connected, "samora.add_campaign_recipients",
        {"agent_id": AGENT, "campaign_id": campaign["id"], "recipients": numbers})
    act(connected, "samora.start_campaign", {"agent_id": AGENT, "campaign_id": campaign["id"]})
    assert sandbox.wait_idle(10)
    assert campaign_state(sandbox, campaign["id"])["status"] == "FINISHED"

    first = act(connected, "samora.list_campaign_calls",
                {"agent_id": AGENT, "campaign_id": campaign["id"], "page_size": 3})
    second = act(connected, "samora.list_campaign_calls",
                 {"agent_id": AGENT, "campaign_id": campaign["id"], "page": 2,
                  "page_size": 3})
    assert (first["total"], first["has_more"], second["has_more"]) == (4, True, False)
    rows = {c["phone_number"]: c for c in first["calls"] + second["calls"]}
    assert list(rows) == numbers  # in the order they were added
    outcome = {n: (r["status"], r["attempts"], len(set(r["call_ids"]))) for n, r in rows.items()}
    assert outcome == {
        "+14155550000": ("UNANSWERED", 3, 3),     # the first try and both retries
        "+14155551000": ("CALL_FINISHED", 2, 2),  # answered on its retry
        "+14155558888": ("VOICEMAIL", 1, 1),      # not in retry_on
        "+14155550143": ("CALL_FINISHED", 1, 1),
    }
    assert len(sandbox.state()["samora"]["calls"]) == 7


@pytest.mark.covers("samora.start_campaign", "samora.stop_campaign", "samora.cancel_campaign",
                    "samora.add_campaign_recipients", "samora.update_campaign")
def test_lifecycle_rules_are_enforced_with_clear_409s(connected, sandbox):
    sandbox.samora.campaign_concurrency = 0  # started campaigns dial nobody: they stay put
    ids = {"agent_id": AGENT}
    campaign = new_campaign(connected)
    ids["campaign_id"] = campaign["id"]

    with pytest.raises(FatalAPIError, match="it is DRAFT.*stops only from IN_PROGRESS.*"
                                            "allows: add recipients, start, cancel") as err:
        act(connected, "samora.stop_campaign", ids)
    assert err.value.status == 409 and err.value.code == "INVALID_CAMPAIGN_STATUS"
    with pytest.raises(FatalAPIError, match="no recipients"):
        act(connected, "samora.start_campaign", ids)

    act(connected, "samora.add_campaign_recipients", {**ids, "recipients": ["+14155550144"]})
    assert act(connected, "samora.start_campaign", ids)["status"] == "IN_PROGRESS"
    with pytest.raises(FatalAPIError, match="it is IN_PROGRESS.*only when a campaign is "
                                            "DRAFT or PAUSED.*allows: stop, cancel"):
        act(connected, "samora.add_campaign_recipients",
            {**ids, "recipients": ["+14155550145"]}, idem="add-2")
    again = act(connected, "samora.start_campaign", ids)  # a repeat: already where wanted
    assert again["status"] == "IN_PROGRESS" and again["changed"] is False

    assert act(connected, "samora.stop_campaign", ids)["status"] == "PAUSED"
    assert act(connected, "samora.stop_campaign", ids)["changed"] is False
    act(connected, "samora.add_campaign_recipients", {**ids, "recipients": ["+14155550145"]},
        idem="add-3")
    assert act(connected, "samora.start_campaign", ids)["changed"] is True
    cancelled = act(connected, "samora.cancel_campaign", ids)
    assert cancelled["status"] == "CANCELLED" and cancelled["changed"] is True
    assert act(connected, "samora.cancel_campaign", ids)["changed"] is False
    state = campaign_state(sandbox, campaign["id"])
    assert [r["status"] for r in state["recipients"]] == ["CANCELLED", "CANCELLED"]
    assert state["cancelled_at"]
    with pytest.raises(FatalAPIError, match="it is CANCELLED.*starts only from DRAFT or "
                                            r"PAUSED.*allows: nothing \(it is over\)"):
        act(connected, "samora.start_campaign", ids)
    with pytest.raises(FatalAPIError, match="cannot be changed"):
        act(connected, "samora.update_campaign", {**ids, "name": "Too late"})

    failed = new_campaign(connected, "Broken")
    sandbox.samora.force_status(failed["id"], "FAILED")
    with pytest.raises(FatalAPIError, match="it is FAILED.*cannot be cancelled"):
        act(connected, "samora.cancel_campaign", {**ids, "campaign_id": failed["id"]})
    scheduled = new_campaign(connected, "Timed")
    answer = requests.post(f"{sandbox.root_url}/_sandbox/samora/campaigns/{scheduled['id']}"
                           "/status", json={"status": "SCHEDULED"}, timeout=10)
    assert answer.json()["status"] == "SCHEDULED"
    with pytest.raises(FatalAPIError, match="it is SCHEDULED.*allows: cancel, update"):
        act(connected, "samora.add_campaign_recipients",
            {**ids, "campaign_id": scheduled["id"], "recipients": ["+14155550146"]}, idem="a4")
    assert act(connected, "samora.cancel_campaign",
               {**ids, "campaign_id": scheduled["id"]})["status"] == "CANCELLED"


def test_stopping_lets_live_calls_end_and_dials_no_more(connected, sandbox, monkeypatch):
    monkeypatch.setattr(sandbox.samora, "call_delay", 0.15)  # time to stop mid-call
    sandbox.samora.campaign_concurrency = 1
    campaign = new_campaign(connected)
    ids = {"agent_id": AGENT, "campaign_id": campaign["id"]}
    act(connected, "samora.add_campaign_recipients",
        {**ids, "recipients": ["+14155550147", "+14155550148"]})
    act(connected, "samora.start_campaign", ids)
    act(connected, "samora.stop_campaign", ids)
    assert sandbox.wait_idle(5)
    state = campaign_state(sandbox, campaign["id"])
    assert state["status"] == "PAUSED"
    assert [r["status"] for r in state["recipients"]] == ["CALL_FINISHED", "SCHEDULED"]
    act(connected, "samora.start_campaign", ids)
    assert sandbox.wait_idle(5)
    state = campaign_state(sandbox, campaign["id"])
    assert state["status"] == "FINISHED"
    assert [r["status"] for r in state["recipients"]] == ["CALL_FINISHED", "CALL_FINISHED"]


@pytest.mark.covers("samora.add_campaign_recipients")
def test_recipients_go_in_batches_of_5000_each_guarded_by_its_own_key(connected, sandbox):
    campaign = new_campaign(connected)
    ids = {"agent_id": AGENT, "campaign_id": campaign["id"]}
    numbers = [f"+1415{n:07d}" for n in range(2_000_000, 2_010_001)]
    client = connected.client(connected.connection("samora"))
    try:
        flaky = Recording(client, fail={2})  # the second batch meets a 503
        with pytest.raises(RetriableAPIError):
            act(connected, "samora.add_campaign_recipients", {**ids, "recipients": numbers},
                client=flaky)
        assert campaign_state(sandbox, campaign["id"])["stats"]["recipients"] == 5000
        retry = Recording(client)
        out = act(connected, "samora.add_campaign_recipients", {**ids, "recipients": numbers},
                  client=retry)
        again = act(connected, "samora.add_campaign_recipients",
                    {**ids, "recipients": numbers}, client=retry)
    finally:
        client.close()
    assert retry.posts == 2  # batches 2 and 3; batch 1 came from the ledger, then all three
    assert out == again == {"campaign_id": campaign["id"], "requested": 10001, "sent": 10001,
                            "added": 10001, "duplicates": 0, "batches": 3,
                            "total_recipients": 10001}
    state = campaign_state(sandbox, campaign["id"])
    assert state["stats"]["recipients"] == 10001
    assert [r["phone_number"] for r in state["recipients"]] == numbers
    keys = sorted(r.key for r in IdempotencyRecord.select().where(
        IdempotencyRecord.scope == "samora.add_campaign_recipients"))
    assert keys == ["step-key-1:batch0", "step-key-1:batch1", "step-key-1:batch2"]


@pytest.mark.covers("samora.add_campaign_recipients")
def test_large_call_variables_split_batches_under_2_mib(connected, sandbox):
    campaign = new_campaign(connected)
    variables = {"notes": "é" * 2000}  # 4012 bytes as UTF-8 JSON, 12012 sent as escaped ASCII
    numbers = [f"+1415{n:07d}" for n in range(3_000_000, 3_000_400)]
    client = connected.client(connected.connection("samora"))
    try:
        recorder = Recording(client)
        out = act(connected, "samora.add_campaign_recipients",
                  {"agent_id": AGENT, "campaign_id": campaign["id"], "recipients": numbers,
                   "call_variables": variables}, client=recorder)
    finally:
        client.close()
    assert out["batches"] == len(recorder.sizes) == 3 and out["added"] == 400
    assert all(size <= 2 * 1024 * 1024 for size in recorder.sizes)
    assert max(recorder.sizes) > 2 * 1024 * 1024 - 13000  # batches are filled, not tiny
    state = campaign_state(sandbox, campaign["id"])
    assert state["recipients"][399]["call_variables"] == variables


def test_recipients_are_checked_before_anything_is_sent(connected, sandbox):
    base = {"agent_id": AGENT, "campaign_id": "c-1"}
    data = load(connected, "samora.add_campaign_recipients",
                {**base, "recipients": "+14155550150, +1 415 555 0151\n+14155550150"})
    assert data["recipients"] == [{"phone_number": "+14155550150"},
                                  {"phone_number": "+14155550151"}]
    fits = {"k": "x" * (4096 - len('{"k":""}'))}
    assert load(connected, "samora.add_campaign_recipients",
                {**base, "recipients": [{"phone": "+14155550152", "call_variables": fits}]})
    too_big = {"k": "x" * (4097 - len('{"k":""}'))}
    with pytest.raises(ValidationError, match=r"recipients\[1\]: call_variables for "
                                              r"\+14155550153 are 4097 bytes.*4 KiB"):
        load(connected, "samora.add_campaign_recipients", {**base, "recipients": [
            "+14155550152", {"phone_number": "+1 415 555 0153", "call_variables": too_big}]})
    with pytest.raises(ValidationError, match=r"recipients\[0\]: expected an E.164"):
        load(connected, "samora.add_campaign_recipients", {**base, "recipients": ["0151"]})
    with pytest.raises(ValidationError, match="at least one"):
        load(connected, "samora.add_campaign_recipients", {**base, "recipients": []})


def test_retry_config_and_names_are_checked_exactly_as_documented(connected):
    base = {"agent_id": AGENT, "name": "R"}
    ok = load(connected, "samora.create_campaign",
              {**base, "max_retries": "5", "retry_delay_minutes": 1440,
               "retry_on": "unanswered, FAILED, unanswered"})
    assert (ok["max_retries"], ok["retry_on"]) == (5, ["UNANSWERED", "FAILED"])
    assert load(connected, "samora.create_campaign", {**base, "name": "x" * 120})
    for bad, field in (({"name": "x" * 121}, "name"),
                       ({"name": ""}, "name"),
                       ({"max_retries": 1}, "retry_on"),
                       ({"max_retries": 0, "retry_delay_minutes": 1, "retry_on": ["FAILED"]},
                        "max_retries"),
                       ({"max_retries": 6, "retry_delay_minutes": 1, "retry_on": ["FAILED"]},
                        "max_retries"),
                       ({"max_retries": 1, "retry_delay_minutes": 0, "retry_on": ["FAILED"]},
                        "retry_delay_minutes"),
                       ({"max_retries": 1, "retry_delay_minutes": 1441,
                         "retry_on": ["FAILED"]}, "retry_delay_minutes"),
                       ({"max_retries": 1, "retry_delay_minutes": 1, "retry_on": []},
                        "retry_on"),
                       ({"max_retries": 1, "retry_delay_minutes": 1, "retry_on": ["BUSY"]},
                        "retry_on")):
        with pytest.raises(ValidationError) as err:
            load(connected, "samora.create_campaign", {**base, **bad})
        assert field in err.value.messages, (bad, err.value.messages)
    with pytest.raises(ValidationError, match="page_size|100"):
        load(connected, "samora.list_campaigns", {"agent_id": AGENT, "page_size": 101})
    with pytest.raises(ValidationError, match="give a new name"):
        load(connected, "samora.update_campaign", {"agent_id": AGENT, "campaign_id": "c"})


@pytest.mark.covers("samora.update_campaign", "samora.get_campaign")
def test_update_sends_full_settings_and_keeps_what_it_is_not_told(connected, sandbox):
    campaign = new_campaign(connected, max_retries=2, retry_delay_minutes=30,
                            retry_on=["UNANSWERED"])
    ids = {"agent_id": AGENT, "campaign_id": campaign["id"]}
    renamed = act(connected, "samora.update_campaign", {**ids, "name": "Second wave"})
    assert renamed["name"] == "Second wave"
    assert renamed["retry_config"] == campaign["retry_config"]
    retimed = act(connected, "samora.update_campaign",
                  {**ids, "max_retries": 5, "retry_delay_minutes": 1,
                   "retry_on": ["VOICEMAIL", "FAILED"]})
    assert retimed["name"] == "Second wave"
    assert retimed["retry_config"] == {"max_retries": 5, "retry_delay_minutes": 1,
                                       "retry_on": ["VOICEMAIL", "FAILED"]}
    cleared = act(connected, "samora.update_campaign", {**ids, "remove_retry_config": True})
    assert cleared["retry_config"] is None
    got = act(connected, "samora.get_campaign", ids)
    assert (got["name"], got["retry_config"], got["status"]) == ("Second wave", None, "DRAFT")
    assert campaign_state(sandbox, campaign["id"])["name"] == "Second wave"
    sandbox.samora.add_agent("Other", OTHER_AGENT)
    with pytest.raises(FatalAPIError, match="does not exist for agent") as err:
        act(connected, "samora.get_campaign", {"agent_id": OTHER_AGENT,
                                               "campaign_id": campaign["id"]})
    assert err.value.code == "CAMPAIGN_NOT_FOUND"


@pytest.mark.covers("samora.list_campaigns", "samora.find_campaigns")
def test_list_pages_and_find_fills_the_campaign_dropdown(connected, sandbox):
    made = [sandbox.samora.create_campaign(AGENT, {"name": f"Wave {i}"}) for i in range(105)]
    sandbox.samora.add_agent("Other", OTHER_AGENT)
    sandbox.samora.create_campaign(OTHER_AGENT, {"name": "Wave 7 elsewhere"})
    sandbox.samora.force_status(made[7]["id"], "FAILED")

    first = act(connected, "samora.list_campaigns", {"agent_id": AGENT, "page_size": 100})
    last = act(connected, "samora.list_campaigns",
               {"agent_id": AGENT, "page": 2, "page_size": 100})
    assert (len(first["campaigns"]), first["has_more"], first["total"]) == (100, True, 105)
    assert (len(last["campaigns"]), last["has_more"]) == (5, False)
    assert first["campaigns"][0]["name"] == "Wave 104"  # newest first
    assert first["campaigns"][0]["campaign_id"] == made[104]["id"]

    everything = act(connected, "samora.find_campaigns", {"agent_id": AGENT})
    assert everything["count"] == 105 and everything["found"]
    failed = act(connected, "samora.find_campaigns", {"agent_id": AGENT, "status": "FAILED"})
    assert [c["id"] for c in failed["results"]] == [made[7]["id"]]
    named = act(connected, "samora.find_campaigns", {"agent_id": AGENT, "name": "wave 10"})
    assert sorted(c["name"] for c in named["results"]) == [
        "Wave 10", "Wave 100", "Wave 101", "Wave 102", "Wave 103", "Wave 104"]
    none = act(connected, "samora.find_campaigns", {"agent_id": AGENT, "name": "nope"})
    assert none == {"found": False, "count": 0, "first": None, "results": []}

    options = connected.options("samora.find_campaigns", "samora",
                                {"agent_id": OTHER_AGENT})
    other = next(c for c in sandbox.state()["samora"]["campaigns"]
                 if c["agent_id"] == OTHER_AGENT)
    assert options == [{"value": other["id"], "label": "Wave 7 elsewhere (DRAFT)"}]
    source = connected.catalog.actions["samora.add_campaign_recipients"].cls.Inputs()
    assert source.fields["campaign_id"].metadata["choices_from"] == "samora.find_campaigns"


# The sandbox's own rules

def test_sandbox_campaign_validation_auth_and_not_found(sandbox):
    base = f"/v1/external/campaigns/{AGENT}"
    assert error_of(api(sandbox, "GET", base, headers={"X-API-Key": "nope"}), 401,
                    "UNAUTHORIZED")
    error_of(api(sandbox, "GET", "/v1/external/campaigns/agent-1"), 400, "VALIDATION_ERROR")
    error_of(api(sandbox, "GET", f"/v1/external/campaigns/{OTHER_AGENT}"), 404,
             "AGENT_NOT_FOUND")
    for body, field in (({}, "name"), ({"name": "x" * 121}, "name"), ({"name": "  "}, "name"),
                        ({"name": "n", "retry_config": {"max_retries": 1}},
                         "retry_config.retry_delay_minutes"),
                        ({"name": "n", "retry_config": {"max_retries": 6,
                                                        "retry_delay_minutes": 1,
                                                        "retry_on": ["FAILED"]}},
                         "retry_config.max_retries"),
                        ({"name": "n", "retry_config": {"max_retries": True,
                                                        "retry_delay_minutes": 1,
                                                        "retry_on": ["FAILED"]}},
                         "retry_config.max_retries"),
                        ({"name": "n", "retry_config": {"max_retries": 1,
                                                        "retry_delay_minutes": 1441,
                                                        "retry_on": ["FAILED"]}},
                         "retry_config.retry_delay_minutes"),
                        ({"name": "n", "retry_config": {"max_retries": 1,
                                                        "retry_delay_minutes": 1,
                                                        "retry_on": ["BUSY"]}},
                         "retry_config.retry_on"),
                        ({"name": "n", "retry_config": "often"}, "retry_config")):
        error = error_of(api(sandbox, "POST", base, json=body), 400, "VALIDATION_ERROR")
        assert error["details"]["field"] == field, (body, error)
    created = api(sandbox, "POST", base, json={"name": "x" * 120, "retry_config": {
        "max_retries": 5, "retry_delay_minutes": 1440, "retry_on": ["FAILED", "FAILED"]}})
    assert created.status_code == 201
    campaign = created.json()
    assert campaign["status"] == "DRAFT" and campaign["retry_config"]["retry_on"] == ["FAILED"]
    one = f"{base}/{campaign['id']}"
    updated = api(sandbox, "PUT", one, json={"name": "Short"}).json()
    assert updated["name"] == "Short" and updated["retry_config"]["max_retries"] == 5
    assert api(sandbox, "PUT", one, json={"retry_config": None}).json()["retry_config"] is None
    error_of(api(sandbox, "PUT", one, json={}), 400, "VALIDATION_ERROR")
    error_of(api(sandbox, "GET", f"{base}/nope"), 404, "CAMPAIGN_NOT_FOUND")
    sandbox.samora.add_agent("Other", OTHER_AGENT)
    error_of(api(sandbox, "GET", f"/v1/external/campaigns/{OTHER_AGENT}/{campaign['id']}"),
             404, "CAMPAIGN_NOT_FOUND")
    for query in ("page_size=101", "page_size=0", "page=0", "page_size=ten"):
        error_of(api(sandbox, "GET", f"{base}?{query}"), 400, "VALIDATION_ERROR")
    listed = api(sandbox, "GET", f"{base}?page_size=100").json()
    assert (listed["total"], listed["page"], listed["page_size"]) == (1, 1, 100)


def test_sandbox_recipient_limits_and_lifecycle_errors(sandbox):
    base = f"/v1/external/campaigns/{AGENT}"
    campaign = api(sandbox, "POST", base, json={"name": "Limits"}).json()
    path = f"{base}/{campaign['id']}"
    add = f"{path}/scheduled-calls"
    error_of(api(sandbox, "POST", add, json={"recipients": []}), 400, "VALIDATION_ERROR")
    over = [{"phone_number": f"+1415{n:07d}"} for n in range(5001)]
    error = error_of(api(sandbox, "POST", add, json={"recipients": over}), 400,
                     "VALIDATION_ERROR")
    assert "5000" in error["message"]
    error = error_of(api(sandbox, "POST", add, json={"recipients": [
        {"phone_number": "+14155550160"}, {"phone_number": "4155550161"}]}), 400,
        "INVALID_PHONE_NUMBER")
    assert error["details"]["field"] == "recipients[1].phone_number"
    big = {"v": "x" * 4090}
    error = error_of(api(sandbox, "POST", add, json={"recipients": [
        {"phone_number": "+14155550162", "call_variables": big}]}), 400, "VALIDATION_ERROR")
    assert "+14155550162" in error["message"] and error["details"]["phone_number"]
    assert api(sandbox, "GET", f"{path}/calls").json()["total"] == 0  # nothing was kept

    exactly = [{"phone_number": f"+1415{n:07d}"} for n in range(5000)]
    added = api(sandbox, "POST", add, json={"recipients": exactly[:4998] + exactly[:2]})
    assert added.status_code == 201
    assert added.json() == {"campaign_id": campaign["id"], "added": 4998, "duplicates": 2,
                            "total_recipients": 4998}
    error_of(api(sandbox, "POST", f"{base}/{campaign['id']}/stop"), 409,
             "INVALID_CAMPAIGN_STATUS")
    sandbox.samora.campaign_concurrency = 0
    assert api(sandbox, "POST", f"{path}/start").json()["status"] == "IN_PROGRESS"
    error = error_of(api(sandbox, "POST", add, json={"recipients": exactly[:1]}), 409,
                     "INVALID_CAMPAIGN_STATUS")
    assert error["details"] == {"status": "IN_PROGRESS", "allowed": ["stop", "cancel",
                                                                     "update"]}
    assert "IN_PROGRESS" in error["message"] and "DRAFT or PAUSED" in error["message"]
    assert api(sandbox, "POST", f"{path}/cancel").json()["stats"]["cancelled"] == 4998
    error = error_of(api(sandbox, "POST", f"{path}/cancel"), 409, "INVALID_CAMPAIGN_STATUS")
    assert error["details"] == {"status": "CANCELLED", "allowed": []}
    huge = {"recipients": [{"phone_number": "+14155550163",
                            "call_variables": {"v": "x" * (2 * 1024 * 1024)}}]}
    error_of(api(sandbox, "POST", add, json=huge), 413, "PAYLOAD_TOO_LARGE")
