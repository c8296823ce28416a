"""Publishing: atomic, immutable, idempotent; a broken or locked catalog is a clear error."""

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from acrelease import chips, manifest
from acrelease.catalog import history, store
from acrelease.catalog.index import INDEX_NAME, load_index
from acrelease.errors import CatalogError, VersionError
from acrelease.manifest import ArtifactRecord, Release, Target
from acrelease.versioning import parse_release_version
from tests import clirun
from tests.factories.catalog import demo_catalog


def make_project(tmp_path: Path, releases: dict[str, bytes], fs: bytes | None = None) -> Path:
    """A manifest with one esp8266 target and a release per (version -> firmware bytes)."""
    path = tmp_path / "project" / "releases.toml"
    path.parent.mkdir(parents=True)
    manifest.init_manifest(path, "demo", [Target("d1mini", chips.lookup("esp8266"))])
    for version, data in releases.items():
        records = [_record(path.parent, "firmware", f"dist/{version}/d1mini/firmware.bin", data)]
        if fs is not None:
            records.append(_record(path.parent, "filesystem", f"dist/{version}/d1mini/littlefs.bin", fs))
        release = Release(parse_release_version(version), date="2026-11-27")
        manifest.record_artifacts(path, release, {"d1mini": records})
    return path


def _record(root: Path, kind: str, rel: str, data: bytes) -> ArtifactRecord:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(data)
    return ArtifactRecord(kind, rel, len(data), hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest(),
                          "esp8266", "plain" if kind == "firmware" else "littlefs", None, True)


def test_publish_all_then_noop(tmp_path: Path) -> None:
    path = make_project(tmp_path, {"1.0.0": b"\xe9one", "1.10.0": b"\xe9ten", "1.9.0": b"\xe9nine"}, fs=b"F" * 64)
    catalog = tmp_path / "catalog"
    result = store.publish(manifest.load(path), catalog)
    assert sorted(v for _, v in result.published) == ["1.0.0", "1.10.0", "1.9.0"]
    index = load_index(catalog)
    target = index.target("demo", "d1mini")
    assert [str(r.version) for r in target.releases] == ["1.10.0", "1.9.0", "1.0.0"]
    newest = target.releases[0]
    assert newest.firmware.file == "demo/d1mini/demo-d1mini-1.10.0.bin"
    assert (catalog / newest.firmware.file).read_bytes() == b"\xe9ten"
    assert newest.firmware.md5 == hashlib.md5(b"\xe9ten").hexdigest()
    assert newest.filesystem and (catalog / newest.filesystem.file).read_bytes() == b"F" * 64
    again = store.publish(manifest.load(path), catalog)
    assert again.published == () and len(again.unchanged) == 3
    assert again.generation == result.generation == 1


def test_republish_with_other_bytes_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    path = make_project(tmp_path, {"1.0.0": b"\xe9one"})
    catalog = tmp_path / "catalog"
    store.publish(manifest.load(path), catalog)
    before = (catalog / INDEX_NAME).read_bytes()
    other = make_project(tmp_path / "other", {"1.0.0": b"\xe9different"})
    with pytest.raises(CatalogError, match="already published with other firmware bytes"):
        store.publish(manifest.load(other), catalog)
    assert (catalog / INDEX_NAME).read_bytes() == before
    assert (catalog / "demo/d1mini/demo-d1mini-1.0.0.bin").read_bytes() == b"\xe9one"


def test_publish_one_version_and_unknown_version(tmp_path: Path) -> None:
    path = make_project(tmp_path, {"1.0.0": b"\xe9one", "1.1.0": b"\xe9two"})
    catalog = tmp_path / "catalog"
    result = store.publish(manifest.load(path), catalog, [parse_release_version("1.1.0")])
    assert result.published == (("d1mini", "1.1.0"),)
    with pytest.raises(VersionError, match=r"no release 2.0.0 \(recorded: 1.0.0, 1.1.0\)"):
        store.publish(manifest.load(path), catalog, [parse_release_version("2.0.0")])


def test_interrupted_publish_leaves_the_previous_index_and_is_resumed(tmp_path: Path, monkeypatch) -> None:
    path = make_project(tmp_path, {"1.0.0": b"\xe9one"})
    catalog = tmp_path / "catalog"
    store.publish(manifest.load(path), catalog)
    before = (catalog / INDEX_NAME).read_bytes()
    release = Release(parse_release_version("1.1.0"), date="2026-11-28")
    manifest.record_artifacts(path, release, {"d1mini": [_record(path.parent, "firmware", "dist/1.1.0/fw.bin",
                                                                  b"\xe9new")]})
    real_write = store.write_atomic

    def die_on_index(dest: Path, data: bytes) -> None:
        if dest.name == INDEX_NAME:
            raise KeyboardInterrupt  # the process is killed between the files and the index
        real_write(dest, data)

    monkeypatch.setattr(store, "write_atomic", die_on_index)
    with pytest.raises(KeyboardInterrupt):
        store.publish(manifest.load(path), catalog)
    assert (catalog / INDEX_NAME).read_bytes() == before  # the server still sees 1.0.0 only
    monkeypatch.setattr(store, "write_atomic", real_write)
    result = store.publish(manifest.load(path), catalog)
    assert result.published == (("d1mini", "1.1.0"),)
    assert not list(catalog.rglob(f"*{store.TMP_MARK}*"))


def test_killed_publish_at_random_points_never_mixes(tmp_path: Path) -> None:
    """A real process killed mid-publish: the index is old or new, and every indexed file matches."""
    path = make_project(tmp_path, {f"1.{i}.0": bytes([0xE9]) + os.urandom(200_000) for i in range(6)})
    catalog = tmp_path / "catalog"
    code = ("import sys; from pathlib import Path; from acrelease import manifest; "
            "from acrelease.catalog.store import publish; "
            "publish(manifest.load(Path(sys.argv[1])), Path(sys.argv[2]))")
    for delay in (0.05, 0.15, 0.3, 0.6):
        proc = subprocess.Popen([sys.executable, "-c", code, str(path), str(catalog)])
        time.sleep(delay)
        proc.kill()
        proc.wait()
        index = load_index(catalog)
        for _, _, artifact in index.artifacts():
            data = (catalog / artifact.file).read_bytes()
            assert hashlib.sha256(data).hexdigest() == artifact.sha256
    store.publish(manifest.load(path), catalog)
    assert len(load_index(catalog).target("demo", "d1mini").releases) == 6


def test_second_publisher_waits_for_the_lock(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    with (store.catalog_lock(catalog, timeout=1),
          pytest.raises(CatalogError, match="another `acrelease publish` has held the catalog lock"),
          store.catalog_lock(catalog, timeout=0.2)):
        pass
    released = threading.Event()

    def hold() -> None:
        with store.catalog_lock(catalog, timeout=1):
            time.sleep(0.3)
        released.set()

    thread = threading.Thread(target=hold)
    thread.start()
    time.sleep(0.05)
    with store.catalog_lock(catalog, timeout=5):
        assert released.is_set()
    thread.join()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions, so a read-only folder cannot be made")
def test_read_only_catalog_is_one_clear_error(tmp_path: Path) -> None:
    path = make_project(tmp_path, {"1.0.0": b"\xe9one"})
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    catalog.chmod(0o555)
    try:
        with pytest.raises(CatalogError, match="not writable"):
            store.publish(manifest.load(path), catalog)
    finally:
        catalog.chmod(0o755)


@pytest.mark.parametrize("code, strerror, expected", [
    (28, "No space left on device", "the disk is full"),
    (30, "Read-only file system", "it is not writable"),
])
def test_write_failure_is_one_clear_error_and_the_catalog_is_intact(
        tmp_path: Path, monkeypatch, code: int, strerror: str, expected: str) -> None:
    path = make_project(tmp_path, {"1.0.0": b"\xe9one"})
    catalog = tmp_path / "catalog"
    store.publish(manifest.load(path), catalog)
    before = (catalog / INDEX_NAME).read_bytes()
    manifest.record_artifacts(path, Release(parse_release_version("1.1.0")),
                              {"d1mini": [_record(path.parent, "firmware", "dist/1.1.0/fw.bin", b"\xe9new")]})
    real_fsync = os.fsync

    def failing(fd: int) -> None:
        raise OSError(code, strerror)

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(CatalogError, match=f"{expected}.*; the catalog is unchanged"):
        store.publish(manifest.load(path), catalog)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert (catalog / INDEX_NAME).read_bytes() == before
    assert not list(catalog.rglob(f"*{store.TMP_MARK}*"))


def test_broken_index_is_a_clear_error(tmp_path: Path) -> None:
    path = make_project(tmp_path, {"1.0.0": b"\xe9one"})
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / INDEX_NAME).write_text("{not json")
    with pytest.raises(CatalogError, match="index.json: not valid JSON.*; run `acrelease repair --catalog"):
        store.publish(manifest.load(path), catalog)


def test_yank_and_undo(tmp_path: Path) -> None:
    path = make_project(tmp_path, {"1.0.0": b"\xe9one", "1.1.0": b"\xe9two"})
    catalog = tmp_path / "catalog"
    store.publish(manifest.load(path), catalog)
    assert store.set_yanked(catalog, "demo", parse_release_version("1.1.0"), True).changed == ("d1mini",)
    doc = json.loads((catalog / INDEX_NAME).read_text())
    releases = doc["projects"]["demo"]["targets"]["d1mini"]["releases"]
    assert [(r["version"], r["yanked"]) for r in releases] == [("1.1.0", True), ("1.0.0", False)]
    store.set_yanked(catalog, "demo", parse_release_version("1.1.0"), False)
    assert not load_index(catalog).target("demo", "d1mini").releases[0].yanked
    with pytest.raises(VersionError, match="not published"):
        store.set_yanked(catalog, "demo", parse_release_version("9.9.9"), True)


def test_two_publish_processes_at_once_leave_one_consistent_catalog(tmp_path: Path) -> None:
    """Two manifests of one project race into one catalog: the lock serialises them, the loser is
    refused for its conflicting version (or proceeds with its other ones), and the catalog stays consistent."""
    first = make_project(tmp_path / "a", {"1.0.0": b"\xe9" + os.urandom(300_000), "1.1.0": b"\xe9a11"})
    second = make_project(tmp_path / "b", {"1.0.0": b"\xe9" + os.urandom(300_000), "1.2.0": b"\xe9b12"})
    catalog = tmp_path / "catalog"
    procs = [clirun.popen("publish", "--catalog", str(catalog), "--manifest", str(path),
                          stderr=subprocess.PIPE, text=True)
             for path in (first, second)]
    results = [(proc.wait(timeout=60), proc.stderr.read() if proc.stderr else "") for proc in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 6], results  # one wins, the other is refused: 1.0.0 exists with other bytes
    refused = next(err for code, err in results if code == 6)
    assert "already published with other firmware bytes" in refused and "Traceback" not in refused
    index = load_index(catalog)
    for _, _, artifact in index.artifacts():
        assert hashlib.sha256((catalog / artifact.file).read_bytes()).hexdigest() == artifact.sha256


def test_every_index_written_is_kept_as_a_generation_copy_and_old_ones_pruned(tmp_path: Path) -> None:
    path = make_project(tmp_path, {"1.0.0": b"\xe9one", "1.1.0": b"\xe9two"})
    catalog = tmp_path / "catalog"
    store.publish(manifest.load(path), catalog)
    assert history.copies(catalog) == [(1, history.generation_path(catalog, 1))]
    assert history.generation_path(catalog, 1).read_bytes() == (catalog / INDEX_NAME).read_bytes()
    version = parse_release_version("1.1.0")
    for n in range(history.KEEP + 3):
        store.set_yanked(catalog, "demo", version, n % 2 == 0)
    kept = history.copies(catalog)
    assert len(kept) == history.KEEP and kept[0][0] == history.KEEP + 4 == load_index(catalog).generation
    assert kept[0][1].read_bytes() == (catalog / INDEX_NAME).read_bytes()


def test_yank_that_changes_nothing_writes_nothing(tmp_path: Path) -> None:
    path = make_project(tmp_path, {"1.0.0": b"\xe9one"})
    catalog = tmp_path / "catalog"
    store.publish(manifest.load(path), catalog)
    version = parse_release_version("1.0.0")
    store.set_yanked(catalog, "demo", version, True)
    before = (catalog / INDEX_NAME).read_bytes()
    again = store.set_yanked(catalog, "demo", version, True)
    assert again.changed == () and again.unchanged == ("d1mini",) and again.generation == 2
    assert (catalog / INDEX_NAME).read_bytes() == before


def test_yank_one_target_leaves_the_others(tmp_path: Path) -> None:
    built = demo_catalog(tmp_path / "catalog")
    version = parse_release_version("1.1.0")
    result = store.set_yanked(built.root, "demo", version, True, targets=["esp32dev"])
    assert result.changed == ("esp32dev",)
    index = load_index(built.root)
    assert index.target("demo", "esp32dev").release(version).yanked
    assert not index.target("demo", "d1mini").release(version).yanked
    with pytest.raises(VersionError, match=r"not published for target 'empty' \(it is for: d1mini, esp32dev\)"):
        store.set_yanked(built.root, "demo", version, True, targets=["empty"])


def test_deleted_index_with_history_is_refused_not_silently_restarted(tmp_path: Path) -> None:
    """Deleting index.json and publishing again would forget every yank: refused, repair named."""
    path = make_project(tmp_path, {"1.0.0": b"\xe9one"})
    catalog = tmp_path / "catalog"
    store.publish(manifest.load(path), catalog)
    store.set_yanked(catalog, "demo", parse_release_version("1.0.0"), True)
    (catalog / INDEX_NAME).unlink()
    for attempt in (lambda: store.publish(manifest.load(path), catalog),
                    lambda: store.set_yanked(catalog, "demo", parse_release_version("1.0.0"), False)):
        with pytest.raises(CatalogError, match=r"index.json: missing, although generation 2 was written here; "
                                               r"run `acrelease repair --catalog"):
            attempt()
    assert not (catalog / INDEX_NAME).exists()


def test_publish_puts_back_a_missing_or_truncated_published_file(tmp_path: Path) -> None:
    path = make_project(tmp_path, {"1.0.0": b"\xe9one", "1.1.0": b"\xe9two"})
    catalog = tmp_path / "catalog"
    store.publish(manifest.load(path), catalog)
    before = (catalog / INDEX_NAME).read_bytes()
    (catalog / "demo/d1mini/demo-d1mini-1.0.0.bin").unlink()
    (catalog / "demo/d1mini/demo-d1mini-1.1.0.bin").write_bytes(b"\xe9t")
    result = store.publish(manifest.load(path), catalog)
    assert sorted(result.restored) == ["demo/d1mini/demo-d1mini-1.0.0.bin", "demo/d1mini/demo-d1mini-1.1.0.bin"]
    assert result.published == () and (catalog / INDEX_NAME).read_bytes() == before
    assert (catalog / "demo/d1mini/demo-d1mini-1.1.0.bin").read_bytes() == b"\xe9two"
