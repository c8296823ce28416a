"""Hostile input: a real ``acrelease`` server process, raw sockets, a real catalog with
symlinks planted in it, and canary files outside it.

What is proved: no request-target (traversal, encodings, backslashes, NUL, absolute paths and
absolute-form targets, overlong targets, symlinks out of the catalog) on any route reads anything
outside the catalog; malformed device heads get a defined answer; nothing answers 500, nothing hangs
(every socket has a timeout), and a good request on a new connection still works afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.factories.catalog import CatalogBuilder, demo_catalog, image_for
from tests.integration.devices import (
    check_no_update,
    check_update,
    esp8266_request,
    exchange,
    read_answer,
)
from tests.integration.served import Served, serving

CANARY = b"ACRELEASE-CANARY-outside-the-catalog-"
PASSWD_MARK = b"root:"
REFUSED = {400, 403, 404, 414, 431}
"""What a hostile request-target may get: never 200 for a file outside, never 500."""


@dataclass
class Hostile:
    served: Served
    built: CatalogBuilder
    canary: Path
    published: dict[str, bytes]
    """Every file the index names -> its bytes (the only bodies a 200 may carry)."""


def plant(built: CatalogBuilder, outside: Path) -> Path:
    """Canary files outside the catalog and symlinks inside it that point at them."""
    canary = outside / "canary.txt"
    canary.write_bytes(CANARY + b"text\n")
    target_dir = built.root / "demo" / "d1mini"
    os.symlink("/etc/passwd", target_dir / "evil.bin")  # a name the index does not know
    os.symlink(canary, target_dir / "canary.bin")
    os.symlink(outside, target_dir / "outdir")  # a symlinked directory out of the catalog
    os.symlink(outside, built.root / "demo" / "outproject")
    # A name the index DOES know, replaced by a symlink to an outside file of the same size.
    named = built.root / "demo" / "esp32dev" / "demo-esp32dev-1.0.0.bin"
    size = named.stat().st_size
    same_size = outside / "same-size.bin"
    same_size.write_bytes((CANARY * (size // len(CANARY) + 1))[:size])
    named.unlink()
    os.symlink(same_size, named)
    # And one whose outside target has exactly the published bytes: still outside, still refused.
    exact = built.root / "demo" / "d1mini" / "demo-d1mini-1.0.0.bin"
    copy = outside / "exact-copy.bin"
    copy.write_bytes(exact.read_bytes())
    exact.unlink()
    os.symlink(copy, exact)
    return canary


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    base = tmp_path_factory.mktemp("hostile")
    built = demo_catalog(base / "catalog")
    canary = plant(built, base)
    published = {a.file: image_for(t.chip, str(r.version)) for t, r, a in built.index().artifacts()
                 if a.kind == "firmware"}
    with serving(built.root, base / "logs", head_timeout=2.0) as served:
        yield Hostile(served, built, canary, published)


def ask(port: int, request: bytes, *, timeout: float = 10.0) -> tuple[int | None, bytes]:
    """Send ``request`` on a fresh connection; (status, head + body) or (None, b"") on a clean close
    without an answer. The body is read to its Content-Length (or to the close). A hang fails the
    test (socket timeout); a reset is a failure too."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(request)
        reply = b""
        while b"\r\n\r\n" not in reply and (chunk := conn.recv(65536)):
            reply += chunk
        if not reply:
            return None, b""
        assert reply.startswith(b"HTTP/1.1 ") and b"\r\n\r\n" in reply, reply[:80]
        head, _, body = reply.partition(b"\r\n\r\n")
        status = int(reply[9:12])
        lengths = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")]
        if status == 304:
            return status, reply
        want = lengths[0] if lengths else None
        while (want is None or len(body) < want) and (chunk := conn.recv(65536)):
            body += chunk
    return status, head + b"\r\n\r\n" + body


def assert_nothing_leaked(hostile: Hostile, what: str, status: int | None, reply: bytes) -> None:
    assert status is None or status < 500, f"{what}: {status}"
    assert CANARY not in reply, f"{what}: canary content served"
    assert PASSWD_MARK not in reply, f"{what}: /etc/passwd served"
    assert b'"generation"' not in reply, f"{what}: index.json served"


# Traversal payloads, each tried on every route below.
PAYLOADS = [
    "../canary.txt", "../../canary.txt", "../../../../../../etc/passwd",
    "..%2fcanary.txt", "%2e%2e/canary.txt", "%2e%2e%2f%2e%2e%2fcanary.txt", ".%2e/canary.txt",
    "%252e%252e/canary.txt", "%252e%252e%252fcanary.txt", "%25252e%25252e/canary.txt",
    "..\\canary.txt", "..\\..\\..\\etc\\passwd", "..%5ccanary.txt", "%2e%2e%5c%2e%2e%5cetc%5cpasswd",
    "%00", "..%00/canary.txt", "demo/d1mini/demo-d1mini-1.1.0.bin%00.txt", "%c0%ae%c0%ae/canary.txt",
    "/etc/passwd", "//etc/passwd", "%2fetc%2fpasswd",
    "demo/d1mini/evil.bin", "demo/d1mini/canary.bin", "demo/d1mini/outdir/canary.txt", "demo/d1mini/outdir",
    "demo/outproject/canary.txt", "demo/d1mini/../../../canary.txt", "demo/d1mini/demo-d1mini-1.0.0.bin",
    "demo/esp32dev/demo-esp32dev-1.0.0.bin", "demo/d1mini/demo-d1mini-1.1.0.bin/../../../../canary.txt",
    "index.json", "./index.json", "demo/../index.json",
]


def targets_for(payload: str) -> list[str]:
    """The payload on every route: update, download (with and without leading slash), catalog."""
    return [
        f"/update/{payload}", f"/update/demo/{payload}", f"/update/demo/d1mini/{payload}",
        f"/{payload}", payload.lstrip("/") or "x", f"/demo/d1mini/{payload}",
        f"/_catalog?op=list&path={payload}", f"/_catalog?op=list&path=demo/{payload}",
        f"http://127.0.0.1/{payload}", f"http://127.0.0.1/../../{payload}",
    ]


def test_traversal_corpus_on_every_route(hostile: Hostile) -> None:
    port, host = hostile.served.port, hostile.served.host
    extra = [str(hostile.canary), str(hostile.canary).lstrip("/")]
    counts: dict[int | None, int] = {}
    for payload in [*PAYLOADS, *extra]:
        for target in targets_for(payload):
            for request in (esp8266_request(host, target, version="0.0.1"),  # a real device head
                            f"GET {target} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode(),
                            f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()):
                status, reply = ask(port, request)
                assert_nothing_leaked(hostile, target, status, reply)
                counts[status] = counts.get(status, 0) + 1
                if target.startswith("/_catalog") and status == 200:
                    # A listing is allowed only for what the index knows; it names no outside file.
                    body = reply.partition(b"\r\n\r\n")[2]
                    assert all(isinstance(e, dict) for e in json.loads(body)), target
                else:
                    assert status in REFUSED, f"{target}: {status}"
    print(f"traversal corpus: answers by status {sorted(counts.items(), key=str)}")
    assert hostile.served.alive()


@pytest.mark.parametrize("request_line", [
    b"GET /demo/d1mini/\x00 HTTP/1.0",  # raw NUL in the request line
    b"GET /\x00/../canary.txt HTTP/1.0",
    b"GET /update/demo/d1mini\x00 HTTP/1.0",
    b"GET ..\\..\\..\\etc\\passwd HTTP/1.0",  # raw backslashes, no leading slash
    b"GET \\..\\..\\canary.txt HTTP/1.0",
    b"GET http://127.0.0.1/../../etc/passwd HTTP/1.1",  # absolute-form (RFC 9112 3.2.2)
    b"GET http://127.0.0.1/../../canary.txt HTTP/1.0",
    b"GET https://127.0.0.1:1/%2e%2e/%2e%2e/etc/passwd HTTP/1.0",
    b"GET http://127.0.0.1 HTTP/1.0",
    b"GET http:/../canary.txt HTTP/1.0",
    b"GET file:///etc/passwd HTTP/1.0",
    b"GET * HTTP/1.1",
    b"GET / HTTP/1.0 extra",
    b"GET  /canary.txt HTTP/1.0",
    b"GET /demo/d1mini/demo-d1mini-1.1.0.bin?../../canary.txt HTTP/1.0",
    b"GET /demo/d1mini/demo-d1mini-1.1.0.bin#../../canary.txt HTTP/1.0",
    b"\xff\xfe GET / HTTP/1.0",
])
def test_raw_request_lines(hostile: Hostile, request_line: bytes) -> None:
    status, reply = ask(hostile.served.port, request_line + b"\r\nHost: x\r\n\r\n")
    assert_nothing_leaked(hostile, repr(request_line), status, reply)
    if b"demo-d1mini-1.1.0.bin?" in request_line:
        # The query is not part of the file name (F.34): the real file, nothing else.
        body = reply.partition(b"\r\n\r\n")[2]
        assert status == 200 and body == hostile.published["demo/d1mini/demo-d1mini-1.1.0.bin"]
    else:
        assert status in REFUSED, status


@pytest.mark.parametrize("length", [8 * 1024 + 1, 64 * 1024])
@pytest.mark.parametrize("route", ["/update/demo/", "/demo/d1mini/", "demo/d1mini/", "/_catalog?op=list&path="])
def test_overlong_targets_are_414(hostile: Hostile, route: str, length: int) -> None:
    target = route + "../" * ((length - len(route)) // 3 + 1) + "canary.txt"
    status, reply = ask(hostile.served.port, f"GET {target} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    assert_nothing_leaked(hostile, route, status, reply)
    assert status == 414


def test_8kib_target_is_routed_and_refused(hostile: Hostile) -> None:
    # Just at the limit: parsed and routed, still nothing outside.
    target = "/demo/d1mini/" + "%2e%2e/" * ((8 * 1024 - 30) // 7) + "canary.txt"
    assert len(target) <= 8 * 1024
    status, reply = ask(hostile.served.port, f"GET {target} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    assert_nothing_leaked(hostile, "8 KiB", status, reply)
    assert status == 404


def test_symlinked_index_names_are_never_served(hostile: Hostile) -> None:
    """The index names two files that are symlinks out of the catalog (one to a same-size canary,
    one to an exact copy of the published bytes): both are refused, by every route."""
    served = hostile.served
    for name in ("demo/esp32dev/demo-esp32dev-1.0.0.bin", "demo/d1mini/demo-d1mini-1.0.0.bin"):
        for target in (f"/{name}", name):
            for request in (f"GET {target} HTTP/1.0\r\nHost: {served.host}\r\n\r\n".encode(),
                            esp8266_request(served.host, target, version=None)):
                status, reply = ask(served.port, request)
                assert_nothing_leaked(hostile, target, status, reply)
                # 404: refused file; 403 is the ESP8266 device asking for the ESP32 file.
                assert status == 404 or (status == 403 and "esp32dev" in name and b"ESP8266" in request)
    # The catalog listing does not offer the refused file either (F.14: never list a 404).
    status, reply = ask(served.port, f"GET /_catalog?op=list&path=demo/d1mini HTTP/1.0\r\nHost: {served.host}"
                                     "\r\n\r\n".encode())
    names = [e["name"] for e in json.loads(reply.partition(b"\r\n\r\n")[2])]
    assert status == 200 and "demo-d1mini-1.0.0.bin" not in names and "demo-d1mini-1.1.0.bin" in names
    assert "evil.bin" not in names and "canary.bin" not in names and "outdir" not in names
    # The refusal is logged loudly, once per file, with why.
    log = served.log()
    assert "WARNING catalog: demo/esp32dev/demo-esp32dev-1.0.0.bin is not served" in log
    assert "resolves outside the catalog" in log
    # The files that are fine are served, byte for byte.
    check_update(served.check(version="1.0.0"))


def test_published_file_swapped_for_a_symlink_while_serving(tmp_path: Path) -> None:
    """A published file replaced, while the server runs, by a symlink to an outside file of the
    same size: never a byte of the outside file; after the periodic recheck, 404."""
    built = demo_catalog(tmp_path / "catalog")
    name = "demo/d1mini/demo-d1mini-1.1.0.bin"
    real = built.root / name
    good = real.read_bytes()
    outside = tmp_path / "outside.bin"
    outside.write_bytes((CANARY * (len(good) // len(CANARY) + 1))[:len(good)])
    with serving(built.root, tmp_path / "logs", recheck_interval=0.5) as served:
        check_update(served.check(version="1.0.0"))
        tmp = real.with_suffix(".swap")
        os.symlink(outside, tmp)
        os.replace(tmp, real)  # atomic swap, as an attacker with write access would
        statuses = []
        for _ in range(40):  # bounded: 4 s, recheck every 0.5 s
            answer = served.check(version="1.0.0")
            download, _ = exchange(served.port, esp8266_request(served.host, f"/{name}", version=None))
            for one in (answer, download):
                assert CANARY not in one.body
                if one.status == 200:
                    assert one.body == good  # the old inode's bytes, which match the index
                    check_update(one)
            statuses.append((answer.status, download.status))
            if statuses[-1] == (404, 404):
                break
            time.sleep(0.1)
        assert statuses[-1] == (404, 404), statuses
        assert "resolves outside the catalog" in served.log()


# -- malformed device heads --------------------------------------------------------------------

def device_head(*, replace: dict[str, str | None] | None = None, extra: list[bytes] | None = None,
                version: str | None = "1.0.0") -> bytes:
    """The real ESP8266 head (docs/protocol.md G) with some header values replaced (None: dropped)
    and raw lines added before the final Content-Length."""
    lines = esp8266_request("x", "/update/demo/d1mini", version=version).split(b"\r\n")[:-2]
    out: list[bytes] = []
    for line in lines:
        name = line.partition(b":")[0].decode("latin-1")
        if replace and name in replace:
            if replace[name] is not None:
                out.append(f"{name}: {replace[name]}".encode("latin-1"))
            continue
        out.append(line)
    out[-1:-1] = extra or []
    return b"\r\n".join(out) + b"\r\n\r\n"


MAC = "x-ESP8266-STA-MAC"
FREE = "x-ESP8266-free-space"
VER = "x-ESP8266-version"
MALFORMED: dict[str, bytes] = {
    "mac-garbage": device_head(replace={MAC: "not-a-mac", "x-ESP8266-AP-MAC": "zz"}),
    "mac-too-long": device_head(replace={MAC: "DE:BA:7A:B1:E0:42:00:11"}),
    "mac-lower-dashes": device_head(replace={MAC: "de-ba-7a-b1-e0-42"}),
    "mac-empty": device_head(replace={MAC: ""}),
    "mac-missing": device_head(replace={MAC: None, "x-ESP8266-AP-MAC": None}),
    "free-negative": device_head(replace={FREE: "-1"}),
    "free-non-numeric": device_head(replace={FREE: "lots"}),
    "free-huge": device_head(replace={FREE: "9" * 40}),
    "free-hex": device_head(replace={FREE: "0x400000"}),
    "free-zero": device_head(replace={FREE: "0"}),
    "sketch-size-negative": device_head(replace={"x-ESP8266-sketch-size": "-400000"}),
    "chip-size-float": device_head(replace={"x-ESP8266-chip-size": "4.0e6"}),
    "version-4-parts": device_head(version="1.2.3.4"),
    "version-v1": device_head(version="v1"),
    "version-300": device_head(version="1" * 300),
    "version-empty": device_head(version=""),
    "version-non-ascii": device_head(version="1.0.0\u00e9".encode().decode("latin-1")),
    "version-raw-high-bytes": device_head(replace={VER: "\xff\xfe\x80"}),
    "version-duplicated-different": device_head(version="1.1.0", extra=[b"x-ESP8266-version: 1.0.0"]),
    "version-duplicated-same": device_head(version="1.1.0", extra=[b"x-ESP8266-version: 1.1.0"]),
    "mode-unknown": device_head(replace={"x-ESP8266-mode": "erase-everything"}),
    "mode-missing": device_head(replace={"x-ESP8266-mode": None}),
    "md5-bad": device_head(replace={"x-ESP8266-sketch-md5": "XYZ" * 20}),
    "user-agent-missing": device_head(replace={"User-Agent": None}),
    "user-agent-wrong": device_head(replace={"User-Agent": "curl/8.0"}),
    "all-esp-headers-missing": (b"GET /update/demo/d1mini HTTP/1.0\r\nHost: x\r\n"
                                b"User-Agent: ESP8266-http-Update\r\n\r\n"),
    "mixed-families": device_head(extra=[b"x-ESP32-version: 9.9.9", b"x-ESP32-mode: sketch"]),
    "no-colon": device_head(extra=[b"x-ESP8266-version 1.0.0"]),
    "obs-fold": device_head(extra=[b"X-Note: first", b" continued"]),
    "obs-fold-tab": device_head(extra=[b"X-Note: first", b"\tcontinued"]),
    "space-before-colon": device_head(extra=[b"x-ESP8266-version : 1.0.0"]),
    "empty-name": device_head(extra=[b": value"]),
    "bare-lf": device_head(extra=[b"X-A: 1\nX-B: 2"]),
    "bare-cr": device_head(extra=[b"X-A: 1\rX-B: 2"]),
    "nul-in-value": device_head(extra=[b"X-A: a\x00b"]),
    "ctl-in-value": device_head(extra=[b"X-A: a\x07b"]),
    "content-length-body": device_head(replace={"Content-Length": "5"}),
    "content-length-negative": device_head(replace={"Content-Length": "-1"}),
    "content-length-twice": device_head(extra=[b"Content-Length: 7"]),
    "transfer-encoding": device_head(extra=[b"Transfer-Encoding: chunked"]),
    "100-header-lines": device_head(extra=[b"X-Pad-%03d: y" % i for i in range(100 - 14)]),
    "101-header-lines": device_head(extra=[b"X-Pad-%03d: y" % i for i in range(101 - 14)]),
    "head-over-16KiB": device_head(extra=[b"X-Pad: " + b"y" * (16 * 1024)]),
    "many-small-over-16KiB": device_head(extra=[b"X-P%02d: " % i + b"y" * 200 for i in range(85)]),
    "http-2.0": device_head().replace(b"HTTP/1.0", b"HTTP/2.0", 1),
    "http-1.9": device_head().replace(b"HTTP/1.0", b"HTTP/1.9", 1),
    "lowercase-method": device_head().replace(b"GET ", b"get ", 1),
    "post": device_head().replace(b"GET ", b"POST ", 1),
    "delete": device_head().replace(b"GET ", b"DELETE ", 1),
    "put-download": b"PUT /demo/d1mini/demo-d1mini-1.1.0.bin HTTP/1.0\r\nHost: x\r\n\r\n",
    "http11-no-host": device_head().replace(b"HTTP/1.0", b"HTTP/1.1", 1).replace(b"Host: x\r\n", b""),
    "two-hosts": device_head(extra=[b"Host: y"]),
}
# Exactly what each must get; None: served or refused as policy decides (200 valid / 304 / 403 / 404).
EXPECTED: dict[str, int | None] = {
    "no-colon": 400, "obs-fold": 400, "obs-fold-tab": 400, "space-before-colon": 400, "empty-name": 400,
    "bare-lf": 400, "bare-cr": 400, "nul-in-value": 400, "ctl-in-value": 400, "content-length-body": 413,
    "content-length-negative": 400, "content-length-twice": 400, "transfer-encoding": 413,
    "101-header-lines": 431, "head-over-16KiB": 431, "many-small-over-16KiB": 431, "http-2.0": 505,
    "post": 405, "delete": 405, "lowercase-method": 405, "put-download": 405, "http11-no-host": 400, "two-hosts": 400,
    "100-header-lines": 200,  # at the limit: a normal update answer
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_device_heads_get_a_defined_answer(hostile: Hostile, name: str) -> None:
    served = hostile.served
    status, reply = ask(served.port, MALFORMED[name])
    assert status is not None, f"{name}: closed without an answer"
    assert status < 500 or status == 505, f"{name}: {status}"
    want = EXPECTED.get(name)
    if want is not None:
        assert status == want, f"{name}: {status}"
    else:
        assert status in {200, 304, 400, 403, 404}, f"{name}: {status}"
    print(f"{name}: {status}")
    head, _, body = reply.partition(b"\r\n\r\n")
    if status == 200:  # served: then exactly as a device checks it (F.16-F.19)
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as conn:
            conn.sendall(MALFORMED[name])
            answer = read_answer(conn)
        if answer.body:
            check_update(answer)
    elif status == 304:
        assert body == b""
    else:
        lengths = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
        assert len(lengths) == 1 and int(lengths[0].split(b":")[1]) == len(body)
    # A good device on a new connection is still answered.
    check_no_update(*exchange(served.port, esp8266_request(served.host, "/update/demo/d1mini", version="1.1.0")))


def test_duplicate_version_headers_are_not_trusted(hostile: Hostile) -> None:
    """Two different x-ESP8266-version values: the version is unknown, so no 304 on its strength
    (F.28 falls back to the MD5 rule); identical repeats count once."""
    port = hostile.served.port
    assert ask(port, MALFORMED["version-duplicated-same"])[0] == 304
    status, reply = ask(port, MALFORMED["version-duplicated-different"])
    assert status == 200
    body = reply.partition(b"\r\n\r\n")[2]
    assert hashlib.md5(body).hexdigest() in reply.partition(b"\r\n\r\n")[0].decode()


def test_no_head_in_time_is_408(hostile: Hostile) -> None:
    """head_timeout is 2 s for this server: silence, half a request line, a head without its
    blank line all get 408 and a close, never a hang."""
    port = hostile.served.port
    partials = [b"", b"GET /upd", b"GET /update/demo/d1mini HTTP/1.0\r\nHost: x\r\n"]
    conns = []
    for partial in partials:
        conn = socket.create_connection(("127.0.0.1", port), timeout=10)
        conn.sendall(partial)
        conns.append(conn)
    for conn in conns:
        with conn:
            reply = b""
            while chunk := conn.recv(4096):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 408 "), reply
    check_no_update(*exchange(port, esp8266_request(hostile.served.host, "/update/demo/d1mini", version="1.1.0")))
