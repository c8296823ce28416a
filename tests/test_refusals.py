"""A refused command writes nothing: `releases.toml` and `dist/` compared byte for byte before and
after every refusal, with the CLI driven as a user drives it (docs/manifest.md, "How acrelease edits
this file")."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from acrelease import chips, cli, manifest
from acrelease.manifest import Target, edit
from acrelease.release import ArtifactInput, add_release
from acrelease.versioning import parse_release_version
from tests import clirun
from tests.factories.images import esp32_image, esp8266_image

Tree = dict[str, bytes | None]
V1 = parse_release_version("1.0.0")


def tree(root: Path) -> Tree:
    """``releases.toml`` and everything under ``dist/``: relative path -> bytes (``None`` for a folder)."""
    found: Tree = {"releases.toml": (root / "releases.toml").read_bytes()}
    dist = root / "dist"
    if dist.exists():
        for path in sorted(dist.rglob("*")):
            found[str(path.relative_to(root))] = None if path.is_dir() else path.read_bytes()
    return found


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = clirun.run(*args, cwd=cwd, timeout=60, env={"COLUMNS": "300"}, inherit=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def ok(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = run(cwd, *args)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    return proc


def refused(cwd: Path, *args: str, code: int, message: str) -> str:
    """Run a command that must be refused: one line, exit ``code``, nothing changed on disk."""
    before = tree(cwd)
    proc = run(cwd, *args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("acrelease: error: "), proc.stderr
    assert message in lines[0], lines[0]
    assert tree(cwd) == before
    return lines[0]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Two targets, release 1.0.0 recorded for both (so dist/ has bytes to compare), 2.0.0 images ready.
    Made in-process: the machine is shared, and the commands under test are the refused ones."""
    path = tmp_path / "releases.toml"
    manifest.init_manifest(path, "demo", [Target("d1mini", chips.lookup("esp8266")),
                                          Target("esp32dev", chips.lookup("esp32"))])
    path.write_text(path.read_text() + "# my own note\n")
    for version in ("1.0.0", "2.0.0"):
        (tmp_path / f"d1-{version}.bin").write_bytes(esp8266_image(version))
        (tmp_path / f"esp32-{version}.bin").write_bytes(esp32_image("esp32", version))
    add_release(path, V1, [ArtifactInput("d1mini", tmp_path / "d1-1.0.0.bin"),
                           ArtifactInput("esp32dev", tmp_path / "esp32-1.0.0.bin")])
    return tmp_path


def test_the_reported_bad_channel_writes_nothing_and_later_commands_work(project: Path) -> None:
    line = refused(project, "add", "2.0.0", "d1-2.0.0.bin", "--target", "d1mini", "--channel", "Beta Test",
                   code=3, message='--channel: "Beta Test" is not a valid name')
    assert "nothing was written" in line
    assert not (project / "dist" / "2.0.0").exists()
    ok(project, "list")
    ok(project, "add", "2.0.0", "d1-2.0.0.bin", "--target", "d1mini", "--channel", "beta")
    assert 'channel = "beta"' in (project / "releases.toml").read_text()
    assert "# my own note" in (project / "releases.toml").read_text()


@pytest.mark.parametrize("args, code, message", [
    (["--notes", "caf\udce9"], 3, "--notes: 'caf\\udce9' holds bytes that are not UTF-8 text"),
    (["--channel", ""], 3, '--channel: "" is not a valid name'),
    (["--channel", "x" * 40], 3, "is not a valid name"),
], ids=["notes-not-utf8", "channel-empty", "channel-too-long"])
def test_every_option_value_is_checked_before_writing(project: Path, args: list[str], code: int,
                                                      message: str) -> None:
    refused(project, "add", "2.0.0", "d1-2.0.0.bin", "--target", "d1mini", *args, code=code, message=message)


@pytest.mark.parametrize("args, code, message", [
    (["add", "2.0", "d1-2.0.0.bin", "--target", "d1mini"], 5, '"2.0" is not a semantic version'),
    (["add", "2.0.0", "d1-2.0.0.bin", "--target", "d1 mini"], 3, 'no target named "d1 mini"'),
    (["add", "2.0.0", "nope.bin", "--target", "d1mini"], 4, "nope.bin: no such file"),
    (["add", "2.0.0", "esp32-2.0.0.bin", "--target", "d1mini"], 4, "esp32-2.0.0.bin: "),
    (["add", "2.0.0", "d1-1.0.0.bin", "--target", "d1mini"], 4, 'version string "2.0.0" is not in the image'),
    (["add", "1.0.0", "d1-2.0.0.bin", "--target", "d1mini"], 4, 'version string "1.0.0" is not in the image'),
    (["add", "1.0.0", "esp32-1.0.0.bin", "--target", "esp32dev", "--channel", "beta"], 5,
     '1.0.0 is already recorded with channel "stable"; --channel "beta" would not change it'),
    (["add", "1.0.0", "esp32-1.0.0.bin", "--target", "esp32dev", "--notes", "other"], 5,
     '--notes "other" would not change it'),
], ids=["version", "target", "file-missing", "file-other-chip", "file-other-version", "recorded-version",
        "channel-of-recorded-release", "notes-of-recorded-release"])
def test_refused_add_changes_no_byte(project: Path, args: list[str], code: int, message: str) -> None:
    refused(project, *args, code=code, message=message)


def test_typos_in_the_manifest_are_named_with_the_closest_key(project: Path) -> None:
    manifest = project / "releases.toml"
    manifest.write_text(manifest.read_text()
                        .replace('[project]\nname = "demo"', '[project]\nname = "demo"\nverison_define = "FW_VER"')
                        .replace('name = "esp32dev"\nchip = "esp32"', 'name = "esp32dev"\nchipp = "esp32"'))
    proc = run(project, "list")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 3
    assert 'acrelease: error: releases.toml: project.verison_define: unknown key "verison_define" ' \
           '(did you mean "version_define"?)' in lines
    assert 'acrelease: error: releases.toml: targets[1].chipp: unknown key "chipp" (did you mean "chip"?)' in lines
    assert len(lines) == 2
    before = tree(project)
    assert run(project, "add", "2.0.0", "d1-2.0.0.bin", "--target", "d1mini").returncode == 3
    assert tree(project) == before


def test_collect_records_every_target_or_none(project: Path) -> None:
    """The README's quick start: targets d1mini and esp32dev, arduino-cli exports for boards d1_mini and esp32."""
    sketch = project / "Sketch"
    d1 = sketch / "build" / "esp8266.esp8266.d1_mini" / "Sketch.ino.bin"
    d1.parent.mkdir(parents=True)
    d1.write_bytes(esp8266_image("2.0.0"))
    line = refused(project, "collect", "Sketch", "--version", "2.0.0", code=2,
                   message="no exported image matches target esp32dev")
    assert "nothing was recorded" in line and "--target d1mini" in line
    subset = ok(project, "collect", "Sketch", "--version", "2.0.0", "--target", "d1mini")
    assert "Recorded 2.0.0 for d1mini" in subset.stdout
    esp32 = sketch / "build" / "esp32.esp32.esp32" / "Sketch.ino.bin"
    esp32.parent.mkdir(parents=True)
    esp32.write_bytes(esp32_image("esp32", "2.1.0"))
    d1.write_bytes(esp8266_image("2.1.0"))
    both = ok(project, "collect", "Sketch", "--version", "2.1.0")
    assert "Recorded 2.1.0 for d1mini, esp32dev" in both.stdout
    assert {p.name for p in (project / "dist" / "2.1.0").iterdir()} == {"d1mini", "esp32dev"}


def test_collect_refuses_an_export_that_two_targets_claim(project: Path) -> None:
    ok(project, "target", "add", "d1mini-b:esp8266", "--board", "d1_mini")
    (project / "Sketch").mkdir()
    (project / "Sketch" / "Sketch.ino.d1_mini.bin").write_bytes(esp8266_image("2.0.0"))
    refused(project, "collect", "Sketch", "--version", "2.0.0", "--target", "d1mini", "--target", "d1mini-b",
            code=2, message="is the image of targets d1mini, d1mini-b at once")


def test_build_refuses_a_target_it_would_skip_and_a_bad_channel_before_building(project: Path) -> None:
    refused(project, "build", "--version", "2.0.0", code=2, message="no target names a PlatformIO env")
    ok(project, "target", "set", "d1mini", "--env", "d1_mini")
    line = refused(project, "build", "--version", "2.0.0", code=2, message="target esp32dev names no PlatformIO env")
    assert "--target d1mini" in line and "acrelease target set esp32dev --env ENV" in line
    # Refused before PlatformIO is even looked for: there is no platformio.ini here.
    refused(project, "build", "--version", "2.0.0", "--target", "d1mini", "--channel", "Beta Test", code=3,
            message='--channel: "Beta Test" is not a valid name')


def test_target_set_edits_through_tomlkit_and_refuses_bad_values(project: Path) -> None:
    ok(project, "target", "set", "d1mini", "--board", "d1_mini", "--env", "d1_mini", "--filesystem")
    text = (project / "releases.toml").read_text()
    assert 'name = "d1mini"\nchip = "esp8266"\nboard = "d1_mini"\nenv = "d1_mini"\nfilesystem = true\n' in text
    assert "# my own note" in text
    listed = ok(project, "list", "--json").stdout
    assert '"env": "d1_mini"' in listed and '"filesystem": true' in listed
    ok(project, "target", "set", "d1mini", "--env", "", "--no-filesystem")
    assert 'board = "d1_mini"\n\n' in (project / "releases.toml").read_text()
    refused(project, "target", "set", "d1mini", "--chip", "esp32", code=3,
            message='the image is for esp8266 but target "d1mini" is esp32')
    refused(project, "target", "set", "d1mini", "--chip", "esp9000", code=3, message='--chip: unknown chip "esp9000"')
    refused(project, "target", "set", "nope", "--board", "x", code=3, message='no target named "nope"')
    refused(project, "target", "add", "esp32dev", code=3, message='a target named "esp32dev" already exists')
    refused(project, "target", "add", "new board", code=3, message='target "new board": "new board" is not a valid')
    refused(project, "target", "set", "d1mini", code=2, message="nothing to set")
    ok(project, "target", "add", "c3:esp32c3", "--env", "c3")
    assert 'name = "c3"\nchip = "esp32c3"\nenv = "c3"\n' in (project / "releases.toml").read_text()


def test_a_read_only_manifest_is_refused_before_dist_is_touched(project: Path) -> None:
    manifest = project / "releases.toml"
    os.chmod(manifest, 0o444)
    refused(project, "add", "2.0.0", "d1-2.0.0.bin", "--target", "d1mini", code=3, message="is read-only")
    refused(project, "target", "set", "d1mini", "--board", "d1_mini", code=3, message="is read-only")


def test_an_oserror_where_the_learnt_chip_is_written_is_one_line(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The chip of a target without one is learnt from its first image and written in the same single
    write as the release; an OSError there is one line, and neither the manifest nor dist/ changes."""
    ok(project, "target", "add", "newboard")
    (project / "c3.bin").write_bytes(esp32_image("esp32c3", "2.0.0"))
    before = tree(project)

    def read_only_fs(path: Path, text: str) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(edit, "_write_text", read_only_fs)
    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "argv", ["acrelease", "add", "2.0.0", "c3.bin", "--target", "newboard"])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["acrelease: error: releases.toml: cannot be written (Read-only file system); "
                   "it was left as it was"]
    assert tree(project) == before
    assert not (project / "dist" / "2.0.0").exists()


def test_a_file_name_the_manifest_cannot_hold_is_refused_before_copying(project: Path) -> None:
    (project / "fw\udcff.bin").write_bytes(esp8266_image("2.0.0"))  # the byte 0xFF in the name: not UTF-8
    line = refused(project, "add", "2.0.0", "fw\udcff.bin", "--target", "d1mini", code=3,
                   message="holds bytes that are not UTF-8 text")
    assert line.startswith("acrelease: error: fw")
    assert not (project / "dist" / "2.0.0").exists()
