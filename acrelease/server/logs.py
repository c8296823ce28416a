"""Logging of the server process: batched, with decision lines formatted in bulk.

``acrelease serve`` logs one line per decision (INFO); at DEBUG each is preceded by what the
request told the policy (the parsed device facts, the channel), and the catalog says what each
reload verified. Written naively (a LogRecord, a formatted timestamp and a write per request)
that cost a fleet's check rate about a third; here lines are queued, formatted in bulk and
written every FLUSH_INTERVAL (WARNING and above at once).

Two formats (``serve --log-format``): ``text``, ``2026-11-27 21:50:00,123 INFO message`` in
local time, and ``json``, one JSON object per line for log shippers, with ``time`` (UTC,
RFC 3339), ``level``, ``logger``, ``message`` and, on decision lines, the decision's fields
(:func:`acrelease.server.decisions.fields`). Every record of the process goes through the
same handler (it sits on the root logger), so no line of the other format slips in.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from typing import TextIO

from acrelease.errors import ServeError
from acrelease.server.decisions import (
    Decision,
    DecisionLog,
    device_details,
    format_details,
    format_line,
    json_members,
)

FORMATS = ("text", "json")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DECISION_LOGGER = "acrelease.server"
"""The logger decision lines are written as (that of :mod:`acrelease.server.decisions`)."""


class _Formatter(logging.Formatter):
    """The text format. ``asctime`` rendered once per second: ``time.localtime`` makes glibc stat
    /etc/localtime on every call."""

    _second = -1
    _text = ""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self.stamp(record.created)

    def stamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second, self._text = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._text},{int((created - second) * 1000):03d}"

    def decisions(self, entries: list[tuple[float, Decision]], debug: bool) -> str:
        """Queued decisions as lines, in bulk (the check path's log cost is mostly this)."""
        stamp = self.stamp
        if debug:
            return "".join([f"{stamp(at)} DEBUG {format_details(entry)}\n{stamp(at)} INFO {format_line(entry)}\n"
                            for at, entry in entries])
        return "".join([f"{stamp(at)} INFO {format_line(entry)}\n" for at, entry in entries])


class _JSONFormatter(_Formatter):
    """The json format: one object per line; newlines in messages and tracebacks are escaped
    by JSON, so a line is always one whole record."""

    def stamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second, self._text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._text}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {"time": self.stamp(record.created), "level": record.levelname,
                                       "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False, default=str)

    def decisions(self, entries: list[tuple[float, Decision]], debug: bool) -> str:
        stamp = self.stamp
        lines = []
        for at, entry in entries:
            moment = stamp(at)
            if debug:
                lines.append(json.dumps({"time": moment, "level": "DEBUG", "logger": DECISION_LOGGER,
                                         "message": format_details(entry), **device_details(entry)},
                                        ensure_ascii=False) + "\n")
            lines.append(f'{{"time":"{moment}","level":"INFO","logger":"{DECISION_LOGGER}",'
                         f'"message":{_json(format_line(entry))},{json_members(entry)}}}\n')
        return "".join(lines)


_json = json.encoder.encode_basestring


class _BatchedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Log lines go out in batches: flushed every FLUSH_INTERVAL by each worker (and at once
    from WARNING up), so a fleet's checks do not each pay a write system call.

    ``pending`` holds decision records appended by the event loop (``BatchedLog``) without a
    lock; they are formatted and written ahead of any other record, so the order of lines is
    kept. Draining takes the handler's lock (one drain at a time) and removes exactly the
    entries it formats (see ``_drain``), so an entry appended meanwhile by another thread is
    left for the next drain, never lost."""

    def __init__(self, stream: TextIO, formatter: _Formatter, *, debug: bool = False) -> None:
        super().__init__(stream)
        self.setFormatter(formatter)
        self.lines = formatter
        self.debug = debug
        self.pending: list[tuple[float, Decision]] = []

    def emit(self, record: logging.LogRecord) -> None:
        # Called with the lock held (Handler.handle).
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
        """Format and write what is queued; the caller holds the lock. The list is never
        swapped for a new one (a writer on another thread may hold the old one and append to it
        after the swap: that line would be lost); its first ``count`` entries are copied and
        then deleted, each step atomic, and whatever was appended in between stays queued."""
        pending = self.pending
        count = len(pending)
        if count:
            entries = pending[:count]
            del pending[:count]
            self.stream.write(self.lines.decisions(entries, self.debug))


FLUSH_INTERVAL = 0.25


class BatchedLog(DecisionLog):
    """Decision records queued on the batched handler and formatted in bulk when written (every
    FLUSH_INTERVAL or 256 records), not one LogRecord each: measured, formatting each line at
    request time cost about a fifth of the check rate."""

    def __init__(self, handler: _BatchedHandler) -> None:
        self.handler = handler
        self.pending = handler.pending
        self.on = logging.getLogger(DECISION_LOGGER).isEnabledFor(logging.INFO)

    def enabled(self) -> bool:
        return self.on

    def write(self, entry: Decision) -> None:
        pending = self.pending
        pending.append((time.time(), entry))  # atomic; no lock on the check path (_drain says why)
        if len(pending) >= 256:
            self.handler.flush()


def log_level(level: str) -> int:
    """``--log`` in any case (``debug``, ``Debug``, ``DEBUG``) as a logging level."""
    name = level.strip().upper()
    if name not in LEVELS:
        raise ServeError(f"--log {level}: not a log level; use one of {', '.join(LEVELS)} (any case)")
    numeric: int = logging.getLevelName(name)
    return numeric


def configure_logging(level: str, log_format: str = "text", stream: TextIO | None = None) -> DecisionLog:
    """Set the ``acrelease`` log level and, unless the embedding program configured logging,
    a batched handler writing ``log_format`` to ``stream`` (stderr); returns where the app
    writes its decision lines."""
    numeric = log_level(level)
    if log_format not in FORMATS:
        raise ServeError(f"--log-format {log_format}: use one of {', '.join(FORMATS)}")
    logging.getLogger("acrelease").setLevel(numeric)
    # The server process logs a lot: skip what the records would collect and nobody prints
    # (the logging docs' "Optimization" section).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    if logging.getLogger("acrelease").handlers or root.handlers:
        return DecisionLog()
    if stream is None:
        stream = open(sys.stderr.fileno(), "w", buffering=1 << 16, encoding="utf-8",  # noqa: SIM115
                      errors="backslashreplace", closefd=False)
    formatter = _JSONFormatter() if log_format == "json" else _Formatter()
    handler = _BatchedHandler(stream, formatter, debug=numeric <= logging.DEBUG)
    # On the root logger: other libraries' warnings (asyncio's, say) come out in the same format.
    root.addHandler(handler)
    return BatchedLog(handler)


def flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _BatchedHandler):
            handler.flush()


async def flush_logs_periodically() -> None:
    while True:
        await asyncio.sleep(FLUSH_INTERVAL)
        flush_logs()
