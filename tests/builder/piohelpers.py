"""Paths, sample sketches and the tool-scons package for the PlatformIO tests (see conftest.py)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

PLATFORM_DIR = Path(__file__).resolve().parent.parent / "pio_platform"
TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"

SKETCH_WITH_VERSION = """\
#include "acrelease_version.h"

void loop() {
  // The version must be *used*, or it is not in the binary.
  ESPhttpUpdate.update(client, "http://updates.local:8000/update/demo/board", FW_VERSION);
}
"""

SKETCH_WITHOUT_VERSION = """\
void loop() {
  ESPhttpUpdate.update(client, "http://updates.local:8000/update/demo/board");
}
"""

# The header users get: its `#ifndef FW_VERSION` fallback is what a build without acrelease
# compiles in (our platform reads `#define NAME "..."` from the project's sources and headers).
VERSION_HEADER = TEMPLATES_DIR / "acrelease_version.h"

BASE_INI = """\
[env]
platform = {platform}

[env:d1_mini]
board = d1_mini

[env:esp32dev]
board = esp32dev
"""


def scons_package_version(scons_version: str) -> str:
    """PlatformIO's spelling of an SCons version: 4.11.1 -> 4.41101.0 (major . 4+MMPP . 0)."""
    major, minor, patch = (int(part) for part in scons_version.split(".")[:3])
    return f"{major}.{4 * 10000 + minor * 100 + patch}.0"


def make_core_dir(core: Path) -> Path:
    """A PlatformIO core dir with ``tool-scons`` installed from the pip-installed SCons."""
    import SCons  # type: ignore[import-untyped]

    version = scons_package_version(SCons.__version__)
    package = core / "packages" / "tool-scons"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(Path(SCons.__file__).parent, package / "SCons", ignore=ignore)
    (package / "scons.py").write_text("import sys\nimport SCons.Script\n\nsys.exit(SCons.Script.main())\n")
    (package / "package.json").write_text(json.dumps({"name": "tool-scons", "version": version}))
    (package / ".piopm").write_text(
        json.dumps(
            {
                "type": "tool",
                "name": "tool-scons",
                "version": version,
                "spec": {"owner": "platformio", "id": None, "name": "tool-scons", "requirements": None,
                         "uri": None},
            }
        )
    )
    return core


ProjectFactory = Callable[..., Path]
