"""A new-contact poll against a long history: does 10^6 seen contacts slow a poll down?

For each size N (default 10^3, 10^5, 10^6):

1. the sandbox starts as a subprocess (bench/_sandbox.py) with N Contacts API contacts
   bulk-seeded in its process, one second apart, the newest ten minutes old;
2. a fresh poller process (this script with --child) makes a SQLite database in a temp dir
   (or a PostgreSQL schema with --database-url), stores the contacts-api connection and a
   `contacts_api.new_contact` flow, marks it on and primed, and pre-fills the seen-items
   ledger with all N contact ids in bulk (one multi-row INSERT transaction, not the
   priming poll, which would read N/100 pages);
3. it then polls --polls times through ``intake.poll_flow`` (what the scheduler's poll job
   calls). Before each poll one new contact is created in the sandbox and the cursor is set
   back to "newest seen = the newest seeded contact, empty window", so every poll reads the
   first page (100 contacts, 99 already in the ledger, 1 new) and hands all of them to the
   ledger: 99 duplicates found by key, 1 new run.

Prints, per size: median and max per-poll wall time, the time spent inside the HTTP call
(mostly the sandbox sorting its N contacts for every page it serves), the connector's own
time (the rest: the trigger's parsing, the ledger, the commit), the poller's RSS before and
after the polls and its peak, and the runs created / duplicates dropped.
The issue's target: per-poll time at 10^6 within 1.2x of 10^3, and RSS flat.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _proc import (  # noqa: E402
    PYTHON, Children, PgSchema, TempDir, median, on_sigterm, print_machine, run_main,
    self_hwm_mb, self_rss_mb, start_sandbox,
)
from _sandbox import seeded_id  # noqa: E402

FLOW = "bench-new-contact"


def prefill_ledger(database, flow_id: int, count: int, expires: dt.datetime) -> float:
    """Insert ``count`` seen-item rows for the seeded ids in bulk; return the seconds."""
    from connector.store import SeenItem, utcnow

    t0 = time.perf_counter()
    now = utcnow()
    chunk = 5000
    with database.atomic():
        for start in range(0, count, chunk):
            rows = [{"flow": flow_id, "key": seeded_id(i), "created_at": now,
                     "expires_at": expires} for i in range(start, min(count, start + chunk))]
            SeenItem.insert_many(rows).execute()
    return time.perf_counter() - t0


def child(args) -> int:
    """Set up the flow and the ledger, poll, print one JSON line of figures."""
    import requests

    from connector import flows, intake
    from connector.config import Settings
    from connector.host import Host
    from connector.store import Flow, Run, SeenItem, TriggerState, utcnow

    host = Host(Settings.from_env())
    host.add_connection("contacts-api", "contacts_api",
                        {"api_key": "ca_test_key", "org_id": "org_demo"},
                        base_url=f"{args.root}/contacts-api")
    flow = flows.save(host, {
        "name": FLOW,
        "trigger": {"key": "contacts_api.new_contact", "connection": "contacts-api",
                    "inputs": {}, "poll_interval": 60},
        "steps": [{"name": "greet", "action": "formatter.text",
                   "inputs": {"operation": "trim", "text": "{{ trigger.name }}"}}],
    })
    trigger = host.catalog.trigger(flow.trigger_key)
    expires = utcnow() + dt.timedelta(seconds=trigger.dedupe_ttl or 7 * 86400)
    fill_s = prefill_ledger(host.database, flow.id, args.size, expires)
    Flow.update(enabled=True, enabled_at=utcnow()).where(Flow.id == flow.id).execute()
    TriggerState.update(primed=True).where(TriggerState.flow == flow.id).execute()
    ledger_rows = SeenItem.select().count()
    host.database.close()

    send = requests.Session.send
    inside = {"s": 0.0}

    def timed_send(session, request, **kw):
        t0 = time.perf_counter()
        try:
            return send(session, request, **kw)
        finally:
            inside["s"] += time.perf_counter() - t0

    api = requests.Session()
    rss_before = self_rss_mb()
    polls = []
    for k in range(args.polls):
        answer = api.post(f"{args.root}/contacts-api/api/v1/contacts",
                          headers={"Authorization": "Bearer ca_test_key",
                                   "X-Org-Id": "org_demo"},
                          json={"name": f"New {k}", "phone": f"+1650555{k:04d}"}, timeout=30)
        answer.raise_for_status()
        TriggerState.update(cursor={"newest_created_at": args.newest, "window": {}}).where(
            TriggerState.flow == flow.id).execute()
        host.database.close()
        flow = Flow.get_by_id(flow.id)
        requests.Session.send = timed_send
        inside["s"] = 0.0
        t0 = time.perf_counter()
        result = intake.poll_flow(host, flow)
        wall = time.perf_counter() - t0
        requests.Session.send = send
        host.database.close()
        polls.append({"wall": wall, "http": inside["s"], "created": len(result.created),
                      "duplicates": result.duplicates})
    runs = Run.select().count()
    host.close()
    print(json.dumps({"size": args.size, "ledger_rows": ledger_rows, "fill_s": fill_s,
                      "polls": polls, "runs": runs, "rss_before": rss_before,
                      "rss_after": self_rss_mb(), "hwm": self_hwm_mb()}))
    return 0


def one_size(children: Children, tmp: Path, size: int, polls: int,
             database_url: str | None) -> dict:
    from connector.crypto import new_key

    size_dir = tmp / f"n{size}"
    size_dir.mkdir()
    t0 = time.monotonic()
    sandbox, root = start_sandbox(children, size_dir, contacts=size, timeout=1800)
    ready = json.loads((size_dir / "sandbox.ready").read_text())
    seed_s = time.monotonic() - t0
    schema = PgSchema(database_url) if database_url else None
    try:
        env = {**os.environ, "CONNECTOR_SECRET_KEY": new_key(),
               "CONNECTOR_DATABASE_URL": schema.url if schema else
               f"sqlite:///{size_dir / 'connector.db'}"}
        proc = children.start([PYTHON, __file__, "--child", "--root", root, "--size", size,
                               "--newest", ready["newest_created_at"], "--polls", polls],
                              env=env, cwd=size_dir, stdout=subprocess.PIPE)
        out, _ = proc.communicate(timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"the poller for {size} exited with {proc.returncode}")
        children.procs.remove(proc)
        figures = json.loads(out.decode().strip().splitlines()[-1])
    finally:
        children.stop(sandbox)
        if schema is not None:
            schema.__exit__()
    figures["seed_s"] = seed_s
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**3, 10**5, 10**6],
                        help="seen contacts per round (default 1000 100000 1000000)")
    parser.add_argument("--polls", type=int, default=25,
                        help="polls per size (default 25: the median of fewer moved a lot)")
    parser.add_argument("--database-url", default=None, help="PostgreSQL base URL")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--newest", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    on_sigterm()
    print_machine()
    rows = []
    ok = True
    with TempDir("bench-poll-", args.keep) as tmp, Children() as children:
        for size in args.sizes:
            f = one_size(children, tmp, size, args.polls, args.database_url)
            walls = [p["wall"] for p in f["polls"]]
            https = [p["http"] for p in f["polls"]]
            own = [p["wall"] - p["http"] for p in f["polls"]]
            f.update(wall=median(walls), http=median(https), own=median(own))
            rows.append(f)
            created = sum(p["created"] for p in f["polls"])
            dups = sum(p["duplicates"] for p in f["polls"])
            ok &= created == args.polls
            print(f"poll_history n={size:>8}: per poll median {1000 * f['wall']:.1f} ms "
                  f"(max {1000 * max(walls):.1f}), inside HTTP {1000 * f['http']:.1f} ms, "
                  f"connector's own {1000 * f['own']:.1f} ms; RSS {f['rss_before']:.0f} -> "
                  f"{f['rss_after']:.0f} MB (peak {f['hwm']:.0f}); {created} runs, {dups} "
                  f"duplicates dropped by the ledger; ledger {f['ledger_rows']} rows filled "
                  f"in {f['fill_s']:.1f} s, sandbox seeded in {f['seed_s']:.1f} s")
    if len(rows) > 1:
        small, big = rows[0], rows[-1]
        print(f"poll_history: n={big['size']} vs n={small['size']}: total "
              f"{big['wall'] / small['wall']:.2f}x, connector's own "
              f"{big['own'] / small['own']:.2f}x (target <= 1.2x), RSS after polls "
              f"{small['rss_after']:.0f} -> {big['rss_after']:.0f} MB")
    if not ok:
        print("poll_history: a poll did not create exactly one run", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    run_main(main)
