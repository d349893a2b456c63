"""Measure runs per second executed by 1 and 2 `connector worker` processes.

    python bench/celery_throughput.py [--runs 2000] [--concurrency 4] [--workers 1,2]
        [--broker redis://127.0.0.1:6379/14] [--database postgresql://postgres@127.0.0.1/test]

For each worker count: a fresh PostgreSQL schema, the sandbox on loopback (in this process,
rate limit lifted), the agency flow (auto-recharge -> grant credits, guarded by the
idempotency ledger), ``--runs`` queued runs, then the workers started and a Dispatcher (as
the scheduler leader runs it) publishing. The clock runs from the first publish to the last
run final; worker start-up is excluded. Every run must succeed and the sandbox must hold
exactly one grant per run, or the figure is not printed.
"""
from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=4, help="slots per worker")
    parser.add_argument("--workers", default="1,2", help="worker counts to measure")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--database", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    print(f"# {time.strftime('%Y-%m-%d')} on {platform.node()}: {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, {platform.system()} {platform.release()}")
    print(f"# {args.runs} runs of auto-recharge-credits, PostgreSQL, broker "
          f"{args.broker.split(':')[0]}, prefork x {args.concurrency} per worker")
    for count in counts:
        elapsed = measure(args, count)
        print(f"{count} worker(s) x {args.concurrency}: {args.runs} runs in {elapsed:6.1f} s "
              f"= {args.runs / elapsed:6.1f} runs/s")
    return 0


def measure(args, count: int) -> float:
    import psycopg2

    from connector import flows
    from connector.config import Settings
    from connector.crypto import new_key
    from connector.host import Host
    from connector.intake import ingest
    from connector.sandbox import Sandbox
    from connector.store import Run, fit_key
    from connector.workers import Broker, Dispatcher

    schema = f"connector_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(args.database)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE SCHEMA "{schema}"')
    url = f"{args.database}?options=-csearch_path%3D{schema}"
    broker = Broker(args.broker, f"connector-bench-{uuid.uuid4().hex[:8]}")
    sandbox = Sandbox(call_delay=0.05, rate_limit_per_minute=10**7)
    sandbox.start()
    settings = Settings.from_env({}, database_url=url, secret_key=new_key())
    host = Host(settings)
    procs: list[subprocess.Popen] = []
    logs = Path(tempfile.mkdtemp(prefix="connector-bench-"))
    dispatcher = None
    try:
        info = sandbox.connections()["aiconnector"]
        host.add_connection("aiconnector", "aiconnector", info["credentials"], info["base_url"])
        flow = flows.save(host, flows.load_file(ROOT / "examples/flows/auto-recharge-credits.yaml"))
        flows.enable(host, flow)
        trigger = host.catalog.trigger(flow.trigger_key)
        items = [{"event": "auto_recharge", "idempotency_key": f"bench-{i:06d}",
                  "email": "client@agency.example", "amount": 1} for i in range(args.runs)]
        ingest(flow, trigger, [(fit_key(trigger.dedupe_key(it)), it) for it in items])
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
        env.update(CONNECTOR_DATABASE_URL=url, CONNECTOR_SECRET_KEY=settings.secret_key,
                   CONNECTOR_BROKER_URL=broker.url, CONNECTOR_BROKER_QUEUE=broker.queue)
        for i in range(count):
            log = logs / f"w{i}.log"
            with open(log, "wb") as out:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "connector.cli", "worker", "-c",
                     str(args.concurrency), "-l", "info", "-n", f"bench{i}@%h"],
                    env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        for log in logs.glob("*.log"):  # wait until every worker consumes
            deadline = time.monotonic() + 60
            while " ready." not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
        dispatcher = Dispatcher(host, broker)
        started = time.monotonic()
        dispatcher.start()
        done = 0
        while done < args.runs:
            time.sleep(0.2)
            done = Run.select().where(Run.status.in_(Run.FINAL)).count()
            if time.monotonic() - started > 1800:
                raise SystemExit(f"only {done} of {args.runs} runs final after 30 minutes")
        elapsed = time.monotonic() - started
        bad = Run.select().where(Run.status != Run.SUCCEEDED).count()
        ledger = Counter(e["description"].split()[-1]
                         for e in sandbox.state()["aiconnector"]["credit_ledger"])
        if bad or len(ledger) != args.runs or set(ledger.values()) != {1}:
            raise SystemExit(f"wrong outcome: {bad} runs not succeeded, {len(ledger)} keys "
                             f"granted, most for one key {max(ledger.values(), default=0)}")
        return elapsed
    finally:
        if dispatcher is not None:
            dispatcher.stop()
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(30)
        host.close()
        sandbox.stop()
        admin.cursor().execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()
        from connector.workers import make_app

        app = make_app(broker)
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(broker.queue)
        app.close()


if __name__ == "__main__":
    sys.exit(main())
