"""`acrelease build` end to end: real `pio run` on the offline platform, recorded through add_release."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import semver

from acrelease import manifest
from acrelease.builder import platformio
from acrelease.builder.release_build import BuildEvent, build_release
from acrelease.errors import BuildError, UsageError, VersionError
from acrelease.image import contains_version, inspect_filesystem, inspect_image
from tests.builder.piohelpers import ProjectFactory


def init_manifest(project: Path) -> Path:
    """What `acrelease init --platformio` does: one target per env, read from platformio.ini."""
    path = project / manifest.MANIFEST_NAME
    manifest.init_manifest(path, project.name, platformio.read_project_targets(project))
    return path


def snapshot(project: Path) -> tuple[bytes, bool]:
    return (project / manifest.MANIFEST_NAME).read_bytes(), (project / "dist").exists()


def test_init_reads_envs_chips_boards_and_filesystem(make_project: ProjectFactory) -> None:
    project = make_project()
    targets = {t.name: t for t in platformio.read_project_targets(project)}
    assert set(targets) == {"d1_mini", "esp32dev"}
    assert targets["d1_mini"].chip is not None and targets["d1_mini"].chip.key == "esp8266"
    assert targets["esp32dev"].chip is not None and targets["esp32dev"].chip.key == "esp32"
    assert (targets["esp32dev"].env, targets["esp32dev"].board, targets["esp32dev"].filesystem) == (
        "esp32dev", "esp32dev", True)
    no_data = make_project("nodata", data=False)
    assert not any(t.filesystem for t in platformio.read_project_targets(no_data))


def test_two_envs_with_filesystem_recorded_with_version_in_binary(make_project: ProjectFactory) -> None:
    project = make_project()
    path = init_manifest(project)
    events: list[BuildEvent] = []
    outcome = build_release(path, bump="minor", progress=events.append)

    assert outcome.version == semver.Version(0, 1, 0)  # the first release
    assert outcome.added is not None and outcome.added.changed
    assert [(e.kind, e.env) for e in events if e.kind in ("start", "done")] == [
        ("start", "d1_mini"), ("done", "d1_mini"), ("start", "esp32dev"), ("done", "esp32dev")]
    assert any(e.kind == "output" and "SUCCESS" in e.line for e in events)

    loaded = manifest.load(path)  # also verifies sizes and hashes of the recorded files
    release = loaded.release(outcome.version)
    assert release is not None and set(release.artifacts) == {"d1_mini", "esp32dev"}
    for target, chip in (("d1_mini", "esp8266"), ("esp32dev", "esp32")):
        firmware = release.artifacts[target]["firmware"]
        assert firmware.file.startswith(f"dist/0.1.0/{target}/") and firmware.version_found
        data = loaded.artifact_path(firmware).read_bytes()
        assert inspect_image(data).chip.key == chip
        assert contains_version(data, "0.1.0")  # the stamp really reached the binary
        fs = release.artifacts[target]["filesystem"]
        assert inspect_filesystem(loaded.artifact_path(fs).read_bytes(), where=fs.file).format == "littlefs"

    again = build_release(path)  # default: patch bump from the newest
    assert again.version == semver.Version(0, 1, 1)
    assert contains_version((project / "dist/0.1.1/esp32dev/firmware.bin").read_bytes(), "0.1.1")


def test_existing_version_refused_before_building(make_project: ProjectFactory) -> None:
    project = make_project()
    path = init_manifest(project)
    build_release(path, version="1.0.0", targets=["esp32dev"])
    events: list[BuildEvent] = []
    before = snapshot(project)
    with pytest.raises(VersionError, match=r"1\.0\.0 is already released"):
        build_release(path, version="1.0.0", progress=events.append)
    assert events == []  # nothing was built
    assert snapshot(project) == before
    with pytest.raises(UsageError, match="either --version or --bump"):
        build_release(path, version="2.0.0", bump="major")


def test_forgotten_version_is_refused_and_nothing_recorded(make_project: ProjectFactory) -> None:
    project = make_project(uses_version=False)
    path = init_manifest(project)
    before = snapshot(project)
    with pytest.raises(BuildError) as error:
        build_release(path, version="1.2.0")
    message = str(error.value)
    assert "env 'd1_mini'" in message and '"1.2.0"' in message
    assert "ESPhttpUpdate.update(client, url, FW_VERSION);" in message
    assert snapshot(project) == before and not (project / "dist").exists()

    outcome = build_release(path, version="1.2.0", allow_missing_version=True)
    release = manifest.load(path).release(outcome.version)
    assert release is not None and release.allow_missing_version
    assert not release.artifacts["d1_mini"]["firmware"].version_found


def test_failing_env_records_nothing_and_shows_the_output_tail(make_project: ProjectFactory) -> None:
    # appended to [env:esp32dev], the env built second
    project = make_project(extra_ini="build_flags = -DACRELEASE_TEST_COMPILE_ERROR\n")
    path = init_manifest(project)
    before = snapshot(project)
    with pytest.raises(BuildError) as error:
        build_release(path, version="1.0.0")
    assert "env 'esp32dev'" in str(error.value)
    assert "error: #error" in error.value.output_tail
    assert "[FAILED]" in error.value.output_tail
    assert snapshot(project) == before  # d1_mini built fine, yet nothing of it is recorded
    assert not (project / "dist").exists()


def test_build_dir_from_platformio_build_dir(make_project: ProjectFactory, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    project = make_project()
    path = init_manifest(project)
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.setenv("PLATFORMIO_BUILD_DIR", str(elsewhere))
    outcome = build_release(path, version="3.0.0")
    assert (elsewhere / "esp32dev" / "firmware.bin").is_file()
    assert not (project / ".pio" / "build").exists()
    assert outcome.added is not None and set(outcome.added.release.artifacts) == {"d1_mini", "esp32dev"}


def test_build_dir_from_the_ini(make_project: ProjectFactory) -> None:
    project = make_project(extra_ini="\n[platformio]\nbuild_dir = out/pio\n")
    path = init_manifest(project)
    build_release(path, version="3.1.0", targets=["d1_mini"])
    assert (project / "out/pio/d1_mini/firmware.bin").is_file()
    assert contains_version((project / "dist/3.1.0/d1_mini/firmware.bin").read_bytes(), "3.1.0")


def test_build_dir_resolution_order(tmp_path: Path) -> None:
    """docs/testing.md section 1: env var, build_dir, workspace dir + /build, .pio/build."""
    bare = platformio.PioProject(tmp_path, {}, ())
    assert bare.build_dir({}) == tmp_path / ".pio" / "build"
    assert bare.build_dir({"PLATFORMIO_WORKSPACE_DIR": "ws"}) == tmp_path / "ws" / "build"
    workspace = platformio.PioProject(tmp_path, {"workspace_dir": "/w"}, ())
    assert workspace.build_dir({}) == Path("/w/build")
    both = platformio.PioProject(tmp_path, {"workspace_dir": "/w", "build_dir": "b"}, ())
    assert both.build_dir({}) == tmp_path / "b"
    assert both.build_dir({"PLATFORMIO_BUILD_DIR": "/env"}) == Path("/env")


def test_each_env_collected_right_after_its_build(make_project: ProjectFactory, tmp_path: Path) -> None:
    """A new flag (here: another version) makes PlatformIO wipe the whole build dir, every env's
    outputs included; what was staged right after each build survives."""
    project = make_project()
    pio_project = platformio.read_project(project)
    staging = tmp_path / "staging"
    first = platformio.build_env(pio_project, "d1_mini", version="1.0.0", define="FW_VERSION",
                                 filesystem=True, staging=staging)
    build_dir = pio_project.build_dir(dict(os.environ))
    assert (build_dir / "d1_mini" / "firmware.bin").is_file()  # buildfs, same environment: no wipe
    second = platformio.build_env(pio_project, "esp32dev", version="1.0.1", define="FW_VERSION",
                                  filesystem=False, staging=staging)
    assert not (build_dir / "d1_mini").exists()  # wiped by the second build's other flags
    assert contains_version(first.firmware.read_bytes(), "1.0.0")
    assert first.filesystem is not None and first.filesystem.is_file()
    assert contains_version(second.firmware.read_bytes(), "1.0.1")


def test_unknown_target_and_env(make_project: ProjectFactory) -> None:
    project = make_project()
    path = init_manifest(project)
    with pytest.raises(UsageError, match="--target nope"):
        build_release(path, targets=["nope"])
    ini = project / "platformio.ini"
    ini.write_text(ini.read_text().replace("esp32dev]", "other]"))
    with pytest.raises(BuildError, match="names env 'esp32dev'"):
        build_release(path, dry_run=True)


def test_dry_run_builds_and_writes_nothing(make_project: ProjectFactory) -> None:
    project = make_project()
    path = init_manifest(project)
    before = snapshot(project)
    outcome = build_release(path, bump="major", dry_run=True)
    assert outcome.version == semver.Version(0, 1, 0) and outcome.dry_run
    assert outcome.flag == '-DFW_VERSION=\\"0.1.0\\"'
    assert [p.env for p in outcome.planned] == ["d1_mini", "esp32dev"]
    assert snapshot(project) == before and not (project / ".pio").exists()


def test_pio_missing_is_one_line_with_the_install_hint(make_project: ProjectFactory, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    project = make_project()
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))  # no `pio` beside it either
    with pytest.raises(BuildError, match=r"pip install platformio"):
        platformio.read_project(project, environ={"PATH": str(tmp_path)})


def test_chip_from_the_first_image_when_the_ini_does_not_tell(make_project: ProjectFactory) -> None:
    project = make_project()
    path = project / manifest.MANIFEST_NAME
    manifest.init_manifest(path, "demo", [manifest.Target("board", None, env="esp32dev", board="esp32dev")])
    build_release(path, version="1.0.0")
    target = manifest.load(path).target("board")
    assert target is not None and target.chip is not None and target.chip.key == "esp32"


def test_env_chip_sources(tmp_path: Path) -> None:
    """board_build.mcu, then the board's JSON (project boards/ or the platform's), then the platform."""
    (tmp_path / "boards").mkdir()
    (tmp_path / "boards" / "custom_s3.json").write_text('{"build": {"mcu": "esp32s3"}}')
    project = platformio.PioProject(tmp_path, {"core_dir": str(tmp_path / "core")}, ())

    def chip(**options: str) -> str | None:
        found = platformio.env_chip(project, platformio.PioEnv("e", options), {})
        return found.key if found else None

    assert chip(platform="espressif8266", board="d1_mini") == "esp8266"  # platform not installed: still known
    assert chip(platform="platformio/espressif32 @ ^6.4", board="esp32dev") is None  # first image decides
    assert chip(platform="espressif32", board="custom_s3") == "esp32s3"
    assert chip(platform="espressif32", board="esp32dev", **{"board_build.mcu": "esp32c3"}) == "esp32c3"
    installed = tmp_path / "core" / "platforms" / "espressif32" / "boards"
    installed.mkdir(parents=True)
    (installed / "esp32dev.json").write_text('{"build": {"mcu": "esp32"}}')
    assert chip(platform="platformio/espressif32 @ ^6.4", board="esp32dev") == "esp32"
