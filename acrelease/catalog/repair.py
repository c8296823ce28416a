"""``acrelease repair``: check a catalog against its files and restore its last good index.

The order of preference, so that nothing the operator decided is lost when something survives:

1. ``index.json`` itself, when it parses (then repair only checks the files, and saves a
   last-good copy if the catalog has none for it, e.g. one published by an older acrelease);
2. the newest generation copy under ``.acrelease/generations/`` that parses (``history``): yanks,
   channels, dates and notes come back exactly as they were;
3. the published files themselves (``<project>/<target>/<project>-<target>-<version><suffix>``,
   ``layout``): sizes, hashes, chip and format are recomputed from the bytes; channel, notes and
   yanks are not in the files, and the report says so.

The restored index is written the way ``publish`` writes one (atomically, last, with its own
generation copy), under a generation number above every one seen, and the broken ``index.json``
is kept under ``.acrelease/broken/`` for a post-mortem. Files that the index names but that are
missing or differ from it are reported (the server answers 404 for them), never dropped: the
entry keeps its yank, and ``acrelease publish`` puts back a missing or truncated file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import semver

from acrelease.catalog import history, layout
from acrelease.catalog.index import (
    INDEX_NAME,
    Artifact,
    CatalogIndex,
    PublishedRelease,
    TargetIndex,
    sort_newest_first,
)
from acrelease.catalog.store import catalog_lock, next_generation, write_index
from acrelease.errors import CatalogError, ImageError
from acrelease.fsutil import TMP_MARK, write_atomic
from acrelease.image import inspect_filesystem, inspect_image

Action = Literal["none", "saved", "restored", "reconstructed"]

LOST_FROM_FILES = ("channel, release notes and yanks are not stored in the files: every reconstructed release "
                   "is on channel 'stable' and offered (yank again what was yanked: `acrelease yank VERSION "
                   "--catalog DIR`); release dates are the files' modification dates")


@dataclass(frozen=True)
class Damaged:
    file: str
    problem: str


@dataclass(frozen=True)
class RepairReport:
    catalog: Path
    index_problem: str | None
    """Why ``index.json`` could not be used; ``None`` when it was good."""
    action: Action
    """``none``: all good; ``saved``: a last-good copy was written for a good index;
    ``restored``: from a generation copy; ``reconstructed``: from the files."""
    index: CatalogIndex
    """The index the catalog has afterwards (or would have, with ``dry_run``)."""
    source: str | None = None
    """The copy restored from, relative to the catalog (``restored`` only)."""
    source_generation: int | None = None
    verified: int = 0
    damaged: tuple[Damaged, ...] = ()
    unindexed: tuple[str, ...] = ()
    """Files in the tree, named like published files, that the index does not name."""
    not_recovered: tuple[str, ...] = ()
    """What repair could not bring back, one sentence each."""
    kept_broken: str | None = None
    """Where the broken ``index.json`` was kept, relative to the catalog."""
    dry_run: bool = False

    @property
    def yanked(self) -> list[tuple[str, str, str]]:
        return [(t.project, t.target, str(r.version)) for t in self.index.targets.values()
                for r in t.releases if r.yanked]

    @property
    def releases(self) -> int:
        return sum(len(t.releases) for t in self.index.targets.values())


def repair(root: Path, *, dry_run: bool = False, lock_timeout: float = 30.0) -> RepairReport:
    """Check ``root`` and restore its last good index (see the module docstring)."""
    if not root.is_dir():
        raise CatalogError(f"{root}: no such catalog folder; pass the folder you publish into with --catalog")
    try:
        with catalog_lock(root, lock_timeout):
            return _repair_locked(root, dry_run)
    except OSError as exc:
        raise CatalogError(f"{root}: cannot repair, {exc.strerror or exc}; fix that and run repair again") from None


def _repair_locked(root: Path, dry_run: bool) -> RepairReport:
    state = history.read_index(root)
    problem = state.problem
    notes: list[str] = []
    source: tuple[str, int] | None = None
    if state.index is not None and not (state.index.generation == 0 and not (root / INDEX_NAME).exists()
                                        and any(published_names(root))):
        index, action = state.index, _save_needed(root, state.index)
    else:  # broken, deleted, or never written although files were published
        problem = problem or f"{root / INDEX_NAME}: missing, although published files are in the catalog"
        good = history.last_good(root)
        notes += [f"newer copy not readable: {why}" for why in (good.skipped if good else ())]
        if good is not None:
            index, action = good.index, "restored"
            source = (str(good.path.relative_to(root)), good.generation)
        else:
            index, skipped = reconstruct(root)
            action = "reconstructed"
            notes += [LOST_FROM_FILES, *skipped]
    if action != "none":
        index = replace(index, generation=next_generation(root, index), written=_utc_now())
    verified, damaged = verify_files(root, index)
    kept = None
    if not dry_run and action != "none":
        if state.index is None and not state.missing:
            kept = _keep_broken(root)
        write_index(root, index)
    return RepairReport(root, problem, action, index, source[0] if source else None,
                        source[1] if source else None, verified, tuple(damaged),
                        tuple(sorted(set(published_names(root)) - {a.file for _, _, a in index.artifacts()})),
                        tuple(notes), kept, dry_run)


def _save_needed(root: Path, index: CatalogIndex) -> Action:
    """``saved`` when a good, non-empty index.json has no identical last-good copy."""
    try:
        current = (root / INDEX_NAME).read_bytes()
    except FileNotFoundError:
        return "none"  # nothing was ever published here
    try:
        return "none" if history.generation_path(root, index.generation).read_bytes() == current else "saved"
    except OSError:
        return "saved"


def _keep_broken(root: Path) -> str | None:
    try:
        data = (root / INDEX_NAME).read_bytes()
    except OSError:
        return None
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    kept = root / history.STATE_DIR / "broken" / f"index-{stamp}.json"
    write_atomic(kept, data)
    return str(kept.relative_to(root))


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# -- checking files against an index ----------------------------------------------------------

def verify_files(root: Path, index: CatalogIndex) -> tuple[int, list[Damaged]]:
    """Every file the index names: inside the catalog, a regular file, size and hashes as indexed."""
    real_root = os.path.realpath(root)
    verified, damaged = 0, []
    for _, _, artifact in index.artifacts():
        problem = _check(real_root, artifact)
        if problem:
            damaged.append(Damaged(artifact.file, problem))
        else:
            verified += 1
    return verified, damaged


def _check(real_root: str, artifact: Artifact) -> str:
    real = os.path.realpath(os.path.join(real_root, artifact.file))
    if artifact.file.startswith("/") or not real.startswith(real_root + os.sep):
        return "lies outside the catalog"
    try:
        st = os.stat(real)
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file"
        if st.st_size != artifact.size:
            return f"size {st.st_size} differs from the index ({artifact.size})"
        with open(real, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if hashlib.sha256(data).hexdigest() != artifact.sha256 or hashlib.md5(data).hexdigest() != artifact.md5:
        return "content differs from the index (hash mismatch)"
    return ""


# -- the published files themselves ------------------------------------------------------------

@dataclass
class _Found:
    firmware: dict[str, list[tuple[Path, str]]] = field(default_factory=dict)
    """version -> [(path, suffix)] of firmware-named files."""
    filesystem: dict[str, Path] = field(default_factory=dict)


_SUFFIXES = sorted([*layout.FIRMWARE_SUFFIX.values(), layout.FILESYSTEM_SUFFIX], key=len, reverse=True)


def _name_parts(name: str, project: str, target: str) -> tuple[str, str] | None:
    """(version, suffix) of a published file's name, or ``None`` if it is not one."""
    prefix = f"{project}-{target}-"
    if not name.startswith(prefix) or TMP_MARK in name:
        return None
    rest = name[len(prefix):]
    for suffix in _SUFFIXES:
        if rest.endswith(suffix):
            version = rest[: -len(suffix)]
            return (version, suffix) if semver.Version.is_valid(version) else None
    return None


def _target_dirs(root: Path) -> Iterator[tuple[str, str, Path]]:
    for project in sorted(os.listdir(root)):
        if not layout.valid_project(project) or not (root / project).is_dir():
            continue
        for target in sorted(os.listdir(root / project)):
            if layout.valid_name(target) and (root / project / target).is_dir():
                yield project, target, root / project / target


def published_names(root: Path) -> Iterator[str]:
    """Catalog-relative names of the regular files named like published files."""
    for project, target, folder in _target_dirs(root):
        for name in sorted(os.listdir(folder)):
            if _name_parts(name, project, target) and (folder / name).is_file():
                yield f"{project}/{target}/{name}"


def reconstruct(root: Path) -> tuple[CatalogIndex, list[str]]:
    """An index rebuilt from the files alone, and one sentence per file that was left out."""
    skipped: list[str] = []
    targets: dict[tuple[str, str], TargetIndex] = {}
    for project, target, folder in _target_dirs(root):
        found = _Found()
        for name in sorted(os.listdir(folder)):
            parts = _name_parts(name, project, target)
            if parts is None or not (folder / name).is_file() or (folder / name).is_symlink():
                continue
            version, suffix = parts
            if suffix == layout.FILESYSTEM_SUFFIX:
                found.filesystem[version] = folder / name
            else:
                found.firmware.setdefault(version, []).append((folder / name, suffix))
        releases = []
        for version, candidates in found.firmware.items():
            where = f"{project}/{target}"
            if len(candidates) > 1:
                names = ", ".join(p.name for p, _ in candidates)
                skipped.append(f"{where} {version}: left out, several firmware files ({names}); "
                               "remove the ones that were never published and run repair again")
                continue
            release, problem = _release_from(root, candidates[0], version, found.filesystem.pop(version, None))
            if release is None:
                skipped.append(f"{candidates[0][0].relative_to(root)}: left out, {problem}")
            else:
                releases.append(release)
        skipped += [f"{path.relative_to(root)}: left out, no firmware of that version beside it"
                    for path in found.filesystem.values()]
        if releases:
            ordered = sort_newest_first(releases)
            targets[(project, target)] = TargetIndex(project, target, ordered[0].firmware.chip, ordered)
    return CatalogIndex(0, "", targets), skipped


def _release_from(root: Path, firmware: tuple[Path, str], version: str,
                  fs_path: Path | None) -> tuple[PublishedRelease | None, str]:
    path, suffix = firmware
    data = path.read_bytes()
    try:
        info = inspect_image(data)
    except ImageError as exc:
        return None, f"not an OTA image ({exc})"
    if info.problems:
        return None, "; ".join(info.problems)
    if layout.FIRMWARE_SUFFIX.get(info.format) != suffix:
        return None, f"a {info.format} image under a {suffix} name"
    fw = _artifact("firmware", root, path, data, info.chip.key, info.format, info.flash_size)
    fs = None
    if fs_path is not None:
        fs_data = fs_path.read_bytes()
        if not fs_data:
            return None, f"its filesystem image {fs_path.name} is empty"
        try:
            fs_format = inspect_filesystem(fs_data, where=fs_path.name).format
        except ImageError:
            fs_format = "raw"
        fs = _artifact("filesystem", root, fs_path, fs_data, info.chip.key, fs_format, None)
    stamp = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).replace(microsecond=0)
    published = stamp.isoformat().replace("+00:00", "Z")
    return PublishedRelease(semver.Version.parse(version), "stable", stamp.date().isoformat(), "", published,
                            fw, fs), ""


def _artifact(kind: Literal["firmware", "filesystem"], root: Path, path: Path, data: bytes, chip: str,
              fmt: str, flash_size: int | None) -> Artifact:
    return Artifact(kind, path.relative_to(root).as_posix(), len(data), hashlib.md5(data).hexdigest(),
                    hashlib.sha256(data).hexdigest(), chip, fmt, flash_size)
