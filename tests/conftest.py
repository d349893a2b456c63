"""Shared fixtures: a temp database and fresh plugin manager per test, the sandbox over HTTP.

Each test gets its own SQLite file, secret key and Host (so no state leaks between tests);
the sandbox is started once per session on an ephemeral port and reset before each test
that uses it.
"""
from __future__ import annotations

import time

import pytest

from connector.config import Settings
from connector.crypto import new_key
from connector.host import Host
from connector.runtime import Runtime


def connection_name(app: str) -> str:
    """Name a sandbox service's connection as examples/flows do: contacts_api -> contacts-api."""
    return app.replace("_", "-")


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """Keep the user's CONNECTOR_* variables and working directory out of every test."""
    import os

    for name in list(os.environ):
        if name.startswith("CONNECTOR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings.from_env(database_url=f"sqlite:///{tmp_path / 'connector.db'}",
                             secret_key=new_key(), dispatch_interval=0.1, backoff_base=0.05,
                             backoff_cap=0.2, port=0)


@pytest.fixture
def make_host(settings):
    """Build a Host for this test's database; ``extra_plugins`` registers test plugins."""
    hosts = []

    def make(extra_plugins=None, **overrides) -> Host:
        from dataclasses import replace

        host = Host(replace(settings, **overrides) if overrides else settings,
                    extra_plugins=extra_plugins)
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        host.close()


@pytest.fixture
def host(make_host) -> Host:
    return make_host()


@pytest.fixture(scope="session")
def sandbox_server():
    from connector.sandbox import Sandbox

    box = Sandbox(call_delay=0.05, delivery_retry_delays=(0.05, 0.1, 0.2))
    box.start()
    yield box
    box.stop()


@pytest.fixture
def sandbox(sandbox_server):
    sandbox_server.reset()
    yield sandbox_server
    sandbox_server.wait_idle(5)


@pytest.fixture
def connected(host, sandbox) -> Host:
    """A host holding one connection per sandbox service, named as in examples/flows."""
    for app, info in sandbox.connections().items():
        if app in host.catalog.apps:
            host.add_connection(connection_name(app), app, info["credentials"], info["base_url"])
    return host


@pytest.fixture
def runtime(connected):
    """The embedded product serving on an ephemeral port (webhooks, executor, scheduler)."""
    rt = Runtime(connected)
    rt.start(port=0)
    yield rt
    rt.stop()


@pytest.fixture
def install_plugin(monkeypatch, tmp_path):
    """Install a one-module plugin under a ``connector`` entry point, for this test only."""
    import sys
    from importlib import metadata

    real = metadata.entry_points
    extra: list[metadata.EntryPoint] = []

    def entry_points(**kwargs):
        found = real(**kwargs)
        if kwargs.get("group") == "connector":
            return metadata.EntryPoints([*found, *extra])
        return found

    def install(module: str, source: str) -> None:
        (tmp_path / "site").mkdir(exist_ok=True)
        (tmp_path / "site" / f"{module}.py").write_text(source)
        monkeypatch.syspath_prepend(str(tmp_path / "site"))
        extra.append(metadata.EntryPoint(module, module, "connector"))
        monkeypatch.setattr(metadata, "entry_points", entry_points)

    yield install
    for ep in extra:
        sys.modules.pop(ep.value, None)


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.02):
    """Poll ``predicate`` until true; return its last value (tests assert on it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()
