"""Semantic versions: strict parsing for releases, lenient parsing for what devices report.

All comparison goes through the ``semver`` package; nothing here compares strings.
"""

from __future__ import annotations

from typing import Literal

import semver

from acrelease.errors import VersionError

Bump = Literal["major", "minor", "patch", "prerelease"]
BUMPS: tuple[Bump, ...] = ("major", "minor", "patch", "prerelease")

MAX_VERSION_LENGTH = 40
"""Longest version text a release may carry: it ends up in file names that AutoConnect's
256-byte JSON pool must hold (docs/protocol.md F.10)."""

FIRST_VERSION = semver.Version(0, 1, 0)


def parse_release_version(text: str) -> semver.Version:
    """Parse a release's version strictly (``MAJOR.MINOR.PATCH[-pre][+build]``).

    A leading ``v`` is tolerated, as people tag ``v1.2.3``; it is not kept.
    """
    raw = text.strip()
    candidate = raw[1:] if raw[:1] in ("v", "V") else raw
    if len(candidate) > MAX_VERSION_LENGTH:
        raise VersionError(f'"{text}" is longer than {MAX_VERSION_LENGTH} characters')
    try:
        return semver.Version.parse(candidate)
    except ValueError:
        raise VersionError(f'"{text}" is not a semantic version (expected MAJOR.MINOR.PATCH)') from None


def parse_device_version(text: str | None) -> semver.Version | None:
    """What a device reports in ``x-ESP8266-version`` / ``x-ESP32-version``, or ``None``.

    Lenient on purpose: ``v1.2.3`` and surrounding blanks are accepted; anything that is not a
    semantic version (``1.2``, ``1.2.3.4``, ``abc``, ``""``) is *unknown*, never an error
    (docs/protocol.md H.3).
    """
    if not text:
        return None
    raw = text.strip()
    if raw[:1] in ("v", "V"):
        raw = raw[1:]
    if not raw or len(raw) > 128 or not raw.isascii():
        return None
    try:
        return semver.Version.parse(raw)
    except ValueError:
        return None


def bump(version: semver.Version, part: Bump) -> semver.Version:
    """The next version after ``version``; ``prerelease`` counts ``-rc.N`` up, or starts the
    next patch's ``-rc.1`` (semver's own ``bump_prerelease`` would give ``1.2.3-rc.1`` for
    ``1.2.3``, which sorts *before* it)."""
    if part == "prerelease":
        base = version if version.prerelease else version.bump_patch()
        return base.bump_prerelease("rc")
    return version.next_version(part)


def next_version(existing: list[semver.Version], part: Bump | None) -> semver.Version:
    """The version a new release gets: the first is 0.1.0, then ``part`` (default patch)
    bumped from the highest existing release."""
    if not existing:
        return FIRST_VERSION
    return bump(max(existing), part or "patch")
