"""``kill -9`` of the server loses at most the last second of observations and never corrupts the
store; SIGTERM writes everything observed."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

from tests.factories.catalog import demo_catalog
from tests.fleet.fleetsim import Device, check_all, cli_json, mac_of, store_file
from tests.integration.served import serving, start_cli


def test_kill_9_loses_at_most_the_last_second(tmp_path: Path) -> None:
    built = demo_catalog(tmp_path / "catalog")
    early = [Device(mac_of(n), "1.1.0") for n in range(500)]
    late = [Device(mac_of(1000 + n), "1.1.0") for n in range(200)]
    process, port = start_cli(built.root, "--log", "WARNING")  # `acrelease serve` itself (stderr is a pipe)
    try:
        check_all(port, early)
        time.sleep(2.5)  # flushed
        check_all(port, late)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    path = store_file(built.root)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    macs = {r["mac"] for r in cli_json("devices", "--catalog", str(built.root))}
    assert {d.mac for d in early} <= macs


def test_sigterm_writes_what_was_observed(tmp_path: Path) -> None:
    built = demo_catalog(tmp_path / "catalog")
    fleet = [Device(mac_of(n), "1.0.0") for n in range(300)]
    with serving(built.root, tmp_path / "logs") as served:
        check_all(served.port, fleet)
        served.process.send_signal(signal.SIGTERM)  # at once: the last flush happens on the way out
        assert served.process.wait(timeout=20) == 0
    rows = cli_json("devices", "--catalog", str(built.root))
    assert {r["mac"] for r in rows} == {d.mac for d in fleet}
    assert {r["state"] for r in rows} == {"updating"}
