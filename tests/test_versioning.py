import pytest
import semver

from acrelease.errors import VersionError
from acrelease.versioning import bump, next_version, parse_device_version, parse_release_version


@pytest.mark.parametrize("text, expected", [
    ("1.2.3", "1.2.3"), ("v1.2.3", "1.2.3"), (" 1.2.3-rc.1+build.5 ", "1.2.3-rc.1+build.5"),
])
def test_release_versions_parse(text: str, expected: str) -> None:
    assert str(parse_release_version(text)) == expected


@pytest.mark.parametrize("text", ["1.2", "1.2.3.4", "abc", "", "01.2.3", "1." + "9" * 40 + ".0"])
def test_bad_release_versions_name_the_text(text: str) -> None:
    with pytest.raises(VersionError, match="semantic version|longer than"):
        parse_release_version(text)


def test_ordering_is_semantic_not_lexical() -> None:
    assert parse_release_version("1.10.0") > parse_release_version("1.9.0")
    assert parse_release_version("1.2.0-rc.1") < parse_release_version("1.2.0")


@pytest.mark.parametrize("text", [None, "", "abc", "1.2", "1.2.3.4", "v", "x" * 300, "1.2.3\u00e9"])
def test_unparseable_device_versions_are_unknown(text: str | None) -> None:
    assert parse_device_version(text) is None


def test_device_versions_are_lenient() -> None:
    assert parse_device_version(" v1.2.3 ") == semver.Version(1, 2, 3)


def test_next_version() -> None:
    assert next_version([], None) == semver.Version(0, 1, 0)
    existing = [semver.Version.parse(v) for v in ("1.9.0", "1.10.0", "1.2.5")]
    assert str(next_version(existing, None)) == "1.10.1"
    assert str(next_version(existing, "minor")) == "1.11.0"
    assert str(next_version(existing, "major")) == "2.0.0"
    assert str(bump(semver.Version.parse("1.2.3"), "prerelease")) == "1.2.4-rc.1"
    assert str(bump(semver.Version.parse("1.2.4-rc.1"), "prerelease")) == "1.2.4-rc.2"
