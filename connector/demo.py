"""`connector demo`: the whole product, end to end, on a temporary SQLite file and the sandbox.

It loads the three flows in examples/flows exactly as a user would, switches them on, makes
things happen in the sandbox's services over HTTP, and checks the outcomes in the sandbox's
own state (calls placed, list members, balance), not only in the connector's run table.
It exits 0 only when every check holds; its last line is ``demo: N runs succeeded, M failed``.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import click
import requests

from . import flows
from .config import Settings
from .crypto import new_key
from .errors import ConnectorError
from .host import Host
from .runtime import Runtime
from .store import Flow, Run, TriggerState

CONNECTION_NAMES = {"contacts_api": "contacts-api", "samora": "samora",
                    "aiconnector": "aiconnector"}
NEW_CONTACTS = [("Katherine Johnson", "+14155550111"), ("Edsger Dijkstra", "+31205550112"),
                ("Barbara Liskov", "+16175550113")]
RECHARGE_AMOUNT = 500
#: the three flows the demo runs; examples/flows holds more (they need other services)
DEMO_FLOWS = ("new-contact-call.yaml", "call-finished-add-to-list.yaml",
              "auto-recharge-credits.yaml")


def examples_dir() -> Path:
    """Return the bundled examples/flows folder (checkout, or installed data files)."""
    candidates = [Path(__file__).resolve().parent.parent / "examples" / "flows",
                  Path(sys.prefix) / "share" / "connector" / "examples" / "flows"]
    for path in candidates:
        if path.is_dir():
            return path
    raise ConnectorError("cannot find examples/flows; pass --examples DIR")


class Checks:
    def __init__(self, out: Callable[[str], None]):
        self.out = out
        self.failed: list[str] = []

    def check(self, ok: bool, message: str, detail: str = "") -> bool:
        self.out(f"{'ok  ' if ok else 'FAIL'} {message}" + (f" ({detail})" if detail and not ok
                                                             else ""))
        if not ok:
            self.failed.append(message)
        return ok


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _final_runs(flow: Flow) -> int:
    return Run.select().where((Run.flow == flow) & (Run.status.in_(Run.FINAL))).count()


def run_demo(keep: bool = False, examples: Path | None = None,
             out: Callable[[str], None] = click.echo) -> int:
    """Run the demo; return the process exit code."""
    from .sandbox import Sandbox

    tmp = Path(tempfile.mkdtemp(prefix="connector-demo-"))
    sandbox = Sandbox(call_delay=0.3)
    runtime = None
    host = None
    try:
        root = sandbox.start()
        out(f"sandbox: Contacts API, Samora AI and AI Connector on {root}")
        settings = Settings.from_env(database_url=f"sqlite:///{tmp / 'connector.db'}",
                                     secret_key=new_key(), public_url=None, host="127.0.0.1",
                                     dispatch_interval=0.2, backoff_base=0.5,
                                     broker_url=None)  # the demo is the embedded default
        host = Host(settings)
        runtime = Runtime(host)
        url = runtime.start(port=0)
        out(f"connector: serving on {url}, database {tmp / 'connector.db'}")
        return _scenario(host, runtime, sandbox, root, examples or examples_dir(), out)
    finally:
        if runtime is not None:
            runtime.stop()
        if host is not None:
            host.close()
        sandbox.stop()
        if keep:
            out(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _scenario(host: Host, runtime: Runtime, sandbox, root: str, examples: Path,
              out: Callable[[str], None]) -> int:
    checks = Checks(out)
    state = lambda: requests.get(f"{root}/_sandbox/state", timeout=10).json()  # noqa: E731
    for app, name in CONNECTION_NAMES.items():
        info = sandbox.connections()[app]
        host.add_connection(name, app, info["credentials"], info["base_url"])
    saved = {}
    for name in DEMO_FLOWS:
        flow = flows.save(host, flows.load_file(examples / name))
        saved[flow.trigger_key] = flow
    new_contact = saved["contacts_api.new_contact"]
    call_finished = saved["samora.call_finished"]
    recharge = saved["aiconnector.auto_recharge"]

    by_org = state()["contacts_api"]["contacts"]
    existing = [c["phone"] for org in by_org.values() for c in org if c.get("phone")]
    for flow in (new_contact, call_finished, recharge):
        flows.enable(host, flow)
    out(f"flow {new_contact.name}: on ({len(existing)} existing contacts recorded as seen)")
    out(f"flow {call_finished.name}: on (webhook registered with Samora)")
    secret = host.box.open(TriggerState.get(TriggerState.flow == recharge).sealed_subscription)
    requests.put(f"{root}/_sandbox/aiconnector/auto-recharge", timeout=10,
                 json={"url": flows.webhook_url(host, recharge), "secret": secret["secret"]}
                 ).raise_for_status()
    out(f"flow {recharge.name}: on (URL and signing secret set in AI Connector)")

    contacts = sandbox.connections()["contacts_api"]
    headers = {"Authorization": f"Bearer {contacts['credentials']['api_key']}",
               "X-Org-Id": contacts["credentials"]["org_id"]}
    for name, phone in NEW_CONTACTS:
        requests.post(f"{contacts['base_url']}/api/v1/contacts", headers=headers, timeout=10,
                      json={"name": name, "phone": phone, "source": "demo"}).raise_for_status()
    out(f"created {len(NEW_CONTACTS)} contacts in the Contacts API")
    for _ in range(3):  # however often the poll runs, each contact fires once
        runtime.scheduler.poll(new_contact.id)
    wanted = {phone for _, phone in NEW_CONTACTS}

    wait_for(lambda: _final_runs(new_contact) >= len(NEW_CONTACTS))
    wait_for(lambda: _final_runs(call_finished) >= len(NEW_CONTACTS) and sandbox.wait_idle(0.1))
    calls = state()["samora"]["calls"]
    called = [c["to_number"] for c in calls]
    checks.check(sorted(called) == sorted(wanted),
                 f"each new contact was called exactly once ({len(called)} calls, none to the "
                 f"{len(existing)} existing contacts)", f"calls went to {called}")
    checks.check(all(c["status"] == "CALL_FINISHED" for c in calls),
                 "every call finished and Samora delivered CALL_FINISHED, signed")
    ai = state()["aiconnector"]
    list_id = sandbox.seeded["aiconnector"]["list_id"]
    members = _list_members(ai, list_id)
    on_list = {c["phone"] for c in ai["contacts"] if c["id"] in members}
    checks.check(on_list == wanted,
                 f"{len(wanted)} finished calls put {len(on_list)} contacts on list {list_id}",
                 f"list holds {sorted(on_list)}")

    before = _balance(ai, sandbox.seeded["aiconnector"]["subaccount_email"])
    fired = requests.post(f"{root}/_sandbox/aiconnector/auto-recharge/fire", timeout=30, json={
        "email": sandbox.seeded["aiconnector"]["subaccount_email"],
        "amount": RECHARGE_AMOUNT, "times": 2}).json()
    wait_for(lambda: _final_runs(recharge) >= 1 and sandbox.wait_idle(0.1))
    ai = state()["aiconnector"]
    after = _balance(ai, sandbox.seeded["aiconnector"]["subaccount_email"])
    key = fired.get("idempotency_key")
    checks.check(after == before + RECHARGE_AMOUNT and
                 Run.select().where(Run.flow == recharge).count() == 1,
                 f"auto-recharge delivered twice, credits granted once (balance {before:g} -> "
                 f"{after:g})",
                 f"key {key}, runs {Run.select().where(Run.flow == recharge).count()}")

    flows.disable(host, call_finished)
    hooks = requests.get(f"{sandbox.connections()['samora']['base_url']}/v2/webhooks",
                         headers={"X-API-Key": sandbox.connections()["samora"]["credentials"]
                                  ["api_key"]}, timeout=10).json()
    remaining = hooks.get("data", hooks) if isinstance(hooks, dict) else hooks
    checks.check(not remaining, f"switching {call_finished.name} off deleted its Samora webhook",
                 f"{len(remaining)} webhooks left")

    succeeded = Run.select().where(Run.status == Run.SUCCEEDED).count()
    failed = Run.select().where(Run.status != Run.SUCCEEDED).count()
    for run in Run.select().where(Run.status != Run.SUCCEEDED):
        out(f"run {run.id} ({run.flow.name}) is {run.status}: {run.error or ''}")
    if checks.failed:
        out(f"demo: {len(checks.failed)} checks failed")
    out(f"demo: {succeeded} runs succeeded, {failed} failed")
    return 0 if not checks.failed and failed == 0 else 1


def _list_members(ai_state: dict, list_id: str) -> set:
    return set(next(item for item in ai_state["lists"] if item["id"] == list_id)["members"])


def _balance(ai_state: dict, email: str) -> float:
    for sub in ai_state["subaccounts"]:
        if sub["email"] == email:
            return float(sub["balance"])
    raise ConnectorError(f"the sandbox has no sub-account {email}")
