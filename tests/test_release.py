"""`add`: every image checked before anything is written; all or nothing; immutable versions."""

from pathlib import Path

import pytest

from acrelease import chips, manifest
from acrelease.errors import ImageError, ManifestError, VersionError
from acrelease.manifest import Target, edit
from acrelease.release import ArtifactInput, add_release
from acrelease.versioning import parse_release_version
from tests.factories.images import (
    esp32_image,
    esp8266_image,
    gzip_image,
    littlefs_image,
    merged_image,
    signed_image,
    truncated,
)

V1 = parse_release_version("1.0.0")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "releases.toml"
    manifest.init_manifest(path, "demo", [Target("d1mini", chips.lookup("esp8266")),
                                          Target("s3", chips.lookup("esp32s3")), Target("newboard", None)])
    return path


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / "export" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return path


def snapshot(project: Path) -> tuple[str, list[str]]:
    root = project.parent
    return project.read_text(), sorted(str(p.relative_to(root)) for p in (root / "dist").rglob("*")) \
        if (root / "dist").exists() else []


def test_add_records_copies_and_hashes(project: Path, tmp_path: Path) -> None:
    fw = write(tmp_path, "sketch.ino.bin", esp8266_image("1.0.0"))
    fs = write(tmp_path, "littlefs.bin", littlefs_image())
    result = add_release(project, V1, [ArtifactInput("d1mini", fw, fs)], notes="first")
    assert result.changed and result.added_targets == ("d1mini",)
    record = result.release.artifacts["d1mini"]["firmware"]
    assert record.file == "dist/1.0.0/d1mini/sketch.ino.bin"
    assert (project.parent / record.file).read_bytes() == fw.read_bytes()
    assert record.chip == "esp8266" and record.format == "plain" and record.version_found
    assert result.release.artifacts["d1mini"]["filesystem"].format == "littlefs"
    again = add_release(project, V1, [ArtifactInput("d1mini", fw, fs)])
    assert not again.changed
    fw.write_bytes(esp8266_image("1.0.0", extra=b"other code"))
    with pytest.raises(VersionError, match="already recorded with other firmware bytes"):
        add_release(project, V1, [ArtifactInput("d1mini", fw)])


def test_another_target_joins_the_same_release(project: Path, tmp_path: Path) -> None:
    add_release(project, V1, [ArtifactInput("d1mini", write(tmp_path, "a.bin", esp8266_image("1.0.0")))])
    add_release(project, V1, [ArtifactInput("s3", write(tmp_path, "b.bin", esp32_image("esp32s3", "1.0.0")))])
    [release] = manifest.load(project).releases
    assert set(release.artifacts) == {"d1mini", "s3"}


def test_chip_of_a_new_target_is_learnt_from_its_first_image(project: Path, tmp_path: Path) -> None:
    add_release(project, V1, [ArtifactInput("newboard", write(tmp_path, "c3.bin", esp32_image("esp32c3", "1.0.0")))])
    assert manifest.load(project).target("newboard").chip == chips.lookup("esp32c3")


@pytest.mark.parametrize("target, data, message", [
    ("d1mini", b"hello, I am text\n" * 20, "not an ESP firmware image .a text file"),
    ("s3", esp32_image("esp32", "1.0.0"), "ESP32"),
    ("d1mini", esp32_image("esp32s3", "1.0.0"), "esp8266"),
    ("s3", merged_image("esp32s3", "1.0.0"), "merged"),
    ("s3", gzip_image(esp32_image("esp32s3", "1.0.0")), "gzip"),
    ("d1mini", truncated(esp8266_image("1.0.0"), 0.6), "truncated"),
    ("d1mini", esp8266_image("1.0.1"), 'version string "1.0.0" is not in the image'),
    ("d1mini", esp8266_image("11.0.0"), 'version string "1.0.0" is not in the image'),
], ids=["text", "esp32-for-s3", "s3-for-esp8266", "merged", "gzip-esp32", "truncated", "other-version",
        "version-suffix"])
def test_refused_images_leave_everything_untouched(project: Path, tmp_path: Path, target: str, data: bytes,
                                                   message: str) -> None:
    before = snapshot(project)
    fw = write(tmp_path, "fw.bin", data)
    with pytest.raises(ImageError, match=message) as info:
        add_release(project, V1, [ArtifactInput(target, fw)])
    assert str(fw) in str(info.value)
    assert "\n" not in str(info.value)
    assert snapshot(project) == before


def test_accepted_esp8266_variants(project: Path, tmp_path: Path) -> None:
    wrappers = [gzip_image, signed_image, lambda image: signed_image(gzip_image(image))]
    for i, wrap in enumerate(wrappers):
        version = parse_release_version(f"1.0.{i}")
        data = wrap(esp8266_image(str(version)))
        result = add_release(project, version, [ArtifactInput("d1mini", write(tmp_path, f"v{i}.bin", data))])
        assert result.release.artifacts["d1mini"]["firmware"].format == ["gzip", "signed", "gzip+signed"][i]


def test_missing_version_is_allowed_only_explicitly(project: Path, tmp_path: Path) -> None:
    fw = write(tmp_path, "fw.bin", esp8266_image(None))
    with pytest.raises(ImageError, match="FW_VERSION"):
        add_release(project, V1, [ArtifactInput("d1mini", fw)])
    result = add_release(project, V1, [ArtifactInput("d1mini", fw)], allow_missing_version=True)
    assert result.release.allow_missing_version
    assert not result.release.artifacts["d1mini"]["firmware"].version_found


def test_all_or_nothing_across_targets(project: Path, tmp_path: Path) -> None:
    before = snapshot(project)
    good = write(tmp_path, "good.bin", esp8266_image("1.0.0"))
    bad = write(tmp_path, "bad.bin", esp8266_image("1.0.0"))  # an ESP8266 image for the ESP32-S3 target
    with pytest.raises(ImageError):
        add_release(project, V1, [ArtifactInput("d1mini", good), ArtifactInput("s3", bad)])
    assert snapshot(project) == before


def test_a_failed_write_removes_what_it_copied(project: Path, tmp_path: Path, monkeypatch) -> None:
    add_release(project, V1, [ArtifactInput("d1mini", write(tmp_path, "a.bin", esp8266_image("1.0.0")))])
    before = snapshot(project)

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(edit, "_write_text", disk_full)  # the one write of the manifest, after dist/ was filled
    v2 = parse_release_version("2.0.0")
    with pytest.raises(ManifestError, match=r"releases.toml: cannot be written \(No space left on device\); "
                                            "it was left as it was"):
        add_release(project, v2, [ArtifactInput("d1mini", write(tmp_path, "b.bin", esp8266_image("2.0.0")))])
    assert snapshot(project) == before
    assert not (project.parent / "dist" / "2.0.0").exists()


def test_unknown_target_and_missing_file(project: Path, tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match='no target named "nope" .known: d1mini, s3, newboard'):
        add_release(project, V1, [ArtifactInput("nope", tmp_path / "x.bin")])
    with pytest.raises(ImageError, match="no such file"):
        add_release(project, V1, [ArtifactInput("d1mini", tmp_path / "x.bin")])


def test_filesystem_must_not_be_an_app(project: Path, tmp_path: Path) -> None:
    fw = write(tmp_path, "fw.bin", esp8266_image("1.0.0"))
    with pytest.raises(ImageError):
        add_release(project, V1, [ArtifactInput("d1mini", fw, write(tmp_path, "fs.bin", esp8266_image("1.0.0")))])
