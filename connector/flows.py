"""Flow definitions: load a YAML file, validate it against the catalog, save, export, switch.

One model, two views: a flow saved from YAML exports back to the same YAML shape::

    name: new-contact-call
    trigger: {key: contacts_api.new_contact, connection: contacts, poll_interval: 30}
    steps:
      - name: call
        action: samora.trigger_call
        connection: samora
        inputs: {agent_id: "...", to_number: "{{ trigger.phone }}"}
        filter: [{field: trigger.phone, op: exists}]

Every error names the place in the file (``steps[0].inputs.to_number``) and what was expected;
a definition with several bad places raises FlowErrors listing all of them. An error flow
(``on_failure.error_flow``) must be another flow that exists, or one saved in the same
batch (:func:`save_all`, what ``connector flows add`` of several files uses). The name
``new`` is refused: /ui/flows/new is the builder's page for a new flow.
"""
from __future__ import annotations

import datetime as dt
import re
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Collection, Iterable, Iterator

import yaml
from marshmallow import Schema, ValidationError, fields, validate

from . import conditions, store, templates
from .errors import APIError, FlowError, NotFound, OutcomeUnknown, UserError
from .host import Host
from .sdk import PollTrigger, ScheduleTrigger, TriggerContext, WebhookTrigger
from .store import Connection, Flow, Step, TriggerState, utcnow

NAME = validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
                       error="expected letters, digits, '-', '_' or '.', up to 100 characters")
STEP_NAME = validate.Regexp(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
                            error="expected an identifier (letters, digits, '_')")
_STEP_REF = re.compile(r"steps\.([A-Za-z_][A-Za-z0-9_]*)")
#: names the UI's own pages take under /ui/flows/ (the builder's new-flow page)
RESERVED_NAMES = {"new": "/ui/flows/new is the page that builds a new flow"}


def _not_reserved(name: str) -> None:
    if name in RESERVED_NAMES:
        raise ValidationError(f"{name!r} is reserved ({RESERVED_NAMES[name]}); choose "
                              "another name")


class TriggerSpec(Schema):
    key = fields.String(required=True)
    connection = fields.String(load_default=None)
    inputs = fields.Dict(keys=fields.String(), load_default=dict)
    poll_interval = fields.Integer(load_default=None, validate=validate.Range(min=5, max=86400))


class StepSpec(Schema):
    name = fields.String(load_default=None, validate=STEP_NAME)
    action = fields.String(required=True)
    connection = fields.String(load_default=None)
    inputs = fields.Dict(keys=fields.String(), load_default=dict)
    filter = fields.Raw(load_default=None)
    # nested steps: run once per element (a loop step), or per branch (a paths step)
    steps = fields.List(fields.Nested(lambda: StepSpec()), load_default=None)
    branches = fields.List(fields.Nested(lambda: BranchSpec()), load_default=None)


class BranchSpec(Schema):
    name = fields.String(required=True, validate=STEP_NAME)
    conditions = fields.Raw(load_default=None)
    steps = fields.List(fields.Nested(StepSpec), required=True,
                        validate=validate.Length(min=1, error="expected at least one step"))


class OnFailureSpec(Schema):
    pause_after = fields.Integer(load_default=0, validate=validate.Range(min=0, max=1000))
    error_flow = fields.String(load_default=None, validate=NAME)


CONCURRENCY_HELP = ("Runs of this flow executing at once, across all workers; 1 runs them "
                    "strictly one at a time; 0 (the default) sets no limit")


class FlowSpec(Schema):
    name = fields.String(required=True, validate=[NAME, _not_reserved])
    description = fields.String(load_default="")
    on_failure = fields.Nested(OnFailureSpec, load_default=dict)
    concurrency = fields.Integer(load_default=0, validate=validate.Range(min=0, max=1000),
                                 metadata={"description": CONCURRENCY_HELP})
    enabled = fields.Boolean(load_default=None)
    trigger = fields.Nested(TriggerSpec, required=True)
    steps = fields.List(fields.Nested(StepSpec), required=True,
                        validate=validate.Length(min=1, error="expected at least one step"))


def _error_flow_name(value: str) -> None:
    if value != "":  # "" (like null) names no error flow
        NAME(value)


class OnFailureSettings(Schema):
    pause_after = fields.Integer(validate=validate.Range(min=0, max=1000), metadata={
        "description": "Pause the flow after this many failed runs in a row; 0 never"})
    error_flow = fields.String(allow_none=True, validate=_error_flow_name, metadata={
        "description": "The flow told about each failed run; null or \"\" for none"})


class FlowSettings(Schema):
    """A flow's settings, for PATCH: what is left out stays as it is; steps are untouched."""

    description = fields.String()
    concurrency = fields.Integer(validate=validate.Range(min=0, max=1000),
                                 metadata={"description": CONCURRENCY_HELP})
    on_failure = fields.Nested(OnFailureSettings)


def load_file(path: str | Path) -> dict:
    """Read a flow file; raise UserError naming the file and the line for bad YAML."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise UserError(f"{path}: nested too deeply to read") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping with name, trigger and steps")
    return data


class FlowErrors(FlowError):
    """Several places of one definition are invalid; ``errors`` holds one FlowError each.

    The message lists them all (``steps[0].inputs.x: ...; steps[2].inputs.y: ...``); a
    single bad place is raised as its own FlowError, with its message unchanged.
    """

    def __init__(self, errors: list[FlowError]):
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


class _Found:
    """The errors found so far in one definition."""

    def __init__(self):
        self.errors: list[FlowError] = []

    @contextmanager
    def collect(self) -> Iterator[None]:
        """Record a FlowError raised inside the block, and go on after it."""
        try:
            yield
        except FlowError as exc:
            self.errors.extend(getattr(exc, "errors", None) or [exc])

    def check(self) -> None:
        """Raise what was found: one FlowError as it is, several as FlowErrors."""
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise FlowErrors(self.errors)


def _field_errors(err: ValidationError, prefix: str = "") -> FlowError:
    """Return marshmallow's messages as one FlowError per message, naming its place."""
    found: list[FlowError] = []

    def walk(messages, path):
        if isinstance(messages, dict):
            for key, value in messages.items():
                if isinstance(key, int) or key == "":
                    sub = f"{path}[{key!r}]" if key == "" else f"{path}[{key}]"
                else:
                    sub = f"{path}.{key}" if path else str(key)
                walk(value, sub)
        elif isinstance(messages, list) and messages and all(
                isinstance(m, str) for m in messages):
            found.extend(FlowError(m, path or None) for m in messages)
        elif isinstance(messages, list):
            for message in messages:
                walk(message, path)
        else:
            found.append(FlowError(str(messages), path or None))

    walk(err.messages, prefix)
    if not found:
        return FlowError(str(err.messages), prefix or None)
    return found[0] if len(found) == 1 else FlowErrors(found)


def validate_definition(host: Host, data: dict, batch: Collection[str] = ()) -> dict:
    """Return the normalized definition or raise FlowError naming every bad field.

    ``batch`` names flows saved together with this one (``flows add`` of a directory):
    they count as existing when ``on_failure.error_flow`` names one of them.
    """
    try:
        spec = FlowSpec().load(data)
    except ValidationError as err:
        raise _field_errors(err) from None
    found = _Found()
    with found.collect():
        _check_error_flow(spec, batch)
    catalog = host.catalog
    trig = spec["trigger"]
    trigger_cls = None
    with found.collect():
        try:
            trigger_cls = type(catalog.trigger(trig["key"]))
        except NotFound as exc:
            raise FlowError(str(exc), "trigger.key") from None
    if trigger_cls is not None:
        with found.collect():
            try:
                trig["inputs"] = trigger_cls.Inputs().load(trig["inputs"])
            except ValidationError as err:
                raise _field_errors(err, "trigger.inputs") from None
        with found.collect():
            trig["connection"] = _resolve_connection(host, trig["connection"], trigger_cls.app,
                                                     "trigger.connection")
        if trig["poll_interval"] is None and issubclass(trigger_cls, PollTrigger):
            trig["poll_interval"] = trigger_cls.default_interval
    _validate_steps(host, spec["steps"], "steps", seen=[], visible=[], found=found)
    found.check()
    return spec


def _check_error_flow(spec: dict, batch: Collection[str]) -> None:
    """Raise FlowError unless the error flow is another flow, saved or in ``batch``."""
    target = spec["on_failure"].get("error_flow")
    if not target:
        return
    if target == spec["name"]:
        raise FlowError("a flow cannot be its own error flow", "on_failure.error_flow")
    if target not in batch and Flow.get_or_none(Flow.name == target) is None:
        raise FlowError(f"no flow named {target!r}", "on_failure.error_flow")


def _validate_steps(host: Host, steps: list[dict], where: str, seen: list[str],
                    visible: list[str], found: _Found) -> None:
    """Check a list of steps (recursively), recording each error in ``found``; ``seen``
    holds every name used in the flow, ``visible`` the names whose outputs a template here
    may use (earlier, not in a loop)."""
    for i, step in enumerate(steps):
        here = f"{where}[{i}]"
        action = None
        with found.collect():
            try:
                action = host.catalog.action(step["action"])
            except NotFound as exc:
                raise FlowError(str(exc), f"{here}.action") from None
        name = step["name"] or _default_name(step["action"], seen)
        if name in seen:
            found.errors.append(FlowError(f"step name {name!r} is used twice", f"{here}.name"))
        step["name"] = name
        if action is None:  # nothing more can be checked against the catalog
            seen.append(name)
            visible.append(name)
            continue
        _check_inputs(type(action), step["inputs"], f"{here}.inputs", found)
        refs = _STEP_REF.findall(str(step["inputs"]) + str(step["filter"] or ""))
        for ref in dict.fromkeys(refs):
            if ref not in visible:
                hint = (f"{ref!r} runs inside a loop; outside it use steps.<loop>.iterations"
                        if ref in seen else f"{ref!r}, which is not an earlier step")
                found.errors.append(FlowError(f"refers to step {hint}", f"{here}.inputs"))
        if step["filter"] is not None:
            with found.collect():
                conditions.validate(step["filter"], f"{here}.filter")
        with found.collect():
            if action.any_connection:
                if step["connection"] is not None and Connection.get_or_none(
                        Connection.name == step["connection"]) is None:
                    raise FlowError(f"no connection named {step['connection']!r}",
                                    f"{here}.connection")
            else:
                step["connection"] = (_resolve_connection(host, step["connection"], action.app,
                                                          f"{here}.connection")
                                      if action.needs_connection else None)
        seen.append(name)
        _validate_nesting(host, action, step, here, seen, visible, found)
        visible.append(name)


def _validate_nesting(host, action, step, here, seen, visible, found: _Found) -> None:
    control = getattr(action, "control", None)
    if control == "loop":
        if not step["steps"] or step["branches"] is not None:
            found.errors.append(FlowError(
                f"{action.key} runs the steps nested under it: give 'steps' (a list of "
                "steps), not 'branches'", f"{here}.steps"))
            return
        # inside: the outer names, the loop's own output, and earlier siblings in the loop
        _validate_steps(host, step["steps"], f"{here}.steps", seen, [*visible, step["name"]],
                        found)
    elif control == "paths":
        if not step["branches"] or step["steps"] is not None:
            found.errors.append(FlowError(
                f"{action.key} branches: give 'branches' (each with a name, conditions and "
                "steps), not 'steps'", f"{here}.branches"))
            return
        names, after = set(), []
        for j, branch in enumerate(step["branches"]):
            bwhere = f"{here}.branches[{j}]"
            if branch["name"] in names:
                found.errors.append(FlowError(f"branch name {branch['name']!r} is used twice",
                                              f"{bwhere}.name"))
            names.add(branch["name"])
            if branch["conditions"] is not None:
                with found.collect():
                    conditions.validate(branch["conditions"], f"{bwhere}.conditions")
            inner = [*visible, step["name"]]
            _validate_steps(host, branch["steps"], f"{bwhere}.steps", seen, inner, found)
            after.extend(n for n in inner if n not in visible)
        visible.extend(after)  # a branch's outputs are usable after the paths step
    elif step["steps"] is not None or step["branches"] is not None:
        found.errors.append(FlowError(
            f"{action.key} takes no nested steps or branches",
            f"{here}.{'steps' if step['steps'] is not None else 'branches'}"))


def _default_name(action_key: str, taken: list[str]) -> str:
    base = re.sub(r"\W", "_", action_key.rsplit(".", 1)[-1]) or "step"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    return name


def _check_inputs(action_cls, inputs: dict, where: str, found: _Found) -> None:
    """Record in ``found`` every input that is unknown, missing, or wrong as written."""
    schema = action_cls.Inputs()
    known = {fld.data_key or name: fld for name, fld in schema.fields.items()}
    before = len(found.errors)
    for key in inputs:
        if key not in known:
            found.errors.append(FlowError(f"unknown input; {action_cls.key} takes: "
                                          f"{', '.join(known)}", f"{where}.{key}"))
    for key, fld in known.items():
        if fld.required and key not in inputs:
            found.errors.append(FlowError(f"required input of {action_cls.key} is missing",
                                          f"{where}.{key}"))
    complete = len(found.errors) == before
    for key, value in inputs.items():
        with found.collect():
            templates.check(value, f"{where}.{key}")
    # Literal values can be checked now, field by field; schema-wide rules wait for the run,
    # when templates have been rendered, unless nothing is a template (and nothing is
    # unknown or missing, already said): then check it all.
    if complete and not any(_has_template(v) for v in inputs.values()):
        try:
            schema.load(inputs)
        except ValidationError as err:
            with found.collect():
                raise _field_errors(err, where) from None
        return
    for key, value in inputs.items():
        if _has_template(value) or key not in known:
            continue
        try:
            known[key].deserialize(value, key, inputs)
        except ValidationError as err:
            message = err.messages[0] if isinstance(err.messages, list) else str(err.messages)
            found.errors.append(FlowError(str(message), f"{where}.{key}"))


def _has_template(value) -> bool:
    return "{{" in str(value) or "{%" in str(value)


def _resolve_connection(host: Host, name: str | None, app_key: str, where: str) -> str | None:
    app = host.catalog.app(app_key)
    if not app.Credentials().fields:
        return name
    if name is None:
        candidates = [c.name for c in Connection.select().where(Connection.app == app_key)]
        if len(candidates) == 1:
            return candidates[0]
        hint = f"one of {', '.join(candidates)}" if candidates else (
            f"add one with: connector connections add NAME --app {app_key}")
        raise FlowError(f"expected the name of a {app_key} connection ({hint})", where)
    conn = Connection.get_or_none(Connection.name == name)
    if conn is None:
        raise FlowError(f"no connection named {name!r} "
                        f"(add one with: connector connections add {name} --app {app_key})",
                        where)
    if conn.app != app_key:
        raise FlowError(f"connection {name!r} is for app {conn.app}, expected {app_key}", where)
    return name


def save(host: Host, data: dict, batch: Collection[str] = ()) -> Flow:
    """Validate and store a definition, replacing the steps of a flow of the same name.

    ``batch``: see :func:`validate_definition`.
    """
    spec = validate_definition(host, data, batch)
    trig = spec["trigger"]
    conn = lambda name: host.connection(name) if name else None  # noqa: E731
    with store.write_tx():
        flow = Flow.get_or_none(Flow.name == spec["name"])
        if flow is None:
            flow = Flow(name=spec["name"], webhook_token=secrets.token_urlsafe(24))
        elif flow.enabled and (flow.trigger_key != trig["key"] or
                               flow.trigger_inputs != trig["inputs"]):
            raise FlowError("switch the flow off before changing its trigger", "trigger")
        flow.description = spec["description"]
        flow.pause_after = spec["on_failure"].get("pause_after", 0)
        flow.error_flow = spec["on_failure"].get("error_flow")
        flow.concurrency = spec["concurrency"] or 0
        flow.trigger_key = trig["key"]
        flow.trigger_connection = conn(trig["connection"])
        flow.trigger_inputs = trig["inputs"]
        flow.poll_interval = trig["poll_interval"] or 60
        flow.updated_at = utcnow()
        flow.save()
        Step.delete().where(Step.flow == flow).execute()
        _save_steps(flow, spec["steps"], conn)
        TriggerState.insert(flow=flow).on_conflict_ignore().execute()
    return flow


def update_settings(flow: Flow, changes: dict) -> Flow:
    """Change only the settings in ``changes`` (loaded by FlowSettings); return the flow.

    Steps, trigger and every other column stay as they are, so a concurrent edit of the
    steps (or the engine pausing the flow) is never overwritten.
    """
    on_failure = changes.get("on_failure") or {}
    columns = {}
    if "description" in changes:
        columns[Flow.description] = changes["description"]
    if "concurrency" in changes:
        columns[Flow.concurrency] = changes["concurrency"]
    if "pause_after" in on_failure:
        columns[Flow.pause_after] = on_failure["pause_after"]
    if "error_flow" in on_failure:
        target = on_failure["error_flow"] or None
        _check_error_flow({"name": flow.name, "on_failure": {"error_flow": target}}, ())
        columns[Flow.error_flow] = target
    if columns:
        with store.write_tx():
            columns[Flow.updated_at] = utcnow()
            Flow.update(columns).where(Flow.id == flow.id).execute()
    return Flow.get_by_id(flow.id)


def save_all(host: Host, definitions: Iterable[tuple[str, dict]]
             ) -> Iterator[tuple[str, dict, Flow]]:
    """Save several (label, definition) pairs; yield (label, definition, flow) as saved.

    Every definition is checked before any is saved, so one bad file saves nothing; an
    error flow may be one defined in the same batch, and is saved before the flows naming
    it. A bad definition raises UserError prefixed with its label (the file's path).
    """
    items = list(definitions)
    names = {data.get("name") for _, data in items if isinstance(data.get("name"), str)}
    for label, data in items:
        try:
            validate_definition(host, data, names)
        except UserError as exc:
            raise UserError(f"{label}: {exc}") from None
    by_name = {data.get("name"): n for n, (_, data) in enumerate(items)}
    order: list[int] = []

    def visit(n: int, path: tuple[int, ...] = ()) -> None:
        if n in order or n in path:
            return  # saved already, or a cycle (A tells B, B tells A): both names known
        target = (items[n][1].get("on_failure") or {}).get("error_flow")
        if target in by_name:
            visit(by_name[target], (*path, n))
        order.append(n)

    for n in range(len(items)):
        visit(n)
    for n in order:
        label, data = items[n]
        try:
            flow = save(host, data, names)
        except UserError as exc:
            raise UserError(f"{label}: {exc}") from None
        yield label, data, flow


def _save_steps(flow: Flow, steps: list[dict], conn, parent: Step | None = None,
                branch: str | None = None) -> None:
    for position, step in enumerate(steps):
        branches = ([{"name": b["name"], "conditions": b["conditions"]}
                     for b in step["branches"]] if step["branches"] else None)
        row = Step.create(flow=flow, position=position, name=step["name"],
                          action_key=step["action"], connection=conn(step["connection"]),
                          inputs=step["inputs"], filter=step["filter"], parent=parent,
                          branch=branch, branches=branches)
        if step["steps"]:
            _save_steps(flow, step["steps"], conn, row)
        for b in step["branches"] or []:
            _save_steps(flow, b["steps"], conn, row, b["name"])


def step_tree(flow: Flow) -> list["StepNode"]:
    """Return the flow's steps as a tree (loops hold ``children``, paths ``branches``)."""
    rows = list(Step.select().where(Step.flow == flow).order_by(Step.position))
    nodes = {row.id: StepNode(row) for row in rows}
    top = []
    for row in rows:
        node = nodes[row.id]
        if row.parent_id is None:
            top.append(node)
        elif row.branch is None:
            nodes[row.parent_id].children.append(node)
        else:
            nodes[row.parent_id].branch_steps.setdefault(row.branch, []).append(node)
    return top


class StepNode:
    """One step with what is nested under it."""

    def __init__(self, row: Step):
        self.row = row
        self.name = row.name
        self.children: list[StepNode] = []
        self.branch_steps: dict[str, list[StepNode]] = {}

    @property
    def branches(self) -> list[dict]:
        """Each branch's name, conditions and steps, in the order written."""
        return [{**b, "steps": self.branch_steps.get(b["name"], [])}
                for b in (self.row.branches or [])]


def export(flow: Flow) -> dict:
    """Return the flow as the YAML-shaped definition that :func:`save` accepts."""
    trigger = {"key": flow.trigger_key}
    if flow.trigger_connection_id:
        trigger["connection"] = flow.trigger_connection.name
    inputs = {k: v for k, v in (flow.trigger_inputs or {}).items() if v is not None}
    if inputs:
        trigger["inputs"] = inputs
    trigger["poll_interval"] = flow.poll_interval
    steps = _export_steps(step_tree(flow))
    data = {"name": flow.name}
    if flow.description:
        data["description"] = flow.description
    on_failure = {k: v for k, v in (("pause_after", flow.pause_after),
                                    ("error_flow", flow.error_flow)) if v}
    if on_failure:
        data["on_failure"] = on_failure
    if flow.concurrency:
        data["concurrency"] = flow.concurrency
    data.update(trigger=trigger, steps=steps)
    return data


def resume(flow: Flow) -> Flow:
    """Lift a pause: the runs it held are executed, the failure streak starts again."""
    Flow.update(paused_reason=None, failure_streak=0).where(Flow.id == flow.id).execute()
    return Flow.get_by_id(flow.id)


def _export_steps(nodes: list[StepNode]) -> list[dict]:
    out = []
    for node in nodes:
        step = node.row
        entry = {"name": step.name, "action": step.action_key}
        if step.connection_id:
            entry["connection"] = step.connection.name
        entry["inputs"] = step.inputs
        if step.filter is not None:
            entry["filter"] = step.filter
        if node.children:
            entry["steps"] = _export_steps(node.children)
        if step.branches:
            entry["branches"] = []
            for branch in node.branches:
                item = {"name": branch["name"]}
                if branch["conditions"] is not None:
                    item["conditions"] = branch["conditions"]
                item["steps"] = _export_steps(branch["steps"])
                entry["branches"].append(item)
        out.append(entry)
    return out


def get(name: str) -> Flow:
    flow = Flow.get_or_none(Flow.name == name)
    if flow is None:
        known = ", ".join(f.name for f in Flow.select().order_by(Flow.name))
        raise NotFound(f"no flow named {name!r}; known: {known or 'none'}")
    return flow


def webhook_url(host: Host, flow: Flow) -> str:
    return f"{host.webhook_base()}/hooks/{flow.webhook_token}"


def trigger_context(host: Host, flow: Flow, state: TriggerState | None = None) -> TriggerContext:
    conn = flow.trigger_connection if flow.trigger_connection_id else None
    return TriggerContext(flow_name=flow.name, inputs=dict(flow.trigger_inputs or {}),
                          client=host.client(conn),
                          state=dict((state.cursor if state else None) or {}))


def enable(host: Host, flow: Flow, backfill: bool = False) -> Flow:
    """Switch a flow on: subscribe its webhook, or prime its poll so old items never fire.

    With ``backfill`` a poll trigger skips priming and fires for what it finds now.
    """
    if flow.enabled:
        return flow
    trigger = host.catalog.trigger(flow.trigger_key)
    state, _ = TriggerState.get_or_create(flow=flow)
    ctx = trigger_context(host, flow, state)
    try:
        if isinstance(trigger, WebhookTrigger):
            stale: list[str] = []
            if trigger.manual_setup:
                if state.sealed_subscription:
                    ctx.previous_subscription = host.box.open(state.sealed_subscription)
            elif _unsubscribe(host, flow, state, stale):  # a registration left from before
                raise UserError(stale[0] + "; switch on again once it is reachable")
            subscription = trigger.subscribe(ctx, webhook_url(host, flow)) or {}
            state.sealed_subscription = host.box.seal(subscription)
        elif isinstance(trigger, PollTrigger) and not backfill:
            from .intake import prime
            prime(host, flow, trigger, ctx, state)
            state.cursor = ctx.state  # prime saved it; the save below must not undo that
        elif isinstance(trigger, ScheduleTrigger):
            # Count from now: firings missed while the flow was off are not backfilled.
            state.cursor = {**(state.cursor or {}), "last_fire": dt.datetime.now(
                dt.timezone.utc).isoformat()}
    except (APIError, OutcomeUnknown) as exc:  # OutcomeUnknown: a lost answer to subscribe
        raise UserError(f"flow {flow.name}: cannot switch on: {exc}") from None
    finally:
        if ctx.client:
            ctx.client.close()
    with store.write_tx():
        state.primed = True
        state.updated_at = utcnow()
        state.save()
        flow.enabled, flow.enabled_at, flow.updated_at = True, utcnow(), utcnow()
        flow.save()
    return flow


def disable(host: Host, flow: Flow) -> list[str]:
    """Switch a flow off, removing its webhook subscription; return warnings, if any.

    When the service refuses to delete the webhook, the subscription is kept so that a
    later `flows disable` (or the next enable) can try again; a manual-setup webhook keeps
    its subscription (the secret the user pasted into the service) for the next switch-on.
    """
    warnings: list[str] = []
    state, _ = TriggerState.get_or_create(flow=flow)
    keep = _unsubscribe(host, flow, state, warnings)
    with store.write_tx():
        state.sealed_subscription = state.sealed_subscription if keep else None
        state.updated_at = utcnow()
        state.save()
        flow.enabled, flow.updated_at = False, utcnow()
        flow.save()
    return warnings


def _unsubscribe(host: Host, flow: Flow, state: TriggerState, warnings: list[str]) -> bool:
    """Remove a stored webhook subscription; return True if the service kept it."""
    trigger = host.catalog.trigger(flow.trigger_key)
    if not (isinstance(trigger, WebhookTrigger) and state.sealed_subscription):
        return False
    if trigger.manual_setup:
        return True  # nothing to remove at the service; keep the secret the user pasted
    ctx = trigger_context(host, flow, state)
    try:
        trigger.unsubscribe(ctx, host.box.open(state.sealed_subscription))
        return False
    except APIError as exc:
        warnings.append(f"flow {flow.name}: the service kept the webhook: {exc}")
        return True
    finally:
        if ctx.client:
            ctx.client.close()
