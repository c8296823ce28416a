"""Atomic file replacement: the one way acrelease writes a file that someone else may be reading.

A file is written under a temporary name in its destination folder, flushed and fsynced, given its
mode, renamed over the destination (``os.replace``, atomic on POSIX) and the folder is fsynced so the
rename itself survives a crash. A reader (the server, a second command) sees the old file or the new
one, never a torn one; a write that fails leaves the old file and removes its temporary file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

TMP_MARK = ".acrelease-tmp-"
"""Every temporary name carries this mark (``.<name>.acrelease-tmp-XXXX``), so leftovers of a killed
writer are recognisable and can be swept (``acrelease.catalog.store``)."""


@contextlib.contextmanager
def replacing(dest: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a binary handle whose content replaces ``dest`` when the block ends without an error."""
    folder = dest.parent if str(dest.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}{TMP_MARK}", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fchmod(handle.fileno(), mode)  # mkstemp creates 0600 whatever the umask
            os.fsync(handle.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)


def write_atomic(dest: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``dest`` with ``data`` (see the module docstring)."""
    with replacing(dest, mode) as handle:
        handle.write(data)


def fsync_dir(folder: Path) -> None:
    """Make renames in ``folder`` durable; a filesystem that cannot fsync a folder is not an error."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
