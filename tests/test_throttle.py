"""Throttles that hold across workers (issue 7): a connection's rate limit and a flow's
concurrency, on SQLite (threads and processes) and on the real PostgreSQL (processes).

The rate-limit tests count requests where they arrive: a small HTTP server records each
arrival's time, and the arrivals are grouped into the limiter's own windows (epoch seconds
// window). PostgreSQL is the server at CONNECTOR_TEST_POSTGRES_URL (default the machine's
127.0.0.1:5432, database test), in a schema of its own; those tests skip, saying why, where
none answers.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from connector import Action, App, flows, hookimpl, throttle
from connector.engine import Executor, claim, due_runs, run_due
from connector.errors import Throttled, UserError
from connector.intake import ingest
from connector.sdk import RateLimit
from connector.store import Connection, Run, StepAttempt, StepRun, utcnow

from .conftest import wait_for
from .hooks import HookPlugin
from .test_postgres import pg_schema, pg_url  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parent.parent


# -- fixtures ---------------------------------------------------------------------------------

class Metered(App):
    """An app whose calls go to the counting server; its default limit is 3 a second."""

    key = "metered"
    label = "Metered"
    rate_limit = RateLimit(3, 1)


SPANS: list[tuple[str, float, float]] = []
SPANS_LOCK = threading.Lock()


class Slow(Action):
    """Hold the run for 100 ms and record when it ran, to see overlapping runs."""

    key = "metered.slow"
    app = "metered"
    label = "Slow"
    needs_connection = False

    def run(self, ctx, inputs):
        start = time.monotonic()
        time.sleep(0.1)
        with SPANS_LOCK:
            SPANS.append((ctx.flow_name, start, time.monotonic()))
        return {}


class TwoCalls(Action):
    """Make two calls with the step's connection."""

    key = "metered.two_calls"
    app = "metered"
    label = "Two calls"

    def run(self, ctx, inputs):
        ctx.client.get("/one")
        ctx.client.get("/two")
        return {"ok": True}


class MeteredPlugin:
    @hookimpl
    def register_apps(self, register):
        register(Metered)

    @hookimpl
    def register_actions(self, register):
        register(Slow)
        register(TwoCalls)


class _Count(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        with self.server.lock:
            self.server.arrivals.append(time.time())
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def counter():
    """A threaded HTTP server that records the arrival time of every request."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Count)
    server.daemon_threads = True
    server.arrivals, server.lock = [], threading.Lock()
    server.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(params=["sqlite", "postgres"])
def db_host(request, make_host):
    """A host on SQLite, then on PostgreSQL, with the metered app and the test hook."""
    overrides = {}
    if request.param == "postgres":
        overrides["database_url"] = request.getfixturevalue("pg_url")
    return make_host(extra_plugins=[MeteredPlugin(), HookPlugin()], **overrides)


def per_window(arrivals: list[float], per: float) -> Counter:
    return Counter(int(t // per) for t in arrivals)


def next_window_start(per: float, lead: float) -> float:
    """Return the start of the first window at least ``lead`` seconds away."""
    return (math.floor((time.time() + lead) / per) + 1) * per


def assert_within_ten_percent(arrivals, limit: int, per: float, start: float, windows: int):
    counts = per_window(arrivals, per)
    first = int(start // per)
    seen = [counts.get(first + i, 0) for i in range(windows)]
    print(f"\nrequests per {per:g} s window (limit {limit}): {seen}")
    assert max(counts.values()) <= limit * 1.1, counts  # never over the limit (+10%)
    assert min(seen) >= limit * 0.9, seen  # and the limit is used, not starved
    assert sum(counts.values()) == len(arrivals)


# -- the rate limit -------------------------------------------------------------------------------

def test_rate_limit_options_parse_and_say_what_to_fix():
    assert throttle.parse("100/60") == (100, 60.0)
    assert throttle.parse("100/min") == (100, 60.0)
    assert throttle.parse("5/s") == (5, 1.0)
    assert throttle.parse("1000 per hour") == (1000, 3600.0)
    assert throttle.parse("3/1.5s") == (3, 1.5)
    assert throttle.parse("off") == (0, None)
    assert throttle.parse("default") == (None, None)
    for bad in ("fast", "0/60", "10/0", "10/fortnight"):
        with pytest.raises(UserError, match="--rate-limit: expected"):
            throttle.parse(bad, "--rate-limit")


def test_a_connection_overrides_the_apps_limit_or_turns_it_off(make_host, counter):
    host = make_host(extra_plugins=[MeteredPlugin()])
    conn = host.add_connection("m", "metered", {}, counter.url)
    assert throttle.effective(Metered(), conn) == RateLimit(3, 1.0)
    conn = throttle.set_override(conn, 50, 10)
    assert throttle.effective(Metered(), conn) == RateLimit(50, 10.0)
    assert host.client(conn).gate.limit == RateLimit(50, 10.0)
    conn = throttle.set_override(conn, 0, None)
    assert throttle.effective(Metered(), conn) is None and host.client(conn).gate is None
    conn = throttle.set_override(conn, None, None)
    assert throttle.effective(Metered(), conn) == RateLimit(3, 1.0)
    with pytest.raises(UserError, match="rate_limit: expected a window"):
        throttle.set_override(conn, 5, 0)


def test_a_short_wait_happens_in_place_and_a_long_one_is_throttled(make_host, counter):
    host = make_host(extra_plugins=[MeteredPlugin()])
    conn = throttle.set_override(host.add_connection("m", "metered", {}, counter.url), 4, 0.5)
    client = host.client(conn)
    started = time.monotonic()
    for _ in range(10):  # 4 per half second: the waits for the next window happen in place
        client.get("/x")
    assert 0.5 < time.monotonic() - started < 3.0
    conn = throttle.set_override(conn, 1, 30)
    client = host.client(conn)
    client.get("/x")
    with pytest.raises(Throttled) as caught:  # the next window is 30 s away: not in place
        client.get("/x")
    assert 0 < caught.value.retry_after <= 30
    assert "rate limit of 1/30s for connection m is used up" in str(caught.value)
    assert len(counter.arrivals) == 11  # the throttled call was never sent


def test_the_limit_holds_within_ten_percent_across_threads_on_sqlite(make_host, counter):
    host = make_host(extra_plugins=[MeteredPlugin()])
    limit, per, windows = 20, 1.0, 3
    conn = throttle.set_override(host.add_connection("m", "metered", {}, counter.url),
                                 limit, per)
    start = next_window_start(per, 0.2)
    end = start + windows * per

    def hammer():
        client = host.client(Connection.get_by_id(conn.id))
        time.sleep(max(0.0, start - time.time()))
        while time.time() < end:
            try:
                client.get("/x")
            except Throttled as exc:
                time.sleep(exc.retry_after)

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert_within_ten_percent([t for t in counter.arrivals if t < end], limit, per, start,
                              windows)


HAMMER = """
import sys, time
from connector.errors import Throttled
from connector.http import ApiClient
from connector.sdk import App
from connector.store import Connection, init_db

class Metered(App):
    key = "metered"
    label = "Metered"

url, name, base = sys.argv[1:4]
init_db(url, upgrade=False)
client = ApiClient(Metered(), {}, base, connection=Connection.get(Connection.name == name))
print("ready", flush=True)
start, end = map(float, sys.stdin.readline().split())
time.sleep(max(0.0, start - time.time()))
sent = 0
while time.time() < end:
    try:
        client.get("/x")
        sent += 1
    except Throttled as exc:
        time.sleep(exc.retry_after)
print(sent, flush=True)
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_limit_holds_within_ten_percent_across_processes(backend, make_host, counter,
                                                             request):
    overrides = {}
    if backend == "postgres":
        overrides["database_url"] = request.getfixturevalue("pg_url")
    host = make_host(extra_plugins=[MeteredPlugin()], **overrides)
    limit, per, windows, processes = 25, 1.5, 4, 3
    throttle.set_override(host.add_connection("m", "metered", {}, counter.url), limit, per)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", HAMMER, host.settings.database_url, "m",
                               counter.url], env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(processes)]
    for proc in procs:  # each has imported and connected
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    start = next_window_start(per, 0.2)
    end = start + windows * per
    sent = []
    for proc in procs:
        proc.stdin.write(f"{start} {end}\n")
        proc.stdin.flush()
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        sent.append(int(out.strip()))
    assert all(sent), sent  # every process got its share of requests through
    assert_within_ten_percent([t for t in counter.arrivals if t < end], limit, per, start,
                              windows)


def test_throttled_puts_a_run_back_without_spending_an_attempt(make_host, counter):
    host = make_host(extra_plugins=[MeteredPlugin(), HookPlugin()], max_attempts=1)
    throttle.set_override(host.add_connection("m", "metered", {}, counter.url), 2, 2)
    flow = flows.save(host, {"name": "calls", "trigger": {"key": "t.hook"}, "steps": [
        {"name": "calls", "action": "metered.two_calls", "connection": "m"}]})
    trigger = host.catalog.trigger("t.hook")
    time.sleep(next_window_start(2, 0.0) - time.time() + 0.05)  # a whole window ahead
    ingest(flow, trigger, [("a", {"id": "a"}), ("b", {"id": "b"})])
    run_due(host)
    first, second = Run.select().order_by(Run.id)
    assert first.status == Run.SUCCEEDED
    assert second.status == Run.QUEUED and "rate limit of 2/2s" in second.error
    step = StepRun.get(StepRun.run == second)
    assert step.attempts == 0  # a wait, not a failure: max_attempts=1 is still available
    assert [a.status for a in StepAttempt.select().where(StepAttempt.step_run == step)] == [
        StepRun.RETRYING]
    assert second.next_attempt_at > utcnow()
    assert wait_for(lambda: run_due(host) and Run.get_by_id(second.id).status ==
                    Run.SUCCEEDED, timeout=6)
    assert len(counter.arrivals) == 4


# -- the concurrency of a flow ------------------------------------------------------------------

def _slow_flow(host, name, concurrency):
    return flows.save(host, {"name": name, "concurrency": concurrency,
                             "trigger": {"key": "t.hook"},
                             "steps": [{"name": "slow", "action": "metered.slow"}]})


def most_at_once(flow_name: str) -> int:
    """Return the largest number of the flow's runs that were executing at one moment."""
    edges = sorted([(s, 1) for f, s, _ in SPANS if f == flow_name] +
                   [(e, -1) for f, _, e in SPANS if f == flow_name])
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


def test_a_flows_concurrency_holds_across_two_executors(db_host):
    host = db_host
    SPANS.clear()
    limits = {"one-at-a-time": 1, "two-at-a-time": 2, "unlimited": 0}
    trigger = host.catalog.trigger("t.hook")
    for name, limit in limits.items():
        flow = _slow_flow(host, name, limit)
        ingest(flow, trigger, [(f"{name}-{i}", {"id": i}) for i in range(12)])
    executors = [Executor(host, workers=4), Executor(host, workers=4)]
    for executor in executors:
        executor.start()
    try:
        assert wait_for(lambda: Run.select().where(Run.status == Run.SUCCEEDED).count() == 36,
                        timeout=60)
    finally:
        for executor in executors:
            executor.stop()
    peaks = {name: most_at_once(name) for name in limits}
    print(f"\nmost runs at once per flow: {peaks}")
    assert peaks["one-at-a-time"] == 1  # never two at once, across both executors
    assert peaks["two-at-a-time"] == 2
    assert peaks["unlimited"] >= 2  # the log does see overlaps where they are allowed
    assert Run.select().where(Run.attempts != 1).count() == 0  # no run claimed twice


def test_a_flow_at_its_limit_offers_no_runs_and_frees_its_slot_when_a_lease_dies(db_host):
    host = db_host
    trigger = host.catalog.trigger("t.hook")
    single = _slow_flow(host, "single", 1)
    other = _slow_flow(host, "other", 0)
    ingest(single, trigger, [(f"s{i}", {"id": i}) for i in range(5)])
    ingest(other, trigger, [("o1", {"id": 1})])
    offered = due_runs(100)
    assert len([r for r in offered if Run.get_by_id(r).flow_id == single.id]) == 1
    holder = next(r for r in offered if Run.get_by_id(r).flow_id == single.id)
    assert claim(holder, 300) is not None
    waiting = [r.id for r in Run.select().where((Run.flow == single) & (Run.id != holder))]
    assert all(claim(r, 300) is None for r in waiting)  # the claim itself refuses
    assert [Run.get_by_id(r).flow_id for r in due_runs(100)] == [other.id]  # no busy spin
    Run.update(lease_until=utcnow() - dt.timedelta(seconds=1)).where(
        Run.id == holder).execute()  # the holder's worker died
    again = due_runs(100)
    assert holder in again and len([r for r in again if r in waiting]) == 0
    assert claim(holder, 300) is not None  # taken up again; still one at a time


def test_concurrency_is_part_of_the_flow_file(db_host):
    host = db_host
    flow = _slow_flow(host, "strict", 1)
    exported = flows.export(flow)
    assert exported["concurrency"] == 1
    assert "concurrency" not in flows.export(_slow_flow(host, "free", 0))
    with pytest.raises(UserError, match="concurrency"):
        flows.save(host, {**exported, "concurrency": -1})
    data = json.loads(json.dumps(exported))
    assert flows.save(host, data).concurrency == 1


# -- where a builder sets them: the REST API and the CLI ----------------------------------------

def test_the_api_sets_shows_and_validates_a_connections_rate_limit(host, sandbox):
    from connector import auth
    from connector.web import create_app

    client = create_app(host).test_client()
    headers = {"Authorization": f"Bearer {auth.create_key('k', 'write')[1]}"}
    info = sandbox.connections()["samva"]
    body = {"app": "samva", "credentials": info["credentials"], "base_url": info["base_url"]}
    made = client.post("/api/v1/connections", headers=headers, json={**body, "name": "samva"})
    assert made.status_code == 201, made.json
    assert made.json["rate_limit"] is None  # the app's documented default applies
    assert made.json["effective_rate_limit"] == {"requests": 100, "per_seconds": 60.0}
    put = client.put("/api/v1/connections/samva", headers=headers,
                     json={**body, "rate_limit": {"requests": 20, "per_seconds": 1}})
    assert put.status_code == 200, put.json
    assert put.json["rate_limit"] == put.json["effective_rate_limit"] == {
        "requests": 20, "per_seconds": 1.0}
    off = client.put("/api/v1/connections/samva", headers=headers,
                     json={**body, "rate_limit": {"requests": 0}})
    assert off.json["rate_limit"]["requests"] == 0 and off.json["effective_rate_limit"] is None
    bad = client.put("/api/v1/connections/samva", headers=headers,
                     json={**body, "rate_limit": {"requests": 5, "per_seconds": 0}})
    assert bad.status_code == 422 and "per_seconds" in json.dumps(bad.json)
    spec = client.get("/api/v1/openapi.json").json
    assert "rate_limit" in json.dumps(spec["components"]["schemas"])
    flow = {"name": "strict", "concurrency": 1, "trigger": {"key": "webhook.catch"},
            "steps": [{"name": "shout", "action": "formatter.text",
                       "inputs": {"operation": "upper", "text": "x"}}]}
    created = client.post("/api/v1/flows", headers=headers, json=flow)
    assert created.status_code == 201, created.json
    assert created.json["concurrency"] == 1 and created.json["definition"]["concurrency"] == 1


def test_connections_add_takes_a_rate_limit_and_list_shows_it(tmp_path, monkeypatch, counter):
    from click.testing import CliRunner

    from connector.cli import main

    monkeypatch.setenv("CONNECTOR_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    runner = CliRunner()
    bad = runner.invoke(main, ["connections", "add", "c", "--app", "contacts_api",
                               "--field", "api_key=k", "--field", "org_id=o",
                               "--base-url", counter.url, "--rate-limit", "lots"])
    assert bad.exit_code != 0 and "--rate-limit: expected REQUESTS/SECONDS" in bad.output
    assert "Traceback" not in bad.output
    added = runner.invoke(main, ["connections", "add", "c", "--app", "contacts_api",
                                 "--field", "api_key=k", "--field", "org_id=o",
                                 "--base-url", counter.url, "--rate-limit", "120/min"])
    assert added.exit_code == 0, added.output
    listed = runner.invoke(main, ["connections", "list", "--json"])
    row = json.loads(listed.output)[0]
    assert row["rate_limit"] == "120/60s" and row["rate_limit_source"] == "connection"
    runner.invoke(main, ["connections", "add", "c", "--app", "contacts_api", "--replace",
                         "--field", "api_key=k", "--field", "org_id=o",
                         "--base-url", counter.url])
    row = json.loads(runner.invoke(main, ["connections", "list", "--json"]).output)[0]
    assert row["rate_limit"] == "120/60s"  # replacing the credentials keeps the limit
    runner.invoke(main, ["connections", "add", "c", "--app", "contacts_api", "--replace",
                         "--field", "api_key=k", "--field", "org_id=o",
                         "--base-url", counter.url, "--rate-limit", "default"])
    row = json.loads(runner.invoke(main, ["connections", "list", "--json"]).output)[0]
    assert row["rate_limit"] == "off" and row["rate_limit_source"] == "app"
