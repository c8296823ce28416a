"""The catalog's last good indexes: generation-numbered copies under ``<catalog>/.acrelease/``.

Every index that ``publish``, ``yank`` or ``repair`` writes is also kept as
``.acrelease/generations/index-<generation>.json`` (written right after ``index.json``, the
same atomic way; the newest ``KEEP`` are kept). When ``index.json`` is broken by hand, deleted
or truncated, these copies are the way out: ``serve`` serves the newest one that parses (with a
warning), ``publish`` and ``yank`` refuse and name ``acrelease repair``, which restores it.

This module is the read side (the server imports it); ``store`` writes the copies. Nothing here
is ever served: the server looks every URL up in the index, and ``.acrelease`` is not a valid
project name (``layout.NAME_RE``), so no index can name a file under it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from acrelease.catalog.index import INDEX_NAME, CatalogIndex, parse_index
from acrelease.errors import CatalogError

STATE_DIR = ".acrelease"
GENERATIONS_DIR = f"{STATE_DIR}/generations"
KEEP = 20
"""Copies kept: enough to step back past a few bad publishes, small (an index is a few KiB)."""

_COPY_RE = re.compile(r"^index-(\d{1,12})\.json$")


def generation_path(root: Path, generation: int) -> Path:
    return root / GENERATIONS_DIR / f"index-{generation:08d}.json"


def copies(root: Path) -> list[tuple[int, Path]]:
    """Every generation copy under ``root``, newest first (by the number in its name)."""
    try:
        names = os.listdir(root / GENERATIONS_DIR)
    except OSError:
        return []
    found = [(int(match.group(1)), root / GENERATIONS_DIR / name)
             for name in names if (match := _COPY_RE.fullmatch(name))]
    return sorted(found, reverse=True)


@dataclass(frozen=True)
class GoodCopy:
    """The newest generation copy that parses."""

    generation: int
    path: Path
    index: CatalogIndex
    skipped: tuple[str, ...] = ()
    """Newer copies that could not be read, each as ``file: why``."""


def last_good(root: Path) -> GoodCopy | None:
    """The newest readable generation copy, or ``None`` when there is none."""
    skipped: list[str] = []
    for generation, path in copies(root):
        try:
            index = parse_index(path.read_bytes(), str(path.relative_to(root)))
        except CatalogError as exc:
            skipped.append(str(exc))
            continue
        except OSError as exc:
            skipped.append(f"{path.relative_to(root)}: cannot be read ({exc.strerror})")
            continue
        return GoodCopy(generation, path, index, tuple(skipped))
    return None


@dataclass(frozen=True)
class IndexState:
    """What ``index.json`` holds: an index, or why it cannot be used."""

    index: CatalogIndex | None
    """The parsed index; an empty one for a catalog nothing was ever published into."""
    problem: str | None = None
    """Why ``index.json`` cannot be used (``None`` when ``index`` is set)."""
    missing: bool = False


def read_index(root: Path) -> IndexState:
    """Read ``root/index.json``. Absent is an empty catalog only if no index was ever written
    here: with generation copies present, a missing index is damage (deleting it and publishing
    again would silently forget every yank)."""
    path = root / INDEX_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        newest = copies(root)
        if not newest:
            return IndexState(CatalogIndex())
        return IndexState(None, f"{path}: missing, although generation {newest[0][0]} was written here",
                          missing=True)
    except OSError as exc:
        return IndexState(None, f"{path}: cannot be read ({exc.strerror})")
    try:
        return IndexState(parse_index(data, str(path)))
    except CatalogError as exc:
        return IndexState(None, str(exc))


def repair_hint(root: Path) -> str:
    return f"run `acrelease repair --catalog {root}` to restore the last good index"


def load_current(root: Path) -> CatalogIndex:
    """The index to build on (publish, yank, list), or :class:`CatalogError` saying to repair."""
    state = read_index(root)
    if state.index is None:
        raise CatalogError(f"{state.problem}; {repair_hint(root)}")
    return state.index
