"""Peewee models: the one source of truth for connections, flows, runs and ledgers.

The database is an unbound :class:`peewee.DatabaseProxy` that :func:`init_db` binds from a
URL (CONNECTOR_DATABASE_URL; default a SQLite file in WAL mode). Times are naive UTC.
Two ledgers carry the reliability rules: :class:`SeenItem` (unique per flow and dedupe key,
written in the same transaction as the run it queues) and :class:`IdempotencyRecord`
(one row per side effect that must never happen twice, kept forever).
"""
from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import threading
from contextlib import contextmanager

from peewee import (
    BigIntegerField, BooleanField, CharField, DatabaseProxy, DateTimeField, FloatField,
    ForeignKeyField, ImproperlyConfigured, IntegerField, Model, PeeweeException, TextField,
)
from playhouse.db_url import connect

from .errors import ConfigurationError

db = DatabaseProxy()
MAX_KEY_LENGTH = 190


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def fit_key(key: str) -> str:
    """Return ``key`` unchanged when short, else a stable digest (keys index as VARCHAR)."""
    key = str(key)
    if len(key) <= MAX_KEY_LENGTH:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class JSONField(TextField):
    """JSON stored as text, portable across SQLite and PostgreSQL."""

    def db_value(self, value):
        return None if value is None else json.dumps(value, default=str, sort_keys=True)

    def python_value(self, value):
        return None if value is None else json.loads(value)


class BaseModel(Model):
    class Meta:
        database = db


class Meta(BaseModel):
    """Key/value facts about the database itself (schema_version)."""

    key = CharField(primary_key=True)
    value = TextField()


class Connection(BaseModel):
    """One user's credentials for one app; ``sealed`` holds them encrypted (Fernet)."""

    name = CharField(unique=True)
    app = CharField()
    base_url = CharField(null=True)
    sealed = TextField()
    # overrides the app's rate limit: rate_limit requests per rate_window seconds; 0
    # requests turns it off; both None: the app's default
    rate_limit = IntegerField(null=True)
    rate_window = FloatField(null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)


class Flow(BaseModel):
    """A trigger plus ordered steps; ``webhook_token`` makes its unguessable webhook URL."""

    name = CharField(unique=True)
    description = TextField(default="")
    trigger_key = CharField()
    trigger_connection = ForeignKeyField(Connection, null=True, backref="trigger_flows")
    trigger_inputs = JSONField(default=dict)
    poll_interval = IntegerField(default=60)
    enabled = BooleanField(default=False, index=True)
    enabled_at = DateTimeField(null=True)
    pause_after = IntegerField(default=0)  # consecutive failed runs that pause it; 0: never
    failure_streak = IntegerField(default=0)
    paused_reason = TextField(null=True)  # set: runs are queued but not executed
    error_flow = CharField(null=True)  # the flow told about each failed run
    concurrency = IntegerField(default=0)  # runs executing at once, across workers; 0: any
    webhook_token = CharField(unique=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)


class Step(BaseModel):
    """One step of a flow: its inputs are templates over the trigger item and earlier steps.

    Steps nest: a loop step's ``children`` have it as ``parent``; a paths step lists its
    ``branches`` (name, conditions) and each branch's steps have it as ``parent`` and the
    branch's name as ``branch``. ``position`` orders siblings; names are unique per flow.
    """

    flow = ForeignKeyField(Flow, backref="steps", on_delete="CASCADE")
    parent = ForeignKeyField("self", null=True, backref="children", on_delete="CASCADE")
    branch = CharField(null=True)
    branches = JSONField(null=True)
    position = IntegerField()
    name = CharField()
    action_key = CharField()
    connection = ForeignKeyField(Connection, null=True, backref="steps")
    inputs = JSONField(default=dict)
    filter = JSONField(null=True)

    class Meta:
        indexes = ((("flow", "name"), True),)


class TriggerState(BaseModel):
    """A flow's trigger memory: poll cursor, priming, and the sealed webhook subscription."""

    flow = ForeignKeyField(Flow, unique=True, backref="trigger_state", on_delete="CASCADE")
    cursor = JSONField(null=True)
    primed = BooleanField(default=False)
    sealed_subscription = TextField(null=True)
    last_poll_at = DateTimeField(null=True)
    last_error = TextField(null=True)
    updated_at = DateTimeField(default=utcnow)


class SeenItem(BaseModel):
    """The dedupe ledger: a key seen once for a flow never queues a second run."""

    flow = ForeignKeyField(Flow, backref="seen", on_delete="CASCADE")
    key = CharField(max_length=200)
    created_at = DateTimeField(default=utcnow)
    expires_at = DateTimeField(null=True, index=True)  # None: kept forever

    class Meta:
        indexes = ((("flow", "key"), True),)


class Run(BaseModel):
    """One trigger item going through a flow."""

    QUEUED, RUNNING, WAITING, SUCCEEDED, FAILED, FILTERED = (
        "queued", "running", "waiting", "succeeded", "failed", "filtered")
    FINAL = (SUCCEEDED, FAILED, FILTERED)
    #: statuses a worker may claim once next_attempt_at is due
    DUE = (QUEUED, WAITING)

    flow = ForeignKeyField(Flow, backref="runs", on_delete="CASCADE")
    status = CharField(default=QUEUED, index=True)
    item = JSONField()
    dedupe_key = CharField(max_length=200, null=True)
    replay_of = IntegerField(null=True)  # the run this one replays with an edited item
    attempts = IntegerField(default=0)
    error = TextField(null=True)
    failed_step = CharField(null=True)
    next_attempt_at = DateTimeField(default=utcnow, index=True)
    lease_until = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow, index=True)
    started_at = DateTimeField(null=True)
    finished_at = DateTimeField(null=True)


class StepRun(BaseModel):
    """One step of one run: rendered inputs, output, error, attempts, timings."""

    PENDING, RUNNING, SUCCEEDED, FAILED, RETRYING, FILTERED, PARKED = (
        "pending", "running", "succeeded", "failed", "retrying", "filtered", "parked")

    run = ForeignKeyField(Run, backref="step_runs", on_delete="CASCADE")
    name = CharField()
    position = IntegerField()
    action_key = CharField()
    status = CharField(default=PENDING)
    inputs = JSONField(null=True)
    output = JSONField(null=True)
    error = TextField(null=True)
    attempts = IntegerField(default=0)
    resume_at = DateTimeField(null=True)  # a parked step (delay) resumes at this time
    started_at = DateTimeField(null=True)
    finished_at = DateTimeField(null=True)

    class Meta:
        indexes = ((("run", "name"), True),)


class StepAttempt(BaseModel):
    """Every attempt of a step, kept for the run's history."""

    step_run = ForeignKeyField(StepRun, backref="attempt_log", on_delete="CASCADE")
    number = IntegerField()
    status = CharField()
    error = TextField(null=True)
    retry_at = DateTimeField(null=True)
    started_at = DateTimeField()
    duration_ms = FloatField()


class IdempotencyRecord(BaseModel):
    """A side effect done (or started) once under ``scope`` and ``key``; never pruned."""

    PENDING, DONE = "pending", "done"

    scope = CharField()
    key = CharField(max_length=200)
    request_hash = CharField()
    status = CharField(default=PENDING)
    response = JSONField(null=True)
    run_id = IntegerField(null=True)  # no foreign key: the record outlives pruned runs
    step_name = CharField(null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("scope", "key"), True),)


class RateWindow(BaseModel):
    """Requests counted in the current fixed window of one rate limit, shared by every worker.

    ``key`` names the limit (a connection and its window length), ``window`` is the
    window's number (epoch seconds // window length); a newer window resets ``count``.
    """

    key = CharField(max_length=200, unique=True)
    window = BigIntegerField()
    count = IntegerField(default=0)


class ApiKey(BaseModel):
    """A key for the connector's own REST API: only a digest is stored; shown once."""

    READ, WRITE, ADMIN = "read", "write", "admin"
    SCOPES = (READ, WRITE, ADMIN)

    name = CharField()
    prefix = CharField(index=True)  # the first characters, to find the row to check
    digest = CharField()  # sha256 of the whole key
    scope = CharField(default=READ)
    created_at = DateTimeField(default=utcnow)
    last_used_at = DateTimeField(null=True)
    revoked_at = DateTimeField(null=True)


class User(BaseModel):
    """Someone who signs in to the web UI with a password (scrypt, salted)."""

    username = CharField(unique=True)
    password_hash = CharField()
    scope = CharField(default=ApiKey.ADMIN)
    created_at = DateTimeField(default=utcnow)
    last_login_at = DateTimeField(null=True)


MODELS = [Meta, Connection, Flow, Step, TriggerState, SeenItem, Run, StepRun, StepAttempt,
          IdempotencyRecord, RateWindow, ApiKey, User]


def init_db(url: str, upgrade: bool | None = None):
    """Bind the proxy to the database at ``url``; create a new one, or check its schema.

    An older schema is upgraded in place when ``upgrade`` is true (the default for the
    embedded SQLite database); otherwise the error says to run ``connector db upgrade``.
    """
    release_pool()
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if not path:
            raise ConfigurationError(f"CONNECTOR_DATABASE_URL {url!r} names no SQLite file")
        # Pooled connections move between threads (werkzeug serves each request on a new
        # one), hence check_same_thread off; peewee's thread-local state keeps one
        # connection per thread at a time.
        database = connect(pooled_url(url), check_same_thread=False, pragmas={
            "journal_mode": "wal", "busy_timeout": 30000, "foreign_keys": 1,
            "synchronous": "normal",
        }, **SQLITE_POOL)
    else:
        try:
            database = connect(pooled_url(url), **POSTGRES_POOL)
        except (RuntimeError, ValueError, ImportError) as exc:
            raise ConfigurationError(
                f"CONNECTOR_DATABASE_URL ({redact(url)}) cannot be used: {exc}") from None
    db.initialize(database)
    from . import migrations

    if upgrade is None:
        upgrade = url.startswith("sqlite")
    try:
        with db.connection_context():
            version = migrations.version_of(database)
            if version is None or (upgrade and version != migrations.SCHEMA_VERSION):
                migrations.upgrade(database)
            elif version < migrations.SCHEMA_VERSION:
                raise ConfigurationError(
                    f"the database has schema version {version} and this connector needs "
                    f"{migrations.SCHEMA_VERSION}: run  connector db upgrade")
            elif version > migrations.SCHEMA_VERSION:
                migrations.upgrade(database)  # raises, saying to upgrade the connector
    except (ImproperlyConfigured, PeeweeException, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigurationError(
            f"CONNECTOR_DATABASE_URL ({redact(url)}) cannot be used: {reason}") from None
    return database


#: close() hands a connection back for the next request or run instead of ending it: no
#: connect, pragmas or (on PostgreSQL) TCP and authentication per request, and no WAL
#: checkpoint on the last close. SQLite connections are cheap and werkzeug serves every
#: open client connection on a thread of its own, so they are not capped; PostgreSQL's
#: are (the server's own cap is usually 100): past it a thread waits up to ``timeout``.
POOL = {"stale_timeout": 600, "timeout": 30}
SQLITE_POOL = {**POOL, "max_connections": None}
POSTGRES_POOL = {**POOL, "max_connections": 48}
_POOLED_SCHEMES = {"sqlite": "sqlite+pool", "postgres": "postgres+pool",
                   "postgresql": "postgresql+pool"}


def pooled_url(url: str) -> str:
    """Return ``url`` with its scheme swapped for the pooled one of playhouse.db_url."""
    scheme, sep, rest = url.partition("://")
    return _POOLED_SCHEMES.get(scheme, scheme) + sep + rest if sep else url


def release_pool(in_use: bool = False) -> None:
    """Close the bound database's idle pooled connections; ``in_use`` also closes the ones
    other threads hold (before a fork, when no other thread runs)."""
    database = db.obj
    if database is None or not hasattr(database, "close_idle"):
        return
    if in_use:
        database.close_all()
    else:
        database.close_idle()


def redact(url: str) -> str:
    """Return ``url`` with any password replaced, for messages."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def set_meta(key: str, value: str) -> None:
    """Insert or update one fact in the meta table (an upsert both databases speak)."""
    Meta.insert(key=key, value=value).on_conflict(
        conflict_target=[Meta.key], update={Meta.value: value}).execute()


@contextmanager
def write_tx():
    """Run the block in a transaction that takes the write lock up front on SQLite.

    A deferred SQLite transaction that reads then writes can fail with "database is locked"
    instead of waiting; BEGIN IMMEDIATE makes it queue on busy_timeout like any writer.
    Writers queue before it, first on a lock of this process, then on a lock file next to
    the database shared by every process: SQLite's busy handler retries by sleeping (up to
    100 ms a try), which under load turned a 1 ms wait into a second.
    """
    if not is_sqlite():
        with db.atomic():
            yield
        return
    with _WRITE_LOCK, _process_queue(), db.atomic(lock_type="IMMEDIATE"):
        yield


def grouped(work):
    """Run ``work()`` (a few writes) in a write transaction, maybe shared with other threads.

    Group commit, SQLite only: while one thread commits, the writes other threads hand in
    queue; the next of them to go commits all of those in one transaction, each in a
    savepoint of its own, so one that raises (a duplicate key, a lost lease) is undone
    alone and its exception goes back to the thread that handed it in. Under concurrent
    webhooks and runs this turns a queue of small transactions, each waiting for the
    write lock and the GIL, into a few larger ones. ``work`` runs in whichever thread
    commits: it may only use its arguments and the database, never thread-local state.
    Returns what ``work`` returned. Inside a transaction, or on PostgreSQL (which writes
    concurrently; grouping there measured no clear gain), it is
    ``with write_tx(): work()``.
    """
    if not is_sqlite() or db.in_transaction():
        with write_tx():
            return work()
    job = _Job(work)
    with _GROUP:
        _group["queue"].append(job)
        while _group["busy"] and not job.done:
            _GROUP.wait()
        if not job.done:  # lead: commit everything queued so far, this job included
            _group["busy"] = True
            batch, _group["queue"] = _group["queue"], []
    if not job.done:
        try:
            _commit_group(batch)
        finally:
            with _GROUP:
                _group["busy"] = False
                _GROUP.notify_all()
    if job.error is not None:
        raise job.error
    return job.value


class _Job:
    __slots__ = ("work", "value", "error", "done")

    def __init__(self, work):
        self.work, self.value, self.error, self.done = work, None, None, False


def _commit_group(batch: list[_Job]) -> None:
    try:
        with write_tx():
            if len(batch) == 1:  # alone: no savepoint; an error rolls back the transaction
                batch[0].value = batch[0].work()
            else:
                for job in batch:
                    try:
                        with db.atomic():  # a savepoint: one failure undoes only itself
                            job.value = job.work()
                    except Exception as exc:
                        job.error = exc
    except BaseException as exc:  # the transaction itself failed: nothing of it was written
        for job in batch:
            job.value, job.error = None, job.error or exc
        if not isinstance(exc, Exception):
            raise  # an interrupt stops the leader; its followers get it as their error
    finally:
        for job in batch:
            job.done = True


_GROUP = threading.Condition(threading.Lock())
_group = {"queue": [], "busy": False}  # guarded by _GROUP
_WRITE_LOCK = threading.RLock()  # reentrant: a write may nest another (a savepoint)
_queue = {"pid": None, "path": None, "fd": None, "depth": 0}  # guarded by _WRITE_LOCK


@contextmanager
def _process_queue():
    """Hold ``<database>-writelock`` (flock) while writing; a no-op when nested."""
    fd = None if _queue["depth"] else _queue_fd()
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)  # the kernel wakes the next waiter at once
    _queue["depth"] += 1
    try:
        yield
    finally:
        _queue["depth"] -= 1
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)


def _queue_fd() -> int | None:
    """This process's own descriptor of the lock file (a forked child opens its own)."""
    path = getattr(db.obj, "database", None)
    if not path or path == ":memory:" or str(path).startswith("file:"):
        return None
    path = f"{path}-writelock"
    if _queue["pid"] != os.getpid() or _queue["path"] != path:
        if _queue["fd"] is not None and _queue["pid"] == os.getpid():
            os.close(_queue["fd"])
        try:  # an inherited descriptor shares its lock with the parent: never reuse it
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            fd = None  # a read-only directory: SQLite's busy handler still serializes
        _queue.update(pid=os.getpid(), path=path, fd=fd)
    return _queue["fd"]


def is_sqlite() -> bool:
    return db.obj is not None and db.obj.__class__.__name__.endswith("SqliteDatabase")
