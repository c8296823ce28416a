"""Recording a release: the one code path behind ``acrelease add``, ``build`` and ``collect``.

Everything is checked before anything is written: each firmware is inspected as an OTA image
for its target's chip and must carry the release's version string (the guard against the
update loop of devices that never see their version change); each filesystem image must be a
filesystem, not an app. Only then are the files copied into ``dist/<version>/<target>/`` and
the manifest rewritten, so a refused ``add`` leaves both untouched.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import semver

from acrelease import manifest as manifest_mod
from acrelease.chips import Chip
from acrelease.errors import ImageError, ManifestError, VersionError
from acrelease.fsutil import replacing
from acrelease.image import ImageInfo, check_ota_image, contains_version, inspect_filesystem, inspect_image
from acrelease.image.formats import FLASH_SIZES
from acrelease.inputs import read_input
from acrelease.manifest import ArtifactRecord, Manifest, Release, Target, file_digests

DIST_DIR = "dist"
# No image is larger than the largest flash an image header can declare (ESP32 family, 128 MiB).
MAX_IMAGE = max(max(sizes.values()) for sizes in FLASH_SIZES.values())


@dataclass(frozen=True, slots=True)
class ArtifactInput:
    target: str
    firmware: Path
    filesystem: Path | None = None


@dataclass(frozen=True)
class AddResult:
    version: semver.Version
    changed: bool
    """False when every artifact was already recorded with the same bytes (a no-op)."""
    release: Release
    added_targets: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class _Staged:
    target: Target
    records: tuple[ArtifactRecord, ...]
    sources: tuple[Path, ...]
    learnt_chip: Chip | None


def version_hint(define: str) -> str:
    """The sketch lines that make the version reach the binary, for error messages."""
    return (f"compile it in (build flag -D{define}=\\\"X.Y.Z\\\", which `acrelease build` passes) and use it, "
            f"e.g. ESPhttpUpdate.update(client, url, {define});")


def _read(path: Path) -> bytes:
    """A firmware or filesystem image the user named, bounded (``/dev/zero`` is one line, not a hang)."""
    return read_input(path, what="an image file", limit=MAX_IMAGE, error=ImageError,
                      hint="pass the image file itself (.bin, .bin.gz, .bin.signed)")


def read_image(path: Path) -> tuple[bytes, ImageInfo]:
    """Read and inspect an image file; errors name the file."""
    data = _read(path)
    try:
        return data, inspect_image(data)
    except ImageError as exc:
        raise ImageError(f"{path}: {exc}") from None


def _dist_name(manifest: Manifest, version: semver.Version, target: str, source: Path) -> str:
    return f"{DIST_DIR}/{version}/{target}/{source.name}"


def _stage(manifest: Manifest, version: semver.Version, item: ArtifactInput,
           allow_missing_version: bool) -> _Staged:
    target = manifest.target(item.target)
    if target is None:
        known = ", ".join(t.name for t in manifest.targets) or "none"
        raise ManifestError(f'{manifest.path}: targets: no target named "{item.target}" (known: {known}); '
                            f"add it to [[targets]] first")
    data, info = read_image(item.firmware)
    check_ota_image(info, target.chip, where=str(item.firmware))
    found = contains_version(data, str(version))
    if not found and not allow_missing_version:
        raise ImageError(f'{item.firmware}: the version string "{version}" is not in the image, so devices '
                         f"would report a stale version and update forever; {version_hint(manifest.version_define)} "
                         "(or pass --allow-missing-version)")
    md5, sha256 = file_digests(data)
    records = [ArtifactRecord("firmware", _dist_name(manifest, version, target.name, item.firmware), len(data),
                              md5, sha256, info.chip.key, info.format, info.flash_size, found)]
    sources = [item.firmware]
    if item.filesystem is not None:
        fs_data = _read(item.filesystem)
        fs_info = inspect_filesystem(fs_data, where=str(item.filesystem))
        fs_md5, fs_sha = file_digests(fs_data)
        records.append(ArtifactRecord("filesystem", _dist_name(manifest, version, target.name, item.filesystem),
                                      len(fs_data), fs_md5, fs_sha, info.chip.key, fs_info.format, None, True))
        sources.append(item.filesystem)
    if records[0].file == records[-1].file and len(records) == 2:
        raise ImageError(f"{item.filesystem}: has the same file name as the firmware; rename one of them")
    learnt = info.chip if target.chip is None else None
    return _Staged(target, tuple(records), tuple(sources), learnt)


def _unchanged(existing: Release, staged: _Staged, manifest: Manifest) -> bool:
    """True if ``existing`` already holds these exact bytes for the target; raise if other bytes."""
    recorded = existing.artifacts.get(staged.target.name)
    if recorded is None:
        return False
    for record in staged.records:
        old = recorded.get(record.kind)
        if old is None or old.sha256 != record.sha256:
            raise VersionError(
                f"{manifest.path}: version {existing.version} of target '{staged.target.name}' is already recorded "
                f"with other {record.kind} bytes (sha256 {old.sha256[:12] if old else 'none'}…, new "
                f"{record.sha256[:12]}…); releases are immutable: record a new version instead")
    return True


def _copy_atomic(source: Path, dest: Path) -> bool:
    """Copy ``source`` to ``dest`` through a temp file and a rename; False if it is already there."""
    if dest.exists() and dest.resolve() == source.resolve():
        return False
    with replacing(dest) as out, source.open("rb") as src:
        shutil.copyfileobj(src, out)
    return True


def _remove_created(paths: list[Path], dist: Path) -> None:
    """Undo a failed add: the files it copied, then the folders that held only them."""
    for path in paths:
        path.unlink(missing_ok=True)
        for folder in path.parents:
            if folder == dist.parent or not folder.is_relative_to(dist):
                break
            try:
                folder.rmdir()
            except OSError:  # not empty: it holds other releases' files
                break


def _same_terms(existing: Release, channel: str | None, notes: str | None, where: Path) -> None:
    """A release has one channel and one set of notes: another target joining it may repeat
    them, never change them (an option that would be silently ignored is refused instead)."""
    for option, given, recorded in (("--channel", channel, existing.channel), ("--notes", notes, existing.notes)):
        if given is not None and given != recorded:
            raise VersionError(f'{where}: {existing.version} is already recorded with {option[2:]} "{recorded}"; '
                               f'{option} "{given}" would not change it: leave {option} out to add to this '
                               "release, or record a new version")


def add_release(manifest_path: Path, version: semver.Version, inputs: Sequence[ArtifactInput], *,
                channel: str | None = None, notes: str | None = None,
                allow_missing_version: bool = False, today: dt.date | None = None) -> AddResult:
    """Validate ``inputs`` as release ``version`` and record them; all or nothing.

    Adding a target to an existing version is allowed (one ``add`` per board); the same bytes
    again is a no-op (``changed=False``); other bytes under a recorded version are refused.
    ``channel`` and ``notes`` default to ``stable`` and none for a new release, and to the
    recorded ones for an existing release (which they may repeat but not change).

    Order: images checked, then the complete new manifest built and validated in memory
    (:func:`acrelease.manifest.plan_release`, the checks of :func:`acrelease.manifest.load`),
    then files copied into ``dist/``, then the manifest replaced in one write. A refusal at
    any step before the write leaves ``releases.toml`` and ``dist/`` byte for byte as they were.
    """
    manifest = manifest_mod.load(manifest_path)
    if not inputs:
        raise ManifestError(f"{manifest_path}: nothing to add: name a target and its firmware file")
    names = [i.target for i in inputs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ManifestError(f"{manifest_path}: target {', '.join(duplicates)} given more than once")
    staged = [_stage(manifest, version, item, allow_missing_version) for item in inputs]
    existing = manifest.release(version)
    if existing is not None:
        _same_terms(existing, channel, notes, manifest_path)
    new = [s for s in staged if existing is None or not _unchanged(existing, s, manifest)]
    release = existing or Release(version, channel if channel is not None else manifest_mod.DEFAULT_CHANNEL,
                                  (today or dt.date.today()).isoformat(), notes or "", {}, allow_missing_version)
    if not new:
        return AddResult(version, False, release)

    blame = {"channel": "--channel", "notes": "--notes"}
    for item in new:
        for record, source in zip(item.records, item.sources, strict=True):
            blame[f"artifacts.{item.target.name}.{record.kind}.file"] = str(source)
    pending = manifest_mod.plan_release(
        manifest_path, release, {s.target.name: s.records for s in new},
        learnt_chips={s.target.name: s.learnt_chip for s in new if s.learnt_chip is not None}, blame=blame)

    created: list[Path] = []
    try:
        for item in new:
            for record, source in zip(item.records, item.sources, strict=True):
                dest = manifest.root / record.file
                if _copy_atomic(source, dest):
                    created.append(dest)
        pending.write()  # the one write of the manifest; it raises ManifestError, never OSError
    except OSError as exc:  # copying into dist/: disk full, read-only, ...
        _remove_created(created, manifest.root / DIST_DIR)
        raise ManifestError(f"{manifest_path}: cannot record {version}: {exc.strerror or exc}; "
                            "nothing was changed") from None
    except BaseException:
        _remove_created(created, manifest.root / DIST_DIR)
        raise
    final = pending.manifest.release(version)
    assert final is not None
    return AddResult(version, True, final, tuple(s.target.name for s in new))


def check_release_terms(manifest: Manifest, version: semver.Version, target: Target, *,
                        channel: str | None = None, notes: str | None = None) -> None:
    """Refuse now what :func:`add_release` would refuse at the end about the release itself
    (``--channel``, ``--notes``), for callers that have minutes of building before that call.
    The same validation: the new manifest is planned with a stand-in firmware record for
    ``target`` and thrown away."""
    existing = manifest.release(version)
    if existing is not None:
        _same_terms(existing, channel, notes, manifest.path)
        return
    release = Release(version, channel if channel is not None else manifest_mod.DEFAULT_CHANNEL,
                      dt.date.today().isoformat(), notes or "")
    stand_in = ArtifactRecord("firmware", f"{DIST_DIR}/{version}/{target.name}/firmware.bin", 1, "0" * 32, "0" * 64,
                              target.chip.key if target.chip else "unknown", "plain")
    manifest_mod.plan_release(manifest.path, release, {target.name: [stand_in]},
                              blame={"channel": "--channel", "notes": "--notes"})
