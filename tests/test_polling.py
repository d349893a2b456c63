"""Adversarial polling (issue 3, point 3): the new-contact poll against a hostile Contacts API.

The sandbox's fault mode serves overlapping pages, shuffles items within pages, fails
requests (500, 429, dropped connections), and the test crashes the connector, and restarts
the sandbox, between a fetch and the save of the cursor. Contacts keep arriving while the
polls run. However it goes, each new contact yields exactly one run, and switching a flow
back on does not backfill what arrived while it was off unless asked to.

Runs are only counted here (no executor runs them): the subject is what polling queues.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from connector import flows, intake
from connector.errors import APIError, UserError
from connector.sandbox import Sandbox
from connector.store import Flow, Run, SeenItem, TriggerState

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "flows" / "new-contact-call.yaml"
ORG = "org_demo"


@pytest.fixture
def box():
    """A sandbox of this test's own, so that it can be restarted (same port, same data)."""
    sandbox = Sandbox(call_delay=0.05, rate_limit_per_minute=10**6)
    sandbox.start()
    yield sandbox
    sandbox.stop()


def restart(sandbox: Sandbox) -> None:
    port = urlparse(sandbox.root_url).port
    sandbox.stop()
    sandbox.start(port=port)


def connect(host, sandbox):
    for app in ("contacts_api", "samora"):
        info = sandbox.connections()[app]
        host.add_connection(app.replace("_", "-"), app, info["credentials"], info["base_url"])
    return host


def new_contact_flow(host, name="new-contacts", max_pages=None):
    data = flows.load_file(EXAMPLE)
    data["name"] = name
    if max_pages is not None:
        data["trigger"]["inputs"] = {"max_pages": max_pages}
    return flows.save(host, data)


def enable(host, flow, backfill=False, tries=50):
    """Switch on, trying again while faults make the priming poll fail."""
    for _ in range(tries):
        try:
            return flows.enable(host, Flow.get_by_id(flow.id), backfill=backfill)
        except UserError:
            continue
    raise AssertionError("could not switch the flow on under faults")


def poll(host, flow):
    """Poll once; None when the service failed the poll (nothing was recorded)."""
    try:
        return intake.poll_flow(host, Flow.get_by_id(flow.id))
    except APIError:
        return None


def poll_until_ok(host, flow, tries=100):
    for _ in range(tries):
        result = poll(host, flow)
        if result is not None:
            return result
    raise AssertionError("every poll failed")


def run_ids(flow):
    return [r.item["id"] for r in Run.select().where(Run.flow == flow)]


def names(flow):
    return sorted(r.item["name"] for r in Run.select().where(Run.flow == flow))


@pytest.mark.slow
@pytest.mark.covers("contacts_api.new_contact")
def test_ten_thousand_new_contacts_under_adversarial_pages_make_exactly_ten_thousand_runs(
        make_host, box, monkeypatch):
    host = connect(make_host(), box)
    flow = new_contact_flow(host, max_pages=200)
    box.faults.set("contacts_api", list_overlap=7, list_shuffle=True, list_rate=0.4,
                   error_rate=0.02, throttle_rate=0.01, drop_rate=0.015, retry_after=0,
                   methods=["GET"], seed=3)
    enable(host, flow)
    seeded = {c["id"] for c in box.state()["contacts_api"]["contacts"][ORG]}
    assert len(seeded) == 3

    total, created = 10_000, []
    done = threading.Event()

    def arrive():  # a burst, then a steady stream while the polls run
        try:
            for i in range(4_000):
                created.append(box.contacts_api.add_contact(ORG, name=f"Burst {i}")["id"])
            while len(created) < total:
                for _ in range(min(100, total - len(created))):
                    n = len(created)
                    created.append(box.contacts_api.add_contact(ORG, name=f"Late {n}")["id"])
                time.sleep(0.1)
        finally:
            done.set()

    ingests, restores, restarts = [0], [0], [0]
    real_ingest = intake.ingest

    def crash_before_the_cursor_is_saved(*args, **kwargs):
        ingests[0] += 1
        if ingests[0] % 3 == 0:  # the process dies with the pages fetched, nothing saved
            if ingests[0] % 6 == 0:  # and the service restarts meanwhile
                restart(box)
                restarts[0] += 1
            raise RuntimeError("simulated crash between the fetch and the cursor save")
        return real_ingest(*args, **kwargs)

    monkeypatch.setattr(intake, "ingest", crash_before_the_cursor_is_saved)
    started = time.monotonic()
    arrivals = threading.Thread(target=arrive, name="arrivals", daemon=True)
    arrivals.start()
    polls = failed = duplicates = quiet = ok = 0
    while time.monotonic() - started < 50:
        state = TriggerState.get(TriggerState.flow == flow)
        before = dict(state.cursor or {})
        polls += 1
        try:
            result = intake.poll_flow(host, Flow.get_by_id(flow.id))
        except (APIError, RuntimeError):
            failed += 1
            continue
        ok += 1
        duplicates += result.duplicates
        if ok % 4 == 0:  # the cursor is lost (say, restored from a backup): refetch
            TriggerState.update(cursor=before).where(TriggerState.id == state.id).execute()
            restores[0] += 1
            continue
        quiet = quiet + 1 if done.is_set() and not result.created else 0
        if quiet >= 3 and restarts[0] and restores[0]:
            break
    elapsed = time.monotonic() - started
    arrivals.join(5)
    ids = run_ids(flow)
    plan = box.faults.get("contacts_api")
    print(f"\n10,000 contacts: {polls} polls ({failed} failed: {sum(plan['injected'].values())} "
          f"faults {plan['injected']}, {ingests[0] // 3} crashes, {restarts[0]} restarts), "
          f"{restores[0]} cursors thrown away, {plan['requests_seen']} list pages read, "
          f"{duplicates} repeats dropped by the ledger, {elapsed:.1f} s")
    assert len(created) == total
    assert len(ids) == len(set(ids)) == total  # exactly one run per new contact
    assert set(ids) == set(created)
    assert not set(ids) & seeded
    assert SeenItem.select().where(SeenItem.flow == flow).count() == total + 3
    assert restarts[0] >= 1 and restores[0] >= 1 and duplicates > 0
    assert sum(plan["injected"].values()) >= 3 and failed >= 3


@pytest.mark.covers("contacts_api.new_contact")
@pytest.mark.parametrize("order", [None, "oldest_first", "random"])
def test_reordered_pages_lose_nothing_when_max_pages_covers_the_list(make_host, box, order):
    host = connect(make_host(), box)
    flow = new_contact_flow(host, max_pages=10)
    for i in range(300):
        box.contacts_api.add_contact(ORG, name=f"Old {i}")
    box.faults.set("contacts_api", list_overlap=5, list_shuffle=True, list_order=order, seed=8)
    enable(host, flow)
    fresh = set()
    for round_ in range(4):
        for i in range(120):
            fresh.add(box.contacts_api.add_contact(ORG, name=f"New {round_}.{i}")["id"])
        poll_until_ok(host, flow)
    poll_until_ok(host, flow)
    ids = run_ids(flow)
    assert len(ids) == len(fresh) and set(ids) == fresh


@pytest.mark.covers("contacts_api.new_contact")
def test_switching_back_on_does_not_backfill_unless_asked_under_faults(make_host, box):
    host = connect(make_host(), box)
    flow = new_contact_flow(host, max_pages=50)
    box.faults.set("contacts_api", list_overlap=3, list_shuffle=True, error_rate=0.2,
                   drop_rate=0.1, methods=["GET"], seed=31)
    add = lambda name: box.contacts_api.add_contact(ORG, name=name)  # noqa: E731
    enable(host, flow)
    add("A")
    poll_until_ok(host, flow)
    assert names(flow) == ["A"]

    flows.disable(host, Flow.get_by_id(flow.id))
    for name in ("B1", "B2", "B3"):
        add(name)  # while off
    enable(host, flow)  # no backfill: the priming poll records B1-B3 as seen
    for _ in range(3):
        poll_until_ok(host, flow)
    assert names(flow) == ["A"]
    add("C")
    poll_until_ok(host, flow)
    assert names(flow) == ["A", "C"]

    flows.disable(host, Flow.get_by_id(flow.id))
    for name in ("D1", "D2", "D3"):
        add(name)  # while off, and this time the user asks for them
    enable(host, flow, backfill=True)
    for _ in range(3):
        poll_until_ok(host, flow)
    assert names(flow) == ["A", "C", "D1", "D2", "D3"]
    assert sum(box.faults.get("contacts_api")["injected"].values()) > 0


@pytest.mark.covers("contacts_api.new_contact")
def test_a_burst_larger_than_max_pages_is_still_read_by_later_polls(make_host, box):
    host = connect(make_host(), box)
    flow = new_contact_flow(host)  # the default: 20 pages of 100 a poll
    enable(host, flow)
    fresh = {box.contacts_api.add_contact(ORG, name=f"Burst {i}")["id"] for i in range(2_500)}
    for _ in range(5):
        poll_until_ok(host, flow)
    ids = run_ids(flow)
    assert len(ids) == 2_500 and set(ids) == fresh  # today: 2,000, and never more


@pytest.mark.covers("contacts_api.new_contact")
def test_an_oldest_first_list_longer_than_max_pages_still_yields_new_contacts(make_host, box):
    host = connect(make_host(), box)
    flow = new_contact_flow(host, max_pages=5)
    for i in range(600):
        box.contacts_api.add_contact(ORG, name=f"Old {i}")
    box.faults.set("contacts_api", list_order="oldest_first")
    enable(host, flow)
    fresh = {box.contacts_api.add_contact(ORG, name=f"New {i}")["id"] for i in range(3)}
    for _ in range(3):
        poll_until_ok(host, flow)
    state = TriggerState.get(TriggerState.flow == flow)
    assert set(run_ids(flow)) == fresh or state.last_error  # fire, or at least say so


class _Pages:
    """A fake client serving fixed pages of contacts by offset."""

    def __init__(self, pages):
        self.pages, self.offsets = pages, []

    def get(self, path, params=None, retries=0):
        self.offsets.append(params["offset"])
        return {"items": self.pages.get(params["offset"], []), "total": 200}


def test_the_early_stop_compares_times_not_strings():
    from connector.sdk import TriggerContext
    from triggers.contacts_api import NewContact

    def contact(n, stamp):
        return {"id": f"c{n}", "name": f"C{n}", "created_at": stamp}

    # Newest first by time: 99 contacts in the second after the cursor, then one at .500,
    # and the next page opens with one at .200, still after the cursor (10:30:00 exactly).
    first = [contact(i, f"2026-01-15T10:30:01.{999 - i:03d}Z") for i in range(99)]
    first.append(contact(99, "2026-01-15T10:30:00.500Z"))
    second = [contact(100, "2026-01-15T10:30:00.200Z"),
              contact(101, "2026-01-15T10:29:59Z")]
    client = _Pages({0: first, 100: second})
    ctx = TriggerContext(flow_name="f", inputs={"max_pages": 20}, client=client,
                         state={"newest_created_at": "2026-01-15T10:30:00Z", "window": {}})
    fresh = {c["id"] for c in NewContact().poll(ctx)}
    assert "c100" in fresh  # created 0.2 s after the cursor: new, and must fire
