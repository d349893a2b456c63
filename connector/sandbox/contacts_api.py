"""Contacts API emulator (seed 004): the org-scoped CRM under ``/api/v1``.

Paths as documented: contacts (list, create, import, search, views, get, update, delete,
opportunities), tags (list, create, delete; add to / remove from a contact), custom fields
(list, create, update, delete; a contact's value), custom values (list, put, delete).

Decisions where the document is vague (kept in step with plugins/contacts_api.py):

- Auth: ``Authorization: Bearer <key>`` (401 when missing or unknown). ``X-Org-Id`` on every
  request (400 MISSING_ORG_ID when absent; 403 when the key is not a member of that org).
  Each key belongs to one member; a member is either unrestricted or restricted to "only
  assigned data": such a member sees, searches, imports into, changes and deletes only the
  contacts whose ``assigned_to`` is their member id (any other contact is a 404), its
  creations are assigned to itself, and it may not assign a contact to anyone else (403).
  Tags, custom fields, views and custom values are org-shared settings, open to every member.
- Envelope ``{"error": {"code", "message", "details"?}}``; 422 for validation (FastAPI-like),
  400 for malformed JSON, 201 on create, 204 on delete, 404 ``*_NOT_FOUND``, 409 on a
  duplicate tag name or custom-field key. Unknown body fields are ignored.
- Contacts: ``id``, name, email, phone (E.164), company, source, notes, tags (names, exact
  and case-sensitive), dnc, custom (an object), assigned_to (a member id of the org or
  null), created_at, updated_at (ISO 8601 with microseconds, strictly increasing across the
  sandbox). At least one of name, email or phone. A write that changes nothing (adding a
  tag the contact has) leaves updated_at alone. PATCH merges ``custom`` key by key (null
  removes a key). Custom keys with a definition are type-checked; others are stored as given
  (a JSONB column). Tags used on a contact join the org's tag list.
- Lists (``GET /contacts``): ``limit`` 1..200 (default 50), ``offset``, ``q`` (case-
  insensitive substring of name, email, phone, company), ``tag`` (exact), and ``sort``
  (``-created_at`` default, ``created_at``, ``-updated_at``, ``updated_at``); answer
  ``{"items", "total", "limit", "offset"}``, ties broken by id.
- Import (``POST /contacts/import``): ``{"contacts": [...] (1..500), "match_by": "email" |
  "phone" | "none" (default email), "on_match": "update" | "skip" (default update)}``. Rows
  are independent: a bad row is reported and the rest imported. A row matching a visible
  contact (email case-insensitive, phone exact; earlier rows of the same request included)
  updates it (fields overwrite, tags added, custom merged) or is skipped. Answer 200
  ``{"total", "created", "updated", "skipped", "errors": [{"index", "field", "message"}]}``.
- Search (``POST /contacts/search``): ``{"query": {"groups": [{"conditions": [{"field",
  "op", "value"}]}]}, "q", "limit", "offset"}``; OR across groups, AND within a group; no
  groups means every contact; at most 20 groups of 1..20 conditions. Fields: name, email,
  phone, company, source, notes (ops eq, neq, contains, not_contains, starts_with,
  ends_with, in, not_in, exists, not_exists; text compares case-insensitively), tags
  (contains, not_contains, in = has any, not_in = has none, exists = has a tag, not_exists),
  dnc (eq, neq with a boolean), created_at (gt, gte, lt, lte with an ISO date or datetime;
  a date is midnight UTC), custom.<key> (every operator; numbers compare as numbers, text
  case-insensitively, a list value "contains"/"eq" an item). in/not_in take a list of 1..100
  values; exists/not_exists ignore ``value``. The negative ops (neq, not_contains, not_in)
  also match a contact without the value. ``q`` ANDs the free-text match. An invalid filter
  is 422 INVALID_FILTER naming the place (``details.field`` like
  ``query.groups[0].conditions[1].op``, plus ``group`` and ``condition`` indexes).
- Views: ``GET /contacts/views`` and ``PUT /contacts/views`` both carry ``{"views": [{"id",
  "name", "query", "q", "created_at", "updated_at"}]}``; PUT replaces the whole set (a view
  left out is deleted; a view without ``id`` is created; an unknown ``id`` is 422), names
  unique case-insensitively, at most 100 views, each query validated as in search.
- Opportunities: ``GET /contacts/{id}/opportunities`` answers ``{"items", "total"}``,
  newest first; deleting a contact deletes its opportunities. Tests add them through the
  admin route.
- Tags: ``GET /tags`` ``{"items": [{"id", "name", "color", "contact_count",
  "created_at"}]}``; ``POST /tags {"name", "color"?}`` (201, 409 TAG_EXISTS);
  ``DELETE /tags/{tag_id}`` removes the tag from every contact too.
  ``POST /contacts/{id}/tags {"tags": [1..50 names]}`` answers the contact;
  ``DELETE /contacts/{id}/tags/{name}`` (URL-encoded name, may contain "/") answers 204,
  also when the contact does not carry the tag.
- Custom fields: ``{"id", "key", "name", "type", "options", "folder", "created_at",
  "updated_at"}``; type text, number, date (YYYY-MM-DD), boolean, select, multi_select
  (options required for the two selects); key ``[a-z][a-z0-9_]*`` (from the name when left
  out), immutable like type (422); 409 CUSTOM_FIELD_EXISTS. Deleting a field removes its
  values from contacts. ``PUT /contacts/{id}/custom/{key} {"value"}`` needs a defined field
  (404 CUSTOM_FIELD_NOT_FOUND), checks the value's type, null clears; answers the contact.
- Custom values: ``GET /custom-values`` ``{"items": [{"key", "value", "updated_at"}]}``;
  ``PUT /custom-values/{key} {"value": "text"}`` creates or replaces (200); key
  ``[A-Za-z_][A-Za-z0-9_]*`` up to 64, value text up to 10,000 characters; ``DELETE`` 204, 404
  CUSTOM_VALUE_NOT_FOUND.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import re
import threading
import uuid
from datetime import date, datetime, timedelta, timezone

from flask import Flask, g, request

from .common import E164, ApiError, RateLimiter, create_service_app, json_body, raw_body

DEFAULT_KEY = "ca_test_key"
DEFAULT_ORG = "org_demo"
OTHER_KEY = "ca_other_key"
OTHER_ORG = "org_other"
ASSIGNED_KEY = "ca_assigned_key"
OWNER, AGENT, OTHER_MEMBER = "usr_owner", "usr_agent", "usr_other"
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_IMPORT = 500
MAX_GROUPS = MAX_CONDITIONS = 20
MAX_IN_VALUES = 100
MAX_VIEWS = 100
MAX_TAGS_PER_REQUEST = 50
MAX_VALUE_CHARS = 10_000
STRING_FIELDS = ("name", "email", "phone", "company", "source", "notes")
CONTACT_FIELDS = (*STRING_FIELDS, "tags", "dnc", "custom", "assigned_to")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
FIELD_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
VALUE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
CUSTOM_PATH = re.compile(r"^custom\.([A-Za-z0-9_]{1,64})$")
FIELD_TYPES = ("text", "number", "date", "boolean", "select", "multi_select")
SORTS = {"-created_at": ("created_at", True), "created_at": ("created_at", False),
         "-updated_at": ("updated_at", True), "updated_at": ("updated_at", False)}

TEXT_OPS = ("eq", "neq", "contains", "not_contains", "starts_with", "ends_with", "in",
            "not_in", "exists", "not_exists")
ALL_OPS = (*TEXT_OPS, "gt", "gte", "lt", "lte")
OPS_BY_FIELD = {**{f: TEXT_OPS for f in STRING_FIELDS},
                "tags": ("contains", "not_contains", "in", "not_in", "exists", "not_exists"),
                "dnc": ("eq", "neq"), "created_at": ("gt", "gte", "lt", "lte")}
NEGATED = {"neq": "eq", "not_contains": "contains", "not_in": "in"}


def _invalid(field: str | None, message: str) -> ApiError:
    return ApiError(422, "VALIDATION_ERROR", message, {"field": field} if field else None)


def _not_found(code: str, message: str, field: str) -> ApiError:
    return ApiError(404, code, message, {"field": field})


def clean_fields(body: dict) -> dict:
    """Validate the contact fields present in ``body``; return them normalised."""
    out: dict = {}
    for field in STRING_FIELDS:
        if field in body:
            value = body[field]
            if value is not None and not isinstance(value, str):
                raise _invalid(field, f"Field {field} must be a string.")
            out[field] = value.strip() if isinstance(value, str) and value.strip() else None
    if out.get("phone") is not None and not E164.match(out["phone"]):
        raise _invalid("phone", "Field phone must be in E.164 format: + followed by 10 to 15 "
                                "digits, e.g. +15551234567.")
    if out.get("email") is not None and not EMAIL.match(out["email"]):
        raise _invalid("email", "Field email must be an email address.")
    if "tags" in body:
        out["tags"] = clean_tags(body["tags"], "tags")
    if "dnc" in body:
        if not isinstance(body["dnc"], bool):
            raise _invalid("dnc", "Field dnc must be true or false.")
        out["dnc"] = body["dnc"]
    if "custom" in body:
        if not isinstance(body["custom"], dict):
            raise _invalid("custom", "Field custom must be an object.")
        out["custom"] = dict(body["custom"])
    if "assigned_to" in body:
        value = body["assigned_to"]
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise _invalid("assigned_to", "Field assigned_to must be a member id or null.")
        out["assigned_to"] = value.strip() if value else None
    return out


def clean_tags(tags, field: str, limit: int | None = None) -> list[str]:
    """Return the tag names in ``tags`` trimmed and deduplicated, or raise 422."""
    if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags):
        raise _invalid(field, f"Field {field} must be a list of non-empty strings.")
    if limit is not None and not 1 <= len(tags) <= limit:
        raise _invalid(field, f"Field {field} must hold 1 to {limit} tag names.")
    if any(len(t.strip()) > 100 for t in tags):
        raise _invalid(field, "A tag name has at most 100 characters.")
    return list(dict.fromkeys(t.strip() for t in tags))


def _require_identity(contact: dict) -> None:
    if not any(contact.get(f) for f in ("name", "email", "phone")):
        raise ApiError(422, "VALIDATION_ERROR",
                       "A contact needs at least one of name, email or phone.",
                       {"field": "name", "fields": ["name", "email", "phone"]})


def _int_param(name: str, default: int, low: int, high: int | None) -> int:
    return _int_value(name, request.args.get(name), default, low, high)


def _int_value(name: str, raw, default: int, low: int, high: int | None) -> int:
    if raw is None or raw == "":
        return default
    if isinstance(raw, bool):
        raise _invalid(name, f"{name} must be an integer.")
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise _invalid(name, f"{name} must be an integer.") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise _invalid(name, f"{name} must be {bound}.")
    return value


# The OR-of-AND filter model -------------------------------------------------------------


def _filter_error(where: str, message: str, group: int | None = None,
                  condition: int | None = None) -> ApiError:
    details: dict = {"field": where}
    if group is not None:
        details["group"] = group
    if condition is not None:
        details["condition"] = condition
    return ApiError(422, "INVALID_FILTER", f"Invalid filter at {where}: {message}", details)


def compile_query(query, where: str = "query") -> list[list[tuple]]:
    """Validate a ``{"groups": [{"conditions": [...]}]}`` query; return its groups."""
    if query is None:
        return []
    if not isinstance(query, dict):
        raise _filter_error(where, "must be an object with a groups list.")
    groups = query.get("groups")
    if groups is None:
        return []
    if not isinstance(groups, list):
        raise _filter_error(f"{where}.groups", "must be a list of groups.")
    if len(groups) > MAX_GROUPS:
        raise _filter_error(f"{where}.groups", f"at most {MAX_GROUPS} groups are allowed.")
    compiled = []
    for gi, group in enumerate(groups):
        gwhere = f"{where}.groups[{gi}]"
        if not isinstance(group, dict) or not isinstance(group.get("conditions"), list):
            raise _filter_error(gwhere, "must be an object with a conditions list.", gi)
        conditions = group["conditions"]
        if not conditions:
            raise _filter_error(f"{gwhere}.conditions", "a group needs at least one "
                                "condition; remove the empty group.", gi)
        if len(conditions) > MAX_CONDITIONS:
            raise _filter_error(f"{gwhere}.conditions",
                                f"at most {MAX_CONDITIONS} conditions per group.", gi)
        compiled.append([_compile_condition(c, f"{gwhere}.conditions[{ci}]", gi, ci)
                         for ci, c in enumerate(conditions)])
    return compiled


def _compile_condition(cond, where: str, gi: int, ci: int) -> tuple:
    def fail(part: str, message: str) -> ApiError:
        return _filter_error(f"{where}.{part}" if part else where, message, gi, ci)

    if not isinstance(cond, dict):
        raise fail("", "must be an object with field, op and value.")
    field, op, value = cond.get("field"), cond.get("op"), cond.get("value")
    if not isinstance(field, str) or not field:
        raise fail("field", "field is required.")
    custom = CUSTOM_PATH.match(field)
    if field not in OPS_BY_FIELD and not custom:
        raise fail("field", f"unknown field {field!r}; use one of "
                            f"{', '.join(OPS_BY_FIELD)} or custom.<key>.")
    allowed = ALL_OPS if custom else OPS_BY_FIELD[field]
    if not isinstance(op, str) or op not in ALL_OPS:
        raise fail("op", f"unknown operator {op!r}; use one of {', '.join(ALL_OPS)}.")
    if op not in allowed:
        raise fail("op", f"operator {op} does not apply to field {field}; use one of "
                         f"{', '.join(allowed)}.")
    if op in ("exists", "not_exists"):
        return field, op, None
    kind = "custom" if custom else ("text" if field in STRING_FIELDS else field)
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_IN_VALUES:
            raise fail("value", f"operator {op} takes a list of 1 to {MAX_IN_VALUES} values.")
        for item in value:
            _check_value(kind, "eq", item, lambda m: fail("value", m))
        return field, op, list(value)
    return field, op, _check_value(kind, op, value, lambda m: fail("value", m))


def _check_value(kind: str, op: str, value, fail):
    """Return ``value`` normalised for ``kind``/``op``, or raise ``fail(message)``."""
    if kind == "dnc":
        if not isinstance(value, bool):
            raise fail("dnc compares with true or false.")
        return value
    if kind == "created_at":
        moment = _parse_moment(value)
        if moment is None:
            raise fail("created_at compares with an ISO 8601 date or datetime, "
                       "e.g. 2026-01-15 or 2026-01-15T10:30:00Z.")
        return moment
    if kind in ("text", "tags") or op in ("contains", "not_contains", "starts_with",
                                          "ends_with"):
        if not isinstance(value, str) or (kind == "tags" and not value.strip()):
            raise fail(f"operator {op} takes a text value.")
        return value.strip() if kind == "tags" else value
    if op in ("gt", "gte", "lt", "lte"):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise fail(f"operator {op} takes a number or a text value.")
        return value
    if not isinstance(value, (str, int, float, bool)):
        raise fail(f"operator {op} takes a text, number or boolean value.")
    return value


def _parse_moment(value) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def matches(contact: dict, groups: list[list[tuple]]) -> bool:
    """Return whether ``contact`` passes the compiled OR-of-AND ``groups``."""
    return not groups or any(all(_test(contact, c) for c in group) for group in groups)


def _present(value) -> bool:
    return value not in (None, "", [], {})


def _test(contact: dict, condition: tuple) -> bool:
    field, op, value = condition
    actual = contact["custom"].get(field[7:]) if field.startswith("custom.") else contact.get(field)
    if op == "exists":
        return _present(actual)
    if op == "not_exists":
        return not _present(actual)
    if op in NEGATED:
        return not _positive(field, NEGATED[op], actual, value)
    return _positive(field, op, actual, value)


def _same(a, b) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return isinstance(a, (int, float)) and isinstance(b, (int, float)) and a == b


def _positive(field: str, op: str, actual, value) -> bool:
    if actual is None:
        return False
    if field == "tags":
        wanted = [value] if op == "contains" else value
        return any(tag in actual for tag in wanted)
    if field == "dnc":
        return actual is value
    if field == "created_at":
        moment = _parse_moment(actual)
        return moment is not None and _compare(op, moment, value)
    if isinstance(actual, list):  # a multi-select custom value
        wanted = value if op == "in" else [value]
        return op in ("eq", "contains", "in") and any(_same(i, w) for i in actual for w in wanted)
    if op == "eq":
        return _same(actual, value)
    if op == "in":
        return any(_same(actual, v) for v in value)
    if op in ("contains", "starts_with", "ends_with"):
        if not isinstance(actual, str):
            return False
        text, part = actual.lower(), value.lower()
        return {"contains": part in text, "starts_with": text.startswith(part),
                "ends_with": text.endswith(part)}[op]
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (actual, value))
    texts = isinstance(actual, str) and isinstance(value, str)
    if numbers:
        return _compare(op, actual, value)
    return texts and _compare(op, actual.lower(), value.lower())


def _compare(op: str, left, right) -> bool:
    return {"gt": left > right, "gte": left >= right, "lt": left < right,
            "lte": left <= right}[op]


def _text_match(contact: dict, q: str | None) -> bool:
    if not q:
        return True
    needle = q.lower()
    return any(needle in (contact.get(f) or "").lower()
               for f in ("name", "email", "phone", "company"))


# Custom-field values ---------------------------------------------------------------------


def check_custom_value(definition: dict, value, field: str):
    """Return ``value`` if it fits the custom field ``definition`` (None clears), else 422."""
    if value is None:
        return None
    kind, options = definition["type"], definition.get("options") or []
    ok = {
        "text": isinstance(value, str) and len(value) <= MAX_VALUE_CHARS,
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "date": isinstance(value, str) and _is_date(value),
        "boolean": isinstance(value, bool),
        "select": isinstance(value, str) and value in options,
        "multi_select": isinstance(value, list) and all(
            isinstance(v, str) and v in options for v in value),
    }[kind]
    if not ok:
        expected = {"text": "text", "number": "a number", "date": "a date YYYY-MM-DD",
                    "boolean": "true or false",
                    "select": f"one of {', '.join(options)}",
                    "multi_select": f"a list of {', '.join(options)}"}[kind]
        raise _invalid(field, f"Field {field} ({kind}) must be {expected}.")
    return list(dict.fromkeys(value)) if kind == "multi_select" else value


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10


def slug_key(name: str) -> str:
    """Return the custom-field key derived from ``name``: "Lead score" -> "lead_score"."""
    key = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:64]
    if not key or not key[0].isalpha():
        key = ("f_" + key)[:64]
    return key


class ContactsApi:
    """State and routes of the Contacts API; every access holds ``lock``."""

    def __init__(self, lock: threading.RLock, limiter: RateLimiter):
        self.lock = lock
        self.limiter = limiter
        self.keys: dict[str, dict] = {}
        self.members: dict[str, set[str]] = {}
        self.contacts: dict[str, dict[str, dict]] = {}
        self.tags: dict[str, dict[str, dict]] = {}
        self.fields: dict[str, dict[str, dict]] = {}
        self.views: dict[str, list[dict]] = {}
        self.values: dict[str, dict[str, dict]] = {}
        self.opportunities: dict[str, dict[str, dict]] = {}
        self.imports: list[dict] = []
        self._last_stamp: datetime | None = None

    # Seed and direct access (tests, demos)

    def reset(self, seed: bool = True) -> None:
        """Forget everything; with ``seed``, add the demo keys, orgs and data."""
        with self.lock:
            self.keys, self.members = {}, {}
            self.contacts, self.tags, self.fields = {}, {}, {}
            self.views, self.values, self.opportunities = {}, {}, {}
            self.imports = []
            self._last_stamp = None
            self.add_org_key(DEFAULT_KEY, DEFAULT_ORG, member=OWNER)
            self.add_org_key(ASSIGNED_KEY, DEFAULT_ORG, member=AGENT, assigned_only=True)
            self.add_org_key(OTHER_KEY, OTHER_ORG, member=OTHER_MEMBER)
            if seed:
                self._seed()

    def _seed(self) -> None:
        now = datetime.now(timezone.utc)
        for tag in ("customer", "lead", "vip", "replied-interested"):
            self.add_tag(DEFAULT_ORG, tag, created_at=now - timedelta(days=10))
        self.add_custom_field(DEFAULT_ORG, now - timedelta(days=10), name="Budget",
                              key="budget", type="number", folder="Qualification")
        self.add_custom_field(DEFAULT_ORG, now - timedelta(days=10), name="Industry",
                              key="industry", type="select", folder="Qualification",
                              options=["Finance", "Government", "Research", "Retail"])
        ada, _grace, alan = (self.add_contact(DEFAULT_ORG, created_at=now - timedelta(days=d),
                                             **fields) for d, fields in (
            (3, {"name": "Ada Lovelace", "email": "ada@example.com", "phone": "+14155550101",
                 "company": "Analytical Engines", "source": "import", "tags": ["customer"],
                 "custom": {"budget": 50000, "industry": "Research"}, "assigned_to": OWNER}),
            (2, {"name": "Grace Hopper", "email": "grace@example.com", "phone": "+14155550102",
                 "company": "Navy Labs", "source": "web", "tags": ["lead"],
                 "custom": {"industry": "Government"}, "assigned_to": AGENT}),
            (1, {"name": "Alan Turing", "email": "alan@example.com", "phone": "+447700900123",
                 "company": "Bletchley", "source": "referral", "tags": ["lead", "vip"],
                 "custom": {"budget": 12000}}),
        ))
        self.add_opportunity(DEFAULT_ORG, ada["id"], name="Engine licence", stage="proposal",
                             value=24000, status="open")
        self.add_opportunity(DEFAULT_ORG, ada["id"], name="Support renewal", stage="closed",
                             value=6000, status="won")
        self.add_opportunity(DEFAULT_ORG, alan["id"], name="Codebreaking pilot",
                             stage="qualification", value=12000, status="open")
        self.put_views(DEFAULT_ORG, [
            {"id": "view_hot_leads", "name": "Hot leads", "query": {"groups": [
                {"conditions": [{"field": "tags", "op": "contains", "value": "lead"},
                                {"field": "tags", "op": "contains", "value": "vip"}]}]}},
            {"id": "view_replied", "name": "Replied interested", "query": {"groups": [
                {"conditions": [{"field": "tags", "op": "contains",
                                 "value": "replied-interested"}]}]}},
        ], allow_new_ids=True)
        for key, value in (("company_name", "Acme Realty"), ("sender_name", "Sam"),
                           ("calendar_link", "https://cal.example.com/acme")):
            self.put_value(DEFAULT_ORG, key, value)

    def add_org_key(self, key: str, org_id: str, member: str | None = None,
                    assigned_only: bool = False) -> None:
        """Make ``key`` (one member) a member of ``org_id``, creating the org."""
        with self.lock:
            entry = self.keys.setdefault(key, {"member": member or "usr_" + uuid.uuid4().hex[:12],
                                               "orgs": {}})
            entry["orgs"][org_id] = "assigned" if assigned_only else "all"
            self.members.setdefault(org_id, set()).add(entry["member"])
            for table in (self.contacts, self.tags, self.fields, self.values,
                          self.opportunities):
                table.setdefault(org_id, {})
            self.views.setdefault(org_id, [])

    def _stamp(self, moment: datetime | None = None) -> str:
        moment = moment or datetime.now(timezone.utc)
        # Strictly increasing stamps: "newest first" is creation (or update) order.
        if self._last_stamp is not None and moment <= self._last_stamp:
            moment = self._last_stamp + timedelta(microseconds=1)
        self._last_stamp = max(moment, self._last_stamp or moment)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def _clean(self, org_id: str, body: dict) -> dict:
        """Validate contact fields against the org: custom types, assignable members."""
        out = clean_fields(body)
        definitions = {f["key"]: f for f in self.fields.get(org_id, {}).values()}
        for key, value in (out.get("custom") or {}).items():
            if key in definitions:
                out["custom"][key] = check_custom_value(definitions[key], value,
                                                        f"custom.{key}")
        if out.get("assigned_to") and out["assigned_to"] not in self.members.get(org_id, ()):
            raise _invalid("assigned_to", f"{out['assigned_to']} is not a member of this "
                                          "organisation.")
        return out

    def add_contact(self, org_id: str, created_at: datetime | None = None, **fields) -> dict:
        """Create a contact in ``org_id`` directly (validated like the API); return a copy."""
        with self.lock:
            contact = {f: None for f in STRING_FIELDS}
            contact.update(tags=[], dnc=False, custom={}, assigned_to=None)
            contact.update(self._clean(org_id, fields))
            contact["custom"] = {k: v for k, v in contact["custom"].items() if v is not None}
            _require_identity(contact)
            stamp = self._stamp(created_at)
            contact = {"id": str(uuid.uuid4()), **contact, "created_at": stamp,
                       "updated_at": stamp}
            self.contacts.setdefault(org_id, {})[contact["id"]] = contact
            self._register_tags(org_id, contact["tags"])
            return _copy(contact)

    def update_contact(self, org_id: str, contact_id: str, **fields) -> dict:
        """Change a contact directly as PATCH does (no scoping); return a copy."""
        with self.lock:
            return _copy(self._patch(org_id, self._get(org_id, contact_id, None), fields))

    def _patch(self, org_id: str, contact: dict, body: dict, merge_tags: bool = False) -> dict:
        changes = self._clean(org_id, body)
        merged = {**contact, **changes, "tags": list(contact["tags"]),
                  "custom": dict(contact["custom"])}
        if "tags" in changes:
            merged["tags"] = (list(dict.fromkeys(contact["tags"] + changes["tags"]))
                              if merge_tags else changes["tags"])
        for key, value in (changes.get("custom") or {}).items():
            if value is None:
                merged["custom"].pop(key, None)
            else:
                merged["custom"][key] = value
        _require_identity(merged)
        self._register_tags(org_id, merged["tags"])
        if merged != contact:
            merged["updated_at"] = self._stamp()
        contact.update(merged)
        return contact

    def add_tag(self, org_id: str, name: str, color: str | None = None,
                created_at: datetime | None = None) -> dict:
        """Add a tag to the org's list (409 when the name exists); return a copy."""
        with self.lock:
            if self._tag_by_name(org_id, name) is not None:
                raise ApiError(409, "TAG_EXISTS", f"A tag named {name} already exists.",
                               {"field": "name"})
            tag = {"id": "tag_" + uuid.uuid4().hex[:12], "name": name, "color": color,
                   "created_at": self._stamp(created_at)}
            self.tags.setdefault(org_id, {})[tag["id"]] = tag
            return dict(tag)

    def _tag_by_name(self, org_id: str, name: str) -> dict | None:
        return next((t for t in self.tags.get(org_id, {}).values() if t["name"] == name), None)

    def _register_tags(self, org_id: str, names: list[str]) -> None:
        for name in names:
            if self._tag_by_name(org_id, name) is None:
                self.add_tag(org_id, name)

    def add_custom_field(self, org_id: str, created_at: datetime | None = None,
                         **body) -> dict:
        """Define a custom field (validated like POST /custom-fields); return a copy."""
        with self.lock:
            name = body.get("name")
            if not isinstance(name, str) or not name.strip() or len(name) > 100:
                raise _invalid("name", "Field name is required (1 to 100 characters).")
            key = body.get("key")
            if key is None or key == "":
                key = slug_key(name)
            if not isinstance(key, str) or not FIELD_KEY.match(key):
                raise _invalid("key", "Field key must start with a lowercase letter and hold "
                                      "only a-z, 0-9 and _ (at most 64).")
            kind = body.get("type")
            if kind not in FIELD_TYPES:
                raise _invalid("type", f"Field type must be one of {', '.join(FIELD_TYPES)}.")
            options = self._options(kind, body.get("options"))
            folder = _optional_text(body, "folder")
            if any(f["key"] == key for f in self.fields.get(org_id, {}).values()):
                raise ApiError(409, "CUSTOM_FIELD_EXISTS",
                               f"A custom field with key {key} already exists.", {"field": "key"})
            stamp = self._stamp(created_at)
            field = {"id": "cf_" + uuid.uuid4().hex[:12], "key": key, "name": name.strip(),
                     "type": kind, "options": options, "folder": folder,
                     "created_at": stamp, "updated_at": stamp}
            self.fields.setdefault(org_id, {})[field["id"]] = field
            return _copy_field(field)

    @staticmethod
    def _options(kind: str, options) -> list[str] | None:
        if kind not in ("select", "multi_select"):
            if options not in (None, []):
                raise _invalid("options", f"Field options only applies to select and "
                                          f"multi_select fields, not {kind}.")
            return None
        if (not isinstance(options, list) or not options
                or not all(isinstance(o, str) and o.strip() for o in options)):
            raise _invalid("options", f"A {kind} field needs options: a list of non-empty "
                                      "strings.")
        return list(dict.fromkeys(o.strip() for o in options))

    def add_opportunity(self, org_id: str, contact_id: str, **body) -> dict:
        """Link an opportunity to a contact (the admin route's work); return a copy."""
        with self.lock:
            self._get(org_id, contact_id, None)
            name = body.get("name")
            if not isinstance(name, str) or not name.strip():
                raise _invalid("name", "Field name is required.")
            value = body.get("value", 0)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _invalid("value", "Field value must be a number.")
            status = body.get("status", "open")
            if status not in ("open", "won", "lost"):
                raise _invalid("status", "Field status must be open, won or lost.")
            stamp = self._stamp()
            opp = {"id": "opp_" + uuid.uuid4().hex[:12], "contact_id": contact_id,
                   "name": name.strip(), "pipeline": body.get("pipeline") or "Sales",
                   "stage": body.get("stage") or "new", "value": value,
                   "currency": body.get("currency") or "USD", "status": status,
                   "created_at": stamp, "updated_at": stamp}
            self.opportunities.setdefault(org_id, {})[opp["id"]] = opp
            return dict(opp)

    def put_views(self, org_id: str, views, allow_new_ids: bool = False) -> list[dict]:
        """Replace the org's views with ``views`` (validated like PUT); return copies."""
        with self.lock:
            if not isinstance(views, list):
                raise _invalid("views", "Field views must be a list of views.")
            if len(views) > MAX_VIEWS:
                raise _invalid("views", f"At most {MAX_VIEWS} views per organisation.")
            current = {v["id"]: v for v in self.views.get(org_id, [])}
            names: set[str] = set()
            result = []
            for i, view in enumerate(views):
                where = f"views[{i}]"
                if not isinstance(view, dict):
                    raise _invalid(where, f"{where} must be an object.")
                name = view.get("name")
                if not isinstance(name, str) or not name.strip() or len(name) > 100:
                    raise _invalid(f"{where}.name", f"{where}.name is required (1 to 100 "
                                                    "characters).")
                if name.strip().lower() in names:
                    raise _invalid(f"{where}.name", f"Two views are named {name.strip()}; "
                                                    "names must be unique.")
                names.add(name.strip().lower())
                compile_query(view.get("query"), f"{where}.query")
                q = _optional_text(view, "q", f"{where}.q")
                view_id = view.get("id")
                old = current.get(view_id) if view_id else None
                if view_id and old is None and not allow_new_ids:
                    raise _invalid(f"{where}.id", f"No view has id {view_id}; leave id out to "
                                                  "create a view.")
                stamp = self._stamp()
                entry = {"id": view_id or "view_" + uuid.uuid4().hex[:12], "name": name.strip(),
                         "query": view.get("query") or {"groups": []}, "q": q,
                         "created_at": old["created_at"] if old else stamp}
                same = old and all(old[k] == entry[k] for k in ("name", "query", "q"))
                entry["updated_at"] = old["updated_at"] if same else stamp
                result.append(entry)
            self.views[org_id] = result
            return [_copy_view(v) for v in result]

    def put_value(self, org_id: str, key: str, value) -> dict:
        """Create or replace a custom value; return a copy."""
        with self.lock:
            if not VALUE_KEY.match(key):
                raise _invalid("key", "A custom value key starts with a letter or _ and holds "
                                      "only letters, digits and _ (at most 64).")
            if not isinstance(value, str) or len(value) > MAX_VALUE_CHARS:
                raise _invalid("value", f"Field value must be text of at most "
                                        f"{MAX_VALUE_CHARS} characters.")
            entry = {"key": key, "value": value, "updated_at": self._stamp()}
            self.values.setdefault(org_id, {})[key] = entry
            return dict(entry)

    # Queries

    def _visible(self, org_id: str, member: str | None) -> list[dict]:
        """The org's contacts ``member`` sees, oldest first.

        Contacts are only ever added at the end (add_contact) with strictly increasing
        stamps (_stamp), and a PATCH changes one in place, so the stored order is the
        created_at order and needs no sort.
        """
        items = self.contacts.get(org_id, {}).values()
        return [c for c in items if member is None or c["assigned_to"] == member]

    def list_contacts(self, org_id: str, limit: int = DEFAULT_LIMIT, offset: int = 0,
                      q: str | None = None, tag: str | None = None,
                      sort: str = "-created_at", member: str | None = None,
                      groups: list | None = None, faults: dict | None = None) -> dict:
        """Return one page of the org's contacts: filtered, sorted, newest first by default.

        ``faults`` (the fault mode's list faults, see faults.py) may reorder the list,
        repeat items of the previous page and shuffle the page.
        """
        column, descending = SORTS[sort]
        with self.lock:
            table = self.contacts.get(org_id, {})
            if column == "created_at" and not (q or tag or groups or member or faults):
                # The stored order is the created_at order (see _visible): a page is a slice.
                stored = reversed(table.values()) if descending else iter(table.values())
                page = [_copy(c) for c in itertools.islice(stored, offset, offset + limit)]
                return {"items": page, "total": len(table), "limit": limit, "offset": offset}
            items = [c for c in self._visible(org_id, member)
                     if _text_match(c, q) and (not tag or tag in c["tags"])
                     and matches(c, groups or [])]
            if column == "created_at":
                if descending:
                    items.reverse()
            else:
                items.sort(key=lambda c: (c[column], c["id"]), reverse=descending)
            if faults:
                page = [_copy(c) for c in _faulted_page(items, offset, limit, faults)]
            else:
                page = [_copy(c) for c in items[offset:offset + limit]]
            return {"items": page, "total": len(items), "limit": limit, "offset": offset}

    def snapshot(self) -> dict:
        """Return every org's contacts, newest first."""
        with self.lock:
            return {org: self.list_contacts(org, limit=10**9)["items"] for org in self.contacts}

    # The sandbox composes services through these (see app.py).
    name, prefix = "contacts_api", "/contacts-api"

    def connection(self, root: str) -> dict:
        return {"base_url": root + self.prefix,
                "credentials": {"api_key": DEFAULT_KEY, "org_id": DEFAULT_ORG}}

    def seeded(self) -> dict:
        return {"api_key": DEFAULT_KEY, "org_id": DEFAULT_ORG, "other_api_key": OTHER_KEY,
                "other_org_id": OTHER_ORG, "assigned_api_key": ASSIGNED_KEY,
                "owner_member": OWNER, "assigned_member": AGENT,
                "view_ids": ["view_hot_leads", "view_replied"]}

    def state(self) -> dict:
        with self.lock:
            by_org = lambda table: {o: [dict(x) for x in t.values()]  # noqa: E731
                                    for o, t in table.items()}
            return {"contacts": self.snapshot(), "tags": by_org(self.tags),
                    "custom_fields": {o: [_copy_field(f) for f in t.values()]
                                      for o, t in self.fields.items()},
                    "views": {o: [_copy_view(v) for v in vs] for o, vs in self.views.items()},
                    "custom_values": by_org(self.values),
                    "opportunities": by_org(self.opportunities),
                    "imports": [dict(i) for i in self.imports]}

    def register_admin(self, app) -> None:
        """Add /_sandbox/contacts-api/... routes: link an opportunity to a contact."""

        @app.post("/contacts-api/opportunities")
        def contacts_api_add_opportunity():
            data = json_body()
            contact_id = data.get("contact_id")
            if not isinstance(contact_id, str) or not contact_id:
                raise _invalid("contact_id", "Field contact_id is required.")
            fields = {k: v for k, v in data.items() if k not in ("org_id", "contact_id")}
            return self.add_opportunity(data.get("org_id") or DEFAULT_ORG, contact_id,
                                        **fields), 201

    # Requests

    def _get(self, org_id: str, contact_id: str, member: str | None) -> dict:
        contact = self.contacts.get(org_id, {}).get(contact_id)
        if contact is None or (member is not None and contact["assigned_to"] != member):
            raise _not_found("CONTACT_NOT_FOUND", f"Contact {contact_id} does not exist.",
                             "contact_id")
        return contact

    def _authenticate(self):
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(401, "UNAUTHORIZED",
                           "Missing API key: send it as Authorization: Bearer <key>.")
        key = key.strip()
        with self.lock:
            entry = self.keys.get(key)
        if entry is None:
            raise ApiError(401, "UNAUTHORIZED", "The API key is invalid or revoked.")
        org_id = request.headers.get("X-Org-Id", "").strip()
        if not org_id:
            raise ApiError(400, "MISSING_ORG_ID", "Header X-Org-Id is required.",
                           {"field": "X-Org-Id"})
        if org_id not in entry["orgs"]:
            raise ApiError(403, "FORBIDDEN",
                           f"The API key is not a member of organisation {org_id}.",
                           {"field": "X-Org-Id"})
        g.org_id = org_id
        g.member = entry["member"]
        # Scoping: None sees everything; a member id sees only contacts assigned to it.
        g.scope = entry["member"] if entry["orgs"][org_id] == "assigned" else None
        return ("contacts_api", key)

    def _assign(self, body: dict) -> dict:
        """Apply the restricted member's rule to a contact body: assign to self only."""
        if g.scope is None:
            return body
        if body.get("assigned_to") not in (None, g.scope):
            raise ApiError(403, "FORBIDDEN", "Members restricted to their assigned data can "
                                             "only assign contacts to themselves.",
                           {"field": "assigned_to"})
        return {**body, "assigned_to": g.scope}

    def import_contacts(self, org_id: str, body: dict, scope: str | None) -> dict:
        rows = body.get("contacts")
        if not isinstance(rows, list) or not rows:
            raise _invalid("contacts", "Field contacts must be a non-empty list of contacts.")
        if len(rows) > MAX_IMPORT:
            raise _invalid("contacts", f"At most {MAX_IMPORT} contacts per import request; "
                                       "split larger imports into batches.")
        match_by = body.get("match_by", "email")
        if match_by not in ("email", "phone", "none"):
            raise _invalid("match_by", "Field match_by must be email, phone or none.")
        on_match = body.get("on_match", "update")
        if on_match not in ("update", "skip"):
            raise _invalid("on_match", "Field on_match must be update or skip.")
        summary = {"total": len(rows), "created": 0, "updated": 0, "skipped": 0, "errors": []}
        with self.lock:
            for index, row in enumerate(rows):
                try:
                    if not isinstance(row, dict):
                        raise _invalid(None, "Each contact must be an object.")
                    fields = {k: v for k, v in row.items() if k in CONTACT_FIELDS}
                    if scope is not None:
                        fields["assigned_to"] = scope
                    cleaned = self._clean(org_id, fields)
                    match = self._match(org_id, scope, match_by, cleaned)
                    if match is not None and on_match == "skip":
                        summary["skipped"] += 1
                    elif match is not None:
                        self._patch(org_id, match, fields, merge_tags=True)
                        summary["updated"] += 1
                    else:
                        self.add_contact(org_id, **fields)
                        summary["created"] += 1
                except ApiError as exc:
                    summary["errors"].append({"index": index,
                                              "field": (exc.details or {}).get("field"),
                                              "message": exc.message})
            self.imports.append({"org_id": org_id, "rows": len(rows),
                                 **{k: summary[k] for k in ("created", "updated", "skipped")},
                                 "errors": len(summary["errors"])})
        return summary

    def _match(self, org_id: str, scope: str | None, match_by: str, fields: dict) -> dict | None:
        wanted = fields.get(match_by) if match_by != "none" else None
        if not wanted:
            return None
        for contact in self._visible(org_id, scope):
            have = contact.get(match_by)
            if have and (have.lower() == wanted.lower() if match_by == "email" else have == wanted):
                return contact
        return None

    def _search_body(self) -> tuple:
        body = json_body(422)
        groups = compile_query(body.get("query"))
        q = _optional_text(body, "q")
        limit = _int_value("limit", body.get("limit"), DEFAULT_LIMIT, 1, MAX_LIMIT)
        offset = _int_value("offset", body.get("offset"), 0, 0, None)
        return groups, q, limit, offset

    def _field(self, org_id: str, field_id: str) -> dict:
        field = self.fields.get(org_id, {}).get(field_id)
        if field is None:
            raise _not_found("CUSTOM_FIELD_NOT_FOUND", f"Custom field {field_id} does not "
                                                       "exist.", "field_id")
        return field

    def create_app(self) -> Flask:
        """Build the Flask app serving ``/api/v1/...``."""
        app = create_service_app(__name__, self._authenticate, self.limiter)
        v1 = "/api/v1"

        @app.get(f"{v1}/contacts")
        def list_contacts():
            limit = _int_param("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
            offset = _int_param("offset", 0, 0, None)
            sort = request.args.get("sort") or "-created_at"
            if sort not in SORTS:
                raise _invalid("sort", f"sort must be one of {', '.join(SORTS)}.")
            return self.list_contacts(g.org_id, limit, offset, request.args.get("q"),
                                      request.args.get("tag"), sort, g.scope,
                                      faults=g.get("list_faults"))

        @app.post(f"{v1}/contacts")
        def create_contact():
            if not raw_body().strip():
                _require_identity({})
            body = {k: v for k, v in json_body(422).items() if k in CONTACT_FIELDS}
            return self.add_contact(g.org_id, **self._assign(body)), 201

        @app.post(f"{v1}/contacts/import")
        def import_contacts():
            return self.import_contacts(g.org_id, json_body(422), g.scope)

        @app.post(f"{v1}/contacts/search")
        def search_contacts():
            groups, q, limit, offset = self._search_body()
            return self.list_contacts(g.org_id, limit, offset, q, None, "-created_at",
                                      g.scope, groups, faults=g.get("list_faults"))

        @app.get(f"{v1}/contacts/views")
        def list_views():
            with self.lock:
                return {"views": [_copy_view(v) for v in self.views.get(g.org_id, [])]}

        @app.put(f"{v1}/contacts/views")
        def put_views():
            return {"views": self.put_views(g.org_id, json_body(422).get("views"))}

        @app.get(f"{v1}/contacts/<contact_id>")
        def get_contact(contact_id):
            with self.lock:
                return _copy(self._get(g.org_id, contact_id, g.scope))

        @app.patch(f"{v1}/contacts/<contact_id>")
        def update_contact(contact_id):
            body = {k: v for k, v in json_body(422).items() if k in CONTACT_FIELDS}
            if g.scope is not None and "assigned_to" in body:
                body = self._assign(body)
            with self.lock:
                contact = self._get(g.org_id, contact_id, g.scope)
                return _copy(self._patch(g.org_id, contact, body))

        @app.delete(f"{v1}/contacts/<contact_id>")
        def delete_contact(contact_id):
            with self.lock:
                self._get(g.org_id, contact_id, g.scope)
                del self.contacts[g.org_id][contact_id]
                opps = self.opportunities.get(g.org_id, {})
                for opp_id in [o["id"] for o in opps.values() if o["contact_id"] == contact_id]:
                    del opps[opp_id]
            return "", 204

        @app.get(f"{v1}/contacts/<contact_id>/opportunities")
        def contact_opportunities(contact_id):
            with self.lock:
                self._get(g.org_id, contact_id, g.scope)
                items = [dict(o) for o in self.opportunities.get(g.org_id, {}).values()
                         if o["contact_id"] == contact_id]
            items.sort(key=lambda o: (o["created_at"], o["id"]), reverse=True)
            return {"items": items, "total": len(items)}

        @app.post(f"{v1}/contacts/<contact_id>/tags")
        def add_contact_tags(contact_id):
            tags = clean_tags(json_body(422).get("tags"), "tags", MAX_TAGS_PER_REQUEST)
            with self.lock:
                contact = self._get(g.org_id, contact_id, g.scope)
                return _copy(self._patch(g.org_id, contact, {"tags": tags}, merge_tags=True))

        @app.delete(f"{v1}/contacts/<contact_id>/tags/<path:name>")
        def remove_contact_tag(contact_id, name):
            with self.lock:
                contact = self._get(g.org_id, contact_id, g.scope)
                if name in contact["tags"]:
                    self._patch(g.org_id, contact,
                                {"tags": [t for t in contact["tags"] if t != name]})
            return "", 204

        @app.put(f"{v1}/contacts/<contact_id>/custom/<key>")
        def set_contact_custom(contact_id, key):
            body = json_body(422)
            if "value" not in body:
                raise _invalid("value", "Field value is required (null clears it).")
            with self.lock:
                contact = self._get(g.org_id, contact_id, g.scope)
                definition = next((f for f in self.fields.get(g.org_id, {}).values()
                                   if f["key"] == key), None)
                if definition is None:
                    raise _not_found("CUSTOM_FIELD_NOT_FOUND", f"No custom field has key "
                                                               f"{key}.", "key")
                return _copy(self._patch(g.org_id, contact, {"custom": {key: body["value"]}}))

        @app.get(f"{v1}/tags")
        def list_tags():
            with self.lock:
                visible = self._visible(g.org_id, g.scope)
                items = [{**t, "contact_count": sum(t["name"] in c["tags"] for c in visible)}
                         for t in self.tags.get(g.org_id, {}).values()]
            items.sort(key=lambda t: (t["name"].lower(), t["id"]))
            return {"items": items, "total": len(items)}

        @app.post(f"{v1}/tags")
        def create_tag():
            body = json_body(422)
            name = body.get("name")
            if not isinstance(name, str) or not name.strip() or len(name.strip()) > 100:
                raise _invalid("name", "Field name is required (1 to 100 characters).")
            name = name.strip()
            color = _optional_text(body, "color")
            return {**self.add_tag(g.org_id, name, color), "contact_count": 0}, 201

        @app.delete(f"{v1}/tags/<tag_id>")
        def delete_tag(tag_id):
            with self.lock:
                tag = self.tags.get(g.org_id, {}).get(tag_id)
                if tag is None:
                    raise _not_found("TAG_NOT_FOUND", f"Tag {tag_id} does not exist.", "tag_id")
                del self.tags[g.org_id][tag_id]
                for contact in self.contacts.get(g.org_id, {}).values():
                    if tag["name"] in contact["tags"]:
                        self._patch(g.org_id, contact, {
                            "tags": [t for t in contact["tags"] if t != tag["name"]]})
            return "", 204

        @app.get(f"{v1}/custom-fields")
        def list_fields():
            with self.lock:
                items = [_copy_field(f) for f in self.fields.get(g.org_id, {}).values()]
            items.sort(key=lambda f: (f["created_at"], f["id"]))
            return {"items": items, "total": len(items)}

        @app.post(f"{v1}/custom-fields")
        def create_field():
            return self.add_custom_field(g.org_id, **json_body(422)), 201

        @app.patch(f"{v1}/custom-fields/<field_id>")
        def update_field(field_id):
            body = json_body(422)
            with self.lock:
                field = self._field(g.org_id, field_id)
                for fixed in ("key", "type"):
                    if fixed in body and body[fixed] != field[fixed]:
                        raise _invalid(fixed, f"A custom field's {fixed} cannot be changed; "
                                              "create a new field instead.")
                changes = {}
                if "name" in body:
                    name = body["name"]
                    if not isinstance(name, str) or not name.strip() or len(name) > 100:
                        raise _invalid("name", "Field name must be 1 to 100 characters.")
                    changes["name"] = name.strip()
                if "options" in body:
                    changes["options"] = self._options(field["type"], body["options"])
                if "folder" in body:
                    changes["folder"] = _optional_text(body, "folder")
                if any(field[k] != v for k, v in changes.items()):
                    field.update(changes, updated_at=self._stamp())
                return _copy_field(field)

        @app.delete(f"{v1}/custom-fields/<field_id>")
        def delete_field(field_id):
            with self.lock:
                field = self._field(g.org_id, field_id)
                del self.fields[g.org_id][field_id]
                for contact in self.contacts.get(g.org_id, {}).values():
                    if field["key"] in contact["custom"]:
                        self._patch(g.org_id, contact, {"custom": {field["key"]: None}})
            return "", 204

        @app.get(f"{v1}/custom-values")
        def list_values():
            with self.lock:
                items = sorted((dict(v) for v in self.values.get(g.org_id, {}).values()),
                               key=lambda v: v["key"])
            return {"items": items, "total": len(items)}

        @app.put(f"{v1}/custom-values/<key>")
        def put_value(key):
            body = json_body(422)
            if "value" not in body:
                raise _invalid("value", "Field value is required.")
            return self.put_value(g.org_id, key, body["value"])

        @app.delete(f"{v1}/custom-values/<key>")
        def delete_value(key):
            with self.lock:
                if key not in self.values.get(g.org_id, {}):
                    raise _not_found("CUSTOM_VALUE_NOT_FOUND", f"No custom value has key "
                                                               f"{key}.", "key")
                del self.values[g.org_id][key]
            return "", 204

        return app


def _optional_text(body: dict, name: str, label: str | None = None) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise _invalid(label or name, f"Field {label or name} must be a string.")
    return value.strip() or None if isinstance(value, str) else None


def _faulted_page(items: list[dict], offset: int, limit: int, faults: dict) -> list[dict]:
    """Return one page of ``items`` (sorted as asked) as the fault mode's list faults say.

    ``order`` replaces the sort (oldest first, or a stable hash order unrelated to time);
    on a hit (probability ``rate``) a page after the first also starts with ``overlap``
    items of the page before it, and ``shuffle`` mixes the page. Nothing is skipped.
    """
    if faults.get("order") == "oldest_first":
        items = sorted(items, key=lambda c: (c["created_at"], c["id"]))
    elif faults.get("order") == "random":
        salt = str(faults.get("seed"))
        items = sorted(items, key=lambda c: hashlib.sha256(
            f"{salt}|{c['id']}".encode()).digest())
    rng = faults["rng"]
    hit = rng.random() < faults.get("rate", 1.0)
    start = offset
    if hit and offset > 0 and faults.get("overlap"):
        start = max(0, offset - faults["overlap"])
    page = items[start:offset + limit]
    if hit and faults.get("shuffle"):
        rng.shuffle(page)
    return page


def _copy(contact: dict) -> dict:
    return {**contact, "tags": list(contact["tags"]), "custom": dict(contact["custom"])}


def _copy_field(field: dict) -> dict:
    return {**field, "options": list(field["options"]) if field["options"] else None}


def _copy_view(view: dict) -> dict:
    return copy.deepcopy(view)
