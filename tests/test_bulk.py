"""Bulk actions: the E.164 fast path, batching that measures once, and the progress a user sees.

The fast path must answer exactly as phonenumbers does; the batching exactly as adding one
row at a time did; and ``ctx.progress`` must reach `connector invoke`'s stderr.
"""
from __future__ import annotations

import json
import logging
import random

import phonenumbers
import pytest
from click.testing import CliRunner
from marshmallow import ValidationError

from connector import cli
from connector.actions import samora as samora_actions
from connector.actions.contacts_api import bulk as contacts_actions
from connector.cli_dev import ProgressLine, run_action
from connector.fields import fast_e164, to_e164
from connector.plugins.samora import normalize_e164
from connector.sdk import ActionContext

AGENT = "123e4567-e89b-12d3-a456-426614174000"


def slow_e164(text: str) -> str | None:
    """What to_e164 answered before the fast path: phonenumbers alone (None: refused)."""
    try:
        parsed = phonenumbers.parse(text.strip(), None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def refused(text: str) -> bool:
    try:
        to_e164(text)
    except ValidationError:
        return True
    return False


# -- the fast path ---------------------------------------------------------------------------

@pytest.mark.parametrize("number", ["+14155550199", "+919876543210", "+447911123456",
                                    "+4915123456789", "+8613912345678", "+33612345678",
                                    "+11000000000", "+12000000000"])
def test_strict_numbers_take_the_fast_path_and_come_back_unchanged(number):
    assert fast_e164(number)
    assert to_e164(number) == number == slow_e164(number)


def test_the_fast_path_agrees_with_phonenumbers_for_every_country_code_and_length():
    rng = random.Random(8)
    codes = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE) + [28, 42, 999, 800, 979]
    taken = 0
    for code in codes:
        for total in range(8, 16):
            width = total - len(str(code))
            if width < 1:
                continue
            for first in "0123456789":
                digits = first + "".join(rng.choice("0123456789") for _ in range(width - 1))
                number = f"+{code}{digits}"
                if fast_e164(number):
                    taken += 1
                    assert slow_e164(number) == number, number
                assert (None if refused(number) else to_e164(number)) == slow_e164(number)
    assert taken > 5000  # the fast path is the common case, not a rare one


@pytest.mark.parametrize("number", [
    "+1555123456",          # 9 national digits: impossible for +1
    "+15551234567890",      # too long for +1
    "+999123456789",        # no such country code
    "+42123456789",         # 42 is not assigned
    "+44123",               # short
    "+0123456789",          # a country code cannot start with 0
])
def test_impossible_numbers_are_refused_as_before(number):
    assert not fast_e164(number)
    assert refused(number) and slow_e164(number) is None


def test_edge_lengths_of_the_strict_form_fall_back_to_phonenumbers():
    assert not fast_e164("+1234567")              # 7 digits: not strict, parse decides
    assert not fast_e164("+1234567890123456")     # 16 digits: not strict
    assert refused("+1234567890123456")
    assert fast_e164("+87012345678") == (slow_e164("+87012345678") == "+87012345678")
    # + and 15 digits, the longest E.164, where the country allows it
    longest = "+491234567890123"
    assert (to_e164(longest) if not refused(longest) else None) == slow_e164(longest)


def test_a_national_prefix_parse_would_strip_is_left_to_phonenumbers():
    # "+44 0 20 7946 0000": phonenumbers drops the 0; the fast path must not keep it
    assert not fast_e164("+4402079460000")
    assert to_e164("+4402079460000") == "+442079460000" == slow_e164("+4402079460000")


def test_non_ascii_digits_never_take_the_fast_path_and_come_back_as_ascii():
    arabic = "+" + "".join(chr(0x0660 + int(d)) for d in "919876543210")
    fullwidth = "+" + "".join(chr(0xFF10 + int(d)) for d in "14155550199")
    for text, expected in ((arabic, "+919876543210"), (fullwidth, "+14155550199")):
        assert not fast_e164(text)
        assert to_e164(text) == expected
        assert normalize_e164(text) == expected
        assert samora_actions.samora_number(text) == expected


def test_whitespace_and_punctuation_are_still_accepted():
    assert not fast_e164(" +14155550199")
    assert to_e164(" +14155550199\n") == "+14155550199"
    assert to_e164("\t+1 (415) 555-0199 ") == "+14155550199"
    assert samora_actions.samora_number("+1 415 555 0199") == "+14155550199"
    assert not fast_e164("+1415555 0199") and not fast_e164("+14155550199\n")


def test_samora_numbers_match_normalize_e164_exactly():
    rng = random.Random(3)
    samples = ["+14155550199", "+919876543210", "+1415555019", "+4402079460000",
               "+999123456789", "+12345678901234567", "4155550199", "", None, 12345]
    samples += [f"+{rng.randint(1, 999)}{rng.randint(10**6, 10**12)}" for _ in range(3000)]
    for value in samples:
        try:
            expected = normalize_e164(value)
        except ValidationError as err:
            with pytest.raises(ValidationError) as got:
                samora_actions.samora_number(value)
            assert got.value.messages == err.messages
        else:
            assert samora_actions.samora_number(value) == expected


# -- recipients: checked up front, batched as before -----------------------------------------

def test_one_bad_number_anywhere_stops_all_recipients_before_sending(connected):
    rows = [{"phone_number": f"+1415{n:07d}", "call_variables": {"n": str(n)}}
            for n in range(2_000_000, 2_012_000)]
    rows[11_500]["phone_number"] = "+1415555"
    with pytest.raises(ValidationError, match=r"recipients\[11500\]: expected an E.164"):
        connected.catalog.action("samora.add_campaign_recipients").Inputs().load(
            {"agent_id": AGENT, "campaign_id": "c-1", "recipients": rows})


def test_none_among_recipients_is_refused_by_index():
    with pytest.raises(ValidationError) as err:
        samora_actions.AddRecipientsInputs().load(
            {"agent_id": AGENT, "campaign_id": "c", "recipients": ["+14155550199", None]})
    assert err.value.messages == {"recipients": {1: ["Field may not be null."]}}


@pytest.mark.parametrize("variables", [
    {"k": "x" * 4088},                    # exactly 4096 bytes
    {"k": "é" * 2043},                    # 4094 bytes in UTF-8, beyond the plain bound
    {"k": "\x1f" * 600},                  # escaped: 6 bytes a character
    {"n": 1, "t": True, "z": None, "l": [1, 2]},
])
def test_the_variables_bound_never_accepts_what_measuring_refuses(variables):
    size = samora_actions.variables_size(variables)
    if samora_actions.surely_fits(variables):
        assert size <= samora_actions.MAX_VARIABLES_BYTES
    loaded = samora_actions.AddRecipientsInputs().load(
        {"agent_id": AGENT, "campaign_id": "c",
         "recipients": [{"phone_number": "+14155550199", "call_variables": variables}]})
    assert loaded["recipients"][0]["call_variables"] == variables
    bigger = {**variables, "pad": "x" * 4096}
    assert not samora_actions.surely_fits(bigger)
    with pytest.raises(ValidationError, match="4 KiB"):
        samora_actions.AddRecipientsInputs().load(
            {"agent_id": AGENT, "campaign_id": "c",
             "recipients": [{"phone_number": "+14155550199", "call_variables": bigger}]})


def one_at_a_time(recipients):
    """The batching as it was: add recipients one by one under 5000 and 2 MiB."""
    size_of = samora_actions.body_size
    empty = size_of({"recipients": []})
    batch, size, out = [], empty, []
    for recipient in recipients:
        extra = size_of(recipient) + (2 if batch else 0)
        if batch and (len(batch) >= 5000 or size + extra > 2 * 1024 * 1024):
            out.append(batch)
            batch, size = [], empty
            extra -= 2
        batch.append(recipient)
        size += extra
    if batch:
        out.append(batch)
    return out


def test_recipient_batches_are_the_ones_adding_one_at_a_time_made():
    rng = random.Random(5)
    small = [{"phone_number": f"+1415{n:07d}"} for n in range(12_345)]
    mixed = [{"phone_number": f"+1415{n:07d}",
              "call_variables": {"v": "x" * rng.choice((0, 10, 900, 4000))}}
             for n in range(6000)]
    huge = [{"phone_number": "+14155550199", "call_variables": {"v": "y" * 3_000_000}}]
    for recipients in (small, mixed, huge + small[:3], small[:1], []):
        pairs = list(samora_actions.recipient_batches(recipients))
        got = [batch for batch, _ in pairs]
        assert got == one_at_a_time(recipients)
        for batch, body in pairs:
            assert json.loads(body.data) == {"recipients": batch}  # what is sent
            assert len(body.data) == samora_actions.body_size({"recipients": batch})
            assert len(batch) <= 5000
            assert (samora_actions.body_size({"recipients": batch}) <= 2 * 1024 * 1024
                    or len(batch) == 1)


def contact_runs_one_at_a_time(rows, size, max_bytes):
    out, current, weight = [], [], 0
    for row in rows:
        row_bytes = len(json.dumps(row, separators=(",", ":"))) + 1
        if current and (len(current) >= size or weight + row_bytes > max_bytes):
            out.append(current)
            current, weight = [], 0
        current.append(row)
        weight += row_bytes
    if current:
        out.append(current)
    return out


def test_contact_batches_are_the_ones_adding_one_at_a_time_made():
    rng = random.Random(9)
    rows = [{"name": f"C{n}", "notes": "n" * rng.choice((0, 50, 5000, 40000))}
            for n in range(3000)]
    for size, max_bytes in ((500, 1_500_000), (500, 60_000), (7, 10**9), (500, 10)):
        assert contacts_actions.batches(rows, size, max_bytes) == contact_runs_one_at_a_time(
            rows, size, max_bytes)


def test_rows_too_big_for_a_whole_run_are_measured_once_each(monkeypatch):
    rows = [{"notes": "n" * 100} for _ in range(2000)]
    encoded = []

    class Counting:
        @staticmethod
        def dumps(value, **kwargs):
            encoded.append(len(value) if isinstance(value, list) else 1)
            return json.dumps(value, **kwargs)

    monkeypatch.setattr(contacts_actions, "json", Counting)
    assert len(contacts_actions.batches(rows, 500, 10)) == 2000  # one row a request
    assert sum(encoded) <= len(rows) + 500  # one failed run of 500, then each row once


def test_import_rows_load_fast_but_refuse_as_marshmallow_did():
    schema = contacts_actions.ImportInputs()
    rows = [{"name": f"C{n}", "email": f"c{n}@example.com"} for n in range(1000)]
    loaded = schema.load({"contacts": rows})["contacts"]
    assert loaded == rows and loaded[0] is not rows[0]  # copies, as fields.Dict made
    with pytest.raises(ValidationError) as err:
        schema.load({"contacts": [{"name": "a"}, "b", {"name": "c"}, 7]})
    assert err.value.messages == {"contacts": {1: ["Not a valid mapping type."],
                                               3: ["Not a valid mapping type."]}}
    with pytest.raises(ValidationError, match="Not a valid list"):
        schema.load({"contacts": {"name": "a"}})


# -- progress --------------------------------------------------------------------------------

def test_progress_goes_to_the_callback_or_to_the_debug_log(caplog):
    seen = []
    ctx = ActionContext(flow_name="f", run_id=1, step_name="fill", idempotency_key="k",
                        on_progress=lambda done, total: seen.append((done, total)))
    ctx.progress(5000, 12000)
    assert seen == [(5000, 12000)]
    quiet = ActionContext(flow_name="f", run_id=1, step_name="fill", idempotency_key="k")
    with caplog.at_level(logging.DEBUG, logger="connector.action"):
        quiet.progress(1, 2)
    assert "f fill: 1 of 2 done" in caplog.text


class Tty:
    def __init__(self, tty):
        self.text, self.tty = "", tty

    def write(self, text):
        self.text += text

    def flush(self):
        pass

    def isatty(self):
        return self.tty


def test_the_progress_line_prints_lines_or_rewrites_one_on_a_terminal():
    plain = ProgressLine("a.b", Tty(False))
    plain(5000, 10001)
    plain(10001, 10001)
    assert plain.stream.text == ("a.b: 5000 of 10001 done (49%)\n"
                                 "a.b: 10001 of 10001 done (100%)\n")
    term = ProgressLine("a.b", Tty(True))
    term(1, 3)
    term(2, 3)
    term.close()  # stopped part way: the line is ended before any error is printed
    assert term.stream.text == "\ra.b: 1 of 3 done (33%)\ra.b: 2 of 3 done (66%)\n"
    done = ProgressLine("a.b", Tty(True))
    done(0, 0)
    done.close()
    assert done.stream.text == "\ra.b: 0 of 0 done\n"


def new_campaign(connected):
    client = connected.client(connected.connection("samora"))
    try:
        return samora_actions.campaign_out(client.post(
            samora_actions.campaign_path(AGENT), json={"name": "bulk"}))
    finally:
        client.close()


def test_adding_recipients_reports_each_batch(connected, sandbox):
    campaign = new_campaign(connected)
    numbers = [f"+1415{n:07d}" for n in range(4_000_000, 4_010_001)]
    seen = []
    out = run_action(connected, "samora.add_campaign_recipients", "samora",
                     {"agent_id": AGENT, "campaign_id": campaign["id"], "recipients": numbers},
                     progress=lambda done, total: seen.append((done, total)))
    assert out["added"] == 10001 and out["batches"] == 3
    assert seen == [(5000, 10001), (10000, 10001), (10001, 10001)]


def test_importing_contacts_reports_each_batch(connected, sandbox):
    rows = [{"name": f"P {n}", "email": f"p{n}@example.com"} for n in range(1200)]
    seen = []
    out = run_action(connected, "contacts_api.import_contacts", "contacts-api",
                     {"contacts": rows, "match_by": "none"},
                     progress=lambda done, total: seen.append((done, total)))
    assert out["created"] == 1200 and out["batches"] == 3
    assert seen == [(500, 1200), (1000, 1200), (1200, 1200)]


def test_connector_invoke_prints_progress_on_stderr_and_only_json_on_stdout(
        connected, sandbox, tmp_path, monkeypatch):
    campaign = new_campaign(connected)
    inputs = tmp_path / "in.json"
    inputs.write_text(json.dumps({
        "agent_id": AGENT, "campaign_id": campaign["id"],
        "recipients": [f"+1415{n:07d}" for n in range(5_000_000, 5_006_000)]}))
    runner = CliRunner()
    result = runner.invoke(cli.main, ["invoke", "samora.add_campaign_recipients",
                                      "--connection", "samora", "--json", str(inputs)],
                           obj={"host": connected}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["added"] == 6000
    assert result.stderr.splitlines() == [
        "samora.add_campaign_recipients: 5000 of 6000 done (83%)",
        "samora.add_campaign_recipients: 6000 of 6000 done (100%)"]


def test_a_body_encoded_once_hashes_as_the_plain_body_and_sends_the_same_json():
    from connector import JSONBody
    from connector.sdk import request_hash

    rng = random.Random(8)
    for _ in range(200):
        body = {"contacts": [{"email": f"p{rng.randrange(10**6)}@x.example", "n": rng.random(),
                              "tags": ["é", None, True], "z": {"b": 1, "a": [2.5, "x"]}}
                             for _ in range(rng.randrange(0, 5))],
                "match_by": rng.choice(["email", "none"]), "on_match": "update"}
        encoded = JSONBody(body)
        assert request_hash(encoded) == request_hash(body)  # keys recorded before stay valid
        path = f"/v1/x/{rng.randrange(99)}"
        assert (request_hash({"path": path, "body": encoded})
                == request_hash({"path": path, "body": body}))
        assert json.loads(encoded.data) == body
        # deeper, or under keys that are not text: the slow path, the same digest
        assert (request_hash({"calls": [{"path": path, "body": encoded}]})
                == request_hash({"calls": [{"path": path, "body": body}]}))
        assert request_hash({7: encoded, 8: path}) == request_hash({7: body, 8: path})
    with pytest.raises(ValueError):  # what requests' json= refuses too
        JSONBody({"n": float("nan")})


def test_the_client_sends_an_encoded_body_as_json():
    import threading

    from werkzeug.serving import make_server
    from werkzeug.wrappers import Request, Response

    from connector import JSONBody
    from connector.http import ApiClient
    from connector.sdk import App

    seen = []

    @Request.application
    def echo(request):
        seen.append((request.headers.get("Content-Type"), request.get_data()))
        return Response("{}", content_type="application/json")

    server = make_server("127.0.0.1", 0, echo, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = ApiClient(App(), {}, f"http://127.0.0.1:{server.server_port}")
        body = {"b": [1, 2], "a": "x"}
        client.post("/in", json=JSONBody(body))
        client.post("/in", json=JSONBody(body), headers={"Content-Type": "application/json; x=1"})
    finally:
        server.shutdown()
        thread.join(5)
    assert seen[0] == ("application/json", b'{"a": "x", "b": [1, 2]}')
    assert seen[1][0] == "application/json; x=1"  # the caller's own header wins
