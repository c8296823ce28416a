"""Semantic version strings inside an image, for ``acrelease import`` (pure).

A sketch's ``FW_VERSION`` reaches the binary as a C string (``"1.2.3\\0"``); this lists the
strings that look like one, by the same rule as :func:`acrelease.image.contains_version` (a
whole C string: the byte before it is not part of a version). The ESP-IDF app descriptor is left
out: in an Arduino-ESP32 build its version is the core's, not the sketch's (docs/architecture.md,
field facts).
"""

from __future__ import annotations

import re

import semver

from acrelease.errors import ImageError
from acrelease.image.locate import unwrap
from acrelease.image.walk import app_descriptor

_STRING = re.compile(rb"(?<![0-9A-Za-z.+-])(\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?)\x00")
_DESCRIPTOR_SIZE = 256  # esp_app_desc_t


def semver_strings(data: bytes) -> tuple[str, ...]:
    """Distinct semantic versions found as whole C strings, in order of appearance; gzip images
    are searched decompressed, signed images without their signature."""
    try:
        container, body = unwrap(data)
    except ImageError:
        return ()
    payload = container.body
    if body.app is not None and app_descriptor(payload, body.app) is not None:
        at = body.app.start + 0x20
        payload = payload[:at] + bytes(_DESCRIPTOR_SIZE) + payload[at + _DESCRIPTOR_SIZE:]
    found: dict[str, None] = {}
    for match in _STRING.finditer(payload):
        text = match.group(1).decode("ascii")
        if semver.Version.is_valid(text):
            found.setdefault(text)
    return tuple(found)
