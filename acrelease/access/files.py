"""Files that the server re-reads when they change, and atomic rewrites of them.

Reload rule (documented contract): a :class:`WatchedFile` ``stat()``s its path at most once per
``interval`` seconds, from whichever call comes first (``poll()`` on the request path costs one
``time.monotonic()`` otherwise), and re-parses only when the stat signature (device, inode,
size, mtime, ctime) differs. A file that is missing or does not parse keeps the previous good
value in force, and the problem is logged once per broken version of the file, never raised:
an administrator saving a half-edited file must not take the fleet down or let everyone in.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from acrelease.errors import AccessError
from acrelease.fsutil import write_atomic
from acrelease.inputs import MIB, InputProblem, read_regular

__all__ = ["AccessError", "WatchedFile", "read_file", "write_atomically"]

log = logging.getLogger("acrelease.access")
T = TypeVar("T")
MAX_ACCESS_FILE = 16 * MIB  # 100,000 credential lines or MACs are a few MiB
Signature = tuple[int, int, int, int, int]


def _signature(st: os.stat_result) -> Signature:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def read_file(path: Path, what: str) -> tuple[bytes, Signature]:
    """The bytes of ``path`` and the signature of what was read; raises :class:`AccessError`.

    Bounded, and a device, FIFO or folder is refused at once (``acrelease/inputs.py``); the
    signature comes from ``fstat`` of the open file, so it describes the bytes read even if
    the file is replaced now.
    """
    try:
        data, info = read_regular(path, MAX_ACCESS_FILE)
    except InputProblem as refused:
        raise AccessError(f"{path}: cannot read the {what}: {refused.problem}") from None
    return data, _signature(info)


class WatchedFile(Generic[T]):
    """A parsed file that follows its changes on disk (see the module docstring)."""

    def __init__(self, path: Path, what: str, parse: Callable[[bytes], T], *, interval: float = 1.0) -> None:
        """Load ``path`` now; raises :class:`AccessError` (one line) if it is unreadable or malformed.
        ``parse`` gets the file's bytes and raises :class:`AccessError` naming ``file:line``."""
        self.path = path
        self.what = what
        self.interval = interval
        self._parse = parse
        data, self._signature = read_file(path, what)
        self.value: T = parse(data)
        self.error: str | None = None
        """The last reload problem (previous value still in force), ``None`` when the file is good."""
        self._bad: Signature | None = None
        self._next_check = time.monotonic() + interval

    def poll(self) -> bool:
        """Cheap; call it on every use. Reloads if due and changed; True when a new value was loaded."""
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + self.interval
        return self.reload_if_changed()

    def reload_if_changed(self) -> bool:
        """Stat now (ignoring the interval), reload if changed. Never raises; True on a new value."""
        try:
            current = _signature(os.stat(self.path))
        except OSError as exc:
            self._fail(None, f"{self.path}: cannot read the {self.what}: {exc.strerror or exc}")
            return False
        if current == self._signature or current == self._bad:
            return False
        try:
            data, signature = read_file(self.path, self.what)
            value = self._parse(data)
        except AccessError as exc:
            self._fail(current, str(exc))
            return False
        self.value, self._signature, self._bad = value, signature, None
        if self.error is not None:
            log.warning("%s is good again, reloaded", self.path)
        else:
            log.info("%s changed, reloaded", self.path)
        self.error = None
        return True

    def _fail(self, signature: Signature | None, message: str) -> None:
        # Log once per broken version, not once per interval: a broken file may sit for hours.
        if message != self.error or signature != self._bad:
            log.error("%s; keeping the previous %s", message, self.what)
        self.error, self._bad = message, signature


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``: temp file in the same folder, fsync, ``os.replace``, fsync
    the folder. Readers (the server) see the old or the new file, never a torn one."""
    try:
        write_atomic(path, data, mode)
    except OSError as exc:
        raise AccessError(f"{path}: cannot write: {exc.strerror or exc}") from None
