"""Reading ``releases.toml``: every problem reported at once, each with its TOML path."""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import semver

from acrelease import chips
from acrelease.catalog import layout
from acrelease.catalog.index import ARTIFACT_KINDS
from acrelease.chips import Chip
from acrelease.errors import ManifestError, VersionError
from acrelease.inputs import MIB, InputProblem, read_regular
from acrelease.manifest.model import (
    DEFAULT_CHANNEL,
    DEFAULT_DEFINE,
    ArtifactRecord,
    Manifest,
    Release,
    Target,
    file_digests,
)
from acrelease.versioning import parse_release_version

MAX_MANIFEST = 16 * MIB  # thousands of releases are well under 1 MiB


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a manifest: where (a TOML path such as ``releases[2].version``, empty
    for the file as a whole) and what."""

    at: str
    message: str


class _Problems:
    """Collects problems, each with its TOML path."""

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(Problem(path, message))


def render(where: Path | str, problems: Iterable[Problem]) -> list[str]:
    """``file: toml.path: message`` lines, as the CLI prints them."""
    return [f"{where}: {p.at}: {p.message}" if p.at else f"{where}: {p.message}" for p in problems]


def load(path: Path, *, verify_files: bool = True) -> Manifest:
    """Read and validate ``releases.toml``; raise :class:`ManifestError` listing every problem."""
    where = str(path)
    try:
        # Bounded, and a FIFO or device named with --manifest is refused at once (acrelease/inputs.py).
        text = read_regular(path, MAX_MANIFEST)[0].decode("utf-8")
    except InputProblem as refused:
        if refused.problem == "no such file":
            raise ManifestError(f"{where}: no release manifest here; create one with "
                                "`acrelease init --name NAME --target TARGET:CHIP`") from None
        raise ManifestError(f"{where}: cannot read the manifest: {refused.problem}; name the releases.toml "
                            "file with --manifest") from None
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{where}: cannot read the manifest ({exc})") from None
    manifest, problems = validate(text, path, verify_files=verify_files)
    if manifest is None or problems:
        raise ManifestError(render(where, problems))
    return manifest


def validate(text: str, path: Path, *, verify_files: bool) -> tuple[Manifest | None, tuple[Problem, ...]]:
    """The one validation of a manifest's text, for :func:`load` and for every edit (which checks
    the complete new text this way before it writes anything). ``path`` is where the text lives or
    will live: files are resolved against its folder. The manifest is ``None`` only when the text
    is not TOML at all."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return None, (Problem("", f"not valid TOML: {exc}"),)
    problems = _Problems()
    manifest = _parse(doc, path, problems, verify_files)
    return manifest, tuple(problems.items)


# Every key the manifest knows, per kind of table (docs/manifest.md documents each one); any
# other key is a typo that would otherwise be ignored silently (`chipp = "esp8266"`).
KNOWN_KEYS: Mapping[str, tuple[str, ...]] = {
    "": ("project", "targets", "releases"),
    "project": ("name", "version_define"),
    "targets": ("name", "chip", "env", "board", "filesystem"),
    "releases": ("version", "channel", "date", "notes", "allow_missing_version", "artifacts"),
    "artifact": ("file", "size", "md5", "sha256", "chip", "format", "flash_size", "version_found"),
}


def _closest(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f'did you mean "{close[0]}"?' if close else f"known keys: {', '.join(known)}"


def _unknown_keys(table: Mapping[str, Any], at: str, kind: str, problems: _Problems) -> None:
    known = KNOWN_KEYS[kind]
    for key in table:
        if key not in known:
            problems.add(f"{at}.{key}" if at else key, f'unknown key "{key}" ({_closest(key, known)})')


def _string(value: Any, path: str, problems: _Problems, *, required: bool = True) -> str | None:
    if value is None:
        if required:
            problems.add(path, "missing")
        return None
    if not isinstance(value, str):
        problems.add(path, f"expected a string, got {type(value).__name__}")
        return None
    if not value.isascii() and any("\ud800" <= c <= "\udfff" for c in value):
        # Undecodable bytes from the command line (surrogate escapes): UTF-8 TOML cannot hold them.
        problems.add(path, f"{value!r} holds bytes that are not UTF-8 text (the manifest is UTF-8)")
        return None
    return value


def _name(value: Any, path: str, problems: _Problems) -> str | None:
    name = _string(value, path, problems)
    if name is not None and not layout.valid_name(name):
        problems.add(path, f'"{name}" is not a valid name ({layout.NAME_RULE})')
        return None
    return name


def _flag(value: Any, path: str, problems: _Problems) -> bool:
    if not isinstance(value, bool):
        problems.add(path, "expected true or false")
        return False
    return value


def _parse(doc: dict[str, Any], path: Path, problems: _Problems, verify_files: bool) -> Manifest:
    _unknown_keys(doc, "", "", problems)
    project_doc = doc.get("project")
    if isinstance(project_doc, dict):
        _unknown_keys(project_doc, "project", "project", problems)
        project = _name(project_doc.get("name"), "project.name", problems) or ""
        if project and not layout.valid_project(project):
            problems.add("project.name", f'"{project}" is reserved: the server routes /{project}/...; '
                                         "choose another project name")
            project = ""
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
        _unknown_keys(tdoc, at, "targets", problems)
        name = _name(tdoc.get("name"), f"{at}.name", problems)
        chip: Chip | None = None
        chip_text = _string(tdoc.get("chip"), f"{at}.chip", problems, required=False)
        if chip_text is not None:
            chip = chips.lookup(chip_text)
            if chip is None:
                problems.add(f"{at}.chip", f'unknown chip "{chip_text}" (known: {chips.known_keys()})')
        env = _string(tdoc.get("env"), f"{at}.env", problems, required=False)
        board = _string(tdoc.get("board"), f"{at}.board", problems, required=False)
        filesystem = _flag(tdoc.get("filesystem", False), f"{at}.filesystem", problems)
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
    _unknown_keys(rdoc, at, "releases", problems)
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
    allow_missing = _flag(rdoc.get("allow_missing_version", False), f"{at}.allow_missing_version", problems)
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
                problems.add(f"{tat}.{kind}", f'unknown artifact kind "{kind}" ({_closest(kind, ARTIFACT_KINDS)}; '
                                              f'expected {" or ".join(ARTIFACT_KINDS)})')
                continue
            record = _parse_record(kind, record_doc, f"{tat}.{kind}", root, problems, verify_files)
            declared = targets[target_name].chip
            if record is not None and declared is not None and chips.lookup(record.chip) not in (None, declared):
                problems.add(f"{tat}.{kind}.chip", f'the image is for {record.chip} but target "{target_name}" is '
                                                   f"{declared.key}; a target's chip cannot change once it has "
                                                   "releases: add a new target for the other chip")
            if record is not None:
                artifacts.setdefault(target_name, {})[kind] = record
    if not artifacts and adoc == {}:
        problems.add(f"{at}.artifacts", "a release needs at least one target's firmware")
    if version is None or channel is None:
        return None
    return Release(version, channel, date or "", notes or "", artifacts, allow_missing)


def _parse_record(kind: str, doc: Any, at: str, root: Path, problems: _Problems,
                  verify_files: bool) -> ArtifactRecord | None:
    if not isinstance(doc, dict):
        problems.add(at, "expected a table")
        return None
    _unknown_keys(doc, at, "artifact", problems)  # reported, but no reason to distrust the record
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
    version_found = _flag(doc.get("version_found", True), f"{at}.version_found", problems)
    if len(problems.items) > before:
        return None
    assert file and md5 and sha256 and chip and fmt and isinstance(size, int)
    record = ArtifactRecord(kind, file, size, md5.lower(), sha256.lower(), chip, fmt, flash_size, version_found)
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
