"""Publishing releases into a catalog tree: atomic, immutable, idempotent.

The order of writes is what keeps the catalog consistent if ``publish`` dies at any point:

1. take the catalog lock (a second publish waits for it, up to ``lock_timeout`` seconds);
2. write each new file as a temp file in its final folder, fsync, ``os.replace`` to its name,
   fsync the folder — a file's final name only ever holds complete bytes, and a published
   name is never rewritten: the index decides what exists;
3. write ``index.json`` the same way, last. Until that rename the server keeps serving the
   previous index; afterwards, the new one. Files written by an interrupted run and never
   indexed are harmless orphans that the next run reuses after checking their hash;
4. keep a copy of that index as ``.acrelease/generations/index-<N>.json`` (``history``): the
   last good state that ``serve`` falls back to and ``acrelease repair`` restores when
   ``index.json`` is broken or deleted by hand. It is written after ``index.json`` so that a
   publish killed in between leaves a catalog the next ``publish`` simply continues.

Republishing the same bytes is a no-op; other bytes under a published version are refused
(releases are immutable, as on PyPI).
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

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
from acrelease.errors import CatalogError, VersionError
from acrelease.fsutil import TMP_MARK, write_atomic
from acrelease.manifest import ArtifactRecord, Manifest, Release

LOCK_NAME = ".acrelease.lock"


@dataclass(frozen=True)
class PublishResult:
    catalog: Path
    published: tuple[tuple[str, str], ...]
    """(target, version) pairs newly published."""
    unchanged: tuple[tuple[str, str], ...]
    """(target, version) pairs that were already published with the same bytes."""
    generation: int
    restored: tuple[str, ...] = ()
    """Catalog files of already published releases that were missing or truncated and were put
    back from the manifest's identical bytes (the index did not change for them)."""


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _describe(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"it is not writable ({exc.strerror})"
    return exc.strerror or str(exc)


@contextmanager
def catalog_lock(root: Path, timeout: float) -> Iterator[None]:
    """Exclusive lock on the catalog, waiting up to ``timeout`` seconds for another publish."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise CatalogError(f"{root}: cannot use this folder as a catalog: {_describe(exc)}") from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise CatalogError(f"{root}: another `acrelease publish` has held the catalog lock for "
                                       f"{timeout:.0f} s; wait for it to finish and try again") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def next_generation(root: Path, index: CatalogIndex) -> int:
    """One above both the index's generation and every kept copy, so a copy is never overwritten
    by another state under the same number (an index restored by hand may be older)."""
    newest = history.copies(root)
    return max(index.generation, newest[0][0] if newest else 0) + 1


def write_index(root: Path, index: CatalogIndex) -> None:
    """Write ``index.json`` atomically, then its generation copy; keep the newest ``history.KEEP``."""
    data = index.dumps()
    write_atomic(root / INDEX_NAME, data)
    try:
        write_atomic(history.generation_path(root, index.generation), data)
        for _, old in history.copies(root)[history.KEEP:]:
            old.unlink(missing_ok=True)
    except OSError as exc:
        raise CatalogError(f"{root}: generation {index.generation} is written, but not its last-good copy under "
                           f"{history.STATE_DIR}/ ({_describe(exc)}); fix that and run "
                           f"`acrelease repair --catalog {root}`") from None


def _remove_stale_temps(folder: Path) -> None:
    """Temp files left by a publish that was killed (we hold the lock, so none is live)."""
    if folder.is_dir():
        for stale in folder.glob(f".*{TMP_MARK}*"):
            stale.unlink(missing_ok=True)


def _sha256_of(path: Path) -> str | None:
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except FileNotFoundError:
        return None


def _artifact(manifest: Manifest, target: str, version: semver.Version, record: ArtifactRecord) -> Artifact:
    name = str(version)
    file = (layout.firmware_file(manifest.project, target, name, record.format) if record.kind == "firmware"
            else layout.filesystem_file(manifest.project, target, name))
    return Artifact("firmware" if record.kind == "firmware" else "filesystem", file, record.size, record.md5,
                    record.sha256, record.chip, record.format, record.flash_size)


def _select(manifest: Manifest, versions: Sequence[semver.Version] | None) -> list[Release]:
    if versions is None:
        return list(manifest.releases)
    chosen = []
    for version in versions:
        release = manifest.release(version)
        if release is None:
            known = ", ".join(str(v) for v in manifest.versions()) or "none"
            raise VersionError(f"{manifest.path}: no release {version} (recorded: {known})")
        chosen.append(release)
    return chosen


def _place(root: Path, manifest: Manifest, record: ArtifactRecord, artifact: Artifact) -> None:
    """Put the artifact's bytes at its catalog name unless identical bytes are already there."""
    dest = root / artifact.file
    if _sha256_of(dest) == artifact.sha256:
        return
    data = manifest.artifact_path(record).read_bytes()
    if hashlib.sha256(data).hexdigest() != artifact.sha256:
        raise CatalogError(f"{manifest.artifact_path(record)}: changed since it was recorded; "
                           "restore it or record a new version")
    write_atomic(dest, data)


class PublishProgress(Protocol):
    """Told what :func:`publish` is doing, for a progress bar (the CLI's, on a terminal)."""

    def begin(self, files: int, size: int) -> None:
        """``files`` new files of ``size`` bytes in all are about to be hashed and copied in."""

    def placed(self, name: str, size: int) -> None:
        """One of them is in the catalog (hashed, copied, fsynced)."""


def publish(manifest: Manifest, root: Path, versions: Sequence[semver.Version] | None = None, *,
            lock_timeout: float = 30.0, progress: PublishProgress | None = None) -> PublishResult:
    """Publish ``versions`` (default: every release in the manifest) of ``manifest`` into ``root``."""
    releases = _select(manifest, versions)
    try:
        with catalog_lock(root, lock_timeout):
            return _publish_locked(manifest, root, releases, progress)
    except OSError as exc:
        raise CatalogError(f"{root}: cannot publish, {_describe(exc)}; the catalog is unchanged") from None


def _publish_locked(manifest: Manifest, root: Path, releases: list[Release],
                    progress: PublishProgress | None) -> PublishResult:
    index = history.load_current(root)
    targets = dict(index.targets)
    if progress is not None:
        new = [record for release in releases for target, records in release.artifacts.items()
               if not _published(index, manifest.project, target, release.version) for record in records.values()]
        progress.begin(len(new), sum(record.size for record in new))
    published: list[tuple[str, str]] = []
    unchanged: list[tuple[str, str]] = []
    restored: list[str] = []
    now = _utc_now()
    for release in releases:
        for target, records in release.artifacts.items():
            key = (manifest.project, target)
            current = targets.get(key)
            artifacts = {kind: _artifact(manifest, target, release.version, rec) for kind, rec in records.items()}
            previous = current.release(release.version) if current else None
            if previous is not None:
                _check_same(manifest, target, previous, artifacts)
                unchanged.append((target, str(release.version)))
                restored += _put_back(root, manifest, records, previous)
                continue
            _remove_stale_temps(root / layout.target_dir(manifest.project, target))
            for kind, record in records.items():
                _place(root, manifest, record, artifacts[kind])
                if progress is not None:
                    progress.placed(artifacts[kind].file, record.size)
            entry = PublishedRelease(release.version, release.channel, release.date, release.notes, now,
                                     artifacts["firmware"], artifacts.get("filesystem"))
            declared = manifest.target(target)
            chip = declared.chip.key if declared and declared.chip else artifacts["firmware"].chip
            existing = current.releases if current else ()
            targets[key] = TargetIndex(manifest.project, target, chip, sort_newest_first([*existing, entry]))
            published.append((target, str(release.version)))
    if not published:
        return PublishResult(root, (), tuple(unchanged), index.generation, tuple(restored))
    new_index = CatalogIndex(next_generation(root, index), now, targets)
    write_index(root, new_index)
    return PublishResult(root, tuple(published), tuple(unchanged), new_index.generation, tuple(restored))


def _published(index: CatalogIndex, project: str, target: str, version: semver.Version) -> bool:
    current = index.target(project, target)
    return current is not None and current.release(version) is not None


def _put_back(root: Path, manifest: Manifest, records: Mapping[str, ArtifactRecord],
              previous: PublishedRelease) -> list[str]:
    """Rewrite published files that are missing or have the wrong size (a stat each, no hashing:
    this runs for every published release); the bytes are the manifest's, whose SHA-256
    ``_check_same`` found equal to the index's."""
    restored = []
    for artifact in previous.artifacts():
        try:
            intact = (root / artifact.file).stat().st_size == artifact.size
        except FileNotFoundError:
            intact = False
        if not intact and artifact.kind in records:
            _place(root, manifest, records[artifact.kind], artifact)
            restored.append(artifact.file)
    return restored


def _check_same(manifest: Manifest, target: str, previous: PublishedRelease,
                artifacts: dict[str, Artifact]) -> None:
    for kind, artifact in artifacts.items():
        old = previous.firmware if kind == "firmware" else previous.filesystem
        if old is None or old.sha256 != artifact.sha256:
            raise CatalogError(
                f"{manifest.project}/{target} {previous.version}: already published with other {kind} bytes "
                f"(sha256 {old.sha256[:12] if old else 'none'}…, manifest {artifact.sha256[:12]}…); published "
                "releases are immutable: record and publish a new version")


@dataclass(frozen=True)
class YankResult:
    project: str
    version: str
    yanked: bool
    """The state asked for: True for ``yank``, False for ``yank --undo``."""
    changed: tuple[str, ...]
    """Targets whose release changed state."""
    unchanged: tuple[str, ...]
    """Targets whose release was already in that state."""
    generation: int
    """The index's generation afterwards (unchanged when nothing changed)."""


def set_yanked(root: Path, project: str, version: semver.Version, yanked: bool, *,
               targets: Sequence[str] | None = None, lock_timeout: float = 30.0) -> YankResult:
    """Mark ``version`` of ``project`` as yanked (rolled back) or not, on ``targets`` (default:
    every target it is published for).

    A yanked release is no longer offered; devices running it are offered the newest release
    that is not yanked, even though it is older (an explicit rollback, docs/protocol.md H.1).
    Nothing is written when every release is already in the state asked for.
    """
    try:
        with catalog_lock(root, lock_timeout):
            index = history.load_current(root)
            chosen = _yank_targets(root, index, project, version, targets)
            new_targets = dict(index.targets)
            changed, unchanged = [], []
            for key in chosen:
                target = index.targets[key]
                release = target.release(version)
                if release is None or release.yanked == yanked:
                    unchanged.append(target.target)
                    continue
                releases = [PublishedRelease(r.version, r.channel, r.date, r.notes, r.published, r.firmware,
                                             r.filesystem, yanked if r.version == version else r.yanked)
                            for r in target.releases]
                new_targets[key] = TargetIndex(target.project, target.target, target.chip, tuple(releases))
                changed.append(target.target)
            generation = index.generation
            if changed:
                generation = next_generation(root, index)
                write_index(root, CatalogIndex(generation, _utc_now(), new_targets))
            return YankResult(project, str(version), yanked, tuple(changed), tuple(unchanged), generation)
    except OSError as exc:
        raise CatalogError(f"{root}: cannot update the index, {_describe(exc)}; the catalog is unchanged") from None


def _yank_targets(root: Path, index: CatalogIndex, project: str, version: semver.Version,
                  names: Sequence[str] | None) -> list[tuple[str, str]]:
    """The (project, target) keys a yank applies to; VersionError if it would touch nothing."""
    published = [key for key, target in sorted(index.targets.items())
                 if key[0] == project and target.release(version) is not None]
    if not published:
        raise VersionError(f"{root}: {project} {version} is not published in this catalog")
    if names is None:
        return published
    chosen = []
    for name in names:
        if (project, name) not in published:
            where = ", ".join(t for _, t in published)
            raise VersionError(f"{root}: {project} {version} is not published for target {name!r} "
                               f"(it is for: {where}); name one of those with --target")
        chosen.append((project, name))
    return list(dict.fromkeys(chosen))
