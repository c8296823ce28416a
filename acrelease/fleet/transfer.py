"""``acrelease fleet export`` / ``import``: a whole fleet store as JSON lines, to move it between
SQLite and PostgreSQL (README, "Running on several hosts").

The first line says what the file is and the schema it was written at (the one row of ``meta``
that matters outside its store: the intent generation is a per-store counter and is not carried);
every other line is one row: ``{"table": NAME, "row": {COLUMN: VALUE, ...}}``. Rows are written table by table in
:data:`~acrelease.fleet.store.TABLES` order and sorted within a table by their JSON text, so the
same fleet exports to the same bytes from either database. Import reads and checks the whole file
before it opens the store, and writes it in one transaction: a refused import changes nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from acrelease.errors import FleetError
from acrelease.fleet.store import SCHEMA, SCHEMA_VERSION, TABLES, FleetStore

FORMAT = "acrelease-fleet-export"
DATA_TABLES = tuple(t for t in TABLES if t != "meta")
_BATCH = 1000


def columns() -> dict[str, tuple[str, ...]]:
    """Each table's columns, as :data:`~acrelease.fleet.store.SCHEMA` creates them."""
    found: dict[str, tuple[str, ...]] = {}
    for statement in SCHEMA:
        match = re.match(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*)\)$", statement, re.DOTALL)
        if match is None:
            continue
        names = [part.split()[0] for part in re.split(r",\s*(?![^()]*\))", match.group(2))]
        found[match.group(1)] = tuple(n for n in names if n.upper() != "PRIMARY")
    return found


def export_lines(store: FleetStore) -> Iterator[str]:
    """The store as JSON lines (without newlines)."""
    known = columns()
    yield json.dumps({"format": FORMAT, "schema_version": store.schema_version(), "tables": list(DATA_TABLES)})
    for table in DATA_TABLES:
        names = known[table]
        with store.guard(f"read its {table}"):
            rows = store._rows(f"SELECT {', '.join(names)} FROM {table}")
        lines = [json.dumps({"table": table, "row": dict(zip(names, row, strict=True))}, ensure_ascii=False)
                 for row in rows]
        lines.sort()
        yield from lines


def read_lines(lines: Iterable[str], where: str) -> dict[str, list[tuple[Any, ...]]]:
    """Parse and check an export: rows per table (meta excepted: the importing store keeps its own),
    or :class:`FleetError` naming the first bad line."""
    known = columns()
    rows: dict[str, list[tuple[Any, ...]]] = {table: [] for table in DATA_TABLES}
    header_seen = False
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise FleetError(f"{where} line {number}: not JSON; pass a file written by `acrelease fleet export`") \
                from None
        if not header_seen:
            if not isinstance(item, dict) or item.get("format") != FORMAT:
                raise FleetError(f"{where}: not an export of a fleet store (its first line does not say "
                                 f"{FORMAT!r}); pass a file written by `acrelease fleet export`")
            if item.get("schema_version") != SCHEMA_VERSION:
                raise FleetError(f"{where}: exported at schema {item.get('schema_version')}, this acrelease "
                                 f"imports schema {SCHEMA_VERSION}; export it again with this acrelease after "
                                 "`acrelease fleet migrate`")
            header_seen = True
            continue
        table = item.get("table") if isinstance(item, dict) else None
        row = item.get("row") if isinstance(item, dict) else None
        if table not in DATA_TABLES or not isinstance(row, dict) or set(row) != set(known[str(table)]):
            raise FleetError(f"{where} line {number}: not a row of a fleet table; pass a file written by "
                             "`acrelease fleet export` (unchanged)")
        rows[str(table)].append(tuple(row[c] for c in known[str(table)]))
    if not header_seen:
        raise FleetError(f"{where}: empty; pass a file written by `acrelease fleet export`")
    return rows


def is_empty(store: FleetStore) -> bool:
    with store.guard("count its rows"):
        return all(not store._rows(f"SELECT 1 FROM {table} LIMIT 1") for table in DATA_TABLES)


def import_rows(store: FleetStore, rows: dict[str, list[tuple[Any, ...]]], *, replace: bool) -> int:
    """Write ``rows`` into ``store`` in one transaction (emptying it first when ``replace``); the
    intent generation moves, so running servers reload pins, holds and rollouts. Returns the rows written."""
    known = columns()
    if not replace and not is_empty(store):
        raise FleetError(f"{store.where}: the fleet store is not empty; import into a new store, or pass "
                         "--replace to discard what it holds")
    written = 0
    with store.transaction("import the export", bump=True) as cursor:
        for table in DATA_TABLES:
            if replace:
                cursor.execute(f"DELETE FROM {table}")
            names = known[table]
            sql = store.q(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})")
            batch = rows[table]
            for start in range(0, len(batch), _BATCH):
                cursor.executemany(sql, batch[start:start + _BATCH])
            written += len(batch)
    return written
