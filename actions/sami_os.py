"""SAMI OS actions and searches, over the REST surface tabled in plugins/sami_os.py.

- Every create and send (contact, deal, property, task, note, appointment, SMS, call log,
  rule-based lead assignment, API key) goes through the host's ledger with the step's
  idempotency key (``ctx.once``): the document names no idempotency key, and a second POST
  would create a second record (or text the person twice).
- Updates (PATCH), moving a deal (the stage it is in already is no change), adding or
  removing tags (a set), setting a custom field (PUT), linking contacts (the existing link
  comes back), completing a task, assigning to a named user and revoking a key are safe to
  repeat and are sent as they are.
- An input left empty (or a template that rendered nothing) is not sent: "update" changes
  only what is given. Tags may be a list or a comma-separated string.
- Setting a custom field reads the field first (GET /api/v1/custom-fields/{id}) and sends
  the value as its type wants: a number, true/false for a checkbox (yes/no, 1/0, on/off
  accepted), YYYY-MM-DD for a date, text otherwise; an empty value clears the field.
- Searches that fill dropdowns read up to 10 pages of 100; find searches return the first
  page of up to ``limit`` matches, newest first.
- Creating an API key needs an Admin key; the new secret is in the step's output, the one
  place it is shown (the run history keeps it: revoke the key if that history is shared).
"""
from __future__ import annotations

import datetime as dt
from urllib.parse import quote

from marshmallow import ValidationError, fields, validate, validates_schema

from connector import Action, InputSchema, Phone, Search, hookimpl
from connector.plugins.sami_os import SCOPES, data_of

API = "/api/v1"
PAGE = 100
MAX_PAGES = 10
CONTACT_STATUSES = ["new", "attempted", "active", "nurture", "under_contract", "past_client",
                    "archived"]
RELATIONSHIP_TYPES = ["spouse", "partner", "co_buyer", "co_seller", "family",
                      "business_partner", "other"]
PROPERTY_STATUSES = ["coming_soon", "active", "pending", "sold", "off_market"]
PROPERTY_TYPES = ["single_family", "condo", "townhouse", "multi_family", "land", "other"]
TASK_TYPES = ["call", "email", "text", "showing", "follow_up", "paperwork", "other"]
APPOINTMENT_TYPES = ["showing", "listing_appointment", "buyer_consultation", "open_house",
                     "closing", "other"]
CALL_OUTCOMES = ["connected", "left_voicemail", "no_answer", "busy", "wrong_number"]
DIRECTIONS = ["inbound", "outbound"]
TRUE = {"true", "yes", "y", "1", "on", "checked"}
FALSE = {"false", "no", "n", "0", "off", "unchecked"}


# -- shared pieces --------------------------------------------------------------------------------

def seg(value) -> str:
    """Quote one path segment."""
    return quote(str(value), safe="")


HELP = {  # help for the inputs many steps share, by label
    "Contact id": "The contact's id, e.g. mapped from a trigger or a Find contacts step.",
    "Deal id": "The deal's id, e.g. mapped from a trigger or a Find deals step.",
    "Property id": "The property's id, e.g. from a Find properties step.",
    "Task id": "The task's id, e.g. from the Create task step that made it.",
    "First name": "The contact's first name.",
    "Last name": "The contact's last name.",
    "Email": "The contact's email address.",
    "Custom field": "Which custom field to set.",
    "Deal name": "What the deal is called, e.g. Martin purchase.",
    "Pipeline": "The deal pipeline, e.g. Buyers.",
    "Stage": "A stage of the pipeline.",
    "Assigned agent": "The team member who owns it.",
    "Street address": "Number and street, with the unit if any.",
    "City": "The city.",
    "State": "State or province, e.g. TX.",
    "ZIP / postal code": "The postal code.",
    "Price": "List or sale price in dollars.",
    "Bedrooms": "Number of bedrooms.",
    "Bathrooms": "Number of bathrooms (halves allowed, e.g. 2.5).",
    "Square feet": "Living area in square feet.",
    "Property type": "What kind of home it is.",
    "Notes": "Details for whoever picks it up.",
    "Note": "The note's text.",
    "Location": "Where it takes place: an address or a link.",
    "Message": "The text to send, up to 1600 characters.",
    "Direction": "inbound (they called you) or outbound (you called them).",
    "Outcome": "How the call went.",
    "Duration (seconds)": "How long the call lasted.",
    "API key": "The key to revoke.",
    "Lead source": "Where the lead came from.",
    "Smart list": "The smart list to watch.",
    "MLS number": "The listing's MLS number.",
}


def meta(label: str, help: str = "", source: str | None = None) -> dict:
    out = {"label": label, "help": help or HELP.get(label, "")}
    if source:
        out["choices_from"] = f"sami_os.{source}"
    return out


def opt(field_cls=fields.String, label="", help="", source=None, **kwargs):
    """An optional input: absent, None or blank means "not given"."""
    return field_cls(load_default=None, allow_none=True, metadata=meta(label, help, source),
                     **kwargs)


def req(field_cls=fields.String, label="", help="", source=None, **kwargs):
    if field_cls is fields.String:
        kwargs.setdefault("validate", validate.Length(min=1))
    return field_cls(required=True, metadata=meta(label, help, source), **kwargs)


class TagList(fields.List):
    """A list of tag names; a comma-separated string is split."""

    def __init__(self, **kwargs):
        super().__init__(fields.String(validate=validate.Length(min=1, max=50)), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return super()._deserialize(value, attr, data, **kwargs)


Inputs = InputSchema  # an input that rendered empty means "not given"


def given(inputs: dict, names) -> dict:
    """Return the inputs among ``names`` that were given, as JSON-ready values."""
    out = {}
    for name in names:
        value = inputs.get(name)
        if value is None or value == "" or value == []:
            continue
        if isinstance(value, dt.datetime):
            value = iso(value)
        elif isinstance(value, dt.date):
            value = value.isoformat()
        out[name] = value
    return out


def iso(moment: dt.datetime) -> str:
    """Return a datetime as UTC ISO 8601 (a naive one is read as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def create(ctx, path: str, body: dict) -> dict:
    """POST once per step (the host's ledger); return the record."""
    answer = ctx.once(ctx.idempotency_key, {"path": path, "body": body},
                      lambda: ctx.client.post(path, json=body))
    return data_of(answer) or {}


def list_all(client, path: str, params: dict | None = None) -> list[dict]:
    """Read every page (up to MAX_PAGES of PAGE) of a list endpoint."""
    out: list[dict] = []
    for number in range(1, MAX_PAGES + 1):
        answer = client.get(path, params={**(params or {}), "page": number, "limit": PAGE})
        items = data_of(answer) or []
        out.extend(items)
        more = (answer.get("pagination") or {}).get("has_more") if isinstance(answer, dict) \
            else None
        if len(items) < PAGE or more is False:
            break
    return out


def found(*records) -> dict:
    """Return a search's output for ``records`` (for samples)."""
    return {"found": bool(records), "count": len(records),
            "first": records[0] if records else None, "results": list(records)}


def first_page(client, path: str, params: dict, limit: int) -> list[dict]:
    return data_of(client.get(path, params={**params, "page": 1, "limit": limit})) or []


LIMIT = fields.Integer(load_default=25, validate=validate.Range(min=1, max=PAGE), metadata=meta(
    "Most results", "At most this many matches, newest first (1-100)."))

CONTACT_SAMPLE = {
    "id": "con_5f1c2a9e7b30", "first_name": "Olivia", "last_name": "Martin",
    "name": "Olivia Martin", "email": "olivia.martin@example.com", "phone": "+15125550111",
    "status": "active", "lead_source_id": "ls_zillow", "lead_source": "Zillow",
    "assigned_to": "usr_jordan", "tags": ["buyer", "hot"],
    "custom_fields": {"budget": 650000, "financing": "fha"}, "sms_opt_out": False,
    "created_by": "usr_maya", "created_at": "2026-03-02T15:04:05.123456Z",
    "updated_at": "2026-03-02T15:04:05.123456Z"}
DEAL_SAMPLE = {
    "id": "deal_8c2e4b7a9d10", "name": "Martin purchase", "pipeline_id": "pl_buyers",
    "pipeline_name": "Buyers", "stage_id": "stg_buyers_offer", "stage_name": "Offer made",
    "status": "open", "value": 650000, "currency": "USD",
    "contact_ids": ["con_5f1c2a9e7b30"], "property_id": "prop_1a2b3c4d5e6f",
    "assigned_to": "usr_jordan", "expected_close_date": "2026-05-30",
    "stage_entered_at": "2026-03-10T18:20:00.000000Z", "created_by": "usr_maya",
    "created_at": "2026-03-02T15:10:00.000000Z", "updated_at": "2026-03-10T18:20:00.000000Z"}
PROPERTY_SAMPLE = {
    "id": "prop_1a2b3c4d5e6f", "street": "4120 Duval St", "city": "Austin", "state": "TX",
    "postal_code": "78751", "address": "4120 Duval St, Austin, TX 78751",
    "mls_number": "ATX-5521904", "status": "active", "price": 725000, "bedrooms": 3,
    "bathrooms": 2, "square_feet": 1840, "property_type": "single_family",
    "created_by": "usr_maya", "created_at": "2026-03-01T12:00:00.000000Z",
    "updated_at": "2026-03-01T12:00:00.000000Z"}

CONTACT_FIELDS = ("first_name", "last_name", "email", "phone", "status", "lead_source_id",
                  "assigned_to")


def contact_inputs():
    """The contact fields create and update share (a fresh dict of fields each call)."""
    return {
        "first_name": opt(label="First name"),
        "last_name": opt(label="Last name"),
        "email": opt(fields.Email, label="Email"),
        "phone": opt(Phone, label="Phone",
                     help="With country code, e.g. +15125550123 (stored as E.164)."),
        "status": opt(label="Status", help="Where the contact is in your process.",
                      validate=validate.OneOf(CONTACT_STATUSES)),
        "lead_source_id": opt(label="Lead source", help="Where the lead came from.",
                              source="list_lead_sources"),
        "assigned_to": opt(label="Assigned agent", help="The team member who owns the contact.",
                           source="list_team_members"),
        "custom_fields": opt(fields.Dict, keys=fields.String(), label="Custom fields",
                             help="Custom field key (or id) to value, e.g. budget: 650000."),
    }


# -- contacts -------------------------------------------------------------------------------------

class CreateContactInputs(Inputs.from_dict({
        **contact_inputs(),
        "tags": opt(TagList, label="Tags", help="Tag names; new names are created.",
                    source="list_tags")})):

    @validates_schema
    def identity(self, data, **_):
        if not any(data.get(f) for f in ("first_name", "last_name", "email", "phone")):
            raise ValidationError("give at least a name, an email or a phone", "first_name")


class CreateContact(Action):
    """POST /api/v1/contacts, once per step through the host's ledger."""

    key = "sami_os.create_contact"
    app = "sami_os"
    label = "Create contact"
    help = "Add a contact (lead) with its lead source, agent, tags and custom fields."
    Inputs = CreateContactInputs
    sample = CONTACT_SAMPLE

    def run(self, ctx, inputs):
        return create(ctx, f"{API}/contacts", given(inputs, (*CONTACT_FIELDS, "tags",
                                                               "custom_fields")))


class UpdateContactInputs(Inputs.from_dict({
        "contact_id": req(label="Contact id", help="Usually mapped from a trigger or a find."),
        **contact_inputs(),
        "sms_opt_out": opt(fields.Boolean, label="Opted out of SMS",
                           help="True stops texts to this contact.")})):
    pass


class UpdateContact(Action):
    """PATCH /api/v1/contacts/{id} with only the inputs given; safe to repeat."""

    key = "sami_os.update_contact"
    app = "sami_os"
    label = "Update contact"
    help = "Change a contact's details; fields left empty stay as they are."
    Inputs = UpdateContactInputs
    sample = CONTACT_SAMPLE

    def run(self, ctx, inputs):
        body = given(inputs, (*CONTACT_FIELDS, "custom_fields"))
        if inputs.get("sms_opt_out") is not None:
            body["sms_opt_out"] = inputs["sms_opt_out"]
        return data_of(ctx.client.patch(f"{API}/contacts/{seg(inputs['contact_id'])}",
                                        idempotent=True,  # sets the same fields
                                        json=body))


class FindContactInputs(Inputs):
    email = opt(fields.Email, label="Email", help="Exact email.")
    phone = opt(Phone, label="Phone", help="Exact phone, with country code.")
    query = opt(label="Search text", help="Part of the name, email or phone.")
    tag = opt(label="Tag", help="Only contacts with this tag.", source="list_tags")
    status = opt(label="Status", help="Only contacts with this status.",
                 validate=validate.OneOf(CONTACT_STATUSES))
    lead_source_id = opt(label="Lead source", help="Only contacts from this lead source.",
                         source="list_lead_sources")
    limit = LIMIT


class FindContact(Search):
    """GET /api/v1/contacts with the given filters (q, email, phone, tag, ...), newest
    first. A read: safe to repeat."""

    key = "sami_os.find_contact"
    app = "sami_os"
    label = "Find contacts"
    help = "Find contacts by email, phone, text, tag, status or lead source."
    Inputs = FindContactInputs
    sample = found(CONTACT_SAMPLE)

    def search(self, ctx, inputs):
        params = given(inputs, ("email", "phone", "tag", "status", "lead_source_id"))
        if inputs.get("query"):
            params["q"] = inputs["query"]
        return first_page(ctx.client, f"{API}/contacts", params, inputs["limit"])


class SetCustomFieldInputs(Inputs):
    contact_id = req(label="Contact id")
    field_id = req(label="Custom field", source="list_custom_fields")
    value = fields.Raw(load_default=None, allow_none=True, metadata=meta(
        "Value", "Empty clears the field. Numbers, yes/no and YYYY-MM-DD dates are converted "
                 "to the field's type."))


class SetContactCustomField(Action):
    """GET /api/v1/custom-fields/{id} for its type, then PUT
    /api/v1/contacts/{id}/custom-fields/{field_id}; a PUT is safe to repeat."""

    key = "sami_os.set_contact_custom_field"
    app = "sami_os"
    label = "Set contact custom field"
    help = "Set (or clear) one custom field on a contact."
    Inputs = SetCustomFieldInputs
    sample = CONTACT_SAMPLE

    def run(self, ctx, inputs):
        field = data_of(ctx.client.get(f"{API}/custom-fields/{seg(inputs['field_id'])}")) or {}
        value = coerce(field, inputs.get("value"))
        path = f"{API}/contacts/{seg(inputs['contact_id'])}/custom-fields/{seg(inputs['field_id'])}"
        return data_of(ctx.client.put(path, json={"value": value}))


def coerce(field: dict, value):
    """Return ``value`` as the custom field's type wants it (None clears)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    kind = field.get("type")
    label = field.get("label") or field.get("key") or "the field"
    if kind == "number":
        if isinstance(value, bool):
            raise ValidationError(f"{label} is a number field; got {value!r}", "value")
        try:
            number = float(str(value).replace(",", "").strip())
        except ValueError:
            raise ValidationError(f"{label} is a number field; got {value!r}", "value") from None
        return int(number) if number.is_integer() else number
    if kind == "checkbox":
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in TRUE | FALSE:
            return word in TRUE
        raise ValidationError(f"{label} is a checkbox; give yes or no, got {value!r}", "value")
    if kind == "date":
        if isinstance(value, (dt.date, dt.datetime)):
            return value.isoformat()[:10]
        return str(value).strip()[:10]
    return value if isinstance(value, str) else str(value)


# -- tags -----------------------------------------------------------------------------------------

class TagsInputs(Inputs):
    contact_id = req(label="Contact id")
    tags = TagList(required=True, validate=validate.Length(min=1), metadata=meta(
        "Tags", "One or more tag names (a list, or separated by commas).", "list_tags"))


class AddTags(Action):
    """POST /api/v1/contacts/{id}/tags; tags are a set, so a repeat changes nothing."""

    key = "sami_os.add_tags"
    app = "sami_os"
    label = "Add tags to contact"
    help = "Tag a contact; tags that do not exist yet are created."
    Inputs = TagsInputs
    sample = CONTACT_SAMPLE

    def run(self, ctx, inputs):
        return data_of(ctx.client.post(f"{API}/contacts/{seg(inputs['contact_id'])}/tags",
                                       idempotent=True,  # tags are a set
                                       json={"tags": inputs["tags"]}))


class RemoveTags(Action):
    """DELETE /api/v1/contacts/{id}/tags/{name} per tag; an absent tag is no change."""

    key = "sami_os.remove_tags"
    app = "sami_os"
    label = "Remove tags from contact"
    help = "Take one or more tags off a contact."
    Inputs = TagsInputs
    sample = CONTACT_SAMPLE

    def run(self, ctx, inputs):
        contact = {}
        for name in dict.fromkeys(inputs["tags"]):
            contact = data_of(ctx.client.delete(
                f"{API}/contacts/{seg(inputs['contact_id'])}/tags/{seg(name)}"))
        return contact


# -- relationships --------------------------------------------------------------------------------

RELATIONSHIP_SAMPLE = {"id": "rel_3e9a1c7b5d20", "contact_id": "con_5f1c2a9e7b30",
                       "related_contact_id": "con_7a8b9c0d1e2f",
                       "related_contact_name": "Ethan Martin", "type": "spouse",
                       "created_at": "2026-03-02T15:06:00.000000Z"}


class RelationshipInputs(Inputs):
    contact_id = req(label="Contact id")
    related_contact_id = req(label="Related contact id", help="The other person.")
    type = req(label="Relationship", validate=validate.OneOf(RELATIONSHIP_TYPES),
               help="How the two are related, e.g. spouse or co_buyer.")


class CreateRelationship(Action):
    """POST /api/v1/contacts/{id}/relationships; the same link again comes back as it is."""

    key = "sami_os.create_relationship"
    app = "sami_os"
    label = "Link two contacts"
    help = "Record a relationship between two contacts, such as a buyer and their partner."
    Inputs = RelationshipInputs
    sample = RELATIONSHIP_SAMPLE

    def run(self, ctx, inputs):
        body = {"related_contact_id": inputs["related_contact_id"], "type": inputs["type"]}
        return data_of(ctx.client.post(  # a repeat answers the existing link
            f"{API}/contacts/{seg(inputs['contact_id'])}/relationships", json=body,
            idempotent=True))


class ListRelationshipsInputs(Inputs):
    contact_id = req(label="Contact id")


class ListRelationships(Search):
    """GET /api/v1/contacts/{id}/relationships. A read: safe to repeat."""

    key = "sami_os.list_relationships"
    app = "sami_os"
    label = "List contact relationships"
    help = "List the people a contact is linked to."
    Inputs = ListRelationshipsInputs
    sample = found(RELATIONSHIP_SAMPLE)

    def search(self, ctx, inputs):
        return list_all(ctx.client, f"{API}/contacts/{seg(inputs['contact_id'])}/relationships")

    def option(self, record):
        return {"value": record["related_contact_id"],
                "label": f"{record.get('related_contact_name')} ({record.get('type')})"}


# -- deals ----------------------------------------------------------------------------------------

def deal_inputs():
    return {
        "value": opt(fields.Float, label="Value", help="Deal value in dollars.",
                     validate=validate.Range(min=0)),
        "expected_close_date": opt(fields.Date, label="Expected close date",
                                   help="YYYY-MM-DD."),
        "property_id": opt(label="Property id", help="The property the deal is about."),
        "assigned_to": opt(label="Assigned agent", help="The team member who owns the deal.",
                           source="list_team_members"),
    }


class CreateDealInputs(Inputs.from_dict({
        "name": req(label="Deal name", validate=validate.Length(min=1, max=200)),
        "pipeline_id": req(label="Pipeline", source="list_pipelines"),
        "stage_id": opt(label="Stage", help="Empty: the pipeline's first stage.",
                        source="list_stages"),
        "contact_id": opt(label="Contact id", help="The client on the deal."),
        **deal_inputs()})):
    pass


class CreateDeal(Action):
    """POST /api/v1/deals, once per step through the host's ledger."""

    key = "sami_os.create_deal"
    app = "sami_os"
    label = "Create deal"
    help = "Open a deal in a pipeline stage, linked to a contact and a property."
    Inputs = CreateDealInputs
    sample = DEAL_SAMPLE

    def run(self, ctx, inputs):
        body = given(inputs, ("name", "pipeline_id", "stage_id", "value", "expected_close_date",
                              "property_id", "assigned_to"))
        if inputs.get("contact_id"):
            body["contact_ids"] = [inputs["contact_id"]]
        return create(ctx, f"{API}/deals", body)


class UpdateDealInputs(Inputs.from_dict({
        "deal_id": req(label="Deal id"),
        "name": opt(label="Deal name", validate=validate.Length(max=200)),
        **deal_inputs()})):
    pass


class UpdateDeal(Action):
    """PATCH /api/v1/deals/{id} with only the inputs given; safe to repeat."""

    key = "sami_os.update_deal"
    app = "sami_os"
    label = "Update deal"
    help = "Change a deal's name, value, close date, property or agent (not its stage)."
    Inputs = UpdateDealInputs
    sample = DEAL_SAMPLE

    def run(self, ctx, inputs):
        body = given(inputs, ("name", "value", "expected_close_date", "property_id",
                              "assigned_to"))
        return data_of(ctx.client.patch(f"{API}/deals/{seg(inputs['deal_id'])}", json=body,
                                        idempotent=True))  # sets the same fields


class MoveDealInputs(Inputs):
    deal_id = req(label="Deal id")
    pipeline_id = req(label="Pipeline", source="list_pipelines")
    stage_id = req(label="Stage", help="The stage to move the deal to.", source="list_stages")


class MoveDealToStage(Action):
    """POST /api/v1/deals/{id}/move; moving to the stage it is in changes nothing."""

    key = "sami_os.move_deal_to_stage"
    app = "sami_os"
    label = "Move deal to stage"
    help = "Move a deal to another stage of its pipeline (or of another pipeline)."
    Inputs = MoveDealInputs
    sample = DEAL_SAMPLE

    def run(self, ctx, inputs):
        body = {"stage_id": inputs["stage_id"], "pipeline_id": inputs["pipeline_id"]}
        return data_of(ctx.client.post(f"{API}/deals/{seg(inputs['deal_id'])}/move", json=body,
                                       idempotent=True))  # to the stage it is in: no change


class FindDealInputs(Inputs):
    query = opt(label="Search text", help="Part of the deal's name.")
    contact_id = opt(label="Contact id", help="Deals of this contact.")
    pipeline_id = opt(label="Pipeline", help="Only deals in this pipeline.",
                      source="list_pipelines")
    stage_id = opt(label="Stage", help="Only deals in this stage.", source="list_stages")
    status = opt(label="Status", help="open, won or lost.",
                 validate=validate.OneOf(["open", "won", "lost"]))
    limit = LIMIT


class FindDeal(Search):
    """GET /api/v1/deals with the given filters, newest first. A read: safe to repeat."""

    key = "sami_os.find_deal"
    app = "sami_os"
    label = "Find deals"
    help = "Find deals by name, contact, pipeline, stage or status."
    Inputs = FindDealInputs
    sample = found(DEAL_SAMPLE)

    def search(self, ctx, inputs):
        params = given(inputs, ("contact_id", "pipeline_id", "stage_id", "status"))
        if inputs.get("query"):
            params["q"] = inputs["query"]
        return first_page(ctx.client, f"{API}/deals", params, inputs["limit"])


# -- properties -----------------------------------------------------------------------------------

class CreatePropertyInputs(Inputs):
    street = req(label="Street address")
    city = req(label="City")
    state = req(label="State")
    postal_code = opt(label="ZIP / postal code")
    mls_number = opt(label="MLS number", help="Unique: a known number is refused.")
    status = opt(label="Status", help="Listing status; empty means active.",
                 validate=validate.OneOf(PROPERTY_STATUSES))
    price = opt(fields.Float, label="Price", validate=validate.Range(min=0))
    bedrooms = opt(fields.Integer, label="Bedrooms", validate=validate.Range(min=0))
    bathrooms = opt(fields.Float, label="Bathrooms", validate=validate.Range(min=0))
    square_feet = opt(fields.Integer, label="Square feet", validate=validate.Range(min=0))
    property_type = opt(label="Property type", validate=validate.OneOf(PROPERTY_TYPES))


class CreateProperty(Action):
    """POST /api/v1/properties, once per step through the host's ledger."""

    key = "sami_os.create_property"
    app = "sami_os"
    label = "Create property"
    help = "Add a property (a listing or a home a buyer is looking at)."
    Inputs = CreatePropertyInputs
    sample = PROPERTY_SAMPLE

    def run(self, ctx, inputs):
        return create(ctx, f"{API}/properties", given(inputs, CreatePropertyInputs().fields))


class FindPropertyInputs(Inputs):
    query = opt(label="Address", help="Part of the address.")
    mls_number = opt(label="MLS number")
    city = opt(label="City", help="Only properties in this city.")
    status = opt(label="Status", help="Only properties with this listing status.",
                 validate=validate.OneOf(PROPERTY_STATUSES))
    limit = LIMIT


class FindProperty(Search):
    """GET /api/v1/properties with the given filters, newest first. A read: safe to repeat."""

    key = "sami_os.find_property"
    app = "sami_os"
    label = "Find properties"
    help = "Find properties by address, MLS number, city or status."
    Inputs = FindPropertyInputs
    sample = found(PROPERTY_SAMPLE)

    def search(self, ctx, inputs):
        params = given(inputs, ("mls_number", "city", "status"))
        if inputs.get("query"):
            params["q"] = inputs["query"]
        return first_page(ctx.client, f"{API}/properties", params, inputs["limit"])

    def option(self, record):
        return {"value": record["id"], "label": record.get("address") or record["id"]}


# -- tasks, notes, appointments -------------------------------------------------------------------

TASK_SAMPLE = {"id": "task_4d5e6f7a8b9c", "title": "Call Olivia about the offer",
               "type": "call", "due_at": "2026-03-11T17:00:00.000000Z", "status": "open",
               "completed_at": None, "contact_id": "con_5f1c2a9e7b30",
               "deal_id": "deal_8c2e4b7a9d10", "assigned_to": "usr_jordan", "notes": None,
               "created_by": "usr_maya", "created_at": "2026-03-10T18:21:00.000000Z",
               "updated_at": "2026-03-10T18:21:00.000000Z"}


class CreateTaskInputs(Inputs):
    title = req(label="Title", validate=validate.Length(min=1, max=200),
                help="What needs doing, e.g. Call about the offer.")
    type = opt(label="Type", validate=validate.OneOf(TASK_TYPES), help="Empty: follow_up.")
    due_at = opt(fields.DateTime, label="Due", help="ISO 8601, e.g. 2026-03-11T17:00:00Z.")
    contact_id = opt(label="Contact id")
    deal_id = opt(label="Deal id")
    assigned_to = opt(label="Assigned to", help="Empty: the API key's user.",
                      source="list_team_members")
    notes = opt(label="Notes", validate=validate.Length(max=5000))


class CreateTask(Action):
    """POST /api/v1/tasks, once per step through the host's ledger."""

    key = "sami_os.create_task"
    app = "sami_os"
    label = "Create task"
    help = "Add a to-do for an agent, optionally tied to a contact or deal."
    Inputs = CreateTaskInputs
    sample = TASK_SAMPLE

    def run(self, ctx, inputs):
        return create(ctx, f"{API}/tasks", given(inputs, CreateTaskInputs().fields))


class CompleteTaskInputs(Inputs):
    task_id = req(label="Task id")


class CompleteTask(Action):
    """POST /api/v1/tasks/{id}/complete; a completed task stays as it is."""

    key = "sami_os.complete_task"
    app = "sami_os"
    label = "Complete task"
    help = "Mark a task as done."
    Inputs = CompleteTaskInputs
    sample = {**TASK_SAMPLE, "status": "completed",
              "completed_at": "2026-03-11T16:02:00.000000Z"}

    def run(self, ctx, inputs):
        return data_of(ctx.client.post(f"{API}/tasks/{seg(inputs['task_id'])}/complete",
                                       idempotent=True))  # a completed task stays as it is


class CreateNoteInputs(Inputs):
    body = req(label="Note", validate=validate.Length(min=1, max=10000))
    contact_id = opt(label="Contact id")
    deal_id = opt(label="Deal id")

    @validates_schema
    def owner(self, data, **_):
        if not data.get("contact_id") and not data.get("deal_id"):
            raise ValidationError("give the contact id, the deal id or both", "contact_id")


class CreateNote(Action):
    """POST /api/v1/notes, once per step through the host's ledger."""

    key = "sami_os.create_note"
    app = "sami_os"
    label = "Create note"
    help = "Add a note to a contact or a deal."
    Inputs = CreateNoteInputs
    sample = {"id": "note_9a8b7c6d5e4f", "body": "Pre-approved with First Texas Bank.",
              "contact_id": "con_5f1c2a9e7b30", "deal_id": None, "created_by": "usr_maya",
              "created_at": "2026-03-02T15:08:00.000000Z"}

    def run(self, ctx, inputs):
        return create(ctx, f"{API}/notes", given(inputs, ("body", "contact_id", "deal_id")))


APPOINTMENT_SAMPLE = {
    "id": "appt_2b3c4d5e6f7a", "title": "Showing: 4120 Duval St", "type": "showing",
    "starts_at": "2026-03-14T16:00:00.000000Z", "ends_at": "2026-03-14T17:00:00.000000Z",
    "location": "4120 Duval St, Austin, TX", "contact_id": "con_5f1c2a9e7b30",
    "deal_id": None, "property_id": "prop_1a2b3c4d5e6f", "assigned_to": "usr_jordan",
    "notes": None, "created_by": "usr_maya", "created_at": "2026-03-10T18:25:00.000000Z"}


class CreateAppointmentInputs(Inputs):
    title = req(label="Title", validate=validate.Length(min=1, max=200),
                help="Shown on the calendar, e.g. Showing: 4120 Duval St.")
    starts_at = req(fields.DateTime, label="Starts", help="ISO 8601, e.g. 2026-03-14T16:00:00Z.")
    ends_at = opt(fields.DateTime, label="Ends", help="Empty: one hour after the start.")
    type = opt(label="Type", validate=validate.OneOf(APPOINTMENT_TYPES),
               help="What kind of appointment; empty means other.")
    location = opt(label="Location", validate=validate.Length(max=300))
    contact_id = opt(label="Contact id")
    deal_id = opt(label="Deal id")
    property_id = opt(label="Property id")
    assigned_to = opt(label="Agent", help="Empty: the API key's user.",
                      source="list_team_members")
    notes = opt(label="Notes", validate=validate.Length(max=5000))


class CreateAppointment(Action):
    """POST /api/v1/appointments, once per step through the host's ledger."""

    key = "sami_os.create_appointment"
    app = "sami_os"
    label = "Create appointment"
    help = "Book a showing, listing appointment or consultation on an agent's calendar."
    Inputs = CreateAppointmentInputs
    sample = APPOINTMENT_SAMPLE

    def run(self, ctx, inputs):
        return create(ctx, f"{API}/appointments", given(inputs, CreateAppointmentInputs().fields))


# -- SMS and calls --------------------------------------------------------------------------------

class SendSmsInputs(Inputs):
    to = opt(Phone, label="To", help="The mobile number, with country code (E.164). Empty: "
                                     "the contact's phone.")
    contact_id = opt(label="Contact id", help="The contact the text belongs to.")
    body = req(label="Message", validate=validate.Length(min=1, max=1600))

    @validates_schema
    def recipient(self, data, **_):
        if not data.get("to") and not data.get("contact_id"):
            raise ValidationError("give the number to text or a contact id", "to")


class SendSms(Action):
    """POST /api/v1/sms, once per step through the host's ledger: a retry never texts twice."""

    key = "sami_os.send_sms"
    app = "sami_os"
    label = "Send SMS"
    help = "Text a contact from your SAMI OS number."
    Inputs = SendSmsInputs
    sample = {"id": "sms_6e5d4c3b2a19", "direction": "outbound", "from": "+15125550100",
              "to": "+15125550111", "body": "Hi Olivia, the sellers accepted!",
              "status": "sent", "contact_id": "con_5f1c2a9e7b30", "user_id": "usr_maya",
              "created_at": "2026-03-12T14:00:00.000000Z"}

    def run(self, ctx, inputs):
        return create(ctx, f"{API}/sms", given(inputs, ("to", "contact_id", "body")))


class LogCallInputs(Inputs):
    contact_id = opt(label="Contact id")
    phone = opt(Phone, label="Phone", help="The other party's number, with country code.")
    direction = req(label="Direction", validate=validate.OneOf(DIRECTIONS))
    outcome = req(label="Outcome", validate=validate.OneOf(CALL_OUTCOMES))
    duration_seconds = opt(fields.Integer, label="Duration (seconds)",
                           validate=validate.Range(min=0))
    notes = opt(label="Notes", validate=validate.Length(max=5000))
    started_at = opt(fields.DateTime, label="Started", help="Empty: now minus the duration.")

    @validates_schema
    def party(self, data, **_):
        if not data.get("contact_id") and not data.get("phone"):
            raise ValidationError("give the contact id or the phone of the call", "contact_id")


class LogCall(Action):
    """POST /api/v1/calls, once per step through the host's ledger."""

    key = "sami_os.log_call"
    app = "sami_os"
    label = "Log call"
    help = "Record a call made or taken outside SAMI OS on the contact's timeline."
    Inputs = LogCallInputs
    sample = {"id": "call_0f1e2d3c4b5a", "direction": "outbound", "phone": "+15125550113",
              "contact_id": "con_2c3d4e5f6a7b", "user_id": "usr_sam", "status": "completed",
              "outcome": "connected", "duration_seconds": 312,
              "notes": "Talked pricing strategy.", "source": "logged",
              "started_at": "2026-03-09T15:00:00.000000Z",
              "completed_at": "2026-03-09T15:05:12.000000Z",
              "created_at": "2026-03-09T15:05:12.000000Z"}

    def run(self, ctx, inputs):
        return create(ctx, f"{API}/calls", given(inputs, LogCallInputs().fields))


# -- lead routing ---------------------------------------------------------------------------------

class AssignLeadInputs(Inputs):
    contact_id = req(label="Contact id", help="The lead to assign.")
    user_id = opt(label="Team member", help="Empty: follow your lead routing rules.",
                  source="list_team_members")


class AssignLead(Action):
    """POST /api/v1/lead-routing/assign. By the routing rules it takes the next agent in
    turn, so it goes through the host's ledger once per step; to a named user it is safe
    to repeat."""

    key = "sami_os.assign_lead"
    app = "sami_os"
    label = "Assign lead"
    help = "Assign a contact to the next agent per your lead routing rules, or to a named agent."
    Inputs = AssignLeadInputs
    sample = {"contact_id": "con_5f1c2a9e7b30", "assigned_to": "usr_sam",
              "assigned_to_name": "Sam Rivera", "assigned_to_email": "sam@sunbeltrealty.example",
              "method": "rule", "rule_id": "rr_zillow", "rule_name": "Zillow leads",
              "assigned_at": "2026-03-02T15:05:00.000000Z"}

    def run(self, ctx, inputs):
        path = f"{API}/lead-routing/assign"
        body = given(inputs, ("contact_id", "user_id"))
        if inputs.get("user_id"):  # to a named agent: the same assignment again
            return data_of(ctx.client.post(path, json=body, idempotent=True))
        return create(ctx, path, body)


class ListTeamMembersInputs(Inputs):
    accepting_leads = fields.Boolean(load_default=False, metadata=meta(
        "Only agents taking leads", "Leave out members who do not accept new leads."))


class ListTeamMembers(Search):
    """GET /api/v1/lead-routing/team-members. A read: safe to repeat."""

    key = "sami_os.list_team_members"
    app = "sami_os"
    label = "List team members"
    help = "List the agents and staff leads can be assigned to."
    Inputs = ListTeamMembersInputs
    sample = found({
        "id": "usr_jordan", "name": "Jordan Lee", "email": "jordan@sunbeltrealty.example",
        "phone": "+15125550102", "role": "agent", "accepts_leads": True})

    def search(self, ctx, inputs):
        members = list_all(ctx.client, f"{API}/lead-routing/team-members")
        if inputs.get("accepting_leads"):
            members = [m for m in members if m.get("accepts_leads")]
        return members


# -- lists that fill dropdowns --------------------------------------------------------------------

class ListSmartLists(Search):
    """GET /api/v1/smart-lists. A read: safe to repeat."""

    key = "sami_os.list_smart_lists"
    app = "sami_os"
    label = "List smart lists"
    help = "List your smart lists (saved contact filters)."
    sample = found({
        "id": "sl_hot_buyers", "name": "Hot buyers", "filters": {"tag": ["buyer", "hot"]},
        "contact_count": 12, "created_at": "2026-01-05T10:00:00.000000Z"})

    def search(self, ctx, inputs):
        return list_all(ctx.client, f"{API}/smart-lists")


class ListCustomFields(Search):
    """GET /api/v1/custom-fields. A read: safe to repeat."""

    key = "sami_os.list_custom_fields"
    app = "sami_os"
    label = "List custom fields"
    help = "List the custom contact fields of your account."
    sample = found({
        "id": "cf_budget", "key": "budget", "label": "Budget", "type": "number",
        "options": None, "created_at": "2026-01-05T10:00:00.000000Z"})

    def search(self, ctx, inputs):
        return list_all(ctx.client, f"{API}/custom-fields")

    def option(self, record):
        return {"value": record["id"],
                "label": f"{record.get('label') or record.get('key')} ({record.get('type')})"}


class ListTags(Search):
    """GET /api/v1/tags; a dropdown offers tag names (contacts carry names). A read: safe
    to repeat."""

    key = "sami_os.list_tags"
    app = "sami_os"
    label = "List tags"
    help = "List the tags used on contacts."
    sample = found({
        "id": "tag_41c2d3e4f5a6", "name": "buyer", "contact_count": 37,
        "created_at": "2026-01-05T10:00:00.000000Z"})

    def search(self, ctx, inputs):
        return list_all(ctx.client, f"{API}/tags")

    def option(self, record):
        return {"value": record["name"], "label": record["name"]}


class ListLeadSources(Search):
    """GET /api/v1/lead-sources. A read: safe to repeat."""

    key = "sami_os.list_lead_sources"
    app = "sami_os"
    label = "List lead sources"
    help = "List where your leads come from (website, Zillow, referral...)."
    sample = found({
        "id": "ls_zillow", "name": "Zillow", "created_at": "2026-01-05T10:00:00.000000Z"})

    def search(self, ctx, inputs):
        return list_all(ctx.client, f"{API}/lead-sources")


PIPELINE_SAMPLE = {"id": "pl_buyers", "name": "Buyers",
                   "created_at": "2026-01-05T10:00:00.000000Z", "stages": [
                       {"id": "stg_buyers_new_lead", "pipeline_id": "pl_buyers",
                        "name": "New lead", "position": 1, "outcome": None}]}


class ListPipelines(Search):
    """GET /api/v1/pipelines (each with its stages). A read: safe to repeat."""

    key = "sami_os.list_pipelines"
    app = "sami_os"
    label = "List pipelines"
    help = "List your deal pipelines with their stages."
    sample = found(PIPELINE_SAMPLE)

    def search(self, ctx, inputs):
        return list_all(ctx.client, f"{API}/pipelines")


class ListStagesInputs(Inputs):
    pipeline_id = opt(label="Pipeline", help="Empty: the stages of every pipeline.",
                      source="list_pipelines")


class ListStages(Search):
    """GET /api/v1/pipelines/{id} (or every pipeline): their stages in order, each with its
    pipeline's name. A read: safe to repeat."""

    key = "sami_os.list_stages"
    app = "sami_os"
    label = "List pipeline stages"
    help = "List the stages of a pipeline (or of all pipelines), in order."
    Inputs = ListStagesInputs
    sample = found({
        "id": "stg_buyers_offer", "pipeline_id": "pl_buyers", "pipeline_name": "Buyers",
        "name": "Offer made", "position": 3, "outcome": None})

    def search(self, ctx, inputs):
        if inputs.get("pipeline_id"):
            pipelines = [data_of(ctx.client.get(f"{API}/pipelines/{seg(inputs['pipeline_id'])}"))]
        else:
            pipelines = list_all(ctx.client, f"{API}/pipelines")
        return [{**stage, "pipeline_name": pipeline.get("name")}
                for pipeline in pipelines
                for stage in sorted(pipeline.get("stages") or [],
                                    key=lambda s: s.get("position") or 0)]

    def option(self, record):
        return {"value": record["id"],
                "label": f"{record.get('pipeline_name')} › {record.get('name')}"}


# -- API keys -------------------------------------------------------------------------------------

KEY_SAMPLE = {"id": "key_7d8e9f0a1b2c", "name": "Zapier", "scope": "read_write",
              "scope_label": "Read & write", "hint": "sami_…x9Qz", "user_id": "usr_maya",
              "status": "active", "created_at": "2026-03-01T09:00:00.000000Z",
              "last_used_at": None, "revoked_at": None}


class ListApiKeysInputs(Inputs):
    include_revoked = fields.Boolean(load_default=False, metadata=meta(
        "Include revoked", "Also list keys that were revoked."))


class ListApiKeys(Search):
    """GET /api/v1/api-keys (Admin scope); secrets are never listed. A read: safe to
    repeat."""

    key = "sami_os.list_api_keys"
    app = "sami_os"
    label = "List API keys"
    help = "List your account's API keys and their scopes (needs an Admin key)."
    Inputs = ListApiKeysInputs
    sample = found(KEY_SAMPLE)

    def search(self, ctx, inputs):
        keys = list_all(ctx.client, f"{API}/api-keys")
        if not inputs.get("include_revoked"):
            keys = [k for k in keys if k.get("status") != "revoked"]
        return keys

    def option(self, record):
        scope = record.get("scope_label") or record.get("scope")
        return {"value": record["id"], "label": f"{record.get('name')} ({scope})"}


class CreateApiKeyInputs(Inputs):
    name = req(label="Key name", validate=validate.Length(min=1, max=100),
               help="What the key is for, e.g. Website forms.")
    scope = req(label="Permission scope", validate=validate.OneOf(list(SCOPES)),
                help="read (Read only), read_write (Read & write) or admin (Admin).")


class CreateApiKey(Action):
    """POST /api/v1/api-keys (Admin scope), once per step through the host's ledger; the
    answer's ``key`` is the only time the secret is shown."""

    key = "sami_os.create_api_key"
    app = "sami_os"
    label = "Create API key"
    help = "Create an API key with a permission scope; its secret is shown once, in this output."
    Inputs = CreateApiKeyInputs
    sample = {**KEY_SAMPLE, "key": "sami_Zk3n0T8pV2qLw7yXc1RfHs4uB6mD"}

    def run(self, ctx, inputs):
        return create(ctx, f"{API}/api-keys", {"name": inputs["name"], "scope": inputs["scope"]})


class RevokeApiKeyInputs(Inputs):
    key_id = req(label="API key", source="list_api_keys")


class RevokeApiKey(Action):
    """DELETE /api/v1/api-keys/{id} (Admin scope); revoking again changes nothing."""

    key = "sami_os.revoke_api_key"
    app = "sami_os"
    label = "Revoke API key"
    help = "Revoke an API key so it stops working (needs an Admin key)."
    Inputs = RevokeApiKeyInputs
    sample = {**KEY_SAMPLE, "status": "revoked", "revoked_at": "2026-03-20T11:00:00.000000Z"}

    def run(self, ctx, inputs):
        return data_of(ctx.client.delete(f"{API}/api-keys/{seg(inputs['key_id'])}"))


ACTIONS = (CreateContact, UpdateContact, SetContactCustomField, AddTags, RemoveTags,
           CreateRelationship, CreateDeal, UpdateDeal, MoveDealToStage, CreateProperty,
           CreateTask, CompleteTask, CreateNote, CreateAppointment, SendSms, LogCall, AssignLead,
           CreateApiKey, RevokeApiKey)
SEARCHES = (FindContact, FindDeal, FindProperty, ListRelationships, ListTeamMembers,
            ListSmartLists, ListCustomFields, ListTags, ListLeadSources, ListPipelines,
            ListStages, ListApiKeys)


@hookimpl
def register_actions(register):
    for cls in ACTIONS:
        register(cls)


@hookimpl
def register_searches(register):
    for cls in SEARCHES:
        register(cls)
