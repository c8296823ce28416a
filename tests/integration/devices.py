"""Play the stock OTA clients over raw sockets, byte for byte, and check answers as they do.

Requests follow docs/protocol.md G (ESP8266, observed on the wire), D.2 (ESP32 new and old cores) and
A.2/A.3 (AutoConnect catalog and download). The checks follow C.3/D.3: status line starts with
``HTTP/1.``, exact Content-Length > 0, x-MD5 one 32-lower-hex header equal to md5(body), first
byte 0xE9 (or 0x1F for ESP8266 gzip), 304 without a body.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
from dataclasses import dataclass

MAC = "DE:BA:7A:B1:E0:42"


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


def esp8266_request(host: str, path: str, *, version: str | None, mode: str = "sketch",
                    md5: str = "a43ad019932b627ab90ee35a94a764ee") -> bytes:
    """ESP8266HTTPUpdate (docs/protocol.md G): HTTP/1.0, Connection: close, Content-Length: 0 last."""
    lines = [
        f"GET {path} HTTP/1.0", f"Host: {host}", "User-Agent: ESP8266-http-Update", "Connection: close",
        "x-ESP8266-Chip-ID: 15602487", f"x-ESP8266-STA-MAC: {MAC}", f"x-ESP8266-AP-MAC: {MAC}",
        "x-ESP8266-free-space: 4194304", "x-ESP8266-sketch-size: 400000", f"x-ESP8266-sketch-md5: {md5}",
        "x-ESP8266-chip-size: 4194304", "x-ESP8266-sdk-version: 2.5.0", f"x-ESP8266-mode: {mode}",
    ]
    if version is not None:
        lines.append(f"x-ESP8266-version: {version}")
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def esp32_request(host: str, path: str, *, version: str | None, new_core: bool = True,
                  md5: str | None = None) -> bytes:
    """arduino-esp32 HTTPUpdate (docs/protocol.md D.2): HTTP/1.0, no Content-Length; old cores send no
    BASE-MAC and no sketch-md5."""
    lines = [f"GET {path} HTTP/1.0", f"Host: {host}", "User-Agent: ESP32-http-Update", "Connection: close",
             "Cache-Control: no-cache"]
    if new_core:
        lines.append(f"x-ESP32-BASE-MAC: {MAC}")
    lines += [f"x-ESP32-STA-MAC: {MAC}", "x-ESP32-AP-MAC: DE:BA:7A:B1:E0:43", "x-ESP32-free-space: 1966080",
              "x-ESP32-sketch-size: 900000"]
    if new_core and md5:
        lines.append(f"x-ESP32-sketch-md5: {md5}")
    if new_core:
        lines.append("x-ESP32-sketch-sha256: " + "AB" * 32)
    lines += ["x-ESP32-chip-size: 4194304", "x-ESP32-sdk-version: v5.1.4", "x-ESP32-mode: sketch"]
    if version is not None:
        lines.append(f"x-ESP32-version: {version}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def autoconnect_catalog_request(host: str, path: str) -> bytes:
    """AutoConnect's catalog request on ESP8266 (docs/protocol.md A.2), exactly."""
    return (f"GET /_catalog?op=list&path={path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ESP8266HTTPClient\r\n"
            "Accept-Encoding: identity;q=1,chunked;q=0.1,*;q=0\r\nConnection: keep-alive\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def read_answer(conn: socket.socket, *, head_only_body: bool = False) -> Answer:
    """Read one answer: head, then exactly Content-Length bytes (or until close when absent)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a complete head: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1."):  # 8266C.cpp:906-911
        raise AssertionError(f"not an HTTP/1.x status line: {lines[0]!r}")
    status = int(lines[0].split(" ")[1])
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    lengths = [v for k, v in headers if k.lower() == "content-length"]
    if head_only_body or status in (204, 304):
        return Answer(status, headers, body)
    if lengths:
        want = int(lengths[-1])
        while len(body) < want:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
    else:
        while chunk := conn.recv(65536):
            body += chunk
    return Answer(status, headers, body)


def exchange(port: int, request: bytes) -> tuple[Answer, bytes]:
    """One HTTP/1.0 exchange; returns the answer and whatever followed before the server closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as conn:
        conn.sendall(request)
        answer = read_answer(conn)
        rest = b""
        while chunk := conn.recv(65536):
            rest += chunk
    return answer, rest


def check_update(answer: Answer, *, first_bytes: tuple[int, ...] = (0xE9,), sha256: bool = False) -> None:
    """What ESP8266HTTPUpdate / HTTPUpdate check before and after flashing."""
    assert answer.status == 200, answer.status
    lengths = answer.header("Content-Length")
    assert len(lengths) == 1 and int(lengths[0]) > 0, "Server Did Not Report Size (-101)"
    assert int(lengths[0]) == len(answer.body), "short body: Stream Read Timeout"
    md5 = answer.header("x-MD5")
    assert len(md5) == 1 and re.fullmatch(r"[0-9a-f]{32}", md5[0]), "-105 Wrong MD5"
    assert md5[0] == hashlib.md5(answer.body).hexdigest(), "MD5 verification failed"
    assert answer.body[0] in first_bytes, "-106 Verify Bin Header Failed"
    assert not answer.header("Transfer-Encoding") and not answer.header("Content-Encoding")
    if sha256:
        digest = answer.header("x-SHA256")
        assert len(digest) == 1 and digest[0] == hashlib.sha256(answer.body).hexdigest()


def check_no_update(answer: Answer, rest: bytes) -> None:
    assert answer.status == 304 and answer.body == b"" and rest == b""


def parse_catalog_like_autoconnect(body: bytes) -> list[dict[str, object]]:
    """ACU.cpp:396-441: find '[', then one JSON object at a time (each must fit 256 bytes),
    continuing while a ',' comes before ']'. Only type=="bin" entries are offered."""
    text = body.decode("utf-8")
    assert text.lstrip().startswith("[") and text.rstrip().endswith("]")
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    entries: list[dict[str, object]] = []
    while True:
        while text[position] in " \r\n\t":
            position += 1
        value, end = decoder.raw_decode(text, position)  # a bare "]" here = InvalidInput
        assert isinstance(value, dict) and len(text[position:end].encode()) < 256
        # ArduinoJson 6's pool: a 16-byte slot per member, each key and string copied with its NUL.
        pool = sum(16 + len(k.encode()) + 1 + (len(v.encode()) + 1 if isinstance(v, str) else 0)
                   for k, v in value.items())
        assert pool <= 256, f"NoMemory: {value} needs {pool} bytes of AutoConnect's 256-byte pool"
        entries.append(value)
        comma, bracket = text.find(",", end), text.find("]", end)
        if comma < 0 or bracket < comma:
            return entries
        position = comma + 1
