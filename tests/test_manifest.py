"""releases.toml: validation reports every problem with its TOML path; edits keep comments."""

import hashlib
from pathlib import Path

import pytest

from acrelease import chips, manifest
from acrelease.errors import ManifestError
from acrelease.manifest import ArtifactRecord, Release, Target
from acrelease.versioning import parse_release_version


def record_for(root: Path, rel: str, data: bytes, chip: str = "esp8266") -> ArtifactRecord:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return ArtifactRecord("firmware", rel, len(data), hashlib.md5(data).hexdigest(),
                          hashlib.sha256(data).hexdigest(), chip, "plain", 4194304, True)


def test_init_then_record_roundtrip_keeps_comments(tmp_path: Path) -> None:
    path = tmp_path / "releases.toml"
    manifest.init_manifest(path, "demo", [Target("d1mini", chips.lookup("esp8266")), Target("s3", None)])
    path.write_text(path.read_text() + "# my own note\n")
    release = Release(parse_release_version("1.0.0"), date="2026-11-27", notes="first")
    manifest.record_artifacts(path, release, {"d1mini": [record_for(tmp_path, "dist/1.0.0/d1mini/fw.bin", b"A" * 9)]})
    later = Release(parse_release_version("1.0.0"))
    manifest.record_artifacts(path, later, {"s3": [record_for(tmp_path, "dist/1.0.0/s3/fw.bin", b"B" * 7, "esp32s3")]})
    loaded = manifest.load(path)
    assert loaded.project == "demo"
    assert [t.name for t in loaded.targets] == ["d1mini", "s3"]
    [only] = loaded.releases
    assert only.notes == "first"
    assert set(only.artifacts) == {"d1mini", "s3"}
    assert only.artifacts["s3"]["firmware"].size == 7
    assert "# my own note" in path.read_text()
    manifest.set_target_chip(path, "s3", chips.lookup("esp32s3"))
    assert manifest.load(path).target("s3").chip.key == "esp32s3"
    assert "# my own note" in path.read_text()


BROKEN = """
[project]
name = "bad name!"

[[targets]]
name = "d1"
chip = "esp9000"

[[targets]]
name = "d1"

[[releases]]
version = "1.2"
[releases.artifacts.d1.firmware]
file = "missing.bin"
size = 10
md5 = "00000000000000000000000000000000"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
chip = "esp8266"
format = "plain"

[[releases]]
version = "1.0.0"
[releases.artifacts.nosuch.firmware]
file = "x.bin"

[[releases]]
version = "v1.0.0"
[releases.artifacts.d1.firmware]
file = "changed.bin"
size = 3
md5 = "00000000000000000000000000000000"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
chip = "esp8266"
format = "plain"
"""


def test_every_problem_is_reported_with_its_toml_path(tmp_path: Path) -> None:
    path = tmp_path / "releases.toml"
    path.write_text(BROKEN)
    (tmp_path / "changed.bin").write_bytes(b"abc")
    with pytest.raises(ManifestError) as info:
        manifest.load(path)
    problems = info.value.problems
    joined = "\n".join(problems)
    assert all(p.startswith(f"{path}: ") for p in problems)
    assert "project.name: \"bad name!\" is not a valid name" in joined
    assert 'targets[0].chip: unknown chip "esp9000"' in joined
    assert 'targets[1].name: target "d1" is defined twice' in joined
    assert 'releases[0].version: "1.2" is not a semantic version (expected MAJOR.MINOR.PATCH)' in joined
    assert 'releases[0].artifacts.d1.firmware.file: "missing.bin" does not exist' in joined
    assert 'releases[1].artifacts.nosuch: unknown target "nosuch"' in joined
    assert 'releases[2].artifacts.d1.firmware.file: "changed.bin" has changed since it was recorded' in joined
    assert "releases[2].version: 1.0.0 is already recorded at releases[1]" in joined


@pytest.mark.parametrize("text, fragment", [
    ("[project\nname=1", "not valid TOML"),
    ("", r"missing \[project\] table"),
    ("[project]\nname = 5\n", "project.name: expected a string, got int"),
    ("[project]\nname = 'update'\n", 'project.name: "update" is reserved'),
    ("[project]\nname='a'\nversion_define='not valid'\n", 'project.version_define: "not valid" is not a C identifier'),
])
def test_broken_manifests_get_one_clear_line(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "releases.toml"
    path.write_text(text)
    with pytest.raises(ManifestError, match=fragment):
        manifest.load(path)


def test_missing_manifest_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="acrelease init"):
        manifest.load(tmp_path / "releases.toml")


def test_init_refuses_to_overwrite_and_bad_names(tmp_path: Path) -> None:
    path = tmp_path / "releases.toml"
    manifest.init_manifest(path, "demo", [Target("a", None)])
    with pytest.raises(ManifestError, match="already exists"):
        manifest.init_manifest(path, "demo", [Target("a", None)])
    with pytest.raises(ManifestError, match="not valid"):
        manifest.init_manifest(tmp_path / "other.toml", "../x", [Target("a b", None)])
    with pytest.raises(ManifestError, match='"update" is reserved'):
        manifest.init_manifest(tmp_path / "other.toml", "update", [Target("a", None)])


UNKNOWN_KEYS = """
[project]
name = "demo"
verison_define = "FW_VERSION"

[[targets]]
name = "d1"
chipp = "esp8266"
filesytem = true

[[releases]]
version = "1.0.0"
chanel = "beta"
[releases.artifacts.d1.firmwre]
file = "fw.bin"
[releases.artifacts.d1.firmware]
file = "fw.bin"
size = 9
md5 = "00000000000000000000000000000000"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
chip = "esp8266"
format = "plain"
board = "d1_mini"
zzz = 1

[tool]
x = 1
"""


def test_unknown_keys_name_the_path_and_the_closest_known_key(tmp_path: Path) -> None:
    path = tmp_path / "releases.toml"
    path.write_text(UNKNOWN_KEYS)
    loaded, problems = manifest.validate(path.read_text(), path, verify_files=False)
    assert loaded is not None
    assert {(p.at, p.message) for p in problems} == {
        ("project.verison_define", 'unknown key "verison_define" (did you mean "version_define"?)'),
        ("targets[0].chipp", 'unknown key "chipp" (did you mean "chip"?)'),
        ("targets[0].filesytem", 'unknown key "filesytem" (did you mean "filesystem"?)'),
        ("releases[0].chanel", 'unknown key "chanel" (did you mean "channel"?)'),
        ("releases[0].artifacts.d1.firmwre",
         'unknown artifact kind "firmwre" (did you mean "firmware"?; expected firmware or filesystem)'),
        ("releases[0].artifacts.d1.firmware.board",
         'unknown key "board" (known keys: file, size, md5, sha256, chip, format, flash_size, version_found)'),
        ("releases[0].artifacts.d1.firmware.zzz",
         'unknown key "zzz" (known keys: file, size, md5, sha256, chip, format, flash_size, version_found)'),
        ("tool", 'unknown key "tool" (known keys: project, targets, releases)'),
    }
    with pytest.raises(ManifestError) as info:
        manifest.load(path, verify_files=False)
    assert f'{path}: targets[0].chipp: unknown key "chipp" (did you mean "chip"?)' in info.value.problems


def test_every_documented_key_is_known_and_every_known_key_documented() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "manifest.md").read_text()
    for kind, keys in manifest.KNOWN_KEYS.items():
        for key in keys:
            assert f"`{key}`" in doc or f"`[{key}]`" in doc or f"`[[{key}]]`" in doc, (kind, key)


def test_an_edit_is_validated_whole_before_it_is_written(tmp_path: Path) -> None:
    path = tmp_path / "releases.toml"
    manifest.init_manifest(path, "demo", [Target("d1mini", chips.lookup("esp8266"))])
    before = path.read_bytes()
    bad = Release(parse_release_version("1.0.0"), channel="Beta Test", notes="n")
    record = ArtifactRecord("firmware", "dist/1.0.0/d1mini/fw.bin", 9, "0" * 32, "0" * 64, "esp8266", "plain")
    with pytest.raises(ManifestError) as info:
        manifest.plan_release(path, bad, {"d1mini": [record]}, blame={"channel": "--channel"})
    assert info.value.problems == ('--channel: "Beta Test" is not a valid name (1-32 characters: letters, digits, '
                                   "'.', '_' or '-', starting with a letter or digit); nothing was written",)
    good = manifest.plan_release(path, Release(parse_release_version("1.0.0")), {"d1mini": [record]},
                                 learnt_chips={})
    assert path.read_bytes() == before  # planned, validated, not written
    assert good.manifest.release(parse_release_version("1.0.0")) is not None
    good.write()
    assert manifest.load(path, verify_files=False).releases[0].artifacts["d1mini"]["firmware"].size == 9
