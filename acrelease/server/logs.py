"""Logging of the server process: batched, with decision lines formatted in bulk.

``acrelease serve`` logs one line per decision (INFO). Written naively (a LogRecord, a
formatted timestamp and a write per request) that cost a fleet's check rate about a third; here
lines are queued, formatted in bulk and written every FLUSH_INTERVAL (WARNING and above at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from typing import TextIO

from acrelease.errors import ServeError
from acrelease.server.decisions import Decision, DecisionLog, format_line


class _Formatter(logging.Formatter):
    """``asctime`` rendered once per second: ``time.localtime`` makes glibc stat
    /etc/localtime on every call."""

    _second = -1
    _text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self.stamp(record.created)

    def stamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second, self._text = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._text},{int((created - second) * 1000):03d}"


class _BatchedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Log lines go out in batches: flushed every FLUSH_INTERVAL by each worker (and at once
    from WARNING up), so a fleet's checks do not each pay a write system call.

    ``pending`` holds decision records appended by the event loop (``BatchedLog``); they are
    formatted and written ahead of any other record, so the order of lines is kept."""

    def __init__(self, stream: TextIO, formatter: _Formatter) -> None:
        super().__init__(stream)
        self.setFormatter(formatter)
        self.stamps = formatter
        self.pending: list[tuple[float, Decision]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._drain()
            self.stream.write(self.format(record) + self.terminator)
            if record.levelno >= logging.WARNING:
                self.stream.flush()
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        with self.lock or contextlib.nullcontext():
            self._drain()
            super().flush()

    def _drain(self) -> None:
        if self.pending:
            entries, self.pending = self.pending, []  # list appends are atomic; swap, then write
            stamp = self.stamps.stamp
            self.stream.write("".join([f"{stamp(at)} INFO {format_line(entry)}\n" for at, entry in entries]))


FLUSH_INTERVAL = 0.25


class BatchedLog(DecisionLog):
    """Decision records queued on the batched handler and formatted in bulk when written (every
    FLUSH_INTERVAL or 256 records), not one LogRecord each: measured, formatting each line at
    request time cost about a fifth of the check rate."""

    def __init__(self, handler: _BatchedHandler) -> None:
        self.handler = handler
        self.on = logging.getLogger("acrelease.server").isEnabledFor(logging.INFO)

    def enabled(self) -> bool:
        return self.on

    def write(self, entry: Decision) -> None:
        pending = self.handler.pending
        pending.append((time.time(), entry))
        if len(pending) >= 256:
            self.handler.flush()


def configure_logging(level: str) -> DecisionLog:
    """Set the ``acrelease`` log level and, unless the embedding program configured logging,
    a batched stderr handler; returns where the app writes its decision lines."""
    logger = logging.getLogger("acrelease")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ServeError(f"--log {level}: not a logging level (DEBUG, INFO, WARNING, ERROR)")
    logger.setLevel(numeric)
    # The server process logs a lot: skip what the records would collect and nobody prints
    # (the logging docs' "Optimization" section).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    if logger.handlers or logging.getLogger().handlers:
        return DecisionLog()
    stream = open(sys.stderr.fileno(), "w", buffering=1 << 16, encoding="utf-8",  # noqa: SIM115
                  errors="backslashreplace", closefd=False)
    handler = _BatchedHandler(stream, _Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    return BatchedLog(handler)


def flush_logs() -> None:
    for handler in logging.getLogger("acrelease").handlers:
        handler.flush()


async def flush_logs_periodically() -> None:
    while True:
        await asyncio.sleep(FLUSH_INTERVAL)
        flush_logs()
