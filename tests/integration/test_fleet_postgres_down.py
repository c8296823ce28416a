"""PostgreSQL stopped under a running ``acrelease serve --fleet postgresql://...``: checks keep their
answers from the last known state (an assignment here), quickly and never with a 500; ``/healthz``
says the fleet store is not written; what devices said meanwhile is written once PostgreSQL is back
(README, "Running on several hosts")."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from acrelease.errors import FleetError
from acrelease.fleet.recorder import UNHEALTHY_LAG
from acrelease.fleet.store import open_store
from tests.factories.catalog import demo_catalog
from tests.fleet.fleetsim import Device, check_all, mac_of, wait_for
from tests.integration.served import serving
from tests.pgserver import PgServer, missing

pytestmark = [pytest.mark.slow, pytest.mark.skipif(missing() is not None, reason=str(missing()))]


def healthz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def recorded(url: str) -> dict[str, int]:
    """MAC -> checks, or {} while PostgreSQL is not answering."""
    try:
        store = open_store(url, None, create=False)
    except FleetError:
        return {}
    try:
        return {row.mac: row.checks for row in store.devices()}
    except FleetError:
        return {}
    finally:
        store.close()


def test_postgresql_down_and_back_under_a_running_server(tmp_path: Path) -> None:
    pg = PgServer()  # a server of its own: this test stops it
    try:
        pg.start()
        url = pg.database()
        built = demo_catalog(tmp_path / "catalog")
        beta = Device(mac_of(1), "1.1.0")
        store = open_store(url, None)
        store.assign(beta.mac, "beta")  # intent the servers must keep applying while PostgreSQL is away
        store.close()
        first = [Device(mac_of(100 + n), "1.1.0") for n in range(50)]
        later = [Device(mac_of(200 + n), "1.1.0") for n in range(50)]
        with serving(built.root, tmp_path / "logs", fleet=url) as served:
            assert [r.status for r in check_all(served.port, [beta])] == [200]  # offered 1.2.0-beta.1
            assert {r.status for r in check_all(served.port, first)} == {304}
            assert wait_for(lambda: len(recorded(url)) == 51)
            pg.stop()
            for _ in range(3):
                started = time.monotonic()
                assert [r.status for r in check_all(served.port, [beta])] == [200]
                assert {r.status for r in check_all(served.port, later)} == {304}
                assert time.monotonic() - started < 5  # no check waits on the store
                time.sleep(0.5)
            status, body = wait_for(lambda: (found := healthz(served.port))[0] == 503 and found,
                                    timeout=UNHEALTHY_LAG + 10)
            assert status == 503 and "fleet store not written" in body, body
            pg.start()
            after = wait_for(lambda: (got := recorded(url)) and len(got) == 101 and got[beta.mac] == 4 and got,
                             timeout=20)
            assert after, (recorded(url), served.log()[-3000:])
            assert all(after[d.mac] == 3 for d in later) and all(after[d.mac] == 1 for d in first)
            assert wait_for(lambda: healthz(served.port)[0] == 200, timeout=10)
            log = served.log()
            assert " 500 " not in log
            errors = [line for line in log.splitlines() if " ERROR " in line]
            assert 1 <= len(errors) <= 2 and "fleet" in errors[0] and "secret" not in log, errors
    finally:
        pg.destroy()
