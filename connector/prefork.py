"""``connector serve --processes N``: N forked processes share one listening socket.

One Python process runs every webhook, run and step under one GIL, so it uses one core
however many it has. Here the parent builds the Host (plugins loaded once, shared
copy-on-write), binds the socket, closes its database connections and forks N children;
each child serves HTTP on the inherited socket and runs its own executor and scheduler.
Claims are atomic and the scheduler leader is elected (a file lock on SQLite, an advisory
lock on PostgreSQL), so the children need no coordination beyond the database. The parent
only supervises: a child that dies is started again; SIGTERM or Ctrl-C stops them all.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import time

from . import store
from .host import Host

log = logging.getLogger("connector")
STOP_GRACE = 30.0  # seconds children get to finish their requests and steps


def serve(host: Host, processes: int, address: str | None = None, port: int | None = None,
          role: str = "all") -> None:
    """Serve with ``processes`` children until SIGTERM or Ctrl-C; return when all stopped."""
    settings = host.settings
    address = address or settings.host
    port = settings.port if port is None else port
    listener = socket.create_server((address, port), backlog=1024)
    bound = listener.getsockname()[1]
    reachable = "127.0.0.1" if address in ("0.0.0.0", "::", "") else address
    host.record_serve_url(f"http://{reachable}:{bound}")
    # A SQLite or PostgreSQL connection must not cross a fork: children open their own.
    store.release_pool(in_use=True)
    children: dict[int, int] = {}
    stopping = False

    def stop(_signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for slot in range(processes):
        children[_fork(host, listener, address, bound, role)] = slot
    log.info("connector serving on http://%s:%s with %d processes (Ctrl-C to stop)",
             address, bound, processes)
    while children and not stopping:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.2)
            continue
        slot = children.pop(pid, None)
        if slot is not None and not stopping:
            log.warning("serve process %s exited (status %s); starting another", pid, status)
            time.sleep(1.0)  # a child that cannot start must not become a fork loop
            children[_fork(host, listener, address, bound, role)] = slot
    _stop_children(children)
    listener.close()


def _fork(host: Host, listener: socket.socket, address: str, port: int, role: str) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        _child(host, listener, address, port, role)
    except KeyboardInterrupt:
        pass
    except Exception:
        log.exception("serve process %s crashed", os.getpid())
        code = 1
    finally:
        os._exit(code)  # never return into the parent's code (click, atexit handlers)


def _child(host: Host, listener: socket.socket, address: str, port: int, role: str) -> None:
    from .runtime import Runtime

    def terminate(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    runtime = Runtime(host, role=role)
    try:
        runtime.serve_forever(address, port, fd=listener.fileno())
    finally:
        host.close()


def _stop_children(children: dict[int, int]) -> None:
    for pid in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_GRACE
    while children and time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid:
            children.pop(pid, None)
        else:
            time.sleep(0.1)
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
