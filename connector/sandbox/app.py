"""The :class:`Sandbox`: every emulator mounted on one WSGI app, served on loopback.

Each service object mounts its own Flask app under its ``prefix`` (``/contacts-api``,
``/samora``, ``/aiconnector``, ``/sami-os``, ``/samva``) and says how a connection reaches it
(``connection(root)``), what its seed holds (``seeded()``), what tests may inspect
(``state()``) and which admin routes it adds to ``/_sandbox``, the unauthenticated admin app
(state, reset, service-specific controls) for tests and demos. All state lives behind one
re-entrant lock because the server is threaded.

``sandbox.faults`` (:mod:`.faults`) makes any service fail on purpose at run time (500s,
429s with Retry-After, slow answers, dropped connections, adversarial list pages); its
admin routes are ``/_sandbox/faults``. Faults never reach the admin app.
"""
from __future__ import annotations

import threading

from flask import Flask, request
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from .aiconnector import AIConnector
from .common import ApiError, RateLimiter, create_service_app, json_body, raw_body
from .contacts_api import ContactsApi
from .delivery import Deliverer, Scheduler
from .faults import FaultError, Faults
from .sami_os import SamiOs
from .samora import Samora
from .samva import Samva


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code="-", size="-"):
        pass


class Sandbox:
    """Offline emulators of Contacts API, Samora AI and AI Connector over real HTTP."""

    def __init__(self, call_delay: float = 0.3,
                 delivery_retry_delays=(0.2, 0.5, 1.0, 2.0),
                 rate_limit_per_minute: int = 6000, seed: bool = True,
                 delivery_timeout: float = 5.0, workers: int = 4):
        self.lock = threading.RLock()
        self.seed = seed
        self.limiter = RateLimiter(rate_limit_per_minute)
        self.scheduler = Scheduler(workers=workers)
        self.deliverer = Deliverer(self.scheduler, delivery_retry_delays, delivery_timeout,
                                   self.lock)
        self.contacts_api = ContactsApi(self.lock, self.limiter)
        self.samora = Samora(self.lock, self.limiter, self.scheduler, self.deliverer,
                             call_delay)
        self.aiconnector = AIConnector(self.lock, self.limiter, self.deliverer)
        self.sami_os = SamiOs(self.lock, self.limiter, self.scheduler, self.deliverer)
        self.samva = Samva(self.lock, self.limiter, self.scheduler, self.deliverer)
        self.services = [self.contacts_api, self.samora, self.aiconnector, self.sami_os,
                         self.samva]
        self.faults = Faults(svc.name for svc in self.services)
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.root_url: str | None = None
        self.reset()
        mounts = {svc.prefix: self.faults.install(svc.create_app(), svc.name)
                  for svc in self.services}
        mounts["/_sandbox"] = self._admin_app()
        self.wsgi_app = DispatcherMiddleware(self._root_app(), mounts)

    # Lifecycle

    def start(self, host: str = "127.0.0.1", port: int = 0, quiet: bool = True) -> str:
        """Serve on ``host:port`` (0 picks a free port) in a daemon thread; return the root URL."""
        if self._server is not None:
            raise RuntimeError("the sandbox is already running; call stop() first")
        try:
            server = make_server(host, port, self.wsgi_app, threaded=True,
                                 request_handler=_QuietHandler if quiet else None)
        except SystemExit:
            # werkzeug exits the process when the port is taken; a library must not.
            raise OSError(f"cannot listen on {host}:{port}") from None
        self._server = server
        shown = f"[{host}]" if ":" in host else host
        self.root_url = f"http://{shown}:{server.port}"
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="sandbox-server", daemon=True)
        self._thread.start()
        return self.root_url

    def stop(self) -> None:
        """Shut the server and the background workers down and join their threads."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        self.root_url = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(5)
        self.scheduler.stop()

    def serve_forever(self, host: str = "127.0.0.1", port: int = 8800, on_ready=None) -> None:
        """Serve until interrupted (Ctrl-C), logging requests; ``on_ready(root_url)`` once bound."""
        url = self.start(host, port, quiet=False)
        if on_ready is not None:
            on_ready(url)
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> "Sandbox":
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_idle(self, timeout: float = 10) -> bool:
        """Wait until no call is progressing and no delivery is pending; False on timeout."""
        return self.scheduler.wait_idle(timeout)

    def reset(self) -> None:
        """Drop pending background work, clear every fault plan, and return every service to
        its seed state."""
        self.scheduler.cancel_all()
        self.faults.clear()
        with self.lock:
            for svc in self.services:
                svc.reset(self.seed)
            self.deliverer.clear()
            self.limiter.reset()

    # What clients need

    def _root(self) -> str:
        if self.root_url is None:
            raise RuntimeError("the sandbox is not running; call start() first")
        return self.root_url

    @property
    def urls(self) -> dict[str, str]:
        """Return each service's base URL as a connection uses it."""
        return {name: conn["base_url"] for name, conn in self.connections().items()}

    def connections(self) -> dict[str, dict]:
        """Return a base URL and the seeded credentials for each service."""
        return self._connections(self._root())

    def _connections(self, root: str) -> dict[str, dict]:
        return {svc.name: svc.connection(root) for svc in self.services}

    @property
    def seeded(self) -> dict:
        """Return the ids and keys the seed data holds, per service (for demos and tests)."""
        return {svc.name: svc.seeded() for svc in self.services}

    @property
    def delivery_log(self) -> list[dict]:
        """Return every delivery attempt so far, oldest first."""
        return self.deliverer.entries()

    def state(self) -> dict:
        """Return all state as JSON-ready data (no secrets)."""
        with self.lock:
            data = {svc.name: svc.state() for svc in self.services}
            data["deliveries"] = self.deliverer.entries()
            return data

    def configure_auto_recharge(self, url: str, secret: str | None = None) -> dict:
        """Set AI Connector's auto-recharge webhook; return {"url", "secret"}."""
        return self.aiconnector.configure_auto_recharge(url, secret)

    def fire_auto_recharge(self, email: str, amount, idempotency_key: str | None = None,
                           times: int = 1) -> dict:
        """Deliver one signed auto-recharge message ``times`` times; return key and results."""
        return self.aiconnector.fire_auto_recharge(email, amount, idempotency_key, times)

    def finish_call(self, call_id: str, status: str = "CALL_FINISHED") -> dict:
        """End a Samora call now with ``status``; return its details."""
        return self.samora.finish_call(call_id, status)

    # WSGI apps

    def _root_app(self) -> Flask:
        app = create_service_app(__name__)

        @app.get("/")
        def index():
            return {"services": {name: conn["base_url"] for name, conn in
                                 self._connections(request.host_url.rstrip("/")).items()},
                    "admin": request.host_url + "_sandbox/state"}

        return app

    def _admin_app(self) -> Flask:
        app = create_service_app(__name__ + ".admin")

        def body() -> dict:
            return json_body() if raw_body().strip() else {}

        @app.get("/state")
        def state():
            return self.state()

        @app.get("/connections")
        def connections():
            return self._connections(request.host_url.rstrip("/"))

        @app.post("/reset")
        def reset():
            self.reset()
            return {"reset": True}

        for svc in self.services:
            svc.register_admin(app)

        @app.get("/faults")
        def faults_state():
            return {"faults": self.faults.describe(), "log": self.faults.entries()}

        @app.put("/faults/<service>")
        def faults_set(service):
            options = json_body() if raw_body().strip() else {}
            try:
                return self.faults.set(service, **options)
            except KeyError:
                raise _unknown_service(service) from None
            except FaultError as exc:
                raise ApiError(400, "VALIDATION_ERROR", str(exc), {"field": exc.field}) from None

        @app.delete("/faults/<service>")
        def faults_clear(service):
            try:
                cleared = self.faults.clear(service)
            except KeyError:
                raise _unknown_service(service) from None
            return {"service": service.replace("-", "_"), "cleared": bool(cleared)}

        @app.delete("/faults")
        def faults_clear_all():
            return {"cleared": self.faults.clear()}

        @app.post("/wait-idle")
        def wait_idle():
            timeout = body().get("timeout", 10)
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise ApiError(400, "VALIDATION_ERROR", "Field timeout must be a number.",
                               {"field": "timeout"})
            return {"idle": self.wait_idle(min(float(timeout), 60.0))}

        return app


def _unknown_service(name: str) -> ApiError:
    return ApiError(404, "UNKNOWN_SERVICE", f"No sandbox service named {name}.",
                    {"field": "service"})
