"""The fleet's values: what one check tells, what the registry holds, what the server decides with.

Everything here is immutable and free of I/O, so :mod:`acrelease.policy` can take a
:class:`DeviceIntent` and a target's :data:`Gates` without depending on any store.
Timestamps are integer milliseconds since the epoch, UTC (portable across SQLite and PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import semver

from acrelease.fleet.cohort import in_cohort

DeviceState = Literal["current", "behind", "updating", "waiting", "held", "unknown"]
DEVICE_STATES: tuple[DeviceState, ...] = ("current", "behind", "updating", "waiting", "held", "unknown")

RolloutState = Literal["rolling", "paused", "halted", "complete", "aborted"]
ROLLOUT_STATES: tuple[RolloutState, ...] = ("rolling", "paused", "halted", "complete", "aborted")

EventKind = Literal["seen", "sent", "reported", "refused", "held", "retried", "pinned", "unpinned", "assigned"]
EVENT_KINDS: tuple[EventKind, ...] = ("seen", "sent", "reported", "refused", "held", "retried", "pinned",
                                      "unpinned", "assigned")

TargetKey = tuple[str, str]
"""(project, target)."""


def now_ms() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


def iso(ms: int) -> str:
    """``2026-12-02T15:04:05.123Z``: ISO 8601 UTC, as ``devices --json`` prints timestamps."""
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class Event:
    at: int
    event: EventKind
    version: str | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Observation:
    """What the checks of one device told one server since its last flush, coalesced: the
    newest values, the number of checks, the whole images sent per release, and events."""

    mac: str
    project: str
    target: str
    channel: str
    version: str | None
    """Normalised SemVer text of what the device reported, ``None`` when absent or unparseable."""
    sketch_md5: str | None
    chip_size: int | None
    free_space: int | None
    sdk_version: str | None
    address: str | None
    first_at: int
    last_at: int
    checks: int
    sent: tuple[tuple[str, int, int, int], ...] = ()
    """(version, how many times its whole firmware image was sent, first and last time) in this batch."""
    events: tuple[Event, ...] = ()


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """One device as the registry holds it (without state, which depends on the catalog)."""

    mac: str
    project: str
    target: str
    channel: str
    version: str | None
    sketch_md5: str | None
    chip_size: int | None
    free_space: int | None
    sdk_version: str | None
    address: str | None
    first_seen: int
    last_seen: int
    checks: int
    pinned: str | None = None
    assigned: str | None = None
    held: tuple[str, ...] = ()
    """Releases of its target the device is held on (loop breaker)."""
    last_sent: str | None = None
    """The release whose whole firmware image it was sent last."""

    @property
    def target_key(self) -> TargetKey:
        return (self.project, self.target)


@dataclass(frozen=True, slots=True)
class Rollout:
    project: str
    target: str
    version: str
    percent: float
    state: RolloutState
    stages: tuple[float, ...] = ()
    """Autopilot stages (``--stages 1,10,50,100``); empty: moved by hand."""
    advance_at: float = 95.0
    min_updated: int = 10
    max_failures: int = 5
    held_base: int = 0
    """Devices held on this release when it was last resumed: the halt counts holds past this."""
    stage_started: int = 0
    created: int = 0

    @property
    def target_key(self) -> TargetKey:
        return (self.project, self.target)


@dataclass(frozen=True, slots=True)
class RolloutStatus:
    """A rollout with its counts, as ``acrelease rollout --json`` lists it."""

    rollout: Rollout
    sent: int
    updated: int
    held: int


@dataclass(frozen=True, slots=True)
class Gate:
    """A release of a target under a rollout that is not complete: who may be offered it."""

    project: str
    target: str
    version: str
    percent: float
    state: RolloutState

    def admits(self, mac: str | None) -> bool:
        if self.state != "rolling":
            return False  # paused, halted, aborted: nobody new gets it
        return in_cohort(self.project, self.target, self.version, mac, self.percent)


Gates = Mapping[semver.Version, Gate]
"""The gates of one target, by release version."""


@dataclass(frozen=True, slots=True)
class DeviceIntent:
    """What the operator (or the loop breaker) says about one device."""

    pin: semver.Version | None = None
    pin_target: TargetKey | None = None
    channel: str | None = None
    """Assigned channel: overrides ``?channel=`` of the device's URL."""
    held: frozenset[tuple[str, str, semver.Version]] = frozenset()
    """(project, target, release) the device is held on."""


@dataclass(frozen=True)
class FleetView:
    """The immutable snapshot a server decides with; swapped in one assignment when the store's
    intent generation changes. Nearly every device has no entry in ``by_mac``, and a target
    without a rollout in progress has none in ``gates``: the common check costs two lookups."""

    generation: int = -1
    by_mac: Mapping[str, DeviceIntent] = field(default_factory=dict)
    gates: Mapping[TargetKey, Gates] = field(default_factory=dict)
    rollouts: tuple[Rollout, ...] = ()


EMPTY_VIEW = FleetView()


def build_view(generation: int, pins: Mapping[str, tuple[str, str, str]], assignments: Mapping[str, str],
               holds: Mapping[str, list[tuple[str, str, str]]], rollouts: tuple[Rollout, ...]) -> FleetView:
    """Assemble a view from the store's rows (versions that do not parse are left out)."""
    by_mac: dict[str, DeviceIntent] = {}
    for mac in {*pins, *assignments, *holds}:
        pin = pins.get(mac)
        pin_version = _parse(pin[2]) if pin else None
        held = frozenset((p, t, v) for p, t, text in holds.get(mac, ()) if (v := _parse(text)) is not None)
        by_mac[mac] = DeviceIntent(pin=pin_version, pin_target=(pin[0], pin[1]) if pin and pin_version else None,
                                   channel=assignments.get(mac), held=held)
    gates: dict[TargetKey, dict[semver.Version, Gate]] = {}
    for rollout in rollouts:
        version = _parse(rollout.version)
        if version is None or rollout.state == "complete":
            continue
        gates.setdefault(rollout.target_key, {})[version] = Gate(
            rollout.project, rollout.target, rollout.version, rollout.percent, rollout.state)
    return FleetView(generation, by_mac, gates, rollouts)


def _parse(text: str) -> semver.Version | None:
    try:
        return semver.Version.parse(text)
    except (ValueError, TypeError):
        return None
