"""Bring a database made by an older connector up to the current schema, losing nothing.

The schema version lives in the ``meta`` table. Each step from version N-1 to N is one
function below, run in one transaction with ``playhouse.migrate``; steps only add (columns
with defaults, tables, indexes) or drop what the new code no longer needs, never data.
The embedded default (SQLite) upgrades itself on start; a server database (PostgreSQL) is
upgraded by an operator with ``connector db upgrade``, so that several processes never race.
"""
from __future__ import annotations

import logging

from peewee import CharField, DateTimeField, FloatField, IntegerField, TextField
from playhouse.migrate import PostgresqlMigrator, SchemaMigrator, SqliteMigrator, migrate

from .errors import ConfigurationError

log = logging.getLogger("connector.migrations")

#: the schema this code needs; version 1 is the walking skeleton's first release
SCHEMA_VERSION = 3


def _v2(migrator: SchemaMigrator, database) -> None:
    """Nested steps, parked runs, failure handling, replays with an edited item, API keys,
    users."""
    from .store import ApiKey, User

    migrate(
        migrator.drop_index("step", "step_flow_id_position"),  # nested steps reuse positions
        migrator.add_column("step", "parent_id", IntegerField(null=True)),
        migrator.add_column("step", "branch", CharField(null=True)),
        migrator.add_column("step", "branches", TextField(null=True)),
        migrator.add_index("step", ("parent_id",), False),
        migrator.add_column("flow", "pause_after", IntegerField(default=0)),
        migrator.add_column("flow", "failure_streak", IntegerField(default=0)),
        migrator.add_column("flow", "paused_reason", TextField(null=True)),
        migrator.add_column("flow", "error_flow", CharField(null=True)),
        migrator.add_column("run", "replay_of", IntegerField(null=True)),
        migrator.add_column("steprun", "resume_at", DateTimeField(null=True)),
    )
    database.create_tables([ApiKey, User], safe=True)


def _v3(migrator: SchemaMigrator, database) -> None:
    """Throttles: a connection's rate-limit override, a flow's concurrency, the rate windows."""
    from .store import RateWindow

    migrate(
        migrator.add_column("connection", "rate_limit", IntegerField(null=True)),
        migrator.add_column("connection", "rate_window", FloatField(null=True)),
        migrator.add_column("flow", "concurrency", IntegerField(default=0)),
    )
    database.create_tables([RateWindow], safe=True)


STEPS = {2: _v2, 3: _v3}


def _migrator(database) -> SchemaMigrator:
    if database.__class__.__name__.endswith("SqliteDatabase"):
        return SqliteMigrator(database)
    if "Postgres" in database.__class__.__name__:
        return PostgresqlMigrator(database)
    return SchemaMigrator.from_database(database)


def version_of(database) -> int | None:
    """Return the database's schema version; None for an empty database."""
    tables = set(database.get_tables())
    if not tables:
        return None
    if "meta" not in tables:
        return 1
    row = database.execute_sql("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 1


def upgrade(database) -> tuple[int | None, int]:
    """Run every step from the database's version to SCHEMA_VERSION; return (from, to)."""
    from .store import MODELS, db, set_meta

    start = version_of(database)
    if start is None:
        db.create_tables(MODELS, safe=True)
        set_meta("schema_version", str(SCHEMA_VERSION))
        return None, SCHEMA_VERSION
    if start > SCHEMA_VERSION:
        raise ConfigurationError(
            f"the database has schema version {start}, newer than this connector's "
            f"{SCHEMA_VERSION}: upgrade the connector")
    migrator = _migrator(database)
    sqlite = _is_sqlite(database)
    if sqlite:
        # SQLite changes some columns by rebuilding the table; with foreign keys on, dropping
        # the old table would cascade-delete every child row (steps, runs...). The SQLite
        # manual's procedure: keys off (outside a transaction), migrate, check, keys on.
        database.execute_sql("PRAGMA foreign_keys = OFF")
    try:
        for version in range(start + 1, SCHEMA_VERSION + 1):
            with database.atomic():
                if version_of(database) >= version:  # another process got here first
                    continue
                STEPS[version](migrator, database)
                database.execute_sql(
                    "UPDATE meta SET value = ? WHERE key = 'schema_version'" if sqlite else
                    "UPDATE meta SET value = %s WHERE key = 'schema_version'", (str(version),))
                if sqlite:
                    broken = database.execute_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise ConfigurationError(f"the upgrade to schema version {version} "
                                                 f"would break references: {broken[:3]}")
            log.warning("database upgraded to schema version %s", version)
    finally:
        if sqlite:
            database.execute_sql("PRAGMA foreign_keys = ON")
    return start, SCHEMA_VERSION


def _is_sqlite(database) -> bool:
    return database.__class__.__name__.endswith("SqliteDatabase")
