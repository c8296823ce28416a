"""acrelease.policy.decide / decide_download: docs/protocol.md section H."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import semver
from hypothesis import given, settings
from hypothesis import strategies as st

from acrelease.catalog.index import TargetIndex
from acrelease.policy import Announce, DeviceFacts, NoUpdate, Offer, Refuse, decide, decide_download
from acrelease.versioning import parse_device_version
from tests.factories.catalog import CatalogBuilder
from tests.factories.images import esp32_image, esp8266_image, littlefs_image


def device(arch: str = "ESP8266", version: str | None = None, **kw: object) -> DeviceFacts:
    base = DeviceFacts(arch=arch, update_agent=True, mac="DE:BA:7A:B1:E0:42", free_space=4 << 20,
                       sketch_size=400000, chip_size=4 << 20, sdk_version="2.5.0", mode="sketch",
                       version_text=version, version=parse_device_version(version))
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def d1mini(tmp_path_factory: pytest.TempPathFactory) -> TargetIndex:
    b = CatalogBuilder(tmp_path_factory.mktemp("cat"))
    b.add("demo", "d1mini", "esp8266", "1.9.0")
    b.add("demo", "d1mini", "esp8266", "1.10.0", filesystem=littlefs_image())
    b.add("demo", "d1mini", "esp8266", "1.11.0-rc.1", channel="beta")
    b.add("demo", "d1mini", "esp8266", "1.10.1", yanked=True)
    return b.targets[("demo", "d1mini")]


def offered(decision: object) -> str:
    assert isinstance(decision, Offer), decision
    return str(decision.release.version)


def test_older_device_gets_newest_stable_semver_order(d1mini: TargetIndex) -> None:
    assert offered(decide(device(version="1.9.0"), d1mini)) == "1.10.0"  # 1.10.0 > 1.9.0 (H.1)
    assert offered(decide(device(version="v1.9.0"), d1mini)) == "1.10.0"  # leading v tolerated


@pytest.mark.parametrize("version", ["1.10.0", "1.10.5", "2.0.0", "v1.10.0"])
def test_current_or_ahead_gets_304(d1mini: TargetIndex, version: str) -> None:
    assert isinstance(decide(device(version=version), d1mini), NoUpdate)


def test_prerelease_below_its_release(d1mini: TargetIndex) -> None:
    assert offered(decide(device(version="1.10.0-rc.9"), d1mini)) == "1.10.0"


def test_channels(d1mini: TargetIndex) -> None:
    assert offered(decide(device(version="1.10.0"), d1mini, "beta")) == "1.11.0-rc.1"
    assert isinstance(decide(device(version="1.10.0"), d1mini, "stable"), NoUpdate)
    assert offered(decide(device(version="1.9.0"), d1mini, "nightly")) == "1.10.0"  # other channel: stable too


def test_yanked_never_offered_and_rollback_from_it(d1mini: TargetIndex) -> None:
    # Device runs the yanked 1.10.1 (higher than 1.10.0): explicit rollback.
    decision = decide(device(version="1.10.1"), d1mini)
    assert offered(decision) == "1.10.0"
    assert "yanked" in decision.reason


@pytest.mark.parametrize("version", [None, "", "abc", "1.2", "1.2.3.4", "x" * 300])
def test_no_or_unparseable_version_is_never_304(d1mini: TargetIndex, version: str | None) -> None:
    # F.28 / H.2 / H.3: AutoConnect sends no version.
    assert offered(decide(device(version=version, sketch_md5=None), d1mini)) == "1.10.0"


def test_sketch_md5_identifies_running_release(d1mini: TargetIndex) -> None:
    current = d1mini.release(semver.Version.parse("1.10.0"))
    old = d1mini.release(semver.Version.parse("1.9.0"))
    assert current is not None and old is not None
    assert isinstance(decide(device(sketch_md5=current.firmware.md5), d1mini), NoUpdate)
    assert offered(decide(device(sketch_md5=old.firmware.md5), d1mini)) == "1.10.0"
    # The version header takes precedence over the MD5 (F.29).
    assert offered(decide(device(version="1.9.0", sketch_md5=current.firmware.md5), d1mini)) == "1.10.0"


def test_filesystem_modes_use_newest_release_with_fs_image(d1mini: TargetIndex) -> None:
    for mode in ("spiffs", "littlefs", "fatfs", "flashfs"):
        decision = decide(device(version="1.9.0", mode=mode), d1mini)
        assert isinstance(decision, Offer)
        assert decision.artifact.kind == "filesystem"  # never a sketch for an FS mode (F.31)
        assert isinstance(decide(device(version="1.10.0", mode=mode), d1mini), NoUpdate)


def test_filesystem_mode_without_fs_image_is_304(tmp_path: Path) -> None:
    b = CatalogBuilder(tmp_path)
    b.add("demo", "d1mini", "esp8266", "1.0.0")
    decision = decide(device(version="0.1.0", mode="spiffs"), b.targets[("demo", "d1mini")])
    assert isinstance(decision, NoUpdate)


def test_version_mode_announces_even_when_current(d1mini: TargetIndex) -> None:
    decision = decide(device(version="1.10.0", mode="version"), d1mini)
    assert isinstance(decision, Announce)  # F.30: 304 would be -104 there
    assert str(decision.release.version) == "1.10.0"


def test_fit_free_space_and_flash_size(d1mini: TargetIndex) -> None:
    small = decide(device(version="1.0.0", free_space=100), d1mini)
    assert isinstance(small, Refuse) and small.status == 403
    flash = decide(device(version="1.0.0", chip_size=512 * 1024), d1mini)  # image declares 4 MB
    assert isinstance(flash, Refuse) and flash.status == 403 and "flash" in flash.reason


def test_gzip_image_skips_flash_size_check(tmp_path: Path) -> None:
    import gzip
    b = CatalogBuilder(tmp_path)
    b.add("demo", "d1", "esp8266", "1.0.0", gzip.compress(esp8266_image("1.0.0"), mtime=0))
    decision = decide(device(version="0.1.0", chip_size=512 * 1024), b.targets[("demo", "d1")])
    assert offered(decision) == "1.0.0"


def test_wrong_family_and_non_esp_agents(d1mini: TargetIndex) -> None:
    wrong = decide(device("ESP32", version="1.0.0"), d1mini)
    assert isinstance(wrong, Refuse) and wrong.status == 403
    for facts in (DeviceFacts(), device(update_agent=False), device(missing=("x-ESP8266-mode",))):
        refused = decide(facts, d1mini)
        assert isinstance(refused, Refuse) and refused.status == 403


def test_nothing_published_is_304(tmp_path: Path) -> None:
    b = CatalogBuilder(tmp_path).target("demo", "empty", "esp32")
    assert isinstance(decide(device("ESP32"), b.targets[("demo", "empty")]), NoUpdate)


def test_download_rules(tmp_path: Path) -> None:
    b = CatalogBuilder(tmp_path)
    rel = b.add("demo", "dev", "esp32", "1.0.0", esp32_image("esp32", "1.0.0"))
    target = b.targets[("demo", "dev")]
    assert isinstance(decide_download(device("ESP32"), target, rel, rel.firmware), Offer)
    same = decide_download(device("ESP32", sketch_md5=rel.firmware.md5), target, rel, rel.firmware)
    assert isinstance(same, NoUpdate)
    wrong = decide_download(device("ESP8266"), target, rel, rel.firmware)
    assert isinstance(wrong, Refuse) and wrong.status == 403
    tight = decide_download(device("ESP32", free_space=10), target, rel, rel.firmware)
    assert isinstance(tight, Refuse) and tight.status == 403


versions = st.one_of(st.none(), st.text(max_size=20),
                     st.builds(lambda a, b, c: f"{a}.{b}.{c}", *(st.integers(0, 12),) * 3))


@settings(max_examples=300, deadline=None)
@given(version=versions, mode=st.sampled_from(["sketch", "spiffs", "version", "bogus", None]),
       free=st.one_of(st.none(), st.integers(0, 1 << 24)), md5=st.one_of(st.none(), st.text(max_size=40)),
       channel=st.sampled_from(["stable", "beta", "x"]), arch=st.sampled_from(["ESP8266", "ESP32", None]))
def test_decide_invariants(d1mini: TargetIndex, version: str | None, mode: str | None, free: int | None,
                           md5: str | None, channel: str, arch: str | None) -> None:
    facts = device("ESP8266", version=version, mode=mode, free_space=free, sketch_md5=md5)
    facts = replace(facts, arch=arch)
    decision = decide(facts, d1mini, channel)
    assert decision.reason
    if isinstance(decision, Offer | Announce):
        assert arch == "ESP8266"
        assert not decision.release.yanked
        assert decision.release.channel in ("stable", channel)
        assert decision.artifact in tuple(decision.release.artifacts())
        if isinstance(decision, Offer):
            assert free is None or decision.artifact.size <= free or mode not in (None, "sketch")
            expected = "filesystem" if mode == "spiffs" else "firmware"
            assert decision.artifact.kind == expected
    if isinstance(decision, NoUpdate):
        # Never 304 merely because no usable version was sent (F.28).
        known = facts.version is not None or any(r.firmware.md5 == md5 for r in d1mini.releases)
        assert known
