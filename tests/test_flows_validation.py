"""Flow definitions: every bad field reported at once, error flows that must exist, reserved
names, and `flows add` of several files where one names another as its error flow."""
from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from connector import flows
from connector.cli import main
from connector.errors import FlowError, UserError
from connector.store import Flow, Step

OPS = "Must be one of: trim, upper, lower, title, capitalize, replace, split, lines, " \
      "extract, truncate, default."


def shout(name="s", **inputs) -> dict:
    return {"name": name, "action": "formatter.text",
            "inputs": {"operation": "upper", "text": "{{ trigger.text }}", **inputs}}


def catch(name="catch", steps=None, **changes) -> dict:
    """A flow needing no connection: any webhook -> upper-case its text."""
    data = {"name": name, "trigger": {"key": "webhook.catch"}, "steps": steps or [shout()]}
    data.update(changes)
    return data


def test_one_bad_field_keeps_its_single_message(host):
    with pytest.raises(FlowError) as err:
        flows.save(host, catch(steps=[shout(operation="nope")]))
    assert type(err.value) is FlowError
    assert str(err.value) == f"steps[0].inputs.operation: {OPS}"
    assert err.value.field == "steps[0].inputs.operation"


def test_every_bad_field_of_a_definition_is_reported_in_one_error(host):
    data = catch(steps=[shout("a", operation="nope"), shout("b"),
                        shout("c", operation="nope", colour="red"),
                        {"name": "d", "action": "formatter.nosuch", "inputs": {}},
                        shout("a")])
    with pytest.raises(flows.FlowErrors) as err:
        flows.save(host, data)
    places = [e.field for e in err.value.errors]
    assert places == ["steps[0].inputs.operation", "steps[2].inputs.colour",
                      "steps[2].inputs.operation", "steps[3].action", "steps[4].name"]
    message = str(err.value)
    assert message.startswith(f"steps[0].inputs.operation: {OPS}; steps[2].inputs.colour: "
                              "unknown input; formatter.text takes: ")
    assert "steps[4].name: step name 'a' is used twice" in message
    assert Flow.select().count() == 0


def test_structural_errors_are_all_reported_too(host):
    with pytest.raises(flows.FlowErrors) as err:
        flows.validate_definition(host, {"name": "bad name", "trigger": {"key": "webhook.catch"},
                                         "steps": [{"inputs": {}}], "concurrency": -1})
    assert sorted(e.field for e in err.value.errors) == ["concurrency", "name",
                                                         "steps[0].action"]


def test_an_error_flow_must_be_another_existing_flow(host):
    with pytest.raises(FlowError) as err:
        flows.save(host, catch(on_failure={"error_flow": "notify"}))
    assert str(err.value) == "on_failure.error_flow: no flow named 'notify'"
    with pytest.raises(FlowError, match="on_failure.error_flow: a flow cannot be its own"):
        flows.save(host, catch(on_failure={"error_flow": "catch"}))
    flows.save(host, catch("notify"))
    saved = flows.save(host, catch(on_failure={"error_flow": "notify", "pause_after": 2}))
    assert (saved.error_flow, saved.pause_after) == ("notify", 2)
    # reported together with the other bad fields
    with pytest.raises(flows.FlowErrors) as err:
        flows.save(host, catch("other", on_failure={"error_flow": "gone"},
                               steps=[shout(operation="nope")]))
    assert [e.field for e in err.value.errors] == ["on_failure.error_flow",
                                                   "steps[0].inputs.operation"]


def test_the_name_new_is_reserved_for_the_builders_page(host):
    with pytest.raises(FlowError) as err:
        flows.save(host, catch("new"))
    assert str(err.value) == ("name: 'new' is reserved (/ui/flows/new is the page that builds "
                              "a new flow); choose another name")
    assert flows.save(host, catch("new-flow")).name == "new-flow"
    assert flows.save(host, catch("New")).name == "New"  # /ui/flows/New is a flow's page


def test_save_all_checks_every_file_first_and_saves_error_flows_first(host):
    items = [("a.yaml", catch("a", on_failure={"error_flow": "b"})),
             ("b.yaml", catch("b", on_failure={"error_flow": "c"})),
             ("c.yaml", catch("c"))]
    saved = [(label, flow.name) for label, _, flow in flows.save_all(host, items)]
    assert saved == [("c.yaml", "c"), ("b.yaml", "b"), ("a.yaml", "a")]
    assert Flow.get(Flow.name == "a").error_flow == "b"


def test_two_flows_may_name_each_other(host):
    items = [("x.yaml", catch("x", on_failure={"error_flow": "y"})),
             ("y.yaml", catch("y", on_failure={"error_flow": "x"}))]
    assert {flow.name for _, _, flow in flows.save_all(host, items)} == {"x", "y"}


def test_one_bad_file_saves_none(host):
    items = [("good.yaml", catch("good")),
             ("bad.yaml", catch("bad", on_failure={"error_flow": "missing"}))]
    with pytest.raises(UserError) as err:
        list(flows.save_all(host, items))
    assert str(err.value) == "bad.yaml: on_failure.error_flow: no flow named 'missing'"
    assert Flow.select().count() == 0


def test_settings_change_alone_and_leave_the_steps(host):
    flows.save(host, catch("notify"))
    flow = flows.save(host, catch(steps=[shout("one"), shout("two")]))
    before = flow.updated_at
    changed = flows.update_settings(flow, {"on_failure": {"pause_after": 4}})
    assert (changed.pause_after, changed.error_flow, changed.concurrency) == (4, None, 0)
    changed = flows.update_settings(changed, {"description": "d", "concurrency": 2,
                                              "on_failure": {"error_flow": "notify"}})
    assert (changed.description, changed.concurrency, changed.error_flow,
            changed.pause_after) == ("d", 2, "notify", 4)
    assert changed.updated_at >= before
    assert [s.name for s in Step.select().where(Step.flow == flow).order_by(Step.position)] == [
        "one", "two"]
    for target, message in (("nobody", "no flow named 'nobody'"),
                            ("catch", "a flow cannot be its own error flow")):
        with pytest.raises(FlowError) as err:
            flows.update_settings(changed, {"on_failure": {"error_flow": target}})
        assert str(err.value) == f"on_failure.error_flow: {message}"
    assert flows.update_settings(changed, {"on_failure": {"error_flow": ""}}).error_flow is None


def test_flows_add_loads_a_directory_where_the_error_flow_comes_later(
        tmp_path, monkeypatch):
    from connector.crypto import new_key

    monkeypatch.setenv("CONNECTOR_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("CONNECTOR_SECRET_KEY", new_key())
    first = tmp_path / "1-main.yaml"
    later = tmp_path / "2-notify.yaml"
    first.write_text(yaml.safe_dump(catch("main", on_failure={"error_flow": "notify"})))
    later.write_text(yaml.safe_dump(catch("notify")))
    result = CliRunner().invoke(main, ["flows", "add", str(first), str(later)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f"flow notify saved from {later}",
                                          f"flow main saved from {first}"]
    alone = tmp_path / "3-alone.yaml"
    alone.write_text(yaml.safe_dump(catch("alone", on_failure={"error_flow": "nobody"})))
    result = CliRunner().invoke(main, ["flows", "add", str(alone)])
    assert result.exit_code == 1
    assert f"{alone}: on_failure.error_flow: no flow named 'nobody'" in result.output
