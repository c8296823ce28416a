"""The one subprocess wrapper of acrelease: every external tool (``pio``) runs through here.

It streams the tool's output line by line (to a callback, for progress and ``--verbose``),
keeps the last lines for error messages, enforces a timeout, and lets a *watcher* stop the
tool early when its output shows it can only fail slowly (PlatformIO retrying an unreachable
registry for minutes). Stopping kills the whole process group: ``pio`` runs SCons as a child,
and killing only ``pio`` would leave SCons writing into the build directory.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from acrelease.errors import BuildError

TAIL_LINES = 40
_POLL_SECONDS = 0.2
_KILL_GRACE_SECONDS = 3.0


class Watcher(Protocol):
    """Looks at a tool's output as it arrives and may decide the run cannot succeed."""

    def feed(self, line: str) -> None:
        """Called with every output line (without its newline)."""

    def verdict(self) -> str | None:
        """A one-line reason to stop the tool now, or ``None`` to let it run. Polled often."""


@dataclass(frozen=True)
class ProcessResult:
    returncode: int
    tail: tuple[str, ...]
    """The last :data:`TAIL_LINES` lines of combined stdout/stderr."""
    elapsed: float

    @property
    def tail_text(self) -> str:
        return "\n".join(self.tail)


def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    on_line: Callable[[str], None] | None = None,
    watcher: Watcher | None = None,
    missing_hint: str = "",
    tail_lines: int = TAIL_LINES,
) -> ProcessResult:
    """Run ``argv`` to completion and return its exit status and output tail.

    A non-zero exit status is returned, not raised: the caller knows what failed (which env).
    Raises :class:`BuildError` when the program does not exist (``missing_hint`` says how to
    install it), when ``timeout`` seconds pass, or when ``watcher`` gives a verdict; in the
    last two cases the process group is killed first and the output tail is attached.
    """
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            start_new_session=True,  # own process group, so a kill reaches SCons too
        )
    except FileNotFoundError:
        raise BuildError(f"`{argv[0]}` was not found on PATH; {missing_hint}".rstrip("; ")) from None

    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_pump, args=(proc, lines), daemon=True)
    reader.start()
    tail: deque[str] = deque(maxlen=tail_lines)
    deadline = started + timeout
    try:
        finished = False
        while not finished:
            try:
                line = lines.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                line = ""
            else:
                if line is None:
                    finished = True
                else:
                    tail.append(line)
                    if on_line is not None:
                        on_line(line)
                    if watcher is not None:
                        watcher.feed(line)
            reason = watcher.verdict() if watcher is not None else None
            if reason is not None:
                _kill_group(proc)
                raise BuildError(reason, "\n".join(tail))
            if time.monotonic() > deadline:
                _kill_group(proc)
                raise BuildError(
                    f"`{' '.join(argv)}` did not finish within {timeout:.0f} s and was stopped",
                    "\n".join(tail),
                )
        returncode = proc.wait()
    finally:
        if proc.poll() is None:  # an exception from a callback: never leave the tool running
            _kill_group(proc)
        reader.join(timeout=_KILL_GRACE_SECONDS)
    return ProcessResult(returncode, tuple(tail), time.monotonic() - started)


def _pump(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
    assert proc.stdout is not None
    with proc.stdout:
        for raw in proc.stdout:
            lines.put(raw.rstrip("\r\n"))
    lines.put(None)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=_KILL_GRACE_SECONDS)
            return
        except subprocess.TimeoutExpired:
            continue
