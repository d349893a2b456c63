"""Encrypt credentials at rest with Fernet (AES-128-CBC + HMAC-SHA256, authenticated).

The key comes from CONNECTOR_SECRET_KEY. Only the embedded default (SQLite, not production)
may fall back to a key file beside the database, created on first start with mode 0600, so
that the two-command start needs no setup; production refuses to start without the variable.

What is sealed: every ``Connection.sealed`` (credentials), every
``TriggerState.sealed_subscription`` (webhook signing secrets, tokens, passwords) and any
``Meta`` value that is a Fernet token (the web UI's session secret). :func:`rotate`
re-seals all of them under a new key in one transaction (``connector keys rotate``).

Rotating the key file of the embedded default, and what a crash at each point leaves:

1. the new key is written to ``connector.key.next`` (mode 0600, fsynced, directory fsynced);
   a crash here changes nothing that matters (the next start deletes the unused file);
2. the database is re-sealed and committed in one transaction; a crash before the commit
   leaves it under the old key, which ``connector.key`` still holds;
3. ``connector.key.next`` replaces ``connector.key`` (``os.replace``, atomic); a crash
   between 2 and 3 leaves the database under the new key and both files on disk.

So the new key is on disk before the database needs it, and :func:`load_box` finishes an
interrupted rotation: when ``connector.key.next`` exists, it opens one sealed value of the
database with each key, then moves the next key into place (the database is under it, or
holds nothing sealed) or deletes it (the commit never happened). Nothing is lost at any
point. With CONNECTOR_SECRET_KEY, the connector cannot set the variable: the new key is
printed before the commit (or given with ``--new-key``) and the user sets it afterwards;
``connector keys check`` says whether a key opens everything.
"""
from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from .config import Settings
from .errors import ConfigurationError


class SecretBox:
    """Seal and open JSON-able values with one Fernet key.

    ``source`` says where the key came from, for messages; no message ever holds the key
    or a sealed value.
    """

    def __init__(self, key: str | bytes, source: str = "CONNECTOR_SECRET_KEY"):
        self.source = source
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError):
            raise ConfigurationError(
                f"{source} must be a Fernet key (32 url-safe base64 bytes); "
                "make one with: connector keygen"
            ) from None

    def seal(self, value) -> str:
        return self._fernet.encrypt(json.dumps(value).encode()).decode()

    def open(self, token: str):
        try:
            return json.loads(self._fernet.decrypt(str(token).encode()))
        except (InvalidToken, UnicodeError, ValueError):
            raise ConfigurationError(
                f"stored credentials cannot be decrypted: {self.source} is not the key they "
                "were sealed with, or the stored value was changed (check the key; a changed "
                "value must be added again)"
            ) from None

    def opens(self, token: str) -> bool:
        try:
            self.open(token)
        except ConfigurationError:
            return False
        return True


def _from_file(path: Path) -> SecretBox:
    try:
        return SecretBox(path.read_text().strip(), source=f"the key file {path}")
    except (ConfigurationError, UnicodeError):
        raise ConfigurationError(
            f"key file {path} does not hold a Fernet key; restore it from a backup, or set "
            "CONNECTOR_SECRET_KEY (credentials sealed with the lost key must be added again)"
        ) from None


def new_key() -> str:
    return Fernet.generate_key().decode()


def key_file(settings: Settings) -> Path | None:
    """The embedded default's key file, or None when the key comes from the environment."""
    if settings.secret_key or settings.production or not settings.is_sqlite:
        return None
    return _key_file(settings)


def _next_file(path: Path) -> Path:
    return path.with_name(path.name + ".next")


def _key_file(settings: Settings) -> Path:
    path = settings.database_url.split(":///", 1)[-1] if settings.is_sqlite else ""
    if not path or path == ":memory:":
        return Path.cwd() / "connector.key"
    return Path(path).resolve().parent / "connector.key"


def load_box(settings: Settings) -> SecretBox:
    """Return the SecretBox for these settings, or raise ConfigurationError saying what to set."""
    if settings.secret_key:
        return SecretBox(settings.secret_key)
    if settings.production or not settings.is_sqlite:
        raise ConfigurationError(
            "CONNECTOR_SECRET_KEY is not set; production and non-SQLite databases need it "
            "(make one with: connector keygen)"
        )
    path = _key_file(settings)
    if _next_file(path).exists():
        _settle_rotation(settings, path)
    if path.exists():
        return _from_file(path)
    key = new_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it between our check and now
        return _from_file(path)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return SecretBox(key, source=f"the key file {path}")


# -- rotation -------------------------------------------------------------------------------------

def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_next_key(path: Path, key: str) -> Path:
    """Step 1 of a key-file rotation: put the new key beside the old one, durably."""
    target = _next_file(path)
    target.unlink(missing_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    _fsync_dir(path.parent)
    return target


def promote_next_key(path: Path) -> None:
    """Step 3: the next key becomes the key, atomically (after the database commit)."""
    os.replace(_next_file(path), path)
    _fsync_dir(path.parent)


def discard_next_key(path: Path) -> None:
    _next_file(path).unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _sample_token(settings: Settings) -> str | None:
    """One sealed value from the SQLite database, read without the ORM (it is not bound yet)."""
    database = settings.database_url.split(":///", 1)[-1]
    if database in ("", ":memory:") or not Path(database).exists():
        return None
    try:
        con = sqlite3.connect(database, timeout=30)
    except sqlite3.Error:
        return None
    try:
        for query in ("SELECT sealed FROM connection",
                      "SELECT sealed_subscription FROM triggerstate "
                      "WHERE sealed_subscription IS NOT NULL"):
            try:
                row = con.execute(query + " LIMIT 1").fetchone()
            except sqlite3.Error:  # no such table yet: a new database
                continue
            if row and row[0]:
                return row[0]
        return None
    finally:
        con.close()


def _settle_rotation(settings: Settings, path: Path) -> None:
    """Finish a key-file rotation a crash interrupted (see the module's docstring)."""
    pending = _next_file(path)
    try:
        nxt = SecretBox(pending.read_text().strip())
    except (ConfigurationError, OSError, UnicodeError):
        discard_next_key(path)  # cut short while being written: it never sealed anything
        return
    token = _sample_token(settings)
    if token is None or nxt.opens(token):
        promote_next_key(path)
        return
    if path.exists() and _from_file(path).opens(token):
        discard_next_key(path)
        return
    raise ConfigurationError(
        f"neither the key file {path} nor {pending} (left by an interrupted `connector keys "
        "rotate`) opens the stored credentials; restore the key file from a backup")


def rotate(old: SecretBox, new: SecretBox) -> dict[str, int]:
    """Re-seal every sealed value under ``new``, in one transaction; return what was done.

    Every value is opened with ``old`` first: if one does not open, nothing is changed and
    the error names the connection or flow. On SQLite, deleted content is overwritten
    (secure_delete) and the WAL is checkpointed, so the old ciphertexts do not linger.
    """
    from . import store
    from .store import Connection, Flow, Meta, TriggerState

    counts = {"connections": 0, "webhook subscriptions": 0, "other secrets": 0}
    sqlite = store.is_sqlite()
    if sqlite:
        store.db.execute_sql("PRAGMA secure_delete = ON")
    with store.write_tx():
        for conn in Connection.select().order_by(Connection.id):
            value = _open_for_rotation(old, conn.sealed, f"connection {conn.name}")
            Connection.update(sealed=new.seal(value)).where(Connection.id == conn.id).execute()
            counts["connections"] += 1
        states = (TriggerState.select(TriggerState, Flow).join(Flow)
                  .where(TriggerState.sealed_subscription.is_null(False)))
        for state in states:
            value = _open_for_rotation(old, state.sealed_subscription,
                                       f"the webhook subscription of flow {state.flow.name}")
            TriggerState.update(sealed_subscription=new.seal(value)).where(
                TriggerState.id == state.id).execute()
            counts["webhook subscriptions"] += 1
        for meta in Meta.select():
            # Other sealed facts (the web UI's session secret): a Fernet token starts with
            # the version byte 0x80, "gAAAAA" in base64. One the key does not open is left
            # alone: its owner already treats it as lost and makes a new one.
            if meta.value and meta.value.startswith("gAAAAA") and old.opens(meta.value):
                Meta.update(value=new.seal(old.open(meta.value))).where(
                    Meta.key == meta.key).execute()
                counts["other secrets"] += 1
    if sqlite:
        try:  # best effort: a reader holding an old snapshot only delays it to later
            store.db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        except Exception:  # noqa: BLE001 - committed already; nothing may fail after that
            pass
    return counts


def sealed_with(box: SecretBox) -> bool | None:
    """Whether the stored values open with ``box`` (one sample); None if nothing is sealed."""
    from .store import Connection, TriggerState

    row = Connection.select(Connection.sealed).first()
    token = row.sealed if row else None
    if token is None:
        state = TriggerState.select(TriggerState.sealed_subscription).where(
            TriggerState.sealed_subscription.is_null(False)).first()
        token = state.sealed_subscription if state else None
    return None if token is None else box.opens(token)


def check_all(box: SecretBox, tail: str = "add it again, or use the key it was sealed with"
              ) -> dict[str, int]:
    """Open every sealed value with ``box``; raise ConfigurationError naming the first that
    does not open (``tail`` says what to do)."""
    from .store import Connection, Flow, TriggerState

    counts = {"connections": 0, "webhook subscriptions": 0}
    for conn in Connection.select().order_by(Connection.id):
        _open_for_rotation(box, conn.sealed, f"connection {conn.name}", tail)
        counts["connections"] += 1
    for state in (TriggerState.select(TriggerState, Flow).join(Flow)
                  .where(TriggerState.sealed_subscription.is_null(False))):
        _open_for_rotation(box, state.sealed_subscription,
                           f"the webhook subscription of flow {state.flow.name}", tail)
        counts["webhook subscriptions"] += 1
    return counts


def _open_for_rotation(box: SecretBox, token: str, what: str,
                       tail: str = "nothing was changed"):
    try:
        return box.open(token)
    except ConfigurationError:
        raise ConfigurationError(f"{what}: cannot be decrypted with {box.source} (sealed with "
                                 f"another key, or changed); {tail}") from None
