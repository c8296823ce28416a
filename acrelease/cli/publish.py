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

ROLLOUT = "Staged rollout (publish to a share of the fleet first)"


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
    percent: float | None = typer.Option(None, "--percent", rich_help_panel=ROLLOUT,
                                         help="Publish into a staged rollout: offer it to this share of devices."),
    stages: str | None = typer.Option(None, "--stages", rich_help_panel=ROLLOUT,
                                      help="Autopilot stages, e.g. 1,10,50,100 (see `acrelease rollout`)."),
    advance_at: float | None = typer.Option(None, "--advance-at", rich_help_panel=ROLLOUT,
                                            help="Autopilot: % that must report it before the next stage."),
    min_updated: int | None = typer.Option(None, "--min-updated", min=0, rich_help_panel=ROLLOUT,
                                           help="Autopilot: devices that must report it before the next stage."),
    max_failures: int | None = typer.Option(None, "--max-failures", min=1, rich_help_panel=ROLLOUT,
                                            help="Halt the rollout when this many devices are held on it."),
    fleet: str | None = typer.Option(None, "--fleet", envvar="ACRELEASE_FLEET", rich_help_panel=ROLLOUT,
                                     help="The fleet store (default <catalog>/.acrelease/fleet.sqlite3)."),
) -> None:
    """Copy released images into the catalog, atomically and immutably, and update its index."""
    root = _catalog(catalog)
    loaded = manifest.load(manifest_path)
    versions = [parse_release_version(version)] if version else None
    if percent is not None or stages:
        from acrelease.cli.fleet import staged_publish

        result = staged_publish(loaded, root, versions, fleet, percent=percent, stages=stages,
                                advance_at=advance_at, min_updated=min_updated, max_failures=max_failures)
    else:
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
