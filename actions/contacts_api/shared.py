"""Inputs and helpers the Contacts API steps share: tag lists, paging, missing_ok."""
from __future__ import annotations

from marshmallow import fields, validate

from connector import FatalAPIError

MAX_LIMIT = 200


def tag_list(value):
    """Accept "a, b" as well as ["a", "b"] for a tags input."""
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    return value


class TagList(fields.List):
    """A list of tag names that also takes comma-separated text ("lead, vip")."""

    def __init__(self, **kwargs):
        super().__init__(fields.String(validate=validate.Length(min=1, max=100)), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        return super()._deserialize(tag_list(value), attr, data, **kwargs)


def delete(ctx, path: str, missing_ok: bool) -> bool:
    """DELETE ``path``; return True when deleted, False when it was already gone (a 404)
    and ``missing_ok`` allows that; any other failure raises."""
    try:
        ctx.client.delete(path, expect_json=False)
    except FatalAPIError as exc:
        if not (missing_ok and exc.status == 404):
            raise
        return False
    return True


def missing_ok_field():
    return fields.Boolean(load_default=True, metadata={
        "label": "Succeed if already gone",
        "help": "False fails the step when there is nothing to delete."})


def limit_field():
    return fields.Integer(load_default=50, validate=validate.Range(min=1, max=MAX_LIMIT),
                          metadata={"label": "How many", "help": "1 to 200, newest first."})


def offset_field():
    return fields.Integer(load_default=0, validate=validate.Range(min=0), metadata={
        "label": "Skip", "help": "Skip this many (to page)."})
