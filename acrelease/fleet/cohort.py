"""Rollout cohorts: a pure function of (target, release, device), so every worker and host agrees
without coordination and nothing random is stored (docs/architecture.md, "State").

A device is in the cohort of release R at P % when ``cohort_point(project, target, R, mac) < P / 100``.
The point does not depend on P, so widening a rollout never drops a device (the 10 % cohort lies
inside the 50 % one), and it depends on R, so different releases reach different devices first.
"""

from __future__ import annotations

import hashlib

_SCALE = float(1 << 64)


def cohort_point(project: str, target: str, version: str, mac: str) -> float:
    """A stable number in [0, 1) for this device and release: the first 8 bytes of BLAKE2b over
    a canonical string (NUL-separated, so no two tuples share a string), divided by 2**64."""
    digest = hashlib.blake2b(f"{project}/{target}\0{version}\0{mac}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def in_cohort(project: str, target: str, version: str, mac: str | None, percent: float) -> bool:
    """True when ``mac`` is offered ``version`` in a rollout at ``percent`` (0-100)."""
    if percent >= 100:
        return True
    if mac is None or percent <= 0:
        return False
    return cohort_point(project, target, version, mac) < percent / 100
