"""Reading a file the user named: bounded, and one line when it is not a file.

A path on the command line can be anything: a device (``/dev/zero`` never ends), a named pipe
(opening one waits for a writer), a folder, a socket, or a file far larger than anything
acrelease reads. :func:`read_input` is the one way such a path is read: it never blocks on
open, reads at most ``limit + 1`` bytes, and refuses everything but a regular file with one
line that says what the path is and what to pass instead.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from acrelease.errors import AcreleaseError

MIB = 1024 * 1024

# What a path that is not a regular file is, for the message (stat(2) file types).
_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
)


class InputProblem(Exception):
    """Why :func:`read_regular` refused a path, as a phrase to put after ``path:``.

    ``kind`` is what the path is when it is not a regular file (``"a folder"``), else ``None``.
    """

    def __init__(self, problem: str, kind: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.kind = kind


def _kind(mode: int) -> str | None:
    """What a non-regular file is (``"a folder"``...), ``None`` for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def size_text(count: int) -> str:
    if count >= MIB:
        return f"{count // MIB} MiB" if count % MIB == 0 else f"{count / MIB:.1f} MiB"
    return f"{count} bytes"


def read_regular(path: Path, limit: int) -> tuple[bytes, os.stat_result]:
    """The bytes of the regular file ``path`` (at most ``limit``) and its ``fstat``; else :class:`InputProblem`.

    The file is opened non-blocking, so that a FIFO fails at once instead of waiting for a
    writer, and its type is taken from the open descriptor, so what is checked is what is read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputProblem("no such file") from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # open(2) of a socket
            try:
                kind = _kind(os.stat(path).st_mode)
            except OSError:
                kind = None
            if kind is not None:
                raise InputProblem(f"is {kind}", kind) from None
        raise InputProblem(f"cannot be read ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
        kind = _kind(info.st_mode)
        if kind is not None:
            raise InputProblem(f"is {kind}", kind)
        too_big = InputProblem(f"larger than {size_text(limit)}")
        if info.st_size > limit:
            raise too_big
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise InputProblem(f"cannot be read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if len(data) > limit:  # it grew since fstat (or its size lies, as in /proc)
        raise too_big
    return data, info


def read_input(path: Path, *, what: str, limit: int, error: type[AcreleaseError],
               label: str = "", hint: str = "") -> bytes:
    """The bytes of the regular file ``path`` (at most ``limit``), or ``error`` with one line.

    ``what`` names the expected content ("an image file"), ``label`` the flag that took the
    path (``--tls-cert``; empty for an argument), ``hint`` what to do, appended after ``; ``:
    ``/dev/zero: is a character device, not an image file; pass the image file itself``.
    """
    try:
        return read_regular(path, limit)[0]
    except InputProblem as refused:
        where = f"{label} {path}" if label else str(path)
        if refused.kind is not None:
            problem = f"{refused.problem}, not {what}"
        elif refused.problem.startswith("larger"):
            problem = f"{refused.problem}: too large for {what}"
        else:
            problem = refused.problem
        raise error(f"{where}: {problem}{'; ' + hint if hint else ''}") from None
