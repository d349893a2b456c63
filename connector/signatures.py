"""Standard Webhooks signing and verification (https://www.standardwebhooks.com).

Used wherever a service documents a signing secret but no scheme of its own (Samora's
webhooks, AI Connector's auto-recharge): the sender puts ``webhook-id``,
``webhook-timestamp`` and ``webhook-signature: v1,<base64 HMAC-SHA256>`` on the request,
signing ``id.timestamp.body`` with the secret's decoded bytes. The sandbox signs with
:func:`sign`; triggers check with :func:`verify`, always on the raw body, before parsing.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import Mapping

from .errors import SignatureError

SECRET_PREFIX = "whsec_"
TOLERANCE_SECONDS = 300


def new_secret() -> str:
    """Return a fresh ``whsec_`` secret holding 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def _key(secret: str) -> bytes:
    raw = secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret
    try:
        return base64.b64decode(raw, validate=True)
    except (ValueError, TypeError):
        # A secret that is not base64 is used as its own bytes (some senders do this).
        return raw.encode()


def signature(secret: str, msg_id: str, timestamp: int | str, body: bytes) -> str:
    """Return the ``v1,<base64>`` signature of one message."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign(secret: str, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Return the three Standard Webhooks headers for sending ``body``."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature(secret, msg_id, ts, body),
    }


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        # Plain dicts are case-sensitive; werkzeug's Headers are not.
        lowered = {k.lower(): v for k, v in headers.items()}
        value = lowered.get(name)
    return value


def verify(
    secrets_: str | list[str],
    headers: Mapping[str, str],
    body: bytes,
    now: float | None = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> str:
    """Check a request signed the Standard Webhooks way; return its ``webhook-id``.

    ``secrets_`` may hold several secrets (old and new during a rotation), and the
    signature header may carry several space-separated signatures: one match is enough.
    Raises :class:`SignatureError` naming what is wrong, never echoing a secret.
    """
    candidates = [secrets_] if isinstance(secrets_, str) else list(secrets_)
    candidates = [s for s in candidates if s]
    if not candidates:
        raise SignatureError("no signing secret is configured for this webhook")
    msg_id = _header(headers, "webhook-id")
    ts_raw = _header(headers, "webhook-timestamp")
    sig_header = _header(headers, "webhook-signature")
    for name, value in (("webhook-id", msg_id), ("webhook-timestamp", ts_raw),
                        ("webhook-signature", sig_header)):
        if not value:
            raise SignatureError(f"missing header {name}")
    try:
        ts = int(ts_raw)
    except ValueError:
        raise SignatureError("header webhook-timestamp must be an integer of seconds") from None
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance:
        raise SignatureError(
            f"header webhook-timestamp is more than {tolerance} seconds from now"
        )
    offered = []
    for part in sig_header.split():
        version, _, value = part.partition(",")
        if version == "v1" and value:
            offered.append(value)
    if not offered:
        raise SignatureError("header webhook-signature holds no v1 signature")
    for secret in candidates:
        expected = signature(secret, msg_id, ts, body).partition(",")[2]
        for value in offered:
            if hmac.compare_digest(expected.encode(), value.encode()):
                return msg_id
    raise SignatureError("webhook-signature does not match the body")


def verify_subscription(subscription: Mapping, headers: Mapping[str, str], body: bytes) -> str:
    """Verify against a stored subscription's ``secret`` and any ``previous_secrets``."""
    found = [subscription.get("secret"), *subscription.get("previous_secrets", [])]
    return verify([s for s in found if s], headers, body)
