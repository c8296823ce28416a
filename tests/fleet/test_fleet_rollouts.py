"""Staged rollouts against a real ``acrelease serve``: the CLI changes the store, the running
server follows within a second; thousands of devices with distinct MACs on real sockets."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from acrelease.fleet.cohort import in_cohort
from tests import clirun
from tests.factories.catalog import demo_catalog
from tests.fleet.fleetsim import Device, check_all, cli_json, mac_of, wait_for
from tests.integration.served import serving

REPO = Path(__file__).resolve().parents[2]
SETTLE = 1.3  # intent reaches every worker within 1 s


def cli(catalog: Path, *args: str) -> None:
    done = clirun.run(*args, "--catalog", str(catalog))
    assert done.returncode == 0, done.stderr


def offered(port: int, fleet: list[Device]) -> set[str]:
    """MACs that were sent 1.1.0 (the others got 304)."""
    replies = check_all(port, fleet)
    assert {r.status for r in replies} <= {200, 304}
    got = {d.mac for d, r in zip(fleet, replies, strict=True) if r.status == 200}
    assert all(r.headers.get("x-version") == "1.1.0" for r in replies if r.status == 200)
    return got


@pytest.mark.slow
def test_cohorts_widen_pause_resume_abort(tmp_path: Path) -> None:
    built = demo_catalog(tmp_path / "catalog")
    root = built.root
    fleet = [Device(mac_of(n), "1.0.0") for n in range(3000)]
    with serving(root, tmp_path / "logs") as served:
        cli(root, "rollout", "1.1.0", "--percent", "10", "--target", "demo/d1mini")
        time.sleep(SETTLE)
        ten = offered(served.port, fleet)
        expected = {d.mac for d in fleet if in_cohort("demo", "d1mini", "1.1.0", d.mac, 10)}
        assert ten == expected
        assert abs(len(ten) / len(fleet) * 100 - 10) <= 1.5, len(ten)
        again = fleet[:600]
        assert offered(served.port, again) == ten & {d.mac for d in again}  # stable: the same devices again

        cli(root, "rollout", "1.1.0", "--percent", "50")
        time.sleep(SETTLE)
        some = fleet[:600]
        fifty = offered(served.port, some)
        assert ten & {d.mac for d in some} <= fifty
        assert abs(len(fifty) / len(some) * 100 - 50) <= 6
        narrowing = clirun.run("rollout", "1.1.0", "--percent", "20", "--catalog", str(root))
        assert narrowing.returncode == 10 and "widen but not narrow" in narrowing.stderr

        # Devices that took it report 1.1.0 now.
        updated = [Device(mac, "1.1.0") for mac in sorted(fifty)[:100]]
        assert len(fifty) > 100
        assert {r.status for r in check_all(served.port, updated)} == {304}
        took = {d.mac: d for d in updated}
        some = [took.get(d.mac, d) for d in some]  # from now on they report what they took
        listing = wait_for(lambda: (got := cli_json("rollout", "--catalog", str(root)))
                           and got[0]["updated"] == 100 and got)
        assert listing == [{"version": "1.1.0", "target": "demo/d1mini", "percent": 50.0, "state": "rolling",
                            "sent": len(ten | fifty), "updated": 100, "held": 0}]

        cli(root, "rollout", "1.1.0", "--pause")
        time.sleep(SETTLE)
        assert offered(served.port, some) == set()
        states = {r["mac"]: r["state"] for r in cli_json("devices", "--catalog", str(root))}
        assert {states[d.mac] for d in updated} == {"current"}
        assert {states[d.mac] for d in some if d.mac not in fifty} == {"waiting"}

        cli(root, "rollout", "1.1.0", "--resume")
        time.sleep(SETTLE)
        assert offered(served.port, some) == fifty - {d.mac for d in updated}


        cli(root, "rollout", "1.1.0", "--abort")
        time.sleep(SETTLE)
        assert offered(served.port, some) == set()
        assert {r.status for r in check_all(served.port, updated)} == {304}  # devices on it keep it
        assert cli_json("rollout", "--catalog", str(root))[0]["state"] == "aborted"

        cli(root, "rollout", "1.1.0", "--percent", "100")  # a new, complete rollout: everyone
        time.sleep(SETTLE)
        assert offered(served.port, some) == {d.mac for d in some if d.version == "1.0.0"}


@pytest.mark.slow
def test_publish_percent_gates_before_the_index_names_the_release(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO / "releases.toml", project / "releases.toml")
    shutil.copytree(REPO / "demo", project / "demo")
    catalog = tmp_path / "catalog"
    run = dict(cwd=project)
    assert clirun.run("publish", "1.0.0", "--catalog", str(catalog), **run).returncode == 0  # type: ignore[arg-type]
    fleet = [Device(mac_of(n), "1.0.0") for n in range(2000)]
    with serving(catalog, tmp_path / "logs") as served:
        refused = clirun.run("publish", "9.9.9", "--catalog", str(catalog), "--percent", "5", **run)  # type: ignore[arg-type]
        assert refused.returncode == 5 and refused.stderr.count("\n") == 1
        assert cli_json("rollout", "--catalog", str(catalog)) == []
        done = clirun.run("publish", "--catalog", str(catalog), "--percent", "5", **run)  # type: ignore[arg-type]
        assert done.returncode == 0, done.stderr
        listing = cli_json("rollout", "--catalog", str(catalog))
        assert {(r["target"], r["version"], r["percent"], r["state"]) for r in listing} == {
            ("demo/d1mini", "1.1.0", 5.0, "rolling"), ("demo/esp32dev", "1.1.0", 5.0, "rolling")}
        time.sleep(0.5)  # the new index is being loaded
        got = offered(served.port, fleet)
        assert got == {d.mac for d in fleet if in_cohort("demo", "d1mini", "1.1.0", d.mac, 5)}
        # No device outside the stage was ever offered it, not even in the second after publish.
        def served_lines() -> int:
            return sum("serving 1.1.0" in line for line in served.log().splitlines())

        assert wait_for(lambda: served_lines() >= len(got))  # the log is written in batches
        assert served_lines() == len(got)
