"""Server metrics: counted on the event loop for nearly nothing, summed across worker processes.

The check path pays one dict lookup and a few integer additions per answer (no lock, no
``prometheus_client`` object: its multiprocess values take a lock and write an mmap on every
increment, which would cost a fleet's check rate several percent). Each worker keeps its counts in
a plain list and copies them every :data:`PUBLISH_INTERVAL` into its own row of a block of shared
memory that ``serve`` maps before forking; whichever worker answers ``/metrics`` sums the rows and
hands them to ``prometheus_client`` for the exposition (docs/operations.md, "Metrics").

Every label value comes from a fixed set (routes, status codes, decision kinds, refusal codes), so
the number of series is bounded whatever clients send; no MAC or address is ever a label.
"""

from __future__ import annotations

import mmap
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from acrelease.policy import REFUSAL_CODES, Announce, Decision, NoUpdate, Offer, Refuse

PUBLISH_INTERVAL = 0.5
"""Seconds between a worker's copies of its counts into shared memory (and so the most a scrape lags)."""

ROUTES = ("update", "catalog", "download")
STATUSES = (200, 206, 304, 400, 401, 403, 404, 405, 408, 413, 414, 416, 431, 500, 503)
OTHER_STATUS = 0
KINDS = ("current", "sent", "announced", "refused", "held", "denied", "busy", "unknown")
"""What a device was told: 304 because it is current; 200 with an image; ``x-version`` only
(``mode: version``); refused by the policy (see the refusal codes); held by the loop breaker;
denied by access control (401/403); 503 because every download slot was busy; 404 for an unknown
project, target or file."""
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0)
"""Seconds, upper bounds: a check is answered in tens of microseconds of application time."""
GAUGE_MAX = "max"
GAUGE_SUM = "sum"


@dataclass(frozen=True, slots=True)
class Slot:
    family: str
    labels: tuple[tuple[str, str], ...]
    combine: str = "sum"
    """How rows of several workers combine: counters and most gauges add up; ``max`` for values
    every worker knows the same way (the catalog generation)."""


def _layout() -> tuple[Slot, ...]:
    slots: list[Slot] = []
    for route in ROUTES:
        for status in (*STATUSES, OTHER_STATUS):
            slots.append(Slot("requests", (("route", route), ("status", str(status or "other")))))
    slots += [Slot("decisions", (("kind", kind),)) for kind in KINDS]
    slots += [Slot("refusals", (("reason", code),)) for code in REFUSAL_CODES]
    slots += [Slot("check_latency_bucket", (("le", str(bound)),)) for bound in LATENCY_BUCKETS]
    slots += [Slot("check_latency_bucket", (("le", "+Inf"),)), Slot("check_latency_count", ()),
              Slot("check_latency_sum_ns", ()), Slot("bytes_sent", ()), Slot("catalog_reload_errors", ()),
              Slot("downloads_active", (), GAUGE_SUM), Slot("catalog_generation", (), GAUGE_MAX),
              Slot("fleet_write_errors", ()), Slot("fleet_dropped", ()),
              Slot("fleet_write_lag_ms", (), GAUGE_MAX)]
    return tuple(slots)


LAYOUT = _layout()
INDEX = {(slot.family, slot.labels): number for number, slot in enumerate(LAYOUT)}
_ROW = struct.Struct(f"<{len(LAYOUT)}q")


def _request_slots() -> dict[tuple[str, int], int]:
    table = {}
    for route in ROUTES:
        for status in STATUSES:
            table[(route, status)] = INDEX[("requests", (("route", route), ("status", str(status))))]
    return table


_REQUESTS = _request_slots()
_OTHER = {route: INDEX[("requests", (("route", route), ("status", "other")))] for route in ROUTES}
_KIND = {kind: INDEX[("decisions", (("kind", kind),))] for kind in KINDS}
_REFUSAL = {code: INDEX[("refusals", (("reason", code),))] for code in REFUSAL_CODES}
_BUCKETS = tuple(INDEX[("check_latency_bucket", (("le", str(b)),))] for b in LATENCY_BUCKETS)
_INF = INDEX[("check_latency_bucket", (("le", "+Inf"),))]
_COUNT = INDEX[("check_latency_count", ())]
_SUM = INDEX[("check_latency_sum_ns", ())]
BYTES_SENT = INDEX[("bytes_sent", ())]
RELOAD_ERRORS = INDEX[("catalog_reload_errors", ())]
DOWNLOADS_ACTIVE = INDEX[("downloads_active", ())]
GENERATION = INDEX[("catalog_generation", ())]
FLEET_ERRORS = INDEX[("fleet_write_errors", ())]
FLEET_DROPPED = INDEX[("fleet_dropped", ())]
FLEET_LAG = INDEX[("fleet_write_lag_ms", ())]


class SharedBlock:
    """One row of counts per worker in memory shared across ``fork`` (an anonymous shared map)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.memory = mmap.mmap(-1, _ROW.size * workers)

    def write(self, row: int, values: Sequence[int]) -> None:
        _ROW.pack_into(self.memory, row * _ROW.size, *values)

    def read(self, row: int) -> tuple[int, ...]:
        return _ROW.unpack_from(self.memory, row * _ROW.size)

    def totals(self) -> list[int]:
        """The rows combined, slot by slot (:attr:`Slot.combine`)."""
        rows = [self.read(row) for row in range(self.workers)]
        return [max(column) if slot.combine == GAUGE_MAX else sum(column)
                for slot, column in zip(LAYOUT, zip(*rows, strict=True), strict=True)]


class Metrics:
    """One worker's counts. ``answered`` is the only call on the request path."""

    def __init__(self, block: SharedBlock | None = None, row: int = 0) -> None:
        self.block = block or SharedBlock(1)
        self.row = row
        # A worker that replaces a dead one continues its row: counters never go backwards.
        self.values = list(self.block.read(row))
        self.published = 0.0

    def answered(self, path: str, status: int, kind: str | None, decision: Decision | None,
                 started: float) -> None:
        """Count one answer: its route and status, what the device was told, and for checks the
        time the application took (``started`` is a ``time.perf_counter()`` reading)."""
        values = self.values
        route = "update" if path.startswith("/update/") else "catalog" if path == "/_catalog" else "download"
        slot = _REQUESTS.get((route, status))
        values[slot if slot is not None else _OTHER[route]] += 1
        if route == "catalog":
            return  # a listing for a person, not a decision about a device
        if kind is None:
            kind = decision_kind(decision, status)
        values[_KIND[kind]] += 1
        if isinstance(decision, Refuse):
            values[_REFUSAL[decision.code]] += 1
        if route == "update":
            elapsed = time.perf_counter() - started
            for bound, bucket in zip(LATENCY_BUCKETS, _BUCKETS, strict=True):
                if elapsed <= bound:
                    values[bucket] += 1
                    break
            else:
                values[_INF] += 1
            values[_COUNT] += 1
            values[_SUM] += int(elapsed * 1e9)

    def add(self, slot: int, amount: int) -> None:
        self.values[slot] += amount

    def set(self, slot: int, value: int) -> None:
        self.values[slot] = value

    def publish(self) -> None:
        """Copy this worker's counts into its shared row (every PUBLISH_INTERVAL, and before a scrape)."""
        self.block.write(self.row, self.values)
        self.published = time.monotonic()


def decision_kind(decision: Decision | None, status: int) -> str:
    """The bounded kind of an answer (:data:`KINDS`)."""
    if isinstance(decision, NoUpdate):
        return "current"
    if isinstance(decision, Offer):
        return "sent"
    if isinstance(decision, Announce):
        return "announced"
    if isinstance(decision, Refuse):
        return "refused"
    if status in (401, 403):
        return "denied"
    if status == 503:
        return "busy"
    return "unknown"


def families(totals: Sequence[int]) -> Iterator[tuple[str, tuple[tuple[str, str], ...], int]]:
    """(family, labels, value) for every slot, for the exposition."""
    for slot, value in zip(LAYOUT, totals, strict=True):
        yield slot.family, slot.labels, value
