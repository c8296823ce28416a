"""The embedded fleet store: one SQLite file, WAL, one connection per process (and thread).

WAL lets the servers' writers and the CLI's readers work at once; ``busy_timeout`` makes a writer
wait briefly for another instead of failing; ``synchronous=NORMAL`` in WAL mode never corrupts
the database on a crash (a ``kill -9`` loses at most the transactions not yet checkpointed to the
WAL, i.e. the last flush) (https://www.sqlite.org/wal.html, https://www.sqlite.org/pragma.html).
Transactions that write start with ``BEGIN IMMEDIATE``: a deferred transaction that reads and then
writes can fail at once with "database is locked" when another process wrote in between, whatever
the busy timeout.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

from acrelease.errors import FleetError
from acrelease.fleet.store import FleetStore

BUSY_TIMEOUT_MS = 5000


class SQLiteStore(FleetStore):
    tables_sql = "SELECT name FROM sqlite_master WHERE type = 'table'"

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        super().__init__(connection, (sqlite3.Error, OSError))
        self.path = path
        self.where = str(path)
        self.spec = str(path)
        self._identity = _identity(path)

    @classmethod
    def open(cls, path: Path, *, create: bool = True, migrating: bool = False) -> SQLiteStore:
        where = str(path)
        try:
            if create:  # a store that is only read (devices, rollout --json) may be read-only
                path.parent.mkdir(parents=True, exist_ok=True)
                _writable(path)
            connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                         check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise FleetError(f"{where}: cannot open the fleet store ({exc}); check the path and its "
                             "permissions, or pass another --fleet PATH") from None
        store = cls(path, connection)
        with store.guard("open it as a SQLite database"):
            connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if not create:
                return store.checked(migrating=migrating)
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()
            connection.execute("PRAGMA synchronous = NORMAL")
            if mode is None or str(mode[0]).lower() != "wal":
                raise FleetError(f"{where}: cannot switch the fleet store to WAL mode ({mode}); "
                                 "put it on a local file system")
        store.create_schema(migrating=migrating)
        return store

    def checked(self, *, migrating: bool = False) -> SQLiteStore:
        self.check_schema(migrating=migrating)
        return self

    def begin_write(self) -> None:
        self.connection.execute("BEGIN IMMEDIATE")

    def check(self) -> None:
        """SQLite keeps writing into a file deleted or replaced under it, and an open connection
        keeps writing into one made read-only: both are noticed here, before each batch."""
        identity = _identity(self.path)
        if identity is None:
            raise FleetError(f"{self.where}: the fleet store was deleted; a new one is created")
        if identity != self._identity:
            raise FleetError(f"{self.where}: the fleet store was replaced; reopening it")
        _writable(self.path)

    def path_ok(self) -> bool:
        return _identity(self.path) == self._identity


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _writable(path: Path) -> None:
    """A store whose file has no write permission bits is read-only even for root, who would
    otherwise write through any mode: the operator said so."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        raise FleetError(f"{path}: the fleet store is read-only; make it writable (chmod u+w) "
                         "or pass another --fleet PATH")
