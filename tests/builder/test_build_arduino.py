"""`acrelease collect`: Arduino IDE 1.x and IDE 2 / arduino-cli export folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from acrelease import chips, manifest
from acrelease.builder.arduino import find_exports, map_exports
from acrelease.builder.release_build import collect_release
from acrelease.errors import ImageError, UsageError
from acrelease.manifest import Target
from tests.factories.images import esp32_image, esp8266_image, merged_image, signed_image

TARGETS = [
    Target("d1mini", chips.lookup("esp8266"), board="d1_mini"),
    Target("esp32dev", chips.lookup("esp32"), env="esp32dev", board="esp32dev"),  # PlatformIO's board id
]


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def sketch(tmp_path: Path) -> Path:
    folder = tmp_path / "Blink"
    write(folder / "Blink.ino", b"void setup() {}\n")
    return folder


def manifest_in(tmp_path: Path) -> Path:
    path = tmp_path / manifest.MANIFEST_NAME
    manifest.init_manifest(path, "blink", TARGETS)
    return path


def ide1_export(folder: Path, version: str) -> None:
    write(folder / "Blink.ino.d1_mini.bin", esp8266_image(version))
    write(folder / "Blink.ino.esp32.bin", esp32_image("esp32", version))
    # the other outputs of an export, none of them an OTA image
    write(folder / "Blink.ino.esp32.bootloader.bin", esp32_image("esp32", None, descriptor=False))
    write(folder / "Blink.ino.esp32.partitions.bin", b"\xaa\x50" + b"\xff" * 100)
    write(folder / "Blink.ino.esp32.merged.bin", merged_image("esp32", version))
    write(folder / "Blink.ino.elf", b"\x7fELF")


def cli_export(folder: Path, version: str) -> None:
    build = folder / "build"
    write(build / "esp8266.esp8266.d1_mini" / "Blink.ino.bin", esp8266_image(version))
    write(build / "esp8266.esp8266.d1_mini" / "Blink.ino.elf", b"\x7fELF")
    write(build / "esp32.esp32.esp32" / "Blink.ino.bin", esp32_image("esp32", version))
    write(build / "esp32.esp32.esp32" / "Blink.ino.merged.bin", merged_image("esp32", version))
    write(build / "esp32.esp32.esp32" / "Blink.ino.bootloader.bin", esp32_image("esp32", None, descriptor=False))
    write(build / "esp32.esp32.esp32" / "Blink.ino.partitions.bin", b"\xaa\x50" + b"\xff" * 100)


@pytest.mark.parametrize("export", [ide1_export, cli_export], ids=["ide1", "ide2-cli"])
def test_collect_records_both_boards(tmp_path: Path, export: object) -> None:
    folder = sketch(tmp_path)
    export(folder, "1.4.0")  # type: ignore[operator]
    path = manifest_in(tmp_path)
    added = collect_release(path, folder, "1.4.0")
    assert added.changed and set(added.added_targets) == {"d1mini", "esp32dev"}
    release = manifest.load(path).release(added.version)
    assert release is not None
    assert release.artifacts["d1mini"]["firmware"].chip == "esp8266"
    assert release.artifacts["esp32dev"]["firmware"].chip == "esp32"
    assert all(kinds["firmware"].version_found for kinds in release.artifacts.values())
    assert (tmp_path / "dist/1.4.0/esp32dev/Blink.ino.bin" if export is cli_export
            else tmp_path / "dist/1.4.0/esp32dev/Blink.ino.esp32.bin").is_file()


def test_signed_export_is_preferred(tmp_path: Path) -> None:
    folder = sketch(tmp_path)
    plain = esp8266_image("2.0.0")
    write(folder / "Blink.ino.d1_mini.bin", plain)
    signed = write(folder / "Blink.ino.d1_mini.bin.signed", signed_image(plain))
    write(folder / "build/esp8266.esp8266.d1_mini/Blink.ino.bin", plain)
    cli_signed = write(folder / "build/esp8266.esp8266.d1_mini/Blink.ino.bin.signed", signed_image(plain))
    assert [(e.board, e.firmware) for e in find_exports(folder)] == [("d1_mini", signed), ("d1_mini", cli_signed)]


def test_both_layouts_for_one_target_need_an_explicit_choice(tmp_path: Path) -> None:
    folder = sketch(tmp_path)
    ide1_export(folder, "1.0.0")
    cli_export(folder, "1.0.0")
    with pytest.raises(UsageError, match="--target d1mini=FILE"):
        map_exports(folder, TARGETS, {})
    chosen = folder / "build/esp8266.esp8266.d1_mini/Blink.ino.bin"
    mapping = map_exports(folder, TARGETS, {"d1mini": chosen, "esp32dev": folder / "Blink.ino.esp32.bin"})
    assert mapping["d1mini"] == chosen


def test_explicit_target_for_an_unmatched_board(tmp_path: Path) -> None:
    folder = sketch(tmp_path)
    odd = write(folder / "Blink.ino.generic.bin", esp8266_image("1.1.0"))
    path = manifest_in(tmp_path)
    with pytest.raises(UsageError, match="no exported image matches target d1mini .board d1_mini., esp32dev"):
        collect_release(path, folder, "1.1.0")
    added = collect_release(path, folder, "1.1.0", explicit={"d1mini": odd})
    assert added.added_targets == ("d1mini",)
    with pytest.raises(UsageError, match="--target nope=...: no such target"):
        collect_release(path, folder, "1.1.1", explicit={"nope": odd})


def test_missing_version_refused_nothing_recorded(tmp_path: Path) -> None:
    folder = sketch(tmp_path)
    ide1_export(folder, "0.9.0")  # built before the version was bumped in the sketch
    path = manifest_in(tmp_path)
    before = path.read_bytes()
    with pytest.raises(ImageError, match=r"ESPhttpUpdate\.update\(client, url, FW_VERSION\)"):
        collect_release(path, folder, "1.0.0")
    assert path.read_bytes() == before and not (tmp_path / "dist").exists()
