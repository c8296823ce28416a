"""Real ``pio`` runs, offline, against the local platform in ``tests/pio_platform``.

PlatformIO cannot reach its registry here (docs/testing.md section 1), so each test session gets
its own ``PLATFORMIO_CORE_DIR`` holding the one core package ``pio run`` needs, ``tool-scons``,
made from the pip-installed SCons. Projects name the platform as ``file://<abs path>``; PlatformIO
copies it into that core dir on first use, so edits to the platform are seen by the next
session, never a stale copy.
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from acrelease.builder.platformio import pio_command
from tests.builder.piohelpers import (
    BASE_INI,
    PLATFORM_DIR,
    SKETCH_WITH_VERSION,
    SKETCH_WITHOUT_VERSION,
    VERSION_HEADER,
    ProjectFactory,
    make_core_dir,
)


@pytest.fixture(scope="session")
def pio_core_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if pio_command() == ["pio"]:
        pytest.skip("PlatformIO is not installed: pip install platformio")
    return make_core_dir(tmp_path_factory.mktemp("pio-core"))


@pytest.fixture
def pio_env(pio_core_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point every ``pio`` this test starts at the session core dir, quietly and offline."""
    monkeypatch.setenv("PLATFORMIO_CORE_DIR", str(pio_core_dir))
    monkeypatch.setenv("PLATFORMIO_DISABLE_UPGRADE_CHECK", "true")
    monkeypatch.setenv("PLATFORMIO_SETTING_ENABLE_TELEMETRY", "no")
    monkeypatch.setenv("PLATFORMIO_NO_ANSI", "true")
    for name in ("PLATFORMIO_BUILD_FLAGS", "PLATFORMIO_BUILD_DIR", "PLATFORMIO_WORKSPACE_DIR",
                 "PLATFORMIO_BUILD_SRC_FLAGS", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    yield pio_core_dir


@pytest.fixture
def make_project(tmp_path: Path, pio_env: Path) -> ProjectFactory:
    """Create a PlatformIO project: envs d1_mini (ESP8266) and esp32dev (ESP32), a data/ folder.

    ``extra_ini`` is appended to platformio.ini; ``uses_version=False`` gives a sketch that never
    uses FW_VERSION (so the version cannot reach the binary).
    """

    def make(name: str = "demo", *, extra_ini: str = "", uses_version: bool = True,
             data: bool = True) -> Path:
        project = tmp_path / name
        (project / "src").mkdir(parents=True)
        (project / "include").mkdir()
        shutil.copyfile(VERSION_HEADER, project / "include" / "acrelease_version.h")
        sketch = SKETCH_WITH_VERSION if uses_version else SKETCH_WITHOUT_VERSION
        (project / "src" / "main.cpp").write_text(sketch)
        ini = BASE_INI.format(platform=PLATFORM_DIR.as_uri()) + textwrap.dedent(extra_ini)
        (project / "platformio.ini").write_text(ini)
        if data:
            (project / "data").mkdir()
            (project / "data" / "index.html").write_text("<h1>hello from the filesystem</h1>\n")
        return project

    return make
