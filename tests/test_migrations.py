"""Schema upgrades: a database made by the first release, with data, upgrades and loses nothing.

tests/data/schema_v1.sql is the DDL the first release (schema version 1) created, frozen.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from connector import flows, migrations
from connector.config import Settings
from connector.crypto import SecretBox, new_key
from connector.errors import ConfigurationError
from connector.host import Host
from connector.store import (
    Connection, Flow, IdempotencyRecord, Run, SeenItem, Step, StepRun, TriggerState, init_db,
)

V1 = Path(__file__).resolve().parent / "data" / "schema_v1.sql"
NOW = "2026-01-15 10:30:00"


def make_v1_database(path: Path, key: str) -> None:
    """Create a schema-1 database holding a connection, a flow, its runs and ledgers."""
    box = SecretBox(key)
    con = sqlite3.connect(path)
    con.executescript(V1.read_text())
    rows = [
        ("INSERT INTO meta VALUES ('schema_version', '1')", ()),
        ("INSERT INTO connection VALUES (1, 'aiconnector', 'aiconnector', "
         "'http://127.0.0.1:9/aiconnector/v1', ?, ?, ?)",
         (box.seal({"api_key": "aic_old_key"}), NOW, NOW)),
        ("INSERT INTO flow VALUES (1, 'auto-recharge-credits', 'old flow', "
         "'aiconnector.auto_recharge', 1, ?, 60, 1, ?, 'tok-old', ?, ?)",
         (json.dumps({"signature": "standard_webhooks"}), NOW, NOW, NOW)),
        ("INSERT INTO step VALUES (1, 1, 0, 'grant', 'aiconnector.grant_credits', 1, ?, NULL)",
         (json.dumps({"email": "{{ trigger.email }}", "amount": "{{ trigger.amount }}",
                      "idempotency_key": "{{ trigger.idempotency_key }}"}),)),
        ("INSERT INTO triggerstate VALUES (1, 1, NULL, 1, ?, NULL, NULL, ?)",
         (box.seal({"secret": "whsec_b2xkIHNlY3JldCBmb3IgdGVzdHM=", "url": "x"}), NOW)),
        ("INSERT INTO seenitem VALUES (1, 1, 'ar-1', ?, NULL)", (NOW,)),
        ("INSERT INTO run VALUES (1, 1, 'failed', ?, 'ar-1', 1, 'step grant: HTTP 404', "
         "'grant', ?, NULL, ?, ?, ?)",
         (json.dumps({"idempotency_key": "ar-1", "email": "a@b.example", "amount": 5}),
          NOW, NOW, NOW, NOW)),
        ("INSERT INTO steprun VALUES (1, 1, 'grant', 0, 'aiconnector.grant_credits', 'failed', "
         "?, NULL, 'HTTP 404', 1, ?, ?)", (json.dumps({"email": "a@b.example"}), NOW, NOW)),
        ("INSERT INTO stepattempt VALUES (1, 1, 1, 'failed', 'HTTP 404', NULL, ?, 12.5)", (NOW,)),
        ("INSERT INTO idempotencyrecord VALUES (1, 'aiconnector.grant_credits', 'ar-0', 'h', "
         "'done', ?, 7, 'grant', ?, ?)", (json.dumps({"new_balance": 42}), NOW, NOW)),
    ]
    for sql, args in rows:
        con.execute(sql, args)
    con.commit()
    con.close()


@pytest.fixture
def old_db(tmp_path):
    key = new_key()
    path = tmp_path / "old.db"
    make_v1_database(path, key)
    return path, key


def test_the_first_release_schema_upgrades_on_start_and_loses_nothing(old_db):
    path, key = old_db
    host = Host(Settings.from_env({}, database_url=f"sqlite:///{path}", secret_key=key))
    try:
        with host.database.connection_context():
            assert migrations.version_of(host.database) == migrations.SCHEMA_VERSION
        assert host.credentials(host.connection("aiconnector")) == {"api_key": "aic_old_key"}
        flow = flows.get("auto-recharge-credits")
        assert flow.enabled and flow.pause_after == 0 and flow.paused_reason is None
        assert flows.export(flow)["steps"][0]["inputs"]["amount"] == "{{ trigger.amount }}"
        state = TriggerState.get(TriggerState.flow == flow)
        assert host.box.open(state.sealed_subscription)["secret"].startswith("whsec_")
        assert SeenItem.get().key == "ar-1"
        run = Run.get()
        assert run.status == Run.FAILED and run.item["amount"] == 5 and run.replay_of is None
        step = StepRun.get()
        assert step.error == "HTTP 404" and step.resume_at is None
        assert step.attempt_log.get().duration_ms == 12.5
        record = IdempotencyRecord.get()
        assert record.response == {"new_balance": 42} and record.run_id == 7
        # what version 2 added works on the upgraded data
        data = flows.export(flow)
        data["steps"] = [{"name": "each", "action": "looping.for_each",
                          "inputs": {"items": "{{ trigger.rows }}"},
                          "steps": data["steps"]}]
        data["on_failure"] = {"pause_after": 3}
        flows.disable(host, flow)
        saved = flows.save(host, data)
        assert Step.get(Step.name == "grant").parent_id == Step.get(Step.name == "each").id
        assert Flow.get_by_id(saved.id).pause_after == 3
        from connector.engine import replay
        assert replay(run.id, item={"rows": []}).replay_of == run.id
        assert Connection.select().count() == 1
        # what version 3 added: throttles, off until set
        conn = host.connection("aiconnector")
        assert conn.rate_limit is None and conn.rate_window is None
        assert Flow.get_by_id(saved.id).concurrency == 0
        from connector import throttle
        assert throttle.set_override(conn, 10, 60).rate_limit == 10
        assert throttle.acquire("conn:1:60", throttle.RateLimit(1, 60)) == 0.0
        data["concurrency"] = 1
        assert flows.save(host, data).concurrency == 1
    finally:
        host.close()


def test_a_server_database_is_not_upgraded_behind_the_operators_back(old_db):
    path, _key = old_db
    with pytest.raises(ConfigurationError, match="run  connector db upgrade"):
        init_db(f"sqlite:///{path}", upgrade=False)


def test_a_database_from_a_newer_connector_is_refused(old_db):
    path, _key = old_db
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value = '99'")
    con.commit()
    con.close()
    with pytest.raises(ConfigurationError, match="newer than this connector"):
        init_db(f"sqlite:///{path}")


def test_db_upgrade_command(old_db, monkeypatch):
    from connector.cli import main

    path, key = old_db
    monkeypatch.setenv("CONNECTOR_DATABASE_URL", f"sqlite:///{path}")
    monkeypatch.setenv("CONNECTOR_SECRET_KEY", key)
    result = CliRunner().invoke(main, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert f"version {migrations.SCHEMA_VERSION}" in result.output
    con = sqlite3.connect(path)
    columns = {row[1] for row in con.execute("PRAGMA table_info(step)")}
    indexes = {row[1] for row in con.execute("PRAGMA index_list(step)")}
    con.close()
    assert {"parent_id", "branch", "branches"} <= columns
    assert "step_flow_id_position" not in indexes
    con = sqlite3.connect(path)
    flow_columns = {row[1] for row in con.execute("PRAGMA table_info(flow)")}
    conn_columns = {row[1] for row in con.execute("PRAGMA table_info(connection)")}
    tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert con.execute("SELECT concurrency FROM flow").fetchall() == [(0,)]
    con.close()
    assert "concurrency" in flow_columns and {"rate_limit", "rate_window"} <= conn_columns
    assert "ratewindow" in tables
