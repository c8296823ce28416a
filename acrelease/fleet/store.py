"""The one interface over the fleet store, and its SQL, written to run on SQLite and PostgreSQL.

Rules that keep the SQL portable (SQLite >= 3.24 and PostgreSQL both run every statement here):

* upserts are ``INSERT ... ON CONFLICT (key) DO UPDATE SET ...`` with ``excluded.``; never
  ``INSERT OR REPLACE``, never ``rowid``;
* timestamps are integer milliseconds UTC (``BIGINT``), percentages ``DOUBLE PRECISION``;
* statements are written with ``?`` placeholders and pass through :meth:`FleetStore.q`, the one
  place a PostgreSQL driver swaps them for ``%s``;
* anything two servers could decide twice (an autopilot step, a halt, a hold) is a conditional
  ``UPDATE``/``INSERT`` whose row count says who won, never a read followed by a write.

Every change of intent (pins, assignments, holds, retries, rollouts) bumps ``meta.generation`` in
the same transaction; servers poll that one value and reload their :class:`FleetView` when it moves.

The schema is versioned (``meta.schema_version``): a new store is created at :data:`SCHEMA_VERSION`
with :data:`SCHEMA`; an older one is refused with :class:`SchemaError` until ``acrelease fleet
migrate`` applies the steps of :data:`MIGRATIONS` in one transaction, never silently.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from acrelease.errors import FleetError
from acrelease.fleet.model import (
    DeviceRow,
    Event,
    FleetView,
    Observation,
    Rollout,
    RolloutState,
    build_view,
    now_ms,
)

SCHEMA_VERSION = 2
STORE_DIR = ".acrelease"
STORE_NAME = "fleet.sqlite3"
KEEP_EVENTS = 100
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_CHUNK = 500  # parameters per IN (...) list: below SQLite's and PostgreSQL's limits

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key VARCHAR(64) PRIMARY KEY, value BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS devices (mac VARCHAR(17) PRIMARY KEY, project TEXT NOT NULL, target TEXT NOT NULL,"
    " channel TEXT NOT NULL, version TEXT, sketch_md5 VARCHAR(32), chip_size BIGINT, free_space BIGINT,"
    " sdk_version TEXT, address TEXT, first_seen BIGINT NOT NULL, last_seen BIGINT NOT NULL,"
    " checks BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS devices_target ON devices (project, target)",
    "CREATE TABLE IF NOT EXISTS events (mac VARCHAR(17) NOT NULL, at BIGINT NOT NULL, seq INTEGER NOT NULL,"
    " event VARCHAR(16) NOT NULL, version TEXT, detail TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS events_mac ON events (mac, at)",
    "CREATE TABLE IF NOT EXISTS sends (mac VARCHAR(17) NOT NULL, project TEXT NOT NULL, target TEXT NOT NULL,"
    " version TEXT NOT NULL, sent BIGINT NOT NULL, counted BIGINT NOT NULL, first_sent BIGINT NOT NULL,"
    " last_sent BIGINT NOT NULL, PRIMARY KEY (mac, project, target, version))",
    "CREATE INDEX IF NOT EXISTS sends_release ON sends (project, target, version)",
    # A hold is armed (active 0) once a device was sent a release --loop-limit times: from then on
    # the release is not offered to it while it runs an older one; it becomes active (1, the
    # device is "held") when the device checks again still running the older release, and is
    # removed when the device reports the release after all.
    "CREATE TABLE IF NOT EXISTS holds (mac VARCHAR(17) NOT NULL, project TEXT NOT NULL, target TEXT NOT NULL,"
    " version TEXT NOT NULL, at BIGINT NOT NULL, active INTEGER NOT NULL,"
    " PRIMARY KEY (mac, project, target, version))",
    "CREATE TABLE IF NOT EXISTS pins (mac VARCHAR(17) PRIMARY KEY, project TEXT NOT NULL, target TEXT NOT NULL,"
    " version TEXT NOT NULL, at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS assignments (mac VARCHAR(17) PRIMARY KEY, channel TEXT NOT NULL,"
    " at BIGINT NOT NULL)",
    # Devices per reported version, once an hour (the dashboard's chart); '' for no version.
    "CREATE TABLE IF NOT EXISTS version_history (hour BIGINT NOT NULL, project TEXT NOT NULL, target TEXT NOT NULL,"
    " version TEXT NOT NULL, devices BIGINT NOT NULL, PRIMARY KEY (hour, project, target, version))",
    "CREATE TABLE IF NOT EXISTS rollouts (project TEXT NOT NULL, target TEXT NOT NULL, version TEXT NOT NULL,"
    " percent DOUBLE PRECISION NOT NULL, state VARCHAR(16) NOT NULL, stages TEXT NOT NULL,"
    " advance_at DOUBLE PRECISION NOT NULL, min_updated INTEGER NOT NULL, max_failures INTEGER NOT NULL,"
    " held_base INTEGER NOT NULL, stage_started BIGINT NOT NULL, created BIGINT NOT NULL,"
    " updated BIGINT NOT NULL, PRIMARY KEY (project, target, version))",
)

TABLES = ("meta", "devices", "events", "sends", "holds", "pins", "assignments", "version_history", "rollouts")
"""Every table, in the order ``acrelease fleet export`` writes them."""

MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 1 -> 2: the dashboard's hourly version counts.
    2: (next(s for s in SCHEMA if "version_history" in s),),
}
"""The statements that take a store from schema ``N - 1`` to ``N``, keyed by ``N``."""


class SchemaError(FleetError):
    """The store was written by an older acrelease: ``acrelease fleet migrate`` upgrades it."""


_DEVICE_COLUMNS = ("mac, project, target, channel, version, sketch_md5, chip_size, free_space, sdk_version, "
                   "address, first_seen, last_seen, checks")
_NEWER = "CASE WHEN excluded.last_seen >= devices.last_seen THEN excluded.{0} ELSE devices.{0} END"
UPSERT_DEVICE = (
    f"INSERT INTO devices ({_DEVICE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (mac) DO UPDATE SET "
    # Across workers the newest observation wins: a batch written late adds its checks but
    # never overwrites what a newer one said.
    + ", ".join(f"{c} = {_NEWER.format(c)}" for c in ("project", "target", "channel", "version", "sketch_md5",
                                                        "chip_size", "free_space", "sdk_version", "address"))
    + ", first_seen = CASE WHEN excluded.first_seen < devices.first_seen THEN excluded.first_seen"
      " ELSE devices.first_seen END"
    + ", last_seen = CASE WHEN excluded.last_seen > devices.last_seen THEN excluded.last_seen"
      " ELSE devices.last_seen END"
    + ", checks = devices.checks + excluded.checks"
)
UPSERT_SEND = (
    "INSERT INTO sends (mac, project, target, version, sent, counted, first_sent, last_sent) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (mac, project, target, version) DO UPDATE SET "
    "sent = sends.sent + excluded.sent, counted = sends.counted + excluded.counted, "
    "first_sent = CASE WHEN excluded.first_sent < sends.first_sent THEN excluded.first_sent ELSE sends.first_sent END,"
    " last_sent = CASE WHEN excluded.last_sent > sends.last_sent THEN excluded.last_sent ELSE sends.last_sent END"
)
# Column types of the rows record() writes in bulk (a driver may send them as one array per column).
_DEVICE_TYPES = ("varchar", "text", "text", "text", "text", "varchar", "bigint", "bigint", "text", "text", "bigint",
                 "bigint", "bigint")
_EVENT_TYPES = ("varchar", "bigint", "integer", "varchar", "text", "text")
_SEND_TYPES = ("varchar", "text", "text", "text", "bigint", "bigint", "bigint", "bigint")
_ROLLOUT_COLUMNS = ("project, target, version, percent, state, stages, advance_at, min_updated, max_failures, "
                    "held_base, stage_started, created, updated")


def default_path(catalog: Path) -> Path:
    """``<catalog>/.acrelease/fleet.sqlite3``: never listed or served (the server serves only what
    the index names, docs/architecture.md)."""
    return catalog / STORE_DIR / STORE_NAME


class FleetStore(abc.ABC):
    """The fleet store over one DB-API connection. Subclasses provide the connection, the
    transaction start and the errors their driver raises. Not thread-safe: one per thread."""

    placeholder = "?"
    where: str = "fleet store"
    spec: str = ""
    """How ``--fleet`` names this store in advice (a path, or a URL with its password masked)."""
    advice = "check that the file is writable, not corrupt, and the disk not full"
    tables_sql: str
    """Lists the store's tables (one column: the name)."""

    def __init__(self, connection: Any, errors: tuple[type[BaseException], ...]) -> None:
        self.connection = connection
        self.errors = errors

    # -- plumbing -----------------------------------------------------------------------------

    def q(self, sql: str) -> str:
        """The statement in the driver's placeholder style (the one place it is decided)."""
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    @abc.abstractmethod
    def begin_write(self) -> None:
        """Start a transaction that will write (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: ``BEGIN``)."""

    def allow_long_statements(self) -> None:  # noqa: B027 - a store without statement timeouts keeps this
        """Lift the per-statement time limit for this connection (export and import of a whole store)."""

    def check(self) -> None:  # noqa: B027 - a store with nothing to check keeps this
        """Raise :class:`FleetError` when the store can no longer be written (deleted, read-only)."""

    def path_ok(self) -> bool:
        """False when the store this connection writes to is no longer the one its name points to."""
        return True

    def close(self) -> None:
        with contextlib.suppress(*self.errors):
            self.connection.close()

    @contextlib.contextmanager
    def guard(self, doing: str) -> Iterator[None]:
        """Driver errors become one-line :class:`FleetError`s naming the store."""
        try:
            yield
        except FleetError:
            raise
        except self.errors as exc:
            raise FleetError(f"{self.where}: cannot {doing} ({self.clean(_one_line(exc))}); {self.advice}") from None

    def clean(self, text: str) -> str:
        """A driver's message as it may be shown or logged (PostgreSQL: without the password)."""
        return text

    def tables(self, cursor: Any = None) -> set[str]:
        """The names of the tables the store has (an empty store: none); in ``cursor``'s
        transaction when given."""
        if cursor is None:
            return {str(name) for (name,) in self._rows(self.tables_sql)}
        cursor.execute(self.tables_sql)
        return {str(name) for (name,) in cursor.fetchall()}

    def lock_schema(self, cursor: Any) -> None:  # noqa: B027 - SQLite's BEGIN IMMEDIATE already excludes
        """Serialise schema changes between processes that open the store at once (in the transaction)."""

    @contextlib.contextmanager
    def transaction(self, doing: str, *, bump: bool = False) -> Iterator[Any]:
        """One short write transaction; ``bump`` moves the intent generation in it."""
        with self.guard(doing):
            cursor = self.connection.cursor()
            self.begin_write()
            try:
                yield cursor
                if bump:
                    cursor.execute(self.q("UPDATE meta SET value = value + 1 WHERE key = 'generation'"))
                self.connection.commit()
            except BaseException:
                with contextlib.suppress(*self.errors):
                    self.connection.rollback()
                raise

    def write_rows(self, cursor: Any, sql: str, rows: Sequence[Sequence[Any]], types: Sequence[str],
                   key: int = 0) -> None:
        """Run ``sql`` (an ``INSERT ... VALUES (?, ...)``, maybe an upsert on the first ``key``
        columns) for every row of ``rows``, whose columns have the SQL ``types``."""
        cursor.executemany(self.q(sql), rows)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self.connection.cursor()
        try:
            cursor.execute(self.q(sql), tuple(params))
            rows: list[tuple[Any, ...]] = cursor.fetchall()
        except BaseException:
            # PostgreSQL refuses every later statement of a transaction in which one failed (a
            # statement timeout, say) until it is rolled back: end it here, or the store is stuck.
            with contextlib.suppress(*self.errors):
                self.connection.rollback()
            raise
        self.connection.commit()  # end the read transaction: never hold a snapshot between calls
        return rows

    def create_schema(self, *, migrating: bool = False) -> None:
        """Create the tables of a new store at :data:`SCHEMA_VERSION`; leave an existing store's
        tables alone (an older schema is refused by :meth:`check_schema`, not patched here)."""
        with self.guard("read its tables"):
            empty = "meta" not in self.tables()
        if empty:
            with self.transaction("create its tables") as cursor:
                self.lock_schema(cursor)
                for statement in SCHEMA:
                    cursor.execute(self.q(statement))
                for key, value in (("schema_version", SCHEMA_VERSION), ("generation", 0)):
                    cursor.execute(self.q("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) "
                                          "DO NOTHING"), (key, value))
        self.check_schema(migrating=migrating)

    def schema_version(self) -> int | None:
        """The store's schema version; None for a store without tables (nothing written yet)."""
        with self.guard("read its schema version"):
            if "meta" not in self.tables():
                return None
            found = self._rows("SELECT value FROM meta WHERE key = 'schema_version'")
        if not found:
            raise FleetError(f"{self.where}: not a fleet store (no schema version in its meta table); "
                             "name the right store with --fleet")
        return int(found[0][0])

    def check_schema(self, *, migrating: bool = False) -> None:
        """Refuse a store this acrelease cannot use as it is; ``migrating`` accepts an older one."""
        found = self.schema_version()
        if found is None:
            raise FleetError(f"{self.where}: the fleet store has no tables; `acrelease serve` creates them")
        if found > SCHEMA_VERSION:
            raise FleetError(f"{self.where}: schema version {found} is newer than this acrelease understands "
                             f"({SCHEMA_VERSION}); upgrade acrelease")
        if found < SCHEMA_VERSION and not migrating:
            raise SchemaError(f"fleet store at {self.where} has schema {found}, this acrelease needs "
                              f"{SCHEMA_VERSION}: run `acrelease fleet migrate --fleet {self.spec or self.where}`")

    def migrate(self) -> tuple[int, int]:
        """Apply every step from the store's schema to :data:`SCHEMA_VERSION` in one transaction;
        returns (from, to). Two migrations at once: the second finds nothing left to do."""
        with self.transaction("migrate its schema") as cursor:
            self.lock_schema(cursor)
            if "meta" not in self.tables(cursor):
                raise FleetError(f"{self.where}: no fleet store here to migrate (no tables); `acrelease serve` "
                                 "creates a new one at the current schema")
            cursor.execute(self.q("SELECT value FROM meta WHERE key = 'schema_version'"))
            row = cursor.fetchone()
            found = int(row[0]) if row else 0
            if found > SCHEMA_VERSION:
                raise FleetError(f"{self.where}: schema version {found} is newer than this acrelease understands "
                                 f"({SCHEMA_VERSION}); upgrade acrelease")
            for step in range(found + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS.get(step, ()):
                    cursor.execute(self.q(statement))
            cursor.execute(self.q("UPDATE meta SET value = ? WHERE key = 'schema_version'"), (SCHEMA_VERSION,))
        return found, SCHEMA_VERSION

    # -- observations (servers) -----------------------------------------------------------------

    def touch_rows(self, cursor: Any, touches: Sequence[tuple[int, int, int, str]]) -> int:
        """Move the last sighting and add the checks of devices written before, in MAC order
        (``touches`` as :meth:`record` takes them); returns how many found their device."""
        cursor.executemany(self.q("UPDATE devices SET last_seen = CASE WHEN ? > last_seen THEN ? ELSE last_seen END, "
                                  "checks = checks + ? WHERE mac = ?"), touches)
        return max(int(cursor.rowcount), 0)

    def record(self, batch: Sequence[Observation], loop_limit: int = 3,
               touches: Sequence[tuple[int, int, int, str]] = ()) -> tuple[int, int]:
        """Write one batch of coalesced observations in one transaction: devices (newest wins),
        first sightings and newly reported versions as events, events, whole images sent; then
        arm a hold for each (device, release) sent ``loop_limit`` times.

        ``touches`` are (last seen, last seen, checks, mac) of devices whose facts this writer
        wrote before and that told nothing new: only their last sighting and count move (a
        narrower write, and no lookup). Returns (holds armed, touches that found their device)."""
        if not batch and not touches:
            return 0, 0
        # Rows in MAC order: two hosts writing overlapping batches lock them in the same order, so
        # PostgreSQL never has to abort one of them as a deadlock.
        batch = sorted(batch, key=lambda o: o.mac)
        touches = sorted(touches, key=lambda t: t[3])
        armed = touched = 0
        with self.transaction("record observations") as cursor:
            if touches:
                touched = self.touch_rows(cursor, touches)
            known: dict[str, tuple[str | None, int]] = {}
            macs = [o.mac for o in batch]
            for start in range(0, len(macs), _CHUNK):
                part = macs[start:start + _CHUNK]
                cursor.execute(self.q(f"SELECT mac, version, last_seen FROM devices WHERE mac IN "
                                      f"({', '.join('?' * len(part))})"), part)
                for mac, version, last_seen in cursor.fetchall():
                    known[mac] = (version, int(last_seen))
            devices, events, sends = [], [], []
            for o in batch:
                devices.append((o.mac, o.project, o.target, o.channel, o.version, o.sketch_md5, o.chip_size,
                                o.free_space, o.sdk_version, o.address, o.first_at, o.last_at, o.checks))
                extra: list[Event] = []
                previous = known.get(o.mac)
                if previous is None:
                    extra.append(Event(o.first_at, "seen", o.version, f"{o.project}/{o.target}"))
                elif (o.version is not None and o.version != previous[0] and o.last_at >= previous[1]
                      and not any(e.event == "reported" and e.version == o.version for e in o.events)):
                    extra.append(Event(o.last_at, "reported", o.version, f"was {previous[0] or 'unknown'}"))
                for seq, event in enumerate((*extra, *o.events)):
                    events.append((o.mac, event.at, seq, event.event, event.version, event.detail[:200]))
                for version, count, first, last in o.sent:
                    sends.append((o.mac, o.project, o.target, version, count, count, first, last))
            if devices:
                self.write_rows(cursor, UPSERT_DEVICE, devices, _DEVICE_TYPES, key=1)
            if events:
                self.write_rows(cursor, "INSERT INTO events (mac, at, seq, event, version, detail) "
                                "VALUES (?, ?, ?, ?, ?, ?)", events, _EVENT_TYPES)
            if sends:
                self.write_rows(cursor, UPSERT_SEND, sends, _SEND_TYPES, key=4)
                senders = sorted({row[0] for row in sends})
                now = now_ms()
                for start in range(0, len(senders), _CHUNK):
                    part = senders[start:start + _CHUNK]
                    cursor.execute(self.q(
                        "INSERT INTO holds (mac, project, target, version, at, active) SELECT s.mac, s.project, "
                        f"s.target, s.version, ?, 0 FROM sends s WHERE s.mac IN ({', '.join('?' * len(part))}) "
                        "AND s.counted >= ? ON CONFLICT (mac, project, target, version) DO NOTHING"),
                        [now, *part, loop_limit])
                    armed += max(cursor.rowcount, 0)
                if armed:
                    cursor.execute(self.q("UPDATE meta SET value = value + 1 WHERE key = 'generation'"))
        return armed, touched

    def prune(self, keep: int = KEEP_EVENTS) -> int:
        """Keep the newest ``keep`` events of every device; returns how many were deleted."""
        with self.guard("prune events"):
            crowded = [m for (m,) in self._rows("SELECT mac FROM events GROUP BY mac HAVING COUNT(*) > ?", (keep,))]
        deleted = 0
        for mac in crowded:
            with self.transaction("prune events") as cursor:
                cursor.execute(self.q("SELECT at FROM events WHERE mac = ? ORDER BY at DESC, seq DESC "
                                      "LIMIT 1 OFFSET ?"), (mac, keep - 1))
                row = cursor.fetchone()
                if row is not None:
                    cursor.execute(self.q("DELETE FROM events WHERE mac = ? AND at < ?"), (mac, row[0]))
                    deleted += max(cursor.rowcount, 0)
        return deleted

    # -- history (the dashboard's chart) ---------------------------------------------------------

    def snapshot_versions(self, hour: int) -> bool:
        """Record how many devices report each version now, as the figure of the hour starting at
        ``hour`` (epoch ms). Servers refresh the current hour now and then; every server counts the
        same table, so whichever writes last, the figure is the same."""
        with self.transaction("record the hourly version counts") as cursor:
            # SQLite needs a WHERE before ON CONFLICT in INSERT ... SELECT (its upsert docs).
            cursor.execute(self.q(
                "INSERT INTO version_history (hour, project, target, version, devices) "
                "SELECT ?, project, target, COALESCE(version, ''), COUNT(*) FROM devices WHERE 1 = 1 "
                "GROUP BY project, target, COALESCE(version, '') "
                "ON CONFLICT (hour, project, target, version) DO UPDATE SET devices = excluded.devices"), (hour,))
            return bool(cursor.rowcount and cursor.rowcount > 0)

    def version_history(self, since: int) -> list[tuple[int, str, str, str, int]]:
        """(hour, project, target, version or '', devices) from ``since`` (epoch ms) on, oldest first."""
        with self.guard("read the version history"):
            rows = self._rows("SELECT hour, project, target, version, devices FROM version_history "
                              "WHERE hour >= ? ORDER BY hour", (since,))
        return [(int(h), p, t, v, int(d)) for h, p, t, v, d in rows]

    def prune_history(self, before: int) -> None:
        with self.transaction("prune the version history") as cursor:
            cursor.execute(self.q("DELETE FROM version_history WHERE hour < ?"), (before,))

    # -- intent (read by servers) ---------------------------------------------------------------

    def generation(self) -> int:
        with self.guard("read its generation"):
            rows = self._rows("SELECT value FROM meta WHERE key = 'generation'")
        return int(rows[0][0]) if rows else 0

    def load_view(self) -> FleetView:
        with self.guard("read pins, assignments, holds and rollouts"):
            # Generation first: a change made while we read is seen again on the next poll.
            generation = self.generation()
            pins = {m: (p, t, v) for m, p, t, v in self._rows("SELECT mac, project, target, version FROM pins")}
            assignments = {m: c for m, c in self._rows("SELECT mac, channel FROM assignments")}
            holds: dict[str, list[tuple[str, str, str]]] = {}
            for mac, project, target, version in self._rows("SELECT mac, project, target, version FROM holds"):
                holds.setdefault(mac, []).append((project, target, version))
            rollouts = tuple(self.rollouts())
        return build_view(generation, pins, assignments, holds, rollouts)

    # -- devices (CLI, dashboards) --------------------------------------------------------------

    def devices(self, project: str | None = None, target: str | None = None,
                macs: Sequence[str] | None = None) -> list[DeviceRow]:
        """Devices with their pin, assignment, holds and last release sent, ordered by MAC."""
        where, params = "", []
        if project is not None and target is not None:
            where, params = " WHERE d.project = ? AND d.target = ?", [project, target]
        if macs is not None:
            where = (where + " AND" if where else " WHERE") + f" d.mac IN ({', '.join('?' * len(macs))})"
            params += list(macs)
        with self.guard("list devices"):
            rows = self._rows(f"SELECT {', '.join('d.' + c.strip() for c in _DEVICE_COLUMNS.split(','))}, "
                              "p.version, a.channel FROM devices d LEFT JOIN pins p ON p.mac = d.mac "
                              f"LEFT JOIN assignments a ON a.mac = d.mac{where} ORDER BY d.mac", params)
            # Holds and the last release sent, of each device's own target, joined in SQL; sends come
            # oldest first so that the newest one per device is the one left in the dict.
            same = "JOIN devices d ON d.mac = x.mac AND d.project = x.project AND d.target = x.target"
            clause, extra = "", []
            if macs is not None and len(macs) <= _CHUNK:
                clause, extra = f" AND x.mac IN ({', '.join('?' * len(macs))})", list(macs)
            held: dict[str, list[str]] = {}
            for mac, version in self._rows(f"SELECT x.mac, x.version FROM holds x {same} WHERE x.active = 1{clause}",
                                           extra):
                held.setdefault(mac, []).append(version)
            last = dict(self._rows(f"SELECT x.mac, x.version FROM sends x {same} WHERE 1 = 1{clause} "
                                   "ORDER BY x.last_sent", extra))
        # Columns come back as the schema types them (BIGINT -> int): no conversion per field, this
        # runs 100,000 times for `acrelease devices`.
        empty: tuple[str, ...] = ()
        return [DeviceRow(*r, tuple(sorted(held[r[0]])) if r[0] in held else empty,  # type: ignore[call-arg]
                          last.get(r[0])) for r in rows]

    def device(self, mac: str) -> DeviceRow | None:
        found = self.devices(macs=[mac])
        return found[0] if found else None

    def events(self, mac: str, limit: int = KEEP_EVENTS) -> list[Event]:
        """Newest first."""
        with self.guard("read events"):
            rows = self._rows("SELECT at, event, version, detail FROM events WHERE mac = ? "
                              "ORDER BY at DESC, seq DESC LIMIT ?", (mac, limit))
        return [Event(int(at), event, version, detail) for at, event, version, detail in rows]

    def pin_of(self, mac: str) -> tuple[str, str, str] | None:
        with self.guard("read pins"):
            rows = self._rows("SELECT project, target, version FROM pins WHERE mac = ?", (mac,))
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    # -- intent (CLI) ---------------------------------------------------------------------------

    def _event(self, cursor: Any, mac: str, event: str, version: str | None, detail: str) -> None:
        cursor.execute(self.q("INSERT INTO events (mac, at, seq, event, version, detail) VALUES (?, ?, 0, ?, ?, ?)"),
                       (mac, now_ms(), event, version, detail))

    def set_pin(self, mac: str, project: str, target: str, version: str) -> None:
        with self.transaction("pin the device", bump=True) as cursor:
            cursor.execute(self.q("INSERT INTO pins (mac, project, target, version, at) VALUES (?, ?, ?, ?, ?) "
                                  "ON CONFLICT (mac) DO UPDATE SET project = excluded.project, "
                                  "target = excluded.target, version = excluded.version, at = excluded.at"),
                           (mac, project, target, version, now_ms()))
            self._event(cursor, mac, "pinned", version, f"{project}/{target}")

    def clear_pin(self, mac: str) -> bool:
        with self.transaction("unpin the device", bump=True) as cursor:
            cursor.execute(self.q("DELETE FROM pins WHERE mac = ?"), (mac,))
            removed: bool = cursor.rowcount > 0
            if removed:
                self._event(cursor, mac, "unpinned", None, "")
        return removed

    def assign(self, mac: str, channel: str | None) -> None:
        """Put the device on ``channel``; ``None`` removes the assignment (its URL decides again)."""
        with self.transaction("assign the device", bump=True) as cursor:
            if channel is None:
                cursor.execute(self.q("DELETE FROM assignments WHERE mac = ?"), (mac,))
            else:
                cursor.execute(self.q("INSERT INTO assignments (mac, channel, at) VALUES (?, ?, ?) ON CONFLICT "
                                      "(mac) DO UPDATE SET channel = excluded.channel, at = excluded.at"),
                               (mac, channel, now_ms()))
            self._event(cursor, mac, "assigned", None, channel or "stable")

    def retry(self, mac: str) -> list[str]:
        """Clear the device's holds and restart its loop counts; returns the releases it was held on."""
        with self.transaction("clear the hold", bump=True) as cursor:
            cursor.execute(self.q("SELECT version FROM holds WHERE mac = ? AND active = 1"), (mac,))
            released = sorted(v for (v,) in cursor.fetchall())
            cursor.execute(self.q("DELETE FROM holds WHERE mac = ?"), (mac,))
            cursor.execute(self.q("UPDATE sends SET counted = 0 WHERE mac = ?"), (mac,))
            self._event(cursor, mac, "retried", released[0] if len(released) == 1 else None,
                        ", ".join(released) or "no hold")
        return released

    # -- loop breaker (servers) -----------------------------------------------------------------

    def armed(self, macs: Sequence[str]) -> list[tuple[Any, ...]]:
        """Armed holds of ``macs`` with what the device reports now: (mac, project, target, release,
        last time it was sent the release, reported version, sketch md5, last seen)."""
        found: list[tuple[Any, ...]] = []
        with self.guard("look for update loops"):
            for start in range(0, len(macs), _CHUNK):
                part = list(macs[start:start + _CHUNK])
                found += self._rows(
                    "SELECT h.mac, h.project, h.target, h.version, s.last_sent, d.version, d.sketch_md5, d.last_seen"
                    " FROM holds h JOIN devices d ON d.mac = h.mac JOIN sends s ON s.mac = h.mac"
                    " AND s.project = h.project AND s.target = h.target AND s.version = h.version"
                    f" WHERE h.mac IN ({', '.join('?' * len(part))}) AND h.active = 0", part)
        return found

    def activate_hold(self, mac: str, project: str, target: str, version: str, detail: str) -> bool:
        """Armed -> held; True only for the one caller whose update took (it logs the hold)."""
        with self.transaction("hold a device", bump=True) as cursor:
            cursor.execute(self.q("UPDATE holds SET active = 1, at = ? WHERE mac = ? AND project = ? AND "
                                  "target = ? AND version = ? AND active = 0"),
                           (now_ms(), mac, project, target, version))
            held: bool = cursor.rowcount > 0
            if held:
                self._event(cursor, mac, "held", version, detail)
        return held

    def disarm(self, mac: str, project: str, target: str, version: str) -> None:
        """The device reports the release after all: its armed hold goes."""
        with self.transaction("clear an armed hold", bump=True) as cursor:
            cursor.execute(self.q("DELETE FROM holds WHERE mac = ? AND project = ? AND target = ? AND version = ? "
                                  "AND active = 0"), (mac, project, target, version))

    def held_on(self, project: str, target: str, version: str) -> list[str]:
        with self.guard("read holds"):
            rows = self._rows("SELECT mac FROM holds WHERE project = ? AND target = ? AND version = ? AND active = 1 "
                              "ORDER BY mac",
                              (project, target, version))
        return [m for (m,) in rows]

    # -- rollouts -------------------------------------------------------------------------------

    def rollouts(self) -> list[Rollout]:
        with self.guard("read rollouts"):
            rows = self._rows(f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts ORDER BY project, target, version")
        return [_rollout(r) for r in rows]

    def rollout(self, project: str, target: str, version: str) -> Rollout | None:
        with self.guard("read rollouts"):
            rows = self._rows(f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts WHERE project = ? AND target = ? AND "
                              "version = ?", (project, target, version))
        return _rollout(rows[0]) if rows else None

    def put_rollout(self, rollout: Rollout) -> None:
        """Create or replace the rollout of (project, target, version)."""
        r = rollout
        with self.transaction("write the rollout", bump=True) as cursor:
            cursor.execute(self.q(f"INSERT INTO rollouts ({_ROLLOUT_COLUMNS}) VALUES "
                                  "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (project, target, version) "
                                  "DO UPDATE SET percent = excluded.percent, state = excluded.state, "
                                  "stages = excluded.stages, advance_at = excluded.advance_at, "
                                  "min_updated = excluded.min_updated, max_failures = excluded.max_failures, "
                                  "held_base = excluded.held_base, stage_started = excluded.stage_started, "
                                  "updated = excluded.updated"),
                           (r.project, r.target, r.version, r.percent, r.state, _stages(r.stages), r.advance_at,
                            r.min_updated, r.max_failures, r.held_base, r.stage_started, r.created, now_ms()))

    def remove_rollout(self, project: str, target: str, version: str) -> None:
        with self.transaction("remove the rollout", bump=True) as cursor:
            cursor.execute(self.q("DELETE FROM rollouts WHERE project = ? AND target = ? AND version = ?"),
                           (project, target, version))

    def move_rollout(self, rollout: Rollout, *, from_states: Sequence[RolloutState], state: RolloutState,
                     percent: float | None = None, held_base: int | None = None) -> bool:
        """Compare-and-set: change the rollout only if it is still in one of ``from_states`` at its
        current percent. Returns True for the one caller whose update took (a halt or an autopilot
        step decided by two workers at once happens once)."""
        now = now_ms()
        sets: list[str] = ["state = ?", "updated = ?"]
        params: list[Any] = [state, now]
        if percent is not None and percent != rollout.percent:
            sets += ["percent = ?", "stage_started = ?"]
            params += [percent, now]
        if held_base is not None:
            sets.append("held_base = ?")
            params.append(held_base)
        marks = ", ".join("?" * len(from_states))
        with self.transaction("change the rollout", bump=True) as cursor:
            cursor.execute(self.q(f"UPDATE rollouts SET {', '.join(sets)} WHERE project = ? AND target = ? AND "
                                  f"version = ? AND percent = ? AND state IN ({marks})"),
                           [*params, rollout.project, rollout.target, rollout.version, rollout.percent,
                            *from_states])
            moved: bool = cursor.rowcount > 0
        return moved

    def release_counts(self, project: str, target: str, version: str, md5: str | None,
                       since: int = 0) -> tuple[int, int, int]:
        """(devices sent the release, of those how many report it now, devices held on it);
        ``since`` counts only devices first sent it at or after that time."""
        key = (project, target, version)
        with self.guard("count a rollout's devices"):
            sent = self._rows("SELECT COUNT(*) FROM sends WHERE project = ? AND target = ? AND version = ? "
                              "AND first_sent >= ?", (*key, since))[0][0]
            updated = self._rows("SELECT COUNT(*) FROM sends s JOIN devices d ON d.mac = s.mac WHERE s.project = ? "
                                 "AND s.target = ? AND s.version = ? AND s.first_sent >= ? AND (d.version = ? OR "
                                 "(d.version IS NULL AND d.sketch_md5 = ?))", (*key, since, version, md5 or ""))[0][0]
            held = self._rows("SELECT COUNT(*) FROM holds WHERE project = ? AND target = ? AND version = ? "
                              "AND active = 1", key)[0][0]
        return int(sent), int(updated), int(held)


def _rollout(row: Sequence[Any]) -> Rollout:
    stages = tuple(float(s) for s in str(row[5]).split(",") if s)
    return Rollout(row[0], row[1], row[2], float(row[3]), row[4], stages, float(row[6]), int(row[7]), int(row[8]),
                   int(row[9]), int(row[10]), int(row[11]))


def _stages(stages: Sequence[float]) -> str:
    return ",".join(f"{s:g}" for s in stages)


def _int(value: Any) -> int | None:
    return int(value) if value is not None else None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_postgres(spec: str | None) -> bool:
    return bool(spec) and str(spec).startswith(POSTGRES_SCHEMES)


def open_store(spec: str | None, catalog: Path | None, *, create: bool = True,
               migrating: bool = False) -> FleetStore:
    """The store ``spec`` names (a path, a ``sqlite:`` URL or a ``postgresql://`` URL), else
    ``<catalog>/.acrelease/fleet.sqlite3``.

    ``create=False`` (read commands) refuses a store that does not exist yet rather than creating
    one, so that a command that only reads never leaves a file (or tables) behind. ``migrating``
    (``acrelease fleet migrate``) opens a store of an older schema instead of refusing it.
    """
    if spec is not None and is_postgres(spec):
        from acrelease.fleet.postgres import PostgresStore

        return PostgresStore.open(spec, create=create, migrating=migrating)
    from acrelease.fleet.sqlite import SQLiteStore

    path = store_path(spec, catalog)
    if not create and not path.exists():
        raise FleetError(f"{path}: no fleet store yet; devices appear once `acrelease serve` has answered "
                         "their checks (or pass --fleet PATH)")
    return SQLiteStore.open(path, create=create, migrating=migrating)


def store_path(spec: str | None, catalog: Path | None) -> Path:
    if spec:
        if spec.startswith(POSTGRES_SCHEMES):
            raise FleetError(f"--fleet {spec.split('@')[-1]}: a PostgreSQL URL, not a file path")
        if spec.startswith("sqlite:"):
            spec = spec[len("sqlite:"):]
            if spec.startswith("//"):  # sqlite:///abs/path and sqlite://rel/path, as SQLAlchemy writes them
                spec = spec[2:]
        if not spec:
            raise FleetError("--fleet: empty path; name a file such as /var/lib/acrelease/fleet.sqlite3")
        return Path(spec)
    if catalog is None:
        raise FleetError("no fleet store: name the catalog with --catalog DIR (or set ACRELEASE_CATALOG), "
                         "or the store with --fleet PATH (or ACRELEASE_FLEET)")
    return default_path(catalog)
