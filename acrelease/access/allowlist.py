"""The device MAC allowlist behind ``acrelease serve --allow FILE``.

File format: one MAC per line, any case, as ``AABBCCDDEEFF``, ``aa:bb:cc:dd:ee:ff`` or
``AA-BB-CC-DD-EE-FF`` (one separator style per MAC); ``#`` starts a comment, on its own line or
after a MAC; blank lines are ignored. An empty list admits no device. Changes on disk are
picked up as described in :mod:`acrelease.access.files`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from acrelease.access.files import WatchedFile
from acrelease.errors import AccessError
from acrelease.mac import normalise_mac

__all__ = ["Allowlist", "load_allowlist", "normalise_mac", "parse_allowlist"]

WHAT = "allowlist"
log = logging.getLogger("acrelease.access")


def parse_allowlist(data: bytes, path: Path) -> frozenset[str]:
    """The normalised MACs of an allowlist file; raises :class:`AccessError` ``file:line: problem``."""
    macs: set[str] = set()
    for number, raw in enumerate(data.split(b"\n"), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise AccessError(f"{path}:{number}: not UTF-8 text") from None
        text = line.partition("#")[0].strip()
        if not text:
            continue
        mac = normalise_mac(text)
        if mac is None:
            shown = ascii(text[:40])
            raise AccessError(f"{path}:{number}: {shown} is not a MAC address; write it as AA:BB:CC:DD:EE:FF")
        macs.add(mac)
    if not macs:
        log.warning("%s lists no MAC address: every device gets 403", path)
    return frozenset(macs)


def load_allowlist(path: Path, *, interval: float = 1.0) -> Allowlist:
    """Load ``path`` (raises :class:`AccessError`, one line) into an :class:`Allowlist`."""
    return Allowlist(WatchedFile(path, WHAT, lambda data: parse_allowlist(data, path), interval=interval))


class Allowlist:
    """The MACs allowed to update; follows the file (at most one ``stat`` per interval)."""

    def __init__(self, file: WatchedFile[frozenset[str]]) -> None:
        self.file = file

    @property
    def macs(self) -> frozenset[str]:
        return self.file.value

    def reload_if_changed(self) -> bool:
        """Re-read the file now if it changed (a broken file keeps the previous list). True if reloaded."""
        return self.file.reload_if_changed()

    def allows(self, mac: str | None) -> bool:
        """Is ``mac`` listed? ``None`` (no usable MAC header) never is. The server passes
        DeviceFacts.mac, already ``AA:BB:CC:DD:EE:FF``; other spellings are normalised here."""
        self.file.poll()
        if mac is None:
            return False
        macs = self.file.value
        if mac in macs:
            return True
        normal = normalise_mac(mac)
        return normal is not None and normal in macs
