"""Write the demo firmware images: ``python -m tests.factories.make_demo OUTDIR``.

Creates ``OUTDIR/<version>/d1mini/firmware.bin`` (ESP8266 Arduino layout) and
``OUTDIR/<version>/esp32dev/firmware.bin`` (ESP32 app) for 1.0.0 and 1.1.0, each holding its
version as the C string a ``FW_VERSION`` define leaves in a real build, plus
``OUTDIR/1.1.0/d1mini/littlefs.bin`` (a small littlefs-like image). Every file is checked with
acrelease's own inspector before the script reports success. Output is deterministic.
"""

from __future__ import annotations

import sys
from pathlib import Path

from acrelease.chips import lookup
from acrelease.image import check_ota_image, contains_version, inspect_filesystem, inspect_image
from tests.factories.images import esp32_image, esp8266_image, littlefs_image

VERSIONS = ("1.0.0", "1.1.0")
FILESYSTEM_SIZE = 16 * 1024


def demo_files() -> dict[str, bytes]:
    """Relative path -> bytes of every demo file."""
    files: dict[str, bytes] = {}
    for version in VERSIONS:
        files[f"{version}/d1mini/firmware.bin"] = esp8266_image(version)
        files[f"{version}/esp32dev/firmware.bin"] = esp32_image("esp32", version, project="acrelease-demo")
    files["1.1.0/d1mini/littlefs.bin"] = littlefs_image(FILESYSTEM_SIZE)
    return files


def _check(relative: str, data: bytes) -> None:
    version, target, name = relative.split("/")
    if name == "littlefs.bin":
        assert inspect_filesystem(data, where=relative).format == "littlefs"
        return
    check_ota_image(inspect_image(data), lookup("esp8266" if target == "d1mini" else "esp32"), where=relative)
    assert contains_version(data, version), relative


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.factories.make_demo OUTDIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    for relative, data in demo_files().items():
        _check(relative, data)
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(f"{path}  {len(data)} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
