"""Choose one scheduler leader among any number of `connector serve` processes.

Only the leader runs the poll, schedule and retention jobs; every process still executes
runs (claims are atomic). PostgreSQL: a session advisory lock held on a connection of its
own, released by the server the moment the holder's connection dies. SQLite (one machine):
an exclusive ``flock`` on a file beside the database, released by the kernel when the
holder's process dies. A follower tries again every few seconds, so another process takes
over within seconds of the leader's death.
"""
from __future__ import annotations

import fcntl
import logging
import os
import zlib

from .config import Settings

log = logging.getLogger("connector.leader")

#: the advisory lock's key: a stable number derived from the product's name; the lock
#: taken is this key with the schema's own hash, since advisory locks are per database and
#: two deployments (or test sessions) may share one database in different schemas
LOCK_KEY = zlib.crc32(b"connector scheduler leader") & 0x7FFFFFFF  # an int4


class LeaderLock:
    """Try to become leader; ``held`` says whether this process is."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.held = False
        self._conn = None
        self._file = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; True while this process holds it."""
        if self.held:
            return self._still_held()
        try:
            self.held = (self._pg_acquire() if not self.settings.is_sqlite
                         else self._file_acquire())
        except Exception as exc:  # the database may be briefly away: stay a follower
            log.warning("cannot take the scheduler lock yet: %s", exc)
            self._close()
            self.held = False
        if self.held:
            log.info("this process is the scheduler leader")
        return self.held

    def release(self) -> None:
        self._close()
        self.held = False

    # -- PostgreSQL -------------------------------------------------------------------------
    def _pg_acquire(self) -> bool:
        from playhouse.db_url import connect

        if self._conn is None:
            self._conn = connect(self.settings.database_url)
            self._conn.connect(reuse_if_open=True)
        row = self._conn.execute_sql(
            "SELECT pg_try_advisory_lock(%s, hashtext(current_schema()))", (LOCK_KEY,)
        ).fetchone()
        if not row[0]:
            self._close()
        return bool(row[0])

    def _still_held(self) -> bool:
        if self._conn is None:
            return self.held
        try:
            self._conn.execute_sql("SELECT 1").fetchone()  # a dead connection lost the lock
            return True
        except Exception:
            log.warning("lost the scheduler lock's connection; standing down")
            self.release()
            return False

    # -- SQLite -----------------------------------------------------------------------------
    def _file_acquire(self) -> bool:
        path = self._lock_path()
        handle = open(path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle
        return True

    def _lock_path(self) -> str:
        path = self.settings.database_url.split(":///", 1)[-1]
        return (path if path and path != ":memory:" else "connector.db") + ".leader"

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None
        if self._file is not None:
            try:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            finally:
                self._file.close()
                self._file = None
