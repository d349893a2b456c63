"""Encrypt credentials at rest with Fernet (AES-128-CBC + HMAC-SHA256, authenticated).

The key comes from CONNECTOR_SECRET_KEY. Only the embedded default (SQLite, not production)
may fall back to a key file beside the database, created on first start with mode 0600, so
that the two-command start needs no setup; production refuses to start without the variable.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from .config import Settings
from .errors import ConfigurationError


class SecretBox:
    """Seal and open JSON-able values with one Fernet key."""

    def __init__(self, key: str | bytes):
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError):
            raise ConfigurationError(
                "CONNECTOR_SECRET_KEY must be a Fernet key (32 url-safe base64 bytes); "
                "make one with: connector keygen"
            ) from None

    def seal(self, value) -> str:
        return self._fernet.encrypt(json.dumps(value).encode()).decode()

    def open(self, token: str):
        try:
            return json.loads(self._fernet.decrypt(token.encode()))
        except InvalidToken:
            raise ConfigurationError(
                "stored credentials cannot be decrypted: CONNECTOR_SECRET_KEY is not the key "
                "they were sealed with"
            ) from None


def _from_file(path: Path) -> SecretBox:
    try:
        return SecretBox(path.read_text().strip())
    except ConfigurationError:
        raise ConfigurationError(
            f"key file {path} does not hold a Fernet key; restore it from a backup, or set "
            "CONNECTOR_SECRET_KEY (credentials sealed with the lost key must be added again)"
        ) from None


def new_key() -> str:
    return Fernet.generate_key().decode()


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
    if path.exists():
        return _from_file(path)
    key = new_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it between our check and now
        return _from_file(path)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return SecretBox(key)
