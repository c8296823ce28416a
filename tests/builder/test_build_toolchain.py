"""A real espressif8266 Arduino build: needs PlatformIO's registry (platform + toolchain download).

Runs wherever the registry is reachable (or the platform is already installed in the user's
PlatformIO core dir); skipped otherwise, with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from acrelease import manifest
from acrelease.builder import platformio
from acrelease.builder._registry import registry_reachable
from acrelease.builder.platformio import pio_command
from acrelease.builder.release_build import build_release
from acrelease.image import contains_version, inspect_image

SKETCH = """\
#include <Arduino.h>
#include <ESP8266WiFi.h>
#include <ESP8266httpUpdate.h>
#ifndef FW_VERSION
#define FW_VERSION "0.0.0-dev"
#endif

WiFiClient client;

void setup() {}

void loop() {
  ESPhttpUpdate.update(client, "http://updates.local:8000/update/demo/d1mini", FW_VERSION);
  delay(60000);
}
"""


def _installed() -> bool:
    core = Path(os.environ.get("PLATFORMIO_CORE_DIR", "~/.platformio")).expanduser()
    return (core / "platforms" / "espressif8266").is_dir()


@pytest.mark.toolchain
@pytest.mark.skipif(pio_command() == ["pio"],
                    reason="PlatformIO is not installed: pip install platformio")
@pytest.mark.skipif(not (_installed() or registry_reachable(timeout=3)),
                    reason="needs PlatformIO's registry to install espressif8266 and its xtensa toolchain "
                           "(unreachable here: docs/testing.md section 1)")
def test_real_espressif8266_build_carries_the_version(tmp_path: Path) -> None:
    project = tmp_path / "realdemo"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.cpp").write_text(SKETCH)
    (project / "platformio.ini").write_text(
        "[env:d1_mini]\nplatform = espressif8266\nboard = d1_mini\nframework = arduino\n")
    path = project / manifest.MANIFEST_NAME
    manifest.init_manifest(path, "realdemo", platformio.read_project_targets(project))
    outcome = build_release(path, version="1.0.0")
    firmware = (project / "dist/1.0.0/d1_mini/firmware.bin").read_bytes()
    assert outcome.added is not None
    assert inspect_image(firmware).chip.key == "esp8266"
    assert contains_version(firmware, "1.0.0")
