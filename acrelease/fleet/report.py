"""The fleet as operators read it: the JSON of ``devices``, ``device``, ``rollout`` and ``status``,
shared by the CLI and the admin listener's API, so that both always say the same thing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from acrelease.catalog.index import CatalogIndex
from acrelease.fleet.model import DEVICE_STATES, DeviceRow, Event, FleetView, RolloutStatus, iso
from acrelease.fleet.states import Classifier

UNKNOWN_VERSION = "unknown"
"""How a device that reports no version is counted in ``versions``."""


def device_json(row: DeviceRow, state: str) -> dict[str, Any]:
    """One device, with exactly the keys ``acrelease devices --json`` documents."""
    return {"mac": row.mac, "target": f"{row.project}/{row.target}", "channel": row.assigned or row.channel,
            "version": row.version, "sketch_md5": row.sketch_md5, "address": row.address,
            "first_seen": iso(row.first_seen), "last_seen": iso(row.last_seen), "checks": row.checks,
            "pinned": row.pinned, "state": state}


def event_json(event: Event) -> dict[str, Any]:
    return {"at": iso(event.at), "event": event.event, "version": event.version, "detail": event.detail}


def rollout_json(status: RolloutStatus) -> dict[str, Any]:
    rollout = status.rollout
    return {"version": rollout.version, "target": f"{rollout.project}/{rollout.target}",
            "percent": rollout.percent, "state": rollout.state, "sent": status.sent, "updated": status.updated,
            "held": status.held}


@dataclass(frozen=True)
class FleetReport:
    """Every device with its state against the catalog, and the rollouts with their counts: one
    consistent reading of the store, from which every page and listing is cut."""

    devices: tuple[dict[str, Any], ...]
    """``device_json`` objects, ordered by MAC."""
    rollouts: tuple[RolloutStatus, ...]
    generation: int
    """The catalog generation the states were computed against."""


def build_report(rows: Iterable[DeviceRow], view: FleetView, index: CatalogIndex,
                 rollouts: Sequence[RolloutStatus]) -> FleetReport:
    classify = Classifier(index, view).state  # one state per distinct situation, not per device
    devices = tuple(device_json(row, classify(row)) for row in rows)
    return FleetReport(devices, tuple(rollouts), index.generation)


def status_json(report: FleetReport, index: CatalogIndex) -> dict[str, Any]:
    """``acrelease status --json`` and the dashboard's overview: per target, its releases (with how
    many devices run each), its rollouts with progress, and its devices per state and per version."""
    by_target: dict[str, list[dict[str, Any]]] = {}
    for device in report.devices:
        by_target.setdefault(device["target"], []).append(device)
    targets = []
    for (project, name), target in sorted(index.targets.items()):
        key = f"{project}/{name}"
        devices = by_target.get(key, [])
        states = Counter(d["state"] for d in devices)
        versions = Counter(d["version"] or UNKNOWN_VERSION for d in devices)
        waiting = states.get("waiting", 0)
        rollouts = [{**rollout_json(s), "waiting": waiting, "stages": list(s.rollout.stages)}
                    for s in report.rollouts if (s.rollout.project, s.rollout.target) == (project, name)]
        targets.append({
            "target": key, "chip": target.chip, "devices": len(devices),
            "releases": [{"version": str(r.version), "channel": r.channel, "date": r.date, "yanked": r.yanked,
                          "devices": versions.get(str(r.version), 0)} for r in target.releases],
            "rollouts": rollouts,
            "states": {state: states.get(state, 0) for state in DEVICE_STATES},
            "versions": dict(sorted(versions.items(), key=lambda item: (-item[1], item[0]))),
        })
    return {"catalog_generation": index.generation, "devices": len(report.devices), "targets": targets}
