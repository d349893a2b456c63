"""Run the whole embedded product in one process: web server, executor and scheduler.

``connector serve`` blocks in :meth:`Runtime.serve_forever`; the demo and the end-to-end
tests use :meth:`Runtime.start` (a background thread on an ephemeral port) and
:meth:`Runtime.stop`. With a broker (CONNECTOR_BROKER_URL) runs execute in Celery workers
(``connector worker``) instead of the in-process executor, and the scheduler leader
publishes them (connector.workers).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import socket
import sys
import threading

from werkzeug.serving import WSGIRequestHandler, make_server

from .engine import Executor
from .host import Host
from .scheduler import Scheduler
from .web import create_app

log = logging.getLogger("connector")
access_log = logging.getLogger("connector.access")


def listen(address: str, port: int, backlog: int = 1024) -> socket.socket:
    """Return a listening socket on ``address:port``; OSError names a taken or bad address."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        return socket.create_server((address, port), family=family, backlog=backlog)
    except OverflowError:
        raise OSError(0, f"cannot listen on {address}:{port}: a port is 0 to 65535") from None
    except OSError as exc:  # create_server's own strerror repeats the address: keep the cause
        reason = (os.strerror(exc.errno) if exc.errno and exc.errno > 0
                  else (exc.strerror or str(exc)).split(" (while attempting")[0])
        raise OSError(exc.errno, f"cannot listen on {address}:{port}: {reason}") from None


class _AccessLog(WSGIRequestHandler):
    """Log requests to connector.access at DEBUG instead of werkzeug's stderr lines."""

    def log_request(self, code="-", size="-"):
        access_log.debug('%s "%s" %s', self.address_string(), self.requestline, code)


ROLES = ("all", "web", "scheduler", "receiver")


class Runtime:
    """Own the server thread, the executor and the scheduler for one Host.

    ``role`` splits the product across processes: ``web`` receives webhooks and executes
    runs, ``scheduler`` competes for leadership (polls, schedules, retention) and executes
    runs without serving HTTP, ``all`` (the embedded default) does everything, and
    ``receiver`` (connector.prefork's HTTP children) only serves HTTP: no executor
    thread competes with its requests for the GIL; ``on_queued`` tells the executing
    processes that runs were queued.

    ``broker`` (default: the host's ``settings.broker_url``, from CONNECTOR_BROKER_URL) hands execution to Celery workers:
    ``executor`` is then a :class:`~connector.workers.Dispatcher` that publishes due runs
    while this process leads the scheduler, and a ``web`` process only receives.
    """

    def __init__(self, host: Host, scheduler: bool = True, role: str = "all",
                 broker=None, on_queued=None):
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        self.host = host
        self.role = role
        if broker is None:
            from .workers import Broker

            broker = Broker.from_settings(host.settings)
        self.broker = broker
        wants_scheduler = scheduler and role not in ("web", "receiver")
        if role == "receiver":
            self.executor = None
        elif broker is None:
            self.executor = Executor(host)
        else:
            from .workers import Dispatcher

            # Only the scheduler leader publishes, so two candidates never send a run twice;
            # a lone process without a scheduler publishes itself.
            leading = ((lambda: self.scheduler is not None and self.scheduler.is_leader)
                       if wants_scheduler else None)
            self.executor = Dispatcher(host, broker, leading=leading)
        self.scheduler = Scheduler(host, self.executor) if wants_scheduler else None
        receives_only = role == "receiver" or (broker is not None and role == "web")
        self.app = create_app(host, on_queued=on_queued if receives_only else
                              self.executor.wake)
        self._server = None
        self._thread: threading.Thread | None = None

    def bind(self, address: str | None = None, port: int | None = None,
             fd: int | None = None) -> str:
        """Bind the server socket (or serve the listening socket ``fd`` another process
        bound, see connector.prefork); return the root URL."""
        settings = self.host.settings
        address = address or settings.host
        port = settings.port if port is None else port
        listener = None
        if fd is None:  # bind here, so a taken port is an OSError, not werkzeug's exit
            listener = listen(address, port)
        try:
            self._server = make_server(address, port, self.app, threaded=True,
                                       request_handler=_AccessLog,
                                       fd=fd if listener is None else listener.fileno())
        finally:
            if listener is not None:
                listener.close()  # werkzeug serves a duplicate of it
        bound = self._server.server_address[1]
        if bound != settings.port:
            self.host.settings = dataclasses.replace(settings, port=bound)
        if fd is None:
            reachable = "127.0.0.1" if address in ("0.0.0.0", "::", "") else address
            self.host.record_serve_url(f"http://{reachable}:{bound}")
        return f"http://{address}:{bound}"

    def start(self, address: str | None = None, port: int | None = 0) -> str:
        """Start everything in background threads; return the root URL."""
        url = self.bind(address, port)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name="connector-http", daemon=True)
        self._thread.start()
        self._start_workers()
        return url

    def _start_workers(self) -> None:
        if self.executor is None or (self.broker is not None and self.role == "web"):
            return  # a receiver: another process executes (or publishes to Celery workers)
        self.executor.start()
        if self.scheduler is not None:
            self.scheduler.start()

    def serve_forever(self, address: str | None = None, port: int | None = None,
                      fd: int | None = None) -> None:
        """Serve in the foreground until interrupted, then stop cleanly."""
        from .prefork import SWITCH_INTERVAL

        sys.setswitchinterval(SWITCH_INTERVAL)  # this process is the server's own
        if self.role == "scheduler":  # no HTTP: lead (or wait to), execute, until stopped
            self._start_workers()
            log.info("connector scheduler running (no HTTP); Ctrl-C to stop")
            try:
                threading.Event().wait()
            finally:
                self.stop()
            return
        url = self.bind(address, port, fd)
        self._start_workers()
        log.info("connector serving on %s (webhooks at %s/hooks/...; Ctrl-C to stop)", url,
                 self.host.webhook_base())
        try:
            self._server.serve_forever()
        finally:
            self.stop()

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._thread.join(10)
        if self._server is not None:
            self._server.server_close()
            self._server = None
        if self.executor is not None:
            self.executor.stop()
