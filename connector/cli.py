"""The ``connector`` command: serve, demo, sandbox, plugins, connections, flows, runs.

A mistake a user can fix prints one line starting with ``error:`` and exits 1; only a bug in
the connector itself may print a traceback.
"""
from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path

import click
import yaml

from .config import Settings
from .errors import ConnectorError, PluginError, UserError


class Main(click.Group):
    """A click group that turns the connector's own errors into one clean line."""

    def main(self, *args, **kwargs):
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except click.UsageError as exc:  # click's own three-line usage errors, as one line
            hint = f" (see: {exc.ctx.command_path} --help)" if exc.ctx else ""
            click.echo(f"error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)
        if isinstance(result, int) and not isinstance(result, bool):
            sys.exit(result)
        return result

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (UserError, PluginError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except ConnectorError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


def _host(ctx: click.Context):
    obj = ctx.ensure_object(dict)
    if "host" not in obj:
        from .host import Host
        obj["host"] = Host(Settings.from_env())
        ctx.call_on_close(obj["host"].close)
    return obj["host"]


def _echo_json(value) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


@click.group(cls=Main)
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.version_option(package_name="connector")
def main(verbose: int) -> None:
    """Wire triggers in one service to actions in another: a self-hosted Zapier, in Python."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # urllib3 logs every request URL at DEBUG, and some services take the key in the query.
    logging.getLogger("urllib3").setLevel(logging.WARNING)


# -- serve, demo, sandbox ---------------------------------------------------------------------

@main.command()
@click.option("--host", "address", default=None, help="Address to bind (CONNECTOR_HOST).")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Port to bind (CONNECTOR_PORT, 8080).")
@click.option("--plugins-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, envvar="CONNECTOR_PLUGINS_DIR",
              help="Also load every *.py in this directory as a plugin (named dir:<stem>).")
@click.option("--role", type=click.Choice(["all", "web", "scheduler"]), default="all",
              show_default=True, help="web: receive and execute, never poll; scheduler: lead "
                                      "polls and schedules and execute, no HTTP.")
@click.option("--processes", type=click.IntRange(1, 64), default=1, show_default=True,
              envvar="CONNECTOR_PROCESSES",
              help="Serve and execute in this many forked processes sharing the port (one "
                   "per core uses every core; CONNECTOR_PROCESSES).")
@click.option("--receivers", type=click.IntRange(0, 63), default=None,
              envvar="CONNECTOR_SERVE_RECEIVERS",
              help="With --processes: how many only receive webhooks (default half); the "
                   "rest execute runs. 0: every process does both.")
@click.pass_context
def serve(ctx, address, port, plugins_dir, role, processes, receivers):
    """Receive webhooks, run polls and execute runs until interrupted."""
    from .cli_dev import host_for
    from .runtime import Runtime

    logging.getLogger("connector").setLevel(min(logging.getLogger().level, logging.INFO))
    host = host_for(ctx, plugins_dir)
    if processes > 1:
        if role == "scheduler":
            raise UserError("serve: --processes needs HTTP; run several --role scheduler "
                            "processes instead")
        from .prefork import serve as serve_processes

        try:
            serve_processes(host, processes, address, port, role, receivers)
        except OSError as exc:
            raise UserError(f"serve: {exc.strerror or exc}") from None
        return
    runtime = Runtime(host, role=role)

    def terminate(_signum, _frame):  # stop as cleanly on SIGTERM as on Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        runtime.serve_forever(address, port)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise UserError(f"serve: {exc.strerror or exc}") from None


@main.command()
@click.option("--keep", is_flag=True, help="Keep the temporary directory (database, logs).")
@click.option("--examples", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Folder of flow files (default: the bundled examples/flows).")
def demo(keep, examples):
    """Run the three example flows end to end against the bundled sandbox."""
    from .demo import run_demo

    sys.exit(run_demo(keep=keep, examples=examples))


@main.command()
@click.option("--host", "address", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8090, show_default=True)
@click.option("--call-delay", type=float, default=2.0, show_default=True,
              help="Seconds before a triggered Samora call finishes.")
def sandbox(address, port, call_delay):
    """Serve the offline emulators of the services on loopback."""
    from .sandbox import Sandbox

    box = Sandbox(call_delay=call_delay)

    def ready(root: str) -> None:
        click.echo(f"sandbox: serving on {root}; add its connections with:")
        for app, info in box.connections().items():
            fields = " ".join(f"--field {k}={v}" for k, v in info["credentials"].items())
            click.echo(f"  connector connections add {app.replace('_', '-')} --app {app} "
                       f"--base-url {info['base_url']} {fields}")

    try:
        box.serve_forever(address, port, on_ready=ready)
    except OSError as exc:
        raise UserError(f"sandbox: cannot listen on {address}:{port}: {exc}") from None


@main.command()
def keygen():
    """Print a new CONNECTOR_SECRET_KEY for encrypting credentials."""
    from .crypto import new_key

    click.echo(new_key())


# -- connections --------------------------------------------------------------------------------

@main.group()
def connections():
    """Add, list and test credentials for apps."""


def _fields(pairs) -> dict:
    data = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UserError(f"--field {pair!r}: expected NAME=VALUE")
        data[name] = value
    return data


@connections.command("add")
@click.argument("name")
@click.option("--app", "app_key", required=True, help="The app key, e.g. samora.")
@click.option("--field", "pairs", multiple=True, help="A credential as NAME=VALUE (repeat).")
@click.option("--base-url", default=None, help="Override the service's base URL.")
@click.option("--replace", is_flag=True, help="Overwrite a connection of the same name.")
@click.option("--rate-limit", default=None, metavar="N/SECONDS",
              help="Requests allowed per window across all workers, e.g. 100/60, 100/min, "
                   "5/s; 'off' for none; default: the app's documented limit.")
@click.pass_context
def connections_add(ctx, name, app_key, pairs, base_url, replace, rate_limit):
    """Store a connection (credentials are encrypted at rest; prompted when missing)."""
    from . import throttle

    limit = throttle.parse(rate_limit, "--rate-limit") if rate_limit is not None else None
    host = _host(ctx)
    app = host.catalog.app(app_key)
    data = _fields(pairs)
    for fname, fld in app.Credentials().fields.items():
        key = fld.data_key or fname
        if key not in data and fld.required and sys.stdin.isatty():
            data[key] = click.prompt(fld.metadata.get("label", key),
                                     hide_input=bool(fld.metadata.get("secret")))
    conn = host.add_connection(name, app_key, data, base_url, replace=replace)
    if limit is not None:
        conn = throttle.set_override(conn, *limit)
    click.echo(f"connection {conn.name} ({conn.app}) saved")


@connections.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def connections_list(ctx, as_json):
    """List connections (never their secrets)."""
    from . import throttle
    from .store import Connection

    host = _host(ctx)
    rows = []
    for c in Connection.select().order_by(Connection.name):
        entry = host.catalog.apps.get(c.app)
        limit = throttle.effective(entry.cls, c) if entry is not None else None
        rows.append({"name": c.name, "app": c.app, "base_url": c.base_url,
                     "rate_limit": limit.describe() if limit else "off",
                     "rate_limit_source": "app" if c.rate_limit is None else "connection",
                     "created_at": c.created_at.isoformat()})
    if as_json:
        _echo_json(rows)
    for row in rows if not as_json else []:
        click.echo(f"{row['name']:<24} {row['app']:<16} {row['base_url'] or '(default URL)'}"
                   f"  rate limit {row['rate_limit']}")


@connections.command("test")
@click.argument("name")
@click.pass_context
def connections_test(ctx, name):
    """Call the service with the connection's credentials; show the service's own error."""
    from .errors import APIError

    host = _host(ctx)
    try:
        result = host.test_connection(name)
    except APIError as exc:
        raise UserError(f"connection {name} failed: {exc}") from None
    click.echo(f"connection {name}: ok {json.dumps(result, default=str)}")


# -- flows -------------------------------------------------------------------------------------

@main.group()
def flows():
    """Add flows from YAML files, list, export, switch on and off."""


@flows.command("add")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("--enable", is_flag=True, help="Switch each flow on after saving it.")
@click.pass_context
def flows_add(ctx, files, enable):
    """Validate and save flows from YAML files (a flow of the same name is replaced).

    Every file is checked before any is saved; a flow's error flow may be in another of
    the files, and is saved (and switched on) first.
    """
    from . import flows as flows_mod

    host = _host(ctx)
    loaded = [(path, flows_mod.load_file(path)) for path in files]
    for path, data, flow in flows_mod.save_all(host, loaded):
        click.echo(f"flow {flow.name} saved from {path}")
        if enable or data.get("enabled"):
            _enable(host, flow, backfill=False)


def _enable(host, flow, backfill):
    from . import flows as flows_mod
    from .store import TriggerState

    flows_mod.enable(host, flow, backfill=backfill)
    click.echo(f"flow {flow.name} is on")
    trigger = host.catalog.trigger(flow.trigger_key)
    if getattr(trigger, "kind", "") == "webhook":
        click.echo(f"  webhook URL: {flows_mod.webhook_url(host, flow)}")
        state = TriggerState.get(TriggerState.flow == flow)
        sub = host.box.open(state.sealed_subscription) if state.sealed_subscription else {}
        shown = {k: v for k, v in sub.items() if k in SHOWN_SECRETS}
        if getattr(trigger, "manual_setup", False) and shown:
            for key, value in shown.items():
                click.echo(f"  {SHOWN_SECRETS[key]}: {value}")
            click.echo(f"  set these in {host.catalog.app(trigger.app).label}'s sender; they "
                       f"are shown again by: connector flows secret {flow.name}")


#: what a manual-setup webhook's subscription may hold for the user to paste into the sender
SHOWN_SECRETS = {"secret": "signing secret", "token": "token", "password": "password"}


@flows.command("enable")
@click.argument("name")
@click.option("--backfill", is_flag=True,
              help="Fire for items that already exist instead of recording them as seen.")
@click.pass_context
def flows_enable(ctx, name, backfill):
    """Switch a flow on (subscribes its webhook, or records existing items as seen)."""
    from . import flows as flows_mod

    host = _host(ctx)
    _enable(host, flows_mod.get(name), backfill)


@flows.command("disable")
@click.argument("name")
@click.pass_context
def flows_disable(ctx, name):
    """Switch a flow off (removes its webhook subscription)."""
    from . import flows as flows_mod

    host = _host(ctx)
    for warning in flows_mod.disable(host, flows_mod.get(name)):
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"flow {name} is off")


@flows.command("resume")
@click.argument("name")
@click.pass_context
def flows_resume(ctx, name):
    """Lift a pause: the runs it held are executed."""
    from . import flows as flows_mod

    _host(ctx)
    flow = flows_mod.get(name)
    if not flow.paused_reason:
        raise UserError(f"flow {name} is not paused")
    flows_mod.resume(flow)
    click.echo(f"flow {name} resumed")


@flows.command("secret")
@click.argument("name")
@click.pass_context
def flows_secret(ctx, name):
    """Print the webhook URL and signing secret of a flow you set up by hand."""
    from . import flows as flows_mod
    from .store import TriggerState

    host = _host(ctx)
    flow = flows_mod.get(name)
    state = TriggerState.get_or_none(TriggerState.flow == flow)
    sub = host.box.open(state.sealed_subscription) if state and state.sealed_subscription else {}
    shown = {k: v for k, v in sub.items() if k in SHOWN_SECRETS}
    if not shown:
        raise UserError(f"flow {name} has no webhook secret (is it on, with a webhook trigger "
                        "that uses one?)")
    click.echo(f"webhook URL: {flows_mod.webhook_url(host, flow)}")
    for key, value in shown.items():
        click.echo(f"{SHOWN_SECRETS[key]}: {value}")


@flows.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def flows_list(ctx, as_json):
    """List flows with their trigger, state and run counts."""
    from peewee import fn

    from .store import Flow, Run

    _host(ctx)
    rows = []
    for flow in Flow.select().order_by(Flow.name):
        counts = {r.status: r.n for r in Run.select(Run.status, fn.COUNT(Run.id).alias("n"))
                  .where(Run.flow == flow).group_by(Run.status)}
        rows.append({"name": flow.name, "trigger": flow.trigger_key,
                     "enabled": flow.enabled, "paused": flow.paused_reason, "runs": counts})
    if as_json:
        _echo_json(rows)
        return
    for row in rows:
        runs = ", ".join(f"{k} {v}" for k, v in sorted(row["runs"].items())) or "no runs"
        state = "paused" if row["paused"] else ("on" if row["enabled"] else "off")
        click.echo(f"{row['name']:<28} {state:<6} {row['trigger']:<30} {runs}")
        if row["paused"]:
            click.echo(f"    {row['paused']} (connector flows resume {row['name']})")


@flows.command("export")
@click.argument("name")
@click.pass_context
def flows_export(ctx, name):
    """Print a flow as the YAML that `flows add` loads."""
    from . import flows as flows_mod

    _host(ctx)
    click.echo(yaml.safe_dump(flows_mod.export(flows_mod.get(name)), sort_keys=False), nl=False)


# -- runs ----------------------------------------------------------------------------------------

@main.group()
def runs():
    """Inspect and replay runs."""


@runs.command("list")
@click.option("--flow", "flow_name", default=None)
@click.option("--status", type=click.Choice(["queued", "running", "succeeded", "failed",
                                             "filtered"]), default=None)
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def runs_list(ctx, flow_name, status, limit, as_json):
    """List recent runs, newest first."""
    from . import flows as flows_mod
    from .store import Run

    _host(ctx)
    query = Run.select().order_by(Run.id.desc()).limit(limit)
    if flow_name:
        query = query.where(Run.flow == flows_mod.get(flow_name))
    if status:
        query = query.where(Run.status == status)
    rows = [_run_row(r) for r in query]
    if as_json:
        _echo_json(rows)
        return
    for row in rows:
        took = f"{row['duration_ms']:.0f} ms" if row["duration_ms"] is not None else "-"
        click.echo(f"{row['id']:>6} {row['flow']:<28} {row['status']:<10} {row['created_at']} "
                   f"{took:>9}  {row['error'] or ''}")


def _run_row(run) -> dict:
    duration = None
    if run.finished_at and run.started_at:
        duration = (run.finished_at - run.started_at).total_seconds() * 1000
    return {"id": run.id, "flow": run.flow.name, "status": run.status,
            "created_at": run.created_at.isoformat(timespec="seconds"),
            "duration_ms": duration, "attempts": run.attempts, "error": run.error}


@runs.command("show")
@click.argument("run_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def runs_show(ctx, run_id, as_json):
    """Show a run: the trigger item and each step's inputs, output, error and attempts."""
    from .store import Run, StepAttempt, StepRun

    _host(ctx)
    run = Run.get_or_none(Run.id == run_id)
    if run is None:
        raise UserError(f"no run with id {run_id}")
    data = _run_row(run)
    data["item"] = run.item
    data["steps"] = [{"name": s.name, "action": s.action_key, "status": s.status,
                      "attempts": s.attempts, "inputs": s.inputs, "output": s.output,
                      "error": s.error,
                      "history": [{"attempt": a.number, "status": a.status, "error": a.error,
                                   "duration_ms": a.duration_ms,
                                   "started_at": a.started_at.isoformat()}
                                  for a in s.attempt_log.order_by(StepAttempt.number)]}
                     for s in StepRun.select().where(StepRun.run == run)
                     .order_by(StepRun.id)]
    if as_json:
        _echo_json(data)
        return
    click.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=False), nl=False)


@runs.command("replay")
@click.argument("run_ids", type=int, nargs=-1)
@click.option("--all-failed", "flow_name", default=None, metavar="FLOW",
              help="Replay every failed run of FLOW.")
@click.option("--force-key", is_flag=True,
              help="Release a pending idempotency key first (after checking the service).")
@click.option("--item", "item_file", type=click.File("r"), default=None,
              help="Replay one run with this edited trigger item (a JSON file; - for stdin).")
@click.option("--set", "sets", multiple=True, metavar="FIELD=VALUE",
              help="Replay one run with these fields of its trigger item changed (repeat).")
@click.pass_context
def runs_replay(ctx, run_ids, flow_name, force_key, item_file, sets):
    """Queue failed runs again from their failed step; `connector serve` executes them.

    With --item or --set, one run is replayed as a new run with an edited trigger item.
    """
    from . import engine
    from . import flows as flows_mod
    from .store import Run

    _host(ctx)
    if item_file is not None or sets:
        if len(run_ids) != 1 or flow_name:
            raise UserError("--item and --set replay exactly one run: give one run id")
        run = Run.get_or_none(Run.id == run_ids[0])
        if run is None:
            raise UserError(f"no run with id {run_ids[0]}")
        item = dict(run.item or {})
        if item_file is not None:
            try:
                item = json.load(item_file)
            except ValueError as exc:
                raise UserError(f"--item: not valid JSON ({exc})") from None
        for name, value in _fields(sets).items():
            item[name] = value
        new = engine.replay(run.id, item=item)
        click.echo(f"run {new.id} queued, replaying run {run.id} with an edited item")
        return
    ids = list(run_ids)
    if flow_name:
        flow = flows_mod.get(flow_name)
        ids += [r.id for r in Run.select(Run.id).where(
            (Run.flow == flow) & (Run.status == Run.FAILED))]
    if not ids:
        raise UserError(f"flow {flow_name} has no failed runs" if flow_name else
                        "give run ids or --all-failed FLOW")
    for run_id in ids:
        engine.replay(run_id, force_key=force_key)
        click.echo(f"run {run_id} queued again")


# -- the plugin developer's kit (connector/cli_dev.py) -------------------------------------------

from .cli_dev import invoke, plugin_group, plugins as plugins_group  # noqa: E402

main.add_command(plugins_group)  # `plugins`: the listing (--json, --markdown) and `check`
main.add_command(invoke)
main.add_command(plugin_group)


from .cli_db import db  # noqa: E402  (commands kept in their own modules)
from .cli_api import keys_create, keys_list, keys_revoke, users  # noqa: E402
from .cli_keys import keys  # noqa: E402
from .cli_worker import worker  # noqa: E402  (Celery is imported only when it runs)

keys.add_command(keys_create)
keys.add_command(keys_list)
keys.add_command(keys_revoke)
main.add_command(db)
main.add_command(keys)
main.add_command(users)
main.add_command(worker)


if __name__ == "__main__":
    main()
