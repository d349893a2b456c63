"""Each flow's step tree, with its steps' connections, read once and kept while unchanged.

Executing a run needs the flow's steps and their connections; reading them for every run
was a third of a run's statements. A flow's steps only change when the flow is saved (which
sets ``Flow.updated_at``), and a connection's settings only when it is saved (which sets
``Connection.updated_at``), so one indexed read of the flow with the newest of its
connections' stamps tells whether the cached tree still holds.
"""
from __future__ import annotations

import threading

from peewee import fn

from . import store
from .flows import StepNode, step_tree
from .store import Connection, Flow, Step

_LIMIT = 1000  # flows kept; past it the cache starts over
_cache: dict[int, tuple[tuple, list[StepNode]]] = {}
_lock = threading.Lock()


def load(flow_id: int) -> tuple[Flow, list[StepNode]]:
    """Return the flow's row (read now) and its step tree (cached while the flow and its
    connections are unchanged); the tree is shared between threads: read it, never change it.
    """
    stamp = (Step.select(fn.MAX(Connection.updated_at))
             .join(Connection, on=(Step.connection == Connection.id))
             .where(Step.flow == Flow.id))
    flow = Flow.select(Flow, stamp.alias("connections_stamp")).where(Flow.id == flow_id).get()
    # the database's name too: a test suite makes a new database per test, with the same ids
    key = (store.db.obj.database, flow.updated_at, flow.connections_stamp)
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
