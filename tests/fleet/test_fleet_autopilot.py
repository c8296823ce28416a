"""Autopilot against a real server: a rollout moves to its next stage once enough devices sent the
release in this stage report it, and never while paused."""

from __future__ import annotations

import time
from pathlib import Path

from tests import clirun
from tests.factories.catalog import demo_catalog
from tests.fleet.fleetsim import Device, check_all, cli_json, mac_of, wait_for
from tests.integration.served import serving

SETTLE = 1.3


def rollout_of(catalog: Path) -> dict[str, object]:
    listing = cli_json("rollout", "--catalog", str(catalog))
    assert len(listing) == 1
    found: dict[str, object] = listing[0]
    return found


def take(port: int, fleet: list[Device]) -> int:
    """Every device checks; those sent the image come up with it (they report it next time)."""
    took = 0
    for device, reply in zip(fleet, check_all(port, fleet), strict=True):
        if reply.status == 200:
            device.version = reply.headers["x-version"]
            took += 1
    return took


def report(port: int, fleet: list[Device]) -> None:
    assert {r.status for r in check_all(port, [d for d in fleet if d.version == "1.1.0"])} <= {304}


def flash(port: int, fleet: list[Device]) -> int:
    took = take(port, fleet)
    report(port, fleet)
    return took


def test_stages_advance_when_devices_come_up_and_not_while_paused(tmp_path: Path) -> None:
    built = demo_catalog(tmp_path / "catalog")
    root = built.root
    fleet = [Device(mac_of(n), "1.0.0") for n in range(400)]
    with serving(root, tmp_path / "logs") as served:
        done = clirun.run("rollout", "1.1.0", "--target", "demo/d1mini", "--stages", "10,50,100", "--min-updated",
                          "5", "--advance-at", "90", "--catalog", str(root))
        assert done.returncode == 0, done.stderr
        assert rollout_of(root)["percent"] == 10.0
        time.sleep(SETTLE)
        assert clirun.run("rollout", "1.1.0", "--pause", "--catalog", str(root)).returncode == 0
        time.sleep(SETTLE)
        assert flash(served.port, fleet) == 0  # paused: nobody is sent it
        assert clirun.run("rollout", "1.1.0", "--resume", "--catalog", str(root)).returncode == 0
        time.sleep(SETTLE)
        first = take(served.port, fleet)
        assert 20 <= first <= 60
        assert clirun.run("rollout", "1.1.0", "--pause", "--catalog", str(root)).returncode == 0
        report(served.port, fleet)
        time.sleep(3 * SETTLE)
        assert rollout_of(root)["percent"] == 10.0  # every device came up, but paused: no step
        assert clirun.run("rollout", "1.1.0", "--resume", "--catalog", str(root)).returncode == 0
        assert wait_for(lambda: rollout_of(root)["percent"] == 50.0, timeout=10)
        time.sleep(SETTLE)
        second = flash(served.port, fleet)
        assert 120 <= second <= 240
        assert wait_for(lambda: rollout_of(root)["state"] == "complete", timeout=10)
        assert rollout_of(root)["percent"] == 100.0
        time.sleep(SETTLE)
        flash(served.port, fleet)
        assert {d.version for d in fleet} == {"1.1.0"}
        steps = [line for line in served.log().splitlines() if "advanced" in line]
        assert len(steps) == 2 and "10 % -> 50 %" in steps[0] and "50 % -> 100 %" in steps[1]
