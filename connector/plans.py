"""Each flow's step tree, with its steps' connections, read once and kept while unchanged.

Executing a run needs the flow's steps and their connections; reading them for every run
was a third of a run's statements. A flow's steps only change when the flow is saved (which
sets ``Flow.updated_at``), and a connection's settings only when it is saved (which sets
``Connection.updated_at``), so one indexed read of the flow with the newest of its
connections' stamps tells whether the cached tree still holds.
"""
from __future__ import annotations

import threading

from . import statements, store
from .flows import StepNode, step_tree
from .store import Connection, Flow, Step

#: the flow, and the newest ``updated_at`` of its steps' connections (read before every
#: batch of runs, so written once as SQL: see connector.statements)
_FLOW_AND_STAMP = statements.Sql(lambda param, postgres: (
    f"SELECT {statements.columns(Flow, Flow._meta.table_name)}, "
    f'(SELECT MAX("c"."updated_at") FROM "{Step._meta.table_name}" AS "s" '
    f'INNER JOIN "{Connection._meta.table_name}" AS "c" ON ("s"."connection_id" = "c"."id") '
    f'WHERE "s"."flow_id" = "{Flow._meta.table_name}"."id") '
    f'FROM "{Flow._meta.table_name}" WHERE "{Flow._meta.table_name}"."id" = {param}'))
_LIMIT = 1000  # flows kept; past it the cache starts over
_cache: dict[int, tuple[tuple, list[StepNode]]] = {}
_lock = threading.Lock()


def load(flow_id: int) -> tuple[Flow, list[StepNode]]:
    """Return the flow's row (read now) and its step tree (cached while the flow and its
    connections are unchanged); the tree is shared between threads: read it, never change it.
    """
    row = _FLOW_AND_STAMP.execute(flow_id).fetchone()
    if row is None:
        raise Flow.DoesNotExist(f"no flow with id {flow_id}")
    flow = statements.instance(Flow, row[:-1])
    # the database's name too: a test suite makes a new database per test, with the same ids
    key = (store.db.obj.database, flow.updated_at, row[-1])
    cached = _cache.get(flow_id)
    if cached is not None and cached[0] == key:
        return flow, cached[1]
    tree = step_tree(flow)
    _attach_connections(tree)
    with _lock:
        if len(_cache) >= _LIMIT:
            _cache.clear()
        _cache[flow_id] = (key, tree)
    return flow, tree


def _attach_connections(nodes: list[StepNode]) -> None:
    """Load every step's connection in one query, so no step reads it lazily while running."""
    rows = []

    def walk(level):
        for node in level:
            rows.append(node.row)
            walk(node.children)
            for branch in node.branch_steps.values():
                walk(branch)

    walk(nodes)
    ids = {row.connection_id for row in rows if row.connection_id}
    found = {c.id: c for c in Connection.select().where(Connection.id.in_(ids))} if ids else {}
    for row in rows:
        if row.connection_id in found:
            row.connection = found[row.connection_id]


def clear() -> None:
    """Forget every cached tree (tests that edit rows behind the flows' backs use it)."""
    with _lock:
        _cache.clear()
