"""Pins (downgrades included) and channel assignments against a real server, across a restart;
the CLI's one-line refusals, which change nothing."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from tests import clirun
from tests.factories.catalog import demo_catalog
from tests.fleet.fleetsim import Device, check_all, cli_json, mac_of, store_file
from tests.integration.served import serving, start_cli, stop_cli

SETTLE = 1.3


def ok(catalog: Path, *args: str) -> str:
    done = clirun.run(*args, "--catalog", str(catalog))
    assert done.returncode == 0, done.stderr
    return done.stdout


def refused(catalog: Path, *args: str) -> str:
    done = clirun.run(*args, "--catalog", str(catalog))
    assert done.returncode == 10 and done.stderr.startswith("acrelease: error: "), (done.returncode, done.stderr)
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    return done.stderr


def version_sent(port: int, device: Device) -> str | None:
    reply = check_all(port, [device])[0]
    assert reply.status in (200, 304)
    return reply.headers.get("x-version") if reply.status == 200 else None


def demo_manifest(folder: Path) -> Path:
    """A releases.toml naming the project "demo": what `yank` reads (the project's name) beside the catalog."""
    path = folder / "releases.toml"
    path.write_text('[project]\nname = "demo"\n')
    return path


def test_pins_and_assignments_survive_a_restart(tmp_path: Path) -> None:
    built = demo_catalog(tmp_path / "catalog")
    root = built.root
    a, b, c = (Device(mac_of(n), "1.1.0") for n in (1, 2, 3))
    with serving(root, tmp_path / "logs") as served:
        assert [version_sent(served.port, d) for d in (a, b, c)] == [None, None, None]
        time.sleep(SETTLE)  # recorded: a and c are known devices now
        ok(root, "pin", a.mac.lower().replace(":", ""), "1.0.0")  # any case, no colons
        assert "--target" in refused(root, "pin", "02:00:00:00:00:77", "1.0.0")
        ok(root, "pin", "02-00-00-00-00-77", "1.0.0", "--target", "demo/d1mini")
        ok(root, "assign", c.mac, "--channel", "beta")
        time.sleep(SETTLE)
        reply = check_all(served.port, [a])[0]
        assert reply.status == 200 and reply.headers["x-version"] == "1.0.0"  # a downgrade, because pinned
        assert reply.headers["x-md5"] == hashlib.md5(reply.body).hexdigest()
        assert version_sent(served.port, Device(a.mac, "1.0.0")) is None  # 304 on the pinned version
        assert version_sent(served.port, Device("02:00:00:00:00:77", "1.1.0")) == "1.0.0"
        assert version_sent(served.port, c) == "1.2.0-beta.1"  # the assignment beats ?channel=stable
        assert version_sent(served.port, b) is None
    with serving(root, tmp_path / "logs") as served:  # a restart: the intent is in the store
        assert version_sent(served.port, a) == "1.0.0"
        assert version_sent(served.port, c) == "1.2.0-beta.1"
        rows = {r["mac"]: r for r in cli_json("devices", "--catalog", str(root))}
        assert rows[a.mac]["pinned"] == "1.0.0" and rows[c.mac]["channel"] == "beta"
        ok(root, "unpin", a.mac)
        ok(root, "assign", c.mac, "--channel", "stable")
        time.sleep(SETTLE)
        assert version_sent(served.port, a) is None and version_sent(served.port, c) is None
        events = [e["event"] for e in cli_json("device", a.mac, "--catalog", str(root))["events"]]
        assert "pinned" in events and "unpinned" in events


def test_a_pin_to_a_release_yanked_later_is_not_applied_and_device_says_so(tmp_path: Path) -> None:
    built = demo_catalog(tmp_path / "catalog")
    root = built.root
    device = Device(mac_of(5), "1.1.0")
    with serving(root, tmp_path / "logs") as served:
        assert version_sent(served.port, device) is None
        time.sleep(SETTLE)
        ok(root, "pin", device.mac, "1.0.0")
        time.sleep(SETTLE)
        assert version_sent(served.port, device) == "1.0.0"
        assert "not applied" not in ok(root, "device", device.mac)
        built.yank("demo", "d1mini", "1.0.0")  # withdrawn: devices move off it, pinned ones too
        built.write()
        time.sleep(SETTLE)
        assert version_sent(served.port, Device(device.mac, "1.0.0")) == "1.1.0"
        shown = ok(root, "device", device.mac)
        assert "pin to demo/d1mini 1.0.0 not applied while it is yanked" in shown, shown


def test_yank_names_the_devices_pinned_to_it_and_undo_applies_their_pin_again(tmp_path: Path) -> None:
    """The operator's side of the test above: `yank` itself says which pinned devices it moves."""
    built = demo_catalog(tmp_path / "catalog")
    root = built.root
    project = demo_manifest(tmp_path)
    seen, unseen = Device(mac_of(6), "1.1.0"), Device(mac_of(7), "1.1.0")
    with serving(root, tmp_path / "logs") as served:
        assert version_sent(served.port, seen) is None
        time.sleep(SETTLE)
        ok(root, "pin", seen.mac, "1.0.0")
        ok(root, "pin", unseen.mac, "1.0.0", "--target", "demo/d1mini")
        time.sleep(SETTLE)
        assert version_sent(served.port, seen) == "1.0.0"

        said = ok(root, "yank", "1.0.0", "--manifest", str(project))
        assert "demo 1.0.0 yanked for d1mini, esp32dev" in said, said
        assert (f"2 devices pinned to 1.0.0: {seen.mac} (d1mini), {unseen.mac} (d1mini). Their pin is not "
                "applied while 1.0.0 is yanked") in said, said
        time.sleep(SETTLE)
        assert version_sent(served.port, seen) is None  # what it would get without the pin: 304 on 1.1.0

        undone = cli_json("yank", "1.0.0", "--undo", "--manifest", str(project), "--catalog", str(root))
        assert undone["pinned"] == [{"mac": seen.mac, "target": "d1mini"}, {"mac": unseen.mac, "target": "d1mini"}]
        time.sleep(SETTLE)
        assert version_sent(served.port, seen) == "1.0.0"

        # Only the targets whose release changed count: 1.0.0 of esp32dev has no pinned device.
        other = cli_json("yank", "1.0.0", "--target", "esp32dev", "--manifest", str(project), "--catalog", str(root))
        assert other["changed"] == ["esp32dev"] and other["pinned"] == []


def test_yank_stands_when_the_fleet_store_cannot_be_read(tmp_path: Path) -> None:
    root = demo_catalog(tmp_path / "catalog").root
    project = demo_manifest(tmp_path)
    plain = clirun.run("yank", "1.0.0", "--manifest", str(project), "--catalog", str(root))
    assert plain.returncode == 0 and "pinned" not in plain.stdout and not plain.stderr  # no store yet: no pins
    missing = tmp_path / "nowhere" / "fleet.sqlite3"
    done = clirun.run("yank", "1.0.0", "--undo", "--manifest", str(project), "--catalog", str(root),
                      "--fleet", str(missing), "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["yanked"] is False and answer["changed"] == ["d1mini", "esp32dev"] and answer["pinned"] is None
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("warning: devices pinned to demo 1.0.0 not "
                                                                      "looked up: "), done.stderr
    assert str(missing) in done.stderr and "Traceback" not in done.stderr and not missing.parent.exists()


@pytest.mark.parametrize("args, message", [
    (["pin", "zz:00:00:00:00:01", "1.0.0"], "not a MAC address"),
    (["pin", "02:00:00:00:01", "1.0.0"], "not a MAC address"),
    (["unpin", "02:00:00:00:00:01:02"], "not a MAC address"),
    (["assign", "hello", "--channel", "beta"], "not a MAC address"),
    (["retry", "02.00.00.00.00.01"], "not a MAC address"),
    (["device", "0200000000"], "not a MAC address"),
    (["pin", "02:00:00:00:00:01", "9.9.9", "--target", "demo/d1mini"], "9.9.9: not published"),
    (["pin", "02:00:00:00:00:01", "1.0.0", "--target", "demo/yanked"], "yanked"),
    (["pin", "02:00:00:00:00:01", "1.0.0", "--target", "d1mini/"], "PROJECT/TARGET"),
    (["rollout", "1.1.0", "--percent", "0"], "--percent"),
    (["rollout", "1.1.0", "--stages", "10,5,100"], "--stages"),
    (["rollout", "7.0.0", "--percent", "5"], "not published"),
    (["devices", "--state", "sleepy"], "--state sleepy"),
])
def test_refusals_are_one_line_and_change_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    built = demo_catalog(tmp_path / "catalog")
    built.add("demo", "yanked", "esp8266", "1.0.0", yanked=True)
    built.write()
    before = sorted(p.name for p in built.root.rglob("*"))
    assert message in refused(built.root, *args)
    assert sorted(p.name for p in built.root.rglob("*")) == before
    assert not store_file(built.root).exists()


def test_serve_says_where_it_records_and_refuses_an_unusable_store(tmp_path: Path) -> None:
    built = demo_catalog(tmp_path / "catalog")
    done = clirun.run("serve", "--catalog", str(built.root), "--fleet", "sqlite:", "--port", "0", "--bind", "127.0.0.1")
    assert done.returncode == 8 and done.stderr.count("\n") == 1 and "--fleet: empty path" in done.stderr
    process, port = start_cli(built.root)
    check_all(port, [Device(mac_of(1), "1.1.0")])  # answered: serving, its signal handlers are in place
    code, out, _ = stop_cli(process)
    assert code == 0 and f"fleet registry: {store_file(built.root)}" in out
