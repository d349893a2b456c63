"""SAMI OS emulator (real-estate CRM, seed 000): the REST surface written down in the app.

The document lists resource families, scopes and what stays internal, but no paths. The
surface (every route, its scope, its filters) is the table in the app's module docstring,
``connector/plugins/sami_os.py``; this module implements exactly that table, and the two are
kept in step. Decisions where the document is vague (also in the app's docstring):

- Auth: ``Authorization: Bearer <api key>`` on every request; missing, unknown or revoked
  keys get 401 UNAUTHORIZED. A key acts as the user who created it (``created_by`` on what it
  creates) within its scope: ``read`` (Read only) may call every GET, ``read_write`` (Read &
  write) also every POST/PUT/PATCH/DELETE, ``admin`` also ``/api/v1/api-keys`` (list, create,
  revoke). A key below the route's scope gets 403 INSUFFICIENT_SCOPE naming the scope it
  has and the one needed. ``GET /api/v1/api-keys/current`` (the key describing itself) needs
  only ``read``.
- Rate limit: per key, the sandbox's shared limit (6000 requests a minute by default,
  ``Sandbox(rate_limit_per_minute=...)``) in a 60-second window; every answer carries
  X-RateLimit-Limit/-Remaining/-Reset, and going over answers 429 RATE_LIMITED with
  Retry-After (seconds).
- JSON everywhere; errors are ``{"error": {"code", "message", "details"?}}``. Body and query
  validation errors are 422 VALIDATION_ERROR naming the field (unknown body fields are
  refused, ids in a body that name nothing are 422 too); malformed JSON is 400, a missing
  resource in the path 404 ``<RESOURCE>_NOT_FOUND``, conflicts 409.
- One record answers ``{"data": {...}}``; a list answers ``{"data": [...], "pagination":
  {"page", "limit", "total", "has_more"}}`` with ``page`` (from 1) and ``limit`` (1-100,
  default 25). ``sort`` takes a field, ``-`` first for descending; ``*_since`` filters are
  inclusive ISO 8601 times. Times are UTC with microseconds and strictly increase, so
  creation order is time order.
- Phones are E.164 (``+`` and country code, checked with phonenumbers). Tags are names (an
  unknown name is created when added). Custom field values are keyed by the field's ``key``
  on a contact and checked against its type (text, number, date, dropdown, checkbox).
- Smart lists are saved contact filters (the same filter names as GET /api/v1/contacts),
  built in the app: the API lists them and their members. A member carries
  ``added_to_list_at``, when it last started matching; leaving and matching again is a new
  time.
- A deal's stage fixes its status (a stage may be a won or lost outcome). Moving a deal is
  ``POST /api/v1/deals/{id}/move``; moving it to the stage it is in changes nothing. Every
  entry into a stage (creation included) is a record in ``/api/v1/deal-stage-changes``.
- Sending an SMS goes from the account's number (phone-number inventory is internal); a
  contact who texted STOP is opted out and a send to them is 422 RECIPIENT_OPTED_OUT. An
  inbound text from a known number is tied to that contact.
- Logging a call records a completed call; live calls come from the dialer (here the admin
  routes below). ``completed_at`` is when the service recorded the call as completed.
- Lead routing: the first rule (by position) whose lead sources include the contact's (or a
  rule with none) assigns round-robin among its members who accept leads; 409
  NO_ELIGIBLE_MEMBER when none does. A named ``user_id`` overrides the rules.
- Relationships are symmetric; linking the same two contacts with the same type again
  answers 200 with the existing link (201 when created).
- API keys: the secret is in the create answer only; revoking is idempotent; a key cannot
  revoke itself (409).
- Not exposed, as the document says: sign-in callbacks, billing, organization admin, cron,
  health and debug routes, raw provider webhooks, media uploads, phone-number inventory,
  AI workflow helpers. SAMI OS documents no webhooks API, so nothing is pushed: every
  trigger polls.

Admin routes (``/_sandbox/sami-os/...``, no auth): ``POST sms/inbound`` {from, body} makes a
text arrive; ``POST calls`` {phone | contact_id, direction?, user_id?} starts a live call;
``POST calls/{id}/complete`` {outcome?, duration_seconds?, notes?} completes it.
"""
from __future__ import annotations

import secrets
import threading
from datetime import datetime, timedelta, timezone

import phonenumbers
from flask import Flask, g, request

from .common import ApiError, RateLimiter, create_service_app, json_body, raw_body
from .delivery import Deliverer, Scheduler

DEFAULT_KEY = "sami_test_key"  # read_write: the default connection
READ_KEY = "sami_read_key"
ADMIN_KEY = "sami_admin_key"
ACCOUNT_NUMBER = "+15125550100"
API = "/api/v1"
DEFAULT_LIMIT, MAX_LIMIT = 25, 100
SCOPES = {"read": "Read only", "read_write": "Read & write", "admin": "Admin"}
RANK = {"read": 0, "read_write": 1, "admin": 2}
CONTACT_STATUSES = ("new", "attempted", "active", "nurture", "under_contract", "past_client",
                    "archived")
RELATIONSHIP_TYPES = ("spouse", "partner", "co_buyer", "co_seller", "family",
                      "business_partner", "other")
PROPERTY_STATUSES = ("coming_soon", "active", "pending", "sold", "off_market")
PROPERTY_TYPES = ("single_family", "condo", "townhouse", "multi_family", "land", "other")
TASK_TYPES = ("call", "email", "text", "showing", "follow_up", "paperwork", "other")
APPOINTMENT_TYPES = ("showing", "listing_appointment", "buyer_consultation", "open_house",
                     "closing", "other")
CALL_OUTCOMES = ("connected", "left_voicemail", "no_answer", "busy", "wrong_number")
DIRECTIONS = ("inbound", "outbound")
FIELD_TYPES = ("text", "number", "date", "dropdown", "checkbox")
CONTACT_FILTERS = ("q", "email", "phone", "tag", "status", "lead_source_id", "assigned_to")
OPT_OUT_WORDS = {"stop", "stopall", "unsubscribe", "cancel", "end", "quit"}


# -- small validation helpers ---------------------------------------------------------------------

def invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "VALIDATION_ERROR", message, {"field": field})


def not_found(resource: str, value: str, field: str | None = None) -> ApiError:
    code = resource.upper().replace(" ", "_") + "_NOT_FOUND"
    return ApiError(404, code, f"{resource.capitalize()} {value} does not exist.",
                    {"field": field} if field else None)


def check_fields(body: dict, allowed: tuple | set, required: tuple = ()) -> None:
    """Refuse unknown fields and missing required ones, naming the first."""
    for name in body:
        if name not in allowed:
            raise invalid(name, f"Unknown field {name}; expected one of "
                                f"{', '.join(sorted(allowed))}.")
    for name in required:
        if body.get(name) in (None, ""):
            raise invalid(name, f"Field {name} is required.")


def text(body: dict, name: str, max_len: int = 255, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise invalid(name, f"Field {name} is required.")
        return None
    if not isinstance(value, str):
        raise invalid(name, f"Field {name} must be a string.")
    value = value.strip()
    if len(value) > max_len:
        raise invalid(name, f"Field {name} must be at most {max_len} characters.")
    return value


def choice(body: dict, name: str, choices: tuple, default=None):
    value = body.get(name, default)
    if value is None:
        return None
    if value not in choices:
        raise invalid(name, f"Field {name} must be one of {', '.join(choices)}.")
    return value


def number(body: dict, name: str, minimum: float = 0, integer: bool = False):
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            integer and not float(value).is_integer()):
        kind = "an integer" if integer else "a number"
        raise invalid(name, f"Field {name} must be {kind}.")
    if value < minimum:
        raise invalid(name, f"Field {name} must be at least {minimum:g}.")
    return int(value) if integer else value


def phone_value(value, name: str) -> str:
    """Return ``value`` if it is an E.164 phone number, else raise a 422."""
    message = (f"Field {name} must be an E.164 phone number: + then the country code and "
               f"number, e.g. +15125550123.")
    if not isinstance(value, str) or not value.startswith("+"):
        raise invalid(name, message)
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        raise invalid(name, message) from None
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if not phonenumbers.is_possible_number(parsed) or e164 != value:
        raise invalid(name, message)
    return value


def email_value(value, name: str = "email") -> str:
    if not isinstance(value, str) or "@" not in value or " " in value.strip() or \
            "." not in value.rsplit("@", 1)[-1]:
        raise invalid(name, f"Field {name} must be an email address.")
    return value.strip().lower()


def parse_time(value, name: str) -> str:
    """Return an ISO 8601 time as the service's own UTC format, or raise a 422."""
    try:
        moment = datetime.fromisoformat(str(value).strip())
    except (TypeError, ValueError):
        raise invalid(name, f"Field {name} must be an ISO 8601 date and time, e.g. "
                            "2026-03-01T15:00:00Z.") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return fmt(moment)


def parse_date(value, name: str) -> str:
    try:
        return datetime.strptime(str(value), "%Y-%m-%d").strftime("%Y-%m-%d")
    except ValueError:
        raise invalid(name, f"Field {name} must be a date, YYYY-MM-DD.") from None


def fmt(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def int_arg(name: str, default: int, low: int, high: int | None = None) -> int:
    raw = request.args.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid(name, f"Query parameter {name} must be an integer.") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise invalid(name, f"Query parameter {name} must be {bound}.")
    return value


def since_arg(name: str) -> str | None:
    raw = request.args.get(name)
    return parse_time(raw, name) if raw not in (None, "") else None


def page(items: list[dict], sorts: tuple[str, ...], default_sort: str) -> dict:
    """Sort, then cut one page of ``items`` (already rendered) by page/limit."""
    sort = request.args.get("sort") or default_sort
    allowed = [s for field in sorts for s in (field, "-" + field)]
    if sort not in allowed:
        raise invalid("sort", f"Query parameter sort must be one of {', '.join(allowed)}.")
    field = sort.lstrip("-")
    # None sorts apart from values, so a missing price or time never meets a real one
    items = sorted(items, key=lambda r: (r.get(field) is None, r.get(field) or 0, r["id"]),
                   reverse=sort.startswith("-"))
    number_, limit = int_arg("page", 1, 1), int_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    start = (number_ - 1) * limit
    return {"data": items[start:start + limit],
            "pagination": {"page": number_, "limit": limit, "total": len(items),
                           "has_more": start + limit < len(items)}}


def one(record: dict) -> dict:
    return {"data": record}


def nid(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


class SamiOs:
    """State and routes of the service; every access holds ``lock``."""

    name, prefix = "sami_os", "/sami-os"

    def __init__(self, lock: threading.RLock, limiter: RateLimiter, scheduler: Scheduler,
                 deliverer: Deliverer):
        self.lock = lock
        self.limiter = limiter
        self.scheduler = scheduler  # nothing is timed or pushed: SAMI OS has no webhooks API
        self.deliverer = deliverer
        self.reset(seed=False)

    # -- state ------------------------------------------------------------------------------------

    def reset(self, seed: bool = True) -> None:
        """Forget everything; with ``seed``, add the demo brokerage (keys always exist)."""
        with self.lock:
            self._last: datetime | None = None
            self.users: dict[str, dict] = {}
            self.keys: dict[str, dict] = {}
            self.secrets: dict[str, str] = {}
            self.lead_sources: dict[str, dict] = {}
            self.tags: dict[str, dict] = {}
            self.custom_fields: dict[str, dict] = {}
            self.smart_lists: dict[str, dict] = {}
            self.members: dict[str, dict[str, str]] = {}
            self.pipelines: dict[str, dict] = {}
            self.stages: dict[str, dict] = {}
            self.contacts: dict[str, dict] = {}
            self.relationships: dict[str, dict] = {}
            self.deals: dict[str, dict] = {}
            self.stage_changes: dict[str, dict] = {}
            self.properties: dict[str, dict] = {}
            self.tasks: dict[str, dict] = {}
            self.notes: dict[str, dict] = {}
            self.appointments: dict[str, dict] = {}
            self.sms: dict[str, dict] = {}
            self.calls: dict[str, dict] = {}
            self.rules: dict[str, dict] = {}
            self._turns: dict[str, int] = {}
            self._seed_team()
            if seed:
                self._seed_data()

    def _stamp(self, moment: datetime | None = None) -> str:
        moment = moment or datetime.now(timezone.utc)
        if self._last is not None and moment <= self._last:
            moment = self._last + timedelta(microseconds=1)
        self._last = moment
        return fmt(moment)

    def _seed_team(self) -> None:
        start = datetime.now(timezone.utc) - timedelta(days=30)
        for uid, name, email, phone, role, accepts in (
            ("usr_maya", "Maya Patel", "maya@sunbeltrealty.example", "+15125550101", "owner",
             False),
            ("usr_jordan", "Jordan Lee", "jordan@sunbeltrealty.example", "+15125550102",
             "agent", True),
            ("usr_sam", "Sam Rivera", "sam@sunbeltrealty.example", "+15125550103", "agent",
             True),
            ("usr_priya", "Priya Shah", "priya@sunbeltrealty.example", "+15125550104", "agent",
             False),
        ):
            self.users[uid] = {"id": uid, "name": name, "email": email, "phone": phone,
                               "role": role, "accepts_leads": accepts}
        for kid, secret, name, scope, user in (
            ("key_read", READ_KEY, "Reporting (read only)", "read", "usr_jordan"),
            ("key_rw", DEFAULT_KEY, "Zapier", "read_write", "usr_maya"),
            ("key_admin", ADMIN_KEY, "IT admin", "admin", "usr_maya"),
        ):
            self._add_key(kid, secret, name, scope, user, self._stamp(start))

    def _add_key(self, kid: str, secret: str, name: str, scope: str, user_id: str,
                 stamp: str) -> dict:
        record = {"id": kid, "name": name, "scope": scope, "scope_label": SCOPES[scope],
                  "hint": f"{secret[:5]}…{secret[-4:]}", "user_id": user_id,
                  "status": "active", "created_at": stamp, "last_used_at": None,
                  "revoked_at": None}
        self.keys[kid] = record
        self.secrets[secret] = kid
        return record

    def _seed_data(self) -> None:
        now = datetime.now(timezone.utc)
        at = lambda days: self._stamp(now - timedelta(days=days))  # noqa: E731
        for lid, name in (("ls_website", "Website"), ("ls_zillow", "Zillow"),
                          ("ls_referral", "Referral"), ("ls_open_house", "Open house"),
                          ("ls_sign_call", "Sign call")):
            self.lead_sources[lid] = {"id": lid, "name": name, "created_at": at(29)}
        for name in ("buyer", "seller", "hot", "first-time-buyer", "past-client"):
            self._tag(name, at(29))
        for fid, key, label, ftype, options in (
            ("cf_budget", "budget", "Budget", "number", None),
            ("cf_pre_approved", "pre_approved", "Pre-approved", "checkbox", None),
            ("cf_move_date", "target_move_date", "Target move date", "date", None),
            ("cf_financing", "financing", "Financing", "dropdown",
             ["cash", "conventional", "fha", "va"]),
            ("cf_neighborhoods", "neighborhoods", "Preferred neighborhoods", "text", None),
        ):
            self.custom_fields[fid] = {"id": fid, "key": key, "label": label, "type": ftype,
                                       "options": options, "created_at": at(29)}
        for pid, name, stages in (
            ("pl_buyers", "Buyers", (("new_lead", "New lead", None), ("showing", "Showing", None),
                                     ("offer", "Offer made", None),
                                     ("under_contract", "Under contract", None),
                                     ("closed", "Closed", "won"), ("lost", "Lost", "lost"))),
            ("pl_listings", "Listings", (("appointment", "Listing appointment", None),
                                         ("signed", "Listing signed", None),
                                         ("active", "Active", None),
                                         ("under_contract", "Under contract", None),
                                         ("sold", "Sold", "won"),
                                         ("withdrawn", "Withdrawn", "lost"))),
        ):
            self.pipelines[pid] = {"id": pid, "name": name, "created_at": at(29)}
            for position, (slug, label, outcome) in enumerate(stages, 1):
                sid = f"stg_{pid[3:]}_{slug}"
                self.stages[sid] = {"id": sid, "pipeline_id": pid, "name": label,
                                    "position": position, "outcome": outcome}
        for sid, name, filters in (
            ("sl_hot_buyers", "Hot buyers", {"tag": ["buyer", "hot"]}),
            ("sl_zillow_new", "New Zillow leads", {"lead_source_id": "ls_zillow",
                                                   "status": "new"}),
            ("sl_unassigned", "Unassigned leads", {"assigned_to": "none"}),
        ):
            self.smart_lists[sid] = {"id": sid, "name": name, "filters": filters,
                                     "created_at": at(28)}
            self.members[sid] = {}
        for rid, name, sources, members in (
            ("rr_zillow", "Zillow leads", ["ls_zillow"], ["usr_jordan", "usr_sam"]),
            ("rr_default", "Everyone else", [], ["usr_jordan", "usr_sam", "usr_priya"]),
        ):
            self.rules[rid] = {"id": rid, "name": name, "position": len(self.rules) + 1,
                               "method": "round_robin", "lead_source_ids": sources,
                               "member_ids": members}
        # Oldest first: times strictly increase, so the seed is created in time order.
        maya = "usr_maya"
        olivia = self.create_contact({"first_name": "Olivia", "last_name": "Martin",
                                      "email": "olivia.martin@example.com",
                                      "phone": "+15125550111", "status": "active",
                                      "lead_source_id": "ls_zillow", "assigned_to": "usr_jordan",
                                      "tags": ["buyer", "hot", "first-time-buyer"],
                                      "custom_fields": {"budget": 650000, "financing": "fha"}},
                                     maya, at(20))
        ethan = self.create_contact({"first_name": "Ethan", "last_name": "Martin",
                                     "email": "ethan.martin@example.com",
                                     "phone": "+15125550112", "status": "active",
                                     "lead_source_id": "ls_zillow", "assigned_to": "usr_jordan",
                                     "tags": ["buyer"]}, maya, at(20))
        self.link(olivia["id"], {"related_contact_id": ethan["id"], "type": "spouse"}, at(20))
        noah = self.create_contact({"first_name": "Noah", "last_name": "Williams",
                                    "email": "noah.w@example.com", "phone": "+15125550113",
                                    "status": "active", "lead_source_id": "ls_referral",
                                    "assigned_to": "usr_sam", "tags": ["seller"]}, maya, at(15))
        home = self.create_property({"street": "4120 Duval St", "city": "Austin", "state": "TX",
                                     "postal_code": "78751", "mls_number": "ATX-5521904",
                                     "status": "active", "price": 725000, "bedrooms": 3,
                                     "bathrooms": 2, "square_feet": 1840,
                                     "property_type": "single_family"}, maya, at(14))
        self.create_deal({"name": "Martin purchase", "pipeline_id": "pl_buyers",
                          "stage_id": "stg_buyers_showing",
                          "contact_ids": [olivia["id"], ethan["id"]], "value": 650000,
                          "assigned_to": "usr_jordan"}, maya, at(12))
        self.create_note({"body": "Wants a yard for the dog; school zone matters.",
                          "contact_id": olivia["id"]}, maya, at(12))
        self.create_deal({"name": "Williams listing - 4120 Duval St",
                          "pipeline_id": "pl_listings", "stage_id": "stg_listings_signed",
                          "contact_ids": [noah["id"]], "property_id": home["id"],
                          "value": 725000, "assigned_to": "usr_sam"}, maya, at(10))
        self.log_call({"contact_id": noah["id"], "direction": "outbound",
                       "outcome": "connected", "duration_seconds": 312,
                       "notes": "Talked pricing strategy."}, "usr_sam", at(9))
        self.create_task({"title": "Send Olivia the Hyde Park comps", "type": "email",
                          "contact_id": olivia["id"], "assigned_to": "usr_jordan",
                          "due_at": fmt(now + timedelta(days=1))}, maya, at(3))
        self.create_appointment({"title": "Showing: 4120 Duval St", "type": "showing",
                                 "contact_id": olivia["id"], "property_id": home["id"],
                                 "starts_at": fmt(now + timedelta(days=2)),
                                 "ends_at": fmt(now + timedelta(days=2, hours=1)),
                                 "location": "4120 Duval St, Austin, TX",
                                 "assigned_to": "usr_jordan"}, maya, at(3))
        emma = self.create_contact({"first_name": "Emma", "last_name": "Johnson",
                                    "email": "emma.johnson@example.com",
                                    "phone": "+15125550114", "status": "new",
                                    "lead_source_id": "ls_website", "tags": ["buyer"]},
                                   maya, at(2))
        self.send_sms({"contact_id": emma["id"],
                       "body": "Hi Emma, this is Maya from Sunbelt Realty. Happy to help!"},
                      maya, at(2))
        self.receive_sms(emma["phone"], "Thanks! Are you free Saturday?", at(2))

    def _tag(self, name: str, stamp: str | None = None) -> dict:
        tag = self.tags.get(name.lower())
        if tag is None:
            tag = {"id": nid("tag"), "name": name, "created_at": stamp or self._stamp()}
            self.tags[name.lower()] = tag
        return tag

    # -- rendering --------------------------------------------------------------------------------

    def contact_view(self, c: dict) -> dict:
        out = {**c, "tags": list(c["tags"]), "custom_fields": dict(c["custom_fields"])}
        source = self.lead_sources.get(c["lead_source_id"] or "")
        out["lead_source"] = source["name"] if source else None
        out["name"] = " ".join(p for p in (c["first_name"], c["last_name"]) if p) or None
        return out

    def pipeline_view(self, p: dict) -> dict:
        return {**p, "stages": self.pipeline_stages(p["id"])}

    def pipeline_stages(self, pipeline_id: str) -> list[dict]:
        return sorted((dict(s) for s in self.stages.values() if s["pipeline_id"] == pipeline_id),
                      key=lambda s: s["position"])

    def deal_view(self, d: dict) -> dict:
        stage = self.stages[d["stage_id"]]
        return {**d, "contact_ids": list(d["contact_ids"]),
                "pipeline_name": self.pipelines[d["pipeline_id"]]["name"],
                "stage_name": stage["name"]}

    def change_view(self, change: dict) -> dict:
        out = dict(change)
        out["stage_name"] = self.stages[change["stage_id"]]["name"]
        frm = self.stages.get(change["from_stage_id"] or "")
        out["from_stage_name"] = frm["name"] if frm else None
        out["deal"] = self.deal_view(self.deals[change["deal_id"]])
        return out

    def smart_list_view(self, sl: dict) -> dict:
        return {**sl, "filters": dict(sl["filters"]), "contact_count": len(self.members[sl["id"]])}

    def relationship_view(self, link: dict, contact_id: str) -> dict:
        other = link["contact_ids"][1] if link["contact_ids"][0] == contact_id \
            else link["contact_ids"][0]
        related = self.contact_view(self.contacts[other])
        return {"id": link["id"], "contact_id": contact_id, "related_contact_id": other,
                "related_contact_name": related["name"], "type": link["type"],
                "created_at": link["created_at"]}

    # -- lookups ----------------------------------------------------------------------------------

    def _get(self, table: dict, resource: str, record_id: str, field: str | None = None) -> dict:
        record = table.get(record_id)
        if record is None:
            raise not_found(resource, record_id, field)
        return record

    def _ref(self, body: dict, name: str, table: dict, resource: str) -> str | None:
        value = body.get(name)
        if value in (None, ""):
            return None
        if not isinstance(value, str) or value not in table:
            raise invalid(name, f"Field {name}: {resource} {value} does not exist.")
        return value

    def _user_ref(self, body: dict, name: str = "assigned_to") -> str | None:
        return self._ref(body, name, self.users, "team member")

    # -- contacts ---------------------------------------------------------------------------------

    def _custom_values(self, values, current: dict) -> dict:
        if not isinstance(values, dict):
            raise invalid("custom_fields", "Field custom_fields must be an object of field "
                                           "key to value.")
        out = dict(current)
        for ref, value in values.items():
            fld = self._field_by_ref(ref)
            if fld is None:
                raise invalid(f"custom_fields.{ref}", f"Custom field {ref} does not exist.")
            if value is None:
                out.pop(fld["key"], None)
            else:
                out[fld["key"]] = self._field_value(fld, value, f"custom_fields.{ref}")
        return out

    def _field_by_ref(self, ref: str) -> dict | None:
        return self.custom_fields.get(ref) or next(
            (f for f in self.custom_fields.values() if f["key"] == ref), None)

    def _field_value(self, fld: dict, value, name: str):
        kind = fld["type"]
        if kind == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise invalid(name, f"{fld['label']} is a number field; send a number.")
            return value
        if kind == "checkbox":
            if not isinstance(value, bool):
                raise invalid(name, f"{fld['label']} is a checkbox field; send true or false.")
            return value
        if kind == "date":
            return parse_date(value, name)
        if not isinstance(value, str):
            raise invalid(name, f"{fld['label']} is a {kind} field; send a string.")
        if kind == "dropdown" and value not in fld["options"]:
            raise invalid(name, f"{fld['label']} must be one of {', '.join(fld['options'])}.")
        if len(value) > 1000:
            raise invalid(name, f"{fld['label']} must be at most 1000 characters.")
        return value

    def _contact_fields(self, body: dict, current: dict | None) -> dict:
        out: dict = {}
        for name in ("first_name", "last_name"):
            if name in body:
                out[name] = text(body, name, 100)
        if "email" in body:
            out["email"] = email_value(body["email"]) if body["email"] else None
        if "phone" in body:
            out["phone"] = phone_value(body["phone"], "phone") if body["phone"] else None
        if "status" in body:
            out["status"] = choice(body, "status", CONTACT_STATUSES) or "new"
        if "lead_source_id" in body:
            out["lead_source_id"] = self._ref(body, "lead_source_id", self.lead_sources,
                                              "lead source")
        if "assigned_to" in body:
            out["assigned_to"] = self._user_ref(body)
        if "sms_opt_out" in body:
            if not isinstance(body["sms_opt_out"], bool):
                raise invalid("sms_opt_out", "Field sms_opt_out must be true or false.")
            out["sms_opt_out"] = body["sms_opt_out"]
        if "custom_fields" in body:
            out["custom_fields"] = self._custom_values(
                body["custom_fields"], current["custom_fields"] if current else {})
        merged = {**(current or {}), **out}
        if not any(merged.get(f) for f in ("first_name", "last_name", "email", "phone")):
            raise invalid("first_name", "A contact needs at least one of first_name, "
                                        "last_name, email or phone.")
        return out

    def create_contact(self, body: dict, user_id: str, stamp: str | None = None) -> dict:
        with self.lock:
            check_fields(body, ("first_name", "last_name", "email", "phone", "status",
                                "lead_source_id", "assigned_to", "tags", "custom_fields",
                                "sms_opt_out"))
            fields = self._contact_fields(body, None)
            tags = self._tag_names(body.get("tags") or [])
            stamp = stamp or self._stamp()
            contact = {"id": nid("con"), "first_name": None, "last_name": None, "email": None,
                       "phone": None, "status": "new", "lead_source_id": None,
                       "assigned_to": None, "tags": [], "custom_fields": {},
                       "sms_opt_out": False, **fields, "created_by": user_id,
                       "created_at": stamp, "updated_at": stamp}
            for name in tags:
                contact["tags"].append(self._tag(name)["name"])
            self.contacts[contact["id"]] = contact
            self._refresh_lists(contact)
            return self.contact_view(contact)

    def update_contact(self, contact_id: str, body: dict) -> dict:
        with self.lock:
            contact = self._get(self.contacts, "contact", contact_id)
            check_fields(body, ("first_name", "last_name", "email", "phone", "status",
                                "lead_source_id", "assigned_to", "custom_fields",
                                "sms_opt_out"))
            contact.update(self._contact_fields(body, contact))
            return self._touch(contact)

    def _touch(self, contact: dict) -> dict:
        contact["updated_at"] = self._stamp()
        self._refresh_lists(contact)
        return self.contact_view(contact)

    def _tag_names(self, tags) -> list[str]:
        if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags):
            raise invalid("tags", "Field tags must be a list of non-empty tag names.")
        if any(len(t.strip()) > 50 for t in tags):
            raise invalid("tags", "A tag name must be at most 50 characters.")
        return list(dict.fromkeys(t.strip() for t in tags))

    def add_tags(self, contact_id: str, body: dict) -> dict:
        with self.lock:
            contact = self._get(self.contacts, "contact", contact_id)
            check_fields(body, ("tags",), ("tags",))
            have = {t.lower() for t in contact["tags"]}
            for name in self._tag_names(body["tags"]):
                if name.lower() not in have:
                    contact["tags"].append(self._tag(name)["name"])
                    have.add(name.lower())
            return self._touch(contact)

    def remove_tag(self, contact_id: str, name: str) -> dict:
        with self.lock:
            contact = self._get(self.contacts, "contact", contact_id)
            kept = [t for t in contact["tags"] if t.lower() != name.strip().lower()]
            if kept != contact["tags"]:
                contact["tags"] = kept
                return self._touch(contact)
            return self.contact_view(contact)

    def set_custom_field(self, contact_id: str, field_id: str, body: dict) -> dict:
        with self.lock:
            contact = self._get(self.contacts, "contact", contact_id)
            fld = self._get(self.custom_fields, "custom field", field_id)
            check_fields(body, ("value",))
            if "value" not in body:
                raise invalid("value", "Field value is required (null clears the field).")
            contact["custom_fields"] = self._custom_values({fld["id"]: body["value"]},
                                                           contact["custom_fields"])
            return self._touch(contact)

    def matches(self, contact: dict, filters: dict) -> bool:
        """Whether ``contact`` passes contact filters (as GET /contacts and smart lists use)."""
        view = self.contact_view(contact)
        for name, wanted in filters.items():
            if wanted in (None, "", []):
                continue
            if name == "q":
                needle = str(wanted).lower()
                hay = " ".join(str(view.get(f) or "") for f in ("name", "email", "phone"))
                if needle not in hay.lower():
                    return False
            elif name == "tag":
                wanted_tags = wanted if isinstance(wanted, list) else [wanted]
                have = {t.lower() for t in contact["tags"]}
                if not all(str(t).lower() in have for t in wanted_tags):
                    return False
            elif name == "assigned_to":
                if (contact["assigned_to"] or "none") != wanted:
                    return False
            elif name == "email":
                if (contact["email"] or "") != str(wanted).strip().lower():
                    return False
            elif (contact.get(name) or "") != wanted:
                return False
        return True

    def _refresh_lists(self, contact: dict) -> None:
        for sl in self.smart_lists.values():
            members = self.members[sl["id"]]
            if self.matches(contact, sl["filters"]):
                members.setdefault(contact["id"], contact["updated_at"])
            else:
                members.pop(contact["id"], None)

    def contact_filters(self) -> dict:
        filters = {}
        for name in CONTACT_FILTERS:
            values = request.args.getlist(name)
            if not values or values == [""]:
                continue
            if name == "tag":
                filters[name] = values
            elif name == "phone":
                filters[name] = phone_value(values[0], "phone")
            elif name == "status":
                filters[name] = choice({"status": values[0]}, "status", CONTACT_STATUSES)
            else:
                filters[name] = values[0]
        return filters

    def list_contacts(self) -> dict:
        filters = self.contact_filters()
        since = since_arg("created_since")
        with self.lock:
            items = [self.contact_view(c) for c in self.contacts.values()
                     if self.matches(c, filters) and (since is None or c["created_at"] >= since)]
            return page(items, ("created_at", "updated_at"), "-created_at")

    def smart_list_contacts(self, list_id: str) -> dict:
        since = since_arg("added_since")
        with self.lock:
            self._get(self.smart_lists, "smart list", list_id)
            items = [{**self.contact_view(self.contacts[cid]), "smart_list_id": list_id,
                      "added_to_list_at": added}
                     for cid, added in self.members[list_id].items()
                     if since is None or added >= since]
            return page(items, ("added_to_list_at", "created_at"), "-added_to_list_at")

    # -- relationships ----------------------------------------------------------------------------

    def link(self, contact_id: str, body: dict, stamp: str | None = None) -> tuple[dict, bool]:
        """Link two contacts; return (link, created)."""
        with self.lock:
            self._get(self.contacts, "contact", contact_id)
            check_fields(body, ("related_contact_id", "type"), ("related_contact_id", "type"))
            other = self._ref(body, "related_contact_id", self.contacts, "contact")
            if other == contact_id:
                raise invalid("related_contact_id", "A contact cannot be related to itself.")
            kind = choice(body, "type", RELATIONSHIP_TYPES)
            pair = {contact_id, other}
            for link in self.relationships.values():
                if set(link["contact_ids"]) == pair and link["type"] == kind:
                    return self.relationship_view(link, contact_id), False
            link = {"id": nid("rel"), "contact_ids": [contact_id, other], "type": kind,
                    "created_at": stamp or self._stamp()}
            self.relationships[link["id"]] = link
            return self.relationship_view(link, contact_id), True

    def contact_relationships(self, contact_id: str) -> dict:
        with self.lock:
            self._get(self.contacts, "contact", contact_id)
            items = [self.relationship_view(link, contact_id)
                     for link in self.relationships.values() if contact_id in link["contact_ids"]]
            return page(items, ("created_at",), "created_at")

    # -- pipeline: deals --------------------------------------------------------------------------

    def _stage_for(self, body: dict, pipeline_id: str | None) -> dict:
        stage_id = body.get("stage_id")
        if stage_id in (None, ""):
            if pipeline_id is None:
                raise invalid("stage_id", "Field stage_id is required.")
            return self.pipeline_stages(pipeline_id)[0]
        stage = self.stages.get(stage_id) if isinstance(stage_id, str) else None
        if stage is None:
            raise invalid("stage_id", f"Field stage_id: stage {stage_id} does not exist.")
        if pipeline_id is not None and stage["pipeline_id"] != pipeline_id:
            raise invalid("stage_id", f"Stage {stage_id} ({stage['name']}) is not in pipeline "
                                      f"{pipeline_id}.")
        return stage

    def _contact_ids(self, body: dict) -> list[str]:
        ids = body.get("contact_ids", [])
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise invalid("contact_ids", "Field contact_ids must be a list of contact ids.")
        for cid in ids:
            if cid not in self.contacts:
                raise invalid("contact_ids", f"Field contact_ids: contact {cid} does not exist.")
        return list(dict.fromkeys(ids))

    def _deal_fields(self, body: dict) -> dict:
        out: dict = {}
        if "name" in body:
            out["name"] = text(body, "name", 200, required=True)
        if "value" in body:
            out["value"] = number(body, "value")
        if "expected_close_date" in body:
            raw = body["expected_close_date"]
            out["expected_close_date"] = parse_date(raw, "expected_close_date") if raw else None
        if "property_id" in body:
            out["property_id"] = self._ref(body, "property_id", self.properties, "property")
        if "assigned_to" in body:
            out["assigned_to"] = self._user_ref(body)
        if "contact_ids" in body:
            out["contact_ids"] = self._contact_ids(body)
        return out

    def create_deal(self, body: dict, user_id: str, stamp: str | None = None) -> dict:
        with self.lock:
            check_fields(body, ("name", "pipeline_id", "stage_id", "value", "expected_close_date",
                                "property_id", "assigned_to", "contact_ids"),
                         ("name", "pipeline_id"))
            pipeline_id = self._ref(body, "pipeline_id", self.pipelines, "pipeline")
            stage = self._stage_for(body, pipeline_id)
            stamp = stamp or self._stamp()
            deal = {"id": nid("deal"), "name": None, "pipeline_id": pipeline_id,
                    "stage_id": stage["id"], "status": stage["outcome"] or "open",
                    "value": None, "currency": "USD", "contact_ids": [], "property_id": None,
                    "assigned_to": None, "expected_close_date": None,
                    **self._deal_fields(body), "stage_entered_at": stamp,
                    "created_by": user_id, "created_at": stamp, "updated_at": stamp}
            self.deals[deal["id"]] = deal
            self._enter(deal, None, user_id, stamp)
            return self.deal_view(deal)

    def update_deal(self, deal_id: str, body: dict) -> dict:
        with self.lock:
            deal = self._get(self.deals, "deal", deal_id)
            if "stage_id" in body or "pipeline_id" in body:
                raise invalid("stage_id", "Move a deal with POST /api/v1/deals/{id}/move.")
            check_fields(body, ("name", "value", "expected_close_date", "property_id",
                                "assigned_to", "contact_ids"))
            deal.update(self._deal_fields(body), updated_at=self._stamp())
            return self.deal_view(deal)

    def move_deal(self, deal_id: str, body: dict, user_id: str) -> dict:
        with self.lock:
            deal = self._get(self.deals, "deal", deal_id)
            check_fields(body, ("stage_id", "pipeline_id"), ("stage_id",))
            pipeline_id = self._ref(body, "pipeline_id", self.pipelines, "pipeline")
            stage = self._stage_for(body, pipeline_id)
            if stage["id"] != deal["stage_id"]:
                previous = deal["stage_id"]
                stamp = self._stamp()
                deal.update(stage_id=stage["id"], pipeline_id=stage["pipeline_id"],
                            status=stage["outcome"] or "open", stage_entered_at=stamp,
                            updated_at=stamp)
                self._enter(deal, previous, user_id, stamp)
            return self.deal_view(deal)

    def _enter(self, deal: dict, previous: str | None, user_id: str, stamp: str) -> None:
        change = {"id": nid("dsc"), "deal_id": deal["id"], "pipeline_id": deal["pipeline_id"],
                  "stage_id": deal["stage_id"], "from_stage_id": previous,
                  "entered_at": stamp, "moved_by": user_id}
        self.stage_changes[change["id"]] = change

    def list_deals(self) -> dict:
        args = request.args
        status = choice({"status": args.get("status") or None}, "status", ("open", "won", "lost"))
        since = since_arg("created_since")
        q = (args.get("q") or "").lower()
        with self.lock:
            items = [self.deal_view(d) for d in self.deals.values()
                     if (not q or q in d["name"].lower())
                     and all(not args.get(f) or d[f] == args[f]
                             for f in ("pipeline_id", "stage_id", "property_id", "assigned_to"))
                     and (not args.get("contact_id") or args["contact_id"] in d["contact_ids"])
                     and (status is None or d["status"] == status)
                     and (since is None or d["created_at"] >= since)]
            return page(items, ("created_at", "updated_at", "stage_entered_at"), "-created_at")

    def list_stage_changes(self) -> dict:
        args = request.args
        since = since_arg("entered_since")
        with self.lock:
            items = [self.change_view(c) for c in self.stage_changes.values()
                     if all(not args.get(f) or c[f] == args[f]
                            for f in ("deal_id", "pipeline_id", "stage_id"))
                     and (since is None or c["entered_at"] >= since)]
            return page(items, ("entered_at",), "-entered_at")

    # -- pipeline: properties, tasks, notes, appointments -----------------------------------------

    def create_property(self, body: dict, user_id: str, stamp: str | None = None) -> dict:
        with self.lock:
            check_fields(body, ("street", "city", "state", "postal_code", "mls_number",
                                "status", "price", "bedrooms", "bathrooms", "square_feet",
                                "property_type"), ("street", "city", "state"))
            mls = text(body, "mls_number", 40)
            if mls:
                for existing in self.properties.values():
                    if (existing["mls_number"] or "").lower() == mls.lower():
                        raise ApiError(409, "PROPERTY_EXISTS",
                                       f"A property with MLS number {mls} already exists "
                                       f"({existing['id']}).",
                                       {"field": "mls_number", "property_id": existing["id"]})
            stamp = stamp or self._stamp()
            prop = {"id": nid("prop"), "street": text(body, "street", 200),
                    "city": text(body, "city", 100), "state": text(body, "state", 50),
                    "postal_code": text(body, "postal_code", 20), "mls_number": mls,
                    "status": choice(body, "status", PROPERTY_STATUSES, "active"),
                    "price": number(body, "price"),
                    "bedrooms": number(body, "bedrooms", integer=True),
                    "bathrooms": number(body, "bathrooms"),
                    "square_feet": number(body, "square_feet", integer=True),
                    "property_type": choice(body, "property_type", PROPERTY_TYPES),
                    "created_by": user_id, "created_at": stamp, "updated_at": stamp}
            parts = [prop["street"], prop["city"],
                     " ".join(p for p in (prop["state"], prop["postal_code"]) if p)]
            prop["address"] = ", ".join(p for p in parts if p)
            self.properties[prop["id"]] = prop
            return dict(prop)

    def list_properties(self) -> dict:
        args = request.args
        q = (args.get("q") or "").lower()
        status = choice({"status": args.get("status") or None}, "status", PROPERTY_STATUSES)
        with self.lock:
            items = [dict(p) for p in self.properties.values()
                     if (not q or q in p["address"].lower())
                     and (not args.get("mls_number")
                          or (p["mls_number"] or "").lower() == args["mls_number"].lower())
                     and (not args.get("city") or p["city"].lower() == args["city"].lower())
                     and (status is None or p["status"] == status)]
            return page(items, ("created_at", "price"), "-created_at")

    def create_task(self, body: dict, user_id: str, stamp: str | None = None) -> dict:
        with self.lock:
            check_fields(body, ("title", "type", "due_at", "contact_id", "deal_id",
                                "assigned_to", "notes"), ("title",))
            stamp = stamp or self._stamp()
            task = {"id": nid("task"), "title": text(body, "title", 200, required=True),
                    "type": choice(body, "type", TASK_TYPES, "follow_up"),
                    "due_at": parse_time(body["due_at"], "due_at") if body.get("due_at")
                    else None,
                    "status": "open", "completed_at": None,
                    "contact_id": self._ref(body, "contact_id", self.contacts, "contact"),
                    "deal_id": self._ref(body, "deal_id", self.deals, "deal"),
                    "assigned_to": self._user_ref(body) or user_id,
                    "notes": text(body, "notes", 5000), "created_by": user_id,
                    "created_at": stamp, "updated_at": stamp}
            self.tasks[task["id"]] = task
            return dict(task)

    def complete_task(self, task_id: str) -> dict:
        with self.lock:
            task = self._get(self.tasks, "task", task_id)
            if task["status"] != "completed":
                stamp = self._stamp()
                task.update(status="completed", completed_at=stamp, updated_at=stamp)
            return dict(task)

    def create_note(self, body: dict, user_id: str, stamp: str | None = None) -> dict:
        with self.lock:
            check_fields(body, ("body", "contact_id", "deal_id"), ("body",))
            note = {"id": nid("note"), "body": text(body, "body", 10000, required=True),
                    "contact_id": self._ref(body, "contact_id", self.contacts, "contact"),
                    "deal_id": self._ref(body, "deal_id", self.deals, "deal"),
                    "created_by": user_id, "created_at": stamp or self._stamp()}
            if not note["contact_id"] and not note["deal_id"]:
                raise invalid("contact_id", "A note belongs to a contact or a deal: give "
                                            "contact_id, deal_id or both.")
            self.notes[note["id"]] = note
            return dict(note)

    def create_appointment(self, body: dict, user_id: str, stamp: str | None = None) -> dict:
        with self.lock:
            check_fields(body, ("title", "type", "starts_at", "ends_at", "location",
                                "contact_id", "deal_id", "property_id", "assigned_to", "notes"),
                         ("title", "starts_at"))
            starts = parse_time(body["starts_at"], "starts_at")
            ends = parse_time(body["ends_at"], "ends_at") if body.get("ends_at") else None
            if ends is None:
                ends = fmt(datetime.fromisoformat(starts) + timedelta(hours=1))
            if ends <= starts:
                raise invalid("ends_at", "Field ends_at must be after starts_at.")
            appointment = {
                "id": nid("appt"), "title": text(body, "title", 200, required=True),
                "type": choice(body, "type", APPOINTMENT_TYPES, "other"),
                "starts_at": starts, "ends_at": ends, "location": text(body, "location", 300),
                "contact_id": self._ref(body, "contact_id", self.contacts, "contact"),
                "deal_id": self._ref(body, "deal_id", self.deals, "deal"),
                "property_id": self._ref(body, "property_id", self.properties, "property"),
                "assigned_to": self._user_ref(body) or user_id,
                "notes": text(body, "notes", 5000), "created_by": user_id,
                "created_at": stamp or self._stamp()}
            self.appointments[appointment["id"]] = appointment
            return dict(appointment)

    def _simple_list(self, table: dict, filters: tuple[str, ...], sorts: tuple[str, ...],
                     default_sort: str, since: tuple[str, str] | None = None,
                     choices: dict | None = None) -> dict:
        args = request.args
        for name, allowed in (choices or {}).items():
            choice({name: args.get(name) or None}, name, allowed)
        stamp = since_arg(since[0]) if since else None
        with self.lock:
            items = [dict(r) for r in table.values()
                     if all(not args.get(f) or r.get(f) == args[f] for f in filters)
                     and (stamp is None or (r.get(since[1]) or "") >= stamp)]
            return page(items, sorts, default_sort)

    # -- SMS and calls ----------------------------------------------------------------------------

    def _contact_by_phone(self, phone: str) -> dict | None:
        return next((c for c in self.contacts.values() if c["phone"] == phone), None)

    def send_sms(self, body: dict, user_id: str, stamp: str | None = None) -> dict:
        with self.lock:
            check_fields(body, ("to", "contact_id", "body"), ("body",))
            message = text(body, "body", 1600, required=True)
            contact_id = self._ref(body, "contact_id", self.contacts, "contact")
            contact = self.contacts.get(contact_id or "")
            to = phone_value(body["to"], "to") if body.get("to") else None
            if to is None:
                if contact is None:
                    raise invalid("to", "Give the number to text (to) or a contact_id.")
                if not contact["phone"]:
                    raise invalid("contact_id", f"Contact {contact_id} has no phone number.")
                to = contact["phone"]
            contact = contact or self._contact_by_phone(to)
            if contact is not None and contact["sms_opt_out"]:
                raise ApiError(422, "RECIPIENT_OPTED_OUT",
                               f"The recipient {to} opted out of text messages (replied STOP).",
                               {"field": "to"})
            sms = {"id": nid("sms"), "direction": "outbound", "from": ACCOUNT_NUMBER, "to": to,
                   "body": message, "status": "sent",
                   "contact_id": contact["id"] if contact else None, "user_id": user_id,
                   "created_at": stamp or self._stamp()}
            self.sms[sms["id"]] = sms
            return dict(sms)

    def receive_sms(self, sender: str, message: str, stamp: str | None = None) -> dict:
        """Record an inbound text from ``sender`` (an admin route in the sandbox)."""
        with self.lock:
            phone_value(sender, "from")
            text({"body": message}, "body", 1600, required=True)
            contact = self._contact_by_phone(sender)
            if contact is not None and message.strip().lower() in OPT_OUT_WORDS:
                contact["sms_opt_out"] = True
                self._touch(contact)
            sms = {"id": nid("sms"), "direction": "inbound", "from": sender,
                   "to": ACCOUNT_NUMBER, "body": message, "status": "received",
                   "contact_id": contact["id"] if contact else None,
                   "user_id": contact["assigned_to"] if contact else None,
                   "created_at": stamp or self._stamp()}
            self.sms[sms["id"]] = sms
            return dict(sms)

    def log_call(self, body: dict, user_id: str, stamp: str | None = None) -> dict:
        with self.lock:
            check_fields(body, ("contact_id", "phone", "direction", "outcome",
                                "duration_seconds", "notes", "started_at"),
                         ("direction", "outcome"))
            contact_id = self._ref(body, "contact_id", self.contacts, "contact")
            phone = phone_value(body["phone"], "phone") if body.get("phone") else None
            if contact_id is None and phone is None:
                raise invalid("contact_id", "Give the contact_id or the phone of the call.")
            contact = self.contacts.get(contact_id or "") or self._contact_by_phone(phone or "")
            stamp = stamp or self._stamp()
            duration = number(body, "duration_seconds", integer=True) or 0
            started = parse_time(body["started_at"], "started_at") if body.get("started_at") \
                else fmt(datetime.fromisoformat(stamp) - timedelta(seconds=duration))
            call = {"id": nid("call"), "direction": choice(body, "direction", DIRECTIONS),
                    "phone": phone or (contact or {}).get("phone"),
                    "contact_id": contact["id"] if contact else None, "user_id": user_id,
                    "status": "completed", "outcome": choice(body, "outcome", CALL_OUTCOMES),
                    "duration_seconds": duration, "notes": text(body, "notes", 5000),
                    "source": "logged", "started_at": started, "completed_at": stamp,
                    "created_at": stamp}
            self.calls[call["id"]] = call
            return dict(call)

    def start_call(self, body: dict) -> dict:
        """Start a live dialer call (admin route): in_progress until completed."""
        with self.lock:
            contact_id = self._ref(body, "contact_id", self.contacts, "contact")
            phone = phone_value(body["phone"], "phone") if body.get("phone") else None
            contact = self.contacts.get(contact_id or "") or self._contact_by_phone(phone or "")
            phone = phone or (contact or {}).get("phone")
            if not phone:
                raise invalid("phone", "Give the phone of the call or a contact with one.")
            stamp = self._stamp()
            call = {"id": nid("call"), "direction": choice(body, "direction", DIRECTIONS,
                                                           "inbound"),
                    "phone": phone, "contact_id": contact["id"] if contact else None,
                    "user_id": self._user_ref(body, "user_id") or (
                        (contact or {}).get("assigned_to")) or "usr_maya",
                    "status": "in_progress", "outcome": None, "duration_seconds": None,
                    "notes": None, "source": "dialer", "started_at": stamp,
                    "completed_at": None, "created_at": stamp}
            self.calls[call["id"]] = call
            return dict(call)

    def complete_call(self, call_id: str, body: dict | None = None) -> dict:
        """Complete a live call (admin route); 409 when it already completed."""
        body = body or {}
        with self.lock:
            call = self._get(self.calls, "call", call_id)
            if call["status"] == "completed":
                raise ApiError(409, "CALL_ALREADY_COMPLETED", f"Call {call_id} already completed.")
            stamp = self._stamp()
            started = datetime.fromisoformat(call["started_at"])
            default = max(1, int((datetime.fromisoformat(stamp) - started).total_seconds()))
            call.update(status="completed", completed_at=stamp,
                        outcome=choice(body, "outcome", CALL_OUTCOMES, "connected"),
                        duration_seconds=number(body, "duration_seconds", integer=True)
                        or default, notes=text(body, "notes", 5000))
            return dict(call)

    # -- lead routing -----------------------------------------------------------------------------

    def assign(self, body: dict) -> dict:
        with self.lock:
            check_fields(body, ("contact_id", "user_id"), ("contact_id",))
            contact_id = self._ref(body, "contact_id", self.contacts, "contact")
            contact = self.contacts[contact_id]
            user_id = self._user_ref(body, "user_id")
            rule = None
            if user_id is None:
                rule = next((r for r in sorted(self.rules.values(), key=lambda r: r["position"])
                             if not r["lead_source_ids"]
                             or contact["lead_source_id"] in r["lead_source_ids"]), None)
                eligible = [m for m in (rule or {}).get("member_ids", [])
                            if self.users[m]["accepts_leads"]]
                if not eligible:
                    raise ApiError(409, "NO_ELIGIBLE_MEMBER",
                                   "No routing rule has a team member accepting leads for this "
                                   "contact; name a user_id instead.")
                turn = self._turns.get(rule["id"], 0)
                user_id = eligible[turn % len(eligible)]
                self._turns[rule["id"]] = turn + 1
            contact["assigned_to"] = user_id
            self._touch(contact)
            user = self.users[user_id]
            return {"contact_id": contact_id, "assigned_to": user_id,
                    "assigned_to_name": user["name"], "assigned_to_email": user["email"],
                    "method": "rule" if rule else "manual",
                    "rule_id": rule["id"] if rule else None,
                    "rule_name": rule["name"] if rule else None,
                    "assigned_at": contact["updated_at"]}

    # -- API keys ---------------------------------------------------------------------------------

    def create_key(self, body: dict, user_id: str) -> dict:
        with self.lock:
            check_fields(body, ("name", "scope"), ("name", "scope"))
            name = text(body, "name", 100, required=True)
            scope = choice(body, "scope", tuple(SCOPES))
            secret = "sami_" + secrets.token_urlsafe(24)
            record = self._add_key(nid("key"), secret, name, scope, user_id, self._stamp())
            return {**record, "key": secret}

    def revoke_key(self, key_id: str) -> dict:
        with self.lock:
            record = self._get(self.keys, "API key", key_id)
            if key_id == g.key_id:
                raise ApiError(409, "CANNOT_REVOKE_CURRENT_KEY",
                               "An API key cannot revoke itself; use another admin key.")
            if record["status"] != "revoked":
                record.update(status="revoked", revoked_at=self._stamp())
            return dict(record)

    # -- the Sandbox composes services through these (see app.py) ---------------------------------

    def connection(self, root: str) -> dict:
        return {"base_url": root + self.prefix, "credentials": {"api_key": DEFAULT_KEY}}

    def seeded(self) -> dict:
        with self.lock:
            contacts = {c["first_name"].lower(): c["id"] for c in self.contacts.values()
                        if c["first_name"]}
            return {"api_key": DEFAULT_KEY, "read_api_key": READ_KEY, "admin_api_key": ADMIN_KEY,
                    "account_number": ACCOUNT_NUMBER, "pipeline_id": "pl_buyers",
                    "stage_ids": [s["id"] for s in self.pipeline_stages("pl_buyers")],
                    "smart_list_id": "sl_hot_buyers", "user_ids": list(self.users),
                    "contacts": contacts, "lead_source_ids": list(self.lead_sources)}

    def state(self) -> dict:
        with self.lock:
            return {
                "users": [dict(u) for u in self.users.values()],
                "api_keys": [dict(k) for k in self.keys.values()],
                "lead_sources": [dict(s) for s in self.lead_sources.values()],
                "tags": [dict(t) for t in self.tags.values()],
                "custom_fields": [dict(f) for f in self.custom_fields.values()],
                "smart_lists": [{**self.smart_list_view(s),
                                 "members": dict(self.members[s["id"]])}
                                for s in self.smart_lists.values()],
                "pipelines": [self.pipeline_view(p) for p in self.pipelines.values()],
                "contacts": [self.contact_view(c) for c in self.contacts.values()],
                "relationships": [{**r, "contact_ids": list(r["contact_ids"])}
                                  for r in self.relationships.values()],
                "deals": [self.deal_view(d) for d in self.deals.values()],
                "stage_changes": [dict(c) for c in self.stage_changes.values()],
                "properties": [dict(p) for p in self.properties.values()],
                "tasks": [dict(t) for t in self.tasks.values()],
                "notes": [dict(n) for n in self.notes.values()],
                "appointments": [dict(a) for a in self.appointments.values()],
                "sms": [dict(m) for m in self.sms.values()],
                "calls": [dict(c) for c in self.calls.values()],
                "routing_rules": [{**r, "member_ids": list(r["member_ids"])}
                                  for r in self.rules.values()],
            }

    def register_admin(self, app) -> None:
        """Add /_sandbox/sami-os/...: an inbound text arrives, a live call starts or completes."""

        def body() -> dict:
            return json_body(422) if raw_body().strip() else {}

        @app.post("/sami-os/sms/inbound")
        def sami_os_inbound_sms():
            data = body()
            return one(self.receive_sms(data.get("from"), data.get("body"))), 201

        @app.post("/sami-os/calls")
        def sami_os_start_call():
            return one(self.start_call(body())), 201

        @app.post("/sami-os/calls/<call_id>/complete")
        def sami_os_complete_call(call_id):
            return one(self.complete_call(call_id, body()))

    # -- HTTP -------------------------------------------------------------------------------------

    def _authenticate(self):
        scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise ApiError(401, "UNAUTHORIZED",
                           "Missing API key: send it as Authorization: Bearer <api key>.")
        with self.lock:
            record = self.keys.get(self.secrets.get(secret, ""))
            if record is None or record["status"] != "active":
                raise ApiError(401, "UNAUTHORIZED", "The API key is invalid or revoked.")
            record["last_used_at"] = self._stamp()
            g.key_id, g.user_id, g.scope = record["id"], record["user_id"], record["scope"]
        if request.url_rule is not None:  # an unknown path answers 404, not 403
            needed = required_scope(request.method, request.url_rule.rule)
            if RANK[g.scope] < RANK[needed]:
                raise ApiError(403, "INSUFFICIENT_SCOPE",
                               f"This API key has the {SCOPES[g.scope]} scope; "
                               f"{request.method} {request.url_rule.rule} needs "
                               f"{SCOPES[needed]} ({needed}).",
                               {"scope": g.scope, "required_scope": needed})
        return ("sami_os", record["id"])

    def create_app(self) -> Flask:
        """Build the Flask app serving the table in the app's docstring under /api/v1."""
        app = create_service_app(__name__, self._authenticate, self.limiter)
        body = lambda: json_body(422)  # noqa: E731

        # contacts, tags, custom field values, relationships
        @app.get(f"{API}/contacts")
        def list_contacts():
            return self.list_contacts()

        @app.post(f"{API}/contacts")
        def create_contact():
            return one(self.create_contact(body(), g.user_id)), 201

        @app.get(f"{API}/contacts/<contact_id>")
        def get_contact(contact_id):
            with self.lock:
                return one(self.contact_view(self._get(self.contacts, "contact", contact_id)))

        @app.patch(f"{API}/contacts/<contact_id>")
        def update_contact(contact_id):
            return one(self.update_contact(contact_id, body()))

        @app.put(f"{API}/contacts/<contact_id>/custom-fields/<field_id>")
        def set_custom_field(contact_id, field_id):
            return one(self.set_custom_field(contact_id, field_id, body()))

        @app.post(f"{API}/contacts/<contact_id>/tags")
        def add_tags(contact_id):
            return one(self.add_tags(contact_id, body()))

        @app.delete(f"{API}/contacts/<contact_id>/tags/<path:tag>")
        def remove_tag(contact_id, tag):
            return one(self.remove_tag(contact_id, tag))

        @app.get(f"{API}/contacts/<contact_id>/relationships")
        def list_relationships(contact_id):
            return self.contact_relationships(contact_id)

        @app.post(f"{API}/contacts/<contact_id>/relationships")
        def create_relationship(contact_id):
            link, created = self.link(contact_id, body())
            return one(link), 201 if created else 200

        # smart lists and metadata
        @app.get(f"{API}/smart-lists")
        def list_smart_lists():
            with self.lock:
                return page([self.smart_list_view(s) for s in self.smart_lists.values()],
                            ("name", "created_at"), "name")

        @app.get(f"{API}/smart-lists/<list_id>")
        def get_smart_list(list_id):
            with self.lock:
                return one(self.smart_list_view(self._get(self.smart_lists, "smart list",
                                                          list_id)))

        @app.get(f"{API}/smart-lists/<list_id>/contacts")
        def smart_list_contacts(list_id):
            return self.smart_list_contacts(list_id)

        @app.get(f"{API}/custom-fields")
        def list_custom_fields():
            with self.lock:
                return page([dict(f) for f in self.custom_fields.values()],
                            ("label", "created_at"), "label")

        @app.get(f"{API}/custom-fields/<field_id>")
        def get_custom_field(field_id):
            with self.lock:
                return one(dict(self._get(self.custom_fields, "custom field", field_id)))

        @app.get(f"{API}/tags")
        def list_tags():
            with self.lock:
                counts = {t["name"].lower(): 0 for t in self.tags.values()}
                for c in self.contacts.values():
                    for t in c["tags"]:
                        counts[t.lower()] = counts.get(t.lower(), 0) + 1
                return page([{**t, "contact_count": counts[t["name"].lower()]}
                             for t in self.tags.values()], ("name", "created_at"), "name")

        @app.get(f"{API}/lead-sources")
        def list_lead_sources():
            with self.lock:
                return page([dict(s) for s in self.lead_sources.values()],
                            ("name", "created_at"), "name")

        # pipelines and deals
        @app.get(f"{API}/pipelines")
        def list_pipelines():
            with self.lock:
                return page([self.pipeline_view(p) for p in self.pipelines.values()],
                            ("name", "created_at"), "name")

        @app.get(f"{API}/pipelines/<pipeline_id>")
        def get_pipeline(pipeline_id):
            with self.lock:
                return one(self.pipeline_view(self._get(self.pipelines, "pipeline",
                                                        pipeline_id)))

        @app.get(f"{API}/pipelines/<pipeline_id>/stages")
        def list_stages(pipeline_id):
            with self.lock:
                self._get(self.pipelines, "pipeline", pipeline_id)
                return page(self.pipeline_stages(pipeline_id), ("position",), "position")

        @app.get(f"{API}/deals")
        def list_deals():
            return self.list_deals()

        @app.post(f"{API}/deals")
        def create_deal():
            return one(self.create_deal(body(), g.user_id)), 201

        @app.get(f"{API}/deals/<deal_id>")
        def get_deal(deal_id):
            with self.lock:
                return one(self.deal_view(self._get(self.deals, "deal", deal_id)))

        @app.patch(f"{API}/deals/<deal_id>")
        def update_deal(deal_id):
            return one(self.update_deal(deal_id, body()))

        @app.post(f"{API}/deals/<deal_id>/move")
        def move_deal(deal_id):
            return one(self.move_deal(deal_id, body(), g.user_id))

        @app.get(f"{API}/deal-stage-changes")
        def list_stage_changes():
            return self.list_stage_changes()

        # properties, tasks, notes, appointments
        @app.get(f"{API}/properties")
        def list_properties():
            return self.list_properties()

        @app.post(f"{API}/properties")
        def create_property():
            return one(self.create_property(body(), g.user_id)), 201

        @app.get(f"{API}/properties/<property_id>")
        def get_property(property_id):
            with self.lock:
                return one(dict(self._get(self.properties, "property", property_id)))

        @app.get(f"{API}/tasks")
        def list_tasks():
            return self._simple_list(self.tasks, ("contact_id", "deal_id", "assigned_to",
                                                  "status"),
                                     ("created_at", "due_at"), "-created_at",
                                     choices={"status": ("open", "completed")})

        @app.post(f"{API}/tasks")
        def create_task():
            return one(self.create_task(body(), g.user_id)), 201

        @app.get(f"{API}/tasks/<task_id>")
        def get_task(task_id):
            with self.lock:
                return one(dict(self._get(self.tasks, "task", task_id)))

        @app.post(f"{API}/tasks/<task_id>/complete")
        def complete_task(task_id):
            return one(self.complete_task(task_id))

        @app.get(f"{API}/notes")
        def list_notes():
            return self._simple_list(self.notes, ("contact_id", "deal_id"), ("created_at",),
                                     "-created_at")

        @app.post(f"{API}/notes")
        def create_note():
            return one(self.create_note(body(), g.user_id)), 201

        @app.get(f"{API}/appointments")
        def list_appointments():
            return self._simple_list(self.appointments, ("contact_id", "deal_id",
                                                         "assigned_to", "type"),
                                     ("created_at", "starts_at"), "-created_at",
                                     ("created_since", "created_at"))

        @app.post(f"{API}/appointments")
        def create_appointment():
            return one(self.create_appointment(body(), g.user_id)), 201

        @app.get(f"{API}/appointments/<appointment_id>")
        def get_appointment(appointment_id):
            with self.lock:
                return one(dict(self._get(self.appointments, "appointment", appointment_id)))

        # SMS and calls
        @app.get(f"{API}/sms")
        def list_sms():
            return self._simple_list(self.sms, ("contact_id", "direction"), ("created_at",),
                                     "-created_at", ("created_since", "created_at"),
                                     {"direction": DIRECTIONS})

        @app.post(f"{API}/sms")
        def send_sms():
            return one(self.send_sms(body(), g.user_id)), 201

        @app.get(f"{API}/sms/<sms_id>")
        def get_sms(sms_id):
            with self.lock:
                return one(dict(self._get(self.sms, "SMS message", sms_id)))

        @app.get(f"{API}/calls")
        def list_calls():
            return self._simple_list(self.calls, ("contact_id", "direction", "status"),
                                     ("created_at", "completed_at"), "-created_at",
                                     ("completed_since", "completed_at"),
                                     {"direction": DIRECTIONS,
                                      "status": ("in_progress", "completed")})

        @app.post(f"{API}/calls")
        def log_call():
            return one(self.log_call(body(), g.user_id)), 201

        @app.get(f"{API}/calls/<call_id>")
        def get_call(call_id):
            with self.lock:
                return one(dict(self._get(self.calls, "call", call_id)))

        # lead routing
        @app.get(f"{API}/lead-routing/team-members")
        def list_team_members():
            with self.lock:
                return page([dict(u) for u in self.users.values()], ("name",), "name")

        @app.get(f"{API}/lead-routing/rules")
        def list_rules():
            with self.lock:
                return page([{**r, "member_ids": list(r["member_ids"])}
                             for r in self.rules.values()], ("position",), "position")

        @app.post(f"{API}/lead-routing/assign")
        def assign():
            return one(self.assign(body()))

        # API keys
        @app.get(f"{API}/api-keys/current")
        def current_key():
            with self.lock:
                return one({**self.keys[g.key_id], "user": dict(self.users[g.user_id])})

        @app.get(f"{API}/api-keys")
        def list_keys():
            with self.lock:
                return page([dict(k) for k in self.keys.values()], ("created_at", "name"),
                            "created_at")

        @app.post(f"{API}/api-keys")
        def create_key():
            return one(self.create_key(body(), g.user_id)), 201

        @app.delete(f"{API}/api-keys/<key_id>")
        def revoke_key(key_id):
            return one(self.revoke_key(key_id))

        return app


def required_scope(method: str, rule: str) -> str:
    """Return the scope a route needs: API-key management admin, writes read_write."""
    if rule.startswith(f"{API}/api-keys") and rule != f"{API}/api-keys/current":
        return "admin"
    return "read" if method in ("GET", "HEAD", "OPTIONS") else "read_write"
