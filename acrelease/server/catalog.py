"""The serving side of the catalog: a verified snapshot of ``index.json``, its files held in memory.

* ``index.json`` is the only thing trusted (docs/architecture.md, practice 8): a file the index does not name is
  never served, and a URL is never mapped onto the filesystem by string.
* Each named file is verified once, off the event loop: a regular file whose real path lies
  under the catalog root's real path (a symlink out is refused), whose size, SHA-256 and MD5
  equal the index. A file that fails is logged loudly and answered 404 (docs/protocol.md H.5).
* Each verified file is held as one private, read-only copy of the bytes that were hashed, shared
  by all requests (memory is flat in the number of clients) and, for the catalog loaded before
  ``--workers`` fork, by all workers (copy-on-write pages that nobody writes). Not an ``mmap``
  of the file: a file truncated behind the server's back would SIGBUS the worker mid-send, and
  one rewritten in place would reach devices under the old ``x-MD5``. The cost is memory in the
  size of the published catalog (every artifact the index names, once per worker for files
  published after the fork).
* Verification results are cached by (path, sha256, size, mtime, inode), so a reload does not
  re-read or re-hash unchanged files.
* A watcher polls ``index.json``'s stat every ``poll_interval`` and swaps in a new
  :class:`CatalogState` in one assignment (no torn read, no restart). A broken index keeps the
  previous good state (so does a deleted one, once an index was ever written there). Every
  ``recheck_interval`` served files are re-stat'ed, so a file replaced or deleted behind the
  server's back stops being served.
* At start there is no previous state: an index that cannot be read is replaced by the last good
  generation copy under ``.acrelease/`` (``acrelease.catalog.history``), with one warning line;
  with none, ``acrelease serve`` refuses to start (``load(refuse_unreadable=True)``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from acrelease.catalog import history
from acrelease.catalog.index import (
    INDEX_NAME,
    Artifact,
    CatalogIndex,
    PublishedRelease,
    TargetIndex,
)
from acrelease.errors import CatalogError
from acrelease.server import tasks
from acrelease.server.channels import describe_newest

log = logging.getLogger("acrelease.server.catalog")

FileKey = tuple[str, str, int, int, int, int]
"""(real path, sha256, size, mtime_ns, inode, device) of a verified file."""
IndexSignature = tuple[int, int, int, int] | None


@dataclass(frozen=True, slots=True)
class Entry:
    """One published file, as the index describes it."""

    target: TargetIndex
    release: PublishedRelease
    artifact: Artifact


@dataclass(frozen=True, slots=True, eq=False)  # identity: never compare the held bytes
class Verified:
    key: FileKey
    data: memoryview
    """Read-only view of the verified bytes of the whole file."""


@dataclass(frozen=True)
class CatalogState:
    """An immutable snapshot: the index, its files by path, and the verified bytes."""

    index: CatalogIndex = field(default_factory=CatalogIndex)
    files: dict[str, Entry] = field(default_factory=dict)
    """``project/target/name`` -> entry, for every file the index names."""
    blobs: dict[str, Verified] = field(default_factory=dict)
    """Files that passed verification, by the same key."""
    problems: dict[str, str] = field(default_factory=dict)
    """Files that failed verification -> why."""

    def target(self, project: str, target: str) -> TargetIndex | None:
        return self.index.target(project, target)

    def data(self, artifact: Artifact) -> memoryview | None:
        """The verified bytes of ``artifact``, or ``None`` (answer 404)."""
        verified = self.blobs.get(artifact.file)
        if verified is None or verified.key[1] != artifact.sha256:
            return None
        return verified.data


def index_signature(root: Path) -> IndexSignature:
    try:
        st = os.stat(root / INDEX_NAME)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)


class Catalog:
    """Holds the current :class:`CatalogState` of one catalog root and keeps it fresh."""

    def __init__(self, root: Path, *, poll_interval: float = 0.25, recheck_interval: float = 5.0) -> None:
        self.root = root
        self._root_real = os.path.realpath(root)
        self.poll_interval = poll_interval
        self.recheck_interval = recheck_interval
        self.state = CatalogState()
        self._signature: IndexSignature = None
        self._loaded = False
        self.reload_errors = 0
        """Times ``index.json`` could not be read since start (the previous state kept serving)."""
        self._verified: dict[FileKey, Verified] = {}
        self._task: asyncio.Task[None] | None = None

    # -- synchronous core (runs in a worker thread, or before forking) -----------------------

    def load(self, *, refuse_unreadable: bool = False) -> bool:
        """(Re)read ``index.json`` if it changed since the last load; True if a new state is in.

        On the first load an index that cannot be used (broken, or deleted after an index was
        written) gives way to the last good generation copy, with a warning; when there is none,
        ``refuse_unreadable`` raises :class:`CatalogError` (``serve`` refuses to start) and
        otherwise nothing is served until the index is repaired."""
        signature = index_signature(self.root)
        if self._loaded and signature == self._signature:
            return False
        first = not self._loaded
        self._signature = signature
        self._loaded = True
        current = history.read_index(self.root)
        if current.index is not None:
            self._install(current.index)
            return True
        problem = current.problem or f"{self.root / INDEX_NAME}: cannot be read"
        self.reload_errors += 1
        if not first:
            log.error("catalog: %s; still serving generation %d; %s", problem, self.state.index.generation,
                      history.repair_hint(self.root))
            return False
        good = history.last_good(self.root)
        if good is None:
            message = (f"{problem}; no last good generation under {self.root / history.GENERATIONS_DIR} to fall "
                       f"back to; run `acrelease repair --catalog {self.root}` (it rebuilds the index from the "
                       "published files)")
            if refuse_unreadable:
                raise CatalogError(message)
            log.error("catalog: %s", message)
            return False
        log.warning("catalog: %s; serving generation %d, the last good one (%s); %s", problem, good.generation,
                    good.path.relative_to(self.root), history.repair_hint(self.root))
        self._install(good.index)
        return True

    @property
    def loaded(self) -> bool:
        """The index has been read (or found absent) at least once."""
        return self._loaded

    def recheck(self) -> bool:
        """Re-stat every file of the current index; True if what is served changed."""
        before = self.state
        self._install(before.index)
        return self.state.blobs.keys() != before.blobs.keys() or any(
            self.state.blobs[k].key != before.blobs[k].key for k in self.state.blobs)

    def _install(self, index: CatalogIndex) -> None:
        files: dict[str, Entry] = {}
        blobs: dict[str, Verified] = {}
        problems: dict[str, str] = {}
        for target, release, artifact in index.artifacts():
            files[artifact.file] = Entry(target, release, artifact)
            verified, problem = self._verify(artifact)
            if verified is not None:
                blobs[artifact.file] = verified
            else:
                problems[artifact.file] = problem
        previous = self.state
        for name, problem in problems.items():
            if previous.problems.get(name) != problem or previous.index is not index:
                log.warning("catalog: %s is not served (answered 404): %s", name, problem)
        self._verified = {v.key: v for v in blobs.values()}
        if previous.index is index and previous.blobs == blobs and previous.problems == problems:
            return  # a recheck that found nothing new: keep the state (and what is cached on it)
        self.state = CatalogState(index, files, blobs, problems)  # one assignment: atomic swap
        if previous.index is not index:
            log.info("catalog: generation %d loaded, %d files served, %d refused",
                     index.generation, len(blobs), len(problems))
            if log.isEnabledFor(logging.DEBUG):
                for (project, name), target in sorted(index.targets.items()):
                    log.debug("catalog: %s/%s (%s): %d releases, %s", project, name, target.chip,
                              len(target.releases), describe_newest(target))

    def _verify(self, artifact: Artifact) -> tuple[Verified | None, str]:
        relative = artifact.file
        if relative.startswith("/") or "\\" in relative or "\x00" in relative:
            return None, "not a relative catalog path"
        real = os.path.realpath(os.path.join(self._root_real, relative))
        if not real.startswith(self._root_real + os.sep):
            return None, "resolves outside the catalog (symlink or '..')"  # symlinks out (docs/protocol.md F.34)
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            return None, f"cannot open ({exc.strerror})"
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None, "not a regular file"
            if st.st_size != artifact.size:
                return None, f"size {st.st_size} differs from the index ({artifact.size})"
            key: FileKey = (real, artifact.sha256, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)
            cached = self._verified.get(key)
            if cached is not None:
                return cached, ""
            # A private copy, not an mmap of the file: a file truncated behind our back would
            # kill the process with SIGBUS in the middle of a send, and one rewritten in place
            # would reach devices under the old x-MD5. What is served is exactly what was hashed.
            with open(fd, "rb", closefd=False) as handle:
                data = handle.read(artifact.size + 1)
        except OSError as exc:
            return None, f"cannot read ({exc.strerror})"
        finally:
            os.close(fd)
        if len(data) != artifact.size:
            return None, f"size {len(data)} differs from the index ({artifact.size})"
        if hashlib.sha256(data).hexdigest() != artifact.sha256:
            return None, "SHA-256 differs from the index"
        if hashlib.md5(data).hexdigest() != artifact.md5:
            return None, "MD5 differs from the index"
        log.debug("catalog: %s read and verified (%d bytes, SHA-256 and MD5 as indexed)", relative, artifact.size)
        return Verified(key, memoryview(data)), ""

    # -- asynchronous watcher -----------------------------------------------------------------

    async def start(self) -> None:
        """Load now (in a thread) unless already loaded, then watch in the background."""
        if not self._loaded:
            await asyncio.to_thread(self.load)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        task, self._task = self._task, None
        await tasks.cancel(task)

    async def _watch(self) -> None:
        next_recheck = time.monotonic() + self.recheck_interval
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                if index_signature(self.root) != self._signature:
                    await asyncio.to_thread(self.load)
                    next_recheck = time.monotonic() + self.recheck_interval
                elif time.monotonic() >= next_recheck:
                    await asyncio.to_thread(self.recheck)
                    next_recheck = time.monotonic() + self.recheck_interval
            except Exception:  # keep watching whatever happens; the previous state stays
                log.exception("catalog: reload failed; still serving the previous state")

