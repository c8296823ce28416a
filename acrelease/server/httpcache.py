"""HTTP cache and range semantics of plain downloads (RFC 9110 sections 13 and 14). Pure.

This is the *cache* 304 (``If-None-Match`` against the strong ETag, which is the stored
SHA-256), kept apart from the update policy's 304 (``acrelease.policy``) on purpose
(docs/architecture.md, practice 7): one says "your cached copy is current", the other "your device is current".
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Whole:
    """Send the whole representation (200)."""


@dataclass(frozen=True, slots=True)
class NotModified:
    """The client's cached copy matches (304, only the allowed headers)."""


@dataclass(frozen=True, slots=True)
class Partial:
    """Send bytes ``start`` .. ``end`` inclusive (206)."""

    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Unsatisfiable:
    """The range lies outside the representation (416, ``Content-Range: bytes */N``)."""


Conditional = Whole | NotModified | Partial | Unsatisfiable


def strong_etag(sha256: str) -> str:
    return f'"{sha256}"'


def evaluate(etag: str, size: int, *, if_none_match: str | None, range_header: str | None,
             if_range: str | None) -> Conditional:
    """What a GET/HEAD of a representation with ``etag`` and ``size`` bytes is answered with."""
    if if_none_match is not None and _matches(if_none_match, etag):
        return NotModified()
    if range_header is None:
        return Whole()
    if if_range is not None and if_range.strip() != etag:
        # If-Range with another validator (or a date, which we do not issue): full 200, so a
        # resuming client never stitches two different images together.
        return Whole()
    return parse_range(range_header, size)


def parse_range(header: str, size: int) -> Conditional:
    """A single ``bytes=`` range; anything else (several ranges, other units, garbage) is
    ignored and answered with the whole file, as RFC 9110 14.2 allows."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return Whole()
    first, dash, last = spec.strip().partition("-")
    if not dash or not _digits(first, allow_empty=True) or not _digits(last, allow_empty=True):
        return Whole()
    if not first:
        if not last:
            return Whole()
        suffix = int(last)
        if suffix == 0:
            return Unsatisfiable()
        return Partial(max(0, size - suffix), size - 1)
    start = int(first)
    if last and int(last) < start:
        return Whole()  # invalid range-spec: ignore the header
    if start >= size:
        return Unsatisfiable()
    end = min(int(last), size - 1) if last else size - 1
    return Partial(start, end)


def _digits(text: str, *, allow_empty: bool) -> bool:
    if not text:
        return allow_empty
    return text.isascii() and text.isdigit() and len(text) <= 19


def _matches(if_none_match: str, etag: str) -> bool:
    """Weak comparison (RFC 9110 13.1.2): ``*`` or any listed tag, ``W/`` ignored."""
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*":
            return True
        tag = tag.removeprefix("W/")
        if tag == etag:
            return True
    return False
