"""Pure inspection of ESP firmware and filesystem images: bytes in, a frozen value out.

Nothing here prints or touches the disk; problems a user can cause raise :class:`ImageError`
with one line (what and what to do); the caller adds *where*. Format facts (all from the ESP
image format as documented by Espressif and the Arduino cores, PROTOCOL.md C and D):

* An image starts with ``E9 <segments> <flash mode> <size<<4 | freq> <entry u32>``. ESP32-family
  images add a 16-byte extended header (``chip_id`` u16 at 12, ``hash_appended`` at 23).
* Segments are ``<load address u32> <length u32> <data>``; the xor of all segment data, seeded
  with 0xEF, is stored in the last byte of the 16-byte aligned padding; ESP32 images may append
  the SHA-256 of everything before it.
* The ESP8266 Arduino ``.bin`` is eboot at 0, padded to 0x1000, then the sketch's image; the
  core patches a length + CRC into it afterwards, so that app's checksum is stale *by design*.
* ESP8266 signed images are ``image <signature> <u32 LE signature length>`` (PROTOCOL.md C.4);
  gzip images start ``1F 8B`` and only the ESP8266 client accepts them ([REQ] 18).
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass

from acrelease.chips import CHIPS, Chip, by_image_chip_id, known_keys
from acrelease.errors import ImageError

MAGIC = 0xE9
GZIP_MAGIC = b"\x1f\x8b"
APP_DESC_MAGIC = 0xABCD5432
PARTITION_MAGIC = b"\xaa\x50"
PARTITION_TABLE_OFFSET = 0x8000
APP_OFFSET = 0x10000  # first app partition of the default partition tables
ARDUINO_APP_OFFSET = 0x1000  # eboot occupies 0..0x1000 of the ESP8266 Arduino .bin
MAX_GUNZIP = 16 * 1024 * 1024  # larger than any ESP flash; bounds zip bombs
MAX_SIGNATURE = 4096  # RSA-4096 is 512 bytes; anything much larger is not a signature
_MAX_SEGMENTS = 16  # the ROM and IDF loaders refuse more
_CHECKSUM_SEED = 0xEF
_ESP8266 = next(chip for chip in CHIPS if chip.image_chip_id is None)

FLASH_MODES = {0: "qio", 1: "qout", 2: "dio", 3: "dout", 4: "fast_read", 5: "slow_read"}
_MIB = 1024 * 1024
# Header size nibble -> bytes. ESP8266: the update client's own table (Esp.cpp magicFlashChipSize,
# PROTOCOL.md [REQ] 18): 5 and 6 ("-c1" layouts) map to nothing there, so to None here.
FLASH_SIZES: dict[str, dict[int, int]] = {
    "ESP8266": {0: _MIB // 2, 1: _MIB // 4, 2: _MIB, 3: 2 * _MIB, 4: 4 * _MIB, 8: 8 * _MIB, 9: 16 * _MIB},
    "ESP32": {n: _MIB << n for n in range(8)},
}
_FREQS = {0xF: "80m", 0x0: "40m", 0x1: "26m", 0x2: "20m"}
# Header frequency nibble -> label; chips whose flash clock differs from the ESP32's table.
FLASH_FREQS: dict[str, dict[int, str]] = {
    "esp32c2": {0xF: "60m", 0x0: "30m", 0x1: "20m", 0x2: "15m"},
    "esp32h2": {0xF: "48m", 0x0: "24m", 0x1: "16m", 0x2: "12m"},
    "esp32c6": {0x0: "40m", 0x2: "20m"},
}
# Where ESP8266 segments can load (DRAM, IRAM incl. the cache area eboot uses, flash IROM, RTC);
# used to tell an ESP8266 header from an ESP32 one whose bytes happen to look alike.
_ESP8266_REGIONS = (
    (0x3FFE8000, 0x40000000),
    (0x40100000, 0x40110000),
    (0x40200000, 0x40300000),
    (0x60001000, 0x60002000),
)
_BOOTLOADER_OFFSETS = sorted({chip.bootloader_offset for chip in CHIPS if chip.bootloader_offset})
_MERGED = "merged full-flash image (bootloader + partition table + app): export the app-only .bin"


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


@dataclass(frozen=True)
class _Walk:
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
        return all(any(lo <= a < hi for lo, hi in _ESP8266_REGIONS) for a in self.loads)


def _xor(buf: bytes | memoryview) -> int:
    """Xor of all bytes, folding a big integer in halves (fast for megabytes, unlike a loop)."""
    value, width = int.from_bytes(buf, "little"), 1
    while width < len(buf):
        width *= 2
    while width > 1:
        width //= 2
        value = (value >> (8 * width)) ^ (value & ((1 << (8 * width)) - 1))
    return value


def _walk(data: bytes, start: int, limit: int, arch: str) -> _Walk | str:
    """Walk the image at ``start`` as ``arch`` lays it out, inside ``data[:limit]``:
    a _Walk, "truncated" (ran past ``limit``) or "bad" (not this layout)."""
    header = 24 if arch == "ESP32" else 8
    if limit < start + header:
        return "truncated"
    count, entry = data[start + 1], struct.unpack_from("<I", data, start + 4)[0]
    chip_id = hash_flag = None
    if arch == "ESP32":
        chip_id, hash_flag = struct.unpack_from("<H", data, start + 12)[0], data[start + 23]
        if hash_flag > 1 or any(data[start + 19 : start + 23]):  # reserved bytes are zero
            return "bad"
    if not 0 < count <= _MAX_SEGMENTS:
        return "bad"
    view, pos, checksum, loads = memoryview(data), start + header, _CHECKSUM_SEED, []
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
    return _Walk(start, end, arch, chip_id, tuple(loads), entry, data[checksum_at] == checksum, sha_ok)


def _image_at(data: bytes, start: int, limit: int, *, exact: bool) -> _Walk:
    """The image at ``start`` ending at ``limit`` (``exact``) or before it; ImageError if none.

    Both header layouts are tried, ESP8266 first: its first segment header can read as a known
    ESP32 chip id (a 16-byte first segment reads as ESP32-H2), while the ESP8266 reading of a real
    ESP32 header never passes: its first "load address" would be the wp_pin and drive bytes
    (0x000000EE), outside the ESP8266 memory map.
    """
    if data[start] != MAGIC:
        raise ImageError(f"no ESP image at 0x{start:x} (first byte 0x{data[start]:02x}, not 0xE9)")
    fits: list[_Walk] = []
    truncated = False
    for arch in ("ESP8266", "ESP32"):
        walk = _walk(data, start, limit, arch)
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


def _chip(walk: _Walk) -> Chip:
    chip = _ESP8266 if walk.arch == "ESP8266" else by_image_chip_id(walk.chip_id or 0)
    assert chip is not None  # _image_at only returns walks of known chips
    return chip


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _app_descriptor(data: bytes, walk: _Walk) -> AppDescriptor | None:
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


def _looks_like(data: bytes) -> str:
    """A short description of what a non-image file looks like, for the error message."""
    head = data[:512]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"starts with {data[:4].hex(' ')}"
    return (
        "a text file"
        if all(c.isprintable() or c in "\r\n\t" for c in text)
        else f"starts with {data[:4].hex(' ')}"
    )


def _partition_app_offset(data: bytes) -> int | None:
    """Offset of the first app partition in the table at 0x8000, if any (32-byte entries)."""
    for at in range(PARTITION_TABLE_OFFSET, min(len(data), PARTITION_TABLE_OFFSET + 0xC00) - 31, 32):
        if data[at : at + 2] != PARTITION_MAGIC:
            break
        if data[at + 2] == 0:  # type 0 = app
            return int(struct.unpack_from("<I", data, at + 4)[0])
    return None


@dataclass(frozen=True)
class _Body:
    layout: str
    header: _Walk  # the image at byte 0 (or the bootloader), whose header the client checks
    app: _Walk | None  # the application image, when found
    warnings: tuple[str, ...] = ()


def _complete(data: bytes, start: int) -> tuple[_Walk, tuple[str, ...]]:
    """The image at ``start`` that ends the file (0xFF padding after it is tolerated)."""
    try:
        return _image_at(data, start, len(data), exact=True), ()
    except ImageError as whole_error:
        try:
            walk = _image_at(data, start, len(data), exact=False)
        except ImageError:
            raise whole_error from None
    tail = data[walk.end :]
    if tail.count(0xFF) == len(tail):  # padded up to a flash boundary: harmless
        return walk, (f"{len(tail)} bytes of 0xFF padding after the image",)
    raise ImageError(
        f"{len(tail)} unexpected bytes after the ESP image that ends at 0x{walk.end:x}: "
        "not a plain app image; export the app-only .bin"
    )


def _body(data: bytes) -> _Body:
    """Locate the image(s) in an unwrapped (not gzip, no signature) file."""
    if len(data) < 8:
        raise ImageError(f"truncated ESP image ({len(data)} bytes): too short for an image header")
    if data[0] != MAGIC:
        for offset in _BOOTLOADER_OFFSETS:
            if data[offset : offset + 1] == bytes([MAGIC]) and data[:offset].count(0xFF) == offset:
                # 0xFF up to the chip's bootloader offset, then an image: a full-flash image
                return _merged(data, _image_at(data, offset, len(data), exact=False))
        raise ImageError(
            f"not an ESP firmware image ({_looks_like(data)}; an image starts with 0xE9, "
            "or 1F 8B when gzip-compressed): pass the firmware .bin of the build"
        )
    first = _image_at(data, 0, len(data), exact=False)
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
            return _Body("esp8266-arduino", first, app, warnings)
    whole, warnings = _complete(data, 0)
    return _Body("app", whole, whole, warnings)


def _merged(data: bytes, boot: _Walk) -> _Body:
    offset = _partition_app_offset(data)
    if offset is None and data[APP_OFFSET : APP_OFFSET + 1] == bytes([MAGIC]):
        offset = APP_OFFSET  # no partition table: the app where the default table puts it
    app = None
    if offset is not None and offset < len(data):
        try:
            app = _image_at(data, offset, len(data), exact=False)
        except ImageError:
            app = None
    return _Body("merged", boot, app)


@dataclass(frozen=True)
class _Container:
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


def _unwrap(data: bytes) -> tuple[_Container, _Body]:
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
        return _Container("gzip+signed" if sig else "gzip", inner, sig), _body(inner)
    try:
        return _Container("plain", data, None), _body(data)
    except ImageError as plain_error:
        sig = _signature_split(data)
        if sig is None or data[0] != MAGIC:
            raise
        prefix = data[: len(data) - 4 - sig]
        try:
            return _Container("signed", prefix, sig), _body(prefix)
        except ImageError:
            raise plain_error from None


def inspect_image(data: bytes) -> ImageInfo:
    """Describe a firmware file; ImageError if it is not an ESP image (empty, text, truncated, ...)."""
    container, body = _unwrap(data)
    head, app = body.header, body.app or body.header
    chip = _chip(head)
    warnings, problems = list(body.warnings), []
    gzip = container.format.startswith("gzip")
    mode, size_freq = container.body[head.start + 2], container.body[head.start + 3]
    descriptor = _app_descriptor(container.body, app) if body.app else None
    checksum_ok: bool | None = app.checksum_ok
    if body.layout == "merged":
        problems.append(_MERGED)
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
        # For gzip the client skips its flash-size check (PROTOCOL.md C.4), so none is declared.
        flash_size=None if gzip else FLASH_SIZES[chip.arch].get(size_freq >> 4),
        flash_mode=FLASH_MODES.get(mode),
        flash_freq=FLASH_FREQS.get(chip.key, _FREQS).get(size_freq & 0xF),
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
        payload = _unwrap(data)[0].body
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
