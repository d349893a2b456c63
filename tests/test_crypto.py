"""Credentials at rest: sealed with Fernet, a key that must be right, and a start that refuses
to run without one where guessing would be unsafe."""
from __future__ import annotations

import stat
from pathlib import Path

import pytest

from connector.config import Settings
from connector.crypto import SecretBox, load_box, new_key
from connector.errors import ConfigurationError
from connector.host import Host
from connector.store import Connection

API_KEY = "aic_live_Zq8vR3xW7tY2pL9mK4nB6cD1-unmistakable"


def database_bytes(url: str) -> bytes:
    """Every byte SQLite holds for the database: the main file plus its WAL and shm."""
    path = Path(url.split(":///", 1)[1])
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*") if p.is_file())


def add_aiconnector(host: Host, name: str = "aic"):
    return host.add_connection(name, "aiconnector", {"api_key": API_KEY},
                               "http://127.0.0.1:9/v1")


def test_credentials_are_encrypted_at_rest(host, settings):
    conn = add_aiconnector(host)
    stored = Connection.get(Connection.name == "aic")
    assert API_KEY not in stored.sealed
    assert API_KEY.encode() not in database_bytes(settings.database_url)
    assert host.database.execute_sql("SELECT count(*) FROM connection").fetchone()[0] == 1
    # The sealed value is an authenticated Fernet token under this host's key, nothing weaker.
    assert SecretBox(settings.secret_key).open(stored.sealed) == {"api_key": API_KEY}
    assert host.credentials(conn) == {"api_key": API_KEY}


def test_replacing_a_connection_reseals(host, settings):
    add_aiconnector(host)
    first = Connection.get(Connection.name == "aic").sealed
    conn = host.add_connection("aic", "aiconnector", {"api_key": API_KEY + "-2"},
                               "http://127.0.0.1:9/v1", replace=True)
    assert Connection.get(Connection.name == "aic").sealed != first
    assert host.credentials(conn) == {"api_key": API_KEY + "-2"}
    assert API_KEY.encode() not in database_bytes(settings.database_url)


def test_sealing_twice_gives_different_tokens():
    box = SecretBox(new_key())
    assert box.seal({"api_key": API_KEY}) != box.seal({"api_key": API_KEY})


def test_a_tampered_token_is_refused():
    box = SecretBox(new_key())
    token = box.seal({"api_key": API_KEY})
    tampered = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
    with pytest.raises(ConfigurationError):
        box.open(tampered)


def test_wrong_secret_key_says_what_to_fix_and_leaks_nothing(make_host, settings):
    add_aiconnector(make_host())
    other = new_key()
    host = make_host(secret_key=other)
    conn = host.connection("aic")
    with pytest.raises(ConfigurationError) as info:
        host.credentials(conn)
    message = str(info.value)
    assert "CONNECTOR_SECRET_KEY" in message
    for secret in (settings.secret_key, other, API_KEY, conn.sealed):
        assert secret not in message


@pytest.mark.parametrize("bad", ["not-a-fernet-key", "c2hvcnQ=", new_key()[:-2]])
def test_malformed_secret_key_is_a_configuration_error(make_host, bad):
    with pytest.raises(ConfigurationError) as info:
        make_host(secret_key=bad)
    assert "CONNECTOR_SECRET_KEY" in str(info.value)
    assert bad not in str(info.value)


def test_production_without_a_key_refuses_to_start(tmp_path):
    settings = Settings.from_env(env={
        "CONNECTOR_ENV": "production",
        "CONNECTOR_DATABASE_URL": f"sqlite:///{tmp_path / 'prod.db'}"})
    assert settings.production and settings.secret_key is None
    with pytest.raises(ConfigurationError) as info:
        load_box(settings)
    assert "CONNECTOR_SECRET_KEY" in str(info.value)
    with pytest.raises(ConfigurationError):
        Host(settings)
    assert not (tmp_path / "connector.key").exists()


@pytest.mark.parametrize("url", ["postgresql://connector@db.internal/connector",
                                 "mysql://connector@db.internal/connector"])
def test_a_server_database_without_a_key_refuses_to_start(tmp_path, url):
    settings = Settings.from_env(env={"CONNECTOR_DATABASE_URL": url})
    with pytest.raises(ConfigurationError) as info:
        load_box(settings)
    assert "CONNECTOR_SECRET_KEY" in str(info.value)
    assert not (tmp_path / "connector.key").exists()


def test_a_host_on_a_server_database_without_a_key_refuses_before_connecting():
    # Port 1 on loopback: nothing listens, and the driver may not even be installed. The
    # missing key is the first thing to report, not whatever the database says.
    settings = Settings.from_env(env={
        "CONNECTOR_DATABASE_URL": "postgresql://connector@127.0.0.1:1/connector"})
    with pytest.raises(ConfigurationError) as info:
        Host(settings)
    assert "CONNECTOR_SECRET_KEY" in str(info.value)


def test_embedded_default_makes_a_private_key_file_and_reuses_it(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    settings = Settings.from_env(env={"CONNECTOR_DATABASE_URL": f"sqlite:///{data / 'c.db'}"})
    assert settings.secret_key is None and not settings.production

    first = Host(settings)
    try:
        key_file = data / "connector.key"
        assert key_file.exists()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_text().strip()
        SecretBox(key)  # a valid Fernet key
        add_aiconnector(first)
    finally:
        first.close()

    second = Host(settings)
    try:
        assert key_file.read_text().strip() == key
        assert second.credentials(second.connection("aic")) == {"api_key": API_KEY}
    finally:
        second.close()
    assert list(tmp_path.glob("connector.key")) == []  # beside the database, not in the cwd


def test_a_malformed_key_file_names_the_file(tmp_path):
    (tmp_path / "connector.key").write_text("garbage-not-a-key\n")
    settings = Settings.from_env(env={
        "CONNECTOR_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}"})
    with pytest.raises(ConfigurationError) as info:
        load_box(settings)
    message = str(info.value)
    # The user set no CONNECTOR_SECRET_KEY: what to fix is the key file, so name it.
    assert "connector.key" in message
    assert "garbage-not-a-key" not in message


def test_embedded_default_url_keeps_the_key_in_the_working_directory(tmp_path):
    # The autouse fixture chdirs into tmp_path; the default URL is sqlite:///connector.db.
    settings = Settings.from_env(env={})
    host = Host(settings)
    try:
        assert (tmp_path / "connector.db").exists()
        assert stat.S_IMODE((tmp_path / "connector.key").stat().st_mode) == 0o600
    finally:
        host.close()


def test_an_explicit_key_writes_no_key_file(host, tmp_path):
    assert not (tmp_path / "connector.key").exists()


def test_non_integer_port_names_the_variable():
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env(env={"CONNECTOR_PORT": "eighty"})
    assert "CONNECTOR_PORT" in str(info.value)
    assert "integer" in str(info.value)


def test_settings_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("CONNECTOR_PORT", "9123")
    monkeypatch.setenv("CONNECTOR_ENV", "production")
    settings = Settings.from_env()
    assert settings.port == 9123 and settings.production
