"""The same models and engine on PostgreSQL (CONNECTOR_DATABASE_URL=postgresql://...).

Uses the server at CONNECTOR_TEST_POSTGRES_URL (default: the machine's 127.0.0.1:5432,
database test), each session in a schema of its own; skips, saying why, where none answers.
"""
from __future__ import annotations

import json
import os
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from connector import flows
from connector.engine import run_due
from connector.runtime import Runtime
from connector.signatures import sign
from connector.store import Run, TriggerState

from .conftest import connection_name, wait_for
from .test_engine import CALLS, FakePlugin, drain_in_batches, make_flow, queue

BASE = os.environ.get("CONNECTOR_TEST_POSTGRES_URL",
                      "postgresql://postgres@127.0.0.1:5432/test")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "flows"


@pytest.fixture(scope="module")
def pg_schema():
    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 is not installed "
                                                      "(pip install -e '.[postgres]')")
    try:
        con = psycopg2.connect(BASE, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {BASE}: {str(exc).strip().splitlines()[0]}")
    con.autocommit = True
    name = f"connector_test_{uuid.uuid4().hex[:10]}"
    con.cursor().execute(f'CREATE SCHEMA "{name}"')
    yield name
    con.cursor().execute(f'DROP SCHEMA "{name}" CASCADE')
    con.close()


@pytest.fixture
def pg_url(pg_schema):
    import psycopg2

    con = psycopg2.connect(BASE)
    con.autocommit = True
    cur = con.cursor()
    cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (pg_schema,))
    for (table,) in cur.fetchall():  # each test starts from an empty schema
        cur.execute(f'DROP TABLE "{pg_schema}"."{table}" CASCADE')
    con.close()
    return f"{BASE}?options=-csearch_path%3D{pg_schema}"


def test_a_new_postgres_database_gets_the_schema_and_a_stale_one_says_upgrade(make_host,
                                                                              pg_url):
    from connector import migrations, store

    host = make_host(database_url=pg_url)
    with host.database.connection_context():
        assert migrations.version_of(host.database) == migrations.SCHEMA_VERSION
    host.database.execute_sql("UPDATE meta SET value = '1'")
    with pytest.raises(Exception, match="run  connector db upgrade"):
        store.init_db(pg_url)


def two_hundred_queued(make_host, pg_url):
    """A host on PostgreSQL with 200 queued runs of a one-step flow."""
    host = make_host(extra_plugins=[FakePlugin()], database_url=pg_url)
    CALLS.clear()
    flow = make_flow(host, [{"name": "one", "action": "t.echo", "inputs": {"value": 1}}])
    for i in range(200):
        queue(host, flow, f"k{i}")
    return host


def test_concurrent_workers_claim_each_run_exactly_once(make_host, pg_url):
    host = two_hundred_queued(make_host, pg_url)
    barrier = threading.Barrier(6)

    def worker():
        barrier.wait()
        done = 0
        while True:
            ran = run_due(host, limit=20)
            if not ran and not Run.select().where(Run.status == Run.QUEUED).exists():
                return done
            done += ran

    with ThreadPoolExecutor(6) as pool:
        counts = list(pool.map(lambda _: worker(), range(6)))
    assert sum(counts) == 200 and CALLS[("echo", "one")] == 200  # none twice, none missed
    assert Run.select().where(Run.status == Run.SUCCEEDED).count() == 200
    assert sum(1 for c in counts if c) > 1  # the work really was shared


def test_concurrent_batch_claims_take_each_run_exactly_once(make_host, pg_url):
    host = two_hundred_queued(make_host, pg_url)
    counts = drain_in_batches(host, workers=6, batch=9)
    assert sum(counts) == 200 and CALLS[("echo", "one")] == 200  # none twice, none missed
    assert Run.select().where((Run.status == Run.SUCCEEDED) & (Run.attempts == 1)).count() == 200
    assert sum(1 for c in counts if c) > 1


@pytest.mark.covers("aiconnector.auto_recharge", "aiconnector.grant_credits")
def test_the_agency_flow_on_postgres_grants_once_under_a_delivery_storm(make_host, pg_url,
                                                                       sandbox):
    host = make_host(database_url=pg_url)
    info = sandbox.connections()["aiconnector"]
    host.add_connection(connection_name("aiconnector"), "aiconnector", info["credentials"],
                        info["base_url"])
    runtime = Runtime(host)
    runtime.start(port=0)
    try:
        flow = flows.save(host, flows.load_file(EXAMPLES / "auto-recharge-credits.yaml"))
        flows.enable(host, flow)
        secret = host.box.open(TriggerState.get(TriggerState.flow == flow).sealed_subscription)
        body = json.dumps({"event": "auto_recharge", "idempotency_key": "pg-1",
                           "email": "client@agency.example", "amount": 7}).encode()
        headers = {**sign(secret["secret"], "pg-1", body), "Content-Type": "application/json"}
        url = flows.webhook_url(host, flow)
        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(lambda _: requests.post(url, data=body, headers=headers,
                                                            timeout=30), range(100)))
        assert {a.status_code for a in answers} == {200}
        assert sum(a.json()["accepted"] for a in answers) == 1
        assert wait_for(lambda: Run.select().where(Run.status == Run.SUCCEEDED).count() == 1)
        ledger = Counter(e["email"] for e in sandbox.state()["aiconnector"]["credit_ledger"])
        assert ledger == {"client@agency.example": 1}
    finally:
        runtime.stop()
