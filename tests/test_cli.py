"""The `connector` command through click's CliRunner, against a temp database and the sandbox.

Every invocation builds its own Host from CONNECTOR_* variables (set per test with
monkeypatch), exactly as a user's shell would. A mistake a user can fix must come back as one
line starting with ``error:``, a non-zero exit code, and never a traceback.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from connector.cli import main
from connector.config import Settings
from connector.crypto import new_key

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "flows"
CONNECTION_NAMES = {"contacts_api": "contacts-api", "samora": "samora",
                    "aiconnector": "aiconnector", "samva": "samva"}
PRODUCT_KEYS = {
    "contacts_api.new_contact": "trigger",
    "samora.trigger_call": "action",
    "samora.call_finished": "trigger",
    "aiconnector.create_contact": "action",
    "aiconnector.add_to_list": "action",
    "aiconnector.grant_credits": "action",
    "aiconnector.auto_recharge": "trigger",
}


@pytest.fixture
def env(monkeypatch, tmp_path):
    """Point the CLI at this test's own SQLite file and a fresh Fernet key."""
    values = {"CONNECTOR_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
              "CONNECTOR_SECRET_KEY": new_key()}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def cli(env):
    """Run ``connector ARGS...``; return click's Result (output holds stdout and stderr)."""
    runner = CliRunner()

    def invoke(*args, input=None):
        return runner.invoke(main, [str(a) for a in args], input=input)

    return invoke


@pytest.fixture
def wired(cli, sandbox):
    """Add one connection per sandbox service through the CLI, named as in examples/flows."""
    for app, name in CONNECTION_NAMES.items():
        info = sandbox.connections()[app]
        fields = [arg for k, v in info["credentials"].items() for arg in ("--field", f"{k}={v}")]
        result = cli("connections", "add", name, "--app", app,
                     "--base-url", info["base_url"], *fields)
        assert result.exit_code == 0, result.output
    return sandbox


@contextmanager
def in_process():
    """A Host on the CLI's database (same env), for what the CLI cannot do: run the engine."""
    from connector.host import Host

    host = Host(Settings.from_env())
    try:
        yield host
    finally:
        host.close()


def ok(result):
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


def assert_error(result, *needles):
    """One clean line: exit non-zero, 'error: ...', no traceback, mentioning each needle."""
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {result.exception!r}")
    output = result.output.strip()
    assert "Traceback" not in output
    assert len(output.splitlines()) == 1, f"expected one line, got:\n{output}"
    assert output.startswith("error:"), output
    for needle in needles:
        assert needle in output, f"{needle!r} not in {output!r}"
    return output


def write(tmp_path, name, data) -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def example(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())


# -- plugins ------------------------------------------------------------------------------------

def _bundled_entry_points() -> dict[str, str]:
    return {ep.name: ep.value for ep in metadata.entry_points(group="connector")
            if ep.value.startswith("connector.")}


def test_plugins_json_lists_every_app_trigger_and_action_with_its_plugin(cli):
    result = ok(cli("plugins", "--json"))
    rows = json.loads(result.stdout)
    assert isinstance(rows, list) and rows
    for row in rows:
        assert row["kind"] in ("app", "trigger", "action", "search"), row
        for name in ("key", "app", "label", "plugin"):
            assert isinstance(row.get(name), str) and row[name], (name, row)
    by_key = {row["key"]: row for row in rows}
    for app in ("contacts_api", "samora", "aiconnector"):
        assert by_key[app]["kind"] == "app"
        assert by_key[app]["plugin"] == app
    for key, kind in PRODUCT_KEYS.items():
        assert key in by_key, f"{key} missing from `connector plugins --json`"
        assert by_key[key]["kind"] == kind
        assert by_key[key]["app"] == key.split(".")[0]
    assert by_key["samora.trigger_call"]["plugin"] == "samora_actions"
    assert by_key["samora.call_finished"]["plugin"] == "samora_triggers"
    assert by_key["contacts_api.new_contact"]["plugin"] == "contacts_api_triggers"
    assert by_key["aiconnector.grant_credits"]["plugin"] == "aiconnector_actions"
    assert by_key["aiconnector.auto_recharge"]["plugin"] == "aiconnector_triggers"
    bundled = _bundled_entry_points()
    for key in [*PRODUCT_KEYS, "contacts_api", "samora", "aiconnector"]:
        assert by_key[key]["plugin"] in bundled, (
            f"{key} registered by {by_key[key]['plugin']}, not a `connector` entry point")


def test_plugins_plain_lists_each_key_with_its_plugin(cli):
    output = ok(cli("plugins")).output
    lines = output.splitlines()
    for key in PRODUCT_KEYS:
        line = next((ln for ln in lines if f" {key} " in f" {ln} "), None)
        assert line is not None, f"{key} not listed:\n{output}"
    line = next(ln for ln in lines if " samora.trigger_call " in ln)
    assert "samora_actions" in line


# -- connections --------------------------------------------------------------------------------

def test_connections_add_list_and_test_against_the_sandbox(cli, sandbox):
    info = sandbox.connections()["samora"]
    secret = info["credentials"]["api_key"]
    result = ok(cli("connections", "add", "voice", "--app", "samora",
                    "--base-url", info["base_url"], "--field", f"api_key={secret}"))
    assert "voice" in result.output and "saved" in result.output

    listing = ok(cli("connections", "list")).output
    assert "voice" in listing and "samora" in listing and info["base_url"] in listing
    assert secret not in listing
    rows = json.loads(ok(cli("connections", "list", "--json")).stdout)
    assert [(r["name"], r["app"]) for r in rows] == [("voice", "samora")]
    assert secret not in json.dumps(rows)

    tested = ok(cli("connections", "test", "voice"))
    assert "connection voice: ok" in tested.output
    assert secret not in tested.output


def test_connections_add_contacts_api_with_two_fields(cli, sandbox):
    info = sandbox.connections()["contacts_api"]
    creds = info["credentials"]
    ok(cli("connections", "add", "crm", "--app", "contacts_api", "--base-url", info["base_url"],
           "--field", f"api_key={creds['api_key']}", "--field", f"org_id={creds['org_id']}"))
    assert "ok" in ok(cli("connections", "test", "crm")).output


def test_connections_test_with_a_wrong_key_shows_the_services_message(cli, sandbox):
    info = sandbox.connections()["samora"]
    ok(cli("connections", "add", "bad", "--app", "samora", "--base-url", info["base_url"],
           "--field", "api_key=sam_wrong_key_1234"))
    result = cli("connections", "test", "bad")
    assert result.exit_code == 1
    line = assert_error(result, "bad", "The API key is invalid or revoked.")
    assert "sam_wrong_key_1234" not in line


@pytest.mark.parametrize("app", ["contacts_api", "samora", "aiconnector"])
def test_connections_test_with_a_wrong_key_never_prints_it(cli, sandbox, app):
    info = sandbox.connections()[app]
    creds = dict(info["credentials"], api_key="wrong_key_9f8e7d6c")
    pairs = [arg for k, v in creds.items() for arg in ("--field", f"{k}={v}")]
    ok(cli("connections", "add", "c", "--app", app, "--base-url", info["base_url"], *pairs))
    line = assert_error(cli("connections", "test", "c"), "401")
    assert "wrong_key_9f8e7d6c" not in line
    assert "apiKey=" not in line  # AI Connector's key travels in the query string


def test_connections_test_of_an_unreachable_service(cli):
    ok(cli("connections", "add", "s", "--app", "samora", "--base-url", "http://127.0.0.1:9",
           "--field", "api_key=sam_unreachable_key"))
    line = assert_error(cli("connections", "test", "s"), "Samora AI", "cannot reach")
    assert "sam_unreachable_key" not in line


def test_connections_test_with_the_wrong_secret_key(cli, sandbox, monkeypatch):
    info = sandbox.connections()["samora"]
    ok(cli("connections", "add", "s", "--app", "samora", "--base-url", info["base_url"],
           "--field", "api_key=sam_test_key"))
    other = new_key()
    monkeypatch.setenv("CONNECTOR_SECRET_KEY", other)
    line = assert_error(cli("connections", "test", "s"), "CONNECTOR_SECRET_KEY")
    assert other not in line and "sam_test_key" not in line


def test_connections_test_of_an_unknown_connection(cli):
    assert_error(cli("connections", "test", "nosuch"), "nosuch")


def test_connections_add_base_url_that_is_not_http(cli):
    assert_error(cli("connections", "add", "s", "--app", "samora", "--base-url", "ftp://x",
                     "--field", "api_key=k"), "base_url", "http")


def test_connections_add_unknown_app_names_it_and_the_known_ones(cli):
    line = assert_error(cli("connections", "add", "x", "--app", "nosuchapp",
                            "--field", "api_key=k"), "nosuchapp")
    for known in ("contacts_api", "samora", "aiconnector"):
        assert known in line


def test_connections_add_missing_required_credential_names_the_field(cli, sandbox):
    info = sandbox.connections()["contacts_api"]
    # CliRunner's stdin is not a terminal, so nothing is prompted for.
    assert_error(cli("connections", "add", "crm", "--app", "contacts_api",
                     "--base-url", info["base_url"], "--field", "api_key=ca_test_key"),
                 "org_id")


def test_connections_add_field_without_equals_sign(cli):
    assert_error(cli("connections", "add", "voice", "--app", "samora", "--field", "api_key"),
                 "--field", "api_key", "NAME=VALUE")


def test_connections_add_contacts_api_without_base_url(cli):
    assert_error(cli("connections", "add", "crm", "--app", "contacts_api",
                     "--field", "api_key=k", "--field", "org_id=o"),
                 "base_url", "required")


def test_connections_add_twice_without_replace(cli, sandbox):
    info = sandbox.connections()["samora"]
    args = ("connections", "add", "voice", "--app", "samora", "--base-url", info["base_url"],
            "--field", "api_key=sam_test_key")
    ok(cli(*args))
    assert_error(cli(*args), "voice", "--replace")
    ok(cli(*args, "--replace"))


# -- flows --------------------------------------------------------------------------------------

def test_flows_add_every_example(cli, wired):
    files = sorted(EXAMPLES.glob("*.yaml"))
    assert len(files) >= 3
    for path in files:
        result = ok(cli("flows", "add", path))
        assert f"flow {yaml.safe_load(path.read_text())['name']} saved" in result.output
    rows = json.loads(ok(cli("flows", "list", "--json")).stdout)
    assert sorted(r["name"] for r in rows) == sorted(
        yaml.safe_load(p.read_text())["name"] for p in files)
    assert all(r["enabled"] is False and r["runs"] == {} for r in rows)
    listing = ok(cli("flows", "list")).output
    assert "new-contact-call" in listing and "contacts_api.new_contact" in listing


@pytest.mark.parametrize("name", ["new-contact-call", "call-finished-add-to-list",
                                  "auto-recharge-credits"])
def test_flows_export_round_trips(cli, wired, tmp_path, name):
    ok(cli("flows", "add", EXAMPLES / f"{name}.yaml"))
    first = ok(cli("flows", "export", name)).stdout
    exported = yaml.safe_load(first)

    original = example(name)
    assert exported["name"] == original["name"]
    assert exported["description"] == original["description"]
    assert exported["trigger"]["key"] == original["trigger"]["key"]
    assert exported["trigger"]["connection"] == original["trigger"]["connection"]
    for key, value in (original["trigger"].get("inputs") or {}).items():
        assert exported["trigger"]["inputs"][key] == value
    if "poll_interval" in original["trigger"]:
        assert exported["trigger"]["poll_interval"] == original["trigger"]["poll_interval"]
    assert len(exported["steps"]) == len(original["steps"])
    for got, want in zip(exported["steps"], original["steps"]):
        for field in ("name", "action", "connection", "inputs"):
            assert got[field] == want[field], field
        assert got.get("filter") == want.get("filter")

    ok(cli("flows", "add", write(tmp_path, "again.yaml", first)))
    assert ok(cli("flows", "export", name)).stdout == first


def test_flows_add_malformed_yaml_names_file_and_line(cli, wired, tmp_path):
    # Line 5 opens a block sequence inside the flow sequence that line 4 started.
    path = write(tmp_path, "broken.yaml",
                 "name: broken\ntrigger:\n  key: samora.call_finished\n"
                 "steps: [\n  - oops: {\n")
    assert_error(cli("flows", "add", path), str(path), "line 5")


def test_flows_add_malformed_yaml_reports_the_offending_line(cli, tmp_path):
    path = write(tmp_path, "tabs.yaml", "name: x\ntrigger:\n  key: a\n key: b\nsteps: []\n")
    assert_error(cli("flows", "add", path), "tabs.yaml", "line 4")


def test_flows_add_missing_file(cli, tmp_path):
    assert_error(cli("flows", "add", tmp_path / "nope.yaml"), "nope.yaml")


CALL_STEP = ("steps: [{action: samora.trigger_call, inputs: {agent_id: "
             "123e4567-e89b-12d3-a456-426614174000, to_number: '+15551234567'}}]\n")


@pytest.mark.parametrize("text, needles", [
    ("- a\n- b\n", ["expected a mapping"]),
    ("", ["expected a mapping"]),
    ("name: x\nstepz: []\ntrigger: {key: samora.call_finished}\n" + CALL_STEP, ["stepz"]),
    ("trigger: {key: samora.call_finished}\n" + CALL_STEP, ["name"]),
    ("name: 'bad name!'\ntrigger: {key: samora.call_finished}\n" + CALL_STEP, ["name"]),
    ("name: x\ntrigger: {key: samora.nosuch}\n" + CALL_STEP,
     ["trigger.key", "samora.nosuch"]),
    ("name: x\ntrigger: {key: samora.call_finished}\nsteps: []\n", ["steps", "one step"]),
    ("name: x\ntrigger: {key: samora.call_finished, inputs: {include_transcript: maybe}}\n"
     + CALL_STEP, ["trigger.inputs", "include_transcript"]),
    ("name: x\ntrigger: {key: samora.call_finished}\nsteps: [{action: samora.trigger_call, "
     "inputs: {agent_id: 123e4567-e89b-12d3-a456-426614174000, "
     "to_number: '{{ trigger.to_number '}}]\n", ["steps[0].inputs.to_number", "template"]),
    ("name: x\ntrigger: {key: samora.call_finished}\nsteps: [{action: samora.trigger_call, "
     "filter: [{field: trigger.x, op: bogus}], inputs: {agent_id: "
     "123e4567-e89b-12d3-a456-426614174000, to_number: '+15551234567'}}]\n",
     ["steps[0].filter[0].op", "bogus"]),
])
def test_flows_add_invalid_definitions(cli, wired, tmp_path, text, needles):
    path = write(tmp_path, "flow.yaml", text)
    assert_error(cli("flows", "add", path), "flow.yaml", *needles)
    assert json.loads(ok(cli("flows", "list", "--json")).stdout) == []


def _call_flow(**step_changes) -> dict:
    data = example("new-contact-call")
    data["steps"][0].update(step_changes)
    return data


def test_flows_add_unknown_action_names_the_step(cli, wired, tmp_path):
    path = write(tmp_path, "f.yaml", _call_flow(action="samora.nosuch"))
    assert_error(cli("flows", "add", path), "steps[0].action", "samora.nosuch")


def test_flows_add_missing_required_input_names_it(cli, wired, tmp_path):
    data = _call_flow()
    del data["steps"][0]["inputs"]["to_number"]
    assert_error(cli("flows", "add", write(tmp_path, "f.yaml", data)),
                 "steps[0].inputs.to_number")


def test_flows_add_unknown_input_names_it(cli, wired, tmp_path):
    data = _call_flow()
    data["steps"][0]["inputs"]["phone_numbr"] = "+15551234567"
    assert_error(cli("flows", "add", write(tmp_path, "f.yaml", data)),
                 "steps[0].inputs.phone_numbr")


def test_flows_add_bad_literal_input_names_it(cli, wired, tmp_path):
    data = _call_flow()
    data["steps"][0]["inputs"]["agent_id"] = "not-a-uuid"
    assert_error(cli("flows", "add", write(tmp_path, "f.yaml", data)),
                 "steps[0].inputs.agent_id")


def test_flows_add_step_referring_to_a_later_step(cli, wired, tmp_path):
    data = example("call-finished-add-to-list")
    data["steps"][0]["inputs"]["firstName"] = "{{ steps.add_to_list.contactId }}"
    assert_error(cli("flows", "add", write(tmp_path, "f.yaml", data)),
                 "steps[0]", "add_to_list")


@pytest.mark.parametrize("where", ["trigger", "step"])
def test_flows_add_unknown_connection_names_the_place(cli, wired, tmp_path, where):
    data = example("call-finished-add-to-list")
    if where == "trigger":
        data["trigger"]["connection"] = "nosuchconn"
        needle = "trigger.connection"
    else:
        data["steps"][1]["connection"] = "nosuchconn"
        needle = "steps[1].connection"
    assert_error(cli("flows", "add", write(tmp_path, "f.yaml", data)), needle, "nosuchconn")


def test_flows_add_connection_of_the_wrong_app(cli, wired, tmp_path):
    data = _call_flow(connection="aiconnector")
    assert_error(cli("flows", "add", write(tmp_path, "f.yaml", data)),
                 "steps[0].connection", "samora")


def test_flows_enable_and_disable_manage_the_samora_webhook(cli, wired):
    ok(cli("flows", "add", EXAMPLES / "call-finished-add-to-list.yaml"))
    assert wired.state()["samora"]["webhooks"] == []

    result = ok(cli("flows", "enable", "call-finished-add-to-list"))
    assert "is on" in result.output
    hooks = wired.state()["samora"]["webhooks"]
    assert len(hooks) == 1
    assert hooks[0]["events"] == ["CALL_FINISHED"]
    assert hooks[0]["data_options"]["include_recording_url"] is True
    url = next(ln.split("webhook URL:", 1)[1].strip() for ln in result.output.splitlines()
               if "webhook URL:" in ln)
    assert hooks[0]["url"] == url and "/hooks/" in url
    rows = json.loads(ok(cli("flows", "list", "--json")).stdout)
    assert rows[0]["enabled"] is True

    result = ok(cli("flows", "disable", "call-finished-add-to-list"))
    assert "is off" in result.output
    assert wired.state()["samora"]["webhooks"] == []
    rows = json.loads(ok(cli("flows", "list", "--json")).stdout)
    assert rows[0]["enabled"] is False


def test_flows_enable_auto_recharge_prints_url_and_signing_secret(cli, wired):
    ok(cli("flows", "add", EXAMPLES / "auto-recharge-credits.yaml"))
    output = ok(cli("flows", "enable", "auto-recharge-credits")).output
    lines = output.splitlines()
    url = next(ln for ln in lines if "webhook URL:" in ln).split("webhook URL:", 1)[1].strip()
    assert url.startswith("http") and "/hooks/" in url
    secret = next(ln for ln in lines if "signing secret:" in ln).split(":", 1)[1].strip()
    assert secret.startswith("whsec_") and len(secret) > len("whsec_") + 16

    again = ok(cli("flows", "secret", "auto-recharge-credits")).output
    assert secret in again and url in again


def test_flows_enable_when_the_service_refuses_the_key(cli, sandbox):
    info = sandbox.connections()
    for app, name in CONNECTION_NAMES.items():
        creds = dict(info[app]["credentials"])
        if app == "samora":
            creds["api_key"] = "sam_revoked_key"
        pairs = [arg for k, v in creds.items() for arg in ("--field", f"{k}={v}")]
        ok(cli("connections", "add", name, "--app", app, "--base-url", info[app]["base_url"],
               *pairs))
    ok(cli("flows", "add", EXAMPLES / "call-finished-add-to-list.yaml"))
    line = assert_error(cli("flows", "enable", "call-finished-add-to-list"),
                        "call-finished-add-to-list", "The API key is invalid or revoked.")
    assert "sam_revoked_key" not in line
    assert json.loads(ok(cli("flows", "list", "--json")).stdout)[0]["enabled"] is False
    assert sandbox.state()["samora"]["webhooks"] == []


@pytest.mark.parametrize("command", ["enable", "disable", "export", "secret"])
def test_flows_command_on_an_unknown_flow(cli, command):
    assert_error(cli("flows", command, "nosuch"), "nosuch")


def test_flows_enable_nosuch_exits_1(cli):
    result = cli("flows", "enable", "nosuch")
    assert result.exit_code == 1
    assert_error(result, "no flow named 'nosuch'")


# -- runs ---------------------------------------------------------------------------------------

def _failed_grant_run(cli) -> int:
    """Queue an auto-recharge for an email with no sub-account and run it: the service 404s."""
    from connector import engine
    from connector import flows as flows_mod
    from connector.intake import ingest

    ok(cli("flows", "add", EXAMPLES / "auto-recharge-credits.yaml"))
    with in_process() as host:
        flow = flows_mod.get("auto-recharge-credits")
        trigger = host.catalog.trigger(flow.trigger_key)
        item = {"idempotency_key": "ar_cli_1", "email": "nobody@agency.example", "amount": 25,
                "event": "auto_recharge"}
        intake = ingest(flow, trigger, [("ar_cli_1", item)])
        assert len(intake.created) == 1
        assert engine.run_due(host) == 1
        return intake.created[0]


def test_runs_list_show_and_replay_a_failed_run(cli, wired):
    run_id = _failed_grant_run(cli)

    rows = json.loads(ok(cli("runs", "list", "--status", "failed", "--json")).stdout)
    assert [r["id"] for r in rows] == [run_id]
    assert rows[0]["status"] == "failed"
    assert "No sub-account of this agency has that email." in rows[0]["error"]
    listing = ok(cli("runs", "list", "--status", "failed")).output
    assert str(run_id) in listing and "failed" in listing
    assert json.loads(ok(cli("runs", "list", "--status", "succeeded", "--json")).stdout) == []

    shown = json.loads(ok(cli("runs", "show", run_id, "--json")).stdout)
    assert shown["id"] == run_id and shown["status"] == "failed"
    assert shown["item"]["email"] == "nobody@agency.example"
    [step] = shown["steps"]
    assert step["name"] == "grant" and step["action"] == "aiconnector.grant_credits"
    assert step["status"] == "failed"
    assert step["inputs"]["email"] == "nobody@agency.example"
    assert step["inputs"]["amount"] == 25
    assert step["inputs"]["idempotency_key"] == "ar_cli_1"
    assert "No sub-account of this agency has that email." in step["error"]
    assert "404" in step["error"]
    assert step["attempts"] == 1
    assert len(step["history"]) == 1 and step["history"][0]["status"] == "failed"
    assert "aic_test_key" not in json.dumps(shown)

    assert f"run {run_id} queued again" in ok(cli("runs", "replay", run_id)).output
    assert json.loads(ok(cli("runs", "show", run_id, "--json")).stdout)["status"] == "queued"
    assert json.loads(ok(cli("runs", "list", "--status", "failed", "--json")).stdout) == []


def test_runs_show_plain_is_yaml(cli, wired):
    run_id = _failed_grant_run(cli)
    data = yaml.safe_load(ok(cli("runs", "show", run_id)).stdout)
    assert data["id"] == run_id and data["steps"][0]["status"] == "failed"


def test_runs_replay_of_a_run_that_did_not_fail(cli, wired):
    run_id = _failed_grant_run(cli)
    ok(cli("runs", "replay", run_id))
    assert_error(cli("runs", "replay", run_id), str(run_id), "queued", "failed")


def test_runs_replay_all_failed_of_a_flow(cli, wired):
    run_id = _failed_grant_run(cli)
    result = ok(cli("runs", "replay", "--all-failed", "auto-recharge-credits"))
    assert f"run {run_id} queued again" in result.output


@pytest.mark.parametrize("args, needle", [
    (("runs", "show", "999"), "999"),
    (("runs", "replay", "999"), "999"),
    (("runs", "replay"), "run ids"),
    (("runs", "list", "--flow", "nosuch"), "nosuch"),
])
def test_runs_errors(cli, args, needle):
    assert_error(cli(*args), needle)


# -- configuration and broken plugins -------------------------------------------------------------

def test_an_installed_plugin_that_fails_to_import_is_one_line(cli, install_plugin):
    install_plugin("cli_broken_plugin", "raise RuntimeError('missing dependency')\n")
    assert_error(cli("plugins"), "cli_broken_plugin", "missing dependency")


def test_an_installed_plugin_with_a_misspelled_hook_is_one_line(cli, install_plugin):
    install_plugin("cli_typo_plugin", "from connector import hookimpl\n\n\n@hookimpl\n"
                                      "def register_action(register):\n    pass\n")
    assert_error(cli("plugins"), "cli_typo_plugin", "register_action")
    assert_error(cli("flows", "list"), "register_action")


def test_a_bad_secret_key_is_one_line(cli, monkeypatch):
    monkeypatch.setenv("CONNECTOR_SECRET_KEY", "not-a-fernet-key")
    line = assert_error(cli("connections", "list"), "CONNECTOR_SECRET_KEY")
    assert "not-a-fernet-key" not in line


def test_an_unusable_database_url_is_one_line(cli, monkeypatch):
    # Nothing listens on port 1, and the PostgreSQL driver may not be installed at all.
    monkeypatch.setenv("CONNECTOR_DATABASE_URL", "postgresql://connector@127.0.0.1:1/connector")
    assert_error(cli("flows", "list"), "CONNECTOR_DATABASE_URL")


def test_a_non_integer_port_is_one_line(cli, monkeypatch):
    monkeypatch.setenv("CONNECTOR_PORT", "eighty")
    assert_error(cli("flows", "list"), "CONNECTOR_PORT")
