"""templates/: the PlatformIO extra script and the sketch snippets."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from acrelease import manifest
from acrelease.builder import platformio
from acrelease.builder.platformio import pio_command
from acrelease.image import contains_version
from tests.builder.piohelpers import TEMPLATES_DIR, ProjectFactory


def test_pio_run_t_acrelease_builds_and_records_once(make_project: ProjectFactory) -> None:
    project = make_project()
    ini = project / "platformio.ini"
    ini.write_text(ini.read_text().replace("[env]\n", "[env]\nextra_scripts = post:scripts/pio_acrelease.py\n", 1))
    (project / "scripts").mkdir()
    shutil.copyfile(TEMPLATES_DIR / "pio_acrelease.py", project / "scripts" / "pio_acrelease.py")
    manifest.init_manifest(project / manifest.MANIFEST_NAME, "demo", platformio.read_project_targets(project))
    env = dict(os.environ, ACRELEASE_BUILD_ARGS="--version 4.5.6 --notes hook")
    # Make sure the hook finds this acrelease (the `acrelease` script next to this Python).
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run([*pio_command(), "run", "-d", str(project), "-t", "acrelease"], env=env, capture_output=True,
                          text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("already run by this `pio run`") == 1  # two envs, one release
    (release,) = manifest.load(project / manifest.MANIFEST_NAME).releases
    assert str(release.version) == "4.5.6" and release.notes == "hook"
    assert contains_version((project / "dist/4.5.6/esp32dev/firmware.bin").read_bytes(), "4.5.6")


@pytest.mark.parametrize(("name", "call"), [
    ("ota_esp8266.ino", 'ESPhttpUpdate.update(client, UPDATE_URL, FW_VERSION)'),
    ("ota_esp32.ino", 'httpUpdate.update(client, UPDATE_URL, FW_VERSION)'),
    ("ota_autoconnect.ino", 'update.uri = "PROJECT/TARGET";'),
])
def test_snippets_show_the_update_call(name: str, call: str) -> None:
    text = (TEMPLATES_DIR / name).read_text()
    assert call in text and '#include "acrelease_version.h"' in text
    assert "/update/PROJECT/TARGET" in text or 'AutoConnectUpdate update("HOST", 8000);' in text


def test_version_header_has_the_fallback() -> None:
    text = (TEMPLATES_DIR / "acrelease_version.h").read_text()
    assert '#ifndef FW_VERSION\n#define FW_VERSION "0.0.0-dev"\n#endif' in text
