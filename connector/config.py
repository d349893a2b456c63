"""Settings, read once from the environment into one object the factories share.

Every knob is an environment variable so that the two-command start needs none of them:
the embedded default is a SQLite file in the working directory and an in-process executor.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Mapping

from .errors import ConfigurationError

DEFAULT_DATABASE_URL = "sqlite:///connector.db"


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None


def _list(env: Mapping[str, str], name: str) -> list[str] | None:
    raw = env.get(name)
    if raw is None or not raw.strip():  # set but empty means "not set", not "nothing"
        return None
    return [item.strip() for item in raw.split(",") if item.strip()]


@dataclass(frozen=True)
class Settings:
    """What the host needs to start; build it with :meth:`from_env`."""

    database_url: str = DEFAULT_DATABASE_URL
    secret_key: str | None = None
    production: bool = False
    public_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 16
    lease_seconds: int = 300
    max_attempts: int = 5
    backoff_base: float = 2.0
    backoff_cap: float = 300.0
    retry_after_cap: float = 3600.0
    dispatch_interval: float = 1.0
    broker_url: str | None = None  # Celery workers execute runs when set (connector.workers)
    broker_queue: str = "connector"
    keep_runs_days: int = 30
    keep_runs_per_flow: int = 10_000
    load_plugins: list[str] | None = None
    plugins_dir: str | None = None
    block_plugins: list[str] = field(default_factory=list)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "Settings":
        """Read CONNECTOR_* variables; keyword overrides win (tests and the demo use them)."""
        env = os.environ if env is None else env
        settings = cls(
            database_url=env.get("CONNECTOR_DATABASE_URL") or DEFAULT_DATABASE_URL,
            secret_key=env.get("CONNECTOR_SECRET_KEY") or None,
            production=env.get("CONNECTOR_ENV", "").lower() in ("prod", "production"),
            public_url=env.get("CONNECTOR_PUBLIC_URL") or None,
            host=env.get("CONNECTOR_HOST") or "127.0.0.1",
            port=_int(env, "CONNECTOR_PORT", 8080),
            workers=_int(env, "CONNECTOR_WORKERS", 16),
            lease_seconds=_int(env, "CONNECTOR_LEASE_SECONDS", 300),
            max_attempts=_int(env, "CONNECTOR_MAX_ATTEMPTS", 5),
            keep_runs_days=_int(env, "CONNECTOR_KEEP_RUNS_DAYS", 30),
            keep_runs_per_flow=_int(env, "CONNECTOR_KEEP_RUNS_PER_FLOW", 10_000),
            load_plugins=_list(env, "CONNECTOR_LOAD_PLUGINS"),
            plugins_dir=env.get("CONNECTOR_PLUGINS_DIR") or None,
            block_plugins=_list(env, "CONNECTOR_BLOCK_PLUGINS") or [],
            broker_url=(env.get("CONNECTOR_BROKER_URL") or "").strip() or None,
            broker_queue=(env.get("CONNECTOR_BROKER_QUEUE") or "").strip() or "connector",
        )
        return replace(settings, **overrides) if overrides else settings

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def webhook_base(self) -> str:
        """Return the URL services use to reach this host's webhook receiver."""
        base = self.public_url or f"http://{self.host}:{self.port}"
        return base.rstrip("/")
