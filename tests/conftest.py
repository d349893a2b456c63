"""Shared fixtures: a temp database and fresh plugin manager per test, the sandbox over HTTP.

Each test gets its own SQLite file, secret key and Host (so no state leaks between tests);
the sandbox is started once per session on an ephemeral port and reset before each test
that uses it.
"""
from __future__ import annotations

import time

import pytest

from connector.config import Settings
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


# The project's tests use the kit plugin authors get (connector.testing, loaded through its
# pytest11 entry point), under the short names the tests were written with.

@pytest.fixture
def settings(connector_settings) -> Settings:
    return connector_settings


@pytest.fixture
def make_host(connector_make_host):
    """Build a Host for this test's database; ``extra_plugins`` registers test plugins."""
    return connector_make_host


@pytest.fixture
def host(connector_host) -> Host:
    return connector_host


@pytest.fixture
def sandbox_server(connector_sandbox_server):
    return connector_sandbox_server


@pytest.fixture
def sandbox(connector_sandbox):
    return connector_sandbox


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
