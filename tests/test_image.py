"""acrelease.image against the real fixtures, esptool-made images and arbitrary bytes."""

from __future__ import annotations

import contextlib
import gzip
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acrelease.chips import CHIPS, lookup
from acrelease.errors import ImageError
from acrelease.image import (
    AppDescriptor,
    FilesystemInfo,
    ImageInfo,
    check_ota_image,
    contains_version,
    inspect_filesystem,
    inspect_image,
)
from tests.factories.images import (
    crc8266,
    eboot_image,
    esp32_image,
    esp8266_app_only,
    esp8266_image,
    esptool_load,
    fat_image,
    gzip_image,
    littlefs_image,
    merged_image,
    signed_image,
    truncated,
    with_chip_id,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
"""Three real images (docs/testing.md section 2): ESP32 and ESP32-S3 apps made by esptool's elf2image from a
minimal ELF, and an ESP8266 Arduino layout (eboot, then the app with its by-design stale checksum)."""
ESP32_KEYS = [chip.key for chip in CHIPS if chip.arch == "ESP32"]
MERGED = "merged full-flash image (bootloader + partition table + app): export the app-only .bin"
MIB = 1024 * 1024


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def error_of(data: bytes) -> str:
    with pytest.raises(ImageError) as caught:
        inspect_image(data)
    message = str(caught.value)
    assert "\n" not in message  # one line for the user
    return message


def chip(key: str):  # type: ignore[no-untyped-def]
    found = lookup(key)
    assert found is not None
    return found


# --- the three real fixtures -------------------------------------------------------------------

FIXTURE_DESCRIPTOR = AppDescriptor("1.4.2", "acrelease-test", "12:00:00", "Jan  1 2025", "v5.1.4")


@pytest.mark.parametrize(("name", "key"), [("esp32-app.bin", "esp32"), ("esp32s3-app.bin", "esp32s3")])
def test_esp32_fixtures(name: str, key: str) -> None:
    data = fixture(name)
    info = inspect_image(data)
    assert (info.chip.key, info.format, info.layout, info.size) == (key, "plain", "app", len(data))
    assert info.app_descriptor == FIXTURE_DESCRIPTOR
    assert (info.checksum_ok, info.sha256_ok, info.signature_length) == (True, True, None)
    assert (info.flash_size, info.flash_mode, info.flash_freq, info.segments) == (4 * MIB, "dio", "40m", 5)
    assert info.servable and not info.warnings
    check_ota_image(info, chip(key), where=name)
    assert contains_version(data, "1.4.2")  # the descriptor's version field is a C string too


def test_esp8266_fixture_is_arduino_layout_with_stale_checksum() -> None:
    data = fixture("esp8266-arduino.bin")
    info = inspect_image(data)
    assert (info.chip.key, info.layout, info.format) == ("esp8266", "esp8266-arduino", "plain")
    assert info.checksum_ok is None and info.sha256_ok is None and info.app_descriptor is None
    assert (info.flash_size, info.flash_mode, info.flash_freq) == (4 * MIB, "dout", "40m")
    assert (info.entry, info.segments) == (0x40100004, 3)
    assert info.servable
    check_ota_image(info, chip("esp8266"), where="fixture")
    assert contains_version(data, "2.0.0")
    # the trap: the sketch's first segment is 16 bytes long, so read as an ESP32 extended header
    # its chip id field says ESP32-H2; detection must not fall for it
    assert struct.unpack_from("<H", data, 0x100C)[0] == chip("esp32h2").image_chip_id


def test_factory_crc_reproduces_the_fixture_crc() -> None:
    data = bytearray(fixture("esp8266-arduino.bin"))
    length, crc = struct.unpack_from("<II", data, 0x1010)
    data[0x1010:0x1018] = bytes(8)
    assert (length, crc) == (len(data), crc8266(bytes(data)))


def test_factory_eboot_matches_fixture_eboot() -> None:
    assert esp8266_image("2.0.0")[:0x1000] == fixture("esp8266-arduino.bin")[:0x1000]
    assert eboot_image().ljust(0x1000, b"\xaa") == fixture("esp8266-arduino.bin")[:0x1000]


@pytest.mark.parametrize(("name", "key"), [("esp32-app.bin", "esp32"), ("esp32s3-app.bin", "esp32s3")])
def test_factory_esp32_matches_fixture_facts(name: str, key: str) -> None:
    made = inspect_image(esp32_image(key, irom=True))
    real = inspect_image(fixture(name))
    facts = ("chip", "format", "layout", "flash_size", "flash_mode", "flash_freq", "entry")
    assert {f: getattr(made, f) for f in facts} == {f: getattr(real, f) for f in facts}
    assert (made.app_descriptor, made.checksum_ok, made.sha256_ok) == (FIXTURE_DESCRIPTOR, True, True)


def test_factory_esp8266_matches_fixture_facts_and_esptool() -> None:
    data = esp8266_image("1.2.3")
    made, real = inspect_image(data), inspect_image(fixture("esp8266-arduino.bin"))
    facts = ("chip", "format", "layout", "flash_size", "flash_mode", "flash_freq", "entry", "segments")
    assert {f: getattr(made, f) for f in facts} == {f: getattr(real, f) for f in facts}
    assert made.checksum_ok is None
    length, crc = struct.unpack_from("<II", data, 0x1010)
    assert (length, crc) == (len(data), crc8266(data[:0x1010] + bytes(8) + data[0x1018:]))
    # esptool's own parser: the unpatched sketch is consistent, the patched one stale (by design)
    clean = esptool_load("esp8266", esp8266_app_only("1.2.3"))
    assert [s.addr for s in clean.segments] == [0x40201010, 0x40100000, 0x3FFE8000]
    assert clean.checksum == clean.calculate_checksum()
    patched = esptool_load("esp8266", data[0x1000:])
    assert patched.checksum != patched.calculate_checksum()


# --- ESP32 family ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ESP32_KEYS)
def test_every_esp32_family_chip_is_recognised(key: str) -> None:
    data = esp32_image(key, "1.2.3")
    info = inspect_image(data)
    assert info.chip.key == key and info.layout == "app" and info.servable
    assert (info.checksum_ok, info.sha256_ok) == (True, True)
    assert info.app_descriptor is not None and info.app_descriptor.project_name == "acrelease-test"
    assert contains_version(data, "1.2.3") and not contains_version(data, "1.2.4")
    loaded = esptool_load(key, data)  # esptool agrees on the chip id and digest
    assert loaded.chip_id == chip(key).image_chip_id and loaded.stored_digest == loaded.calc_digest


@pytest.mark.parametrize(("size", "expected"), [("1MB", MIB), ("2MB", 2 * MIB), ("16MB", 16 * MIB)])
def test_esp32_flash_size_table(size: str, expected: int) -> None:
    assert inspect_image(esp32_image("esp32", flash_size=size)).flash_size == expected


@pytest.mark.parametrize(
    ("key", "freq", "mode"), [("esp32", "80m", "qio"), ("esp32c2", "60m", "dout"), ("esp32h2", "48m", "dio")]
)
def test_flash_freq_and_mode_tables(key: str, freq: str, mode: str) -> None:
    info = inspect_image(esp32_image(key, flash_freq=freq, flash_mode=mode))
    assert (info.flash_freq, info.flash_mode) == (freq, mode)


def test_esp32_without_digest() -> None:
    info = inspect_image(esp32_image("esp32s3", append_digest=False))
    assert (info.checksum_ok, info.sha256_ok, info.servable) == (True, None, True)


def test_corrupt_checksum_is_a_problem() -> None:
    data = bytearray(esp32_image("esp32", "1.2.3", append_digest=False))
    data[0x200] ^= 0x01  # inside the first segment's data (the rodata)
    info = inspect_image(bytes(data))
    assert info.checksum_ok is False and not info.servable
    with pytest.raises(ImageError, match=r"^fw\.bin: image checksum does not match"):
        check_ota_image(info, chip("esp32"), where="fw.bin")


def test_corrupt_digest_is_a_problem() -> None:
    data = bytearray(esp32_image("esp32c3"))
    data[-1] ^= 0xFF
    info = inspect_image(bytes(data))
    assert (info.checksum_ok, info.sha256_ok) == (True, False)
    assert any("SHA-256" in p for p in info.problems)


def test_image_without_app_descriptor_is_refused() -> None:
    info = inspect_image(esp32_image("esp32", descriptor=False))
    assert info.app_descriptor is None and not info.servable
    assert "bootloader" in info.problems[0]


def test_unknown_chip_id() -> None:
    message = error_of(with_chip_id(esp32_image("esp32"), 0x7777))
    assert "unknown chip id 0x7777" in message and "esp32s3" in message


def test_trailing_ff_padding_is_a_warning() -> None:
    info = inspect_image(esp32_image("esp32") + b"\xff" * 4096)
    assert info.servable and info.warnings == ("4096 bytes of 0xFF padding after the image",)


def test_trailing_garbage_is_refused() -> None:
    assert "unexpected bytes after the ESP image" in error_of(esp32_image("esp32") + b"hello world" * 100)


# --- ESP8266 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [("512KB", MIB // 2), ("1MB", MIB), ("4MB", 4 * MIB), ("16MB", 16 * MIB), ("4MB-c1", None)],
)
def test_esp8266_flash_size_follows_the_update_client_table(size: str, expected: int | None) -> None:
    info = inspect_image(esp8266_image(flash_size=size))
    assert info.flash_size == expected and info.layout == "esp8266-arduino"


def test_esp8266_app_without_eboot_is_refused() -> None:
    info = inspect_image(esp8266_app_only("1.2.3"))
    assert info.chip.key == "esp8266" and info.layout == "app" and info.checksum_ok is True
    assert not info.servable and "eboot" in info.problems[0]


def test_esp8266_gzip() -> None:
    data = gzip_image(esp8266_image("1.2.3"))
    info = inspect_image(data)
    assert (info.format, info.layout, info.chip.key, info.size) == (
        "gzip",
        "esp8266-arduino",
        "esp8266",
        len(data),
    )
    assert info.flash_size is None  # the client skips its size check for gzip (docs/protocol.md C.4)
    assert info.servable
    assert contains_version(data, "1.2.3") and not contains_version(data, "1.2.4")


def test_esp32_gzip_is_not_servable() -> None:
    info = inspect_image(gzip_image(esp32_image("esp32s3", "1.2.3")))
    assert info.format == "gzip" and info.chip.key == "esp32s3" and not info.servable
    with pytest.raises(ImageError, match=r"^fw\.bin\.gz: gzip-compressed image for ESP32-S3: .*0xE9"):
        check_ota_image(info, chip("esp32s3"), where="fw.bin.gz")


@pytest.mark.parametrize("length", [256, 512])
def test_esp8266_signed(length: int) -> None:
    data = signed_image(esp8266_image("1.2.3"), length)
    info = inspect_image(data)
    assert (info.format, info.signature_length, info.layout) == ("signed", length, "esp8266-arduino")
    assert info.servable and info.flash_size == 4 * MIB and contains_version(data, "1.2.3")


def test_esp8266_gzip_signed() -> None:
    data = signed_image(gzip_image(esp8266_image("1.2.3")))
    info = inspect_image(data)
    assert (info.format, info.signature_length, info.servable) == ("gzip+signed", 256, True)
    assert contains_version(data, "1.2.3")


def test_signed_esp32_warns() -> None:
    info = inspect_image(signed_image(esp32_image("esp32")))
    assert info.format == "signed" and info.servable and "does not check it" in info.warnings[0]


def test_version_in_signature_does_not_count() -> None:
    body = esp8266_image("1.2.3")
    signature = b"\0" + b"9.9.9\0".ljust(255, b"\x01")
    data = body + signature + struct.pack("<I", len(signature))
    assert inspect_image(data).format == "signed"
    assert contains_version(data, "1.2.3") and not contains_version(data, "9.9.9")


def test_gzip_errors() -> None:
    good = gzip_image(esp8266_image("1.2.3"))
    assert "truncated gzip" in error_of(good[: len(good) // 2])
    assert "after the gzip stream" in error_of(good + b"junk!")
    assert "corrupt gzip" in error_of(b"\x1f\x8b" + b"\x00" * 40)
    assert "not an ESP firmware image (a text file" in error_of(gzip.compress(b"hello\n" * 100))


def test_gzip_bomb_is_bounded() -> None:
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    data = bomb.compress(b"\xe9" + bytes(17 * MIB)) + bomb.flush()
    assert "more than 16 MiB" in error_of(data)


# --- merged, truncated, not an image -----------------------------------------------------------


@pytest.mark.parametrize("key", ["esp32", "esp32s3", "esp32c3", "esp32p4"])
def test_merged_full_flash_image(key: str) -> None:
    info = inspect_image(merged_image(key, "1.2.3"))
    assert (info.layout, info.chip.key, info.problems) == ("merged", key, (MERGED,))
    assert info.app_descriptor == FIXTURE_DESCRIPTOR  # found through the partition table
    with pytest.raises(ImageError, match=r"^merged\.bin: merged full-flash image"):
        check_ota_image(info, chip(key), where="merged.bin")


@pytest.mark.parametrize("key", ["esp32", "esp32s3"])
def test_merged_without_partition_table(key: str) -> None:
    info = inspect_image(merged_image(key, partitions=False))
    assert info.layout == "merged" and not info.servable


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, -1, 9, 30])
@pytest.mark.parametrize("make", [lambda: esp32_image("esp32", irom=True), lambda: esp8266_image("1.2.3")])
def test_truncated(make, keep: float) -> None:  # type: ignore[no-untyped-def]
    data = make()
    cut = data[:keep] if isinstance(keep, int) else truncated(data, keep)
    assert "truncated" in error_of(cut)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "empty file"),
        (b"<!DOCTYPE html>\n<html>not found</html>\n", "not an ESP firmware image (a text file"),
        (b"PK\x03\x04" + bytes(100), "not an ESP firmware image (starts with 50 4b 03 04"),
        (b"\xe9", "truncated"),
    ],
)
def test_not_an_image(data: bytes, expected: str) -> None:
    assert expected in error_of(data)


def test_chip_mismatch() -> None:
    info = inspect_image(esp32_image("esp32s3"))
    with pytest.raises(
        ImageError, match=r"^fw\.bin: image is for ESP32-S3, but the target's chip is esp8266"
    ):
        check_ota_image(info, chip("esp8266"), where="fw.bin")
    with pytest.raises(ImageError, match="is esp32: build it for ESP32"):
        check_ota_image(info, chip("esp32"), where="fw.bin")
    check_ota_image(info, None, where="fw.bin")
    check_ota_image(info, chip("esp32s3"), where="fw.bin")


# --- contains_version ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "found"),
    [
        (b"\x001.2.3\x00", True),
        (b"v=1.2.3\x00", True),
        (b" 1.2.3\x00", True),
        (b"\x0011.2.3\x00", False),
        (b"\x00v1.2.3\x00", False),
        (b"\x00.1.2.3\x00", False),
        (b"\x00-1.2.3\x00", False),
        (b"\x00+1.2.3\x00", False),
        (b"\x001.2.3-rc.1\x00", False),
        (b"\x001.2.3", False),
    ],
)
def test_contains_version_is_a_whole_c_string(extra: bytes, found: bool) -> None:
    assert contains_version(esp32_image("esp32", None, extra=extra), "1.2.3") is found
    assert contains_version(esp8266_image(None, extra=extra), "1.2.3") is found


def test_contains_version_edges() -> None:
    assert contains_version(b"1.0.0\0rest", "1.0.0")
    assert not contains_version(b"1.0.0\0", "")
    assert not contains_version(b"", "1.0.0")


# --- filesystems ---------------------------------------------------------------------------------


def test_filesystems() -> None:
    assert inspect_filesystem(littlefs_image(), where="fs.bin") == FilesystemInfo("littlefs", 65536)
    assert inspect_filesystem(littlefs_image(1024 * 1024, 8192), where="x").format == "littlefs"
    assert inspect_filesystem(fat_image(), where="fs.bin") == FilesystemInfo("fat", 65536)
    assert inspect_filesystem(b"\xff" * 8192, where="fs.bin").format == "spiffs-or-raw"
    revision_e9 = b"\xe9" + littlefs_image()[1:]  # a revision count can start with 0xE9
    assert inspect_filesystem(revision_e9, where="fs.bin").format == "littlefs"


@pytest.mark.parametrize(
    "data",
    [esp8266_image("1.2.3"), gzip_image(esp8266_image("1.2.3")), esp32_image("esp32"), merged_image()],
    ids=["esp8266", "gzip", "esp32", "merged"],
)
def test_firmware_is_not_a_filesystem(data: bytes) -> None:
    with pytest.raises(ImageError, match=r"^data/fs\.bin: this is a firmware image, not a filesystem"):
        inspect_filesystem(data, where="data/fs.bin")


def test_empty_filesystem() -> None:
    with pytest.raises(ImageError, match=r"^fs\.bin: empty file"):
        inspect_filesystem(b"", where="fs.bin")


# --- nothing but ImageError, whatever the bytes ----------------------------------------------------

SEEDS = [esp32_image("esp32", "1.2.3"), esp8266_image("1.2.3"), gzip_image(esp8266_image("1.2.3"))]


def _inspect_everything(data: bytes) -> None:
    try:
        info = inspect_image(data)
    except ImageError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert isinstance(info, ImageInfo)
        with contextlib.suppress(ImageError):
            check_ota_image(info, chip("esp32"), where="f")
    contains_version(data, "1.2.3")
    with contextlib.suppress(ImageError):
        inspect_filesystem(data, where="f")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_raise_only_image_error(data: bytes) -> None:
    _inspect_everything(data)
    _inspect_everything(b"\xe9" + data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(range(len(SEEDS))),
    st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 255)), max_size=6),
    st.integers(0, 6000),
)
def test_mutated_images_raise_only_image_error(seed: int, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(SEEDS[seed])
    for at, value in flips:
        if at < len(data):
            data[at] = value
    _inspect_everything(bytes(data[: len(data) - cut]))
    _inspect_everything(bytes(data))


def test_make_demo_writes_small_checked_images(tmp_path: Path) -> None:
    from tests.factories.make_demo import main

    assert main([str(tmp_path)]) == 0
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.bin"))
    assert written == [
        "1.0.0/d1mini/firmware.bin",
        "1.0.0/esp32dev/firmware.bin",
        "1.1.0/d1mini/firmware.bin",
        "1.1.0/d1mini/littlefs.bin",
        "1.1.0/esp32dev/firmware.bin",
    ]
    old, new = (
        (tmp_path / "1.0.0/d1mini/firmware.bin").read_bytes(),
        (tmp_path / "1.1.0/d1mini/firmware.bin").read_bytes(),
    )
    assert (
        contains_version(old, "1.0.0")
        and not contains_version(old, "1.1.0")
        and contains_version(new, "1.1.0")
    )
    esp32 = inspect_image((tmp_path / "1.1.0/esp32dev/firmware.bin").read_bytes())
    assert esp32.chip.key == "esp32" and esp32.servable
    assert all(p.stat().st_size <= 64 * 1024 for p in tmp_path.rglob("*.bin"))
