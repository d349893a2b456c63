"""The plugin developer's kit: hooks, `plugins check`, `invoke`, `--plugins-dir`,
`plugin new`, and the connector.testing pytest plugin (run as a plugin author runs it).

Every hookspec has a test here named ``test_hook_<name>``; a meta-test fails when one is
missing (as datasette's tests/test_plugins.py does). The slow tests install a generated
package with pip into a throwaway virtualenv that sees this one's packages, so nothing is
installed into the environment running the tests.
"""
from __future__ import annotations

import ast
import inspect
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from xml.etree import ElementTree

import pytest
from click.testing import CliRunner

from connector import hookimpl, hookspecs
from connector.cli import main
from connector.crypto import new_key
from connector.errors import PluginError, UserError
from connector.registry import build_catalog, make_manager

ROOT = Path(__file__).resolve().parent.parent
HOOK_NAMES = sorted(name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
                    if hasattr(fn, "connector_spec"))


@pytest.fixture
def cli(monkeypatch, tmp_path):
    """Run ``connector ARGS...`` in-process against this test's own database."""
    monkeypatch.setenv("CONNECTOR_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("CONNECTOR_SECRET_KEY", new_key())
    runner = CliRunner()
    return lambda *args: runner.invoke(main, [str(a) for a in args])


def ok(result):
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


def one_error_line(result, *needles) -> str:
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        repr(result.exception))
    output = result.output.strip()
    assert len(output.splitlines()) == 1, f"expected one line, got:\n{output}"
    assert output.startswith("error:"), output
    for needle in needles:
        assert needle in output, f"{needle!r} not in {output!r}"
    return output


# -- one test per hook (meta-tested below) ------------------------------------------------------

def _plugin(**hooks):
    """Return a plugin class whose hook implementations register the given classes."""
    namespace = {}
    for hook, classes in hooks.items():
        def impl(register, classes=classes):
            for cls in classes:
                register(cls)
        impl.__name__ = hook
        namespace[hook] = staticmethod(hookimpl(impl))
    return type("KitPlugin", (), namespace)


def _kit_classes():
    from marshmallow import Schema, fields

    from connector import Action, App, PollTrigger, Search

    class KitApp(App):
        key = "kit"
        label = "Kit"
        help = "A test app."

    class NewThing(PollTrigger):
        key = "kit.new_thing"
        app = "kit"
        label = "New thing"
        help = "Fires for each thing."
        sample = {"id": "t1"}

        def poll(self, ctx):
            return [{"id": "t1"}, {"id": "t2"}]

    class ThingInputs(Schema):
        thing = fields.String(required=True, metadata={"label": "Thing",
                                                       "choices_from": "kit.find_things"})

    class DoThing(Action):
        key = "kit.do_thing"
        app = "kit"
        label = "Do thing"
        help = "Does it."
        Inputs = ThingInputs
        needs_connection = False
        sample = {"done": "t1"}

        def run(self, ctx, inputs):
            return {"done": inputs["thing"]}

    class FindThings(Search):
        key = "kit.find_things"
        app = "kit"
        label = "Find things"
        help = "Lists things."
        needs_connection = False
        sample = {"found": True, "count": 1, "first": {"id": "t1"}, "results": [{"id": "t1"}]}

        def search(self, ctx, inputs):
            return [{"id": "t1", "name": "Thing one"}]

    return KitApp, NewThing, DoThing, FindThings


def test_hook_register_apps(make_host):
    KitApp, *_ = _kit_classes()
    host = make_host(extra_plugins=[_plugin(register_apps=[KitApp])])
    entry = host.catalog.apps["kit"]
    assert entry.cls is KitApp and entry.plugin == "KitPlugin"
    assert [r for r in host.catalog.describe() if r["key"] == "kit"][0]["kind"] == "app"


def test_hook_register_triggers(make_host):
    KitApp, NewThing, _, _ = _kit_classes()
    host = make_host(extra_plugins=[_plugin(register_apps=[KitApp],
                                            register_triggers=[NewThing])])
    assert host.catalog.triggers["kit.new_thing"].cls is NewThing
    assert isinstance(host.catalog.trigger("kit.new_thing"), NewThing)
    with pytest.raises(PluginError, match="names app 'kit'"):
        build_catalog(make_manager(extra=[_plugin(register_triggers=[NewThing])]))


def test_hook_register_actions(make_host):
    from connector.cli_dev import run_action

    classes = _kit_classes()
    host = make_host(extra_plugins=[_plugin(register_apps=[classes[0]],
                                            register_actions=[classes[2]],
                                            register_searches=[classes[3]])])
    assert host.catalog.actions["kit.do_thing"].cls is classes[2]
    assert run_action(host, "kit.do_thing", inputs={"thing": "t9"}) == {"done": "t9"}


def test_hook_register_searches(make_host):
    classes = _kit_classes()
    host = make_host(extra_plugins=[_plugin(register_apps=[classes[0]],
                                            register_searches=[classes[3]])])
    assert host.catalog.searches["kit.find_things"].cls is classes[3]
    assert host.catalog.action("kit.find_things").key == "kit.find_things"  # a step too
    with pytest.raises(PluginError, match="'kit.find_things', which is not a registered search"):
        build_catalog(make_manager(extra=[_plugin(register_apps=[classes[0]],
                                                  register_actions=[classes[2]])]))


def _hook_tests() -> set[str]:
    """Every test function named test_hook_* anywhere under tests/."""
    names = set()
    for path in (ROOT / "tests").glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                    node.name.startswith("test_hook_")):
                names.add(node.name)
    return names


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_every_hook_has_a_test(hook):
    assert any(name == f"test_hook_{hook}" or name.startswith(f"test_hook_{hook}_")
               for name in _hook_tests()), (
        f"hook {hook} has no test: add test_hook_{hook} (tests/test_plugin_kit.py)")


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_every_hook_documents_its_parameters(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    for param in inspect.signature(getattr(hookspecs, hook)).parameters:
        assert f":param {param}:" in doc, f"hook {hook} does not document {param}"


# -- plugins check ------------------------------------------------------------------------------

SHODDY = '''
from marshmallow import Schema, fields
from connector import Action, App, PollTrigger, Search, WebhookTrigger, hookimpl


class Creds(Schema):
    api_token = fields.String(metadata={"label": "Token"})
    region = fields.String(metadata={"lable": "Region"})


class Shoddy(App):
    key = "shoddy"
    label = "Shoddy"
    Credentials = Creds


class Poller(PollTrigger):
    key = "shoddy.poller"
    app = "shoddy"
    label = "Poller"
    help = "Polls."
    sample = {"name": "no id"}


class Hook(WebhookTrigger):
    key = "shoddy.hook"
    app = "shoddy"
    label = "Hook"
    help = "Hooks."
    sample = {"id": 1}


class Doer(Action):
    key = "Shoddy.Do"
    app = "shoddy"
    label = ""
    help = "Does."


class Finder(Search):
    key = "shoddy.find"
    app = "shoddy"
    label = "Find"
    help = "Finds."
    sample = {"id": 1}


@hookimpl
def register_apps(register):
    register(Shoddy)


@hookimpl
def register_triggers(register):
    register(Poller)
    register(Hook)


@hookimpl
def register_actions(register):
    register(Doer)


@hookimpl
def register_searches(register):
    register(Finder)
'''

SHODDY_PROBLEMS = [
    "app shoddy (plugin kit_shoddy): help is empty",
    "app shoddy (plugin kit_shoddy): Credentials.api_token: looks like a secret",
    "app shoddy (plugin kit_shoddy): Credentials.region: unknown metadata lable",
    "app shoddy (plugin kit_shoddy): Credentials.region: no label in metadata",
    "app shoddy (plugin kit_shoddy): has credentials but no test()",
    "trigger shoddy.poller (plugin kit_shoddy): dedupe_key(sample) fails with ValueError",
    "trigger shoddy.poller (plugin kit_shoddy): poll() is not written",
    "trigger shoddy.hook (plugin kit_shoddy): subscribe() and unsubscribe() are not both",
    "trigger shoddy.hook (plugin kit_shoddy): verify() is the default",
    "action Shoddy.Do (plugin kit_shoddy): key 'Shoddy.Do': expected dotted lowercase",
    "action Shoddy.Do (plugin kit_shoddy): label is empty",
    "action Shoddy.Do (plugin kit_shoddy): sample is empty",
    "action Shoddy.Do (plugin kit_shoddy): run() is not written",
    "search shoddy.find (plugin kit_shoddy): sample lacks found, count, first, results",
    "search shoddy.find (plugin kit_shoddy): search() is not written",
]


def _bundled_only(monkeypatch):
    """Load only the bundled entry points (other installed packages are not under test)."""
    from importlib import metadata

    names = [ep.name for ep in metadata.entry_points(group="connector")
             if ep.value.startswith("connector.")]
    monkeypatch.setenv("CONNECTOR_LOAD_PLUGINS", ",".join(names))


def test_plugins_check_passes_for_every_bundled_plugin(cli, monkeypatch):
    _bundled_only(monkeypatch)
    result = ok(cli("plugins", "check"))
    assert result.output.startswith("ok: ") and "apps" in result.output


def test_plugins_check_names_each_problem_on_one_line(cli, install_plugin):
    install_plugin("kit_shoddy", SHODDY)
    result = cli("plugins", "check", "kit_shoddy")
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    for expected in SHODDY_PROBLEMS:
        assert sum(line.startswith(expected) for line in lines) == 1, (expected, lines)
    assert len(lines) == len(SHODDY_PROBLEMS) + 1  # and the count
    assert lines[-1].startswith(f"{len(SHODDY_PROBLEMS)} problems in 1 app, 2 triggers")
    everything = cli("plugins", "check")
    assert everything.exit_code == 1 and "samora" not in everything.output
    assert ok(cli("plugins", "check", "samora_actions")).output.startswith("ok: 0 apps")


def test_plugins_check_reports_a_plugin_that_registers_nothing(cli, install_plugin):
    install_plugin("kit_empty", "VALUE = 1\n")
    result = cli("plugins", "check", "kit_empty")
    assert result.exit_code == 1
    assert "plugin kit_empty: registers no app, trigger, action or search" in result.output


def test_plugins_check_reports_what_the_build_refuses(cli, install_plugin):
    install_plugin("kit_dupe", "from connector import hookimpl\n"
                               "from connector.plugins.samora import Samora\n\n\n"
                               "@hookimpl\ndef register_apps(register):\n"
                               "    register(Samora)\n")
    result = cli("plugins", "check")
    assert result.exit_code == 1
    assert result.output.strip() == ("app key 'samora' is registered by both plugin samora "
                                     "and plugin kit_dupe")


def test_plugins_check_of_an_unknown_plugin_is_one_line(cli):
    one_error_line(cli("plugins", "check", "nosuch"), "'nosuch'", "samora_actions")


def test_the_listing_still_works_as_before(cli, monkeypatch):
    _bundled_only(monkeypatch)
    rows = json.loads(ok(cli("plugins", "--json")).output)
    assert {"samora", "samora.trigger_call"} <= {row["key"] for row in rows}
    assert "[plugin samora_actions]" in ok(cli("plugins")).output
    assert ok(cli("plugins", "--markdown")).output.startswith("# Catalog")


# -- invoke -------------------------------------------------------------------------------------

@pytest.fixture
def wired(cli, sandbox):
    for app in ("contacts_api", "aiconnector"):
        info = sandbox.connections()[app]
        fields = [a for k, v in info["credentials"].items() for a in ("--field", f"{k}={v}")]
        ok(cli("connections", "add", app.replace("_", "-"), "--app", app,
               "--base-url", info["base_url"], *fields))
    return sandbox


@pytest.mark.covers("contacts_api.new_contact")
def test_invoke_polls_a_trigger_once_and_prints_items_with_keys(cli, wired):
    data = json.loads(ok(cli("invoke", "contacts_api.new_contact",
                             "--connection", "contacts-api")).output)
    assert data["items"], data
    for row in data["items"]:
        assert row["dedupe_key"] == str(row["item"]["id"])
    assert data["state"]["newest_created_at"]


@pytest.mark.covers("aiconnector.send_custom_channel_message")
def test_invoke_runs_an_action_once_per_idempotency_key(cli, wired, tmp_path):
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"fromId": "c1", "customChannel": "ch", "body": "ignored"}))
    args = ("invoke", "aiconnector.send_custom_channel_message", "--connection",
            "aiconnector", "--json", inputs, "--input", "body=Hello", "--idempotency-key", "k1")
    first = json.loads(ok(cli(*args)).output)
    again = json.loads(ok(cli(*args)).output)
    assert first == again and first["success"] is True
    assert [m["body"] for m in wired.state()["aiconnector"]["messages"]] == ["Hello"]
    other = [a if a != "body=Hello" else "body=Bye" for a in args]
    one_error_line(cli(*other), "already used with different inputs")


@pytest.mark.covers("aiconnector.find_contact")
def test_invoke_runs_a_search(cli, wired):
    data = json.loads(ok(cli("invoke", "aiconnector.find_contact", "--connection",
                             "aiconnector", "--input", "email=nobody@example.com")).output)
    assert data == {"found": False, "count": 0, "first": None, "results": []}


@pytest.mark.covers("webhook.catch", "schedule.cron")
def test_invoke_parses_a_webhook_body_and_lists_schedule_firings(cli, tmp_path):
    body = tmp_path / "body.json"
    body.write_text(json.dumps([{"order_id": "A-1"}, {"order_id": "A-2"}]))
    data = json.loads(ok(cli("invoke", "webhook.catch", "--body", body,
                             "--input", "dedupe_field=order_id")).output)
    assert [row["dedupe_key"] for row in data["items"]] == ["A-1#0", "A-2#1"]
    firings = json.loads(ok(cli("invoke", "schedule.cron", "--input", "cron=0 9 * * *",
                                "--input", "timezone=UTC")).output)["items"]
    assert len(firings) == 3
    assert all(row["item"]["scheduled_at"].endswith("T09:00:00+00:00") for row in firings)


@pytest.mark.parametrize("args, needles", [
    (("samora.trigger_cal",), ("'samora.trigger_cal'", "did you mean samora.trigger_call")),
    (("aiconnector.add_to_list", "--input", "list_id=x", "--input", "contact_id=y"),
     ("give --connection NAME",)),
    (("aiconnector.add_to_list", "--connection", "contacts-api", "--input", "list_id=x",
      "--input", "contact_id=y"), ("is for app contacts_api",)),
    (("aiconnector.add_to_list", "--connection", "aiconnector", "--input", "contact_id=y"),
     ("action aiconnector.add_to_list", "list_id")),
    (("aiconnector.add_to_list", "--connection", "aiconnector", "--input", "list_id=nope",
      "--input", "contact_id=y"), ("HTTP 404", "nope")),
    (("aiconnector.add_to_list", "--input", "list_id"), ("expected FIELD=VALUE",)),
    (("samora.call_finished",), ("receives webhooks", "--body")),
    (("looping.for_each", "--input", "items=a"), ("inside a flow",)),
    (("contacts_api.new_contact", "--connection", "nosuch"), ("no connection named",)),
])
def test_invoke_errors_are_one_line(cli, wired, args, needles):
    one_error_line(cli("invoke", *args), *needles)


def test_invoke_json_must_be_an_object(cli, tmp_path):
    path = tmp_path / "inputs.json"
    path.write_text("[1, 2]")
    one_error_line(cli("invoke", "webhook.catch", "--json", path), "JSON object")
    path.write_text("{nope")
    one_error_line(cli("invoke", "webhook.catch", "--json", path), "not valid JSON")


# -- a plugins directory ------------------------------------------------------------------------

ONE_FILE = '''
"""A one-file plugin: a counter that says hello, at most once per idempotency key."""
from marshmallow import fields

from connector import Action, App, InputSchema, hookimpl

CALLS = []


class Hello(App):
    key = "hello"
    label = "Hello"
    help = "Says hello."


class Inputs(InputSchema):
    name = fields.String(required=True, metadata={"label": "Name"})


class SayHello(Action):
    key = "hello.say"
    app = "hello"
    label = "Say hello"
    help = "Greets someone."
    Inputs = Inputs
    needs_connection = False
    sample = {"greeting": "Hello, Ada!", "call": 1}

    def run(self, ctx, inputs):
        def call():
            CALLS.append(inputs["name"])
            return {"greeting": f"Hello, {inputs['name']}!", "call": len(CALLS)}
        return ctx.once(ctx.idempotency_key, inputs, call)


@hookimpl
def register_apps(register):
    register(Hello)


@hookimpl
def register_actions(register):
    register(SayHello)
'''


@pytest.fixture
def plugins_dir(tmp_path):
    folder = tmp_path / "my-plugins"
    folder.mkdir()
    (folder / "hello.py").write_text(ONE_FILE)
    return folder


def test_a_plugins_directory_loads_each_file_as_a_plugin(plugins_dir):
    pm = make_manager(plugins_dir=plugins_dir)
    catalog = build_catalog(pm)
    assert catalog.actions["hello.say"].plugin == "dir:hello"
    assert pm.has_plugin("dir:hello")
    module = catalog.actions["hello.say"].cls.__module__
    assert sys.modules[module].__file__ == str(plugins_dir / "hello.py")
    again = build_catalog(make_manager(plugins_dir=plugins_dir))  # a fresh module each time
    assert again.actions["hello.say"].cls is not catalog.actions["hello.say"].cls
    assert "hello" not in build_catalog(make_manager(block=["dir:hello"],
                                                     plugins_dir=plugins_dir)).apps
    assert "hello" not in build_catalog(make_manager()).apps


def test_plugins_and_invoke_see_the_directory(cli, plugins_dir):
    listing = ok(cli("plugins", "--plugins-dir", plugins_dir)).output
    assert "hello.say" in listing and "[plugin dir:hello]" in listing
    assert "hello.say" not in ok(cli("plugins")).output
    assert ok(cli("plugins", "check", "--plugins-dir", plugins_dir, "dir:hello")).output == (
        "ok: 1 app, 0 triggers, 1 action, 0 searches checked\n")
    args = ("invoke", "hello.say", "--plugins-dir", plugins_dir, "--input", "name=Ada",
            "--idempotency-key", "same")
    assert json.loads(ok(cli(*args)).output) == {"greeting": "Hello, Ada!", "call": 1}
    assert json.loads(ok(cli(*args)).output) == {"greeting": "Hello, Ada!", "call": 1}


@pytest.mark.parametrize("source, needle", [
    ("def register_apps(register)\n", "SyntaxError"),
    ("import connector_no_such_module\n", "connector_no_such_module"),
    ("from connector import hookimpl\n\n\n@hookimpl\ndef register_app(register):\n"
     "    pass\n", "register_app"),
])
@pytest.mark.parametrize("command", [("plugins",), ("plugins", "check"), ("serve",),
                                     ("invoke", "hello.say")])
def test_a_broken_plugin_file_is_one_line(cli, plugins_dir, source, needle, command):
    (plugins_dir / "broken.py").write_text(source)
    line = one_error_line(cli(*command, "--plugins-dir", plugins_dir), "dir:broken", needle)
    if needle != "register_app":
        assert str(plugins_dir / "broken.py") in line


def test_a_missing_plugins_directory_is_one_line(cli, tmp_path):
    one_error_line(cli("serve", "--plugins-dir", tmp_path / "nope"), "--plugins-dir")


@pytest.mark.slow
def test_serve_loads_the_plugins_directory(plugins_dir, tmp_path):
    """`connector serve --plugins-dir DIR` imports DIR's files, then serves."""
    import time
    import urllib.request

    marker = tmp_path / "imported"
    (plugins_dir / "marker.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('yes')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    env.update(CONNECTOR_DATABASE_URL=f"sqlite:///{tmp_path / 'serve.db'}",
               CONNECTOR_SECRET_KEY=new_key(), CONNECTOR_PORT="0")
    server = subprocess.Popen([sys.executable, "-m", "connector.cli", "serve",
                               "--plugins-dir", str(plugins_dir)], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line, seen = "", []
        deadline = time.monotonic() + 30
        while "serving on" not in line and time.monotonic() < deadline:
            line = server.stdout.readline()
            seen.append(line)
            if not line and server.poll() is not None:
                break
        assert "serving on" in line, "".join(seen)
        url = line.split("serving on ")[1].split()[0]
        with urllib.request.urlopen(f"{url}/healthz", timeout=10) as answer:
            assert answer.status == 200
        assert marker.read_text() == "yes"
    finally:
        server.terminate()
        server.wait(20)
        server.stdout.close()


# -- plugin new ---------------------------------------------------------------------------------

def test_plugin_new_writes_a_package(cli, tmp_path):
    result = ok(cli("plugin", "new", "acme-crm", "--dir", tmp_path))
    target = tmp_path / "connector-acme-crm"
    assert f"created {target}" in result.output
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert files == ["README.md", "connector_acme_crm.py", "pyproject.toml", "setup.cfg",
                     "tests/test_connector_acme_crm.py"]
    setup = (target / "setup.cfg").read_text()
    assert "connector =\n    acme_crm = connector_acme_crm\n" in setup
    assert "name = connector-acme-crm" in setup
    module = (target / "connector_acme_crm.py").read_text()
    compile(module, "connector_acme_crm.py", "exec")
    assert 'key = "acme_crm.new_item"' in module and 'key = "acme_crm.create_item"' in module
    test = (target / "tests" / "test_connector_acme_crm.py").read_text()
    assert "TestStandard = standard_suite(\n    \"connector_acme_crm\"" in test


@pytest.mark.parametrize("name, needle", [
    ("Acme", "lowercase"), ("acme crm", "lowercase"), ("1acme", "starting with a letter"),
    ("acme--crm", "lowercase"), ("a" * 41, "up to 40"), ("samora", "already registered by "
                                                                   "plugin samora"),
])
def test_plugin_new_refuses_a_bad_name_in_one_line(cli, tmp_path, name, needle):
    one_error_line(cli("plugin", "new", name, "--dir", tmp_path), needle)
    assert not list(tmp_path.glob("connector-*"))


def test_plugin_new_never_overwrites(cli, tmp_path):
    ok(cli("plugin", "new", "acme", "--dir", tmp_path))
    one_error_line(cli("plugin", "new", "connector-acme", "--dir", tmp_path),
                   "already exists")


def test_plugin_names():
    from connector.scaffold import names

    assert names("connector-acme_crm") == {
        "dist": "connector-acme-crm", "module": "connector_acme_crm", "app": "acme_crm",
        "app_dash": "acme-crm", "label": "Acme Crm", "classname": "AcmeCrm"}
    with pytest.raises(UserError):
        names("connector-")


def _throwaway_venv(path: Path) -> Path:
    """A venv whose site-packages also sees this interpreter's (a .pth runs addsitedir)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True,
                   timeout=120)
    python = path / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig."
                              "get_paths()['purelib'])"], check=True, capture_output=True,
                             text=True).stdout.strip()
    parents = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in sorted(parents))
    Path(purelib, "zz_parent_site.pth").write_text(lines)
    return python


def _run(args, cwd=None, timeout=300):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CONNECTOR_", "PYTEST_", "PYTHON"))}
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _build_tools_here() -> bool:
    """True when setuptools>=64 and wheel are installed (so pip can build offline)."""
    from importlib import metadata

    try:
        major = int(metadata.version("setuptools").split(".")[0])
        metadata.version("wheel")
    except (metadata.PackageNotFoundError, ValueError):
        return False
    return major >= 64


@pytest.mark.slow
def test_a_generated_package_installs_lists_checks_and_passes_its_tests(tmp_path):
    pytest.importorskip("pip")
    from connector.scaffold import create

    package = create("acme", tmp_path)
    python = _throwaway_venv(tmp_path / "venv")
    isolation = ["--no-build-isolation"] if _build_tools_here() else []  # else pip fetches
    installed = _run([python, "-m", "pip", "install", "--no-deps", *isolation, "-e", package])
    assert installed.returncode == 0, installed.stdout + installed.stderr
    listed = _run([python, "-m", "connector.cli", "plugins"])
    assert listed.returncode == 0, listed.stderr
    for line in ("app      acme ", "trigger  acme.new_item ", "action   acme.create_item "):
        assert any(row.startswith(line) and row.endswith("[plugin acme]")
                   for row in listed.stdout.splitlines()), (line, listed.stdout)
    checked = _run([python, "-m", "connector.cli", "plugins", "check", "connector-acme"])
    assert checked.stdout == "ok: 1 app, 1 trigger, 1 action, 0 searches checked\n", (
        checked.stdout + checked.stderr)
    tests = _run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=package)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "6 passed" in tests.stdout, tests.stdout
    # nothing reached this environment
    from importlib import metadata

    assert "acme" not in {ep.name for ep in metadata.entry_points(group="connector")}


# -- connector.testing, as a plugin author uses it ----------------------------------------------

HELLO_PLUGIN = '''
"""A small HTTP plugin for the kit's own tests: GET/POST /greetings."""
from marshmallow import Schema, fields

from connector import Action, App, InputSchema, PollTrigger, hookimpl


class Creds(Schema):
    api_key = fields.String(required=True, metadata={"label": "API key", "secret": True})


class HelloApp(App):
    key = "hello"
    label = "Hello"
    help = "Greetings as a service."
    base_url = "https://hello.invalid"
    Credentials = Creds

    def authenticate(self, request, credentials):
        request.headers["X-Key"] = credentials["api_key"]

    def test(self, client):
        return client.get("/greetings")


class NewGreeting(PollTrigger):
    key = "hello.new_greeting"
    app = "hello"
    label = "New greeting"
    help = "Each new greeting."
    sample = {"id": "g1", "name": "Ada"}

    def poll(self, ctx):
        return ctx.client.get("/greetings")["greetings"]


class GreetInputs(InputSchema):
    name = fields.String(required=True, metadata={"label": "Name"})


class Greet(Action):
    key = "hello.greet"
    app = "hello"
    label = "Greet"
    help = "Send a greeting."
    Inputs = GreetInputs
    sample = {"id": "g2", "name": "Ada"}

    def run(self, ctx, inputs):
        return ctx.once(ctx.idempotency_key, inputs,
                        lambda: ctx.client.post("/greetings", json=inputs))


@hookimpl
def register_apps(register):
    register(HelloApp)


@hookimpl
def register_triggers(register):
    register(NewGreeting)


@hookimpl
def register_actions(register):
    register(Greet)
'''

BROKEN_PLUGIN = '''
from connector import App, PollTrigger, hookimpl


class Half(App):
    key = "half"
    label = "Half"
    help = "Half written."


class Nothing(PollTrigger):
    key = "half.nothing"
    app = "half"
    label = "Nothing"
    help = ""


@hookimpl
def register_apps(register):
    register(Half)


@hookimpl
def register_triggers(register):
    register(Nothing)
'''

AUTHOR_TESTS = '''
import datetime as dt

import pytest
from flask import Flask, jsonify, request

import broken_plugin
import hello_plugin
from connector.testing import PluginSuite, standard_suite


def create_fake_hello():
    app = Flask("fake_hello")
    greetings = [{"id": "g1", "name": "Ada"}]

    @app.before_request
    def key():
        if request.headers.get("X-Key") != "k":
            return jsonify(error={"code": "AUTH", "message": "bad key"}), 401

    @app.get("/greetings")
    def listing():
        return jsonify(greetings=greetings)

    @app.post("/greetings")
    def create():
        greeting = {"id": f"g{len(greetings) + 1}", **request.get_json()}
        greetings.append(greeting)
        return jsonify(greeting), 201

    return app


TestHello = standard_suite(hello_plugin, service=create_fake_hello, installed=False,
                           credentials={"hello": {"api_key": "k"}},
                           inputs={"hello.greet": {"name": "Re {{ trigger.name }}"}})


class TestBroken(PluginSuite):
    plugin = "broken_plugin"


class TestNotInstalled(PluginSuite):
    plugin = [hello_plugin]


class TestByKeyWithoutAService(PluginSuite):
    plugin = ["hello.greet", "hello.new_greeting"]


@pytest.fixture
def connector_extra_plugins():
    return [hello_plugin]


def test_host_catalog_service_and_invoke(connector_host, connector_catalog, fake_service,
                                         invoke_trigger, invoke_action):
    assert "hello.greet" in connector_catalog.actions
    service = fake_service(create_fake_hello)
    connector_host.add_connection("hello", "hello", {"api_key": "k"}, service.url)
    assert invoke_trigger("hello.new_greeting", connection="hello").keys == ["g1"]
    first = invoke_action("hello.greet", "hello", {"name": "Bo"}, idempotency_key="x")
    again = invoke_action("hello.greet", "hello", {"name": "Bo"}, idempotency_key="x")
    assert first == again == {"id": "g2", "name": "Bo"}
    posts = [r for r in service.requests if r.method == "POST"]
    assert len(posts) == 1 and posts[0].json() == {"name": "Bo"}
    assert posts[0].headers["X-Key"] == "k"


def test_clock_moves_what_the_host_sees(connector_host, connector_clock):
    from connector import engine, flows, intake
    from connector.store import Run, utcnow

    start = utcnow()
    assert utcnow() == start  # frozen
    flow = flows.save(connector_host, {
        "name": "later", "trigger": {"key": "webhook.catch"},
        "steps": [{"name": "wait", "action": "delay.for",
                   "inputs": {"amount": 1, "unit": "hours"}}]})
    flows.enable(connector_host, flow)
    trigger = connector_host.catalog.trigger("webhook.catch")
    [run_id] = intake.ingest(flow, trigger, [("k1", {"id": 1})]).created
    engine.run_due(connector_host)
    assert Run.get_by_id(run_id).status == Run.WAITING
    connector_clock.advance(minutes=59)
    assert engine.run_due(connector_host) == 0
    connector_clock.advance(minutes=2)
    engine.run_due(connector_host)
    assert Run.get_by_id(run_id).status == Run.SUCCEEDED
    assert utcnow() - start == dt.timedelta(minutes=61)
    assert isinstance(connector_clock.now(), dt.datetime)


def test_sandbox(connector_connected, connector_sandbox, invoke_action):
    out = invoke_action("aiconnector.find_contact", "aiconnector",
                        {"email": "nobody@example.com"})
    assert out["found"] is False
'''


@pytest.mark.slow
def test_connector_testing_as_a_plugin_author_uses_it(tmp_path):
    (tmp_path / "hello_plugin.py").write_text(HELLO_PLUGIN)
    (tmp_path / "broken_plugin.py").write_text(BROKEN_PLUGIN)
    (tmp_path / "test_author.py").write_text(AUTHOR_TESTS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONNECTOR_", "PYTEST_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    report = tmp_path / "report.xml"
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "connector.testing", "-rA",
                             "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                             "-c", os.devnull, f"--junitxml={report}",
                             str(tmp_path / "test_author.py")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = result.stdout
    outcomes = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        name = case.get("name")
        if case.get("classname", "").endswith(("TestHello", "TestBroken", "TestNotInstalled",
                                                "TestByKeyWithoutAService")):
            name = case.get("classname").rsplit(".", 1)[1] + "::" + name
        kinds = {child.tag for child in case}
        outcomes[name] = ("FAILED" if kinds & {"failure", "error"} else
                          "SKIPPED" if "skipped" in kinds else "PASSED")
    expected = {
        "TestHello::test_plugin_is_installed_and_registers_components": "PASSED",
        "TestHello::test_plugins_check_passes": "PASSED",
        "TestHello::test_round_trip_through_a_flow": "PASSED",
        "TestBroken::test_plugin_is_installed_and_registers_components": "FAILED",
        "TestBroken::test_plugins_check_passes": "FAILED",
        "TestNotInstalled::test_plugin_is_installed_and_registers_components": "FAILED",
        "TestByKeyWithoutAService::test_plugin_is_installed_and_registers_components": "PASSED",
        "TestByKeyWithoutAService::test_round_trip_through_a_flow": "SKIPPED",
        "test_host_catalog_service_and_invoke": "PASSED",
        "test_clock_moves_what_the_host_sees": "PASSED",
        "test_sandbox": "PASSED",
    }
    for test, outcome in expected.items():
        assert outcomes.get(test) == outcome, (test, outcomes.get(test), out[-6000:])
    assert "trigger half.nothing (plugin broken_plugin): help is empty" in out
    assert "trigger half.nothing (plugin broken_plugin): poll() is not written" in out
    assert "trigger half.nothing (plugin broken_plugin): sample is empty" in out
    assert "hello_plugin is not loaded from a `connector` entry point" in out
    assert "set credentials and service on the suite" in out


# -- the pieces of connector.testing ------------------------------------------------------------

def test_the_fake_clock_gives_real_datetimes(monkeypatch):
    import datetime as dt

    from connector import store
    from connector.testing import FakeClock

    clock = FakeClock(dt.datetime(2030, 1, 2, 3, 4, 5))
    monkeypatch.setattr(store, "dt", clock.module)
    assert store.utcnow() == dt.datetime(2030, 1, 2, 3, 4, 5)
    assert type(store.utcnow()) is dt.datetime
    clock.advance(hours=1)
    assert store.utcnow() == dt.datetime(2030, 1, 2, 4, 4, 5)
    fake = clock.module.datetime
    assert isinstance(dt.datetime(2020, 1, 1), fake)
    assert type(fake(2020, 1, 1)) is dt.datetime
    assert type(fake.fromisoformat("2020-01-01T00:00:00")) is dt.datetime
    assert fake.now(dt.timezone.utc) == clock.now()
    assert clock.module.timedelta is dt.timedelta


def test_a_fake_service_serves_a_wsgi_callable_and_records_requests():
    import requests

    from connector.testing import FakeService, _wsgi

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"ok": true}']

    service = FakeService(_wsgi(app))
    try:
        answer = requests.post(f"{service.url}/x?y=1", json={"a": 1}, timeout=5)
        assert answer.json() == {"ok": True}
        [seen] = service.requests
        assert (seen.method, seen.path, seen.query, seen.json()) == ("POST", "/x", "y=1",
                                                                     {"a": 1})
    finally:
        service.stop()
    assert _wsgi(lambda test_config=None: "made") == "made"  # a factory is called


def test_standard_suite_refuses_unknown_settings():
    from connector.testing import PluginSuite, standard_suite

    suite = standard_suite("connector.plugins.samora", installed=True)
    assert issubclass(suite, PluginSuite) and suite.plugin == "connector.plugins.samora"
    assert suite.__module__ == __name__
    with pytest.raises(TypeError, match="credentails"):
        standard_suite("x", credentails={})


def test_connector_testing_loads_no_plugin_at_import():
    code = ("import sys, connector.testing; "
            "print(any(m.startswith('connector.plugins.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.strip()
    assert out == "False"


def test_docs_show_every_kit_command():
    docs = (ROOT / "docs" / "plugins.md").read_text()
    for needle in ("connector plugin new", "connector invoke", "connector plugins check",
                   "--plugins-dir", "-p connector.testing", "standard_suite", "PluginSuite",
                   "python -m build", "twine upload", "fake_service", "connector_clock",
                   "invoke_trigger", "invoke_action", "connector_host"):
        assert needle in docs, f"docs/plugins.md does not mention {needle}"


def test_plugins_dir_from_the_environment_reaches_every_command(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from connector.cli import main
    from connector.crypto import new_key

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "shout.py").write_text(
        "from marshmallow import Schema, fields\n"
        "from connector import Action, App, hookimpl\n\n"
        "class Shout(App):\n    key = 'shout'\n    label = 'Shout'\n\n"
        "class Inputs(Schema):\n    text = fields.String(required=True)\n\n"
        "class Upper(Action):\n    key = 'shout.upper'\n    app = 'shout'\n"
        "    label = 'Upper'\n    needs_connection = False\n    Inputs = Inputs\n"
        "    def run(self, ctx, inputs):\n        return {'text': inputs['text'].upper()}\n\n"
        "@hookimpl\ndef register_apps(register):\n    register(Shout)\n\n"
        "@hookimpl\ndef register_actions(register):\n    register(Upper)\n")
    flow = tmp_path / "flow.yaml"
    flow.write_text("name: shouty\ntrigger: {key: webhook.catch}\n"
                    "steps:\n  - {action: shout.upper, inputs: {text: hi}}\n")
    monkeypatch.setenv("CONNECTOR_DATABASE_URL", f"sqlite:///{tmp_path / 'c.db'}")
    monkeypatch.setenv("CONNECTOR_SECRET_KEY", new_key())
    monkeypatch.setenv("CONNECTOR_PLUGINS_DIR", str(plugins))
    result = CliRunner().invoke(main, ["flows", "add", str(flow)])
    assert result.exit_code == 0 and "flow shouty saved" in result.output, result.output
