"""The AutoConnect catalog answer: ``/_catalog?op=list&path=P`` (docs/protocol.md A.2, F.7-F.15, H.8).

Releases that are not stable (another channel, or a pre-release version) are marked in the
``date`` AutoConnect shows next to each image: ``2026-11-27 (beta, pre-release)``.
"""

from __future__ import annotations

import json
from typing import Any

from acrelease.catalog.index import PublishedRelease
from acrelease.channels import STABLE
from acrelease.server.catalog import CatalogState

EMPTY: list[dict[str, Any]] = [{"name": ".", "type": "directory"}]
"""Never a bare ``[]``: ArduinoJson fails on it with InvalidInput (F.12)."""


def split_path(text: str) -> list[str] | None:
    """``P`` as path components; tolerates ``./`` and leading/trailing slashes (AutoConnect
    sends ``uri`` un-encoded, default ``.``). ``None`` for ``..`` or an empty component (F.15)."""
    parts = [p for p in text.strip().split("/") if p not in ("", ".")]
    if any(p == ".." or "\\" in p or "\x00" in p for p in parts):
        return None
    return parts


def listing(state: CatalogState, parts: list[str]) -> list[dict[str, Any]] | None:
    """The entries for ``parts`` (root, project, or project/target), or ``None`` if unknown."""
    index = state.index
    if not parts:
        entries: list[dict[str, Any]] = [{"name": p, "type": "directory"} for p in index.projects()]
    elif len(parts) == 1:
        targets = index.targets_of(parts[0])
        if not targets:
            return None
        entries = [{"name": t.target, "type": "directory"} for t in targets]
    elif len(parts) == 2:
        target = index.target(parts[0], parts[1])
        if target is None:
            return None
        entries = []
        for release in target.releases:  # newest first
            artifact = release.firmware
            if release.yanked or artifact.file not in state.blobs:
                continue  # never list what the server would refuse or 404
            time = release.published.partition("T")[2][:8]
            # Only the five keys AutoConnect reads, each object within its 256-byte pool (F.10).
            # The name stays the file's own (it is the download path, A.3); what is not a
            # stable release is said in the date, which AutoConnect shows beside it (A.2).
            entry: dict[str, Any] = {"name": artifact.name, "type": "bin", "date": release.date,
                                     "time": time, "size": artifact.size}
            marks = _marks(release)
            if marks:
                marked = {**entry, "date": f"{release.date} ({', '.join(marks)})"}
                if pool_bytes(marked) <= POOL:  # else unmarked: a list the device can read first
                    entry = marked
            entries.append(entry)
    else:
        return None
    return entries or EMPTY


POOL = 256
"""AutoConnect parses each catalog object into a 256-byte ArduinoJson pool
(AUTOCONNECT_UPDATE_CATALOG_JSONBUFFER_SIZE, docs/protocol.md A.1, A.2, F.10)."""


def _marks(release: PublishedRelease) -> list[str]:
    """What the user picking an image should know: its channel unless stable, and pre-release."""
    marks = [] if release.channel == STABLE else [release.channel]
    if release.version.prerelease:
        marks.append("pre-release")
    return marks


def pool_bytes(entry: dict[str, Any]) -> int:
    """What one object costs in ArduinoJson 6's pool: a 16-byte slot per member (VariantSlot on
    the 32-bit ESP cores), and every key and string value copied from the stream with its NUL."""
    return sum(16 + len(key.encode()) + 1 + (len(value.encode()) + 1 if isinstance(value, str) else 0)
               for key, value in entry.items())


def render(entries: list[dict[str, Any]]) -> bytes:
    # Raw UTF-8, no \u escapes (F.13); compact separators keep each object small.
    return json.dumps(entries, ensure_ascii=False, separators=(",", ":")).encode()
