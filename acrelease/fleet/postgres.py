"""The fleet store in PostgreSQL, shared by several ``acrelease serve`` hosts (README, "Running on
several hosts").

The SQL is :mod:`acrelease.fleet.store`'s, unchanged but for the placeholders (``%s``). What this
module adds is what a network database needs and a file does not:

* nothing hangs: ``connect_timeout`` bounds a connect, ``statement_timeout`` every statement, and
  TCP keepalives notice a peer that vanished without closing the connection
  (https://www.postgresql.org/docs/15/libpq-connect.html#LIBPQ-PARAMKEYWORDS);
* a broken connection is noticed (:meth:`PostgresStore.path_ok`) and the recorder opens a new one;
* the password of a URL is never shown: every message names the store by its masked URL;
* schema creation and migration hold a transaction-scoped advisory lock, so hosts starting at once
  create the tables once (https://www.postgresql.org/docs/15/explicit-locking.html#ADVISORY-LOCKS).

Writers decide races in SQL (conditional upserts and updates whose row count says who won, see
:mod:`acrelease.fleet.store`); under PostgreSQL's default READ COMMITTED isolation an
``ON CONFLICT DO UPDATE`` adds to the row as committed by the other writer, so counters add up
(https://www.postgresql.org/docs/15/sql-insert.html#SQL-ON-CONFLICT).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from acrelease.errors import FleetError
from acrelease.fleet.store import FleetStore

CONNECT_TIMEOUT = 3
"""Seconds to wait for a connection (libpq's minimum useful value is 2)."""
STATEMENT_TIMEOUT_MS = 5000
LOCK_TIMEOUT_MS = 4000
SCHEMA_LOCK = 0x61637265  # "acre": the advisory lock key of schema changes
INSTALL = "pip install 'acrelease[postgresql]' (psycopg 3)"


def mask(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


def require_driver(url: str) -> None:
    """One line saying what to install when psycopg is missing."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise FleetError(f"--fleet {mask(url)}: PostgreSQL needs the psycopg driver; {INSTALL}") from None


class PostgresStore(FleetStore):
    placeholder = "%s"
    tables_sql = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    advice = ("check that PostgreSQL is running and reachable, and that the user may write the database "
              "(the URL of --fleet)")

    def __init__(self, url: str, connection: Any, errors: tuple[type[BaseException], ...]) -> None:
        super().__init__(connection, errors)
        self.url = url
        self.where = self.spec = mask(url)

    @classmethod
    def open(cls, url: str, *, create: bool = True, migrating: bool = False) -> PostgresStore:
        require_driver(url)
        import psycopg
        try:
            connection = psycopg.connect(
                url, connect_timeout=CONNECT_TIMEOUT, application_name="acrelease",
                options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c lock_timeout={LOCK_TIMEOUT_MS} "
                        "-c idle_in_transaction_session_timeout=60000",
                keepalives=1, keepalives_idle=10, keepalives_interval=3, keepalives_count=3)
        except (psycopg.Error, OSError, ValueError) as exc:
            text = _scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, url)
            raise FleetError(f"{mask(url)}: cannot connect to the fleet store ({text}); check that PostgreSQL "
                             "is running and reachable, and the URL of --fleet (user, password, database)") from None
        store = cls(url, connection, (psycopg.Error, OSError))
        try:
            if create:
                store.create_schema(migrating=migrating)
            else:
                store.checked(migrating=migrating)
        except BaseException:
            store.close()
            raise
        return store

    def checked(self, *, migrating: bool = False) -> PostgresStore:
        """A store that is only read: it must exist (have tables) and have the current schema."""
        with self.guard("read its tables"):
            empty = "meta" not in self.tables()
        if empty:
            raise FleetError(f"{self.where}: no fleet store yet (the database has no fleet tables); devices "
                             "appear once `acrelease serve --fleet URL` has answered their checks")
        self.check_schema(migrating=migrating)
        return self

    def begin_write(self) -> None:
        """psycopg opens a transaction with the first statement (the connection is not in autocommit)."""

    def write_rows(self, cursor: Any, sql: str, rows: Sequence[Sequence[Any]], types: Sequence[str],
                   key: int = 0) -> None:
        """One statement for the whole batch: ``INSERT ... SELECT * FROM unnest(%s::type[], ...)``,
        one array per column, instead of a statement per row; about 3x less CPU for a batch of
        thousands of devices (https://www.postgresql.org/docs/15/functions-array.html, ``unnest``).
        An upsert whose batch names a key twice would touch a row twice in one statement, which
        PostgreSQL refuses (its INSERT docs, ON CONFLICT): such a batch goes row by row."""
        values = f"VALUES ({', '.join('?' * len(types))})"
        if len(rows) < 8 or values not in sql or (key and len({tuple(r[:key]) for r in rows}) != len(rows)):
            super().write_rows(cursor, sql, rows, types, key)
            return
        arrays = f"SELECT * FROM unnest({', '.join(f'%b::{t}[]' for t in types)})"  # binary: no quoting
        cursor.execute(self.q(sql.replace(values, arrays)), [list(column) for column in zip(*rows, strict=True)])

    def touch_rows(self, cursor: Any, touches: Sequence[tuple[int, int, int, str]]) -> int:
        """Two statements for the whole batch instead of one per device (a fleet's flush is mostly
        touches): lock the rows in MAC order first, so two hosts touching the same devices wait for
        each other instead of deadlocking (the lock is taken above the sort: ``FOR UPDATE`` in
        PostgreSQL's SELECT docs, "The Locking Clause"), then one ``UPDATE ... FROM unnest``.
        A batch naming a MAC twice would be updated once by the join: it goes row by row."""
        if len(touches) < 8 or len({t[3] for t in touches}) != len(touches):
            return super().touch_rows(cursor, touches)
        lasts, _, checks, macs = (list(column) for column in zip(*touches, strict=True))
        cursor.execute("SELECT 1 FROM devices WHERE mac = ANY(%b::varchar[]) ORDER BY mac FOR UPDATE", [macs])
        cursor.execute("UPDATE devices AS d SET last_seen = GREATEST(d.last_seen, t.last), "
                       "checks = d.checks + t.checks FROM unnest(%b::bigint[], %b::bigint[], %b::varchar[]) "
                       "AS t(last, checks, mac) WHERE d.mac = t.mac", [lasts, checks, macs])
        return max(int(cursor.rowcount), 0)

    def allow_long_statements(self) -> None:
        with self.guard("lift its statement timeout"):
            self.connection.execute("SET statement_timeout = 0")
            self.connection.commit()

    def lock_schema(self, cursor: Any) -> None:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))

    def path_ok(self) -> bool:
        """False once the connection broke (server restarted, network gone): the recorder then
        closes this store and opens a new connection on its next flush."""
        return not (self.connection.closed or self.connection.broken)

    def clean(self, text: str) -> str:
        return _scrub(text, self.url)


def _scrub(text: str, url: str) -> str:
    """Driver messages can echo connection parameters: never let the password through."""
    password = urlsplit(url).password
    text = text.replace(url, mask(url))
    return text.replace(password, "***") if password else re.sub(r"password=\S+", "password=***", text)
