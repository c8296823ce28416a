"""Editing ``releases.toml`` through tomlkit, so users' comments and layout survive, with atomic replaces."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import semver
import tomlkit
from tomlkit.items import AoT, Table

from acrelease import read_template
from acrelease.catalog import layout
from acrelease.chips import Chip
from acrelease.errors import ManifestError, VersionError
from acrelease.fsutil import write_atomic
from acrelease.manifest.model import DEFAULT_DEFINE, ArtifactRecord, Release, Target
from acrelease.versioning import parse_release_version


def _read_document(path: Path) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path}: no release manifest here; create one with `acrelease init`") from None
    except Exception as exc:  # tomlkit raises its own ParseError family
        raise ManifestError(f"{path}: not valid TOML: {exc}") from None


_HEADER_AFTER_VALUE = re.compile(r"(?m)^([^\s#\[][^\n]*\n)(\[)")


def _write_document(path: Path, doc: tomlkit.TOMLDocument) -> None:
    """Replace ``path`` atomically: a crash leaves the old manifest or the new one.

    tomlkit puts an appended ``[[releases]]`` right under the previous table's last value; a
    blank line before such a header keeps the file readable (nothing else is re-laid)."""
    text = _HEADER_AFTER_VALUE.sub(r"\1\n\2", tomlkit.dumps(doc))
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    write_atomic(path, text.encode("utf-8"), mode)


def _target_table(target: Target) -> Table:
    table = tomlkit.table()
    table["name"] = target.name
    if target.chip is not None:
        table["chip"] = target.chip.key
    if target.env:
        table["env"] = target.env
    if target.board:
        table["board"] = target.board
    if target.filesystem:
        table["filesystem"] = True
    return table


def init_manifest(path: Path, project: str, targets: Sequence[Target], *, overwrite: bool = False,
                  version_define: str = DEFAULT_DEFINE) -> None:
    """Write a new ``releases.toml`` naming the project and its targets."""
    problems = []
    if not layout.valid_name(project):
        problems.append(f'project name "{project}" is not valid ({layout.NAME_RULE})')
    elif not layout.valid_project(project):
        problems.append(f'project name "{project}" is reserved: the server routes /{project}/...')
    names = [t.name for t in targets]
    problems += [f'target name "{n}" is not valid ({layout.NAME_RULE})' for n in names if not layout.valid_name(n)]
    problems += [f'target "{n}" is given twice' for n in sorted({n for n in names if names.count(n) > 1})]
    if not targets:
        problems.append("name at least one target (--target NAME:CHIP)")
    if problems:
        raise ManifestError(f"{path}: {p}" for p in problems)
    if path.exists() and not overwrite:
        raise ManifestError(f"{path}: already exists; edit it, or pass --force to start over")
    doc = tomlkit.parse(read_template("releases.toml"))
    project_table = tomlkit.table()
    project_table["name"] = project
    if version_define != DEFAULT_DEFINE:
        project_table["version_define"] = version_define
    doc["project"] = project_table
    targets_aot = tomlkit.aot()
    for target in targets:
        targets_aot.append(_target_table(target))
    doc["targets"] = targets_aot
    _write_document(path, doc)


def add_targets(path: Path, targets: Sequence[Target]) -> None:
    """Append ``targets`` (new names, already validated) to ``[[targets]]``; nothing else changes."""
    doc = _read_document(path)
    existing = doc.get("targets")
    if existing is None:
        existing = tomlkit.aot()
        doc["targets"] = existing
    if not isinstance(existing, AoT | list):
        raise ManifestError(f"{path}: targets: expected an array of tables ([[targets]])")
    for target in targets:
        existing.append(_target_table(target))
    _write_document(path, doc)


def set_target_chip(path: Path, target: str, chip: Chip) -> None:
    """Record a target's chip (learnt from its first image) without touching anything else."""
    doc = _read_document(path)
    for table in doc.get("targets", []):
        if table.get("name") == target:
            table["chip"] = chip.key
            _write_document(path, doc)
            return
    raise ManifestError(f'{path}: targets: no target named "{target}"')


def _record_table(record: ArtifactRecord) -> Table:
    table = tomlkit.table()
    table["file"] = record.file
    table["size"] = record.size
    table["md5"] = record.md5
    table["sha256"] = record.sha256
    table["chip"] = record.chip
    table["format"] = record.format
    if record.flash_size is not None:
        table["flash_size"] = record.flash_size
    table["version_found"] = record.version_found
    return table


def record_artifacts(path: Path, release: Release, new: Mapping[str, Iterable[ArtifactRecord]]) -> None:
    """Add ``new`` (target -> records) to ``release``, creating the ``[[releases]]`` entry if the
    manifest has none for its version. The caller has validated everything."""
    doc = _read_document(path)
    releases = doc.get("releases")
    if releases is None:
        releases = tomlkit.aot()
        doc["releases"] = releases
    if not isinstance(releases, AoT | list):
        raise ManifestError(f"{path}: releases: expected an array of tables ([[releases]])")
    entry = next((r for r in releases if _same_version(r.get("version"), release.version)), None)
    if entry is None:
        entry = tomlkit.table()
        entry["version"] = str(release.version)
        entry["channel"] = release.channel
        entry["date"] = release.date
        if release.notes:
            entry["notes"] = release.notes
        if release.allow_missing_version:
            entry["allow_missing_version"] = True
        entry["artifacts"] = tomlkit.table(is_super_table=True)
        releases.append(entry)
    artifacts = entry.setdefault("artifacts", tomlkit.table(is_super_table=True))
    for target, records in new.items():
        target_table = tomlkit.table(is_super_table=True)
        for record in records:
            target_table[record.kind] = _record_table(record)
        artifacts[target] = target_table
    _write_document(path, doc)


def _same_version(text: Any, version: semver.Version) -> bool:
    try:
        return isinstance(text, str) and parse_release_version(text) == version
    except VersionError:
        return False
