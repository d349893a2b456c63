"""List, create and delete the organisation's tags; add and remove a contact's tags."""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from connector import Action, FatalAPIError, Search, UserError
from connector.plugins.contacts_api import API, items_of, seg

from .contacts import ContactIdInputs, CreateContact
from .shared import TagList, delete, missing_ok_field

TAG_SAMPLE = {"id": "tag_5f2a9c1d7e3b", "name": "vip", "color": "#d97706", "contact_count": 12,
              "created_at": "2026-01-15T10:30:00.000000Z"}


def read_tags(client) -> list[dict]:
    return items_of(client.get(f"{API}/tags"))


class ListTagsInputs(Schema):
    q = fields.String(load_default=None, metadata={
        "label": "Name contains", "help": "Only tags whose name contains this text."})


class ListTags(Search):
    """GET /api/v1/tags (filtered here by name); a read that fills tag dropdowns, whose
    value is the tag's name (contacts carry tag names)."""

    key = "contacts_api.list_tags"
    app = "contacts_api"
    label = "List tags"
    help = "List the organisation's tags."
    Inputs = ListTagsInputs
    sample = {"found": True, "count": 1, "first": TAG_SAMPLE, "results": [TAG_SAMPLE]}

    def search(self, ctx, inputs):
        needle = (inputs.get("q") or "").lower()
        return [t for t in read_tags(ctx.client) if needle in str(t.get("name", "")).lower()]

    def option(self, record):
        return {"value": record.get("name"), "label": str(record.get("name"))}


class CreateTagInputs(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=100), metadata={
        "label": "Tag name"})
    color = fields.String(load_default=None, metadata={"label": "Color",
                                                       "help": "e.g. #d97706."})


class CreateTag(Action):
    """POST /api/v1/tags (201); a 409 (the name exists) returns the existing tag with
    ``created: false``, which keeps a retry harmless."""

    key = "contacts_api.create_tag"
    app = "contacts_api"
    label = "Create tag"
    help = "Add a tag to the organisation's list, or get it if it already exists."
    Inputs = CreateTagInputs
    sample = {**TAG_SAMPLE, "created": True}

    def run(self, ctx, inputs):
        body = {"name": inputs["name"].strip()}
        if inputs.get("color"):
            body["color"] = inputs["color"]
        try:  # a repeat is answered 409 and finds the existing tag below: safe to resend
            created = ctx.client.post(f"{API}/tags", json=body, idempotent=True)
            return {**created, "created": True}
        except FatalAPIError as exc:
            if exc.status != 409:
                raise
            existing = next((t for t in read_tags(ctx.client) if t.get("name") == body["name"]),
                            None)
            if existing is None:
                raise
            return {**existing, "created": False}


class DeleteTagInputs(Schema):
    tag = fields.String(required=True, validate=validate.Length(min=1), metadata={
        "label": "Tag", "help": "The tag's name or id.", "choices_from": "contacts_api.list_tags"})
    missing_ok = missing_ok_field()


class DeleteTag(Action):
    """GET /api/v1/tags to find the tag's id by name, then DELETE /api/v1/tags/{tag_id}
    (204; it leaves every contact too); a tag already gone counts as done (missing_ok)."""

    key = "contacts_api.delete_tag"
    app = "contacts_api"
    label = "Delete tag"
    help = "Delete a tag from the organisation and from every contact carrying it."
    Inputs = DeleteTagInputs
    sample = {"id": "tag_5f2a9c1d7e3b", "name": "vip", "deleted": True}

    def run(self, ctx, inputs):
        ref = inputs["tag"]
        tags = read_tags(ctx.client)
        tag = (next((t for t in tags if t.get("name") == ref), None)
               or next((t for t in tags if str(t.get("id")) == ref), None))
        gone = {"id": None, "name": ref, "deleted": False}
        if tag is None:
            if inputs["missing_ok"]:
                return gone
            raise UserError(f"no tag named {ref!r}")
        if not delete(ctx, f"{API}/tags/{seg(tag['id'])}", inputs["missing_ok"]):
            return {**gone, "id": tag["id"]}
        return {"id": tag["id"], "name": tag.get("name"), "deleted": True}


class AddTagsInputs(ContactIdInputs):
    tags = TagList(required=True, validate=validate.Length(min=1, max=50), metadata={
                           "label": "Tags", "help": "Tag names (a list, or comma-separated "
                                                    "text); new names are created.",
                           "choices_from": "contacts_api.list_tags"})


class AddTags(Action):
    """POST /api/v1/contacts/{contact_id}/tags {"tags": [...]}; adding a tag the contact
    has changes nothing, so a retry is harmless."""

    key = "contacts_api.add_tags"
    app = "contacts_api"
    label = "Add tags to contact"
    help = "Add one or more tags to a contact, keeping the tags it has."
    Inputs = AddTagsInputs
    sample = CreateContact.sample

    def run(self, ctx, inputs):
        return ctx.client.post(f"{API}/contacts/{seg(inputs['contact_id'])}/tags",
                               json={"tags": inputs["tags"]}, idempotent=True)  # a set


class RemoveTagInputs(ContactIdInputs):
    tag = fields.String(required=True, validate=validate.Length(min=1), metadata={
        "label": "Tag", "help": "The tag name to remove.",
        "choices_from": "contacts_api.list_tags"})


class RemoveTag(Action):
    """DELETE /api/v1/contacts/{contact_id}/tags/{name} with the name URL-encoded. A 404 is
    checked with GET /api/v1/contacts/{contact_id}: when the contact exists without the tag
    the goal holds and the step succeeds; when the contact is gone the step fails."""

    key = "contacts_api.remove_tag"
    app = "contacts_api"
    label = "Remove tag from contact"
    help = "Take a tag off a contact."
    Inputs = RemoveTagInputs
    sample = {"contact_id": "5b0c1f9e-8d3c-4bb7-9a57-0c0d0e4b1a11", "tag": "lead",
              "removed": True}

    def run(self, ctx, inputs):
        contact = f"{API}/contacts/{seg(inputs['contact_id'])}"
        try:
            ctx.client.delete(f"{contact}/tags/{seg(inputs['tag'])}", expect_json=False)
        except FatalAPIError as exc:
            if exc.status != 404:
                raise
            current = ctx.client.get(contact)  # raises when the contact itself is missing
            if inputs["tag"] in (current.get("tags") or []):
                raise
        return {"contact_id": inputs["contact_id"], "tag": inputs["tag"], "removed": True}
