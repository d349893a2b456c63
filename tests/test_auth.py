"""API keys, users, scopes, signed sessions and CSRF (connector/auth.py), and their commands.

The commands are attached to a click group built here with the connector's own ``Main``
class, as connector/cli.py attaches them, so a user's mistake is one ``error:`` line.
"""
from __future__ import annotations

import hashlib
import json
import time

import click
import pytest
from click.testing import CliRunner
from flask import Flask

from connector import auth
from connector.cli import Main
from connector.cli_api import keys_create, keys_list, keys_revoke, users
from connector.crypto import new_key
from connector.errors import NotFound, UserError
from connector.store import ApiKey, Meta, User


# -- passwords ---------------------------------------------------------------------------------

def test_a_password_hash_is_salted_scrypt_and_checks_only_the_right_password():
    first, second = auth.hash_password("correct horse"), auth.hash_password("correct horse")
    assert first != second  # a random salt each time
    algo, n, r, p, _salt, _key = first.split("$")
    assert (algo, int(n), int(r), int(p)) == ("scrypt", 2 ** 14, 8, 1)
    assert "correct horse" not in first
    assert auth.verify_password("correct horse", first)
    assert auth.verify_password("correct horse", second)
    assert not auth.verify_password("correct horsf", first)
    assert not auth.verify_password("", first)


@pytest.mark.parametrize("stored", ["", "plain", "md5$x$y", "scrypt$a$b$c$d$e",
                                    "scrypt$16384$8$1$!!$!!"])
def test_a_malformed_hash_never_matches(stored):
    assert auth.verify_password("anything", stored) is False


def test_verify_password_compares_in_constant_time(monkeypatch):
    seen = []
    real = auth.hmac.compare_digest
    monkeypatch.setattr(auth.hmac, "compare_digest",
                        lambda a, b: seen.append((a, b)) or real(a, b))
    assert not auth.verify_password("wrong", auth.hash_password("right-password"))
    assert len(seen) == 1


def test_check_password_finds_the_user_and_records_the_sign_in(host):
    user = auth.add_user("ada", "analytical-engine", scope="write")
    assert user.password_hash.startswith("scrypt$") and user.scope == "write"
    assert auth.check_password("ada", "wrong password") is None
    assert User.get_by_id(user.id).last_login_at is None
    found = auth.check_password("ada", "analytical-engine")
    assert found is not None and found.id == user.id
    assert User.get_by_id(user.id).last_login_at is not None
    assert auth.check_password("nobody", "analytical-engine") is None
    assert auth.check_password("", "") is None


def test_an_unknown_user_costs_the_same_scrypt_work(host, monkeypatch):
    calls = []
    real = auth.hashlib.scrypt
    monkeypatch.setattr(auth.hashlib, "scrypt", lambda *a, **k: calls.append(1) or real(*a, **k))
    auth.add_user("ada", "analytical-engine")
    auth.check_password("nobody", "warm-up")  # the dummy hash is made once per process
    calls.clear()
    auth.check_password("ada", "wrong-password")
    known = len(calls)
    calls.clear()
    auth.check_password("nobody", "wrong-password")
    assert len(calls) == known == 1


def test_users_are_checked_when_added_and_their_password_can_change(host):
    with pytest.raises(UserError, match="at least 8 characters"):
        auth.add_user("ada", "short")
    with pytest.raises(UserError, match="username"):
        auth.add_user("ada lovelace", "long enough")
    with pytest.raises(UserError, match="scope"):
        auth.add_user("ada", "long enough", scope="root")
    auth.add_user("ada", "long enough")
    with pytest.raises(UserError, match="already exists"):
        auth.add_user("ada", "long enough too")
    auth.set_password("ada", "a new password")
    assert auth.check_password("ada", "long enough") is None
    assert auth.check_password("ada", "a new password") is not None
    with pytest.raises(NotFound):
        auth.set_password("nobody", "a new password")
    auth.remove_user("ada")
    assert auth.check_password("ada", "a new password") is None


# -- keys and scopes ---------------------------------------------------------------------------

def test_a_key_is_stored_as_prefix_and_sha256_digest_only(host):
    row, raw = auth.create_key("ci", "write")
    assert raw.startswith(auth.KEY_PREFIX) and len(raw) > 40
    stored = ApiKey.get_by_id(row.id)
    assert stored.prefix == raw[:auth.PREFIX_LENGTH]
    assert stored.digest == hashlib.sha256(raw.encode()).hexdigest()
    assert raw not in json.dumps(ApiKey.select().dicts().get(), default=str)
    assert auth.find_key(raw).id == row.id
    assert auth.find_key(raw[:-1] + ("A" if raw[-1] != "A" else "B")) is None
    assert auth.find_key(raw[:auth.PREFIX_LENGTH]) is None
    assert auth.find_key("") is None and auth.find_key(None) is None


def test_a_revoked_key_stops_working_and_use_is_recorded(host):
    row, raw = auth.create_key("ci", "read")
    principal = auth.key_principal(raw)
    assert principal == auth.Principal("key", row.id, "ci", "read")
    assert ApiKey.get_by_id(row.id).last_used_at is not None
    auth.revoke_key(row.id)
    assert auth.key_principal(raw) is None
    auth.revoke_key(row.id)  # twice is harmless
    with pytest.raises(NotFound, match="no API key with id 999"):
        auth.revoke_key(999)
    assert [k.id for k in auth.list_keys(include_revoked=False)] == []
    assert [k.id for k in auth.list_keys()] == [row.id]


def test_keys_need_a_name_and_a_known_scope(host):
    with pytest.raises(UserError, match="name"):
        auth.create_key("  ", "read")
    with pytest.raises(UserError, match="scope: expected one of read, write, admin"):
        auth.create_key("x", "superuser")


def test_scopes_are_ordered_and_a_refusal_names_the_scope_needed():
    assert auth.allows("admin", "write") and auth.allows("write", "read")
    assert not auth.allows("read", "write") and not auth.allows("write", "admin")
    assert not auth.allows("bogus", "read")
    reader = auth.Principal("key", 1, "dashboard", "read")
    auth.require(reader, "read")
    with pytest.raises(auth.Forbidden) as exc:
        auth.require(reader, "write")
    assert str(exc.value) == "this needs the write scope; API key 'dashboard' has read"


# -- sessions and CSRF -------------------------------------------------------------------------

def test_a_session_carries_who_signed_in_and_a_csrf_token(host):
    user = auth.add_user("ada", "analytical-engine", scope="write")
    sessions = auth.Sessions(auth.session_secret(host))
    cookie, csrf = sessions.issue(auth.user_principal(user))
    assert "ada" not in cookie and "analytical" not in cookie
    principal, token = sessions.principal(cookie)
    assert principal == auth.Principal("user", user.id, "ada", "write") and token == csrf
    assert auth.check_csrf(token, csrf)
    assert not auth.check_csrf(token, csrf[:-1] + "x")
    assert not auth.check_csrf(token, None) and not auth.check_csrf(None, csrf)
    assert auth.new_csrf_token() != auth.new_csrf_token()


def test_a_forged_expired_or_orphaned_session_is_refused(host, monkeypatch):
    user = auth.add_user("ada", "analytical-engine")
    row, _raw = auth.create_key("ui", "read")
    sessions = auth.Sessions(auth.session_secret(host))
    cookie, _ = sessions.issue(auth.user_principal(user))
    key_cookie, _ = sessions.issue(auth.Principal("key", row.id, row.name, row.scope))
    assert sessions.principal(cookie) and sessions.principal(key_cookie)
    assert sessions.load(cookie[:-2] + "xx") is None
    assert sessions.load("not-a-session") is None and sessions.load(None) is None
    assert auth.Sessions("another secret").load(cookie) is None
    auth.revoke_key(row.id)
    assert sessions.principal(key_cookie) is None  # revoking a key ends its sessions
    auth.remove_user("ada")
    assert sessions.principal(cookie) is None
    later = int(time.time()) + auth.SESSION_MAX_AGE + 60
    auth.add_user("bob", "difference-engine")
    fresh, _ = sessions.issue(auth.user_principal(User.get(User.username == "bob")))
    import itsdangerous.timed
    monkeypatch.setattr(itsdangerous.timed.TimestampSigner, "get_timestamp",
                        lambda self: later)
    assert sessions.load(fresh) is None


def test_the_session_secret_is_sealed_in_the_database_and_shared(host, make_host, settings):
    secret = auth.session_secret(host)
    assert len(secret) > 40 and auth.session_secret(host) == secret
    row = Meta.get(Meta.key == "session_secret")
    assert secret not in row.value  # sealed with CONNECTOR_SECRET_KEY
    assert auth.session_secret(make_host()) == secret  # another process, same database
    rotated = make_host(secret_key=new_key())
    assert auth.session_secret(rotated) != secret  # a new key signs everyone out


def _request(app, method="GET", headers=None, cookie=None, data=None):
    environ = {}
    if cookie:
        environ["HTTP_COOKIE"] = f"{auth.SESSION_COOKIE}={cookie}"
    return app.test_request_context("/", method=method, headers=headers or {},
                                    environ_base=environ, data=data)


def test_authenticate_takes_a_key_header_or_a_session_with_csrf_for_changes(host):
    app = Flask("t")
    sessions = auth.Sessions(auth.session_secret(host))
    row, raw = auth.create_key("ci", "write")
    for headers in ({"Authorization": f"Bearer {raw}"}, {"X-API-Key": raw},
                    {"authorization": f"bearer {raw}"}):
        with _request(app, "POST", headers) as ctx:
            assert auth.authenticate(ctx.request, sessions).id == row.id
    with _request(app, "GET", {"Authorization": "Bearer cnk_wrongwrongwrong"}) as ctx:
        with pytest.raises(auth.Unauthorized, match="not valid or was revoked"):
            auth.authenticate(ctx.request, sessions)
    with _request(app) as ctx:
        with pytest.raises(auth.Unauthorized, match="send an API key"):
            auth.authenticate(ctx.request, sessions)
    user = auth.add_user("ada", "analytical-engine")
    cookie, csrf = sessions.issue(auth.user_principal(user))
    with _request(app, "GET", cookie=cookie) as ctx:
        assert auth.authenticate(ctx.request, sessions).name == "ada"
    with _request(app, "POST", cookie=cookie) as ctx:
        with pytest.raises(auth.Forbidden, match="CSRF"):
            auth.authenticate(ctx.request, sessions)
    with _request(app, "POST", {auth.CSRF_HEADER: "wrong"}, cookie=cookie) as ctx:
        with pytest.raises(auth.Forbidden, match="CSRF"):
            auth.authenticate(ctx.request, sessions)
    with _request(app, "POST", {auth.CSRF_HEADER: csrf}, cookie=cookie) as ctx:
        assert auth.authenticate(ctx.request, sessions).name == "ada"
    with _request(app, "POST", {"Content-Type": "application/x-www-form-urlencoded"},
                  cookie=cookie, data=f"{auth.CSRF_FIELD}={csrf}") as ctx:
        assert auth.authenticate(ctx.request, sessions).name == "ada"


def test_cookie_options_keep_the_session_away_from_scripts_and_other_sites():
    options = auth.cookie_options(secure=True)
    assert options["httponly"] and options["secure"] and options["samesite"] == "Lax"


# -- the commands ------------------------------------------------------------------------------

@pytest.fixture
def cli(monkeypatch, settings, host):
    """``connector keys ...`` / ``connector users ...`` on this test's database."""
    monkeypatch.setenv("CONNECTOR_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CONNECTOR_SECRET_KEY", settings.secret_key)

    @click.group(cls=Main)
    def main():
        pass

    @main.group()
    def keys():
        pass

    for command in (keys_create, keys_list, keys_revoke):
        keys.add_command(command)
    main.add_command(users)
    runner = CliRunner()

    def invoke(*args, input=None):
        return runner.invoke(main, [str(a) for a in args], input=input)

    return invoke


def test_keys_create_shows_the_key_once_and_list_never(cli):
    made = cli("keys", "create", "--scope", "write", "--name", "ci")
    assert made.exit_code == 0, made.output
    raw = made.stdout.splitlines()[0]
    assert raw.startswith("cnk_")
    assert "not shown again" in made.stderr
    assert auth.find_key(raw).scope == "write"
    listed = cli("keys", "list")
    assert listed.exit_code == 0 and "ci" in listed.output and raw[:12] in listed.output
    assert raw not in listed.output
    as_json = json.loads(cli("keys", "list", "--json").output)
    assert [(k["name"], k["scope"]) for k in as_json] == [("ci", "write")]
    assert raw not in json.dumps(as_json)
    default = cli("keys", "create", "--name", "dashboard")
    assert auth.find_key(default.stdout.splitlines()[0]).scope == "read"


def test_keys_revoke_and_mistakes_are_one_line(cli):
    raw = cli("keys", "create", "--name", "ci").stdout.splitlines()[0]
    key_id = auth.find_key(raw).id
    done = cli("keys", "revoke", key_id)
    assert done.exit_code == 0 and "revoked" in done.output
    assert auth.find_key(raw) is None
    assert "revoked" in cli("keys", "list", "--all").output
    assert "ci" not in cli("keys", "list").output
    missing = cli("keys", "revoke", 999)
    assert missing.exit_code == 1
    assert missing.output.strip() == "error: no API key with id 999"
    bad = cli("keys", "create", "--name", "x", "--scope", "root")
    assert bad.exit_code != 0 and bad.output.startswith("error:") and "Traceback" not in bad.output


def test_users_add_prompts_or_reads_stdin_and_hashes_the_password(cli):
    added = cli("users", "add", "ada", input="analytical-engine\nanalytical-engine\n")
    assert added.exit_code == 0, added.output
    assert "analytical-engine" not in added.stdout.replace("Password", "")
    assert auth.check_password("ada", "analytical-engine").scope == "admin"
    piped = cli("users", "add", "bob", "--scope", "read", "--password-stdin",
                input="difference-engine\n")
    assert piped.exit_code == 0, piped.output
    assert auth.check_password("bob", "difference-engine").scope == "read"
    again = cli("users", "add", "bob", "--password-stdin", input="whatever-else\n")
    assert again.exit_code == 1 and again.output.strip().startswith("error: user 'bob' "
                                                                     "already exists")
    short = cli("users", "add", "carol", "--password-stdin", input="short\n")
    assert short.exit_code == 1
    assert short.output.strip() == "error: password: expected at least 8 characters"
    assert cli("users", "passwd", "bob", "--password-stdin", input="new-password\n"
               ).exit_code == 0
    assert auth.check_password("bob", "new-password") is not None
    listed = cli("users", "list", "--json")
    assert [u["username"] for u in json.loads(listed.output)] == ["ada", "bob"]
    assert "scrypt" not in listed.output
    assert cli("users", "remove", "bob").exit_code == 0
    assert cli("users", "remove", "bob").output.strip() == "error: no user named 'bob'"


def test_the_cli_spells_the_same_scopes_as_the_store():
    # cli_api keeps its own tuple so `connector --help` does not import the store
    from connector.cli_api import SCOPES
    from connector.store import ApiKey

    assert SCOPES == ApiKey.SCOPES
