"""The HTTP/1 front end runs the app's first step eagerly, as the current task of a spare Task that
carries the app on only when it waits: every kind of wait an ASGI app may do must work there (the
slow password hash runs in a thread), and so must what needs ``asyncio.current_task()``."""

from __future__ import annotations

import asyncio
import contextvars
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
    answer = ask(app, path)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\r\n\r\nok")


def ask(app: Any, path: str) -> bytes:
    """``GET path`` over a real socket to ``serve_socket(app)`` on uvloop; the whole answer."""
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

    return uvloop.run(main())


REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")


async def task_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Uses what needs ``asyncio.current_task()`` before its first ``await`` (the step the
    front end runs eagerly, outside a Task of its own), then checks it after the wait."""
    if scope["type"] != "http":
        return
    before = asyncio.current_task()
    assert before is not None
    REQUEST_ID.set(scope["path"])
    result = b""
    if scope["path"] == "/timeout":  # entered and left before any wait
        async with asyncio.timeout(5):
            result = b"in time"
    elif scope["path"] == "/timeout-expires":  # entered before the first wait, expires during it
        try:
            async with asyncio.timeout(0.05):
                await asyncio.get_running_loop().create_future()  # never done
        except TimeoutError:
            result = b"timed out"
    elif scope["path"] == "/wait_for":
        result = await asyncio.wait_for(asyncio.sleep(0.01, b"waited"), 5)
    elif scope["path"] == "/cancel-self":  # as in a Task: delivered at the next wait
        before.cancel()
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            result = b"cancelled"
    elif scope["path"] == "/same-task":
        await asyncio.sleep(0.01)
        after = asyncio.current_task()
        result = b"same task" if after is before and REQUEST_ID.get() == "/same-task" else b"other task"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(result)).encode())]})
    await send({"type": "http.response.body", "body": result})


@pytest.mark.parametrize(("path", "body"), [
    ("/timeout", b"in time"), ("/timeout-expires", b"timed out"), ("/wait_for", b"waited"),
    ("/same-task", b"same task"), ("/cancel-self", b"cancelled"),
])
def test_app_step_before_its_first_await_runs_in_a_task(path: str, body: bytes) -> None:
    # asyncio.timeout() raised "Timeout should be used inside a task" in the eager step (a 500).
    answer = ask(task_app, path)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\r\n\r\n" + body), answer


def test_many_requests_each_answered_with_timeouts_and_waits() -> None:
    # Eager steps that complete share the spare task; one that waits takes it: all get answers.
    async def main() -> list[bytes]:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.setblocking(False)
        stop = asyncio.Event()
        server = asyncio.create_task(serve_socket(task_app, ServerSettings(catalog=Path(".")), sock, stop))

        async def one(path: str) -> bytes:
            reader, writer = await asyncio.open_connection(*sock.getsockname())
            writer.write(f"GET {path} HTTP/1.0\r\n\r\n".encode())
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            return answer

        try:
            first = await asyncio.gather(*(one(("/timeout", "/same-task", "/timeout-expires")[i % 3])
                                           for i in range(60)))
            # A step that cancels its own task does not leave that task to the next requests.
            return [*first, await one("/cancel-self"), await one("/timeout"), await one("/same-task")]
        finally:
            stop.set()
            await server
            sock.close()

    import uvloop

    answers = uvloop.run(main())
    expected = (b"in time", b"same task", b"timed out")
    assert all(a.endswith(expected[i % 3]) for i, a in enumerate(answers[:60])), answers
    assert [a.rsplit(b"\r\n", 1)[1] for a in answers[60:]] == [b"cancelled", b"in time", b"same task"]
