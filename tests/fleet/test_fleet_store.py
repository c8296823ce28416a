"""The fleet store through its one interface, on SQLite and on PostgreSQL (the same tests, one
``store`` fixture with both): upserts where the newest observation wins, events, holds and
rollouts decided by compare-and-set, the intent generation."""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from acrelease.errors import FleetError
from acrelease.fleet import store as store_module
from acrelease.fleet.model import Event, Observation, Rollout
from acrelease.fleet.store import FleetStore, open_store, store_path


def obs(mac: str = "02:00:00:00:00:01", *, at: int = 1_000, version: str | None = "1.0.0", checks: int = 1,
        sent: tuple[tuple[str, int, int, int], ...] = (), events: tuple[Event, ...] = (),
        address: str = "127.0.0.1") -> Observation:
    return Observation(mac, "demo", "d1mini", "stable", version, "a" * 32, 4194304, 1000000, "2.5.0", address,
                       at, at, checks, sent, events)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FleetStore]:
    """A new store of each kind; PostgreSQL's in a database of its own (tests/pgserver.py)."""
    opened = open_store(None if request.param == "sqlite" else request.getfixturevalue("pg_url"), tmp_path)
    yield opened
    opened.close()


def test_default_path_and_schema_version(tmp_path: Path) -> None:
    store = open_store(None, tmp_path)
    assert (tmp_path / ".acrelease" / "fleet.sqlite3").is_file()
    assert store._rows("SELECT value FROM meta WHERE key = 'schema_version'") == [(store_module.SCHEMA_VERSION,)]
    assert store.generation() == 0


def test_schema_version_and_generation(store: FleetStore) -> None:
    assert store.schema_version() == store_module.SCHEMA_VERSION == 2
    assert store.tables() >= set(store_module.TABLES)
    assert store.generation() == 0


def test_store_spec_forms(tmp_path: Path) -> None:
    assert store_path(str(tmp_path / "f.db"), None) == tmp_path / "f.db"
    assert store_path(f"sqlite://{tmp_path}/f.db", None) == tmp_path / "f.db"
    with pytest.raises(FleetError, match="PostgreSQL URL, not a file path") as raised:
        store_path("postgresql://u:secret@db/fleet", None)
    assert "secret" not in str(raised.value)
    with pytest.raises(FleetError, match="--catalog"):
        store_path(None, None)


def test_read_commands_never_create_a_store(tmp_path: Path) -> None:
    with pytest.raises(FleetError, match="no fleet store yet"):
        open_store(None, tmp_path, create=False)
    assert not (tmp_path / ".acrelease").exists()


def test_newest_observation_wins_and_checks_add_up(store: FleetStore) -> None:
    store.record([obs(at=2_000, version="1.1.0", checks=3, address="10.0.0.2")])
    store.record([obs(at=1_500, version="1.0.0", checks=2, address="10.0.0.1")])  # a late batch of another worker
    row = store.device("02:00:00:00:00:01")
    assert row is not None
    assert (row.version, row.address, row.checks, row.first_seen, row.last_seen) == ("1.1.0", "10.0.0.2", 5, 1_500,
                                                                                     2_000)


@pytest.mark.parametrize("devices", [3, 40])  # PostgreSQL writes 8 or more in one statement
def test_touches_move_last_seen_forward_and_add_checks(store: FleetStore, devices: int) -> None:
    macs = [f"02:00:00:00:01:{n:02X}" for n in range(devices)]
    store.record([obs(mac, at=2_000, checks=1) for mac in macs])
    late, fresh = 1_500, 3_000  # a touch from a worker whose batch is older moves no sighting back
    touches = [(late if n % 2 else fresh, late if n % 2 else fresh, 2, mac) for n, mac in enumerate(macs)]
    unknown = (fresh, fresh, 5, "02:00:00:00:02:00")  # not in the store (pruned, or another store's)
    armed, touched = store.record([], 3, [*reversed(touches), unknown])
    assert (armed, touched) == (0, devices)
    for n, mac in enumerate(macs):
        row = store.device(mac)
        assert row is not None and (row.checks, row.last_seen) == (3, 2_000 if n % 2 else 3_000)
    assert store.device(unknown[3]) is None


def test_events_seen_reported_and_newest_first(store: FleetStore) -> None:
    store.record([obs(at=1_000, version="1.0.0")])
    store.record([obs(at=2_000, version="1.0.0", sent=(("1.1.0", 1, 2_000, 2_000),),
                      events=(Event(2_000, "sent", "1.1.0", "demo-d1mini-1.1.0.bin"),))])
    store.record([obs(at=3_000, version="1.1.0")])
    events = store.events("02:00:00:00:00:01")
    assert [(e.event, e.version) for e in events] == [("reported", "1.1.0"), ("sent", "1.1.0"), ("seen", "1.0.0")]
    row = store.device("02:00:00:00:00:01")
    assert row is not None and row.last_sent == "1.1.0"


def test_prune_keeps_the_newest_events(store: FleetStore) -> None:
    store.record([obs(at=i, events=(Event(i, "refused", None, f"r{i}"),)) for i in range(1, 2)])
    for i in range(2, 151):
        store.record([obs(at=i, events=(Event(i, "refused", None, f"r{i}"),))])
    assert store.prune(keep=100) > 0
    events = store.events("02:00:00:00:00:01", limit=1000)
    assert len(events) == 100 and events[0].detail == "r150"


def test_intent_changes_bump_the_generation(store: FleetStore) -> None:
    mac = "02:00:00:00:00:01"
    store.record([obs()])
    seen = [store.generation()]
    store.set_pin(mac, "demo", "d1mini", "1.0.0")
    seen.append(store.generation())
    store.assign(mac, "beta")
    seen.append(store.generation())
    store.retry(mac)
    seen.append(store.generation())
    store.put_rollout(Rollout("demo", "d1mini", "1.1.0", 10, "rolling"))
    seen.append(store.generation())
    assert seen == sorted(set(seen)) and len(seen) == 5
    view = store.load_view()
    intent = view.by_mac[mac]
    assert str(intent.pin) == "1.0.0" and intent.pin_target == ("demo", "d1mini") and intent.channel == "beta"
    assert [str(v) for v in view.gates[("demo", "d1mini")]] == ["1.1.0"]
    assert store.clear_pin(mac) and not store.clear_pin(mac)


def test_loop_breaker_arms_then_holds_once(store: FleetStore) -> None:
    mac = "02:00:00:00:00:01"
    for i in range(1, 4):
        store.record([obs(at=i * 1000, sent=(("1.1.0", 1, i * 1000, i * 1000),))], loop_limit=3)
    before = store.generation()
    assert store.armed([mac]) and store.generation() == before  # armed by the third send's batch
    view = store.load_view()
    assert [(p, t, str(v)) for p, t, v in view.by_mac[mac].held] == [("demo", "d1mini", "1.1.0")]
    assert store.activate_hold(mac, "demo", "d1mini", "1.1.0", "still 1.0.0")
    assert not store.activate_hold(mac, "demo", "d1mini", "1.1.0", "still 1.0.0")  # a second worker: no
    assert store.held_on("demo", "d1mini", "1.1.0") == [mac]
    assert store.release_counts("demo", "d1mini", "1.1.0", None) == (1, 0, 1)
    assert store.retry(mac) == ["1.1.0"]
    assert store.held_on("demo", "d1mini", "1.1.0") == [] and not store.armed([mac])
    store.record([obs(at=9_000, sent=(("1.1.0", 1, 9_000, 9_000),))], loop_limit=3)
    assert not store.armed([mac])  # the count started again


def test_a_failed_read_leaves_the_store_usable(store: FleetStore) -> None:
    with pytest.raises(FleetError, match="cannot read"), store.guard("read"):
        store._rows("SELECT no_such_column FROM devices")
    store.record([obs()])
    assert store.generation() == 0 and store.device("02:00:00:00:00:01") is not None


def test_rollout_moves_are_compare_and_set(store: FleetStore) -> None:
    rollout = Rollout("demo", "d1mini", "1.1.0", 10, "rolling", (10, 50, 100))
    store.put_rollout(rollout)
    assert store.move_rollout(rollout, from_states=("rolling",), state="rolling", percent=50)
    # A second worker that decided the same step from the same old row loses:
    assert not store.move_rollout(rollout, from_states=("rolling",), state="rolling", percent=50)
    moved = store.rollout("demo", "d1mini", "1.1.0")
    assert moved is not None and moved.percent == 50 and moved.stages == (10, 50, 100)


def test_read_only_and_deleted_stores_are_noticed(tmp_path: Path) -> None:
    store = open_store(None, tmp_path)
    path = tmp_path / ".acrelease" / "fleet.sqlite3"
    os.chmod(path, 0o444)
    with pytest.raises(FleetError, match="read-only"):
        store.check()
    os.chmod(path, 0o644)
    store.check()
    path.unlink()
    with pytest.raises(FleetError, match="deleted"):
        store.check()
    assert not store.path_ok()


def test_sql_is_portable() -> None:
    """No SQLite-only constructs: the same statements must run on PostgreSQL."""
    source = inspect.getsource(store_module).split('"""', 2)[2]  # the module docstring names what is banned
    for banned in (r"INSERT OR", r"\browid\b", r"AUTOINCREMENT", r"\bREPLACE INTO\b", r"datetime\(", r"strftime"):
        assert not re.search(banned, source, re.IGNORECASE), banned
