"""``publish`` and ``yank``: the catalog's write side."""

from __future__ import annotations

from pathlib import Path

import typer

from acrelease import manifest
from acrelease.catalog.store import publish as publish_releases
from acrelease.catalog.store import set_yanked
from acrelease.cli.common import CATALOG_HELP, JSON_OPTION, MANIFEST_OPTION, console, print_json, resolve_catalog
from acrelease.errors import UsageError
from acrelease.versioning import parse_release_version


def _catalog(flag: Path | None) -> Path:
    root = resolve_catalog(flag)
    if root is None:
        raise UsageError("name the catalog folder with --catalog DIR (or set ACRELEASE_CATALOG)")
    return root


def publish(
    version: str | None = typer.Argument(None, help="The release to publish (default: all not yet published)."),
    catalog: Path | None = typer.Option(None, "--catalog", "-d", help=CATALOG_HELP),
    manifest_path: Path = MANIFEST_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Copy released images into the catalog, atomically and immutably, and update its index."""
    root = _catalog(catalog)
    loaded = manifest.load(manifest_path)
    versions = [parse_release_version(version)] if version else None
    result = publish_releases(loaded, root, versions)
    if as_json:
        print_json({"catalog": str(result.catalog), "generation": result.generation,
                    "published": [{"target": t, "version": v} for t, v in result.published],
                    "unchanged": [{"target": t, "version": v} for t, v in result.unchanged]})
        return
    for target, ver in result.published:
        console.print(f"Published {loaded.project}/{target} {ver}")
    if not result.published:
        console.print(f"Nothing new to publish: {root} is up to date")
    else:
        console.print(f"Catalog {root} is at generation {result.generation}")


def yank(
    version: str = typer.Argument(..., help="The published release to roll back."),
    catalog: Path | None = typer.Option(None, "--catalog", "-d", help=CATALOG_HELP),
    undo: bool = typer.Option(False, "--undo", help="Offer the release again."),
    manifest_path: Path = MANIFEST_OPTION,
) -> None:
    """Roll a release back: stop offering it, and offer its devices the newest release before it."""
    root = _catalog(catalog)
    loaded = manifest.load(manifest_path, verify_files=False)
    ver = parse_release_version(version)
    targets = set_yanked(root, loaded.project, ver, not undo)
    state = "offered again" if undo else "yanked"
    console.print(f"{loaded.project} {ver} {state} for {', '.join(targets)}")


def register(app: typer.Typer) -> None:
    app.command()(publish)
    app.command()(yank)
