"""``acrelease import``: an updateserver.py folder into releases, run as a user runs it (the real CLI).

Each refusal is checked to leave ``releases.toml`` byte for byte as it was (or absent) and nothing
new in ``dist/``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from acrelease import manifest
from acrelease.errors import ManifestError
from acrelease.importer import import_images
from tests import clirun
from tests.factories import images

ESP8266_100 = images.esp8266_image("1.0.0")
ESP8266_110 = images.esp8266_image("1.1.0")
TOP = images.esp8266_image("0.9.0")
IDF_S3 = images.esp32_image("esp32s3", None, desc_version="2.1.0", project="my-idf-app")
ARDUINO32 = images.esp32_image("esp32", "1.3.0", desc_version="3.0.7", project="arduino-lib-builder")
AMBIGUOUS = images.esp8266_image("1.4.0", extra=b"9.9.9\0")


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def mixed_folder(root: Path) -> Path:
    """Sub-folders, top-level files of two chips, versions from names, a descriptor, a string."""
    ota = root / "ota"
    write(ota / "d1mini" / "fw-1.0.0.bin", ESP8266_100)
    write(ota / "d1mini" / "sketch_v1.1.0.bin", ESP8266_110)
    write(ota / "s3board" / "app.bin", IDF_S3)  # ESP-IDF project: version from the app descriptor
    write(ota / "top-0.9.0.bin", TOP)  # top level, ESP8266: target "esp8266"
    write(ota / "arduino.bin", ARDUINO32)  # top level, ESP32 Arduino: the string, not the core's 3.0.7
    write(ota / "notes.txt", b"release notes\n")
    write(ota / "merged.bin", images.merged_image("esp32"))
    write(ota / "deep" / "er" / "x.bin", ESP8266_100)
    write(ota / ".hidden.bin", ESP8266_100)
    return ota


def dist_files(root: Path) -> set[Path]:
    return {p for p in (root / "dist").rglob("*") if p.is_file()} if (root / "dist").exists() else set()


def test_import_a_mixed_folder_then_publish(tmp_path: Path) -> None:
    mixed_folder(tmp_path)
    done = clirun.run("import", "ota", "--name", "demo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    skipped = [line for line in done.stdout.splitlines() if "skipped" in line]
    assert len(skipped) == 3 and all(line.startswith("ota/") for line in skipped), done.stdout
    assert any("notes.txt: skipped: not an ESP firmware image" in line for line in skipped)
    assert any("merged.bin: skipped: not an OTA image: merged" in line for line in skipped)
    assert any("ota/deep/er: skipped: folders deeper than one level" in line for line in skipped)
    loaded = manifest.load(tmp_path / "releases.toml")
    assert loaded.project == "demo"
    assert {t.name: t.chip.key for t in loaded.targets if t.chip} == {
        "d1mini": "esp8266", "s3board": "esp32s3", "esp8266": "esp8266", "esp32": "esp32"}
    recorded = {(str(r.version), target): kinds["firmware"] for r in loaded.releases
                for target, kinds in r.artifacts.items()}
    expected = {("1.0.0", "d1mini"): ESP8266_100, ("1.1.0", "d1mini"): ESP8266_110, ("2.1.0", "s3board"): IDF_S3,
                ("0.9.0", "esp8266"): TOP, ("1.3.0", "esp32"): ARDUINO32}
    assert set(recorded) == set(expected)
    for key, data in expected.items():
        record = recorded[key]
        assert record.sha256 == hashlib.sha256(data).hexdigest() and record.version_found
        assert (tmp_path / record.file).read_bytes() == data  # copied as `add` copies
    assert "version from its app descriptor" in done.stdout and "version from the version string in it" in done.stdout

    before = (tmp_path / "releases.toml").read_bytes()
    again = clirun.run("import", "ota", "--name", "demo", cwd=tmp_path)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert (tmp_path / "releases.toml").read_bytes() == before

    published = clirun.run("publish", "--catalog", "catalog", cwd=tmp_path)
    assert published.returncode == 0, published.stderr
    index = json.loads((tmp_path / "catalog" / "index.json").read_bytes())
    assert set(index["projects"]["demo"]["targets"]) == {"d1mini", "s3board", "esp8266", "esp32"}


def refused(tmp_path: Path, *args: str) -> tuple[list[str], str]:
    """Run an import that must be refused; assert nothing changed; return its error lines and stdout."""
    manifest_path = tmp_path / "releases.toml"
    before = manifest_path.read_bytes() if manifest_path.exists() else None
    files = dist_files(tmp_path)
    done = clirun.run("import", *args, cwd=tmp_path)
    assert done.returncode == 3, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert all(line.startswith("acrelease: error: ") for line in lines), lines
    assert lines[-1] == "acrelease: error: nothing was recorded in releases.toml"
    after = manifest_path.read_bytes() if manifest_path.exists() else None
    assert after == before  # byte for byte (or still absent)
    assert dist_files(tmp_path) == files
    return lines[:-1], done.stdout


@pytest.mark.parametrize("existing", [False, True])
def test_a_version_that_cannot_be_determined_refuses_everything(tmp_path: Path, existing: bool) -> None:
    if existing:
        write(tmp_path / "first" / "fw-0.1.0.bin", images.esp8266_image("0.1.0"))
        assert clirun.run("import", "first", "--name", "demo", cwd=tmp_path).returncode == 0
    ota = mixed_folder(tmp_path)
    write(ota / "d1mini" / "firmware.bin", AMBIGUOUS)  # two version strings, none in the name
    write(ota / "unknown.bin", images.esp8266_image(None))  # no version anywhere
    problems, _ = refused(tmp_path, "ota", "--name", "demo")
    assert len(problems) == 2, problems
    assert "ota/d1mini/firmware.bin: its version is ambiguous: the image holds several version strings (1.4.0, " \
           "9.9.9); rename it with its version (e.g. firmware-1.2.3.bin) or import it alone: acrelease import " \
           "ota/d1mini/firmware.bin --name demo --version X.Y.Z --target d1mini" in problems[0]
    assert "ota/unknown.bin: its version cannot be determined" in problems[1]
    assert problems[1].endswith("acrelease import ota/unknown.bin --name demo --version X.Y.Z")

    # The fix the line names: import that file alone with its version; then the folder imports.
    alone = clirun.run("import", "ota/d1mini/firmware.bin", "--name", "demo", "--version", "1.4.0",
                       "--target", "d1mini", cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr
    (ota / "unknown.bin").rename(ota / "unknown-2.0.0.bin")  # or rename it
    assert clirun.run("import", "ota", "--name", "demo", "--allow-missing-version", cwd=tmp_path).returncode == 0
    loaded = manifest.load(tmp_path / "releases.toml")
    versions = {(str(r.version), t) for r in loaded.releases for t in r.artifacts}
    assert {("1.4.0", "d1mini"), ("2.0.0", "esp8266"), ("1.0.0", "d1mini")} <= versions
    marked = next(r for r in loaded.releases if str(r.version) == "2.0.0")
    assert marked.allow_missing_version and not marked.artifacts["esp8266"]["firmware"].version_found
    assert not next(r for r in loaded.releases if str(r.version) == "1.0.0").allow_missing_version


def test_two_files_claiming_one_target_and_version(tmp_path: Path) -> None:
    ota = tmp_path / "ota"
    write(ota / "d1mini" / "fw-1.0.0.bin", ESP8266_100)
    write(ota / "d1mini" / "fw-1.0.0-copy.bin", ESP8266_100)  # the same bytes: one release, one line
    write(ota / "d1mini" / "fw-1.0.0-fixed.bin", images.esp8266_image("1.0.0", extra=b"fix"))
    problems, out = refused(tmp_path, "ota", "--name", "demo")
    assert problems == ["acrelease: error: ota/d1mini/fw-1.0.0-fixed.bin: claims target d1mini version 1.0.0 like "
                        "ota/d1mini/fw-1.0.0-copy.bin, with other bytes; rename one of them with its own version, "
                        "or move it out of the folder"]
    assert "ota/d1mini/fw-1.0.0.bin: skipped: the same bytes as ota/d1mini/fw-1.0.0-copy.bin" in out


def test_a_version_in_the_name_must_be_in_the_image(tmp_path: Path) -> None:
    ota = tmp_path / "ota"
    write(ota / "fw-1.2.3.bin", ESP8266_100)  # the image says 1.0.0
    problems, _ = refused(tmp_path, "ota", "--name", "demo")
    assert len(problems) == 1 and 'ota/fw-1.2.3.bin: the version "1.2.3" (from its file name) is not in the image' \
        in problems[0] and "--allow-missing-version" in problems[0]
    done = clirun.run("import", "ota", "--name", "demo", "--allow-missing-version", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    release = manifest.load(tmp_path / "releases.toml").releases[0]
    assert str(release.version) == "1.2.3" and release.allow_missing_version
    assert not release.artifacts["esp8266"]["firmware"].version_found


def test_other_bytes_under_a_recorded_version_and_other_refusals(tmp_path: Path) -> None:
    write(tmp_path / "first" / "d1mini" / "fw-1.0.0.bin", ESP8266_100)
    assert clirun.run("import", "first", "--name", "demo", cwd=tmp_path).returncode == 0
    write(tmp_path / "ota" / "d1mini" / "fw-1.0.0.bin", images.esp8266_image("1.0.0", extra=b"other"))
    write(tmp_path / "ota" / "bad name" / "fw-1.0.0.bin", ESP8266_100)
    write(tmp_path / "ota" / "mix" / "a-1.0.0.bin", ESP8266_100)
    write(tmp_path / "ota" / "mix" / "b-1.1.0.bin", images.esp32_image("esp32", "1.1.0"))
    problems, _ = refused(tmp_path, "ota", "--name", "demo")
    text = "\n".join(problems)
    assert len(problems) == 3, text
    assert "ota/mix/b-1.1.0.bin: is an ESP32 image, but ota/mix/a-1.0.0.bin in the same target mix is for ESP8266" \
        in text
    assert '"bad name" is not a valid target name' in text
    assert "ota/d1mini/fw-1.0.0.bin: version 1.0.0 of target d1mini is already recorded" in text
    before = (tmp_path / "releases.toml").read_bytes()
    other = clirun.run("import", "ota", "--name", "other", cwd=tmp_path)
    assert other.returncode == 3 and other.stderr == ('acrelease: error: releases.toml: is the manifest of project '
                                                      '"demo", not "other"; pass --name demo or another --manifest\n')
    assert (tmp_path / "releases.toml").read_bytes() == before


def test_nothing_to_import_and_usage(tmp_path: Path) -> None:
    write(tmp_path / "ota" / "notes.txt", b"hello")
    problems, out = refused(tmp_path, "ota", "--name", "demo")
    assert problems == ["acrelease: error: ota: no ESP image to import (see the skipped files above)"]
    assert "ota/notes.txt: skipped" in out
    done = clirun.run("import", "ota", "--name", "demo", "--version", "1.0.0", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "apply to one FILE" in done.stderr
    done = clirun.run("import", "nowhere", "--name", "demo", cwd=tmp_path)
    assert done.returncode == 2 and "nowhere: no such file or folder" in done.stderr
    assert not (tmp_path / "releases.toml").exists()


def test_a_failure_while_recording_undoes_the_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan catches what it can; if ``add_release`` still fails half-way (a disk error, a rule the
    plan does not know), the manifest is put back byte for byte and the copied files removed."""
    write(tmp_path / "first" / "fw-0.1.0.bin", images.esp8266_image("0.1.0"))
    import_images(tmp_path / "first", tmp_path / "releases.toml", project="demo")
    before, files = (tmp_path / "releases.toml").read_bytes(), dist_files(tmp_path)
    mixed_folder(tmp_path)
    from acrelease import importer

    calls: list[str] = []
    real = importer.add_release

    def failing(*args: object, **kwargs: object) -> object:
        calls.append(str(args[1]))
        if len(calls) == 3:
            raise ManifestError("releases.toml: disk full")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(importer, "add_release", failing)
    with pytest.raises(ManifestError, match="disk full"):
        import_images(tmp_path / "ota", tmp_path / "releases.toml", project="demo")
    assert len(calls) == 3
    assert (tmp_path / "releases.toml").read_bytes() == before
    assert dist_files(tmp_path) == files


def test_import_json_and_a_fifo_in_the_folder(tmp_path: Path) -> None:
    """A FIFO among the images is skipped with one line (read with a bound, never a hang), and
    `--json` reports what was recorded for scripts."""
    import os

    ota = tmp_path / "ota"
    write(ota / "d1mini" / "fw-1.0.0.bin", ESP8266_100)
    os.mkfifo(ota / "d1mini" / "pipe.bin")
    done = clirun.run("import", "ota", "--name", "demo", "--json", cwd=tmp_path, timeout=30)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["recorded"] == [{"version": "1.0.0", "target": "d1mini", "file": "ota/d1mini/fw-1.0.0.bin",
                                   "version_from": report["recorded"][0]["version_from"],
                                   "version_in_image": True}]
    assert report["changed"] is True and len(report["skipped"]) == 1 and "pipe.bin" in report["skipped"][0]
