"""Editing ``releases.toml``: through tomlkit, so users' comments and layout survive, validated
as a whole before anything is written, and replaced atomically.

Every edit goes the same way: read the document, change it in memory, render the complete new
text, run it through :func:`acrelease.manifest.load.validate` (the very check :func:`load`
applies when the file is read back), and only then hand the caller a :class:`PendingEdit` to
write. A value the new manifest would refuse (a channel with a space, undecodable bytes in the
notes) is therefore refused before the first byte is written, here and in no other place
(docs/manifest.md, "How acrelease edits this file").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
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
from acrelease.manifest.load import Problem, validate
from acrelease.manifest.model import DEFAULT_DEFINE, ArtifactRecord, Manifest, Release, Target
from acrelease.versioning import parse_release_version


@dataclass(frozen=True)
class PendingEdit:
    """The complete new manifest: its text, validated, and the model :func:`load` will read from
    it. Nothing is on disk until :meth:`write`."""

    path: Path
    text: str
    manifest: Manifest

    def write(self) -> None:
        """Replace the manifest atomically; an ``OSError`` becomes one line, and the old file stays."""
        try:
            _write_text(self.path, self.text)
        except OSError as exc:
            raise ManifestError(f"{self.path}: cannot be written ({exc.strerror or exc}); "
                                "it was left as it was") from None


def _read_document(path: Path) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path}: no release manifest here; create one with `acrelease init`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read the manifest ({exc})") from None
    except Exception as exc:  # tomlkit raises its own ParseError family
        raise ManifestError(f"{path}: not valid TOML: {exc}") from None


_HEADER_AFTER_VALUE = re.compile(r"(?m)^([^\s#\[][^\n]*\n)(\[)")


def _render(doc: tomlkit.TOMLDocument) -> str:
    """tomlkit puts an appended ``[[releases]]`` right under the previous table's last value; a
    blank line before such a header keeps the file readable (nothing else is re-laid)."""
    return _HEADER_AFTER_VALUE.sub(r"\1\n\2", tomlkit.dumps(doc))


def _blamed(path: Path, problems: Iterable[Problem], blame: Mapping[str, str]) -> list[str]:
    lines = []
    for problem in problems:
        label = next((label for at, label in blame.items()
                      if problem.at == at or problem.at.startswith(f"{at}.")), None)
        where = label if label is not None else (f"{path}: {problem.at}" if problem.at else str(path))
        lines.append(f"{where}: {problem.message}; nothing was written")
    return lines


def prepare(path: Path, doc: tomlkit.TOMLDocument, blame: Mapping[str, str] | None = None) -> PendingEdit:
    """Render ``doc`` and validate the text as :func:`load` will read it; raise
    :class:`ManifestError` listing every problem, with nothing written.

    ``blame`` maps the TOML paths this edit set to what the user gave for them (``--channel``, a
    file name), so a problem is reported against the option, not against a line that is not in
    the file. A read-only manifest is refused here too: a user who made it so meant it."""
    text = _render(doc)
    manifest, problems = validate(text, path, verify_files=False)
    if problems or manifest is None:
        raise ManifestError(_blamed(path, problems, blame or {}))
    if path.exists() and not path.stat().st_mode & 0o222:
        raise ManifestError(f"{path}: is read-only; make it writable (chmod u+w {path}) and run the command "
                            "again; nothing was written")
    return PendingEdit(path, text, manifest)


def _write_text(path: Path, text: str) -> None:
    """Replace ``path`` atomically: a crash leaves the old manifest or the new one."""
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
    prepare(path, doc).write()


TARGET_FIELDS = ("chip", "env", "board", "filesystem")
"""The target keys an edit may set; ``name`` identifies the target."""


def plan_target(path: Path, name: str, changes: Mapping[str, str | bool | None], *,
                create: bool = False) -> PendingEdit:
    """Set the keys in ``changes`` (of :data:`TARGET_FIELDS`) on target ``name``; ``None`` or
    ``False`` removes a key (back to its default). With ``create`` the target is added instead.
    Keys not named, comments and order stay as they were."""
    unknown = set(changes) - set(TARGET_FIELDS)
    if unknown:
        raise ValueError(f"not target fields: {sorted(unknown)}")
    doc = _read_document(path)
    targets = _array_of_tables(doc, "targets", path)
    index, table = next(((i, t) for i, t in enumerate(targets) if t.get("name") == name), (len(targets), None))
    if create and table is not None:
        raise ManifestError(f'{path}: targets[{index}]: a target named "{name}" already exists; '
                            f"change it with `acrelease target set {name} ...`")
    if table is None:
        if not create:
            known = ", ".join(str(t.get("name")) for t in targets) or "none"
            raise ManifestError(f'{path}: targets: no target named "{name}" (known: {known}); '
                                f"add it with `acrelease target add {name}`")
        table = tomlkit.table()
        table["name"] = name
        targets.append(table)
    for key, value in changes.items():
        if value is None or value is False:
            table.pop(key, None)  # the defaults: chip learnt from the first image, no env, no filesystem
        else:
            table[key] = value
    at = f"targets[{index}]"
    blame = {f"{at}.name": f'target "{name}"', **{f"{at}.{key}": f"--{key}" for key in TARGET_FIELDS}}
    return prepare(path, doc, blame)


def _array_of_tables(doc: tomlkit.TOMLDocument, key: str, path: Path) -> AoT | list[Any]:
    """``doc[key]`` as the ``[[key]]`` array it must be, created empty when the manifest has none."""
    found = doc.get(key)
    if found is None:
        found = doc[key] = tomlkit.aot()
    if not isinstance(found, AoT | list):
        raise ManifestError(f"{path}: {key}: expected an array of tables ([[{key}]])")
    return found


def add_targets(path: Path, targets: Sequence[Target]) -> None:
    """Append ``targets`` (new names, already validated) to ``[[targets]]``; nothing else changes."""
    doc = _read_document(path)
    existing = _array_of_tables(doc, "targets", path)
    for target in targets:
        existing.append(_target_table(target))
    prepare(path, doc).write()


def set_target_chip(path: Path, target: str, chip: Chip) -> None:
    """Record a target's chip without touching anything else."""
    plan_target(path, target, {"chip": chip.key}).write()


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


def plan_release(path: Path, release: Release, new: Mapping[str, Iterable[ArtifactRecord]], *,
                 learnt_chips: Mapping[str, Chip] | None = None,
                 blame: Mapping[str, str] | None = None) -> PendingEdit:
    """The manifest with ``new`` (target -> records) added to ``release`` (its ``[[releases]]``
    entry created if the manifest has none for its version) and each target of ``learnt_chips``
    given its chip, validated as one. ``blame`` maps keys of the release entry (``channel``,
    ``notes``, ``artifacts.T.firmware.file``) to what the user gave for them."""
    doc = _read_document(path)
    releases = _array_of_tables(doc, "releases", path)
    index, entry = next(((i, r) for i, r in enumerate(releases) if _same_version(r.get("version"), release.version)),
                        (len(releases), None))
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
    for table in doc.get("targets", []):
        chip = (learnt_chips or {}).get(table.get("name"))
        if chip is not None:
            table["chip"] = chip.key
    return prepare(path, doc, {f"releases[{index}].{key}": label for key, label in (blame or {}).items()})


def record_artifacts(path: Path, release: Release, new: Mapping[str, Iterable[ArtifactRecord]]) -> None:
    """:func:`plan_release` and write it (for callers with nothing else to write)."""
    plan_release(path, release, new).write()


def _same_version(text: Any, version: semver.Version) -> bool:
    try:
        return isinstance(text, str) and parse_release_version(text) == version
    except VersionError:
        return False
