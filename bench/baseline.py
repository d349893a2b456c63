"""The Python ceiling: a bare Flask handler making the same outbound POST, persisting nothing.

Starts the sandbox (bench/_sandbox.py: the bundled emulators, rate limit lifted) and
gunicorn with 4 sync workers serving bench/_baseline_app.py, then drives it with the load
generator of bench/_load.py (the same one webhook_e2e.py uses): signed CALL_FINISHED
deliveries at a fixed concurrency for a bounded time. Each request makes one POST to the AI
Connector sandbox (add a contact to list lst_demo) and is answered after it.

Also measures the generator alone against the same gunicorn (``/ping``, no outbound call):
if that ceiling is not well above the baseline's rate, the generator is the bottleneck.

Prints, per concurrency: req/s, p50 and p99 of the answer, the server's peak RSS (gunicorn
master and workers, VmRSS summed, sampled) and the generator's share of the machine's CPU.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import requests  # noqa: E402

from _load import drive, summarize  # noqa: E402
from _proc import (  # noqa: E402
    BIN, BENCH, Children, RssSampler, TempDir, free_port, on_sigterm, print_machine,
    run_main, start_sandbox, wait_http,
)

AIC_KEY = "aic_test_key"
LIST_ID = "lst_demo"


def make_contact(sandbox_root: str) -> str:
    """Create the one AI Connector contact every delivery adds to the list; return its id."""
    answer = requests.post(f"{sandbox_root}/aiconnector/v1/contacts",
                           params={"apiKey": AIC_KEY},
                           json={"phone": "+14155550123", "firstName": "Bench"}, timeout=10)
    answer.raise_for_status()
    return answer.json()["id"]


def run_baseline(children: Children, tmp: Path, sandbox_root: str, contact_id: str,
                 concurrencies, seconds: float, procs: int, calibrate: bool = True) -> dict:
    """Serve the bare handler under gunicorn and load it; return {concurrency: figures}."""
    port = free_port()
    env = {"BASELINE_TARGET": f"{sandbox_root}/aiconnector/v1/lists/{LIST_ID}/contacts"
                              f"?apiKey={AIC_KEY}",
           "PATH": str(BIN) + ":/usr/bin:/bin"}
    log = open(tmp / "gunicorn.log", "wb")
    gunicorn = children.start([BIN / "gunicorn", "-w", "4", "-k", "sync", "-b",
                               f"127.0.0.1:{port}", "--chdir", BENCH, "--log-level",
                               "warning", "_baseline_app:app"], env=env, stdout=log,
                              stderr=log, cwd=tmp)
    root = f"http://127.0.0.1:{port}"
    wait_http(f"{root}/", proc=gunicorn)
    out = {}
    try:
        for c in concurrencies:
            figures = {}
            if calibrate:
                ping = summarize(drive(f"{root}/ping/x", c, min(seconds, 5), procs=procs,
                                       contact_id=contact_id))
                figures["generator_ceiling_req_s"] = ping["req_s"]
            with RssSampler(gunicorn.pid) as rss:
                result = drive(f"{root}/hooks/x", c, seconds, procs=procs,
                               contact_id=contact_id)
            s = summarize(result)
            figures.update(s, rss_mb=rss.peak)
            out[c] = figures
    finally:
        children.stop(gunicorn)
    return out


def print_baseline(figures: dict) -> None:
    for c, f in figures.items():
        ceiling = (f" (generator alone: {f['generator_ceiling_req_s']:.0f} req/s)"
                   if "generator_ceiling_req_s" in f else "")
        print(f"baseline c={c}: {f['req_s']:.0f} req/s, p50 {f['p50']:.1f} ms, "
              f"p99 {f['p99']:.1f} ms, RSS {f['rss_mb']:.0f} MB, non-200 {f['non_200']}, "
              f"errors {f['errors']}, generator CPU {100 * f['gen_cpu_share']:.0f}% of the "
              f"machine{ceiling}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--procs", type=int, default=2,
                        help="load generator worker processes (default 2)")
    parser.add_argument("--no-calibrate", action="store_true",
                        help="skip measuring the generator alone (/ping)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = parser.parse_args()
    on_sigterm()
    print_machine()
    with TempDir("bench-baseline-", args.keep) as tmp, Children() as children:
        _, sandbox_root = start_sandbox(children, tmp)
        contact_id = make_contact(sandbox_root)
        figures = run_baseline(children, tmp, sandbox_root, contact_id, args.concurrency,
                               args.seconds, args.procs, not args.no_calibrate)
        print_baseline(figures)
        best = max(figures.values(), key=lambda f: f["req_s"])
        print(f"baseline: {best['req_s']:.0f} req/s, p99 {best['p99']:.1f} ms, "
              f"RSS {best['rss_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    run_main(main)
