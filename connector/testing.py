"""Pytest fixtures and a standard suite for connector plugin authors.

Load it with ``pytest -p connector.testing`` (or let its ``pytest11`` entry point load it).
Every fixture is named ``connector_*`` or says what it does, so none collides with a
project's own; nothing here runs unless a test asks for it, and importing it loads no plugin.

- ``connector_settings``, ``connector_host``, ``connector_make_host(extra_plugins=...)``: a
  temp SQLite database and fresh Host per test (``connector_extra_plugins``, [] unless you
  override it, is registered beside the installed plugins).
- ``connector_plugin_manager``, ``connector_catalog``: a fresh plugin manager and catalog.
- ``connector_sandbox`` (``connector_sandbox_server`` for the session): the bundled service
  emulators on an ephemeral port; ``connector_connected``: a host with a connection to each.
- ``fake_service(app)``: serve your own Flask app or WSGI callable on an ephemeral port.
- ``invoke_trigger`` / ``invoke_action``: run one trigger or action without a flow, as
  ``connector invoke`` does.
- ``connector_clock``: freeze and advance the time the host sees.
- :class:`PluginSuite` / :func:`standard_suite`: the standard tests in one line.
"""
from __future__ import annotations

import datetime as _datetime
import importlib
import inspect
import json
import sys
import threading
import types
from dataclasses import dataclass, field, replace
from io import BytesIO
from typing import Any, Callable

import pytest

__all__ = ["FakeClock", "FakeService", "PluginSuite", "RecordedRequest", "standard_suite"]


# -- host, plugin manager, catalog -----------------------------------------------------------

def make_settings(tmp_path, **overrides):
    """Return Settings for a test: its own SQLite file and key, fast retries, no env read."""
    from connector.config import Settings
    from connector.crypto import new_key

    values = dict(database_url=f"sqlite:///{tmp_path / 'connector.db'}", secret_key=new_key(),
                  dispatch_interval=0.1, backoff_base=0.05, backoff_cap=0.2, port=0)
    values.update(overrides)
    return Settings.from_env({}, **values)


@pytest.fixture
def connector_settings(tmp_path):
    """Settings for this test: a temp database and a fresh secret key; CONNECTOR_* ignored."""
    return make_settings(tmp_path)


@pytest.fixture
def connector_extra_plugins() -> list:
    """Plugins (modules or classes with @hookimpl functions) to register beside the installed
    ones in ``connector_host`` and ``connector_catalog``; override it in your conftest."""
    return []


@pytest.fixture
def connector_make_host(connector_settings, connector_extra_plugins):
    """Return ``make(extra_plugins=None, **settings_overrides) -> Host``; all closed after."""
    from connector.host import Host

    hosts = []

    def make(extra_plugins=None, **overrides):
        settings = replace(connector_settings, **overrides) if overrides else connector_settings
        plugins = []
        for plugin in [*connector_extra_plugins, *(extra_plugins or [])]:
            if not any(plugin is known for known in plugins):  # a plugin registers once
                plugins.append(plugin)
        host = Host(settings, extra_plugins=plugins)
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        host.close()


@pytest.fixture
def connector_host(connector_make_host):
    """A Host on this test's own database, with the installed plugins and the extra ones."""
    return connector_make_host()


@pytest.fixture
def connector_plugin_manager(connector_extra_plugins):
    """A fresh plugin manager: the installed plugins plus ``connector_extra_plugins``."""
    from connector.registry import make_manager

    return make_manager(load=None, block=[], extra=list(connector_extra_plugins))


@pytest.fixture
def connector_catalog(connector_plugin_manager):
    """The catalog built from ``connector_plugin_manager``."""
    from connector.registry import build_catalog

    return build_catalog(connector_plugin_manager)


# -- the sandbox --------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def connector_sandbox_server():
    """The bundled service emulators, started once per session on an ephemeral port."""
    from connector.sandbox import Sandbox

    box = Sandbox(call_delay=0.05, delivery_retry_delays=(0.05, 0.1, 0.2))
    box.start()
    yield box
    box.stop()


@pytest.fixture
def connector_sandbox(connector_sandbox_server):
    """The sandbox, reset to its seed data for this test."""
    connector_sandbox_server.reset()
    yield connector_sandbox_server
    connector_sandbox_server.wait_idle(5)


@pytest.fixture
def connector_connected(connector_host, connector_sandbox):
    """``connector_host`` with one connection per sandbox service, named after its app."""
    for app, info in connector_sandbox.connections().items():
        if app in connector_host.catalog.apps:
            connector_host.add_connection(app.replace("_", "-"), app, info["credentials"],
                                          info["base_url"])
    return connector_host


# -- a fake service -----------------------------------------------------------------------------

@dataclass
class RecordedRequest:
    """One request a fake service received."""

    method: str
    path: str
    query: str
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body or b"null")


class FakeService:
    """Serve a WSGI app (a Flask app is one) on 127.0.0.1, an ephemeral port, in a thread.

    ``url`` is its root (use it as a connection's base URL); ``requests`` lists what it
    received, in order, so a test can assert on headers such as an idempotency key.
    """

    def __init__(self, app: Callable, host: str = "127.0.0.1"):
        from werkzeug.serving import WSGIRequestHandler, make_server

        class Quiet(WSGIRequestHandler):
            def log_request(self, *args, **kwargs):
                pass

        self.app = app
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._server = make_server(host, 0, self._record, threaded=True, request_handler=Quiet)
        self.url = f"http://{host}:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="connector-fake-service", daemon=True)
        self._thread.start()

    def _record(self, environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = BytesIO(body)
        headers = {key[5:].replace("_", "-").title(): value for key, value in environ.items()
                   if key.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        with self._lock:
            self.requests.append(RecordedRequest(environ["REQUEST_METHOD"],
                                                 environ.get("PATH_INFO", ""),
                                                 environ.get("QUERY_STRING", ""), headers, body))
        return self.app(environ, start_response)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _wsgi(app_or_factory) -> Callable:
    """Return a WSGI app: the argument itself, or what a zero-argument factory returns."""
    if inspect.isfunction(app_or_factory) or inspect.ismethod(app_or_factory):
        params = inspect.signature(app_or_factory).parameters.values()
        if all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
               for p in params):
            return app_or_factory()
    return app_or_factory


@pytest.fixture
def fake_service():
    """Return ``serve(app) -> FakeService``: serve your own fake of the service over HTTP.

    ``app`` is a Flask app, any WSGI callable, or a factory taking no arguments
    (``create_app``). Every server started is stopped after the test.
    """
    started: list[FakeService] = []

    def serve(app) -> FakeService:
        service = FakeService(_wsgi(app))
        started.append(service)
        return service

    yield serve
    for service in started:
        service.stop()


# -- invoking one trigger or action -------------------------------------------------------------

@pytest.fixture
def invoke_trigger(connector_host):
    """Return ``invoke(key, connection=None, inputs=None, state=None, request=None,
    subscription=None, host=None) -> TriggerResult`` (``items``, ``keys``, ``state``).

    A poll trigger polls once from ``state``; a webhook trigger parses ``request`` (a
    :class:`connector.WebhookRequest`, verified first when ``subscription`` is given).
    """
    from connector.cli_dev import run_trigger

    def invoke(key, connection=None, inputs=None, state=None, request=None,
               subscription=None, host=None):
        return run_trigger(host or connector_host, key, connection, inputs, state, request,
                           subscription)

    return invoke


@pytest.fixture
def invoke_action(connector_host):
    """Return ``invoke(key, connection=None, inputs=None, idempotency_key=None, host=None)
    -> dict``: run one action or search, ``ctx.once`` backed by the test's own ledger."""
    from connector.cli_dev import run_action

    def invoke(key, connection=None, inputs=None, idempotency_key=None, host=None):
        return run_action(host or connector_host, key, connection, inputs, idempotency_key)

    return invoke


# -- a fake clock -------------------------------------------------------------------------------

#: the host modules whose ``dt`` (the datetime module) the fake clock replaces: every stored
#: time and due time (store.utcnow), the scheduler's "now" for schedules, and the delay steps
CLOCK_MODULES = ("connector.store", "connector.intake", "connector.flows", "connector.engine",
                 "connector.actions.control")


class FakeClock:
    """The time the host sees, frozen until :meth:`advance` or :meth:`set` moves it."""

    def __init__(self, start: _datetime.datetime | None = None):
        self._now = _aware(start or _datetime.datetime.now(_datetime.timezone.utc))
        self.module = _fake_datetime_module(self)

    def now(self) -> _datetime.datetime:
        """Return the current fake time, aware, in UTC."""
        return self._now

    def utcnow(self) -> _datetime.datetime:
        """Return the current fake time as the naive UTC the database stores."""
        return self._now.replace(tzinfo=None)

    def set(self, when: _datetime.datetime) -> _datetime.datetime:
        """Jump to ``when`` (naive means UTC)."""
        self._now = _aware(when)
        return self._now

    def advance(self, seconds: float = 0, **delta) -> _datetime.datetime:
        """Move forward by ``seconds`` plus any timedelta keywords (minutes=, hours=, days=)."""
        self._now += _datetime.timedelta(seconds=seconds, **delta)
        return self._now


def _aware(moment: _datetime.datetime) -> _datetime.datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=_datetime.timezone.utc)
    return moment.astimezone(_datetime.timezone.utc)


def _fake_datetime_module(clock: FakeClock) -> types.ModuleType:
    """Return a stand-in for the datetime module whose datetime.now() reads ``clock``.

    Everything else is the real module; constructing or parsing still gives real datetime
    objects, so the database and APScheduler never meet a foreign type.
    """
    real = _datetime.datetime

    class _Meta(type):
        def __instancecheck__(cls, obj):
            return isinstance(obj, real)

        def __subclasscheck__(cls, sub):
            return issubclass(sub, real)

        def __getattr__(cls, name):
            return getattr(real, name)

        def __call__(cls, *args, **kwargs):
            return real(*args, **kwargs)

    class datetime(metaclass=_Meta):  # noqa: N801 (stands in for datetime.datetime)
        @staticmethod
        def now(tz=None):
            current = clock.now()
            return current.astimezone(tz) if tz is not None else (
                current.astimezone().replace(tzinfo=None))

        @staticmethod
        def utcnow():
            return clock.utcnow()

        @staticmethod
        def today():
            return clock.now().astimezone().replace(tzinfo=None)

    module = types.ModuleType("datetime", "datetime, with now() read from a FakeClock")
    module.__dict__.update({k: v for k, v in vars(_datetime).items() if not k.startswith("__")})
    module.datetime = datetime
    return module


@pytest.fixture
def connector_clock(monkeypatch):
    """A :class:`FakeClock` the host reads instead of the system time, frozen at now.

    ``connector_clock.advance(minutes=5)`` then ``engine.run_due(host)`` runs what became
    due (a retry's backoff, a delay step); ``Scheduler(host).tick()`` fires the schedules
    due by then. ``connector_clock.patch(module)`` makes one of your modules read it too,
    if it uses ``import datetime as dt``.
    """
    clock = FakeClock()

    def patch(module) -> None:
        if isinstance(module, str):
            module = importlib.import_module(module)
        monkeypatch.setattr(module, "dt", clock.module)

    for name in CLOCK_MODULES:
        patch(name)
    clock.patch = patch
    return clock


# -- the standard suite -------------------------------------------------------------------------

def _echo_plugin():
    """A plugin with one step, for the round trip of a plugin that has no action."""
    from marshmallow import fields

    from connector import Action, App, InputSchema, hookimpl

    class EchoApp(App):
        key = "connector_suite"
        label = "Standard suite"
        help = "The standard suite's own step."

    class EchoInputs(InputSchema):
        value = fields.Raw(load_default=None, metadata={"label": "Value"})

    class Echo(Action):
        key = "connector_suite.echo"
        app = "connector_suite"
        label = "Echo"
        help = "Return the value given."
        Inputs = EchoInputs
        needs_connection = False
        sample = {"value": "x"}

        def run(self, ctx, inputs):
            return {"value": inputs.get("value")}

    class EchoPlugin:
        @staticmethod
        @hookimpl
        def register_apps(register):
            register(EchoApp)

        @staticmethod
        @hookimpl
        def register_actions(register):
            register(Echo)

    return EchoPlugin


@dataclass
class _Subject:
    """What a suite tests: plugin names in the manager, or component keys."""

    names: set = field(default_factory=set)
    keys: set = field(default_factory=set)
    extra: list = field(default_factory=list)
    not_installed: list = field(default_factory=list)

    def covers(self, entry) -> bool:
        return entry.plugin in self.names or entry.key in self.keys


def _resolve(spec, extra=()) -> _Subject:
    """Turn modules, module names, plugin objects or component keys into a subject."""
    from importlib import metadata

    from connector.registry import GROUP, build_catalog, make_manager

    items = list(spec) if isinstance(spec, (list, tuple, set)) else [spec]
    if spec is None or not items:
        raise ValueError("standard_suite: name the plugin (a module, its name, or keys)")
    installed = {ep.value for ep in metadata.entry_points(group=GROUP)}
    pm = make_manager(load=None, block=[], extra=list(extra))
    catalog = build_catalog(pm)
    registered = {*catalog.apps, *catalog.triggers, *catalog.actions, *catalog.searches}
    subject = _Subject()
    for item in items:
        if isinstance(item, str) and item in registered:
            subject.keys.add(item)
            continue
        try:
            plugin = importlib.import_module(item) if isinstance(item, str) else item
        except ImportError as exc:
            raise ValueError(f"standard_suite: {item!r} is neither a registered key nor an "
                             f"importable module ({exc})") from None
        if isinstance(plugin, types.ModuleType) and plugin.__name__ not in installed:
            subject.not_installed.append(plugin.__name__)
        if pm.is_registered(plugin):
            name = pm.get_name(plugin)
        else:
            subject.extra.append(plugin)
            name = getattr(plugin, "__name__", None) or str(id(plugin))
        subject.names.add(name)
    return subject


class PluginSuite:
    """The standard tests of a plugin; subclass it in a ``Test*`` class, or use
    :func:`standard_suite`.

    Set ``plugin`` (a module, its dotted name, a plugin object, or component keys, or a
    list of them). For the round trip through a flow, set ``service`` (your fake of the
    service: a Flask app, WSGI callable or zero-argument factory), ``credentials`` (app key
    -> the connection's fields) and ``inputs`` (component key -> its inputs; templates such
    as ``{{ trigger.id }}`` work in an action's), or override the ``suite_connections``
    fixture. ``trigger`` and ``actions`` choose the components of the flow (default: the
    plugin's first poll trigger, else its first trigger, else ``webhook.catch`` fed the
    sample; and every action, else an echo step).

    The tests: the plugin is installed and registers something; ``connector plugins
    check`` finds nothing; and a round trip: save the flow, switch it on, poll (or deliver
    the trigger's sample), run with ``engine.run_due``, every run succeeds, a second poll
    (or delivery) queues nothing, switch it off.
    """

    plugin: Any = None
    service: Any = None
    base_url: str | None = None
    credentials: dict = {}
    inputs: dict = {}
    trigger: str | None = None
    actions: list | None = None
    #: a module named by ``plugin`` must be loaded from a `connector` entry point
    installed: bool = True

    @pytest.fixture
    def suite_subject(self, connector_extra_plugins):
        return _resolve(self.plugin, connector_extra_plugins)

    @pytest.fixture
    def suite_host(self, suite_subject, connector_make_host):
        return connector_make_host(extra_plugins=[*suite_subject.extra, _echo_plugin()])

    @pytest.fixture
    def suite_connections(self, fake_service) -> dict:
        """Return ``{app key: {"credentials": {...}, "base_url": url or None}}`` for the
        round trip; override this fixture when they depend on other fixtures (a temp dir,
        a server you start). The default serves ``service`` with ``fake_service`` and
        points every app in ``credentials`` at it (at ``base_url``, if set, instead; at the
        app's own default when neither is set)."""
        if not self.credentials:
            return {}
        url = self.base_url
        service = inspect.getattr_static(type(self), "service", None)
        if isinstance(service, staticmethod):
            service = service.__func__
        if url is None and service is not None:
            url = fake_service(service).url
        return {app: {"credentials": creds, "base_url": url}
                for app, creds in self.credentials.items()}

    def test_plugin_is_installed_and_registers_components(self, suite_subject, suite_host):
        if self.installed and suite_subject.not_installed:
            pytest.fail(f"{', '.join(suite_subject.not_installed)} is not loaded from a "
                        "`connector` entry point: declare one in setup.cfg and pip install "
                        "-e . (or set installed = False for a module you register by hand)")
        mine = [e for e in suite_host.catalog.entries() if suite_subject.covers(e)]
        assert mine, f"{self.plugin!r} registers no app, trigger, action or search"
        missing = suite_subject.keys - {e.key for e in mine}
        assert not missing, f"not registered: {', '.join(sorted(missing))}"

    def test_plugins_check_passes(self, suite_subject, suite_host):
        from connector.cli_dev import check_catalog, check_component

        catalog = suite_host.catalog
        problems = check_catalog(catalog, suite_host.pm, suite_subject.names)
        for entry in catalog.entries():
            if entry.key in suite_subject.keys and entry.plugin not in suite_subject.names:
                problems += [f"{entry.kind} {entry.key}: {p}"
                             for p in check_component(entry.kind, entry.cls, catalog)]
        assert not problems, "connector plugins check finds:\n" + "\n".join(problems)

    def test_round_trip_through_a_flow(self, suite_subject, suite_host, suite_connections):
        _RoundTrip(self, suite_subject, suite_host, suite_connections).run()


class _RoundTrip:
    """Save a flow of the plugin's trigger and actions, switch it on, feed it, run it."""

    def __init__(self, suite: PluginSuite, subject: _Subject, host, connections: dict):
        self.suite, self.subject, self.host = suite, subject, host
        self.connections = connections
        self.catalog = host.catalog

    def run(self) -> None:
        from connector import engine, flows, intake
        from connector.sdk import PollTrigger
        from connector.store import Run

        trigger_key, step_keys = self._components()
        definition = {"name": "standard-suite-round-trip", "trigger": {
            "key": trigger_key, "connection": self._connection(trigger_key),
            "inputs": self.suite.inputs.get(trigger_key, {})}, "steps": []}
        for i, key in enumerate(step_keys):
            definition["steps"].append({"name": f"step_{i}", "action": key,
                                        "connection": self._connection(key),
                                        "inputs": self.suite.inputs.get(key, {})})
        flow = flows.save(self.host, definition)
        trigger = self.catalog.trigger(trigger_key)
        if isinstance(trigger, PollTrigger):
            flows.enable(self.host, flow, backfill=True)
            created = intake.poll_flow(self.host, flow).created
            assert created, (f"{trigger_key}: the first poll found no items; give the fake "
                             "service at least one")
            again = intake.poll_flow(self.host, flow).created
            assert not again, (f"{trigger_key}: a second poll queued {len(again)} run(s) "
                               "again; its dedupe_key must be stable for an item")
        else:
            flows.enable(self.host, flow)
            item = dict(trigger.sample)
            key = trigger.dedupe_key(item)
            created = intake.ingest(flow, trigger, [(key, item)]).created
            repeat = intake.ingest(flow, trigger, [(key, item)])
            assert not repeat.created and repeat.duplicates == 1
        engine.run_due(self.host)
        runs = list(Run.select().where(Run.id.in_(created)).order_by(Run.id))
        failed = [f"run {r.id}: {r.status}: {r.error}" for r in runs
                  if r.status not in (Run.SUCCEEDED, Run.FILTERED)]
        assert not failed, "the round trip's runs did not succeed:\n" + "\n".join(failed)
        warnings = flows.disable(self.host, flow)
        assert not warnings, "; ".join(warnings)

    def _components(self) -> tuple[str, list[str]]:
        from connector.sdk import PollTrigger

        mine = [e for e in self.catalog.entries() if self.subject.covers(e)]
        trigger_key = self.suite.trigger
        if trigger_key is None:
            triggers = [e for e in mine if e.kind == "trigger"]
            polls = [e for e in triggers if issubclass(e.cls, PollTrigger)]
            trigger_key = (polls or triggers)[0].key if triggers else "webhook.catch"
        steps = self.suite.actions
        if steps is None:
            steps = [e.key for e in mine if e.kind == "action" and not e.cls.control]
        return trigger_key, list(steps) or ["connector_suite.echo"]

    def _connection(self, key: str) -> str | None:
        """Add (once) and return a connection for the app of ``key``, or None."""
        cls = (self.catalog.triggers.get(key) or self.catalog.actions.get(key)
               or self.catalog.searches.get(key))
        cls = cls.cls if cls else None
        if cls is None or not getattr(cls, "needs_connection", True):
            return None
        app = self.catalog.app(cls.app)
        if not app.Credentials().fields:
            return None
        name = f"suite-{cls.app}"
        from connector.store import Connection

        if Connection.get_or_none(Connection.name == name) is None:
            given = self.connections.get(cls.app)
            if given is None:
                pytest.skip(f"{key} needs a connection of app {cls.app}: set credentials and "
                            "service on the suite (or override suite_connections) to run the "
                            "round trip")
            self.host.add_connection(name, cls.app, given.get("credentials") or {},
                                     given.get("base_url"))
        return name


def standard_suite(plugin, **settings) -> type:
    """Return a :class:`PluginSuite` class for ``plugin``; assign it to a ``Test*`` name::

        TestStandard = standard_suite("connector_acme", service=create_fake_acme,
                                      credentials={"acme": {"api_key": "test"}})

    Keyword arguments set the suite's attributes (service, base_url, credentials, inputs,
    trigger, actions, installed).
    """
    unknown = set(settings) - {"service", "base_url", "credentials", "inputs", "trigger",
                               "actions", "installed"}
    if unknown:
        raise TypeError(f"standard_suite() got unknown settings: {', '.join(sorted(unknown))}")
    attrs = {"plugin": plugin, "__module__": _caller_module(), **settings}
    return type("StandardSuite", (PluginSuite,), attrs)


def _caller_module() -> str:
    frame = sys._getframe(2)
    return frame.f_globals.get("__name__", __name__)
