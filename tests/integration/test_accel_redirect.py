"""`acrelease serve --accel-redirect /_files/` behind a real nginx configured from
`acrelease template nginx.conf`: acrelease decides, nginx sends the bytes, and every header the ESP
clients check still reaches them (docs/protocol.md F.16-F.21), byte for byte over real sockets.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.factories.catalog import demo_catalog
from tests.integration import nginx
from tests.integration.devices import (
    Answer,
    autoconnect_catalog_request,
    check_no_update,
    check_update,
    esp32_request,
    esp8266_request,
    exchange,
    parse_catalog_like_autoconnect,
    read_answer,
)
from tests.integration.served import start_cli, stop_cli

pytestmark = [nginx.needs_nginx]


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    catalog = demo_catalog(tmp_path / "catalog").root
    process, port = start_cli(catalog, "--accel-redirect", "/_files/", "--no-fleet", host="127.0.0.2")
    try:
        with nginx.running([f"127.0.0.2:{port}"], catalog, tmp_path / "nginx") as front:
            yield catalog, front
    finally:
        code, _, err = stop_cli(process)
        assert code == 0 and "Traceback" not in err, err


def request(port: int, raw: bytes) -> Answer:
    with socket.create_connection(("127.0.0.1", port), timeout=15) as conn:
        conn.sendall(raw)
        return read_answer(conn)


def test_update_answers_through_nginx_are_what_the_clients_check(proxied: tuple[Path, int]) -> None:
    catalog, port = proxied
    host = f"127.0.0.1:{port}"
    image = (catalog / "demo/d1mini/demo-d1mini-1.1.0.bin").read_bytes()

    answer, _ = exchange(port, esp8266_request(host, "/update/demo/d1mini", version="1.0.0"))
    check_update(answer)  # one x-MD5 of the body, exact Content-Length, first byte 0xE9
    assert answer.body == image and answer.header("x-version") == ["1.1.0"]
    assert not answer.header("x-SHA256") and not answer.header("X-Accel-Redirect")
    assert answer.header("Content-Disposition") == ['attachment; filename="demo-d1mini-1.1.0.bin"']

    esp32, _ = exchange(port, esp32_request(host, "/update/demo/esp32dev", version="1.0.0"))
    check_update(esp32, sha256=True)
    assert esp32.body == (catalog / "demo/esp32dev/demo-esp32dev-1.1.0.bin").read_bytes()
    old_core, _ = exchange(port, esp32_request(host, "/update/demo/esp32dev", version="1.0.0", new_core=False))
    check_update(old_core, sha256=True)

    check_no_update(*exchange(port, esp8266_request(host, "/update/demo/d1mini", version="1.1.0")))
    refused, _ = exchange(port, esp8266_request(host, "/update/demo/esp32dev", version="1.0.0"))
    assert refused.status == 403  # acrelease's own answers pass through unchanged


def test_direct_downloads_range_head_and_etag(proxied: tuple[Path, int]) -> None:
    catalog, port = proxied
    name = "demo/d1mini/demo-d1mini-1.0.0.bin"
    image = (catalog / name).read_bytes()
    etag = f'"{hashlib.sha256(image).hexdigest()}"'
    head = f"Host: 127.0.0.1:{port}\r\nConnection: close\r\n"

    whole = request(port, f"GET /{name} HTTP/1.1\r\n{head}\r\n".encode())
    assert whole.status == 200 and whole.body == image and whole.header("ETag") == [etag]
    assert whole.header("x-MD5") == [hashlib.md5(image).hexdigest()]

    part = request(port, f"GET /{name} HTTP/1.1\r\n{head}Range: bytes=16-115\r\n\r\n".encode())
    assert part.status == 206 and part.body == image[16:116]
    assert part.header("Content-Range") == [f"bytes 16-115/{len(image)}"]

    only_head = request(port, f"HEAD /{name} HTTP/1.1\r\n{head}\r\n".encode())
    length = only_head.header("Content-Length")
    assert only_head.status == 200 and length == [str(len(image))] and only_head.body == b""

    cached = request(port, f"GET /{name} HTTP/1.1\r\n{head}If-None-Match: {etag}\r\n\r\n".encode())
    assert cached.status == 304 and cached.body == b""
    beyond = request(port, f"GET /{name} HTTP/1.1\r\n{head}Range: bytes={len(image) + 10}-\r\n\r\n".encode())
    assert beyond.status == 416

    hidden = request(port, f"GET /_files/{name} HTTP/1.1\r\n{head}\r\n".encode())
    assert hidden.status == 404  # the internal location is reachable only through acrelease's answer


def test_autoconnect_behind_nginx_with_a_leading_slash_uri(proxied: tuple[Path, int]) -> None:
    """README, "AutoConnect behind nginx": with ``update.uri = "/demo/d1mini"`` AutoConnect lists
    ``path=/demo/d1mini`` and downloads ``/demo/d1mini/<name>`` (docs/protocol.md A.2, A.3), which
    nginx passes on; the relative form AutoConnect sends for ``uri = "demo/d1mini"`` is refused by
    nginx itself with 400, as the README says."""
    catalog, port = proxied
    host = f"127.0.0.1:{port}"
    listing = request(port, autoconnect_catalog_request(host, "/demo/d1mini"))  # keep-alive: read one answer
    assert listing.status == 200
    names = [str(entry["name"]) for entry in parse_catalog_like_autoconnect(listing.body) if entry["type"] == "bin"]
    assert "demo-d1mini-1.1.0.bin" in names

    for name in names:  # AutoConnect sends no version (A.3): each image as the radio button offers it
        answer, _ = exchange(port, esp8266_request(host, f"/demo/d1mini/{name}", version=None))
        check_update(answer)
        assert answer.body == (catalog / "demo/d1mini" / name).read_bytes()

    relative = request(port, f"GET demo/d1mini/{names[0]} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    assert relative.status == 400
