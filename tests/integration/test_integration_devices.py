"""``acrelease serve`` as a real process on 127.0.0.1, played by the stock clients byte for byte."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import clirun
from tests.factories.catalog import CatalogBuilder, demo_catalog, image_for
from tests.factories.images import esp8266_image, gzip_image
from tests.integration.devices import (
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

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    process: subprocess.Popen[str]
    port: int
    built: CatalogBuilder

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    built = demo_catalog(tmp_path / "catalog")
    built.add("demo", "gz", "esp8266", "1.0.0", gzip_image(esp8266_image("1.0.0")))
    built.write()
    process, port = start_cli(built.root)
    try:
        yield Server(process, port, built)
    finally:
        stop_cli(process)


def test_esp8266_byte_for_byte(server: Server) -> None:
    answer, rest = exchange(server.port, esp8266_request(server.host, "/update/demo/d1mini", version="1.0.0"))
    check_update(answer)
    assert rest == b""
    assert answer.header("x-version") == ["1.1.0"] and answer.body == image_for("esp8266", "1.1.0")
    check_no_update(*exchange(server.port, esp8266_request(server.host, "/update/demo/d1mini", version="1.1.0")))
    # No version (F.28): served, never 304 for that alone.
    check_update(exchange(server.port, esp8266_request(server.host, "/update/demo/d1mini", version=None))[0])
    # getAvailableVersion (F.30): 200 with x-version, no body.
    version, _ = exchange(server.port, esp8266_request(server.host, "/update/demo/d1mini", version="1.1.0",
                                                       mode="version"))
    assert version.status == 200 and version.header("x-version") == ["1.1.0"] and version.body == b""


def test_esp8266_gzip_image(server: Server) -> None:
    answer, _ = exchange(server.port, esp8266_request(server.host, "/update/demo/gz", version="0.9.0"))
    check_update(answer, first_bytes=(0x1F,))  # served raw, no Content-Encoding (C.4)


def test_esp32_new_core(server: Server) -> None:
    answer, _ = exchange(server.port, esp32_request(server.host, "/update/demo/esp32dev", version="1.0.0"))
    check_update(answer, sha256=True)
    current = hashlib.md5(image_for("esp32", "1.1.0")).hexdigest()
    check_no_update(*exchange(server.port, esp32_request(server.host, "/update/demo/esp32dev", version=None,
                                                         md5=current)))


def test_esp32_old_core(server: Server) -> None:
    request = esp32_request(server.host, "/update/demo/esp32dev", version=None, new_core=False)
    assert b"BASE-MAC" not in request and b"sketch-md5" not in request
    check_update(exchange(server.port, request)[0], sha256=True)
    check_no_update(*exchange(server.port, esp32_request(server.host, "/update/demo/esp32dev", version="1.1.0",
                                                         new_core=False)))


def test_autoconnect_catalog_then_download(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as conn:
        conn.sendall(autoconnect_catalog_request(server.host, "demo/d1mini"))
        listing = read_answer(conn)
        assert listing.status == 200 and not listing.header("Transfer-Encoding")
        assert int(listing.header("Content-Length")[0]) == len(listing.body)
        entries = parse_catalog_like_autoconnect(listing.body)
        conn.sendall(autoconnect_catalog_request(server.host, "demo/empty"))  # same keep-alive connection
        empty = read_answer(conn)
        assert parse_catalog_like_autoconnect(empty.body) == [{"name": ".", "type": "directory"}]
    names = [e["name"] for e in entries if str(e["type"]).lower() == "bin"]
    assert names[:2] == ["demo-d1mini-1.2.0-beta.1.bin", "demo-d1mini-1.1.0.bin"]
    # What the user sees beside each name (A.2): the beta says it is one; stable dates are plain.
    assert [e["date"] for e in entries[:2]] == ["2026-11-27 (beta, pre-release)", "2026-11-27"]
    # uri="demo/d1mini" -> request-target without a leading slash (A.3), no version header.
    for name, version in ((names[1], "1.1.0"), (names[0], "1.2.0-beta.1")):
        answer, _ = exchange(server.port, esp8266_request(server.host, f"demo/d1mini/{name}", version=None))
        check_update(answer)
        assert answer.body == image_for("esp8266", version)


def test_new_publish_is_served_without_restart(server: Server) -> None:
    request = esp8266_request(server.host, "/update/demo/d1mini", version="1.1.0")
    check_no_update(*exchange(server.port, request))
    server.built.add("demo", "d1mini", "esp8266", "1.4.0")
    server.built.write()  # index.json rewritten atomically
    published = time.monotonic()
    for _ in range(100):  # bounded wait (10 s); the watcher polls every 0.25 s
        answer, _ = exchange(server.port, request)
        if answer.status == 200:
            break
        time.sleep(0.1)
    print(f"new publish served after {time.monotonic() - published:.2f} s")
    check_update(answer)
    assert answer.header("x-version") == ["1.4.0"]


@pytest.mark.parametrize("target", ["/../../etc/hostname", "../../etc/hostname", "/%2e%2e/%2e%2e/etc/hostname",
                                    "/index.json", "http://x/../../etc/passwd"])
def test_traversal_is_404(server: Server, target: str) -> None:
    answer, _ = exchange(server.port, f"GET {target} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    assert answer.status in (400, 404) and b"etc" not in answer.body


def test_sigterm_stops_cleanly_and_logs_decisions(tmp_path: Path) -> None:
    built = demo_catalog(tmp_path / "c")
    process, port = start_cli(built.root)
    exchange(port, esp8266_request(f"127.0.0.1:{port}", "/update/demo/d1mini", version="1.1.0"))
    code, out, err = stop_cli(process)
    assert code == 0
    assert f"127.0.0.1:{port}/update/demo/d1mini" in out  # the URLs a device would use
    assert 'update.uri = "demo/d1mini"' in out
    assert f'ESPhttpUpdate.update(client, "http://127.0.0.1:{port}/update/demo/d1mini"' in out
    assert f'httpUpdate.update(client, "http://127.0.0.1:{port}/update/demo/esp32dev"' in out
    assert "DE:BA:7A:B1:E0:42 127.0.0.1 GET /update/demo/d1mini -> 304" in err
    assert "Traceback" not in err


def test_workers(tmp_path: Path) -> None:
    built = demo_catalog(tmp_path / "c")
    process, port = start_cli(built.root, "--workers", "2")
    try:
        for _ in range(10):
            check_update(exchange(port, esp8266_request(f"127.0.0.1:{port}", "/update/demo/d1mini",
                                                        version="1.0.0"))[0])
    finally:
        code, _, err = stop_cli(process)
    assert code == 0 and "Traceback" not in err


def test_serve_errors_are_one_line(tmp_path: Path) -> None:
    missing = clirun.run("serve", "--catalog", str(tmp_path / "nope"), "--port", "0", timeout=60, cwd=ROOT)
    assert missing.returncode != 0 and len(missing.stderr.strip().splitlines()) == 1
    assert "nope" in missing.stderr and "Traceback" not in missing.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (tmp_path / "c").mkdir()
        busy = clirun.run("serve", "--catalog", str(tmp_path / "c"), "--port", str(port), "--bind", "127.0.0.1",
                          timeout=60, cwd=ROOT)
    assert busy.returncode != 0 and "port in use" in busy.stderr
    assert len(busy.stderr.strip().splitlines()) == 1


def test_stalled_connections_do_not_block_a_check(server: Server) -> None:
    # 300 clients that send half a head and stall hold nothing up.
    stalled = []
    try:
        for i in range(300):
            conn = socket.create_connection(("127.0.0.1", server.port), timeout=15)
            conn.sendall(b"GET /update/demo/d1mini HTTP/1.1\r\nHost: x\r\n" if i % 2 else b"")
            stalled.append(conn)
        check_no_update(*exchange(server.port, esp8266_request(server.host, "/update/demo/d1mini",
                                                               version="1.1.0")))
    finally:
        for conn in stalled:
            conn.close()
