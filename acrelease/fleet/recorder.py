"""The server side of the fleet registry: record every check without slowing or failing it.

:meth:`Recorder.observe` runs on the event loop for each answered check and does a dictionary
update under a lock held for microseconds: observations are coalesced per device (checks
counted, newest values kept, images sent counted per release, a few events). A background
thread of each worker process (started after the fork: a SQLite connection must not cross one)
writes them in one transaction about every second, then:

* arms and activates loop-breaker holds (:meth:`_loop_breaker`),
* lets :mod:`acrelease.fleet.rollouts` halt or advance rollouts in progress,
* polls the store's intent generation and swaps in a new :class:`FleetView` when it moved, so
  pins, assignments, holds and rollouts reach every worker within a second.

A store that fails (locked, full, read-only, corrupt, deleted) is logged at ERROR at most once a
minute; observations stay in memory (bounded: the oldest devices are dropped and counted) and
checks are answered exactly as before (docs/architecture.md, "State").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import semver

from acrelease.catalog.index import CatalogIndex, PublishedRelease
from acrelease.errors import FleetError
from acrelease.fleet import rollouts
from acrelease.fleet.model import EMPTY_VIEW, Event, EventKind, FleetView, Observation
from acrelease.fleet.store import KEEP_EVENTS, FleetStore
from acrelease.policy import Decision, DeviceFacts, NoUpdate, Offer, Refuse
from acrelease.versioning import parse_device_version

log = logging.getLogger("acrelease.fleet")

MAX_EVENTS = 16
"""Events kept per device between two flushes (a device checks every few minutes)."""
ERROR_INTERVAL = 60.0
PRUNE_INTERVAL = 300.0
UNHEALTHY_LAG = 10.0
"""Seconds without a successful write after which ``/healthz`` reports the fleet store (a flush is
tried every second)."""
HOUR_MS = 3_600_000
HISTORY_KEEP_MS = 8 * 24 * HOUR_MS
"""The dashboard charts 7 days of hourly version counts; a day more is kept."""
HISTORY_REFRESH = 300.0
"""Seconds between refreshes of the current hour's version counts (a GROUP BY over the devices);
the dashboard draws the live counts as the newest point anyway."""


class _Pending:
    """One device's observations since the last flush (mutated under the recorder's lock)."""

    __slots__ = ("checks", "client", "events", "facts", "first", "last", "sent", "where")

    facts: DeviceFacts
    """The newest check's facts (immutable, so kept as they are: one assignment per check)."""
    where: tuple[str, str, str]
    """(project, target, channel) of the newest check."""
    client: tuple[str, int] | None
    last: float

    def __init__(self, at: float) -> None:
        self.first = at
        self.checks = 0
        self.sent: dict[semver.Version, list[float]] | None = None
        self.events: list[tuple[EventKind, float, semver.Version | None, str]] | None = None

    def merge_older(self, older: _Pending) -> None:
        """Fold observations that are older than this one's into it (a failed batch put back)."""
        self.first = min(self.first, older.first)
        self.checks += older.checks
        if older.sent:
            mine = self.sent or {}
            for version, (count, first, last) in older.sent.items():
                if version in mine:
                    mine[version] = [mine[version][0] + count, min(first, mine[version][1]),
                                     max(last, mine[version][2])]
                else:
                    mine[version] = [count, first, last]
            self.sent = mine
        if older.events:
            self.events = (older.events + (self.events or []))[-MAX_EVENTS:]


class Recorder:
    """Coalesces observations in memory and keeps this worker's :attr:`view` fresh."""

    def __init__(self, open_store: Callable[[], FleetStore], index: Callable[[], CatalogIndex], *,
                 loop_limit: int = 3, flush_interval: float = 1.0, poll_interval: float = 0.25,
                 max_devices: int = 250_000, keep_events: int = KEEP_EVENTS) -> None:
        self.open_store = open_store
        self.index = index
        self.loop_limit = loop_limit
        self.flush_interval = flush_interval
        self.poll_interval = poll_interval
        self.max_devices = max_devices
        self.keep_events = keep_events
        self.view: FleetView = EMPTY_VIEW
        """Read by the event loop on every check; replaced whole, never mutated."""
        self.dropped = 0
        self.failures = 0
        self.written = time.monotonic()
        """When the store last took a flush (or had nothing to take and answered): the write lag."""
        self.problem = ""
        """The last store error, for ``/healthz``."""
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._store: FleetStore | None = None
        self._last_error = -ERROR_INTERVAL * 2
        self._next_prune = time.monotonic() + PRUNE_INTERVAL
        self._next_history = time.monotonic() + HISTORY_REFRESH / 10
        self._versions: dict[semver.Version, str] = {}
        self._known: dict[str, tuple[object, ...]] = {}
        """MAC -> the facts this worker last wrote for it: a device that checks again telling the
        same is only "touched" (last seen, checks), the common case of a fleet."""

    # -- on the event loop ----------------------------------------------------------------------

    def observe(self, device: DeviceFacts, project: str, target: str, channel: str,
                client: tuple[str, int] | None, decision: Decision, sent: bool) -> None:
        """Note one answered check of ``device`` (``sent``: the whole image of an offer went out)."""
        mac = device.mac
        if mac is None:
            return
        now = time.time()
        with self._lock:
            pending = self._pending.get(mac)
            if pending is None:
                if len(self._pending) >= self.max_devices:
                    self._drop_oldest(1)
                pending = self._pending[mac] = _Pending(now)
            else:
                # Device versions come from a parse cache: the same object unless it changed.
                version, before = device.version, pending.facts.version
                if version is not before and version is not None and before is not None and version != before:
                    self._event(pending, "reported", now, version, f"was {before}")
            pending.facts = device
            pending.where = (project, target, channel)
            pending.client = client
            pending.last = now
            pending.checks += 1
            if decision.__class__ is NoUpdate:  # most checks
                return
            if isinstance(decision, Offer):
                if sent:
                    self._sent(pending, decision, now)
            elif isinstance(decision, Refuse):
                events = pending.events
                if not events or events[-1][0] != "refused" or events[-1][3] != decision.reason:
                    self._event(pending, "refused", now, None, f"{decision.status} {decision.reason}")

    def _sent(self, pending: _Pending, offer: Offer, now: float) -> None:
        version = offer.release.version
        if offer.artifact.kind == "firmware":  # the loop breaker counts firmware images
            if pending.sent is None:
                pending.sent = {}
            counts = pending.sent.get(version)
            if counts is None:
                pending.sent[version] = [1, now, now]
            else:
                counts[0] += 1
                counts[2] = now
        self._event(pending, "sent", now, version, offer.artifact.name)

    @staticmethod
    def _event(pending: _Pending, kind: EventKind, at: float, version: semver.Version | None, detail: str) -> None:
        if pending.events is None:
            pending.events = []
        elif len(pending.events) >= MAX_EVENTS:
            del pending.events[0]
        pending.events.append((kind, at, version, detail))

    def _drop_oldest(self, count: int) -> None:
        """Bounded memory while the store is failing: forget the devices noted longest ago."""
        for mac in list(self._pending)[:count]:
            del self._pending[mac]
            self.dropped += 1

    # -- lifecycle ------------------------------------------------------------------------------

    def open(self) -> None:
        """Open the store and load the view (before the first check, so intent applies at once);
        a failure is logged and retried by the thread, never raised."""
        self._connect()
        if self._store is not None:
            self._reload(force=True)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="acrelease-fleet", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Flush once more and stop (SIGTERM: what was observed is written)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        else:
            self._flush()
        if self._store is not None:
            self._store.close()
            self._store = None

    def _run(self) -> None:
        next_flush = time.monotonic() + self.flush_interval
        while not self._stop.wait(self.poll_interval):
            try:
                if time.monotonic() >= next_flush:
                    next_flush = time.monotonic() + self.flush_interval
                    self._flush()
                self._reload()
            except Exception:  # a bug must not end bookkeeping for the life of the worker
                log.exception("fleet: recorder failed; retrying")
        try:
            self._flush()
        except Exception:
            log.exception("fleet: last flush failed")

    # -- in the recorder thread -----------------------------------------------------------------

    def _connect(self) -> FleetStore | None:
        if self._store is None:
            try:
                self._store = self.open_store()
            except FleetError as exc:
                self._error(exc)
        return self._store

    def lag(self) -> float:
        """Seconds since the store last took this worker's observations."""
        return time.monotonic() - self.written

    def health(self) -> str | None:
        """Why this worker's bookkeeping is unhealthy (``/healthz`` answers 503), or ``None``."""
        lag = self.lag()
        if lag > UNHEALTHY_LAG:
            return f"fleet store not written for {lag:.0f} s: {self.problem or 'no flush yet'}"
        return None

    def _error(self, exc: BaseException) -> None:
        self.failures += 1
        self.problem = str(exc)
        now = time.monotonic()
        if now - self._last_error >= ERROR_INTERVAL:
            self._last_error = now
            with self._lock:
                pending = len(self._pending)
            log.error("fleet: %s; checks are answered as before, observations kept in memory (%d devices "
                      "pending, %d dropped so far); retrying every %.0f s", exc, pending, self.dropped,
                      self.flush_interval)

    def _reload(self, force: bool = False) -> None:
        store = self._store
        if store is None:
            return
        try:
            generation = store.generation()
            if force or generation != self.view.generation:
                self.view = store.load_view()
        except FleetError as exc:
            self._error(exc)

    def _flush(self) -> None:
        with self._lock:
            if not self._pending:
                batch: dict[str, _Pending] = {}
            else:
                batch, self._pending = self._pending, {}
        store = self._connect()
        if store is None:
            self._put_back(batch)
            return
        full: list[Observation] = []
        signatures: list[tuple[object, ...]] = []
        touches: list[tuple[int, int, int, str]] = []
        known = self._known
        for mac, p in batch.items():
            f = p.facts
            # Tuple equality tries identity first: the version object from the parse cache is
            # usually the very same one, so no SemVer comparison runs here.
            signature: tuple[object, ...] = (p.where, f.version, f.sketch_md5, f.chip_size, f.free_space,
                                             f.sdk_version, p.client[0] if p.client else None)
            if p.sent is None and p.events is None and known.get(mac) == signature:
                last = _ms(p.last)
                touches.append((last, last, p.checks, mac))
            else:
                full.append(self._observation(mac, p))
                signatures.append(signature)
        try:
            store.check()
            if batch:
                _, touched = store.record(full, self.loop_limit, touches)
            self.written = time.monotonic()
        except FleetError as exc:
            self._error(exc)
            self._put_back(batch)
            if not store.path_ok():
                store.close()  # deleted or replaced: the next flush opens (creates) it again
                self._store = None
                self._known.clear()
            return
        if batch:
            if touched < len(touches) or len(known) > self.max_devices * 2:
                known.clear()  # rows went missing behind our back: write every device in full again
            for observation, signature in zip(full, signatures, strict=True):
                known[observation.mac] = signature
        try:
            if batch:
                self._loop_breaker(store, list(batch))
            if any(r.state == "rolling" for r in self.view.rollouts):
                rollouts.evaluate(store, self.index(), self.view.rollouts)
            if time.monotonic() >= self._next_history:
                self._next_history = time.monotonic() + HISTORY_REFRESH
                hour = int(time.time() * 1000) // HOUR_MS * HOUR_MS
                store.snapshot_versions(hour)
                store.prune_history(hour - HISTORY_KEEP_MS)
            if time.monotonic() >= self._next_prune:
                self._next_prune = time.monotonic() + PRUNE_INTERVAL
                store.prune(self.keep_events)
        except FleetError as exc:
            self._error(exc)

    def _put_back(self, batch: dict[str, _Pending]) -> None:
        """A batch that could not be written goes back in front of what arrived since."""
        if not batch:
            return
        with self._lock:
            newer, self._pending = self._pending, batch
            for mac, pending in newer.items():
                older = self._pending.pop(mac, None)
                if older is not None:
                    pending.merge_older(older)
                self._pending[mac] = pending
            excess = len(self._pending) - self.max_devices
            if excess > 0:
                self._drop_oldest(excess)

    def _text(self, version: semver.Version | None) -> str | None:
        if version is None:
            return None
        text = self._versions.get(version)
        if text is None:
            if len(self._versions) > 4096:
                self._versions.clear()
            text = self._versions[version] = str(version)
        return text

    def _observation(self, mac: str, p: _Pending) -> Observation:
        ms = _ms
        sent = tuple((self._text(v) or "", int(c[0]), ms(c[1]), ms(c[2])) for v, c in p.sent.items()) if p.sent else ()
        events = tuple(Event(ms(at), kind, self._text(version), detail)
                       for kind, at, version, detail in p.events) if p.events else ()
        f = p.facts
        return Observation(mac, *p.where, self._text(f.version), f.sketch_md5, f.chip_size, f.free_space,
                           f.sdk_version, p.client[0] if p.client else None, ms(p.first), ms(p.last), p.checks,
                           sent, events)

    def _loop_breaker(self, store: FleetStore, macs: list[str]) -> None:
        """Armed holds of devices that checked again: the device reports the release after all
        (the hold goes), or still an older one after the release was last sent (it is held)."""
        if not macs:
            return
        index = self.index()
        for mac, project, target, version, last_sent, reported, md5, last_seen in store.armed(macs):
            release = _release(index, project, target, version)
            if release is None:
                continue
            if _runs(release, reported, md5):
                store.disarm(mac, project, target, version)
            elif int(last_seen) > int(last_sent):
                detail = (f"sent {version} {self.loop_limit} times, still reports "
                          f"{reported or 'sketch-md5 ' + (md5 or 'unknown')}")
                if store.activate_hold(mac, project, target, version, detail):
                    log.warning("fleet: %s held on %s/%s %s: %s; `acrelease retry %s` offers it again",
                                mac, project, target, version, detail, mac)


def _ms(at: float) -> int:
    return int(at * 1000)


def _release(index: CatalogIndex, project: str, target: str, version: str) -> PublishedRelease | None:
    found = index.target(project, target)
    parsed = parse_device_version(version)
    return found.release(parsed) if found is not None and parsed is not None else None


def _runs(release: PublishedRelease, reported: str | None, md5: str | None) -> bool:
    """The device runs ``release`` or newer (by its version, else by its sketch MD5)."""
    if reported is not None:
        running = parse_device_version(reported)
        return running is not None and running >= release.version
    return md5 is not None and md5 == release.firmware.md5
