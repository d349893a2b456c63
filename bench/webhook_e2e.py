"""Webhook to action, end to end: `connector serve` absorbing signed Samora webhooks.

For each concurrency level it starts, as subprocesses, the sandbox (bench/_sandbox.py: the
bundled emulators with the rate limit lifted) and `connector serve` on a fresh database
(SQLite in a temp dir, or a schema of its own in the PostgreSQL of --database-url, dropped
afterwards). Setup is what a user does: two connections (samora, aiconnector) pointing at
the sandbox, and a flow

    samora.call_finished (webhook, subscribed with the sandbox's Samora)
      -> aiconnector.add_to_list (one POST /v1/lists/lst_demo/contacts,
                                  contact_id mapped from {{ trigger.context.contact_id }})

switched on, which registers its webhook URL with Samora and keeps the signing secret.
The load generator (bench/_load.py, separate processes) then sends signed CALL_FINISHED
deliveries, each with a new call id, at a fixed concurrency for --seconds. After the load
the script waits for the executor to drain, then reads the database:

- accepted webhooks/s: deliveries answered 200 {"accepted": 1}, per second of load;
- completed runs/s: succeeded runs / (last run finished - first run created);
- ack p50/p99: the webhook answer as the generator saw it;
- done p50/p99: the run's stored finished_at - created_at (webhook committed -> action done);
- peak RSS of the serve process tree (VmRSS summed and sampled, and VmHWM at the end);
- persisted: every accepted delivery must be a succeeded run with a succeeded step; if not,
  the script exits 1.

With --gunicorn N the webhooks are received by N gunicorn sync workers serving
`connector.wsgi:create()` (the receivers docs/scaling.md describes) and the runs executed
by one `connector serve --role scheduler`; RSS and CPU are those of both trees.

Unless --no-baseline, bench/baseline.py's bare Flask + gunicorn handler is measured first
in the same invocation, against the same sandbox, and the ratio completed runs/s divided
by baseline req/s is printed (the issue's target: at least 0.6 on SQLite).
The last line is `e2e: <runs/s> runs/s, ack p99 <ms> ms, done p99 <ms> ms, <n>/<n> persisted`
for the first concurrency given (16 by default).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _load import drive, summarize  # noqa: E402
from _proc import (  # noqa: E402
    BIN, CONNECTOR, Children, PgSchema, RssSampler, TempDir, cpu_seconds, descendants,
    free_port, on_sigterm, pct, print_machine, query, run_main, start_sandbox, tree_hwm_mb,
    wait_http,
)
from baseline import make_contact, print_baseline, run_baseline  # noqa: E402

FLOW = "bench-call-finished"


def setup(env: dict, sandbox_root: str) -> tuple[str, str]:
    """Store the connections and the flow, switch it on; return (webhook URL, secret)."""
    os.environ.update(env)
    from connector import flows
    from connector.config import Settings
    from connector.host import Host
    from connector.store import TriggerState

    host = Host(Settings.from_env())
    try:
        host.add_connection("samora", "samora", {"api_key": "sam_test_key"},
                            base_url=f"{sandbox_root}/samora")
        host.add_connection("aiconnector", "aiconnector", {"api_key": "aic_test_key"},
                            base_url=f"{sandbox_root}/aiconnector/v1")
        flow = flows.save(host, {
            "name": FLOW,
            "trigger": {"key": "samora.call_finished", "connection": "samora", "inputs": {}},
            "steps": [{"name": "add_to_list", "action": "aiconnector.add_to_list",
                       "connection": "aiconnector",
                       "inputs": {"list_id": "lst_demo",
                                  "contact_id": "{{ trigger.context.contact_id }}"}}],
        })
        flows.enable(host, flow)
        state = TriggerState.get(TriggerState.flow == flow)
        secret = host.box.open(state.sealed_subscription)["secret"]
        return flows.webhook_url(host, flow), secret
    finally:
        host.close()


def _time(value) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))


def drain(database_url: str, tag: str, expected: int, timeout: float) -> float:
    """Wait until ``expected`` runs of this load are final; return the seconds waited."""
    started = time.monotonic()
    last, last_change = -1, time.monotonic()
    while True:
        (done,), = query(database_url, "SELECT count(*) FROM run WHERE dedupe_key LIKE ? AND "
                         "status IN ('succeeded', 'failed', 'filtered')", (f"{tag}-%",))
        if done >= expected:
            break
        if done != last:
            last, last_change = done, time.monotonic()
        if time.monotonic() - last_change > 30 or time.monotonic() - started > timeout:
            print(f"  drain: gave up with {done}/{expected} runs final", file=sys.stderr)
            break
        time.sleep(0.25)
    return time.monotonic() - started


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and the processes below it (prefork children run apart)."""
    return sum(cpu_seconds(p) for p in descendants(pid))


def one_level(children: Children, tmp: Path, sandbox_root: str, contact_id: str,
              concurrency: int, seconds: float, procs: int, database_url: str | None,
              workers: int | None, processes: int = 1, gunicorn: int = 0) -> dict:
    """Fresh database and server, load at ``concurrency``, drain, read back, check."""
    from connector.crypto import new_key

    level_dir = tmp / f"c{concurrency}"
    level_dir.mkdir()
    port = free_port()
    schema = PgSchema(database_url) if database_url else None
    url = schema.url if schema else f"sqlite:///{level_dir / 'connector.db'}"
    env = {"CONNECTOR_DATABASE_URL": url, "CONNECTOR_SECRET_KEY": new_key(),
           "CONNECTOR_PUBLIC_URL": f"http://127.0.0.1:{port}"}
    if workers:
        env["CONNECTOR_WORKERS"] = str(workers)
    try:
        hook_url, secret = setup(env, sandbox_root)
        log = open(level_dir / "serve.log", "wb")
        servers = []
        if gunicorn:  # receivers under gunicorn, one `serve --role scheduler` executing
            servers.append(children.start(
                [CONNECTOR, "serve", "--role", "scheduler"], env={**os.environ, **env},
                stdout=log, stderr=subprocess.STDOUT, cwd=level_dir))
            command = [BIN / "gunicorn", "-w", str(gunicorn), "-k", "sync", "-b",
                       f"127.0.0.1:{port}", "connector.wsgi:create()"]
        else:
            command = [CONNECTOR, "serve", "--port", port, "--processes", str(processes)]
        serve = children.start(command, env={**os.environ, **env}, stdout=log,
                               stderr=subprocess.STDOUT, cwd=level_dir)
        servers.append(serve)
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=serve)
        pids = [proc.pid for proc in servers]
        tag = f"e2e{concurrency}x{os.getpid()}"
        cpu0 = sum(tree_cpu_seconds(pid) for pid in pids)
        with RssSampler(*pids) as rss:
            result = drive(hook_url, concurrency, seconds, secret, contact_id, procs, tag)
            accepted = result["accepted"]
            drained = drain(url, tag, len(accepted), timeout=max(120, 20 * seconds))
        hwm = sum(tree_hwm_mb(pid) for pid in pids)
        cpu = sum(tree_cpu_seconds(pid) for pid in pids) - cpu0
        for proc in reversed(servers):
            children.stop(proc)
        rows = query(url, "SELECT dedupe_key, status, created_at, finished_at FROM run "
                          "WHERE dedupe_key LIKE ?", (f"{tag}-%",))
        (steps_ok,), = query(url, "SELECT count(*) FROM steprun s JOIN run r ON "
                                  "s.run_id = r.id WHERE r.dedupe_key LIKE ? AND "
                                  "s.status = 'succeeded'", (f"{tag}-%",))
        (attempts,), = query(url, "SELECT count(*) FROM stepattempt a JOIN steprun s ON "
                                  "a.step_run_id = s.id JOIN run r ON s.run_id = r.id "
                                  "WHERE r.dedupe_key LIKE ?", (f"{tag}-%",))
    finally:
        if schema is not None:
            schema.__exit__()
    succeeded = {r[0] for r in rows if r[1] == "succeeded"}
    wanted = {f"{cid}:CALL_FINISHED" for cid in accepted}
    times = [(_time(r[2]), _time(r[3])) for r in rows if r[1] == "succeeded"]
    done_ms = [(f - c).total_seconds() * 1000 for c, f in times if c and f]
    span = ((max(f for _, f in times) - min(c for c, _ in times)).total_seconds()
            if times else float("nan"))
    s = summarize(result)
    statuses = {}
    for r in rows:
        statuses[r[1]] = statuses.get(r[1], 0) + 1
    return {
        "concurrency": concurrency, "accepted": len(accepted),
        "accepted_s": len(accepted) / result["seconds"], "runs_s": len(succeeded) / span
        if span and span == span else float("nan"),
        "ack_p50": s["p50"], "ack_p99": s["p99"], "done_p50": pct(done_ms, 50),
        "done_p99": pct(done_ms, 99), "rss_mb": max(rss.peak, 0), "hwm_mb": hwm,
        "persisted": len(wanted & succeeded), "steps_ok": steps_ok, "attempts": attempts,
        "missing": len(wanted - succeeded), "extra": len(succeeded - wanted),
        "statuses": statuses, "non_200": s["non_200"], "errors": s["errors"],
        "drain_s": drained, "server_cpu_ms_per_run": 1000 * cpu / max(1, len(accepted)),
        "gen_cpu_share": s["gen_cpu_share"],
        "ok": wanted <= succeeded and steps_ok >= len(wanted) and bool(wanted),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64],
                        help="concurrency levels, each on a fresh server (default 16 64)")
    parser.add_argument("--seconds", type=float, default=10,
                        help="seconds of load per level (default 10)")
    parser.add_argument("--database-url", default=None,
                        help="PostgreSQL URL (e.g. postgresql://127.0.0.1:5432/test); a "
                             "schema of its own is created and dropped. Default: SQLite "
                             "in a temp dir")
    parser.add_argument("--workers", type=int, default=None,
                        help="CONNECTOR_WORKERS for serve (default: the connector's, 16)")
    parser.add_argument("--processes", type=int, default=1,
                        help="connector serve --processes (default 1)")
    parser.add_argument("--gunicorn", type=int, default=0, metavar="N",
                        help="receive with N gunicorn sync workers (connector.wsgi) and "
                             "execute in one `connector serve --role scheduler` instead "
                             "(--processes is then ignored)")
    parser.add_argument("--procs", type=int, default=2,
                        help="load generator worker processes (default 2)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the bare Flask baseline (no ratio printed)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, db)")
    args = parser.parse_args()
    if args.seconds <= 0 or args.seconds > 600:
        parser.error("--seconds must be in (0, 600]")
    if args.gunicorn < 0:
        parser.error("--gunicorn must be a number of workers, 1 or more (0: serve receives)")
    if (args.gunicorn or not args.no_baseline) and not (BIN / "gunicorn").exists():
        parser.error(f"gunicorn is not installed beside {sys.executable} (pip install "
                     "gunicorn); the baseline and --gunicorn need it, --no-baseline skips it")
    on_sigterm()
    print_machine()
    layout = (f"{args.gunicorn} gunicorn receivers + serve --role scheduler" if args.gunicorn
              else f"serve --processes {args.processes}")
    print(f"database: {'PostgreSQL ' + args.database_url if args.database_url else 'SQLite'}"
          f"; {layout}; {args.seconds:g} s per level; generator: {args.procs} processes")
    levels = []
    with TempDir("bench-e2e-", args.keep) as tmp, Children() as children:
        _, sandbox_root = start_sandbox(children, tmp)
        contact_id = make_contact(sandbox_root)
        base = {}
        if not args.no_baseline:
            base = run_baseline(children, tmp, sandbox_root, contact_id, args.concurrency,
                                args.seconds, args.procs)
            print_baseline(base)
        for c in args.concurrency:
            f = one_level(children, tmp, sandbox_root, contact_id, c, args.seconds,
                          args.procs, args.database_url, args.workers, args.processes,
                          args.gunicorn)
            levels.append(f)
            ratio = (f" = {f['runs_s'] / base[c]['req_s']:.2f}x baseline "
                     f"({base[c]['req_s']:.0f} req/s)" if c in base else "")
            print(f"e2e c={c}: accepted {f['accepted_s']:.0f} webhooks/s, completed "
                  f"{f['runs_s']:.0f} runs/s{ratio}")
            print(f"  ack p50 {f['ack_p50']:.1f} ms, p99 {f['ack_p99']:.1f} ms; done "
                  f"(webhook committed -> action done) p50 {f['done_p50']:.0f} ms, p99 "
                  f"{f['done_p99']:.0f} ms; drain after load {f['drain_s']:.1f} s")
            print(f"  server RSS peak {f['rss_mb']:.0f} MB (VmHWM {f['hwm_mb']:.0f} MB); "
                  f"server CPU {f['server_cpu_ms_per_run']:.1f} ms per run; generator CPU "
                  f"{100 * f['gen_cpu_share']:.0f}% of the machine")
            print(f"  persisted {f['persisted']}/{f['accepted']} succeeded runs, "
                  f"{f['steps_ok']} succeeded steps, {f['attempts']} attempts; run statuses "
                  f"{f['statuses']}; non-200 answers {f['non_200']}, connection errors "
                  f"{f['errors']}")
            if not f["ok"]:
                print(f"  PERSISTENCE CHECK FAILED: {f['missing']} accepted webhooks have no "
                      f"succeeded run", file=sys.stderr)
    first = levels[0]
    print(f"e2e: {first['runs_s']:.0f} runs/s, ack p99 {first['ack_p99']:.0f} ms, done p99 "
          f"{first['done_p99']:.0f} ms, {first['persisted']}/{first['accepted']} persisted")
    return 0 if all(f["ok"] for f in levels) else 1


if __name__ == "__main__":
    run_main(main)
