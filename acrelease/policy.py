"""The update decision: what a device that asks gets. Pure: no I/O, no clock, no logging.

:func:`decide` implements docs/protocol.md section H on top of the clients' contract (section F) for
the version-aware endpoint ``/update/<project>/<target>``; :func:`decide_download` is the
smaller rule set for a file a device names itself (AutoConnect's manual pick, H.2).
Every decision carries a short human ``reason`` that the server writes into its log line.
"""

from __future__ import annotations

from dataclasses import dataclass

import semver

from acrelease import chips
from acrelease.catalog.index import Artifact, PublishedRelease, TargetIndex
from acrelease.channels import STABLE
from acrelease.fleet.model import DeviceIntent, Gates

SKETCH_MODE = "sketch"
VERSION_MODE = "version"
FILESYSTEM_MODES = frozenset({"spiffs", "littlefs", "fatfs", "flashfs"})
"""``x-ESP8266-mode: spiffs`` (also LittleFS) and the ESP32 ``updateFs`` family (docs/protocol.md F.31)."""

# ESP8266 flash-size nibble (image byte 3, high 4 bits) -> bytes, as the core reads it
# (docs/protocol.md C.3, Esp.cpp magicFlashChipSize). Used by the catalog factory and tests.
ESP8266_FLASH_NIBBLE: dict[int, int] = {
    0: 512 * 1024, 1: 256 * 1024, 2: 1 << 20, 3: 2 << 20, 4: 4 << 20, 8: 8 << 20, 9: 16 << 20,
}


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """What a device told us about itself, already parsed (see ``acrelease.server.device``).

    Every field is ``None`` when the header was absent or unusable; nothing here raises.
    """

    arch: str | None = None
    """``ESP8266`` or ``ESP32`` (the ``x-<ARCH>-*`` family / User-Agent), ``None`` if not an ESP."""
    update_agent: bool = False
    """User-Agent is ``ESP8266-http-Update`` or ``ESP32-http-Update`` (docs/protocol.md F.26)."""
    missing: tuple[str, ...] = ()
    """Mandatory ``x-<ARCH>-*`` headers that were not sent (F.26)."""
    mac: str | None = None
    """``AA:BB:CC:DD:EE:FF``: STA-MAC, else BASE-MAC (H.7)."""
    chip_id: str | None = None
    free_space: int | None = None
    sketch_size: int | None = None
    sketch_md5: str | None = None
    """32 lower-case hex or ``None``."""
    chip_size: int | None = None
    sdk_version: str | None = None
    mode: str | None = None
    """Lower-case ``x-<ARCH>-mode``."""
    version_text: str | None = None
    """``x-<ARCH>-version`` as sent (capped), for the log."""
    version: semver.Version | None = None
    """``version_text`` parsed leniently (H.3); ``None`` when absent or not SemVer."""


@dataclass(frozen=True, slots=True)
class NoUpdate:
    """Answer ``304 Not Modified`` (F.23): nothing newer for this device."""

    reason: str
    status: int = 304


@dataclass(frozen=True, slots=True)
class Offer:
    """Answer ``200`` with ``artifact``'s bytes, ``x-MD5`` and ``x-version`` (F.16-F.21, F.27)."""

    release: PublishedRelease
    artifact: Artifact
    reason: str
    status: int = 200


@dataclass(frozen=True, slots=True)
class Announce:
    """``x-ESP8266-mode: version``: ``200`` with ``x-version`` and ``x-MD5``, no body (F.30, H.6)."""

    release: PublishedRelease
    artifact: Artifact
    reason: str
    status: int = 200


REFUSAL_CODES = ("user-agent", "headers", "chip", "mode", "space", "flash", "nothing-published")
"""Why a device is refused, in a few words from a fixed set: a metrics label stays bounded while
``reason`` (for the log) carries the details."""


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer ``status`` (403, 404) with nothing served; ``reason`` goes to the log (H.5)."""

    status: int
    reason: str
    code: str
    """One of :data:`REFUSAL_CODES`."""


Decision = NoUpdate | Offer | Announce | Refuse

_CURRENT = {how: NoUpdate(f"{how} current") for how in ("version", "sketch-md5")}
"""The decision of a device that runs the newest release (most checks of a fleet): decisions are
immutable, so one per way of knowing the running version serves every such check, instead of a
formatted reason and a new object each time."""


def eligible(target: TargetIndex, channel: str) -> list[PublishedRelease]:
    """Releases a device on ``channel`` may get, newest first: never yanked; ``stable`` gets
    stable only, any other channel gets its own releases and stable ones."""
    return [r for r in target.releases
            if not r.yanked and (r.channel == STABLE or r.channel == channel)]


def target_arch(target: TargetIndex) -> str | None:
    chip = chips.lookup(target.chip)
    return chip.arch if chip else None


class _Facts:
    """What decide() derives from one TargetIndex, computed once per target (targets are
    immutable snapshots, so this is a cache, not state): a version check is on every
    device's hot path (docs/architecture.md, "The hot path")."""

    __slots__ = ("arch", "by_md5", "current", "pools", "target", "yanked")

    def __init__(self, target: TargetIndex) -> None:
        self.target = target
        self.arch = target_arch(target)
        self.yanked = tuple(r.version for r in target.releases if r.yanked)
        self.by_md5: dict[str, semver.Version] = {}
        for release in reversed(target.releases):  # the newest release wins an MD5 tie
            self.by_md5[release.firmware.md5] = release.version
        self.pools: dict[tuple[str, bool], list[PublishedRelease]] = {}
        self.current: dict[tuple[int, int], tuple[semver.Version, semver.Version, bool]] = {}
        """(id(running), id(newest)) -> (running, newest, running >= newest): the server parses
        device versions through a cache, so a fleet's few versions are the same objects, and a
        SemVer comparison costs a microsecond. The entry keeps both objects alive and is only
        used when both are the very same objects (``is``), so ids cannot be confused."""

    def at_least(self, running: semver.Version, newest: semver.Version) -> bool:
        """``running >= newest`` (SemVer precedence), remembered per pair of version objects."""
        key = (id(running), id(newest))
        found = self.current.get(key)
        if found is not None and found[0] is running and found[1] is newest:
            return found[2]
        result = running >= newest
        if len(self.current) >= 1024:  # device versions come from clients: bound the cache
            self.current.clear()
        self.current[key] = (running, newest, result)
        return result

    def pool(self, channel: str, filesystem: bool) -> list[PublishedRelease]:
        key = (channel, filesystem)
        found = self.pools.get(key)
        if found is None:
            found = [r for r in eligible(self.target, channel) if not filesystem or r.filesystem is not None]
            if len(self.pools) < 64:  # channel names come from clients: bound the cache
                self.pools[key] = found
        return found


_FACTS: dict[int, _Facts] = {}


def _facts(target: TargetIndex) -> _Facts:
    facts = _FACTS.get(id(target))
    if facts is None or facts.target is not target:
        if len(_FACTS) > 4096:
            _FACTS.clear()
        facts = _FACTS[id(target)] = _Facts(target)
    return facts


def decide(device: DeviceFacts, target: TargetIndex, channel: str = STABLE,
           intent: DeviceIntent | None = None, gates: Gates | None = None) -> Decision:
    """The version-aware endpoint's answer for ``device`` asking for ``target`` on ``channel``.

    ``intent`` (the device's pin, assigned channel and holds) and ``gates`` (the target's rollouts
    in progress) come from the fleet registry; the server passes them only when there are any, so
    the common check takes the path below the two ``if``s untouched.
    """
    if intent is not None or gates is not None:
        return _decide_fleet(device, target, channel, intent, gates)
    facts = _client_facts(device, target)
    if isinstance(facts, Refuse):
        return facts
    mode = device.mode or SKETCH_MODE
    if mode == VERSION_MODE:
        pool = facts.pool(channel, False)
        if not pool:
            return Refuse(404, f"nothing published on channel {channel!r}", "nothing-published")  # -102 beats -104 here
        newest = pool[0]
        return Announce(newest, newest.firmware, "announce")  # F.30: never 304
    filesystem = mode in FILESYSTEM_MODES
    if not filesystem and mode != SKETCH_MODE:
        return Refuse(404, f"unsupported mode {mode!r}", "mode")
    pool = facts.pool(channel, filesystem)
    if not pool:
        what = "filesystem image" if filesystem else "firmware"
        return NoUpdate(f"no {what} published on channel {channel!r}")
    return _against_newest(device, facts, pool[0], filesystem, mode)


def _client_facts(device: DeviceFacts, target: TargetIndex) -> _Facts | Refuse:
    """The target's facts, or why this client gets nothing at all: not an ESP update client, missing
    headers (F.26), or the other chip family (H.4: never serve another family's image)."""
    if device.arch is None or not device.update_agent:
        return Refuse(403, "not an ESP update client (User-Agent)", "user-agent")
    if device.missing:
        return Refuse(403, "missing headers: " + ", ".join(device.missing), "headers")
    facts = _facts(target)
    if facts.arch != device.arch:
        return Refuse(403, f"{device.arch} device asked for a {target.chip} target", "chip")
    return facts


def _against_newest(device: DeviceFacts, facts: _Facts, newest: PublishedRelease, filesystem: bool,
                    mode: str) -> Decision:
    """304 when the device runs ``newest`` or later (H.1), else its image if it fits (H.5); a device
    on a yanked release is rolled back; no usable version is never a 304 by itself (H.2, H.3, F.28)."""
    artifact = newest.filesystem if filesystem else newest.firmware
    assert artifact is not None  # the pools hold only releases that have it
    running, how = _running_version(device, facts)
    if running is not None:
        if facts.yanked and any(running == v for v in facts.yanked):
            reason = "running a yanked release: rollback"
        elif facts.at_least(running, newest.version):
            return _CURRENT[how]
        else:
            reason = f"{how} older"
    else:
        reason = "running version unknown"
    refusal = _misfit(device, artifact, mode)
    if refusal is not None:
        return refusal
    return Offer(newest, artifact, reason)


def _decide_fleet(device: DeviceFacts, target: TargetIndex, channel: str, intent: DeviceIntent | None,
                  gates: Gates | None) -> Decision:
    """:func:`decide` for a device the operator said something about, or a target under a rollout:
    an assigned channel replaces the URL's; a pin is served whatever the device runs (downgrades
    included); releases the device is held on, and releases of a rollout it is not (yet) in,
    are treated as if they did not exist (docs/architecture.md, "Where state lives")."""
    facts = _client_facts(device, target)
    if isinstance(facts, Refuse):
        return facts
    if intent is not None and intent.channel is not None:
        channel = intent.channel
    mode = device.mode or SKETCH_MODE
    filesystem = mode in FILESYSTEM_MODES
    if not filesystem and mode != SKETCH_MODE and mode != VERSION_MODE:
        return Refuse(404, f"unsupported mode {mode!r}", "mode")
    pinned = _pinned_release(target, intent)
    if pinned is not None:
        return _decide_pinned(device, facts, pinned, mode)
    pool = admitted(facts.pool(channel, filesystem), target, device.mac, intent, gates)
    if mode == VERSION_MODE:
        if not pool:
            return Refuse(404, f"nothing published on channel {channel!r} for this device", "nothing-published")
        return Announce(pool[0], pool[0].firmware, "announce")
    if not pool:
        what = "filesystem image" if filesystem else "firmware"
        return NoUpdate(f"no {what} for this device on channel {channel!r} (rollout or hold)")
    return _against_newest(device, facts, pool[0], filesystem, mode)


def admitted(pool: list[PublishedRelease], target: TargetIndex, mac: str | None, intent: DeviceIntent | None,
             gates: Gates | None) -> list[PublishedRelease]:
    """``pool`` without the releases this device is held on or not (yet) let into by a rollout."""
    held = intent.held if intent is not None else None
    result = []
    for release in pool:
        if held and (target.project, target.target, release.version) in held:
            continue
        if gates is not None:
            gate = gates.get(release.version)
            if gate is not None and not gate.admits(mac):
                continue
        result.append(release)
    return result


def _pinned_release(target: TargetIndex, intent: DeviceIntent | None) -> PublishedRelease | None:
    """The release the device is pinned to, if it is pinned on this target and the release is
    published and not yanked (a pin to a release yanked later no longer applies)."""
    if intent is None or intent.pin is None or intent.pin_target != (target.project, target.target):
        return None
    release = target.release(intent.pin)
    return release if release is not None and not release.yanked else None


def _decide_pinned(device: DeviceFacts, facts: _Facts, release: PublishedRelease, mode: str) -> Decision:
    """Exactly the pinned release: 304 when the device runs it, else its image, even when older."""
    if mode == VERSION_MODE:
        return Announce(release, release.firmware, f"pinned to {release.version}")
    artifact = release.filesystem if mode in FILESYSTEM_MODES else release.firmware
    if artifact is None:
        return NoUpdate(f"pinned to {release.version}, which has no filesystem image")
    running, how = _running_version(device, facts)
    if running is not None and running == release.version:
        return NoUpdate(f"pinned to {release.version}: {how} current")
    refusal = _misfit(device, artifact, mode)
    if refusal is not None:
        return refusal
    return Offer(release, artifact, f"pinned to {release.version}")


def decide_download(device: DeviceFacts, target: TargetIndex, release: PublishedRelease,
                    artifact: Artifact) -> Decision:
    """A device (AutoConnect) downloads a file it picked by name (docs/protocol.md H.2).

    Only applies when the request carries ESP update headers: the file is served unless it is
    for another chip family, does not fit, or the device's sketch MD5 shows it already runs it.
    """
    arch = _facts(target).arch
    if device.arch is not None and arch != device.arch:
        return Refuse(403, f"{device.arch} device asked for a {target.chip} file", "chip")
    mode = device.mode or SKETCH_MODE
    if artifact.kind == "firmware" and mode in FILESYSTEM_MODES:
        return Refuse(403, f"mode {mode} asked for a firmware file", "mode")  # F.31
    if artifact.kind == "filesystem" and mode == SKETCH_MODE:
        return Refuse(403, "sketch mode asked for a filesystem file", "mode")  # F.31
    if artifact.kind == "firmware" and device.sketch_md5 == artifact.md5:
        return NoUpdate(f"already running {release.version} (sketch-md5)")  # F.29
    refusal = _misfit(device, artifact, mode)
    if refusal is not None:
        return refusal
    return Offer(release, artifact, f"requested {artifact.name}")


def _running_version(device: DeviceFacts, facts: _Facts) -> tuple[semver.Version | None, str]:
    """The version the device runs: its ``x-<A>-version`` if parseable (H.1), else the release
    whose firmware MD5 equals its ``sketch-md5`` (H.2, F.29; C.4 caveats make this best effort)."""
    if device.version is not None:
        return device.version, "version"
    if device.sketch_md5:
        version = facts.by_md5.get(device.sketch_md5)
        if version is not None:
            return version, "sketch-md5"
    return None, ""


def _misfit(device: DeviceFacts, artifact: Artifact, mode: str) -> Refuse | None:
    """H.5: do not send what the device will refuse after downloading it."""
    # free-space is the free *sketch* space; filesystem updates are bounded by the FS
    # partition instead, which no header reports (docs/protocol.md C.3, C.6, D.3).
    if mode == SKETCH_MODE and device.free_space is not None and artifact.size > device.free_space:
        return Refuse(403, f"{artifact.name} is {artifact.size} bytes, free-space {device.free_space}", "space")
    if (mode == SKETCH_MODE and device.arch == "ESP8266" and device.chip_size is not None
            and artifact.flash_size is not None and not artifact.format.startswith("gzip")
            and artifact.flash_size > device.chip_size):
        # docs/protocol.md C.3 / F.18: -107 "New Binary Does Not Fit Flash Size".
        return Refuse(403, f"{artifact.name} declares {artifact.flash_size} bytes of flash, "
                           f"chip-size {device.chip_size}", "flash")
    return None
