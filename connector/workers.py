"""Execute runs in Celery workers on any number of machines, fed by the scheduler leader.

Celery is an optional extra (``pip install -e '.[celery]'``), imported only here and only
when a broker is configured (CONNECTOR_BROKER_URL), so the core and ``connector --help``
never load it. A message carries nothing but a run id: the database row stays the source of
truth. :func:`execute_run` calls :func:`connector.engine.execute`, which claims the run with
one atomic UPDATE, so a redelivered or duplicated message finds the run claimed or finished
and does nothing.

The broker is a short conveyor, not the queue. :class:`Dispatcher` (in the scheduler leader)
keeps at most ``high_water`` messages waiting there, publishes each due run once, and
publishes it again only when the database says it is still due after ``resend_after``
seconds (a lost message) or due again after a claim (a retry, a replay, or a lease that
expired because its worker died).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping
from urllib.parse import urlsplit, urlunsplit

from . import store
from .config import Settings
from .errors import ConfigurationError
from .loops import DispatchLoop
from .store import Run

log = logging.getLogger("connector.workers")

TASK = "connector.execute_run"
DEFAULT_QUEUE = "connector"


@dataclass(frozen=True)
class Broker:
    """Where runs are sent: the broker URL (Redis or RabbitMQ) and the queue's name."""

    url: str
    queue: str = DEFAULT_QUEUE

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Broker | None":
        """Read CONNECTOR_BROKER_URL and CONNECTOR_BROKER_QUEUE; None when no broker is set."""
        env = os.environ if env is None else env
        return cls.from_settings_values((env.get("CONNECTOR_BROKER_URL") or "").strip(),
                                        (env.get("CONNECTOR_BROKER_QUEUE") or "").strip())

    @classmethod
    def from_settings(cls, settings) -> "Broker | None":
        """Return the broker a host's Settings name; None when none is set."""
        return cls.from_settings_values(settings.broker_url or "", settings.broker_queue or "")

    @classmethod
    def from_settings_values(cls, url: str, queue: str) -> "Broker | None":
        if not url:
            return None
        if not url.startswith(("redis://", "rediss://", "amqp://", "amqps://", "pyamqp://")):
            raise ConfigurationError(
                f"CONNECTOR_BROKER_URL must be a redis:// or amqp:// URL, got {redact(url)!r}")
        return cls(url, queue or DEFAULT_QUEUE)

    @property
    def safe_url(self) -> str:
        return redact(self.url)


def redact(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (for logs and errors)."""
    parts = []
    for one in url.split(";"):  # Celery accepts several failover URLs separated by ;
        try:
            split = urlsplit(one)
        except ValueError:
            parts.append("<unparsable URL>")
            continue
        if split.password is None:
            parts.append(one)
            continue
        user = split.username or ""
        host = split.netloc.rsplit("@", 1)[-1]
        parts.append(urlunsplit(split._replace(netloc=f"{user}:***@{host}")))
    return ";".join(parts)


def require_celery():
    """Return the celery module, or say how to install it."""
    try:
        import celery
    except ImportError:
        raise ConfigurationError(
            "CONNECTOR_BROKER_URL is set but Celery is not installed: "
            "pip install 'connector[celery]' (or unset CONNECTOR_BROKER_URL to execute runs "
            "in the serve process)") from None
    return celery


def make_app(broker: Broker):
    """Build the Celery app: late acks, requeue on a lost worker, one message at a time."""
    celery = require_celery()
    from kombu import Exchange, Queue

    app = celery.Celery("connector", broker=broker.url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,  # ack after the run, so a dead worker's message comes back
        task_reject_on_worker_lost=True,  # a killed pool process requeues, not acks
        worker_prefetch_multiplier=1,  # a busy worker does not sit on messages others could run
        task_serializer="json", accept_content=["json"], result_serializer="json",
        task_ignore_result=True, result_backend=None,
        task_default_queue=broker.queue,
        task_queues=[Queue(broker.queue, Exchange(broker.queue, type="direct"),
                           routing_key=broker.queue)],
        task_default_exchange=broker.queue, task_default_routing_key=broker.queue,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=True,
        enable_utc=True, timezone="UTC",
    )
    app.task(name=TASK, ignore_result=True)(execute_run)
    return app


# -- the worker side ----------------------------------------------------------------------------

_host = None
_host_pid: int | None = None
_settings: Settings | None = None


def configure(settings: Settings) -> None:
    """Use ``settings`` for the Host each worker process builds (instead of the environment)."""
    global _settings
    _settings = settings


def worker_host():
    """Return this process's Host, built on first use (after a fork, a new one)."""
    global _host, _host_pid
    if _host is None or _host_pid != os.getpid():
        from .host import Host

        _host = Host(_settings or Settings.from_env())
        _host_pid = os.getpid()
    return _host


def execute_run(run_id: int) -> str | None:
    """Claim and execute run ``run_id``; a run claimed elsewhere or finished is left alone."""
    from . import engine

    host = worker_host()
    try:
        status = engine.execute(host, int(run_id))
    except Exception:
        # The run stays in the database; the dispatcher sends it again. A broken connection
        # must not poison the next task, so start from a fresh one.
        if not store.db.is_closed():
            store.db.close()
        raise
    if status is None:
        log.debug("run %s: claimed elsewhere, finished or not due; nothing to do", run_id)
    return status


# -- the dispatching side -----------------------------------------------------------------------

class Dispatcher(DispatchLoop):
    """Publish due runs' ids to the broker; the drop-in for Executor when a broker is set.

    ``leading`` says whether this process should publish (the scheduler leader); without it
    the process always does. ``wake()`` publishes promptly (a webhook just queued a run).
    """

    def __init__(self, host, broker: Broker, leading: Callable[[], bool] | None = None,
                 high_water: int = 1000, resend_after: float = 60.0):
        super().__init__(host.settings.dispatch_interval)
        self.host = host
        self.broker = broker
        self.app = make_app(broker)
        self.leading = leading
        self.high_water = high_water
        self.resend_after = resend_after
        self.published = 0
        self._sent: dict[int, tuple[int, float]] = {}  # run id -> (attempts when sent, time)
        self._lock = threading.Lock()
        self._warned = False

    def idle(self) -> bool:
        """Runs execute in the workers, never here."""
        return True

    def stop(self, timeout: float = 30.0) -> None:
        self._halt(timeout)
        self.app.close()

    def dispatch(self) -> int:
        """Publish what is due and not already waiting in the broker; return how many."""
        try:
            with self._lock:
                if self._stop.is_set():
                    return 0
                if self.leading is not None and not self.leading():
                    self._sent.clear()  # a new term starts from what the database says
                    return 0
                sent = self._dispatch()
            self._warned = False
            return sent
        except Exception as exc:  # the broker or the database may be briefly away
            if not self._warned:
                log.warning("cannot dispatch runs to the broker at %s: %s; trying again",
                            self.broker.safe_url, exc)
                self._warned = True
            if not store.db.is_closed():
                store.db.close()
            return 0
        finally:
            if threading.current_thread() is not self._thread and not store.db.is_closed():
                store.db.close()

    def _dispatch(self) -> int:
        self._forget()
        with self.app.connection_for_write() as conn:
            queue = self.app.amqp.queues[self.broker.queue]
            waiting = queue.bind(conn.default_channel).queue_declare().message_count
            room = self.high_water - waiting
            if room <= 0:
                return 0
            picked = self._due(room)
            with self.app.producer_or_acquire() as producer:
                for run_id, attempts in picked:
                    self.app.send_task(TASK, args=[run_id], queue=self.broker.queue,
                                       producer=producer, ignore_result=True)
                    self._sent[run_id] = (attempts, time.monotonic())
        self.published += len(picked)
        return len(picked)

    def _due(self, limit: int) -> list[tuple[int, int]]:
        """Return (id, attempts) of claimable runs that no recent message covers."""
        from .engine import due_runs

        ids = due_runs(limit, set(self._sent))
        if not ids:
            return []
        attempts = dict(Run.select(Run.id, Run.attempts).where(Run.id.in_(ids)).tuples())
        return [(run_id, attempts[run_id]) for run_id in ids if run_id in attempts]

    def _forget(self) -> None:
        """Drop what was claimed since it was sent, and what waited past ``resend_after``."""
        if not self._sent:
            return
        expired = time.monotonic() - self.resend_after
        ids = list(self._sent)
        now_attempts: dict[int, int] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            now_attempts.update(Run.select(Run.id, Run.attempts)
                                .where(Run.id.in_(chunk)).tuples())
        for run_id in ids:
            attempts, sent_at = self._sent[run_id]
            if now_attempts.get(run_id) != attempts or sent_at < expired:
                del self._sent[run_id]


def queue_depth(broker: Broker) -> int:
    """Return how many messages wait in the broker's queue (0 when it does not exist yet)."""
    app = make_app(broker)
    try:
        with app.connection_for_write() as conn:
            queue = app.amqp.queues[broker.queue]
            return queue.bind(conn.default_channel).queue_declare().message_count
    finally:
        app.close()
