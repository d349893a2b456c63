"""Bulk actions: 100,000 Samora campaign recipients, 100,000 Contacts API contacts.

Against the sandbox (bench/_sandbox.py, subprocess, rate limit lifted), through the bundled
actions as a user runs them without a flow, `connector invoke` (connections stored with
`connector connections add`, inputs from a --json file):

- ``samora.add_campaign_recipients`` on a new DRAFT campaign: --rows numbers, sent by the
  action in batches of 5,000 (each batch through the host's idempotency ledger);
- ``contacts_api.import_contacts`` with ``match_by: none``: --rows contacts, in batches of
  500 (the action's maximum). ``match_by: email`` (the default) is not used: the sandbox
  matches each row by scanning every contact, which is quadratic in the emulator itself.

Each job runs twice:

1. `connector invoke` as the user types it: wall time and the process's peak RSS
   (ru_maxrss from wait4); it prints a progress line per batch on stderr and the output
   at the end;
2. the same code path in a child process (``cli_dev.run_action``, what `connector invoke`
   calls), with ``requests.Session.send`` timed: the time inside HTTP calls (which includes
   the sandbox's own work) against the connector's own overhead (input validation, batching,
   JSON, the ledger's writes), printing each batch as it completes: the progress a user
   could be shown.

The issue's target: the connector's own overhead under 10% of the wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import requests  # noqa: E402

from _proc import (  # noqa: E402
    CONNECTOR, PYTHON, Children, TempDir, on_sigterm, print_machine, run_main, start_sandbox,
)

AGENT_ID = "123e4567-e89b-12d3-a456-426614174000"
JOBS = ("recipients", "contacts")


def new_campaign(root: str, name: str) -> str:
    answer = requests.post(f"{root}/samora/v1/external/campaigns/{AGENT_ID}",
                           headers={"X-API-Key": "sam_test_key"}, json={"name": name},
                           timeout=30)
    answer.raise_for_status()
    body = answer.json()
    return (body.get("data") or body)["id"]


def inputs_file(tmp: Path, job: str, rows: int, root: str, salt: int) -> tuple[str, Path]:
    """Write the --json inputs of one job; return (action key, path)."""
    if job == "recipients":
        data = {"agent_id": AGENT_ID, "campaign_id": new_campaign(root, f"bench {salt}"),
                "recipients": [{"phone_number": f"+1{salt}{i:09d}",
                                "call_variables": {"first_name": f"N{i}"}}
                               for i in range(rows)]}
        key = "samora.add_campaign_recipients"
    else:
        data = {"contacts": [{"name": f"Bulk {salt}-{i}", "email": f"b{salt}-{i}@example.com",
                              "phone": f"+1{salt}{i:09d}", "tags": ["bulk"]}
                             for i in range(rows)], "match_by": "none"}
        key = "contacts_api.import_contacts"
    path = tmp / f"{job}-{salt}.json"
    path.write_text(json.dumps(data))
    return key, path


def run_cli(env, tmp: Path, key: str, connection: str, path: Path) -> dict:
    """`connector invoke KEY --connection C --json PATH`: wall time and peak RSS."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([CONNECTOR, "invoke", key, "--connection", connection, "--json",
                             str(path)], env=env, cwd=tmp, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        out = proc.stdout.read()
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"connector invoke {key} failed: {err.decode().strip()}")
    return {"wall": wall, "rss_mb": usage.ru_maxrss / 1024, "output": json.loads(out)}


def child(args) -> int:
    """run_action with Session.send timed; progress on stderr, figures as JSON on stdout."""
    from connector.cli_dev import run_action
    from connector.config import Settings
    from connector.host import Host

    host = Host(Settings.from_env())
    data = json.loads(Path(args.path).read_text())
    send = requests.Session.send
    stats = {"http": 0.0, "calls": 0}
    t0 = time.perf_counter()

    def timed_send(session, request, **kw):
        s0 = time.perf_counter()
        try:
            return send(session, request, **kw)
        finally:
            stats["http"] += time.perf_counter() - s0
            stats["calls"] += 1
            if stats["calls"] % args.every == 0:
                print(f"    progress: batch {stats['calls']} done at "
                      f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    requests.Session.send = timed_send
    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001)
        profiler.start()
    t0 = time.perf_counter()
    output = run_action(host, args.key, args.connection, data)
    wall = time.perf_counter() - t0
    if profiler is not None:
        profiler.stop()
        print(profiler.output_text(unicode=False, color=False), file=sys.stderr)
    host.close()
    print(json.dumps({"wall": wall, "http": stats["http"], "calls": stats["calls"],
                      "output": {k: v for k, v in output.items() if k != "errors"},
                      "errors": len(output.get("errors") or [])}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--jobs", nargs="+", choices=JOBS, default=list(JOBS))
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--profile", action="store_true",
                        help="print pyinstrument's report of each instrumented run on stderr")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--connection", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--every", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    on_sigterm()
    print_machine()
    from connector.crypto import new_key

    ok = True
    with TempDir("bench-bulk-", args.keep) as tmp, Children() as children:
        _, root = start_sandbox(children, tmp)
        env = {**os.environ, "CONNECTOR_SECRET_KEY": new_key(),
               "CONNECTOR_DATABASE_URL": f"sqlite:///{tmp / 'connector.db'}"}
        for name, app, fields, base in (
                ("samora", "samora", ["api_key=sam_test_key"], f"{root}/samora"),
                ("contacts-api", "contacts_api", ["api_key=ca_test_key", "org_id=org_demo"],
                 f"{root}/contacts-api")):
            cmd = [CONNECTOR, "connections", "add", name, "--app", app, "--base-url", base]
            for f in fields:
                cmd += ["--field", f]
            subprocess.run(cmd, env=env, cwd=tmp, check=True, stdout=subprocess.DEVNULL)
        for n, job in enumerate(args.jobs):
            connection = "samora" if job == "recipients" else "contacts-api"
            key, path = inputs_file(tmp, job, args.rows, root, 2 * n + 1)
            cli = run_cli(env, tmp, key, connection, path)
            key, path = inputs_file(tmp, job, args.rows, root, 2 * n + 2)
            every = 1 if job == "recipients" else 20
            print(f"{job}: {args.rows} rows with {key}; instrumented run's progress:")
            proc = children.start([PYTHON, __file__, "--child", "--key", key, "--connection",
                                   connection, "--path", path, "--every", every,
                                   *(["--profile"] if args.profile else [])], env=env,
                                  cwd=tmp, stdout=subprocess.PIPE)
            out, _ = proc.communicate(timeout=3600)
            children.procs.remove(proc)
            if proc.returncode != 0:
                raise RuntimeError(f"the instrumented {job} run failed")
            f = json.loads(out.decode().strip().splitlines()[-1])
            own = f["wall"] - f["http"]
            done = (f["output"].get("added") if job == "recipients"
                    else f["output"].get("created"))
            ok &= done == args.rows and cli["output"].get(
                "added" if job == "recipients" else "created") == args.rows
            print(f"  connector invoke: {cli['wall']:.1f} s wall, peak RSS "
                  f"{cli['rss_mb']:.0f} MB")
            print(f"  instrumented: {f['wall']:.1f} s, {f['calls']} HTTP calls taking "
                  f"{f['http']:.1f} s, connector's own {own:.1f} s "
                  f"({100 * own / f['wall']:.0f}% of the wall time; target < 10%); "
                  f"{done}/{args.rows} {'added' if job == 'recipients' else 'created'}, "
                  f"{f['errors']} row errors")
    print(f"bulk: {'ok' if ok else 'FAILED: not every row was added'}")
    return 0 if ok else 1


if __name__ == "__main__":
    run_main(main)
