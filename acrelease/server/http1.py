"""acrelease's HTTP/1.x front end: an ``asyncio.Protocol`` (on uvloop) that runs an ASGI app.

Why our own: the production servers' parsers reject ``GET bin/fw.bin HTTP/1.0`` (a target
without a leading slash), which AutoConnect sends (docs/protocol.md F.3), and a lean protocol is
what keeps ``Connection: close`` version checks at nginx's rate (docs/architecture.md, "The hot path").

* Request heads are parsed by :mod:`acrelease.server.h1parse` (strict); limits: request-target
  -> 414, head size or line count -> 431, no complete head in time -> 408, a body -> 413,
  malformed -> 400. Each of those answers closes the connection; nothing hangs.
* HTTP/1.0 closes after the answer; HTTP/1.1 keeps alive (idle timeout) unless
  ``Connection: close``; pipelined requests are answered in order.
* Flow control: ``send`` awaits while the transport's buffer is above its high-water mark
  (``pause_writing``/``resume_writing``), so slow clients cost no memory; a client that reads
  nothing for ``send_timeout`` seconds is dropped (F.4 only needs the other direction).
* The app runs as in a Task (``asyncio.current_task()``, ``asyncio.timeout()`` and contextvars
  work from its first line) but without a Task per request: see :class:`Carrier`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import socket
import time
from asyncio.tasks import _enter_task, _leave_task
from collections.abc import Coroutine
from email.utils import formatdate
from typing import Any, ClassVar, cast

from acrelease.server.asgi import ZERO_COPY, ASGIApp, Message
from acrelease.server.h1parse import HeadError, Request, parse_head
from acrelease.server.settings import ServerSettings

log = logging.getLogger("acrelease.server.http1")

STATUS_LINES: dict[int, bytes] = {
    code: f"HTTP/1.1 {code} {text}\r\n".encode() for code, text in {
        200: "OK", 204: "No Content", 206: "Partial Content", 304: "Not Modified", 400: "Bad Request",
        401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
        408: "Request Timeout", 413: "Content Too Large", 414: "URI Too Long",
        416: "Range Not Satisfiable", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
        501: "Not Implemented", 503: "Service Unavailable", 505: "HTTP Version Not Supported",
    }.items()}
NO_BODY_STATUS = frozenset({204, 304})
# Shared by every scope (read-only by convention; rebuilt per request they cost a few us each).
_ASGI_VERSION = {"version": "3.0", "spec_version": "2.3"}
_EXTENSIONS = {ZERO_COPY: True}
WRITE_HIGH_WATER = 256 * 1024
TCP_CORK: int | None = getattr(socket, "TCP_CORK", None)  # Linux only


class ClientGone(OSError):
    """Raised by ``send`` when the client has disconnected (ASGI allows an OSError here)."""


class _Date:
    """The ``Date`` header, formatted once per second."""

    second = 0
    value = b""
    heads: ClassVar[dict[tuple[int, bool], bytes]] = {}
    """Whole response heads without headers from the app (the policy 304), for this second."""

    @classmethod
    def header(cls) -> bytes:
        now = int(time.time())
        if now != cls.second:
            cls.second, cls.value = now, b"date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
            cls.heads = {}
        return cls.value


class ServerState:
    """What all connections of one worker share."""

    def __init__(self, app: ASGIApp, settings: ServerSettings, address: tuple[str, int] | None = None) -> None:
        self.app = app
        self.settings = settings
        self.address = address
        self.loop = asyncio.get_running_loop()
        self.connections: set[HTTP1Protocol] = set()
        self.carrier: Carrier | None = None
        """The Task that eager app steps run as (HTTP1Protocol._start)."""
        self.stopping = False
        self.scheme = "https" if settings.tls_cert else "http"
        self.cork = TCP_CORK is not None and not settings.tls_cert
        """Cork plain TCP answers that close the connection (HTTP1Protocol._cork)."""
        shortest = min(settings.head_timeout, settings.keep_alive_timeout, settings.send_timeout)
        self.sweep_interval = max(0.01, min(0.5, shortest / 5))
        """Timeouts fire at most this late."""

    async def sweep(self) -> None:
        """Fire the connections' due timeouts (head 408, keep-alive idle, send stall)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.sweep_interval)
            now = loop.time()
            for connection in [c for c in self.connections if 0.0 < c.deadline <= now]:
                connection._on_timer()


class HTTP1Protocol(asyncio.Protocol):
    """One client connection."""

    # Defaults at class level: a Connection: close check creates one protocol per request, and
    # setting twenty attributes in __init__ cost a microsecond of it. All are immutable values;
    # an instance attribute replaces one the first time it is assigned.
    transport: asyncio.Transport | None = None
    client: tuple[str, int] | None = None
    server: tuple[str, int] | None = None
    deadline = 0.0  # loop time when the pending timeout fires; 0 = none (see ServerState.sweep)
    idle = False  # between requests of a keep-alive connection
    busy = False  # a request is being answered
    gone = False
    closing = False
    reading_paused = False
    write_paused = False
    drain: asyncio.Future[None] | None = None
    task: asyncio.Task[None] | None = None
    disconnected: asyncio.Future[None] | None = None
    # Per-response state.
    request: Request | None = None
    head: bytes | None = None
    head_sent = False
    complete = False
    body_delivered = False
    body_allowed = True
    keep_alive = False

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.settings = state.settings
        self.loop = state.loop  # not get_running_loop(): on 3.11 that is a getpid() system call each
        self.buffer = bytearray()

    # -- asyncio callbacks ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.client = address_of(transport.get_extra_info("peername"))
        self.server = self.state.address
        self.state.connections.add(self)
        self._arm(self.settings.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self.state.connections.discard(self)
        self._disarm()
        if self.drain is not None and not self.drain.done():
            self.drain.set_result(None)
        if self.disconnected is not None and not self.disconnected.done():
            self.disconnected.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.idle and not self.buffer:
            self._arm(self.settings.head_timeout)  # a new request has begun: head timeout applies
            self.idle = False
        if not self.buffer and not self.busy and data.endswith(b"\r\n\r\n") and data[:1] != b"\r" \
                and data.find(b"\r\n\r\n") == len(data) - 4:
            self._head(data[:-4])  # the common case: one whole head in one segment, no copies
            return
        self.buffer += data
        if self.busy:
            if len(self.buffer) > self.settings.max_header_bytes and self.transport is not None:
                self.transport.pause_reading()  # pipelined data waits; do not buffer without bound
                self.reading_paused = True
            return
        self._next_request()

    def eof_received(self) -> bool | None:
        """The client half-closed: finish the answer in flight (keep the transport), then close."""
        self.keep_alive = False
        if self.busy:
            return True
        return None  # nothing in flight: let the transport close

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.drain is not None and not self.drain.done():
            self.drain.set_result(None)

    # -- request heads ------------------------------------------------------------------------------

    def _next_request(self) -> None:
        if self.busy or self.closing or self.gone:
            return
        buffer = self.buffer
        while buffer[:2] == b"\r\n":
            del buffer[:2]  # RFC 9112 2.2: ignore empty lines before a request-line
        end = buffer.find(b"\r\n\r\n")
        settings = self.settings
        if end < 0:
            line_end = buffer.find(b"\r\n")
            if line_end < 0 and len(buffer) > settings.max_target_bytes + 64:
                self._fail(414, "request-target too long")
            elif line_end >= 0 and len(buffer) - line_end > settings.max_header_bytes:
                self._fail(431, "request head too large")
            elif buffer.count(b"\r\n") > settings.max_header_lines + 1:
                self._fail(431, "too many header lines")
            return
        head = bytes(buffer[:end])
        del buffer[:end + 4]
        self._head(head)

    def _head(self, head: bytes) -> None:
        """A complete request head (without its blank line): check the limits, parse, start."""
        settings = self.settings
        line_end = head.find(b"\r\n")
        if line_end >= 0 and len(head) - line_end > settings.max_header_bytes:
            self._fail(431, "request head too large")
            return
        parsed = parse_head(head, max_target=settings.max_target_bytes, max_lines=settings.max_header_lines)
        if isinstance(parsed, HeadError):
            self._fail(parsed.status, parsed.reason)
            return
        self._disarm()
        self._start(parsed)

    def _start(self, request: Request) -> None:
        self.busy = True
        self.request = request
        self.head = None
        self.head_sent = False
        self.complete = False
        self.body_delivered = False
        self.body_allowed = request.method != "HEAD"
        self.keep_alive = request.keep_alive and not self.state.stopping
        scope: dict[str, Any] = {
            "type": "http", "asgi": _ASGI_VERSION,
            "http_version": request.http_version, "method": request.method, "scheme": self.state.scheme,
            "path": request.path, "raw_path": request.raw_path, "query_string": request.query,
            "root_path": "", "headers": request.headers, "client": self.client, "server": self.server,
            "extensions": _EXTENSIONS,
        }
        # Run the app eagerly, inside this callback: a version check completes without ever
        # waiting, so it needs no Task of its own and no extra loop iteration (this is the hot
        # path of a fleet's Connection: close checks). The step runs as the current task of the
        # state's carrier, a real Task, so asyncio.current_task() and asyncio.timeout() work in
        # it as in any Task; an app that waits (flow control on a download, a password hash) is
        # carried on by that very Task from where it stopped (see Carrier).
        coroutine = self._run(scope)
        context = contextvars.copy_context()  # the request's own, as a Task would have
        carrier = self.state.carrier
        if carrier is None or carrier.task.cancelling():
            carrier = self.state.carrier = Carrier(self.loop)
        task = carrier.task
        try:
            _enter_task(self.loop, task)
        except RuntimeError:  # called from inside a running Task, not from the loop: a Task of its own
            self.task = self.loop.create_task(coroutine, context=context)
            return
        try:
            waiting_on = context.run(coroutine.send, None)
        except StopIteration:
            return
        finally:
            _leave_task(self.loop, task)
        self.state.carrier = None  # taken: the next eager step gets a new one
        self.task = carrier.carry(coroutine, waiting_on, context)  # keep a strong reference

    async def _run(self, scope: dict[str, Any]) -> None:
        try:
            await self.state.app(scope, self._receive, self._send)
        except ClientGone:
            pass
        except Exception:
            log.exception("unhandled error in the application")
            if not self.head_sent and self.head is None and not self.gone:
                self._fail(500, "application error")
                return
        if not self.complete and not self.gone and self.transport is not None:
            self.transport.abort()  # a half-sent answer must not look complete
            return
        self._finish()

    def _finish(self) -> None:
        self.busy = False
        self.request = None
        self.task = None
        if self.gone or self.transport is None:
            return
        if not self.keep_alive:
            self.closing = True
            self.transport.close()
            return
        self.idle = True
        self._arm(self.settings.keep_alive_timeout)
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()
        if self.buffer:
            # Pipelined requests: answered in order, from the loop (not recursively, as the
            # app may have run eagerly inside _next_request).
            self.idle = False
            self._arm(self.settings.head_timeout)
            self.loop.call_soon(self._next_request)

    # -- ASGI receive/send ----------------------------------------------------------------------------

    async def _receive(self) -> Message:
        if not self.body_delivered:
            self.body_delivered = True  # requests never carry a body (413 otherwise)
            return {"type": "http.request", "body": b"", "more_body": False}
        if self.disconnected is None:
            self.disconnected = self.loop.create_future()
        if not self.gone:
            await self.disconnected
        return {"type": "http.disconnect"}

    async def _send(self, message: Message) -> None:
        if self.gone:
            raise ClientGone("client disconnected")
        kind = message["type"]
        if kind == "http.response.start":
            if self.head is not None:
                raise RuntimeError("response already started")
            self.head = self._response_head(int(message["status"]), message.get("headers", ()))
            return
        if kind != "http.response.body" or self.head is None or self.complete:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        body = message.get("body", b"")
        more = bool(message.get("more_body", False))
        transport = self.transport
        assert transport is not None
        if not self.head_sent:
            self.head_sent = True
            if not more and not self.keep_alive and self.state.cork:
                self._cork(transport)
            if body and self.body_allowed:
                transport.writelines((self.head, body))
            else:
                transport.write(self.head)
        elif body and self.body_allowed:
            transport.write(body)
        if not more:
            self.complete = True
            return
        if self.write_paused and not self.gone:
            self.drain = self.loop.create_future()
            self._arm(self.settings.send_timeout)
            await self.drain
            self._disarm()
            if self.gone:
                raise ClientGone("client disconnected")

    @staticmethod
    def _cork(transport: asyncio.Transport) -> None:
        """The whole answer is in this write and the connection closes right after it: cork the
        socket so the kernel sends the answer and the FIN in one segment when we close (Linux
        ignores the cork on close), not two: one packet less through the TCP stack per
        Connection: close check; measured with benchmarks/bench_serve.py, CPU per check 52 -> 46 us.
        Plain TCP only (TLS closes with its own close_notify exchange)."""
        sock = transport.get_extra_info("socket")  # cached: connection_made asked for peername
        if sock is not None:
            try:  # noqa: SIM105 (contextlib.suppress: a context manager object per check, ~0.3 us)
                sock.setsockopt(socket.IPPROTO_TCP, TCP_CORK, 1)
            except OSError:
                pass  # the client is gone already: nothing to merge

    def _response_head(self, status: int, headers: Any) -> bytes:
        if status in NO_BODY_STATUS:
            self.body_allowed = False
        if not headers:
            # The version check's 304: the same bytes for every device within a second.
            if self.body_allowed:
                self.keep_alive = False  # the body is delimited by closing the connection
            date = _Date.header()
            key = (status, self.keep_alive)
            head = _Date.heads.get(key)
            if head is None:
                head = _Date.heads[key] = b"".join((
                    STATUS_LINES.get(status) or f"HTTP/1.1 {status} Status\r\n".encode(), date,
                    b"server: acrelease\r\n", b"" if self.keep_alive else b"connection: close\r\n", b"\r\n"))
            return head
        parts = [STATUS_LINES.get(status) or f"HTTP/1.1 {status} Status\r\n".encode(), _Date.header(),
                 b"server: acrelease\r\n"]
        has_length = False
        for name, value in headers:
            if name.lower() == b"content-length":
                has_length = True
            parts.append(b"%s: %s\r\n" % (name, value))
        if not has_length and self.body_allowed and status not in NO_BODY_STATUS:
            self.keep_alive = False  # the body is delimited by closing the connection
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    # -- errors and timers ------------------------------------------------------------------------

    def _fail(self, status: int, reason: str) -> None:
        """Answer a request the front end refuses (or a timeout) and close the connection."""
        self.closing = True
        self._disarm()
        if self.transport is None or self.gone:
            return
        peer = self.client[0] if self.client else "-"
        log.info("- %s - - -> %d %s", peer, status, reason)
        body = STATUS_LINES.get(status, b"HTTP/1.1 400 Bad Request\r\n")[9:].rstrip(b"\r\n") + b"\n"
        self.transport.write(b"".join((STATUS_LINES.get(status, STATUS_LINES[400]), _Date.header(),
                                       b"server: acrelease\r\ncontent-type: text/plain\r\n",
                                       b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body), body)))
        self.transport.close()

    def _on_timer(self) -> None:
        self.deadline = 0.0
        if self.gone or self.transport is None:
            return
        if self.busy:
            log.info("- %s - - -> dropped: read nothing for %.0f s", self.client[0] if self.client else "-",
                     self.settings.send_timeout)
            self.transport.abort()
        elif self.idle and not self.buffer:
            self.transport.close()  # idle keep-alive connection
        else:
            self._fail(408, "no complete request head in time")

    def _arm(self, delay: float) -> None:
        # A deadline checked by ServerState.sweep, not a TimerHandle per connection: arming and
        # cancelling a timer for every short-lived check costs more than the sweep.
        self.deadline = self.loop.time() + delay

    def _disarm(self) -> None:
        self.deadline = 0.0

    def shutdown(self) -> None:
        """Graceful stop: close now if idle, else after the answer in flight."""
        self.keep_alive = False
        if not self.busy and self.transport is not None:
            self.closing = True
            self.transport.close()


class Carrier:
    """A real Task that is the current task while an app coroutine runs its first step eagerly
    (``HTTP1Protocol._start``), and that carries the coroutine on if it waits.

    Why: outside a Task, ``asyncio.current_task()`` is ``None`` and ``asyncio.timeout()`` raises
    "Timeout should be used inside a task". A Task per request costs a version check a few
    microseconds (``benchmarks/bench_check.py``); this one is shared by every step that completes
    without waiting (most checks) and replaced only when a step waits and it takes that
    coroutine. So the app contract is that of a Task: the task a step sees is the one that
    resumes it, and a timeout entered before the first ``await`` cancels that task when it
    expires. The one difference, harmless for a step that completes without waiting: steps of
    different requests that never wait see the same task object.
    Python 3.12's eager task factory does the same for every Task; 3.11 has no such thing.
    """

    __slots__ = ("cargo", "task")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.cargo: asyncio.Future[tuple[Coroutine[Any, Any, None], Any, contextvars.Context]] = \
            loop.create_future()
        self.task = loop.create_task(self._carry())

    def carry(self, coroutine: Coroutine[Any, Any, None], waiting_on: Any,
              context: contextvars.Context) -> asyncio.Task[None]:
        """Hand over ``coroutine``, stopped at its first wait on ``waiting_on``; returns the Task."""
        if self.cargo.done() or self.task.cancelling():
            # The step cancelled its own task. A Task delivers that at the coroutine's next wait
            # by cancelling what it waits on (Task.__step); so does this, and a new Task carries
            # the coroutine on (this one ends cancelled).
            loop = self.task.get_loop()
            if waiting_on is None or not waiting_on.cancel():
                waiting_on = loop.create_future()
                waiting_on.cancel()
            return loop.create_task(_resume(coroutine, waiting_on, context))
        self.cargo.set_result((coroutine, waiting_on, context))
        return self.task

    async def _carry(self) -> None:
        coroutine, waiting_on, context = await self.cargo
        await _resume(coroutine, waiting_on, context)


async def _resume(coroutine: Coroutine[Any, Any, None], waiting_on: Any, context: contextvars.Context) -> None:
    """Drive ``coroutine``, which already ran up to its first wait on ``waiting_on``, as a Task
    would: wait for what it waits on, then resume it (or throw the failure into it), each step
    in the request's ``context``."""
    while True:
        try:
            if waiting_on is None:
                await asyncio.sleep(0)  # a bare yield: just let the loop run once
            else:
                # The coroutine's own `await fut` left fut's blocking flag set; a Task clears it
                # before waiting (Task.__step), else awaiting fut again here is refused with
                # "await wasn't used with future" whenever fut is still pending.
                if getattr(waiting_on, "_asyncio_future_blocking", False):
                    waiting_on._asyncio_future_blocking = False
                await waiting_on
        except BaseException as exc:  # includes cancellation: delivered into the coroutine
            try:
                waiting_on = context.run(coroutine.throw, exc)
            except StopIteration:
                return
            continue
        try:
            waiting_on = context.run(coroutine.send, None)
        except StopIteration:
            return


def address_of(value: Any) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return (str(value[0]), int(value[1]))
    return None
