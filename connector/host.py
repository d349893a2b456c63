"""The Host: settings, database, plugin catalog and credentials, wired once per process.

Every entry point (CLI, web app, scheduler, tests) builds one Host and passes it down; nothing
is global except the Peewee database proxy that :func:`connector.store.init_db` binds.
"""
from __future__ import annotations

import logging
import threading

from marshmallow import ValidationError

from . import ssrf, store
from .config import Settings
from .crypto import load_box
from .errors import NotFound, UserError
from .http import ApiClient
from .registry import Catalog, build_catalog, make_manager
from .store import Connection, utcnow

log = logging.getLogger("connector")


def validation_message(err: ValidationError, prefix: str = "") -> str:
    """Flatten marshmallow's messages into one line: 'to_number: Missing data ...'."""
    parts = []

    def walk(messages, path):
        if isinstance(messages, dict):
            for key, value in messages.items():
                walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(messages, list) and messages and all(isinstance(m, str) for m in messages):
            parts.append(f"{path}: {' '.join(messages)}" if path else " ".join(messages))
        elif isinstance(messages, list):
            for i, value in enumerate(messages):
                walk(value, f"{path}[{i}]")
        else:
            parts.append(f"{path}: {messages}")

    walk(err.messages, prefix)
    return "; ".join(parts)


class Host:
    """One process's view of the connector: build it, then hand it to everything else."""

    def __init__(self, settings: Settings | None = None, extra_plugins: list | None = None,
                 catalog: Catalog | None = None):
        self.settings = settings or Settings.from_env()
        if catalog is None:
            self.pm = make_manager(self.settings.load_plugins, self.settings.block_plugins,
                                   extra_plugins, plugins_dir=self.settings.plugins_dir)
            catalog = build_catalog(self.pm)
        self.catalog = catalog
        self.box = load_box(self.settings)  # a missing key is reported before connecting
        self.database = store.init_db(self.settings.database_url)
        self._opened: dict[str, dict] = {}  # open_sealed: sealed text -> its contents
        self._clients = threading.local()  # {connection id: (version, client, adapters)}
        self._clients_lock = threading.Lock()
        self._all_clients: set[ApiClient] = set()  # every kept client, to close at the end

    # connections -------------------------------------------------------------------------
    def add_connection(self, name: str, app_key: str, credentials: dict,
                       base_url: str | None = None, replace: bool = False) -> Connection:
        """Validate ``credentials`` against the app's schema and store them sealed."""
        if not name or not name.strip():
            raise UserError("connection name: expected a non-empty name")
        app = self.catalog.app(app_key)
        try:
            creds = app.Credentials().load(credentials)
        except ValidationError as err:
            raise UserError(f"connection {name}: {validation_message(err)}") from None
        if base_url is not None and not base_url.startswith(("http://", "https://")):
            raise UserError(f"connection {name}: base_url: expected an http(s) URL")
        if not base_url and not app.base_url:
            raise UserError(f"connection {name}: base_url: required, {app.label} has no "
                            "public default host")
        existing = Connection.get_or_none(Connection.name == name)
        if existing and not replace:
            raise UserError(f"connection {name!r} already exists (use --replace to overwrite)")
        with store.write_tx():
            if existing:
                existing.app, existing.base_url = app_key, base_url
                existing.sealed, existing.updated_at = self.box.seal(creds), utcnow()
                existing.save()
                return existing
            return Connection.create(name=name, app=app_key, base_url=base_url,
                                     sealed=self.box.seal(creds))

    def connection(self, name: str) -> Connection:
        conn = Connection.get_or_none(Connection.name == name)
        if conn is None:
            known = ", ".join(c.name for c in Connection.select().order_by(Connection.name))
            raise NotFound(f"no connection named {name!r}; known: {known or 'none'}")
        return conn

    def credentials(self, conn: Connection) -> dict:
        return self.box.open(conn.sealed)

    def open_sealed(self, sealed: str) -> dict:
        """Return a copy of what ``sealed`` holds, decrypting each sealed value once."""
        opened = self._opened.get(sealed)
        if opened is None:
            opened = self.box.open(sealed)
            if len(self._opened) >= 1024:
                self._opened.clear()
            self._opened[sealed] = opened
        return dict(opened)

    def client(self, conn: Connection | None) -> ApiClient | None:
        """Return an API client for ``conn`` (None for actions that need no connection)."""
        if conn is None:
            return None
        return ApiClient(self.catalog.app(conn.app), self.credentials(conn), conn.base_url,
                         connection=conn)

    def kept_client(self, conn: Connection | None, guarded: bool = False) -> ApiClient | None:
        """Return this thread's kept-alive client for ``conn``; the caller must not close it.

        One per connection and thread, so its session's keep-alive connection to the service
        and the decrypted credentials serve every step; rebuilt when the connection was
        saved since (its ``updated_at``, sealed credentials or base URL changed).
        ``guarded`` clients (their session SSRF-guarded, for the generic HTTP action) are
        kept apart: a guarded session must not serve another action's step, whose service
        may sit on a private address the guard refuses.
        """
        if conn is None:
            return None
        kept = self._clients.__dict__
        slot = (conn.id, guarded)
        version = (conn.updated_at, conn.sealed, conn.base_url)
        entry = kept.get(slot)
        if entry is not None and entry[0] == version and (
                not guarded or ssrf.is_guarded(entry[1].session)):
            return entry[1]  # (a guarded one: under the allow-list in force now)
        if entry is not None:
            self._drop(entry[1])
        client = self.client(conn)
        if guarded:
            ssrf.guard(client.session)
        kept[slot] = (version, client, dict(client.session.adapters),
                      client.session.trust_env)
        with self._clients_lock:
            self._all_clients.add(client)
        return client

    def check_client(self, conn: Connection, client: ApiClient, guarded: bool = False) -> None:
        """Drop ``client`` from this thread's kept ones if a caller rewired its session."""
        entry = self._clients.__dict__.get((conn.id, guarded))
        # The generic HTTP action guards the session it is given (a no-op on a guarded
        # client under the same allow-list); a session changed otherwise must not serve
        # the next step.
        if entry is not None and entry[1] is client and (
                client.session.adapters != entry[2] or client.session.trust_env != entry[3]):
            del self._clients.__dict__[(conn.id, guarded)]
            self._drop(client)

    def _drop(self, client: ApiClient) -> None:
        with self._clients_lock:
            self._all_clients.discard(client)
        client.close()

    def test_connection(self, name: str) -> dict:
        """Run the app's credential test; APIError carries the service's own message."""
        conn = self.connection(name)
        client = self.client(conn)
        try:
            return client.app.test(client) or {}
        finally:
            client.close()

    def options(self, search_key: str, connection: str, inputs: dict | None = None) -> list[dict]:
        """Run a search and return its records as dropdown options ``{"value", "label"}``."""
        from .sdk import ActionContext

        search = self.catalog.search(search_key)
        try:
            data = search.Inputs().load(inputs or {})
        except ValidationError as err:
            raise UserError(f"search {search_key}: {validation_message(err)}") from None
        client = self.client(self.connection(connection))
        try:
            ctx = ActionContext(flow_name="", run_id=0, step_name=search_key,
                                idempotency_key="", client=client)
            return [search.option(record) for record in search.search(ctx, data)]
        finally:
            client.close()

    def webhook_base(self) -> str:
        """Return the root URL services use to reach the webhook receiver.

        CONNECTOR_PUBLIC_URL wins; otherwise the address the last `connector serve` bound
        (recorded in the database, so `flows enable` in another shell agrees with it);
        otherwise CONNECTOR_HOST:CONNECTOR_PORT.
        """
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/")
        served = store.Meta.get_or_none(store.Meta.key == "serve_url")
        return served.value if served else self.settings.webhook_base()

    def record_serve_url(self, url: str) -> None:
        store.set_meta("serve_url", url.rstrip("/"))

    def close(self) -> None:
        """Close this thread's connection and every pooled one (the process is done with them)."""
        if not self.database.is_closed():
            self.database.close()
        if hasattr(self.database, "close_all"):
            self.database.close_all()
        with self._clients_lock:
            clients, self._all_clients = self._all_clients, set()
        for client in clients:
            client.close()
