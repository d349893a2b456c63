"""`connector worker`: a Celery worker that executes runs from CONNECTOR_BROKER_URL."""
from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

import click

from .config import Settings
from .errors import ConfigurationError


@click.command()
@click.option("-c", "--concurrency", type=click.IntRange(1, 1000), default=None,
              help="Runs executed at once by this worker (default: one process per core "
                   "with prefork, CONNECTOR_WORKERS threads with threads).")
@click.option("-Q", "--queue", default=None,
              help="Queue to consume (CONNECTOR_BROKER_QUEUE, default 'connector').")
@click.option("-P", "--pool", type=click.Choice(["prefork", "threads", "solo"]),
              default="prefork", show_default=True,
              help="prefork: a process per slot; threads: one process, a thread per slot.")
@click.option("-l", "--loglevel", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              help="Log level of the worker.")
@click.option("-n", "--hostname", default=None,
              help="Node name, unique per worker (default connector-<pid>@<host name>).")
@click.option("--plugins-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, envvar="CONNECTOR_PLUGINS_DIR",
              help="Also load every *.py in this directory as a plugin (as serve does).")
def worker(concurrency, queue, pool, loglevel, hostname, plugins_dir):
    """Execute runs sent through the broker (CONNECTOR_BROKER_URL) until stopped.

    Start as many as you like, on as many machines, against the same database and broker.
    A run is claimed in the database before it executes, so a message delivered twice
    executes it once. `connector serve` (the scheduler leader) sends the runs.
    """
    from . import workers
    from .host import Host

    settings = Settings.from_env()
    broker = workers.Broker.from_settings(settings)
    if broker is None:
        raise ConfigurationError(
            "connector worker needs a broker: set CONNECTOR_BROKER_URL to "
            "redis://HOST:6379/0 or amqp://USER:PASSWORD@HOST:5672//")
    if queue:
        broker = dataclasses.replace(broker, queue=queue)
    if plugins_dir is not None:
        settings = dataclasses.replace(settings, plugins_dir=str(plugins_dir))
    app = workers.make_app(broker)
    # Fail here, in one line, on a bad database URL, key or plugin, not in every task; then
    # close, so no connection is shared with the pool processes forked below.
    Host(settings).close()
    workers.configure(settings)
    if concurrency is None:  # a process per slot costs a process's memory: one per core
        concurrency = settings.workers if pool == "threads" else (os.cpu_count() or 1)
    name = hostname or f"connector-{os.getpid()}@{socket.gethostname()}"
    click.echo(f"connector worker {name.replace('%h', socket.gethostname())}: queue "
               f"{broker.queue} on {broker.safe_url}, {concurrency} x {pool}",
               err=True)
    app.worker_main(["worker", f"--concurrency={concurrency}",
                     f"--queues={broker.queue}", f"--pool={pool}",
                     f"--loglevel={loglevel.upper()}", f"--hostname={name}",
                     # no chatter between workers: runs need none of Celery's remote control
                     "--without-gossip", "--without-mingle"])
