"""The flow builder in a real browser (headless Debian chromium through Playwright) against
the embedded product on an ephemeral port, with the sandbox standing in for the services.

A builder signs in, adds a Samora and an AI Connector connection by clicking, and builds
the "call finished -> add to list" flow by clicking: the trigger and its connection, the
steps' actions, inputs mapped with the field picker, a step tested for real. Invalid values
(a yes/no typed as "maybe", a phone without its country code) are refused beside their
fields. Saved and switched on from the builder, the flow runs when Samora finishes a call.
Every example flow (and one with paths) opened in the builder and saved unchanged exports
the same YAML. Skipped, saying why, where no chromium is installed.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import requests

from connector import auth, flows
from connector.runtime import Runtime
from connector.store import Flow

from .browser import browser, page, screenshot  # noqa: F401  (fixtures)
from .test_ui_browser import finish_a_call, reload_until


def save(page) -> None:
    """Click Save and wait for THIS save's notice (an earlier one may still be showing)."""
    page.evaluate("() => { const box = document.getElementById('flash');"
                  " box.className = 'flash'; box.textContent = ''; }")
    page.click("#b-save")
    page.locator("#flash.ok").wait_for()

pytestmark = pytest.mark.slow
EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples" / "flows").glob("*.yaml"))
FLOW = "call-finished-add-to-list"
#: a flow with paths, each with conditions and nested steps, for the round trip
PATHS_FLOW = {
    "name": "sort-leads", "description": "Shout big orders, whisper small ones.",
    "trigger": {"key": "webhook.catch"},
    "steps": [
        {"name": "size", "action": "paths.split", "inputs": {"mode": "first"},
         "branches": [
             {"name": "big", "conditions": {"any": [
                 {"field": "trigger.amount", "op": "gte", "value": 100},
                 {"field": "trigger.tags", "op": "in", "value": ["vip", "gold"]}]},
              "steps": [{"name": "shout", "action": "formatter.text",
                         "inputs": {"operation": "upper", "text": "{{ trigger.name }}"}}]},
             {"name": "small", "steps": [
                 {"name": "whisper", "action": "formatter.text",
                  "filter": [{"field": "trigger.name", "op": "not_empty"}],
                  "inputs": {"operation": "lower", "text": "{{ trigger.name }}"}}]}]},
        {"name": "after", "action": "formatter.text",
         "inputs": {"operation": "trim", "text": "{{ steps.shout.output | default('') }} x"}}]}


def serve(host):
    auth.add_user("ada", "analytical-engine", scope="write")
    rt = Runtime(host)
    root = rt.start(port=0).replace("0.0.0.0", "127.0.0.1")
    return rt, root


@pytest.fixture
def served(make_host, sandbox):
    """The product on an ephemeral port with no connection yet; yields (host, root URL)."""
    host = make_host(max_attempts=1)
    rt, root = serve(host)
    try:
        yield host, root
    finally:
        rt.stop()


@pytest.fixture
def served_connected(connected):
    """The product with one sandbox connection per service, named as examples/flows do."""
    rt, root = serve(connected)
    try:
        yield connected, root
    finally:
        rt.stop()


def sign_in(page, root):
    page.goto(root + "/ui/login")
    page.fill("#f-username", "ada")
    page.fill("#f-password", "analytical-engine")
    page.click("#with-password button[type=submit]")
    page.wait_for_url(root + "/ui/flows")


def add_connection(page, app: str, name: str, info: dict):
    page.select_option("#f-app", app)
    page.fill("#f-name", name)
    for key, value in info["credentials"].items():
        page.fill(f"#add-{app}-{key}", value)
    page.fill(f"#add-{app}-base_url", info["base_url"])
    page.click("#add-connection button[type=submit]")
    page.locator(f'tr[data-connection="{name}"]').wait_for()


def pick(page, field, path: str, screenshot_as: str | None = None):
    """Open the field picker beside ``field`` and choose ``path`` (e.g. trigger.to_number)."""
    field.locator("xpath=..").locator("button.map").click()
    box = page.locator("#b-picker")
    box.wait_for()
    item = box.locator(f'.picker-item[data-path="{path}"]')
    assert item.count() == 1, f"{path} is not offered"
    if screenshot_as:
        page.fill("#b-picker-search", "contact")
        assert item.is_visible()
        size = page.viewport_size
        page.set_viewport_size({"width": 1280, "height": 1400})
        box.evaluate("el => window.scrollTo(0, el.getBoundingClientRect().bottom + "
                     "window.scrollY - window.innerHeight + 24)")
        screenshot(page, screenshot_as, full_page=False)
        page.set_viewport_size(size)
    item.click()
    assert box.is_hidden()


def test_a_builder_builds_tests_saves_and_switches_on_a_flow_by_clicking(served, sandbox,
                                                                           page):
    host, root = served
    services = sandbox.connections()
    sign_in(page, root)

    # two connections, by clicking
    page.click("nav >> text=Connections")
    add_connection(page, "samora", "samora", services["samora"])
    add_connection(page, "aiconnector", "aiconnector", services["aiconnector"])

    # a new flow: its trigger, whose only Samora connection is chosen for it
    page.click("nav >> text=Flows")
    page.click("text=New flow")
    page.wait_for_url(root + "/ui/flows/new")
    page.locator("#builder[data-ready]").wait_for()
    page.fill("#b-name", FLOW)
    page.fill("#b-description", "Everyone an agent talked to goes on the list.")
    page.select_option("#b-trigger-key", "samora.call_finished")
    trigger = page.locator("#b-trigger")
    assert trigger.locator('[data-connection-for="trigger"]').input_value() == "samora"
    trigger.locator("text=2 optional inputs").click()  # its inputs are all optional
    trigger.locator('select[data-input="include_recording_url"]').select_option(
        label="yes (true)")
    page.click("#b-test-trigger")
    result = trigger.locator(".test-panel.ok")
    result.wait_for()
    assert "sample" in result.inner_text() and "+919876543210" in result.inner_text()
    trigger.locator('[aria-label="Type a value or a template instead (Include transcript)"]'
                    ).click()
    trigger.locator('input[data-input="include_transcript"]').fill("maybe")

    # the first step: create the contact from the call's number
    step = page.locator('[data-step="steps[0]"]')
    step.locator('[data-step-action="steps[0]"]').select_option("aiconnector.create_contact")
    step = page.locator('[data-step="steps[0]"]')
    assert step.locator('[data-connection-for="steps[0]"]').input_value() == "aiconnector"
    step.locator('[data-step-name-input="steps[0]"]').fill("contact")
    step.locator('[data-step-name-input="steps[0]"]').press("Tab")
    step = page.locator('[data-step="steps[0]"]')
    step.locator("text=4 optional inputs").click()
    phone = step.locator('input[data-input="phone"]')
    phone.fill("555 0100")

    # the second step: add it to the list, its contact mapped from the first step
    page.click('[data-add-step="steps"]')
    second = page.locator('[data-step="steps[1]"]')
    second.locator("select").first.select_option("aiconnector.add_to_list")
    second = page.locator('[data-step="steps[1]"]')
    assert second.get_attribute("data-step-name") == "add_to_list"
    second.locator('input[data-input="list_id"]').fill("lst_demo")
    pick(page, second.locator('input[data-input="contact_id"]'), "steps.contact.id")
    assert second.locator('input[data-input="contact_id"]').input_value() == \
        "{{ steps.contact.id }}"

    # invalid values are refused beside their fields, one save at a time
    page.click("#b-save")
    error = trigger.locator('[data-error-for="trigger.inputs.include_transcript"]')
    error.locator("text=Not a valid boolean.").wait_for()
    assert trigger.locator('input[data-input="include_transcript"]').get_attribute(
        "aria-invalid") == "true"
    trigger.locator('[aria-label="Choose from the list instead (Include transcript)"]').click()
    trigger.locator('select[data-input="include_transcript"]').select_option(label="no (false)")
    page.click("#b-save")
    error = step.locator('[data-error-for="steps[0].inputs.phone"]')
    error.locator("text=expected a phone number").wait_for()
    assert phone.get_attribute("aria-invalid") == "true"
    assert not Flow.select().where(Flow.name == FLOW).exists()

    # mapped instead: the picker inserts the template at the cursor
    phone.fill("")
    pick(page, phone, "trigger.to_number")
    assert phone.input_value() == "{{ trigger.to_number }}"
    first_name = step.locator('input[data-input="firstName"]')
    first_name.fill("Caller  | default('')")
    first_name.evaluate("el => el.setSelectionRange(7, 7)")
    pick(page, first_name, "trigger.context.first_name")
    assert first_name.input_value() == \
        "Caller {{ trigger.context.first_name }} | default('')"
    first_name.fill("{{ trigger.context.contact_name | default('') }}")

    # a step tested for real: AI Connector's answer becomes the step's sample
    step.locator('[data-test-step="steps[0]"]').click()
    tested = step.locator(".test-panel.ok")
    tested.wait_for()
    contacts = sandbox.state()["aiconnector"]["contacts"]
    made = next(c for c in contacts if c["phone"] == "+919876543210")
    assert made["id"] in tested.inner_text()
    # the picker now offers the tested output (screenshot: a built flow, the picker open)
    second.locator('input[data-input="contact_id"]').fill("")
    second.locator('input[data-input="contact_id"]').scroll_into_view_if_needed()
    pick(page, second.locator('input[data-input="contact_id"]'), "steps.contact.id",
         screenshot_as="builder")
    assert "(tested)" in page.locator("#b-picker").inner_text()

    # saved, then switched on from the builder
    save(page)
    assert page.url == root + f"/ui/flows/{FLOW}/edit"
    saved = flows.export(Flow.get(Flow.name == FLOW))
    assert saved["trigger"] == {"key": "samora.call_finished", "connection": "samora",
                                "inputs": {"include_transcript": False,
                                           "include_recording_url": True},
                                "poll_interval": 60}
    assert saved["steps"] == [
        {"name": "contact", "action": "aiconnector.create_contact", "connection": "aiconnector",
         "inputs": {"phone": "{{ trigger.to_number }}",
                    "firstName": "{{ trigger.context.contact_name | default('') }}"}},
        {"name": "add_to_list", "action": "aiconnector.add_to_list",
         "connection": "aiconnector",
         "inputs": {"list_id": "lst_demo", "contact_id": "{{ steps.contact.id }}"}}]
    page.click("#b-switch")
    page.locator("#b-state .state-on").wait_for()
    assert Flow.get(Flow.name == FLOW).enabled
    assert len(sandbox.state()["samora"]["webhooks"]) == 1

    # Samora finishes a call: the webhook's run succeeds and shows so on the runs page
    finish_a_call(sandbox, "+14155550170")
    page.goto(root + f"/ui/flows/{FLOW}/runs")
    assert reload_until(page, 'tr[data-status="succeeded"]').count() == 1
    members = next(lst for lst in sandbox.state()["aiconnector"]["lists"]
                   if lst["id"] == "lst_demo")["members"]
    ada = next(c for c in sandbox.state()["aiconnector"]["contacts"]
               if c["phone"] == "+14155550170")
    assert ada["id"] in members


def test_dropdowns_filters_and_step_order_in_the_builder(
        served_connected, sandbox, page):
    host, root = served_connected
    samora = sandbox.connections()["samora"]
    agent = sandbox.seeded["samora"]["agent_id"]
    made = requests.post(f"{samora['base_url']}/v1/external/campaigns/{agent}", timeout=10,
                         headers={"X-API-Key": samora["credentials"]["api_key"]},
                         json={"name": "Spring promo"})
    made.raise_for_status()
    campaign_id = (made.json().get("data") or made.json())["id"]
    sign_in(page, root)
    page.goto(root + "/ui/flows/new")
    page.locator("#builder[data-ready]").wait_for()
    page.fill("#b-name", "campaign-status")
    page.select_option("#b-trigger-key", "webhook.catch")
    page.locator('[data-step-action="steps[0]"]').select_option("samora.get_campaign")
    step = page.locator('[data-step="steps[0]"]')
    campaign = step.locator('select[data-input="campaign_id"]')
    error = step.locator('[data-error-for="steps[0].inputs.campaign_id"]')
    error.locator("text=Fill in Agent first: the choices depend on it.").wait_for()
    step.locator('input[data-input="agent_id"]').fill(agent)
    step.locator('[aria-label="Refresh the choices of Campaign"]').click()
    step.locator('select[data-input="campaign_id"][data-loaded="1"]').wait_for()
    assert error.inner_text() == ""
    assert campaign.locator("option").nth(1).inner_text() == \
        f"Spring promo (DRAFT) — {campaign_id}"
    campaign.select_option(index=1)
    step.locator('[data-test-step="steps[0]"]').click()
    step.locator(".test-panel.ok").wait_for()
    assert "Spring promo" in step.locator(".test-panel").inner_text()

    # a filter, and a second step moved above the first, then removed again
    step.locator("text=+ Only continue if…").click()
    condition = step.locator('[data-filter="steps[0].filter"] .condition')
    condition.locator('[data-condition="field"]').fill("trigger.campaign")
    condition.locator('[data-condition="op"]').select_option("equals")
    condition.locator('[data-condition="value"]').fill("true")
    page.click('[data-add-step="steps"]')
    page.locator('[data-step-action="steps[1]"]').select_option("formatter.text")
    page.click('[aria-label="Move step 3 up"]')
    assert page.locator('[data-step="steps[0]"]').get_attribute("data-step-name") == "text"
    page.click('[aria-label="Remove step 2"]')
    assert page.locator("[data-step]").count() == 1
    save(page)
    saved = flows.export(Flow.get(Flow.name == "campaign-status"))["steps"]
    assert len(saved) == 1 and saved[0]["inputs"] == {"agent_id": agent,
                                                      "campaign_id": campaign_id}
    assert saved[0]["filter"] == [{"field": "trigger.campaign", "op": "equals", "value": True}]

    # the free-text fallback keeps what was chosen, and takes a template
    step.locator('[aria-label="Type a value or a template instead (Campaign)"]').click()
    typed = step.locator('input[data-input="campaign_id"]')
    assert typed.input_value() == campaign_id
    typed.fill("{{ trigger.campaign }}")
    save(page)
    saved = flows.export(Flow.get(Flow.name == "campaign-status"))["steps"][0]["inputs"]
    assert saved["campaign_id"] == "{{ trigger.campaign }}"


def contains(whole, part) -> bool:
    """Whether ``whole`` holds everything ``part`` has (defaults may add keys)."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(k in whole and contains(whole[k], v)
                                               for k, v in part.items())
    if isinstance(part, list):
        return isinstance(whole, list) and len(whole) == len(part) and all(
            contains(w, p) for w, p in zip(whole, part))
    return whole == part


@pytest.mark.parametrize("source", [*EXAMPLES, "paths"],
                         ids=[p.stem for p in EXAMPLES] + ["paths"])
def test_a_flow_opened_in_the_builder_and_saved_unchanged_exports_the_same(
        served_connected, page, source):
    host, root = served_connected
    original = PATHS_FLOW if source == "paths" else flows.load_file(source)
    flow = flows.save(host, original)
    before = flows.export(flow)
    sign_in(page, root)
    page.goto(root + f"/ui/flows/{flow.name}/edit")
    page.locator("#builder[data-ready]").wait_for()
    assert page.locator("#b-trigger-key").input_value() == original["trigger"]["key"]
    # every step shows, nested ones (loops, paths) too
    names = page.locator("[data-step]").evaluate_all(
        "els => els.map(e => e.getAttribute('data-step-name'))")
    assert sorted(names) == sorted(step_names(before["steps"]))
    if source == "paths":
        page.set_viewport_size({"width": 1280, "height": 1300})
        page.locator('[data-step="steps[0]"]').evaluate("el => el.scrollIntoView()")
        screenshot(page, "builder-paths", full_page=False)
    save(page)
    after = flows.export(Flow.get(Flow.name == flow.name))
    assert after == before
    assert contains(after, original)


def step_names(steps) -> list[str]:
    out = []
    for step in steps:
        out.append(step["name"])
        out += step_names(step.get("steps", []))
        for branch in step.get("branches", []):
            out += step_names(branch["steps"])
    return out
