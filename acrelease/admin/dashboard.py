"""The read-only dashboard and its JSON API, rendered from one :class:`~acrelease.fleet.report.FleetReport`.

The fleet store is read in one thread of the admin's own (a store connection belongs to one
thread), never on the event loop that answers devices; a report is reused for
:data:`REPORT_TTL` seconds, so paging and filtering 100,000 devices is slicing a list in memory.
Every page names the CLI command for the obvious next step: control stays in the CLI.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape

from acrelease.admin.chart import versions_chart
from acrelease.fleet.model import DEVICE_STATES, now_ms
from acrelease.fleet.report import FleetReport, build_report, device_json, event_json, rollout_json, status_json
from acrelease.fleet.rollouts import statuses
from acrelease.fleet.states import device_state
from acrelease.fleet.store import FleetStore
from acrelease.server.catalog import Catalog

REPORT_TTL = 5.0
"""Seconds a reading of the store serves pages; the page refreshes itself every 10 s."""
PER_PAGE = 50
HISTORY_DAYS = 7
SORTS = (("last_seen", "last seen, newest first"), ("mac", "MAC"), ("checks", "most checks"),
         ("version", "version"))
HOUR_MS = 3_600_000
T = TypeVar("T")


@dataclass(frozen=True)
class Filters:
    """What the devices page (and ``/api/devices``) is asked for; all optional."""

    q: str = ""
    target: str = ""
    state: str = ""
    version: str = ""
    sort: str = "last_seen"
    page: int = 1

    @classmethod
    def from_query(cls, query: Mapping[str, str], default_sort: str = "last_seen") -> Filters:
        """The page sorts by last seen unless told; ``/api/devices`` by MAC, as ``devices --json``."""
        page = query.get("page", "1")
        sort = query.get("sort", default_sort)
        return cls(q=query.get("q", "").strip()[:17], target=query.get("target", "")[:200],
                   state=query.get("state", "") if query.get("state", "") in DEVICE_STATES else "",
                   version=query.get("version", "").strip()[:64],
                   sort=sort if sort in dict(SORTS) else default_sort,
                   page=int(page) if page.isdigit() and 0 < int(page) < 10**6 else 1)

    def select(self, devices: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        needle = self.q.upper().replace("-", ":")
        chosen = [d for d in devices
                  if (not needle or needle in d["mac"] or needle.replace(":", "") in d["mac"].replace(":", ""))
                  and (not self.target or d["target"] == self.target)
                  and (not self.state or d["state"] == self.state)
                  and (not self.version or (d["version"] or "unknown") == self.version)]
        if self.sort == "last_seen":
            chosen.sort(key=lambda d: d["last_seen"], reverse=True)
        elif self.sort == "checks":
            chosen.sort(key=lambda d: d["checks"], reverse=True)
        elif self.sort == "version":
            chosen.sort(key=lambda d: (d["version"] or "", d["mac"]))
        return chosen  # "mac": the report is ordered by MAC already

    def url(self, **change: Any) -> str:
        values = {"q": self.q, "target": self.target, "state": self.state, "version": self.version,
                  "sort": self.sort, "page": self.page, **change}
        return "/devices?" + urlencode({k: v for k, v in values.items() if v not in ("", None)})


class FleetReader:
    """Reads the store for the admin listener, off the event loop, one report at a time."""

    def __init__(self, open_store: Callable[[], FleetStore], catalog: Catalog) -> None:
        self.open_store = open_store
        self.catalog = catalog
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="acrelease-admin")
        self._store: FleetStore | None = None
        self._report: FleetReport | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    async def report(self) -> FleetReport:
        async with self._lock:  # concurrent page loads share one reading
            fresh = time.monotonic() - self._at < REPORT_TTL
            if self._report is None or not fresh or self._report.generation != self.catalog.state.index.generation:
                self._report = await self._run(self._read_report)
                self._at = time.monotonic()
            return self._report

    async def device(self, mac: str) -> dict[str, Any] | None:
        return await self._run(lambda store: self._read_device(store, mac))

    async def history(self) -> dict[str, tuple[list[int], dict[str, dict[int, int]]]]:
        return await self._run(self._read_history)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self, work: Callable[[FleetStore], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._with_store, work)

    def _with_store(self, work: Callable[[FleetStore], T]) -> T:
        if self._store is not None and not self._store.path_ok():  # a PostgreSQL connection that broke
            self._store.close()
            self._store = None
        if self._store is None:
            self._store = self.open_store()
        return work(self._store)

    def _read_report(self, store: FleetStore) -> FleetReport:
        index = self.catalog.state.index
        return build_report(store.devices(), store.load_view(), index, statuses(store, index))

    def _read_device(self, store: FleetStore, mac: str) -> dict[str, Any] | None:
        row = store.device(mac)
        if row is None:
            return None
        index = self.catalog.state.index
        return {**device_json(row, device_state(row, index, store.load_view())),
                "events": [event_json(e) for e in store.events(mac)]}

    def _read_history(self, store: FleetStore) -> dict[str, tuple[list[int], dict[str, dict[int, int]]]]:
        hours = _hours()
        start = hours[0]
        result: dict[str, tuple[list[int], dict[str, dict[int, int]]]] = {}
        for hour, project, target, version, devices in store.version_history(start):
            _, series = result.setdefault(f"{project}/{target}", (hours, {}))
            series.setdefault(version or "unknown", {})[hour] = devices
        return result


class Dashboard:
    """Renders the pages; every method returns (status, content type, body)."""

    def __init__(self, reader: FleetReader, catalog: Catalog, *, catalog_dir: str, loop_limit: int) -> None:
        self.reader = reader
        self.catalog = catalog
        self.catalog_dir = catalog_dir
        self.loop_limit = loop_limit
        self.templates = Environment(loader=PackageLoader("acrelease.admin", "templates"),
                                     autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)

    def _page(self, name: str, **values: Any) -> bytes:
        template = self.templates.get_template(name)
        return template.render(generation=self.catalog.state.index.generation, catalog=self.catalog_dir,
                               now=dt.datetime.now(dt.UTC).strftime("%H:%M:%S UTC"), **values).encode()

    async def overview(self) -> bytes:
        report = await self.reader.report()
        status = status_json(report, self.catalog.state.index)
        history = await self.reader.history()
        targets = []
        for target in status["targets"]:
            hours, series = history.get(target["target"], ([], {}))
            if target["devices"]:  # the newest point is the fleet as it is now, not as last recorded
                hours = hours or _hours()
                now = {version: {**series.get(version, {}), hours[-1]: count}
                       for version, count in target["versions"].items()}
                series = {**{v: {**counts, hours[-1]: 0} for v, counts in series.items()}, **now}
                recorded = [hour for counts in series.values() for hour in counts]
                hours = hours[hours.index(min(recorded)):]  # from the first hour anything was recorded
            targets.append({
                "key": target["target"], "chip": target["chip"], "devices": target["devices"],
                "states": [(s, n) for s, n in target["states"].items() if n],
                "versions": list(target["versions"].items()),
                "releases": target["releases"],
                "rollouts": [{**r, "percent_text": f"{r['percent']:g} %", "next_command": self._next(r)}
                             for r in target["rollouts"]],
                "chart": versions_chart(hours, series),
            })
        return self._page("overview.html", page="overview", targets=targets)

    def _next(self, rollout: Mapping[str, Any]) -> str:
        base = f"--target {rollout['target']} --catalog {self.catalog_dir}"
        version, state = rollout["version"], rollout["state"]
        if state == "halted":
            return f"acrelease devices --state held --target {rollout['target']} --catalog {self.catalog_dir}  " \
                   f"# then: acrelease rollout {version} --resume {base}"
        if state == "paused":
            return f"acrelease rollout {version} --resume {base}"
        if state == "rolling":
            stage = next_stage_of(rollout)
            return f"acrelease rollout {version} --percent {stage:g} {base}" if stage else \
                f"acrelease rollout {version} --pause {base}"
        return f"acrelease rollout --catalog {self.catalog_dir}"

    async def devices(self, filters: Filters) -> bytes:
        report = await self.reader.report()
        chosen = filters.select(report.devices)
        pages = max(1, -(-len(chosen) // PER_PAGE))
        page_no = min(filters.page, pages)
        now = now_ms()
        rows = [{**d, "last_seen_ago": _ago(d["last_seen"], now)}
                for d in chosen[(page_no - 1) * PER_PAGE:page_no * PER_PAGE]]
        targets = sorted(f"{p}/{t}" for p, t in self.catalog.state.index.targets)
        return self._page("devices.html", page="devices", rows=rows, total=len(chosen), page_no=page_no,
                          pages=pages, prev_url=filters.url(page=page_no - 1) if page_no > 1 else None,
                          next_url=filters.url(page=page_no + 1) if page_no < pages else None,
                          target_keys=targets, states=DEVICE_STATES, sorts=SORTS, q=filters.q,
                          target=filters.target, state=filters.state, version=filters.version, sort=filters.sort,
                          loop_limit=self.loop_limit)

    async def device(self, mac: str) -> bytes | None:
        found = await self.reader.device(mac)
        if found is None:
            return None
        where = f"--catalog {self.catalog_dir}"
        commands = []
        if found["state"] == "held":
            commands.append(f"acrelease retry {mac} {where}")
        commands.append(f"acrelease unpin {mac} {where}" if found["pinned"] else
                        f"acrelease pin {mac} VERSION {where}")
        commands.append(f"acrelease assign {mac} --channel CHANNEL {where}")
        return self._page("device.html", page="devices", d=found, commands=commands)

    # -- the JSON API: the same objects as the CLI's --json --------------------------------------------

    async def api_status(self) -> dict[str, Any]:
        return status_json(await self.reader.report(), self.catalog.state.index)

    async def api_devices(self, filters: Filters) -> list[dict[str, Any]]:
        return filters.select((await self.reader.report()).devices)

    async def api_rollouts(self) -> list[dict[str, Any]]:
        return [rollout_json(s) for s in (await self.reader.report()).rollouts]


def next_stage_of(rollout: Mapping[str, Any]) -> float | None:
    """The percent the obvious next widening goes to: the next autopilot stage, else a doubling."""
    percent = float(rollout["percent"])
    if percent >= 100:
        return None
    staged = [float(s) for s in rollout.get("stages", ()) if float(s) > percent]
    return staged[0] if staged else min(100.0, max(1.0, percent * 2))


def _hours() -> list[int]:
    """The start of every hour of the last HISTORY_DAYS days, the current hour last (epoch ms)."""
    end = now_ms() // HOUR_MS * HOUR_MS
    return list(range(end - HISTORY_DAYS * 24 * HOUR_MS, end + 1, HOUR_MS))


def _ago(stamp: str, now: int) -> str:
    at = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    seconds = max(0, now // 1000 - int(at.timestamp()))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"

