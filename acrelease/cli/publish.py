"""``publish``, ``yank`` and ``repair``: the catalog's write side."""

from __future__ import annotations

from pathlib import Path

import typer

from acrelease import manifest
from acrelease.catalog.repair import RepairReport
from acrelease.catalog.repair import repair as repair_catalog
from acrelease.catalog.store import publish as publish_releases
from acrelease.catalog.store import set_yanked
from acrelease.cli.common import (
    CATALOG_HELP,
    FLEET_OPTION,
    JSON_OPTION,
    MANIFEST_OPTION,
    console,
    print_json,
    resolve_catalog,
)
from acrelease.cli.progress import progress_bar
from acrelease.errors import CatalogError, UsageError
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
        with progress_bar(quiet=as_json) as bar:
            result = publish_releases(loaded, root, versions, progress=bar)
    if as_json:
        print_json({"catalog": str(result.catalog), "generation": result.generation,
                    "published": [{"target": t, "version": v} for t, v in result.published],
                    "unchanged": [{"target": t, "version": v} for t, v in result.unchanged],
                    "restored_files": list(result.restored)})
        return
    for file in result.restored:
        console.print(f"Put back {file} (it was missing or truncated in the catalog)")
    for target, ver in result.published:
        console.print(f"Published {loaded.project}/{target} {ver}")
    if not result.published:
        console.print(f"Nothing new to publish: {root} is up to date")
    else:
        console.print(f"Catalog {root} is at generation {result.generation}")


def yank(
    version: str = typer.Argument(..., help="The published release to roll back."),
    catalog: Path | None = typer.Option(None, "--catalog", "-d", help=CATALOG_HELP),
    target: list[str] = typer.Option([], "--target", "-t", help="Only this target (board); repeatable. "
                                     "Default: every target the release is published for."),
    undo: bool = typer.Option(False, "--undo", help="Offer the release again."),
    manifest_path: Path = MANIFEST_OPTION,
    fleet: str | None = FLEET_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Roll a release back: stop offering it, and offer its devices the newest release before it."""
    from acrelease.cli.fleet import pinned_to

    root = _catalog(catalog)
    loaded = manifest.load(manifest_path, verify_files=False)
    ver = parse_release_version(version)
    result = set_yanked(root, loaded.project, ver, not undo, targets=target or None)
    # A pin to a yanked release is not applied (docs/protocol.md H.1): say whom that moves.
    pinned = pinned_to(root, fleet, result.project, result.changed, ver) if result.changed else []
    if as_json:
        print_json({"catalog": str(root), "project": result.project, "version": result.version,
                    "yanked": result.yanked, "changed": list(result.changed), "unchanged": list(result.unchanged),
                    "generation": result.generation,
                    "pinned": None if pinned is None else [{"mac": m, "target": t} for m, t in pinned]})
        return
    state = "yanked" if result.yanked else "offered again"
    if result.changed:
        console.print(f"{result.project} {result.version} {state} for {', '.join(result.changed)} "
                      f"(catalog generation {result.generation})")
    if result.unchanged:
        console.print(f"{result.project} {result.version} was already {state} for {', '.join(result.unchanged)}")
    if pinned:
        console.print(_pinned_note(pinned, result.version, result.yanked))


def _pinned_note(pinned: list[tuple[str, str]], version: str, yanked: bool) -> str:
    shown = ", ".join(f"{mac} ({target})" for mac, target in pinned[:5])
    more = f" and {len(pinned) - 5} more (`--json` lists them all)" if len(pinned) > 5 else ""
    devices = f"{len(pinned)} device{'s' if len(pinned) > 1 else ''} pinned to {version}: {shown}{more}"
    if yanked:
        return (f"{devices}. Their pin is not applied while {version} is yanked: they get what they would without it. "
                "`acrelease pin MAC VERSION` pins them to another release, `acrelease unpin MAC` frees them.")
    return f"{devices}. Their pin applies again from their next check: {version} is what they get."


def repair(
    catalog: Path | None = typer.Option(None, "--catalog", "-d", help=CATALOG_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check and say what would be done; write nothing."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Check the catalog against its files and restore its last good index (yanks kept)."""
    root = _catalog(catalog)
    report = repair_catalog(root, dry_run=dry_run)
    if as_json:
        print_json(_report_json(report))
    else:
        _print_report(report)
    if report.damaged:
        raise CatalogError(f"{root}: {len(report.damaged)} file(s) named by the index are missing or damaged "
                           "(listed above) and answered 404; put the original bytes back (`acrelease publish` "
                           "from the project that recorded them rewrites missing or truncated ones), then run "
                           "repair again")


def _report_json(report: RepairReport) -> dict[str, object]:
    return {
        "catalog": str(report.catalog), "dry_run": report.dry_run, "index_problem": report.index_problem,
        "action": report.action, "source": report.source, "source_generation": report.source_generation,
        "generation": report.index.generation, "releases": report.releases,
        "yanked": [{"project": p, "target": t, "version": v} for p, t, v in report.yanked],
        "verified_files": report.verified,
        "damaged_files": [{"file": d.file, "problem": d.problem} for d in report.damaged],
        "unindexed_files": list(report.unindexed), "not_recovered": list(report.not_recovered),
        "kept_broken_index": report.kept_broken,
    }


def _print_report(report: RepairReport) -> None:
    would = "would be " if report.dry_run else ""
    if report.index_problem:
        console.print(f"index.json cannot be used: {report.index_problem}")
    generation = report.index.generation
    if report.action == "restored":
        console.print(f"Restored generation {report.source_generation} from {report.source}: {would}written as "
                      f"generation {generation}")
    elif report.action == "reconstructed":
        console.print(f"No good index survives: {would}rebuilt from the published files as generation {generation}")
    elif report.action == "saved":
        console.print(f"index.json is good; its last-good copy {would}saved (generation {generation})")
    else:
        console.print(f"index.json is good (generation {generation}); nothing to restore")
    if report.kept_broken:
        console.print(f"The broken index.json is kept as {report.kept_broken}")
    yanked = ", ".join(f"{p}/{t} {v}" for p, t, v in report.yanked) or "none"
    console.print(f"{report.releases} release(s), yanked: {yanked}; {report.verified} file(s) verified")
    for damaged in report.damaged:
        console.print(f"[red]damaged:[/] {damaged.file}: {damaged.problem}")
    for file in report.unindexed:
        console.print(f"not in the index (left alone; `acrelease publish` indexes its release): {file}")
    for line in report.not_recovered:
        console.print(f"[yellow]not recovered:[/] {line}")


def register(app: typer.Typer) -> None:
    app.command()(publish)
    app.command()(yank)
    app.command()(repair)
