"""``connector serve --processes N``: N forked processes, split into receivers and executors.

One Python process runs every webhook, run and step under one GIL, so it uses one core
however many it has. Here the parent builds the Host (plugins loaded once, shared
copy-on-write), binds the socket, closes its database connections and forks N children.
Receivers serve HTTP on the inherited socket and nothing else, so a webhook's answer never
waits for the GIL behind an executor thread; executors serve no HTTP and run the executor
and a scheduler candidate. A receiver that queued runs writes a byte to a pipe the
executors read, which wakes one of them at once. With one process, or
CONNECTOR_SERVE_RECEIVERS=0, every child does both (role ``all``). Claims are atomic and
the scheduler leader is elected (a file lock on SQLite, an advisory lock on PostgreSQL), so
the children need no other coordination. The parent only supervises: a child that dies is
started again; SIGTERM or Ctrl-C stops them all.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import socket
import threading
import time

from . import store
from .host import Host
from .runtime import listen

log = logging.getLogger("connector")
RECEIVERS_VAR = "CONNECTOR_SERVE_RECEIVERS"  # serve --receivers: HTTP-only children
#: How long a thread may keep the GIL while another waits (Python's default: 5 ms). A
#: thread that waits for the GIL after each SQLite call stretches the write transaction
#: every other writer queues behind; 0.5 ms took intake from about 150 to 200 webhooks/s.
SWITCH_INTERVAL = 0.0005
STOP_GRACE = 30.0  # seconds children get to finish their requests and steps


def split(processes: int, receivers: int | None = None) -> list[str]:
    """Return each child's Runtime role: ``receivers`` HTTP-only ones (default half,
    rounded down), the rest executors; all of them ``all`` for one process or 0 receivers."""
    if receivers is None:
        receivers = processes // 2
    if processes < 2 or receivers <= 0:
        return ["all"] * processes
    receivers = min(receivers, processes - 1)  # someone must execute
    return ["receiver"] * receivers + ["scheduler"] * (processes - receivers)


def serve(host: Host, processes: int, address: str | None = None, port: int | None = None,
          role: str = "all", receivers: int | None = None) -> None:
    """Serve with ``processes`` children until SIGTERM or Ctrl-C; return when all stopped."""
    settings = host.settings
    address = address or settings.host
    port = settings.port if port is None else port
    listener = listen(address, port)
    bound = listener.getsockname()[1]
    reachable = "127.0.0.1" if address in ("0.0.0.0", "::", "") else address
    host.record_serve_url(f"http://{reachable}:{bound}")
    # A SQLite or PostgreSQL connection must not cross a fork: children open their own.
    store.release_pool(in_use=True)
    roles = split(processes, receivers) if role == "all" else [role] * processes
    wake = os.pipe() if "receiver" in roles else None
    if wake is not None:
        os.set_blocking(wake[1], False)
    children: dict[int, int] = {}
    stopping = False

    def stop(_signum, _frame):
        nonlocal stopping
        stopping = True

    def fork(slot: int) -> int:
        return _fork(host, listener, address, bound, roles[slot], wake)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for slot in range(processes):
        children[fork(slot)] = slot
    log.info("connector serving on http://%s:%s with %d processes (%s; Ctrl-C to stop)",
             address, bound, processes, ", ".join(roles))
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
            children[fork(slot)] = slot
    _stop_children(children)
    listener.close()
    if wake is not None:
        os.close(wake[0])
        os.close(wake[1])


def _fork(host: Host, listener: socket.socket, address: str, port: int, role: str,
          wake: tuple[int, int] | None) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        _child(host, listener, address, port, role, wake)
    except KeyboardInterrupt:
        pass
    except Exception:
        log.exception("serve process %s crashed", os.getpid())
        code = 1
    finally:
        os._exit(code)  # never return into the parent's code (click, atexit handlers)


def _child(host: Host, listener: socket.socket, address: str, port: int, role: str,
           wake: tuple[int, int] | None) -> None:
    from .runtime import Runtime

    def terminate(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    if role == "scheduler":
        listener.close()  # it serves no HTTP: the kernel must not queue clients here
    sys.setswitchinterval(SWITCH_INTERVAL)
    runtime = Runtime(host, role=role,
                      on_queued=_notifier(wake[1]) if wake and role == "receiver" else None)
    if wake is not None and runtime.executor is not None:
        threading.Thread(target=_listen, args=(wake[0], runtime.executor.wake),
                         name="connector-wake", daemon=True).start()
    try:
        runtime.serve_forever(address, port,
                              fd=None if role == "scheduler" else listener.fileno())
    finally:
        host.close()


def _notifier(fd: int):
    """Return on_queued for a receiver: one byte down the pipe wakes one executor."""

    def notify() -> None:
        try:
            os.write(fd, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: every executor has been woken already

    return notify


def _listen(fd: int, wake) -> None:
    """Wake this process's executor for every batch of bytes a receiver wrote."""
    while True:
        try:
            if not os.read(fd, 512):
                return
        except OSError:
            return
        wake()


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
