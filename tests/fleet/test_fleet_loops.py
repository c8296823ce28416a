"""The loop breaker against a real ``acrelease serve``: a device sent the same image three times
that still reports the old version is held (WARNING, state ``held``, 304), ``retry`` offers it
again; enough held devices halt their rollout until ``--resume``."""

from __future__ import annotations

import time
from pathlib import Path

from acrelease.fleet.cohort import in_cohort
from tests import clirun
from tests.factories.catalog import demo_catalog
from tests.fleet.fleetsim import Device, check_all, cli_json, mac_of, wait_for
from tests.integration.served import serving

FLUSHED = 1.4  # one flush (1 s) and one view reload (0.25 s) later


def rounds(port: int, fleet: list[Device], count: int) -> list[set[int]]:
    statuses = []
    for _ in range(count):
        statuses.append({r.status for r in check_all(port, fleet)})
        time.sleep(FLUSHED)
    return statuses


def states(catalog: Path) -> dict[str, str]:
    return {r["mac"]: r["state"] for r in cli_json("devices", "--catalog", str(catalog))}


def test_a_looping_device_is_held_and_retry_offers_it_again(tmp_path: Path) -> None:
    built = demo_catalog(tmp_path / "catalog")
    stuck = [Device(mac_of(n), "1.0.0") for n in range(3)]
    fine = Device(mac_of(10), "1.0.0")
    with serving(built.root, tmp_path / "logs", loop_limit=3) as served:
        assert rounds(served.port, [*stuck, fine], 3) == [{200}] * 3
        fine.version = "1.1.0"  # its third image came up
        assert rounds(served.port, [*stuck, fine], 2) == [{304}] * 2
        log = wait_for(lambda: served.log().count("WARNING fleet:") >= 3 and served.log())
        warnings = [line for line in log.splitlines() if "WARNING fleet:" in line]
        assert len(warnings) == 3  # once per device, though it checked again
        for device in stuck:
            line = next(w for w in warnings if device.mac in w)
            assert "1.0.0" in line and "1.1.0" in line
        now = states(built.root)
        assert [now[d.mac] for d in stuck] == ["held"] * 3 and now[fine.mac] == "current"
        history = cli_json("device", stuck[0].mac, "--catalog", str(built.root))["events"]
        assert history[0]["event"] == "held" and history[0]["version"] == "1.1.0"
        assert [e["event"] for e in history].count("sent") == 3

        done = clirun.run("retry", stuck[0].mac.lower(), "--catalog", str(built.root))
        assert done.returncode == 0 and "1.1.0" in done.stdout, done.stderr
        time.sleep(FLUSHED)
        replies = check_all(served.port, stuck)
        assert [r.status for r in replies] == [200, 304, 304]
        assert states(built.root)[stuck[0].mac] == "updating"
        events = cli_json("device", stuck[0].mac, "--catalog", str(built.root))["events"]
        assert "retried" in [e["event"] for e in events]


def test_held_devices_halt_their_rollout_until_resumed(tmp_path: Path) -> None:
    built = demo_catalog(tmp_path / "catalog")
    root = built.root
    cohort = [Device(mac, "1.0.0") for mac in (mac_of(n) for n in range(200))
              if in_cohort("demo", "d1mini", "1.1.0", mac, 50)]
    stuck, waiting = cohort[:3], cohort[3:8]
    with serving(root, tmp_path / "logs", loop_limit=3) as served:
        done = clirun.run("rollout", "1.1.0", "--percent", "50", "--max-failures", "2", "--target", "demo/d1mini",
                          "--catalog", str(root))
        assert done.returncode == 0, done.stderr
        time.sleep(FLUSHED)
        assert rounds(served.port, stuck, 4) == [{200}] * 3 + [{304}]
        listing = wait_for(lambda: (got := cli_json("rollout", "--catalog", str(root))) and
                           got[0]["state"] == "halted" and got)
        assert listing and listing[0]["held"] >= 2 and listing[0]["sent"] == 3
        halted = [line for line in served.log().splitlines() if "halted" in line]
        assert len(halted) == 1 and "WARNING" in halted[0] and stuck[0].mac in halted[0]
        time.sleep(FLUSHED)
        assert {r.status for r in check_all(served.port, waiting)} == {304}  # no device is sent it
        now = wait_for(lambda: (got := states(root)) and all(d.mac in got for d in waiting) and got)
        assert {now[d.mac] for d in waiting} == {"waiting"}

        done = clirun.run("rollout", "1.1.0", "--resume", "--catalog", str(root))
        assert done.returncode == 0, done.stderr
        time.sleep(FLUSHED)
        assert {r.status for r in check_all(served.port, waiting)} == {200}
        assert cli_json("rollout", "--catalog", str(root))[0]["state"] == "rolling"
