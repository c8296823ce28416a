"""Pure inspection of ESP firmware and filesystem images: bytes in, a frozen value out.

Nothing here prints or touches the disk; problems a user can cause raise :class:`ImageError`
with one line (what and what to do); the caller adds *where*. Format facts (all from the ESP
image format as documented by Espressif and the Arduino cores, docs/protocol.md C and D):

* An image starts with ``E9 <segments> <flash mode> <size<<4 | freq> <entry u32>``. ESP32-family
  images add a 16-byte extended header (``chip_id`` u16 at 12, ``hash_appended`` at 23).
* Segments are ``<load address u32> <length u32> <data>``; the xor of all segment data, seeded
  with 0xEF, is stored in the last byte of the 16-byte aligned padding; ESP32 images may append
  the SHA-256 of everything before it.
* The ESP8266 Arduino ``.bin`` is eboot at 0, padded to 0x1000, then the sketch's image; the
  core patches a length + CRC into it afterwards, so that app's checksum is stale *by design*.
* ESP8266 signed images are ``image <signature> <u32 LE signature length>`` (docs/protocol.md C.4);
  gzip images start ``1F 8B`` and only the ESP8266 client accepts them ([REQ] 18).
"""

from __future__ import annotations

from acrelease.chips import Chip
from acrelease.errors import ImageError
from acrelease.image.formats import ESP32_FREQS, FLASH_FREQS, FLASH_MODES, FLASH_SIZES, MERGED
from acrelease.image.locate import unwrap
from acrelease.image.model import AppDescriptor, FilesystemInfo, ImageInfo
from acrelease.image.walk import app_descriptor, chip_of

__all__ = [
    "AppDescriptor",
    "FilesystemInfo",
    "ImageInfo",
    "check_ota_image",
    "contains_version",
    "inspect_filesystem",
    "inspect_image",
]


def inspect_image(data: bytes) -> ImageInfo:
    """Describe a firmware file; ImageError if it is not an ESP image (empty, text, truncated, ...)."""
    container, body = unwrap(data)
    head, app = body.header, body.app or body.header
    chip = chip_of(head)
    warnings, problems = list(body.warnings), []
    gzip = container.format.startswith("gzip")
    mode, size_freq = container.body[head.start + 2], container.body[head.start + 3]
    descriptor = app_descriptor(container.body, app) if body.app else None
    checksum_ok: bool | None = app.checksum_ok
    if body.layout == "merged":
        problems.append(MERGED)
    elif body.layout == "esp8266-arduino":
        checksum_ok = None  # the core patched length + CRC in after esptool: stale by design
    elif chip.arch == "ESP32":
        if not app.checksum_ok:
            problems.append("image checksum does not match its segments: the file is corrupt; rebuild it")
        if app.sha256_ok is False:
            problems.append("appended SHA-256 does not match the image: the file is corrupt; rebuild it")
        if descriptor is None:
            problems.append(
                "no app descriptor (0xABCD5432 at 0x20): not an application image "
                "(a bootloader.bin?); pass the app .bin of the build"
            )
    else:
        problems.append(
            "ESP8266 image without the Arduino eboot loader (app at 0x1000): the Arduino "
            "OTA client would overwrite eboot with it; pass the sketch .bin of an Arduino build"
        )
    if gzip and not chip.accepts_gzip:
        problems.append(
            f"gzip-compressed image for {chip.label}: its OTA client only accepts a plain "
            "image starting with 0xE9; publish the uncompressed .bin"
        )
    if container.signature_length and chip.arch == "ESP32":
        warnings.append("signature appended to an ESP32-family image: its OTA client does not check it")
    return ImageInfo(
        chip=chip,
        format=container.format,
        layout=body.layout,
        size=len(data),
        # For gzip the client skips its flash-size check (docs/protocol.md C.4), so none is declared.
        flash_size=None if gzip else FLASH_SIZES[chip.arch].get(size_freq >> 4),
        flash_mode=FLASH_MODES.get(mode),
        flash_freq=FLASH_FREQS.get(chip.key, ESP32_FREQS).get(size_freq & 0xF),
        entry=app.entry,
        segments=len(app.loads),
        app_descriptor=descriptor,
        checksum_ok=checksum_ok,
        sha256_ok=app.sha256_ok,
        signature_length=container.signature_length,
        warnings=tuple(warnings),
        problems=tuple(problems),
    )


def check_ota_image(info: ImageInfo, chip: Chip | None, *, where: str) -> None:
    """Raise ImageError (one line naming ``where``) unless ``info`` can be served to ``chip``."""
    if info.problems:
        raise ImageError(f"{where}: " + "; ".join(info.problems))
    if chip is not None and chip.key != info.chip.key:
        raise ImageError(
            f"{where}: image is for {info.chip.label}, but the target's chip is {chip.key}: "
            f"build it for {chip.label} (or fix the target's chip)"
        )


_VERSION_BEFORE = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-+")


def contains_version(data: bytes, version: str) -> bool:
    """True if ``version`` is in the image as a whole C string (``"1.2.3\\0"``, not ``"11.2.3\\0"``).

    gzip images are searched decompressed, signed images without their signature.
    """
    if not version:
        return False
    try:
        payload = unwrap(data)[0].body
    except ImageError:
        payload = data
    needle = version.encode() + b"\0"
    at = payload.find(needle)
    while at >= 0:
        if at == 0 or payload[at - 1] not in _VERSION_BEFORE:
            return True
        at = payload.find(needle, at + 1)
    return False


def inspect_filesystem(data: bytes, *, where: str) -> FilesystemInfo:
    """Classify a filesystem image; ImageError for an empty file or a firmware image."""
    if not data:
        raise ImageError(f"{where}: empty file: expected a filesystem image (pio run -t buildfs)")
    try:
        inspect_image(data)
    except ImageError:
        pass
    else:
        raise ImageError(
            f"{where}: this is a firmware image, not a filesystem image: "
            "pass it as the firmware and the littlefs/spiffs .bin as the filesystem"
        )
    # littlefs: superblock "littlefs" name at offset 8 of block 0 or 1 (block size unknown: 4 KiB typ.)
    if any(data[at : at + 8] == b"littlefs" for at in (8, 0x1008, 0x2008)):
        return FilesystemInfo("littlefs", len(data))
    # FAT: boot sector signature; ESP32 wear-levelled images start one sector later
    if any(data[at : at + 2] == b"\x55\xaa" for at in (510, 0x1000 + 510)):
        return FilesystemInfo("fat", len(data))
    return FilesystemInfo("spiffs-or-raw", len(data))
