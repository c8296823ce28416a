"""Cohorts (pure) and the decision with fleet intent: rollout gates, holds, pins, assignments."""

from __future__ import annotations

import random
from pathlib import Path

import semver

from acrelease.fleet.cohort import cohort_point, in_cohort
from acrelease.fleet.model import DeviceIntent, Gate
from acrelease.policy import Announce, DeviceFacts, NoUpdate, Offer, decide
from tests.factories.catalog import demo_catalog
from tests.fleet.fleetsim import mac_of

V = semver.Version.parse


def random_macs(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [":".join(f"{rng.randrange(256):02X}" for _ in range(6)) for _ in range(count)]


def test_cohort_point_is_stable_and_in_range() -> None:
    # Fixed values: a change of the hash would move every fleet's cohorts.
    assert cohort_point("demo", "d1mini", "1.1.0", "02:00:00:00:00:01") == cohort_point(
        "demo", "d1mini", "1.1.0", "02:00:00:00:00:01")
    points = [cohort_point("demo", "d1mini", "1.1.0", m) for m in random_macs(1000, 1)]
    assert all(0 <= p < 1 for p in points) and len(set(points)) == 1000


def test_share_within_one_and_a_half_points_over_10000_random_macs() -> None:
    macs = random_macs(10_000, 2)
    for percent in (1, 5, 10, 25, 50, 90):
        share = sum(in_cohort("demo", "d1mini", "1.1.0", m, percent) for m in macs) / 100
        assert abs(share - percent) <= 1.5, (percent, share)


def test_widening_never_drops_a_device_and_releases_pick_different_devices() -> None:
    macs = random_macs(10_000, 3)
    ten = {m for m in macs if in_cohort("demo", "d1mini", "1.1.0", m, 10)}
    fifty = {m for m in macs if in_cohort("demo", "d1mini", "1.1.0", m, 50)}
    assert ten <= fifty and len(ten) < len(fifty)
    other = {m for m in macs if in_cohort("demo", "d1mini", "1.2.0", m, 10)}
    assert len(ten & other) < len(ten) * 0.2  # independent: about 10 % of 10 % overlap
    assert not in_cohort("demo", "d1mini", "1.1.0", None, 50) and in_cohort("demo", "d1mini", "1.1.0", None, 100)


def device(mac: str, version: str | None, md5: str | None = None, mode: str = "sketch") -> DeviceFacts:
    return DeviceFacts(arch="ESP8266", update_agent=True, mac=mac, free_space=4 << 20, chip_size=4 << 20,
                       sketch_md5=md5, mode=mode, version_text=version, version=V(version) if version else None)


def test_gated_release_is_as_if_it_did_not_exist(tmp_path: Path) -> None:
    target = demo_catalog(tmp_path).index().target("demo", "d1mini")
    assert target is not None
    macs = [mac_of(n) for n in range(400)]
    gates = {V("1.1.0"): Gate("demo", "d1mini", "1.1.0", 30, "rolling")}
    for mac in macs:
        decision = decide(device(mac, "1.0.0"), target, "stable", None, gates)
        if in_cohort("demo", "d1mini", "1.1.0", mac, 30):
            assert isinstance(decision, Offer) and str(decision.release.version) == "1.1.0"
        else:
            assert isinstance(decision, NoUpdate)
        # A device already on the release keeps it; version mode announces what it may get.
        assert isinstance(decide(device(mac, "1.1.0"), target, "stable", None, gates), NoUpdate)
    for state in ("paused", "halted", "aborted"):
        stopped = {V("1.1.0"): Gate("demo", "d1mini", "1.1.0", 100, state)}  # type: ignore[arg-type]
        assert isinstance(decide(device(macs[0], "1.0.0"), target, "stable", None, stopped), NoUpdate)
        announced = decide(device(macs[0], "1.0.0", mode="version"), target, "stable", None, stopped)
        assert isinstance(announced, Announce) and str(announced.release.version) == "1.0.0"
        # No version header: the newest release below the gated one, never the gated one.
        unknown = decide(device(macs[0], None), target, "stable", None, stopped)
        assert isinstance(unknown, Offer) and str(unknown.release.version) == "1.0.0"


def test_pins_assignments_and_holds(tmp_path: Path) -> None:
    target = demo_catalog(tmp_path).index().target("demo", "d1mini")
    assert target is not None
    mac = mac_of(1)
    pinned = DeviceIntent(pin=V("1.0.0"), pin_target=("demo", "d1mini"))
    downgrade = decide(device(mac, "1.1.0"), target, "stable", pinned)
    assert isinstance(downgrade, Offer) and str(downgrade.release.version) == "1.0.0"
    assert isinstance(decide(device(mac, "1.0.0"), target, "stable", pinned), NoUpdate)
    elsewhere = DeviceIntent(pin=V("1.0.0"), pin_target=("demo", "other"))
    assert isinstance(decide(device(mac, "1.1.0"), target, "stable", elsewhere), NoUpdate)
    beta = decide(device(mac, "1.1.0"), target, "stable", DeviceIntent(channel="beta"))
    assert isinstance(beta, Offer) and str(beta.release.version) == "1.2.0-beta.1"
    held = DeviceIntent(held=frozenset({("demo", "d1mini", V("1.1.0"))}))
    assert isinstance(decide(device(mac, "1.0.0"), target, "stable", held), NoUpdate)
    # Held on 1.1.0, a newer release (here on beta) is offered normally.
    newer = decide(device(mac, "1.0.0"), target, "beta", held)
    assert isinstance(newer, Offer) and str(newer.release.version) == "1.2.0-beta.1"


def test_no_fleet_context_is_todays_decision(tmp_path: Path) -> None:
    target = demo_catalog(tmp_path).index().target("demo", "d1mini")
    assert target is not None
    for version in ("1.0.0", "1.1.0", None):
        plain = decide(device(mac_of(2), version), target, "stable")
        empty = decide(device(mac_of(2), version), target, "stable", DeviceIntent(), {})
        assert type(plain) is type(empty) and getattr(plain, "release", None) == getattr(empty, "release", None)
