"""Credentials at rest: a canary API key never shows, a changed byte is a clear error,
`connector keys rotate` re-seals everything, and no start without a key outside the demo.

test_crypto.py covers the SecretBox and the key file; this file follows one distinctive key
through the whole product: stored as a connection, used by real runs against the sandbox
(a webhook in, calls out: in an x-api-key header for grants, in the apiKey query string for
contacts), and looked for in the SQLite files (main, -wal, -shm), in DEBUG logs (caplog in
process, `connector -vv serve` in a subprocess) and in what the CLI prints.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml
from click.testing import CliRunner

from connector import flows
from connector.config import Settings
from connector.crypto import SecretBox, new_key
from connector.errors import ConfigurationError
from connector.host import Host
from connector.runtime import Runtime
from connector.signatures import sign
from connector.store import Connection, Meta, Run, TriggerState

from .conftest import wait_for

CANARY = "aic_live_CANARY-7Qm2xV9pL4tR8wZ1-must-never-leak"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "flows"
SUBACCOUNT = "client@agency.example"
ROOT = Path(__file__).resolve().parent.parent


def cli_main():
    """`connector`, with the `keys` group added here if cli.py does not wire it yet."""
    from connector.cli import main
    from connector.cli_keys import keys

    if "keys" not in main.commands:
        main.add_command(keys)
    return main


#: the same for a subprocess
CLI = ("import sys; from connector.cli import main; from connector.cli_keys import keys\n"
       "'keys' in main.commands or main.add_command(keys)\nmain()")


def database_files(url: str) -> list[Path]:
    path = Path(url.split(":///", 1)[1])
    return [p for p in path.parent.glob(path.name + "*") if p.is_file()]


def database_bytes(url: str) -> bytes:
    """Every byte SQLite holds for the database: the main file, its WAL and shared memory."""
    return b"".join(p.read_bytes() for p in database_files(url))


def example(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())


@pytest.fixture
def env(monkeypatch, tmp_path, sandbox) -> dict:
    """CONNECTOR_* for this test's database and key; the sandbox accepts the canary key."""
    values = {"CONNECTOR_DATABASE_URL": f"sqlite:///{tmp_path / 'canary.db'}",
              "CONNECTOR_SECRET_KEY": new_key()}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    with sandbox.aiconnector.lock:
        sandbox.aiconnector.keys.add(CANARY)
    return values


def wire(host: Host, sandbox) -> None:
    """One connection per sandbox service, AI Connector's holding the canary."""
    for app, info in sandbox.connections().items():
        if app not in host.catalog.apps:
            continue
        creds = dict(info["credentials"])
        if app == "aiconnector":
            creds["api_key"] = CANARY
        host.add_connection(app.replace("_", "-"), app, creds, info["base_url"])


def switch_on(host: Host, name: str):
    flow = flows.enable(host, flows.save(host, example(name)))
    state = TriggerState.get(TriggerState.flow == flow)
    return flow, host.box.open(state.sealed_subscription)["secret"]


def deliveries(url_of, recharge, call) -> None:
    """A signed auto-recharge (-> grant credits, key in a header) and a signed Samora
    CALL_FINISHED (-> create contact and add to list, key in the query string)."""
    (flow, secret), (cflow, csecret) = recharge, call
    body = json.dumps({"event": "auto_recharge", "idempotency_key": f"ar_{uuid.uuid4().hex}",
                       "email": SUBACCOUNT, "amount": 25}).encode()
    answer = requests.post(url_of(flow), data=body, timeout=10,
                           headers={"Content-Type": "application/json",
                                    **sign(secret, f"msg_{uuid.uuid4().hex}", body)})
    assert answer.status_code == 200, answer.text
    body = json.dumps({"event": "CALL_FINISHED", "timestamp": "2026-01-15T10:31:00Z",
                       "data": {"call_id": f"call-{uuid.uuid4().hex}", "to_number": "+919876543210",
                                "status": "CALL_FINISHED", "context": {"contact_name": "Jane"}}}
                      ).encode()
    answer = requests.post(url_of(cflow), data=body, timeout=10,
                           headers={"Content-Type": "application/json",
                                    **sign(csecret, f"msg_{uuid.uuid4().hex}", body)})
    assert answer.status_code == 200, answer.text


def all_final(expected: int):
    runs = list(Run.select())
    return len(runs) >= expected and all(r.status in Run.FINAL for r in runs)


@pytest.fixture
def urllib3_level():
    """Set urllib3's log level for one test, with setLevel (which also clears logging's
    per-logger caches, so what earlier tests configured does not count); restored after."""
    logger = logging.getLogger("urllib3")
    old = logger.level
    yield logger.setLevel
    logger.setLevel(old)


def cli(*args, env_overrides: dict | None = None):
    runner = CliRunner()
    return runner.invoke(cli_main(), [str(a) for a in args], env=env_overrides)


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    output = result.output.strip()
    assert "Traceback" not in output and len(output.splitlines()) == 1, output
    assert output.startswith("error: "), output
    return output


# -- the canary never shows --------------------------------------------------------------------

def test_the_canary_never_shows_at_rest_in_logs_or_in_cli_output(env, sandbox, caplog,
                                                                  urllib3_level):
    caplog.set_level(logging.DEBUG)  # everything the connector logs, at DEBUG
    # as `connector -v` does: urllib3 prints every request URL at DEBUG (the host cuts query strings out)
    urllib3_level(logging.WARNING)
    host = Host(Settings.from_env(dispatch_interval=0.05))
    wire(host, sandbox)
    runtime = Runtime(host)
    runtime.start(port=0)
    try:
        recharge = switch_on(host, "auto-recharge-credits")
        call = switch_on(host, "call-finished-add-to-list")
        deliveries(lambda f: flows.webhook_url(host, f), recharge, call)
        assert wait_for(lambda: all_final(2)), [(r.id, r.status) for r in Run.select()]
        runs = list(Run.select())
        assert [r.status for r in runs] == [Run.SUCCEEDED] * 2, [r.error for r in runs]
        ai = sandbox.state()["aiconnector"]
        assert [e["amount"] for e in ai["credit_ledger"]] == [25]  # the key really worked
        assert any(lst["members"] for lst in ai["lists"])
        assert CANARY.encode() not in database_bytes(env["CONNECTOR_DATABASE_URL"])  # WAL live
    finally:
        runtime.stop()
        host.close()
    assert CANARY.encode() not in database_bytes(env["CONNECTOR_DATABASE_URL"])
    assert caplog.records and any(r.levelno == logging.DEBUG or r.name.startswith("connector")
                                  for r in caplog.records)
    assert CANARY not in caplog.text
    for record in caplog.records:
        assert CANARY not in record.getMessage()
        assert CANARY not in repr(record.args)

    ids = [str(r.id) for r in runs]
    outputs = [cli("runs", "list"), cli("runs", "list", "--json"), cli("connections", "list"),
               cli("connections", "list", "--json"), cli("flows", "list", "--json"),
               cli("flows", "export", "auto-recharge-credits"),
               cli("flows", "export", "call-finished-add-to-list"),
               cli("connections", "test", "aiconnector")]
    for run_id in ids:
        outputs += [cli("runs", "show", run_id, "--json"), cli("runs", "show", run_id)]
    for result in outputs:
        assert result.exit_code == 0, result.output
        assert CANARY not in result.output
    shown = json.loads(cli("runs", "show", ids[0], "--json").stdout)
    assert shown["steps"] and shown["status"] == "succeeded"  # it shows the run, not the key


def test_the_canary_never_shows_in_debug_logs_of_an_embedded_host(env, sandbox, caplog,
                                                                  urllib3_level):
    caplog.set_level(logging.DEBUG)
    # an app embedding the host configures logging its own way; no `connector` command ran
    urllib3_level(logging.NOTSET)
    host = Host(Settings.from_env())
    try:
        wire(host, sandbox)
        host.test_connection("aiconnector")  # GET ...?apiKey=<key>
    finally:
        host.close()
    assert CANARY not in caplog.text


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_canary_never_shows_in_connector_vv_serve(env, sandbox, tmp_path):
    host = Host(Settings.from_env())
    try:
        wire(host, sandbox)
        recharge = switch_on(host, "auto-recharge-credits")
        call = switch_on(host, "call-finished-add-to-list")
        tokens = {recharge[0].id: recharge[0].webhook_token, call[0].id: call[0].webhook_token}
    finally:
        host.close()
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-c", CLI, "-vv", "serve", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
            env={**os.environ, "CONNECTOR_DISPATCH_INTERVAL": "0.1"})
        try:
            root = f"http://127.0.0.1:{port}"
            assert wait_for(lambda: _healthy(root), timeout=30), log.read_text()
            deliveries(lambda f: f"{root}/hooks/{tokens[f.id]}", recharge, call)
            host = Host(Settings.from_env())
            try:
                assert wait_for(lambda: all_final(2), timeout=30), log.read_text()
                assert [r.status for r in Run.select()] == [Run.SUCCEEDED] * 2
            finally:
                host.close()
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    text = log.read_text()
    assert " DEBUG " in text and " INFO " in text  # -vv really logged at DEBUG
    assert CANARY not in text
    assert "Traceback" not in text
    assert CANARY.encode() not in database_bytes(env["CONNECTOR_DATABASE_URL"])
    done = subprocess.run([sys.executable, "-c", CLI, "-vv", "connections", "test",
                           "aiconnector"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert CANARY not in done.stdout + done.stderr


def _healthy(root: str) -> bool:
    try:
        return requests.get(f"{root}/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


# -- a changed byte ----------------------------------------------------------------------------

def tamper(url: str, table: str, column: str) -> str:
    """Change one character in the middle of the first sealed value; return the original."""
    con = sqlite3.connect(url.split(":///", 1)[1])
    try:
        rowid, value = con.execute(f"SELECT rowid, {column} FROM {table} WHERE {column} IS NOT "
                                   f"NULL ORDER BY rowid LIMIT 1").fetchone()
        middle = len(value) // 2
        changed = value[:middle] + ("A" if value[middle] != "A" else "B") + value[middle + 1:]
        con.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", (changed, rowid))
        con.commit()
        return value
    finally:
        con.close()


def test_a_changed_byte_is_a_clear_error_everywhere(env, sandbox):
    host = Host(Settings.from_env())
    try:
        wire(host, sandbox)
        flow, secret = switch_on(host, "auto-recharge-credits")
    finally:
        host.close()
    url = env["CONNECTOR_DATABASE_URL"]
    original = tamper(url, "connection", "sealed")  # the first connection: contacts-api
    names = [c for c in sqlite3.connect(url.split(":///", 1)[1]).execute(
        "SELECT name FROM connection ORDER BY rowid")]
    broken = names[0][0]

    host = Host(Settings.from_env())
    try:
        conn = host.connection(broken)
        with pytest.raises(ConfigurationError) as info:
            host.credentials(conn)
        message = str(info.value)
        assert "cannot be decrypted" in message and "changed" in message
        for secret_text in (env["CONNECTOR_SECRET_KEY"], CANARY, original, conn.sealed,
                            sandbox.connections()["contacts_api"]["credentials"]["api_key"]):
            assert secret_text not in message
        assert host.credentials(host.connection("aiconnector"))["api_key"] == CANARY
    finally:
        host.close()

    line = one_error_line(cli("connections", "test", broken))
    assert "cannot be decrypted" in line and env["CONNECTOR_SECRET_KEY"] not in line
    line = one_error_line(cli("keys", "check"))
    assert f"connection {broken}" in line
    line = one_error_line(cli("keys", "rotate"))
    assert f"connection {broken}" in line and "nothing was changed" in line

    # a changed webhook subscription: the flow's deliveries cannot be verified; said in one line
    tamper(url, "triggerstate", "sealed_subscription")
    line = one_error_line(cli("flows", "secret", "auto-recharge-credits"))
    assert "cannot be decrypted" in line and secret not in line


def test_a_run_with_changed_credentials_fails_with_the_reason(env, sandbox):
    host = Host(Settings.from_env())
    try:
        wire(host, sandbox)
        flow, secret = switch_on(host, "auto-recharge-credits")
        con = sqlite3.connect(env["CONNECTOR_DATABASE_URL"].split(":///", 1)[1])
        value = con.execute(
            "SELECT sealed FROM connection WHERE name = 'aiconnector'").fetchone()[0]
        con.execute("UPDATE connection SET sealed = ? WHERE name = 'aiconnector'",
                    (value[:-10] + "A" * 10,))
        con.commit()
        con.close()
        from connector import engine
        from connector.intake import ingest

        ingest(flow, host.catalog.trigger(flow.trigger_key), [("ar_tampered", {
            "idempotency_key": "ar_tampered", "email": SUBACCOUNT, "amount": 5})])
        engine.run_due(host)
        [run] = list(Run.select())
        assert run.status == Run.FAILED
        assert "cannot be decrypted" in run.error
        assert env["CONNECTOR_SECRET_KEY"] not in run.error and CANARY not in run.error
        assert sandbox.state()["aiconnector"]["credit_ledger"] == []
    finally:
        host.close()


# -- connector keys rotate -----------------------------------------------------------------------

def sealed_values(url: str) -> list[str]:
    con = sqlite3.connect(url.split(":///", 1)[1])
    try:
        rows = con.execute("SELECT sealed FROM connection UNION ALL SELECT sealed_subscription "
                           "FROM triggerstate WHERE sealed_subscription IS NOT NULL UNION ALL "
                           "SELECT value FROM meta WHERE key = 'session_secret'").fetchall()
        return [r[0] for r in rows]
    finally:
        con.close()


@pytest.fixture
def populated(env, sandbox):
    """Connections, two switched-on webhook flows and a sealed session secret."""
    host = Host(Settings.from_env())
    try:
        wire(host, sandbox)
        switch_on(host, "auto-recharge-credits")
        switch_on(host, "call-finished-add-to-list")
        Meta.insert(key="session_secret", value=host.box.seal("cookie-signing-secret")).execute()
        expected = {"connections": {c.name: host.credentials(c) for c in Connection.select()},
                    "subscriptions": {s.flow_id: host.box.open(s.sealed_subscription) for s in
                                      TriggerState.select().where(
                                          TriggerState.sealed_subscription.is_null(False))}}
    finally:
        host.close()
    return expected


def opens_everything(box: SecretBox, url: str) -> bool:
    return all(box.opens(v) for v in sealed_values(url))


def opens_nothing(box: SecretBox, url: str) -> bool:
    return not any(box.opens(v) for v in sealed_values(url))


def assert_same_secrets(box: SecretBox, expected: dict) -> None:
    assert {c.name: box.open(c.sealed) for c in Connection.select()} == expected["connections"]
    assert {s.flow_id: box.open(s.sealed_subscription) for s in TriggerState.select().where(
        TriggerState.sealed_subscription.is_null(False))} == expected["subscriptions"]
    assert box.open(Meta.get(Meta.key == "session_secret").value) == "cookie-signing-secret"


def test_keys_rotate_with_the_environment_key(env, sandbox, populated, monkeypatch):
    url, old_key = env["CONNECTOR_DATABASE_URL"], env["CONNECTOR_SECRET_KEY"]
    before = sealed_values(url)
    connections = len(populated["connections"])
    assert connections >= 3 and len(before) == connections + 2 + 1  # + subscriptions, session

    result = cli("keys", "rotate")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    new = next(ln for ln in lines if ln.startswith("new key: ")).split(": ", 1)[1]
    SecretBox(new)  # a Fernet key
    assert result.output.count(new) == 1  # printed once
    assert old_key not in result.output
    assert (f"rotated: {connections} connections, 2 webhook subscriptions, 1 other secrets"
            in result.output)
    assert "CONNECTOR_SECRET_KEY" in lines[-1]

    assert opens_nothing(SecretBox(old_key), url)
    assert opens_everything(SecretBox(new), url)
    data = database_bytes(url)
    for token in before:  # old ciphertexts are overwritten, not left in free pages or the WAL
        assert token.encode() not in data

    # the old key now fails in one line; the new key runs flows against the sandbox
    line = one_error_line(cli("connections", "test", "aiconnector"))
    assert "cannot be decrypted" in line
    monkeypatch.setenv("CONNECTOR_SECRET_KEY", new)
    assert cli("keys", "check").exit_code == 0
    host = Host(Settings.from_env(dispatch_interval=0.05))
    runtime = Runtime(host)
    runtime.start(port=0)
    try:
        assert_same_secrets(host.box, populated)
        recharge = [f for f in flows.Flow.select() if f.name == "auto-recharge-credits"][0]
        call = [f for f in flows.Flow.select() if f.name == "call-finished-add-to-list"][0]
        secrets_ = {f.id: host.box.open(TriggerState.get(TriggerState.flow == f)
                                        .sealed_subscription)["secret"] for f in (recharge, call)}
        deliveries(lambda f: flows.webhook_url(host, f), (recharge, secrets_[recharge.id]),
                   (call, secrets_[call.id]))
        assert wait_for(lambda: all_final(2))
        assert [r.status for r in Run.select()] == [Run.SUCCEEDED] * 2
        assert [e["amount"] for e in sandbox.state()["aiconnector"]["credit_ledger"]] == [25]
    finally:
        runtime.stop()
        host.close()


def test_keys_rotate_to_a_given_key_prints_no_key(env, populated, monkeypatch):
    url, given = env["CONNECTOR_DATABASE_URL"], new_key()
    monkeypatch.setenv("CONNECTOR_NEW_SECRET_KEY", given)
    result = cli("keys", "rotate")
    assert result.exit_code == 0, result.output
    assert given not in result.output and env["CONNECTOR_SECRET_KEY"] not in result.output
    assert "--new-key" in result.output
    assert opens_everything(SecretBox(given), url)
    assert opens_nothing(SecretBox(env["CONNECTOR_SECRET_KEY"]), url)
    monkeypatch.delenv("CONNECTOR_NEW_SECRET_KEY")
    line = one_error_line(cli("keys", "rotate", "--new-key", "not-a-key"))
    assert "--new-key" in line and "connector keygen" in line
    monkeypatch.setenv("CONNECTOR_SECRET_KEY", given)
    line = one_error_line(cli("keys", "rotate", "--new-key", given))
    assert "current key" in line and given not in line


@pytest.fixture
def embedded(monkeypatch, tmp_path, sandbox):
    """The embedded default: SQLite, no CONNECTOR_SECRET_KEY, a key file beside the database."""
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite:///{data / 'connector.db'}"
    monkeypatch.setenv("CONNECTOR_DATABASE_URL", url)
    host = Host(Settings.from_env())
    try:
        wire(host, sandbox)
        switch_on(host, "auto-recharge-credits")
    finally:
        host.close()
    key_file = data / "connector.key"
    assert key_file.exists()
    return url, key_file


def test_keys_rotate_with_the_embedded_key_file(embedded):
    url, key_file = embedded
    old = key_file.read_text().strip()
    result = cli("keys", "rotate")
    assert result.exit_code == 0, result.output
    new = key_file.read_text().strip()
    assert new != old and new not in result.output and old not in result.output
    assert str(key_file) in result.output
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not (key_file.parent / "connector.key.next").exists()
    assert opens_nothing(SecretBox(old), url) and opens_everything(SecretBox(new), url)
    host = Host(Settings.from_env())
    try:
        assert host.credentials(host.connection("aiconnector"))["api_key"] == CANARY
    finally:
        host.close()


def crash_in_rotate(at: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run `connector keys rotate` in a process that dies (os._exit) at ``at``."""
    code = ("import os\nimport connector.crypto as c\n"
            f"c.{at} = lambda *a, **k: os._exit(9)\n" + CLI)
    return subprocess.run([sys.executable, "-c", code, "keys", "rotate"], capture_output=True,
                          text=True, timeout=120, cwd=cwd, env=dict(os.environ))


def test_a_crash_before_the_commit_keeps_the_old_key(embedded, tmp_path):
    url, key_file = embedded
    old = key_file.read_text().strip()
    done = crash_in_rotate("rotate", tmp_path)  # after connector.key.next, before the commit
    assert done.returncode == 9, done.stderr
    pending = key_file.parent / "connector.key.next"
    assert pending.exists() and opens_everything(SecretBox(old), url)
    host = Host(Settings.from_env())  # the next start settles it
    try:
        assert host.credentials(host.connection("aiconnector"))["api_key"] == CANARY
    finally:
        host.close()
    assert not pending.exists() and key_file.read_text().strip() == old


def test_a_crash_after_the_commit_keeps_the_new_key(embedded, tmp_path):
    url, key_file = embedded
    old = key_file.read_text().strip()
    done = crash_in_rotate("promote_next_key", tmp_path)  # committed, key file not replaced
    assert done.returncode == 9, done.stderr
    pending = key_file.parent / "connector.key.next"
    new = pending.read_text().strip()
    assert key_file.read_text().strip() == old
    assert opens_nothing(SecretBox(old), url) and opens_everything(SecretBox(new), url)
    host = Host(Settings.from_env())  # the next start finishes the rotation
    try:
        assert host.credentials(host.connection("aiconnector"))["api_key"] == CANARY
    finally:
        host.close()
    assert not pending.exists() and key_file.read_text().strip() == new
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_a_torn_or_foreign_next_key_file(embedded):
    url, key_file = embedded
    pending = key_file.parent / "connector.key.next"
    pending.write_text("half-writ")  # cut short: discarded
    Host(Settings.from_env()).close()
    assert not pending.exists()
    pending.write_text(new_key())  # a key that opens nothing here, and neither does the file
    key_file.write_text(new_key())
    with pytest.raises(ConfigurationError) as info:
        Host(Settings.from_env())
    message = str(info.value)
    assert "connector.key.next" in message and "interrupted" in message
    assert pending.read_text().strip() not in message


# -- no start without a key outside the embedded default ----------------------------------------

@pytest.mark.parametrize("variables", [
    {"CONNECTOR_ENV": "production"},
    {"CONNECTOR_DATABASE_URL": "postgresql://connector@127.0.0.1:1/connector"},
])
@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["keys", "rotate"],
                                     ["flows", "list"]])
def test_no_start_without_a_key_outside_the_embedded_default(tmp_path, variables, command):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    environment.update({"CONNECTOR_DATABASE_URL": f"sqlite:///{tmp_path / 'prod.db'}"},
                       **variables)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", CLI, *command], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, env=environment)
    assert time.monotonic() - started < 30  # it stops at once, it does not serve
    assert done.returncode == 1, done.stdout + done.stderr
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert lines == ["error: CONNECTOR_SECRET_KEY is not set; production and non-SQLite "
                     "databases need it (make one with: connector keygen)"], lines
    assert not (tmp_path / "connector.key").exists()
    assert not (tmp_path / "prod.db").exists() or "DATABASE_URL" in json.dumps(variables)
