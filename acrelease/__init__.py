"""acrelease: release, publish and serve OTA firmware for ESP8266/ESP32 Arduino and PlatformIO projects."""

__version__ = "0.1.0"


def read_template(name: str) -> str:
    """A file from ``templates/``, which ships inside the package as ``acrelease.templates``."""
    from importlib.resources import files

    return files("acrelease.templates").joinpath(name).read_text(encoding="utf-8")
