"""One table of chip facts.

Facts come from the ESP image format as documented by Espressif (the extended header's
``chip_id`` field) and the Arduino cores' update clients (which ``x-<ARCH>-*`` header family
a device sends). Nothing else in acrelease hard-codes a chip.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Chip:
    key: str
    """Lower-case family name used in manifests and the index (``esp32s3``)."""
    label: str
    """Human spelling (``ESP32-S3``)."""
    arch: str
    """Header family the Arduino update client sends: ``ESP8266`` or ``ESP32`` (``x-ESP32-*``)."""
    image_chip_id: int | None
    """``chip_id`` of the ESP32-family extended image header; ``None`` for ESP8266 (no extended header)."""
    accepts_gzip: bool
    """Whether the stock OTA client accepts a gzip-compressed image (only the ESP8266 core)."""
    bootloader_offset: int | None
    """Flash offset of the second-stage bootloader in a merged full-flash image."""


CHIPS: tuple[Chip, ...] = (
    Chip("esp8266", "ESP8266", "ESP8266", None, True, None),
    Chip("esp32", "ESP32", "ESP32", 0x0000, False, 0x1000),
    Chip("esp32s2", "ESP32-S2", "ESP32", 0x0002, False, 0x1000),
    Chip("esp32c3", "ESP32-C3", "ESP32", 0x0005, False, 0x0),
    Chip("esp32s3", "ESP32-S3", "ESP32", 0x0009, False, 0x0),
    Chip("esp32c2", "ESP32-C2", "ESP32", 0x000C, False, 0x0),
    Chip("esp32c6", "ESP32-C6", "ESP32", 0x000D, False, 0x0),
    Chip("esp32h2", "ESP32-H2", "ESP32", 0x0010, False, 0x0),
    Chip("esp32p4", "ESP32-P4", "ESP32", 0x0012, False, 0x2000),
    Chip("esp32c5", "ESP32-C5", "ESP32", 0x0017, False, 0x2000),
)

_BY_KEY = {chip.key: chip for chip in CHIPS}
_BY_IMAGE_ID = {chip.image_chip_id: chip for chip in CHIPS if chip.image_chip_id is not None}

ARCHES: tuple[str, ...] = ("ESP8266", "ESP32")


def normalise_key(text: str) -> str:
    """``ESP32-S3``, ``esp32_s3`` and ``esp32s3`` all name the same chip."""
    return text.strip().lower().replace("-", "").replace("_", "")


def lookup(text: str) -> Chip | None:
    """The chip named by ``text`` in any common spelling, or ``None``."""
    return _BY_KEY.get(normalise_key(text))


def by_image_chip_id(chip_id: int) -> Chip | None:
    """The ESP32-family chip whose image header carries ``chip_id``, or ``None``."""
    return _BY_IMAGE_ID.get(chip_id)


def known_keys() -> str:
    """Comma-separated list of chip keys, for error messages."""
    return ", ".join(chip.key for chip in CHIPS)
