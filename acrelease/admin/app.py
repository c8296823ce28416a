"""The admin listener's ASGI app (``serve --admin ADDR:PORT``): health, metrics, and the dashboard.

It runs in the same worker processes as the device port, on its own socket, so nothing of the
fleet is ever reachable on the port devices use, and it never serves firmware. It is read-only:
control stays in the CLI. With ``--admin-auth FILE`` every route needs HTTP Basic (the same
credentials file format as ``--auth``); ``serve`` refuses a non-loopback ``--admin`` without it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl

from acrelease.access import Credentials
from acrelease.access.credentials import AuthBusy
from acrelease.admin import exposition
from acrelease.admin.dashboard import Dashboard, Filters
from acrelease.mac import normalise_mac
from acrelease.server import health
from acrelease.server.asgi import Receive, Scope, Send
from acrelease.server.catalog import Catalog
from acrelease.server.metrics import Metrics

log = logging.getLogger("acrelease.admin")

TEXT = (b"content-type", b"text/plain; charset=utf-8")
HTML = (b"content-type", b"text/html; charset=utf-8")
JSON = (b"content-type", b"application/json")
STATIC = {"dashboard.css": b"text/css; charset=utf-8", "dashboard.js": b"text/javascript; charset=utf-8"}
"""The dashboard's own files, shipped in the package: no CDN, nothing to build."""
CHALLENGE = (b"www-authenticate", b'Basic realm="acrelease admin"')


class AdminApp:
    """ASGI callable for the admin port. ``totals`` sums every worker's counts (a fresh snapshot)."""

    def __init__(self, catalog: Catalog, metrics: Metrics, totals: Callable[[], Sequence[int]], *,
                 credentials: Credentials | None = None, checks: Sequence[health.Check] = (),
                 dashboard: Dashboard | None = None) -> None:
        self.catalog = catalog
        self.dashboard = dashboard
        """``None`` without a fleet store (``serve --no-fleet``): health and metrics only."""
        self.metrics = metrics
        self.totals = totals
        self.credentials = credentials
        self.checks = tuple(checks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # the device app's lifespan starts and stops what both share
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            await _text(send, method, 405, b"Method Not Allowed\n", [(b"allow", b"GET, HEAD")])
            return
        if self.credentials is not None and not await self._authorised(scope, send):
            return
        path = scope["path"]
        if path == "/healthz":
            status, body = self.health()
            await _text(send, method, status, body)
        elif path == "/metrics":
            self.metrics.publish()  # this worker's own counts as of now
            extra = exposition.fleet_families(await self.dashboard.api_status()) if self.dashboard else []
            body = exposition.render(self.totals, extra)
            await _reply(send, method, 200, body, [(b"content-type", exposition.CONTENT_TYPE.encode())])
        elif path.startswith("/static/") and path[8:] in STATIC:
            body = resources.files("acrelease.admin").joinpath("static", path[8:]).read_bytes()
            await _reply(send, method, 200, body, [(b"content-type", STATIC[path[8:]])], cache=True)
        elif self.dashboard is not None:
            await self._dashboard(scope, send, self.dashboard, path)
        else:
            await _text(send, method, 404, b"Not Found (this server runs without a fleet store)\n")

    async def _dashboard(self, scope: Scope, send: Send, dashboard: Dashboard, path: str) -> None:
        method = scope["method"]
        query = _query(scope)
        if path == "/":
            await _reply(send, method, 200, await dashboard.overview(), [HTML])
        elif path == "/devices":
            await _reply(send, method, 200, await dashboard.devices(Filters.from_query(query)), [HTML])
        elif path.startswith("/devices/") and (mac := normalise_mac(path[9:])) is not None:
            page = await dashboard.device(mac)
            if page is None:
                await _text(send, method, 404, f"{mac}: not seen by any server yet\n".encode())
            else:
                await _reply(send, method, 200, page, [HTML])
        elif path == "/api/status":
            await _json(send, method, await dashboard.api_status())
        elif path == "/api/devices":
            await _json(send, method, await dashboard.api_devices(Filters.from_query(query, "mac")))
        elif path.startswith("/api/devices/") and (mac := normalise_mac(path[13:])) is not None:
            found = await dashboard.reader.device(mac)
            if found is None:
                await _text(send, method, 404, f"{mac}: not seen by any server yet\n".encode())
            else:
                await _json(send, method, found)
        elif path == "/api/rollouts":
            await _json(send, method, await dashboard.api_rollouts())
        else:
            await _text(send, method, 404, b"Not Found\n")

    def health(self) -> tuple[int, bytes]:
        return health.health(self.catalog.state.index.generation, self.catalog.loaded, self.checks)

    async def _authorised(self, scope: Scope, send: Send) -> bool:
        assert self.credentials is not None
        header = next((value for name, value in scope["headers"] if name.lower() == b"authorization"), None)
        try:
            user = await self.credentials.check_async(header) if header is not None else None
        except AuthBusy:
            await _text(send, scope["method"], 503, b"Service Unavailable\n", [(b"retry-after", b"5")])
            return False
        if user is None:
            client = scope.get("client")
            log.warning("admin: %s refused (%s credentials)", client[0] if client else "-",
                        "no" if header is None else "wrong")
            await _text(send, scope["method"], 401, b"Unauthorized\n", [CHALLENGE])
            return False
        return True


async def _text(send: Send, method: str, status: int, body: bytes,
                extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
    await _reply(send, method, status, body, [TEXT, *extra])


async def _json(send: Send, method: str, value: Any) -> None:
    await _reply(send, method, 200, json.dumps(value, ensure_ascii=False).encode(), [JSON])


async def _reply(send: Send, method: str, status: int, body: bytes, headers: list[tuple[bytes, bytes]], *,
                 cache: bool = False) -> None:
    policy = b"max-age=300" if cache else b"no-store"
    headers = [(b"content-length", str(len(body)).encode()), (b"cache-control", policy), *headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


def _query(scope: Scope) -> dict[str, str]:
    raw: bytes = scope.get("query_string", b"")
    try:
        pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True, max_num_fields=20)
    except ValueError:
        return {}
    return {key: value for key, value in reversed(pairs)}  # the first value of a repeated key wins
