"""Shared plumbing for the benchmarks: child processes, RSS from /proc, ports, statistics.

Every child is started in its own session (its own process group), remembered in
``Children``, and stopped (SIGTERM, then SIGKILL) when the ``with`` block ends, on success,
failure, Ctrl-C or SIGTERM alike. Nothing here kills a process the benchmark did not start.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable
BIN = Path(sys.executable).parent
CONNECTOR = str(BIN / "connector") if (BIN / "connector").exists() else "connector"


class Interrupted(Exception):
    """SIGTERM arrived: unwind like Ctrl-C so every finally block runs."""


def on_sigterm() -> None:
    """Turn SIGTERM (and SIGINT, even where a shell started us ignoring it) into
    KeyboardInterrupt in the main thread, so every cleanup block runs."""

    def handler(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_main(main) -> None:
    """Exit with ``main()``'s status; Ctrl-C or SIGTERM (after :func:`on_sigterm`) exits 130
    once every cleanup block has run."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until ``url`` answers any HTTP status; raise if ``proc`` died or time ran out."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before serving")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing answered at {url} within {timeout:.0f} s")


class Children:
    """Start child processes in their own sessions; stop them all on exit."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def start(self, args, **kwargs) -> subprocess.Popen:
        kwargs.setdefault("start_new_session", True)
        proc = subprocess.Popen([str(a) for a in args], **kwargs)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 10.0) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # its own group: it and its workers
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(5)
        if proc in self.procs:
            self.procs.remove(proc)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for proc in reversed(list(self.procs)):
            try:
                self.stop(proc)
            except Exception:  # keep stopping the others
                pass


class TempDir:
    """A temporary directory removed on exit unless ``keep``."""

    def __init__(self, prefix: str, keep: bool = False):
        self.path = Path(tempfile.mkdtemp(prefix=prefix))
        self.keep = keep

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc):
        if self.keep:
            print(f"(kept {self.path})", file=sys.stderr)
        else:
            shutil.rmtree(self.path, ignore_errors=True)


# -- memory -------------------------------------------------------------------------------

def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """Return ``pid`` and every process below it (from /proc/*/stat parent ids)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def tree_rss_mb(pid: int) -> float:
    """Current resident memory of ``pid`` and its children (VmRSS summed), in MiB."""
    return sum(_status_kb(p, "VmRSS") for p in descendants(pid)) / 1024


def tree_hwm_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of ``pid`` and its children, summed, in MiB."""
    return sum(_status_kb(p, "VmHWM") for p in descendants(pid)) / 1024


def self_hwm_mb() -> float:
    return _status_kb(os.getpid(), "VmHWM") / 1024


def self_rss_mb() -> float:
    return _status_kb(os.getpid(), "VmRSS") / 1024


class RssSampler:
    """Sample the summed VmRSS of process trees in a thread; ``peak`` is the highest seen."""

    def __init__(self, *pids: int, every: float = 0.25):
        self.pids, self.every = pids, every
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(tree_rss_mb(pid) for pid in self.pids))
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(2)
        self.peak = max(self.peak, sum(tree_rss_mb(pid) for pid in self.pids))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (and its reaped children) from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    # fields[11..14] are utime, stime, cutime, cstime (after the ")" split: index - 2)
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / tick


# -- numbers ------------------------------------------------------------------------------

def pct(values, p: float) -> float:
    """The p-th percentile (nearest rank) of ``values``; NaN for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(p / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]


def median(values) -> float:
    return statistics.median(values) if values else float("nan")


def machine() -> dict:
    model = "?"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg()
    return {"nproc": os.cpu_count(), "cpu": model, "python": sys.version.split()[0],
            "load": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"}


def print_machine() -> None:
    m = machine()
    print(f"machine: {m['nproc']} CPUs ({m['cpu']}), Python {m['python']}, "
          f"load average {m['load']}")


# -- the sandbox ----------------------------------------------------------------------------

def start_sandbox(children: Children, log_dir: Path, contacts: int = 0,
                  timeout: float = 600.0) -> tuple[subprocess.Popen, str]:
    """Start bench/_sandbox.py (no rate limit, optional bulk-seeded contacts); return it and
    its root URL."""
    port = free_port()
    log = open(log_dir / "sandbox.log", "wb")
    ready = log_dir / "sandbox.ready"
    proc = children.start([PYTHON, BENCH / "_sandbox.py", "--port", port, "--contacts",
                           contacts, "--ready", ready], stdout=log, stderr=subprocess.STDOUT,
                          cwd=log_dir)
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"the sandbox exited with {proc.returncode}; see "
                               f"{log_dir / 'sandbox.log'}")
        if time.monotonic() > deadline:
            raise RuntimeError("the sandbox did not become ready")
        time.sleep(0.1)
    info = json.loads(ready.read_text())
    return proc, info["root"]


# -- the database ---------------------------------------------------------------------------

class PgSchema:
    """A schema of our own in a PostgreSQL database, dropped on exit."""

    def __init__(self, base_url: str):
        import uuid

        import psycopg2

        self.base_url = base_url
        self.name = f"bench_{uuid.uuid4().hex[:10]}"
        con = psycopg2.connect(base_url, connect_timeout=5)
        con.autocommit = True
        con.cursor().execute(f'CREATE SCHEMA "{self.name}"')
        con.close()
        sep = "&" if "?" in base_url else "?"
        self.url = f"{base_url}{sep}options=-csearch_path%3D{self.name}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        import psycopg2

        con = psycopg2.connect(self.base_url, connect_timeout=5)
        con.autocommit = True
        con.cursor().execute(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')
        con.close()


def query(database_url: str, sql: str, params=()) -> list[tuple]:
    """Run one read-only query against the connector's database (SQLite or PostgreSQL)."""
    if database_url.startswith("sqlite"):
        import sqlite3

        con = sqlite3.connect(database_url.split(":///", 1)[1], timeout=30)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()
    import psycopg2
    from urllib.parse import parse_qs, urlsplit, urlunsplit

    parts = urlsplit(database_url)
    options = parse_qs(parts.query).get("options", [None])[0]
    con = psycopg2.connect(urlunsplit(parts._replace(query="")), options=options)
    try:
        cur = con.cursor()
        cur.execute(sql.replace("?", "%s"), params)
        return cur.fetchall()
    finally:
        con.close()
