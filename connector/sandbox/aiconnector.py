"""AI Connector emulator (seed 003): contacts, lists, custom-channel messages, credits.

Auth is the ``apiKey`` query parameter on every endpoint except POST /v1/subaccounts/credits,
which reads only the ``x-api-key`` header (the document says "not as a query parameter").
The document's "HTTPS only" rule is not enforced on loopback. Decisions where it is vague,
kept in step with the app's docstring (connector/plugins/aiconnector.py):

- Errors use the document's envelope ``{"error": {"code", "message"}}`` (plus ``details``
  naming the field). Body errors are 400 VALIDATION_ERROR naming the field
  (``customData.body``); a bad phone is 400 INVALID_PHONE with the document's message.
- A phone must start with ``+`` and be a possible number for its country code
  (phonenumbers, no default region); it is stored in E.164. Duplicates are found by phone
  only, as the document says: POST /v1/contacts answers 201 with a new contact, or 200 with
  the existing one for a known phone.
- GET /v1/contacts?phoneNumber=X or ?email=X answers the one matching contact (email
  matched case-insensitively, phone after E.164 normalising), 404 CONTACT_NOT_FOUND when
  none matches, 400 when neither parameter is given; phoneNumber wins when both are.
- Adding a contact to a list it is already on changes nothing and answers the same 200.
  There is no endpoint listing lists (the document has none): the seed has two.
- POST /v1/send_custom_channel_message answers 200 ``{"success", "messageId",
  "contactId"}``; it takes no idempotency key, so a repeat sends again. A ``fromId`` not
  seen before on that channel creates a contact (with the optional names and email, as the
  document's "used when creating a new contact" implies); the contact has no phone.
- POST /v1/incoming_custom_channel_message keeps a message once per ``messageSid`` (or
  ``id``) and answers 200 ``{"success", "messageId", "messageSid", "contactId",
  "duplicate"}``: a repeat answers with the first ``messageId`` and ``duplicate: true``.
  Its ``fromId`` maps to a contact the same way.
- Custom channels (the document's Custom Channels guide is referenced, not included): the
  dashboard holds, per channel name, a webhook URL to which the platform delivers what goes
  out on that channel, signed the Standard Webhooks way with the secret pasted there (one
  is generated if none is). Both the bot's replies and messages sent through
  send_custom_channel_message go out there. An incoming message's ``customData.channel``
  names its channel (``custom`` when absent); when that channel has a webhook with
  auto-reply on, the bot answers each new ``text`` message with status ``received`` after
  ``reply_delay`` seconds (0.5 by default). The delivery is ``{"event":
  "outbound_custom_channel_message", "messageId", "messageType": "text", "createdAt",
  "customData": {...}}``; customData holds ``messageId``, ``customChannel``, ``body``,
  ``fromId`` (the contact's id on your platform, as in the send endpoint), ``contactId``
  (AI Connector's), ``source`` (``bot`` or ``api``) and, when known, ``toId``,
  ``campaignId``, ``firstName``, ``lastName``, ``email`` and ``inReplyTo`` (the answered
  messageSid). ``webhook-id`` is the messageId on every retry.
- The auto-recharge webhook (not in the endpoint list; the grant-credits tip names its
  ``idempotency_key``) is Standard Webhooks signed, with ``webhook-id`` equal to the
  idempotency key on every repeat. Its body is ``{"event": "auto_recharge",
  "idempotency_key", "sub_account_id", "email", "amount", "current_balance", "threshold",
  "created_at"}``.
- Neither webhook has an API: the admin routes under /_sandbox/aiconnector/ stand in for
  the dashboard (see :meth:`AIConnector.register_admin`).
"""
from __future__ import annotations

import math
import re
import secrets
import threading
from urllib.parse import urlparse

import phonenumbers
from flask import Flask, request

from connector.signatures import new_secret

from .common import (ApiError, RateLimiter, create_service_app, json_body, now_iso, raw_body,
                     require_str)
from .delivery import Deliverer

DEFAULT_KEY = "aic_test_key"
DEMO_LIST_ID = "lst_demo"
DEMO_SUBACCOUNT_EMAIL = "client@agency.example"
CREDITS_PATH = "/v1/subaccounts/credits"
MAX_FIRE_TIMES = 10
DEFAULT_CHANNEL = "custom"
DEFAULT_REPLY_DELAY = 0.5
MAX_REPLY_DELAY = 60.0
OUTBOUND_EVENT = "outbound_custom_channel_message"
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
INVALID_PHONE = "Phone number must include a valid country code."


def normalize_phone(phone: str) -> str:
    """Return ``phone`` in E.164, or raise the document's INVALID_PHONE error."""
    try:
        if not phone.startswith("+"):
            raise phonenumbers.NumberParseException(0, "no country code")
        parsed = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        raise ApiError(400, "INVALID_PHONE", INVALID_PHONE) from None
    if not phonenumbers.is_possible_number(parsed):
        raise ApiError(400, "INVALID_PHONE", INVALID_PHONE)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _positive_number(value, field: str) -> int | float:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value <= 0):
        raise ApiError(400, "VALIDATION_ERROR", f"Field {field} must be a positive number.",
                       {"field": field})
    return value


def _webhook_url(url) -> str:
    parsed = urlparse(url if isinstance(url, str) else "")
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ApiError(400, "VALIDATION_ERROR", "Field url must be an http or https URL.",
                       {"field": "url"})
    return url


def _secret(secret) -> str | None:
    if secret is not None and (not isinstance(secret, str) or not secret):
        raise ApiError(400, "VALIDATION_ERROR", "Field secret must be a non-empty string.",
                       {"field": "secret"})
    return secret


def _times(times) -> int:
    if isinstance(times, bool) or not isinstance(times, int) or not 1 <= times <= MAX_FIRE_TIMES:
        raise ApiError(400, "VALIDATION_ERROR",
                       f"Field times must be an integer from 1 to {MAX_FIRE_TIMES}.",
                       {"field": "times"})
    return times


def _reply_text(body: str) -> str:
    return f"Thanks for your message! You wrote: {body}"


def _custom_data(body: dict) -> dict:
    data = body.get("customData")
    if not isinstance(data, dict):
        raise ApiError(400, "VALIDATION_ERROR", "Field customData is required and must be an "
                                                "object.", {"field": "customData"})
    return data


class AIConnector:
    """State and routes of AI Connector; every access holds ``lock``."""

    def __init__(self, lock: threading.RLock, limiter: RateLimiter, deliverer: Deliverer):
        self.lock = lock
        self.limiter = limiter
        self.deliverer = deliverer
        self.keys: set[str] = set()
        self.contacts: dict[str, dict] = {}
        self.lists: dict[str, dict] = {}
        self.messages: list[dict] = []
        self.incoming: dict[str, dict] = {}
        self.subaccounts: dict[str, dict] = {}
        self.credit_ledger: list[dict] = []
        self.auto_recharge: dict | None = None
        self.channels: dict[str, dict] = {}
        self.channel_contacts: dict[str, str] = {}

    def reset(self, seed: bool = True) -> None:
        """Forget everything; with ``seed``, add the demo key, lists and sub-accounts."""
        with self.lock:
            self.keys = {DEFAULT_KEY}
            self.contacts, self.lists, self.incoming, self.subaccounts = {}, {}, {}, {}
            self.messages, self.credit_ledger = [], []
            self.auto_recharge = None
            self.channels, self.channel_contacts = {}, {}
            if not seed:
                return
            for list_id, name in ((DEMO_LIST_ID, "Demo list"), ("lst_vip", "VIP")):
                self.lists[list_id] = {"id": list_id, "name": name, "members": []}
            for sub_id, email, balance in (("sub_demo", DEMO_SUBACCOUNT_EMAIL, 42),
                                           ("sub_other", "other@agency.example", 1000)):
                self.subaccounts[sub_id] = {"id": sub_id, "email": email, "balance": balance,
                                            "threshold": 50}

    # Contacts and lists

    def create_contact(self, body: dict) -> tuple[dict, bool]:
        """Create a contact, or find the one with the same phone; return it and "created"."""
        fields = {k: require_str(body, k, required=False)
                  for k in ("firstName", "lastName", "phone", "email")}
        if not fields["phone"] and not fields["email"]:
            raise ApiError(400, "VALIDATION_ERROR", "Provide a phone (with country code) or "
                                                    "an email.", {"field": "phone"})
        if fields["phone"]:
            fields["phone"] = normalize_phone(fields["phone"])
        if fields["email"] and not EMAIL.match(fields["email"]):
            raise ApiError(400, "VALIDATION_ERROR", "Field email must be an email address.",
                           {"field": "email"})
        with self.lock:
            if fields["phone"]:
                existing = self._by_phone(fields["phone"])
                if existing:
                    return dict(existing), False
            contact = {"id": secrets.token_hex(10), **fields, "createdAt": now_iso()}
            self.contacts[contact["id"]] = contact
            return dict(contact), True

    def _by_phone(self, phone: str) -> dict | None:
        return next((c for c in self.contacts.values() if c["phone"] == phone), None)

    def find_contact(self, phone: str | None = None, email: str | None = None) -> dict:
        """Return the contact with this phone (E.164-normalised) or email, or raise 404."""
        with self.lock:
            if phone:
                found = self._by_phone(normalize_phone(phone))
            else:
                found = next((c for c in self.contacts.values()
                              if (c["email"] or "").lower() == (email or "").lower()), None)
            if found is None:
                raise ApiError(404, "CONTACT_NOT_FOUND", "No contact has this phone number or "
                                                         "email.")
            return dict(found)

    def add_to_list(self, list_id: str, contact_id: str) -> dict:
        """Add a contact to a list (once); return the success body."""
        with self.lock:
            if list_id not in self.lists:
                raise ApiError(404, "LIST_NOT_FOUND", f"List {list_id} does not exist.",
                               {"field": "listId"})
            if contact_id not in self.contacts:
                raise ApiError(404, "CONTACT_NOT_FOUND", f"Contact {contact_id} does not exist.",
                               {"field": "contactId"})
            members = self.lists[list_id]["members"]
            if contact_id not in members:
                members.append(contact_id)
            return {"success": True, "listId": list_id, "contactId": contact_id}

    # Messages

    def send_message(self, body: dict) -> dict:
        """Record an outbound custom-channel message; return the success body."""
        data = _custom_data(body)
        message = {f: require_str(data, f, label=f"customData.{f}")
                   for f in ("fromId", "customChannel", "body")}
        for f in ("campaignId", "firstName", "lastName", "email"):
            message[f] = require_str(data, f, required=False, label=f"customData.{f}")
        if message["email"] and not EMAIL.match(message["email"]):
            raise ApiError(400, "VALIDATION_ERROR", "Field customData.email must be an email "
                                                    "address.", {"field": "customData.email"})
        message = {"messageId": secrets.token_hex(10), **message, "direction": "outbound",
                   "source": "api", "createdAt": now_iso()}
        with self.lock:
            message["contactId"] = self._channel_contact(
                message["customChannel"], message["fromId"], message)
            self.messages.append(message)
            target = self.channels.get(message["customChannel"])
            target = dict(target) if target else None
        if target:  # queued: the sender's answer never waits on the channel's receiver
            self._deliver(target, message, now=False)
        return {"success": True, "messageId": message["messageId"],
                "contactId": message["contactId"]}

    def _channel_contact(self, channel: str, from_id: str, names: dict) -> str:
        """Return the contact behind ``from_id`` on ``channel``, creating it the first time."""
        key = f"{channel}\x00{from_id}"
        contact_id = self.channel_contacts.get(key)
        if contact_id not in self.contacts:
            contact = {"id": secrets.token_hex(10),
                       **{f: names.get(f) for f in ("firstName", "lastName")},
                       "phone": None, "email": names.get("email"), "createdAt": now_iso()}
            self.contacts[contact["id"]] = contact
            self.channel_contacts[key] = contact_id = contact["id"]
        return contact_id

    def receive_message(self, body: dict) -> dict:
        """Record an incoming message once per messageSid; return the success body."""
        data = _custom_data(body)
        sid = data.get("messageSid", data.get("id"))
        if isinstance(sid, int) and not isinstance(sid, bool):
            sid = str(sid)
        if not isinstance(sid, str) or not sid:
            raise ApiError(400, "VALIDATION_ERROR", "Field customData.messageSid (or "
                                                    "customData.id) is required.",
                           {"field": "customData.messageSid"})
        message = {f: require_str(data, f, label=f"customData.{f}")
                   for f in ("fromId", "toId", "body")}
        message["channel"] = require_str(data, "channel", required=False,
                                         label="customData.channel")
        message["status"] = require_str(data, "status", required=False,
                                        label="customData.status") or "received"
        message["messageType"] = require_str(body, "messageType", required=False) or "text"
        with self.lock:
            first = self.incoming.get(sid)
            if first is not None:
                return {"success": True, "messageId": first["messageId"], "messageSid": sid,
                        "contactId": first["contactId"], "duplicate": True}
            message = {"messageId": secrets.token_hex(10), "messageSid": sid, **message,
                       "direction": "inbound", "createdAt": now_iso()}
            message["contactId"] = self._channel_contact(message["channel"] or DEFAULT_CHANNEL,
                                                         message["fromId"], {})
            self.incoming[sid] = message
            self.messages.append(message)
            channel = self.channels.get(message["channel"] or DEFAULT_CHANNEL)
            if (channel and channel["auto_reply"] and message["messageType"] == "text"
                    and message["status"] == "received"):
                self.deliverer.scheduler.schedule(channel["reply_delay"],
                                                  lambda: self._bot_reply(sid))
        return {"success": True, "messageId": message["messageId"], "messageSid": sid,
                "contactId": message["contactId"], "duplicate": False}

    # Custom channels: the dashboard's per-channel webhook, the bot's outbound messages

    def configure_channel(self, channel, url, secret=None, auto_reply=True,
                          reply_delay=DEFAULT_REPLY_DELAY) -> dict:
        """Set where a custom channel's outbound messages go; return it with its secret."""
        if not isinstance(channel, str) or not channel.strip():
            raise ApiError(400, "VALIDATION_ERROR", "Field channel must be a non-empty string.",
                           {"field": "channel"})
        if not isinstance(auto_reply, bool):
            raise ApiError(400, "VALIDATION_ERROR", "Field auto_reply must be true or false.",
                           {"field": "auto_reply"})
        if (isinstance(reply_delay, bool) or not isinstance(reply_delay, (int, float))
                or not math.isfinite(reply_delay) or not 0 <= reply_delay <= MAX_REPLY_DELAY):
            raise ApiError(400, "VALIDATION_ERROR", "Field reply_delay must be a number of "
                           f"seconds from 0 to {MAX_REPLY_DELAY:g}.", {"field": "reply_delay"})
        entry = {"channel": channel, "url": _webhook_url(url),
                 "secret": _secret(secret) or new_secret(), "auto_reply": auto_reply,
                 "reply_delay": float(reply_delay)}
        with self.lock:
            self.channels[channel] = entry
            return dict(entry)

    def remove_channel(self, channel: str) -> None:
        """Forget a custom channel's webhook (404 when none is set)."""
        with self.lock:
            if self.channels.pop(channel, None) is None:
                raise ApiError(404, "CUSTOM_CHANNEL_NOT_FOUND",
                               f"Custom channel {channel} has no webhook URL.",
                               {"field": "channel"})

    def _outbound(self, channel: str, data: dict, source: str, message_id=None) -> dict:
        """Record one outbound message (under the lock) and return it."""
        message = {"messageId": message_id or secrets.token_hex(10), "customChannel": channel,
                   **{k: v for k, v in data.items() if v is not None},
                   "direction": "outbound", "source": source, "createdAt": now_iso()}
        self.messages.append(message)
        return message

    def _bot_reply(self, sid: str) -> None:
        """Answer the incoming message ``sid`` on its channel, if the channel still has a URL."""
        with self.lock:
            incoming = self.incoming.get(sid)
            if incoming is None:
                return  # the sandbox was reset
            name = incoming["channel"] or DEFAULT_CHANNEL
            target = self.channels.get(name)
            if target is None or not target["auto_reply"]:
                return
            target = dict(target)
            message = self._outbound(name, {"fromId": incoming["fromId"],
                                            "contactId": incoming["contactId"],
                                            "toId": incoming["toId"],
                                            "body": _reply_text(incoming["body"]),
                                            "inReplyTo": sid}, "bot")
        self._deliver(target, message, now=False)

    def emit_bot_message(self, channel: str, data: dict, times=1) -> dict:
        """Make the bot send one message on ``channel`` now, delivered ``times`` times."""
        times = _times(times)
        fields = {"fromId": require_str(data, "fromId"),
                  "body": require_str(data, "body", required=False) or "Hello from the bot!"}
        for f in ("toId", "campaignId", "firstName", "lastName", "email", "inReplyTo"):
            fields[f] = require_str(data, f, required=False)
        message_id = require_str(data, "messageId", required=False)
        with self.lock:
            target = self.channels.get(channel)
            if target is None:
                raise ApiError(409, "CUSTOM_CHANNEL_NOT_CONFIGURED",
                               f"Set a webhook URL for custom channel {channel} first.")
            target = dict(target)
            fields["contactId"] = self._channel_contact(channel, fields["fromId"], fields)
            message = self._outbound(channel, fields, "bot", message_id)
        results = [self._deliver(target, message, now=True) for _ in range(times)]
        return {"messageId": message["messageId"], "payload": _outbound_payload(message),
                "deliveries": results}

    def _deliver(self, target: dict, message: dict, now: bool):
        send = self.deliverer.send_now if now else self.deliverer.send
        return send(target["url"], target["secret"], OUTBOUND_EVENT, _outbound_payload(message),
                    msg_id=message["messageId"], source=f"aiconnector:channel:{target['channel']}")

    # Agency credits and auto-recharge

    def _subaccount(self, email) -> dict:
        if not isinstance(email, str) or not email:
            raise ApiError(400, "VALIDATION_ERROR", "Field email is required.", {"field": "email"})
        found = next((s for s in self.subaccounts.values()
                      if s["email"].lower() == email.strip().lower()), None)
        if found is None:
            raise ApiError(404, "SUBACCOUNT_NOT_FOUND",
                           "No sub-account of this agency has that email.", {"field": "email"})
        return found

    def grant_credits(self, email, amount, description=None) -> dict:
        """Add credits to a sub-account and the ledger; return the success body."""
        amount = _positive_number(amount, "amount")
        if description is not None and not isinstance(description, str):
            raise ApiError(400, "VALIDATION_ERROR", "Field description must be a string.",
                           {"field": "description"})
        with self.lock:
            sub = self._subaccount(email)
            sub["balance"] += amount
            self.credit_ledger.append({"sub_account_id": sub["id"], "email": sub["email"],
                                       "amount": amount, "description": description,
                                       "balance_after": sub["balance"], "at": now_iso()})
            return {"success": True, "sub_account_id": sub["id"], "credits_added": amount,
                    "new_balance": sub["balance"]}

    def configure_auto_recharge(self, url, secret: str | None = None) -> dict:
        """Set the agency's auto-recharge webhook URL (and secret, generated if None)."""
        url, secret = _webhook_url(url), _secret(secret)
        with self.lock:
            self.auto_recharge = {"url": url, "secret": secret or new_secret()}
            return dict(self.auto_recharge)

    def fire_auto_recharge(self, email, amount, idempotency_key: str | None = None,
                           times: int = 1) -> dict:
        """Deliver one auto-recharge message ``times`` times, now; return key and results."""
        amount = _positive_number(amount, "amount")
        times = _times(times)
        if idempotency_key is not None and (not isinstance(idempotency_key, str)
                                            or not idempotency_key):
            raise ApiError(400, "VALIDATION_ERROR", "Field idempotency_key must be a string.",
                           {"field": "idempotency_key"})
        with self.lock:
            if self.auto_recharge is None:
                raise ApiError(409, "AUTO_RECHARGE_NOT_CONFIGURED",
                               "Configure the auto-recharge webhook URL first.")
            target = dict(self.auto_recharge)
            sub = self._subaccount(email)
            key = idempotency_key or "ar_" + secrets.token_hex(12)
            payload = {"event": "auto_recharge", "idempotency_key": key,
                       "sub_account_id": sub["id"], "email": sub["email"], "amount": amount,
                       "current_balance": sub["balance"], "threshold": sub["threshold"],
                       "created_at": now_iso()}
        # Sent outside the lock: the receiver may call back into the sandbox to grant credits.
        results = [self.deliverer.send_now(target["url"], target["secret"], "auto_recharge",
                                           payload, msg_id=key, source="aiconnector:auto_recharge")
                   for _ in range(times)]
        return {"idempotency_key": key, "payload": payload, "deliveries": results}

    def snapshot(self) -> dict:
        """Return contacts, lists with members, messages, sub-accounts and the ledger."""
        with self.lock:
            return {
                "contacts": [dict(c) for c in self.contacts.values()],
                "lists": [{**lst, "members": list(lst["members"])} for lst in self.lists.values()],
                "messages": [dict(m) for m in self.messages],
                "subaccounts": [dict(s) for s in self.subaccounts.values()],
                "credit_ledger": [dict(e) for e in self.credit_ledger],
                "auto_recharge": ({"url": self.auto_recharge["url"]}
                                  if self.auto_recharge else None),
                "custom_channels": [{k: v for k, v in c.items() if k != "secret"}
                                    for c in self.channels.values()],
            }

    # The sandbox composes services through these (see app.py).
    name, prefix = "aiconnector", "/aiconnector"

    def connection(self, root: str) -> dict:
        return {"base_url": root + self.prefix + "/v1", "credentials": {"api_key": DEFAULT_KEY}}

    def seeded(self) -> dict:
        return {"api_key": DEFAULT_KEY, "list_id": DEMO_LIST_ID,
                "subaccount_email": DEMO_SUBACCOUNT_EMAIL, "subaccount_balance": 42}

    def state(self) -> dict:
        return self.snapshot()

    def register_admin(self, app) -> None:
        """Add /_sandbox/aiconnector/... routes: the dashboard's webhook settings, the bot.

        PUT auto-recharge {url, secret?}; POST auto-recharge/fire {email, amount,
        idempotency_key?, times?}; PUT custom-channels/<channel> {url, secret?, auto_reply?,
        reply_delay?}; DELETE custom-channels/<channel>; POST
        custom-channels/<channel>/bot-messages {fromId, body?, toId?, campaignId?,
        firstName?, lastName?, email?, inReplyTo?, messageId?, times?} (delivered now).
        """

        def body() -> dict:
            return json_body() if raw_body().strip() else {}

        @app.put("/aiconnector/auto-recharge")
        def aiconnector_configure():
            data = body()
            return self.configure_auto_recharge(data.get("url"), data.get("secret"))

        @app.post("/aiconnector/auto-recharge/fire")
        def aiconnector_fire():
            data = body()
            if "amount" not in data:
                raise ApiError(400, "VALIDATION_ERROR", "Field amount is required.",
                               {"field": "amount"})
            return self.fire_auto_recharge(data.get("email"), data["amount"],
                                           data.get("idempotency_key"), data.get("times", 1))

        @app.put("/aiconnector/custom-channels/<channel>")
        def aiconnector_configure_channel(channel):
            data = body()
            return self.configure_channel(channel, data.get("url"), data.get("secret"),
                                          data.get("auto_reply", True),
                                          data.get("reply_delay", DEFAULT_REPLY_DELAY))

        @app.delete("/aiconnector/custom-channels/<channel>")
        def aiconnector_remove_channel(channel):
            self.remove_channel(channel)
            return "", 204

        @app.post("/aiconnector/custom-channels/<channel>/bot-messages")
        def aiconnector_bot_message(channel):
            data = body()
            return self.emit_bot_message(channel, data, data.get("times", 1))

    def _authenticate(self):
        if request.path == CREDITS_PATH:
            key = request.headers.get("x-api-key", "").strip()
            missing = ("Missing API key: this endpoint reads it from the x-api-key header only, "
                       "not from the query string.")
        else:
            key = request.args.get("apiKey", "").strip()
            missing = "Missing API key: add the apiKey query parameter."
        if not key:
            raise ApiError(401, "UNAUTHORIZED", missing)
        with self.lock:
            known = key in self.keys
        if not known:
            raise ApiError(401, "UNAUTHORIZED", "The API key is invalid or revoked.")
        return ("aiconnector", key)

    def create_app(self) -> Flask:
        """Build the Flask app serving ``/v1/...``."""
        app = create_service_app(__name__, self._authenticate, self.limiter)

        @app.post("/v1/contacts")
        def create_contact():
            contact, created = self.create_contact(json_body())
            return contact, 201 if created else 200

        @app.get("/v1/contacts")
        def get_contact():
            phone, email = request.args.get("phoneNumber"), request.args.get("email")
            if not phone and not email:
                raise ApiError(400, "VALIDATION_ERROR",
                               "Provide the phoneNumber or the email query parameter.",
                               {"field": "phoneNumber"})
            return self.find_contact(phone, email)

        @app.post("/v1/lists/<list_id>/contacts")
        def add_to_list(list_id):
            contact_id = require_str(json_body(), "contactId")
            return self.add_to_list(list_id, contact_id)

        @app.post("/v1/send_custom_channel_message")
        def send_message():
            return self.send_message(json_body())

        @app.post("/v1/incoming_custom_channel_message")
        def receive_message():
            return self.receive_message(json_body())

        @app.post(CREDITS_PATH)
        def grant_credits():
            body = json_body()
            if "amount" not in body:
                raise ApiError(400, "VALIDATION_ERROR", "Field amount is required.",
                               {"field": "amount"})
            return self.grant_credits(body.get("email"), body["amount"], body.get("description"))

        return app


def _outbound_payload(message: dict) -> dict:
    """Return the webhook body for one outbound custom-channel message."""
    skip = {"direction", "createdAt", "customChannel", "messageId"}
    data = {"messageId": message["messageId"], "customChannel": message["customChannel"],
            **{k: v for k, v in message.items() if k not in skip and v is not None}}
    return {"event": OUTBOUND_EVENT, "messageId": message["messageId"], "messageType": "text",
            "createdAt": message["createdAt"], "customData": data}
