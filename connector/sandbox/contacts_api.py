"""Contacts API emulator (seed 004): org-scoped contacts CRUD under ``/api/v1``.

The document names ``X-Org-Id`` and "the caller" but no key header. Decisions:
``Authorization: Bearer <key>`` is required (401 when missing or unknown); ``X-Org-Id`` is
required (400 MISSING_ORG_ID when absent) and must be an org the key belongs to (403
otherwise, whether or not the org exists). Validation errors are 422 (the document says so
for search), malformed JSON 400. Lists are newest first: ``created_at`` desc, then ``id``
desc; ``created_at`` carries microseconds and is strictly increasing within a sandbox, so
the order is the creation order. ``q`` is a case-insensitive substring match over name,
email, phone and company; ``tag`` an exact tag match. Unknown body fields are ignored.
"""
from __future__ import annotations

import re
import threading
import uuid
from datetime import datetime, timedelta, timezone

from flask import Flask, g, request

from .common import E164, ApiError, RateLimiter, create_service_app, json_body, raw_body

DEFAULT_KEY = "ca_test_key"
DEFAULT_ORG = "org_demo"
OTHER_KEY = "ca_other_key"
OTHER_ORG = "org_other"
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
STRING_FIELDS = ("name", "email", "phone", "company", "source", "notes")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "VALIDATION_ERROR", message, {"field": field})


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
        tags = body["tags"]
        if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags):
            raise _invalid("tags", "Field tags must be a list of non-empty strings.")
        out["tags"] = list(dict.fromkeys(t.strip() for t in tags))
    if "dnc" in body:
        if not isinstance(body["dnc"], bool):
            raise _invalid("dnc", "Field dnc must be true or false.")
        out["dnc"] = body["dnc"]
    if "custom" in body:
        if not isinstance(body["custom"], dict):
            raise _invalid("custom", "Field custom must be an object.")
        out["custom"] = dict(body["custom"])
    return out


def _require_identity(contact: dict) -> None:
    if not any(contact.get(f) for f in ("name", "email", "phone")):
        raise ApiError(422, "VALIDATION_ERROR",
                       "A contact needs at least one of name, email or phone.",
                       {"field": "name", "fields": ["name", "email", "phone"]})


def _int_param(name: str, default: int, low: int, high: int | None) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _invalid(name, f"Query parameter {name} must be an integer.") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise _invalid(name, f"Query parameter {name} must be {bound}.")
    return value


class ContactsApi:
    """State and routes of the Contacts API; every access holds ``lock``."""

    def __init__(self, lock: threading.RLock, limiter: RateLimiter):
        self.lock = lock
        self.limiter = limiter
        self.keys: dict[str, set[str]] = {}
        self.contacts: dict[str, dict[str, dict]] = {}
        self._last_created: datetime | None = None

    def reset(self, seed: bool = True) -> None:
        """Forget everything; with ``seed``, add the demo keys, orgs and 3 contacts."""
        with self.lock:
            self.keys = {DEFAULT_KEY: {DEFAULT_ORG}, OTHER_KEY: {OTHER_ORG}}
            self.contacts = {DEFAULT_ORG: {}, OTHER_ORG: {}}
            self._last_created = None
            if not seed:
                return
            now = datetime.now(timezone.utc)
            for days, fields in (
                (3, {"name": "Ada Lovelace", "email": "ada@example.com",
                     "phone": "+14155550101", "company": "Analytical Engines",
                     "source": "import", "tags": ["customer"]}),
                (2, {"name": "Grace Hopper", "email": "grace@example.com",
                     "phone": "+14155550102", "company": "Navy Labs", "source": "web",
                     "tags": ["lead"]}),
                (1, {"name": "Alan Turing", "email": "alan@example.com",
                     "phone": "+447700900123", "company": "Bletchley", "source": "referral",
                     "tags": ["lead", "vip"]}),
            ):
                self.add_contact(DEFAULT_ORG, created_at=now - timedelta(days=days), **fields)

    def add_org_key(self, key: str, org_id: str) -> None:
        """Make ``key`` a member of ``org_id`` (creating the org)."""
        with self.lock:
            self.keys.setdefault(key, set()).add(org_id)
            self.contacts.setdefault(org_id, {})

    def _stamp(self, moment: datetime | None) -> str:
        moment = moment or datetime.now(timezone.utc)
        # Strictly increasing timestamps keep "newest first" equal to creation order.
        if self._last_created is not None and moment <= self._last_created:
            moment = self._last_created + timedelta(microseconds=1)
        self._last_created = max(moment, self._last_created or moment)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def add_contact(self, org_id: str, created_at: datetime | None = None, **fields) -> dict:
        """Create a contact in ``org_id`` directly (validated like the API); return a copy."""
        with self.lock:
            contact = {f: None for f in STRING_FIELDS}
            contact.update(tags=[], dnc=False, custom={})
            contact.update(clean_fields(fields))
            _require_identity(contact)
            stamp = self._stamp(created_at)
            contact = {"id": str(uuid.uuid4()), **contact, "created_at": stamp,
                       "updated_at": stamp}
            self.contacts.setdefault(org_id, {})[contact["id"]] = contact
            return _copy(contact)

    def list_contacts(self, org_id: str, limit: int = DEFAULT_LIMIT, offset: int = 0,
                      q: str | None = None, tag: str | None = None) -> dict:
        """Return one page of the org's contacts, newest first, filtered by q and tag."""
        with self.lock:
            items = list(self.contacts.get(org_id, {}).values())
            if q:
                needle = q.lower()
                items = [c for c in items if any(
                    needle in (c.get(f) or "").lower()
                    for f in ("name", "email", "phone", "company"))]
            if tag:
                items = [c for c in items if tag in c["tags"]]
            items.sort(key=lambda c: (c["created_at"], c["id"]), reverse=True)
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
                "other_org_id": OTHER_ORG}

    def state(self) -> dict:
        return {"contacts": self.snapshot()}

    def register_admin(self, app) -> None:
        """Add this service's admin routes (none yet) to the /_sandbox app."""

    def _get(self, org_id: str, contact_id: str) -> dict:
        contact = self.contacts.get(org_id, {}).get(contact_id)
        if contact is None:
            raise ApiError(404, "CONTACT_NOT_FOUND", f"Contact {contact_id} does not exist.",
                           {"field": "contact_id"})
        return contact

    def _authenticate(self):
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(401, "UNAUTHORIZED",
                           "Missing API key: send it as Authorization: Bearer <key>.")
        key = key.strip()
        with self.lock:
            orgs = self.keys.get(key)
        if orgs is None:
            raise ApiError(401, "UNAUTHORIZED", "The API key is invalid or revoked.")
        org_id = request.headers.get("X-Org-Id", "").strip()
        if not org_id:
            raise ApiError(400, "MISSING_ORG_ID", "Header X-Org-Id is required.",
                           {"field": "X-Org-Id"})
        if org_id not in orgs:
            raise ApiError(403, "FORBIDDEN",
                           f"The API key is not a member of organisation {org_id}.",
                           {"field": "X-Org-Id"})
        g.org_id = org_id
        return ("contacts_api", key)

    def create_app(self) -> Flask:
        """Build the Flask app serving ``/api/v1/contacts``."""
        app = create_service_app(__name__, self._authenticate, self.limiter)

        @app.get("/api/v1/contacts")
        def list_contacts():
            limit = _int_param("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
            offset = _int_param("offset", 0, 0, None)
            return self.list_contacts(g.org_id, limit, offset, request.args.get("q"),
                                      request.args.get("tag"))

        @app.post("/api/v1/contacts")
        def create_contact():
            if not raw_body().strip():
                _require_identity({})
            return self.add_contact(g.org_id, **_known(json_body(422))), 201

        @app.get("/api/v1/contacts/<contact_id>")
        def get_contact(contact_id):
            with self.lock:
                return _copy(self._get(g.org_id, contact_id))

        @app.patch("/api/v1/contacts/<contact_id>")
        def update_contact(contact_id):
            changes = clean_fields(json_body(422))
            with self.lock:
                contact = self._get(g.org_id, contact_id)
                merged = {**contact, **changes}
                _require_identity(merged)
                merged["updated_at"] = _later(contact["updated_at"])
                contact.update(merged)
                return _copy(contact)

        @app.delete("/api/v1/contacts/<contact_id>")
        def delete_contact(contact_id):
            with self.lock:
                self._get(g.org_id, contact_id)
                del self.contacts[g.org_id][contact_id]
            return "", 204

        return app


def _known(body: dict) -> dict:
    return {k: v for k, v in body.items()
            if k in STRING_FIELDS or k in ("tags", "dnc", "custom")}


def _later(previous: str) -> str:
    now = datetime.now(timezone.utc)
    before = datetime.strptime(previous, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    return max(now, before + timedelta(microseconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _copy(contact: dict) -> dict:
    return {**contact, "tags": list(contact["tags"]), "custom": dict(contact["custom"])}
