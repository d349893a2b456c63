"""The hot path's cost in SQL statements: one webhook intake and one one-step run.

The counts are pinned, so a change that adds a query to every webhook or every run fails
here (the figures behind them are in docs/performance.md). Also: what the executor keeps
between runs (the flow's step tree, each thread's HTTP client) is rebuilt when the flow or
the connection changes.
"""
from __future__ import annotations

import contextlib
import threading

import pytest
from marshmallow import Schema, fields

from connector import Action, engine, flows, plans, store
from connector.store import Run, StepAttempt, StepRun
from connector.web import create_app

from .hooks import HookPlugin

SEEN: list = []


class Inputs(Schema):
    value = fields.Raw(required=True)


class Touch(Action):
    """Record the client it was given and echo its input."""

    key = "t.touch"
    app = "t"
    label = "Touch"
    Inputs = Inputs

    def run(self, ctx, inputs):
        SEEN.append(ctx.client)
        return {"value": inputs["value"]}


def Plugin():
    return HookPlugin(Touch)


@contextlib.contextmanager
def counted():
    """Count the SQL statements (and commits) this thread sends to the bound database."""
    database, me = store.db.obj, threading.get_ident()
    tally = {"statements": [], "commits": 0}
    execute_sql, commit = database.execute_sql, database.commit

    def counting_execute(sql, params=None, *args, **kwargs):
        if threading.get_ident() == me:
            tally["statements"].append(sql.split(None, 1)[0].upper())
        return execute_sql(sql, params, *args, **kwargs)

    def counting_commit(*args, **kwargs):
        if threading.get_ident() == me:
            tally["commits"] += 1
        return commit(*args, **kwargs)

    database.execute_sql, database.commit = counting_execute, counting_commit
    try:
        yield tally
    finally:
        del database.execute_sql, database.commit


@pytest.fixture
def thost(make_host):
    SEEN.clear()
    plans.clear()
    host = make_host(extra_plugins=[Plugin()])
    host.add_connection("t-conn", "t", {}, base_url="http://127.0.0.1:9")
    return host


def make_flow(host, value="{{ trigger.n }}"):
    flow = flows.save(host, {"name": "f", "trigger": {"key": "t.hook"}, "steps": [
        {"name": "touch", "action": "t.touch", "connection": "t-conn",
         "inputs": {"value": value}}]})
    return flows.enable(host, flow)


def queue(host, flow, key):
    client = create_app(host).test_client()
    answer = client.post(f"/hooks/{flow.webhook_token}", json={"id": key, "n": key},
                         headers={"webhook-id": key})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return Run.select().order_by(Run.id.desc()).first()


def test_one_webhook_costs_three_statements_and_one_commit(thost):
    flow = make_flow(thost)
    client = create_app(thost).test_client()
    with counted() as tally:
        answer = client.post(f"/hooks/{flow.webhook_token}", json={"n": 1},
                             headers={"webhook-id": "d-1"})
    assert answer.status_code == 200 and answer.get_json()["accepted"] == 1
    # the flow with its trigger state; the ledger entry and the run, committed together
    assert tally["statements"] == ["SELECT", "INSERT", "INSERT"], tally
    assert tally["commits"] == 1


def test_one_step_run_costs_seven_statements_and_three_commits(thost):
    flow = make_flow(thost)
    engine.execute(thost, queue(thost, flow, "a").id)  # reads the step tree once
    run = queue(thost, flow, "b")
    with counted() as tally:
        assert engine.execute(thost, run.id) == Run.SUCCEEDED
    # claim (UPDATE ... RETURNING); the flow with its connections' stamp; the pending step
    # run; then one transaction: the run's end, the flow's failure streak, the step run's
    # result, its attempt
    assert tally["statements"] == ["UPDATE", "SELECT", "INSERT", "UPDATE", "UPDATE",
                                   "UPDATE", "INSERT"], tally
    assert tally["commits"] == 3
    sr = StepRun.get(StepRun.run == run.id)
    assert (sr.status, sr.attempts, sr.output) == (StepRun.SUCCEEDED, 1, {"value": "b"})
    assert [a.number for a in StepAttempt.select().where(StepAttempt.step_run == sr)] == [1]
    assert Run.get_by_id(run.id).finished_at is not None


def test_a_batch_of_runs_costs_one_claim_transaction_then_four_statements_a_run(thost):
    flow = make_flow(thost)
    engine.execute(thost, queue(thost, flow, "a").id)  # reads the step tree once
    runs = [queue(thost, flow, key) for key in "bcdefgh"]
    with counted() as tally:
        batch = engine.open_batch(thost, 10)
    # for the executor's batch of 7: the claim (UPDATE ... RETURNING), the flow with its
    # connections' stamp, the pending first steps (one INSERT ... RETURNING), one commit
    assert tally["statements"] == ["UPDATE", "SELECT", "INSERT"], tally
    assert tally["commits"] == 1 and [c.run.id for c in batch] == [r.id for r in runs]
    with counted() as tally:
        assert engine.execute_claimed(thost, batch[0]) == Run.SUCCEEDED
    # one transaction: the run's end, the flow's failure streak, the step's result, its attempt
    assert tally["statements"] == ["UPDATE", "UPDATE", "UPDATE", "INSERT"], tally
    assert tally["commits"] == 1
    sr = StepRun.get(StepRun.run == runs[0].id)
    assert (sr.status, sr.attempts, sr.output) == (StepRun.SUCCEEDED, 1, {"value": "b"})


def test_a_saved_flow_is_read_again(thost):
    flow = make_flow(thost)
    engine.execute(thost, queue(thost, flow, "a").id)
    flows.save(thost, {"name": "f", "trigger": {"key": "t.hook"}, "steps": [
        {"name": "touch", "action": "t.touch", "connection": "t-conn",
         "inputs": {"value": "changed {{ trigger.n }}"}}]})
    run = queue(thost, flow, "b")
    engine.execute(thost, run.id)
    assert StepRun.get(StepRun.run == run.id).output == {"value": "changed b"}


def test_the_client_is_kept_until_its_connection_changes(thost):
    flow = make_flow(thost)
    for key in ("a", "b"):
        engine.execute(thost, queue(thost, flow, key).id)
    assert SEEN[0] is SEEN[1]  # one session (and its keep-alive) for both runs
    thost.add_connection("t-conn", "t", {}, base_url="http://127.0.0.1:8", replace=True)
    engine.execute(thost, queue(thost, flow, "c").id)
    assert SEEN[2] is not SEEN[1] and SEEN[2].base_url == "http://127.0.0.1:8/"


def test_a_client_whose_session_was_rewired_is_not_kept(thost):
    flow = make_flow(thost)
    engine.execute(thost, queue(thost, flow, "a").id)
    import requests

    # what the SSRF guard of the HTTP action does: its own adapters, no environment
    SEEN[0].session.trust_env = False
    SEEN[0].session.mount("http://", requests.adapters.HTTPAdapter())
    conn = store.Connection.get(store.Connection.name == "t-conn")
    thost.check_client(conn, SEEN[0])
    engine.execute(thost, queue(thost, flow, "b").id)
    assert SEEN[1] is not SEEN[0]


def test_the_ssrf_guard_keeps_a_guarded_session_until_the_allow_list_changes(monkeypatch):
    import requests

    from connector import ssrf

    monkeypatch.delenv(ssrf.ALLOW_VAR, raising=False)
    monkeypatch.delenv(ssrf.ALLOW_PRIVATE_VAR, raising=False)
    session = ssrf.guarded_session()
    adapter = session.get_adapter("https://example.com")
    assert isinstance(adapter, ssrf.GuardedAdapter)
    assert ssrf.guard(session).get_adapter("http://example.com") is adapter  # pool kept
    monkeypatch.setenv(ssrf.ALLOW_VAR, "10.0.0.0/8")
    renewed = ssrf.guard(session).get_adapter("http://example.com")
    assert renewed is not adapter and isinstance(renewed, ssrf.GuardedAdapter)
    session.mount("http://", requests.adapters.HTTPAdapter())  # rewired by someone else
    again = ssrf.guard(session)
    assert all(isinstance(again.get_adapter(u), ssrf.GuardedAdapter) for u in
               ("http://example.com", "https://example.com")) and not again.trust_env
