"""Who may use the REST API and the UI: API keys, users, scopes, sessions and CSRF tokens.

An API key is shown once when it is made; the database keeps its first characters (to find
the row) and the SHA-256 digest of the whole key. A user's password is hashed with scrypt and
a random salt. Scopes are ordered: ``read`` reads, ``write`` also changes connections, flows
and runs, ``admin`` also manages keys. The UI signs in with a password or a key and keeps a
signed session cookie (itsdangerous) that carries its CSRF token; unsafe requests made with
the cookie must send that token back.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

from . import store
from .errors import ConfigurationError, NotFound, UserError
from .store import ApiKey, User, utcnow

SCOPES = ApiKey.SCOPES  # read < write < admin
KEY_PREFIX = "cnk_"
PREFIX_LENGTH = 12  # "cnk_" and 8 random characters: enough to find the row, useless alone
SESSION_COOKIE = "connector_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SESSION_MAX_AGE = 12 * 3600
MIN_PASSWORD = 8
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# scrypt cost: 16 MiB and ~50 ms per check; stored with each hash so it can be raised later
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN = 2 ** 14, 8, 1, 32


class Unauthorized(UserError):
    """No credentials, or credentials that match no key, user or session (HTTP 401)."""


class Forbidden(UserError):
    """Valid credentials whose scope is too small for the request (HTTP 403)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key or a signed-in user, and the scope they hold."""

    kind: str  # "key" or "user"
    id: int
    name: str
    scope: str

    def allows(self, need: str) -> bool:
        return allows(self.scope, need)

    def describe(self) -> str:
        return f"{'API key' if self.kind == 'key' else 'user'} {self.name!r}"


def allows(have: str, need: str) -> bool:
    """Return True when scope ``have`` includes scope ``need``."""
    if need not in SCOPES:
        raise ValueError(f"unknown scope {need!r}")
    return have in SCOPES and SCOPES.index(have) >= SCOPES.index(need)


def require(principal: Principal, need: str) -> None:
    """Raise Forbidden naming the scope needed unless ``principal`` holds it."""
    if not principal.allows(need):
        raise Forbidden(f"this needs the {need} scope; {principal.describe()} has "
                        f"{principal.scope}")


def _check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise UserError(f"scope: expected one of {', '.join(SCOPES)}; got {scope!r}")
    return scope


# -- API keys ----------------------------------------------------------------------------------

def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def create_key(name: str, scope: str = ApiKey.READ) -> tuple[ApiKey, str]:
    """Make a key; return the row and the key itself, which is never available again."""
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise UserError("name: expected a non-empty name of up to 100 characters")
    _check_scope(scope)
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    with store.write_tx():
        row = ApiKey.create(name=name, prefix=raw[:PREFIX_LENGTH], digest=_digest(raw),
                            scope=scope)
    return row, raw


def find_key(raw: str | None) -> ApiKey | None:
    """Return the live key row matching ``raw``, comparing digests in constant time."""
    if not raw or not raw.startswith(KEY_PREFIX) or len(raw) < PREFIX_LENGTH + 8:
        return None
    digest = _digest(raw)
    found = None
    for row in ApiKey.select().where((ApiKey.prefix == raw[:PREFIX_LENGTH]) &
                                     ApiKey.revoked_at.is_null()):
        if hmac.compare_digest(row.digest, digest):
            found = row
    return found


def touch_key(row: ApiKey, every: int = 60) -> None:
    """Record that a key was used, at most once a minute (a write per request is too many)."""
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > dt.timedelta(seconds=every):
        ApiKey.update(last_used_at=now).where(ApiKey.id == row.id).execute()
        row.last_used_at = now


def key_principal(raw: str | None) -> Principal | None:
    row = find_key(raw)
    if row is None:
        return None
    touch_key(row)
    return Principal("key", row.id, row.name, row.scope)


def list_keys(include_revoked: bool = True) -> list[ApiKey]:
    query = ApiKey.select().order_by(ApiKey.id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_null())
    return list(query)


def get_key(key_id: int) -> ApiKey:
    row = ApiKey.get_or_none(ApiKey.id == key_id)
    if row is None:
        raise NotFound(f"no API key with id {key_id}")
    return row


def revoke_key(key_id: int) -> ApiKey:
    """Revoke a key at once (its sessions end too); revoking twice is harmless."""
    row = get_key(key_id)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        ApiKey.update(revoked_at=row.revoked_at).where(ApiKey.id == row.id).execute()
    return row


# -- users and passwords -----------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str) -> str:
    """Return ``scrypt$n$r$p$salt$hash`` (base64) for ``password`` with a random salt."""
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                         dklen=SCRYPT_LEN)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, encoded: str) -> bool:
    """Return True when ``password`` matches ``encoded``; compares in constant time."""
    try:
        algo, n, r, p, salt, expected = encoded.split("$")
        if algo != "scrypt":
            return False
        key = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                             r=int(r), p=int(p), dklen=len(base64.b64decode(expected)))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(key, base64.b64decode(expected))


# checked when the user does not exist, so that "no such user" takes as long as "bad password"
_DUMMY_HASH = None


def _check_password_rules(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise UserError(f"password: expected at least {MIN_PASSWORD} characters")


def add_user(username: str, password: str, scope: str = ApiKey.ADMIN) -> User:
    """Create a user who signs in to the UI with ``password``."""
    if not USERNAME.match(username or ""):
        raise UserError("username: expected letters, digits, '.', '_', '@' or '-', up to 64 "
                        "characters")
    _check_scope(scope)
    _check_password_rules(password)
    if User.get_or_none(User.username == username) is not None:
        raise UserError(f"user {username!r} already exists (change the password with: "
                        f"connector users passwd {username})")
    with store.write_tx():
        return User.create(username=username, password_hash=hash_password(password),
                           scope=scope)


def get_user(username: str) -> User:
    user = User.get_or_none(User.username == username)
    if user is None:
        raise NotFound(f"no user named {username!r}")
    return user


def set_password(username: str, password: str) -> User:
    user = get_user(username)
    _check_password_rules(password)
    user.password_hash = hash_password(password)
    User.update(password_hash=user.password_hash).where(User.id == user.id).execute()
    return user


def remove_user(username: str) -> None:
    user = get_user(username)
    User.delete().where(User.id == user.id).execute()


def check_password(username: str, password: str) -> User | None:
    """Return the user when ``password`` is theirs (recording the sign-in), else None.

    An unknown username costs the same scrypt work as a wrong password.
    """
    global _DUMMY_HASH
    user = User.get_or_none(User.username == username) if username else None
    if user is None:
        if _DUMMY_HASH is None:
            _DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
        verify_password(password or "", _DUMMY_HASH)
        return None
    if not verify_password(password or "", user.password_hash):
        return None
    User.update(last_login_at=utcnow()).where(User.id == user.id).execute()
    return user


def user_principal(user: User) -> Principal:
    return Principal("user", user.id, user.username, user.scope)


# -- sessions and CSRF -------------------------------------------------------------------------

def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def check_csrf(expected: str | None, given: str | None) -> bool:
    """Return True when the submitted token equals the session's (constant time)."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def session_secret(host) -> str:
    """Return the secret that signs session cookies, made once and kept sealed in the database.

    Every process on the same database (and CONNECTOR_SECRET_KEY) agrees on it; a new
    CONNECTOR_SECRET_KEY makes a new one, which signs everyone out.
    """
    name = "session_secret"
    row = store.Meta.get_or_none(store.Meta.key == name)
    if row is not None:
        try:
            return host.box.open(row.value)
        except ConfigurationError:
            store.Meta.delete().where(store.Meta.key == name).execute()
    store.Meta.insert(key=name, value=host.box.seal(secrets.token_urlsafe(48))
                      ).on_conflict_ignore().execute()
    return host.box.open(store.Meta.get(store.Meta.key == name).value)


def cookie_options(secure: bool) -> dict:
    """Keyword arguments for ``response.set_cookie`` of the session cookie."""
    return {"httponly": True, "samesite": "Lax", "secure": secure, "path": "/",
            "max_age": SESSION_MAX_AGE}


class Sessions:
    """Sign and read session cookies: ``{"sub": "user:ID" | "key:ID", "csrf": TOKEN}``."""

    def __init__(self, secret: str, max_age: int = SESSION_MAX_AGE):
        self._serializer = URLSafeTimedSerializer(secret, salt="connector-session")
        self.max_age = max_age

    def issue(self, principal: Principal) -> tuple[str, str]:
        """Return (cookie value, CSRF token) for a principal who just signed in."""
        csrf = new_csrf_token()
        value = self._serializer.dumps({"sub": f"{principal.kind}:{principal.id}",
                                        "csrf": csrf})
        return value, csrf

    def load(self, value: str | None) -> dict | None:
        """Return the session's data, or None when it is missing, forged or expired."""
        if not value:
            return None
        try:
            data = self._serializer.loads(value, max_age=self.max_age)
        except BadSignature:  # SignatureExpired is a BadSignature too
            return None
        return data if isinstance(data, dict) and "sub" in data and "csrf" in data else None

    def principal(self, value: str | None) -> tuple[Principal, str] | None:
        """Return (principal, CSRF token) for a live session whose key or user still exists."""
        data = self.load(value)
        if data is None:
            return None
        kind, _, ident = str(data["sub"]).partition(":")
        if not ident.isdigit():
            return None
        if kind == "user":
            user = User.get_or_none(User.id == int(ident))
            return (user_principal(user), data["csrf"]) if user else None
        if kind == "key":
            row = ApiKey.get_or_none((ApiKey.id == int(ident)) & ApiKey.revoked_at.is_null())
            return (Principal("key", row.id, row.name, row.scope), data["csrf"]) if row else None
        return None


def app_sessions(app) -> Sessions:
    """Return the Flask ``app``'s Sessions (made once per app from its Host's secret)."""
    if "connector.sessions" not in app.extensions:
        app.extensions["connector.sessions"] = Sessions(
            session_secret(app.extensions["connector"]))
    return app.extensions["connector.sessions"]


def presented_key(headers) -> str | None:
    """Return the API key a request carries (``Authorization: Bearer`` or ``X-API-Key``)."""
    header = headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return (headers.get("X-API-Key") or "").strip() or None


def authenticate(request, sessions: Sessions) -> Principal:
    """Return who made ``request`` (a Flask/werkzeug request) or raise Unauthorized.

    A key header wins over a cookie. A request made with the session cookie must send the
    session's CSRF token (``X-CSRF-Token`` header or ``csrf_token`` form field) unless its
    method is safe.
    """
    raw = presented_key(request.headers)
    if raw is not None:
        principal = key_principal(raw)
        if principal is None:
            raise Unauthorized("the API key is not valid or was revoked")
        return principal
    found = sessions.principal(request.cookies.get(SESSION_COOKIE))
    if found is None:
        raise Unauthorized("send an API key (Authorization: Bearer KEY, or X-API-Key: KEY); "
                           "make one with: connector keys create --scope read --name NAME")
    principal, csrf = found
    if request.method not in SAFE_METHODS:
        given = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD)
        if not check_csrf(csrf, given):
            raise Forbidden(f"missing or wrong CSRF token (send the {CSRF_HEADER} header)")
    return principal
