"""The values image inspection returns."""

from __future__ import annotations

from dataclasses import dataclass

from acrelease.chips import Chip


@dataclass(frozen=True)
class AppDescriptor:
    """ESP-IDF ``esp_app_desc_t`` at 0x20; ``version`` is the IDF/Arduino core's, not the sketch's."""

    version: str
    project_name: str
    time: str
    date: str
    idf_version: str


@dataclass(frozen=True)
class ImageInfo:
    chip: Chip
    format: str  # "plain" | "gzip" | "signed" | "gzip+signed"
    layout: str  # "app" | "esp8266-arduino" | "merged"
    size: int
    flash_size: int | None
    flash_mode: str | None
    flash_freq: str | None
    entry: int | None
    segments: int | None
    app_descriptor: AppDescriptor | None
    checksum_ok: bool | None
    sha256_ok: bool | None
    signature_length: int | None
    warnings: tuple[str, ...]
    problems: tuple[str, ...]

    @property
    def servable(self) -> bool:
        """True when the stock OTA client of ``chip`` can take this file as it is."""
        return not self.problems


@dataclass(frozen=True)
class FilesystemInfo:
    format: str  # "littlefs" | "fat" | "spiffs-or-raw"
    size: int
