"""The ``email`` app: an SMTP account, and one place that maps SMTP failures to API errors.

Security is ``starttls`` (port 587 unless given), ``ssl`` (implicit TLS, port 465) or
``none`` (port 25; only for a relay on a trusted network). Certificates are verified
against the system's CAs (SSL_CERT_FILE points elsewhere). Every call has the app's
timeout. Messages never carry the password.
"""
from __future__ import annotations

import smtplib
import socket
import ssl
from contextlib import contextmanager

from marshmallow import Schema, fields, validate

from connector import App, FatalAPIError, RetriableAPIError

PORTS = {"starttls": 587, "ssl": 465, "none": 25}


class Credentials(Schema):
    host = fields.String(required=True, validate=validate.Length(min=1), metadata={
        "label": "SMTP server", "help": "Host name, e.g. smtp.example.com."})
    port = fields.Integer(load_default=None, validate=validate.Range(min=1, max=65535),
                          metadata={"label": "Port",
                                    "help": "Default: 587 for starttls, 465 for ssl, 25 for "
                                            "none."})
    security = fields.String(load_default="starttls",
                             validate=validate.OneOf(list(PORTS)), metadata={
                                 "label": "Security",
                                 "help": "starttls (upgrade on connect), ssl (TLS from the "
                                         "start) or none (a trusted relay only)."})
    username = fields.String(load_default=None, metadata={
        "label": "User name", "help": "Leave empty if the server needs no login."})
    password = fields.String(load_default=None, metadata={
        "label": "Password", "secret": True, "help": "Or an app password."})
    from_address = fields.Email(required=True, metadata={
        "label": "From address", "help": "The sender of every message, e.g. "
                                         "robot@example.com."})
    from_name = fields.String(load_default=None, metadata={
        "label": "From name", "help": "Shown as the sender's name, e.g. Acme Robot."})


class Email(App):
    key = "email"
    label = "Email (SMTP)"
    help = "Send email through your own SMTP server or provider."
    base_url = "smtp://"  # not HTTP: the server is in the credentials
    Credentials = Credentials
    timeout = 30.0

    def test(self, client):
        with session(client.credentials, self.timeout) as smtp:
            code, _ = smtp.noop()
        return {"ok": code == 250, "server": client.credentials["host"]}


@contextmanager
def session(credentials: dict, timeout: float):
    """Yield a connected, logged-in smtplib session; raise APIError (never the password)."""
    security = credentials.get("security") or "starttls"
    host = credentials["host"]
    port = credentials.get("port") or PORTS[security]
    where = f"SMTP server {host}:{port}"
    context = ssl.create_default_context()
    with smtp_errors(where, sending=False):
        if security == "ssl":
            smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            smtp = smtplib.SMTP(host, port, timeout=timeout)
    try:
        with smtp_errors(where, sending=False):
            smtp.ehlo()
            if security == "starttls":
                smtp.starttls(context=context)
                smtp.ehlo()
            if credentials.get("username"):
                smtp.login(credentials["username"], credentials.get("password") or "")
        yield smtp
    finally:
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()


@contextmanager
def smtp_errors(where: str, sending: bool):
    """Map smtplib and socket failures to RetriableAPIError / FatalAPIError.

    A 4xx reply is transient, a 5xx one permanent. When ``sending``, a connection lost
    mid-message may have delivered it (``maybe_applied``), so the ledger keeps its key.
    """
    try:
        yield
    except smtplib.SMTPAuthenticationError as exc:
        raise FatalAPIError(f"{where}: authentication failed: {_text(exc.smtp_error)}",
                            status=exc.smtp_code, code="AUTH") from None
    except smtplib.SMTPRecipientsRefused as exc:
        refused = ", ".join(f"{addr} ({code} {_text(msg)})"
                            for addr, (code, msg) in exc.recipients.items())
        raise FatalAPIError(f"{where} refused every recipient: {refused}",
                            code="RECIPIENTS_REFUSED") from None
    except smtplib.SMTPResponseException as exc:
        cls = RetriableAPIError if 400 <= exc.smtp_code < 500 else FatalAPIError
        raise cls(f"{where} answered {exc.smtp_code} {_text(exc.smtp_error)}",
                  status=exc.smtp_code) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise FatalAPIError(f"{where}: {exc} (check the security setting)") from None
    except ssl.SSLCertVerificationError as exc:
        raise FatalAPIError(f"{where}: its certificate is not trusted "
                            f"({exc.verify_message})") from None
    except (smtplib.SMTPServerDisconnected, socket.timeout, TimeoutError, ssl.SSLError,
            ConnectionResetError) as exc:
        raise RetriableAPIError(f"{where}: connection lost ({exc.__class__.__name__})",
                                maybe_applied=sending) from None
    except OSError as exc:  # refused, unreachable, no such host: nothing was sent
        raise RetriableAPIError(f"cannot reach {where}: {exc.strerror or exc}") from None


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
