"""SAMI OS: the emulator's rules over HTTP, every action and search, and the poll triggers in
flows run by the engine. Outcomes are checked in the sandbox's state."""
from __future__ import annotations

import re
import uuid

import pytest
import requests
from marshmallow import ValidationError

from connector import engine, flows, intake
from connector.errors import FatalAPIError, IdempotencyConflict
from connector.sandbox import Sandbox
from connector.sdk import ActionContext
from connector.store import Run

CONN = "sami-os"
RW = {"Authorization": "Bearer sami_test_key"}
READ = {"Authorization": "Bearer sami_read_key"}
ADMIN = {"Authorization": "Bearer sami_admin_key"}


@pytest.fixture
def http():
    with requests.Session() as session:
        session.trust_env = False
        yield session


@pytest.fixture
def sami(sandbox):
    return sandbox.sami_os


@pytest.fixture
def api(sandbox):
    base = sandbox.connections()["sami_os"]["base_url"] + "/api/v1"
    return lambda path: base + path


@pytest.fixture
def admin_host(connected, sandbox):
    """The connected host plus a connection holding the seeded Admin key."""
    info = sandbox.connections()["sami_os"]
    connected.add_connection("sami-admin", "sami_os",
                             {"api_key": sandbox.seeded["sami_os"]["admin_api_key"]},
                             info["base_url"])
    return connected


def act(host, key, inputs, conn=CONN, idem=None):
    """Run an action or search as the engine does: loaded inputs, a real ledger."""
    action = host.catalog.action(key)
    data = action.Inputs().load(inputs)
    client = host.client(host.connection(conn))
    ctx = ActionContext(flow_name="test", run_id=0, step_name="step",
                        idempotency_key=idem or uuid.uuid4().hex, client=client,
                        once=lambda k, request, call: engine.once(action.key, k, request, call))
    try:
        return action.run(ctx, data)
    finally:
        client.close()


def state(sandbox):
    return sandbox.state()["sami_os"]


def contact(sandbox, name):
    return next(c for c in state(sandbox)["contacts"] if c["first_name"] == name)


def flow_with(host, name, trigger, inputs, steps):
    flow = flows.save(host, {"name": name, "trigger": {"key": trigger, "connection": CONN,
                                                       "inputs": inputs},
                             "steps": steps})
    flows.enable(host, flow)
    return flow


def poll_and_run(host, flow):
    created = intake.poll_flow(host, flow).created
    engine.run_due(host)
    return [Run.get_by_id(i) for i in created]


# -- the emulator: the documented surface, auth, scopes, envelope, pagination, limits -------------------------------------

def test_the_table_in_the_apps_docstring_is_exactly_what_the_sandbox_serves(sandbox):
    from connector.plugins import sami_os as app_module
    from connector.sandbox.sami_os import required_scope

    def shape(path):
        return re.sub(r"[{<][^}>]*[}>]", "{}", path)

    documented = {(method, shape(path)): scope for method, path, scope in re.findall(
        r"^\| (GET|POST|PUT|PATCH|DELETE) \| (/api/v1/\S*) \| (\w+) \|", app_module.__doc__,
        re.M)}
    served = {}
    for rule in sandbox.sami_os.create_app().url_map.iter_rules():
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            if rule.endpoint != "static":
                served[(method, shape(rule.rule))] = required_scope(method, rule.rule)
    assert served == documented


def test_requests_need_a_bearer_key(http, api):
    answer = http.get(api("/contacts"))
    assert answer.status_code == 401
    assert "Authorization: Bearer" in answer.json()["error"]["message"]
    assert http.get(api("/contacts"), headers={"X-API-Key": "sami_test_key"}).status_code == 401
    bad = http.get(api("/contacts"), headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "UNAUTHORIZED"
    assert "nope" not in bad.text
    ok = http.get(api("/contacts"), headers=RW)
    assert ok.status_code == 200 and ok.headers["X-RateLimit-Limit"]


def test_each_scope_reaches_only_its_routes(http, api, sandbox):
    assert http.get(api("/contacts"), headers=READ).status_code == 200
    refused = http.post(api("/contacts"), headers=READ, json={"first_name": "Ann"})
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "INSUFFICIENT_SCOPE"
    assert "Read only" in error["message"] and "Read & write" in error["message"]
    assert error["details"] == {"scope": "read", "required_scope": "read_write"}
    assert http.post(api("/contacts"), headers=RW, json={"first_name": "Ann"}).status_code == 201
    keys = http.get(api("/api-keys"), headers=RW)
    assert keys.status_code == 403 and "needs Admin (admin)" in keys.json()["error"]["message"]
    listed = http.get(api("/api-keys"), headers=ADMIN)
    assert listed.status_code == 200
    assert {k["scope"] for k in listed.json()["data"]} == {"read", "read_write", "admin"}
    assert all("key" not in k for k in listed.json()["data"])
    me = http.get(api("/api-keys/current"), headers=READ).json()["data"]
    assert me["scope"] == "read" and me["user"]["name"] == "Jordan Lee"
    # An unknown route is 404 whatever the scope, not 403.
    assert http.post(api("/nothing-here"), headers=READ, json={}).status_code == 404
    assert state(sandbox)["contacts"][-1]["created_by"] == "usr_maya"  # the key's user


def test_internal_routes_are_not_exposed(http, api):
    for path in ("/billing", "/auth/callback", "/webhooks/twilio", "/health", "/cron/digest",
                 "/phone-numbers", "/media/uploads", "/admin/organizations", "/ai/workflows"):
        assert http.get(api(path), headers=ADMIN).status_code == 404, path


def test_lists_page_and_sort(http, api, sami):
    for i in range(30):
        sami.create_contact({"first_name": f"Lead{i:02d}"}, "usr_maya")
    first = http.get(api("/contacts"), headers=RW, params={"limit": 10}).json()
    assert first["pagination"] == {"page": 1, "limit": 10, "total": 34, "has_more": True}
    assert first["data"][0]["first_name"] == "Lead29"  # newest first by default
    last = http.get(api("/contacts"), headers=RW,
                    params={"limit": 10, "page": 4, "sort": "created_at"}).json()
    assert [c["first_name"] for c in last["data"]] == ["Lead26", "Lead27", "Lead28", "Lead29"]
    assert last["pagination"]["has_more"] is False
    for params in ({"limit": 101}, {"page": 0}, {"sort": "name"}, {"created_since": "soon"}):
        answer = http.get(api("/contacts"), headers=RW, params=params)
        assert answer.status_code == 422, params
        assert answer.json()["error"]["details"]["field"] == next(iter(params))


def test_validation_errors_use_the_envelope(http, api):
    cases = [({"first_name": "A", "phone": "512-555-0199"}, "phone"),
             ({"first_name": "A", "nickname": "Al"}, "nickname"),
             ({"first_name": "A", "lead_source_id": "ls_nope"}, "lead_source_id"),
             ({"email": "not-an-email"}, "email"),
             ({"status": "active"}, "first_name")]
    for body, field in cases:
        answer = http.post(api("/contacts"), headers=RW, json=body)
        assert answer.status_code == 422, body
        assert answer.json()["error"]["code"] == "VALIDATION_ERROR"
        assert answer.json()["error"]["details"]["field"] == field
    broken = http.post(api("/contacts"), headers={**RW, "Content-Type": "application/json"},
                       data="{nope")
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "INVALID_JSON"
    missing = http.get(api("/contacts/con_missing"), headers=RW)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "CONTACT_NOT_FOUND"


def test_rate_limit_answers_429_with_retry_after():
    with Sandbox(rate_limit_per_minute=3) as box:
        url = box.connections()["sami_os"]["base_url"] + "/api/v1/tags"
        statuses = [requests.get(url, headers=RW, timeout=10) for _ in range(4)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429]
    assert statuses[-1].json()["error"]["code"] == "RATE_LIMITED"
    assert int(statuses[-1].headers["Retry-After"]) >= 1
    assert statuses[1].headers["X-RateLimit-Remaining"] == "1"


def test_deal_stage_rules(http, api, sami):
    deal = http.post(api("/deals"), headers=RW,
                     json={"name": "Test deal", "pipeline_id": "pl_buyers"}).json()["data"]
    assert deal["stage_id"] == "stg_buyers_new_lead" and deal["status"] == "open"
    wrong = http.post(api(f"/deals/{deal['id']}/move"), headers=RW,
                      json={"stage_id": "stg_listings_active", "pipeline_id": "pl_buyers"})
    assert wrong.status_code == 422 and "is not in pipeline" in wrong.json()["error"]["message"]
    patch = http.patch(api(f"/deals/{deal['id']}"), headers=RW, json={"stage_id": "x"})
    assert patch.status_code == 422 and "/move" in patch.json()["error"]["message"]
    won = http.post(api(f"/deals/{deal['id']}/move"), headers=RW,
                    json={"stage_id": "stg_buyers_closed"}).json()["data"]
    assert won["status"] == "won" and won["stage_name"] == "Closed"
    again = http.post(api(f"/deals/{deal['id']}/move"), headers=RW,
                      json={"stage_id": "stg_buyers_closed"}).json()["data"]
    assert again["stage_entered_at"] == won["stage_entered_at"]
    changes = http.get(api("/deal-stage-changes"), headers=RW,
                       params={"deal_id": deal["id"], "sort": "entered_at"}).json()["data"]
    assert [(c["from_stage_id"], c["stage_id"]) for c in changes] == [
        (None, "stg_buyers_new_lead"), ("stg_buyers_new_lead", "stg_buyers_closed")]
    assert changes[1]["moved_by"] == "usr_maya" and changes[1]["deal"]["id"] == deal["id"]


def test_smart_list_members_come_and_go(http, api, sandbox):
    emma = contact(sandbox, "Emma")
    url = api("/smart-lists/sl_hot_buyers/contacts")
    assert [c["first_name"] for c in http.get(url, headers=RW).json()["data"]] == ["Olivia"]
    http.post(api(f"/contacts/{emma['id']}/tags"), headers=RW, json={"tags": ["HOT"]})
    members = http.get(url, headers=RW).json()["data"]
    assert [c["first_name"] for c in members] == ["Emma", "Olivia"]
    first_added = members[0]["added_to_list_at"]
    http.delete(api(f"/contacts/{emma['id']}/tags/hot"), headers=RW)
    assert len(http.get(url, headers=RW).json()["data"]) == 1
    http.post(api(f"/contacts/{emma['id']}/tags"), headers=RW, json={"tags": ["hot"]})
    assert http.get(url, headers=RW).json()["data"][0]["added_to_list_at"] > first_added


def test_sms_stop_opts_out_and_admin_routes(http, sandbox, api):
    admin = sandbox.root_url + "/_sandbox/sami-os"
    inbound = http.post(admin + "/sms/inbound",
                        json={"from": "+15125550114", "body": "STOP"}).json()["data"]
    assert inbound["contact_id"] == contact(sandbox, "Emma")["id"]
    refused = http.post(api("/sms"), headers=RW, json={"to": "+15125550114", "body": "Hi"})
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "RECIPIENT_OPTED_OUT"
    assert http.post(admin + "/sms/inbound", json={"from": "5125550114", "body": "x"}
                     ).status_code == 422
    call = http.post(admin + "/calls", json={"phone": "+15125550113"}).json()["data"]
    assert call["status"] == "in_progress" and call["contact_id"] == contact(sandbox, "Noah")["id"]
    done = http.post(admin + f"/calls/{call['id']}/complete", json={"outcome": "no_answer"})
    assert done.json()["data"]["status"] == "completed"
    assert http.post(admin + f"/calls/{call['id']}/complete").status_code == 409


# -- the app --------------------------------------------------------------------------------------

def test_connection_test_reports_user_and_scope(connected):
    assert connected.test_connection(CONN) == {"ok": True, "user": "Maya Patel",
                                               "scope": "read_write",
                                               "scope_label": "Read & write"}


# -- contacts, tags, custom fields, lead sources, relationships -----------------------------------

@pytest.mark.covers("sami_os.create_contact", "sami_os.find_contact", "sami_os.update_contact",
                    "sami_os.list_lead_sources")
def test_create_find_and_update_a_contact(connected, sandbox):
    sources = connected.options("sami_os.list_lead_sources", CONN)
    assert {"value": "ls_zillow", "label": "Zillow"} in sources
    created = act(connected, "sami_os.create_contact", {
        "first_name": "Ava", "last_name": "Nguyen", "email": "Ava@Example.com",
        "phone": "+1 (512) 555-0177", "lead_source_id": "ls_open_house", "status": "new",
        "tags": "buyer, open-house", "custom_fields": {"budget": 480000}, "assigned_to": ""})
    stored = contact(sandbox, "Ava")
    assert stored["phone"] == "+15125550177" and stored["email"] == "ava@example.com"
    assert stored["lead_source"] == "Open house" and stored["tags"] == ["buyer", "open-house"]
    assert stored["custom_fields"] == {"budget": 480000} and stored["assigned_to"] is None
    assert created["id"] == stored["id"]
    found = act(connected, "sami_os.find_contact", {"email": "ava@example.com"})
    assert found["count"] == 1 and found["first"]["id"] == created["id"]
    by_text = act(connected, "sami_os.find_contact", {"query": "nguyen", "tag": "buyer"})
    assert [c["id"] for c in by_text["results"]] == [created["id"]]
    assert act(connected, "sami_os.find_contact", {"phone": "+15125550999"})["found"] is False
    updated = act(connected, "sami_os.update_contact", {
        "contact_id": created["id"], "status": "active", "last_name": "",
        "assigned_to": "usr_sam", "sms_opt_out": False})
    assert updated["status"] == "active" and updated["last_name"] == "Nguyen"
    assert contact(sandbox, "Ava")["assigned_to"] == "usr_sam"
    with pytest.raises(ValidationError):
        act(connected, "sami_os.create_contact", {"phone": "512 555 0177"})  # no country code


def test_a_repeated_create_step_creates_once(connected, sandbox):
    before = len(state(sandbox)["contacts"])
    first = act(connected, "sami_os.create_contact", {"first_name": "Once"}, idem="step-key-1")
    again = act(connected, "sami_os.create_contact", {"first_name": "Once"}, idem="step-key-1")
    assert first == again and len(state(sandbox)["contacts"]) == before + 1
    with pytest.raises(IdempotencyConflict):
        act(connected, "sami_os.create_contact", {"first_name": "Twice"}, idem="step-key-1")


@pytest.mark.covers("sami_os.set_contact_custom_field", "sami_os.list_custom_fields")
def test_set_a_custom_field_in_its_type(connected, sandbox):
    options = connected.options("sami_os.list_custom_fields", CONN)
    assert {"value": "cf_budget", "label": "Budget (number)"} in options
    emma = contact(sandbox, "Emma")["id"]
    for field_id, value, key, expected in (("cf_budget", "700,000", "budget", 700000),
                                           ("cf_pre_approved", "Yes", "pre_approved", True),
                                           ("cf_move_date", "2026-08-01", "target_move_date",
                                            "2026-08-01"),
                                           ("cf_financing", "va", "financing", "va")):
        act(connected, "sami_os.set_contact_custom_field",
            {"contact_id": emma, "field_id": field_id, "value": value})
        assert contact(sandbox, "Emma")["custom_fields"][key] == expected
    act(connected, "sami_os.set_contact_custom_field",
        {"contact_id": emma, "field_id": "cf_budget", "value": ""})
    assert "budget" not in contact(sandbox, "Emma")["custom_fields"]
    with pytest.raises(FatalAPIError) as err:
        act(connected, "sami_os.set_contact_custom_field",
            {"contact_id": emma, "field_id": "cf_financing", "value": "bitcoin"})
    assert err.value.status == 422 and "Financing must be one of" in str(err.value)


@pytest.mark.covers("sami_os.add_tags", "sami_os.remove_tags", "sami_os.list_tags")
def test_add_and_remove_tags(connected, sandbox):
    emma = contact(sandbox, "Emma")["id"]
    act(connected, "sami_os.add_tags", {"contact_id": emma, "tags": ["hot", "pre-approved"]})
    act(connected, "sami_os.add_tags", {"contact_id": emma, "tags": "hot"})  # a repeat
    assert contact(sandbox, "Emma")["tags"] == ["buyer", "hot", "pre-approved"]
    assert {"value": "pre-approved", "label": "pre-approved"} in connected.options(
        "sami_os.list_tags", CONN)
    result = act(connected, "sami_os.remove_tags",
                 {"contact_id": emma, "tags": "buyer, pre-approved, never-had"})
    assert result["tags"] == ["hot"] == contact(sandbox, "Emma")["tags"]


@pytest.mark.covers("sami_os.create_relationship", "sami_os.list_relationships")
def test_link_two_contacts(connected, sandbox):
    noah, emma = contact(sandbox, "Noah")["id"], contact(sandbox, "Emma")["id"]
    link = act(connected, "sami_os.create_relationship",
               {"contact_id": noah, "related_contact_id": emma, "type": "co_buyer"})
    again = act(connected, "sami_os.create_relationship",
                {"contact_id": noah, "related_contact_id": emma, "type": "co_buyer"})
    assert link == again and link["related_contact_name"] == "Emma Johnson"
    assert len(state(sandbox)["relationships"]) == 2  # the seeded spouses and this one
    other_side = act(connected, "sami_os.list_relationships", {"contact_id": emma})
    assert other_side["count"] == 1 and other_side["first"]["related_contact_id"] == noah
    assert connected.options("sami_os.list_relationships", CONN, {"contact_id": emma}) == [
        {"value": noah, "label": "Noah Williams (co_buyer)"}]


# -- pipelines and deals --------------------------------------------------------------------------

@pytest.mark.covers("sami_os.list_pipelines", "sami_os.list_stages")
def test_pipeline_and_stage_dropdowns(connected):
    assert connected.options("sami_os.list_pipelines", CONN) == [
        {"value": "pl_buyers", "label": "Buyers"}, {"value": "pl_listings", "label": "Listings"}]
    stages = connected.options("sami_os.list_stages", CONN, {"pipeline_id": "pl_buyers"})
    assert [s["label"] for s in stages] == ["Buyers › New lead", "Buyers › Showing",
                                            "Buyers › Offer made", "Buyers › Under contract",
                                            "Buyers › Closed", "Buyers › Lost"]
    assert len(connected.options("sami_os.list_stages", CONN)) == 12
    deal_inputs = {row["name"]: row for entry in connected.catalog.describe()
                   if entry["key"] == "sami_os.move_deal_to_stage" for row in entry["inputs"]}
    assert deal_inputs["stage_id"]["choices_from"] == "sami_os.list_stages"
    assert deal_inputs["pipeline_id"]["choices_from"] == "sami_os.list_pipelines"


@pytest.mark.covers("sami_os.create_deal", "sami_os.update_deal", "sami_os.move_deal_to_stage",
                    "sami_os.find_deal")
def test_deal_lifecycle(connected, sandbox):
    emma = contact(sandbox, "Emma")["id"]
    deal = act(connected, "sami_os.create_deal", {
        "name": "Johnson purchase", "pipeline_id": "pl_buyers", "contact_id": emma,
        "value": "540000", "expected_close_date": "2026-07-15", "assigned_to": "usr_jordan"})
    assert deal["stage_name"] == "New lead" and deal["contact_ids"] == [emma]
    updated = act(connected, "sami_os.update_deal", {"deal_id": deal["id"], "value": 555000,
                                                     "name": ""})
    assert updated["value"] == 555000 and updated["name"] == "Johnson purchase"
    moved = act(connected, "sami_os.move_deal_to_stage", {
        "deal_id": deal["id"], "pipeline_id": "pl_buyers", "stage_id": "stg_buyers_offer"})
    act(connected, "sami_os.move_deal_to_stage", {  # a retried step: no second entry
        "deal_id": deal["id"], "pipeline_id": "pl_buyers", "stage_id": "stg_buyers_offer"})
    assert moved["stage_name"] == "Offer made"
    entries = [c for c in state(sandbox)["stage_changes"] if c["deal_id"] == deal["id"]]
    assert [c["stage_id"] for c in entries] == ["stg_buyers_new_lead", "stg_buyers_offer"]
    found = act(connected, "sami_os.find_deal", {"contact_id": emma, "status": "open"})
    assert [d["id"] for d in found["results"]] == [deal["id"]]
    assert act(connected, "sami_os.find_deal", {"query": "johnson",
                                                "stage_id": "stg_buyers_offer"})["count"] == 1
    with pytest.raises(FatalAPIError) as err:
        act(connected, "sami_os.move_deal_to_stage", {
            "deal_id": deal["id"], "pipeline_id": "pl_listings", "stage_id": "stg_buyers_lost"})
    assert err.value.status == 422 and "is not in pipeline pl_listings" in str(err.value)


# -- properties, tasks, notes, appointments -------------------------------------------------------

@pytest.mark.covers("sami_os.create_property", "sami_os.find_property")
def test_create_and_find_a_property(connected, sandbox):
    prop = act(connected, "sami_os.create_property", {
        "street": "77 Rainey St #1204", "city": "Austin", "state": "TX", "postal_code": "78701",
        "mls_number": "ATX-7788001", "price": 615000, "bedrooms": 2, "bathrooms": 2,
        "property_type": "condo"})
    assert prop["address"] == "77 Rainey St #1204, Austin, TX 78701"
    assert state(sandbox)["properties"][-1]["mls_number"] == "ATX-7788001"
    found = act(connected, "sami_os.find_property", {"query": "rainey"})
    assert found["first"]["id"] == prop["id"]
    assert act(connected, "sami_os.find_property", {"mls_number": "atx-5521904"})["count"] == 1
    with pytest.raises(FatalAPIError) as err:
        act(connected, "sami_os.create_property", {"street": "1 Other St", "city": "Austin",
                                                   "state": "TX", "mls_number": "ATX-7788001"})
    assert err.value.status == 409 and err.value.code == "PROPERTY_EXISTS"


@pytest.mark.covers("sami_os.create_task", "sami_os.complete_task", "sami_os.create_note")
def test_tasks_and_notes(connected, sandbox):
    noah = contact(sandbox, "Noah")["id"]
    task = act(connected, "sami_os.create_task", {
        "title": "Order yard sign", "type": "paperwork", "contact_id": noah,
        "due_at": "2026-04-01T15:00:00+02:00"})
    assert task["due_at"] == "2026-04-01T13:00:00.000000Z" and task["assigned_to"] == "usr_maya"
    done = act(connected, "sami_os.complete_task", {"task_id": task["id"]})
    again = act(connected, "sami_os.complete_task", {"task_id": task["id"]})
    assert done["status"] == "completed" and again["completed_at"] == done["completed_at"]
    note = act(connected, "sami_os.create_note", {"body": "Sign ordered.", "contact_id": noah})
    assert state(sandbox)["notes"][-1] == note and note["created_by"] == "usr_maya"
    with pytest.raises(ValidationError):
        act(connected, "sami_os.create_note", {"body": "Nowhere to go"})


@pytest.mark.covers("sami_os.create_appointment", "sami_os.new_appointment",
                    "sami_os.send_sms")
def test_a_new_appointment_texts_a_confirmation(connected, sandbox):
    flow = flow_with(connected, "confirm-showing", "sami_os.new_appointment", {}, [
        {"name": "confirm", "action": "sami_os.send_sms", "connection": CONN,
         "inputs": {"contact_id": "{{ trigger.contact_id }}",
                    "body": "See you at {{ trigger.location }}!"}}])
    emma = contact(sandbox, "Emma")["id"]
    appointment = act(connected, "sami_os.create_appointment", {
        "title": "Showing: 77 Rainey St", "type": "showing", "contact_id": emma,
        "starts_at": "2026-04-04T16:00:00Z", "location": "77 Rainey St"})
    assert appointment["ends_at"] == "2026-04-04T17:00:00.000000Z"
    runs = poll_and_run(connected, flow)
    assert [r.status for r in runs] == [Run.SUCCEEDED]
    assert runs[0].item["id"] == appointment["id"]
    texts = [m for m in state(sandbox)["sms"] if m["direction"] == "outbound"]
    assert texts[-1]["to"] == "+15125550114" and texts[-1]["body"] == "See you at 77 Rainey St!"
    assert poll_and_run(connected, flow) == []  # the overlap re-reads it; the ledger drops it


# -- SMS and calls --------------------------------------------------------------------------------

def test_send_sms_never_texts_twice_and_checks_numbers(connected, sandbox):
    sent = act(connected, "sami_os.send_sms", {"to": "+44 7700 900123", "body": "Hello"},
               idem="sms-1")
    assert act(connected, "sami_os.send_sms", {"to": "+44 7700 900123", "body": "Hello"},
               idem="sms-1") == sent
    outbound = [m for m in state(sandbox)["sms"] if m["to"] == "+447700900123"]
    assert len(outbound) == 1 and outbound[0]["from"] == "+15125550100"
    with pytest.raises(ValidationError) as err:
        act(connected, "sami_os.send_sms", {"to": "7700 900123", "body": "Hello"})
    assert "country code" in str(err.value)
    with pytest.raises(ValidationError):
        act(connected, "sami_os.send_sms", {"body": "to whom?"})


@pytest.mark.covers("sami_os.new_inbound_sms", "sami_os.create_note", "sami_os.find_contact")
def test_an_inbound_text_becomes_a_note(connected, sandbox, http):
    flow = flow_with(connected, "texts-to-notes", "sami_os.new_inbound_sms", {}, [
        {"name": "note", "action": "sami_os.create_note", "connection": CONN,
         "inputs": {"contact_id": "{{ trigger.contact_id }}",
                    "body": "Text from {{ trigger.from }}: {{ trigger.body }}"}}])
    for body in ("Can we see it Sunday?", "Also, is there parking?"):
        answer = http.post(sandbox.root_url + "/_sandbox/sami-os/sms/inbound",
                           json={"from": "+15125550111", "body": body})
        assert answer.status_code == 201
    runs = poll_and_run(connected, flow)
    assert [r.status for r in runs] == [Run.SUCCEEDED, Run.SUCCEEDED]
    notes = state(sandbox)["notes"][-2:]
    olivia = contact(sandbox, "Olivia")["id"]
    assert sorted(n["body"] for n in notes) == [
        "Text from +15125550111: Also, is there parking?",
        "Text from +15125550111: Can we see it Sunday?"]
    assert [r.item["body"] for r in runs] == ["Can we see it Sunday?", "Also, is there parking?"]
    assert {n["contact_id"] for n in notes} == {olivia}


@pytest.mark.covers("sami_os.call_completed", "sami_os.log_call", "sami_os.create_task")
def test_completed_calls_get_a_follow_up_task(connected, sandbox, http):
    flow = flow_with(connected, "call-follow-up", "sami_os.call_completed", {"source": "dialer"}, [
        {"name": "task", "action": "sami_os.create_task", "connection": CONN,
         "inputs": {"title": "Follow up: {{ trigger.outcome }}", "type": "follow_up",
                    "contact_id": "{{ trigger.contact_id }}",
                    "assigned_to": "{{ trigger.user_id }}"}}])
    admin = sandbox.root_url + "/_sandbox/sami-os/calls"
    call = http.post(admin, json={"contact_id": contact(sandbox, "Olivia")["id"]}).json()["data"]
    assert poll_and_run(connected, flow) == []  # still in progress
    logged = act(connected, "sami_os.log_call", {
        "phone": "+15125550113", "direction": "outbound", "outcome": "left_voicemail",
        "duration_seconds": 0})
    assert logged["contact_id"] == contact(sandbox, "Noah")["id"] and logged["source"] == "logged"
    http.post(f"{admin}/{call['id']}/complete", json={"outcome": "connected"})
    runs = poll_and_run(connected, flow)
    assert [(r.status, r.item["id"]) for r in runs] == [(Run.SUCCEEDED, call["id"])]
    task = state(sandbox)["tasks"][-1]
    assert task["title"] == "Follow up: connected" and task["assigned_to"] == "usr_jordan"
    with pytest.raises(ValidationError):
        act(connected, "sami_os.log_call", {"direction": "inbound", "outcome": "busy"})


# -- triggers on contacts, smart lists and deals --------------------------------------------------

@pytest.mark.covers("sami_os.new_contact", "sami_os.assign_lead", "sami_os.send_sms",
                    "sami_os.list_team_members")
def test_new_leads_are_routed_and_welcomed(connected, sandbox):
    flow = flow_with(connected, "route-new-leads", "sami_os.new_contact", {}, [
        {"name": "assign", "action": "sami_os.assign_lead", "connection": CONN,
         "inputs": {"contact_id": "{{ trigger.id }}"}},
        {"name": "welcome", "action": "sami_os.send_sms", "connection": CONN,
         "filter": [{"field": "trigger.phone", "op": "not_empty"}],
         "inputs": {"contact_id": "{{ trigger.id }}",
                    "body": "Hi {{ trigger.first_name }}, {{ steps.assign.assigned_to_name }} "
                            "from Sunbelt Realty here!"}}])
    sami = sandbox.sami_os
    for name, phone in (("Zoe", "+15125550150"), ("Yusuf", "+15125550151")):
        sami.create_contact({"first_name": name, "phone": phone, "lead_source_id": "ls_zillow"},
                            "usr_maya")
    runs = poll_and_run(connected, flow)
    assert [r.status for r in runs] == [Run.SUCCEEDED, Run.SUCCEEDED]
    agents = {u["id"]: u["name"] for u in state(sandbox)["users"]}
    assigned = {n: contact(sandbox, n)["assigned_to"] for n in ("Zoe", "Yusuf")}
    assert set(assigned.values()) == {"usr_jordan", "usr_sam"}  # round robin, Zillow rule
    texts = [m["body"] for m in state(sandbox)["sms"] if m["to"] in ("+15125550150",
                                                                     "+15125550151")]
    assert sorted(texts) == [f"Hi {n}, {agents[assigned[n]]} from Sunbelt Realty here!"
                             for n in ("Yusuf", "Zoe")]
    engine.run_due(connected)
    assert len(texts) == 2 and poll_and_run(connected, flow) == []
    takers = connected.options("sami_os.list_team_members", CONN, {"accepting_leads": True})
    assert takers == [{"value": "usr_jordan", "label": "Jordan Lee"},
                      {"value": "usr_sam", "label": "Sam Rivera"}]


def test_assign_lead_by_rule_once_or_to_a_named_agent(connected, sandbox):
    emma = contact(sandbox, "Emma")["id"]  # lead source Website: the default rule
    first = act(connected, "sami_os.assign_lead", {"contact_id": emma}, idem="assign-1")
    assert act(connected, "sami_os.assign_lead", {"contact_id": emma}, idem="assign-1") == first
    assert first["method"] == "rule" and first["rule_id"] == "rr_default"
    named = act(connected, "sami_os.assign_lead", {"contact_id": emma, "user_id": "usr_priya"})
    assert named["method"] == "manual" and contact(sandbox, "Emma")["assigned_to"] == "usr_priya"
    for user in sandbox.sami_os.users.values():
        user["accepts_leads"] = False
    with pytest.raises(FatalAPIError) as err:
        act(connected, "sami_os.assign_lead", {"contact_id": emma})
    assert err.value.status == 409 and err.value.code == "NO_ELIGIBLE_MEMBER"


@pytest.mark.covers("sami_os.new_smart_list_contact", "sami_os.list_smart_lists",
                    "sami_os.add_tags", "sami_os.create_task")
def test_contacts_entering_a_smart_list_fire_each_time(connected, sandbox):
    assert {"value": "sl_hot_buyers", "label": "Hot buyers"} in connected.options(
        "sami_os.list_smart_lists", CONN)
    flow = flow_with(connected, "hot-buyers", "sami_os.new_smart_list_contact",
                     {"smart_list_id": "sl_hot_buyers"}, [
                         {"name": "task", "action": "sami_os.create_task", "connection": CONN,
                          "inputs": {"title": "Call {{ trigger.name }} today",
                                     "contact_id": "{{ trigger.id }}"}}])
    emma = contact(sandbox, "Emma")["id"]
    act(connected, "sami_os.add_tags", {"contact_id": emma, "tags": ["hot"]})
    runs = poll_and_run(connected, flow)
    assert [r.item["id"] for r in runs] == [emma]  # Olivia was there before: primed
    assert state(sandbox)["tasks"][-1]["title"] == "Call Emma Johnson today"
    act(connected, "sami_os.remove_tags", {"contact_id": emma, "tags": ["hot"]})
    assert poll_and_run(connected, flow) == []
    act(connected, "sami_os.add_tags", {"contact_id": emma, "tags": ["hot"]})
    assert len(poll_and_run(connected, flow)) == 1  # matching again is a new entry


@pytest.mark.covers("sami_os.deal_entered_stage", "sami_os.move_deal_to_stage",
                    "sami_os.create_deal", "sami_os.send_sms")
def test_deals_entering_a_stage_fire_once_per_entry(connected, sandbox):
    flow = flow_with(connected, "under-contract", "sami_os.deal_entered_stage",
                     {"pipeline_id": "pl_buyers", "stage_id": "stg_buyers_under_contract"}, [
                         {"name": "congrats", "action": "sami_os.send_sms", "connection": CONN,
                          "inputs": {"to": "+15125550111",
                                     "body": "{{ trigger.name }} is under contract (from "
                                             "{{ trigger.from_stage_name or 'nowhere' }})!"}}])
    martin = next(d for d in state(sandbox)["deals"] if d["name"] == "Martin purchase")["id"]

    def move(stage):
        act(connected, "sami_os.move_deal_to_stage",
            {"deal_id": martin, "pipeline_id": "pl_buyers", "stage_id": stage})

    move("stg_buyers_under_contract")
    move("stg_buyers_under_contract")  # no second entry
    move("stg_buyers_offer")  # a stage the flow does not watch
    direct = act(connected, "sami_os.create_deal", {
        "name": "Cash offer", "pipeline_id": "pl_buyers",
        "stage_id": "stg_buyers_under_contract"})
    runs = poll_and_run(connected, flow)
    assert [(r.item["deal_id"], r.item["stage_id"]) for r in runs] == [
        (martin, "stg_buyers_under_contract"), (direct["id"], "stg_buyers_under_contract")]
    assert runs[0].item["current_stage_id"] == "stg_buyers_offer"
    assert runs[0].dedupe_key == (f"{martin}:stg_buyers_under_contract:"
                                  f"{runs[0].item['entered_at']}")
    move("stg_buyers_under_contract")  # back again: a new entry fires again
    again = poll_and_run(connected, flow)
    assert len(again) == 1 and again[0].item["from_stage_id"] == "stg_buyers_offer"
    texts = [m["body"] for m in state(sandbox)["sms"] if m["to"] == "+15125550111"]
    assert texts == ["Martin purchase is under contract (from Showing)!",
                     "Cash offer is under contract (from nowhere)!",
                     "Martin purchase is under contract (from Offer made)!"]


def test_a_poll_reads_a_burst_page_by_page(connected, sandbox):
    flow = flow_with(connected, "burst", "sami_os.new_contact", {"max_pages": 1}, [
        {"name": "tag", "action": "sami_os.add_tags", "connection": CONN,
         "inputs": {"contact_id": "{{ trigger.id }}", "tags": "imported"}}])
    for i in range(130):
        sandbox.sami_os.create_contact({"first_name": f"Bulk{i:03d}"}, "usr_maya")
    first = intake.poll_flow(connected, flow).created
    second = intake.poll_flow(connected, flow).created
    # about a page per poll (the first page also holds a contact seen when switched on)
    assert 99 <= len(first) <= 100 and len(first) + len(second) == 130  # nothing lost
    assert intake.poll_flow(connected, flow).created == []


# -- API keys -------------------------------------------------------------------------------------

@pytest.mark.covers("sami_os.create_api_key", "sami_os.list_api_keys", "sami_os.revoke_api_key")
def test_admin_keys_manage_keys(admin_host, sandbox, http, api):
    made = act(admin_host, "sami_os.create_api_key", {"name": "Website forms",
                                                      "scope": "read"}, conn="sami-admin")
    assert made["key"].startswith("sami_") and made["scope_label"] == "Read only"
    assert made["key"] not in str(state(sandbox)["api_keys"])  # the secret is shown once
    assert http.get(api("/tags"), headers={"Authorization": f"Bearer {made['key']}"}
                    ).status_code == 200
    listed = act(admin_host, "sami_os.list_api_keys", {}, conn="sami-admin")
    assert made["id"] in [k["id"] for k in listed["results"]]
    assert {"value": "key_rw", "label": "Zapier (Read & write)"} in admin_host.options(
        "sami_os.list_api_keys", "sami-admin")
    revoked = act(admin_host, "sami_os.revoke_api_key", {"key_id": made["id"]},
                  conn="sami-admin")
    again = act(admin_host, "sami_os.revoke_api_key", {"key_id": made["id"]}, conn="sami-admin")
    assert revoked["status"] == "revoked" and again["revoked_at"] == revoked["revoked_at"]
    assert http.get(api("/tags"), headers={"Authorization": f"Bearer {made['key']}"}
                    ).status_code == 401
    assert made["id"] not in [k["id"] for k in act(admin_host, "sami_os.list_api_keys", {},
                                                   conn="sami-admin")["results"]]
    with pytest.raises(FatalAPIError) as err:
        act(admin_host, "sami_os.revoke_api_key", {"key_id": "key_admin"}, conn="sami-admin")
    assert err.value.status == 409
    with pytest.raises(FatalAPIError) as err:
        act(admin_host, "sami_os.create_api_key", {"name": "x", "scope": "admin"})
    assert err.value.status == 403 and "needs Admin" in str(err.value)
    assert "sami_test_key" not in str(err.value)
