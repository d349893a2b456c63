"""The plugin registry: entry points only, conflicts named, typos caught, allow/block lists,
and meta-tests that every hook is documented and every bundled component is complete.

Test plugins are small classes defined here and handed to one manager (make_manager(extra=)
or make_host(extra_plugins=)); they never reach any other manager, so nothing leaks.
"""
from __future__ import annotations

import inspect
import re
from importlib import metadata
from pathlib import Path

import pluggy
import pytest
from marshmallow import Schema, fields

from connector import Action, App, PollTrigger, WebhookTrigger, hookimpl
from connector import hookspecs
from connector.config import Settings
from connector.errors import PluginError
from connector.registry import GROUP, build_catalog, make_manager
from connector.sdk import Trigger

ROOT = Path(__file__).resolve().parent.parent
HOOK_NAMES = sorted(name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
                    if hasattr(fn, "connector_spec"))
BUNDLED_EPS = {ep.name: ep for ep in metadata.entry_points(group=GROUP)
               if ep.value.startswith("connector.")}


def bundled_catalog():
    return build_catalog(make_manager(load=None, block=[]))


# -- small plugins --------------------------------------------------------------------------------

class SamoraAgain(App):
    key = "samora"
    label = "Another Samora"


class DuplicateAppPlugin:
    @staticmethod
    @hookimpl
    def register_apps(register):
        register(SamoraAgain)


class CallFinishedAgain(WebhookTrigger):
    key = "samora.call_finished"
    app = "samora"
    label = "Call finished, again"


class DuplicateTriggerPlugin:
    @staticmethod
    @hookimpl
    def register_triggers(register):
        register(CallFinishedAgain)


class TriggerCallAgain(Action):
    key = "samora.trigger_call"
    app = "samora"
    label = "Trigger call, again"


class DuplicateActionPlugin:
    @staticmethod
    @hookimpl
    def register_actions(register):
        register(TriggerCallAgain)


class OrphanTrigger(PollTrigger):
    key = "ghostapp.new_thing"
    app = "ghostapp"
    label = "New thing"


class OrphanTriggerPlugin:
    @staticmethod
    @hookimpl
    def register_triggers(register):
        register(OrphanTrigger)


class NotAnAction:
    key = "weather.forecast"
    app = "samora"
    label = "Not an Action subclass"


class NotSubclassPlugin:
    @staticmethod
    @hookimpl
    def register_actions(register):
        register(NotAnAction)


class MisspelledHookPlugin:
    @staticmethod
    @hookimpl
    def register_action(register):  # singular: no such hook
        register(TriggerCallAgain)


class EchoApp(App):
    key = "echo"
    label = "Echo"


class Echo(Action):
    key = "echo.say"
    app = "echo"
    label = "Say"
    needs_connection = False


class EchoPlugin:
    @staticmethod
    @hookimpl
    def register_apps(register):
        register(EchoApp)

    @staticmethod
    @hookimpl
    def register_actions(register):
        register(Echo)


# -- conflicts and mistakes -----------------------------------------------------------------------

def test_an_extra_plugin_is_registered_beside_the_bundled_ones(make_host):
    host = make_host(extra_plugins=[EchoPlugin])
    assert host.catalog.apps["echo"].plugin == "EchoPlugin"
    assert host.catalog.actions["echo.say"].cls is Echo
    assert "samora.trigger_call" in host.catalog.actions
    assert "echo.say" not in bundled_catalog().actions  # nothing leaks into a new manager


def test_duplicate_app_key_names_both_plugins(make_host):
    with pytest.raises(PluginError) as info:
        make_host(extra_plugins=[DuplicateAppPlugin])
    message = str(info.value)
    assert "'samora'" in message
    assert "plugin samora " in message + " "
    assert "plugin DuplicateAppPlugin" in message


@pytest.mark.parametrize("plugin, key, owner", [
    (DuplicateTriggerPlugin, "samora.call_finished", "samora_triggers"),
    (DuplicateActionPlugin, "samora.trigger_call", "samora_actions"),
])
def test_duplicate_trigger_or_action_key_names_both_plugins(plugin, key, owner):
    with pytest.raises(PluginError) as info:
        build_catalog(make_manager(extra=[plugin]))
    message = str(info.value)
    assert repr(key) in message
    assert owner in message
    assert plugin.__name__ in message


def test_a_trigger_for_an_unregistered_app_is_refused():
    with pytest.raises(PluginError) as info:
        build_catalog(make_manager(extra=[OrphanTriggerPlugin]))
    message = str(info.value)
    assert "ghostapp" in message
    assert "ghostapp.new_thing" in message
    assert "OrphanTriggerPlugin" in message


class AppAsTriggerPlugin:
    @staticmethod
    @hookimpl
    def register_triggers(register):
        register(EchoApp)


def test_registering_an_app_as_a_trigger_is_refused():
    with pytest.raises(PluginError) as info:
        build_catalog(make_manager(extra=[AppAsTriggerPlugin]))
    assert "AppAsTriggerPlugin" in str(info.value) and "Trigger" in str(info.value)


def test_registering_something_that_is_not_a_subclass_is_refused():
    with pytest.raises(PluginError) as info:
        build_catalog(make_manager(extra=[NotSubclassPlugin]))
    message = str(info.value)
    assert "NotSubclassPlugin" in message
    assert "Action" in message


def test_a_component_without_a_key_is_refused():
    class Keyless(Action):
        app = "samora"

    class KeylessPlugin:
        @staticmethod
        @hookimpl
        def register_actions(register):
            register(Keyless)

    with pytest.raises(PluginError, match="Keyless"):
        build_catalog(make_manager(extra=[KeylessPlugin]))


def test_a_misspelled_hook_is_an_error():
    with pytest.raises(Exception) as info:
        make_manager(extra=[MisspelledHookPlugin])
    # pluggy's check_pending() finds it; the host may wrap it in PluginError, keeping the cause.
    error = info.value
    cause = error if isinstance(error, pluggy.PluginValidationError) else error.__cause__
    assert isinstance(cause, pluggy.PluginValidationError), repr(error)
    assert isinstance(error, (pluggy.PluginValidationError, PluginError))
    assert "register_action" in str(error)


def test_an_installed_plugin_loads_under_its_entry_point_name(install_plugin):
    install_plugin("reg_echo_plugin", inspect.getsource(EchoApp).join(
        ["from connector import App, hookimpl\n\n\n",
         "\n\n@hookimpl\ndef register_apps(register):\n    register(EchoApp)\n"]))
    catalog = build_catalog(make_manager())
    assert catalog.apps["echo"].plugin == "reg_echo_plugin"
    assert "echo" not in build_catalog(make_manager(block=["reg_echo_plugin"])).apps


def test_an_installed_plugin_that_fails_to_import_is_named(install_plugin):
    install_plugin("reg_broken_plugin", "import connector_no_such_dependency\n")
    with pytest.raises(PluginError) as info:
        make_manager()
    assert "reg_broken_plugin" in str(info.value)
    assert "connector_no_such_dependency" in str(info.value)


# -- allow and block lists ------------------------------------------------------------------------

def test_block_plugins_removes_what_the_plugin_registered():
    settings = Settings.from_env(env={"CONNECTOR_BLOCK_PLUGINS": "samora_actions"})
    assert settings.block_plugins == ["samora_actions"]
    pm = make_manager(settings.load_plugins, settings.block_plugins)
    catalog = build_catalog(pm)
    assert "samora.trigger_call" not in catalog.actions
    assert not pm.has_plugin("samora_actions")
    assert "samora" in catalog.apps
    assert "samora.call_finished" in catalog.triggers
    assert "aiconnector.grant_credits" in catalog.actions


def test_block_plugins_in_the_environment_reaches_the_host(monkeypatch, settings):
    from connector.host import Host

    monkeypatch.setenv("CONNECTOR_BLOCK_PLUGINS", "samora_actions, aiconnector_actions")
    blocked = Settings.from_env(database_url=settings.database_url,
                                secret_key=settings.secret_key)
    host = Host(blocked)
    try:
        assert "samora.trigger_call" not in host.catalog.actions
        assert "aiconnector.grant_credits" not in host.catalog.actions
        assert "samora.call_finished" in host.catalog.triggers
    finally:
        host.close()


def test_load_plugins_loads_only_those():
    settings = Settings.from_env(env={"CONNECTOR_LOAD_PLUGINS": "samora,samora_actions"})
    pm = make_manager(settings.load_plugins, settings.block_plugins)
    assert {name for name, plugin in pm.list_name_plugin() if plugin is not None} == {
        "samora", "samora_actions"}
    catalog = build_catalog(pm)
    assert set(catalog.apps) == {"samora"}
    assert "samora.trigger_call" in catalog.actions
    assert {entry.cls.app for entry in catalog.actions.values()} == {"samora"}
    assert catalog.triggers == {}


def test_load_plugins_without_the_app_names_the_missing_app():
    settings = Settings.from_env(env={"CONNECTOR_LOAD_PLUGINS": "samora_actions"})
    with pytest.raises(PluginError, match="'samora'"):
        build_catalog(make_manager(settings.load_plugins, settings.block_plugins))


# -- no private registration path -----------------------------------------------------------------

def test_every_bundled_component_comes_from_a_connector_entry_point():
    pm = make_manager(load=None, block=[])
    catalog = build_catalog(pm)
    all_eps = {ep.name: ep for ep in metadata.entry_points(group=GROUP)}
    assert {"contacts_api", "contacts_api_triggers", "samora", "samora_triggers",
            "samora_actions", "aiconnector", "aiconnector_triggers",
            "aiconnector_actions"} <= set(BUNDLED_EPS)
    # The manager holds entry-point plugins only, each under its entry point's name.
    for name, plugin in pm.list_name_plugin():
        assert name in all_eps, f"plugin {name} was registered outside the entry points"
        assert plugin.__name__ == all_eps[name].value, (name, plugin.__name__)
    # Every bundled app, trigger and action was registered by the entry point of its module.
    bundled = [e for e in catalog.entries() if e.cls.__module__.startswith("connector.")]
    assert {"samora", "samora.trigger_call", "contacts_api.new_contact"} <= {
        e.key for e in bundled}
    for entry in bundled:
        ep = BUNDLED_EPS.get(entry.plugin)
        assert ep is not None, f"{entry.kind} {entry.key} comes from no entry point"
        assert entry.module == ep.value, (entry.key, entry.module, ep.value)
        home = entry.cls.__module__  # the module itself, or a submodule of its package
        assert home == ep.value or home.startswith(ep.value + "."), (entry.key, home, ep.value)


def test_the_bundled_modules_install_under_the_connector_namespace():
    for ep in BUNDLED_EPS.values():
        assert ep.value.split(".")[1] in ("plugins", "triggers", "actions"), ep.value


# -- meta-tests: hooks documented -----------------------------------------------------------------

def test_hookspecs_are_found():
    assert {"register_apps", "register_triggers", "register_actions"} <= set(HOOK_NAMES)


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_every_hook_has_a_docstring(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook))
    assert doc and doc.strip(), f"hook {hook} has no docstring"


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_every_hook_is_documented_in_docs_plugins_md(hook):
    docs = ROOT / "docs" / "plugins.md"
    assert docs.exists(), "docs/plugins.md is missing"
    headings = re.findall(r"^###\s+(\w+)\(", docs.read_text(), re.M)
    assert hook in headings, f"docs/plugins.md has no '### {hook}(' section"


# -- meta-tests: bundled components complete ------------------------------------------------------

def _components():
    catalog = bundled_catalog()
    return [*catalog.triggers.values(), *catalog.actions.values(),
            *catalog.searches.values()]


@pytest.mark.parametrize("entry", _components(), ids=lambda e: e.key)
def test_every_bundled_trigger_action_and_search_is_complete(entry):
    cls = entry.cls
    base = Trigger if entry.kind == "trigger" else Action
    assert issubclass(cls, base)
    assert cls.key.startswith(cls.app + "."), cls.key
    assert isinstance(cls.label, str) and cls.label.strip()
    assert isinstance(cls.help, str) and cls.help.strip()
    assert isinstance(cls.sample, dict) and cls.sample, f"{cls.key} has no sample"
    schema = cls.Inputs()
    assert isinstance(schema, Schema)
    if entry.kind == "trigger":
        assert cls.kind in ("poll", "webhook", "schedule", "event")
        cls().dedupe_key(dict(cls.sample))  # the sample is an item the trigger can key


@pytest.mark.parametrize("app_key", ["contacts_api", "samora", "aiconnector"])
def test_app_credentials_mark_their_secrets(app_key):
    app = bundled_catalog().apps[app_key].cls
    assert app.label.strip() and app.help.strip()
    creds = app.Credentials().fields
    assert "api_key" in creds
    for name, fld in creds.items():
        looks_secret = re.search(r"key|secret|token|password", name, re.I)
        if looks_secret:
            assert fld.metadata.get("secret") is True, f"{app_key} credential {name} not secret"
        assert fld.metadata.get("label"), f"{app_key} credential {name} has no label"


def test_describe_flags_secret_credentials_only():
    from connector.registry import describe_schema

    class Creds(Schema):
        api_key = fields.String(metadata={"secret": True})
        org_id = fields.String()

    rows = {row["name"]: row for row in describe_schema(Creds)}
    assert rows["api_key"]["secret"] is True and rows["org_id"]["secret"] is False
