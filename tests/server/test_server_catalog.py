"""The serving-side catalog: verification, refusal of bad files, reloads, the watcher."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path

import pytest

from acrelease.server.catalog import Catalog
from tests.factories.catalog import CatalogBuilder, demo_catalog

FILE = "demo/d1mini/demo-d1mini-1.0.0.bin"


def loaded(root: Path) -> Catalog:
    catalog = Catalog(root)
    catalog.load()
    return catalog


def test_all_files_verified_and_mapped(built: CatalogBuilder) -> None:
    catalog = loaded(built.root)
    state = catalog.state
    assert state.problems == {} and len(state.blobs) == len(state.files) == 6
    entry = state.files[FILE]
    data = state.data(entry.artifact)
    assert data is not None and hashlib.sha256(data).hexdigest() == entry.artifact.sha256


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "directory", "symlink_out", "symlink_in"])
def test_bad_files_refused_loudly(built: CatalogBuilder, tmp_path: Path, damage: str,
                                  caplog: pytest.LogCaptureFixture) -> None:
    path = built.root / FILE
    data = path.read_bytes()
    outside = tmp_path / "outside.bin"
    outside.write_bytes(data)  # same bytes: only the location is wrong
    if damage == "truncate":
        path.write_bytes(data[:-1])
    elif damage == "flip":
        path.write_bytes(bytes([data[0] ^ 1]) + data[1:])
    elif damage == "delete":
        path.unlink()
    elif damage == "directory":
        path.unlink()
        path.mkdir()
    elif damage == "symlink_out":
        path.unlink()
        path.symlink_to(outside)
    else:  # a symlink that stays inside the catalog is fine
        inside = built.root / "demo" / "copy.bin"
        inside.write_bytes(data)
        path.unlink()
        path.symlink_to(inside)
    with caplog.at_level(logging.WARNING, logger="acrelease.server.catalog"):
        catalog = loaded(built.root)
    entry = catalog.state.files[FILE]
    if damage == "symlink_in":
        assert catalog.state.data(entry.artifact) is not None
        return
    assert catalog.state.data(entry.artifact) is None
    assert FILE in catalog.state.problems
    assert any(FILE in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert len(catalog.state.blobs) == 5  # the rest is still served


def test_broken_index_keeps_previous_state(built: CatalogBuilder, caplog: pytest.LogCaptureFixture) -> None:
    catalog = loaded(built.root)
    before = catalog.state
    (built.root / "index.json").write_text('{"format": 1, "projects": {"demo": ')
    with caplog.at_level(logging.ERROR, logger="acrelease.server.catalog"):
        assert catalog.load() is False
    assert catalog.state is before
    assert any(r.levelno == logging.ERROR for r in caplog.records)


def test_reload_reuses_verification(built: CatalogBuilder, monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = loaded(built.root)
    first = catalog.state.blobs[FILE]
    built.add("demo", "d1mini", "esp8266", "1.3.0")
    built.write()
    hashed: list[int] = []
    real_sha256 = hashlib.sha256

    def counting_sha256(data: bytes = b"") -> hashlib._Hash:
        hashed.append(len(data))
        return real_sha256(data)

    monkeypatch.setattr(hashlib, "sha256", counting_sha256)
    assert catalog.load() is True
    assert len(hashed) == 1  # only the new file was hashed
    assert catalog.state.blobs[FILE] is first
    assert catalog.load() is False  # unchanged index: nothing to do


def test_recheck_notices_file_replaced_behind_our_back(built: CatalogBuilder) -> None:
    catalog = loaded(built.root)
    path = built.root / FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(b"\xe9" + path.read_bytes()[1:-1])
    os.replace(tmp, path)
    assert catalog.recheck() is True
    assert FILE in catalog.state.problems and FILE not in catalog.state.blobs


def test_missing_index_is_empty_catalog(tmp_path: Path) -> None:
    catalog = loaded(tmp_path)
    assert catalog.state.index.targets == {} and catalog.state.files == {}


def test_watcher_swaps_in_a_new_publish(tmp_path: Path) -> None:
    built = demo_catalog(tmp_path / "c")
    catalog = Catalog(built.root, poll_interval=0.02, recheck_interval=0.05)

    async def scenario() -> None:
        await catalog.start()
        try:
            generation = catalog.state.index.generation
            built.add("demo", "d1mini", "esp8266", "2.0.0")
            built.write()
            for _ in range(500):  # bounded wait, no timing assertion
                if catalog.state.index.generation > generation:
                    break
                await asyncio.sleep(0.01)
            assert catalog.state.index.generation == generation + 1
            assert "demo/d1mini/demo-d1mini-2.0.0.bin" in catalog.state.blobs
        finally:
            await catalog.stop()

    asyncio.run(scenario())
