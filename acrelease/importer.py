"""``acrelease import``: a folder of images (as AutoConnect's updateserver.py serves it) into releases.

Each sub-folder becomes a target named after it; files at the top level go to a target named
after their chip (``esp8266``, ``esp32``, ``esp32s3``...). The version of each image comes from

1. a semantic version in the file name (``fw-1.2.3.bin``, ``sketch_v1.2.3.bin``), which must also
   be inside the image as ``add`` requires (``--allow-missing-version`` records it anyway, marked);
2. else the app descriptor of an ESP-IDF project image; not of an Arduino-ESP32 build, whose
   descriptor (project ``arduino-lib-builder``) carries the core's version, not the sketch's;
3. else the one semantic version string the image contains;
4. else the version ``releases.toml`` already records for these exact bytes (so importing the
   folder again, or after importing one file alone with ``--version``, is a no-op for it).

Everything is decided before anything is written (:func:`plan_import`): files that are not
OTA-servable ESP images and folders deeper than one level are skipped with one line each; a file
whose version cannot be determined, two files claiming one target and version with different
bytes, or a conflict with what the manifest records make the whole import refused, one line per
problem, nothing written. The images are then recorded through :func:`acrelease.release.add_release`,
the code path of ``acrelease add`` (one call per version); if a call still fails, the manifest is
restored byte for byte and the files this import copied are removed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import semver

from acrelease import manifest as manifest_mod
from acrelease.catalog import layout
from acrelease.chips import Chip
from acrelease.errors import ImageError, ManifestError, UsageError, VersionError
from acrelease.image import AppDescriptor, contains_version, inspect_image
from acrelease.image.versions import semver_strings
from acrelease.inputs import InputProblem, read_regular
from acrelease.manifest import Manifest, Target, file_digests
from acrelease.release import DIST_DIR, MAX_IMAGE, AddResult, ArtifactInput, add_release
from acrelease.versioning import MAX_VERSION_LENGTH, parse_release_version

ARDUINO_DESCRIPTOR_PROJECT = "arduino-lib-builder"
"""The app descriptor's project name in Arduino-ESP32 builds (the core's libraries are built by
espressif/esp32-arduino-lib-builder), whose version is the core's, not the sketch's."""

_SUFFIXES = re.compile(r"(\.(bin|gz|signed|ino|elf|hex|img|ota|fw))+$", re.IGNORECASE)
_NAME_VERSION = re.compile(r"(?<![0-9.])[vV]?(\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?)")


@dataclass(frozen=True, slots=True)
class Image:
    """One image to record."""

    source: Path
    target: str
    chip: Chip
    version: semver.Version
    how: str
    """Where the version came from: ``its file name``, ``its app descriptor``, ``the version string in it``,
    ``--version`` or ``releases.toml`` (the bytes are recorded there already)."""
    version_found: bool
    """The version is inside the image as a C string (else recorded only with --allow-missing-version)."""
    sha256: str
    mtime: float


@dataclass(frozen=True)
class ImportPlan:
    manifest_path: Path
    project: str
    create: bool
    """No manifest yet: ``import`` writes one."""
    new_targets: tuple[Target, ...]
    images: tuple[Image, ...]
    skipped: tuple[str, ...]
    """One line per file or folder left out, and why."""
    problems: tuple[str, ...]
    """One line per reason to refuse the whole import (then nothing is written)."""


@dataclass(frozen=True)
class ImportResult:
    plan: ImportPlan
    added: tuple[AddResult, ...] = field(default=())

    @property
    def changed(self) -> bool:
        return self.plan.create or bool(self.plan.new_targets) or any(r.changed for r in self.added)


def import_images(source: Path, manifest_path: Path, *, project: str | None = None,
                  version: semver.Version | None = None, target: str | None = None,
                  allow_missing_version: bool = False) -> ImportResult:
    """Plan, then record (all or nothing); :class:`ManifestError` with every problem if refused."""
    plan = plan_import(source, manifest_path, project=project, version=version, target=target,
                       allow_missing_version=allow_missing_version)
    return record(plan, allow_missing_version=allow_missing_version)


def plan_import(source: Path, manifest_path: Path, *, project: str | None = None,
                version: semver.Version | None = None, target: str | None = None,
                allow_missing_version: bool = False) -> ImportPlan:
    """Everything ``import`` would record, skip and refuse; reads, never writes."""
    manifest = manifest_mod.load(manifest_path) if manifest_path.exists() else None
    if manifest is not None and project is not None and project != manifest.project:
        raise ManifestError(f'{manifest_path}: is the manifest of project "{manifest.project}", not "{project}"; '
                            f"pass --name {manifest.project} or another --manifest")
    if manifest is None and project is None:
        raise UsageError(f"{manifest_path} does not exist yet: name the project with --name PROJECT")
    name = project or (manifest.project if manifest else "")
    problems: list[str] = []
    if manifest is None and not layout.valid_project(name):
        problems.append(f'--name {name}: not a valid project name ({layout.NAME_RULE}; not "update")')
    skipped: list[str] = []
    single = source.exists() and not source.is_dir()
    if (version is not None or target is not None) and not single:
        raise UsageError(f"{source}: --version and --target apply to one FILE; for a folder they come from "
                         "the file names, the images and the sub-folders")
    found: list[Image] = []
    for path, folder_target in _candidates(source, skipped):
        image = _examine(path, folder_target or target, version, manifest, allow_missing_version, name, skipped,
                         problems)
        if image is not None:
            found.append(image)
    images = _deduplicate(found, skipped, problems)
    new_targets = _targets(images, manifest, problems)
    if manifest is not None:
        problems += _conflicts(images, manifest)
    if not images and not problems:
        problems.append(f"{source}: no ESP image to import" + (" (see the skipped files above)" if skipped else ""))
    return ImportPlan(manifest_path, name, manifest is None, tuple(new_targets), tuple(images), tuple(skipped),
                      tuple(problems))


def record(plan: ImportPlan, *, allow_missing_version: bool = False) -> ImportResult:
    """Write what ``plan`` says through ``add_release``; refused (nothing written) if it has problems."""
    if plan.problems:
        raise ManifestError(plan.problems)
    path = plan.manifest_path
    before = path.read_bytes() if path.exists() else None
    versions = sorted({image.version for image in plan.images})
    root = path.resolve().parent
    existing = set(_files_under(root / DIST_DIR, versions))
    added: list[AddResult] = []
    try:
        if plan.create:
            manifest_mod.init_manifest(path, plan.project, plan.new_targets)
        elif plan.new_targets:
            manifest_mod.add_targets(path, plan.new_targets)
        for release_version in versions:
            group = [image for image in plan.images if image.version == release_version]
            missing = not all(image.version_found for image in group)
            day = dt.date.fromtimestamp(max(image.mtime for image in group))  # when the images were made
            added.append(add_release(path, release_version,
                                     [ArtifactInput(image.target, image.source) for image in group],
                                     allow_missing_version=missing and allow_missing_version, today=day))
    except BaseException:
        _undo(path, before, root / DIST_DIR, versions, existing)
        raise
    return ImportResult(plan, tuple(added))


# -- finding the images --------------------------------------------------------------------------------


def _candidates(source: Path, skipped: list[str]) -> Iterator[tuple[Path, str | None]]:
    """(file, target named by its sub-folder or None) for every file of ``source``, one level deep."""
    if not source.exists():
        raise UsageError(f"{source}: no such file or folder; name the folder updateserver.py served (--catalog)")
    if not source.is_dir():
        yield source, None  # one file; what is not a regular file is said when it is read
        return
    for entry in _listdir(source):
        if entry.is_dir():
            for inner in _listdir(entry):
                if inner.is_dir():
                    skipped.append(f"{inner}: skipped: folders deeper than one level are not imported "
                                   f"(import it on its own: acrelease import {inner} --name PROJECT)")
                else:
                    yield inner, entry.name
        else:
            yield entry, None


def _listdir(folder: Path) -> list[Path]:
    """Entries of ``folder`` by name, without dot-files and dot-folders (temp files, .acrelease/)."""
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        raise ManifestError(f"{folder}: cannot be read ({exc.strerror})") from None


def _examine(path: Path, target: str | None, version: semver.Version | None, manifest: Manifest | None,
             allow_missing_version: bool, project: str, skipped: list[str], problems: list[str]) -> Image | None:
    try:
        data, info_stat = read_regular(path, MAX_IMAGE)  # bounded: a FIFO or a device is skipped, not a hang
    except InputProblem as exc:
        if exc.kind is not None:
            skipped.append(f"{path}: skipped: {exc}")
        else:
            problems.append(f"{path}: {exc}; fix its permissions or move it out")
        return None
    mtime = info_stat.st_mtime
    try:
        info = inspect_image(data)
    except ImageError as exc:
        looks_like_one = data[:1] == b"\xe9" or data[:2] == b"\x1f\x8b"
        skipped.append(f"{path}: skipped: {exc if looks_like_one else 'not an ESP firmware image'}")
        return None
    if info.problems:
        skipped.append(f"{path}: skipped: not an OTA image: {'; '.join(info.problems)}")
        return None
    target = target or info.chip.key
    sha256 = file_digests(data)[1]
    chosen = _version(path, data, info.app_descriptor, version, manifest, target, sha256)
    if isinstance(chosen, str):
        problems.append(f"{path}: {chosen}; rename it with its version (e.g. {_example(path)}) or import it alone: "
                        f"acrelease import {path} --name {project} --version X.Y.Z{_target_flag(target, info.chip)}")
        return None
    found_version, how = chosen
    inside = contains_version(data, str(found_version))
    if not inside and not allow_missing_version:
        problems.append(f'{path}: the version "{found_version}" (from {how}) is not in the image, so devices '
                        "would report another version and update forever; rename the file, import it alone with "
                        "the right --version, or pass --allow-missing-version to record it anyway")
        return None
    return Image(path, target, info.chip, found_version, how, inside, sha256, mtime)


def _version(path: Path, data: bytes, descriptor: AppDescriptor | None, given: semver.Version | None,
             manifest: Manifest | None, target: str, sha256: str) -> tuple[semver.Version, str] | str:
    """(version, where it came from), or why none could be determined."""
    if given is not None:
        return given, "--version"
    from_name = _name_versions(path.name)
    if from_name:
        # "fw-1.2.3-esp32.bin" reads as 1.2.3-esp32; take the plain 1.2.3 when only that is in the image.
        for candidate in from_name:
            for text in (candidate, candidate.split("+")[0].split("-")[0]):
                if contains_version(data, text):
                    return parse_release_version(text), "its file name"
        return parse_release_version(from_name[0]), "its file name"
    if descriptor is not None and descriptor.project_name != ARDUINO_DESCRIPTOR_PROJECT:
        try:
            return parse_release_version(descriptor.version), "its app descriptor"
        except VersionError:
            pass
    strings = semver_strings(data)
    if len(strings) == 1:
        return parse_release_version(strings[0]), "the version string in it"
    known = _recorded(manifest, target, sha256)
    if known is not None:
        return known, "releases.toml"
    if strings:
        return f"its version is ambiguous: the image holds several version strings ({', '.join(strings[:5])})"
    return "its version cannot be determined: none in its name, no ESP-IDF app descriptor, no version string"


def _name_versions(name: str) -> list[str]:
    stem = _SUFFIXES.sub("", name)
    return [m.group(1) for m in _NAME_VERSION.finditer(stem)
            if len(m.group(1)) <= MAX_VERSION_LENGTH and semver.Version.is_valid(m.group(1))]


def _recorded(manifest: Manifest | None, target: str, sha256: str) -> semver.Version | None:
    if manifest is None:
        return None
    for release in sorted(manifest.releases, key=lambda r: r.version, reverse=True):
        record = release.artifacts.get(target, {}).get("firmware")
        if record is not None and record.sha256 == sha256:
            return release.version
    return None


def _example(path: Path) -> str:
    stem = _SUFFIXES.sub("", path.name) or "firmware"
    return f"{stem}-1.2.3{path.name[len(stem):] or '.bin'}"


def _target_flag(target: str, chip: Chip) -> str:
    return "" if target == chip.key else f" --target {target}"


# -- checks across images ------------------------------------------------------------------------------


def _deduplicate(images: list[Image], skipped: list[str], problems: list[str]) -> list[Image]:
    """One image per (target, version): copies with the same bytes are one; other bytes are a problem."""
    kept: dict[tuple[str, semver.Version], Image] = {}
    for image in images:
        key = (image.target, image.version)
        first = kept.get(key)
        if first is None:
            kept[key] = image
        elif first.sha256 == image.sha256:
            skipped.append(f"{image.source}: skipped: the same bytes as {first.source}")
        else:
            problems.append(f"{image.source}: claims target {image.target} version {image.version} like "
                            f"{first.source}, with other bytes; rename one of them with its own version, "
                            "or move it out of the folder")
    return list(kept.values())


def _targets(images: list[Image], manifest: Manifest | None, problems: list[str]) -> list[Target]:
    """The targets to add to the manifest; a target whose images are of two chips is a problem."""
    chips: dict[str, Image] = {}
    for image in images:
        chips.setdefault(image.target, image)
    new: list[Target] = []
    for name, first in chips.items():
        others = [i for i in images if i.target == name and i.chip.key != first.chip.key]
        for other in others:
            problems.append(f"{other.source}: is an {other.chip.label} image, but {first.source} in the same "
                            f"target {name} is for {first.chip.label}; put each chip's images in its own folder")
        existing = manifest.target(name) if manifest is not None else None
        if existing is None:
            if not layout.valid_name(name):
                problems.append(f'{first.source.parent}: "{name}" is not a valid target name ({layout.NAME_RULE}); '
                                "rename the folder")
            new.append(Target(name, first.chip))
        elif existing.chip is not None and existing.chip.key != first.chip.key:
            problems.append(f"{first.source}: is an {first.chip.label} image, but target {name} in "
                            f"{manifest.path if manifest else ''} is {existing.chip.key}; rename the folder")
    return new


def _conflicts(images: list[Image], manifest: Manifest) -> list[str]:
    """Releases are immutable: a recorded (version, target) with other bytes refuses the import."""
    problems = []
    for image in images:
        release = manifest.release(image.version)
        record = release.artifacts.get(image.target, {}).get("firmware") if release else None
        if record is not None and record.sha256 != image.sha256:
            problems.append(f"{image.source}: version {image.version} of target {image.target} is already recorded "
                            f"in {manifest.path} with other bytes ({record.file}); releases are immutable: "
                            "give this image a new version")
    return problems


# -- undo ------------------------------------------------------------------------------------------------


def _files_under(dist: Path, versions: list[semver.Version]) -> Iterator[Path]:
    for version in versions:
        for folder, _, names in os.walk(dist / str(version)):
            for name in names:
                yield Path(folder) / name


def _undo(path: Path, before: bytes | None, dist: Path, versions: list[semver.Version],
          existing: set[Path]) -> None:
    """Put the manifest back byte for byte and remove what this import copied into dist/."""
    if before is None:
        path.unlink(missing_ok=True)
    else:
        tmp = path.with_name(f".{path.name}.import-undo")
        tmp.write_bytes(before)
        os.replace(tmp, path)
    for file in set(_files_under(dist, versions)) - existing:
        file.unlink(missing_ok=True)
    for version in versions:
        for folder, _, _ in sorted(os.walk(dist / str(version)), key=lambda item: -len(item[0])):
            with contextlib.suppress(OSError):  # not empty: it holds files of earlier releases
                os.rmdir(folder)
    with contextlib.suppress(OSError):
        dist.rmdir()
