"""The catalog index: what has been published, with every fact the server needs.

``index.json`` sits at the catalog root and is the only thing the server trusts: a file in the
tree that the index does not name is never served. Publishing writes it last, atomically, so a
reader sees the previous index or the new one, never a mix. Sizes and hashes are computed once,
at publish; the server never hashes on a request.

Layout of ``index.json`` (format 1)::

    {"format": 1, "generation": 7, "written": "2026-11-27T21:50:00Z",
     "projects": {"demo": {"targets": {"d1mini": {"chip": "esp8266", "releases": [
        {"version": "1.1.0", "channel": "stable", "date": "2026-11-27", "notes": "",
         "published": "2026-11-27T21:50:00Z", "yanked": false,
         "firmware":   {"file": "demo/d1mini/demo-d1mini-1.1.0.bin", "size": 4480,
                        "md5": "…", "sha256": "…", "chip": "esp8266", "format": "plain",
                        "flash_size": 4194304},
         "filesystem": null}]}}}}}

Releases are kept newest first (by semantic version).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import semver

from acrelease.channels import STABLE
from acrelease.errors import CatalogError

INDEX_NAME = "index.json"
INDEX_FORMAT = 1

ArtifactKind = Literal["firmware", "filesystem"]
ARTIFACT_KINDS: tuple[ArtifactKind, ...] = ("firmware", "filesystem")


@dataclass(frozen=True, slots=True)
class Artifact:
    """One published file."""

    kind: ArtifactKind
    file: str
    """Path relative to the catalog root, ``/``-separated (``demo/d1mini/demo-d1mini-1.1.0.bin``)."""
    size: int
    md5: str
    """Lower-case hex: what goes into ``x-MD5``."""
    sha256: str
    """Lower-case hex: the strong ETag of downloads."""
    chip: str
    """Chip key from ``acrelease.chips`` (``esp8266``, ``esp32s3``...)."""
    format: str
    """``plain``, ``gzip``, ``signed``, ``gzip+signed`` for firmware; ``littlefs``, ``fat``, ``raw`` for filesystems."""
    flash_size: int | None = None
    """Flash size in bytes that the image header declares (plain ESP8266/ESP32 images only)."""

    @property
    def name(self) -> str:
        return self.file.rsplit("/", 1)[-1]

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "size": self.size,
            "md5": self.md5,
            "sha256": self.sha256,
            "chip": self.chip,
            "format": self.format,
            "flash_size": self.flash_size,
        }


@dataclass(frozen=True, slots=True)
class PublishedRelease:
    version: semver.Version
    channel: str
    date: str
    notes: str
    published: str
    firmware: Artifact
    filesystem: Artifact | None = None
    yanked: bool = False

    def artifacts(self) -> Iterator[Artifact]:
        yield self.firmware
        if self.filesystem is not None:
            yield self.filesystem

    def to_json(self) -> dict[str, Any]:
        return {
            "version": str(self.version),
            "channel": self.channel,
            "date": self.date,
            "notes": self.notes,
            "published": self.published,
            "yanked": self.yanked,
            "firmware": self.firmware.to_json(),
            "filesystem": self.filesystem.to_json() if self.filesystem else None,
        }


@dataclass(frozen=True, slots=True)
class TargetIndex:
    project: str
    target: str
    chip: str
    releases: tuple[PublishedRelease, ...]
    """Newest first."""

    def release(self, version: semver.Version) -> PublishedRelease | None:
        return next((r for r in self.releases if r.version == version), None)

    def to_json(self) -> dict[str, Any]:
        return {"chip": self.chip, "releases": [r.to_json() for r in self.releases]}


@dataclass(frozen=True)
class CatalogIndex:
    generation: int = 0
    written: str = ""
    targets: Mapping[tuple[str, str], TargetIndex] = field(default_factory=dict)

    def target(self, project: str, target: str) -> TargetIndex | None:
        return self.targets.get((project, target))

    def projects(self) -> list[str]:
        return sorted({project for project, _ in self.targets})

    def targets_of(self, project: str) -> list[TargetIndex]:
        return [t for (p, _), t in sorted(self.targets.items()) if p == project]

    def artifacts(self) -> Iterator[tuple[TargetIndex, PublishedRelease, Artifact]]:
        for target in self.targets.values():
            for release in target.releases:
                for artifact in release.artifacts():
                    yield target, release, artifact

    def to_json(self) -> dict[str, Any]:
        projects: dict[str, Any] = {}
        for (project, name), target in sorted(self.targets.items()):
            projects.setdefault(project, {"targets": {}})["targets"][name] = target.to_json()
        return {"format": INDEX_FORMAT, "generation": self.generation, "written": self.written,
                "projects": projects}

    def dumps(self) -> bytes:
        return (json.dumps(self.to_json(), indent=1, sort_keys=False) + "\n").encode()


def sort_newest_first(releases: list[PublishedRelease]) -> tuple[PublishedRelease, ...]:
    return tuple(sorted(releases, key=lambda r: r.version, reverse=True))


def parse_index(data: bytes, where: str = INDEX_NAME) -> CatalogIndex:
    """Parse ``index.json`` bytes; raise :class:`CatalogError` naming the first broken field.

    The message says what is wrong and where; callers add what to do (``acrelease repair``)."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CatalogError(f"{where}: not valid JSON ({exc})") from None
    try:
        return _from_json(doc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CatalogError(f"{where}: malformed index ({type(exc).__name__}: {exc})") from None


def load_index(root: Path) -> CatalogIndex:
    """Read ``root/index.json``; an absent index is an empty catalog. The write side uses
    ``history.load_current`` instead, which also refuses an index deleted by hand."""
    path = root / INDEX_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return CatalogIndex()
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read the catalog index ({exc.strerror})") from None
    try:
        return parse_index(data, str(path))
    except CatalogError as exc:
        raise CatalogError(f"{exc}; run `acrelease repair --catalog {root}` to restore the last good index") from None


def _artifact(kind: ArtifactKind, doc: Mapping[str, Any]) -> Artifact:
    flash_size = doc.get("flash_size")
    artifact = Artifact(
        kind=kind,
        file=str(doc["file"]),
        size=int(doc["size"]),
        md5=str(doc["md5"]).lower(),
        sha256=str(doc["sha256"]).lower(),
        chip=str(doc["chip"]),
        format=str(doc["format"]),
        flash_size=int(flash_size) if flash_size is not None else None,
    )
    if len(artifact.md5) != 32 or len(artifact.sha256) != 64 or artifact.size <= 0:
        raise ValueError(f"artifact {artifact.file!r} has a bad size or hash")
    return artifact


def _from_json(doc: Mapping[str, Any]) -> CatalogIndex:
    if doc.get("format") != INDEX_FORMAT:
        raise ValueError(f"unsupported index format {doc.get('format')!r}")
    targets: dict[tuple[str, str], TargetIndex] = {}
    for project, pdoc in doc["projects"].items():
        for name, tdoc in pdoc["targets"].items():
            releases = []
            for rdoc in tdoc["releases"]:
                fs = rdoc.get("filesystem")
                releases.append(PublishedRelease(
                    version=semver.Version.parse(rdoc["version"]),
                    channel=str(rdoc.get("channel", STABLE)),
                    date=str(rdoc.get("date", "")),
                    notes=str(rdoc.get("notes", "")),
                    published=str(rdoc.get("published", "")),
                    firmware=_artifact("firmware", rdoc["firmware"]),
                    filesystem=_artifact("filesystem", fs) if fs else None,
                    yanked=bool(rdoc.get("yanked", False)),
                ))
            targets[(project, name)] = TargetIndex(project, name, str(tdoc["chip"]), sort_newest_first(releases))
    return CatalogIndex(int(doc.get("generation", 0)), str(doc.get("written", "")), targets)
