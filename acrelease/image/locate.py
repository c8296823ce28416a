"""Locating the image in a file: containers (gzip, signature) and layouts (app, Arduino, merged)."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from acrelease.errors import ImageError
from acrelease.image.formats import (
    APP_OFFSET,
    ARDUINO_APP_OFFSET,
    BOOTLOADER_OFFSETS,
    GZIP_MAGIC,
    MAGIC,
    MAX_GUNZIP,
    MAX_SIGNATURE,
    PARTITION_MAGIC,
    PARTITION_TABLE_OFFSET,
)
from acrelease.image.walk import Walk, image_at, partition_app_offset


def _looks_like(data: bytes) -> str:
    """A short description of what a non-image file looks like, for the error message."""
    head = data[:512]
    if head.startswith(b"\x7fELF"):
        return "an ELF file: the build's .elf, not its .bin"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"starts with {data[:4].hex(' ')}"
    return (
        "a text file"
        if all(c.isprintable() or c in "\r\n\t" for c in text)
        else f"starts with {data[:4].hex(' ')}"
    )


@dataclass(frozen=True)
class Body:
    layout: str
    header: Walk  # the image at byte 0 (or the bootloader), whose header the client checks
    app: Walk | None  # the application image, when found
    warnings: tuple[str, ...] = ()


def _complete(data: bytes, start: int) -> tuple[Walk, tuple[str, ...]]:
    """The image at ``start`` that ends the file (0xFF padding after it is tolerated)."""
    try:
        return image_at(data, start, len(data), exact=True), ()
    except ImageError as whole_error:
        try:
            walk = image_at(data, start, len(data), exact=False)
        except ImageError:
            raise whole_error from None
    tail = data[walk.end :]
    if tail.count(0xFF) == len(tail):  # padded up to a flash boundary: harmless
        return walk, (f"{len(tail)} bytes of 0xFF padding after the image",)
    raise ImageError(
        f"{len(tail)} unexpected bytes after the ESP image that ends at 0x{walk.end:x}: "
        "not a plain app image; export the app-only .bin"
    )


def _body(data: bytes) -> Body:
    """Locate the image(s) in an unwrapped (not gzip, no signature) file."""
    if data[0] != MAGIC:
        for offset in BOOTLOADER_OFFSETS:
            if data[offset : offset + 1] == bytes([MAGIC]) and data[:offset].count(0xFF) == offset:
                # 0xFF up to the chip's bootloader offset, then an image: a full-flash image
                return _merged(data, image_at(data, offset, len(data), exact=False))
        raise ImageError(
            f"not an ESP firmware image ({_looks_like(data)}; an image starts with 0xE9, "
            "or 1F 8B when gzip-compressed): pass the firmware .bin of the build"
        )
    # Only now, once the magic byte says it is meant to be an image, is a short file "truncated".
    if len(data) < 8:
        raise ImageError(f"truncated ESP image ({len(data)} bytes): too short for an image header")
    first = image_at(data, 0, len(data), exact=False)
    if (
        first.arch == "ESP32"
        and len(data) >= PARTITION_TABLE_OFFSET + 32
        and first.end <= PARTITION_TABLE_OFFSET
        and (
            data[PARTITION_TABLE_OFFSET : PARTITION_TABLE_OFFSET + 2] == PARTITION_MAGIC
            or data[APP_OFFSET : APP_OFFSET + 1] == bytes([MAGIC])
        )
    ):
        return _merged(data, first)  # bootloader at 0 (S3, C3, ...), then partition table / app
    if first.arch == "ESP8266" and first.end <= ARDUINO_APP_OFFSET and first.end != len(data):
        if len(data) <= ARDUINO_APP_OFFSET:
            raise ImageError(
                f"truncated ESP8266 Arduino image ({len(data)} bytes): it ends before the "
                "sketch at 0x1000; copy the complete .bin again"
            )
        if data[ARDUINO_APP_OFFSET] == MAGIC:
            app, warnings = _complete(data, ARDUINO_APP_OFFSET)
            return Body("esp8266-arduino", first, app, warnings)
    whole, warnings = _complete(data, 0)
    return Body("app", whole, whole, warnings)


def _merged(data: bytes, boot: Walk) -> Body:
    offset = partition_app_offset(data)
    if offset is None and data[APP_OFFSET : APP_OFFSET + 1] == bytes([MAGIC]):
        offset = APP_OFFSET  # no partition table: the app where the default table puts it
    app = None
    if offset is not None and offset < len(data):
        try:
            app = image_at(data, offset, len(data), exact=False)
        except ImageError:
            app = None
    return Body("merged", boot, app)


@dataclass(frozen=True)
class Container:
    format: str
    body: bytes
    signature_length: int | None


def _gunzip(data: bytes) -> tuple[bytes, bytes]:
    """(decompressed, bytes after the gzip stream); bounded by MAX_GUNZIP."""
    unzip = zlib.decompressobj(wbits=31)
    try:
        out = unzip.decompress(data, MAX_GUNZIP + 1)
    except zlib.error as exc:
        raise ImageError(f"corrupt gzip image ({exc}): compress the .bin again") from None
    if len(out) > MAX_GUNZIP:
        raise ImageError(f"gzip image expands to more than {MAX_GUNZIP >> 20} MiB: not a firmware image")
    if not unzip.eof:
        raise ImageError("truncated gzip image: the compressed stream ends early; copy the complete file")
    return out, unzip.unused_data


def _signature_split(data: bytes) -> int | None:
    """Signature length if ``data`` can be ``prefix <signature> <u32 LE length>``, else None."""
    if len(data) < 12:
        return None
    length = int(struct.unpack_from("<I", data, len(data) - 4)[0])
    return length if 0 < length <= min(MAX_SIGNATURE, len(data) - 12) else None


def unwrap(data: bytes) -> tuple[Container, Body]:
    """Strip gzip and signature containers; returns the container and the located image."""
    if not data:
        raise ImageError("empty file: expected an ESP firmware image")
    if data[:2] == GZIP_MAGIC:
        inner, rest = _gunzip(data)
        sig = len(rest) - 4 if rest else None
        if sig is not None and not (0 < sig <= MAX_SIGNATURE and rest[-4:] == struct.pack("<I", sig)):
            raise ImageError(
                f"{len(rest)} unexpected bytes after the gzip stream (not a signature): "
                "compress the .bin again"
            )
        return Container("gzip+signed" if sig else "gzip", inner, sig), _body(inner)
    try:
        return Container("plain", data, None), _body(data)
    except ImageError as plain_error:
        sig = _signature_split(data)
        if sig is None or data[0] != MAGIC:
            raise
        prefix = data[: len(data) - 4 - sig]
        try:
            return Container("signed", prefix, sig), _body(prefix)
        except ImageError:
            raise plain_error from None
