"""Real catalog trees for server tests: files on disk + ``index.json`` written via CatalogIndex.

The layout and the index are exactly what ``acrelease publish`` writes (catalog/layout.py,
catalog/index.py), so the server under test reads the real format. Images default to the real
ESP images of ``tests.factories.images``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import semver

from acrelease.catalog import layout
from acrelease.catalog.index import (
    INDEX_NAME,
    Artifact,
    ArtifactKind,
    CatalogIndex,
    PublishedRelease,
    TargetIndex,
)
from acrelease.policy import ESP8266_FLASH_NIBBLE
from tests.factories import images

FIRST_BYTE_FORMATS = {0xE9: "plain", 0x1F: "gzip"}


def image_for(chip: str, version: str) -> bytes:
    """A real OTA image for ``chip`` with ``version`` embedded."""
    if chip == "esp8266":
        return images.esp8266_image(version)
    return images.esp32_image(chip, version)


def flash_size_of(data: bytes) -> int | None:
    """What the header's flash-size nibble declares (plain images only), as the device reads it."""
    if data[:1] != b"\xe9":
        return None
    return ESP8266_FLASH_NIBBLE.get(data[3] >> 4)


def artifact(kind: ArtifactKind, file: str, data: bytes, chip: str, fmt: str) -> Artifact:
    return Artifact(
        kind=kind,
        file=file,
        size=len(data),
        md5=hashlib.md5(data).hexdigest(),
        sha256=hashlib.sha256(data).hexdigest(),
        chip=chip,
        format=fmt,
        flash_size=flash_size_of(data) if kind == "firmware" else None,
    )


@dataclass
class CatalogBuilder:
    """Build a catalog under ``root``: ``add(...)`` releases, then ``write()`` the index."""

    root: Path
    targets: dict[tuple[str, str], TargetIndex] = field(default_factory=dict)
    generation: int = 0

    def target(self, project: str, target: str, chip: str) -> CatalogBuilder:
        """Declare a target with nothing published (yet)."""
        self.targets.setdefault((project, target), TargetIndex(project, target, chip, ()))
        return self

    def add(
        self,
        project: str,
        target: str,
        chip: str,
        version: str,
        firmware: bytes | None = None,
        *,
        filesystem: bytes | None = None,
        channel: str = "stable",
        yanked: bool = False,
        date: str = "2026-11-27",
        published: str = "2026-11-27T21:50:00Z",
    ) -> PublishedRelease:
        """Write the release's files (real bytes) and record it; returns the record."""
        data = firmware if firmware is not None else image_for(chip, version)
        fmt = FIRST_BYTE_FORMATS.get(data[0], "plain")
        fw_file = layout.firmware_file(project, target, version, fmt)
        self._write(fw_file, data)
        fs_artifact = None
        if filesystem is not None:
            fs_file = layout.filesystem_file(project, target, version)
            self._write(fs_file, filesystem)
            fs_artifact = artifact("filesystem", fs_file, filesystem, chip, "littlefs")
        release = PublishedRelease(
            version=semver.Version.parse(version),
            channel=channel,
            date=date,
            notes="",
            published=published,
            firmware=artifact("firmware", fw_file, data, chip, fmt),
            filesystem=fs_artifact,
            yanked=yanked,
        )
        self.target(project, target, chip)
        old = self.targets[(project, target)]
        releases = sorted(
            [*(r for r in old.releases if r.version != release.version), release],
            key=lambda r: r.version,
            reverse=True,
        )
        self.targets[(project, target)] = replace(old, releases=tuple(releases))
        return release

    def yank(self, project: str, target: str, version: str) -> None:
        old = self.targets[(project, target)]
        wanted = semver.Version.parse(version)
        self.targets[(project, target)] = replace(
            old, releases=tuple(replace(r, yanked=True) if r.version == wanted else r for r in old.releases)
        )

    def index(self) -> CatalogIndex:
        return CatalogIndex(self.generation, "2026-11-27T21:50:00Z", dict(self.targets))

    def write(self) -> CatalogIndex:
        """Write ``index.json`` atomically (temp file + rename, as publish does)."""
        self.generation += 1
        index = self.index()
        tmp = self.root / (INDEX_NAME + ".tmp")
        tmp.write_bytes(index.dumps())
        os.replace(tmp, self.root / INDEX_NAME)
        return index

    def _write(self, relative: str, data: bytes) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def demo_catalog(root: Path) -> CatalogBuilder:
    """The catalog most tests use: ESP8266 ``demo/d1mini`` 1.0.0, 1.1.0 (with a filesystem
    image), 1.2.0-beta.1 on ``beta``; ESP32 ``demo/esp32dev`` 1.0.0 and 1.1.0; an empty target."""
    builder = CatalogBuilder(root)
    fs = images.littlefs_image()
    builder.add("demo", "d1mini", "esp8266", "1.0.0")
    builder.add("demo", "d1mini", "esp8266", "1.1.0", filesystem=fs)
    builder.add("demo", "d1mini", "esp8266", "1.2.0-beta.1", channel="beta")
    builder.add("demo", "esp32dev", "esp32", "1.0.0")
    builder.add("demo", "esp32dev", "esp32", "1.1.0")
    builder.target("demo", "empty", "esp32s3")
    builder.write()
    return builder
