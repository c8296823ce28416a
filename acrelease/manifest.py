"""``releases.toml``: the release manifest of one firmware project.

Reading goes through :func:`load`, which turns the file into frozen dataclasses and reports
*every* problem at once, each prefixed with the file and its TOML path
(``releases.toml: releases[2].version: "1.2" is not a semantic version ...``). Files named by
the manifest are checked against their recorded size and hashes.

Writing goes through tomlkit (:func:`init_manifest`, :func:`record_artifacts`,
:func:`set_target_chip`), so a user's comments and layout survive every edit, and the file is
replaced atomically.

Schema::

    [project]
    name = "demo"                     # catalog and URL name
    version_define = "FW_VERSION"     # optional: the C define the version is compiled in as

    [[targets]]                       # one per board / PlatformIO env
    name = "d1mini"
    chip = "esp8266"                  # optional until the first image tells
    env = "d1_mini"                   # optional: PlatformIO env
    board = "d1_mini"                 # optional: board id (PlatformIO board, FQBN board part)
    filesystem = true                 # optional: the target ships a filesystem image

    [[releases]]
    version = "1.0.0"
    channel = "stable"
    date = "2026-11-27"
    notes = "..."

    [releases.artifacts.d1mini.firmware]
    file = "dist/1.0.0/d1mini/firmware.bin"   # relative to this file
    size = 4480
    md5 = "..."
    sha256 = "..."
    chip = "esp8266"
    format = "plain"
    flash_size = 4194304
    version_found = true
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import semver
import tomlkit
from tomlkit.items import AoT, Table

from acrelease import chips, read_template
from acrelease.catalog import layout
from acrelease.catalog.index import ARTIFACT_KINDS
from acrelease.chips import Chip
from acrelease.errors import ManifestError, VersionError
from acrelease.versioning import parse_release_version

MANIFEST_NAME = "releases.toml"
DEFAULT_DEFINE = "FW_VERSION"
DEFAULT_CHANNEL = "stable"


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    chip: Chip | None
    env: str | None = None
    board: str | None = None
    filesystem: bool = False


@dataclass(frozen=True, slots=True)
class ArtifactRecord:
    kind: str
    file: str
    """Relative to the manifest's folder, ``/``-separated."""
    size: int
    md5: str
    sha256: str
    chip: str
    format: str
    flash_size: int | None = None
    version_found: bool = True


@dataclass(frozen=True, slots=True)
class Release:
    version: semver.Version
    channel: str = DEFAULT_CHANNEL
    date: str = ""
    notes: str = ""
    artifacts: Mapping[str, Mapping[str, ArtifactRecord]] = field(default_factory=dict)
    """target name -> kind (``firmware``/``filesystem``) -> record."""
    allow_missing_version: bool = False


@dataclass(frozen=True)
class Manifest:
    path: Path
    project: str
    version_define: str
    targets: tuple[Target, ...]
    releases: tuple[Release, ...]

    @property
    def root(self) -> Path:
        return self.path.parent

    def target(self, name: str) -> Target | None:
        return next((t for t in self.targets if t.name == name), None)

    def release(self, version: semver.Version) -> Release | None:
        return next((r for r in self.releases if r.version == version), None)

    def versions(self) -> list[semver.Version]:
        return [r.version for r in self.releases]

    def artifact_path(self, record: ArtifactRecord) -> Path:
        return self.root / record.file


def file_digests(data: bytes) -> tuple[str, str]:
    """(md5, sha256) of ``data`` in lower-case hex."""
    return hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- reading


class _Problems:
    """Collects problems, each prefixed with the file name and a TOML path."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{self.where}: {path}: {message}" if path else f"{self.where}: {message}")


def load(path: Path, *, verify_files: bool = True) -> Manifest:
    """Read and validate ``releases.toml``; raise :class:`ManifestError` listing every problem."""
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{where}: no release manifest here; create one with "
                            "`acrelease init --name NAME --target TARGET:CHIP`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{where}: cannot read the manifest ({exc})") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{where}: not valid TOML: {exc}") from None
    problems = _Problems(where)
    manifest = _parse(doc, path, problems, verify_files)
    if problems.items:
        raise ManifestError(problems.items)
    return manifest


def _string(value: Any, path: str, problems: _Problems, *, required: bool = True) -> str | None:
    if value is None:
        if required:
            problems.add(path, "missing")
        return None
    if not isinstance(value, str):
        problems.add(path, f"expected a string, got {type(value).__name__}")
        return None
    return value


def _name(value: Any, path: str, problems: _Problems) -> str | None:
    name = _string(value, path, problems)
    if name is not None and not layout.valid_name(name):
        problems.add(path, f'"{name}" is not a valid name ({layout.NAME_RULE})')
        return None
    return name


def _parse(doc: dict[str, Any], path: Path, problems: _Problems, verify_files: bool) -> Manifest:
    project_doc = doc.get("project")
    if isinstance(project_doc, dict):
        project = _name(project_doc.get("name"), "project.name", problems) or ""
    else:
        problems.add("project", "missing [project] table with a name")
        project_doc, project = {}, ""
    define = _string(project_doc.get("version_define", DEFAULT_DEFINE), "project.version_define", problems)
    if define is not None and not define.isidentifier():
        problems.add("project.version_define", f'"{define}" is not a C identifier')

    targets = _parse_targets(doc.get("targets", []), problems)
    known = {t.name: t for t in targets}
    releases_doc = doc.get("releases", [])
    if not isinstance(releases_doc, list):
        problems.add("releases", "expected an array of tables ([[releases]])")
        releases_doc = []
    releases: list[Release] = []
    seen: dict[semver.Version, int] = {}
    for i, rdoc in enumerate(releases_doc):
        release = _parse_release(rdoc, f"releases[{i}]", known, path.parent, problems, verify_files)
        if release is None:
            continue
        if release.version in seen:
            problems.add(f"releases[{i}].version",
                         f"{release.version} is already recorded at releases[{seen[release.version]}]")
            continue
        seen[release.version] = i
        releases.append(release)
    return Manifest(path, project, define or DEFAULT_DEFINE, tuple(targets), tuple(releases))


def _parse_targets(targets_doc: Any, problems: _Problems) -> list[Target]:
    if not isinstance(targets_doc, list):
        problems.add("targets", "expected an array of tables ([[targets]])")
        return []
    targets: list[Target] = []
    for i, tdoc in enumerate(targets_doc):
        at = f"targets[{i}]"
        if not isinstance(tdoc, dict):
            problems.add(at, "expected a table")
            continue
        name = _name(tdoc.get("name"), f"{at}.name", problems)
        chip: Chip | None = None
        chip_text = _string(tdoc.get("chip"), f"{at}.chip", problems, required=False)
        if chip_text is not None:
            chip = chips.lookup(chip_text)
            if chip is None:
                problems.add(f"{at}.chip", f'unknown chip "{chip_text}" (known: {chips.known_keys()})')
        env = _string(tdoc.get("env"), f"{at}.env", problems, required=False)
        board = _string(tdoc.get("board"), f"{at}.board", problems, required=False)
        filesystem = tdoc.get("filesystem", False)
        if not isinstance(filesystem, bool):
            problems.add(f"{at}.filesystem", "expected true or false")
            filesystem = False
        if name is None:
            continue
        if any(t.name == name for t in targets):
            problems.add(f"{at}.name", f'target "{name}" is defined twice')
            continue
        targets.append(Target(name, chip, env, board, filesystem))
    return targets


def _parse_release(rdoc: Any, at: str, targets: Mapping[str, Target], root: Path,
                   problems: _Problems, verify_files: bool) -> Release | None:
    if not isinstance(rdoc, dict):
        problems.add(at, "expected a table")
        return None
    version_text = _string(rdoc.get("version"), f"{at}.version", problems)
    version = None
    if version_text is not None:
        try:
            version = parse_release_version(version_text)
        except VersionError as exc:
            problems.add(f"{at}.version", str(exc))
    channel = _name(rdoc.get("channel", DEFAULT_CHANNEL), f"{at}.channel", problems)
    date = _string(rdoc.get("date", ""), f"{at}.date", problems)
    notes = _string(rdoc.get("notes", ""), f"{at}.notes", problems)
    allow_missing = rdoc.get("allow_missing_version", False)
    artifacts: dict[str, dict[str, ArtifactRecord]] = {}
    adoc = rdoc.get("artifacts", {})
    if not isinstance(adoc, dict):
        problems.add(f"{at}.artifacts", "expected a table of targets")
        adoc = {}
    for target_name, kinds in adoc.items():
        tat = f"{at}.artifacts.{target_name}"
        if target_name not in targets:
            problems.add(tat, f'unknown target "{target_name}" (defined targets: '
                              f'{", ".join(targets) or "none"}; add it under [[targets]])')
            continue
        if not isinstance(kinds, dict) or "firmware" not in kinds:
            problems.add(tat, "expected a [firmware] table (and optionally [filesystem])")
            continue
        for kind, record_doc in kinds.items():
            if kind not in ARTIFACT_KINDS:
                problems.add(f"{tat}.{kind}", f'unknown artifact kind (expected {" or ".join(ARTIFACT_KINDS)})')
                continue
            record = _parse_record(kind, record_doc, f"{tat}.{kind}", root, problems, verify_files)
            if record is not None:
                artifacts.setdefault(target_name, {})[kind] = record
    if not artifacts and adoc == {}:
        problems.add(f"{at}.artifacts", "a release needs at least one target's firmware")
    if version is None or channel is None:
        return None
    return Release(version, channel, date or "", notes or "", artifacts, bool(allow_missing))


def _parse_record(kind: str, doc: Any, at: str, root: Path, problems: _Problems,
                  verify_files: bool) -> ArtifactRecord | None:
    if not isinstance(doc, dict):
        problems.add(at, "expected a table")
        return None
    before = len(problems.items)
    file = _string(doc.get("file"), f"{at}.file", problems)
    md5 = _string(doc.get("md5"), f"{at}.md5", problems)
    sha256 = _string(doc.get("sha256"), f"{at}.sha256", problems)
    chip = _string(doc.get("chip"), f"{at}.chip", problems)
    fmt = _string(doc.get("format"), f"{at}.format", problems)
    size = doc.get("size")
    if not isinstance(size, int) or size <= 0:
        problems.add(f"{at}.size", "expected a positive integer")
    flash_size = doc.get("flash_size")
    if flash_size is not None and not isinstance(flash_size, int):
        problems.add(f"{at}.flash_size", "expected an integer")
    if len(problems.items) > before:
        return None
    assert file and md5 and sha256 and chip and fmt and isinstance(size, int)
    record = ArtifactRecord(kind, file, size, md5.lower(), sha256.lower(), chip, fmt, flash_size,
                            bool(doc.get("version_found", True)))
    if verify_files:
        _verify_file(record, at, root, problems)
    return record


def _verify_file(record: ArtifactRecord, at: str, root: Path, problems: _Problems) -> None:
    path = root / record.file
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        problems.add(f"{at}.file", f'"{record.file}" does not exist; restore it or rebuild this release')
        return
    except OSError as exc:
        problems.add(f"{at}.file", f'"{record.file}" cannot be read ({exc.strerror})')
        return
    md5, sha256 = file_digests(data)
    if len(data) != record.size or sha256 != record.sha256 or md5 != record.md5:
        problems.add(f"{at}.file", f'"{record.file}" has changed since it was recorded (size {len(data)}, '
                                   f"sha256 {sha256[:12]}…, recorded {record.size}, {record.sha256[:12]}…); "
                                   "restore the original or record a new version")


# --------------------------------------------------------------------------- writing


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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
