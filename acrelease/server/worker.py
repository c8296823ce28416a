"""One worker's serving loop: the app's lifespan, the listening socket, graceful shutdown.

``serve_socket`` is what ``acrelease.server.run`` runs in each worker process (and what the
socket tests run in a thread): HTTP/1.x connections are handled by
:class:`acrelease.server.http1.HTTP1Protocol`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

from acrelease.server.asgi import ASGIApp, Message
from acrelease.server.http1 import HTTP1Protocol, ServerState, address_of
from acrelease.server.settings import ServerSettings

log = logging.getLogger("acrelease.server.http1")


class Lifespan:
    """Runs the app's ASGI lifespan protocol (startup before serving, shutdown after)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.outbox: asyncio.Queue[Message] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._main())
        await self.inbox.put({"type": "lifespan.startup"})
        reply = await self.outbox.get()
        if reply["type"] == "lifespan.startup.failed":
            raise RuntimeError(reply.get("message") or "application startup failed")

    async def shutdown(self) -> None:
        if self.task is None or self.task.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.outbox.get(), timeout=10)

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        try:
            await self.app(scope, self.inbox.get, self._send)
        except Exception:
            log.exception("application lifespan failed")
        finally:
            # An app without lifespan support ends without answering: treat as started.
            self.outbox.put_nowait({"type": "lifespan.startup.complete"})

    async def _send(self, message: Message) -> None:
        await self.outbox.put(message)


async def serve_socket(app: ASGIApp, settings: ServerSettings, sock: Any, stop: asyncio.Event,
                       tls: ssl.SSLContext | None = None) -> None:
    """Serve ``app`` on the listening socket ``sock`` until ``stop`` is set, then shut down
    gracefully: stop accepting, close idle connections, let answers in flight finish for up to
    ``settings.shutdown_grace`` seconds, abort the rest, run the lifespan shutdown."""
    loop = asyncio.get_running_loop()
    lifespan = Lifespan(app)
    await lifespan.startup()
    state = ServerState(app, settings, address_of(sock.getsockname()))
    server = await loop.create_server(lambda: HTTP1Protocol(state), sock=sock, backlog=4096, ssl=tls,
                                      ssl_handshake_timeout=settings.head_timeout if tls else None)
    sweeper = loop.create_task(state.sweep())
    try:
        await stop.wait()
    finally:
        state.stopping = True
        server.close()
        for connection in list(state.connections):
            connection.shutdown()
        deadline = loop.time() + settings.shutdown_grace
        while state.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(state.connections):
            if connection.transport is not None:
                connection.transport.abort()
        sweeper.cancel()
        if state.carrier is not None:
            state.carrier.task.cancel()  # the spare one: it carries nothing
        await lifespan.shutdown()
