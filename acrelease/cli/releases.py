"""``init``, ``add``, ``list`` and ``inspect``: the manifest side of acrelease."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from acrelease import chips, manifest
from acrelease.catalog.history import load_current
from acrelease.catalog.index import CatalogIndex
from acrelease.cli.common import (
    CATALOG_HELP,
    CHANNEL_HELP,
    JSON_OPTION,
    MANIFEST_OPTION,
    console,
    print_json,
    resolve_catalog,
)
from acrelease.errors import UsageError
from acrelease.image import ImageInfo
from acrelease.manifest import Manifest, Target
from acrelease.release import ArtifactInput, add_release, read_image
from acrelease.versioning import parse_release_version


def parse_target_spec(spec: str) -> Target:
    """``NAME:CHIP`` (or just ``NAME``: the chip is then learnt from the first image)."""
    name, _, chip_text = spec.partition(":")
    chip = None
    if chip_text:
        chip = chips.lookup(chip_text)
        if chip is None:
            raise UsageError(f'--target {spec}: unknown chip "{chip_text}" (known: {chips.known_keys()})')
    return Target(name.strip(), chip)


def init(
    name: str | None = typer.Option(None, "--name", help="Project name (default: the folder's name)."),
    target: list[str] = typer.Option([], "--target", "-t", help="A target as NAME:CHIP, e.g. d1mini:esp8266."),
    platformio: bool = typer.Option(False, "--platformio", help="Take the targets from platformio.ini."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing manifest."),
    manifest_path: Path = MANIFEST_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Write releases.toml for this project (and nothing else)."""
    targets = [parse_target_spec(spec) for spec in target]
    if platformio:
        from acrelease.builder.platformio import read_project_targets

        targets += read_project_targets(manifest_path.resolve().parent)
    project = name or manifest_path.resolve().parent.name
    manifest.init_manifest(manifest_path, project, targets, overwrite=force)
    if as_json:
        print_json({"manifest": str(manifest_path), "project": project,
                    "targets": [{"name": t.name, "chip": t.chip.key if t.chip else None, "env": t.env,
                                 "board": t.board, "filesystem": t.filesystem} for t in targets]})
        return
    # Names are the user's text, not markup: escaped, so "[x]" prints as typed.
    console.print(f"Wrote {escape(str(manifest_path))}: project [bold]{escape(project)}[/], targets "
                  + ", ".join(f"{escape(t.name)} ({t.chip.key if t.chip else 'chip from first image'})"
                              for t in targets))


def _target_changes(chip: str | None, board: str | None, env: str | None,
                    filesystem: bool | None) -> dict[str, str | bool | None]:
    """The options given, as manifest keys; ``""`` clears a key. A chip is written under its
    canonical key when acrelease knows it; otherwise as given, for the manifest's own check to
    refuse with the known chips."""
    changes: dict[str, str | bool | None] = {}
    if chip is not None:
        known = chips.lookup(chip) if chip else None
        changes["chip"] = known.key if known else (chip or None)
    for key, value in (("board", board), ("env", env)):
        if value is not None:
            changes[key] = value or None
    if filesystem is not None:
        changes["filesystem"] = filesystem
    return changes


CHIP_OPTION = typer.Option(None, "--chip", help='The chip, e.g. esp8266, esp32s3 ("" = learn it from the first image).')
BOARD_OPTION = typer.Option(None, "--board", help='Board id (PlatformIO board or the FQBN\'s board part; "" clears).')
ENV_OPTION = typer.Option(None, "--env", help='The PlatformIO env `acrelease build` runs ("" clears).')
FILESYSTEM_OPTION = typer.Option(None, "--filesystem/--no-filesystem",
                                 help="Whether the target ships a filesystem image (pio run -t buildfs).")


def _say_target(action: str, name: str, edit: manifest.PendingEdit) -> None:
    target = edit.manifest.target(name)
    assert target is not None
    console.print(f"{action} target [bold]{name}[/] in {edit.path}: chip {target.chip.key if target.chip else '?'}, "
                  f"board {target.board or '-'}, env {target.env or '-'}, "
                  f"filesystem {'yes' if target.filesystem else 'no'}")


def target_add(
    spec: str = typer.Argument(..., help="NAME or NAME:CHIP, e.g. d1mini:esp8266."),
    board: str | None = BOARD_OPTION,
    env: str | None = ENV_OPTION,
    filesystem: bool | None = FILESYSTEM_OPTION,
    manifest_path: Path = MANIFEST_OPTION,
) -> None:
    """Add a target (a board / PlatformIO env) to releases.toml."""
    name, _, chip = spec.partition(":")
    edit = manifest.plan_target(manifest_path, name.strip(), _target_changes(chip or None, board, env, filesystem),
                                create=True)
    edit.write()
    _say_target("Added", name.strip(), edit)


def target_set(
    name: str = typer.Argument(..., help="The target to change."),
    chip: str | None = CHIP_OPTION,
    board: str | None = BOARD_OPTION,
    env: str | None = ENV_OPTION,
    filesystem: bool | None = FILESYSTEM_OPTION,
    manifest_path: Path = MANIFEST_OPTION,
) -> None:
    """Change a target's chip, board, env or filesystem; the rest of releases.toml stays as it is."""
    changes = _target_changes(chip, board, env, filesystem)
    if not changes:
        raise UsageError(f"target set {name}: nothing to set; give --chip, --board, --env or "
                         "--filesystem/--no-filesystem")
    edit = manifest.plan_target(manifest_path, name, changes)
    edit.write()
    _say_target("Changed", name, edit)


def add(
    version: str = typer.Argument(..., help="The release's semantic version, e.g. 1.2.0."),
    firmware: Path = typer.Argument(..., help="The OTA firmware image (.bin, .bin.gz, .bin.signed)."),
    target: str = typer.Option(..., "--target", "-t", help="The target (board) this image is for."),
    fs: Path | None = typer.Option(None, "--fs", help="The target's filesystem image (LittleFS/SPIFFS/FAT)."),
    channel: str | None = typer.Option(None, "--channel", help=CHANNEL_HELP),
    notes: str | None = typer.Option(None, "--notes", help="Release notes."),
    allow_missing_version: bool = typer.Option(
        False, "--allow-missing-version", help="Record the image even though the version string is not in it."),
    manifest_path: Path = MANIFEST_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Validate FILE as an OTA image for TARGET, hash it and record it as release VERSION."""
    result = add_release(manifest_path, parse_release_version(version), [ArtifactInput(target, firmware, fs)],
                         channel=channel, notes=notes, allow_missing_version=allow_missing_version)
    if as_json:
        print_json({"version": str(result.version), "changed": result.changed,
                    "targets": {t: {k: asdict(r) for k, r in kinds.items()}
                                for t, kinds in result.release.artifacts.items()}})
    elif result.changed:
        console.print(f"Recorded {result.version} for {', '.join(result.added_targets)} in "
                      f"{escape(str(manifest_path))}")
    else:
        console.print(f"{result.version} for {target} is already recorded with these bytes; nothing to do")


def _published(index: CatalogIndex | None, project: str, target: str,
               version: str) -> tuple[bool | None, bool | None]:
    """(published, yanked) of one release on one target; ``None`` where no catalog was named,
    yanked ``None`` too when it is not published."""
    if index is None:
        return None, None
    entry = index.target(project, target)
    release = next((r for r in entry.releases if str(r.version) == version), None) if entry else None
    return release is not None, release.yanked if release is not None else None


def list_releases(
    catalog: Path | None = typer.Option(None, "--catalog", "-d", help=CATALOG_HELP),
    manifest_path: Path = MANIFEST_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Show the targets and releases, and whether each is published (and yanked) in --catalog."""
    loaded = manifest.load(manifest_path)
    root = resolve_catalog(catalog)
    index = load_current(root) if root is not None else None
    rows = _release_rows(loaded, index)
    if as_json:
        print_json({"project": loaded.project,
                    "targets": [{"name": t.name, "chip": t.chip.key if t.chip else None, "env": t.env,
                                 "board": t.board, "filesystem": t.filesystem} for t in loaded.targets],
                    "releases": rows})
        return
    console.print(f"[bold]{loaded.project}[/]  targets: " + ", ".join(
        f"{t.name} ({t.chip.label if t.chip else '?'}{', env ' + t.env if t.env else ''})" for t in loaded.targets))
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("version", "channel", "date", "target", "firmware", "filesystem", "published"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        published = {None: "?", True: "yes", False: "no"}[row["published"]] + (", yanked" if row["yanked"] else "")
        fs_size = row["filesystem_size"]
        cells = (row["version"], row["channel"], row["date"], row["target"],
                 f"{row['firmware_size']} B {row['format']}", f"{fs_size} B" if fs_size else "-", published)
        table.add_row(*(escape(cell) for cell in cells))  # the manifest's text, never markup
    if not rows:
        console.print("No releases yet: record one with `acrelease add VERSION FILE --target T`.")
        return
    console.print(table)
    if index is None:
        console.print("published: ? = pass --catalog DIR (or set ACRELEASE_CATALOG) to compare with a catalog")


def _release_rows(loaded: Manifest, index: CatalogIndex | None) -> list[dict[str, Any]]:
    rows = []
    for release in sorted(loaded.releases, key=lambda r: r.version, reverse=True):
        for target, kinds in release.artifacts.items():
            firmware, fs = kinds["firmware"], kinds.get("filesystem")
            published, yanked = _published(index, loaded.project, target, str(release.version))
            rows.append({
                "version": str(release.version), "channel": release.channel, "date": release.date,
                "target": target, "firmware": firmware.file, "firmware_size": firmware.size,
                "format": firmware.format, "filesystem": fs.file if fs else None,
                "filesystem_size": fs.size if fs else None, "published": published, "yanked": yanked,
            })
    return rows


def _info_json(info: ImageInfo) -> dict[str, Any]:
    data = asdict(info)
    data["chip"] = info.chip.key
    data["servable"] = info.servable
    return data


def inspect(
    file: Path = typer.Argument(..., help="An image file."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Tell what an image is and whether it can be served over the air (and why not)."""
    _, info = read_image(file)
    if as_json:
        print_json({"file": str(file), **_info_json(info)})
        if not info.servable:
            raise typer.Exit(1)  # the same exit code as the text form: scripts may test either
        return
    facts = [
        ("chip", f"{info.chip.label} ({info.chip.key})"),
        ("format", info.format),
        ("layout", info.layout),
        ("size", f"{info.size} bytes"),
        ("flash size", f"{info.flash_size // 1024} KiB" if info.flash_size else "-"),
        ("flash mode / freq", f"{info.flash_mode or '-'} / {info.flash_freq or '-'}"),
        ("segments", str(info.segments) if info.segments is not None else "-"),
        ("checksum", {True: "ok", False: "BAD", None: "not checked"}[info.checksum_ok]),
        ("sha256 digest", {True: "ok", False: "BAD", None: "none"}[info.sha256_ok]),
        ("signature", f"{info.signature_length} bytes" if info.signature_length else "none"),
    ]
    if info.app_descriptor is not None:
        desc = info.app_descriptor
        facts += [("app project", desc.project_name), ("app version", desc.version),
                  ("built", f"{desc.date} {desc.time}"), ("idf", desc.idf_version)]
    table = Table(show_header=False, box=None)
    for key, value in facts:
        # Descriptor strings come from the image's bytes: text, never markup ("[/]" would raise).
        table.add_row(f"[bold]{key}[/]", escape(value))
    console.print(table)
    for warning in info.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    if info.servable:
        console.print("[green]OTA-servable[/]")
    else:
        for problem in info.problems:
            console.print(f"[red]not OTA-servable:[/] {escape(problem)}")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    target_app = typer.Typer(help="Add or change the targets (boards) of releases.toml.", no_args_is_help=True)
    target_app.command("add")(target_add)
    target_app.command("set")(target_set)
    app.add_typer(target_app, name="target")
    app.command()(init)
    app.command()(add)
    app.command("list")(list_releases)
    app.command()(inspect)
