"""The API key routes (admin scope): list, create, revoke."""
from __future__ import annotations

from .. import api_schemas as s
from .. import auth, store
from . import load_body, load_query, paginate, reply, route


def _key(row) -> dict:
    return {"id": row.id, "name": row.name, "prefix": row.prefix, "scope": row.scope,
            "created_at": row.created_at, "last_used_at": row.last_used_at,
            "revoked_at": row.revoked_at}


@route("/keys", "GET", "admin", "API keys (never the keys themselves)", "keys",
       query=s.PageQuery, response=s.paged(s.KeySchema, "KeyPage"))
def keys_list():
    query = store.ApiKey.select().order_by(store.ApiKey.id)
    return reply(s.paged(s.KeySchema, "KeyPage"), paginate(query, load_query(s.PageQuery),
                                                            _key))


@route("/keys", "POST", "admin", "Make an API key; the answer is the only time it is shown",
       "keys", body=s.KeyCreate, response=s.KeyCreated, status=201)
def keys_create():
    data = load_body(s.KeyCreate)
    row, raw = auth.create_key(data["name"], data["scope"])
    return reply(s.KeyCreated, {**_key(row), "key": raw}, 201)


@route("/keys/<int:key_id>", "DELETE", "admin", "Revoke an API key (at once)", "keys",
       response=s.KeySchema)
def keys_revoke(key_id):
    return reply(s.KeySchema, _key(auth.revoke_key(key_id)))
