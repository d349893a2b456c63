"""The webhook verifier: the Standard Webhooks reference vector and every way to fail it."""
import base64

import pytest

from connector.errors import SignatureError
from connector.signatures import new_secret, sign, signature, verify

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TS = 1614265330
BODY = b'{"test": 2432232314}'
EXPECTED = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def headers(sig=EXPECTED, ts=TS, msg_id=MSG_ID):
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}


def test_reference_vector_signs_and_verifies():
    assert signature(SECRET, MSG_ID, TS, BODY) == EXPECTED
    assert verify(SECRET, headers(), BODY, now=TS) == MSG_ID


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_each_missing_header_is_rejected(missing):
    sent = headers()
    del sent[missing]
    with pytest.raises(SignatureError, match=missing):
        verify(SECRET, sent, BODY, now=TS)


def test_flipped_body_bit_is_rejected():
    flipped = bytes([BODY[0] ^ 0x01]) + BODY[1:]
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, headers(), flipped, now=TS)


def test_wrong_secret_is_rejected():
    with pytest.raises(SignatureError, match="does not match"):
        verify(new_secret(), headers(), BODY, now=TS)


@pytest.mark.parametrize("offset", [301, -301])
def test_timestamp_301_seconds_old_or_ahead_is_rejected(offset):
    with pytest.raises(SignatureError, match="webhook-timestamp"):
        verify(SECRET, headers(), BODY, now=TS + offset)


@pytest.mark.parametrize("offset", [299, -299])
def test_timestamp_299_seconds_old_or_ahead_is_accepted(offset):
    assert verify(SECRET, headers(), BODY, now=TS + offset) == MSG_ID


def test_non_numeric_timestamp_is_rejected():
    with pytest.raises(SignatureError, match="integer"):
        verify(SECRET, headers(ts="1614265330.5"), BODY, now=TS)
    with pytest.raises(SignatureError, match="integer"):
        verify(SECRET, headers(ts="yesterday"), BODY, now=TS)


def test_header_with_old_and_new_signature_passes_during_rotation():
    old = signature(new_secret(), MSG_ID, TS, BODY)
    assert verify(SECRET, headers(sig=f"{old} {EXPECTED}"), BODY, now=TS) == MSG_ID
    assert verify(SECRET, headers(sig=f"{EXPECTED} {old}"), BODY, now=TS) == MSG_ID


def test_several_secrets_accepted_while_rotating():
    assert verify([new_secret(), SECRET], headers(), BODY, now=TS) == MSG_ID


def test_signature_of_other_version_or_empty_is_rejected():
    digest = EXPECTED.partition(",")[2]
    with pytest.raises(SignatureError, match="no v1"):
        verify(SECRET, headers(sig=f"v2,{digest}"), BODY, now=TS)


def test_no_secret_configured_is_rejected():
    with pytest.raises(SignatureError, match="no signing secret"):
        verify([], headers(), BODY, now=TS)


def test_sign_round_trip_and_case_insensitive_header_names():
    secret = new_secret()
    sent = sign(secret, "msg_1", b"{}", timestamp=TS)
    upper = {k.upper(): v for k, v in sent.items()}
    assert verify(secret, upper, b"{}", now=TS) == "msg_1"
    assert base64.b64decode(secret[len("whsec_"):])  # the secret is whsec_ + base64
