"""The fleet store past one machine: the schema refused until migrated, export/import between
SQLite and PostgreSQL with the CLI printing the same bytes from either, several writers on one
PostgreSQL (counters add up, a rollout step taken once), and URLs that never show their password."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from acrelease.errors import FleetError
from acrelease.fleet import store as store_module
from acrelease.fleet.model import Event, Observation, Rollout
from acrelease.fleet.store import FleetStore, SchemaError, open_store
from tests import clirun
from tests.factories.catalog import demo_catalog
from tests.fleet.fleetsim import mac_of
from tests.pgserver import PgServer

ROOT = Path(__file__).resolve().parents[2]


def obs(mac: str, at: int, version: str | None = "1.0.0", checks: int = 1,
        sent: tuple[tuple[str, int, int, int], ...] = (), events: tuple[Event, ...] = ()) -> Observation:
    return Observation(mac, "demo", "d1mini", "stable", version, "a" * 32, 4194304, 1000000, "2.5.0", "10.0.0.9",
                       at, at, checks, sent, events)


def spec_of(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return str(tmp_path / "fleet.sqlite3")
    url: str = request.getfixturevalue("pg_url")
    return url


def make_v1(spec: str) -> None:
    """A store as the first fleet registry wrote it: schema 1, no version_history table."""
    store = open_store(spec, None)
    with store.transaction("downgrade") as cursor:
        cursor.execute("DROP TABLE version_history")
        cursor.execute("UPDATE meta SET value = 1 WHERE key = 'schema_version'")
    store.close()


def populate(store: FleetStore) -> None:
    """A little of everything: devices seen, reported, sent, held, pinned, assigned; a rollout."""
    for n in range(40):
        mac = mac_of(n)
        store.record([obs(mac, 1_700_000_000_000 + n, version=None if n % 7 == 0 else "1.0.0",
                          events=(Event(1_700_000_000_000 + n, "refused", None, "403 é unicode"),))])
    for i in range(1, 4):
        store.record([obs(mac_of(1), 1_700_000_100_000 + i, sent=(("1.1.0", 1, 1_700_000_100_000 + i,
                                                                   1_700_000_100_000 + i),))], loop_limit=3)
    store.record([obs(mac_of(1), 1_700_000_200_000)])
    assert store.activate_hold(mac_of(1), "demo", "d1mini", "1.1.0", "still 1.0.0")
    store.record([obs(mac_of(2), 1_700_000_300_000, version="1.1.0")])
    store.set_pin(mac_of(3), "demo", "d1mini", "1.0.0")
    store.assign(mac_of(4), "beta")
    store.put_rollout(Rollout("demo", "d1mini", "1.1.0", 12.5, "rolling", (12.5, 50, 100), 90.0, 2, 3, 0,
                              1_700_000_000_000, 1_700_000_000_000))
    store.snapshot_versions(1_699_999_200_000)


# -- schema versions ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_an_older_schema_is_refused_until_migrated(tmp_path: Path, request: pytest.FixtureRequest,
                                                   kind: str) -> None:
    spec = spec_of(kind, tmp_path, request)
    catalog = demo_catalog(tmp_path / "catalog").root
    make_v1(spec)
    where = spec  # a path, or a URL without a password: named as given
    expected = (f"fleet store at {where} has schema 1, this acrelease needs {store_module.SCHEMA_VERSION}: "
                f"run `acrelease fleet migrate --fleet {where}`")
    with pytest.raises(SchemaError) as raised:
        open_store(spec, None)
    assert str(raised.value) == expected
    # Every command refuses it the same way, serve before it binds; nothing is changed by it.
    for args in (("devices", "--catalog", str(catalog), "--fleet", spec),
                 ("serve", "--catalog", str(catalog), "--fleet", spec, "--bind", "127.0.0.1", "--port", "0")):
        done = clirun.run(*args, timeout=60)
        assert done.returncode != 0 and done.stderr == f"acrelease: error: {expected}\n", done.stderr
    store = open_store(spec, None, migrating=True)
    assert store.schema_version() == 1 and "version_history" not in store.tables()
    store.close()
    done = clirun.run("fleet", "migrate", "--fleet", spec)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{where}: schema 1 -> {store_module.SCHEMA_VERSION}\n"
    again = clirun.run("fleet", "migrate", "--fleet", spec)
    assert again.stdout == f"{where}: already at schema {store_module.SCHEMA_VERSION}; nothing to do\n"
    store = open_store(spec, None)
    assert store.schema_version() == store_module.SCHEMA_VERSION and "version_history" in store.tables()
    assert store.snapshot_versions(0) is False  # the new table works (no devices yet: no rows)
    store.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    spec = str(tmp_path / "fleet.sqlite3")
    store = open_store(spec, None)
    with store.transaction("pretend") as cursor:
        cursor.execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'")
    store.close()
    done = clirun.run("fleet", "migrate", "--fleet", spec)
    assert done.returncode != 0 and "schema version 99 is newer" in done.stderr and "upgrade acrelease" in done.stderr


# -- export / import ---------------------------------------------------------------------------------

def cli(*args: str) -> str:
    done = clirun.run(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_sqlite_to_postgresql_and_back_prints_the_same(tmp_path: Path, pg_url: str) -> None:
    catalog = str(demo_catalog(tmp_path / "catalog").root)
    first = str(tmp_path / "first.sqlite3")
    store = open_store(first, None)
    populate(store)
    store.close()
    exported = tmp_path / "fleet.jsonl"
    exported.write_text(cli("fleet", "export", "--fleet", first))
    header = json.loads(exported.read_text().splitlines()[0])
    assert header["schema_version"] == store_module.SCHEMA_VERSION and "devices" in header["tables"]
    done = clirun.run("fleet", "import", str(exported), "--fleet", pg_url)
    assert done.returncode == 0 and "imported" in done.stderr, done.stderr
    assert cli("fleet", "export", "--fleet", pg_url) == exported.read_text()  # the same bytes from either database
    back = str(tmp_path / "back.sqlite3")
    assert clirun.run("fleet", "import", str(exported), "--fleet", back).returncode == 0

    def outputs(spec: str) -> list[str]:
        base = ("--catalog", catalog, "--fleet", spec)
        return [cli("devices", *base, "--json"), cli("devices", *base), cli("device", mac_of(1), *base),
                cli("device", mac_of(3), *base, "--json"), cli("rollout", *base), cli("rollout", *base, "--json"),
                cli("status", *base), cli("status", *base, "--json")]

    reference = outputs(first)
    assert mac_of(1) in reference[1] and "held" in reference[1] and "12.5" in reference[4]
    assert outputs(pg_url) == reference
    assert outputs(back) == reference


def test_import_refuses_a_store_with_rows_and_a_bad_file(tmp_path: Path, pg_url: str) -> None:
    source = str(tmp_path / "source.sqlite3")
    store = open_store(source, None)
    populate(store)
    store.close()
    exported = tmp_path / "fleet.jsonl"
    exported.write_text(cli("fleet", "export", "--fleet", source))
    target = open_store(pg_url, None)
    target.record([obs(mac_of(999), 5)])
    before = target.generation()
    done = clirun.run("fleet", "import", str(exported), "--fleet", pg_url)
    assert done.returncode != 0 and "not empty" in done.stderr and "--replace" in done.stderr
    assert [r.mac for r in target.devices()] == [mac_of(999)]
    assert clirun.run("fleet", "import", str(exported), "--fleet", pg_url, "--replace").returncode == 0
    assert len(target.devices()) == 40 and mac_of(999) not in {r.mac for r in target.devices()}
    assert target.generation() > before  # running servers reload pins, holds and rollouts
    target.close()
    # A damaged file is refused before any store is opened: no file is created.
    lines = exported.read_text().splitlines()
    for bad, says in ((["{not json"], "line 1: not JSON"),
                      ([lines[0], '{"table": "devices; DROP TABLE x", "row": {}}'], "line 2: not a row"),
                      ([lines[0].replace(f'"schema_version": {store_module.SCHEMA_VERSION}', '"schema_version": 1')],
                       "exported at schema 1")):
        broken = tmp_path / "broken.jsonl"
        broken.write_text("\n".join(bad) + "\n")
        fresh = tmp_path / "fresh.sqlite3"
        done = clirun.run("fleet", "import", str(broken), "--fleet", str(fresh))
        assert done.returncode != 0 and says in done.stderr and done.stderr.count("\n") == 1, done.stderr
        assert not fresh.exists()


# -- several writers on one PostgreSQL ---------------------------------------------------------------

_WRITER = textwrap.dedent("""
    import sys, time
    from acrelease.fleet.model import Observation
    from acrelease.fleet.store import open_store
    url, start_at, rounds, devices = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    store = open_store(url, None)
    macs = [f"02:00:00:00:{n >> 8:02X}:{n & 255:02X}" for n in range(devices)]
    while time.time() < start_at:
        time.sleep(0.001)
    for r in range(rounds):
        # the same devices, the same second, in an order of this writer's own
        order = macs if r % 2 else macs[::-1]
        store.record([Observation(m, "demo", "d1mini", "stable", "1.0.0", None, None, None, None, "10.0.0.1",
                                  1000, 1000, 1, (("1.1.0", 1, 1000, 1000),), ()) for m in order], loop_limit=10**6)
    for r in range(rounds):  # then only touched, as a server writes devices it wrote before
        order = macs if r % 2 else macs[::-1]
        store.record([], 10**6, [(2000 + r, 2000 + r, 1, m) for m in order])
    store.close()
""")


def test_two_hosts_writing_the_same_devices_lose_no_count(pg_url: str) -> None:
    rounds, devices = 20, 300
    start_at = f"{__import__('time').time() + 2:.3f}"
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, pg_url, start_at, str(rounds), str(devices)],
                                env={**clirun.environment()}, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
    store = open_store(pg_url, None)
    rows = store.devices()
    assert len(rows) == devices and {r.checks for r in rows} == {4 * rounds}
    assert {r.last_seen for r in rows} == {2000 + rounds - 1}
    assert store._rows("SELECT MIN(sent), MAX(sent), MIN(counted) FROM sends") == [(2 * rounds, 2 * rounds,
                                                                                     2 * rounds)]
    assert store._rows("SELECT COUNT(*) FROM events WHERE event = 'seen'")[0][0] in range(devices, 2 * devices + 1)
    store.close()


_STEPPER = textwrap.dedent("""
    import sys
    from acrelease.fleet.store import open_store
    store = open_store(sys.argv[1], None)
    rollouts = store.rollouts()  # every host decides from the same rows: each step once, by one of them
    print("ready", flush=True)
    sys.stdin.readline()
    won = [r.version for r in rollouts if store.move_rollout(r, from_states=("rolling",), state="rolling",
                                                             percent=50)]
    print(",".join(won))
    store.close()
""")


def test_an_autopilot_step_taken_by_two_hosts_at_once_happens_once(pg_url: str) -> None:
    store = open_store(pg_url, None)
    versions = [f"1.{n}.0" for n in range(60)]
    for version in versions:
        store.put_rollout(Rollout("demo", "d1mini", version, 10, "rolling", (10, 50, 100)))
    hosts = [subprocess.Popen([sys.executable, "-c", _STEPPER, pg_url], env=clirun.environment(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    for host in hosts:
        assert host.stdout is not None and host.stdout.readline() == "ready\n"
    won: list[str] = []
    for host in hosts:  # go
        assert host.stdin is not None
        host.stdin.write("go\n")
        host.stdin.flush()
    for host in hosts:
        out, err = host.communicate(timeout=120)
        assert host.returncode == 0, err
        won += [v for v in out.strip().split(",") if v]
    assert sorted(won) == sorted(versions)  # every step taken, none twice
    assert {r.percent for r in store.rollouts()} == {50}
    store.close()


# -- URLs, drivers, an unreachable server ------------------------------------------------------------

def test_the_password_is_never_shown(pg_server: PgServer, tmp_path: Path) -> None:
    catalog = str(demo_catalog(tmp_path / "catalog").root)
    for url in (pg_server.url("nosuchdb", password="s3cret-pw"),
                f"postgresql://acr:s3cret-pw@127.0.0.1:{pg_server.port + 1 if pg_server.port < 65535 else 1}/x"):
        with pytest.raises(FleetError) as raised:
            open_store(url, None)
        assert "s3cret-pw" not in str(raised.value) and "acr:***@127.0.0.1" in str(raised.value)
        done = clirun.run("devices", "--catalog", catalog, "--fleet", url, timeout=60)
        assert done.returncode != 0 and "s3cret-pw" not in done.stderr + done.stdout
        assert done.stderr.startswith("acrelease: error: postgresql://acr:***@") and done.stderr.count("\n") == 1


def test_without_psycopg_the_error_says_what_to_install(tmp_path: Path) -> None:
    blocker = tmp_path / "block" / "psycopg"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('psycopg is not installed (test)')\n")
    env = clirun.environment()
    env["PYTHONPATH"] = f"{blocker.parent}:{env['PYTHONPATH']}"
    catalog = str(demo_catalog(tmp_path / "catalog").root)
    for args in (("devices", "--catalog", catalog),
                 ("serve", "--catalog", catalog, "--bind", "127.0.0.1", "--port", "0")):
        done = subprocess.run(clirun.command(*args, "--fleet", "postgresql://acr:pw@127.0.0.1/fleet"), env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode != 0
        assert done.stderr == ("acrelease: error: --fleet postgresql://acr:***@127.0.0.1/fleet: PostgreSQL needs "
                               "the psycopg driver; pip install 'acrelease[postgresql]' (psycopg 3)\n"), done.stderr
