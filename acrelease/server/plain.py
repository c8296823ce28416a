"""Plain mode: a folder without an acrelease index, served as AutoConnect's ``updateserver.py``
served it, minus its flaws (docs/protocol.md B).

``acrelease serve`` on a folder that holds no ``index.json`` serves that folder as it is: the
AutoConnect catalog lists its sub-folders as ``directory``, its ESP images as ``bin`` (with
``date``, ``time``, ``size``) and other files as ``file``; a file is downloaded by its path
below the folder. What differs from ``updateserver.py``:

* Only files that are valid, OTA-servable ESP images (:func:`acrelease.image.inspect_image`
  without problems) are ever served, and only by an exact lookup in an immutable snapshot: a
  URL is never mapped onto the filesystem (docs/architecture.md, practice 8). Dot-files and
  dot-folders (``.acrelease/``, temp files of a copy) are never listed or served; symlinked
  folders are not followed and a symlinked file is only taken when it resolves inside the folder.
* A scanner polls the folder off the event loop (a thread) and hashes a file only when its
  (size, mtime, inode) changed *and* nothing was written to it for :data:`SETTLE` seconds (its
  ctime is that old), so a file still being copied in is never served half-written; bytes that
  changed while being read are dropped until the next poll. What is served is a private copy of
  the bytes that were checked and hashed, as the catalog does (``server/catalog.py``).
* Images are hashed when they change, never per request. The scan is bounded (files, depth,
  bytes held); hitting a bound is logged.
* Plain mode lasts only while the folder holds no acrelease index: once ``publish`` writes
  ``index.json`` the catalog's index is served (the app checks the loaded index generation, the
  scanner stops at its next poll), and plain mode does not come back for the life of the process.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import stat
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from acrelease import chips
from acrelease.catalog.index import INDEX_NAME, Artifact
from acrelease.errors import ImageError
from acrelease.image import inspect_image
from acrelease.image.formats import GZIP_MAGIC, MAGIC, MAX_GUNZIP
from acrelease.policy import FILESYSTEM_MODES, SKETCH_MODE, DeviceFacts, NoUpdate, Refuse
from acrelease.policy import _misfit as misfit  # the catalog downloads' fit rules (H.5), not a copy
from acrelease.server import listing, tasks

log = logging.getLogger("acrelease.server.plain")

POLL_INTERVAL = 0.5
"""Seconds between two scans of the folder."""
SETTLE = 1.0
"""A file is read only once nothing was written to it for this long; with the poll interval
above a complete file is served within SETTLE + POLL_INTERVAL (+ the scan) seconds."""
MAX_FILES = 4096
MAX_DEPTH = 8
MAX_BYTES = 512 * 1024 * 1024
"""Bytes of images held in memory at most (each served image is one private copy)."""
MAX_IMAGE = MAX_GUNZIP
"""A larger file is no firmware image (no ESP flash is bigger): listed as ``file``, never read."""
MAX_LISTED_NAME = 100
"""Longest name (UTF-8 bytes) listed: with the four other keys an entry must stay well inside
AutoConnect's 256-byte ArduinoJson pool, or the whole list fails with NoMemory (docs/protocol.md F.10)."""

Signature = tuple[int, int, int, int]
"""(size, mtime_ns, inode, device) of a file as last seen."""


@dataclass(frozen=True, slots=True, eq=False)  # identity: never compare the bytes
class PlainImage:
    """One servable image of the folder."""

    artifact: Artifact
    """``file`` is the path below the folder (``bin/fw.bin``); size, MD5, SHA-256 and chip as checked."""
    data: memoryview
    """Read-only view of the private copy of the bytes that were checked and hashed."""
    mtime: float
    signature: Signature


@dataclass(frozen=True)
class PlainState:
    """An immutable snapshot of the folder: servable images by path, pre-rendered listings."""

    active: bool = True
    """False once the folder holds an acrelease index (then nothing here is served)."""
    images: Mapping[str, PlainImage] = field(default_factory=dict)
    listings: Mapping[str, bytes] = field(default_factory=dict)
    """Folder path below the root (``""`` for the root, ``bin``, ``a/b``) -> catalog JSON."""

    def listing(self, path: str) -> bytes | None:
        """The AutoConnect catalog body for ``path=`` (``.`` is the root), or ``None``."""
        parts = listing.split_path(path)
        return None if parts is None else self.listings.get("/".join(parts))


INACTIVE = PlainState(active=False)


class _Changed(Exception):
    """The file changed while it was read: try again at the next poll."""


@dataclass(frozen=True, slots=True)
class _Seen:
    signature: Signature
    real: str
    ctime: float
    mtime: float


class PlainFolder:
    """Scans one folder and holds its current :class:`PlainState`."""

    def __init__(self, root: Path, *, poll_interval: float = POLL_INTERVAL, settle: float = SETTLE,
                 max_files: int = MAX_FILES, max_depth: int = MAX_DEPTH, max_bytes: int = MAX_BYTES) -> None:
        self.root = root
        self._root_real = os.path.realpath(root)
        self.poll_interval = poll_interval
        self.settle = settle
        self.max_files, self.max_depth, self.max_bytes = max_files, max_depth, max_bytes
        self.state = PlainState()
        self._known: dict[str, tuple[Signature, PlainImage | None]] = {}
        """Path -> (signature, image or None for "not a servable image") of every checked file."""
        self._fingerprint: object = None
        self._bounds_logged: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    # -- the scan (a worker thread, or before forking) -------------------------------------------

    def scan(self) -> None:
        """Look at the folder once; swap in a new state if what is served or listed changed."""
        if not self.state.active:
            return
        if os.path.lexists(os.path.join(self._root_real, INDEX_NAME)):
            self.state, self._known = INACTIVE, {}
            log.info("plain folder %s now holds %s: serving the catalog's index from now on", self.root, INDEX_NAME)
            return
        folders, files, bounds = self._walk()
        now = time.time()
        results: dict[str, PlainImage | None] = {}
        held = 0
        for path, seen in files.items():
            known = self._known.get(path)
            if known is not None and known[0] == seen.signature:
                result = known[1]
            elif now - seen.ctime < self.settle:
                continue  # still being written (or just moved in): not listed, not served yet
            elif (seen.signature[0] <= MAX_IMAGE and held + seen.signature[0] > self.max_bytes):
                bounds.add(f"more than {self.max_bytes >> 20} MiB of images")
                continue
            else:
                try:
                    result = self._check(path, seen)
                except _Changed:
                    continue
            if result is not None:
                if held + result.artifact.size > self.max_bytes:
                    bounds.add(f"more than {self.max_bytes >> 20} MiB of images")
                    continue
                held += result.artifact.size
            results[path] = result
        self._known = {path: (files[path].signature, result) for path, result in results.items()}
        self._log_bounds(bounds)
        fingerprint = (tuple((k, tuple(v)) for k, v in folders.items()),
                       tuple((p, r.signature if r else files[p].signature, r is not None) for p, r in results.items()))
        if fingerprint != self._fingerprint:
            self._fingerprint = fingerprint
            self.state = _snapshot(folders, results)

    def _walk(self) -> tuple[dict[str, list[str]], dict[str, _Seen], set[str]]:
        """Folders (path -> sub-folder names) and regular files (path -> how they look), bounded."""
        folders: dict[str, list[str]] = {"": []}
        files: dict[str, _Seen] = {}
        bounds: set[str] = set()
        queue: deque[tuple[str, str, int]] = deque([("", self._root_real, 0)])
        while queue:
            rel, real, depth = queue.popleft()
            try:
                with os.scandir(real) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue  # hidden: temp files of a copy, the catalog's .acrelease/ state
                path = f"{rel}/{entry.name}" if rel else entry.name
                found = self._stat(entry)
                if found is None:
                    continue
                st, target = found
                if stat.S_ISDIR(st.st_mode):
                    if depth + 1 > self.max_depth:
                        bounds.add(f"folders deeper than {self.max_depth} levels")
                        continue
                    folders[rel].append(entry.name)
                    folders[path] = []
                    queue.append((path, target, depth + 1))
                elif len(files) >= self.max_files:
                    bounds.add(f"more than {self.max_files} files")
                else:
                    files[path] = _Seen((st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev), target,
                                        st.st_ctime, st.st_mtime)
        return folders, files, bounds

    def _stat(self, entry: os.DirEntry[str]) -> tuple[os.stat_result, str] | None:
        """A folder or regular file to look at, with its real path; None for anything else
        (a symlink out of the folder or to a folder, a FIFO, a device, a vanished entry)."""
        try:
            if entry.is_symlink():
                real = os.path.realpath(entry.path)
                if not real.startswith(self._root_real + os.sep):
                    return None  # a symlink out of the folder is never followed
                st = os.stat(real)
                return (st, real) if stat.S_ISREG(st.st_mode) else None  # folder links: loops, escapes
            st = entry.stat(follow_symlinks=False)
        except OSError:
            return None
        if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
            return st, entry.path
        return None

    def _check(self, path: str, seen: _Seen) -> PlainImage | None:
        """Read, check and hash one file; None if it is not a servable ESP image."""
        size = seen.signature[0]
        if size == 0 or size > MAX_IMAGE:
            return None
        if not os.path.realpath(seen.real).startswith(self._root_real + os.sep):
            raise _Changed  # a folder on the way was swapped for a symlink since the walk
        try:
            fd = os.open(seen.real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            raise _Changed from None
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode) or _signature(before) != seen.signature:
                raise _Changed
            with open(fd, "rb", closefd=False) as handle:
                first = handle.read(2)
                if first[:1] != bytes([MAGIC]) and first != GZIP_MAGIC:
                    return None  # not an image: never read further
                data = first + handle.read(size - 1)
            if _signature(os.fstat(fd)) != seen.signature or len(data) != size:
                raise _Changed  # written to while read: the next poll sees it settle
        except OSError:
            raise _Changed from None
        finally:
            os.close(fd)
        try:
            info = inspect_image(data)
        except ImageError as exc:
            log.warning("plain folder: %s is not served: %s", path, exc)
            return None
        if info.problems:
            log.warning("plain folder: %s is not served: %s", path, "; ".join(info.problems))
            return None
        artifact = Artifact("firmware", path, size, hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest(),
                            info.chip.key, info.format, info.flash_size)
        log.info("plain folder: serving %s (%s, %d bytes, md5 %s)", path, info.chip.label, size, artifact.md5)
        return PlainImage(artifact, memoryview(data).toreadonly(), seen.mtime, seen.signature)

    def _log_bounds(self, bounds: set[str]) -> None:
        for bound in sorted(bounds - self._bounds_logged):
            log.warning("plain folder %s: %s; the rest is neither listed nor served", self.root, bound)
        self._bounds_logged = bounds

    # -- the watcher -------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None and self.state.active:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        task, self._task = self._task, None
        await tasks.cancel(task)

    async def _watch(self) -> None:
        while self.state.active:
            await asyncio.sleep(self.poll_interval)
            try:
                await asyncio.to_thread(self.scan)
            except Exception:  # keep watching whatever happens; the previous state stays
                log.exception("plain folder: scan failed; still serving the previous state")


def _signature(st: os.stat_result) -> Signature:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


def listable(name: str) -> bool:
    """Whether AutoConnect can show and fetch ``name``: it joins the name into the request-target
    un-encoded (docs/protocol.md A.3), so a blank, ``%``, ``?`` or ``#`` would break the request,
    and a control character would be a ``\\u`` escape its JSON parser refuses (F.13)."""
    return (len(name.encode()) <= MAX_LISTED_NAME and name.isprintable()
            and not any(c in name for c in " %?#\\\""))


def _snapshot(folders: dict[str, list[str]], results: dict[str, PlainImage | None]) -> PlainState:
    images = {path: image for path, image in results.items() if image is not None}
    entries: dict[str, list[dict[str, Any]]] = {rel: [{"name": name, "type": "directory"} for name in names
                                                      if listable(name)] for rel, names in folders.items()}
    files: dict[str, list[str]] = {}
    for path, image in sorted(images.items(), key=lambda item: (-item[1].mtime, item[0])):  # newest first
        rel, _, name = path.rpartition("/")
        if not listable(name):
            log.warning("plain folder: %s is served but not listed: AutoConnect cannot fetch that name; rename it",
                        path)
            continue
        local = time.localtime(image.mtime)
        entries[rel].append({"name": name, "type": "bin", "date": time.strftime("%Y-%m-%d", local),
                             "time": time.strftime("%H:%M:%S", local), "size": image.artifact.size})
    for path, result in results.items():
        if result is None:
            rel, _, name = path.rpartition("/")
            if listable(name):
                files.setdefault(rel, []).append(name)
    for rel, names in files.items():
        entries[rel] += [{"name": name, "type": "file"} for name in names]
    listings = {rel: listing.render(found or listing.EMPTY) for rel, found in entries.items()}
    return PlainState(True, images, listings)


def decide(device: DeviceFacts, artifact: Artifact) -> Refuse | NoUpdate | None:
    """What a client asking for a plain-folder image gets: ``None`` to serve it.

    Any client gets the file, as on the catalog's download route; a device that sends its ESP
    headers (AutoConnect's update) is refused another chip family's image, a filesystem mode, an
    image that does not fit (docs/protocol.md H.5), and gets 304 when its sketch MD5 is the
    file's (F.29): updateserver.py sent every device the whole image again.
    """
    if device.arch is None:
        return None
    chip = chips.lookup(artifact.chip)
    if chip is None or chip.arch != device.arch:
        return Refuse(403, f"{device.arch} device asked for a {artifact.chip} image", "chip")
    mode = device.mode or SKETCH_MODE
    if mode in FILESYSTEM_MODES:
        return Refuse(403, f"mode {mode} asked for a firmware file", "mode")  # F.31
    if device.sketch_md5 == artifact.md5:
        return NoUpdate(f"already running {artifact.name} (sketch-md5)")
    return misfit(device, artifact, mode)


def headers(artifact: Artifact, device: DeviceFacts) -> list[tuple[bytes, bytes]]:
    """The 200 answer's headers: updateserver.py's (F.16, F.19, F.20) plus x-SHA256 for ESP32 (F.21)."""
    out = [(b"content-length", str(artifact.size).encode()), (b"content-type", b"application/octet-stream"),
           (b"content-disposition", f'attachment; filename="{artifact.name}"'.encode()),
           (b"x-md5", artifact.md5.encode())]
    if device.arch == "ESP32":
        out.append((b"x-sha256", artifact.sha256.encode()))
    return out


def open_folder(root: Path) -> PlainFolder | None:
    """A scanned :class:`PlainFolder` for ``root`` when it holds no acrelease index, else None."""
    if (root / INDEX_NAME).exists() or (root / INDEX_NAME).is_symlink():
        return None
    folder = PlainFolder(root)
    folder.scan()
    return folder


def print_plain(folder: PlainFolder, listen: str, host: str, port: int, scheme: str, workers: str,
                out: TextIO) -> None:
    """The start-up lines of plain mode: what is served, and the command that makes releases."""
    state = folder.state
    print(f"acrelease serve: plain folder {folder.root} (no {INDEX_NAME}): {len(state.images)} ESP images "
          f"served as AutoConnect's updateserver.py did; `acrelease import {folder.root} --name PROJECT` "
          "turns it into releases", file=out)
    print(f"listening on {scheme}://{listen}:{port} ({workers}); devices reach it as {scheme}://{host}:{port}",
          file=out)
    if not state.images:
        print(f"nothing to serve yet: copy ESP images into {folder.root} (served within 2 s), "
              f"or publish releases into it (`acrelease publish --catalog {folder.root}`)", file=out)
    holding = sorted({image.artifact.file.rpartition("/")[0] for image in state.images.values()})
    for rel in holding:
        print(f'  AutoConnect: update.host = "{host}"; update.port = {port}; update.uri = "{rel or "."}";',
              file=out)
    out.flush()
