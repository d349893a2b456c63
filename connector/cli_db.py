"""`connector db`: upgrade the schema of an older database."""
from __future__ import annotations

import click

from .config import Settings


@click.group()
def db():
    """Manage the connector's database (schema upgrades)."""


@db.command("upgrade")
def db_upgrade():
    """Bring the database at CONNECTOR_DATABASE_URL to this connector's schema, losing nothing."""
    from . import migrations, store

    settings = Settings.from_env()
    database = store.init_db(settings.database_url, upgrade=True)
    with database.connection_context():
        version = migrations.version_of(database)
    click.echo(f"database schema is at version {version}")


@db.command("prune")
def db_prune():
    """Delete run history past CONNECTOR_KEEP_RUNS_DAYS / _PER_FLOW and expired dedupe keys.

    Never the idempotency ledger, keys kept forever (credit grants) or unfinished runs;
    `connector serve` does this every hour.
    """
    from .host import Host
    from .retention import prune

    host = Host(Settings.from_env())
    try:
        removed = prune(host.settings)
    finally:
        host.close()
    click.echo(f"removed {removed['runs']} runs and {removed['seen_keys']} expired dedupe keys")
