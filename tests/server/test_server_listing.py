"""The AutoConnect catalog's entries: releases that are not stable are marked where AutoConnect
shows them, never in the name (the download path), and never past its 256-byte pool."""

from __future__ import annotations

from pathlib import Path

from acrelease.server import listing
from acrelease.server.catalog import Catalog
from tests.factories.catalog import CatalogBuilder


def entries(root: Path, project: str, target: str) -> list[dict[str, object]]:
    catalog = Catalog(root)
    catalog.load()
    found = listing.listing(catalog.state, [project, target])
    assert found is not None
    return found


def test_marks_channel_and_pre_release_in_the_date(tmp_path: Path) -> None:
    built = CatalogBuilder(tmp_path / "catalog")
    built.add("p", "t", "esp8266", "1.0.0")
    built.add("p", "t", "esp8266", "1.1.0-rc.1")  # a pre-release on stable
    built.add("p", "t", "esp8266", "1.2.0", channel="beta")
    built.add("p", "t", "esp8266", "1.3.0-rc.1", channel="beta")
    built.write()
    listed = entries(built.root, "p", "t")
    assert [(e["name"], e["date"]) for e in listed] == [
        ("p-t-1.3.0-rc.1.bin", "2026-11-27 (beta, pre-release)"),
        ("p-t-1.2.0.bin", "2026-11-27 (beta)"),
        ("p-t-1.1.0-rc.1.bin", "2026-11-27 (pre-release)"),
        ("p-t-1.0.0.bin", "2026-11-27"),
    ]
    assert all(listing.pool_bytes(e) <= listing.POOL for e in listed)


def test_a_mark_that_would_not_fit_the_pool_is_left_out(tmp_path: Path) -> None:
    built = CatalogBuilder(tmp_path / "catalog")
    project, target, channel = "p" * 32, "t" * 32, "c" * 32  # the longest names the manifest allows
    built.add(project, target, "esp8266", "1.0.0-rc.1", channel=channel)
    built.add(project, target, "esp8266", "0.9.0-rc.1", channel="b")
    built.write()
    long_one, short_one = entries(built.root, project, target)
    assert long_one["date"] == "2026-11-27"  # marked, it would need more than 256 bytes
    assert listing.pool_bytes({**long_one, "date": f"2026-11-27 ({channel}, pre-release)"}) > listing.POOL
    assert short_one["date"] == "2026-11-27 (b, pre-release)"


def test_pool_bytes_counts_slots_keys_and_strings() -> None:
    # 5 slots of 16 bytes; keys name/type/date/time/size with NULs (25); "a.bin", "bin", "d", "t"
    # with NULs (6 + 4 + 2 + 2); the size is an integer, stored in its slot.
    assert listing.pool_bytes({"name": "a.bin", "type": "bin", "date": "d", "time": "t", "size": 9}) == 119
