"""formatter.text_to_rows: the inputs and the parsing of CSV-like text into row objects."""
from __future__ import annotations

import csv
import io

from marshmallow import Schema, fields, validate

from connector import UserError

from .shared import Text


class StringList(fields.List):
    """A list of strings, or one string of comma-separated names."""

    def __init__(self, **kwargs):
        super().__init__(fields.String(), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",")]
        return super()._deserialize(value, attr, data, **kwargs)


DELIMITERS = {"comma": ",", "semicolon": ";", "tab": "\t", "pipe": "|"}
#: ties between delimiters that split every sampled line alike go to the first listed
_SNIFF_ORDER = ["\t", ";", "|", ","]


class RowsInputs(Schema):
    text = Text(required=True, allow_none=True, metadata={
        "label": "Text", "help": "CSV-like text: one record per line, fields separated by a "
                                 "delimiter, \"double quotes\" around fields that contain it."})
    delimiter = fields.String(load_default="auto",
                              validate=validate.OneOf(["auto", *DELIMITERS]), metadata={
        "label": "Delimiter", "help": "auto picks the one (tab, semicolon, pipe, comma) that "
                                      "splits the first lines into the same number of fields."})
    has_header = fields.Boolean(load_default=True, metadata={
        "label": "First line is a header", "help": "The first line names the columns."})
    columns = StringList(load_default=None, metadata={
        "label": "Column names", "help": "Names for the columns, in order (a list, or one "
                                         "comma-separated string). They replace the header "
                                         "line if there is one; without either, columns are "
                                         "named column_1, column_2 and so on."})
    trim = fields.Boolean(load_default=True, metadata={
        "label": "Trim values", "help": "Strip spaces around every value."})


def _sniff(text: str) -> str:
    best, best_count = ",", 1
    for delimiter in _SNIFF_ORDER:
        reader = csv.reader(io.StringIO(text), delimiter=delimiter)
        counts = {len(row) for _, row in zip(range(10), (r for r in reader if any(r)))}
        if len(counts) == 1 and (count := counts.pop()) > best_count:
            best, best_count = delimiter, count
    return best


def text_to_rows(inputs: dict) -> dict:
    """Parse CSV-like text into a list of row objects keyed by column name."""
    text = (inputs["text"] or "").lstrip("\ufeff")
    clean = (lambda v: v.strip()) if inputs["trim"] else (lambda v: v)
    try:
        delimiter = (_sniff(text) if inputs["delimiter"] == "auto"
                     else DELIMITERS[inputs["delimiter"]])
        records = [(n, row) for n, row in _numbered(csv.reader(io.StringIO(text),
                                                               delimiter=delimiter))
                   if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        raise UserError(f"text: not readable as CSV: {exc}") from None
    columns = list(inputs["columns"] or [])
    if inputs["has_header"] and records:
        _, header = records.pop(0)
        columns = columns or [clean(name) for name in header]
    width = max([len(columns)] + [len(row) for _, row in records]) if not columns else len(columns)
    columns = [name or f"column_{i}" for i, name in enumerate(columns, 1)]
    columns += [f"column_{i}" for i in range(len(columns) + 1, width + 1)]
    dupes = sorted({name for name in columns if columns.count(name) > 1})
    if dupes:
        raise UserError(f"{'columns' if inputs['columns'] else 'text'}: column names must be "
                        f"unique; repeated: {', '.join(dupes)}")
    rows = []
    for line, row in records:
        if len(row) > len(columns):
            raise UserError(f"text: line {line} has {len(row)} fields but there are "
                            f"{len(columns)} columns; put double quotes around values that "
                            f"contain the delimiter {delimiter!r}")
        row = row + [""] * (len(columns) - len(row))
        rows.append({name: clean(value) for name, value in zip(columns, row)})
    name = next((k for k, v in DELIMITERS.items() if v == delimiter), delimiter)
    return {"rows": rows, "count": len(rows), "columns": columns, "delimiter": name}


def _numbered(reader):
    for row in reader:
        yield reader.line_num, row
