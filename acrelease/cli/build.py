"""``build``, ``version`` and ``collect``: releases made from sources or IDE exports.

Thin on purpose: parse, call :mod:`acrelease.builder.release_build`, render. Progress goes to
stderr so that ``--json`` output on stdout stays machine-readable.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.status import Status

from acrelease.builder import platformio, release_build
from acrelease.builder.release_build import BuildEvent, BuildOutcome
from acrelease.cli.common import CHANNEL_HELP, JSON_OPTION, MANIFEST_OPTION, console, make_console, print_json
from acrelease.errors import UsageError
from acrelease.manifest import ArtifactRecord
from acrelease.release import AddResult
from acrelease.versioning import BUMPS, Bump

progress_console = make_console(stderr=True)

BUMP_HELP = f"Bump the newest release's version: {' | '.join(BUMPS)} (default: patch)."
ALLOW_MISSING_HELP = "Record images that do not contain the version string."

# Typer reads options from parameter defaults; module-level singletons keep them declarative.
VERSION_OPTION = typer.Option(None, "--version", help="The release's version (X.Y.Z).")
REQUIRED_VERSION_OPTION = typer.Option(..., "--version", help="The release's version (X.Y.Z).")
BUMP_OPTION = typer.Option(None, "--bump", help=BUMP_HELP)
BUILD_TARGETS_OPTION = typer.Option([], "--target", "-t", help="Build only this target (repeatable).")
COLLECT_TARGETS_OPTION = typer.Option(
    [], "--target", "-t",
    help="Record only this target (repeatable); TARGET=FILE also names its image, for exports that do not map.")
CHANNEL_OPTION = typer.Option(None, "--channel", help=CHANNEL_HELP)
NOTES_OPTION = typer.Option(None, "--notes", help="Release notes.")
DRY_RUN_OPTION = typer.Option(False, "--dry-run", help="Show the version and envs; build and write nothing.")
ALLOW_MISSING_OPTION = typer.Option(False, "--allow-missing-version", help=ALLOW_MISSING_HELP)
VERBOSE_OPTION = typer.Option(False, "--verbose", "-v", help="Show PlatformIO's output.")
SKETCH_ARGUMENT = typer.Argument(..., help="The sketch folder (holding the .ino and its exports).")


def _bump(value: str | None) -> Bump | None:
    if value is None:
        return None
    for bump in BUMPS:
        if bump == value:
            return bump
    raise UsageError(f"--bump {value}: expected one of {', '.join(BUMPS)}")


class _Renderer:
    """Shows which env is building and for how long; PlatformIO's output only with --verbose."""

    def __init__(self, verbose: bool, quiet: bool) -> None:
        self.verbose = verbose
        self.quiet = quiet
        self.status: Status | None = None
        self.started = time.monotonic()
        self.phase = "starting"

    def _text(self, event: BuildEvent) -> str:
        return (f"Building target {event.target} (pio env {event.env}, {event.step} of {event.steps}): "
                f"{self.phase}, {time.monotonic() - self.started:.0f} s")

    def __call__(self, event: BuildEvent) -> None:
        if event.kind == "start":
            self.close()
            self.started = time.monotonic()
            self.phase = "starting"
            if not self.quiet:
                self.status = progress_console.status(self._text(event))
                self.status.start()
        elif event.kind == "output":
            if self.verbose:
                # Tool output is text, not markup (it has [SUCCESS] and the like), and is never wrapped.
                progress_console.print(f"  [dim]{event.env}[/] {escape(event.line)}", soft_wrap=True)
            self.phase = platformio.phase_of(event.line) or self.phase
            if self.status is not None:
                self.status.update(self._text(event))
        elif event.kind == "done":
            self.close()
            if not self.quiet:
                progress_console.print(f"[green]built[/] {event.target} (env {event.env}) "
                                       f"in {event.elapsed:.1f} s")
        elif event.kind == "record":
            self.close()

    def close(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


def _record_json(r: ArtifactRecord) -> dict[str, Any]:
    return {"file": r.file, "size": r.size, "sha256": r.sha256, "md5": r.md5, "chip": r.chip,
            "format": r.format, "version_found": r.version_found}


def _added_json(added: AddResult | None) -> dict[str, Any] | None:
    if added is None:
        return None
    return {
        "version": str(added.version), "changed": added.changed, "channel": added.release.channel,
        "targets": {t: {kind: _record_json(r) for kind, r in kinds.items()}
                    for t, kinds in added.release.artifacts.items()},
    }


def _outcome_json(outcome: BuildOutcome) -> dict[str, Any]:
    return {
        "version": str(outcome.version),
        "dry_run": outcome.dry_run,
        "flag": outcome.flag,
        "targets": [{"target": p.target.name, "env": p.env, "filesystem": p.target.filesystem}
                    for p in outcome.planned],
        "built": [{"target": b.target, "env": b.env, "size": b.firmware_size, "format": b.firmware_format,
                   "chip": b.chip, "version_found": b.version_found, "filesystem": b.filesystem,
                   "seconds": round(b.elapsed, 3)} for b in outcome.built],
        "release": _added_json(outcome.added),
    }


def build(
    version: str | None = VERSION_OPTION,
    bump: str | None = BUMP_OPTION,
    target: list[str] = BUILD_TARGETS_OPTION,
    channel: str | None = CHANNEL_OPTION,
    notes: str | None = NOTES_OPTION,
    dry_run: bool = DRY_RUN_OPTION,
    allow_missing_version: bool = ALLOW_MISSING_OPTION,
    verbose: bool = VERBOSE_OPTION,
    manifest_path: Path = MANIFEST_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Build each target's PlatformIO env with the version compiled in and record the release."""
    renderer = _Renderer(verbose, quiet=as_json and not verbose)
    try:
        outcome = release_build.build_release(
            manifest_path, version=version, bump=_bump(bump), targets=target, channel=channel, notes=notes,
            dry_run=dry_run, allow_missing_version=allow_missing_version, progress=renderer)
    finally:
        renderer.close()
    if as_json:
        print_json(_outcome_json(outcome))
        return
    if outcome.dry_run:
        console.print(f"Would build {outcome.version} with {escape(outcome.flag)}:", soft_wrap=True)
        for plan in outcome.planned:
            fs = " + filesystem (-t buildfs)" if plan.target.filesystem else ""
            console.print(f"  {plan.target.name}: pio run -e {plan.env}{fs}")
        return
    for built in outcome.built:
        missing = "" if built.version_found else " [yellow](version string not found)[/]"
        fs = " + filesystem" if built.filesystem else ""
        console.print(f"  {built.target}: {built.chip} {built.firmware_format} "
                      f"{built.firmware_size} B{fs}{missing}")
    console.print(f"Recorded {outcome.version} in {escape(str(manifest_path))} "
                  f"(dist/{outcome.version}/); publish it with `acrelease publish`", soft_wrap=True)


def version_command(
    bump: str | None = BUMP_OPTION,
    manifest_path: Path = MANIFEST_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Show the newest release and the version the next build would get."""
    current, upcoming = release_build.read_next_version(manifest_path, _bump(bump))
    if as_json:
        print_json({"current": str(current) if current else None, "next": str(upcoming)})
        return
    console.print(f"current: {current or 'none yet'}\nnext:    {upcoming}")


def _collect_targets(specs: list[str]) -> tuple[list[str], dict[str, Path]]:
    """``--target T`` (selected, its export found by board) and ``--target T=FILE`` (explicit)."""
    selected: list[str] = []
    mapping: dict[str, Path] = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        name = name.strip()
        if not name or (sep and not file):
            raise UsageError(f"--target {spec}: expected TARGET or TARGET=FILE, "
                             "e.g. --target d1mini=Blink.ino.d1_mini.bin")
        if name in selected or name in mapping:
            raise UsageError(f"--target {spec}: target {name} is named twice")
        if sep:
            mapping[name] = Path(file)
        else:
            selected.append(name)
    return selected, mapping


def collect(
    sketch_dir: Path = SKETCH_ARGUMENT,
    version: str = REQUIRED_VERSION_OPTION,
    target: list[str] = COLLECT_TARGETS_OPTION,
    channel: str | None = CHANNEL_OPTION,
    notes: str | None = NOTES_OPTION,
    allow_missing_version: bool = ALLOW_MISSING_OPTION,
    manifest_path: Path = MANIFEST_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Record the OTA images an Arduino IDE or arduino-cli exported as release VERSION, for every
    target (or only those named with --target); a target without its image stops the whole release."""
    selected, explicit = _collect_targets(target)
    added = release_build.collect_release(manifest_path, sketch_dir, version, targets=selected, explicit=explicit,
                                          channel=channel, notes=notes,
                                          allow_missing_version=allow_missing_version)
    if as_json:
        print_json(_added_json(added))
    elif added.changed:
        console.print(f"Recorded {added.version} for {', '.join(added.added_targets)} in {escape(str(manifest_path))}")
    else:
        console.print(f"{added.version} is already recorded with these bytes; nothing to do")


def register(app: typer.Typer) -> None:
    app.command()(build)
    app.command("version")(version_command)
    app.command()(collect)
