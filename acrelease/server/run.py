"""``serve(settings)``: validate, bind, print the URLs devices use, run until signalled.

One worker serves in this process; ``workers > 1`` pre-forks that many processes that share
one listening socket (the kernel spreads connections). The catalog is loaded and verified
*before* forking, so files are hashed once and their verified bytes are shared by every worker
(copy-on-write pages that nobody writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import ipaddress
import logging
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from types import FrameType
from typing import Any, TextIO
from urllib.parse import urlsplit

from acrelease import chips
from acrelease.access import AccessPolicy, Credentials, load_credentials
from acrelease.admin.app import AdminApp
from acrelease.admin.dashboard import Dashboard, FleetReader
from acrelease.errors import CatalogError, FleetError, ServeError
from acrelease.fleet.postgres import mask
from acrelease.fleet.store import SchemaError, is_postgres, open_store, store_path
from acrelease.server import channels, logs, metrics
from acrelease.server.app import UpdateApp, create_app
from acrelease.server.catalog import Catalog, CatalogState
from acrelease.server.decisions import DecisionLog
from acrelease.server.plain import PlainFolder, open_folder, print_plain
from acrelease.server.settings import ServerSettings
from acrelease.server.tls import server_context, sha1_fingerprint
from acrelease.server.worker import serve_socket

__all__ = ["ServerSettings", "bind", "print_urls", "serve"]

log = logging.getLogger("acrelease.server")


def serve(settings: ServerSettings) -> None:
    """Run the update server until SIGINT/SIGTERM. Raises :class:`ServeError` (one line) when
    the catalog directory is missing or the address cannot be bound, and :class:`CatalogError`
    when its index cannot be read and no last good generation exists to serve instead (a
    catalog the server cannot read is not "nothing published yet")."""
    root = settings.catalog
    if not root.is_dir():
        raise ServeError(f"{root}: catalog directory not found; publish into it first "
                         "(`acrelease publish --catalog DIR`) or pass the right --catalog")
    if settings.workers < 1:
        raise ServeError(f"--workers {settings.workers}: must be at least 1")
    # Files are read once here, before forking: a bad one is one line at start-up, not a dead worker.
    tls = server_context(settings.tls_cert, settings.tls_key) if settings.tls_cert else None
    access = AccessPolicy.from_files(settings.auth_file, settings.allow_file, catalog_auth=settings.catalog_auth)
    admin_credentials = _admin_credentials(settings)
    decisions = logs.configure_logging(settings.log_level, settings.log_format)
    _check_fleet_store(settings)
    sock = bind(settings.host, settings.port)  # a busy port is one line, nothing else
    try:
        admin_sock = bind(*settings.admin) if settings.admin else None
    except ServeError:
        sock.close()
        raise
    catalog = Catalog(root.resolve(), poll_interval=settings.poll_interval,
                      recheck_interval=settings.recheck_interval)
    try:
        catalog.load(refuse_unreadable=True)
    except CatalogError:
        sock.close()
        if admin_sock is not None:
            admin_sock.close()
        raise
    # No index (nor a last good one): the folder is served as updateserver.py did, until one appears.
    plain = open_folder(root.resolve()) if catalog.state.index.generation == 0 else None
    if plain is not None:
        _print_plain(settings, plain, sock.getsockname()[1])
    else:
        print_urls(settings, catalog.state, sock.getsockname()[1])
    print_fleet(settings)
    if admin_sock is not None:
        host, port = admin_sock.getsockname()[:2]
        print(f"admin: dashboard http://{_url_host(host)}:{port}/, metrics /metrics, health /healthz"
              f"{' (HTTP Basic)' if admin_credentials else ''}", flush=True)
    block = metrics.SharedBlock(settings.workers) if admin_sock is not None else None
    shared = _Shared(catalog, sock, decisions, access, tls, plain, admin_sock, admin_credentials, block)
    if settings.workers == 1:
        try:
            _worker(settings, shared, 0)
        finally:
            _close(shared)
    else:
        _prefork(settings, shared)


def _check_fleet_store(settings: ServerSettings) -> None:
    """Refuse to start on a fleet store this acrelease cannot use (an older schema, no PostgreSQL
    driver). A store that does not exist yet or cannot be reached now is not a reason: workers
    create it, or keep answering checks and retry (docs/architecture.md, "State")."""
    if not settings.fleet_enabled:
        return
    if is_postgres(settings.fleet):
        from acrelease.fleet.postgres import require_driver

        require_driver(str(settings.fleet))
    else:
        try:  # a --fleet path this version cannot use is one line at start-up, before anything is bound
            store_path(settings.fleet, settings.catalog)
        except FleetError as exc:
            raise ServeError(str(exc)) from None
    try:
        store = open_store(settings.fleet, settings.catalog, create=False)
    except SchemaError:
        raise
    except FleetError:
        return
    store.close()


def _admin_credentials(settings: ServerSettings) -> Credentials | None:
    """The admin listener's credentials, read once before forking; refuses an admin port that
    others could reach without them (the dashboard shows every device of the fleet)."""
    if settings.admin is None:
        return None
    host, port = settings.admin
    if port == settings.port and port != 0:
        raise ServeError(f"--admin {host}:{port}: the admin listener needs a port of its own, not the device "
                         f"port {settings.port}")
    if settings.admin_auth is None:
        if not _loopback(host):
            raise ServeError(f"--admin {host}:{port}: not a loopback address, so the dashboard would be open to "
                             "the network; add --admin-auth FILE (`acrelease auth add USER --file FILE`) or bind "
                             "127.0.0.1")
        return None
    return load_credentials(settings.admin_auth)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _close(shared: _Shared) -> None:
    shared.sock.close()
    if shared.admin_sock is not None:
        shared.admin_sock.close()


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
    """Tell the operator what to put into sketches (the README's set-up shows them)."""
    out = out or sys.stdout
    host, port = _public_host(settings, port)
    scheme = "https" if settings.tls_cert else "http"
    base = f"{scheme}://{host}:{port}"
    workers = f"{settings.workers} worker{'s' if settings.workers != 1 else ''}"
    print(f"acrelease serve: catalog {settings.catalog} (generation {state.index.generation}, "
          f"{len(state.blobs)} files served)", file=out)
    print(f"listening on {scheme}://{settings.host}:{port} ({workers}); devices reach it as {base}", file=out)
    if settings.tls_cert:
        print(f'TLS: ESP8266 client.setFingerprint("{sha1_fingerprint(settings.tls_cert)}"); '
              "ESP32 client.setCACert(<your CA's PEM>)", file=out)
    for (project, name), target in sorted(state.index.targets.items()):
        print(f"\n{project}/{name} ({target.chip}, {channels.describe_newest(target)})", file=out)
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


def _print_plain(settings: ServerSettings, plain: PlainFolder, port: int) -> None:
    host, public_port = _public_host(settings, port)
    workers = f"{settings.workers} worker{'s' if settings.workers != 1 else ''}"
    print_plain(plain, settings.host, host, public_port, "https" if settings.tls_cert else "http", workers,
                sys.stdout)


def print_fleet(settings: ServerSettings, out: TextIO | None = None) -> None:
    """Where devices are recorded (README "Fleet control")."""
    out = out or sys.stdout
    if not settings.fleet_enabled:
        print("\nfleet registry: off (--no-fleet); no devices recorded, no rollouts, pins or assignments", file=out)
    else:
        spec = settings.fleet
        # Checked by serve() before binding; a URL is shown without its password.
        where = mask(spec) if spec and is_postgres(spec) else str(store_path(spec, settings.catalog))
        print(f"\nfleet registry: {where} (acrelease devices --catalog {settings.catalog})", file=out)
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


def _run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(main())
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


@dataclass(frozen=True)
class _Shared:
    """What ``serve`` prepares once and every worker process inherits."""

    catalog: Catalog
    sock: socket.socket
    decisions: DecisionLog
    access: AccessPolicy
    tls: ssl.SSLContext | None
    plain: PlainFolder | None = None
    admin_sock: socket.socket | None = None
    admin_credentials: Credentials | None = None
    block: metrics.SharedBlock | None = None
    """Every worker's counts (one row each), shared across fork; ``None`` without the admin listener."""


def _worker(settings: ServerSettings, shared: _Shared, row: int) -> None:
    """Serve in this process; ``row`` is this worker's row of the shared metrics block."""
    counts = metrics.Metrics(shared.block, row) if shared.block is not None else None
    app = create_app(settings, shared.catalog, shared.decisions, shared.access, shared.plain, counts)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        background = [loop.create_task(logs.flush_logs_periodically())]
        servers = [serve_socket(app, settings, shared.sock, stop, shared.tls)]
        if counts is not None and shared.block is not None and shared.admin_sock is not None:
            servers.append(serve_socket(_admin_app(settings, shared, app, counts, shared.block), settings,
                                        shared.admin_sock, stop, None))
            background.append(loop.create_task(_publish_metrics(app, counts)))
        try:
            await asyncio.gather(*servers)
        finally:
            for task in background:
                task.cancel()
            logs.flush_logs()

    _run(main)


def _admin_app(settings: ServerSettings, shared: _Shared, app: UpdateApp, counts: metrics.Metrics,
               block: metrics.SharedBlock) -> AdminApp:
    """The admin listener's app in this worker: health, metrics, and the dashboard when there is a fleet."""
    dashboard = None
    if settings.fleet_enabled:
        spec, root = settings.fleet, settings.catalog
        reader = FleetReader(lambda: open_store(spec, root), shared.catalog)
        dashboard = Dashboard(reader, shared.catalog, catalog_dir=str(settings.catalog),
                              loop_limit=settings.loop_limit)
    return AdminApp(shared.catalog, counts, block.totals, credentials=shared.admin_credentials,
                    checks=app.health_checks, dashboard=dashboard)


async def _publish_metrics(app: UpdateApp, counts: metrics.Metrics) -> None:
    """Copy this worker's counts (and the gauges read off the app) into shared memory, so that
    whichever worker answers a scrape sums current figures."""
    while True:
        counts.set(metrics.GENERATION, app.catalog.state.index.generation)
        counts.set(metrics.RELOAD_ERRORS, app.catalog.reload_errors)
        counts.set(metrics.DOWNLOADS_ACTIVE, app.downloads.active)
        if app.fleet is not None:
            counts.set(metrics.FLEET_ERRORS, app.fleet.failures)
            counts.set(metrics.FLEET_DROPPED, app.fleet.dropped)
            counts.set(metrics.FLEET_LAG, int(app.fleet.lag() * 1000))
        counts.publish()
        await asyncio.sleep(metrics.PUBLISH_INTERVAL)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_WATCHED = {*STOP_SIGNALS, signal.SIGCHLD}


def _prefork(settings: ServerSettings, shared: _Shared) -> None:
    """Fork ``settings.workers`` workers and keep that many running until SIGINT/SIGTERM.

    The stop signals and SIGCHLD are blocked in this process and taken one at a time with
    ``sigtimedwait`` in the loop below, never delivered as an interruption: a stop that arrives
    while a worker is being forked waits until the worker is recorded, so every worker gets
    the SIGTERM. Workers also ask the kernel for SIGTERM when the parent dies (PR_SET_PDEATHSIG),
    so none keeps serving after a parent that was killed outright.
    """
    children: dict[int, tuple[float, int]] = {}
    """pid -> (time.monotonic() at start, metrics row): a replacement takes over the row of the worker it replaces."""
    parent = os.getpid()
    # A Python-level handler too, in case a signal reaches another thread (where it is not
    # blocked): it only sets a flag, which the loop checks at least once a second.
    stopping = False

    def on_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {signum: signal.signal(signum, on_stop) for signum in STOP_SIGNALS}
    signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
    try:
        for row in range(settings.workers):
            _spawn(settings, shared, parent, children, row)
        respawn_at: list[tuple[float, int]] = []  # (when to fork a replacement, its row), one per dead worker
        while not stopping:
            timeout = max(0.0, min(respawn_at)[0] - time.monotonic()) if respawn_at else 1.0
            info = signal.sigtimedwait(_WATCHED, timeout)
            if info is not None and info.si_signo in STOP_SIGNALS:
                break
            for pid, status in _reap():
                child = children.pop(pid, None)
                if child is not None:
                    started, row = child
                    log.error("worker %d %s; starting a new one", pid, describe_exit(status))
                    now = time.monotonic()
                    # A worker that dies at once is not restarted in a tight loop.
                    respawn_at.append((now + 1.0 if now - started < 1.0 else now, row))
            while respawn_at and min(respawn_at)[0] <= time.monotonic():
                due = min(respawn_at)
                respawn_at.remove(due)
                _spawn(settings, shared, parent, children, due[1])
    finally:
        _stop_workers(children, settings.shutdown_grace + 5.0)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _WATCHED)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _close(shared)


def _spawn(settings: ServerSettings, shared: _Shared, parent: int, children: dict[int, tuple[float, int]],
           row: int) -> None:
    """Fork one worker and record it (called with the stop signals blocked)."""
    logs.flush_logs()  # nothing buffered may be written twice
    pid = os.fork()
    if pid == 0:  # the worker
        code = 0
        try:
            for signum in STOP_SIGNALS:
                signal.signal(signum, signal.SIG_DFL)  # until its event loop installs its own
            _die_with(parent)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _WATCHED)  # a stop already pending ends it here
            _worker(settings, shared, row)
        except BaseException:
            log.exception("worker %d failed", os.getpid())
            code = 1
        finally:
            logs.flush_logs()
            os._exit(code)
    children[pid] = (time.monotonic(), row)


def _die_with(parent: int) -> None:
    """Ask the kernel to send this process SIGTERM when ``parent`` dies (Linux prctl
    PR_SET_PDEATHSIG, see prctl(2)); if the parent is already gone, stop now."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl: nobody would send the signal
        os._exit(0)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _reap() -> list[tuple[int, int]]:
    """Every child that has exited, with its wait status, without blocking."""
    reaped: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append((pid, status))


def describe_exit(status: int) -> str:
    """``exited with code 3`` or ``killed by SIGKILL``, from a wait status."""
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        return f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"killed by {name}"


def _stop_workers(children: dict[int, tuple[float, int]], grace: float) -> None:
    """SIGTERM every worker (each finishes its answers in flight), wait for them for up to
    ``grace`` seconds, then SIGKILL what is left; a second stop signal kills at once."""
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while children:
        for pid, _ in _reap():
            children.pop(pid, None)
        if not children:
            return
        left = deadline - time.monotonic()
        info = signal.sigtimedwait(_WATCHED, max(0.0, min(left, 1.0))) if left > 0 else None
        if left <= 0 or (info is not None and info.si_signo in STOP_SIGNALS):
            log.error("stopping: %d worker(s) still running; killing them", len(children))
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for pid in list(children):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
            return
