"""A device's state against the catalog as it is now (``acrelease devices``): pure.

* ``current``: runs what it should run (the newest release it may get, or its pin);
* ``behind``: should get a newer release and has not been sent it yet;
* ``updating``: was sent that release and has not reported it yet;
* ``waiting``: a newer release exists, but this device is outside its rollout stage, or the
  rollout is paused, halted or aborted;
* ``held``: the loop breaker holds it on a release newer than what it runs;
* ``unknown``: it reports no version and no sketch MD5 the catalog knows.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import semver

from acrelease.catalog.index import CatalogIndex
from acrelease.fleet.model import DeviceIntent, DeviceRow, DeviceState, FleetView
from acrelease.policy import _facts, admitted, eligible
from acrelease.versioning import parse_device_version

_parse = lru_cache(maxsize=4096)(parse_device_version)  # a fleet reports few distinct versions


def device_state(row: DeviceRow, index: CatalogIndex, view: FleetView) -> DeviceState:
    target = index.target(row.project, row.target)
    if target is None:
        return "unknown"
    facts = _facts(target)  # the decision's own per-target cache (sketch MD5 -> release)
    running: semver.Version | None = _version(row.version)
    if running is None and row.sketch_md5 is not None:
        running = facts.by_md5.get(row.sketch_md5)
    if running is None:
        return "unknown"
    held = frozenset(v for v in (_version(h) for h in row.held) if v is not None)
    if row.pinned is not None:
        pin = _version(row.pinned)
        release = target.release(pin) if pin is not None else None
        if release is not None and not release.yanked:
            if running == release.version:
                return "current"
            return "updating" if row.last_sent == str(release.version) else "behind"
    channel = row.assigned or row.channel
    pool = eligible(target, channel)
    # Only holds that are active make a device "held"; one merely armed (sent the release
    # --loop-limit times, not seen since) is still "updating".
    base = view.by_mac.get(row.mac)
    active = frozenset((row.project, row.target, v) for v in held)
    intent = replace(base, held=active) if base is not None else DeviceIntent(held=active) if active else None
    offered = admitted(pool, target, row.mac, intent, view.gates.get(row.target_key))
    rollback = any(running == v for v in facts.yanked)
    if offered and (rollback or offered[0].version > running):
        return "updating" if row.last_sent == str(offered[0].version) else "behind"
    if any(v > running for v in held):
        return "held"
    if pool and pool[0].version > running:
        return "waiting"
    return "current"


def _version(text: str | None) -> semver.Version | None:
    return _parse(text) if text else None
