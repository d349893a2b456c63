"""Contacts API: every trigger, action and search against the sandbox over HTTP, and the
sandbox's own rules (auth and data-scoping, filter validation, limits, lifecycle errors).

Actions run as steps of saved flows through the engine (so templates, schemas and the
idempotency ledger are the real ones); outcomes are checked in the sandbox's state.
"""
from __future__ import annotations

import itertools

import pytest
import requests

from connector import FatalAPIError, FlowError, RetriableAPIError, engine, flows, intake
from connector.sdk import ActionContext, TriggerContext
from connector.store import IdempotencyRecord, Run, StepRun, TriggerState

CA = {"Authorization": "Bearer ca_test_key", "X-Org-Id": "org_demo"}
AGENT = {"Authorization": "Bearer ca_assigned_key", "X-Org-Id": "org_demo"}
ORG = "org_demo"
_names = itertools.count()


@pytest.fixture
def http():
    with requests.Session() as session:
        session.trust_env = False
        yield session


def url(sandbox, path):
    return sandbox.urls["contacts_api"] + "/api/v1" + path


def state(sandbox, table="contacts"):
    return sandbox.state()["contacts_api"][table][ORG]


def by_name(sandbox, name):
    return next(c for c in state(sandbox) if c["name"] == name)


def assert_error(response, status, code, field=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    if field is not None:
        assert error["details"]["field"] == field
    return error


def run_steps(host, steps, item=None, connection="contacts-api"):
    """Save a flow with these steps, queue one run for ``item``, execute it; return the run."""
    name = f"ca-{next(_names)}"
    for step in steps:
        step.setdefault("connection", connection)
    flow = flows.save(host, {"name": name, "trigger": {
        "key": "contacts_api.new_contact", "connection": "contacts-api"}, "steps": steps})
    trigger = host.catalog.trigger("contacts_api.new_contact")
    intake.ingest(flow, trigger, [(name, item or {"id": name})])
    engine.run_due(host)
    return Run.get(Run.flow == flow)


def outputs(run) -> dict:
    return {s.name: s.output for s in StepRun.select().where(StepRun.run == run)}


def step(host, action, inputs, **kwargs):
    """Run one action as a flow step; return its output (the run must succeed)."""
    run = run_steps(host, [{"name": "s", "action": action, "inputs": inputs}], **kwargs)
    assert run.status == Run.SUCCEEDED, run.error
    return outputs(run)["s"]


def failed(host, action, inputs):
    """Return why a step with these inputs fails: refused when saved, or its run failed."""
    try:
        run = run_steps(host, [{"name": "s", "action": action, "inputs": inputs}])
    except FlowError as exc:  # inputs the schema refuses before anything runs
        return str(exc)
    assert run.status == Run.FAILED
    return run.error


def direct_ctx(host, action_key, key="k" * 40, client=None):
    """A real ActionContext whose ctx.once is the host's ledger, outside any flow."""
    client = client or host.client(host.connection("contacts-api"))
    return ActionContext(flow_name="direct", run_id=0, step_name="s", idempotency_key=key,
                         client=client, once=lambda k, request, call: engine.once(
                             action_key, k, request, call))


def poll(host, flow):
    return intake.poll_flow(host, flow)


def poll_flow(host, trigger_key, inputs=None):
    flow = flows.save(host, {"name": f"ca-poll-{next(_names)}", "trigger": {
        "key": trigger_key, "connection": "contacts-api", "inputs": inputs or {}},
        "steps": [{"name": "get", "action": "contacts_api.get_contact",
                   "connection": "contacts-api", "inputs": {"contact_id": "{{ trigger.id }}"}}]})
    flows.enable(host, flow)
    return flow


def items(flow):
    return [r.item for r in Run.select().where(Run.flow == flow).order_by(Run.id)]


# Contacts ----------------------------------------------------------------------------------


@pytest.mark.covers("contacts_api.create_contact", "contacts_api.get_contact",
                    "contacts_api.update_contact", "contacts_api.delete_contact")
def test_contact_lifecycle_through_flows(connected, sandbox):
    created = step(connected, "contacts_api.create_contact", {
        "name": "{{ trigger.name }}", "phone": "+1 (415) 555-0123",
        "email": "{{ trigger.email }}", "tags": "lead, web", "custom": {"budget": 7000},
        "source": "web"}, item={"id": "t1", "name": "Jane Smith", "email": ""})
    assert created["phone"] == "+14155550123" and created["tags"] == ["lead", "web"]
    assert created["email"] is None  # an empty mapping is not sent
    stored = by_name(sandbox, "Jane Smith")
    assert stored["id"] == created["id"] and stored["custom"] == {"budget": 7000}
    assert "web" in {t["name"] for t in state(sandbox, "tags")}  # tags join the org's list

    got = step(connected, "contacts_api.get_contact", {"contact_id": created["id"]})
    assert got == stored

    updated = step(connected, "contacts_api.update_contact", {
        "contact_id": created["id"], "company": "Acme", "name": "{{ trigger.blank }}",
        "clear": ["source"],
        "custom": {"industry": "Retail"}}, item={"id": "t2", "blank": ""})
    assert updated["company"] == "Acme" and updated["name"] == "Jane Smith"
    assert updated["source"] is None
    assert by_name(sandbox, "Jane Smith")["custom"] == {"budget": 7000, "industry": "Retail"}
    assert updated["updated_at"] > created["updated_at"]

    assert "give a value or clear it" in failed(connected, "contacts_api.update_contact", {
        "contact_id": created["id"], "company": "X", "clear": ["company"]})
    assert "custom.industry (select) must be one of" in failed(
        connected, "contacts_api.update_contact",
        {"contact_id": created["id"], "custom": {"industry": "Farming"}})

    gone = step(connected, "contacts_api.delete_contact", {"contact_id": created["id"]})
    assert gone == {"id": created["id"], "deleted": True}
    assert all(c["id"] != created["id"] for c in state(sandbox))
    again = step(connected, "contacts_api.delete_contact", {"contact_id": created["id"]})
    assert again["deleted"] is False  # already gone: the goal holds
    error = failed(connected, "contacts_api.delete_contact",
                   {"contact_id": created["id"], "missing_ok": False})
    assert "does not exist" in error
    assert "does not exist" in failed(connected, "contacts_api.get_contact",
                                      {"contact_id": created["id"]})


@pytest.mark.covers("contacts_api.create_contact")
def test_create_contact_is_guarded_by_the_ledger(connected, sandbox):
    action = connected.catalog.action("contacts_api.create_contact")
    inputs = action.Inputs().load({"name": "Once Only", "email": "once@example.com"})
    first = action.run(direct_ctx(connected, action.key), inputs)
    second = action.run(direct_ctx(connected, action.key), inputs)
    assert first == second
    assert [c["name"] for c in state(sandbox)].count("Once Only") == 1
    with pytest.raises(Exception, match="at least one of name, email or phone"):
        action.Inputs().load({"company": "Nameless"})
    with pytest.raises(Exception, match="country code"):
        action.Inputs().load({"name": "A", "phone": "555 0123"})


@pytest.mark.covers("contacts_api.list_contacts", "contacts_api.search_contacts")
def test_find_and_advanced_search(connected, sandbox):
    found = step(connected, "contacts_api.list_contacts", {"q": "GRACE"})
    assert [c["name"] for c in found["results"]] == ["Grace Hopper"]
    tagged = step(connected, "contacts_api.list_contacts", {"tag": "lead", "limit": 1})
    assert tagged["count"] == 1 and tagged["first"]["name"] == "Alan Turing"

    # (tags contains vip) OR (company starts_with "navy" AND custom.industry eq Government)
    query = {"groups": [
        {"conditions": [{"field": "tags", "op": "contains", "value": "vip"}]},
        {"conditions": [{"field": "company", "op": "starts_with", "value": "navy"},
                        {"field": "custom.industry", "op": "eq", "value": "government"}]}]}
    result = step(connected, "contacts_api.search_contacts", {"query": query})
    assert sorted(c["name"] for c in result["results"]) == ["Alan Turing", "Grace Hopper"]
    narrowed = step(connected, "contacts_api.search_contacts", {"query": query, "q": "alan"})
    assert [c["name"] for c in narrowed["results"]] == ["Alan Turing"]
    rich = step(connected, "contacts_api.search_contacts", {"query": {"groups": [{"conditions": [
        {"field": "custom.budget", "op": "gte", "value": 20000},
        {"field": "created_at", "op": "lt", "value": "2999-01-01"},
        {"field": "dnc", "op": "eq", "value": False},
        {"field": "tags", "op": "not_in", "value": ["vip", "lead"]}]}]}})
    assert [c["name"] for c in rich["results"]] == ["Ada Lovelace"]
    everyone = step(connected, "contacts_api.search_contacts", {"limit": 2, "offset": 1})
    assert [c["name"] for c in everyone["results"]] == ["Grace Hopper", "Ada Lovelace"]

    # The schema refuses a bad filter before any call, naming the place.
    bad = {"groups": [{"conditions": [{"field": "tags", "op": "gt", "value": "x"}]}]}
    with pytest.raises(Exception, match="does not apply to tags"):
        flows.save(connected, {"name": "bad", "trigger": {"key": "contacts_api.new_contact",
                                                          "connection": "contacts-api"},
                               "steps": [{"action": "contacts_api.search_contacts",
                                          "inputs": {"query": bad}}]})
    schema = connected.catalog.action("contacts_api.search_contacts").Inputs()
    for condition, message in (
            ({"field": "colour", "op": "eq", "value": "x"}, "unknown field"),
            ({"field": "name", "op": "like", "value": "x"}, "Must be one of"),
            ({"field": "name", "op": "in", "value": "x"}, "list of 1 to 100"),
            ({"field": "dnc", "op": "eq", "value": "yes"}, "true or false"),
            ({"field": "created_at", "op": "gt", "value": "last week"}, "ISO 8601")):
        with pytest.raises(Exception, match=message):
            schema.load({"query": {"groups": [{"conditions": [condition]}]}})
    with pytest.raises(Exception, match="Length must be between 1 and 20"):
        schema.load({"query": {"groups": [{"conditions": []}]}})


@pytest.mark.covers("contacts_api.import_contacts")
def test_import_batches_and_sums_the_summaries(connected, sandbox):
    rows = [{"name": f"Imported {i}", "email": f"imp{i}@example.com"} for i in range(1203)]
    rows[7] = {"name": "Bad phone", "phone": "12345"}
    rows[800] = {"name": "Ada L.", "email": "ADA@example.com", "tags": ["imported"]}
    rows[1202] = {"company": "No identity"}
    summary = step(connected, "contacts_api.import_contacts", {"contacts": rows})
    assert summary["batches"] == 3 and summary["total"] == 1203
    assert (summary["created"], summary["updated"], summary["skipped"]) == (1200, 1, 0)
    assert [(e["index"], e["field"]) for e in summary["errors"]] == [(7, "phone"), (1202, "name")]
    imports = sandbox.state()["contacts_api"]["imports"]
    assert [i["rows"] for i in imports] == [500, 500, 203]
    ada = by_name(sandbox, "Ada L.")
    assert ada["tags"] == ["customer", "imported"] and ada["email"] == "ADA@example.com"
    assert len(state(sandbox)) == 3 + 1200

    skipped = step(connected, "contacts_api.import_contacts", {
        "contacts": [{"phone": "+14155550102", "name": "G"}, {"name": "New one"}],
        "match_by": "phone", "on_match": "skip", "batch_size": 1})
    assert (skipped["created"], skipped["skipped"], skipped["batches"]) == (1, 1, 2)
    assert by_name(sandbox, "Grace Hopper")["phone"] == "+14155550102"


@pytest.mark.covers("contacts_api.import_contacts")
def test_import_retry_resends_only_the_batches_that_did_not_complete(connected, sandbox):
    action = connected.catalog.action("contacts_api.import_contacts")
    inputs = action.Inputs().load({"contacts": [{"name": f"R{i}"} for i in range(5)],
                                   "batch_size": 2, "match_by": "none"})
    real = connected.client(connected.connection("contacts-api"))

    class Flaky:
        calls = 0

        def post(self, path, **kwargs):
            Flaky.calls += 1
            if Flaky.calls == 2:
                raise RetriableAPIError("service unavailable", status=503)
            return real.post(path, **kwargs)

    with pytest.raises(RetriableAPIError):
        action.run(direct_ctx(connected, action.key, client=Flaky()), inputs)
    assert [i["rows"] for i in sandbox.state()["contacts_api"]["imports"]] == [2]
    summary = action.run(direct_ctx(connected, action.key, client=real), inputs)
    assert summary["created"] == 5 and summary["batches"] == 3
    assert [i["rows"] for i in sandbox.state()["contacts_api"]["imports"]] == [2, 2, 1]
    keys = {r.key for r in IdempotencyRecord.select().where(
        IdempotencyRecord.scope == action.key)}
    assert keys == {f"{'k' * 40}:batch{i}" for i in range(3)}
    assert len([c for c in state(sandbox) if c["name"].startswith("R")]) == 5


@pytest.mark.covers("contacts_api.list_opportunities")
def test_opportunities_of_a_contact(connected, sandbox, http):
    ada = by_name(sandbox, "Ada Lovelace")
    added = http.post(sandbox.root_url + "/_sandbox/contacts-api/opportunities", json={
        "contact_id": ada["id"], "name": "Expansion", "value": 900, "stage": "new"})
    assert added.status_code == 201
    found = step(connected, "contacts_api.list_opportunities", {"contact_id": ada["id"]})
    assert [o["name"] for o in found["results"]] == ["Expansion", "Support renewal",
                                                     "Engine licence"]
    assert all(o["contact_id"] == ada["id"] for o in found["results"])
    grace = by_name(sandbox, "Grace Hopper")
    assert step(connected, "contacts_api.list_opportunities",
                {"contact_id": grace["id"]})["found"] is False
    http.delete(url(sandbox, f"/contacts/{ada['id']}"), headers=CA)
    assert all(o["contact_id"] != ada["id"] for o in state(sandbox, "opportunities"))


# Saved views --------------------------------------------------------------------------------


@pytest.mark.covers("contacts_api.list_views", "contacts_api.save_view",
                    "contacts_api.delete_view")
def test_views_are_read_merged_and_put_back(connected, sandbox):
    options = connected.options("contacts_api.list_views", "contacts-api")
    assert options == [{"value": "view_hot_leads", "label": "Hot leads"},
                       {"value": "view_replied", "label": "Replied interested"}]
    query = {"groups": [{"conditions": [{"field": "dnc", "op": "eq", "value": True}]}]}
    saved = step(connected, "contacts_api.save_view", {"name": "Do not call", "query": query})
    assert saved["created"] is True and saved["id"].startswith("view_")
    views = state(sandbox, "views")
    assert [v["name"] for v in views] == ["Hot leads", "Replied interested", "Do not call"]
    hot_before = views[0]

    # Same name (any case): replaced in place, the others put back untouched.
    replaced = step(connected, "contacts_api.save_view", {
        "name": "do not call", "query": query, "q": "example"})
    assert replaced["created"] is False and replaced["id"] == saved["id"]
    views = state(sandbox, "views")
    assert [v["name"] for v in views] == ["Hot leads", "Replied interested", "do not call"]
    assert views[0] == hot_before and views[2]["q"] == "example"

    renamed = step(connected, "contacts_api.save_view", {
        "name": "VIP leads", "view": "view_hot_leads", "query": query})
    assert renamed["id"] == "view_hot_leads" and state(sandbox, "views")[0]["name"] == "VIP leads"
    assert "already named" in failed(connected, "contacts_api.save_view", {
        "name": "Replied interested", "view": "view_hot_leads", "query": query})
    listed = step(connected, "contacts_api.list_views", {})
    assert listed["count"] == 3

    deleted = step(connected, "contacts_api.delete_view", {"view": "Replied Interested"})
    assert deleted == {"id": "view_replied", "name": "Replied interested", "deleted": True}
    assert [v["id"] for v in state(sandbox, "views")] == ["view_hot_leads", saved["id"]]
    assert step(connected, "contacts_api.delete_view", {"view": "view_replied"})["deleted"] is False
    assert "no saved view" in failed(connected, "contacts_api.delete_view",
                                     {"view": "view_replied", "missing_ok": False})


# Tags -----------------------------------------------------------------------------------------


@pytest.mark.covers("contacts_api.list_tags", "contacts_api.create_tag",
                    "contacts_api.delete_tag", "contacts_api.add_tags", "contacts_api.remove_tag")
def test_tags(connected, sandbox):
    options = connected.options("contacts_api.list_tags", "contacts-api")
    assert {"value": "vip", "label": "vip"} in options
    made = step(connected, "contacts_api.create_tag", {"name": "hot / warm", "color": "#f00"})
    assert made["created"] is True and made["name"] == "hot / warm"
    again = step(connected, "contacts_api.create_tag", {"name": "hot / warm"})
    assert again["created"] is False and again["id"] == made["id"]
    assert [t["name"] for t in state(sandbox, "tags")].count("hot / warm") == 1
    found = step(connected, "contacts_api.list_tags", {"q": "HOT"})
    assert [t["name"] for t in found["results"]] == ["hot / warm"]

    grace = by_name(sandbox, "Grace Hopper")
    # A flow: tag the contact, then take one tag off again (its name URL-encoded).
    run = run_steps(connected, [
        {"name": "add", "action": "contacts_api.add_tags",
         "inputs": {"contact_id": "{{ trigger.id }}", "tags": "hot / warm, vip, lead"}},
        {"name": "remove", "action": "contacts_api.remove_tag",
         "inputs": {"contact_id": "{{ steps.add.id }}", "tag": "hot / warm"}}],
        item={"id": grace["id"]})
    assert run.status == Run.SUCCEEDED, run.error
    assert outputs(run)["add"]["tags"] == ["lead", "hot / warm", "vip"]
    assert by_name(sandbox, "Grace Hopper")["tags"] == ["lead", "vip"]
    # Removing a tag the contact no longer has: the goal holds.
    assert step(connected, "contacts_api.remove_tag",
                {"contact_id": grace["id"], "tag": "hot / warm"})["removed"] is True
    assert "does not exist" in failed(connected, "contacts_api.remove_tag",
                                      {"contact_id": "missing", "tag": "vip"})

    before = by_name(sandbox, "Alan Turing")["updated_at"]
    removed = step(connected, "contacts_api.delete_tag", {"tag": "vip"})
    assert removed["deleted"] is True and removed["name"] == "vip"
    assert "vip" not in {t["name"] for t in state(sandbox, "tags")}
    assert all("vip" not in c["tags"] for c in state(sandbox))
    assert by_name(sandbox, "Alan Turing")["updated_at"] > before
    by_id = step(connected, "contacts_api.delete_tag", {"tag": made["id"]})
    assert by_id["deleted"] is True
    assert step(connected, "contacts_api.delete_tag", {"tag": "vip"})["deleted"] is False


# Custom fields and values --------------------------------------------------------------------


@pytest.mark.covers("contacts_api.list_custom_fields", "contacts_api.create_custom_field",
                    "contacts_api.update_custom_field", "contacts_api.delete_custom_field",
                    "contacts_api.set_contact_custom_field")
def test_custom_fields(connected, sandbox):
    assert connected.options("contacts_api.list_custom_fields", "contacts-api") == [
        {"value": "budget", "label": "Budget (budget)"},
        {"value": "industry", "label": "Industry (industry)"}]
    made = step(connected, "contacts_api.create_custom_field", {
        "name": "Preferred channel", "type": "select", "options": ["sms", "email"],
        "folder": "Preferences"})
    assert made["key"] == "preferred_channel" and made["created"] is True
    again = step(connected, "contacts_api.create_custom_field", {
        "name": "Preferred channel", "type": "select", "options": ["sms", "email"]})
    assert again["created"] is False and again["id"] == made["id"]
    assert "already exists" in failed(connected, "contacts_api.create_custom_field", {
        "name": "Preferred channel", "type": "text"})
    assert "needs options" in failed(connected, "contacts_api.create_custom_field", {
        "name": "Tier", "type": "select"})

    grace = by_name(sandbox, "Grace Hopper")
    set_value = lambda key, value: step(  # noqa: E731
        connected, "contacts_api.set_contact_custom_field",
        {"contact_id": grace["id"], "key": key, "value": value})
    assert set_value("preferred_channel", "sms")["custom"]["preferred_channel"] == "sms"
    assert set_value("budget", "7500")["custom"]["budget"] == 7500  # text made a number
    assert "must be one of" in failed(connected, "contacts_api.set_contact_custom_field", {
        "contact_id": grace["id"], "key": "preferred_channel", "value": "fax"})
    assert "No custom field has key" in failed(
        connected, "contacts_api.set_contact_custom_field",
        {"contact_id": grace["id"], "key": "nope", "value": "x"})
    assert "budget" not in set_value("budget", "")["custom"]  # empty clears

    updated = step(connected, "contacts_api.update_custom_field", {
        "field": "preferred_channel", "name": "Channel", "options": ["sms", "email", "fax"]})
    assert updated["name"] == "Channel" and updated["options"] == ["sms", "email", "fax"]
    assert set_value("preferred_channel", "fax")["custom"]["preferred_channel"] == "fax"
    assert "no custom field" in failed(connected, "contacts_api.update_custom_field",
                                       {"field": "nope", "name": "X"})
    listed = step(connected, "contacts_api.list_custom_fields", {})
    assert [f["key"] for f in listed["results"]] == ["budget", "industry", "preferred_channel"]

    gone = step(connected, "contacts_api.delete_custom_field", {"field": made["id"]})
    assert gone == {"id": made["id"], "key": "preferred_channel", "deleted": True}
    assert "preferred_channel" not in by_name(sandbox, "Grace Hopper")["custom"]
    assert step(connected, "contacts_api.delete_custom_field",
                {"field": "preferred_channel"})["deleted"] is False


@pytest.mark.covers("contacts_api.list_custom_values", "contacts_api.set_custom_value",
                    "contacts_api.delete_custom_value")
def test_custom_values(connected, sandbox):
    found = step(connected, "contacts_api.list_custom_values", {"key": "sender_name"})
    assert found["first"]["value"] == "Sam" and found["count"] == 1
    put = step(connected, "contacts_api.set_custom_value",
               {"key": "promo_code", "value": "SPRING-{{ trigger.id }}"}, item={"id": "26"})
    assert put["value"] == "SPRING-26"
    assert {v["key"]: v["value"] for v in state(sandbox, "custom_values")}["promo_code"] == (
        "SPRING-26")
    options = connected.options("contacts_api.list_custom_values", "contacts-api")
    assert {"value": "promo_code", "label": "promo_code"} in options
    assert step(connected, "contacts_api.delete_custom_value",
                {"key": "promo_code"})["deleted"] is True
    assert "promo_code" not in {v["key"] for v in state(sandbox, "custom_values")}
    assert step(connected, "contacts_api.delete_custom_value",
                {"key": "promo_code"})["deleted"] is False
    assert "No custom value" in failed(connected, "contacts_api.delete_custom_value",
                                       {"key": "promo_code", "missing_ok": False})
    with pytest.raises(Exception, match="starts with a letter"):
        flows.save(connected, {"name": "bad-key", "trigger": {
            "key": "contacts_api.new_contact", "connection": "contacts-api"}, "steps": [
            {"action": "contacts_api.set_custom_value", "inputs": {"key": "a b", "value": "x"}}]})


# Triggers ---------------------------------------------------------------------------------


@pytest.mark.covers("contacts_api.new_contact")
def test_new_contact_with_tag_fires_for_new_tagged_contacts_only(connected, sandbox):
    flow = poll_flow(connected, "contacts_api.new_contact", {"tag": "lead"})
    sandbox.contacts_api.add_contact(ORG, name="Untagged")
    sandbox.contacts_api.add_contact(ORG, name="Tagged", tags=["lead"])
    poll(connected, flow)
    poll(connected, flow)
    assert [i["name"] for i in items(flow)] == ["Tagged"]


@pytest.mark.covers("contacts_api.contact_updated")
def test_contact_updated_fires_once_per_change(connected, sandbox, http):
    flow = poll_flow(connected, "contacts_api.contact_updated")
    assert TriggerState.get(TriggerState.flow == flow).primed
    grace = by_name(sandbox, "Grace Hopper")
    sandbox.contacts_api.add_contact(ORG, name="Brand new")  # created, not updated
    http.patch(url(sandbox, f"/contacts/{grace['id']}"), headers=CA, json={"company": "USN"})
    poll(connected, flow)
    poll(connected, flow)
    assert [(i["name"], i["company"]) for i in items(flow)] == [("Grace Hopper", "USN")]
    http.post(url(sandbox, f"/contacts/{grace['id']}/tags"), headers=CA, json={"tags": ["vip"]})
    http.post(url(sandbox, f"/contacts/{grace['id']}/tags"), headers=CA, json={"tags": ["vip"]})
    poll(connected, flow)
    assert [i["tags"] for i in items(flow)][1:] == [["lead", "vip"]]  # a no-op is no update
    engine.run_due(connected)
    assert {r.status for r in Run.select().where(Run.flow == flow)} == {Run.SUCCEEDED}


@pytest.mark.covers("contacts_api.contact_updated")
def test_contact_updated_without_sort_support_reads_every_page(connected, sandbox):
    real = connected.client(connected.connection("contacts-api"))
    asked = []

    class NoSort:
        def get(self, path, params=None, **kwargs):
            asked.append(dict(params or {}))
            if "sort" in (params or {}):
                raise FatalAPIError("unknown query parameter sort", status=422)
            return real.get(path, params=params, **kwargs)

    trigger = connected.catalog.trigger("contacts_api.contact_updated")
    ctx = TriggerContext(flow_name="direct", inputs={"max_pages": 5}, client=NoSort())
    assert trigger.poll(ctx) == [] and ctx.state["sort_refused"] is True
    grace = by_name(sandbox, "Grace Hopper")
    sandbox.contacts_api.update_contact(ORG, grace["id"], notes="called back")
    changed = trigger.poll(ctx)
    assert [(c["name"], c["notes"]) for c in changed] == [("Grace Hopper", "called back")]
    assert [("sort" in p) for p in asked] == [True, False, False]
    real.close()


@pytest.mark.covers("contacts_api.tag_added")
def test_tag_added_fires_once_per_contact_and_tag(connected, sandbox, http):
    flow = poll_flow(connected, "contacts_api.tag_added", {"tag": "vip"})
    field = connected.catalog.trigger("contacts_api.tag_added").Inputs().fields["tag"]
    assert field.metadata["choices_from"] == "contacts_api.list_tags"
    assert poll(connected, flow).created == []  # Alan had vip before the flow was on
    grace, ada = by_name(sandbox, "Grace Hopper"), by_name(sandbox, "Ada Lovelace")
    for contact in (grace, ada):
        http.post(url(sandbox, f"/contacts/{contact['id']}/tags"), headers=CA,
                  json={"tags": ["vip"]})
    poll(connected, flow)
    assert sorted((i["name"], i["tag"]) for i in items(flow)) == [
        ("Ada Lovelace", "vip"), ("Grace Hopper", "vip")]
    http.delete(url(sandbox, f"/contacts/{grace['id']}/tags/vip"), headers=CA)
    http.post(url(sandbox, f"/contacts/{grace['id']}/tags"), headers=CA, json={"tags": ["vip"]})
    poll(connected, flow)
    assert len(items(flow)) == 2


@pytest.mark.covers("contacts_api.contact_entered_view")
def test_contact_entered_view_fires_for_new_matches(connected, sandbox, http):
    flow = poll_flow(connected, "contacts_api.contact_entered_view", {"view": "view_hot_leads"})
    assert poll(connected, flow).created == []  # Alan matched already
    grace = by_name(sandbox, "Grace Hopper")
    http.post(url(sandbox, f"/contacts/{grace['id']}/tags"), headers=CA, json={"tags": ["vip"]})
    sandbox.contacts_api.add_contact(ORG, name="Also hot", tags=["lead", "vip"])
    sandbox.contacts_api.add_contact(ORG, name="Only lead", tags=["lead"])
    poll(connected, flow)
    poll(connected, flow)
    assert sorted((i["name"], i["view_id"], i["view_name"]) for i in items(flow)) == [
        ("Also hot", "view_hot_leads", "Hot leads"),
        ("Grace Hopper", "view_hot_leads", "Hot leads")]
    engine.run_due(connected)
    http.put(url(sandbox, "/contacts/views"), headers=CA, json={"views": []})
    with pytest.raises(Exception, match="no longer exists"):
        poll(connected, flow)
    assert "no longer exists" in TriggerState.get(TriggerState.flow == flow).last_error


# Data scoping through the plugins --------------------------------------------------------------


@pytest.mark.covers("contacts_api.list_contacts", "contacts_api.create_contact",
                    "contacts_api.search_contacts")
def test_restricted_member_sees_only_assigned_contacts(connected, sandbox):
    info = sandbox.connections()["contacts_api"]
    connected.add_connection("contacts-agent", "contacts_api",
                             {**info["credentials"], "api_key": "ca_assigned_key"},
                             info["base_url"])
    seen = step(connected, "contacts_api.list_contacts", {}, connection="contacts-agent")
    assert [c["name"] for c in seen["results"]] == ["Grace Hopper"]
    made = step(connected, "contacts_api.create_contact", {"name": "Agent's lead"},
                connection="contacts-agent")
    assert made["assigned_to"] == "usr_agent"
    searched = step(connected, "contacts_api.search_contacts", {"query": {"groups": [
        {"conditions": [{"field": "tags", "op": "not_exists"}]}]}},
        connection="contacts-agent")
    assert [c["name"] for c in searched["results"]] == ["Agent's lead"]
    alan = by_name(sandbox, "Alan Turing")
    run = run_steps(connected, [{"name": "s", "action": "contacts_api.get_contact",
                                 "inputs": {"contact_id": alan["id"]}}],
                    connection="contacts-agent")
    assert run.status == Run.FAILED and "does not exist" in run.error


# The sandbox's own rules -----------------------------------------------------------------------


def test_sandbox_auth_org_and_scoping(sandbox, http):
    contacts = url(sandbox, "/contacts")
    assert_error(http.get(url(sandbox, "/tags")), 401, "UNAUTHORIZED")
    assert_error(http.get(url(sandbox, "/custom-values"),
                          headers={"Authorization": "Bearer ca_test_key"}),
                 400, "MISSING_ORG_ID", "X-Org-Id")
    assert_error(http.get(url(sandbox, "/contacts/views"),
                          headers={**AGENT, "X-Org-Id": "org_other"}), 403, "FORBIDDEN")
    agent = http.get(contacts, headers=AGENT).json()
    assert [c["name"] for c in agent["items"]] == ["Grace Hopper"] and agent["total"] == 1
    alan = by_name(sandbox, "Alan Turing")
    for method, path, body in (("get", "", None), ("patch", "", {"name": "X"}),
                               ("delete", "", None), ("get", "/opportunities", None),
                               ("post", "/tags", {"tags": ["x"]}),
                               ("put", "/custom/budget", {"value": 1})):
        response = http.request(method, f"{contacts}/{alan['id']}{path}", headers=AGENT,
                                json=body)
        assert_error(response, 404, "CONTACT_NOT_FOUND")
    assert_error(http.post(contacts, headers=AGENT, json={"name": "N", "assigned_to": "usr_owner"}),
                 403, "FORBIDDEN", "assigned_to")
    grace = by_name(sandbox, "Grace Hopper")
    assert_error(http.patch(f"{contacts}/{grace['id']}", headers=AGENT,
                            json={"assigned_to": "usr_owner"}), 403, "FORBIDDEN")
    assert_error(http.post(contacts, headers=CA, json={"name": "N", "assigned_to": "usr_nobody"}),
                 422, "VALIDATION_ERROR", "assigned_to")
    imported = http.post(f"{contacts}/import", headers=AGENT, json={"contacts": [
        {"name": "Ada again", "email": "ada@example.com"}]}).json()
    assert imported["created"] == 1  # Ada is not visible to the agent: no match, a new one
    assert by_name(sandbox, "Ada again")["assigned_to"] == "usr_agent"
    tags = {t["name"]: t["contact_count"] for t in
            http.get(url(sandbox, "/tags"), headers=AGENT).json()["items"]}
    assert tags["lead"] == 1 and tags["vip"] == 0


def test_sandbox_search_validation_names_group_and_condition(sandbox, http):
    search = url(sandbox, "/contacts/search")
    ok = http.post(search, headers=CA, json={"query": {"groups": [
        {"conditions": [{"field": "tags", "op": "contains", "value": "lead"}]}]}})
    assert ok.status_code == 200 and ok.json()["total"] == 2
    cases = [
        ({"groups": [{"conditions": [{"field": "name", "op": "eq", "value": "x"}]},
                     {"conditions": [{"field": "name", "op": "eq", "value": "x"},
                                     {"field": "name", "op": "like", "value": "x"}]}]},
         "query.groups[1].conditions[1].op", 1, 1),
        ({"groups": [{"conditions": [{"field": "colour", "op": "eq", "value": "x"}]}]},
         "query.groups[0].conditions[0].field", 0, 0),
        ({"groups": [{"conditions": [{"field": "tags", "op": "gt", "value": "x"}]}]},
         "query.groups[0].conditions[0].op", 0, 0),
        ({"groups": [{"conditions": [{"field": "dnc", "op": "eq", "value": "no"}]}]},
         "query.groups[0].conditions[0].value", 0, 0),
        ({"groups": [{"conditions": [{"field": "created_at", "op": "gte", "value": "soon"}]}]},
         "query.groups[0].conditions[0].value", 0, 0),
        ({"groups": [{"conditions": [{"field": "custom.x", "op": "in", "value": []}]}]},
         "query.groups[0].conditions[0].value", 0, 0),
        ({"groups": [{"conditions": []}]}, "query.groups[0].conditions", 0, None),
        ({"groups": [{}]}, "query.groups[0]", 0, None),
        ({"groups": "all"}, "query.groups", None, None),
    ]
    for query, where, group, condition in cases:
        error = assert_error(http.post(search, headers=CA, json={"query": query}), 422,
                             "INVALID_FILTER", where)
        assert where in error["message"]
        assert error["details"].get("group") == group
        assert error["details"].get("condition") == condition
    assert_error(http.post(search, headers=CA, json={"limit": 500}), 422, "VALIDATION_ERROR",
                 "limit")
    page = http.post(search, headers=CA, json={"limit": 2, "offset": 2}).json()
    assert page["total"] == 3 and [c["name"] for c in page["items"]] == ["Ada Lovelace"]


def test_sandbox_import_limits_and_row_errors(sandbox, http):
    imp = url(sandbox, "/contacts/import")
    too_many = [{"name": f"n{i}"} for i in range(501)]
    assert_error(http.post(imp, headers=CA, json={"contacts": too_many}), 422,
                 "VALIDATION_ERROR", "contacts")
    assert_error(http.post(imp, headers=CA, json={"contacts": []}), 422, "VALIDATION_ERROR")
    assert_error(http.post(imp, headers=CA, json={"contacts": [{}], "match_by": "x"}), 422,
                 "VALIDATION_ERROR", "match_by")
    answer = http.post(imp, headers=CA, json={"contacts": [
        "nope", {"name": "Twice", "email": "t@example.com"},
        {"email": "T@example.com", "tags": ["second"]},
        {"name": "x", "custom": {"budget": "lots"}}]})
    assert answer.status_code == 200
    body = answer.json()
    assert {k: body[k] for k in ("total", "created", "updated", "skipped")} == {
        "total": 4, "created": 1, "updated": 1, "skipped": 0}
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(0, None),
                                                                (3, "custom.budget")]
    assert by_name(sandbox, "Twice")["tags"] == ["second"]


def test_sandbox_views_put_replaces_all_and_validates(sandbox, http):
    views = url(sandbox, "/contacts/views")
    current = http.get(views, headers=CA).json()["views"]
    assert [v["id"] for v in current] == ["view_hot_leads", "view_replied"]
    query = {"groups": [{"conditions": [{"field": "name", "op": "exists"}]}]}
    assert_error(http.put(views, headers=CA, json={"views": [
        {"name": "A", "query": query}, {"name": "a", "query": query}]}), 422,
        "VALIDATION_ERROR", "views[1].name")
    assert_error(http.put(views, headers=CA, json={"views": [
        {"id": "view_ghost", "name": "A", "query": query}]}), 422, "VALIDATION_ERROR",
        "views[0].id")
    assert_error(http.put(views, headers=CA, json={"views": [
        {"name": "A", "query": {"groups": [{"conditions": [{"field": "x", "op": "eq"}]}]}}]}),
        422, "INVALID_FILTER", "views[0].query.groups[0].conditions[0].field")
    put = http.put(views, headers=CA, json={"views": [current[1], {"name": "New",
                                                                    "query": query}]})
    assert put.status_code == 200
    after = put.json()["views"]
    assert [v["name"] for v in after] == ["Replied interested", "New"]
    assert after[0]["created_at"] == current[1]["created_at"]
    assert http.get(views, headers=CA).json()["views"] == after


def test_sandbox_tags_fields_values_rules(sandbox, http):
    tags = url(sandbox, "/tags")
    made = http.post(tags, headers=CA, json={"name": "a/b c"})
    assert made.status_code == 201
    assert_error(http.post(tags, headers=CA, json={"name": "a/b c"}), 409, "TAG_EXISTS")
    assert_error(http.post(tags, headers=CA, json={}), 422, "VALIDATION_ERROR", "name")
    alan = by_name(sandbox, "Alan Turing")
    contact = url(sandbox, f"/contacts/{alan['id']}")
    assert_error(http.post(f"{contact}/tags", headers=CA, json={"tags": []}), 422,
                 "VALIDATION_ERROR", "tags")
    tagged = http.post(f"{contact}/tags", headers=CA, json={"tags": ["a/b c"]}).json()
    assert tagged["tags"] == ["lead", "vip", "a/b c"]
    removed = http.delete(f"{contact}/tags/{requests.utils.quote('a/b c', safe='')}",
                          headers=CA)
    assert removed.status_code == 204 and by_name(sandbox, "Alan Turing")["tags"] == ["lead", "vip"]
    assert http.delete(f"{contact}/tags/never", headers=CA).status_code == 204
    assert_error(http.delete(url(sandbox, "/tags/tag_missing"), headers=CA), 404, "TAG_NOT_FOUND")

    fields = url(sandbox, "/custom-fields")
    made = http.post(fields, headers=CA, json={"name": "Lead score", "type": "number"})
    assert made.status_code == 201 and made.json()["key"] == "lead_score"
    field_id = made.json()["id"]
    assert_error(http.post(fields, headers=CA, json={"name": "Lead score", "type": "number"}),
                 409, "CUSTOM_FIELD_EXISTS", "key")
    assert_error(http.post(fields, headers=CA, json={"name": "X", "type": "colour"}), 422,
                 "VALIDATION_ERROR", "type")
    assert_error(http.post(fields, headers=CA, json={"name": "X", "type": "text",
                                                     "options": ["a"]}), 422,
                 "VALIDATION_ERROR", "options")
    assert_error(http.patch(f"{fields}/{field_id}", headers=CA, json={"type": "text"}), 422,
                 "VALIDATION_ERROR", "type")
    assert_error(http.patch(f"{fields}/cf_missing", headers=CA, json={"name": "Y"}), 404,
                 "CUSTOM_FIELD_NOT_FOUND")
    value = http.put(f"{contact}/custom/lead_score", headers=CA, json={"value": 88})
    assert value.status_code == 200 and value.json()["custom"]["lead_score"] == 88
    assert_error(http.put(f"{contact}/custom/lead_score", headers=CA, json={"value": "high"}),
                 422, "VALIDATION_ERROR", "custom.lead_score")
    assert_error(http.put(f"{contact}/custom/lead_score", headers=CA, json={}), 422,
                 "VALIDATION_ERROR", "value")
    assert http.delete(f"{fields}/{field_id}", headers=CA).status_code == 204
    assert "lead_score" not in by_name(sandbox, "Alan Turing")["custom"]

    values = url(sandbox, "/custom-values")
    assert_error(http.put(f"{values}/bad key", headers=CA, json={"value": "x"}), 422,
                 "VALIDATION_ERROR", "key")
    assert_error(http.put(f"{values}/ok", headers=CA, json={"value": 5}), 422,
                 "VALIDATION_ERROR", "value")
    assert http.put(f"{values}/ok", headers=CA, json={"value": "v"}).json()["value"] == "v"
    assert http.delete(f"{values}/ok", headers=CA).status_code == 204
    assert_error(http.delete(f"{values}/ok", headers=CA), 404, "CUSTOM_VALUE_NOT_FOUND")


def test_sandbox_sort_by_updated_and_patch_merges_custom(sandbox, http):
    contacts = url(sandbox, "/contacts")
    ada = by_name(sandbox, "Ada Lovelace")
    patched = http.patch(f"{contacts}/{ada['id']}", headers=CA,
                         json={"custom": {"budget": None, "industry": "Finance"}}).json()
    assert patched["custom"] == {"industry": "Finance"}
    newest = http.get(contacts, headers=CA, params={"sort": "-updated_at", "limit": 1}).json()
    assert newest["items"][0]["id"] == ada["id"]
    assert_error(http.get(contacts, headers=CA, params={"sort": "name"}), 422,
                 "VALIDATION_ERROR", "sort")
    assert_error(http.post(url(sandbox, "/_sandbox/nothing"), headers=CA, json={}), 404,
                 "NOT_FOUND")


def test_app_connection_test(connected):
    client = connected.client(connected.connection("contacts-api"))
    try:
        assert connected.catalog.apps["contacts_api"].cls().test(client) == {"ok": True,
                                                                             "contacts": 3}
    finally:
        client.close()
