"""Formatter actions: reshape text, numbers, dates, phone numbers and lookups between steps.

One action per kind of data, each with an `operation` choice, as Zapier's Formatter and
n8n's core nodes do: a builder looks for "a date thing", not for one of thirty keys, and
every step's output has a `result` to map (`{{ steps.fmt.result }}`) plus extras.
Parsing CSV-like text into rows is its own action because its inputs and its output
(`rows`, `count`) have nothing in common with the text operations.

Fields that only some operations use are checked when the step runs ("find: required when
operation is replace"); literal values are still checked field by field when the flow is
saved (a bad regex, time zone or country code is refused then). Input that cannot be read
(a date in no known form, "12abc" as a number, a division by zero) fails the run with a
message naming the input and what it accepts. Everything is computed locally: no network,
no connection. Numbers are computed as decimals (0.1 + 0.2 is 0.3) and returned as JSON
numbers, with a `text` extra that keeps the exact digits. Dates are read from a fixed list
of common forms (English month names), listed under `formatter.date`; there is no guessing
beyond it.
"""
from __future__ import annotations

from connector import Action, hookimpl

from .dates import DateInputs, date_operation
from .lookup import LookupInputs, lookup
from .numbers import NumberInputs, number_operation
from .phone import PhoneInputs, phone_details
from .rows import RowsInputs, text_to_rows
from .text import TextInputs, transform_text


class TextTransform(Action):
    """Operations and their output (`result` is always set):

    - `trim`: strip spaces and line breaks at both ends.
    - `upper`, `lower`: change the case of every letter.
    - `title`: capitalize every word ("jean-luc o'neil" gives "Jean-Luc O'neil").
    - `capitalize`: first letter upper case, the rest lower case.
    - `replace`: replace every occurrence of `find` (literal, or a regular expression with
      `regex`) with `replace_with`; `count` is how many were replaced.
    - `split`: split on `separator` into a list (`parts`, `count`); with `index`, `result` is
      that one part, or null when there are fewer parts.
    - `lines`: the non-blank lines, trimmed, as a list: the usual input of a for-each.
    - `extract`: search with the regular expression `pattern`. `first` gives the match (or
      `group`) and `named`, the named groups; `all` gives a list of matches and `count`;
      `named` gives the named groups of the first match as an object. `found` says whether
      anything matched; no match is not an error.
    - `truncate`: cut to `length` characters, ending in `suffix`; `truncated` says whether it
      was cut.
    - `default`: the text, or `default` when it is empty; `was_empty` says which.
    """

    key = "formatter.text"
    app = "formatter"
    label = "Text"
    help = ("Transform text: trim, change case, replace, split, extract with a regular "
            "expression, truncate, or fall back to a default.")
    needs_connection = False
    Inputs = TextInputs
    sample = {"result": "ORD-20417", "found": True, "named": {"order": "ORD-20417"}}

    def run(self, ctx, inputs):
        return transform_text(inputs)


class TextToRows(Action):
    """Each line after the header becomes an object keyed by column name, e.g.
    `{"email": "ann@client.example", "amount": "500"}`; values stay text (map them through
    `formatter.number` to compute). Blank lines are skipped; a line with fewer fields is
    padded with empty values, one with more fields than columns fails the run (usually an
    unquoted value containing the delimiter). Output: `rows`, `count`, `columns` and the
    `delimiter` used. Feed `rows` to a for-each to act once per line.
    """

    key = "formatter.text_to_rows"
    app = "formatter"
    label = "Text to rows (CSV)"
    help = "Parse CSV-like text (a header line or given column names) into a list of rows."
    needs_connection = False
    Inputs = RowsInputs
    sample = {"rows": [{"email": "ann@client.example", "amount": "500"},
                       {"email": "bo@client.example", "amount": "1,250.00"}],
              "count": 2, "columns": ["email", "amount"], "delimiter": "comma"}

    def run(self, ctx, inputs):
        return text_to_rows(inputs)


class NumberTransform(Action):
    """Operations and their output:

    - `parse`: read `value` as a number. Currency symbols and codes ($, €, USD), percent
      signs, spaces and thousands separators (including 1'234 and Indian 1,23,456) are
      dropped; "(12.50)" and "-12.50" are negative. `result` is the number, `text` its
      digits.
    - `round`: round to `decimals` places with `mode`; `text` keeps trailing zeros ("12.50").
    - `math`: `operator` over `value` (when given) and `operands`, left to right:
      add, subtract, multiply, divide, min, max. Dividing by zero fails the run naming the
      operand. `text` keeps the exact digits.
    - `format`: write `value` as text in `style`, with `decimals` places, between `prefix`
      and `suffix`: 1234.5 with style "1.234,56", 2 decimals and suffix " €" gives
      "1.234,50 €". `number` is the value as a number.
    """

    key = "formatter.number"
    app = "formatter"
    label = "Numbers"
    help = "Read a number from text, round it, do arithmetic, or format it for display."
    needs_connection = False
    Inputs = NumberInputs
    sample = {"result": 1234.5, "text": "1234.50"}

    def run(self, ctx, inputs):
        return number_operation(inputs)


class DateTransform(Action):
    """Dates are read in these forms, and no others:

    - ISO 8601 with or without a time and offset: `2026-01-15`, `2026-01-15T10:30:00Z`,
      `2026-01-15T10:30:00.250+02:00`, `2026-01-15 10:30`, basic `20260115T103000Z`
      and `20260115`; also `2026/01/15`.
    - Numeric day and month: `15/01/2026` or `01/15/2026`, as `day_first` says (`-` and `.`
      work too). A date that is invalid the chosen way fails; it is never swapped.
    - English month names: `Jan 15, 2026`, `January 15 2026`, `15 January 2026`,
      `15-Jan-2026`, with or without a weekday; RFC 2822 `Thu, 15 Jan 2026 10:30:00 +0000`.
    - Unix timestamps, as a number or digits: seconds, or milliseconds from 100000000000 up.

    The text forms may end with a time (`10:30`, `10:30:15`, `10:30 PM`, `at 10:30`) and
    then an offset or zone (`Z`, `UTC`, `+0200`, `+02:00`, `GMT-3`, `Europe/Paris`). A date
    without one is in `timezone`; results keep the offset the date was read in.

    Operations (`result` is in `format`, except for difference):

    - `parse`, `format`: the date in `format`.
    - `add`, `subtract`: move by `amount` `unit`s. Minutes and hours are elapsed time; days
      and weeks keep the wall-clock time across a DST change; months and years clamp to the
      month's end (Jan 31 + 1 month is Feb 28 or 29).
    - `to_timezone`: the same instant in `to_timezone`.
    - `difference`: `other_date` minus `date` in `unit`: whole months or years (counted on
      the calendar), else a number that may be fractional. Extras: `seconds` (exact),
      `later` (whether other_date is after date).

    Extras for the other operations: `iso`, `date`, `time`, `timezone`, `weekday`,
    `timestamp` (unix seconds).
    """

    key = "formatter.date"
    app = "formatter"
    label = "Dates"
    help = ("Read a date in any common form, format it, add or subtract time, convert it to "
            "a time zone, or measure the time between two dates.")
    needs_connection = False
    Inputs = DateInputs
    sample = {"result": "2026-02-15T10:30:00+01:00", "iso": "2026-02-15T10:30:00+01:00",
              "date": "2026-02-15", "time": "10:30:00", "timezone": "Europe/Paris",
              "weekday": "Sunday", "timestamp": 1771147800}

    def run(self, ctx, inputs):
        return date_operation(inputs)


class PhoneFormat(Action):
    """Output: `result` and `e164` (+14155550132), `national` ((415) 555-0132),
    `international` (+1 415-555-0132), `country_code` (1), `region` (US), `valid`,
    `possible` (the right length), and `type`: mobile, fixed_line, fixed_line_or_mobile
    (where the numbering plan does not tell them apart, as in the US), toll_free,
    premium_rate, shared_cost, voip, personal_number, pager, uan, voicemail or unknown.
    A number written with + and its country code ignores `country`. An invalid number is
    returned with `valid` false unless `require_valid` is set; text that is no phone number
    at all fails the run.
    """

    key = "formatter.phone"
    app = "formatter"
    label = "Phone number"
    help = "Format a phone number as E.164 (+14155550132) from a national number and a country."
    needs_connection = False
    Inputs = PhoneInputs
    sample = {"result": "+14155550132", "e164": "+14155550132", "national": "(415) 555-0132",
              "international": "+1 415-555-0132", "country_code": 1, "region": "US",
              "valid": True, "possible": True, "type": "fixed_line_or_mobile"}

    def run(self, ctx, inputs):
        return phone_details(inputs["phone"], inputs["country"], inputs["require_valid"])


class LookupTable(Action):
    """Output: `result` (the matched value, or `default`), `found`, and the table `key` that
    matched. Keys are compared as text, so a key of 1 in the table matches "1"; values may
    be anything (text, numbers, objects).
    """

    key = "formatter.lookup"
    app = "formatter"
    label = "Lookup table"
    help = "Turn one value into another with a table, e.g. a plan name into a credit amount."
    needs_connection = False
    Inputs = LookupInputs
    sample = {"result": 500, "found": True, "key": "pro"}

    def run(self, ctx, inputs):
        return lookup(inputs)


@hookimpl
def register_actions(register):
    for action in (TextTransform, TextToRows, NumberTransform, DateTransform, PhoneFormat,
                   LookupTable):
        register(action)
