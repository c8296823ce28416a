"""``acrelease fleet migrate|export|import``: the fleet store itself, rather than its devices.

``migrate`` upgrades an older schema in place (one transaction); ``export`` writes the whole store
as JSON lines to stdout and ``import`` reads such a file into an empty store (``--replace``: any
store), so a fleet moves between SQLite and PostgreSQL (README, "Running on several hosts").
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from acrelease.cli.common import CATALOG_OPTION, FLEET_OPTION, resolve_catalog
from acrelease.errors import FleetError
from acrelease.fleet import transfer
from acrelease.fleet.store import open_store

group = typer.Typer(name="fleet", help="The fleet store itself: migrate its schema, export it, import an export.",
                    no_args_is_help=True)


@group.command()
def migrate(catalog: Path | None = CATALOG_OPTION, fleet: str | None = FLEET_OPTION) -> None:
    """Upgrade the fleet store to this acrelease's schema, in place and in one transaction."""
    store = open_store(fleet, resolve_catalog(catalog), create=False, migrating=True)
    try:
        before, after = store.migrate()
    finally:
        store.close()
    if before == after:
        print(f"{store.where}: already at schema {after}; nothing to do")
    else:
        print(f"{store.where}: schema {before} -> {after}")


@group.command("export")
def export(catalog: Path | None = CATALOG_OPTION, fleet: str | None = FLEET_OPTION) -> None:
    """Write the whole fleet store to stdout as JSON lines (schema version first)."""
    store = open_store(fleet, resolve_catalog(catalog), create=False)
    try:
        store.allow_long_statements()  # one SELECT per table, however large
        out = sys.stdout
        for line in transfer.export_lines(store):
            out.write(line)
            out.write("\n")
        out.flush()
    finally:
        store.close()


@group.command("import")
def import_(
    file: Path = typer.Argument(..., help="A file written by `acrelease fleet export` ('-': stdin)."),
    catalog: Path | None = CATALOG_OPTION,
    fleet: str | None = FLEET_OPTION,
    replace: bool = typer.Option(False, "--replace", help="Discard what the store holds first (else it must be "
                                                          "empty)."),
) -> None:
    """Read an export into the fleet store (created if need be), in one transaction."""
    where = "stdin" if str(file) == "-" else str(file)
    try:
        text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FleetError(f"{where}: cannot read the export ({getattr(exc, 'strerror', None) or exc}); pass a file "
                         "written by `acrelease fleet export`") from None
    rows = transfer.read_lines(text.splitlines(), where)  # a bad file is refused before the store is touched
    store = open_store(fleet, resolve_catalog(catalog), create=True)
    try:
        store.allow_long_statements()
        written = transfer.import_rows(store, rows, replace=replace)
    finally:
        store.close()
    print(f"{store.where}: imported {written} rows from {where}", file=sys.stderr)


def register(app: typer.Typer) -> None:
    app.add_typer(group)
