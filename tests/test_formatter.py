"""Formatter actions: every operation with its edge cases and errors, then each action in a flow.

Unit tests load inputs through the action's own schema (so defaults and per-operation rules
apply) and call ``run`` directly; the formatter needs no context. The flow tests save a flow
whose trigger is a small test webhook trigger, queue an item and run one engine tick, so
templates feed the formatter exactly as in production.
"""
from __future__ import annotations

import pytest
from connector.actions import formatter as fmt
from marshmallow import ValidationError

from connector import FlowError, UserError, engine, flows
from connector.intake import ingest
from connector.store import Run

from .hooks import HookPlugin


def run(cls, **inputs) -> dict:
    return cls().run(None, cls.Inputs().load(inputs))


def refused(cls, **inputs) -> dict:
    """Return the schema's field errors for ``inputs``."""
    with pytest.raises(ValidationError) as info:
        cls.Inputs().load(inputs)
    return info.value.messages


def fails(cls, **inputs) -> str:
    """Return the UserError message a run with ``inputs`` fails with."""
    with pytest.raises(UserError) as info:
        run(cls, **inputs)
    return str(info.value)


# -- text ------------------------------------------------------------------------------------------

@pytest.mark.covers("formatter.text")
class TestText:
    T = fmt.TextTransform

    def test_trim_and_case(self):
        assert run(self.T, operation="trim", text="  hi there \n")["result"] == "hi there"
        assert run(self.T, operation="upper", text="ábc")["result"] == "ÁBC"
        assert run(self.T, operation="lower", text="ÁBC")["result"] == "ábc"
        assert run(self.T, operation="capitalize", text="hELLO wORLD")["result"] == "Hello world"

    def test_title_capitalizes_words_not_letters_after_apostrophes(self):
        result = run(self.T, operation="title", text="jean-luc o'NEIL they're 2nd")["result"]
        assert result == "Jean-Luc O'neil They're 2nd"

    def test_numbers_booleans_and_null_are_text(self):
        assert run(self.T, operation="upper", text=12.5)["result"] == "12.5"
        assert run(self.T, operation="upper", text=True)["result"] == "TRUE"
        assert run(self.T, operation="trim", text=None)["result"] == ""

    def test_replace_literal_counts_and_ignores_regex_characters(self):
        out = run(self.T, operation="replace", text="a.b.c", find=".", replace_with="-")
        assert out == {"result": "a-b-c", "count": 2}

    def test_replace_literal_ignoring_case_keeps_backslashes(self):
        out = run(self.T, operation="replace", text="Foo foo", find="FOO", replace_with="\\1",
                  ignore_case=True)
        assert out == {"result": "\\1 \\1", "count": 2}

    def test_replace_regex_with_groups(self):
        out = run(self.T, operation="replace", text="2026-01-15", regex=True,
                  find=r"(\d+)-(\d+)-(?P<d>\d+)", replace_with=r"\g<d>/\2/\1")
        assert out == {"result": "15/01/2026", "count": 1}

    def test_replace_deletes_by_default(self):
        assert run(self.T, operation="replace", text="a b c", find=" ")["result"] == "abc"

    def test_replace_errors_name_the_field(self):
        assert "find" in refused(self.T, operation="replace", text="x")
        assert "find" in refused(self.T, operation="replace", text="x", find="(", regex=True)
        message = fails(self.T, operation="replace", text="abc", find="b", regex=True,
                        replace_with=r"\2")
        assert message.startswith("replace_with: invalid group reference")

    def test_split_into_a_list_trimmed(self):
        out = run(self.T, operation="split", text="a, b ,c,")
        assert out == {"result": ["a", "b", "c", ""], "parts": ["a", "b", "c", ""], "count": 4}

    def test_split_picks_one_part_counting_from_either_end(self):
        pick = lambda index: run(self.T, operation="split", text="a|b|c",  # noqa: E731
                                 separator="|", index=index)["result"]
        assert (pick(0), pick(1), pick(-1)) == ("a", "b", "c")
        out = run(self.T, operation="split", text="a|b", separator="|", index=5)
        assert out["result"] is None and out["count"] == 2

    def test_split_keeps_spaces_when_asked_and_understands_escapes(self):
        out = run(self.T, operation="split", text=" a\tb ", separator="\\t", trim_parts=False)
        assert out["result"] == [" a", "b "]
        assert run(self.T, operation="split", text="")["result"] == []

    def test_lines_for_a_for_each(self):
        out = run(self.T, operation="lines", text="ann@x.example\r\n\n  bo@y.example  \n")
        assert out == {"result": ["ann@x.example", "bo@y.example"], "count": 2}

    def test_extract_first_match_and_group(self):
        text = "Orders ORD-1 and ORD-22"
        out = run(self.T, operation="extract", text=text, pattern=r"ORD-(?P<n>\d+)")
        assert out == {"result": "ORD-1", "found": True, "named": {"n": "1"}}
        assert run(self.T, operation="extract", text=text, pattern=r"ORD-(\d+)",
                   group="1")["result"] == "1"
        assert run(self.T, operation="extract", text=text, pattern=r"ord-(?P<n>\d+)",
                   group="n", ignore_case=True)["result"] == "1"

    def test_extract_all_matches(self):
        out = run(self.T, operation="extract", text="ORD-1 and ORD-22", pattern=r"ORD-(?P<n>\d+)",
                  mode="all", group="n")
        assert out == {"result": ["1", "22"], "count": 2, "found": True,
                       "named": [{"n": "1"}, {"n": "22"}]}

    def test_extract_named_groups(self):
        out = run(self.T, operation="extract", text="Jane Smith <jane@x.example>", mode="named",
                  pattern=r"(?P<name>[^<]+?)\s*<(?P<email>[^>]+)>")
        assert out == {"result": {"name": "Jane Smith", "email": "jane@x.example"}, "found": True}

    def test_extract_without_a_match_is_not_an_error(self):
        assert run(self.T, operation="extract", text="none", pattern=r"\d+") == {
            "result": None, "found": False, "named": {}}
        assert run(self.T, operation="extract", text="none", pattern=r"(?P<n>\d+)",
                   mode="named") == {"result": {"n": None}, "found": False}
        assert run(self.T, operation="extract", text="none", pattern=r"\d",
                   mode="all")["result"] == []

    def test_extract_errors_name_the_field(self):
        assert "pattern" in refused(self.T, operation="extract", text="x")
        assert "pattern" in refused(self.T, operation="extract", text="x", pattern="[a-")
        assert "named groups" in refused(self.T, operation="extract", text="x", pattern="a",
                                         mode="named")["pattern"][0]
        assert "group" in refused(self.T, operation="extract", text="x", pattern="(a)", group="2")
        assert "group" in refused(self.T, operation="extract", text="x", pattern="(a)",
                                  group="nope")

    def test_truncate(self):
        out = run(self.T, operation="truncate", text="Hello wonderful world", length=10,
                  suffix="…")
        assert out == {"result": "Hello won…", "truncated": True}
        assert run(self.T, operation="truncate", text="Hello world", length=6)["result"] == "Hello"
        assert run(self.T, operation="truncate", text="short", length=5) == {
            "result": "short", "truncated": False}

    def test_truncate_errors(self):
        assert "length" in refused(self.T, operation="truncate", text="x")
        assert "length" in refused(self.T, operation="truncate", text="x", length=0)
        assert "suffix" in refused(self.T, operation="truncate", text="x", length=3, suffix="...")

    def test_default_if_empty(self):
        assert run(self.T, operation="default", text="  ", default="there") == {
            "result": "there", "was_empty": True}
        assert run(self.T, operation="default", text=None, default=0)["result"] == 0
        assert run(self.T, operation="default", text="Ada", default="there") == {
            "result": "Ada", "was_empty": False}
        assert "default" in refused(self.T, operation="default", text="")

    def test_unknown_operation_and_non_text_are_refused(self):
        assert "operation" in refused(self.T, operation="reverse", text="x")
        assert "text" in refused(self.T, operation="trim", text=["a"])


# -- text to rows ---------------------------------------------------------------------------------

@pytest.mark.covers("formatter.text_to_rows")
class TestTextToRows:
    R = fmt.TextToRows

    def test_header_line_and_quoted_fields(self):
        text = 'email,amount\nann@client.example,500\n"bo@client.example","1,250.00"\n'
        out = run(self.R, text=text)
        assert out == {"rows": [{"email": "ann@client.example", "amount": "500"},
                                {"email": "bo@client.example", "amount": "1,250.00"}],
                       "count": 2, "columns": ["email", "amount"], "delimiter": "comma"}

    @pytest.mark.parametrize("text, delimiter", [
        ("email;amount\nann@x.example;1.234,50\nbo@y.example;12,00", "semicolon"),
        ("email\tamount\nann@x.example\t500", "tab"),
        ("email|amount\nann@x.example|500", "pipe"),
        ("email,amount\nann@x.example,500", "comma"),
    ])
    def test_auto_delimiter(self, text, delimiter):
        out = run(self.R, text=text)
        assert out["delimiter"] == delimiter and out["columns"] == ["email", "amount"]
        assert out["rows"][0]["email"] == "ann@x.example"

    def test_given_delimiter(self):
        out = run(self.R, text="a;b,c\n1;2,3", delimiter="semicolon")
        assert out["rows"] == [{"a": "1", "b,c": "2,3"}]

    def test_column_names_without_a_header(self):
        out = run(self.R, text="ann@x.example,500\nbo@y.example,75", has_header=False,
                  columns="email, amount")
        assert out["rows"][1] == {"email": "bo@y.example", "amount": "75"}

    def test_column_names_replace_the_header(self):
        out = run(self.R, text="E-mail,Credits\nann@x.example,500", columns=["email", "amount"])
        assert out["rows"] == [{"email": "ann@x.example", "amount": "500"}]

    def test_generic_names_blank_lines_short_rows_and_trimming(self):
        out = run(self.R, text="\ufeffa , b\n\n 1 ,2\n3\n", has_header=False)
        assert out["columns"] == ["column_1", "column_2"]
        assert out["rows"] == [{"column_1": "a", "column_2": "b"},
                               {"column_1": "1", "column_2": "2"},
                               {"column_1": "3", "column_2": ""}]
        untrimmed = run(self.R, text="a,b\n 1 ,2", trim=False)
        assert untrimmed["rows"] == [{"a": " 1 ", "b": "2"}]

    def test_quoted_line_breaks_stay_in_the_value(self):
        out = run(self.R, text='name,note\nAnn,"line one\nline two"')
        assert out["rows"] == [{"name": "Ann", "note": "line one\nline two"}]

    def test_empty_text_gives_no_rows(self):
        assert run(self.R, text="")["rows"] == [] and run(self.R, text=None)["count"] == 0
        assert run(self.R, text="email,amount\n")["columns"] == ["email", "amount"]

    def test_a_row_wider_than_the_header_names_its_line(self):
        message = fails(self.R, text="email,amount\nann@x.example,1,250.00", delimiter="comma")
        assert message.startswith("text: line 2 has 3 fields but there are 2 columns")
        assert "double quotes" in message

    def test_duplicate_columns_are_refused(self):
        assert fails(self.R, text="a,a\n1,2").startswith("text: column names must be unique")
        assert fails(self.R, text="1,2", has_header=False, columns="x,x").startswith("columns:")

    def test_bad_choices_are_refused(self):
        assert "delimiter" in refused(self.R, text="x", delimiter=";")


# -- numbers ---------------------------------------------------------------------------------------

@pytest.mark.covers("formatter.number")
class TestNumbers:
    N = fmt.NumberTransform

    @pytest.mark.parametrize("text, separator, expected", [
        ("1,234.50", ".", 1234.5),
        ("1.234,50", ",", 1234.5),
        ("1 234,50", ",", 1234.5),
        ("1'234.50", ".", 1234.5),
        ("1,23,456.50", ".", 123456.5),
        ("$1,234", ".", 1234),
        ("€ 12,5", ",", 12.5),
        ("USD 99.99", ".", 99.99),
        ("12.00 EUR", ".", 12),
        ("-$3.50", ".", -3.5),
        ("(12.50)", ".", -12.5),
        ("\u22125", ".", -5),
        ("+7", ".", 7),
        ("12.5%", ".", 12.5),
        (".5", ".", 0.5),
        ("1e3", ".", 1000),
        (42, ".", 42),
        (0.1, ".", 0.1),
    ])
    def test_parse(self, text, separator, expected):
        out = run(self.N, operation="parse", value=text, decimal_separator=separator)
        assert out["result"] == expected and type(out["result"]) is type(expected)

    def test_parse_keeps_the_digits_as_text(self):
        assert run(self.N, operation="parse", value="1,234.50")["text"] == "1234.50"

    @pytest.mark.parametrize("text", ["12abc", "1,2345.00", "12,34.5", "1.2.3", "", "abc", "--5"])
    def test_parse_refuses_what_is_not_a_number(self, text):
        assert fails(self.N, operation="parse", value=text).startswith(f"value: {text!r} is not")

    def test_parse_suggests_the_other_decimal_separator(self):
        message = fails(self.N, operation="parse", value="1.234,50")
        assert message.endswith("set decimal_separator to ','")

    def test_parse_refuses_booleans_lists_and_huge_numbers(self):
        assert "value" in refused(self.N, operation="parse", value=True)
        assert "value" in refused(self.N, operation="parse", value=[1])
        assert fails(self.N, operation="parse", value="1e400").startswith("value: the number is "
                                                                          "too large")
        assert fails(self.N, operation="parse", value=float("inf")).startswith("value:")
        assert "value" in refused(self.N, operation="parse")

    @pytest.mark.parametrize("value, decimals, mode, expected, text", [
        ("2.345", 2, "half_up", 2.35, "2.35"),
        ("2.345", 2, "half_down", 2.34, "2.34"),
        ("2.5", 0, "half_even", 2, "2"),
        ("-2.5", 0, "half_up", -3, "-3"),
        ("2.301", 1, "ceil", 2.4, "2.4"),
        ("-2.301", 1, "floor", -2.4, "-2.4"),
        ("-2.39", 1, "truncate", -2.3, "-2.3"),
        ("12.5", 2, "half_up", 12.5, "12.50"),
        (1234.5, -2, "half_up", 1200, "1200"),
        (1.005, 2, "half_up", 1.01, "1.01"),
    ])
    def test_round(self, value, decimals, mode, expected, text):
        out = run(self.N, operation="round", value=value, decimals=decimals, mode=mode)
        assert out == {"result": expected, "text": text}

    def test_round_defaults_to_whole_numbers(self):
        assert run(self.N, operation="round", value="7.5")["result"] == 8

    @pytest.mark.parametrize("operator, value, operands, expected", [
        ("add", 0.1, ["0.2"], 0.3),
        ("add", None, ["1,000", 250, "12.5"], 1262.5),
        ("subtract", 10, [3, "2"], 5),
        ("multiply", "1.10", [3], 3.3),
        ("divide", 10, [4], 2.5),
        ("divide", 1, [3], 1 / 3),
        ("min", 5, ["-2", 9], -2),
        ("max", None, ["$5", "$12.50"], 12.5),
    ])
    def test_math(self, operator, value, operands, expected):
        out = run(self.N, operation="math", operator=operator, value=value, operands=operands)
        assert out["result"] == pytest.approx(expected) and type(out["result"]) is type(expected)

    def test_math_reads_text_with_the_decimal_separator(self):
        out = run(self.N, operation="math", operator="add", operands=["1.234,50", "0,50"],
                  decimal_separator=",")
        assert out == {"result": 1235, "text": "1235.00"}

    def test_divide_by_zero_names_the_operand(self):
        assert fails(self.N, operation="math", operator="divide", value=10,
                     operands=[2, "0.00"]) == "operands[1]: cannot divide by zero"

    def test_math_errors_name_the_field(self):
        assert "operator" in refused(self.N, operation="math", operands=[1])
        assert "operands" in refused(self.N, operation="math", operator="divide", value=1)
        assert "operands" in refused(self.N, operation="math", operator="add")
        assert fails(self.N, operation="math", operator="add", value=1,
                     operands=[2, "x"]).startswith("operands[1]: 'x' is not a number")
        assert fails(self.N, operation="math", operator="multiply", value="1e200",
                     operands=["1e200"]).startswith("result: the number is too large")

    @pytest.mark.parametrize("value, style, decimals, expected", [
        (1234567.891, "1,234.56", 2, "1,234,567.89"),
        (1234.5, "1.234,56", 2, "1.234,50"),
        ("1234.5", "1 234,56", None, "1 234,5"),
        (1234.5, "1'234.56", 0, "1'235"),
        (-1234.5, "1234.56", 2, "-1234.50"),
        (1234.5, "1234,56", 1, "1234,5"),
        (999, "1,234.56", None, "999"),
        (-0.001, "1,234.56", 2, "0.00"),
        (1234567, "1,234.56", -3, "1,235,000"),
    ])
    def test_format(self, value, style, decimals, expected):
        out = run(self.N, operation="format", value=value, style=style, decimals=decimals)
        assert out["result"] == expected

    def test_format_with_prefix_suffix_and_mode(self):
        out = run(self.N, operation="format", value="2.345", decimals=2, mode="floor",
                  prefix="$", suffix=" USD")
        assert out == {"result": "$2.34 USD", "number": 2.345}

    def test_bad_choices_are_refused(self):
        assert "style" in refused(self.N, operation="format", value=1, style="1_234.56")
        assert "decimal_separator" in refused(self.N, operation="parse", value=1,
                                              decimal_separator=" ")
        assert "decimals" in refused(self.N, operation="round", value=1, decimals=99)


# -- dates -----------------------------------------------------------------------------------------

@pytest.mark.covers("formatter.date")
class TestDates:
    D = fmt.DateTransform

    def parse(self, value, **inputs) -> str:
        return run(self.D, operation="parse", date=value, **inputs)["result"]

    @pytest.mark.parametrize("value, expected", [
        ("2026-01-15", "2026-01-15T00:00:00+00:00"),
        ("2026-1-5", "2026-01-05T00:00:00+00:00"),
        ("2026-01-15T10:30", "2026-01-15T10:30:00+00:00"),
        ("2026-01-15T10:30:00Z", "2026-01-15T10:30:00+00:00"),
        ("2026-01-15T10:30:00.250+05:30", "2026-01-15T10:30:00.250+05:30"),
        ("2026-01-15T10:30:00.123456-0800", "2026-01-15T10:30:00.123456-08:00"),
        ("2026-01-15 10:30", "2026-01-15T10:30:00+00:00"),
        ("2026-01-15 10:30:15 UTC", "2026-01-15T10:30:15+00:00"),
        ("2026-01-15 10:30 GMT-3", "2026-01-15T10:30:00-03:00"),
        ("2026-01-15 10:30 Europe/Paris", "2026-01-15T10:30:00+01:00"),
        ("20260115T103000Z", "2026-01-15T10:30:00+00:00"),
        ("20260115", "2026-01-15T00:00:00+00:00"),
        ("2026/01/15", "2026-01-15T00:00:00+00:00"),
        ("01/15/2026", "2026-01-15T00:00:00+00:00"),
        ("1/5/2026 3:07 pm", "2026-01-05T15:07:00+00:00"),
        ("Jan 15, 2026", "2026-01-15T00:00:00+00:00"),
        ("January 15th 2026 at 10:30 PM", "2026-01-15T22:30:00+00:00"),
        ("Sept. 3, 2026", "2026-09-03T00:00:00+00:00"),
        ("15 January 2026", "2026-01-15T00:00:00+00:00"),
        ("15-Jan-2026", "2026-01-15T00:00:00+00:00"),
        ("Thursday, 15 January 2026 12 AM", "2026-01-15T00:00:00+00:00"),
        ("Thu, 15 Jan 2026 10:30:00 +0000", "2026-01-15T10:30:00+00:00"),
        (1768473000, "2026-01-15T10:30:00+00:00"),
        ("1768473000", "2026-01-15T10:30:00+00:00"),
        (1768473000.5, "2026-01-15T10:30:00.500+00:00"),
        (1768473000123, "2026-01-15T10:30:00.123+00:00"),
        ("1768473000123", "2026-01-15T10:30:00.123+00:00"),
    ])
    def test_parse_common_forms(self, value, expected):
        assert self.parse(value) == expected

    def test_day_first(self):
        assert self.parse("15/01/2026", day_first=True) == "2026-01-15T00:00:00+00:00"
        assert self.parse("05.01.2026", day_first=True) == "2026-01-05T00:00:00+00:00"
        assert self.parse("05-01-2026") == "2026-05-01T00:00:00+00:00"

    def test_an_impossible_numeric_date_is_not_swapped(self):
        message = fails(self.D, operation="parse", date="15/01/2026")
        assert message.startswith("date: '15/01/2026' is not a valid date (month must be in")
        assert message.endswith("set day_first to true to read it as day/month/year")
        assert "set day_first to false" in fails(self.D, operation="parse", date="01/15/2026",
                                                 day_first=True)

    def test_a_date_without_offset_is_in_the_input_timezone(self):
        out = run(self.D, operation="parse", date="2026-07-01 09:00", timezone="America/New_York")
        assert out["result"] == "2026-07-01T09:00:00-04:00"
        assert out["timezone"] == "America/New_York" and out["timestamp"] == 1782910800
        assert self.parse("2026-07-01T09:00Z", timezone="Asia/Tokyo") == "2026-07-01T09:00:00+00:00"
        assert self.parse(0, timezone="Asia/Tokyo") == "1970-01-01T09:00:00+09:00"

    @pytest.mark.parametrize("value", ["nope", "2026-13-01x", "15/01/26", "Foo 15, 2026",
                                       "2026-01-15 1030", "2026-01-15 25:00", "2026-01-15 13:00 pm",
                                       "2026-01-15 10:30 Mars/Olympus", ""])
    def test_unreadable_dates_name_the_field_and_the_forms(self, value):
        message = fails(self.D, operation="parse", date=value)
        assert message.startswith("date: ")

    def test_the_error_lists_the_accepted_forms(self):
        message = fails(self.D, operation="parse", date="next tuesday")
        assert message.startswith("date: could not read 'next tuesday' as a date; accepted forms:")
        assert "15 January 2026" in message and "unix seconds or milliseconds" in message

    def test_invalid_calendar_dates(self):
        assert "day is out of range" in fails(self.D, operation="parse", date="2026-02-29")
        assert self.parse("2028-02-29").startswith("2028-02-29")

    @pytest.mark.parametrize("format_, expected", [
        ("iso", "2026-01-15T10:30:00+01:00"),
        ("date", "2026-01-15"),
        ("time", "10:30:00"),
        ("datetime", "2026-01-15 10:30:00"),
        ("rfc2822", "Thu, 15 Jan 2026 10:30:00 +0100"),
        ("unix", 1768469400),
        ("unix_ms", 1768469400000),
        ("%d/%m/%Y %H:%M", "15/01/2026 10:30"),
        ("%A %d %B", "Thursday 15 January"),
    ])
    def test_format(self, format_, expected):
        out = run(self.D, operation="format", date="2026-01-15 10:30", timezone="Europe/Paris",
                  format=format_)
        assert out["result"] == expected
        assert out["weekday"] == "Thursday" and out["date"] == "2026-01-15"

    def test_an_unknown_format_is_refused(self):
        assert "format" in refused(self.D, operation="format", date="2026-01-15", format="ddmmyy")

    @pytest.mark.parametrize("date, amount, unit, expected", [
        ("2026-01-15T10:30:00Z", 90, "minutes", "2026-01-15T12:00:00+00:00"),
        ("2026-01-15T10:30:00Z", -3, "hours", "2026-01-15T07:30:00+00:00"),
        ("2026-01-15T10:30:00Z", 30, "seconds", "2026-01-15T10:30:30+00:00"),
        ("2026-01-15", 20, "days", "2026-02-04T00:00:00+00:00"),
        ("2026-01-15", 2, "weeks", "2026-01-29T00:00:00+00:00"),
        ("2026-01-31", 1, "months", "2026-02-28T00:00:00+00:00"),
        ("2028-01-31", 1, "months", "2028-02-29T00:00:00+00:00"),
        ("2026-03-31", -1, "months", "2026-02-28T00:00:00+00:00"),
        ("2026-11-30", 3, "months", "2027-02-28T00:00:00+00:00"),
        ("2028-02-29", 1, "years", "2029-02-28T00:00:00+00:00"),
        ("2026-01-15T10:30:00+05:30", 1, "days", "2026-01-16T10:30:00+05:30"),
    ])
    def test_add(self, date, amount, unit, expected):
        out = run(self.D, operation="add", date=date, amount=amount, unit=unit)
        assert out["result"] == expected

    def test_subtract(self):
        out = run(self.D, operation="subtract", date="2026-03-31", amount=1, unit="months",
                  format="date")
        assert out["result"] == "2026-02-28"

    def test_days_keep_the_wall_clock_across_dst_but_hours_do_not(self):
        start = {"date": "2026-03-28 12:00", "timezone": "Europe/Paris"}
        days = run(self.D, operation="add", amount=1, unit="days", **start)
        hours = run(self.D, operation="add", amount=24, unit="hours", **start)
        assert days["result"] == "2026-03-29T12:00:00+02:00"
        assert hours["result"] == "2026-03-29T13:00:00+02:00"

    def test_add_errors(self):
        assert "amount" in refused(self.D, operation="add", date="2026-01-15")
        assert "unit" in refused(self.D, operation="add", date="2026-01-15", amount=1,
                                 unit="fortnights")
        assert fails(self.D, operation="add", date="9999-12-01", amount=2,
                     unit="months").startswith("amount: 2 months takes the date outside years")
        assert fails(self.D, operation="add", date="2026-01-01", amount=10 ** 9,
                     unit="days").startswith("amount:")

    def test_to_timezone(self):
        out = run(self.D, operation="to_timezone", date="2026-01-15T10:30:00Z",
                  to_timezone="Asia/Kolkata")
        assert out["result"] == "2026-01-15T16:00:00+05:30" and out["timezone"] == "Asia/Kolkata"
        assert run(self.D, operation="to_timezone", date="2026-07-01T12:00:00+02:00",
                   to_timezone="utc", format="time")["result"] == "10:00:00"

    def test_time_zones_are_validated(self):
        assert "to_timezone" in refused(self.D, operation="to_timezone", date="2026-01-15")
        messages = refused(self.D, operation="to_timezone", date="2026-01-15",
                           to_timezone="Europe/Atlantis")
        assert "unknown time zone 'Europe/Atlantis'" in messages["to_timezone"][0]
        assert "timezone" in refused(self.D, operation="parse", date="2026-01-15", timezone="CEST")
        assert "timezone" in refused(self.D, operation="parse", date="2026-01-15",
                                     timezone="../etc/passwd")

    @pytest.mark.parametrize("other, unit, expected", [
        ("2026-01-20T12:00:00Z", "days", 5.5),
        ("2026-01-20T12:00:00Z", "hours", 132),
        ("2026-01-14T23:15:00Z", "minutes", -45),
        ("2026-03-14T00:00:00Z", "months", 1),
        ("2026-03-15T00:00:00Z", "months", 2),
        ("2027-01-14T00:00:00Z", "years", 0),
        ("2028-01-15T00:00:00Z", "years", 2),
        ("2025-11-16T00:00:00Z", "months", -1),
        ("2026-01-29T00:00:00Z", "weeks", 2),
    ])
    def test_difference(self, other, unit, expected):
        out = run(self.D, operation="difference", date="2026-01-15T00:00:00Z", other_date=other,
                  unit=unit)
        assert out["result"] == expected and out["unit"] == unit

    def test_difference_extras_and_calendar_days_across_dst(self):
        out = run(self.D, operation="difference", date="2026-03-28 12:00",
                  other_date="2026-03-29 12:00", timezone="Europe/Paris", unit="days")
        assert out == {"result": 1, "unit": "days", "seconds": 82800, "later": True}
        hours = run(self.D, operation="difference", date="2026-03-28 12:00",
                    other_date="2026-03-29 12:00", timezone="Europe/Paris", unit="hours")
        assert hours["result"] == 23

    def test_difference_needs_a_readable_other_date(self):
        assert "other_date" in refused(self.D, operation="difference", date="2026-01-15")
        assert fails(self.D, operation="difference", date="2026-01-15",
                     other_date="soon").startswith("other_date: could not read 'soon'")

    def test_date_must_be_text_or_a_number(self):
        assert "date" in refused(self.D, operation="parse", date={"y": 2026})
        assert "date" in refused(self.D, operation="parse", date=True)


# -- phone numbers ---------------------------------------------------------------------------------

@pytest.mark.covers("formatter.phone")
class TestPhone:
    P = fmt.PhoneFormat

    def test_national_number_with_default_country(self):
        assert run(self.P, phone="(415) 555-0132", country="us") == {
            "result": "+14155550132", "e164": "+14155550132", "national": "(415) 555-0132",
            "international": "+1 415-555-0132", "country_code": 1, "region": "US",
            "valid": True, "possible": True, "type": "fixed_line_or_mobile"}

    def test_mobile_and_fixed_line_types(self):
        uk = run(self.P, phone="07400 123456", country="GB")
        assert (uk["e164"], uk["type"], uk["region"]) == ("+447400123456", "mobile", "GB")
        fixed = run(self.P, phone="020 7946 0018", country="GB")
        assert fixed["type"] == "fixed_line" and fixed["international"] == "+44 20 7946 0018"

    def test_international_number_ignores_the_country(self):
        out = run(self.P, phone="+91 98765-43210", country="US")
        assert out["e164"] == "+919876543210" and out["region"] == "IN"
        assert out["country_code"] == 91

    def test_international_prefix_of_the_country(self):
        assert run(self.P, phone="00 44 7400 123456", country="FR")["e164"] == "+447400123456"

    def test_invalid_numbers_are_reported_or_refused(self):
        out = run(self.P, phone="555-0100", country="US")
        assert out["valid"] is False
        assert fails(self.P, phone="555-0100", country="US",
                     require_valid=True) == "phone: '555-0100' is not a valid phone number in US"

    def test_errors_name_the_field(self):
        assert fails(self.P, phone="415 555 0132").startswith(
            "phone: '415 555 0132' has no +country code")
        assert fails(self.P, phone="call me", country="US").startswith(
            "phone: could not read 'call me' as a phone number")
        assert "country" in refused(self.P, phone="415", country="USA")
        assert "country" in refused(self.P, phone="415", country="XX")
        assert "phone" in refused(self.P, phone="")


# -- lookup table ----------------------------------------------------------------------------------

@pytest.mark.covers("formatter.lookup")
class TestLookup:
    L = fmt.LookupTable
    TABLE = {"basic": 100, "Pro": 500, "1": {"tier": "one"}}

    def test_found(self):
        assert run(self.L, key="Pro", table=self.TABLE) == {"result": 500, "found": True,
                                                             "key": "Pro"}
        assert run(self.L, key=1, table=self.TABLE)["result"] == {"tier": "one"}
        assert run(self.L, key="  basic ", table=self.TABLE)["result"] == 100

    def test_case(self):
        assert run(self.L, key="pro", table=self.TABLE)["found"] is False
        assert run(self.L, key="PRO", table=self.TABLE, case_insensitive=True)["result"] == 500

    def test_fallback_default(self):
        assert run(self.L, key="gold", table=self.TABLE, default=0) == {
            "result": 0, "found": False, "key": None}
        assert run(self.L, key=None, table=self.TABLE)["result"] is None

    def test_errors_name_the_field(self):
        assert "table" in refused(self.L, key="x", table="basic=100")
        assert "table" in refused(self.L, key="x")
        clash = refused(self.L, key="x", table={"Pro": 1, "pro": 2}, case_insensitive=True)
        assert "clash" in clash["table"][0]


# -- in a flow -------------------------------------------------------------------------------------

@pytest.fixture
def fhost(make_host):
    return make_host(extra_plugins=[HookPlugin()])


def run_flow(host, steps: list[dict], item: dict):
    """Save a flow on the test hook, deliver ``item`` and run it; return the run and its steps."""
    flow = flows.save(host, {"name": "fmt", "trigger": {"key": "t.hook"}, "steps": steps})
    ingest(flow, host.catalog.trigger("t.hook"), [("k1", item)])
    assert engine.run_due(host) == 1
    run_ = Run.get()
    return run_, {s.name: s.output for s in run_.step_runs}


@pytest.mark.covers("formatter.text")
def test_text_steps_chain_in_a_flow(fhost):
    run_, out = run_flow(fhost, [
        {"name": "clean", "action": "formatter.text",
         "inputs": {"operation": "trim", "text": "{{ trigger.message }}"}},
        {"name": "order", "action": "formatter.text",
         "inputs": {"operation": "extract", "text": "{{ steps.clean.result }}",
                    "pattern": r"(?P<order>ord-\d+)", "ignore_case": True}},
        {"name": "shout", "action": "formatter.text",
         "inputs": {"operation": "upper", "text": "{{ steps.order.result }}"}},
        {"name": "emails", "action": "formatter.text",
         "inputs": {"operation": "lines", "text": "{{ trigger.emails }}"}},
    ], {"message": "  Order ord-20417 shipped  ", "emails": "ann@x.example\nbo@y.example\n"})
    assert run_.status == Run.SUCCEEDED, run_.error
    assert out["clean"] == {"result": "Order ord-20417 shipped"}
    assert out["order"]["named"] == {"order": "ord-20417"}
    assert out["shout"] == {"result": "ORD-20417"}
    assert out["emails"]["result"] == ["ann@x.example", "bo@y.example"]


@pytest.mark.covers("formatter.text_to_rows", "formatter.number")
def test_agency_csv_to_rows_and_amounts_in_a_flow(fhost):
    body = ("email;amount\n"
            "ann@client.example;500\n"
            "bo@client.example;\"1.250,00\"\n")
    run_, out = run_flow(fhost, [
        {"name": "rows", "action": "formatter.text_to_rows",
         "inputs": {"text": "{{ trigger.body }}"}},
        {"name": "second", "action": "formatter.number",
         "inputs": {"operation": "parse", "value": "{{ steps.rows.rows[1].amount }}",
                    "decimal_separator": ","}},
        {"name": "total", "action": "formatter.number",
         "inputs": {"operation": "math", "operator": "add", "decimal_separator": ",",
                    "operands": "{{ steps.rows.rows | map(attribute='amount') | list }}"}},
        {"name": "shown", "action": "formatter.number",
         "inputs": {"operation": "format", "value": "{{ steps.total.result }}", "decimals": 2,
                    "style": "1.234,56", "suffix": " credits"}},
    ], {"body": body})
    assert run_.status == Run.SUCCEEDED, run_.error
    assert out["rows"]["count"] == 2 and out["rows"]["delimiter"] == "semicolon"
    assert out["rows"]["rows"][0] == {"email": "ann@client.example", "amount": "500"}
    assert out["second"] == {"result": 1250, "text": "1250.00"}
    assert out["total"]["result"] == 1750
    assert out["shown"]["result"] == "1.750,00 credits"


@pytest.mark.covers("formatter.date")
def test_dates_in_a_flow(fhost):
    run_, out = run_flow(fhost, [
        {"name": "booked", "action": "formatter.date",
         "inputs": {"operation": "parse", "date": "{{ trigger.booked }}", "day_first": True,
                    "timezone": "Europe/Paris"}},
        {"name": "reminder", "action": "formatter.date",
         "inputs": {"operation": "subtract", "date": "{{ steps.booked.result }}", "amount": 1,
                    "unit": "days", "format": "%d/%m/%Y %H:%M"}},
        {"name": "in_ny", "action": "formatter.date",
         "inputs": {"operation": "to_timezone", "date": "{{ steps.booked.timestamp }}",
                    "to_timezone": "America/New_York"}},
        {"name": "wait", "action": "formatter.date",
         "inputs": {"operation": "difference", "date": "{{ trigger.sent_at }}",
                    "other_date": "{{ steps.booked.iso }}", "unit": "hours"}},
    ], {"booked": "15/01/2026 10:30", "sent_at": 1768383000})
    assert run_.status == Run.SUCCEEDED, run_.error
    assert out["booked"]["result"] == "2026-01-15T10:30:00+01:00"
    assert out["reminder"]["result"] == "14/01/2026 10:30"
    assert out["in_ny"]["result"] == "2026-01-15T04:30:00-05:00"
    assert out["wait"]["result"] == 24


@pytest.mark.covers("formatter.phone")
def test_phone_in_a_flow(fhost):
    run_, out = run_flow(fhost, [
        {"name": "phone", "action": "formatter.phone",
         "inputs": {"phone": "{{ trigger.phone }}", "country": "{{ trigger.country }}"}},
    ], {"phone": "(415) 555-0132", "country": "US"})
    assert run_.status == Run.SUCCEEDED, run_.error
    assert out["phone"]["result"] == "+14155550132" and out["phone"]["valid"] is True


@pytest.mark.covers("formatter.lookup")
def test_lookup_in_a_flow(fhost):
    run_, out = run_flow(fhost, [
        {"name": "credits", "action": "formatter.lookup",
         "inputs": {"key": "{{ trigger.plan }}", "table": {"basic": 100, "pro": 500},
                    "default": 50, "case_insensitive": True}},
    ], {"plan": "Pro"})
    assert run_.status == Run.SUCCEEDED, run_.error
    assert out["credits"] == {"result": 500, "found": True, "key": "pro"}


@pytest.mark.covers("formatter.date")
def test_an_unreadable_date_fails_the_run_naming_step_and_field(fhost):
    run_, _ = run_flow(fhost, [
        {"name": "when", "action": "formatter.date",
         "inputs": {"operation": "parse", "date": "{{ trigger.when }}"}},
    ], {"when": "tomorrow-ish"})
    assert run_.status == Run.FAILED and run_.failed_step == "when"
    assert run_.error.startswith("step when: date: could not read 'tomorrow-ish' as a date")


@pytest.mark.covers("formatter.text")
def test_a_missing_per_operation_field_fails_the_run_naming_it(fhost):
    run_, _ = run_flow(fhost, [
        {"name": "fix", "action": "formatter.text",
         "inputs": {"operation": "{{ trigger.op }}", "text": "x"}},
    ], {"op": "replace"})
    assert run_.status == Run.FAILED and run_.error.startswith("step fix: ")
    assert run_.error.endswith(": find: required when operation is replace")


@pytest.mark.covers("formatter.date", "formatter.phone")
def test_literal_inputs_are_checked_when_the_flow_is_saved(fhost):
    def save(step):
        return flows.save(fhost, {"name": "bad", "trigger": {"key": "t.hook"}, "steps": [step]})

    with pytest.raises(FlowError, match=r"steps\[0\]\.inputs\.to_timezone: unknown time zone"):
        save({"action": "formatter.date", "inputs": {"operation": "to_timezone", "date": "x",
                                                     "to_timezone": "Mars/Base"}})
    with pytest.raises(FlowError, match=r"steps\[0\]\.inputs\.country: expected an ISO 3166"):
        save({"action": "formatter.phone", "inputs": {"phone": "x", "country": "United States"}})
    with pytest.raises(FlowError, match=r"steps\[0\]\.inputs\.pattern: not a valid regular"):
        save({"action": "formatter.text", "inputs": {"operation": "extract", "text": "x",
                                                     "pattern": "(unclosed"}})
