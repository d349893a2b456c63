"""Serve the bundled sandbox for the benchmarks (started by them as a subprocess).

Two differences from ``connector sandbox``, both through the Sandbox's public constructor
and state, without changing the sandbox's code:

- the per-key rate limit (6,000 a minute by default) is lifted, since a benchmark sends
  more than 100 requests a second to one key;
- ``--contacts N`` bulk-seeds N Contacts API contacts in the process, one second apart and
  ending ten minutes ago, built as the sandbox's own ``add_contact`` builds them (same
  keys, strictly increasing stamps, ids from :func:`seeded_id`) but without its per-row
  validation, so that 10^6 takes seconds rather than minutes.

When bound, it writes ``{"root", "contacts", "newest_created_at", "seed_seconds"}`` as JSON
to the ``--ready`` file and serves until SIGTERM or Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path


def seeded_id(i: int) -> str:
    """The id of the i-th bulk-seeded contact (deterministic, so the ledger can be pre-filled)."""
    return str(uuid.UUID(int=i + 1))


def seed_contacts(box, count: int) -> str | None:
    from connector.sandbox.contacts_api import DEFAULT_ORG

    api = box.contacts_api
    if count <= 0:
        return None
    start = datetime.now(timezone.utc) - timedelta(minutes=10) - timedelta(seconds=count)
    with api.lock:
        table = api.contacts.setdefault(DEFAULT_ORG, {})
        stamp = None
        for i in range(count):
            moment = start + timedelta(seconds=i)
            stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            cid = seeded_id(i)
            table[cid] = {"id": cid, "name": f"Bench Contact {i}",
                          "email": f"bench{i}@example.com", "phone": f"+1415{i:07d}"[:16],
                          "company": None, "source": "bench", "notes": None, "tags": [],
                          "dnc": False, "custom": {}, "assigned_to": None,
                          "created_at": stamp, "updated_at": stamp}
        api._last_stamp = moment  # later creations stay strictly newer
    return stamp


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--contacts", type=int, default=0)
    parser.add_argument("--call-delay", type=float, default=0.3)
    parser.add_argument("--ready", type=Path, required=True)
    args = parser.parse_args()

    from connector.sandbox import Sandbox

    box = Sandbox(call_delay=args.call_delay, rate_limit_per_minute=10**12)
    started = time.monotonic()
    newest = seed_contacts(box, args.contacts)
    seeded_in = time.monotonic() - started
    root = box.start("127.0.0.1", args.port)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    tmp = args.ready.with_suffix(".tmp")
    tmp.write_text(json.dumps({"root": root, "contacts": args.contacts,
                               "newest_created_at": newest, "seed_seconds": seeded_in}))
    tmp.rename(args.ready)
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        box.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
