"""Password hashes and the HTTP Basic header: pure functions, standard library only.

Stored hash format (one per credentials-file line, after ``user:``)::

    $scrypt$n=16384,r=8,p=3$<salt, standard base64>$<derived key, standard base64>

scrypt (RFC 7914) is salted, slow and memory-hard. ``n=2**14, r=8`` needs 16 MiB per hash;
``p=3`` brings one verification to roughly 50-100 ms on a current core (OWASP lists
``n=2**14, r=8, p=5`` as a minimum-equivalent setting). The parameters travel with each hash,
so stronger settings can be introduced later without invalidating existing lines; bounds on
them keep a hand-edited file from turning one request into a memory or CPU bomb.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass

__all__ = ["MAX_HEADER", "ScryptHash", "hash_password", "parse_basic", "parse_hash", "verify_password"]

SCHEME = "scrypt"
N, R, P = 16384, 8, 3
SALT_BYTES = 16
KEY_BYTES = 32
MAX_HEADER = 1024
"""Longer ``Authorization`` values are refused unread: no ESP user/password pair is that long."""

_MAX_MEMORY = 64 * 1024 * 1024
"""Ceiling on scrypt's working memory (``128 * n * r``) accepted from a credentials file."""


@dataclass(frozen=True, slots=True)
class ScryptHash:
    """One parsed stored hash. Equality is used to keep cache entries of unchanged users on reload."""

    n: int
    r: int
    p: int
    salt: bytes
    key: bytes

    def encode(self) -> str:
        salt = base64.b64encode(self.salt).decode("ascii")
        key = base64.b64encode(self.key).decode("ascii")
        return f"${SCHEME}$n={self.n},r={self.r},p={self.p}${salt}${key}"


def _derive(password: bytes, n: int, r: int, p: int, salt: bytes, length: int) -> bytes:
    # maxmem must cover 128*n*r*p-ish plus overhead, or OpenSSL refuses ("memory limit exceeded").
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=length, maxmem=128 * n * r * (p + 1) + (1 << 20))


def hash_password(password: str) -> str:
    """A new salted scrypt hash of ``password`` (UTF-8) in the stored format above."""
    salt = os.urandom(SALT_BYTES)
    key = _derive(password.encode("utf-8"), N, R, P, salt, KEY_BYTES)
    return ScryptHash(N, R, P, salt, key).encode()


def parse_hash(text: str) -> ScryptHash:
    """Parse a stored hash; raises ``ValueError`` with a short reason (never echoing the text)."""
    parts = text.split("$")
    if len(parts) != 5 or parts[0] != "":
        raise ValueError("expected $scrypt$n=..,r=..,p=..$<salt>$<hash>")
    if parts[1] != SCHEME:
        raise ValueError(f"unknown hash scheme (only {SCHEME} is supported)")
    params: dict[str, int] = {}
    for item in parts[2].split(","):
        name, _, value = item.partition("=")
        if name not in ("n", "r", "p") or name in params or not value.isascii() or not value.isdigit():
            raise ValueError("bad scrypt parameters (expected n=..,r=..,p=..)")
        params[name] = int(value[:10])
    if set(params) != {"n", "r", "p"}:
        raise ValueError("bad scrypt parameters (expected n=..,r=..,p=..)")
    n, r, p = params["n"], params["r"], params["p"]
    if n < 1024 or n & (n - 1) or not 1 <= r <= 32 or not 1 <= p <= 16 or 128 * n * r > _MAX_MEMORY:
        raise ValueError("scrypt parameters out of range (n: power of 2 from 1024, r 1-32, p 1-16, <= 64 MiB)")
    try:
        salt = base64.b64decode(parts[3], validate=True)
        key = base64.b64decode(parts[4], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("salt or hash is not base64") from None
    if len(salt) < 8 or not 16 <= len(key) <= 64:
        raise ValueError("salt shorter than 8 bytes or hash not 16-64 bytes")
    return ScryptHash(n, r, p, salt, key)


def verify_password(password: bytes, stored: ScryptHash) -> bool:
    """The slow check: derive and compare in constant time. Releases the GIL (OpenSSL)."""
    derived = _derive(password, stored.n, stored.r, stored.p, stored.salt, len(stored.key))
    return hmac.compare_digest(derived, stored.key)


def parse_basic(value: str | bytes | None) -> tuple[str, bytes] | None:
    """``Basic <base64(user:password)>`` -> ``(user, password bytes)``; ``None`` for anything else.

    Never raises. Strict on purpose: scheme ``Basic`` (any case, RFC 7617), one token of
    canonical base64 (ESP8266/ESP32 ``setAuthorization`` send exactly that, docs/protocol.md C.2,
    D.2), UTF-8 inside, a colon, a non-empty user, at most :data:`MAX_HEADER` bytes overall.
    """
    if value is None or len(value) > MAX_HEADER:
        return None
    if isinstance(value, bytes):
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    elif isinstance(value, str) and value.isascii():
        text = value
    else:
        return None
    scheme, _, token = text.strip(" \t").partition(" ")
    token = token.lstrip(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    user, colon, password = decoded.partition(":")
    if not colon or not user:
        return None
    return user, password.encode("utf-8")
