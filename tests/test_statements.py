"""The compiled hot-path statements (connector.statements) against peewee's own queries.

Each statement must leave the database exactly as the peewee query it replaces would, on
SQLite and on PostgreSQL (skipped, saying why, where none answers): the same stored text
for JSON and timestamps, the same defaults, the same rows matched. Also: the outbound
session reads the environment once.
"""
from __future__ import annotations

import datetime as dt

import pytest
from peewee import JOIN, IntegrityError

from connector import flows, statements, store
from connector.http import new_session
from connector.store import Flow, Run, SeenItem, StepAttempt, StepRun, TriggerState

from .test_engine import FakePlugin
from .test_postgres import pg_schema, pg_url  # noqa: F401  (fixtures)

WHEN = dt.datetime(2026, 12, 8, 1, 2, 3, 456789)
ROUND = dt.datetime(2026, 12, 8, 1, 2, 3)  # no microseconds: stored without a fraction


@pytest.fixture(params=["sqlite", "postgres"])
def db_host(request, make_host):
    if request.param == "sqlite":
        return make_host(extra_plugins=[FakePlugin()])
    return make_host(extra_plugins=[FakePlugin()],
                     database_url=request.getfixturevalue("pg_url"))


def a_flow(host, name="f"):
    return flows.save(host, {"name": name, "trigger": {"key": "t.hook"}, "steps": [
        {"name": "one", "action": "t.echo", "inputs": {"value": 1}}]})


def stored(model, ids):
    """The rows as the database holds them (no peewee conversion), without their ids."""
    fields = [f for f in model._meta.sorted_fields if not f.primary_key]
    columns = ", ".join(f'"{f.column_name}"' for f in fields)
    marks = ", ".join([store.db.obj.param] * len(ids))
    rows = store.db.execute_sql(f'SELECT {columns} FROM "{model._meta.table_name}" '
                                f'WHERE "id" IN ({marks}) ORDER BY "id"', list(ids)).fetchall()
    return [tuple(row) for row in rows]


def assert_same(model, mine, theirs, differ=(), stamps=("created_at", "next_attempt_at")):
    """Each stored column equal, but ``differ``; ``stamps`` (defaults taken at each call)
    stored in the same form."""
    names = [f.name for f in model._meta.sorted_fields if not f.primary_key]
    for name, m, t in zip(names, mine, theirs, strict=True):
        if name in stamps:
            assert type(m) is type(t) and len(str(m)) == len(str(t)), (name, m, t)
        elif name not in differ:
            assert m == t, (name, m, t)


def test_insert_stores_what_model_insert_stores_defaults_included(db_host):
    flow = a_flow(db_host)
    queue_run = statements.Insert(Run, [Run.flow, Run.item, Run.dedupe_key])
    ours = queue_run.execute(flow.id, {"b": [1, "x"], "a": None}, "k1")
    theirs = Run.insert(flow=flow, item={"b": [1, "x"], "a": None}, dedupe_key="k2").execute()
    assert_same(Run, *stored(Run, [ours, theirs]), differ=("dedupe_key",))
    got = Run.get_by_id(ours)
    assert (got.status, got.attempts, got.item) == (Run.QUEUED, 0, {"a": None, "b": [1, "x"]})
    assert got.created_at is not None and got.next_attempt_at is not None
    see = statements.Insert(SeenItem, [SeenItem.flow, SeenItem.key, SeenItem.expires_at])
    seen = see.execute(flow.id, "k1", WHEN)
    assert_same(SeenItem, *stored(SeenItem, [seen, SeenItem.insert(
        flow=flow, key="k2", expires_at=WHEN).execute()]), differ=("key",),
        stamps=("created_at",))
    with pytest.raises(IntegrityError):  # the unique ledger still decides, as before
        with store.db.atomic():
            see.execute(flow.id, "k1", None)
    assert SeenItem.get(SeenItem.key == "k1").expires_at == WHEN


def test_update_matches_the_same_rows_and_stores_the_same_values(db_host):
    flow = a_flow(db_host)
    a, b = (Run.insert(flow=flow, item={}, dedupe_key=k).execute() for k in "ab")
    for run_id, lease in ((a, WHEN), (b, ROUND)):
        Run.update(status=Run.RUNNING, lease_until=lease).where(Run.id == run_id).execute()
    end = statements.Update(
        Run, [Run.status, Run.error, Run.finished_at, Run.lease_until],
        [(Run.id, "="), (Run.status, "="), (Run.lease_until, "=")])
    assert end.execute(Run.SUCCEEDED, None, WHEN, None, a, Run.RUNNING, ROUND) == 0  # not its
    assert end.execute(Run.SUCCEEDED, None, WHEN, None, a, Run.RUNNING, WHEN) == 1
    assert Run.update(status=Run.SUCCEEDED, error=None, finished_at=WHEN, lease_until=None).where(
        (Run.id == b) & (Run.status == Run.RUNNING) & (Run.lease_until == ROUND)).execute() == 1
    assert_same(Run, *stored(Run, [a, b]), differ=("dedupe_key",))
    streak = statements.Update(Flow, [Flow.failure_streak],
                               [(Flow.id, "="), (Flow.failure_streak, ">")])
    assert streak.execute(0, flow.id, 0) == 0  # nothing to reset: no write
    Flow.update(failure_streak=3).where(Flow.id == flow.id).execute()
    assert streak.execute(0, flow.id, 0) == 1 and Flow.get_by_id(flow.id).failure_streak == 0


def test_step_saves_and_attempts_read_back_as_peewee_wrote_them(db_host):
    flow = a_flow(db_host)
    run_id = Run.insert(flow=flow, item={}).execute()
    sr = StepRun.create(run=run_id, name="one", position=0, action_key="t.echo")
    twin = StepRun.create(run=run_id, name="two", position=1, action_key="t.echo")
    values = dict(status=StepRun.SUCCEEDED, error=None, attempts=1, inputs={"v": 1},
                  output={"o": [1, 2]}, resume_at=None, started_at=WHEN, finished_at=ROUND)
    save = statements.Update(StepRun, [getattr(StepRun, k) for k in values],
                             [(StepRun.id, "=")])
    assert save.execute(*values.values(), sr.id) == 1
    for key, value in values.items():
        setattr(twin, key, value)
    twin.save()
    assert_same(StepRun, *stored(StepRun, [sr.id, twin.id]), differ=("name", "position"))
    record = statements.Insert(StepAttempt, [
        StepAttempt.step_run, StepAttempt.number, StepAttempt.status, StepAttempt.error,
        StepAttempt.retry_at, StepAttempt.started_at, StepAttempt.duration_ms])
    ours = record.execute(sr.id, 1, "succeeded", None, None, WHEN, 1.5)
    theirs = StepAttempt.create(step_run=twin, number=1, status="succeeded", error=None,
                                retry_at=None, started_at=WHEN, duration_ms=1.5).id
    assert_same(StepAttempt, *stored(StepAttempt, [ours, theirs]), differ=("step_run",))


def test_select_one_reads_the_flow_and_its_state_as_the_joined_peewee_query(db_host):
    flow = a_flow(db_host)
    bare = a_flow(db_host, "g")
    TriggerState.delete().where(TriggerState.flow == bare.id).execute()  # none yet
    TriggerState.insert(flow=flow, cursor={"since": "x"},
                        sealed_subscription="sealed").on_conflict(
        conflict_target=[TriggerState.flow],
        update={TriggerState.cursor: {"since": "x"},
                TriggerState.sealed_subscription: "sealed"}).execute()
    hooked = statements.SelectOne(Flow, [(Flow.webhook_token, "=")],
                                  join=(TriggerState, TriggerState.flow, "state"))
    for row in (flow, bare):
        got = hooked.execute(row.webhook_token)
        want = (Flow.select(Flow, TriggerState)
                .join(TriggerState, JOIN.LEFT_OUTER, on=(TriggerState.flow == Flow.id),
                      attr="state").where(Flow.webhook_token == row.webhook_token).first())
        assert got.__data__ == want.__data__ and not got._dirty
        if row is bare:
            assert got.state is None
        else:
            assert got.state.__data__ == want.state.__data__
            assert got.state.cursor == {"since": "x"}
    assert hooked.execute("no-such-token") is None


def test_the_outbound_session_reads_the_environment_once(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy",
                 "https_proxy", "all_proxy", "no_proxy", "NETRC", "REQUESTS_CA_BUNDLE",
                 "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    plain = new_session()
    assert plain.trust_env is False and plain.verify is True
    monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/curl.pem")
    assert new_session().verify == "/etc/curl.pem"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/requests.pem")  # requests prefers it
    assert new_session().verify == "/etc/requests.pem"
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")  # per-request lookups stay on
    assert new_session().trust_env is True
    monkeypatch.delenv("HTTPS_PROXY")
    (tmp_path / ".netrc").write_text("machine example.com login a password b\n")
    assert new_session().trust_env is True


@pytest.mark.parametrize("returning", [True, False], ids=["returning", "sqlite-before-3.35"])
def test_insert_many_returns_what_it_made_and_fills_defaults(make_host, monkeypatch,
                                                             returning):
    host = make_host(extra_plugins=[FakePlugin()])
    if not returning:
        monkeypatch.setattr(statements.sqlite3, "sqlite_version_info", (3, 34, 1))
    flow = a_flow(host)
    runs = [Run.insert(flow=flow, item={}).execute() for _ in range(3)]
    open_steps = statements.InsertMany(
        StepRun, [StepRun.run, StepRun.name, StepRun.position, StepRun.action_key],
        returning=[StepRun.run, StepRun.id])
    made = dict(open_steps.execute([(run, "one", 0, "t.echo") for run in runs]))
    assert sorted(made) == runs and open_steps.execute([]) == []
    for run, step_id in made.items():
        sr = StepRun.get_by_id(step_id)
        assert (sr.run_id, sr.name, sr.status, sr.attempts) == (run, "one", StepRun.PENDING, 0)


def test_a_batch_claim_without_returning_claims_run_by_run(make_host, monkeypatch):
    from connector import claims, engine

    host = make_host(extra_plugins=[FakePlugin()])
    monkeypatch.setattr(claims.sqlite3, "sqlite_version_info", (3, 34, 1))
    monkeypatch.setattr(statements.sqlite3, "sqlite_version_info", (3, 34, 1))
    flow = a_flow(host)
    ids = [Run.insert(flow=flow, item={}).execute() for _ in range(4)]
    batch = engine.open_batch(host, 3, exclude={ids[0]})
    assert [c.run.id for c in batch] == ids[1:] and all(c.pending for c in batch)
    assert [engine.execute_claimed(host, c) for c in batch] == [Run.SUCCEEDED] * 3


def test_delete_removes_only_the_matching_rows(db_host):
    forget = statements.Delete(SeenItem, [(SeenItem.flow, "="), (SeenItem.key, "=")])
    flow = a_flow(db_host)
    for key in ("a", "b"):
        SeenItem.insert(flow=flow, key=key).execute()
    assert forget.execute(flow.id, "a") == 1 and forget.execute(flow.id, "a") == 0
    assert [s.key for s in SeenItem.select()] == ["b"]


def test_grouped_writes_share_a_transaction_and_each_gets_its_own_outcome(make_host):
    import threading

    from .conftest import wait_for

    host = make_host(extra_plugins=[FakePlugin()])
    flow = a_flow(host)
    SeenItem.insert(flow=flow, key="taken").execute()
    database, commits = store.db.obj, []
    commit = database.commit
    database.commit = lambda *a, **k: (commits.append(1), commit(*a, **k))[1]
    release, outcomes = threading.Event(), {}

    def first():
        release.wait(10)  # holds the group's commit while the others queue
        return Run.insert(flow=flow, item={"n": 0}).execute()

    works = {
        "first": first,
        "duplicate": lambda: SeenItem.insert(flow=flow, key="taken").execute(),
        "run": lambda: Run.insert(flow=flow, item={"n": 1}).execute(),
        "broken": lambda: 1 / 0,
    }

    def call(name):
        try:
            outcomes[name] = store.grouped(works[name])
        except Exception as exc:
            outcomes[name] = exc
        finally:
            store.db.close()

    try:
        threads = [threading.Thread(target=call, args=("first",))]
        threads[0].start()
        assert wait_for(lambda: store._group["busy"], timeout=5)
        for name in ("duplicate", "run", "broken"):
            threads.append(threading.Thread(target=call, args=(name,)))
            threads[-1].start()
        assert wait_for(lambda: len(store._group["queue"]) == 3, timeout=5)
        release.set()
        for t in threads:
            t.join(10)
    finally:
        del database.commit
    assert isinstance(outcomes["duplicate"], IntegrityError)
    assert isinstance(outcomes["broken"], ZeroDivisionError)
    runs = list(Run.select().order_by(Run.id))
    assert [r.item["n"] for r in runs] == [0, 1]
    assert (outcomes["first"], outcomes["run"]) == (runs[0].id, runs[1].id)
    assert len(commits) == 2  # the first alone, then the three that queued behind it


def test_a_where_list_with_an_unknown_comparison_is_refused_when_written(db_host):
    odd = statements.Update(Run, [Run.status], [(Run.id, "LIKE")])
    with pytest.raises(ValueError, match="'LIKE' is not one of =, >, <"):
        odd.execute("x", 1)
