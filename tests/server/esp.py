"""The header sets the stock clients send (docs/protocol.md C.2, D.2, G), for tests."""

from __future__ import annotations

SOURCE = ("10.0.0.5", 40000)
MAC = "DE:BA:7A:B1:E0:42"


def esp8266(version: str | None = None, *, mode: str = "sketch", md5: str = "a43ad019932b627ab90ee35a94a764ee",
            free: int | str = 4194304, chip_size: int | str = 4194304) -> dict[str, str]:
    """ESP8266HTTPUpdate's headers in wire order (docs/protocol.md G); version only if given."""
    headers = {
        "User-Agent": "ESP8266-http-Update",
        "x-ESP8266-Chip-ID": "15602487",
        "x-ESP8266-STA-MAC": MAC,
        "x-ESP8266-AP-MAC": MAC,
        "x-ESP8266-free-space": str(free),
        "x-ESP8266-sketch-size": "400000",
        "x-ESP8266-sketch-md5": md5,
        "x-ESP8266-chip-size": str(chip_size),
        "x-ESP8266-sdk-version": "2.5.0",
        "x-ESP8266-mode": mode,
    }
    if version is not None:
        headers["x-ESP8266-version"] = version
    return headers


def esp32(version: str | None = None, *, mode: str = "sketch", md5: str | None = None, new_core: bool = True,
          free: int = 1966080) -> dict[str, str]:
    """arduino-esp32 HTTPUpdate's headers (docs/protocol.md D.2); old cores send no BASE-MAC and no
    sketch-md5."""
    headers = {"User-Agent": "ESP32-http-Update", "Cache-Control": "no-cache"}
    if new_core:
        headers["x-ESP32-BASE-MAC"] = MAC
    headers.update({
        "x-ESP32-STA-MAC": MAC,
        "x-ESP32-AP-MAC": "DE:BA:7A:B1:E0:43",
        "x-ESP32-free-space": str(free),
        "x-ESP32-sketch-size": "900000",
    })
    if md5 is not None and new_core:
        headers["x-ESP32-sketch-md5"] = md5
    headers.update({"x-ESP32-chip-size": "4194304", "x-ESP32-sdk-version": "v5.1.4", "x-ESP32-mode": mode})
    if version is not None:
        headers["x-ESP32-version"] = version
    return headers
