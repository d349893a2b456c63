"""Celery workers execute runs: real `connector worker` processes on real Redis and RabbitMQ.

Brokers are the machine's (CONNECTOR_TEST_REDIS_URL, default redis://127.0.0.1:6379/13, and
CONNECTOR_TEST_AMQP_URL, default amqp://guest:guest@127.0.0.1:5672//); each test uses a
queue of its own and deletes it after. A broker, PostgreSQL or Celery that is not there
skips its tests with the reason. Nothing here fakes a broker or runs tasks eagerly.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from connector import flows
from connector.config import Settings
from connector.crypto import new_key
from connector.engine import Executor
from connector.errors import ConfigurationError
from connector.host import Host
from connector.intake import ingest
from connector.runtime import Runtime
from connector.signatures import sign
from connector.store import Run, StepAttempt, StepRun, TriggerState, fit_key
from connector.workers import Broker, Dispatcher, redact

from .conftest import connection_name, wait_for
from .test_postgres import pg_schema, pg_url  # noqa: F401  (fixtures)

REDIS_URL = os.environ.get("CONNECTOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
AMQP_URL = os.environ.get("CONNECTOR_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "flows"
ROOT = Path(__file__).resolve().parent.parent


def unreachable(url: str) -> str | None:
    """Return why nothing answers at ``url``'s host and port, or None when something does."""
    parts = urlsplit(url)
    port = parts.port or {"redis": 6379, "amqp": 5672, "postgresql": 5432}.get(parts.scheme)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=2).close()
    except OSError as exc:
        return f"nothing answers at {redact(url)}: {exc}"
    return None


def delete_queue(broker: Broker) -> None:
    from connector.workers import make_app

    app = make_app(broker)
    try:
        with app.connection_for_write() as conn:
            channel = conn.default_channel
            channel.queue_delete(broker.queue)
            if not broker.url.startswith("redis"):
                channel.exchange_delete(broker.queue)
    finally:
        app.close()


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request):
    """A real broker with a queue of this test's own, deleted after."""
    pytest.importorskip("celery", reason="Celery is not installed (pip install -e '.[celery]')")
    url = REDIS_URL if request.param == "redis" else AMQP_URL
    problem = unreachable(url)
    if problem:
        pytest.skip(problem)
    found = Broker(url, f"connector-test-{uuid.uuid4().hex[:10]}")
    yield found
    delete_queue(found)


def subprocess_env(settings: Settings, broker: Broker, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    env.update(CONNECTOR_DATABASE_URL=settings.database_url,
               CONNECTOR_SECRET_KEY=settings.secret_key, CONNECTOR_BROKER_URL=broker.url,
               CONNECTOR_BROKER_QUEUE=broker.queue, **{k: str(v) for k, v in extra.items()})
    return env


class Process:
    """A `connector ...` command in a session of its own, so a kill takes its children too."""

    def __init__(self, args: list[str], env: dict, log: Path, ready: str):
        self.args, self.env, self.log, self.ready = args, env, log, ready
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> "Process":
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "connector.cli", *self.args],
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         cwd=ROOT, start_new_session=True)
        assert wait_for(lambda: self.ready in self.text() or self.proc.poll() is not None,
                        timeout=timeout, interval=0.1)
        assert self.proc.poll() is None, self.text()[-3000:]
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def worker(env: dict, log: Path, concurrency: int = 2) -> Process:
    return Process(["worker", "--concurrency", str(concurrency), "--loglevel", "info",
                    "--hostname", f"{log.stem}@%h"], env, log, ready=" ready.")


def ledger_keys(sandbox) -> Counter:
    """Count the sandbox's own credit grants per key (the description ends with it)."""
    return Counter(entry["description"].split()[-1]
                   for entry in sandbox.state()["aiconnector"]["credit_ledger"])


# -- without a broker, and the errors ------------------------------------------------------------

def test_without_a_broker_serve_keeps_its_in_process_executor(host):
    assert Broker.from_env({}) is None
    runtime = Runtime(host)
    assert isinstance(runtime.executor, Executor) and runtime.broker is None


def test_broker_settings_come_from_the_environment_and_errors_hide_passwords():
    broker = Broker.from_env({"CONNECTOR_BROKER_URL": "amqp://bob:s3cret@mq:5672//",
                              "CONNECTOR_BROKER_QUEUE": "runs"})
    assert broker == Broker("amqp://bob:s3cret@mq:5672//", "runs")
    assert broker.safe_url == "amqp://bob:***@mq:5672//"
    assert redact("redis://:pw@a:6379/0;redis://:pw@b:6379/0") == (
        "redis://:***@a:6379/0;redis://:***@b:6379/0")
    assert redact("redis://127.0.0.1:6379/3") == "redis://127.0.0.1:6379/3"
    with pytest.raises(ConfigurationError, match="redis:// or amqp://") as err:
        Broker.from_env({"CONNECTOR_BROKER_URL": "http://u:hunter2@mq/"})
    assert "hunter2" not in str(err.value)


def test_a_broker_without_celery_installed_says_what_to_install(host, monkeypatch):
    monkeypatch.setitem(sys.modules, "celery", None)  # what `import celery` meets when absent
    with pytest.raises(ConfigurationError, match=r"pip install 'connector\[celery\]'"):
        Runtime(host, broker=Broker("redis://127.0.0.1:6379/0"))


def test_the_core_and_the_cli_never_import_celery():
    code = ("import sys, connector.cli, connector.runtime, connector.workers; "
            "sys.exit('celery' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_worker_without_a_broker_is_one_line_saying_what_to_set(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    done = subprocess.run([sys.executable, "-m", "connector.cli", "worker"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: connector worker needs a broker: set CONNECTOR_BROKER_URL to "
        "redis://HOST:6379/0 or amqp://USER:PASSWORD@HOST:5672//"]


# -- the dispatcher, against a real broker -------------------------------------------------------

def queue_runs(host, count: int, prefix: str = "k"):
    flow = flows.save(host, {"name": f"catch-{prefix}", "trigger": {"key": "webhook.catch"},
                             "steps": [{"action": "formatter.lookup",
                                        "inputs": {"key": "a", "table": {"a": "b"}}}]})
    flows.enable(host, flow)
    trigger = host.catalog.trigger("webhook.catch")
    return flow, ingest(flow, trigger, [(f"{prefix}{i}", {"i": i}) for i in range(count)])


def test_the_dispatcher_sends_each_due_run_once_and_keeps_the_broker_short(host, broker):
    from connector.workers import queue_depth

    queue_runs(host, 30)
    follower = Dispatcher(host, broker, leading=lambda: False)
    leader = Dispatcher(host, broker, leading=lambda: True, high_water=20)
    try:
        assert follower.dispatch() == 0 and queue_depth(broker) == 0  # only the leader sends
        assert leader.dispatch() == 20 and queue_depth(broker) == 20  # up to the high water
        assert leader.dispatch() == 0 and queue_depth(broker) == 20  # never the same run twice
        leader.high_water = 100
        assert leader.dispatch() == 10 and queue_depth(broker) == 30  # the rest, once
        assert leader.dispatch() == 0 and queue_depth(broker) == 30
        leader.resend_after = 0  # as if every message had been lost: the database says due
        assert leader.dispatch() == 30 and queue_depth(broker) == 60
    finally:
        follower.stop()
        leader.stop()


# -- workers, end to end ---------------------------------------------------------------------------

@pytest.mark.covers("aiconnector.auto_recharge", "aiconnector.grant_credits")
def test_a_worker_executes_webhook_runs_end_to_end(connected, sandbox, broker, tmp_path):
    host = connected
    flow = flows.save(host, flows.load_file(EXAMPLES / "auto-recharge-credits.yaml"))
    flows.enable(host, flow)
    runtime = Runtime(host, broker=broker)
    runtime.start(port=0)
    proc = worker(subprocess_env(host.settings, broker), tmp_path / "w1.log")
    try:
        proc.start()
        secret = host.box.open(
            TriggerState.get(TriggerState.flow == flow).sealed_subscription)["secret"]
        url = flows.webhook_url(host, flow)
        keys = [f"cel-{i}" for i in range(12)]
        for key in keys + keys[:4]:  # a sender delivering some twice
            body = json.dumps({"event": "auto_recharge", "idempotency_key": key,
                               "email": "client@agency.example", "amount": 1}).encode()
            answer = requests.post(url, data=body, timeout=10, headers={
                **sign(secret, key, body), "Content-Type": "application/json"})
            assert answer.status_code == 200, answer.text

        def done():
            return Run.select().where(Run.status.in_(Run.FINAL)).count() == len(keys)
        assert wait_for(done, timeout=60), proc.text()[-3000:]
    finally:
        runtime.stop()
        proc.stop()
    assert {r.status for r in Run.select()} == {Run.SUCCEEDED}
    assert ledger_keys(sandbox) == Counter({key: 1 for key in keys})
    assert isinstance(runtime.executor, Dispatcher) and runtime.executor.published >= len(keys)
    assert "execute_run[" in proc.text() and "succeeded" in proc.text()  # the worker ran them


@pytest.mark.covers("aiconnector.grant_credits", "aiconnector.find_contact")
def test_a_worker_killed_mid_run_is_replaced_and_nothing_is_done_twice(connected, sandbox,
                                                                       broker, tmp_path):
    host = connected
    flow = flows.save(host, {
        "name": "grant-then-look-up", "trigger": {"key": "webhook.catch"},
        "steps": [
            {"name": "grant", "action": "aiconnector.grant_credits", "connection": "aiconnector",
             "inputs": {"email": "client@agency.example", "amount": 5,
                        "description": "kill {{ trigger.key }}",
                        "idempotency_key": "{{ trigger.key }}"}},
            {"name": "find", "action": "aiconnector.find_contact", "connection": "aiconnector",
             "inputs": {"email": "client@agency.example"}}]})
    flows.enable(host, flow)
    # The look-up after the grant hangs once, long enough to kill the worker inside it.
    sandbox.faults.set("aiconnector", slow_rate=1, delay=10, slow_when="before",
                       paths=["/v1/contacts"], methods=["GET"], limit=1)
    lease = 4
    env = subprocess_env(host.settings, broker, CONNECTOR_LEASE_SECONDS=lease)
    runtime = Runtime(host, broker=broker)
    runtime.start(port=0)
    first = worker(env, tmp_path / "first.log", concurrency=1)
    second = worker(env, tmp_path / "second.log", concurrency=1)
    try:
        first.start()
        second.start()
        ingest(flow, host.catalog.trigger("webhook.catch"), [("g-1", {"key": "g-1"})])
        runtime.executor.wake()

        def inside_the_look_up():
            return StepRun.select().where((StepRun.name == "find") &
                                          (StepRun.status == StepRun.PENDING)).exists()
        assert wait_for(inside_the_look_up, timeout=30)
        time.sleep(0.5)  # the GET is on its way and held by the sandbox
        holder, other = ((first, second) if "execute_run[" in first.text()
                         else (second, first))
        assert "execute_run[" in holder.text() and "execute_run[" not in other.text()
        killed_at = time.monotonic()
        holder.kill()  # the machine dies: no ack, no goodbye
        run = Run.get()
        assert run.status == Run.RUNNING and run.attempts == 1
        assert wait_for(lambda: Run.get().status in Run.FINAL, timeout=lease + 30), \
            other.text()[-3000:]
        took = time.monotonic() - killed_at
    finally:
        runtime.stop()
        first.stop()
        second.stop()
    run = Run.get()
    assert run.status == Run.SUCCEEDED and run.attempts == 2, run.error
    assert took >= lease - 1.5  # taken up again only once the lease had expired
    grant = StepRun.get(StepRun.name == "grant")
    assert grant.attempts == 1  # the second execution skipped the finished grant
    assert StepAttempt.select().where(StepAttempt.step_run == grant).count() == 1
    assert ledger_keys(sandbox) == Counter({"g-1": 1})  # the service granted once
    assert "execute_run[" in other.text()
    if broker.url.startswith("amqp"):  # RabbitMQ gave the dead worker's message to the other
        task = re.search(r"execute_run\[([0-9a-f-]+)\] received", holder.text()).group(1)
        assert f"execute_run[{task}] received" in other.text()  # which found the run leased


# -- the big one: two workers, two scheduler candidates, PostgreSQL, 5,000 runs --------------

RUNS = 5000


@pytest.mark.slow
@pytest.mark.covers("aiconnector.grant_credits")
@pytest.mark.parametrize("broker", ["redis"], indirect=True)  # RabbitMQ: the tests above
def test_two_workers_and_two_schedulers_on_postgres_finish_5000_runs_exactly_once(
        pg_url, broker, tmp_path):  # noqa: F811
    from connector.sandbox import Sandbox

    sandbox = Sandbox(call_delay=0.05, rate_limit_per_minute=10**7)
    sandbox.start()
    settings = Settings.from_env({}, database_url=pg_url, secret_key=new_key())
    host = Host(settings)
    env = subprocess_env(settings, broker, CONNECTOR_LEASE_SECONDS=60)
    schedulers = [Process(["serve", "--role", "scheduler"], env, tmp_path / f"s{i}.log",
                          ready="scheduler running") for i in (1, 2)]
    workers = [worker(env, tmp_path / f"w{i}.log", concurrency=4) for i in (1, 2)]
    try:
        info = sandbox.connections()["aiconnector"]
        host.add_connection(connection_name("aiconnector"), "aiconnector",
                            info["credentials"], info["base_url"])
        flow = flows.save(host, flows.load_file(EXAMPLES / "auto-recharge-credits.yaml"))
        flows.enable(host, flow)
        trigger = host.catalog.trigger(flow.trigger_key)
        for proc in (*schedulers, *workers):
            proc.start()

        def leader() -> Process | None:
            leading = [s for s in schedulers if s.proc.poll() is None
                       and "scheduler leader" in s.text()]
            return leading[0] if len(leading) == 1 else None
        assert wait_for(leader, timeout=20)
        first_leader = leader()

        def feed(start: int, stop: int) -> None:
            for base in range(start, stop, 500):
                keyed = []
                for i in range(base, min(base + 500, stop)):
                    item = {"event": "auto_recharge", "idempotency_key": f"big-{i:05d}",
                            "email": "client@agency.example", "amount": 1}
                    keyed.append((fit_key(trigger.dedupe_key(item)), item))
                assert len(ingest(flow, trigger, keyed).created) == len(keyed)

        def final() -> int:
            return Run.select().where(Run.status.in_(Run.FINAL)).count()

        started = time.monotonic()
        feed(0, RUNS // 2)
        assert wait_for(lambda: final() >= RUNS // 5, timeout=120, interval=0.5)
        first_leader.kill()  # the leader dies mid-stream; the other candidate takes over
        feed(RUNS // 2, RUNS)
        successor = next(s for s in schedulers if s is not first_leader)
        assert wait_for(lambda: "scheduler leader" in successor.text(), timeout=20)
        assert wait_for(lambda: final() == RUNS, timeout=400, interval=1), (
            f"{final()} of {RUNS} final\n{successor.text()[-2000:]}")
        elapsed = time.monotonic() - started
    finally:
        for proc in (*schedulers, *workers):
            proc.stop()

    try:
        statuses = Counter(status for (status,) in Run.select(Run.status).tuples())
        assert statuses == {Run.SUCCEEDED: RUNS}
        assert Run.select().where(Run.attempts != 1).count() == 0  # each claimed once
        assert StepAttempt.select().count() == RUNS
        ledger = ledger_keys(sandbox)
        assert len(ledger) == RUNS and set(ledger.values()) == {1}  # none lost, none twice
        for proc in workers:
            assert "succeeded" in proc.text()  # the work really was shared
        print(f"\n{RUNS} runs on PostgreSQL + {broker.url.split(':')[0]}: 2 workers x 4, "
              f"leader killed at {RUNS // 5}+ done; {elapsed:.1f} s, "
              f"{RUNS / elapsed:.0f} runs/s")
    finally:
        host.close()
        sandbox.stop()
