"""Email for connector: send a message over SMTP, fire on each new message in a maildir.

Two apps, because they authenticate differently: ``email`` is an SMTP account (server,
security, login, from address) and ``maildir`` a mailbox on this host's disk (its path,
chosen by whoever adds the connection, so a flow can only read the mailboxes an operator
connected). Neither speaks HTTP: their actions read ``ctx.client.credentials`` and open
their own SMTP session or files; ``base_url`` only names the protocol.

Sending goes through the host's ledger (SMTP has no idempotency key), and the Message-ID
is derived from the step's idempotency key, so a message that goes out twice anyway (a
connection lost after the server took it) shows once in mail clients. The maildir trigger
reads ``new/`` and ``cur/`` by file ctime with an hour's overlap and dedupes on the
Message-ID, kept forever: a message marked read or moved never fires twice. (The modules'
docstrings say more; this one is what ``connector plugins --markdown`` shows.)
"""
from __future__ import annotations

from connector import hookimpl

from .maildir import Maildir, NewEmail
from .send import SendEmail
from .smtp import Email

__all__ = ["Email", "Maildir", "NewEmail", "SendEmail"]


@hookimpl
def register_apps(register):
    register(Email)
    register(Maildir)


@hookimpl
def register_triggers(register):
    register(NewEmail)


@hookimpl
def register_actions(register):
    register(SendEmail)
