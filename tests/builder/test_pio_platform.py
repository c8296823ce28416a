"""The offline test platform itself: real `pio run` builds real, inspectable ESP images."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from acrelease.builder.platformio import pio_command
from acrelease.image import contains_version, inspect_filesystem, inspect_image
from tests.builder.piohelpers import ProjectFactory, scons_package_version


def pio(project: Path, *args: str, flags: str = "") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if flags:
        env["PLATFORMIO_BUILD_FLAGS"] = flags
    return subprocess.run([*pio_command(), "run", "-d", str(project), *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_scons_version_spelling() -> None:
    assert scons_package_version("4.11.1") == "4.41101.0"
    assert scons_package_version("4.8.0") == "4.40800.0"


def test_builds_inspectable_images_with_the_define(make_project: ProjectFactory) -> None:
    project = make_project()
    done = pio(project, flags='-DFW_VERSION=\\"2.3.4\\"')
    assert done.returncode == 0, done.stdout + done.stderr
    esp8266 = (project / ".pio/build/d1_mini/firmware.bin").read_bytes()
    esp32 = (project / ".pio/build/esp32dev/firmware.bin").read_bytes()
    info = inspect_image(esp8266)
    assert (info.chip.key, info.layout, info.servable) == ("esp8266", "esp8266-arduino", True)
    info = inspect_image(esp32)
    assert (info.chip.key, info.layout, info.checksum_ok, info.sha256_ok) == ("esp32", "app", True, True)
    assert info.app_descriptor is not None and info.app_descriptor.version != "2.3.4"  # the core's, not ours
    assert contains_version(esp8266, "2.3.4") and contains_version(esp32, "2.3.4")


def test_without_the_define_the_fallback_is_compiled_in(make_project: ProjectFactory) -> None:
    project = make_project()
    assert pio(project, "-e", "esp32dev").returncode == 0
    image = (project / ".pio/build/esp32dev/firmware.bin").read_bytes()
    assert contains_version(image, "0.0.0-dev")


def test_quotes_lost_in_the_flag_fail_like_a_compiler(make_project: ProjectFactory) -> None:
    """docs/testing.md section 1: `-D FW_VERSION="1.2.3"` loses its quotes; a real compile then fails."""
    project = make_project()
    done = pio(project, "-e", "esp32dev", flags='-D FW_VERSION="1.2.3"')
    assert done.returncode != 0
    assert "too many decimal points" in done.stdout + done.stderr


def test_gzip_fw_and_buildfs(make_project: ProjectFactory) -> None:
    project = make_project(extra_ini="\n[env:gz]\nboard = d1_mini\nboard_build.gzip_fw = yes\n")
    flags = '-DFW_VERSION=\\"1.0.0\\"'
    assert pio(project, "-e", "gz", flags=flags).returncode == 0
    assert pio(project, "-e", "gz", "-t", "buildfs", flags=flags).returncode == 0
    firmware = (project / ".pio/build/gz/firmware.bin").read_bytes()
    assert firmware[:2] == b"\x1f\x8b"
    assert inspect_image(firmware).format == "gzip" and contains_version(firmware, "1.0.0")
    fs = (project / ".pio/build/gz/littlefs.bin").read_bytes()
    assert inspect_filesystem(fs, where="littlefs.bin").format == "littlefs"
    assert b"hello from the filesystem" in fs
