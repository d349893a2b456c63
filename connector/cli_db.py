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
