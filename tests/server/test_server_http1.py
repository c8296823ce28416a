"""acrelease.server.h1parse (pure) and acrelease.server.http1 over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvloop
from hypothesis import given, settings
from hypothesis import strategies as st

from acrelease.server.app import create_app
from acrelease.server.h1parse import HeadError, Request, parse_head
from acrelease.server.run import bind
from acrelease.server.settings import ServerSettings
from acrelease.server.worker import serve_socket
from tests.factories.catalog import CatalogBuilder, demo_catalog, image_for

ESP8266_HEAD = (
    b"GET /update/demo/d1mini HTTP/1.0\r\nHost: 127.0.0.1:8000\r\nUser-Agent: ESP8266-http-Update\r\n"
    b"Connection: close\r\nx-ESP8266-Chip-ID: 15602487\r\nx-ESP8266-STA-MAC: DE:BA:7A:B1:E0:42\r\n"
    b"x-ESP8266-AP-MAC: DE:BA:7A:B1:E0:42\r\nx-ESP8266-free-space: 4194304\r\nx-ESP8266-sketch-size: 400000\r\n"
    b"x-ESP8266-sketch-md5: a43ad019932b627ab90ee35a94a764ee\r\nx-ESP8266-chip-size: 4194304\r\n"
    b"x-ESP8266-sdk-version: 2.5.0\r\nx-ESP8266-mode: sketch\r\nx-ESP8266-version: 1.0.0\r\nContent-Length: 0"
)


# -- the parser ------------------------------------------------------------------------------------

def parsed(head: bytes) -> Request:
    result = parse_head(head)
    assert isinstance(result, Request), result
    return result


def test_parse_esp8266_request() -> None:
    request = parsed(ESP8266_HEAD)
    assert request.method == "GET" and request.path == "/update/demo/d1mini" and request.http_version == "1.0"
    assert not request.keep_alive
    assert (b"x-esp8266-version", b"1.0.0") in request.headers  # names lower-cased
    assert (b"content-length", b"0") in request.headers  # F.2


@pytest.mark.parametrize(("target", "path", "raw", "query"), [
    (b"bin/fw.bin", "/bin/fw.bin", b"bin/fw.bin", b""),  # AutoConnect, F.3
    (b"/_catalog?op=list&path=.", "/_catalog", b"/_catalog", b"op=list&path=."),
    (b"http://ota.lan:8000/update/a/b?channel=beta", "/update/a/b", b"/update/a/b", b"channel=beta"),
    (b"HTTP://ota.lan", "/", b"/", b""),
    (b"/a%20b/%2e%2e/c", "/a b/../c", b"/a%20b/%2e%2e/c", b""),
    (b"/caf%C3%A9", "/caf\u00e9", b"/caf%C3%A9", b""),
])
def test_parse_targets(target: bytes, path: str, raw: bytes, query: bytes) -> None:
    request = parsed(b"GET " + target + b" HTTP/1.1\r\nHost: x")
    assert (request.path, request.raw_path, request.query) == (path, raw, query)
    assert request.keep_alive


@pytest.mark.parametrize(("head", "status"), [
    (b"GET / HTTP/1.1", 400),  # no Host
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b", 400),
    (b"GET / HTTP/2.0\r\nHost: a", 505),
    (b"GET /  HTTP/1.1\r\nHost: a", 400),
    (b"GET / HTTP/1.1\r\nHost : a", 400),  # blank before the colon
    (b"GET / HTTP/1.1\r\nHost: a\r\n folded", 400),  # obs-fold
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b", 400),
    (b"GET / HTTP/1.1\r\nHost: a\nX: b", 400),  # bare LF
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5", 413),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 1", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked", 413),
    (b"GET /a#b HTTP/1.1\r\nHost: a", 400),
    (b"GET /%ff HTTP/1.1\r\nHost: a", 400),
    (b"GET * HTTP/1.1\r\nHost: a", 400),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a", 414),
    (b"GET / HTTP/1.1\r\nHost: a" + b"\r\nX: y" * 101, 431),
    (b"\x16\x03\x01\x02\x00", 400),  # a TLS ClientHello
])
def test_parse_errors(head: bytes, status: int) -> None:
    result = parse_head(head)
    assert isinstance(result, HeadError) and result.status == status


def test_connection_close_and_http10() -> None:
    assert not parsed(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, close").keep_alive
    assert parsed(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive").keep_alive
    assert not parsed(b"GET / HTTP/1.0\r\nConnection: keep-alive").keep_alive


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400) | st.builds(lambda a, b: b"GET " + a + b" HTTP/1.1\r\n" + b,
                                           st.binary(max_size=50), st.binary(max_size=200)))
def test_parser_never_raises(head: bytes) -> None:
    result = parse_head(head)
    if isinstance(result, Request):
        assert result.path.startswith("/")
    else:
        assert 400 <= result.status < 600


# -- real sockets --------------------------------------------------------------------------------

@dataclass
class Running:
    port: int
    root: Path
    built: CatalogBuilder


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Running]:
    built = demo_catalog(tmp_path / "catalog")
    big = bytes([0xE9]) + hashlib.sha256(b"x").digest() * (2 * 1024 * 1024 // 32)  # ~2 MiB
    built.add("demo", "big", "esp8266", "1.0.0", big)
    built.write()
    settings_ = ServerSettings(catalog=built.root, host="127.0.0.1", port=0, head_timeout=0.5,
                               keep_alive_timeout=0.5, send_timeout=5)
    app = create_app(settings_)
    app.catalog.load()
    sock = bind("127.0.0.1", 0)
    loop = uvloop.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve_socket(app, settings_, sock, stop),))
    thread.start()
    try:
        yield Running(sock.getsockname()[1], built.root, built)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        loop.close()
        sock.close()


def exchange(port: int, data: bytes, *, timeout: float = 10) -> bytes:
    """Send ``data``, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(data)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def split(response: bytes) -> tuple[int, dict[str, list[str]], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.lower(), []).append(value.strip())
    return int(lines[0].split()[1]), headers, body


def test_esp8266_over_socket(server: Running) -> None:
    status, headers, body = split(exchange(server.port, ESP8266_HEAD + b"\r\n\r\n"))
    assert status == 200
    assert int(headers["content-length"][0]) == len(body) and body == image_for("esp8266", "1.1.0")
    assert headers["x-md5"] == [hashlib.md5(body).hexdigest()]
    assert "date" in headers and headers["server"] == ["acrelease"]


def test_no_leading_slash_http10(server: Running) -> None:
    status, _headers, body = split(exchange(server.port, b"GET demo/d1mini/demo-d1mini-1.0.0.bin HTTP/1.0\r\n"
                                                        b"Host: 127.0.0.1\r\nUser-Agent: ESP8266-http-Update\r\n\r\n"))
    assert status == 200 and body == image_for("esp8266", "1.0.0")


def test_keep_alive_and_pipelining(server: Running) -> None:
    catalog = (b"GET /_catalog?op=list&path=demo/d1mini HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
               b"User-Agent: ESP8266HTTPClient\r\nAccept-Encoding: identity;q=1,chunked;q=0.1,*;q=0\r\n"
               b"Connection: keep-alive\r\nContent-Length: 0\r\n\r\n")
    closing = b"GET /_catalog?op=list&path=. HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(catalog)
        first = conn.recv(65536)
        status, headers, body = split(first)
        assert status == 200 and int(headers["content-length"][0]) == len(body) and b"1.1.0" in body
        assert "transfer-encoding" not in headers  # F.8
        conn.sendall(catalog + closing)  # pipelined: answered in order, then closed
        rest = b""
        while chunk := conn.recv(65536):
            rest += chunk
    assert rest.count(b"HTTP/1.1 200 OK") == 2 and rest.endswith(b'[{"name":"demo","type":"directory"}]')


def test_keep_alive_idle_timeout_closes(server: Running) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(b"GET /_catalog?op=list&path=. HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := conn.recv(65536):  # returns b"" once the idle timeout closes it
            data += chunk
    assert data.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET /" + b"a" * 9000, 414),  # not even a complete request line
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 17000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431),
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789", 413),
    (b"GET /update/demo/d1mini HTTP/1.1\r\nHost: x\r\n", 408),  # never completed: head timeout
    (b"", 408),  # nothing at all
    (b"POST /update/demo/d1mini HTTP/1.0\r\n\r\n", 405),
])
def test_limits_and_errors(server: Running, request_bytes: bytes, status: int) -> None:
    answer = exchange(server.port, request_bytes)
    code, headers, body = split(answer)
    assert code == status
    assert int(headers["content-length"][0]) == len(body)
    assert str(server.root).encode() not in answer


def test_slow_reader_gets_whole_image_and_disconnects_are_harmless(server: Running) -> None:
    request = b"GET /demo/big/demo-big-1.0.0.bin HTTP/1.0\r\nHost: x\r\n\r\n"
    # A client that hangs up mid-download must not disturb the server.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(request)
        conn.recv(1000)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(request)
        received = conn.recv(8192)
        time.sleep(0.3)  # a stalled reader: the server must wait (flow control), not drop or corrupt
        while chunk := conn.recv(65536):
            received += chunk
    status, headers, body = split(received)
    assert status == 200 and len(body) == int(headers["content-length"][0])
    assert headers["x-md5"] == [hashlib.md5(body).hexdigest()]


def test_absolute_form_and_encoded_traversal(server: Running) -> None:
    ok = exchange(server.port, b"GET http://127.0.0.1/demo/d1mini/demo-d1mini-1.0.0.bin HTTP/1.0\r\n\r\n")
    assert split(ok)[0] == 200
    for target in (b"/../../etc/hostname", b"/%2e%2e/%2e%2e/etc/hostname", b"/%252e%252e/etc/hostname",
                   b"/demo/d1mini/..%5c..%5cindex.json", b"/index.json", b"//etc/passwd", b"/demo/%00"):
        answer = exchange(server.port, b"GET " + target + b" HTTP/1.0\r\n\r\n")
        assert split(answer)[0] in (400, 404), target


def test_many_pipelined_requests(server: Running) -> None:
    one = b"GET /_catalog?op=list&path=demo HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = exchange(server.port, one * 300 + b"GET /_catalog?op=list&path=. HTTP/1.1\r\nHost: x\r\n"
                                               b"Connection: close\r\n\r\n")
    assert answer.count(b"HTTP/1.1 200 OK") == 301


def test_overlong_target_alone_is_414(server: Running) -> None:
    answer = exchange(server.port, b"GET /" + b"a" * 20000 + b" HTTP/1.0\r\n\r\n")
    assert split(answer)[0] == 414


def test_half_closed_client_still_gets_the_whole_image(server: Running) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(b"GET /demo/big/demo-big-1.0.0.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    status, headers, body = split(received)
    assert status == 200 and len(body) == int(headers["content-length"][0])
