"""Build the plugin manager and the catalog of apps, triggers and actions.

Everything, bundled plugins included, loads from the ``connector`` entry point group; nothing
loads at import time. CONNECTOR_LOAD_PLUGINS (an allow-list of entry point names) and
CONNECTOR_BLOCK_PLUGINS (a block-list) choose what loads. A plugins directory (`connector
serve --plugins-dir DIR`) adds one plugin per ``*.py`` file in it, named ``dir:<file stem>``,
after the entry points; the block-list applies to those names too.
"""
from __future__ import annotations

import importlib.util
import sys
import types
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pluggy
from marshmallow import Schema

from . import hookspecs
from .errors import NotFound, PluginError
from .sdk import Action, App, Search, Trigger

GROUP = "connector"


def make_manager(load: list[str] | None = None, block: list[str] | None = None,
                 extra: list[object] | None = None,
                 plugins_dir: str | Path | None = None) -> pluggy.PluginManager:
    """Return a plugin manager holding the entry-point plugins (filtered), the modules of
    ``plugins_dir`` and ``extra`` ones."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    for name in block or []:
        pm.set_blocked(name)
    for ep in metadata.entry_points(group=GROUP):
        if pm.is_blocked(ep.name) or pm.has_plugin(ep.name):
            continue
        if load is not None and ep.name not in load:
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken third-party package must be named, not crash us
            raise PluginError(f"plugin {ep.name} ({ep.value}) failed to import: {exc}") from exc
        pm.register(plugin, name=ep.name)
    if plugins_dir is not None:
        for name, path in directory_plugins(plugins_dir):
            if not pm.is_blocked(name):
                pm.register(load_file_plugin(name, path), name=name)
    for plugin in extra or []:
        pm.register(plugin)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) or repr(exc.plugin)
        raise PluginError(f"plugin {name}: {exc} (the hooks are listed in "
                          "connector/hookspecs.py)") from exc
    return pm


def directory_plugins(directory: str | Path) -> list[tuple[str, Path]]:
    """Return ``(dir:<stem>, path)`` for every ``*.py`` file in ``directory``, by name."""
    root = Path(directory)
    if not root.is_dir():
        raise PluginError(f"plugins directory {directory} does not exist or is not a directory")
    return [(f"dir:{path.stem}", path) for path in sorted(root.glob("*.py")) if path.is_file()]


def load_file_plugin(name: str, path: Path):
    """Import one plugin file as a fresh module; PluginError names the file on any failure."""
    module_name = "connector_dir_" + "".join(c if c.isalnum() else "_" for c in path.stem)
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and the catalog page look modules up here
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a syntax error or a missing import is the author's to fix
        sys.modules.pop(module_name, None)
        reason = " ".join(f"{exc.__class__.__name__}: {exc}".split())
        raise PluginError(f"plugin {name} ({path}) failed to import: {reason}") from exc
    return module


@dataclass
class Entry:
    kind: str
    key: str
    cls: type
    plugin: str
    module: str = ""  # the registering plugin's module (the class's own for an object plugin)


@dataclass
class Catalog:
    """The registry: every app, trigger and action, with the plugin that registered it."""

    apps: dict[str, Entry] = field(default_factory=dict)
    triggers: dict[str, Entry] = field(default_factory=dict)
    actions: dict[str, Entry] = field(default_factory=dict)
    searches: dict[str, Entry] = field(default_factory=dict)

    def app(self, key: str) -> App:
        return self._get(self.apps, "app", key)()

    def trigger(self, key: str) -> Trigger:
        return self._get(self.triggers, "trigger", key)()

    def action(self, key: str) -> Action:
        """Return the action or search ``key`` (both can be flow steps)."""
        if key in self.searches:
            return self.searches[key].cls()
        return self._get(self.actions, "action", key)()

    def search(self, key: str) -> Search:
        return self._get(self.searches, "search", key)()

    @staticmethod
    def _get(table: dict, kind: str, key: str):
        entry = table.get(key)
        if entry is None:
            known = ", ".join(sorted(table)) or "none"
            raise NotFound(f"unknown {kind} {key!r}; known: {known}")
        return entry.cls

    def entries(self) -> list[Entry]:
        return [*self.apps.values(), *self.triggers.values(), *self.actions.values(),
                *self.searches.values()]

    def describe(self) -> list[dict]:
        """Return the JSON-able listing `connector plugins --json` prints."""
        rows = []
        for entry in self.entries():
            cls = entry.cls
            row = {"kind": entry.kind, "key": entry.key,
                   "app": entry.key if entry.kind == "app" else cls.app,
                   "label": cls.label, "help": cls.help, "plugin": entry.plugin}
            if entry.kind == "app":
                row["credentials"] = describe_schema(cls.Credentials)
                row["base_url"] = cls.base_url or None
            if entry.kind == "trigger":
                row["type"] = cls.kind
            if entry.kind != "app":
                row["inputs"] = describe_schema(cls.Inputs)
            rows.append(row)
        return rows


def describe_schema(schema_cls: type[Schema]) -> list[dict]:
    """List a marshmallow schema's fields with label, help, required and secret flags."""
    fields_ = []
    for name, fld in schema_cls().fields.items():
        meta = fld.metadata
        row = {"name": fld.data_key or name, "type": fld.__class__.__name__,
               "required": fld.required, "label": meta.get("label", name),
               "help": meta.get("help", ""), "secret": bool(meta.get("secret"))}
        if meta.get("choices_from"):
            row["choices_from"] = meta["choices_from"]
        choices = _choices(fld)
        if choices:
            row["choices"] = choices
        fields_.append(row)
    return fields_


def _choices(fld) -> list | None:
    """Return the fixed choices a field's OneOf/ContainsOnly validator allows, if any."""
    from marshmallow import fields as mfields, validate

    inner = fld.inner if isinstance(fld, mfields.List) else fld
    for validator in inner.validators:
        if isinstance(validator, (validate.OneOf, validate.ContainsOnly)):
            return list(validator.choices)
    return None


def build_catalog(pm: pluggy.PluginManager) -> Catalog:
    """Call the register hooks and return the catalog, refusing duplicates and orphans."""
    catalog = Catalog()

    def registrar(kind: str, table: dict, base: type, plugin_name: str, plugin: object):
        def register(cls):
            if not (isinstance(cls, type) and issubclass(cls, base)) or (
                    kind == "action" and issubclass(cls, Search)):
                raise PluginError(f"plugin {plugin_name} registered {cls!r} as {kind}, "
                                  f"which is not a {base.__name__} subclass")
            if not cls.key:
                raise PluginError(f"plugin {plugin_name}: {kind} {cls.__name__} has no key")
            if cls.key in table:
                raise PluginError(f"{kind} key {cls.key!r} is registered by both plugin "
                                  f"{table[cls.key].plugin} and plugin {plugin_name}")
            module = plugin.__name__ if isinstance(plugin, types.ModuleType) else cls.__module__
            table[cls.key] = Entry(kind, cls.key, cls, plugin_name, module)
        return register

    for hook, kind, table, base in (("register_apps", "app", catalog.apps, App),
                                    ("register_triggers", "trigger", catalog.triggers, Trigger),
                                    ("register_actions", "action", catalog.actions, Action),
                                    ("register_searches", "search", catalog.searches, Search)):
        caller = getattr(pm.hook, hook)
        for impl in caller.get_hookimpls():
            impl.function(registrar(kind, table, base, impl.plugin_name, impl.plugin))
    for key in set(catalog.actions) & set(catalog.searches):
        raise PluginError(f"step key {key!r} is registered as an action by plugin "
                          f"{catalog.actions[key].plugin} and as a search by plugin "
                          f"{catalog.searches[key].plugin}")
    for entry in [*catalog.triggers.values(), *catalog.actions.values(),
                  *catalog.searches.values()]:
        if entry.cls.app not in catalog.apps:
            raise PluginError(f"{entry.kind} {entry.key} (plugin {entry.plugin}) names app "
                              f"{entry.cls.app!r}, which no plugin registers")
        for fname, fld in entry.cls.Inputs().fields.items():
            source = fld.metadata.get("choices_from")
            if source and source not in catalog.searches:
                raise PluginError(f"{entry.kind} {entry.key} (plugin {entry.plugin}): input "
                                  f"{fname} takes its choices from {source!r}, which is not a "
                                  "registered search")
    return catalog
