"""The load generator shared by webhook_e2e.py and baseline.py.

Closed loop at a fixed concurrency: ``--procs`` worker processes (forked, so the GIL of one
does not cap the others), each running ``concurrency / procs`` threads, each thread with one
keep-alive ``http.client`` connection (re-opened when the server closes it, as gunicorn's
sync workers do after every request). Each request is a signed Samora CALL_FINISHED
delivery (Standard Webhooks headers) with a call id of its own, so every request is a new
event for the connector. It records each answer's latency and status, and the call ids of
deliveries answered ``{"accepted": 1}``.

Run on its own (``python bench/_load.py --help``) it prints a JSON summary; the benchmarks
call :func:`drive`, which runs it as a separate process and also reports the generator's own
CPU time, so a run can show whether the generator could have been the bottleneck.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import http.client
import json
import multiprocessing as mp
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

AGENT_ID = "123e4567-e89b-12d3-a456-426614174000"


def _key(secret: str) -> bytes:
    raw = secret[6:] if secret.startswith("whsec_") else secret
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError:
        return raw.encode()


def delivery(call_id: str, contact_id: str, secret: str | None) -> tuple[bytes, dict]:
    """Return the body and headers of one signed CALL_FINISHED delivery."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = json.dumps({
        "event": "CALL_FINISHED", "call_id": call_id, "timestamp": now,
        "webhook_id": "wh_bench",
        "data": {"call_id": call_id, "agent_id": AGENT_ID, "campaign_id": None,
                 "to_number": "+14155550123", "status": "CALL_FINISHED",
                 "duration_seconds": 42, "created_at": now, "started_at": now,
                 "ended_at": now, "context": {"contact_id": contact_id,
                                              "contact_name": "Bench"}},
    }, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "Connection": "keep-alive"}
    if secret:
        msg_id = "msg_" + call_id
        ts = str(int(time.time()))
        digest = hmac.new(_key(secret), f"{msg_id}.{ts}.".encode() + body,
                          hashlib.sha256).digest()
        headers.update({"webhook-id": msg_id, "webhook-timestamp": ts,
                        "webhook-signature": "v1," + base64.b64encode(digest).decode()})
    return body, headers


def _thread(url, secret, contact_id, tag, deadline, start, out):
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    lat, statuses, accepted, errors = [], Counter(), [], 0
    n = 0
    start.wait()
    while time.monotonic() < deadline:
        n += 1
        call_id = f"{tag}-{n}"
        body, headers = delivery(call_id, contact_id, secret)
        t0 = time.monotonic()
        try:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            continue
        lat.append((time.monotonic() - t0) * 1000)
        statuses[resp.status] += 1
        if resp.status == 200 and (b'"accepted":1' in data or b'"accepted": 1' in data):
            accepted.append(call_id)
        if resp.will_close:
            conn.close()
    conn.close()
    out.append((lat, statuses, accepted, errors))


def _process(url, secret, contact_id, tag, threads, seconds, queue):
    start = threading.Event()
    deadline = time.monotonic() + seconds + 0.05
    out: list = []
    workers = [threading.Thread(target=_thread, args=(url, secret, contact_id,
                                                      f"{tag}-t{i}", deadline, start, out))
               for i in range(threads)]
    for w in workers:
        w.start()
    t0 = time.monotonic()
    start.set()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - t0
    lat, statuses, accepted, errors = [], Counter(), [], 0
    for a, b, c, d in out:
        lat += a
        statuses.update(b)
        accepted += c
        errors += d
    queue.put({"lat": lat, "statuses": dict(statuses), "accepted": accepted,
               "errors": errors, "elapsed": elapsed})


def generate(url: str, concurrency: int, seconds: float, procs: int, secret: str | None,
             contact_id: str, tag: str) -> dict:
    """Run the load from this process's forked children; return the combined results."""
    procs = max(1, min(procs, concurrency))
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    share = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    children = [ctx.Process(target=_process, args=(url, secret, contact_id, f"{tag}-p{i}",
                                                   share[i], seconds, queue))
                for i in range(procs)]
    for c in children:
        c.start()
    results = [queue.get(timeout=seconds + 120) for _ in children]
    for c in children:
        c.join()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    lat = [x for r in results for x in r["lat"]]
    statuses: Counter = Counter()
    for r in results:
        statuses.update({int(k): v for k, v in r["statuses"].items()})
    elapsed = max(r["elapsed"] for r in results)
    return {"concurrency": concurrency, "procs": procs, "seconds": elapsed,
            "requests": len(lat), "statuses": {str(k): v for k, v in statuses.items()},
            "errors": sum(r["errors"] for r in results),
            "accepted": [a for r in results for a in r["accepted"]],
            "latencies_ms": lat,
            "generator_cpu_s": usage.ru_utime + usage.ru_stime,
            "generator_peak_rss_mb": usage.ru_maxrss / 1024}


def drive(url: str, concurrency: int, seconds: float, secret: str | None = None,
          contact_id: str = "none", procs: int = 2, tag: str | None = None) -> dict:
    """Run the generator as a separate process; return its results (see generate())."""
    tag = tag or uuid.uuid4().hex[:8]
    fd, out = tempfile.mkstemp(prefix="bench-load-", suffix=".json")
    os.close(fd)
    env = dict(os.environ)
    if secret:
        env["BENCH_SECRET"] = secret  # not on the command line
    try:
        proc = subprocess.Popen([sys.executable, __file__, "--url", url, "--concurrency",
                                 str(concurrency), "--seconds", str(seconds), "--procs",
                                 str(procs), "--contact-id", contact_id, "--tag", tag,
                                 "--out", out], env=env, start_new_session=True)
        try:
            rc = proc.wait(seconds + 180)
        except BaseException:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the generator and its workers
            except ProcessLookupError:
                pass
            proc.wait()
            raise
        if rc != 0:
            raise RuntimeError(f"the load generator exited with {rc}")
        return json.loads(Path(out).read_text())
    finally:
        os.unlink(out)


def summarize(result: dict) -> dict:
    """Rates and percentiles of one generate() result."""
    from _proc import pct

    lat = result["latencies_ms"]
    ok = result["statuses"].get("200", 0)
    secs = result["seconds"] or float("nan")
    return {"req_s": len(lat) / secs, "ok_s": ok / secs, "accepted": len(result["accepted"]),
            "p50": pct(lat, 50), "p99": pct(lat, 99), "errors": result["errors"],
            "non_200": sum(v for k, v in result["statuses"].items() if k != "200"),
            "gen_cpu_share": result["generator_cpu_s"] / (secs * (os.cpu_count() or 1))}


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Closed-loop load of signed Samora CALL_FINISHED webhooks "
                    "(shared by webhook_e2e.py and baseline.py).")
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--procs", type=int, default=2, help="worker processes")
    parser.add_argument("--contact-id", default="none")
    parser.add_argument("--tag", default=None, help="call id prefix (default random)")
    parser.add_argument("--out", type=Path, default=None, help="write full JSON here")
    args = parser.parse_args()
    result = generate(args.url, args.concurrency, args.seconds, args.procs,
                      os.environ.get("BENCH_SECRET"), args.contact_id,
                      args.tag or uuid.uuid4().hex[:8])
    if args.out:
        args.out.write_text(json.dumps(result))
    else:
        sys.path.insert(0, str(Path(__file__).parent))
        print(json.dumps(summarize(result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
