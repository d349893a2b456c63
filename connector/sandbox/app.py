"""The :class:`Sandbox`: every emulator mounted on one WSGI app, served on loopback.

``/contacts-api``, ``/samora`` and ``/aiconnector`` each mount one service's Flask app;
``/_sandbox`` is an unauthenticated admin app (state, reset, auto-recharge, finishing
calls) for tests and demos. All state lives behind one re-entrant lock because the server
is threaded.
"""
from __future__ import annotations

import threading

from flask import Flask, request
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from . import aiconnector, contacts_api, samora
from .aiconnector import AIConnector
from .common import ApiError, RateLimiter, create_service_app, json_body, raw_body
from .contacts_api import ContactsApi
from .delivery import Deliverer, Scheduler
from .samora import Samora


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
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.root_url: str | None = None
        self.reset()
        self.wsgi_app = DispatcherMiddleware(self._root_app(), {
            "/contacts-api": self.contacts_api.create_app(),
            "/samora": self.samora.create_app(),
            "/aiconnector": self.aiconnector.create_app(),
            "/_sandbox": self._admin_app(),
        })

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
        """Drop pending background work and return every service to its seed state."""
        self.scheduler.cancel_all()
        with self.lock:
            self.contacts_api.reset(self.seed)
            self.samora.reset(self.seed)
            self.aiconnector.reset(self.seed)
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
        return _urls(self._root())

    def connections(self) -> dict[str, dict]:
        """Return a base URL and the seeded credentials for each service."""
        return _connections(self._root())

    @property
    def seeded(self) -> dict:
        """Return the ids and keys the seed data holds (for demos and tests)."""
        return {
            "contacts_api": {"api_key": contacts_api.DEFAULT_KEY,
                             "org_id": contacts_api.DEFAULT_ORG,
                             "other_api_key": contacts_api.OTHER_KEY,
                             "other_org_id": contacts_api.OTHER_ORG},
            "samora": {"api_key": samora.DEFAULT_KEY, "agent_id": samora.DEMO_AGENT_ID},
            "aiconnector": {"api_key": aiconnector.DEFAULT_KEY,
                            "list_id": aiconnector.DEMO_LIST_ID,
                            "subaccount_email": aiconnector.DEMO_SUBACCOUNT_EMAIL,
                            "subaccount_balance": 42},
        }

    @property
    def delivery_log(self) -> list[dict]:
        """Return every delivery attempt so far, oldest first."""
        return self.deliverer.entries()

    def state(self) -> dict:
        """Return all state as JSON-ready data (no secrets)."""
        with self.lock:
            return {
                "contacts_api": {"contacts": self.contacts_api.snapshot()},
                "samora": self.samora.snapshot(),
                "aiconnector": self.aiconnector.snapshot(),
                "deliveries": self.deliverer.entries(),
            }

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
            return {"services": _urls(request.host_url.rstrip("/")),
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
            return _connections(request.host_url.rstrip("/"))

        @app.post("/reset")
        def reset():
            self.reset()
            return {"reset": True}

        @app.put("/aiconnector/auto-recharge")
        def configure():
            data = body()
            return self.configure_auto_recharge(data.get("url"), data.get("secret"))

        @app.post("/aiconnector/auto-recharge/fire")
        def fire():
            data = body()
            if "amount" not in data:
                raise ApiError(400, "VALIDATION_ERROR", "Field amount is required.",
                               {"field": "amount"})
            return self.fire_auto_recharge(data.get("email"), data["amount"],
                                           data.get("idempotency_key"), data.get("times", 1))

        @app.post("/samora/calls/<call_id>/finish")
        def finish(call_id):
            return self.finish_call(call_id, body().get("status", "CALL_FINISHED"))

        @app.post("/wait-idle")
        def wait_idle():
            timeout = body().get("timeout", 10)
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise ApiError(400, "VALIDATION_ERROR", "Field timeout must be a number.",
                               {"field": "timeout"})
            return {"idle": self.wait_idle(min(float(timeout), 60.0))}

        return app


def _urls(root: str) -> dict[str, str]:
    return {"contacts_api": root + "/contacts-api", "samora": root + "/samora",
            "aiconnector": root + "/aiconnector/v1"}


def _connections(root: str) -> dict[str, dict]:
    urls = _urls(root)
    return {
        "contacts_api": {"base_url": urls["contacts_api"],
                         "credentials": {"api_key": contacts_api.DEFAULT_KEY,
                                         "org_id": contacts_api.DEFAULT_ORG}},
        "samora": {"base_url": urls["samora"], "credentials": {"api_key": samora.DEFAULT_KEY}},
        "aiconnector": {"base_url": urls["aiconnector"],
                        "credentials": {"api_key": aiconnector.DEFAULT_KEY}},
    }
