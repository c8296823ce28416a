"""A strict, pure parser for HTTP/1.x request heads (RFC 9112 sections 2-3, 5-6).

Bytes in, :class:`Request` or :class:`HeadError` out; never raises on client input. It accepts
what the ESP clients send (docs/protocol.md F.1-F.3): ``HTTP/1.0`` + ``Connection: close``,
``HTTP/1.1`` keep-alive, ``Content-Length: 0`` on a GET (F.2), and a request-target
*without* a leading slash (``GET bin/fw.bin HTTP/1.0``, F.3), which it maps like
``/bin/fw.bin``. Absolute-form targets (``http://host/path``) are mapped to their path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import unquote_to_bytes

_TCHAR = rb"!#$%&'*+.^_`|~0-9A-Za-z-"
REQUEST_LINE = re.compile(rb"([" + _TCHAR + rb"]+) ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")
TOKEN_BYTES = b"!#$%&'*+.^_`|~-" + bytes(range(0x30, 0x3A)) + bytes(range(0x41, 0x5B)) + bytes(range(0x61, 0x7B))
HEAD_BYTES = bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100)) + b"\t\r\n"
"""Bytes allowed anywhere in a head: visible ASCII, SP, HTAB, obs-text, and CR LF as line ends."""
_FRAMING = frozenset({b"host", b"content-length", b"transfer-encoding", b"connection"})
ABSOLUTE = re.compile(rb"[hH][tT][tT][pP][sS]?://[^/?#]*")


class Request(NamedTuple):
    """A parsed request head (a NamedTuple: built once per request, cheaply)."""

    method: str
    path: str
    """Percent-decoded, always starting with ``/`` (ASGI ``path``)."""
    raw_path: bytes
    """The target's path as sent (ASGI ``raw_path``)."""
    query: bytes
    http_version: str
    """``1.0`` or ``1.1``."""
    headers: list[tuple[bytes, bytes]]
    """Lower-case names, values without surrounding blanks (ASGI ``headers``)."""
    keep_alive: bool


@dataclass(frozen=True, slots=True)
class HeadError:
    """The request cannot be served: answer ``status`` and close the connection."""

    status: int
    reason: str


def parse_head(head: bytes, *, max_target: int = 8192, max_lines: int = 100) -> Request | HeadError:
    """Parse a request head (everything before the blank line, without it)."""
    lines = head.split(b"\r\n")
    if len(lines) - 1 > max_lines:
        return HeadError(431, "too many header lines")
    match = REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        if len(lines[0]) > max_target:
            return HeadError(414, "request-target too long")
        return HeadError(400, "malformed request line")
    method_b, target, major, minor = match.groups()
    if len(target) > max_target:
        return HeadError(414, "request-target too long")  # before any routing
    if major != b"1":
        return HeadError(505, "HTTP version not supported")
    version = "1.1" if minor != b"0" else "1.0"

    # Validate every byte at once (C speed): no CTL but HTAB, and CR/LF only as CRLF pairs; so a
    # NUL, a bare CR or LF anywhere is a 400 (RFC 9112 2.2, 5.1).
    crlf = len(lines) - 1
    if head.translate(None, HEAD_BYTES) or head.count(b"\r") != crlf or head.count(b"\n") != crlf:
        return HeadError(400, "malformed request head")
    headers: list[tuple[bytes, bytes]] = []
    host_count = 0
    content_length: bytes | None = None
    connection = b""
    append = headers.append
    for line in lines[1:]:
        raw_name, colon, raw_value = line.partition(b":")
        if not colon or not raw_name:
            return HeadError(400, "malformed header line")
        name = raw_name.lower()
        value = raw_value.strip(b" \t")
        append((name, value))
        if name not in _FRAMING:  # one set lookup for the common header, not four comparisons
            continue
        if name == b"host":
            host_count += 1
        elif name == b"content-length":
            if not value.isdigit() or (content_length is not None and value != content_length):
                return _bad_names(headers) or HeadError(400, "bad Content-Length")
            content_length = value
        elif name == b"transfer-encoding":
            return _bad_names(headers) or HeadError(413, "request bodies are not accepted")
        else:
            connection += b"," + value.lower()
    bad_names = _bad_names(headers)
    if bad_names is not None:
        return bad_names
    if content_length is not None and int(content_length) > 0:
        return HeadError(413, "request bodies are not accepted")
    if host_count > 1 or (version == "1.1" and host_count == 0):
        return HeadError(400, "HTTP/1.1 needs exactly one Host header")  # RFC 9112 3.2

    target_result = _split_target(target)
    if isinstance(target_result, HeadError):
        return target_result
    raw_path, path, query = target_result
    keep_alive = version == "1.1" and b"close" not in [t.strip() for t in connection.split(b",")]
    return Request(method_b.decode("ascii"), path, raw_path, query, version, headers, keep_alive)


def _bad_names(headers: list[tuple[bytes, bytes]]) -> HeadError | None:
    """Every name a token (RFC 9110 5.1), checked for all lines at once (C speed, not a call per
    line); lower-casing keeps a name a token or not. Also catches obs-fold (a line starting with
    a blank) and blanks before the colon. Called before any other error is reported, so the
    first problem in line order is still the one answered."""
    if b"".join([name for name, _ in headers]).translate(None, TOKEN_BYTES):
        return HeadError(400, "malformed header line")
    return None


def _split_target(target: bytes) -> tuple[bytes, str, bytes] | HeadError:
    if target[:1] != b"/":
        absolute = ABSOLUTE.match(target)
        if absolute is not None:
            target = target[absolute.end():] or b"/"
            if target[:1] == b"?":
                target = b"/" + target
        elif target == b"*":
            return HeadError(400, "asterisk-form is not supported")
    if b"#" in target:
        return HeadError(400, "fragment in request-target")
    raw_path, _, query = target.partition(b"?")
    decoded = unquote_to_bytes(raw_path) if b"%" in raw_path else raw_path
    try:
        path = decoded.decode("utf-8")
    except UnicodeDecodeError:
        return HeadError(400, "request-target is not UTF-8")
    if not path.startswith("/"):
        path = "/" + path  # AutoConnect's relative uri (docs/protocol.md F.3)
    return raw_path, path, query
