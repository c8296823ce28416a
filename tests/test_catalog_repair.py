"""A broken catalog has a way out, driven as a user drives it (``tests/clirun.py``).

``index.json`` is broken by hand (truncated, garbage, the wrong schema, deleted); then
``publish``/``yank`` are refused with one line naming ``acrelease repair`` and leave the catalog
byte for byte as it was, ``repair`` restores the last good generation with its yanks (or rebuilds
the index from the files and says what it could not recover), and a real ``acrelease serve``
process refuses a catalog it cannot read, or serves the last good generation with one warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from acrelease import chips, manifest
from acrelease.catalog import history, repair, store
from acrelease.catalog.index import INDEX_NAME, load_index
from acrelease.errors import CatalogError
from acrelease.image import inspect_image
from acrelease.manifest import ArtifactRecord, Release, Target
from acrelease.server.catalog import Catalog
from acrelease.versioning import parse_release_version
from tests import clirun
from tests.factories.catalog import image_for
from tests.factories.images import esp8266_image
from tests.integration.devices import (
    Answer,
    autoconnect_catalog_request,
    check_no_update,
    check_update,
    esp32_request,
    esp8266_request,
    exchange,
    read_answer,
)
from tests.integration.served import free_port, start_cli, stop_cli

TARGETS = (("d1mini", "esp8266"), ("esp32dev", "esp32"))


def make_project(root: Path, versions: dict[str, dict[str, bytes]] | None = None) -> Path:
    """releases.toml for ``demo`` (d1mini/esp8266, esp32dev/esp32) with real images under dist/,
    recorded as ``acrelease add`` records them; default: 1.0.0 and 1.1.0 for both targets."""
    path = root / "project" / "releases.toml"
    path.parent.mkdir(parents=True)
    manifest.init_manifest(path, "demo", [Target(name, chips.lookup(chip)) for name, chip in TARGETS])
    if versions is None:
        versions = {v: {name: image_for(chip, v) for name, chip in TARGETS} for v in ("1.0.0", "1.1.0")}
    for version, images in versions.items():
        records = {}
        for target, data in images.items():
            rel = f"dist/{version}/{target}/firmware.bin"
            (path.parent / rel).parent.mkdir(parents=True, exist_ok=True)
            (path.parent / rel).write_bytes(data)
            info = inspect_image(data)
            records[target] = [ArtifactRecord("firmware", rel, len(data), hashlib.md5(data).hexdigest(),
                                              hashlib.sha256(data).hexdigest(), info.chip.key, info.format,
                                              info.flash_size, True)]
        manifest.record_artifacts(path, Release(parse_release_version(version), date="2026-11-27"), records)
    return path


def cli(project: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    proc = clirun.run(*args, cwd=project.parent, env={"COLUMNS": "200"}, timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("acrelease: error: "), proc.stderr
    return lines[0]


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def published(tmp_path: Path) -> tuple[Path, Path]:
    """(releases.toml, catalog): 1.0.0 and 1.1.0 published for both targets, 1.1.0 yanked on d1mini."""
    project = make_project(tmp_path)
    catalog = tmp_path / "catalog"
    # Set up through the library (what the CLI calls) to keep the test short; what is under test
    # below runs through the CLI.
    store.publish(manifest.load(project), catalog)
    store.set_yanked(catalog, "demo", parse_release_version("1.1.0"), True, targets=["d1mini"])
    return project, catalog


BREAKS = {
    "truncated": lambda good: good[: len(good) // 2],
    "garbage": lambda good: b"\x00\xff not an index \x1b[31m",
    "empty": lambda good: b"",
    "wrong schema": lambda good: b'{"format": 1, "generation": 3, "projects": ["demo"]}\n',
    "other format": lambda good: good.replace(b'"format": 1', b'"format": 9'),
}


@pytest.mark.parametrize("damage", sorted(BREAKS))
def test_broken_index_refuses_publish_and_repair_restores_it_with_its_yanks(
        published: tuple[Path, Path], damage: str) -> None:
    project, catalog = published
    index = catalog / INDEX_NAME
    index.write_bytes(BREAKS[damage](index.read_bytes()))
    before = snapshot(catalog)
    commands = (["publish"], ["yank", "1.0.0"], ["list"]) if damage == "truncated" else (["publish"],)
    for args in commands:
        line = one_error_line(cli(project, *args, "--catalog", str(catalog), code=6))
        assert str(index) in line and f"run `acrelease repair --catalog {catalog}`" in line, line
        assert "acrelease publish" not in line
    assert snapshot(catalog) == before, "a refused command changed the catalog"

    report = json.loads(cli(project, "repair", "--catalog", str(catalog), "--json").stdout)
    assert report["action"] == "restored" and report["source_generation"] == 2
    assert report["source"] == ".acrelease/generations/index-00000002.json"
    assert report["generation"] == 3 and str(index) in report["index_problem"]
    assert report["yanked"] == [{"project": "demo", "target": "d1mini", "version": "1.1.0"}]
    assert report["verified_files"] == 4 and report["damaged_files"] == [] and report["not_recovered"] == []
    kept = catalog / report["kept_broken_index"]
    assert kept.read_bytes() == before[INDEX_NAME]
    if damage != "truncated":
        return
    listing = json.loads(cli(project, "list", "--catalog", str(catalog), "--json").stdout)
    assert {(r["target"], r["version"], r["published"], r["yanked"]) for r in listing["releases"]} == {
        ("d1mini", "1.1.0", True, True), ("d1mini", "1.0.0", True, False),
        ("esp32dev", "1.1.0", True, False), ("esp32dev", "1.0.0", True, False)}
    assert "Nothing new to publish" in cli(project, "publish", "--catalog", str(catalog)).stdout


def test_deleted_index_is_restored_by_repair_with_its_yanks(published: tuple[Path, Path]) -> None:
    project, catalog = published
    (catalog / INDEX_NAME).unlink()
    before = snapshot(catalog)
    line = one_error_line(cli(project, "publish", "--catalog", str(catalog), code=6))
    assert "index.json: missing, although generation 2 was written here" in line and "acrelease repair" in line
    assert snapshot(catalog) == before
    text = cli(project, "repair", "--catalog", str(catalog)).stdout
    assert "Restored generation 2 from .acrelease/generations/index-00000002.json: written as generation 3" in text
    assert "yanked: demo/d1mini 1.1.0" in text and "4 file(s) verified" in text
    table = cli(project, "list", "--catalog", str(catalog)).stdout
    assert [line.split()[-2:] for line in table.splitlines() if "1.1.0" in line and "d1mini" in line] == [
        ["yes,", "yanked"]]
    again = cli(project, "repair", "--catalog", str(catalog)).stdout
    assert "index.json is good (generation 3); nothing to restore" in again


def test_repair_rebuilds_from_the_files_when_no_good_index_survives(published: tuple[Path, Path]) -> None:
    project, catalog = published
    (catalog / INDEX_NAME).write_bytes(b"{")
    shutil.rmtree(catalog / history.STATE_DIR)
    (catalog / "demo/d1mini/demo-d1mini-2.0.0.bin").write_bytes(b"not an image")
    before = snapshot(catalog)
    dry = json.loads(cli(project, "repair", "--catalog", str(catalog), "--dry-run", "--json").stdout)
    assert dry["dry_run"] and dry["action"] == "reconstructed" and snapshot(catalog) == before

    report = json.loads(cli(project, "repair", "--catalog", str(catalog), "--json").stdout)
    assert report["action"] == "reconstructed" and report["releases"] == 4 and report["verified_files"] == 4
    assert report["yanked"] == []  # not in the files: said so, loudly
    lost = " ".join(report["not_recovered"])
    assert "yanks are not stored in the files" in lost and "acrelease yank" in lost
    assert "demo/d1mini/demo-d1mini-2.0.0.bin: left out, not an OTA image" in lost
    assert report["unindexed_files"] == ["demo/d1mini/demo-d1mini-2.0.0.bin"]
    index = load_index(catalog)
    for project_name, target_name in (("demo", "d1mini"), ("demo", "esp32dev")):
        target = index.target(project_name, target_name)
        assert target is not None and [str(r.version) for r in target.releases] == ["1.1.0", "1.0.0"]
    fw = index.target("demo", "esp32dev").releases[0].firmware
    data = image_for("esp32", "1.1.0")
    assert (fw.chip, fw.format, fw.size, fw.sha256) == ("esp32", "plain", len(data), hashlib.sha256(data).hexdigest())
    # The manifest agrees with what was rebuilt: publishing again is a no-op, not a conflict.
    assert "Nothing new to publish" in cli(project, "publish", "--catalog", str(catalog)).stdout


def test_repair_reports_damaged_files_and_publish_puts_them_back(published: tuple[Path, Path]) -> None:
    project, catalog = published
    (catalog / "demo/esp32dev/demo-esp32dev-1.0.0.bin").unlink()
    proc = cli(project, "repair", "--catalog", str(catalog), code=6)
    assert "damaged: demo/esp32dev/demo-esp32dev-1.0.0.bin: missing" in proc.stdout
    assert "missing or damaged" in one_error_line(proc)
    out = cli(project, "publish", "--catalog", str(catalog)).stdout
    assert "Put back demo/esp32dev/demo-esp32dev-1.0.0.bin" in out
    assert "nothing to restore" in cli(project, "repair", "--catalog", str(catalog)).stdout


def test_repair_saves_a_last_good_copy_for_a_catalog_without_one(published: tuple[Path, Path]) -> None:
    """Catalogs published before generation copies existed get one from `repair`."""
    project, catalog = published
    shutil.rmtree(catalog / history.STATE_DIR)
    report = json.loads(cli(project, "repair", "--catalog", str(catalog), "--json").stdout)
    assert report["action"] == "saved" and report["index_problem"] is None
    assert history.last_good(catalog) is not None
    assert history.generation_path(catalog, report["generation"]).read_bytes() == (catalog / INDEX_NAME).read_bytes()


def test_yank_target_affects_only_that_board(published: tuple[Path, Path]) -> None:
    """The fixture yanked 1.1.0 on d1mini only: an ESP8266 running it is rolled back to 1.0.0, an
    ESP32 of the other target still gets 1.1.0. Then `yank --json` says what it changed."""
    project, catalog = published
    process, port = start_cli(catalog)
    try:
        host = f"127.0.0.1:{port}"
        rolled_back, _ = exchange(port, esp8266_request(host, "/update/demo/d1mini", version="1.1.0"))
        check_update(rolled_back)
        assert rolled_back.header("x-version") == ["1.0.0"]
        assert rolled_back.body == image_for("esp8266", "1.0.0")
        check_no_update(*exchange(port, esp8266_request(host, "/update/demo/d1mini", version="1.0.0")))
        upgraded, _ = exchange(port, esp32_request(host, "/update/demo/esp32dev", version="1.0.0"))
        check_update(upgraded, sha256=True)
        assert upgraded.header("x-version") == ["1.1.0"] and upgraded.body == image_for("esp32", "1.1.0")
    finally:
        code, _, err = stop_cli(process)
    assert code == 0, err

    result = json.loads(cli(project, "yank", "1.1.0", "--catalog", str(catalog), "--json").stdout)
    assert result == {"catalog": str(catalog), "project": "demo", "version": "1.1.0", "yanked": True,
                      "changed": ["esp32dev"], "unchanged": ["d1mini"], "generation": 3, "pinned": []}
    undo = json.loads(cli(project, "yank", "1.1.0", "--undo", "-t", "d1mini", "--catalog", str(catalog),
                          "--json").stdout)
    assert undo["yanked"] is False and undo["changed"] == ["d1mini"] and undo["unchanged"] == []
    line = one_error_line(cli(project, "yank", "1.1.0", "--target", "nope", "--catalog", str(catalog), code=5))
    assert "not published for target 'nope' (it is for: d1mini, esp32dev)" in line


def ask_catalog(port: int, request: bytes) -> Answer:
    """AutoConnect's catalog request is HTTP/1.1 keep-alive: read one answer, then hang up."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as conn:
        conn.sendall(request)
        return read_answer(conn)


# -- serve on a broken index ----------------------------------------------------------------------

def test_serve_refuses_an_unreadable_index_without_a_last_good_one(published: tuple[Path, Path]) -> None:
    _, catalog = published
    shutil.rmtree(catalog / history.STATE_DIR)
    (catalog / INDEX_NAME).write_bytes(b'{"format": 1, "projects": ')
    proc = clirun.run("serve", "--catalog", str(catalog), "--port", str(free_port()), "--bind", "127.0.0.1",
                      timeout=60)
    assert proc.returncode == 6, (proc.returncode, proc.stdout, proc.stderr)
    line = one_error_line(proc)
    assert "index.json: not valid JSON" in line and "no last good generation" in line
    assert f"run `acrelease repair --catalog {catalog.resolve()}`" in line
    assert "nothing published yet" not in proc.stdout


def test_serve_serves_the_last_good_generation_with_one_warning(published: tuple[Path, Path]) -> None:
    project, catalog = published
    (catalog / INDEX_NAME).write_bytes(b"\x00garbage")
    process, port = start_cli(catalog)
    try:
        host = f"127.0.0.1:{port}"
        # Generation 2, as it was: 1.1.0 yanked on d1mini, offered on esp32dev.
        check_no_update(*exchange(port, esp8266_request(host, "/update/demo/d1mini", version="1.0.0")))
        answer, _ = exchange(port, esp32_request(host, "/update/demo/esp32dev", version="1.0.0"))
        check_update(answer, sha256=True)
        # The history folder is never listed nor served.
        for path in ("/.acrelease/generations/index-00000002.json", "/.acrelease/generations/",
                     "/index.json", ".acrelease/generations/index-00000002.json"):
            assert exchange(port, esp8266_request(host, path, version=None))[0].status == 404, path
        for path in (".acrelease", ".acrelease/generations", "demo/.acrelease"):
            assert ask_catalog(port, autoconnect_catalog_request(host, path)).status == 404, path
        root = ask_catalog(port, autoconnect_catalog_request(host, "."))
        assert json.loads(root.body) == [{"name": "demo", "type": "directory"}]
        # `repair` while it serves, then a yank: both picked up like a publish, without a restart.
        cli(project, "repair", "--catalog", str(catalog))
        cli(project, "yank", "1.1.0", "--undo", "--target", "d1mini", "--catalog", str(catalog))
        deadline = time.monotonic() + 10
        while True:
            answer, _ = exchange(port, esp8266_request(host, "/update/demo/d1mini", version="1.0.0"))
            if answer.status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        check_update(answer)
        assert answer.header("x-version") == ["1.1.0"]
    finally:
        code, out, err = stop_cli(process)
    assert code == 0, err
    assert "acrelease serve: catalog" in out and "(generation 2, 4 files served)" in out
    assert "nothing published yet" not in out
    warnings = [line for line in err.splitlines() if " WARNING " in line or " ERROR " in line]
    assert len(warnings) == 1, err
    assert ("serving generation 2, the last good one (.acrelease/generations/index-00000002.json)" in warnings[0]
            and "not valid JSON" in warnings[0] and "acrelease repair --catalog" in warnings[0])
    assert "generation 4 loaded" in err


# -- crash safety -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_publish_killed_at_random_moments_never_leaves_a_catalog_serve_refuses(tmp_path: Path) -> None:
    """A real `acrelease publish` (and `yank`) SIGKILLed at random moments, over and over: after each
    kill the start-up path of `serve` accepts the catalog, every indexed file matches its hashes,
    and the next publish carries on (never refused)."""
    rng = random.Random(20261202)
    versions = {f"1.{i}.0": {"d1mini": esp8266_image(f"1.{i}.0", extra=rng.randbytes(300_000))} for i in range(8)}
    project = make_project(tmp_path, versions)
    catalog = tmp_path / "catalog"
    kills, generations, took = 0, [], 0.0
    for attempt in range(12):
        state = history.read_index(catalog)
        assert state.index is not None
        target = state.index.target("demo", "d1mini")
        done = [str(r.version) for r in target.releases] if target else []
        todo = [v for v in versions if v not in done]
        # One version per run, so runs finish too and kills land before, during and after the
        # index write; every third run a yank of a published release.
        args = ["yank", done[0]] if done and attempt % 3 == 2 else ["publish", *todo[:1]]
        proc = clirun.popen(*args, "--catalog", str(catalog), "--manifest", str(project),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        started = time.monotonic()
        if attempt == 0:  # runs to the end: how long one run takes on this machine, now
            proc.wait(timeout=60)
            took = time.monotonic() - started
        # Most of a run is the interpreter starting; the writes are in its last part.
        time.sleep(rng.uniform(0.6, 1.1) * took)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        _, err = proc.communicate(timeout=60)
        assert "Traceback" not in err and "acrelease repair" not in err, err
        state = history.read_index(catalog)
        assert state.index is not None, f"after attempt {attempt}: {state.problem}"
        Catalog(catalog).load(refuse_unreadable=True)  # what `acrelease serve` runs at start
        for _, _, artifact in state.index.artifacts():
            assert hashlib.sha256((catalog / artifact.file).read_bytes()).hexdigest() == artifact.sha256
        generations.append(state.index.generation)
    assert kills >= 3, "the kills did not land while the commands ran"
    assert generations[-1] >= 2, f"too few runs finished to cover the index write: {generations}"
    print(f"\n{kills} of 12 publish/yank runs SIGKILLed mid-run; generation after each: {generations}")
    cli(project, "publish", "--catalog", str(catalog))
    assert len(load_index(catalog).target("demo", "d1mini").releases) == 8
    process, port = start_cli(catalog)
    try:
        check_no_update(*exchange(port, esp8266_request(f"127.0.0.1:{port}", "/update/demo/d1mini",
                                                        version="1.7.0")))
    finally:
        code, out, err = stop_cli(process)
    assert code == 0 and "(generation" in out and " WARNING " not in err, (out, err)


# -- the server's catalog loader, in process ----------------------------------------------------------

def test_loader_falls_back_at_start_and_keeps_its_state_at_run_time(
        published: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    _, catalog = published
    index = catalog / INDEX_NAME
    good = index.read_bytes()
    index.write_bytes(b"[]")
    with caplog.at_level(logging.WARNING, logger="acrelease.server.catalog"):
        loader = Catalog(catalog)
        assert loader.load(refuse_unreadable=True)
    assert loader.state.index.generation == 2 and len(loader.state.blobs) == 4
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "malformed index" in caplog.records[0].getMessage()
    caplog.clear()
    index.write_bytes(good)
    assert loader.load() and loader.state.index.generation == 2
    index.unlink()  # deleted at run time, after an index was written here: damage, not "empty"
    with caplog.at_level(logging.ERROR, logger="acrelease.server.catalog"):
        assert not loader.load()
    assert loader.state.index.generation == 2 and len(loader.state.blobs) == 4
    assert "missing, although generation 2 was written here; still serving generation 2" in caplog.text


def test_loader_without_a_last_good_copy(published: tuple[Path, Path]) -> None:
    _, catalog = published
    shutil.rmtree(catalog / history.STATE_DIR)
    (catalog / INDEX_NAME).write_bytes(b"{")
    with pytest.raises(CatalogError, match="no last good generation"):
        Catalog(catalog).load(refuse_unreadable=True)
    lenient = Catalog(catalog)  # the ASGI app's own start: logs, serves nothing, never raises
    assert not lenient.load() and lenient.state.index.targets == {}
    (catalog / INDEX_NAME).unlink()  # never-published catalogs (no history) are simply empty
    fresh = Catalog(catalog)
    assert fresh.load() and fresh.state.index.targets == {}


def test_rebuild_picks_names_apart_and_leaves_out_what_is_ambiguous(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    folder = catalog / "my-proj" / "d1-mini"
    folder.mkdir(parents=True)
    image = image_for("esp8266", "1.0.0-rc.1")
    (folder / "my-proj-d1-mini-1.0.0-rc.1.bin").write_bytes(image)
    (folder / "my-proj-d1-mini-1.0.0-rc.1.fs.bin").write_bytes(b"littlefs" * 512)
    (folder / "my-proj-d1-mini-2.0.0.bin").write_bytes(image)
    (folder / "my-proj-d1-mini-2.0.0.bin.signed").write_bytes(image)
    (folder / "my-proj-d1-mini-3.0.0.fs.bin").write_bytes(b"x" * 64)
    (folder / ".my-proj-d1-mini-4.0.0.bin.acrelease-tmp-x").write_bytes(image)
    (catalog / ".acrelease" / "x").mkdir(parents=True)
    index, skipped = repair.reconstruct(catalog)
    target = index.target("my-proj", "d1-mini")
    assert target is not None and [str(r.version) for r in target.releases] == ["1.0.0-rc.1"]
    release = target.releases[0]
    assert release.filesystem is not None and release.filesystem.file.endswith("-1.0.0-rc.1.fs.bin")
    assert len(skipped) == 2
    assert "my-proj/d1-mini 2.0.0: left out, several firmware files" in skipped[0]
    assert "my-proj-d1-mini-3.0.0.fs.bin: left out, no firmware of that version beside it" in skipped[1]
