"""Real ESP images for tests.

ESP32-family images (and the ESP8266 eboot) come from esptool's ``elf2image`` fed with a small
hand-made 32-bit ELF; merged full-flash images from esptool's ``merge_bin``. esptool is a
test-only tool here (GPL): ``acrelease`` itself never imports it.

The ESP8266 Arduino ``.bin`` is assembled the way the core's build does it: eboot at 0, 0xAA up
to 0x1000, then the sketch image whose first segment (flash-mapped, 0x40201010) starts with two
words the core patches afterwards: the file length and a CRC-32 (MSB-first, poly 0x04C11DB7,
init 0xFFFFFFFF) of the whole file with those two words zeroed. That patch happens after the
image checksum was written, so the sketch's checksum is stale, as in every real build.

Everything is deterministic and cached: call the helpers freely.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
from collections.abc import Sequence
from functools import lru_cache

from esptool.bin_image import ESP8266ROMFirmwareImage
from esptool.cmds import elf2image, merge_bin
from esptool.logger import log
from esptool.targets import CHIP_DEFS

log.set_verbosity("silent")

_RISCV = frozenset({"esp32c2", "esp32c3", "esp32c5", "esp32c6", "esp32h2", "esp32p4"})
_XTENSA, _RISCV_MACHINE = 0x5E, 0xF3
ARDUINO_APP_OFFSET = 0x1000
PARTITION_TABLE_OFFSET = 0x8000
APP_OFFSET = 0x10000

Section = tuple[str, int, bytes]  # (name, load address, data)


def _pad4(data: bytes, fill: bytes = b"\0") -> bytes:
    return data + fill * (-len(data) % 4)


def elf32(sections: Sequence[Section], *, entry: int, machine: int = _XTENSA) -> bytes:
    """A minimal little-endian ELF32 executable: PROGBITS sections plus .shstrtab, no segments."""
    names = b"\0" + b"".join(name.encode() + b"\0" for name, _, _ in sections) + b".shstrtab\0"
    body = bytearray(b"\0" * 0x34)
    headers = [struct.pack("<10I", *([0] * 10))]
    name_at = 1
    for name, addr, data in sections:
        offset = len(body)
        body += _pad4(data)
        # name, type=PROGBITS, flags=ALLOC(|EXEC), addr, offset, size, link, info, align, entsize
        headers.append(struct.pack("<10I", name_at, 1, 0x6, addr, offset, len(data), 0, 0, 4, 0))
        name_at += len(name) + 1
    strtab_at = len(body)
    body += _pad4(names)
    headers.append(struct.pack("<10I", name_at, 3, 0, 0, strtab_at, len(names), 0, 0, 1, 0))
    shoff = len(body)
    body += b"".join(headers)
    ident = b"\x7fELF\x01\x01\x01" + b"\0" * 9
    body[:0x34] = struct.pack(
        "<16sHHIIIIIHHHHHH", ident, 2, machine, 1, entry, 0, shoff, 0, 0x34, 0x20, 0, 0x28,
        len(headers), len(headers) - 1,
    )  # fmt: skip
    return bytes(body)


def app_descriptor(
    version: str = "1.4.2",
    project: str = "acrelease-test",
    time: str = "12:00:00",
    date: str = "Jan  1 2025",
    idf_version: str = "v5.1.4",
) -> bytes:
    """ESP-IDF ``esp_app_desc_t`` (256 bytes); esptool fills in the ELF SHA-256 at 0x90."""

    def field(text: str, size: int) -> bytes:
        return text.encode()[: size - 1].ljust(size, b"\0")

    head = struct.pack("<IIII", 0xABCD5432, 0, 0, 0)
    fields = field(version, 32) + field(project, 32) + field(time, 16) + field(date, 16)
    return (head + fields + field(idf_version, 32)).ljust(256, b"\0")


# Where real ESP-IDF links start when it is not the region's first byte (as in the fixtures).
_LINK_START = {("esp32", "DRAM"): 0x3FFB0000, ("esp32s3", "IRAM"): 0x40374000}


def _region(chip: str, name: str) -> int:
    default = next(start for start, _, region in CHIP_DEFS[chip].MEMORY_MAP if region == name)
    return _LINK_START.get((chip, name), default)


def _version_rodata(version: str | None, extra: bytes) -> bytes:
    """Read-only data as a build would hold it: ``FW_VERSION`` as a C string, then ``extra``."""
    text = b"" if version is None else b"sketch\0" + version.encode() + b"\0"
    return _pad4(text + extra + bytes(range(1, 33)))


@lru_cache(maxsize=256)
def esp32_image(
    chip: str = "esp32",
    version: str | None = None,
    *,
    extra: bytes = b"",
    descriptor: bool = True,
    desc_version: str = "1.4.2",
    project: str = "acrelease-test",
    flash_size: str = "4MB",
    flash_mode: str = "dio",
    flash_freq: str | None = None,
    irom: bool = False,
    append_digest: bool = True,
) -> bytes:
    """An ESP32-family app image for ``chip`` (any chips.py key) made by esptool's elf2image.

    ``version`` is embedded in the read-only data as the C string ``"<version>\\0"`` (what a
    sketch's ``FW_VERSION`` define leaves in the binary); the app descriptor carries the core's
    ``desc_version`` as in real Arduino builds. ``irom=True`` adds a flash-mapped code segment
    (makes the image >64 KiB, like the fixtures); ``descriptor=False`` gives a bootloader-like image.
    """
    drom, dram, iram = _region(chip, "DROM"), _region(chip, "DRAM"), _region(chip, "IRAM")
    if dram == iram:  # unified SRAM (C6, H2, P4, ...): keep data clear of the code
        dram += 0x8000
    sections: list[Section] = []
    rodata = _version_rodata(version, extra)
    if descriptor:
        desc = app_descriptor(desc_version, project)
        sections += [(".flash.appdesc", drom + 0x20, desc), (".flash.rodata", drom + 0x120, rodata)]
    else:
        sections.append((".dram0.rodata", dram + 0x100, rodata))
    sections += [(".dram0.data", dram, b"\x11" * 0x40), (".iram0.text", iram, b"\x22" * 0x80)]
    if irom:
        irom_at = _region(chip, "IROM") + (0x10000 if _region(chip, "IROM") == drom else 0)
        sections.append((".flash.text", irom_at + 0x20, bytes(range(4)) * 0x100))
    elf = elf32(sections, entry=iram, machine=_RISCV_MACHINE if chip in _RISCV else _XTENSA)
    image = elf2image(
        elf, chip, None, flash_freq=flash_freq, flash_mode=flash_mode, flash_size=flash_size,
        append_digest=append_digest,
    )  # fmt: skip
    assert isinstance(image, bytes)
    return image


def with_chip_id(image: bytes, chip_id: int) -> bytes:
    """``image`` relabelled with another extended-header chip id (digest recomputed)."""
    out = bytearray(image)
    out[12:14] = struct.pack("<H", chip_id)
    if out[23]:
        out[-32:] = hashlib.sha256(out[:-32]).digest()
    return bytes(out)


@lru_cache(maxsize=32)
def eboot_image(flash_size: str = "4MB", flash_mode: str = "dout", flash_freq: str = "40m") -> bytes:
    """An eboot-like ESP8266 ROM image (esptool elf2image, ``version="1"``) loading at 0x4010f000."""
    sections = [(".text", 0x4010F000, b"\x33" * 0x200), (".data", 0x3FFFA000, b"\x44" * 0x40)]
    out = elf2image(
        elf32(sections, entry=0x4010F000), "esp8266", None, flash_freq=flash_freq,
        flash_mode=flash_mode, flash_size=flash_size, version="1",
    )  # fmt: skip
    assert isinstance(out, tuple) and out[0] is None  # no irom0 segment: one image
    return out[1]


def _esp8266_app(header: bytes, rodata: bytes) -> bytes:
    """The sketch image: irom0 first (CRC words, then rodata), then IRAM and DRAM segments."""
    segments = [
        (0x40201010, bytes(8) + _pad4(rodata)),  # crc_len, crc_val: patched after the build
        (0x40100000, b"\x55" * 0x100),
        (0x3FFE8000, b"\x66" * 0x40),
    ]
    out = bytearray(struct.pack("<BBBBI", 0xE9, len(segments), header[2], header[3], 0x40100004))
    checksum = 0xEF
    for addr, data in segments:
        out += struct.pack("<II", addr, len(data)) + data
        for byte in data:
            checksum ^= byte
    out += bytes(15 - len(out) % 16) + bytes([checksum])
    return bytes(out)


def crc8266(data: bytes) -> int:
    """CRC-32, MSB first (poly 0x04C11DB7, init 0xFFFFFFFF, no final xor), as eboot checks it."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
    return crc


@lru_cache(maxsize=128)
def esp8266_image(
    version: str | None = None,
    *,
    flash_size: str = "4MB",
    flash_mode: str = "dout",
    flash_freq: str = "40m",
    extra: bytes = b"",
    patch_crc: bool = True,
) -> bytes:
    """An ESP8266 Arduino ``.bin``: eboot, 0xAA to 0x1000, sketch image with length + CRC patched."""
    eboot = eboot_image(flash_size, flash_mode, flash_freq)
    out = bytearray(eboot.ljust(ARDUINO_APP_OFFSET, b"\xaa"))
    out += _esp8266_app(eboot, _version_rodata(version, extra))
    if patch_crc:
        crc = crc8266(out)  # the two words are still zero here
        out[ARDUINO_APP_OFFSET + 16 : ARDUINO_APP_OFFSET + 24] = struct.pack("<II", len(out), crc)
    return bytes(out)


def esp8266_app_only(version: str | None = None, flash_size: str = "4MB") -> bytes:
    """The sketch image of :func:`esp8266_image` without eboot (not OTA-safe)."""
    return esp8266_image(version, flash_size=flash_size, patch_crc=False)[ARDUINO_APP_OFFSET:]


def gzip_image(data: bytes) -> bytes:
    """``data`` gzip-compressed as ``board_build.gzip_fw`` does (deterministic: mtime 0)."""
    return gzip.compress(data, compresslevel=9, mtime=0)


def signed_image(data: bytes, signature_length: int = 256) -> bytes:
    """``data <signature> <u32 LE length>`` with fake (deterministic) RSA-sized signature bytes."""
    signature = b""
    seed = hashlib.sha256(data).digest()
    while len(signature) < signature_length:
        seed = hashlib.sha256(seed).digest()
        signature += seed
    return data + signature[:signature_length] + struct.pack("<I", signature_length)


def partition_table(app_offset: int = APP_OFFSET, app_size: int = 0x140000) -> bytes:
    """An ESP-IDF partition table (nvs, otadata, app0, app1, spiffs) with its MD5 entry."""
    entries = [
        (1, 0x02, 0x9000, 0x5000, b"nvs"),
        (1, 0x00, 0xE000, 0x2000, b"otadata"),
        (0, 0x10, app_offset, app_size, b"app0"),
        (0, 0x11, app_offset + app_size, app_size, b"app1"),
        (1, 0x82, app_offset + 2 * app_size, 0x20000, b"spiffs"),
    ]
    table = b"".join(
        struct.pack("<2sBBII16sI", b"\xaa\x50", kind, sub, at, size, label, 0)
        for kind, sub, at, size, label in entries
    )
    table += b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(table).digest()
    return table.ljust(0xC00, b"\xff")


@lru_cache(maxsize=32)
def merged_image(chip: str = "esp32", version: str | None = "1.2.3", *, partitions: bool = True) -> bytes:
    """A full-flash image (esptool merge_bin): bootloader, partition table at 0x8000, app at 0x10000."""
    bootloader = esp32_image(chip, None, descriptor=False, append_digest=False)
    offset = {"esp32": 0x1000, "esp32s2": 0x1000, "esp32p4": 0x2000, "esp32c5": 0x2000}.get(chip, 0)
    parts: list[tuple[int, bytes]] = [(offset, bootloader), (APP_OFFSET, esp32_image(chip, version))]
    if partitions:
        parts.insert(1, (PARTITION_TABLE_OFFSET, partition_table()))
    out = merge_bin(parts, chip, None)  # type: ignore[arg-type]
    assert isinstance(out, bytes)
    return out


def truncated(data: bytes, keep: float | int = 0.5) -> bytes:
    """The first ``keep`` bytes (an int) or fraction (a float) of ``data``."""
    return data[: keep if isinstance(keep, int) else int(len(data) * keep)]


def littlefs_image(size: int = 64 * 1024, block_size: int = 4096) -> bytes:
    """A littlefs-like image: the two superblock metadata blocks, the rest erased (0xFF).

    Each superblock block holds the revision count, the tag of the ``"littlefs"`` name, then the
    inline superblock struct (version 2.0, block size and count, name/file/attr limits).
    """
    block_count = size // block_size
    name_tag = 0x0FF00008 ^ 0xFFFFFFFF  # LFS superblock tag, xor-chained from 0xffffffff
    struct_tag = 0x20100018 ^ 0x0FF00008
    superblock = (
        struct.pack("<I", 1)
        + struct.pack(">I", name_tag)
        + b"littlefs"
        + struct.pack(">I", struct_tag)
        + struct.pack("<6I", 0x00020000, block_size, block_count, 32, 0x7FFFFFFF, 1022)
    )
    block = superblock.ljust(block_size, b"\xff")
    return (block + block).ljust(size, b"\xff")


def fat_image(size: int = 64 * 1024) -> bytes:
    """A FAT-like image: a boot sector (jump, OEM name, 0x55AA), the rest zeroed."""
    boot = (b"\xeb\x3c\x90" + b"MSDOS5.0").ljust(510, b"\0") + b"\x55\xaa"
    return boot.ljust(size, b"\0")


def esptool_load(chip: str, data: bytes) -> ESP8266ROMFirmwareImage:
    """esptool's own parse of an image (an independent check of the factory's output)."""
    from esptool.bin_image import LoadFirmwareImage

    image = LoadFirmwareImage(chip, data)
    return image  # type: ignore[no-any-return]
