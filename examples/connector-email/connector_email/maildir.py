"""The ``maildir`` app (a mailbox on this host's disk) and its ``maildir.new_email`` trigger.

The connection holds the mailbox's path, so a flow reads only the mailboxes an operator
connected; a flow picks a Maildir++ subfolder of it by name (``Work`` is ``<path>/.Work``).

Each poll lists ``new/`` and ``cur/`` (never ``tmp/``, where deliveries are still being
written) and reads the messages whose files entered the folder since the last poll, less
an hour's overlap: it goes by the file's ctime, which a delivery and a move into the folder
both set. The dedupe key is the Message-ID (or the file's unique name when a message has
none), kept forever: a message that a mail client later marks read or moves between
``new/`` and ``cur/`` (which sets its ctime again) never fires twice. The trigger only reads;
it never marks a message seen.
"""
from __future__ import annotations

import os
from email import policy
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime
from pathlib import Path

from marshmallow import Schema, ValidationError, fields, validate, validates

from connector import App, FatalAPIError, InputSchema, PollTrigger

OVERLAP = 3600.0  # seconds: a delivery whose ctime lags behind the last poll is still seen
MAX_TEXT = 100_000  # characters of each body kept in the item
MAX_PARSE = 10 * 1024 * 1024  # bytes: larger messages are read for their headers only


def is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() and (path / "new").is_dir()


class Credentials(Schema):
    path = fields.String(required=True, metadata={
        "label": "Maildir path", "help": "The mailbox on this host: a folder holding cur/, "
                                         "new/ and tmp/, e.g. /var/mail/robot/Maildir."})

    @validates("path")
    def a_maildir(self, value, **_):
        if not os.path.isabs(value):
            raise ValidationError("expected an absolute path")
        if not is_maildir(Path(value)):
            raise ValidationError(f"no maildir at {value}: expected cur/ and new/ in it")


class Maildir(App):
    key = "maildir"
    label = "Maildir"
    help = "Read the messages a mail server delivers into a maildir on this host."
    base_url = "file://"  # not HTTP: the mailbox's path is in the credentials
    Credentials = Credentials

    def test(self, client):
        root = folder_path(client.credentials["path"], None)
        return {"ok": True, "messages": sum(1 for _ in message_files(root))}


def folder_path(root: str, folder: str | None) -> Path:
    """Return the folder's directory; FatalAPIError when it is not a maildir."""
    path = Path(root) / f".{folder}" if folder else Path(root)
    if not is_maildir(path):
        raise FatalAPIError(f"no maildir folder at {path}: expected cur/ and new/ in it")
    return path


def message_files(folder: Path):
    """Yield (unique name, path, ctime) for each message in new/ and cur/."""
    for sub in ("new", "cur"):
        with os.scandir(folder / sub) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_file():
                    continue
                yield entry.name.split(":", 1)[0], Path(entry.path), entry.stat().st_ctime


FOLDER = validate.Regexp(r"^[A-Za-z0-9_][A-Za-z0-9_ .-]{0,199}$",
                         error="expected a folder name such as Work or Work.Clients")


class NewEmailInputs(InputSchema):
    folder = fields.String(load_default=None, validate=FOLDER, metadata={
        "label": "Folder", "help": "A subfolder such as Work (Maildir++); empty: the inbox."})
    max_messages = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000),
                                  metadata={"label": "At most",
                                            "help": "Messages read per poll, newest first."})

    @validates("folder")
    def stays_inside(self, value, **_):
        if value and ".." in value:
            raise ValidationError("expected a folder name, not a path")


class NewEmail(PollTrigger):
    """Lists new/ and cur/ by ctime since the last poll; dedupe on Message-ID, forever."""

    key = "maildir.new_email"
    app = "maildir"
    label = "New email"
    help = "Fires once for each message that arrives in a maildir folder."
    Inputs = NewEmailInputs
    default_interval = 60
    dedupe_ttl = None
    sample = {"message_id": "<CAF3x9Q@mail.example.com>", "file": "1736937000.M1P2.host",
              "folder": "", "from": "Jane Smith <jane@example.com>",
              "from_address": "jane@example.com", "to": ["robot@example.com"], "cc": [],
              "subject": "Order A-1001", "date": "2026-01-15T10:30:00+00:00",
              "text": "Hello, where is my order?\n", "html": None, "attachments": []}

    def poll(self, ctx):
        folder = ctx.inputs.get("folder")
        root = folder_path(ctx.client.credentials["path"], folder)
        since = float(ctx.state.get("since") or 0)
        files = sorted((f for f in message_files(root) if f[2] >= since - OVERLAP),
                       key=lambda f: f[2])
        if files:
            ctx.state["since"] = max(since, files[-1][2])
        newest = files[-(ctx.inputs.get("max_messages") or 100):]
        items = []
        for name, path, _ctime in reversed(newest):
            try:
                items.append(read_message(path, name, folder or ""))
            except FileNotFoundError:  # moved or deleted between listing and reading
                continue
        return items

    def dedupe_key(self, item):
        return item.get("message_id") or f"file:{item['file']}"


def read_message(path: Path, name: str, folder: str) -> dict:
    """Return a message as a trigger item: addresses, subject, date, bodies, attachments."""
    with open(path, "rb") as handle:
        big = os.fstat(handle.fileno()).st_size > MAX_PARSE
        message = BytesParser(policy=policy.default).parse(handle, headersonly=big)
    sender = getaddresses([str(message.get("From", ""))])
    item = {"message_id": (str(message.get("Message-ID") or "").strip() or None),
            "file": name, "folder": folder, "from": str(message.get("From", "")),
            "from_address": sender[0][1] if sender else "",
            "to": [a for _, a in getaddresses([str(v) for v in message.get_all("To", [])]) if a],
            "cc": [a for _, a in getaddresses([str(v) for v in message.get_all("Cc", [])]) if a],
            "subject": str(message.get("Subject", "")), "date": _date(message.get("Date")),
            "text": None, "html": None, "attachments": []}
    if big:
        item["truncated"] = True
        return item
    for kind in ("plain", "html"):
        part = message.get_body(preferencelist=(kind,))
        if part is not None:
            item["text" if kind == "plain" else "html"] = part.get_content()[:MAX_TEXT]
    for part in message.iter_attachments():
        payload = part.get_payload(decode=True) or b""
        item["attachments"].append({"filename": part.get_filename(),
                                    "content_type": part.get_content_type(),
                                    "size": len(payload)})
    return item


def _date(value) -> str | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(str(value)).isoformat()
    except (TypeError, ValueError):
        return None
