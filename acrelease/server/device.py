"""DeviceFacts from request headers: what an ESP update client says about itself.

Never raises on client input. Rules (docs/protocol.md C.2, D.2, F.6, F.26, F.32, H.7):

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

import re
from collections.abc import Iterable
from functools import lru_cache

from acrelease.mac import normalise_mac
from acrelease.policy import DeviceFacts
from acrelease.versioning import parse_device_version

__all__ = ["MANDATORY", "MAX_VALUE", "DeviceFacts", "device_facts", "normalise_mac"]

MAX_VALUE = 128
CANONICAL_MAC = re.compile(rb"[0-9A-F]{2}(?::[0-9A-F]{2}){5}")
MD5 = re.compile(r"[0-9a-fA-F]{32}")

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
_REQUIRED_SET = {arch: frozenset(key for _, key in required) for arch, required in _REQUIRED.items()}
_AMBIGUOUS = b"\x00"  # a value no header may carry: unusable, but counts as sent
_parse_version = lru_cache(maxsize=4096)(parse_device_version)  # a fleet reports few distinct versions


def device_facts(headers: Iterable[tuple[bytes, bytes]]) -> DeviceFacts:
    """Parse ASGI ``(name, value)`` byte pairs into :class:`DeviceFacts`.

    Names are expected lower-case, as the ASGI specification requires of servers (our HTTP/1
    front end and httpx/uvicorn/granian all comply); that is what makes matching them
    case-insensitive (docs/protocol.md F.6).
    """
    pairs = headers if isinstance(headers, list) else list(headers)
    found = dict(pairs)
    if len(found) != len(pairs):
        found = _merge_repeats(pairs)
    get = found.get

    agent = get(b"user-agent")
    arch = UPDATE_AGENTS.get(agent.strip().lower()) if agent else None
    update_agent = arch is not None
    if arch is None:
        arch = next((a for a, p in _PREFIXES.items() if any(n.startswith(p) for n in found)), None)
        if arch is None:
            return DeviceFacts(arch=None, update_agent=False)
    names = _NAMES[arch]
    missing = () if found.keys() >= _REQUIRED_SET[arch] else tuple(
        label for label, key in _REQUIRED[arch] if key not in found)
    version_text = _clean(get(names["version"]))
    mode = _clean(get(names["mode"]))
    md5 = _clean(get(names["sketch-md5"]))
    return DeviceFacts(
        arch=arch,
        update_agent=update_agent,
        missing=missing,
        mac=_mac(get(names["sta-mac"])) or _mac(get(names["base-mac"])),
        chip_id=_clean(get(names["chip-id"])),
        free_space=_int(get(names["free-space"])),
        sketch_size=_int(get(names["sketch-size"])),
        sketch_md5=md5.lower() if md5 and MD5.fullmatch(md5) else None,
        chip_size=_int(get(names["chip-size"])),
        sdk_version=_clean(get(names["sdk-version"])),
        mode=mode.lower() if mode else None,
        version_text=version_text,
        version=_parse_version(version_text) if version_text else None,
    )


def _merge_repeats(pairs: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """Headers sent more than once: identical repeats are one value, different ones ambiguous."""
    found: dict[bytes, bytes] = {}
    for name, value in pairs:
        previous = found.get(name)
        found[name] = value if previous is None or previous == value else _AMBIGUOUS
    return found


def _mac(raw: bytes | None) -> str | None:
    """``normalise_mac(_clean(raw))``, with the form the ESP cores send (``AA:BB:CC:DD:EE:FF``,
    already normal) recognised in one regex match: the MAC is on every check's hot path."""
    if raw is not None and CANONICAL_MAC.fullmatch(raw):
        return raw.decode("ascii")
    return normalise_mac(_clean(raw))


def _clean(raw: bytes | None) -> str | None:
    """A usable header value: printable ASCII, at most MAX_VALUE characters, stripped, not empty."""
    if raw is None or len(raw) > MAX_VALUE or not raw.isascii():
        return None
    text = raw.decode("ascii").strip()
    if not text or not text.isprintable():
        return None
    return text


def _int(raw: bytes | None) -> int | None:
    """Plain decimal within 20 digits, else ``None`` (negative, ``12k``, ``0x10``, blanks only)."""
    if raw is None:
        return None
    raw = raw.strip()
    # bytes.isdigit() is ASCII-only, so no other script's digits get through.
    if not raw.isdigit() or len(raw) > 20:
        return None
    return int(raw)
