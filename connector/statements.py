"""The hot path's statements, written once as SQL and run with new values each time.

Building a statement with peewee's query builder costs 150 to 300 microseconds of Python;
SQLite then runs it in about 20. A webhook and its one-step run send nine statements, so
building them was about a third of the connector's own CPU per event. The statements here
are the same ones, compiled to SQL text once per dialect from the models' own table and
column names, with every value passed through its field's ``db_value`` (JSON encoded,
foreign keys as ids, timestamps as the driver stores them) exactly as peewee would. An
insert fills the fields the caller leaves out from their model defaults, as
``Model.insert`` does. Each one is equivalent to the peewee query named in its docstring;
``tests/test_statements.py`` checks them against those queries on both databases.

Only the statements sent for every webhook or every step belong here; everything else
uses peewee's builder, which is clearer.
"""
from __future__ import annotations

import sqlite3

from peewee import Field, Model

from . import store

_OPS = ("=", ">", "<")  # the comparisons a where list may use, each against one value


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Statement:
    """SQL text for each dialect, made on first use (``store.db`` may be either), and the
    fields whose ``db_value`` converts each parameter."""

    def __init__(self, fields: list[Field] = ()):
        self._sql: dict[str, str] = {}
        self._converters = [f.db_value for f in fields]

    def params(self, values) -> list:
        return [convert(v) for convert, v in zip(self._converters, values, strict=True)]

    def sql(self) -> tuple[str, bool]:
        postgres = not store.is_sqlite()
        key = "pg" if postgres else "sqlite"
        text = self._sql.get(key)
        if text is None:
            text = self._sql[key] = self.compile(store.db.obj.param, postgres)
        return text, postgres

    def compile(self, param: str, postgres: bool) -> str:
        raise NotImplementedError


def _where(conditions, param: str, table: str = "") -> str:
    for _, op in conditions:
        if op not in _OPS:
            raise ValueError(f"where: {op!r} is not one of {', '.join(_OPS)}")
    return " AND ".join(f"{table}{_quote(field.column_name)} {op} {param}"
                        for field, op in conditions)


class Sql(_Statement):
    """Any statement: ``build(param, postgres)`` writes it once per dialect; execute returns
    the cursor (values are passed as they are: convert them with the fields' db_value)."""

    def __init__(self, build):
        super().__init__()
        self.compile = build

    def execute(self, *params):
        return store.db.execute_sql(self.sql()[0], list(params))


class Update(_Statement):
    """``UPDATE <model> SET <fields> WHERE <conditions>``; execute returns the row count.

    ``where`` is a list of ``(field, op)`` with op one of ``=``, ``>``, ``<``; its values
    follow the ``set`` values, in that order.
    """

    def __init__(self, model: type[Model], fields: list[Field], where: list[tuple]):
        super().__init__(list(fields) + [f for f, _ in where])
        self.model, self.fields, self.where = model, fields, where

    def compile(self, param: str, postgres: bool) -> str:
        sets = ", ".join(f"{_quote(f.column_name)} = {param}" for f in self.fields)
        return (f"UPDATE {_quote(self.model._meta.table_name)} SET {sets} "
                f"WHERE {_where(self.where, param)}")

    def execute(self, *values) -> int:
        return store.db.execute_sql(self.sql()[0], self.params(values)).rowcount


class Delete(_Statement):
    """``DELETE FROM <model> WHERE <conditions>``; execute returns the row count."""

    def __init__(self, model: type[Model], where: list[tuple]):
        super().__init__([f for f, _ in where])
        self.model, self.where = model, where

    def compile(self, param: str, postgres: bool) -> str:
        return (f"DELETE FROM {_quote(self.model._meta.table_name)} "
                f"WHERE {_where(self.where, param)}")

    def execute(self, *values) -> int:
        return store.db.execute_sql(self.sql()[0], self.params(values)).rowcount


class Insert(_Statement):
    """``INSERT INTO <model> (...) VALUES (...)``; execute returns the new row's id.

    The model's other fields that have a default get it, computed at each call.
    """

    def __init__(self, model: type[Model], fields: list[Field]):
        given = {f.name for f in fields}
        self.defaults = [f for f in model._meta.sorted_fields
                         if f.name not in given and f.default is not None]
        self.fields = list(fields) + self.defaults
        super().__init__(self.fields)
        self.model = model

    def row(self, values) -> list:
        """The parameters of one row: ``values``, then the defaults taken now."""
        return self.params(list(values) + [f.default() if callable(f.default) else f.default
                                           for f in self.defaults])

    def compile(self, param: str, postgres: bool) -> str:
        columns = ", ".join(_quote(f.column_name) for f in self.fields)
        marks = ", ".join([param] * len(self.fields))
        pk = _quote(self.model._meta.primary_key.column_name)
        returning = f" RETURNING {pk}" if postgres else ""
        return (f"INSERT INTO {_quote(self.model._meta.table_name)} ({columns}) "
                f"VALUES ({marks}){returning}")

    def execute(self, *values) -> int:
        sql, postgres = self.sql()
        cursor = store.db.execute_sql(sql, self.row(values))
        return cursor.fetchone()[0] if postgres else cursor.lastrowid


class InsertMany(Insert):
    """Several rows in one ``INSERT ... VALUES (...), (...) RETURNING <returning>``;
    execute takes a list of value tuples and returns the ``returning`` columns of each new
    row, in no promised order. Needs RETURNING (SQLite 3.35 or later, PostgreSQL)."""

    def __init__(self, model: type[Model], fields: list[Field], returning: list[Field]):
        super().__init__(model, fields)
        self.returning = returning
        self._by_count: dict[tuple, str] = {}

    def execute(self, rows: list[tuple]) -> list[tuple]:
        if not rows:
            return []
        if store.is_sqlite() and sqlite3.sqlite_version_info < (3, 35):  # no RETURNING yet
            made = []
            for values in rows:
                new_id = Insert.execute(self, *values)
                made.append(tuple(new_id if f.primary_key else values[self.fields.index(f)]
                                  for f in self.returning))
            return made
        param = store.db.obj.param
        key = (param, len(rows))
        sql = self._by_count.get(key)
        if sql is None:
            columns = ", ".join(_quote(f.column_name) for f in self.fields)
            marks = "(" + ", ".join([param] * len(self.fields)) + ")"
            back = ", ".join(_quote(f.column_name) for f in self.returning)
            sql = self._by_count[key] = (
                f"INSERT INTO {_quote(self.model._meta.table_name)} ({columns}) "
                f"VALUES {', '.join([marks] * len(rows))} RETURNING {back}")
        params = [param for values in rows for param in self.row(values)]
        return [tuple(row) for row in store.db.execute_sql(sql, params).fetchall()]


def columns(model: type[Model], table: str | None = None) -> str:
    """The model's columns in field order, qualified by ``table`` if given."""
    prefix = f"{_quote(table)}." if table else ""
    return ", ".join(prefix + _quote(f.column_name) for f in model._meta.sorted_fields)


def instance(model: type[Model], row) -> Model:
    """A model instance from a row of :func:`columns`, as peewee's row reader makes it."""
    made = model(__no_default__=True)
    made.__data__ = {f.name: f.python_value(v) for f, v in zip(model._meta.sorted_fields, row)}
    return made


class SelectOne(_Statement):
    """The first row of ``model`` matching ``where``, with an optional LEFT OUTER JOIN.

    ``join`` is ``(other_model, its foreign key to model, attribute)``: the joined row is set
    on that attribute of the result (None when there is none), as peewee's
    ``.join(other, JOIN.LEFT_OUTER, on=..., attr=...)`` does. Returns model instances, or
    None.
    """

    def __init__(self, model: type[Model], where: list[tuple], join: tuple | None = None):
        super().__init__([f for f, _ in where])
        self.model, self.where, self.join = model, where, join
        self.models = [model] + ([join[0]] if join else [])

    def compile(self, param: str, postgres: bool) -> str:
        selected = ", ".join(columns(m, m._meta.table_name) for m in self.models)
        table = _quote(self.model._meta.table_name)
        sql = f"SELECT {selected} FROM {table}"
        if self.join:
            other, fk, _ = self.join
            sql += (f" LEFT OUTER JOIN {_quote(other._meta.table_name)} ON "
                    f"{_quote(other._meta.table_name)}.{_quote(fk.column_name)} = "
                    f"{table}.{_quote(self.model._meta.primary_key.column_name)}")
        return f"{sql} WHERE {_where(self.where, param, table + '.')} LIMIT 1"

    def execute(self, *values):
        row = store.db.execute_sql(self.sql()[0], self.params(values)).fetchone()
        if row is None:
            return None
        found, start = [], 0
        for model in self.models:
            fields = model._meta.sorted_fields
            part = row[start:start + len(fields)]
            start += len(fields)
            if model is not self.model and part[fields.index(model._meta.primary_key)] is None:
                found.append(None)  # no joined row
                continue
            found.append(instance(model, part))
        if self.join:
            setattr(found[0], self.join[2], found[1])
        return found[0]
