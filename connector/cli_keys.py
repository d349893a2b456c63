"""`connector keys`: rotate the key that encrypts stored credentials, check a key.

Rotation re-seals every sealed value (connections, webhook subscriptions, the web UI's
session secret) under a new key in one database transaction; see connector/crypto.py for
what a crash at each step leaves behind and how the next start finishes the job.

Stop `connector serve` and every worker first: a process still holding the old key cannot
open what was re-sealed, and its runs that need credentials fail until it is restarted with
the new key (`connector runs replay` queues them again).
"""
from __future__ import annotations

import sys

import click

from .config import Settings
from .errors import ConfigurationError, UserError


@click.group()
def keys():
    """API keys for the REST API (create, list, revoke); rotate or check the encryption key."""


@keys.command("rotate")
@click.option("--new-key", envvar="CONNECTOR_NEW_SECRET_KEY", default=None, metavar="KEY",
              help="Rotate to this key (from `connector keygen`, saved where your secrets live) "
                   "instead of making and printing one; also read from "
                   "CONNECTOR_NEW_SECRET_KEY.")
def keys_rotate(new_key):
    """Re-encrypt every stored credential under a new key, in one transaction.

    With CONNECTOR_SECRET_KEY, the new key is printed once (before the database changes):
    set CONNECTOR_SECRET_KEY to it afterwards. With the embedded default's key file, the
    file is replaced once the database has committed. Stop `connector serve` first.
    """
    from . import crypto
    from .host import Host
    from .store import Run, utcnow

    settings = Settings.from_env()
    host = Host(settings)  # the current key: from the environment, or the key file
    try:
        old = host.box
        if new_key is not None:
            try:
                new = crypto.SecretBox(new_key.strip(), source="--new-key")
            except ConfigurationError:
                raise UserError("--new-key must be a Fernet key (32 url-safe base64 bytes); "
                                "make one with: connector keygen") from None
            key = new_key.strip()
        else:
            key = crypto.new_key()
            new = crypto.SecretBox(key, source="the new key")
        if settings.secret_key and key == settings.secret_key.strip():
            raise UserError("--new-key is the current key; give a new one")
        crypto.check_all(old, "nothing was changed")  # all open, before anything is written
        running = Run.select(Run.id).where((Run.status == Run.RUNNING) & (
            Run.lease_until > utcnow())).count()
        if running:
            click.echo(f"warning: {running} runs are executing; a worker still holding the old "
                       "key cannot open the credentials after this", err=True)

        path = crypto.key_file(settings)
        if path is not None:
            crypto.write_next_key(path, key)  # on disk before the database needs it
        elif new_key is None:
            click.echo(f"new key: {key}")
            sys.stdout.flush()
        try:
            counts = crypto.rotate(old, new)
        except BaseException:
            _after_failure(crypto, new, path, printed=new_key is None and path is None)
            raise
        if path is not None:
            crypto.promote_next_key(path)
    finally:
        host.close()

    done = ", ".join(f"{n} {what}" for what, n in counts.items() if n) or "nothing sealed yet"
    click.echo(f"rotated: {done}; the old key no longer opens them")
    if path is not None:
        click.echo(f"the key file {path} now holds the new key")
    else:
        given = "the key printed above" if new_key is None else "the key given with --new-key"
        click.echo(f"now set CONNECTOR_SECRET_KEY to {given} for every connector process "
                   "(serve, workers, this shell) and restart them")


def _after_failure(crypto, new, path, printed: bool) -> None:
    """The rotation failed: did it commit? Keep the key the database is under."""
    try:
        committed = crypto.sealed_with(new)
    except Exception:  # cannot tell: leave connector.key.next for the next start to settle
        return
    if path is not None:
        (crypto.promote_next_key if committed else crypto.discard_next_key)(path)
    elif printed:
        click.echo("the database was re-sealed: set CONNECTOR_SECRET_KEY to the key printed "
                   "above" if committed else "nothing was changed: discard the key printed "
                   "above", err=True)


@keys.command("check")
def keys_check():
    """Open every stored credential with the current key; say which one does not open."""
    from . import crypto
    from .host import Host

    host = Host(Settings.from_env())
    try:
        counts = crypto.check_all(host.box)
    finally:
        host.close()
    done = ", ".join(f"{n} {what}" for what, n in counts.items())
    click.echo(f"ok: {done} open with {host.box.source}")
