"""The AutoConnect catalog answer: ``/_catalog?op=list&path=P`` (PROTOCOL.md A.2, F.7-F.15, H.8)."""

from __future__ import annotations

import json
from typing import Any

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
            # Only the five keys AutoConnect reads, each object far below its 256-byte pool (F.10).
            entries.append({"name": artifact.name, "type": "bin", "date": release.date,
                            "time": time, "size": artifact.size})
    else:
        return None
    return entries or EMPTY


def render(entries: list[dict[str, Any]]) -> bytes:
    # Raw UTF-8, no \u escapes (F.13); compact separators keep each object small.
    return json.dumps(entries, ensure_ascii=False, separators=(",", ":")).encode()
