"""The plugin developer's commands: ``plugins`` (list, check), ``invoke``, ``plugin new``.

The checks and the one-off invocations live here as plain functions too, because the
``connector.testing`` standard suite runs exactly what ``connector plugins check`` runs, and
its ``invoke_trigger`` / ``invoke_action`` fixtures call what ``connector invoke`` calls.
"""
from __future__ import annotations

import json
import re
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path

import click

from .config import Settings
from .errors import NotFound, PluginError, UserError

APP_KEY = re.compile(r"^[a-z][a-z0-9_]*$")
COMPONENT_KEY = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
SECRET_NAME = re.compile(r"key|secret|token|password", re.I)
METADATA = {"label", "help", "secret", "choices_from"}
SEARCH_OUTPUT = ("found", "count", "first", "results")


# -- the checks ----------------------------------------------------------------------------------

def check_catalog(catalog, pm=None, plugins: set[str] | None = None) -> list[str]:
    """Return one line per problem in the catalog's components (only ``plugins``' if given).

    What is checked: keys well formed; label and help present; schemas that instantiate and
    load; field metadata known and labelled; secret-looking credentials marked secret; a
    sample that is a non-empty JSON-able dict the trigger can key (a search's in the output
    shape); the methods of each kind overridden (a webhook's subscribe/unsubscribe, or
    manual_setup, and a verify that is not the refusing default); choices_from naming a
    search; and, given the plugin manager, plugins that register nothing.
    """
    problems: list[str] = []
    for entry in catalog.entries():
        if plugins is not None and entry.plugin not in plugins:
            continue
        where = f"{entry.kind} {entry.key} (plugin {entry.plugin})"
        for problem in check_component(entry.kind, entry.cls, catalog):
            problems.append(f"{where}: {problem}")
    if pm is not None:
        used = {entry.plugin for entry in catalog.entries()}
        for name, plugin in pm.list_name_plugin():
            if plugin is None or (plugins is not None and name not in plugins):
                continue
            if name not in used:
                problems.append(f"plugin {name}: registers no app, trigger, action or search "
                                "(is a @hookimpl missing?)")
    return problems


def check_component(kind: str, cls: type, catalog=None) -> list[str]:
    """Return the problems of one registered class (an App, Trigger, Action or Search)."""
    from .sdk import Action, PollTrigger, ScheduleTrigger, Search, Trigger, WebhookTrigger

    problems = []
    if kind == "app":
        if not APP_KEY.match(cls.key):
            problems.append(f"key {cls.key!r}: expected lowercase letters, digits and '_'")
    elif not COMPONENT_KEY.match(cls.key):
        problems.append(f"key {cls.key!r}: expected dotted lowercase names, e.g. "
                        f"{cls.app or 'myapp'}.new_item")
    for attr in ("label", "help"):
        value = getattr(cls, attr, None)
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{attr} is empty: give a short {attr} for listings and the UI")
    if kind == "app":
        problems += _check_schema(cls, "Credentials", credentials=True, catalog=catalog)
        base = cls.base_url
        if base and not re.match(r"^[a-z][a-z0-9+.-]*://", base):
            problems.append(f"base_url {base!r}: expected a URL (https://..., or a scheme "
                            "naming the protocol of an app that does not speak HTTP)")
        if not (isinstance(cls.timeout, (int, float)) and cls.timeout > 0):
            problems.append(f"timeout {cls.timeout!r}: expected seconds above 0")
        from .sdk import App

        try:
            has_credentials = bool(cls.Credentials().fields)
        except Exception:  # already reported by _check_schema
            has_credentials = False
        if has_credentials and cls.test is App.test:
            problems.append("has credentials but no test(): `connector connections test` "
                            "cannot check them")
        return problems
    problems += _check_schema(cls, "Inputs", credentials=False, catalog=catalog)
    problems += _check_sample(kind, cls)
    if kind == "trigger":
        if not isinstance(cls.kind, str) or not cls.kind:
            problems.append("kind is empty: subclass PollTrigger, WebhookTrigger or "
                            "ScheduleTrigger, not Trigger")
        ttl = cls.dedupe_ttl
        if ttl is not None and not (isinstance(ttl, int) and ttl > 0):
            problems.append(f"dedupe_ttl {ttl!r}: expected seconds above 0, or None (forever)")
        if issubclass(cls, PollTrigger):
            if cls.poll is PollTrigger.poll:
                problems.append("poll() is not written")
            interval = cls.default_interval
            if not (isinstance(interval, int) and 5 <= interval <= 86400):
                problems.append(f"default_interval {interval!r}: expected 5 to 86400 seconds")
        elif issubclass(cls, WebhookTrigger):
            if not cls.manual_setup and (cls.subscribe is WebhookTrigger.subscribe or
                                         cls.unsubscribe is WebhookTrigger.unsubscribe):
                problems.append("subscribe() and unsubscribe() are not both written: write "
                                "them, or set manual_setup = True if the user pastes the URL")
            if cls.verify is WebhookTrigger.verify:
                problems.append("verify() is the default, which refuses every request: say "
                                "how a request is authenticated")
        elif issubclass(cls, ScheduleTrigger):
            if cls.schedule is ScheduleTrigger.schedule:
                problems.append("schedule() is not written")
        elif not issubclass(cls, Trigger):
            problems.append("is not a Trigger subclass")
    elif kind == "search":
        if cls.search is Search.search:
            problems.append("search() is not written")
    elif kind == "action":
        if cls.run is Action.run and cls.control != "paths":  # the engine runs paths' branches
            problems.append("run() is not written")
        if cls.control not in (None, "loop", "paths"):
            problems.append(f"control {cls.control!r}: expected None, 'loop' or 'paths'")
    return problems


def _check_schema(cls, attr: str, credentials: bool, catalog) -> list[str]:
    from marshmallow import Schema, ValidationError

    schema_cls = getattr(cls, attr, None)
    if not (isinstance(schema_cls, type) and issubclass(schema_cls, Schema)):
        return [f"{attr} is {schema_cls!r}, expected a marshmallow Schema class"]
    try:
        schema = schema_cls()
    except Exception as exc:
        return [f"{attr} does not instantiate: {exc.__class__.__name__}: {exc}"]
    problems = []
    for name, fld in schema.fields.items():
        shown = fld.data_key or name
        meta = fld.metadata
        unknown = sorted(set(meta) - METADATA)
        if unknown:
            problems.append(f"{attr}.{shown}: unknown metadata {', '.join(unknown)} (the host "
                            f"reads {', '.join(sorted(METADATA))})")
        if not isinstance(meta.get("label"), str) or not meta.get("label").strip():
            problems.append(f"{attr}.{shown}: no label in metadata")
        if "help" in meta and not isinstance(meta["help"], str):
            problems.append(f"{attr}.{shown}: help must be text")
        if "secret" in meta and not isinstance(meta["secret"], bool):
            problems.append(f"{attr}.{shown}: secret must be True or False")
        if credentials and SECRET_NAME.search(shown) and meta.get("secret") is not True:
            problems.append(f"{attr}.{shown}: looks like a secret; mark it "
                            "metadata={'secret': True}")
        source = meta.get("choices_from")
        if source is not None and catalog is not None and source not in catalog.searches:
            problems.append(f"{attr}.{shown}: choices_from {source!r} is not a registered "
                            "search")
    try:
        schema.load({})
    except ValidationError:
        pass  # required fields missing: expected
    except Exception as exc:
        problems.append(f"{attr} fails to load empty inputs with {exc.__class__.__name__}: "
                        f"{exc} (a validator assumes a field that may be absent)")
    return problems


def _check_sample(kind: str, cls) -> list[str]:
    sample = cls.sample
    noun = "item" if kind == "trigger" else "output"
    if not isinstance(sample, dict) or not sample:
        return [f"sample is empty: give an example {noun} (a dict) for the docs and for "
                "mapping fields in the UI"]
    try:
        json.dumps(sample)
    except (TypeError, ValueError) as exc:
        return [f"sample is not JSON-able: {exc}"]
    problems = []
    if kind == "trigger":
        try:
            key = cls().dedupe_key(dict(sample))
        except Exception as exc:
            return [f"dedupe_key(sample) fails with {exc.__class__.__name__}: {exc}"]
        if not isinstance(key, str) or not key:
            problems.append(f"dedupe_key(sample) returned {key!r}, expected non-empty text")
    elif kind == "search":
        missing = [k for k in SEARCH_OUTPUT if k not in sample]
        if missing:
            problems.append(f"sample lacks {', '.join(missing)}: a search's output is "
                            "found, count, first and results")
        elif not isinstance(sample["results"], list) or sample["count"] != len(
                sample["results"]):
            problems.append("sample count does not match its results")
        else:
            for record in sample["results"][:1]:
                try:
                    option = cls().option(record)
                except Exception as exc:
                    problems.append(f"option(sample result) fails with "
                                    f"{exc.__class__.__name__}: {exc}")
                    continue
                if not (isinstance(option, dict) and "value" in option and "label" in option):
                    problems.append("option(record) must return {'value', 'label'}")
    return problems


def select_plugins(pm, wanted: str) -> set[str]:
    """Return the plugin names ``wanted`` means: a plugin name, or a distribution's name."""
    from importlib import metadata

    from .registry import GROUP

    loaded = {name for name, plugin in pm.list_name_plugin() if plugin is not None}
    if wanted in loaded:
        return {wanted}
    norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
    by_dist = {ep.name for ep in metadata.entry_points(group=GROUP)
               if ep.dist is not None and norm(ep.dist.name) == norm(wanted)}
    if by_dist & loaded:
        return by_dist & loaded
    raise NotFound(f"no plugin or package named {wanted!r} is loaded; loaded plugins: "
                   f"{', '.join(sorted(loaded)) or 'none'}")


# -- invoking one trigger or action --------------------------------------------------------------

@dataclass
class TriggerResult:
    """What one poll (or one parsed request) produced: items, their dedupe keys, the cursor."""

    items: list[dict]
    keys: list[str]
    state: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"items": [{"dedupe_key": key, "item": item}
                          for key, item in zip(self.keys, self.items)], "state": self.state}


def _load_inputs(cls, inputs: dict | None, what: str) -> dict:
    from marshmallow import ValidationError

    from .host import validation_message

    try:
        return cls.Inputs().load(dict(inputs or {}))
    except ValidationError as err:
        raise UserError(f"{what}: {validation_message(err)}") from None


def _client(host, connection: str | None, cls, what: str):
    if connection is None:
        app = host.catalog.app(cls.app)
        if app.Credentials().fields and getattr(cls, "needs_connection", True):
            raise UserError(f"{what}: give --connection NAME (a connection of app {cls.app})")
        return None
    conn = host.connection(connection)
    if conn.app != cls.app and not getattr(cls, "any_connection", False):
        raise UserError(f"{what}: connection {connection!r} is for app {conn.app}, "
                        f"expected {cls.app}")
    return host.client(conn)


def run_trigger(host, key: str, connection: str | None = None, inputs: dict | None = None,
                state: dict | None = None, request=None, subscription: dict | None = None,
                now=None, count: int = 3) -> TriggerResult:
    """Run trigger ``key`` once, outside any flow, and return its items with their keys.

    A poll trigger polls once (``state`` is the cursor it starts from). A webhook trigger
    parses ``request`` (a WebhookRequest), verifying it first when ``subscription`` is given.
    A schedule trigger returns its next ``count`` firings after ``now``.
    """
    import datetime as dt

    from .sdk import PollTrigger, ScheduleTrigger, TriggerContext, WebhookTrigger

    trigger = host.catalog.trigger(key)
    what = f"trigger {key}"
    loaded = _load_inputs(type(trigger), inputs, what)
    ctx = TriggerContext(flow_name=f"invoke:{key}", inputs=loaded, state=dict(state or {}))
    if isinstance(trigger, WebhookTrigger):
        if request is None:
            raise UserError(f"{what} receives webhooks: give a request body to parse "
                            "(connector invoke --body FILE)")
        if subscription is not None:
            trigger.verify(ctx, request, subscription)
        items = trigger.parse(ctx, request)
        keys = [trigger.request_dedupe_key(item, request) for item in items]
        keys = [f"{k}#{i}" if len(items) > 1 else k for i, k in enumerate(keys)]
        return TriggerResult(list(items), keys, ctx.state)
    if isinstance(trigger, ScheduleTrigger):
        start = now or dt.datetime.now(dt.timezone.utc)
        times: list = []
        aps = trigger.schedule(loaded)
        nxt = aps.get_next_fire_time(None, start)
        while nxt is not None and len(times) < count:
            times.append(nxt)
            nxt = aps.get_next_fire_time(nxt, nxt + dt.timedelta(microseconds=1))
        items = [trigger.item(ctx, t) for t in times]
        return TriggerResult(items, [trigger.dedupe_key(i) for i in items], ctx.state)
    if not isinstance(trigger, PollTrigger):
        raise UserError(f"{what} is fed by the host ({trigger.kind} trigger): there is "
                        "nothing to poll")
    ctx.client = _client(host, connection, type(trigger), what)
    try:
        items = trigger.poll(ctx)
    finally:
        if ctx.client is not None:
            ctx.client.close()
    items = list(items or [])
    for item in items:
        if not isinstance(item, dict):
            raise PluginError(f"{what}: poll() returned {type(item).__name__}, expected dicts")
    return TriggerResult(items, [trigger.dedupe_key(item) for item in items], ctx.state)


def run_action(host, key: str, connection: str | None = None, inputs: dict | None = None,
               idempotency_key: str | None = None, progress=None) -> dict:
    """Run action or search ``key`` once, outside any flow, and return its output.

    ``ctx.once`` goes through the host's idempotency ledger under ``idempotency_key``
    (random when not given): invoking twice with the same key and inputs repeats nothing.
    ``progress(done, total)`` receives what the action reports with ``ctx.progress``.
    """
    from .ledger import once
    from .sdk import ActionContext

    action = host.catalog.action(key)
    what = f"action {key}"
    if action.control:
        raise UserError(f"{what} is a {action.control} step: it only means something inside "
                        "a flow")
    loaded = _load_inputs(type(action), inputs, what)
    idem = idempotency_key or secrets.token_hex(20)
    client = (_client(host, connection, type(action), what)
              if action.needs_connection or connection else None)
    ctx = ActionContext(flow_name=f"invoke:{key}", run_id=0, step_name=key,
                        idempotency_key=idem, client=client,
                        once=lambda k, request, call: once(action.key, k, request, call,
                                                           None, key),
                        on_progress=progress)
    try:
        output = action.run(ctx, loaded)
    finally:
        if client is not None:
            client.close()
    if output is None:
        return {}
    if not isinstance(output, dict):
        raise PluginError(f"{what} returned {type(output).__name__}, expected a mapping")
    return output


# -- commands ------------------------------------------------------------------------------------

plugins_dir_option = click.option(
    "--plugins-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None, envvar="CONNECTOR_PLUGINS_DIR",
    help="Also load every *.py in this directory as a plugin (named dir:<file stem>).")


def _catalog(plugins_dir):
    from .registry import build_catalog, make_manager

    settings = Settings.from_env()
    pm = make_manager(settings.load_plugins, settings.block_plugins, plugins_dir=plugins_dir)
    return pm, build_catalog(pm)


def host_for(ctx: click.Context, plugins_dir):
    """Return the command's Host (the configured database), seeing ``plugins_dir`` too."""
    from .host import Host

    obj = ctx.ensure_object(dict)
    if "host" not in obj:
        settings = Settings.from_env()
        if plugins_dir is None:
            host = Host(settings)
        else:
            pm, catalog = _catalog(plugins_dir)
            host = Host(settings, catalog=catalog)
            host.pm = pm
        obj["host"] = host
        ctx.call_on_close(host.close)
    return obj["host"]


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.option("--markdown", is_flag=True, help="Print the catalog page (docs/catalog.md).")
@plugins_dir_option
@click.pass_context
def plugins(ctx, as_json, markdown, plugins_dir):
    """List the loaded apps, triggers, actions and searches, and who registered each.

    `connector plugins check` validates them.
    """
    ctx.ensure_object(dict)["plugins_dir"] = plugins_dir
    if ctx.invoked_subcommand is not None:
        return
    _pm, catalog = _catalog(plugins_dir)
    if markdown:
        from .catalog_doc import render_markdown

        click.echo(render_markdown(catalog), nl=False)
        return
    rows = catalog.describe()
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    width = max((len(row["key"]) for row in rows), default=0)
    for row in rows:
        extra = f" ({row['type']})" if row.get("type") else ""
        click.echo(f"{row['kind']:<8} {row['key']:<{width}} {row['label']}{extra}  "
                   f"[plugin {row['plugin']}]")


@plugins.command("check")
@click.argument("plugin", required=False)
@plugins_dir_option
@click.pass_context
def plugins_check(ctx, plugin, plugins_dir):
    """Validate every registered app, trigger, action and search (or PLUGIN's only).

    PLUGIN is a plugin name (an entry point name, or dir:<stem>) or an installed package's
    name. Each problem is one line; the exit status is 1 when there is any.
    """
    from .registry import build_catalog, make_manager

    plugins_dir = plugins_dir or ctx.obj.get("plugins_dir")
    settings = Settings.from_env()
    pm = make_manager(settings.load_plugins, settings.block_plugins, plugins_dir=plugins_dir)
    try:
        catalog = build_catalog(pm)
    except PluginError as exc:  # a duplicate key or an orphan: the build itself refuses
        click.echo(str(exc))
        sys.exit(1)
    wanted = select_plugins(pm, plugin) if plugin else None
    problems = check_catalog(catalog, pm, wanted)
    for line in problems:
        click.echo(line)
    entries = [e for e in catalog.entries() if wanted is None or e.plugin in wanted]
    counts = {kind: sum(1 for e in entries if e.kind == kind)
              for kind in ("app", "trigger", "action", "search")}
    plural = {"search": "searches"}
    summary = ", ".join(f"{n} {plural.get(kind, kind + 's') if n != 1 else kind}"
                        for kind, n in counts.items())
    if problems:
        click.echo(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in "
                   f"{summary}", err=True)
        sys.exit(1)
    click.echo(f"ok: {summary} checked")


def _pairs(pairs) -> dict:
    data = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UserError(f"--input {pair!r}: expected FIELD=VALUE")
        data[name] = value
    return data


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise UserError(f"{what} {path}: cannot read ({exc.strerror})") from None
    except ValueError as exc:
        raise UserError(f"{what} {path}: not valid JSON: {exc}") from None


@click.command()
@click.argument("key")
@click.option("--connection", default=None, help="The connection to use (by name).")
@click.option("--input", "pairs", multiple=True, metavar="FIELD=VALUE",
              help="An input value (repeat); overrides the same field in --json.")
@click.option("--json", "json_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="A JSON file holding the inputs as an object.")
@click.option("--state", "state_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="For a poll trigger: a JSON file holding the cursor.")
@click.option("--body", "body_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="For a webhook trigger: a request body to parse.")
@click.option("--content-type", default="application/json", show_default=True,
              help="For a webhook trigger: the body's content type.")
@click.option("--idempotency-key", default=None,
              help="For an action: the key ctx.once and the service see (random if not "
                   "given; repeat it to see the ledger answer instead of the service).")
@plugins_dir_option
@click.pass_context
def invoke(ctx, key, connection, pairs, json_file, state_file, body_file, content_type,
           idempotency_key, plugins_dir):
    """Run one trigger or action without a flow and print what it produced as JSON.

    A poll trigger polls once and prints its items with their dedupe keys (and the cursor);
    an action or search prints its output. Inputs are checked as a flow step's are.
    """
    from .errors import APIError, ConnectorError
    from .sdk import WebhookRequest

    inputs = {}
    if json_file is not None:
        inputs = _read_json(json_file, "--json")
        if not isinstance(inputs, dict):
            raise UserError(f"--json {json_file}: expected a JSON object of inputs")
    inputs.update(_pairs(pairs))
    host = host_for(ctx, plugins_dir)
    try:
        if key in host.catalog.triggers:
            state = _read_json(state_file, "--state") if state_file else None
            request = None
            if body_file is not None:
                try:
                    body = body_file.read_bytes()
                except OSError as exc:
                    raise UserError(f"--body {body_file}: cannot read ({exc.strerror})") from None
                request = WebhookRequest(headers={"Content-Type": content_type}, body=body,
                                         args={}, content_type=content_type)
            result = run_trigger(host, key, connection, inputs, state, request)
            click.echo(json.dumps(result.as_json(), indent=2, default=str))
            return
        if key not in host.catalog.actions and key not in host.catalog.searches:
            known = sorted({*host.catalog.triggers, *host.catalog.actions,
                            *host.catalog.searches})
            raise NotFound(f"no trigger, action or search {key!r}"
                           f"{_close(key, known)}")
        progress = ProgressLine(key, sys.stderr)
        try:
            output = run_action(host, key, connection, inputs, idempotency_key, progress)
        finally:
            progress.close()
    except APIError as exc:
        raise UserError(f"{key}: {exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, ConnectorError):
            raise
        raise UserError(f"{key}: {exc.__class__.__name__}: {exc}") from None
    click.echo(json.dumps(output, indent=2, default=str))


class ProgressLine:
    """Print an action's ``ctx.progress`` to ``stream``: one line each, or one line
    rewritten in place on a terminal."""

    def __init__(self, key: str, stream):
        self.key = key
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.open = False  # a terminal line is waiting for its end

    def __call__(self, done: int, total: int) -> None:
        share = f" ({100 * done // total}%)" if total > 0 else ""
        line = f"{self.key}: {done} of {total} done{share}"
        if self.tty:
            self.open = done < total
            self.stream.write("\r" + line + ("" if self.open else "\n"))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End a line left open on a terminal (the action stopped part way)."""
        if self.open:
            self.stream.write("\n")
            self.stream.flush()
            self.open = False


def _close(key: str, known: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, known, n=3)
    return f"; did you mean {', '.join(close)}?" if close else " (see: connector plugins)"


@click.group("plugin")
def plugin_group():
    """Start a new plugin package."""


@plugin_group.command("new")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              default=Path("."), show_default=True,
              help="Where to create the package's folder.")
def plugin_new(name, directory):
    """Write a pip-installable plugin package NAME: an app, a poll trigger, an action, tests.

    NAME is the service's short name (e.g. acme or acme-crm); the package is
    connector-NAME, its module connector_NAME and its app key NAME (with '_' for '-').
    """
    from .scaffold import create

    target = create(name, directory)
    click.echo(f"created {target}")
    click.echo("next:")
    click.echo(f"  cd {target}")
    click.echo("  pip install -e '.[test]'")
    click.echo("  pytest")
    click.echo("  connector plugins check " + target.name)
