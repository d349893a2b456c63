"""connector-email against a real SMTP server (aiosmtpd) on loopback and a temp maildir.

The server speaks plain SMTP, STARTTLS or implicit TLS with a certificate made for the
test (trusted through SSL_CERT_FILE), and takes a login. Needs connector's pytest plugin
(``-p connector.testing``, which setup.cfg adds) and ``pip install -e '.[test]'``.
"""
from __future__ import annotations

import datetime as dt
import mailbox
import socket
import ssl
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest

pytest.importorskip("connector_email", reason="connector-email is not installed: "
                    "pip install -e 'examples/connector-email[test]'")
pytest.importorskip("aiosmtpd", reason="aiosmtpd is not installed: pip install -e "
                    "'examples/connector-email[test]'")

from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import AuthResult, LoginPassword  # noqa: E402

from connector import FatalAPIError, RetriableAPIError, UserError  # noqa: E402
from connector.testing import PluginSuite  # noqa: E402

USER, PASSWORD = "robot", "s3cret-pw"
FROM = "robot@example.com"


# -- a local SMTP server ------------------------------------------------------------------------

@pytest.fixture(scope="session")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 and localhost: (cert path, key path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "connector-email test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Inbox:
    """The aiosmtpd handler: keeps each message; ``fail_next`` answers DATA with an error."""

    def __init__(self):
        self.envelopes = []
        self.fail_next: list[str] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.endswith("@refused.example"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.fail_next:
            return self.fail_next.pop(0)
        self.envelopes.append(envelope)
        return "250 OK queued"

    @property
    def messages(self):
        return [BytesParser(policy=policy.default).parsebytes(e.content) for e in self.envelopes]


def _authenticate(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode()
          and auth_data.password == PASSWORD.encode())
    return AuthResult(success=ok, handled=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SMTPServer:
    def __init__(self, security: str, certificate):
        self.security = security
        self.inbox = Inbox()
        cert, key = certificate
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.port = _free_port()
        options = {"authenticator": _authenticate, "auth_require_tls": security != "none"}
        if security == "starttls":
            options.update(tls_context=context, require_starttls=True)
        elif security == "ssl":
            options.update(ssl_context=context, auth_require_tls=False)
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port,
                                     **options)
        self.controller.start()

    @property
    def credentials(self) -> dict:
        return {"host": "127.0.0.1", "port": self.port, "security": self.security,
                "username": USER, "password": PASSWORD, "from_address": FROM,
                "from_name": "Robot"}

    def stop(self):
        self.controller.stop()


@pytest.fixture
def trust(certificate, monkeypatch):
    """Make ssl.create_default_context() trust the test certificate."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))


@pytest.fixture(params=["starttls", "ssl", "none"])
def smtp_server(request, certificate, trust):
    server = SMTPServer(request.param, certificate)
    yield server
    server.stop()


@pytest.fixture
def starttls_server(certificate, trust):
    server = SMTPServer("starttls", certificate)
    yield server
    server.stop()


# -- a local maildir ----------------------------------------------------------------------------

def deliver(folder, subject="Order A-1001", message_id="<order-1001@shop.example>",
            sender="Jane Smith <jane@example.com>", html=None) -> str:
    """Put a message in ``folder``'s new/ as a mail server would; return its file key."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = FROM
    message["Subject"] = subject
    message["Date"] = "Thu, 15 Jan 2026 10:30:00 +0000"
    if message_id:
        message["Message-ID"] = message_id
    message.set_content("Hello, where is my order?\n")
    if html:
        message.add_alternative(html, subtype="html")
    return mailbox.Maildir(str(folder)).add(message)


@pytest.fixture
def maildir(tmp_path):
    """An empty maildir (with a Work subfolder), as a mail server lays it out."""
    root = tmp_path / "Maildir"
    box = mailbox.Maildir(str(root), create=True)
    box.add_folder("Work")
    return root


@pytest.fixture
def connected(connector_host, maildir, starttls_server):
    connector_host.add_connection("mail", "email", starttls_server.credentials)
    connector_host.add_connection("inbox", "maildir", {"path": str(maildir)})
    return connector_host


# -- the standard suite -------------------------------------------------------------------------

class TestStandard(PluginSuite):
    """connector's standard tests; the round trip replies to a new email by email."""

    plugin = "connector_email"
    inputs = {"email.send_email": {"to": "{{ trigger.from_address }}",
                                   "subject": "Re: {{ trigger.subject }}",
                                   "text": "Thanks, we are on it."}}

    @pytest.fixture
    def suite_connections(self, maildir, starttls_server):
        deliver(maildir)
        self.server = starttls_server
        return {"email": {"credentials": starttls_server.credentials},
                "maildir": {"credentials": {"path": str(maildir)}}}

    def test_round_trip_through_a_flow(self, suite_subject, suite_host, suite_connections):
        super().test_round_trip_through_a_flow(suite_subject, suite_host, suite_connections)
        [reply] = self.server.inbox.messages
        assert reply["Subject"] == "Re: Order A-1001"
        assert reply["To"] == "jane@example.com"


# -- sending ------------------------------------------------------------------------------------

def test_send_email_over_each_security_mode(connector_host, smtp_server, invoke_action):
    connector_host.add_connection("mail", "email", smtp_server.credentials)
    output = invoke_action("email.send_email", "mail", {
        "to": "jane@example.com, joe@example.com", "cc": ["boss@example.com"],
        "subject": "Your order", "text": "It shipped.", "html": "<p>It shipped.</p>"},
        idempotency_key="a" * 40)
    assert output == {"message_id": f"<{'a' * 40}@example.com>",
                      "to": ["jane@example.com", "joe@example.com"],
                      "cc": ["boss@example.com"], "subject": "Your order", "refused": {}}
    [envelope] = smtp_server.inbox.envelopes
    assert envelope.mail_from == FROM
    assert sorted(envelope.rcpt_tos) == ["boss@example.com", "jane@example.com",
                                         "joe@example.com"]
    [message] = smtp_server.inbox.messages
    assert message["Message-ID"] == f"<{'a' * 40}@example.com>"
    assert message["From"] == "Robot <robot@example.com>"
    assert message["Cc"] == "boss@example.com"
    assert message.get_body(("plain",)).get_content().strip() == "It shipped."
    assert message.get_body(("html",)).get_content().strip() == "<p>It shipped.</p>"


def test_the_same_step_sends_once(connected, starttls_server, invoke_action):
    inputs = {"to": "jane@example.com", "subject": "Once", "text": "Only one of me."}
    first = invoke_action("email.send_email", "mail", inputs, idempotency_key="k" * 40)
    again = invoke_action("email.send_email", "mail", inputs, idempotency_key="k" * 40)
    assert first == again
    assert len(starttls_server.inbox.envelopes) == 1


def test_a_retried_step_keeps_its_message_id(connected, starttls_server, maildir,
                                             connector_clock):
    """A 451 is retried after the backoff with the same Message-ID; one message arrives."""
    from connector import engine, flows, intake
    from connector.store import Run, StepRun

    flow = flows.save(connected, {
        "name": "reply", "trigger": {"key": "maildir.new_email", "connection": "inbox"},
        "steps": [{"name": "reply", "action": "email.send_email", "connection": "mail",
                   "inputs": {"to": "{{ trigger.from_address }}",
                              "subject": "Re: {{ trigger.subject }}", "text": "On it."}}]})
    flows.enable(connected, flow)  # primes: nothing in the mailbox yet
    deliver(maildir)
    starttls_server.inbox.fail_next = ["451 4.3.0 try again later"]
    assert len(intake.poll_flow(connected, flow).created) == 1
    engine.run_due(connected)
    [run] = Run.select()
    assert run.status == Run.QUEUED and "451" in run.error
    assert engine.run_due(connected) == 0  # not due before its backoff
    connector_clock.advance(seconds=5)
    engine.run_due(connected)
    run = Run.get_by_id(run.id)
    assert run.status == Run.SUCCEEDED, run.error
    [message] = starttls_server.inbox.messages
    step = StepRun.get(StepRun.run == run)
    assert message["Message-ID"] == step.output["message_id"]
    assert message["Message-ID"] == f"<{engine.step_key(run, 'reply')}@example.com>"
    assert intake.poll_flow(connected, flow).created == []


def test_a_wrong_password_is_fatal_and_never_echoed(connector_host, starttls_server,
                                                   invoke_action):
    creds = {**starttls_server.credentials, "password": "wrong-password-123"}
    connector_host.add_connection("mail", "email", creds)
    with pytest.raises(FatalAPIError, match="authentication failed") as info:
        invoke_action("email.send_email", "mail", {"to": "a@example.com", "subject": "x",
                                                   "text": "y"})
    assert "wrong-password-123" not in str(info.value)
    with pytest.raises(FatalAPIError, match="authentication failed"):
        connector_host.test_connection("mail")


def test_connection_test_and_refused_recipients(connected, invoke_action):
    assert connected.test_connection("mail") == {"ok": True, "server": "127.0.0.1"}
    with pytest.raises(FatalAPIError, match="refused every recipient.*nobody@refused.example"):
        invoke_action("email.send_email", "mail", {"to": "nobody@refused.example",
                                                   "subject": "x", "text": "y"})


def test_an_unreachable_server_is_retriable(connector_host, invoke_action):
    connector_host.add_connection("mail", "email", {
        "host": "127.0.0.1", "port": _free_port(), "security": "none", "from_address": FROM})
    with pytest.raises(RetriableAPIError, match="cannot reach") as info:
        invoke_action("email.send_email", "mail", {"to": "a@example.com", "subject": "x",
                                                   "text": "y"})
    assert not info.value.maybe_applied


def test_an_untrusted_certificate_is_fatal(connector_host, certificate, invoke_action):
    server = SMTPServer("starttls", certificate)  # no `trust` fixture: system CAs only
    try:
        connector_host.add_connection("mail", "email", server.credentials)
        with pytest.raises(FatalAPIError, match="certificate is not trusted"):
            invoke_action("email.send_email", "mail", {"to": "a@example.com",
                                                       "subject": "x", "text": "y"})
    finally:
        server.stop()


@pytest.mark.parametrize("inputs, message", [
    ({"to": "jane@example.com", "subject": "x"}, "text: give a text body"),
    ({"to": "not-an-address", "subject": "x", "text": "y"}, "not an email address"),
    ({"to": "", "subject": "x", "text": "y"}, "to"),
    ({"to": "a@example.com", "subject": "", "text": "y"}, "subject"),
])
def test_send_email_inputs_are_checked(connected, invoke_action, inputs, message):
    with pytest.raises(UserError, match=message):
        invoke_action("email.send_email", "mail", inputs)


# -- the maildir trigger ------------------------------------------------------------------------

def test_new_email_reads_messages_keyed_by_message_id(connected, maildir, invoke_trigger):
    deliver(maildir, html="<p>Hello</p>")
    key = deliver(maildir, subject="No id", message_id=None)
    result = invoke_trigger("maildir.new_email", connection="inbox")
    by_subject = {item["subject"]: item for item in result.items}
    assert sorted(result.keys) == sorted(["<order-1001@shop.example>", f"file:{key}"])
    order = by_subject["Order A-1001"]
    assert order["from_address"] == "jane@example.com" and order["to"] == [FROM]
    assert order["text"] == "Hello, where is my order?\n"
    assert order["html"].strip() == "<p>Hello</p>"
    assert order["date"] == "2026-01-15T10:30:00+00:00"
    assert result.state["since"] > 0


def test_new_email_reads_a_subfolder_only(connected, maildir, invoke_trigger):
    deliver(maildir)
    deliver(maildir / ".Work", subject="Work thing", message_id="<w1@example.com>")
    result = invoke_trigger("maildir.new_email", connection="inbox", inputs={"folder": "Work"})
    assert result.keys == ["<w1@example.com>"]
    with pytest.raises(UserError, match="folder"):
        invoke_trigger("maildir.new_email", connection="inbox", inputs={"folder": "../etc"})
    with pytest.raises(FatalAPIError, match="no maildir folder"):
        invoke_trigger("maildir.new_email", connection="inbox", inputs={"folder": "Nope"})


def test_new_email_reads_only_since_its_cursor(connected, maildir, invoke_trigger):
    deliver(maildir)
    first = invoke_trigger("maildir.new_email", connection="inbox")
    assert len(first.items) == 1
    since = first.state["since"]
    # past the message's arrival by more than the hour's overlap: nothing to read
    assert invoke_trigger("maildir.new_email", connection="inbox",
                          state={"since": since + 3601}).items == []
    # within the overlap it is read again; in a flow the ledger drops the repeat
    assert invoke_trigger("maildir.new_email", connection="inbox",
                          state={"since": since + 60}).keys == first.keys


def test_a_message_read_by_a_mail_client_does_not_fire_again(connected, maildir):
    """Moving new/ -> cur/ (marking it read) sets the ctime again; the ledger drops it."""
    from connector import flows, intake

    flow = flows.save(connected, {
        "name": "inbox", "trigger": {"key": "maildir.new_email", "connection": "inbox"},
        "steps": [{"name": "reply", "action": "email.send_email", "connection": "mail",
                   "inputs": {"to": "{{ trigger.from_address }}", "subject": "Re",
                              "text": "ok"}}]})
    flows.enable(connected, flow)
    deliver(maildir)
    assert len(intake.poll_flow(connected, flow).created) == 1
    box = mailbox.Maildir(str(maildir))
    for key in box.keys():
        message = box[key]
        message.set_subdir("cur")
        message.add_flag("S")
        box[key] = message
    assert intake.poll_flow(connected, flow).created == []


def test_a_maildir_connection_must_name_a_maildir(connector_host, tmp_path):
    with pytest.raises(UserError, match="no maildir at"):
        connector_host.add_connection("inbox", "maildir", {"path": str(tmp_path)})
    with pytest.raises(UserError, match="absolute"):
        connector_host.add_connection("inbox", "maildir", {"path": "Maildir"})
