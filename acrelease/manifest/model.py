"""The manifest's values: frozen dataclasses, built by :mod:`.load` and written by :mod:`.edit`."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import semver

from acrelease.channels import STABLE
from acrelease.chips import Chip

MANIFEST_NAME = "releases.toml"
DEFAULT_DEFINE = "FW_VERSION"
DEFAULT_CHANNEL = STABLE


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
