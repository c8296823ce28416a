"""The plain-folder scanner (``server/plain.py``) on real files: what it serves, lists, re-reads and
refuses, its bounds, and the decision for a device; in process, no sockets (the served behaviour
is in ``tests/integration/test_plain_serve.py``)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from pathlib import Path

import pytest

from acrelease.policy import DeviceFacts, NoUpdate, Refuse
from acrelease.server import plain
from acrelease.server.plain import PlainFolder, open_folder
from tests.factories import images

FW = images.esp8266_image("1.0.0")


def folder(root: Path, **limits: int) -> PlainFolder:
    return PlainFolder(root, settle=0.0, **limits)  # files count as settled at once


def listed(state: plain.PlainState, path: str) -> dict[str, str]:
    body = state.listing(path)
    assert body is not None
    return {e["name"]: e["type"] for e in json.loads(body)}


def test_images_are_read_and_hashed_only_when_they_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.bin").write_bytes(FW)
    (tmp_path / "b.txt").write_text("notes")
    scanner = folder(tmp_path)
    checked: list[str] = []
    real_check = scanner._check

    def counting(path: str, seen: object) -> plain.PlainImage | None:
        checked.append(path)
        return real_check(path, seen)  # type: ignore[arg-type]

    monkeypatch.setattr(scanner, "_check", counting)
    scanner.scan()
    first = scanner.state
    assert sorted(checked) == ["a.bin", "b.txt"]
    assert first.images["a.bin"].artifact.md5 == hashlib.md5(FW).hexdigest()
    assert bytes(first.images["a.bin"].data) == FW
    scanner.scan()
    scanner.scan()
    assert len(checked) == 2 and scanner.state is first  # nothing changed: no read, same snapshot
    (tmp_path / "a.bin").write_bytes(images.esp8266_image("1.0.1"))
    scanner.scan()
    assert checked[2:] == ["a.bin"] and scanner.state is not first


def test_a_file_written_within_the_settle_time_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "new.bin").write_bytes(FW)
    scanner = PlainFolder(tmp_path, settle=30.0)
    scanner.scan()
    assert scanner.state.images == {} and listed(scanner.state, ".") == {".": "directory"}
    old = time.time() - 60
    os.utime(tmp_path / "new.bin", (old, old))  # mtime in the past, but ctime says it was just written
    scanner.scan()
    assert scanner.state.images == {}


def test_listing_names_autoconnect_cannot_fetch_are_left_out(tmp_path: Path) -> None:
    for name in ("ok.bin", "with space.bin", "per%cent.bin", "q?.bin", "x" * 101 + ".bin"):
        (tmp_path / name).write_bytes(FW)
    (tmp_path / "sub dir").mkdir()
    (tmp_path / "sub").mkdir()
    scanner = folder(tmp_path)
    scanner.scan()
    assert listed(scanner.state, ".") == {"ok.bin": "bin", "sub": "directory"}
    assert "with space.bin" in scanner.state.images  # still served by its exact path
    assert listed(scanner.state, "sub") == {".": "directory"}  # never a bare []
    assert scanner.state.listing("../x") is None and scanner.state.listing("nope") is None


def test_bounds_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for number in range(4):
        (tmp_path / f"f{number}.bin").write_bytes(FW)
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "deep.bin").write_bytes(FW)
    with caplog.at_level(logging.WARNING, logger="acrelease.server.plain"):
        scanner = folder(tmp_path, max_files=3, max_depth=2, max_bytes=2 * len(FW))
        scanner.scan()
    assert len(scanner.state.images) == 2
    text = caplog.text
    assert "more than 3 files" in text and "folders deeper than 2 levels" in text and "MiB of images" in text
    assert "a/b/c/deep.bin" not in scanner.state.images and listed(scanner.state, "a/b") == {".": "directory"}
    caplog.clear()
    scanner.scan()
    assert caplog.text == ""  # said once, not at every poll


def test_an_index_ends_plain_mode_for_good(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(FW)
    scanner = open_folder(tmp_path)
    assert scanner is not None and scanner.state.active
    (tmp_path / "index.json").write_text("{}")
    scanner.scan()
    assert not scanner.state.active and scanner.state.images == {}
    (tmp_path / "index.json").unlink()
    scanner.scan()
    assert not scanner.state.active
    (tmp_path / "index.json").write_text("{}")
    assert open_folder(tmp_path) is None


def test_start_up_lines(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "a.bin").write_bytes(FW)
    scanner = folder(tmp_path)
    scanner.scan()
    out = io.StringIO()
    plain.print_plain(scanner, "0.0.0.0", "ota.lan", 8000, "http", "1 worker", out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(f"acrelease serve: plain folder {tmp_path} (no index.json): 1 ESP images served")
    assert f"`acrelease import {tmp_path} --name PROJECT` turns it into releases" in lines[0]
    assert lines[-1] == '  AutoConnect: update.host = "ota.lan"; update.port = 8000; update.uri = "bin";'


def test_decide(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(FW)
    scanner = folder(tmp_path)
    scanner.scan()
    artifact = scanner.state.images["a.bin"].artifact
    assert plain.decide(DeviceFacts(), artifact) is None  # a browser, curl: the file
    esp8266 = DeviceFacts(arch="ESP8266", update_agent=True, mode="sketch")
    assert plain.decide(esp8266, artifact) is None
    assert isinstance(plain.decide(DeviceFacts(arch="ESP8266", sketch_md5=artifact.md5), artifact), NoUpdate)
    assert plain.decide(DeviceFacts(arch="ESP32"), artifact) == Refuse(403, "ESP32 device asked for a esp8266 image",
                                                                      "chip")
    assert isinstance(plain.decide(DeviceFacts(arch="ESP8266", mode="spiffs"), artifact), Refuse)
    assert isinstance(plain.decide(DeviceFacts(arch="ESP8266", free_space=100), artifact), Refuse)
