"""One scheduler leader among many processes; another takes over when it dies."""
from __future__ import annotations

import multiprocessing
import time
import uuid

from connector.config import Settings
from connector.leader import LeaderLock
from connector.scheduler import Scheduler

from .conftest import wait_for
from .test_postgres import pg_schema, pg_url  # noqa: F401  (fixtures)


def _hold_lock(url: str, ready) -> None:  # runs in another process, until it is killed
    lock = LeaderLock(Settings.from_env({}, database_url=url))
    ready.put(lock.try_acquire())
    time.sleep(60)  # (waiting on a multiprocessing primitive would wedge it when killed)


def test_on_sqlite_one_process_leads_and_another_takes_over_when_it_dies(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Queue()
    other = ctx.Process(target=_hold_lock, args=(url, ready))
    other.start()
    try:
        assert ready.get(timeout=10) is True
        mine = LeaderLock(Settings.from_env({}, database_url=url))
        assert mine.try_acquire() is False  # the other process leads
        other.kill()  # the leader dies
        other.join(10)
        assert wait_for(mine.try_acquire, timeout=5)
        assert mine.try_acquire() is True  # and keeps it
        mine.release()
    finally:
        if other.is_alive():
            other.kill()


def test_on_postgres_the_advisory_lock_moves_when_its_holder_dies(pg_url):  # noqa: F811
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Queue()
    other = ctx.Process(target=_hold_lock, args=(pg_url, ready))
    other.start()
    try:
        assert ready.get(timeout=10) is True
        mine = LeaderLock(Settings.from_env({}, database_url=pg_url))
        assert mine.try_acquire() is False
        other.kill()
        other.join(10)
        assert wait_for(mine.try_acquire, timeout=10)
        mine.release()
    finally:
        if other.is_alive():
            other.kill()


def test_on_postgres_deployments_in_two_schemas_each_have_their_leader(pg_url):  # noqa: F811
    # Advisory locks are per database: the schema is part of the key, or a second
    # deployment (or a parallel test session) sharing the database could never lead.
    import psycopg2

    from .test_postgres import BASE

    other_schema = f"connector_test_{uuid.uuid4().hex[:10]}"
    con = psycopg2.connect(BASE)
    con.autocommit = True
    con.cursor().execute(f'CREATE SCHEMA "{other_schema}"')
    first = LeaderLock(Settings.from_env({}, database_url=pg_url))
    same = LeaderLock(Settings.from_env({}, database_url=pg_url))
    second = LeaderLock(Settings.from_env(
        {}, database_url=f"{BASE}?options=-csearch_path%3D{other_schema}"))
    try:
        assert first.try_acquire() is True
        assert same.try_acquire() is False  # one leader per schema
        assert second.try_acquire() is True
    finally:
        for lock in (first, same, second):
            lock.release()
        con.cursor().execute(f'DROP SCHEMA "{other_schema}" CASCADE')
        con.close()


def test_only_the_leading_scheduler_runs_polls_and_schedules(make_host):
    host = make_host()
    first, second = Scheduler(host, leader_interval=0.2), Scheduler(host, leader_interval=0.2)
    first.start()
    second.start()
    try:
        assert first.is_leader and not second.is_leader
        assert first.aps.get_job("schedules") and second.aps.get_job("schedules") is None
        first.stop()  # the leader goes away
        assert wait_for(lambda: second.is_leader, timeout=5)
        assert wait_for(lambda: second.aps.get_job("schedules") is not None, timeout=5)
    finally:
        second.stop()
        first.stop()
