"""A small, independent writer of ESP application images for the offline test platform.

Written from Espressif's published image format description (header, segments, XOR checksum,
ESP32 extended header, appended SHA-256, ``esp_app_desc_t``); no esptool or core code.
The images are real enough for acrelease's inspection: a test build really produces the bytes
a device would receive, with the version string wherever the "sketch" used it.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass

MAGIC = 0xE9
CHECKSUM_SEED = 0xEF
APP_DESC_MAGIC = 0xABCD5432

FLASH_MODES = {"qio": 0, "qout": 1, "dio": 2, "dout": 3}
# ESP8266 size nibble (high 4 bits of header byte 3) and ESP32-family size nibble differ.
ESP8266_SIZES = {"512KB": 0, "256KB": 1, "1MB": 2, "2MB": 3, "4MB": 4, "8MB": 8, "16MB": 9}
ESP32_SIZES = {"1MB": 0, "2MB": 1, "4MB": 2, "8MB": 3, "16MB": 4, "32MB": 5, "64MB": 6, "128MB": 7}
FREQS = {"40000000L": 0x0, "26000000L": 0x1, "20000000L": 0x2, "80000000L": 0xF}


@dataclass(frozen=True)
class ChipLayout:
    """Where an mcu's segments live (addresses from the chips' memory maps)."""

    chip_id: int | None  # extended-header chip id; None = ESP8266 (no extended header)
    drom: int  # flash-mapped read-only data
    dram: int
    iram: int
    entry: int


LAYOUTS = {
    "esp8266": ChipLayout(None, 0x40201010, 0x3FFE8000, 0x40100000, 0x40100004),
    "esp32": ChipLayout(0x0000, 0x3F400020, 0x3FFB0000, 0x40080000, 0x40080400),
    "esp32s3": ChipLayout(0x0009, 0x3C000020, 0x3FC88000, 0x40374000, 0x40375000),
}


def _segment(addr: int, data: bytes) -> bytes:
    data = data + b"\x00" * (-len(data) % 4)  # segment lengths are word multiples
    return struct.pack("<II", addr, len(data)) + data


def _checksum(segment_payloads: list[bytes]) -> int:
    value = CHECKSUM_SEED
    for payload in segment_payloads:
        for byte in payload:
            value ^= byte
    return value


def _finish(header: bytes, segments: list[tuple[int, bytes]]) -> bytes:
    """Header + segments, zero padding so the checksum byte ends a 16-byte block."""
    body = bytearray(header)
    payloads = []
    for addr, data in segments:
        seg = _segment(addr, data)
        body += seg
        payloads.append(seg[8:])
    body += b"\x00" * (15 - len(body) % 16)
    body.append(_checksum(payloads))
    return bytes(body)


def _code(seed: bytes, size: int) -> bytes:
    """Deterministic filler standing in for machine code."""
    out = bytearray()
    block = hashlib.sha256(seed).digest()
    while len(out) < size:
        out += block
        block = hashlib.sha256(block).digest()
    return bytes(out[:size])


def _cstrings(strings: list[str]) -> bytes:
    return b"".join(s.encode() + b"\x00" for s in strings)


def esp8266_image(
    strings: list[str], *, flash_mode: str, flash_size: str, flash_freq: str, seed: bytes
) -> bytes:
    """ESP8266 Arduino layout: a boot image at 0 padded with 0xAA to 0x1000, then the app.

    The app's first segment starts with the length + CRC words the core patches in after
    linking, which is why the app checksum of every real Arduino image is stale: same here.
    """
    mode = FLASH_MODES[flash_mode]
    size_freq = (ESP8266_SIZES[flash_size] << 4) | FREQS[flash_freq]
    layout = LAYOUTS["esp8266"]
    boot = _finish(
        struct.pack("<BBBBI", MAGIC, 1, mode, size_freq, 0x4010F000),
        [(0x4010F000, _code(b"boot" + seed, 0x400))],
    )
    out = bytearray(boot + b"\xaa" * (0x1000 - len(boot)))
    # 8 bytes for the core's length + CRC words, then a NUL so no string runs into them.
    rodata = b"\x00" * 9 + _cstrings(strings)
    app = _finish(
        struct.pack("<BBBBI", MAGIC, 3, mode, size_freq, layout.entry),
        [
            (layout.drom, rodata),
            (layout.iram, _code(b"text" + seed, 0x600)),
            (layout.dram, _code(b"data" + seed, 0x100)),
        ],
    )
    out += app
    crc_at = 0x1000 + 8 + 8  # header + first segment header
    crc = zlib.crc32(bytes(out[:crc_at]) + bytes(out[crc_at + 8 :]))
    out[crc_at : crc_at + 8] = struct.pack("<II", len(out), crc)
    return bytes(out)


def _app_desc(project: str, version: str, time: str, date: str, idf: str, seed: bytes) -> bytes:
    def field(text: str, size: int) -> bytes:
        raw = text.encode()[: size - 1]
        return raw + b"\x00" * (size - len(raw))

    desc = struct.pack("<IIII", APP_DESC_MAGIC, 0, 0, 0)
    desc += field(version, 32) + field(project, 32) + field(time, 16) + field(date, 16) + field(idf, 32)
    desc += hashlib.sha256(seed).digest()
    return desc + b"\x00" * (256 - len(desc))


def esp32_image(
    mcu: str,
    strings: list[str],
    *,
    flash_mode: str,
    flash_size: str,
    flash_freq: str,
    seed: bytes,
    build_time: tuple[str, str],
) -> bytes:
    """ESP32-family app image: extended header, app descriptor at 0x20, checksum, SHA-256."""
    layout = LAYOUTS[mcu]
    assert layout.chip_id is not None
    size_freq = (ESP32_SIZES[flash_size] << 4) | FREQS[flash_freq]
    header = struct.pack("<BBBBI", MAGIC, 3, FLASH_MODES[flash_mode], size_freq, layout.entry)
    # wp pin, 3 drive bytes, chip id, min rev, min/max rev (full), 4 reserved, hash appended
    header += struct.pack("<B3sHBHH4sB", 0xEE, b"\0\0\0", layout.chip_id, 0, 0, 0xFFFF, b"\0" * 4, 1)
    # The descriptor's version is the core's, never the sketch's (docs/architecture.md, "Field facts").
    desc = _app_desc("arduino-lib-builder", "esp-idf: v5.1.4", build_time[0], build_time[1], "v5.1.4", seed)
    image = _finish(
        header,
        [
            (layout.drom, desc + _cstrings(strings)),
            (layout.dram, _code(b"data" + seed, 0x100)),
            (layout.iram, _code(b"text" + seed, 0x800)),
        ],
    )
    return image + hashlib.sha256(image).digest()


def littlefs_image(files: dict[str, bytes], size: int = 0x10000, block: int = 0x1000) -> bytes:
    """A littlefs-looking filesystem image: the superblock magic at offset 8 of blocks 0 and 1
    (where littlefs keeps it), then the files' bytes; erased flash (0xFF) after that.

    Not a mountable littlefs; enough for a filesystem artifact that is recognisably not an app.
    """
    superblock = struct.pack("<I", 1) + struct.pack(">I", 0x0FF00008) + b"littlefs"
    superblock += struct.pack("<IIII", 0x00020000, block, size // block, 255)
    out = bytearray(b"\xff" * size)
    out[0 : len(superblock)] = superblock
    out[block : block + len(superblock)] = superblock
    pos = 2 * block
    for name, data in sorted(files.items()):
        entry = name.encode() + b"\x00" + struct.pack("<I", len(data)) + data
        if pos + len(entry) > size:
            raise ValueError(f"data/ does not fit a {size}-byte filesystem")
        out[pos : pos + len(entry)] = entry
        pos += len(entry)
    return bytes(out)
