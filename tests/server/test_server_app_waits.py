"""The HTTP/1 front end runs the app eagerly and hands it to a Task only when it waits: every kind
of wait an ASGI app may do must work there (the slow password hash runs in a thread)."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from acrelease.server.settings import ServerSettings
from acrelease.server.worker import serve_socket


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    loop = asyncio.get_running_loop()
    waits = {
        "/sleep": lambda: asyncio.sleep(0.02),
        "/thread": lambda: loop.run_in_executor(None, time.sleep, 0.05),
        "/shield": lambda: asyncio.shield(loop.run_in_executor(None, time.sleep, 0.05)),
        "/to_thread": lambda: asyncio.to_thread(time.sleep, 0.05),
        "/bare": lambda: asyncio.sleep(0),
    }
    await waits[scope["path"]]()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize("path", ["/sleep", "/thread", "/shield", "/to_thread", "/bare"])
def test_app_that_waits_on_any_future_is_answered(path: str) -> None:
    async def main() -> bytes:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.setblocking(False)
        stop = asyncio.Event()
        server = asyncio.create_task(serve_socket(app, ServerSettings(catalog=Path(".")), sock, stop))
        try:
            reader, writer = await asyncio.open_connection(*sock.getsockname())
            writer.write(f"GET {path} HTTP/1.0\r\n\r\n".encode())
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            return answer
        finally:
            stop.set()
            await server
            sock.close()

    import uvloop

    answer = uvloop.run(main())
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\r\n\r\nok")
