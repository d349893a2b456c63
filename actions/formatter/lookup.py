"""formatter.lookup: the inputs and the table lookup."""
from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validates_schema

from .shared import Text


class LookupInputs(Schema):
    key = Text(required=True, allow_none=True, metadata={
        "label": "Lookup key", "help": "The value to look up, e.g. `{{ trigger.plan }}`; spaces "
                                       "around it are ignored."})
    table = fields.Dict(required=True, metadata={
        "label": "Table", "help": "A mapping of keys to results, e.g. `{basic: 100, pro: 500}`."})
    default = fields.Raw(load_default=None, allow_none=True, metadata={
        "label": "Default", "help": "The result when the key is not in the table (default "
                                    "null)."})
    case_insensitive = fields.Boolean(load_default=False, metadata={
        "label": "Ignore case", "help": "Match keys whatever their letter case."})

    @validates_schema
    def distinct_keys(self, data, **_):
        if data["case_insensitive"]:
            folded = [str(k).strip().casefold() for k in data["table"]]
            clash = sorted({k for k in folded if folded.count(k) > 1})
            if clash:
                raise ValidationError(f"keys that differ only in case clash when ignoring "
                                      f"case: {', '.join(clash)}", "table")


def lookup(inputs: dict) -> dict:
    """Return the table's value for the key, or the default."""
    key = (inputs["key"] or "").strip()
    fold = (lambda s: s.casefold()) if inputs["case_insensitive"] else (lambda s: s)
    for table_key, value in inputs["table"].items():
        if fold(str(table_key).strip()) == fold(key):
            return {"result": value, "found": True, "key": str(table_key)}
    return {"result": inputs["default"], "found": False, "key": None}
