"""Catch any webhook: a per-flow URL that turns each JSON, form or text POST into items.

Protection, chosen per flow (``auth``): ``none`` (the URL's unguessable token is the only
secret), ``token`` (a header, default X-Webhook-Token, or a ``token`` query parameter, must
equal the flow's token), ``basic`` (HTTP basic auth), ``standard_webhooks`` (webhook-id /
webhook-timestamp / webhook-signature with a whsec_ secret) or ``hmac_sha256`` (an HMAC-SHA256
of the raw body in a named header, hex or base64, with an optional prefix such as
``sha256=``). A token, password or secret not given in the flow is generated when the flow is
switched on, kept sealed, and shown by ``connector flows secret NAME``.

Items: the JSON body (an object, or each element of an array), the fields of a form, or
``{"body": text}`` for text; ``items_path`` (dotted, e.g. ``data.orders``) picks an array
inside the body so one request yields one item per element. Dedupe key: the value at
``dedupe_field`` in each item; else the webhook-id header; else every request is new.
``respond: last_step`` holds the request (up to ``respond_timeout`` seconds) and answers with
the output of the flow's last step.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid

from marshmallow import Schema, fields, validate

from connector import SignatureError, WebhookTrigger, hookimpl
from connector.signatures import new_secret, verify_subscription

AUTH = ["none", "token", "basic", "standard_webhooks", "hmac_sha256"]


def dig(data, path: str):
    """Return the value at a dotted path (``a.b.0``); KeyError naming the path if absent."""
    value = data
    for part in [p for p in (path or "").split(".") if p]:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(path)
    return value


class Inputs(Schema):
    auth = fields.String(load_default="none", validate=validate.OneOf(AUTH), metadata={
        "label": "Protection", "help": "How a request proves it comes from your sender."})
    token_header = fields.String(load_default="X-Webhook-Token", metadata={
        "label": "Token header", "help": "For auth token: the header carrying the token."})
    token = fields.String(load_default=None, metadata={
        "label": "Token", "help": "For auth token; generated when the flow is switched on "
                                  "if left empty (recommended).", "secret": True})
    username = fields.String(load_default="connector", metadata={
        "label": "User name", "help": "For auth basic."})
    password = fields.String(load_default=None, metadata={
        "label": "Password", "help": "For auth basic; generated if left empty.",
        "secret": True})
    secret = fields.String(load_default=None, metadata={
        "label": "Signing secret", "help": "For standard_webhooks (whsec_...) or hmac_sha256; "
                                           "generated if left empty.", "secret": True})
    signature_header = fields.String(load_default="X-Signature", metadata={
        "label": "Signature header", "help": "For hmac_sha256: the header with the HMAC."})
    signature_encoding = fields.String(load_default="hex",
                                       validate=validate.OneOf(["hex", "base64"]),
                                       metadata={"label": "Signature encoding"})
    signature_prefix = fields.String(load_default="", metadata={
        "label": "Signature prefix", "help": "Text before the HMAC in the header, e.g. sha256="})
    items_path = fields.String(load_default="", metadata={
        "label": "Items at", "help": "Dotted path to an array in the body, one item per "
                                     "element (e.g. data.orders); empty: the whole body."})
    dedupe_field = fields.String(load_default="", metadata={
        "label": "Unique field", "help": "Dotted path in each item to its unique id; a repeat "
                                         "is ignored. Empty: the webhook-id header, if any."})
    respond = fields.String(load_default="accepted",
                            validate=validate.OneOf(["accepted", "last_step"]),
                            metadata={"label": "Answer with",
                                      "help": "accepted (200 at once) or last_step (the last "
                                              "step's output; the flow runs synchronously)"})
    respond_timeout = fields.Float(load_default=10.0, validate=validate.Range(min=0.5, max=30),
                                   metadata={"label": "Answer within (s)",
                                             "help": "For last_step: past this, answer 202."})


class Catch(WebhookTrigger):
    """POST /hooks/<token> on this host; nothing to register with a service."""

    key = "webhook.catch"
    app = "webhook"
    label = "Catch webhook"
    help = "A URL of your own: every JSON, form or text POST to it starts the flow."
    Inputs = Inputs
    manual_setup = True
    sample = {"order_id": "A-1001", "email": "jane@example.com", "total": 42.5}

    def subscribe(self, ctx, url):
        kept, inputs = ctx.previous_subscription, ctx.inputs
        sub = {"url": url}
        mode = inputs.get("auth")
        if mode == "token":
            sub["token"] = inputs.get("token") or kept.get("token") or secrets.token_urlsafe(24)
        elif mode == "basic":
            sub["password"] = (inputs.get("password") or kept.get("password")
                               or secrets.token_urlsafe(18))
        elif mode == "standard_webhooks":
            sub["secret"] = inputs.get("secret") or kept.get("secret") or new_secret()
        elif mode == "hmac_sha256":
            sub["secret"] = (inputs.get("secret") or kept.get("secret")
                             or secrets.token_hex(32))
        return sub

    def verify(self, ctx, request, subscription):
        inputs, mode = ctx.inputs, ctx.inputs.get("auth", "none")
        header = lambda name: next((v for k, v in request.headers.items()  # noqa: E731
                                    if k.lower() == name.lower()), None)
        if mode == "none":
            return
        if mode == "token":
            sent = header(inputs.get("token_header") or "X-Webhook-Token") or request.args.get(
                "token")
            if not sent or not hmac.compare_digest(sent.encode(),
                                                   subscription.get("token", "").encode()):
                raise SignatureError(f"missing or wrong token (header {inputs['token_header']}"
                                     " or ?token=)")
        elif mode == "basic":
            _basic(header("Authorization"), inputs.get("username") or "connector",
                   subscription.get("password", ""))
        elif mode == "standard_webhooks":
            verify_subscription(subscription, request.headers, request.body)
        elif mode == "hmac_sha256":
            name = inputs.get("signature_header") or "X-Signature"
            sent = header(name)
            if not sent:
                raise SignatureError(f"missing header {name}")
            prefix = inputs.get("signature_prefix") or ""
            if prefix and not sent.startswith(prefix):
                raise SignatureError(f"header {name} does not start with {prefix!r}")
            digest = hmac.new(subscription.get("secret", "").encode(), request.body,
                              hashlib.sha256).digest()
            expected = (digest.hex() if inputs.get("signature_encoding") == "hex"
                        else base64.b64encode(digest).decode())
            given = sent[len(prefix):].strip()
            if inputs.get("signature_encoding") == "hex":
                given = given.lower()
            # bytes on both sides: compare_digest refuses non-ASCII text with a TypeError
            if not hmac.compare_digest(given.encode(), expected.encode()):
                raise SignatureError(f"header {name} does not match the body")

    def parse(self, ctx, request):
        # The catalog makes a fresh trigger per request, so remembering the flow's unique
        # field here for request_dedupe_key (which gets no context) is request-local.
        self._dedupe_field = ctx.inputs.get("dedupe_field") or ""
        ctype = (request.content_type or "").lower()
        if ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            body = request.form()
        elif ctype == "text/plain":
            body = {"body": request.body.decode("utf-8", "replace")}
        elif not request.body.strip():
            body = {}
        else:
            body = request.json()
        path = ctx.inputs.get("items_path") or ""
        if path:
            try:
                found = dig(body, path)
            except KeyError:
                raise ValueError(f"items_path {path!r} is not in the body") from None
            if not isinstance(found, list):
                raise ValueError(f"items_path {path!r} is not an array")
            elements = found
        else:
            elements = body if isinstance(body, list) else [body]
        return [e if isinstance(e, dict) else {"value": e} for e in elements]

    def request_dedupe_key(self, item, request):
        field = getattr(self, "_dedupe_field", "")
        if field:
            try:
                return str(dig(item, field))
            except KeyError:
                raise ValueError(f"dedupe_field {field!r} is missing from an item") from None
        msg_id = next((v for k, v in request.headers.items() if k.lower() == "webhook-id"), None)
        return str(msg_id) if msg_id else f"req-{uuid.uuid4().hex}"

    def dedupe_key(self, item):
        return str(item.get("id") or uuid.uuid4().hex)

    def reply_timeout(self, inputs):
        return inputs.get("respond_timeout", 10.0) if inputs.get("respond") == "last_step" \
            else None


def _basic(value: str | None, username: str, password: str) -> None:
    if not value or not value.lower().startswith("basic "):
        raise SignatureError("missing HTTP basic credentials (Authorization: Basic ...)")
    try:
        user, _, given = base64.b64decode(value[6:].strip()).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        raise SignatureError("malformed Authorization header") from None
    ok_user = hmac.compare_digest(user.encode(), username.encode())
    if not (hmac.compare_digest(given.encode(), password.encode()) and ok_user):
        raise SignatureError("wrong user name or password")


@hookimpl
def register_triggers(register):
    register(Catch)
