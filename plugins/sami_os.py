"""SAMI OS (real-estate CRM): the app, its auth, its credential test, and its REST surface.

The document (seeds/000) lists the public resource families, three key scopes and what stays
internal, but gives no paths, host or header. What follows is the surface designed in its
spirit, written down once here; the sandbox (connector/sandbox/sami_os.py) implements exactly
this table, and every trigger, action and search below calls only these routes.

**Auth.** ``Authorization: Bearer <api key>`` on every request. The document says the key
"acts as the user who created it": a key standing in for a signed-in user is what a bearer
token is, it keeps the key out of URLs (and so out of logs), and it is what Zapier-style
API-key panels hand out. Missing, unknown or revoked keys get 401. Scopes, in order:
``read`` (Read only) may call every GET; ``read_write`` (Read & write) also every POST, PUT,
PATCH and DELETE; ``admin`` (Admin) also API-key management. A key below a route's scope
gets 403 INSUFFICIENT_SCOPE naming the scope it has and the one needed.

**Host.** None is documented (the full reference sits behind the app's Settings >
Integrations panel), so a connection must give its base URL; paths start with /api/v1.

**Shape.** JSON in and out. One record answers ``{"data": {...}}``; a list answers
``{"data": [...], "pagination": {"page", "limit", "total", "has_more"}}`` with ``page`` (from
1) and ``limit`` (1-100, default 25), ``sort`` a field (``-`` first for descending) and
``*_since`` filters inclusive ISO 8601 times. Errors are ``{"error": {"code", "message",
"details"?}}``: 422 VALIDATION_ERROR naming the field (unknown body fields and ids that name
nothing included), 400 malformed JSON, 404 ``<RESOURCE>_NOT_FOUND`` for the path's record,
409 conflicts. Rate limit: per key, per minute; over it, 429 RATE_LIMITED with Retry-After,
and every answer carries X-RateLimit-Limit/-Remaining/-Reset (the client waits as told).
The document gives no figure (it defers to resource pages it does not include), so the app
sets no default (``rate_limit = None``); a connection may set one (``connections add
--rate-limit``). No idempotency key is documented.
Phones are E.164.

| method | path | scope | what |
|---|---|---|---|
| GET | /api/v1/contacts | read | filters q, email, phone, tag (repeatable, all must match), status, lead_source_id, assigned_to (a user id, or none), created_since; sort created_at, updated_at |
| POST | /api/v1/contacts | read_write | first_name, last_name, email, phone, status, lead_source_id, assigned_to, tags, custom_fields, sms_opt_out |
| GET | /api/v1/contacts/{id} | read | one contact |
| PATCH | /api/v1/contacts/{id} | read_write | the fields given (not tags) |
| PUT | /api/v1/contacts/{id}/custom-fields/{field_id} | read_write | {value}, checked against the field's type; null clears |
| POST | /api/v1/contacts/{id}/tags | read_write | {tags: [names]}; unknown names are created; already there is no change |
| DELETE | /api/v1/contacts/{id}/tags/{name} | read_write | remove one tag; absent is no change (200) |
| GET | /api/v1/contacts/{id}/relationships | read | the contact's links |
| POST | /api/v1/contacts/{id}/relationships | read_write | {related_contact_id, type}; 201, or 200 with the existing link |
| GET | /api/v1/smart-lists | read | saved contact filters with contact_count |
| GET | /api/v1/smart-lists/{id} | read | one smart list |
| GET | /api/v1/smart-lists/{id}/contacts | read | members with added_to_list_at; added_since; sort added_to_list_at, created_at |
| GET | /api/v1/custom-fields | read | id, key, label, type (text, number, date, dropdown, checkbox), options |
| GET | /api/v1/custom-fields/{id} | read | one field |
| GET | /api/v1/tags | read | id, name, contact_count |
| GET | /api/v1/lead-sources | read | id, name |
| GET | /api/v1/pipelines | read | pipelines with their stages (id, name, position, outcome) |
| GET | /api/v1/pipelines/{id} | read | one pipeline |
| GET | /api/v1/pipelines/{id}/stages | read | its stages by position |
| GET | /api/v1/deals | read | filters q, contact_id, pipeline_id, stage_id, property_id, assigned_to, status (open, won, lost), created_since; sort created_at, updated_at, stage_entered_at |
| POST | /api/v1/deals | read_write | name, pipeline_id, stage_id (default the first), value, expected_close_date, property_id, assigned_to, contact_ids |
| GET | /api/v1/deals/{id} | read | one deal |
| PATCH | /api/v1/deals/{id} | read_write | name, value, expected_close_date, property_id, assigned_to, contact_ids (stages move only by /move) |
| POST | /api/v1/deals/{id}/move | read_write | {stage_id, pipeline_id?}; the stage it is in already is no change |
| GET | /api/v1/deal-stage-changes | read | every entry of a deal into a stage (creation included), with the deal; filters deal_id, pipeline_id, stage_id, entered_since; sort entered_at |
| GET | /api/v1/properties | read | filters q (address), mls_number, city, status; sort created_at, price |
| POST | /api/v1/properties | read_write | street, city, state, postal_code, mls_number (unique: 409 PROPERTY_EXISTS), status, price, bedrooms, bathrooms, square_feet, property_type |
| GET | /api/v1/properties/{id} | read | one property |
| GET | /api/v1/tasks | read | filters contact_id, deal_id, assigned_to, status (open, completed); sort created_at, due_at |
| POST | /api/v1/tasks | read_write | title, type, due_at, contact_id, deal_id, assigned_to (default the key's user), notes |
| GET | /api/v1/tasks/{id} | read | one task |
| POST | /api/v1/tasks/{id}/complete | read_write | completed stays completed (200) |
| GET | /api/v1/notes | read | filters contact_id, deal_id |
| POST | /api/v1/notes | read_write | body, contact_id and/or deal_id |
| GET | /api/v1/appointments | read | filters contact_id, deal_id, assigned_to, type, created_since; sort created_at, starts_at |
| POST | /api/v1/appointments | read_write | title, type, starts_at, ends_at (default +1 h), location, contact_id, deal_id, property_id, assigned_to, notes |
| GET | /api/v1/appointments/{id} | read | one appointment |
| GET | /api/v1/sms | read | filters contact_id, direction (inbound, outbound), created_since; sort created_at |
| POST | /api/v1/sms | read_write | {to (E.164) or contact_id, body (<= 1600)}; sent from the account's number; 422 RECIPIENT_OPTED_OUT after STOP |
| GET | /api/v1/sms/{id} | read | one message |
| GET | /api/v1/calls | read | filters contact_id, direction, status (in_progress, completed), completed_since; sort created_at, completed_at |
| POST | /api/v1/calls | read_write | log a finished call: contact_id or phone, direction, outcome, duration_seconds, notes, started_at |
| GET | /api/v1/calls/{id} | read | one call |
| GET | /api/v1/lead-routing/team-members | read | id, name, email, phone, role, accepts_leads |
| GET | /api/v1/lead-routing/rules | read | rules by position: lead_source_ids (none: any), member_ids, round_robin |
| POST | /api/v1/lead-routing/assign | read_write | {contact_id, user_id?}: the named user, or the rules' next member accepting leads (409 NO_ELIGIBLE_MEMBER) |
| GET | /api/v1/api-keys/current | read | the key making the request, and its user |
| GET | /api/v1/api-keys | admin | keys without their secrets |
| POST | /api/v1/api-keys | admin | {name, scope: read, read_write or admin}; the secret ``key`` is in this answer only |
| DELETE | /api/v1/api-keys/{id} | admin | revoke (again is no change); not the key making the request (409) |

**Records.** A contact carries first_name, last_name, name, email, phone, status (new,
attempted, active, nurture, under_contract, past_client, archived), lead_source_id and
lead_source, assigned_to, tags (names), custom_fields (field key to value), sms_opt_out,
created_by (the key's user), created_at and updated_at. A smart list member is the contact
plus smart_list_id and added_to_list_at (when it last started matching; leaving and
matching again is a new time). A deal's stage fixes its status (stages may be a won or lost
outcome) and its stage_entered_at.

**Left out**, as the document says: sign-in callbacks, billing, organization admin, cron,
health and debug routes, raw provider webhooks, media uploads, phone-number inventory and
the AI workflow helpers. SAMI OS documents no webhooks API, so every trigger polls.

**Idempotency.** The document names no idempotency key, so every create and send (contact,
deal, property, task, note, appointment, SMS, call log, rule-based lead assignment, API key)
goes through the host's ledger (``ctx.once``): a retried step never creates twice. Updates,
moves, tag changes, custom field values, relationships, completing a task, assigning to a
named user and revoking a key are safe to repeat as they are.
"""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from connector import App, hookimpl

SCOPES = {"read": "Read only", "read_write": "Read & write", "admin": "Admin"}


def data_of(answer):
    """Return the record or list inside ``{"data": ...}`` (or the answer itself)."""
    if isinstance(answer, dict) and "data" in answer:
        return answer["data"]
    return answer


class Credentials(Schema):
    api_key = fields.String(required=True, validate=validate.Length(min=1), metadata={
        "label": "API key", "secret": True,
        "help": "Settings > Integrations > Zapier / API Keys; Read & write lets every "
                "action run, Admin also manages keys. Sent as Authorization: Bearer."})


class SamiOs(App):
    key = "sami_os"
    label = "SAMI OS"
    help = ("Real-estate CRM: contacts, smart lists, deals and pipelines, properties, tasks, "
            "appointments, SMS and calls, lead routing.")
    base_url = ""  # the document gives no host: each connection sets its own
    Credentials = Credentials

    def authenticate(self, request, credentials):
        request.headers["Authorization"] = f"Bearer {credentials['api_key']}"

    def test(self, client):
        key = data_of(client.get("/api/v1/api-keys/current")) or {}
        user = key.get("user") or {}
        return {"ok": True, "user": user.get("name"), "scope": key.get("scope"),
                "scope_label": SCOPES.get(key.get("scope"), key.get("scope"))}


@hookimpl
def register_apps(register):
    register(SamiOs)
