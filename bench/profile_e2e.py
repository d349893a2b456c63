"""Where the time of one webhook and one run goes: an in-process, single-threaded driver.

Sets up the same flow as webhook_e2e.py (sandbox subprocess, SQLite in a temp dir or a
PostgreSQL schema), then, in this process and one thread:

1. sends --webhooks signed CALL_FINISHED deliveries through the real Flask app
   (``create_app(host).test_client()``, the code `connector serve` runs per request);
2. executes the runs they queued as the executor does: claimed in batches
   (``engine.open_batch``), then one by one (``engine.execute_claimed``), closing the
   database connection after each run exactly as ``Executor._work`` does.

For each phase it counts SQL statements (by kind), transactions committed and database
connections opened, per webhook and per run, and the time spent inside HTTP calls to the
sandbox; with --profile it also prints pyinstrument's text report of each phase.
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _load import delivery  # noqa: E402
from _proc import (  # noqa: E402
    Children, PgSchema, TempDir, on_sigterm, print_machine, run_main, start_sandbox,
)
from baseline import make_contact  # noqa: E402
from webhook_e2e import setup  # noqa: E402


class Counters:
    """Count statements, commits and connects on a peewee Database; time requests' send."""

    def __init__(self, database):
        self.sql = collections.Counter()
        self.commits = 0
        self.connects = 0
        self.http_s = 0.0
        self.http_calls = 0
        self.opened = 0  # new driver connections (a pooled database hands out kept ones)
        import peewee

        for cls in (peewee.SqliteDatabase, peewee.PostgresqlDatabase):
            def opened(db, _orig=cls.__dict__["_connect"]):
                self.opened += 1
                return _orig(db)

            cls._connect = opened
        orig_exec, orig_commit, orig_connect = (database.execute_sql, database.commit,
                                                database._connect)

        def execute_sql(sql, params=None, *a, **kw):
            self.sql[sql.split(None, 1)[0].upper()] += 1
            return orig_exec(sql, params, *a, **kw)

        def commit():
            self.commits += 1
            return orig_commit()

        def connect(*a, **kw):
            self.connects += 1
            return orig_connect(*a, **kw)

        database.execute_sql, database.commit, database._connect = execute_sql, commit, connect
        import requests

        orig_send = requests.Session.send
        counters = self

        def send(session, request, **kw):
            t0 = time.perf_counter()
            try:
                return orig_send(session, request, **kw)
            finally:
                counters.http_s += time.perf_counter() - t0
                counters.http_calls += 1

        requests.Session.send = send

    def snapshot(self) -> dict:
        return {"sql": dict(self.sql), "statements": sum(self.sql.values()),
                "commits": self.commits, "connects": self.connects, "opened": self.opened,
                "http_s": self.http_s,
                "http_calls": self.http_calls}


def diff(after: dict, before: dict) -> dict:
    out = {k: after[k] - before[k] for k in ("statements", "commits", "connects", "opened",
                                             "http_s", "http_calls")}
    out["sql"] = {k: v - before["sql"].get(k, 0) for k, v in after["sql"].items()
                  if v - before["sql"].get(k, 0)}
    return out


def report(name: str, n: int, seconds: float, d: dict, cpu: float) -> None:
    per = {k: v / n for k, v in d["sql"].items()}
    kinds = ", ".join(f"{k} {v:.1f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]))
    print(f"{name}: {n} in {seconds:.2f} s = {1000 * seconds / n:.2f} ms each "
          f"({n / seconds:.0f}/s single-threaded), CPU {1000 * cpu / n:.2f} ms each")
    print(f"  per {name[:-1]}: {d['statements'] / n:.1f} SQL statements ({kinds}), "
          f"{d['commits'] / n:.2f} commits, {d['connects'] / n:.2f} connections taken "
          f"({d['opened'] / n:.2f} newly opened), "
          f"{d['http_calls'] / n:.2f} HTTP calls taking {1000 * d['http_s'] / n:.2f} ms "
          f"({100 * d['http_s'] / seconds:.0f}% of the time)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--webhooks", type=int, default=500)
    parser.add_argument("--database-url", default=None, help="PostgreSQL base URL")
    parser.add_argument("--profile", action="store_true", help="print pyinstrument reports")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    on_sigterm()
    print_machine()
    with TempDir("bench-profile-", args.keep) as tmp, Children() as children:
        _, root = start_sandbox(children, tmp)
        contact_id = make_contact(root)
        schema = PgSchema(args.database_url) if args.database_url else None
        try:
            from connector.crypto import new_key

            url = schema.url if schema else f"sqlite:///{tmp / 'connector.db'}"
            env = {"CONNECTOR_DATABASE_URL": url, "CONNECTOR_SECRET_KEY": new_key(),
                   "CONNECTOR_PUBLIC_URL": "http://127.0.0.1:9"}
            hook_url, secret = setup(env, root)
            run(args, hook_url, secret, contact_id)
        finally:
            if schema is not None:
                from connector import store

                if not store.db.is_closed():
                    store.db.close()
                schema.__exit__()
    return 0


def run(args, hook_url: str, secret: str, contact_id: str) -> None:
    from connector import engine, store
    from connector.config import Settings
    from connector.host import Host
    from connector.store import Run
    from connector.web import create_app

    host = Host(Settings.from_env())
    counters = Counters(host.database)
    app = create_app(host)
    client = app.test_client()
    path = "/" + hook_url.split("/", 3)[3]
    profiler = None
    if args.profile:
        from pyinstrument import Profiler
        profiler = Profiler(interval=0.0005)

    # warm up: imports, first request, first run
    body, headers = delivery("warmup", contact_id, secret)
    assert client.post(path, data=body, headers=headers).status_code == 200
    engine.run_due(host)
    store.db.close()

    bodies = [delivery(f"prof-{i}", contact_id, secret) for i in range(args.webhooks)]
    before = counters.snapshot()
    if profiler:
        profiler.start()
    t0, c0 = time.perf_counter(), time.process_time()
    for body, headers in bodies:
        answer = client.post(path, data=body, headers=headers)
        assert answer.status_code == 200, answer.get_data()
    hooks_s, hooks_cpu = time.perf_counter() - t0, time.process_time() - c0
    if profiler:
        profiler.stop()
        print(profiler.output_text(unicode=False, color=False, show_all=False))
        profiler.reset() if hasattr(profiler, "reset") else None
    report("webhooks", args.webhooks, hooks_s, diff(counters.snapshot(), before), hooks_cpu)

    ids = [r.id for r in Run.select(Run.id).where(Run.status == Run.QUEUED).order_by(Run.id)]
    store.db.close()
    if args.profile:
        from pyinstrument import Profiler
        profiler = Profiler(interval=0.0005)
        profiler.start()
    before = counters.snapshot()
    t0, c0 = time.perf_counter(), time.process_time()
    # as Executor does: claim a batch (3 x workers), run each, the connection back to
    # the pool after every run
    batch_size = 3 * host.settings.workers
    while True:
        batch = engine.open_batch(host, batch_size)
        if not batch:
            break
        for claimed in batch:
            engine.execute_claimed(host, claimed)
            if not store.db.is_closed():
                store.db.close()
    runs_s, runs_cpu = time.perf_counter() - t0, time.process_time() - c0
    if profiler:
        profiler.stop()
        print(profiler.output_text(unicode=False, color=False, show_all=False))
    report("runs", len(ids), runs_s, diff(counters.snapshot(), before), runs_cpu)
    ok = Run.select().where(Run.id.in_(ids) & (Run.status == Run.SUCCEEDED)).count()
    print(f"  {ok}/{len(ids)} runs succeeded")
    host.close()


if __name__ == "__main__":
    run_main(main)
