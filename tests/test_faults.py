"""Outbound retries under the sandbox's fault mode (issue 3, point 5), and the fault mode itself.

The first half drives the fault module with plain requests and the ApiClient: options and
their validation, scope, determinism, what a client sees for each fault. The second half
runs flows over real HTTP (the runtime serving, the sandbox failing on purpose) and checks
the outcome in the sandbox's own ledger: every run completes, waits honour Retry-After up to
``retry_after_cap``, backoff is exponential with full jitter, a ledger-guarded POST whose
answer was lost is never sent again (OutcomeUnknown), and a permanent 4xx fails at once.
"""
from __future__ import annotations

import datetime as dt
import email.utils
import json
import random
import time
from collections import Counter

import pytest
import requests

from connector import Action, engine, flows, hookimpl
from connector.errors import FatalAPIError, RetriableAPIError
from connector.http import ApiClient, parse_retry_after
from connector.intake import ingest
from connector.runtime import Runtime
from connector.signatures import sign
from connector.store import IdempotencyRecord, Run, StepAttempt, StepRun, TriggerState

from .conftest import connection_name, wait_for
from .hooks import HookPlugin

EMAIL = "client@agency.example"
CREDITS = "/v1/subaccounts/credits"


# -- helpers ------------------------------------------------------------------------------------

def contacts_get(sandbox, path="/api/v1/contacts", timeout=10, **params):
    conn = sandbox.connections()["contacts_api"]
    return requests.get(conn["base_url"] + path, params=params or {"limit": 1}, timeout=timeout,
                        headers={"Authorization": f"Bearer {conn['credentials']['api_key']}",
                                 "X-Org-Id": conn["credentials"]["org_id"]})


def grant(sandbox, amount=1, description=None, timeout=10):
    conn = sandbox.connections()["aiconnector"]
    return requests.post(conn["base_url"] + "/subaccounts/credits", timeout=timeout,
                         headers={"x-api-key": conn["credentials"]["api_key"]},
                         json={"email": EMAIL, "amount": amount, "description": description})


def ledger(sandbox):
    return sandbox.state()["aiconnector"]["credit_ledger"]


def outcome(call):
    """Return the status code, or the exception class name for a connection failure."""
    try:
        return call().status_code
    except requests.RequestException as exc:
        return type(exc).__name__


def epoch(moment: dt.datetime) -> float:
    """A naive UTC datetime from the store, as epoch seconds."""
    return moment.replace(tzinfo=dt.timezone.utc).timestamp()


def client_for(host, sandbox, app_key, timeout=None):
    info = sandbox.connections()[app_key]
    return ApiClient(host.catalog.app(app_key), info["credentials"], info["base_url"],
                     timeout=timeout)


@pytest.fixture
def make_runtime(make_host, sandbox):
    """The runtime serving over HTTP for a host built with Settings overrides."""
    started = []

    def make(**overrides) -> Runtime:
        host = make_host(**overrides)
        for app, info in sandbox.connections().items():
            if app in host.catalog.apps:
                host.add_connection(connection_name(app), app, info["credentials"],
                                    info["base_url"])
        rt = Runtime(host)
        rt.start(port=0)
        started.append(rt)
        return rt

    yield make
    for rt in started:
        rt.stop()


def recharge_flow(host):
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "flows" / \
        "auto-recharge-credits.yaml"
    flow = flows.save(host, flows.load_file(path))
    flows.enable(host, flow)
    secret = host.box.open(TriggerState.get(TriggerState.flow == flow).sealed_subscription)
    return flow, secret["secret"]


def deliver(host, flow, secret, key, amount=1, email=EMAIL):
    body = json.dumps({"event": "auto_recharge", "idempotency_key": key, "email": email,
                       "amount": amount}).encode()
    headers = {**sign(secret, key, body), "Content-Type": "application/json"}
    answer = requests.post(flows.webhook_url(host, flow), data=body, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text


def runs(flow):
    return list(Run.select().where(Run.flow == flow).order_by(Run.id))


def final(flow):
    return [r for r in runs(flow) if r.status in Run.FINAL]


def attempts(run, step="grant"):
    sr = StepRun.get((StepRun.run == run) & (StepRun.name == step))
    return list(StepAttempt.select().where(StepAttempt.step_run == sr)
                .order_by(StepAttempt.number))


def grants_for(sandbox, key):
    return [e for e in ledger(sandbox) if key in (e["description"] or "")]


# -- the fault module ----------------------------------------------------------------------------

def test_options_are_validated_and_named(sandbox):
    faults = sandbox.faults
    for options, field in (({"error_rate": 1.5}, "error_rate"),
                           ({"error_rate": 0.6, "drop_rate": 0.6}, "error_rate"),
                           ({"drop_when": "during"}, "drop_when"),
                           ({"error_status": 418}, "error_status"),
                           ({"retry_after": 1.5}, "retry_after"),
                           ({"delay": -1}, "delay"),
                           ({"list_order": "sideways"}, "list_order"),
                           ({"methods": []}, "methods"),
                           ({"bogus": 1}, "bogus")):
        with pytest.raises(ValueError) as caught:
            faults.set("aiconnector", **options)
        assert caught.value.field == field
    with pytest.raises(KeyError):
        faults.set("nosuch", error_rate=1)
    plan = faults.set("contacts-api", error_rate=0.1, methods=["get"], seed=3)
    assert plan["service"] == "contacts_api" and plan["methods"] == ["GET"]
    assert faults.get("contacts_api")["error_rate"] == 0.1


def test_admin_routes_set_show_and_clear_faults(sandbox):
    admin = sandbox.root_url + "/_sandbox/faults"
    answer = requests.put(admin + "/aiconnector", json={"error_rate": 1, "limit": 1}, timeout=10)
    assert answer.status_code == 200 and answer.json()["error_rate"] == 1.0
    bad = requests.put(admin + "/aiconnector", json={"error_rate": "x"}, timeout=10)
    assert bad.status_code == 400
    assert bad.json()["error"]["details"]["field"] == "error_rate"
    missing = requests.put(admin + "/nosuch", json={}, timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "UNKNOWN_SERVICE"
    assert grant(sandbox).status_code == 500
    shown = requests.get(admin, timeout=10).json()
    assert shown["faults"]["aiconnector"]["injected"]["error"] == 1
    assert shown["faults"]["samora"] is None
    assert [e["fault"] for e in shown["log"]] == ["error"]
    assert requests.delete(admin + "/aiconnector", timeout=10).json() == {
        "service": "aiconnector", "cleared": True}
    assert sandbox.faults.get("aiconnector") is None
    requests.put(admin + "/samora", json={"drop_rate": 1}, timeout=10)
    assert requests.delete(admin, timeout=10).json() == {"cleared": ["samora"]}


def test_faults_never_hit_the_admin_app_or_the_index(sandbox):
    for name in ("contacts_api", "samora", "aiconnector", "sami_os", "samva"):
        sandbox.faults.set(name, drop_rate=1)
    for path in ("/", "/_sandbox/state", "/_sandbox/connections", "/_sandbox/faults"):
        assert requests.get(sandbox.root_url + path, timeout=10).status_code == 200
    with pytest.raises(requests.ConnectionError):
        contacts_get(sandbox)


def test_reset_clears_every_plan_and_the_log(sandbox):
    sandbox.faults.set("aiconnector", error_rate=1)
    assert grant(sandbox).status_code == 500
    sandbox.reset()
    assert sandbox.faults.describe()["aiconnector"] is None and sandbox.faults.entries() == []
    assert grant(sandbox).status_code == 200


def test_a_seed_makes_the_faults_repeat_exactly(sandbox):
    options = dict(error_rate=0.2, throttle_rate=0.2, drop_rate=0.1, seed=11)

    def sequence():
        sandbox.faults.set("contacts_api", **options)
        return [outcome(lambda i=i: contacts_get(sandbox, limit=1, offset=i % 7))
                for i in range(40)]

    first, second = sequence(), sequence()
    assert first == second
    assert {200, 500, 429, "ConnectionError"} <= set(first)
    options["seed"] = 12
    assert sequence() != first


def test_rates_hold_over_many_requests_and_limit_caps_them(sandbox):
    sandbox.faults.set("contacts_api", error_rate=0.25, throttle_rate=0.25, seed=5)
    seen = Counter(contacts_get(sandbox, offset=i).status_code for i in range(400))
    assert 70 <= seen[500] <= 130 and 70 <= seen[429] <= 130 and seen[200] >= 150
    plan = sandbox.faults.get("contacts_api")
    assert plan["requests_seen"] == 400
    assert plan["injected"]["error"] == seen[500] and plan["injected"]["throttle"] == seen[429]
    sandbox.faults.set("contacts_api", error_rate=1, limit=3)
    assert [contacts_get(sandbox).status_code for _ in range(5)] == [500, 500, 500, 200, 200]


def test_scope_by_path_method_and_org(sandbox):
    sandbox.faults.set("contacts_api", error_rate=1, paths=["/api/v1/tags"], methods=["GET"])
    assert contacts_get(sandbox).status_code == 200
    assert contacts_get(sandbox, "/api/v1/tags").status_code == 500
    sandbox.faults.set("contacts_api", error_rate=1, orgs=["org_other"])
    assert contacts_get(sandbox).status_code == 200  # org_demo is out of scope
    conn = sandbox.connections()["contacts_api"]
    other = requests.get(conn["base_url"] + "/api/v1/contacts", timeout=10, headers={
        "Authorization": "Bearer ca_other_key", "X-Org-Id": "org_other"})
    assert other.status_code == 500
    # Unauthenticated requests get the service's own 401, never a fault.
    assert requests.get(conn["base_url"] + "/api/v1/contacts", timeout=10).status_code == 401


def test_500_before_the_effect_changes_nothing_after_it_keeps_the_effect(sandbox):
    sandbox.faults.set("aiconnector", error_rate=1, limit=1, paths=[CREDITS])
    refused = grant(sandbox, description="before")
    assert refused.status_code == 500 and "Retry-After" not in refused.headers
    assert refused.json()["error"]["code"] == "INTERNAL_ERROR"
    assert ledger(sandbox) == []
    sandbox.faults.set("aiconnector", error_rate=1, limit=1, error_when="after")
    lied = grant(sandbox, description="after")
    assert lied.status_code == 500
    assert [e["description"] for e in ledger(sandbox)] == ["after"]
    sandbox.faults.set("aiconnector", error_rate=1, limit=1, error_status=504)
    assert grant(sandbox).json()["error"]["code"] == "GATEWAY_TIMEOUT"


def test_429s_carry_retry_after_as_seconds_or_an_http_date(sandbox):
    sandbox.faults.set("contacts_api", throttle_rate=1, limit=1, retry_after=7)
    answer = contacts_get(sandbox)
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "7"
    assert answer.json()["error"]["code"] == "RATE_LIMITED"
    assert parse_retry_after(answer.headers) == 7.0
    sandbox.faults.set("contacts_api", throttle_date_rate=1, limit=1, retry_after=5)
    before = time.time()
    answer = contacts_get(sandbox)
    when = email.utils.parsedate_to_datetime(answer.headers["Retry-After"]).timestamp()
    assert before + 5 <= when <= before + 6.5  # rounded up to the next whole second
    assert 4 < parse_retry_after(answer.headers) <= 6.5
    assert [e["retry_after"] for e in sandbox.faults.entries()] == ["7",
                                                                    answer.headers["Retry-After"]]


def test_slow_answers_and_a_client_timeout(sandbox):
    sandbox.faults.set("aiconnector", slow_rate=1, delay=0.3, paths=[CREDITS])
    started = time.monotonic()
    assert grant(sandbox).status_code == 200
    assert time.monotonic() - started >= 0.3
    sandbox.faults.set("aiconnector", slow_rate=1, delay=0.8, limit=1, paths=[CREDITS])
    with pytest.raises(requests.ReadTimeout):
        grant(sandbox, description="late", timeout=0.2)
    # slow_when "after" (the default): the effect happened before the answer was held back.
    assert [e["description"] for e in ledger(sandbox)] == [None, "late"]


@pytest.mark.parametrize("when, granted", [("before", 0), ("after", 1)])
def test_a_dropped_connection_is_a_connection_error_not_a_status(sandbox, when, granted):
    sandbox.faults.set("aiconnector", drop_rate=1, limit=1, drop_when=when, paths=[CREDITS])
    with pytest.raises(requests.ConnectionError):
        grant(sandbox)
    assert len(ledger(sandbox)) == granted
    assert sandbox.faults.entries()[0]["fault"] == "drop"
    assert grant(sandbox).status_code == 200  # the limit is spent: the service answers again


def test_the_api_client_sees_each_fault_as_the_engine_expects(host, sandbox):
    client = client_for(host, sandbox, "contacts_api", timeout=0.3)
    cases = [
        (dict(error_rate=1), dict(status=500, maybe_applied=False, retry_after=None)),
        (dict(error_rate=1, error_status=502), dict(status=502, maybe_applied=True)),
        (dict(error_rate=1, error_status=504), dict(status=504, maybe_applied=True)),
        (dict(throttle_rate=1, retry_after=2), dict(status=429, maybe_applied=False,
                                                    retry_after=2.0)),
        (dict(slow_rate=1, delay=0.6), dict(status=None, maybe_applied=True)),
        (dict(drop_rate=1), dict(status=None, maybe_applied=True)),
    ]
    try:
        for options, expected in cases:
            sandbox.faults.set("contacts_api", limit=1, **options)
            with pytest.raises(RetriableAPIError) as caught:
                client.get("/api/v1/contacts", params={"limit": 1})
            for name, value in expected.items():
                assert getattr(caught.value, name) == value, (options, name)
            assert client.get("/api/v1/contacts", params={"limit": 1})["items"]
        sandbox.faults.set("contacts_api", throttle_date_rate=1, limit=1, retry_after=3)
        with pytest.raises(RetriableAPIError) as caught:
            client.get("/api/v1/contacts")
        assert 2 < caught.value.retry_after <= 4.5
    finally:
        client.close()
    assert "remote end closed" in str(_drop_error(host, sandbox))


def _drop_error(host, sandbox):
    client = client_for(host, sandbox, "contacts_api")
    sandbox.faults.set("contacts_api", drop_rate=1, limit=1)
    try:
        client.get("/api/v1/contacts")
    except RetriableAPIError as exc:
        return exc
    finally:
        client.close()


def test_list_faults_overlap_shuffle_and_reorder_pages_without_skipping(sandbox):
    for i in range(25):
        sandbox.contacts_api.add_contact("org_demo", name=f"Person {i}")
    every = [c["id"] for c in contacts_get(sandbox, limit=200).json()["items"]]
    assert len(every) == 28  # three seeded, newest first

    def pages():
        return [contacts_get(sandbox, limit=10, offset=o).json()["items"] for o in (0, 10, 20)]

    sandbox.faults.set("contacts_api", list_overlap=3, seed=1)
    first, second, third = ([c["id"] for c in page] for page in pages())
    assert first == every[:10] and second == every[7:20] and third == every[17:28]
    sandbox.faults.set("contacts_api", list_shuffle=True, seed=1)
    shuffled = [[c["id"] for c in page] for page in pages()]
    assert [sorted(p) for p in shuffled] == [sorted(every[i:i + 10]) for i in (0, 10, 20)]
    assert shuffled[0] != every[:10]
    sandbox.faults.set("contacts_api", list_order="oldest_first")
    assert [c["id"] for p in pages() for c in p] == every[::-1]
    sandbox.faults.set("contacts_api", list_order="random", seed=4)
    mixed = [c["id"] for p in pages() for c in p]
    assert sorted(mixed) == sorted(every) and mixed != every and mixed != every[::-1]
    assert mixed == [c["id"] for p in pages() for c in p]  # a stable order
    sandbox.faults.set("contacts_api", list_shuffle=True, orgs=["org_other"])
    assert [c["id"] for p in pages() for c in p] == every  # another org's faults
    search = sandbox.connections()["contacts_api"]
    sandbox.faults.set("contacts_api", list_order="oldest_first")
    found = requests.post(search["base_url"] + "/api/v1/contacts/search", timeout=10,
                          json={"limit": 5}, headers={"Authorization": "Bearer ca_test_key",
                                                      "X-Org-Id": "org_demo"}).json()
    assert [c["id"] for c in found["items"]] == every[::-1][:5]


# -- backoff, as a function ---------------------------------------------------------------------

def test_backoff_is_full_jitter_under_a_capped_exponential(monkeypatch):
    monkeypatch.setattr(engine, "random", random.Random(20240501))
    base, cap = 2.0, 20.0
    for attempt in range(1, 8):
        bound = min(cap, base * 2 ** (attempt - 1))
        draws = [engine.backoff(attempt, base, cap, None, 3600) for _ in range(20_000)]
        assert 0 <= min(draws) and max(draws) <= bound
        assert abs(sum(draws) / len(draws) - bound / 2) < bound * 0.01
        deciles = Counter(min(int(d / bound * 10), 9) for d in draws)
        assert all(1800 <= deciles[i] <= 2200 for i in range(10)), deciles
    # Retry-After wins, capped, with at most a tenth of the base as jitter.
    for _ in range(1000):
        assert 7 <= engine.backoff(3, base, cap, 7.0, 3600) <= 7 + 0.1 * base
        assert 60 <= engine.backoff(3, base, cap, 9999.0, 60) <= 60 + 0.1 * base


# -- flows under faults: the runtime serving, the sandbox failing ---------------------------------

@pytest.mark.slow
@pytest.mark.covers("aiconnector.auto_recharge", "aiconnector.grant_credits")
def test_fifty_recharges_under_500s_and_429s_all_grant_exactly_once(make_runtime, sandbox):
    rt = make_runtime(backoff_base=0.02, backoff_cap=0.2, retry_after_cap=0.2,
                      max_attempts=15)
    host = rt.host
    flow, secret = recharge_flow(host)
    before = next(s["balance"] for s in sandbox.state()["aiconnector"]["subaccounts"]
                  if s["email"] == EMAIL)
    sandbox.faults.set("aiconnector", error_rate=0.3, throttle_rate=0.1,
                       throttle_date_rate=0.1, retry_after=1, paths=[CREDITS], seed=2024)
    started = time.monotonic()
    keys = [f"ar-fault-{i:02d}" for i in range(50)]
    for key in keys:
        deliver(host, flow, secret, key, amount=2)
    assert wait_for(lambda: len(final(flow)) == 50, timeout=60)
    elapsed = time.monotonic() - started
    assert {r.status for r in runs(flow)} == {Run.SUCCEEDED}
    for key in keys:
        assert len(grants_for(sandbox, key)) == 1, key
    assert len(ledger(sandbox)) == 50
    after = next(s["balance"] for s in sandbox.state()["aiconnector"]["subaccounts"]
                 if s["email"] == EMAIL)
    assert after == before + 100
    plan = sandbox.faults.get("aiconnector")
    total = StepAttempt.select().count()
    retried = StepAttempt.select().where(StepAttempt.status == StepRun.RETRYING).count()
    assert total == plan["requests_seen"] == 50 + retried
    assert retried == sum(plan["injected"].values()) >= 30
    assert plan["injected"]["error"] and plan["injected"]["throttle"] and \
        plan["injected"]["throttle_date"]
    # Each 429 asked for 1 s or more; the wait was capped at retry_after_cap (0.2 s) plus
    # at most 0.1 * base of jitter. A 500 waited the backoff: at most base * 2^(n-1).
    for a in StepAttempt.select().where(StepAttempt.status == StepRun.RETRYING):
        waited = epoch(a.retry_at) - (epoch(a.started_at) + a.duration_ms / 1000)
        if "HTTP 429" in a.error:
            assert 0.2 - 0.15 <= waited <= 0.2 + 0.002 + 0.001, a.error
        else:
            assert "HTTP 500" in a.error
            assert -0.15 <= waited <= min(0.2, 0.02 * 2 ** (a.number - 1)) + 0.001
    print(f"\n50 recharge runs under faults: {total} attempts, {retried} retries "
          f"({dict(plan['injected'])}), {elapsed:.1f} s")


@pytest.mark.parametrize("kind", ["throttle", "throttle_date"])
def test_waits_honour_retry_after_as_seconds_and_as_a_date(make_runtime, sandbox, kind):
    rt = make_runtime(backoff_base=0.05, backoff_cap=0.2)
    host = rt.host
    flow, secret = recharge_flow(host)
    sandbox.faults.set("aiconnector", **{f"{kind}_rate": 1}, retry_after=1, limit=1,
                       paths=[CREDITS])
    deliver(host, flow, secret, f"ar-{kind}")
    assert wait_for(lambda: len(final(flow)) == 1, timeout=10)
    run = runs(flow)[0]
    assert run.status == Run.SUCCEEDED
    first, second = attempts(run)
    assert first.status == StepRun.RETRYING and "HTTP 429 RATE_LIMITED" in first.error
    (entry,) = sandbox.faults.entries()
    header = entry["retry_after"]
    if kind == "throttle":
        assert header == "1"
        due = entry["at"] + 1
    else:
        due = email.utils.parsedate_to_datetime(header).timestamp()
        assert due - entry["at"] >= 1
    jitter = 0.1 * 0.05
    assert due - 0.01 <= epoch(first.retry_at) <= due + jitter + 0.3
    assert epoch(second.started_at) >= epoch(first.retry_at) - 0.001  # it did wait
    assert len(grants_for(sandbox, f"ar-{kind}")) == 1


@pytest.mark.parametrize("kind", ["throttle", "throttle_date"])
def test_a_long_retry_after_is_capped(make_runtime, sandbox, kind):
    rt = make_runtime(backoff_base=0.05, backoff_cap=0.2, retry_after_cap=0.5)
    host = rt.host
    flow, secret = recharge_flow(host)
    sandbox.faults.set("aiconnector", **{f"{kind}_rate": 1}, retry_after=3600, limit=1,
                       paths=[CREDITS])
    started = time.monotonic()
    deliver(host, flow, secret, f"ar-cap-{kind}")
    assert wait_for(lambda: len(final(flow)) == 1, timeout=10)
    assert time.monotonic() - started < 5
    run = runs(flow)[0]
    assert run.status == Run.SUCCEEDED
    first = attempts(run)[0]
    (entry,) = sandbox.faults.entries()
    assert 0.5 <= epoch(first.retry_at) - entry["at"] <= 0.5 + 0.005 + 0.3


@pytest.mark.slow
def test_backoff_without_retry_after_is_exponential_with_full_jitter(make_runtime, sandbox,
                                                                      monkeypatch):
    base, cap = 0.04, 0.16
    rt = make_runtime(backoff_base=base, backoff_cap=cap, max_attempts=12, workers=1)
    host = rt.host
    calls = []
    real = engine.backoff

    def recording(attempt, base_, cap_, retry_after, retry_after_cap):
        delay = real(attempt, base_, cap_, retry_after, retry_after_cap)
        calls.append((attempt, retry_after, delay))
        return delay

    monkeypatch.setattr(engine, "backoff", recording)
    monkeypatch.setattr(engine, "random", random.Random(77))
    flow, secret = recharge_flow(host)
    sandbox.faults.set("aiconnector", error_rate=0.6, paths=[CREDITS], seed=9)
    for i in range(20):
        deliver(host, flow, secret, f"ar-backoff-{i}")
    assert wait_for(lambda: len(final(flow)) == 20, timeout=30)
    assert {r.status for r in runs(flow)} == {Run.SUCCEEDED}
    bound = lambda n: min(cap, base * 2 ** (n - 1))  # noqa: E731
    assert calls and all(retry_after is None for _, retry_after, _ in calls)
    for attempt, _, delay in calls:
        assert 0 <= delay <= bound(attempt)
    retrying = []
    for run in runs(flow):
        history = attempts(run)
        for earlier, later in zip(history, history[1:]):
            assert earlier.status == StepRun.RETRYING and "HTTP 500" in earlier.error
            waited = epoch(earlier.retry_at) - (epoch(earlier.started_at) +
                                                 earlier.duration_ms / 1000)
            assert -0.15 <= waited <= bound(earlier.number) + 0.002
            assert epoch(later.started_at) >= epoch(earlier.retry_at) - 0.001
            retrying.append(earlier.number)
    assert Counter(retrying) == Counter(attempt for attempt, _, _ in calls)
    assert max(retrying) >= 4  # the cap was reached at least once
    spread = [delay / bound(attempt) for attempt, _, delay in calls]
    assert len(spread) >= 20
    assert min(spread) < 0.2 and max(spread) > 0.8 and 0.3 < sum(spread) / len(spread) < 0.7
    print(f"\nbackoff: {len(calls)} retries over 20 runs, attempts per run up to "
          f"{max(retrying) + 1}")


def _lost_answer_run(make_runtime, sandbox, monkeypatch, key, **fault):
    rt = make_runtime(backoff_base=0.02, backoff_cap=0.1, max_attempts=5)
    host = rt.host
    monkeypatch.setattr(type(host.catalog.app("aiconnector")), "timeout", 0.4)
    flow, secret = recharge_flow(host)
    sandbox.faults.set("aiconnector", limit=1, paths=[CREDITS], **fault)
    deliver(host, flow, secret, key)
    assert wait_for(lambda: len(final(flow)) == 1, timeout=10)
    return host, runs(flow)[0]


@pytest.mark.parametrize("fault, said", [
    (dict(slow_rate=1, delay=1.2, slow_when="after"), "did not answer within 0.4 s"),
    (dict(drop_rate=1, drop_when="after"), "remote end closed"),
])
def test_a_guarded_post_whose_answer_is_lost_is_not_sent_again(make_runtime, sandbox,
                                                                monkeypatch, fault, said):
    host, run = _lost_answer_run(make_runtime, sandbox, monkeypatch, "ar-lost", **fault)
    assert run.status == Run.FAILED
    assert "stopped mid-call" in run.error and "--force-key" in run.error
    first, second = attempts(run)
    assert first.status == StepRun.RETRYING and said in first.error
    assert second.status == StepRun.FAILED and "stopped mid-call" in second.error
    assert sandbox.faults.get("aiconnector")["requests_seen"] == 1  # one POST, never again
    assert len(grants_for(sandbox, "ar-lost")) == 1  # the service did grant, once
    record = IdempotencyRecord.get(IdempotencyRecord.key == "ar-lost")
    assert record.status == IdempotencyRecord.PENDING


def test_a_post_dropped_before_the_effect_is_unknown_until_a_human_forces_it(
        make_runtime, sandbox, monkeypatch):
    host, run = _lost_answer_run(make_runtime, sandbox, monkeypatch, "ar-dropped",
                                 drop_rate=1, drop_when="before")
    assert run.status == Run.FAILED and "stopped mid-call" in run.error
    assert grants_for(sandbox, "ar-dropped") == []  # nothing happened, but nobody could know
    engine.replay(run.id)  # without --force-key: the same answer
    assert wait_for(lambda: Run.get_by_id(run.id).status == Run.FAILED, timeout=10)
    assert grants_for(sandbox, "ar-dropped") == []
    engine.replay(run.id, force_key=True)  # a human checked the service: send it again
    assert wait_for(lambda: Run.get_by_id(run.id).status == Run.SUCCEEDED, timeout=10)
    assert len(grants_for(sandbox, "ar-dropped")) == 1


def test_a_500_is_taken_at_its_word_and_retried_even_after_the_effect(make_runtime, sandbox):
    """The decided contract (docs/reliability.md, "Decisions"): an HTTP 500 is the service
    saying it failed, and AI Connector's document says to retry it ("500 Server error -
    email support if this persists"), so the ledger releases the key and the step is tried
    again. Only a lost answer (read timeout, dropped connection, 502/504 from a gateway) is
    "maybe applied". A service that fails AFTER the effect therefore grants twice; this test
    pins that, so changing the contract is a deliberate act, not an accident."""
    rt = make_runtime(backoff_base=0.02, backoff_cap=0.1)
    host = rt.host
    flow, secret = recharge_flow(host)
    sandbox.faults.set("aiconnector", error_rate=1, error_when="after", limit=1,
                       paths=[CREDITS])
    deliver(host, flow, secret, "ar-500-after", amount=5)
    assert wait_for(lambda: len(final(flow)) == 1, timeout=10)
    run = runs(flow)[0]
    assert run.status == Run.SUCCEEDED
    assert [a.status for a in attempts(run)] == [StepRun.RETRYING, StepRun.SUCCEEDED]
    assert len(grants_for(sandbox, "ar-500-after")) == 2  # granted twice for one key


def test_a_permanent_4xx_fails_the_run_at_once_with_the_services_message(make_runtime,
                                                                         sandbox):
    rt = make_runtime(backoff_base=0.02, backoff_cap=0.1, max_attempts=10)
    host = rt.host
    flow, secret = recharge_flow(host)
    # Faults stay on for the service; the 404 itself is final and never retried.
    sandbox.faults.set("aiconnector", error_rate=0.5, methods=["GET"], seed=1)
    deliver(host, flow, secret, "ar-nobody", email="nobody@agency.example")
    assert wait_for(lambda: len(final(flow)) == 1, timeout=10)
    run = runs(flow)[0]
    assert run.status == Run.FAILED
    assert run.error == ("step grant: HTTP 404 SUBACCOUNT_NOT_FOUND: No sub-account of this "
                         "agency has that email.")
    (only,) = attempts(run)
    assert only.status == StepRun.FAILED and only.retry_at is None
    assert IdempotencyRecord.select().count() == 0  # "not done": the key was released
    assert ledger(sandbox) == []


def test_a_plain_503_waits_the_backoff_not_the_rate_window(make_runtime, sandbox):
    rt = make_runtime(backoff_base=0.05, backoff_cap=0.2)
    host = rt.host
    flow, secret = recharge_flow(host)
    sandbox.faults.set("aiconnector", error_rate=1, error_status=503, limit=1,
                       paths=[CREDITS])
    deliver(host, flow, secret, "ar-503")
    run = wait_for(lambda: next((r for r in runs(flow) if attempts_or_none(r)), None))
    first = attempts(run)[0]
    (entry,) = sandbox.faults.entries()
    assert first.status == StepRun.RETRYING and "HTTP 503" in first.error
    assert epoch(first.retry_at) - entry["at"] <= 0.05 + 0.3  # the first backoff, 0..0.05 s


def attempts_or_none(run):
    sr = StepRun.get_or_none((StepRun.run == run) & (StepRun.name == "grant"))
    return sr is not None and StepAttempt.select().where(StepAttempt.step_run == sr).exists()


def test_a_4xx_is_fatal_in_the_client_even_with_faults_on(host, sandbox):
    client = client_for(host, sandbox, "aiconnector")
    sandbox.faults.set("aiconnector", error_rate=1, methods=["GET"])  # not this POST
    try:
        with pytest.raises(FatalAPIError) as caught:
            client.post("/subaccounts/credits", auth="header",
                        json={"email": "nobody@agency.example", "amount": 1})
    finally:
        client.close()
    assert caught.value.status == 404 and caught.value.code == "SUBACCOUNT_NOT_FOUND"


# -- a POST is repeated only when guarded (the host enforces it) -------------------------------

class _PlainContact(Action):
    """A third-party-style action that POSTs with neither an idempotency key nor ctx.once."""

    key = "t.plain_create_contact"
    app = "contacts_api"
    label = "Create contact, unguarded"

    def run(self, ctx, inputs):
        return ctx.client.post("/api/v1/contacts", json={"name": "Unguarded Person"})


class _PlainPlugin:
    @hookimpl
    def register_actions(self, register):
        register(_PlainContact)


def _lost_answer(make_runtime, sandbox, monkeypatch, service, path, steps):
    """Run one flow whose first POST to ``path`` is answered too late; return its run."""
    rt = make_runtime(backoff_base=0.02, backoff_cap=0.1, max_attempts=5,
                      extra_plugins=[HookPlugin(), _PlainPlugin()])
    host = rt.host
    monkeypatch.setattr(type(host.catalog.app(service)), "timeout", 0.4)
    flow = flows.save(host, {"name": "lost", "trigger": {"key": "t.hook"}, "steps": steps})
    sandbox.faults.set(service, limit=1, paths=[path], methods=["POST"], slow_rate=1,
                       delay=1.2, slow_when="after")
    ingest(flow, host.catalog.trigger("t.hook"), [("one", {"id": "one"})])
    rt.executor.wake()
    assert wait_for(lambda: len(final(flow)) == 1, timeout=15)
    return runs(flow)[0]


def test_an_unguarded_post_whose_answer_is_lost_is_not_sent_again(make_runtime, sandbox,
                                                                  monkeypatch):
    run = _lost_answer(make_runtime, sandbox, monkeypatch, "contacts_api", "/api/v1/contacts",
                       [{"name": "create", "action": "t.plain_create_contact",
                         "connection": "contacts-api"}])
    assert run.status == Run.FAILED
    assert "may have carried out this POST" in run.error and "not sent again" in run.error
    assert [a.status for a in attempts(run, "create")] == [StepRun.FAILED]  # no retry
    assert sandbox.faults.get("contacts_api")["requests_seen"] == 1
    made = contacts_get(sandbox, q="Unguarded Person", limit=10).json()["items"]
    assert len(made) == 1  # the service did create it, once


def test_a_post_carrying_the_apps_idempotency_header_is_retried(make_runtime, sandbox,
                                                                monkeypatch):
    run = _lost_answer(make_runtime, sandbox, monkeypatch, "samva", "/messages/send",
                       [{"name": "send", "action": "samva.send_message", "connection": "samva",
                         "inputs": {"channel": "sms", "to": "+14155550123",
                                    "body": "Lost answer"}}])
    assert run.status == Run.SUCCEEDED, run.error
    assert [a.status for a in attempts(run, "send")] == [StepRun.RETRYING, StepRun.SUCCEEDED]
    assert sandbox.faults.get("samva")["requests_seen"] == 2
    sent = [m for m in sandbox.state()["samva"]["messages"] if m["body"] == "Lost answer"]
    assert len(sent) == 1  # the service answered the repeat from its idempotency record


def test_a_search_sent_as_post_is_retried_after_a_lost_answer(make_runtime, sandbox,
                                                              monkeypatch):
    run = _lost_answer(make_runtime, sandbox, monkeypatch, "contacts_api",
                       "/api/v1/contacts/search",
                       [{"name": "search", "action": "contacts_api.search_contacts",
                         "connection": "contacts-api", "inputs": {"q": "grace"}}])
    assert run.status == Run.SUCCEEDED, run.error
    assert [a.status for a in attempts(run, "search")] == [StepRun.RETRYING,
                                                           StepRun.SUCCEEDED]
    assert sandbox.faults.get("contacts_api")["requests_seen"] == 2
