"""The web UI in a real browser (headless Debian chromium through Playwright) against the
embedded product serving on an ephemeral port, with the sandbox standing in for the services.

A builder signs in by typing, adds a connection by clicking (a wrong key's test shows
Samora's own message; the credentials are replaced and the test passes), switches a
YAML-loaded flow on, and a call that Samora really finishes delivers a signed webhook whose
run shows as succeeded. A run failed by a service outage is replayed from its run page and
succeeds. Screenshots of the main pages are saved to docs/screenshots/. Skipped, saying why,
where no chromium is installed.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import requests

from connector import auth, flows
from connector.runtime import Runtime
from connector.store import Flow, Run

from .browser import browser, page, screenshot  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow
EXAMPLE = (Path(__file__).resolve().parent.parent / "examples" / "flows" /
           "call-finished-add-to-list.yaml")
FLOW = "call-finished-add-to-list"


@pytest.fixture
def served(make_host, sandbox):
    """The product on an ephemeral port, one attempt per step (so an outage fails a run at
    once), and an AI Connector connection; yields (host, root URL)."""
    host = make_host(max_attempts=1)
    info = sandbox.connections()["aiconnector"]
    host.add_connection("aiconnector", "aiconnector", info["credentials"], info["base_url"])
    auth.add_user("ada", "analytical-engine", scope="write")
    rt = Runtime(host)
    root = rt.start(port=0).replace("0.0.0.0", "127.0.0.1")
    try:
        yield host, root
    finally:
        rt.stop()


def finish_a_call(sandbox, number: str) -> None:
    """Have Samora place a call that finishes, so it delivers a signed CALL_FINISHED."""
    creds = sandbox.connections()["samora"]
    answer = requests.post(f"{creds['base_url']}/v1/call/trigger", timeout=10,
                           headers={"X-API-Key": creds["credentials"]["api_key"]},
                           json={"agent_id": sandbox.seeded["samora"]["agent_id"],
                                 "to_number": number, "context": {"contact_name": "Ada"}})
    answer.raise_for_status()


def reload_until(page, selector: str, timeout: float = 15.0):
    """Reload ``page`` until ``selector`` matches something; return the locator."""
    deadline = time.monotonic() + timeout
    while True:
        found = page.locator(selector)
        if found.count() or time.monotonic() > deadline:
            return found
        time.sleep(0.25)
        page.reload()


def test_a_builder_connects_switches_a_flow_on_and_replays_a_failed_run(served, sandbox, page):
    host, root = served
    samora = sandbox.connections()["samora"]

    # sign in by typing
    page.goto(root + "/")
    assert page.url.startswith(root + "/ui/login")
    screenshot(page, "sign-in")
    page.fill("#f-username", "ada")
    page.fill("#f-password", "not-the-password")
    page.click("#with-password button[type=submit]")
    assert page.locator(".form-error").inner_text() == "Wrong username or password."
    page.fill("#f-password", "analytical-engine")
    page.click("#with-password button[type=submit]")
    page.wait_for_url(root + "/ui/flows")
    assert page.locator(".who .user").inner_text() == "ada"

    # add a connection by clicking: a missing key is refused beside its field
    page.click("nav >> text=Connections")
    page.select_option("#f-app", "samora")
    page.fill("#f-name", "samora")
    page.fill("#add-samora-base_url", samora["base_url"])
    page.click("#add-connection button[type=submit]")
    error = page.locator('#add-connection [data-error-for="credentials.api_key"]:visible')
    assert error.inner_text() == "Missing data for required field."
    assert page.get_attribute("#add-samora-api_key", "aria-invalid") == "true"
    page.fill("#add-samora-api_key", "sk_wrong_key")
    page.click("#add-connection button[type=submit]")
    row = page.locator('tr[data-connection="samora"]')
    row.wait_for()
    assert "sk_wrong_key" not in page.content()
    assert "********" in row.inner_text()

    # its test shows Samora's own message; replacing the credentials fixes it
    row.locator("[data-test-connection]").click()
    result = page.locator('[data-test-result="samora"]')
    result.locator("text=invalid").wait_for()
    assert result.inner_text() == ("Failed (401 UNAUTHORIZED): The API key is invalid or "
                                   "revoked.")
    row.locator("[data-replace-connection]").click()
    form = page.locator('form.replace-connection[data-connection="samora"]')
    form.locator('input[name="credentials.api_key"]').fill(samora["credentials"]["api_key"])
    form.locator("button[type=submit]").click()
    page.locator("#flash.ok").wait_for()
    page.locator('[data-test-connection="samora"]').click()
    page.locator('[data-test-result="samora"].ok').wait_for()
    assert page.locator('[data-test-result="samora"]').inner_text() == "Connection works."
    screenshot(page, "connections")

    # a flow loaded from its YAML file shows in the UI; the switch turns it on
    flows.save(host, flows.load_file(EXAMPLE))
    page.click("nav >> text=Flows")
    switch = page.locator(f'[data-toggle-flow="{FLOW}"]')
    assert not switch.is_checked()
    switch.check()
    page.locator("#flash.ok").wait_for()
    assert page.locator(f'tr[data-flow="{FLOW}"] .badge.state-on').count() == 1
    assert Flow.get(Flow.name == FLOW).enabled
    assert len(sandbox.state()["samora"]["webhooks"]) == 1

    # Samora finishes a call: the signed webhook's run shows as succeeded
    finish_a_call(sandbox, "+14155550170")
    page.click(f'tr[data-flow="{FLOW}"] >> text=Runs')
    done = reload_until(page, 'tr[data-status="succeeded"]')
    assert done.count() == 1
    page.goto(root + "/ui/flows")
    assert "1 succeeded" in page.locator(f'tr[data-flow="{FLOW}"] .counts').inner_text()
    screenshot(page, "flows")

    # an outage fails the next run; it is replayed from its page and succeeds
    sandbox.faults.set("aiconnector", error_rate=1, paths=["/v1/lists/*"], limit=1)
    finish_a_call(sandbox, "+14155550171")
    page.goto(root + f"/ui/flows/{FLOW}/runs")
    failed = reload_until(page, 'tr[data-status="failed"] a')
    failed.first.click()
    assert "add_to_list" in page.locator(".notice.error").first.inner_text()
    page.fill("#f-item", "{not json")
    page.click("#replay-item button[type=submit]")
    item_error = page.locator('[data-error-for="item"]')
    assert item_error.inner_text().startswith("Not valid JSON: ")
    assert "position 1" in item_error.inner_text()  # where the parser stopped
    page.fill("#f-item", "[1, 2]")
    page.click("#replay-item button[type=submit]")
    assert item_error.inner_text() == ("Expected a JSON object ({...}), the trigger item's "
                                       "fields.")
    run_id = int(re.search(r"/ui/runs/(\d+)$", page.url).group(1))
    page.click("text=Replay from add_to_list")
    page.locator("#flash.ok").wait_for()
    reload_until(page, "h1 .badge.status-succeeded")
    assert Run.get_by_id(run_id).status == Run.SUCCEEDED
    steps = page.locator("section.step")
    assert steps.count() == 2
    assert "1 attempt" in steps.nth(0).inner_text()  # the contact step was not repeated
    assert steps.nth(1).locator("table.attempts tbody tr").count() == 2
    screenshot(page, "run")

    members = next(lst for lst in sandbox.state()["aiconnector"]["lists"]
                   if lst["id"] == "lst_demo")["members"]
    assert len(members) == 2

    # the catalog, for the README
    page.click("nav >> text=Catalog")
    page.click("text=Samora AI")
    assert page.locator("#samora\\.call_finished h3").inner_text().startswith("Call finished")
    screenshot(page, "catalog", full_page=False)


def test_settings_an_edited_item_replay_and_replay_all_failed(served, page):
    host, root = served
    shout = {"name": "catch", "trigger": {"key": "webhook.catch"},
             "steps": [{"name": "shout", "action": "formatter.text",
                        "inputs": {"operation": "upper", "text": "{{ trigger.text }}"}}]}
    flows.save(host, {**shout, "name": "notify"})
    flow = flows.enable(host, flows.save(host, shout))
    for body in ({"nothing": 1}, {"nothing": 2}):  # no text: the step fails
        assert requests.post(flows.webhook_url(host, flow), json=body, timeout=10).ok

    # sign in with an API key
    raw = auth.create_key("builder", "write")[1]
    page.goto(root + "/ui/flows/catch")
    page.click("#tab-key")
    page.fill("#f-api_key", raw)
    page.click("#with-key button[type=submit]")
    page.wait_for_url(root + "/ui/flows/catch")

    # failure settings: a bad threshold is refused beside its field, a good one saved
    page.fill("#f-on_failure-pause_after", "5000")
    page.click("#flow-settings button[type=submit]")
    error = page.locator('[data-error-for="on_failure.pause_after"]')
    error.locator("text=1000").wait_for()
    page.fill("#f-on_failure-pause_after", "3")
    page.select_option("#f-on_failure-error_flow", "notify")
    sent = []
    page.on("request", lambda r: sent.append(r.method) if "/api/v1/flows/catch" in r.url
            else None)
    page.click("#flow-settings button[type=submit]")
    page.locator("#flash.ok").wait_for()
    assert sent[:1] == ["PATCH"] and "PUT" not in sent  # the settings alone, not the steps
    saved = Flow.get(Flow.name == "catch")
    assert (saved.pause_after, saved.error_flow) == (3, "notify")
    assert "error_flow: notify" in page.locator("pre.yaml").inner_text()

    # one failed run replayed with an edited trigger item: a new run that succeeds
    page.click(".page-head >> text=Runs")
    failed = reload_until(page, 'tr[data-status="failed"]')
    assert failed.count() == 2
    first = failed.nth(1).get_attribute("data-run")
    page.click(f'tr[data-run="{first}"] a')
    page.fill("#f-item", '{"text": "fixed by hand"}')
    page.click("#replay-item button[type=submit]")
    page.wait_for_url(re.compile(r".*/ui/runs/(?!%s$)\d+$" % first))
    reload_until(page, "h1 .badge.status-succeeded")
    assert "FIXED BY HAND" in page.locator("#step-shout").inner_text()
    assert page.locator(f'a[href="/ui/runs/{first}"]').count() >= 1  # linked to the old run

    # the flow is fixed (here from its YAML side), then every failed run is replayed
    fixed = {**shout, "steps": [{**shout["steps"][0], "inputs": {
        "operation": "upper", "text": "{{ trigger.text | default('no text') }}"}}]}
    flows.save(host, fixed)
    page.goto(root + "/ui/flows/catch/runs")
    page.click("text=Replay all failed (2)")
    assert page.locator("#flash.ok").inner_text() == "Replayed 2 failed runs."
    reload_until(page, 'tr[data-status="succeeded"]:nth-child(3)')
    statuses = [r.status for r in Run.select().where(Run.flow == flow)]
    assert sorted(statuses) == ["succeeded"] * 3
