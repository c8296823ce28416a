"""Release channels as the server sees them: the newest release of each channel of a target
(the ``serve`` banner, the catalog's DEBUG lines), and unknown channels asked for by devices.

A device asks for a channel with ``/update/<project>/<target>?channel=C``. A channel that no
release of the target was ever published on is most likely a typo in a sketch; the device is
answered as on ``stable`` (README, "What the server answers") and the server says so, once per
target and channel, at WARNING.
"""

from __future__ import annotations

import logging

from acrelease.catalog.index import PublishedRelease, TargetIndex
from acrelease.channels import STABLE

log = logging.getLogger("acrelease.server")

MAX_WARNED = 1024
"""Unknown (target, channel) pairs remembered per process: channel names come from clients."""


def newest_per_channel(target: TargetIndex) -> list[tuple[str, PublishedRelease]]:
    """``(channel, newest release published on it)`` for every channel with a release that is
    not yanked, ``stable`` first, then by name. Only releases *on* the channel count: the
    newest of ``beta`` is the newest beta, even if a stable release is newer."""
    newest: dict[str, PublishedRelease] = {}
    for release in target.releases:  # newest first
        if not release.yanked:
            newest.setdefault(release.channel, release)
    return sorted(newest.items(), key=lambda item: (item[0] != STABLE, item[0]))


def describe_newest(target: TargetIndex) -> str:
    """``newest: stable 1.1.0, beta 1.2.0-rc.1``, or ``nothing published``."""
    newest = newest_per_channel(target)
    if not newest:
        return "nothing published"
    return "newest: " + ", ".join(f"{channel} {release.version}" for channel, release in newest)


class ChannelWatch:
    """Tells whether a target has ever had a release on a channel; warns once per process
    about each (target, channel) that it has not, at most :data:`MAX_WARNED` of them."""

    def __init__(self, limit: int = MAX_WARNED) -> None:
        self.limit = limit
        self._known: dict[int, tuple[TargetIndex, frozenset[str]]] = {}
        self._warned: set[tuple[str, str, str]] = set()
        self._full = False

    def known(self, target: TargetIndex, channel: str) -> bool:
        """True for ``stable`` and for any channel a release of ``target`` is on (yanked too)."""
        if channel == STABLE:
            return True
        entry = self._known.get(id(target))
        if entry is None or entry[0] is not target:  # targets are immutable snapshots
            if len(self._known) >= 4096:
                self._known.clear()
            entry = self._known[id(target)] = (target, frozenset(r.channel for r in target.releases))
        return channel in entry[1]

    def check(self, target: TargetIndex, channel: str, mac: str | None, address: str | None) -> None:
        """Warn (once) if ``channel`` is unknown for ``target``; the device gets stable."""
        if self.known(target, channel):
            return
        key = (target.project, target.target, channel)
        if key in self._warned:
            return
        if len(self._warned) >= self.limit:
            if not self._full:
                self._full = True
                log.warning("channels: %d unknown channels reported; further ones are not (each device "
                            "is still answered as on stable)", self.limit)
            return
        self._warned.add(key)
        log.warning("channel %s of %s/%s asked for by %s %s: no release of this target is on it; answered "
                    "as stable (a typo in the sketch's URL?). Reported once per target and channel",
                    ascii(channel), target.project, target.target, mac or "-", address or "-")
