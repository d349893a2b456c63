"""Bad input, fuzzed (hypothesis): the webhook endpoint, the flow-file loader, the CLI.

- The webhook endpoint, through Flask's test client, against a real flow of each bundled
  webhook trigger kind (webhook.catch in every auth mode, samora.call_finished,
  aiconnector.auto_recharge signed and unsigned): arbitrary bytes, JSON values, form and
  multipart bodies, content types, headers and query strings, often correctly signed so
  that the parsers behind the signature check are reached. No answer is a 5xx, every error
  is the JSON envelope, and the app logs no exception.
- The flow loader: ``flows.load_file`` on arbitrary YAML-ish text, and ``flows.save`` on
  arbitrary structures shaped like flows (random keys and values, nested steps, branches,
  filters, templates). Only UserError/FlowError, and every message names a place.
- The CLI: random argv drawn from the real commands and options with random values. Exit
  codes 0, 1 or 2 and never a traceback.

Each fuzz is bounded (max_examples, no deadline, no example database) so the file runs in
well under a minute. The hand-written tests at the end pin the gaps the fuzzing found.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from connector import flows
from connector.errors import FlowError, UserError
from connector.signatures import sign
from connector.store import TriggerState
from connector.web import MAX_BODY, create_app

FUZZ = settings(max_examples=150, deadline=None, database=None, derandomize=False,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "flows"

# -- shared strategies -----------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(
    max_size=30)
json_values = st.recursive(json_scalars, lambda children: st.lists(children, max_size=4) | (
    st.dictionaries(st.text(max_size=12), children, max_size=4)), max_leaves=20)
ascii_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=40)
latin1_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xff,
                                    blacklist_characters="\x7f"), max_size=40)


# == the webhook endpoint =========================================================================

CONTENT_TYPES = [
    "application/json", "application/json; charset=utf-8", "application/json; charset=utf-16",
    "application/vnd.api+json", "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=bogus", "multipart/form-data",
    "multipart/form-data; boundary=XyZ", "text/plain", "text/plain; charset=latin-1",
    "text/xml", "application/octet-stream", "image/png", "*/*", "", "json", ";;;",
    "application/json; boundary=\"x", "multipart/mixed; boundary=XyZ",
]

CATCH_MODES = {
    "catch-none": {"auth": "none"},
    "catch-token": {"auth": "token"},
    "catch-basic": {"auth": "basic"},
    "catch-std": {"auth": "standard_webhooks"},
    "catch-hmac": {"auth": "hmac_sha256", "signature_prefix": "sha256="},
    "catch-hmac-b64": {"auth": "hmac_sha256", "signature_encoding": "base64"},
    "catch-items": {"auth": "none", "items_path": "data.orders", "dedupe_field": "id"},
}


def catch_flow(name: str, inputs: dict) -> dict:
    return {"name": name, "trigger": {"key": "webhook.catch", "inputs": inputs},
            "steps": [{"name": "note", "action": "formatter.text",
                       "inputs": {"operation": "trim", "text": "{{ trigger }}"}}]}


@pytest.fixture
def hooks(connected, sandbox):
    """Every bundled webhook trigger kind as a switched-on flow: name -> (flow, subscription)."""
    found = {}
    for name, inputs in CATCH_MODES.items():
        found[name] = flows.enable(connected, flows.save(connected, catch_flow(name, inputs)))
    for example in ("call-finished-add-to-list", "auto-recharge-credits"):
        data = yaml.safe_load((EXAMPLES / f"{example}.yaml").read_text())
        found[example] = flows.enable(connected, flows.save(connected, data))
    unsigned = yaml.safe_load((EXAMPLES / "auto-recharge-credits.yaml").read_text())
    unsigned["name"] = "recharge-unsigned"
    unsigned["trigger"]["inputs"] = {"signature": "none"}
    found["recharge-unsigned"] = flows.enable(connected, flows.save(connected, unsigned))
    subscriptions = {}
    for name, flow in found.items():
        state = TriggerState.get(TriggerState.flow == flow)
        subscriptions[name] = connected.box.open(state.sealed_subscription)
    return {name: (flow, subscriptions[name]) for name, flow in found.items()}


def shaped_body(flow_name: str):
    """JSON bodies shaped like what each trigger expects, with random values inside."""
    if flow_name.startswith("call-finished"):
        return st.fixed_dictionaries({"event": st.sampled_from(["CALL_FINISHED", "CALL_STARTED"])
                                      | json_values,
                                      "data": st.fixed_dictionaries({"call_id": json_values})
                                      | json_values}, optional={"timestamp": json_values})
    if "recharge" in flow_name:
        return st.fixed_dictionaries({}, optional={
            "idempotency_key": json_values, "email": json_values, "amount": json_values,
            "data": json_values, "sub_account_email": json_values})
    if flow_name == "catch-items":
        return st.fixed_dictionaries({"data": st.fixed_dictionaries({"orders": st.lists(
            st.fixed_dictionaries({}, optional={"id": json_values, "x": json_values})
            | json_values, max_size=4)}) | json_values})
    return json_values


@st.composite
def webhook_requests(draw, names: list[str]):
    name = draw(st.sampled_from(names + ["(unknown token)"]))
    kind = draw(st.sampled_from(["bytes", "json", "shaped", "form", "multipart", "text", "deep",
                                 "empty"]))
    if kind == "bytes":
        body = draw(st.binary(max_size=600))
    elif kind in ("json", "shaped"):
        value = draw(shaped_body(name) if kind == "shaped" else json_values)
        body = json.dumps(value).encode()
    elif kind == "form":
        pairs = draw(st.lists(st.tuples(latin1_text, latin1_text), max_size=5))
        from urllib.parse import urlencode
        body = urlencode(pairs).encode("latin-1", "replace")
    elif kind == "multipart":
        fields = draw(st.lists(st.tuples(ascii_text, st.binary(max_size=50)), max_size=3))
        parts = [b"--XyZ\r\nContent-Disposition: form-data; name=\"" + k.encode() + b"\""
                 + draw(st.sampled_from([b"", b"; filename=\"f.bin\""])) + b"\r\n\r\n" + v + b"\r\n"
                 for k, v in fields]
        body = b"".join(parts) + draw(st.sampled_from([b"--XyZ--\r\n", b"", b"--XyZ"]))
    elif kind == "text":
        body = draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    elif kind == "deep":
        depth = draw(st.integers(1, 200_000))
        body = draw(st.sampled_from([b"[", b"{\"a\":"])) * depth
    else:
        body = b""
    ctype = draw(st.sampled_from(CONTENT_TYPES) | latin1_text)
    headers = {f"X-Fuzz-{i}": v for i, v in enumerate(draw(st.lists(latin1_text, max_size=3)))}
    # Sign the body the way each flow checks, right or wrong: the parsers behind the check
    # must see random bodies too, not only the signature check.
    sign_mode = draw(st.sampled_from(["right", "wrong", "none", "garbage"]))
    headers.update(draw(auth_headers(name, body, sign_mode)))
    args = draw(st.dictionaries(ascii_text, ascii_text, max_size=3))
    method = draw(st.sampled_from(["POST"] * 8 + ["GET", "PUT", "DELETE"]))
    return name, method, body, ctype, headers, args


@st.composite
def auth_headers(draw, name: str, body: bytes, mode: str):
    if mode == "none" or name == "(unknown token)":
        return {}
    if mode == "garbage":
        keys = ["webhook-id", "webhook-timestamp", "webhook-signature", "X-Webhook-Token",
                "X-Signature", "Authorization"]
        # Header values a client could send; non-ASCII values for the headers that
        # webhook.catch compares are tested separately below.
        return {k: draw(ascii_text if k in ("X-Webhook-Token", "X-Signature") else latin1_text)
                for k in draw(st.lists(st.sampled_from(keys), max_size=4, unique=True))}
    return {"__sign__": mode}  # resolved once the subscription is known (see sign_for)


def sign_for(name: str, subscription: dict, body: bytes, headers: dict) -> dict:
    mode = headers.pop("__sign__", None)
    if mode is None:
        return headers
    secret = subscription.get("secret") or subscription.get("token") or subscription.get(
        "password") or ""
    if mode == "wrong":
        secret = "whsec_" + base64.b64encode(b"w" * 24).decode()
    inputs = CATCH_MODES.get(name, {})
    auth = inputs.get("auth", "standard_webhooks")
    if auth == "token":
        headers["X-Webhook-Token"] = secret if mode == "right" else "wrong-token"
    elif auth == "basic":
        password = secret if mode == "right" else "nope"
        headers["Authorization"] = "Basic " + base64.b64encode(
            f"connector:{password}".encode()).decode()
    elif auth == "hmac_sha256":
        digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
        value = digest.hex() if inputs.get("signature_encoding", "hex") == "hex" else (
            base64.b64encode(digest).decode())
        headers["X-Signature"] = inputs.get("signature_prefix", "") + value
    elif auth == "standard_webhooks" and secret:
        headers.update(sign(secret, f"msg_{uuid.uuid4().hex}", body))
    return headers


def test_webhook_endpoint_fuzz_no_5xx_no_exception(connected, hooks, caplog):
    client = create_app(connected).test_client()
    names = sorted(hooks)
    seen: dict[int, int] = {}

    @FUZZ
    @given(webhook_requests(names))
    def check(request):
        name, method, body, ctype, headers, args = request
        flow, subscription = hooks.get(name, (None, {}))
        token = flow.webhook_token if flow else "no-such-token-" + "x" * 20
        headers = sign_for(name, subscription, body, dict(headers))
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            response = client.open(f"/hooks/{token}", method=method, data=body,
                                   headers=headers, content_type=ctype or None,
                                   query_string=args)
        status = response.status_code
        seen[status] = seen.get(status, 0) + 1
        assert status < 500, (name, status, response.get_data(as_text=True)[:300])
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
        assert not errors, [r.getMessage() for r in errors]
        assert response.is_json
        if status >= 400:
            error = response.get_json()["error"]
            assert error["code"] and error["message"]
        else:
            assert status in (200, 202)

    check()
    # The fuzz reached past the signature checks, into the parsers and the ledger.
    assert seen.get(200, 0) > 0 and seen.get(400, 0) > 0 and seen.get(401, 0) > 0, seen


def test_webhook_endpoint_fills_the_gaps(connected, hooks):
    """The cases test_web.py does not cover, once each."""
    client = create_app(connected).test_client()
    flow, _sub = hooks["catch-none"]
    url = f"/hooks/{flow.webhook_token}"
    too_big = client.post(url, data=b"x" * (MAX_BODY + 1), content_type="text/plain")
    assert too_big.status_code == 413
    assert too_big.get_json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    for ctype in ("application/octet-stream", "image/png", "application/xml"):
        response = client.post(url, data=b"abc", content_type=ctype)
        assert response.status_code == 415, ctype
        assert ctype in response.get_json()["error"]["message"]
    assert client.post(url, data=b"{not json", content_type="application/json").get_json()[
        "error"]["code"] == "INVALID_PAYLOAD"
    assert client.get(url).status_code == 405
    assert client.get(url).get_json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    # a body nested deeper than the JSON parser can follow is a bad payload, not a crash
    deep = client.post(url, data=b"[" * 100_000 + b"]" * 100_000, content_type="application/json")
    assert deep.status_code == 400, deep.get_data(as_text=True)
    assert deep.get_json()["error"]["code"] == "INVALID_PAYLOAD"
    # items_path and dedupe_field name what is wrong
    items, _ = hooks["catch-items"]
    bad = client.post(f"/hooks/{items.webhook_token}", json={"data": {"orders": "x"}})
    assert bad.status_code == 400 and "items_path" in bad.get_json()["error"]["message"]
    bad = client.post(f"/hooks/{items.webhook_token}", json={"data": {"orders": [{"x": 1}]}})
    assert bad.status_code == 400 and "dedupe_field" in bad.get_json()["error"]["message"]


@pytest.mark.parametrize("name, header", [("catch-token", "X-Webhook-Token"),
                                          ("catch-hmac", "X-Signature")])
def test_a_non_ascii_token_or_signature_header_is_a_401(connected, hooks, name, header):
    flow, _sub = hooks[name]
    client = create_app(connected).test_client()
    response = client.post(f"/hooks/{flow.webhook_token}", data=b"{}",
                           content_type="application/json", headers={header: "sha256=\xe9"})
    assert response.status_code == 401


# == the flow-file loader ========================================================================

KEYS = ["name", "description", "enabled", "trigger", "steps", "key", "connection", "inputs",
        "poll_interval", "action", "filter", "branches", "conditions", "field", "op", "value",
        "all", "any", "mode", "items", "operation", "text", "auth", "cron", "timezone"]
ACTIONS = ["formatter.text", "looping.for_each", "paths.split", "control.paths", "delay.for",
           "http.request", "samora.trigger_call", "aiconnector.grant_credits", "nosuch.action",
           "formatter.number", ""]
TRIGGERS = ["webhook.catch", "schedule.cron", "samora.call_finished", "contacts_api.new_contact",
            "aiconnector.auto_recharge", "nosuch.trigger", ""]
TEMPLATES = ["{{ trigger.x }}", "{{ steps.a.b }}", "{{ ''.__class__ }}", "{{ x", "{% if %}",
             "{% for i in range(3) %}{{ i }}{% endfor %}", "{{ 'a' * 10**9 }}",
             "{% include 'x' %}", "{{ steps.later.x }}", "{{ item.x }}", "}}{{", "{#"]

leaf = (json_scalars | st.sampled_from(TEMPLATES) | st.sampled_from(ACTIONS + TRIGGERS)
        | st.sampled_from(["equals", "gt", "exists", "matches", "(", "in"]))
flowish = st.recursive(
    leaf,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(KEYS) | st.text(min_size=1, max_size=8) | st.integers(-2, 2), children,
        max_size=5),
    max_leaves=25)


def text_step(name: str, text: str = "{{ trigger.x }}") -> dict:
    return {"name": name, "action": "formatter.text", "inputs": {"operation": "trim",
                                                                 "text": text}}


#: valid definitions the mutations start from: every kind of trigger, loops, paths, filters
VALID_FLOWS = [
    {"name": "fuzz", "trigger": {"key": "webhook.catch", "inputs": {"auth": "token"}},
     "steps": [text_step("a"), text_step("b", "{{ steps.a.result }}")]},
    {"name": "fuzz-loop", "trigger": {"key": "schedule.cron", "inputs": {"cron": "0 9 * * *"}},
     "steps": [{"name": "each", "action": "looping.for_each", "inputs": {"items": [1, 2]},
                "steps": [text_step("inner", "{{ item }}")]},
               text_step("after", "{{ steps.each.count }}")]},
    {"name": "fuzz-paths", "description": "d", "trigger": {
        "key": "aiconnector.auto_recharge", "connection": "aiconnector"},
     "steps": [{"name": "split", "action": "paths.split", "inputs": {"mode": "first"},
                "branches": [
                    {"name": "big", "conditions": [{"field": "trigger.amount", "op": "gt",
                                                    "value": 100}],
                     "steps": [text_step("one")]},
                    {"name": "rest", "steps": [text_step("two")]}]}]},
    {"name": "fuzz-filter", "trigger": {"key": "webhook.catch"},
     "steps": [dict(text_step("f"), filter={"any": [
         {"field": "{{ trigger.x }}", "op": "matches", "value": "^a"},
         {"field": "trigger.y", "op": "in", "value": [1, 2]}]})]},
]

ANY = leaf | flowish


@st.composite
def mutated(draw, value, depth=0):
    """``value`` with a few random changes anywhere inside: replace, delete, add a key."""
    if depth > 6 or not isinstance(value, (dict, list)) or not value:
        return draw(ANY) if draw(st.integers(0, 3)) == 0 else value
    out = dict(value) if isinstance(value, dict) else list(value)
    for _ in range(draw(st.integers(1, 2))):
        if not out:
            break
        key = draw(st.sampled_from(list(out) if isinstance(out, dict) else range(len(out))))
        action = draw(st.sampled_from(["descend", "descend", "descend", "replace", "delete",
                                       "add"]))
        if action == "descend":
            out[key] = draw(mutated(out[key], depth + 1))
        elif action == "replace":
            out[key] = draw(ANY | st.sampled_from(ACTIONS + TRIGGERS + TEMPLATES))
        elif action == "delete":
            del out[key]
        elif isinstance(out, dict):
            out[draw(st.sampled_from(KEYS) | st.text(min_size=1, max_size=6))] = draw(ANY)
        else:
            out.append(draw(ANY | st.sampled_from(["a", "z", "f"]).map(text_step)))
    return out


flow_definitions = st.sampled_from(VALID_FLOWS).flatmap(mutated) | flowish


def keys_in(value) -> set[str]:
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found.update(str(k) for k in item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def assert_names_a_place(message: str, path: Path | None = None, data=None) -> None:
    """The message starts with the file, or with a place: ``steps[0].inputs.text: ...``."""
    if path is not None:
        assert message.startswith(f"{path}: "), message
        return
    place, sep, rest = message.partition(": ")
    assert sep and rest and place.strip(), message
    # a field path has no spaces, unless a key the user wrote has some
    assert " " not in place or any(place.endswith(k) for k in keys_in(data) if " " in k), message


def test_flow_save_fuzz_only_user_errors_naming_a_place(host):
    host.add_connection("aiconnector", "aiconnector", {"api_key": "aic_fuzz"},
                        "http://127.0.0.1:9/v1")

    @FUZZ
    @given(flow_definitions)
    def check(data):
        if not isinstance(data, dict):
            return  # load_file refuses a non-mapping before save sees it (tested below)
        try:
            flows.save(host, data)
        except UserError as exc:  # FlowError included
            assert_names_a_place(str(exc), data=data)

    check()


def test_an_empty_key_is_named_in_the_message(host):
    data = dict(VALID_FLOWS[0], **{"": 1})
    with pytest.raises(FlowError) as info:
        flows.save(host, data)
    assert_names_a_place(str(info.value))


@st.composite
def yamlish_text(draw):
    kind = draw(st.sampled_from(["dump", "text", "bytes", "snippets"]))
    if kind == "dump":
        return yaml.safe_dump(draw(flow_definitions), sort_keys=False).encode()
    # Always valid UTF-8: a file that is not is tested below.
    if kind == "text":
        return draw(st.text(st.characters(blacklist_categories=["Cs"]), max_size=300)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=300)).decode("latin-1").encode()
    snippets = ["name: x\n", "trigger:\n  key: webhook.catch\n", "steps:\n", "  - action: a\n",
                "    inputs: {text: '{{ x }}'}\n", "- a\n", "a: &x [*x]\n", ": :\n", "\t- x\n",
                "!!python/object:os.system x\n", "{[}\n", "key: !!binary AAAA\n",
                "when: 2020-01-01\n", "n: .nan\n", "? [a, b]\n: c\n", "%YAML 1.1\n---\n",
                "'unterminated\n", "a: b: c\n", "x: !custom 1\n"]
    return "".join(draw(st.lists(st.sampled_from(snippets), max_size=8))).encode()


def test_flow_file_fuzz_only_user_errors_naming_the_file(host, tmp_path):
    path = tmp_path / "fuzz-flow.yaml"

    @FUZZ
    @given(yamlish_text())
    def check(raw):
        path.write_bytes(raw)
        try:
            data = flows.load_file(path)
        except UserError as exc:
            assert_names_a_place(str(exc), path)
            return
        assert isinstance(data, dict)
        try:
            flows.save(host, data)
        except UserError as exc:
            assert_names_a_place(str(exc), data=data)

    check()


@pytest.mark.parametrize("raw", [b"name: caf\xe9\n", b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n"],
                         ids=["not-utf8", "nested-5000"])
def test_flow_files_that_escape_the_loader(host, tmp_path, raw):
    path = tmp_path / "f.yaml"
    path.write_bytes(raw)
    with pytest.raises(UserError):
        flows.save(host, flows.load_file(path))


def test_a_yaml_alias_inside_its_own_value_is_a_flow_error(host, tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text("name: x\ntrigger: {key: webhook.catch}\nsteps:\n- action: formatter.text\n"
                    "  inputs: &i {operation: trim, text: [*i]}\n")
    with pytest.raises(FlowError) as info:
        flows.save(host, flows.load_file(path))
    assert str(info.value).startswith("steps[0].inputs.text[0]")
    assert "refers to itself" in str(info.value)


# == the CLI ======================================================================================

#: never run by the fuzz: they serve forever, or call the network with what they are given
LONG_RUNNING = {"serve", "demo", "sandbox", "connections test", "invoke"}


def cli_main():
    """The real command, with `connector keys` wired in if cli.py does not add it yet."""
    from connector.cli import main
    from connector.cli_keys import keys

    if "keys" not in main.commands:
        main.add_command(keys)
    return main


def commands(group: click.Group, prefix=()) -> list[tuple[tuple[str, ...], click.Command]]:
    found = [(prefix, group)] if prefix else []
    for name, command in group.commands.items():
        path = (*prefix, name)
        if " ".join(path) in LONG_RUNNING:
            continue
        if isinstance(command, click.Group):
            found.extend(commands(command, path))
        else:
            found.append((path, command))
    return found


@pytest.fixture
def cli_env(monkeypatch, tmp_path, host, settings):
    monkeypatch.setenv("CONNECTOR_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CONNECTOR_SECRET_KEY", settings.secret_key)
    host.add_connection("aic", "aiconnector", {"api_key": "aic_fuzz_key"}, "http://127.0.0.1:9/v1")
    flows.save(host, catch_flow("hook", {"auth": "token"}))
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(catch_flow("from-file", {"auth": "none"})))
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    (tmp_path / "binary.yaml").write_bytes(b"\x00\x01\x02")
    (tmp_path / "item.json").write_text('{"phone": "+1555"}')
    (tmp_path / "dir").mkdir()
    return tmp_path


def values_for(param: click.Parameter, files: Path):
    paths = [str(files / n) for n in ("good.yaml", "bad.yaml", "item.json", "dir", "nope.yaml")]
    names = ["hook", "aic", "nosuch", "from-file", "", "-", "--", "ü", "1", "a" * 300]
    kind = param.type
    if isinstance(kind, click.Choice):
        good = st.sampled_from(list(kind.choices))
    elif isinstance(kind, (click.types.IntParamType, click.types.FloatParamType)):
        good = st.integers(-10, 10**12).map(str) | st.sampled_from(["1", "2", "0"])
    elif isinstance(kind, (click.Path, click.File)):
        good = st.sampled_from(paths)
    else:
        good = st.sampled_from(names) | st.text(max_size=20).filter(lambda s: "\x00" not in s)
    return st.one_of(good, good, good, ascii_text)  # mostly well-typed, sometimes not


@st.composite
def argvs(draw, table, files):
    path, command = draw(st.sampled_from(table))
    argv = list(path)
    for param in command.params:
        if draw(st.integers(0, 9)) >= (9 if param.required else 5):
            continue
        if isinstance(param, click.Option):
            flag = draw(st.sampled_from(param.opts))
            if param.is_flag or param.count:
                argv.append(flag)
            else:
                for _ in range(draw(st.integers(1, 2)) if param.multiple else 1):
                    argv += [flag, draw(values_for(param, files))]
        else:
            for _ in range(draw(st.integers(1, 2)) if param.nargs == -1 else 1):
                argv.append(draw(values_for(param, files)))
    if draw(st.integers(0, 3)) == 0:  # now and then, a stray token anywhere
        token = draw(st.sampled_from(["--bogus", "-x", "--json", "--help", "extra", "-vv",
                                      "--version", "--limit=0", "=", "--field"]))
        argv.insert(draw(st.integers(0, len(argv))), token)
    return argv


def test_cli_fuzz_exits_0_1_or_2_without_a_traceback(cli_env):
    main = cli_main()
    table = commands(main)
    assert {" ".join(p) for p, _c in table} >= {"flows add", "runs show", "connections add",
                                                "keys rotate"}
    runner = CliRunner()
    codes: dict[int, int] = {}

    @FUZZ
    @given(argvs(table, cli_env))
    def check(argv):
        result = runner.invoke(main, argv, catch_exceptions=True)
        codes[result.exit_code] = codes.get(result.exit_code, 0) + 1
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            argv, repr(result.exception))
        assert result.exit_code in (0, 1, 2), (argv, result.exit_code, result.output[-500:])
        assert "Traceback" not in result.output, (argv, result.output[-2000:])
        if result.exit_code != 0:
            lines = [ln for ln in result.output.strip().splitlines() if ln.startswith("error:")]
            assert lines, (argv, result.output[-500:])

    started = time.monotonic()
    check()
    assert codes.get(0) and (codes.get(1) or codes.get(2)), codes
    assert time.monotonic() - started < 60
