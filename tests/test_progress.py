"""Progress of long work: a bar on a terminal, nothing in a pipe or under --json."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from acrelease import manifest
from acrelease.builder.platformio import phase_of
from acrelease.builder.release_build import BuildEvent
from acrelease.catalog import store
from acrelease.cli.build import _Renderer
from acrelease.cli.progress import PublishBar, progress_bar
from acrelease.versioning import parse_release_version
from tests import clirun
from tests.test_store import make_project


class Recorded:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object, int]] = []

    def begin(self, files: int, size: int) -> None:
        self.calls.append(("begin", files, size))

    def placed(self, name: str, size: int) -> None:
        self.calls.append(("placed", name, size))


def test_publish_reports_every_new_file_and_its_bytes(tmp_path: Path) -> None:
    path = make_project(tmp_path, {"1.0.0": b"\xe9" + bytes(3000), "1.1.0": b"\xe9" + bytes(5000)}, fs=b"fs" * 100)
    loaded = manifest.load(path)
    first = Recorded()
    store.publish(loaded, tmp_path / "catalog", [parse_release_version("1.0.0")], progress=first)
    assert first.calls[0] == ("begin", 2, 3001 + 200)
    second = Recorded()
    store.publish(loaded, tmp_path / "catalog", progress=second)  # 1.0.0 is already there: only 1.1.0 is new
    assert second.calls[0] == ("begin", 2, 5001 + 200)
    assert [c[0] for c in second.calls[1:]] == ["placed", "placed"]
    assert {c[1] for c in second.calls[1:]} == {"demo/d1mini/demo-d1mini-1.1.0.bin",
                                                "demo/d1mini/demo-d1mini-1.1.0.fs.bin"}


def test_the_bar_on_a_terminal_and_nothing_elsewhere() -> None:
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=100)
    with progress_bar(quiet=False, console=terminal) as bar:
        assert isinstance(bar, PublishBar)
        bar.begin(2, 2048)
        bar.placed("demo/d1/demo-d1-1.0.0.bin", 1024)
        bar.progress.refresh()
        assert "Publishing" in screen.getvalue() and "1/2 files" in screen.getvalue()
    piped = Console(file=io.StringIO(), force_terminal=False)
    with progress_bar(quiet=False, console=piped) as none:
        assert none is None
    with progress_bar(quiet=True, console=terminal) as none:
        assert none is None  # --json


def test_publish_piped_prints_only_its_lines(tmp_path: Path) -> None:
    path = make_project(tmp_path, {"1.0.0": b"\xe9" + bytes(3000)})
    done = clirun.run("publish", "--catalog", str(tmp_path / "catalog"), "--manifest", str(path), timeout=60)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.splitlines() == ["Published demo/d1mini 1.0.0",
                                        f"Catalog {tmp_path / 'catalog'} is at generation 1"]


def test_build_shows_the_env_and_platformio_phase(monkeypatch: object) -> None:
    assert phase_of("Compiling .pio/build/d1_mini/src/main.cpp.o") == "compiling"
    assert phase_of("Building FS image from 'data' directory to .pio/build/d1_mini/littlefs.bin") \
        == "building the filesystem image"
    assert phase_of("Linking .pio/build/d1_mini/firmware.elf") == "linking"
    assert phase_of("some other line") is None
    renderer = _Renderer(verbose=False, quiet=False)
    renderer(BuildEvent("start", "d1mini", "d1_mini", step=1, steps=2))
    renderer(BuildEvent("output", "d1mini", "d1_mini", 0.5, "Compiling src/main.cpp.o", 1, 2))
    assert renderer._text(BuildEvent("output", "d1mini", "d1_mini", step=1, steps=2)).startswith(
        "Building target d1mini (pio env d1_mini, 1 of 2): compiling, ")
    renderer(BuildEvent("output", "d1mini", "d1_mini", 0.6, "Linking .pio/build/d1_mini/firmware.elf", 1, 2))
    assert renderer.phase == "linking"
    renderer.close()
