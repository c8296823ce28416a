"""DeviceFacts from request headers: what an ESP update client says about itself.

Never raises on client input. Rules (PROTOCOL.md C.2, D.2, F.6, F.26, F.32, H.7):

* header names match case-insensitively;
* the family (``ESP8266``/``ESP32``) comes from the User-Agent (``ESP8266-http-Update``,
  ``ESP32-http-Update``), else from the ``x-<ARCH>-*`` headers present;
* every value is capped at :data:`MAX_VALUE` characters and must be printable ASCII, else it
  counts as sent but unusable (``None``);
* a header sent twice with different values is ambiguous: sent but unusable (``None``);
  identical repeats are one value;
* numbers are plain decimal; anything else (negative, ``12k``, 25 digits) is ``None``;
* the MAC is ``x-<A>-STA-MAC``, else ``x-ESP32-BASE-MAC``, normalised to ``AA:BB:CC:DD:EE:FF``.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from acrelease.policy import DeviceFacts
from acrelease.versioning import parse_device_version

__all__ = ["MANDATORY", "MAX_VALUE", "DeviceFacts", "device_facts", "normalise_mac"]

MAX_VALUE = 128
_HEX = frozenset("0123456789abcdefABCDEF")

UPDATE_AGENTS: dict[bytes, str] = {b"esp8266-http-update": "ESP8266", b"esp32-http-update": "ESP32"}
"""User-Agent (lower-case) of the stock update clients -> header family."""

MANDATORY: dict[str, tuple[str, ...]] = {
    # Only headers every core of the family sends (F.26): no sketch-md5 (old ESP32 cores),
    # no STA/AP-MAC (WiFi-less ESP32 parts), no BASE-MAC (new ESP32 cores only).
    "ESP8266": ("free-space", "sketch-size", "chip-size", "sdk-version", "mode"),
    "ESP32": ("free-space", "sketch-size", "chip-size", "sdk-version", "mode"),
}

_PREFIXES = {"ESP8266": b"x-esp8266-", "ESP32": b"x-esp32-"}
_FIELDS = ("sta-mac", "base-mac", "chip-id", "free-space", "sketch-size", "sketch-md5", "chip-size",
           "sdk-version", "mode", "version")
# Header names per family, as bytes, built once: the hot path does dictionary lookups only.
_NAMES = {arch: {f: prefix + f.encode() for f in _FIELDS} for arch, prefix in _PREFIXES.items()}
_REQUIRED = {arch: tuple((f"x-{arch}-{f}", _NAMES[arch][f]) for f in fields) for arch, fields in MANDATORY.items()}
_AMBIGUOUS = b"\x00"  # a value no header may carry: unusable, but counts as sent
_parse_version = lru_cache(maxsize=4096)(parse_device_version)  # a fleet reports few distinct versions


def device_facts(headers: Iterable[tuple[bytes, bytes]]) -> DeviceFacts:
    """Parse ASGI-style ``(name, value)`` byte pairs into :class:`DeviceFacts`."""
    found: dict[bytes, bytes] = {}
    for raw_name, raw_value in headers:
        name = raw_name.lower()
        if name[:5] == b"x-esp" or name == b"user-agent":
            previous = found.get(name)
            found[name] = raw_value if previous is None or previous == raw_value else _AMBIGUOUS

    agent = found.get(b"user-agent")
    arch = UPDATE_AGENTS.get(agent.strip().lower()) if agent else None
    update_agent = arch is not None
    if arch is None:
        arch = next((a for a, p in _PREFIXES.items() if any(n.startswith(p) for n in found)), None)
        if arch is None:
            return DeviceFacts(arch=None, update_agent=False)
    names = _NAMES[arch]

    def get(field: str) -> str | None:
        return _clean(found.get(names[field]))

    version_text = get("version")
    mode = get("mode")
    md5 = get("sketch-md5")
    return DeviceFacts(
        arch=arch,
        update_agent=update_agent,
        missing=tuple(label for label, key in _REQUIRED[arch] if key not in found),
        mac=normalise_mac(get("sta-mac")) or normalise_mac(get("base-mac")),
        chip_id=get("chip-id"),
        free_space=_int(get("free-space")),
        sketch_size=_int(get("sketch-size")),
        sketch_md5=md5.lower() if md5 and len(md5) == 32 and set(md5) <= _HEX else None,
        chip_size=_int(get("chip-size")),
        sdk_version=get("sdk-version"),
        mode=mode.lower() if mode else None,
        version_text=version_text,
        version=_parse_version(version_text) if version_text else None,
    )


def normalise_mac(text: str | None) -> str | None:
    """``aa:bb:cc:dd:ee:ff``, ``AA-BB-..`` or ``aabbccddeeff`` -> ``AA:BB:CC:DD:EE:FF``; else ``None``."""
    if not text:
        return None
    digits = text.replace(":", "").replace("-", "")
    if len(digits) != 12 or not set(digits) <= _HEX:
        return None
    if len(text) != 12 and len(text) != 17:
        return None
    digits = digits.upper()
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


def _clean(raw: bytes | None) -> str | None:
    """A usable header value: printable ASCII, at most MAX_VALUE characters, stripped, not empty."""
    if raw is None or len(raw) > MAX_VALUE or not raw.isascii():
        return None
    text = raw.decode("ascii").strip()
    if not text or not text.isprintable():
        return None
    return text


def _int(text: str | None) -> int | None:
    # str.isdigit() also accepts non-ASCII digits; _clean already guarantees ASCII.
    if text is None or not text.isdigit() or len(text) > 20:
        return None
    return int(text)
