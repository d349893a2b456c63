"""A WSGI entry point for running webhook receivers under gunicorn (or any WSGI server).

    gunicorn -w 4 -b 0.0.0.0:8080 'connector.wsgi:create()'

Each worker process builds its own Host from the environment (CONNECTOR_DATABASE_URL
pointing at PostgreSQL, CONNECTOR_SECRET_KEY, CONNECTOR_PUBLIC_URL) and only receives:
it verifies, records and queues; `connector serve --role scheduler` processes (or Celery
workers) execute the runs. Nothing happens at import time.
"""
from __future__ import annotations


def create():
    """Return the Flask app for this process's Host (webhooks only, no scheduler)."""
    from .config import Settings
    from .host import Host
    from .web import create_app

    return create_app(Host(Settings.from_env()))
