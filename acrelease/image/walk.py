"""Reading one image: header, segments, checksum, appended digest and app descriptor."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from acrelease.chips import Chip, by_image_chip_id, known_keys
from acrelease.errors import ImageError
from acrelease.image.formats import (
    APP_DESC_MAGIC,
    CHECKSUM_SEED,
    ESP8266,
    ESP8266_REGIONS,
    MAGIC,
    MAX_GUNZIP,
    MAX_SEGMENTS,
    PARTITION_MAGIC,
    PARTITION_TABLE_OFFSET,
)
from acrelease.image.model import AppDescriptor


@dataclass(frozen=True)
class Walk:
    """One image header + segment walk at ``start`` that stayed inside the data."""

    start: int
    end: int  # one past the checksum byte, or past the appended digest
    arch: str
    chip_id: int | None
    loads: tuple[int, ...]
    entry: int
    checksum_ok: bool
    sha256_ok: bool | None

    @property
    def plausible_esp8266(self) -> bool:
        return all(any(lo <= a < hi for lo, hi in ESP8266_REGIONS) for a in self.loads)


def _xor(buf: bytes | memoryview) -> int:
    """Xor of all bytes, folding a big integer in halves (fast for megabytes, unlike a loop)."""
    value, width = int.from_bytes(buf, "little"), 1
    while width < len(buf):
        width *= 2
    while width > 1:
        width //= 2
        value = (value >> (8 * width)) ^ (value & ((1 << (8 * width)) - 1))
    return value


def walk_at(data: bytes, start: int, limit: int, arch: str) -> Walk | str:
    """Walk the image at ``start`` as ``arch`` lays it out, inside ``data[:limit]``:
    a Walk, "truncated" (ran past ``limit``) or "bad" (not this layout)."""
    header = 24 if arch == "ESP32" else 8
    if limit < start + header:
        return "truncated"
    count, entry = data[start + 1], struct.unpack_from("<I", data, start + 4)[0]
    chip_id = hash_flag = None
    if arch == "ESP32":
        chip_id, hash_flag = struct.unpack_from("<H", data, start + 12)[0], data[start + 23]
        if hash_flag > 1 or any(data[start + 19 : start + 23]):  # reserved bytes are zero
            return "bad"
    if not 0 < count <= MAX_SEGMENTS:
        return "bad"
    view, pos, checksum, loads = memoryview(data), start + header, CHECKSUM_SEED, []
    for _ in range(count):
        if pos + 8 > limit:
            return "truncated"
        load, length = struct.unpack_from("<II", data, pos)
        if length >= MAX_GUNZIP:
            return "bad"
        pos += 8 + length
        if pos > limit:
            return "truncated"
        checksum ^= _xor(view[pos - length : pos])
        loads.append(load)
    checksum_at = start + ((pos - start) | 15)  # padded so the image is a multiple of 16
    end = checksum_at + 1 + (32 if hash_flag else 0)
    if end > limit:
        return "truncated"
    sha_ok = None
    if hash_flag:
        sha_ok = hashlib.sha256(view[start : checksum_at + 1]).digest() == data[checksum_at + 1 : end]
    return Walk(start, end, arch, chip_id, tuple(loads), entry, data[checksum_at] == checksum, sha_ok)


def image_at(data: bytes, start: int, limit: int, *, exact: bool) -> Walk:
    """The image at ``start`` ending at ``limit`` (``exact``) or before it; ImageError if none.

    Both header layouts are tried, ESP8266 first: its first segment header can read as a known
    ESP32 chip id (a 16-byte first segment reads as ESP32-H2), while the ESP8266 reading of a real
    ESP32 header never passes: its first "load address" would be the wp_pin and drive bytes
    (0x000000EE), outside the ESP8266 memory map.
    """
    if data[start] != MAGIC:
        raise ImageError(f"no ESP image at 0x{start:x} (first byte 0x{data[start]:02x}, not 0xE9)")
    fits: list[Walk] = []
    truncated = False
    for arch in ("ESP8266", "ESP32"):
        walk = walk_at(data, start, limit, arch)
        if isinstance(walk, str):
            truncated = truncated or walk == "truncated"
        elif (walk.end == limit or not exact) and (arch == "ESP32" or walk.plausible_esp8266):
            fits.append(walk)
    known = [w for w in fits if w.arch == "ESP8266" or by_image_chip_id(w.chip_id or 0) is not None]
    if known:
        return known[0]
    if fits:
        raise ImageError(
            f"unknown chip id 0x{fits[0].chip_id or 0:04x} in the image header "
            f"(known chips: {known_keys()}): is it an image for a newer chip?"
        )
    if truncated:
        raise ImageError(
            f"truncated ESP image ({len(data)} bytes): the segments run past the end "
            "of the file; copy the complete .bin again"
        )
    raise ImageError("corrupt ESP image: its segment table does not match the file size; rebuild it")


def chip_of(walk: Walk) -> Chip:
    chip = ESP8266 if walk.arch == "ESP8266" else by_image_chip_id(walk.chip_id or 0)
    assert chip is not None  # image_at only returns walks of known chips
    return chip


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def app_descriptor(data: bytes, walk: Walk) -> AppDescriptor | None:
    """``esp_app_desc_t`` at image offset 0x20 (the first segment's data), if its magic is there."""
    at = walk.start + 0x20
    if (
        walk.arch != "ESP32"
        or len(data) < at + 0x90
        or struct.unpack_from("<I", data, at)[0] != APP_DESC_MAGIC
    ):
        return None
    field = [data[at + a : at + b] for a, b in ((16, 48), (48, 80), (80, 96), (96, 112), (112, 144))]
    return AppDescriptor(*(_cstr(raw) for raw in field))


def partition_app_offset(data: bytes) -> int | None:
    """Offset of the first app partition in the table at 0x8000, if any (32-byte entries)."""
    for at in range(PARTITION_TABLE_OFFSET, min(len(data), PARTITION_TABLE_OFFSET + 0xC00) - 31, 32):
        if data[at : at + 2] != PARTITION_MAGIC:
            break
        if data[at + 2] == 0:  # type 0 = app
            return int(struct.unpack_from("<I", data, at + 4)[0])
    return None
