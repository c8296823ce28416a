"""``serve(settings)``: validate, bind, print the URLs devices use, run until signalled.

One worker serves in this process; ``workers > 1`` pre-forks that many processes that share
one listening socket (the kernel spreads connections). The catalog is loaded and verified
*before* forking, so files are hashed once and their mmaps are shared by every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any, TextIO
from urllib.parse import urlsplit

from acrelease import chips
from acrelease.errors import ServeError
from acrelease.server.app import DecisionLog, create_app
from acrelease.server.catalog import Catalog, CatalogState
from acrelease.server.http1 import serve_socket
from acrelease.server.settings import ServerSettings

__all__ = ["ServerSettings", "bind", "print_urls", "serve"]

log = logging.getLogger("acrelease.server")


def serve(settings: ServerSettings) -> None:
    """Run the update server until SIGINT/SIGTERM. Raises :class:`ServeError` (one line) when
    the catalog directory is missing or the address cannot be bound."""
    root = settings.catalog
    if not root.is_dir():
        raise ServeError(f"{root}: catalog directory not found; publish into it first "
                         "(`acrelease publish --catalog DIR`) or pass the right --catalog")
    if settings.workers < 1:
        raise ServeError(f"--workers {settings.workers}: must be at least 1")
    decisions = _configure_logging(settings.log_level)
    sock = bind(settings.host, settings.port)  # first: a busy port is one line, nothing else
    catalog = Catalog(root.resolve(), poll_interval=settings.poll_interval,
                      recheck_interval=settings.recheck_interval)
    catalog.load()
    print_urls(settings, catalog.state, sock.getsockname()[1])
    if settings.workers == 1:
        _worker(settings, catalog, sock, decisions)
    else:
        _prefork(settings, catalog, sock, decisions)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket, or :class:`ServeError` naming the address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(4096)  # a thundering herd of devices reconnecting after a power cut
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServeError(f"{host}:{port}: port in use; stop the other server or pass --port N") from None
        if exc.errno == errno.EACCES:
            raise ServeError(f"{host}:{port}: permission denied; use a port above 1023") from None
        raise ServeError(f"{host}:{port}: cannot listen ({exc.strerror})") from None
    sock.setblocking(False)
    return sock


def print_urls(settings: ServerSettings, state: CatalogState, port: int, out: TextIO | None = None) -> None:
    """Tell the operator what to put into sketches (issue 2: README set-up prints these)."""
    out = out or sys.stdout
    host, port = _public_host(settings, port)
    base = f"http://{host}:{port}"
    workers = f"{settings.workers} worker{'s' if settings.workers != 1 else ''}"
    print(f"acrelease serve: catalog {settings.catalog} (generation {state.index.generation}, "
          f"{len(state.blobs)} files served)", file=out)
    print(f"listening on http://{settings.host}:{port} ({workers}); devices reach it as {base}", file=out)
    for (project, name), target in sorted(state.index.targets.items()):
        newest = next((str(r.version) for r in target.releases if not r.yanked), "nothing published")
        print(f"\n{project}/{name} ({target.chip}, newest {newest})", file=out)
        chip = chips.lookup(target.chip)
        updater = "httpUpdate" if chip is not None and chip.arch == "ESP32" else "ESPhttpUpdate"
        print(f'  sketch:      {updater}.update(client, "{base}/update/{project}/{name}", FW_VERSION);',
              file=out)
        print(f"  catalog:     {base}/_catalog?op=list&path={project}/{name}", file=out)
        print(f'  AutoConnect: update.host = "{host}"; update.port = {port}; '
              f'update.uri = "{project}/{name}";',
              file=out)
    if not state.index.targets:
        print("\nnothing published yet: `acrelease publish --catalog DIR` (served within 1 s)", file=out)
    out.flush()


def _public_host(settings: ServerSettings, port: int) -> tuple[str, int]:
    if settings.public_url:
        parts = urlsplit(settings.public_url if "//" in settings.public_url else "//" + settings.public_url)
        if parts.hostname:
            return parts.hostname, parts.port or port
    if settings.host not in ("", "0.0.0.0", "::"):
        return settings.host, port
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("10.255.255.255", 1))  # no packet is sent; picks the LAN interface
        address: str = probe.getsockname()[0]
        return address, port
    return socket.gethostname(), port


class _BatchedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Log lines go out in batches: flushed every FLUSH_INTERVAL by each worker (and at once
    from WARNING up), so a fleet's checks do not each pay a write system call.

    ``pending`` holds decision lines appended by the event loop (``BatchedLog``); they are
    written ahead of any record, so the order of lines is kept."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.pending: list[str] = []

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
            lines, self.pending = self.pending, []  # list appends are atomic; swap, then write
            self.stream.write("".join(lines))


FLUSH_INTERVAL = 0.25


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


class BatchedLog(DecisionLog):
    """Decision lines written straight into the batched handler's stream, formatted like the
    other log lines, without a LogRecord each (measured: a LogRecord per check cost about a
    third of the check rate)."""

    def __init__(self, handler: _BatchedHandler, formatter: _Formatter) -> None:
        self.handler = handler
        self.formatter = formatter
        self.on = logging.getLogger("acrelease.server").isEnabledFor(logging.INFO)

    def enabled(self) -> bool:
        return self.on

    def write(self, line: str) -> None:
        pending = self.handler.pending
        pending.append(f"{self.formatter.stamp(time.time())} INFO {line}\n")
        if len(pending) >= 64:  # small batches: no large strings for malloc to map and unmap
            self.handler.flush()


def _configure_logging(level: str) -> DecisionLog:
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
    handler = _BatchedHandler(stream)
    formatter = _Formatter("%(asctime)s %(levelname)s %(message)s")
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    return BatchedLog(handler, formatter)


def _flush_logs() -> None:
    for handler in logging.getLogger("acrelease").handlers:
        handler.flush()


async def _flush_logs_periodically() -> None:
    while True:
        await asyncio.sleep(FLUSH_INTERVAL)
        _flush_logs()


def _run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(main())
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def _worker(settings: ServerSettings, catalog: Catalog, sock: socket.socket, decisions: DecisionLog) -> None:
    app = create_app(settings, catalog, decisions)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        flusher = loop.create_task(_flush_logs_periodically())
        try:
            await serve_socket(app, settings, sock, stop)
        finally:
            flusher.cancel()
            _flush_logs()

    _run(main)


class _Stop(Exception):
    pass


def _prefork(settings: ServerSettings, catalog: Catalog, sock: socket.socket, decisions: DecisionLog) -> None:
    children: dict[int, float] = {}

    def spawn() -> None:
        _flush_logs()  # nothing buffered may be written twice
        pid = os.fork()
        if pid == 0:  # child
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            code = 0
            try:
                _worker(settings, catalog, sock, decisions)
            except BaseException:
                log.exception("worker %d failed", os.getpid())
                code = 1
            finally:
                os._exit(code)
        children[pid] = time.monotonic()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise _Stop

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for _ in range(settings.workers):
            spawn()
        while children:
            pid, status = os.wait()
            started = children.pop(pid, None)
            if started is None:
                continue
            log.error("worker %d exited (status %d); starting a new one", pid, status)
            if time.monotonic() - started < 1.0:
                time.sleep(1.0)  # do not spin if workers die at once
            spawn()
    except _Stop:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in list(children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    finally:
        sock.close()
