"""The update server as a plain ASGI app: ``create_app(settings)``.

Routes (docs/protocol.md H):

* ``GET|HEAD /update/<project>/<target>[?channel=C]``: version-aware endpoint (policy.decide); a
  channel no release of the target is on is answered as stable and warned about once;
* ``GET /_catalog?op=list&path=P``: AutoConnect catalog (any user agent);
* ``GET|HEAD /<project>/<target>/<file>``: download of a published file (any user agent),
  looked up in the index, never mapped onto the filesystem by string (docs/architecture.md, practice 8).

While the catalog folder holds no index, the catalog and download routes serve the folder as
AutoConnect's updateserver.py did (``server/plain.py``); ``/update/`` never looks at it.

Every decision is logged in one line: device MAC (or ``-``), source address, method and path,
status and reason (docs/protocol.md H.5, H.7). No answer ever carries a filesystem path, and no
client input leads to a 500.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from urllib.parse import parse_qsl, quote

from acrelease.access import AccessPolicy, RouteKind, authorization
from acrelease.catalog.index import Artifact
from acrelease.channels import STABLE
from acrelease.fleet.recorder import Recorder
from acrelease.fleet.store import open_store
from acrelease.policy import Announce, Decision, DeviceFacts, NoUpdate, Offer, Refuse, decide, decide_download
from acrelease.server import decisions, health, httpcache, listing, plain
from acrelease.server.asgi import ZERO_COPY, Receive, Scope, Send
from acrelease.server.catalog import Catalog, CatalogState
from acrelease.server.channels import ChannelWatch
from acrelease.server.decisions import DecisionLog
from acrelease.server.device import device_facts
from acrelease.server.metrics import BYTES_SENT, Metrics
from acrelease.server.plain import PlainFolder
from acrelease.server.settings import ServerSettings

log = logging.getLogger("acrelease.server")

CHUNK = 256 * 1024
"""Bodies go out in slices of the verified in-memory copy, so flow control bounds memory per client."""

Headers = list[tuple[bytes, bytes]]
REASONS = {400: b"Bad Request\n", 401: b"Unauthorized\n", 403: b"Forbidden\n", 404: b"Not Found\n",
           405: b"Method Not Allowed\n", 416: b"Range Not Satisfiable\n", 503: b"Service Unavailable\n"}
OCTETS = (b"content-type", b"application/octet-stream")
TEXT = (b"content-type", b"text/plain; charset=utf-8")
JSON = (b"content-type", b"application/json")
ALLOW = (b"allow", b"GET, HEAD")
UPDATE_PREFIX = "/update/"
STARTED = "acrelease.started"
"""Scope key: ``time.perf_counter()`` when the app took the request (only while metrics are on)."""
KIND = "acrelease.kind"
"""Scope key: the answer's kind for /metrics where the decision alone does not tell (``held``)."""


class DownloadSlots:
    """At most ``limit`` firmware transfers at once in this process (``None``: no cap)."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.active = 0

    def take(self) -> bool:
        if self.limit is not None and self.active >= self.limit:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active -= 1


def create_app(settings: ServerSettings, catalog: Catalog | None = None,
               decisions: DecisionLog | None = None, access: AccessPolicy | None = None,
               plain_folder: PlainFolder | None = None, metrics: Metrics | None = None) -> UpdateApp:
    """The ASGI app for ``settings.catalog``; pass ``catalog`` to share an already loaded one
    (``serve`` loads it before forking workers so the verification is done once). ``access``
    defaults to the policy of ``settings.auth_file`` / ``allow_file`` (open when neither is set)."""
    if access is None:
        access = AccessPolicy.from_files(settings.auth_file, settings.allow_file,
                                         catalog_auth=settings.catalog_auth)
    # Each worker process takes its share of the cap (rounded up, so the total is never below it).
    per_worker = -(-settings.max_downloads // settings.workers) if settings.max_downloads else None
    catalog = catalog or Catalog(settings.catalog, poll_interval=settings.poll_interval,
                                 recheck_interval=settings.recheck_interval)
    return UpdateApp(catalog, decisions or DecisionLog(), access, DownloadSlots(per_worker), settings.retry_after,
                     plain_folder, metrics, fleet=fleet_recorder(settings, catalog),
                     accel_redirect=settings.accel_redirect)


def fleet_recorder(settings: ServerSettings, catalog: Catalog) -> Recorder | None:
    """The fleet registry's recorder for this worker (its thread starts with the app's lifespan,
    after ``--workers`` forked: each process opens its own store connection)."""
    if not settings.fleet_enabled:
        return None
    spec, root = settings.fleet, settings.catalog
    return Recorder(lambda: open_store(spec, root), lambda: catalog.state.index, loop_limit=settings.loop_limit)


class UpdateApp:
    """ASGI callable; its lifespan starts and stops the catalog watcher."""

    def __init__(self, catalog: Catalog, decisions: DecisionLog | None = None,
                 access: AccessPolicy | None = None, downloads: DownloadSlots | None = None,
                 retry_after: int = 60, plain_folder: PlainFolder | None = None,
                 metrics: Metrics | None = None, health_checks: Sequence[health.Check] = (),
                 fleet: Recorder | None = None, accel_redirect: str | None = None) -> None:
        self.catalog = catalog
        self.plain = plain_folder
        """The folder served while the catalog has no index (``serve`` on a plain folder), else None."""
        self.accel = accel_redirect.encode() if accel_redirect else None
        """``--accel-redirect PREFIX``: images are sent by nginx from ``PREFIX`` + their catalog path."""
        self.metrics = metrics
        """Counts every answer when the admin listener is on (``None``: nothing is counted)."""
        self.health_checks = tuple(health_checks) + ((fleet.health,) if fleet is not None else ())
        self.decisions = decisions or DecisionLog()
        self.access = access or AccessPolicy()
        self.downloads = downloads or DownloadSlots(None)
        self.retry_after = str(retry_after).encode()
        self.channels = ChannelWatch()
        """Unknown ``?channel=`` values: answered as stable, warned about once."""
        self.fleet = fleet
        self._listing_state: CatalogState | None = None
        self._listings: dict[str, bytes | None] = {}

    async def startup(self) -> None:
        await self.catalog.start()
        if self.plain is not None:
            await self.plain.start()
        if self.fleet is not None:
            await asyncio.to_thread(self.fleet.open)  # pins and rollouts apply from the first check
            self.fleet.start()

    async def shutdown(self) -> None:
        await self.catalog.stop()
        if self.plain is not None:
            await self.plain.stop()
        if self.fleet is not None:
            await asyncio.to_thread(self.fleet.stop)  # one last flush
        self.access.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, send: Send) -> None:
        method: str = scope["method"]
        path: str = scope["path"]
        if self.metrics is not None:
            scope[STARTED] = time.perf_counter()
        if method != "GET" and method != "HEAD":
            # The server exposes no write endpoint (docs/protocol.md H).
            await _simple(send, 405, method, extra=[ALLOW])
            self._log(scope, None, 405, "method not allowed")
            return
        state = self.catalog.state
        if path.startswith(UPDATE_PREFIX):
            await self._update(scope, send, state, path[len(UPDATE_PREFIX):])
        elif self.plain is not None and not state.index.generation and self.plain.state.active:
            await self._plain(scope, send, self.plain.state, path)
        elif path == "/_catalog":
            await self._catalog(scope, send, state)
        elif path == "/healthz":
            status, body = health.health(state.index.generation, self.catalog.loaded, self.health_checks)
            await _simple(send, status, method, body=body)
        else:
            await self._download(scope, send, state, path)

    # -- /update/<project>/<target> ----------------------------------------------------------

    async def _update(self, scope: Scope, send: Send, state: CatalogState, rest: str) -> None:
        project, _, target_name = rest.rstrip("/").partition("/")
        target = state.target(project, target_name) if "/" not in target_name else None
        device = device_facts(scope["headers"])
        if self.access.enabled and not await self._admitted(scope, send, "update", device):
            return
        if target is None:
            await _simple(send, 404, scope["method"])
            self._log(scope, device, 404, "unknown project/target")
            return
        channel = STABLE
        if scope.get("query_string"):
            channel = (_query(scope).get("channel") or STABLE)[:32]
            if channel != STABLE:
                client = scope.get("client")
                self.channels.check(target, channel, device.mac, client[0] if client else None)
        fleet = self.fleet
        if fleet is None:
            decision = decide(device, target, channel)
            await self._answer(scope, send, state, device, decision, update=True)
            return
        view = fleet.view
        intent = view.by_mac.get(device.mac) if device.mac is not None else None
        gates = view.gates.get((project, target_name))
        if intent is None and gates is None:  # nearly every check: today's decision, untouched
            decision = decide(device, target, channel)
        else:
            decision = decide(device, target, channel, intent, gates)
            if intent is not None and intent.channel is not None:
                channel = intent.channel
            if intent is not None and intent.held and isinstance(decision, NoUpdate):
                scope[KIND] = "held"  # not offered what it is held on (the loop breaker), for /metrics
        sent = False
        try:
            sent = await self._answer(scope, send, state, device, decision, update=True)
        finally:
            fleet.observe(device, project, target_name, channel, scope.get("client"), decision, sent)

    async def _answer(self, scope: Scope, send: Send, state: CatalogState, device: DeviceFacts,
                      decision: Decision, *, update: bool) -> bool:
        """Answer ``decision``; True when the whole body of an image went out (a GET, not a HEAD,
        a 503 or a client that left half way)."""
        method: str = scope["method"]
        if isinstance(decision, NoUpdate):
            # The policy 304 (F.23): "your device is current"; no body, no validators.
            await send({"type": "http.response.start", "status": 304, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        elif isinstance(decision, Refuse):
            await _simple(send, decision.status, method)
        elif isinstance(decision, Announce):
            # F.30: x-version (and x-MD5), no body, never 304.
            headers = [(b"content-length", b"0"), (b"x-version", str(decision.release.version).encode()),
                       (b"x-md5", decision.artifact.md5.encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
        else:
            data = state.data(decision.artifact)
            if data is None:
                await _simple(send, 404, method)
                self._log(scope, device, 404, f"{decision.artifact.name} failed verification")
                return False
            if self.accel is not None:
                await self._hand_to_proxy(scope, send, device, decision, len(data), update=update)
                self._log(scope, device, 200, decision.reason, decision)
                return method != "HEAD"  # nginx sends the bytes; what it was told is what was sent
            if method != "HEAD" and not self.downloads.take():
                await _simple(send, 503, method, extra=[(b"retry-after", self.retry_after)])
                self._log(scope, device, 503, f"busy: {self.downloads.active} downloads in flight", decision)
                return False
            try:
                if update:
                    await self._send_image(scope, send, device, decision, data)
                else:
                    await self._send_file(scope, send, decision.artifact,
                                          _image_headers(decision, device, len(data)), data)
            finally:
                if method != "HEAD":
                    self.downloads.release()
            self._log(scope, device, 200, decision.reason, decision)
            return method != "HEAD"  # _body returned: every slice was handed to the transport
        self._log(scope, device, decision.status, decision.reason, decision)
        return False

    async def _hand_to_proxy(self, scope: Scope, send: Send, device: DeviceFacts, offer: Offer, size: int, *,
                             update: bool) -> None:
        """``--accel-redirect``: answer with the device headers only and let nginx send the file
        from the shared catalog (``X-Accel-Redirect``, nginx's ``ngx_http_upstream`` docs). nginx
        drops most upstream headers on that internal redirect; the configuration acrelease prints
        (``acrelease template nginx.conf``) carries x-MD5, x-version, x-SHA256, Content-Disposition
        and ETag across, and nginx sets the real Content-Length and serves Range and HEAD itself.
        Conditional requests that need no bytes (If-None-Match, an unsatisfiable Range) are
        answered here as without the proxy."""
        assert self.accel is not None
        headers = _image_headers(offer, device, 0)
        if not update:
            etag = httpcache.strong_etag(offer.artifact.sha256)
            wanted = _headers(scope["headers"], (b"if-none-match", b"range", b"if-range"))
            outcome = httpcache.evaluate(etag, size, if_none_match=wanted.get(b"if-none-match"),
                                         range_header=wanted.get(b"range"), if_range=wanted.get(b"if-range"))
            if isinstance(outcome, httpcache.NotModified):
                await send({"type": "http.response.start", "status": 304, "headers": [(b"etag", etag.encode())]})
                await send({"type": "http.response.body", "body": b""})
                return
            if isinstance(outcome, httpcache.Unsatisfiable):
                await _simple(send, 416, scope["method"],
                              extra=[(b"content-range", f"bytes */{size}".encode()), (b"etag", etag.encode())])
                return
            headers.append((b"etag", etag.encode()))
        headers.append((b"x-accel-redirect", self.accel + quote(offer.artifact.file).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def _send_image(self, scope: Scope, send: Send, device: DeviceFacts, offer: Offer,
                          data: memoryview) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": _image_headers(offer, device, len(data))})
        await _body(scope, send, data, self.metrics)

    # -- /_catalog ----------------------------------------------------------------------------

    async def _catalog(self, scope: Scope, send: Send, state: CatalogState) -> None:
        await self._list(scope, send, lambda path: self._listing(state, path))

    async def _list(self, scope: Scope, send: Send, listing_of: Callable[[str], bytes | None]) -> None:
        if not await self._admitted(scope, send, "catalog", None):
            return
        query = _query(scope)
        if query.get("op") != "list":
            await _simple(send, 400, scope["method"])
            self._log(scope, None, 400, "catalog: unknown op")
            return
        body = listing_of(query.get("path", "."))
        if body is None:
            await _simple(send, 404, scope["method"])
            self._log(scope, None, 404, "catalog: unknown path")
            return
        headers = [(b"content-length", str(len(body)).encode()), JSON]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
        self._log(scope, None, 200, "catalog listed")

    def _listing(self, state: CatalogState, path: str) -> bytes | None:
        if self._listing_state is not state:  # cache per catalog state
            self._listing_state, self._listings = state, {}
        if path not in self._listings:
            parts = listing.split_path(path)
            entries = listing.listing(state, parts) if parts is not None else None
            body = listing.render(entries) if entries is not None else None
            if len(self._listings) < 1024:
                self._listings[path] = body
            return body
        return self._listings[path]

    # -- /<project>/<target>/<file> -----------------------------------------------------------

    async def _download(self, scope: Scope, send: Send, state: CatalogState, path: str) -> None:
        entry = state.files.get(path[1:])  # exact index lookup: no filesystem mapping
        device = device_facts(scope["headers"])
        if not await self._admitted(scope, send, "download", device):
            return
        if entry is None:
            await _simple(send, 404, scope["method"])
            self._log(scope, device, 404, "no such file")
            return
        if device.arch is not None:
            decision = decide_download(device, entry.target, entry.release, entry.artifact)
        else:
            decision = Offer(entry.release, entry.artifact, f"download {entry.artifact.name}")
        await self._answer(scope, send, state, device, decision, update=False)

    async def _send_file(self, scope: Scope, send: Send, artifact: Artifact, whole: Headers,
                         data: memoryview) -> None:
        """``data`` with the cache and range semantics of downloads; ``whole`` are the 200 answer's headers."""
        etag = httpcache.strong_etag(artifact.sha256)
        wanted = _headers(scope["headers"], (b"if-none-match", b"range", b"if-range"))
        outcome = httpcache.evaluate(etag, len(data), if_none_match=wanted.get(b"if-none-match"),
                                     range_header=wanted.get(b"range"), if_range=wanted.get(b"if-range"))
        etag_header = (b"etag", etag.encode())
        if isinstance(outcome, httpcache.NotModified):
            # The cache 304 (RFC 9110 15.4.5): validators only, no body.
            await send({"type": "http.response.start", "status": 304, "headers": [etag_header]})
            await send({"type": "http.response.body", "body": b""})
        elif isinstance(outcome, httpcache.Unsatisfiable):
            await _simple(send, 416, scope["method"],
                          extra=[(b"content-range", f"bytes */{len(data)}".encode()), etag_header])
        elif isinstance(outcome, httpcache.Partial):
            part = data[outcome.start:outcome.end + 1]
            headers = [(b"content-length", str(len(part)).encode()), OCTETS, etag_header,
                       (b"content-range", f"bytes {outcome.start}-{outcome.end}/{len(data)}".encode()),
                       (b"accept-ranges", b"bytes")]
            await send({"type": "http.response.start", "status": 206, "headers": headers})
            await _body(scope, send, part, self.metrics)
        else:
            headers = [*whole, etag_header, (b"accept-ranges", b"bytes")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await _body(scope, send, data, self.metrics)

    # -- a plain folder (no index yet) ------------------------------------------------------------

    async def _plain(self, scope: Scope, send: Send, folder: plain.PlainState, path: str) -> None:
        """updateserver.py's two routes on a folder without an index: the catalog, and a download
        by exact lookup in the folder's snapshot of verified images (``server/plain.py``)."""
        if path == "/_catalog":
            await self._list(scope, send, folder.listing)
            return
        device = device_facts(scope["headers"])
        if not await self._admitted(scope, send, "download", device):
            return
        image = folder.images.get(path[1:])
        if image is None:
            await _simple(send, 404, scope["method"])
            self._log(scope, device, 404, "no such image in the plain folder")
            return
        refusal = plain.decide(device, image.artifact)
        if isinstance(refusal, NoUpdate):
            await send({"type": "http.response.start", "status": 304, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        elif refusal is not None:
            await _simple(send, refusal.status, scope["method"])
        if refusal is not None:
            self._log(scope, device, refusal.status, refusal.reason)
            return
        if scope["method"] != "HEAD" and not self.downloads.take():
            await _simple(send, 503, scope["method"], extra=[(b"retry-after", self.retry_after)])
            self._log(scope, device, 503, f"busy: {self.downloads.active} downloads in flight")
            return
        try:
            await self._send_file(scope, send, image.artifact, plain.headers(image.artifact, device), image.data)
        finally:
            if scope["method"] != "HEAD":
                self.downloads.release()
        self._log(scope, device, 200, f"plain folder: {image.artifact.file}")

    # -- access control ---------------------------------------------------------------------------

    async def _admitted(self, scope: Scope, send: Send, route: RouteKind, device: DeviceFacts | None) -> bool:
        """Credentials and allowlist, checked before any lookup so that a stranger cannot
        learn from 404s which projects or files exist. Answers 401/403/503 itself when refused."""
        if not self.access.enabled:
            return True
        verdict = await self.access.check_async(route, authorization(scope["headers"]),
                                                device.mac if device else None)
        if verdict.allowed:
            return True
        await _simple(send, verdict.status, scope["method"], extra=verdict.headers)
        self._log(scope, device, verdict.status, verdict.reason)
        return False

    # -- logging --------------------------------------------------------------------------------

    def _log(self, scope: Scope, device: DeviceFacts | None, status: int, reason: str,
             decision: Decision | None = None) -> None:
        """One line per decision (docs/protocol.md H.5, H.7), formatted by the sink, off the hot path;
        and the answer counted for ``/metrics`` when the admin listener is on."""
        if self.metrics is not None:
            self.metrics.answered(scope["path"], status, scope.get(KIND), decision, scope[STARTED])
        if self.decisions.enabled():
            self.decisions.write(decisions.Decision(scope.get("client"), scope["method"], scope["path"],
                                                    scope.get("query_string", b""), device, status, reason,
                                                    decision))


def _image_headers(offer: Offer, device: DeviceFacts, size: int) -> Headers:
    artifact = offer.artifact
    headers = [(b"content-length", str(size).encode()), OCTETS,
               (b"content-disposition", f'attachment; filename="{artifact.name}"'.encode()),
               (b"x-md5", artifact.md5.encode()),  # F.19: one header, 32 lower-case hex
               (b"x-version", str(offer.release.version).encode())]
    if device.arch == "ESP32":
        headers.append((b"x-sha256", artifact.sha256.encode()))  # F.21: 64 hex, new ESP32 cores
    return headers


async def _body(scope: Scope, send: Send, data: memoryview, metrics: Metrics | None) -> None:
    """Send ``data`` in CHUNK slices (nothing for HEAD); awaits the server's flow control."""
    if metrics is not None and scope["method"] != "HEAD":
        metrics.add(BYTES_SENT, len(data))  # counted when sending starts: a dropped client counts too
    if scope["method"] == "HEAD":
        await send({"type": "http.response.body", "body": b""})
        return
    zero_copy = bool(scope.get("extensions", {}).get(ZERO_COPY))
    size = len(data)
    for offset in range(0, size, CHUNK):
        piece = data[offset:offset + CHUNK]
        await send({"type": "http.response.body", "body": piece if zero_copy else bytes(piece),
                    "more_body": offset + CHUNK < size})
    if size == 0:
        await send({"type": "http.response.body", "body": b""})


async def _simple(send: Send, status: int, method: str, extra: Iterable[tuple[bytes, bytes]] = (),
                  body: bytes | None = None) -> None:
    if body is None:
        body = REASONS.get(status, b"")
    headers = [(b"content-length", str(len(body)).encode()), TEXT, *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


def _query(scope: Scope) -> dict[str, str]:
    raw: bytes = scope.get("query_string", b"")
    if not raw:
        return {}
    # AutoConnect does not URL-encode path= (A.2); parse_qsl tolerates that. First value wins.
    result: dict[str, str] = {}
    try:
        pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True, max_num_fields=20)
    except ValueError:  # more than 20 fields: treated as no query at all
        return {}
    for key, value in pairs:
        result.setdefault(key, value)
    return result


def _headers(headers: Iterable[tuple[bytes, bytes]], names: tuple[bytes, ...]) -> dict[bytes, str]:
    found: dict[bytes, str] = {}
    for name, value in headers:
        lowered = name.lower()
        if lowered in names and lowered not in found:
            found[lowered] = value.decode("latin-1")
    return found

