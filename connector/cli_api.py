"""Commands for the REST API's keys and the UI's users: ``keys create|list|revoke``, ``users``.

``keys_create``, ``keys_list`` and ``keys_revoke`` are plain commands that connector/cli.py
attaches to its ``keys`` group; ``users`` is a group of its own. A key is printed once, when
it is made; passwords are prompted for (hidden, twice) or read from stdin.
"""
from __future__ import annotations

import json
import sys

import click

from .config import Settings
from .errors import UserError

# store.ApiKey.SCOPES, spelled here so `connector --help` need not import the store
# (tests/test_auth.py checks they agree)
READ, WRITE, ADMIN = SCOPES = ("read", "write", "admin")
SCOPE = click.Choice(SCOPES)


def _host(ctx: click.Context):
    """Return the command's Host, shared with any other command of the same invocation."""
    obj = ctx.ensure_object(dict)
    if "host" not in obj:
        from .host import Host

        obj["host"] = Host(Settings.from_env())
        ctx.call_on_close(obj["host"].close)
    return obj["host"]


def _when(value) -> str:
    return value.isoformat(timespec="seconds") if value else "-"


@click.command("create")
@click.option("--name", required=True, help="What the key is for (a person, a CI job).")
@click.option("--scope", type=SCOPE, default=READ, show_default=True,
              help="read: look only; write: also change connections, flows and runs; "
                   "admin: also manage keys.")
@click.pass_context
def keys_create(ctx, name, scope):
    """Make an API key and print it: this is the only time it is shown."""
    from . import auth

    _host(ctx)
    row, raw = auth.create_key(name, scope)
    click.echo(raw)
    click.echo(f"API key {row.id} {row.name!r} ({row.scope}) created; store it now, it is "
               "not shown again", err=True)


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.option("--all", "show_all", is_flag=True, help="Include revoked keys.")
@click.pass_context
def keys_list(ctx, as_json, show_all):
    """List API keys: id, name, first characters, scope, use (never the keys)."""
    from . import auth

    _host(ctx)
    rows = [{"id": k.id, "name": k.name, "prefix": k.prefix, "scope": k.scope,
             "created_at": _when(k.created_at), "last_used_at": _when(k.last_used_at),
             "revoked_at": _when(k.revoked_at) if k.revoked_at else None}
            for k in auth.list_keys(include_revoked=show_all)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no API keys (make one with: connector keys create --name NAME)")
    for r in rows:
        state = f"revoked {r['revoked_at']}" if r["revoked_at"] else f"used {r['last_used_at']}"
        click.echo(f"{r['id']:>4} {r['name']:<24} {r['prefix']}...  {r['scope']:<6} "
                   f"created {r['created_at']}  {state}")


@click.command("revoke")
@click.argument("key_id", type=int)
@click.pass_context
def keys_revoke(ctx, key_id):
    """Revoke an API key at once (sessions signed in with it end too)."""
    from . import auth

    _host(ctx)
    row = auth.revoke_key(key_id)
    click.echo(f"API key {row.id} {row.name!r} revoked")


def _password(stdin: bool, prompt: str = "Password") -> str:
    if stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        if not password:
            raise UserError("--password-stdin: no password on standard input")
        return password
    try:
        return click.prompt(prompt, hide_input=True, confirmation_prompt=True)
    except click.exceptions.Abort:  # end of input before a password was typed
        raise UserError("no password given: type it at a terminal, or pipe it with "
                        "--password-stdin") from None


@click.group()
def users():
    """Add people who sign in to the web UI with a password."""


@users.command("add")
@click.argument("username")
@click.option("--scope", type=SCOPE, default=ADMIN, show_default=True,
              help="What the user may do in the UI (as for API keys).")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from the first line of standard input.")
@click.pass_context
def users_add(ctx, username, scope, password_stdin):
    """Add a user; the password is prompted for (or read with --password-stdin)."""
    from . import auth

    _host(ctx)
    if auth.User.get_or_none(auth.User.username == username) is not None:
        raise UserError(f"user {username!r} already exists (change the password with: "
                        f"connector users passwd {username})")
    user = auth.add_user(username, _password(password_stdin), scope)
    click.echo(f"user {user.username} ({user.scope}) added")


@users.command("passwd")
@click.argument("username")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from the first line of standard input.")
@click.pass_context
def users_passwd(ctx, username, password_stdin):
    """Set a user's password."""
    from . import auth

    _host(ctx)
    auth.get_user(username)
    auth.set_password(username, _password(password_stdin, "New password"))
    click.echo(f"password of {username} changed")


@users.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_context
def users_list(ctx, as_json):
    """List users (never their password hashes)."""
    from .store import User

    _host(ctx)
    rows = [{"username": u.username, "scope": u.scope, "created_at": _when(u.created_at),
             "last_login_at": _when(u.last_login_at)}
            for u in User.select().order_by(User.username)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{r['username']:<24} {r['scope']:<6} created {r['created_at']}  "
                   f"last sign-in {r['last_login_at']}")


@users.command("remove")
@click.argument("username")
@click.pass_context
def users_remove(ctx, username):
    """Remove a user (their sessions end at once)."""
    from . import auth

    _host(ctx)
    auth.remove_user(username)
    click.echo(f"user {username} removed")
