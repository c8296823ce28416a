"""acrelease serve against nginx: same machine, same files, same load, interleaved rounds.

Devices check with HTTP/1.0 and ``Connection: close``: a new TCP connection per check
(docs/protocol.md G gives the exact header set used here). Every server is pinned to core 0, wrk
to core 1. Each scenario runs ``--runs`` rounds; within a round every server is measured once,
back to back, and the order is reversed every other round, so drift on this shared machine hits
every server alike. Figures are reported as the median over the rounds with their min and max;
a ratio is taken within each round (acrelease and nginx measured seconds apart) and then
summarised the same way. CPU microseconds per request (the server's own user+system time, workers
included, over the requests it completed) barely depends on what else runs on the machine, so it
is the steadier figure; requests per second and p99 follow the machine's other load.

What a scenario models and how to add one or a server variant: benchmarks/README.md.

    python benchmarks/bench_serve.py                   # check + download, c=50 and c=200, 10 s, 3 rounds
    python benchmarks/bench_serve.py --auth            # also acrelease --auth (the README's figures)
    python benchmarks/bench_serve.py --duration 2 --runs 2 --no-rss    # a quick look
    python benchmarks/bench_serve.py --list            # the scenarios and server variants
Writes benchmarks/results/serve-<UTC time>.json (ignored by git): every raw measure and the summary.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from acrelease.access import add_user  # noqa: E402  (after the path set-up)
from benchmarks.harness import (  # noqa: E402
    CLIENT_CORE,
    MachineCpu,
    Proc,
    Spread,
    children_cpu_seconds,
    rss_kib,
    running,
    self_cpu_seconds,
    tree_cpu_seconds,
    wrk,
)
from tests import clirun  # noqa: E402
from tests.factories.catalog import CatalogBuilder  # noqa: E402
from tests.integration.served import free_port  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
CHECK_PATH = "/update/demo/d1mini"
RSS_FILE = "/demo/big16m/demo-big16m-1.0.0.bin"

# The ESP8266 client's request head, in its order (docs/protocol.md G); x-ESP8266-version per scenario.
ESP8266_HEADERS = [
    ("User-Agent", "ESP8266-http-Update"), ("Connection", "close"), ("x-ESP8266-Chip-ID", "15602487"),
    ("x-ESP8266-STA-MAC", "DE:BA:7A:B1:E0:42"), ("x-ESP8266-AP-MAC", "DE:BA:7A:B1:E0:42"),
    ("x-ESP8266-free-space", "16777216"), ("x-ESP8266-sketch-size", "400000"),
    ("x-ESP8266-sketch-md5", "a43ad019932b627ab90ee35a94a764ee"), ("x-ESP8266-chip-size", "16777216"),
    ("x-ESP8266-sdk-version", "2.5.0"), ("x-ESP8266-mode", "sketch"), ("Content-Length", "0"),
]
AUTH_USER, AUTH_PASSWORD = "fleet", "bench-password"
# Every server gets the same credentials on every request (nginx ignores them): only --auth variants check them.
AUTHORIZATION = "Basic " + base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()


# -- what the servers serve ----------------------------------------------------------------------

def image(size: int, seed: bytes) -> bytes:
    """``size`` bytes that look like a plain ESP image to a client (first byte 0xE9, 4 MB flash)."""
    block = (seed * (4096 // len(seed) + 1))[:4096]
    return (bytes([0xE9, 0x03, 0x02, 0x40]) + block * (size // 4096 + 1))[:size]


def build_catalog(root: Path) -> None:
    built = CatalogBuilder(root)
    built.add("demo", "d1mini", "esp8266", "1.0.0", image(400_000, b"one"))
    built.add("demo", "d1mini", "esp8266", "1.1.0", image(400_016, b"two"))
    built.add("demo", "big1m", "esp8266", "1.0.0", image(1 << 20, b"big"))
    built.add("demo", "big16m", "esp8266", "1.0.0", image(16 << 20, b"huge"))
    built.write()


@dataclass(frozen=True)
class Setup:
    """What every server variant may use: a scratch folder, the catalog, a credentials file."""

    workdir: Path
    catalog: Path
    credentials: Path


def fill(text: str, **values: object) -> str:
    """``text`` with each ``{name}`` replaced; nothing else is touched, so nginx's braces and ``$variables``
    stay as they are."""
    for name, value in values.items():
        text = text.replace(f"{{{name}}}", str(value))
    return text


# A server variant's launcher: the processes to start, upstreams first, the one wrk talks to last.
Launcher = Callable[[Setup], list[Proc]]


def acrelease(*args: str) -> Launcher:
    """``acrelease serve`` of this checkout (``tests/clirun.py``: ``python -m acrelease``, checkout first on
    ``PYTHONPATH``), with ``args`` after catalog, port and bind; ``{credentials}`` and ``{workdir}`` are filled in."""
    def launch(setup: Setup) -> list[Proc]:
        port = free_port()
        extra = [fill(a, credentials=setup.credentials, workdir=setup.workdir,
                      admin=f"127.0.0.1:{free_port()}" if "{admin}" in a else "") for a in args]
        return [Proc(clirun.command("serve", "--catalog", str(setup.catalog), "--port", str(port),
                                    "--bind", "127.0.0.1", *extra), clirun.environment(), port)]
    return launch


def asgi(*args: str) -> Launcher:
    """acrelease's ASGI app (``benchmarks/asgi_app.py``) under a third-party server; ``{port}`` filled in."""
    def launch(setup: Setup) -> list[Proc]:
        port = free_port()
        command = [sys.executable, "-m", *(fill(a, port=port) for a in args)]
        return [Proc(command, clirun.environment({"ACRELEASE_CATALOG": str(setup.catalog)}), port)]
    return launch


# nginx answers the check URL with 304 whatever the headers say and serves files with sendfile:
# the least work an HTTP server can do for each scenario, the yardstick for acrelease.
NGINX_LOCATIONS = f"""
    location = {CHECK_PATH} {{ return 304; }}
    location / {{ root {{catalog}}; sendfile on; }}
"""


def nginx(locations: str = NGINX_LOCATIONS, upstream: Launcher | None = None) -> Launcher:
    """nginx in the foreground, one worker, no access log; ``locations`` may use ``{catalog}`` and, with an
    ``upstream`` variant started first (e.g. acrelease behind ``proxy_pass``), ``{upstream}`` (host:port)."""
    def launch(setup: Setup) -> list[Proc]:
        behind = upstream(setup) if upstream else []
        port = free_port()
        work = setup.workdir / f"nginx-{port}"
        work.mkdir()
        served = fill(locations, catalog=setup.catalog, upstream=f"127.0.0.1:{behind[-1].port}" if behind else "")
        conf = work / "nginx.conf"
        conf.write_text(f"""
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {work}/body; proxy_temp_path {work}/proxy;
  fastcgi_temp_path {work}/fastcgi; uwsgi_temp_path {work}/uwsgi; scgi_temp_path {work}/scgi;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
{served}
  }}
}}
""")
        return [*behind, Proc([shutil.which("nginx") or "nginx", "-c", str(conf), "-p", str(work)], {}, port)]
    return launch


@dataclass(frozen=True)
class Server:
    """A server variant. ``flag``: only with ``--FLAG`` (several variants may share one); ``only``: the
    scenarios it takes part in (empty: all); ``compare``: the variants its per-round ratios are against."""

    name: str
    launch: Launcher
    flag: str | None = None
    help: str = ""
    only: tuple[str, ...] = ()
    compare: tuple[str, ...] = ("nginx",)


SERVERS = [
    Server("nginx", nginx(), compare=()),
    # The default log level (INFO) writes one line per decision, and the fleet registry records every check, as
    # `acrelease serve` does out of the box. wrk is one device re-sent the same image: no loop breaker here.
    Server("acrelease", acrelease("--log", "INFO", "--loop-limit", "1000000000"),
           compare=("nginx", "acrelease-nofleet")),
    Server("acrelease-nofleet", acrelease("--log", "INFO", "--no-fleet"), flag="fleet", only=("check",),
           help="also acrelease with --no-fleet (the fleet registry's cost: recording on vs off)"),
    Server("acrelease-admin", acrelease("--log", "INFO", "--loop-limit", "1000000000", "--admin", "{admin}"),
           flag="admin", only=("check",), compare=("acrelease", "nginx"),
           help="also acrelease with --admin (metrics counted on every request)"),
    Server("acrelease-quiet", acrelease("--log", "WARNING"), flag="quiet",
           help="also acrelease with --log WARNING (no decision lines); the goals use the default"),
    Server("acrelease-auth", acrelease("--log", "INFO", "--auth", "{credentials}"), flag="auth", only=("check",),
           compare=("acrelease", "nginx"), help="also acrelease with --auth (HTTP Basic checked on every request)"),
    Server("granian", asgi("granian", "--interface", "asgi", "--factory", "--host", "127.0.0.1", "--port", "{port}",
                           "--workers", "1", "--loop", "uvloop", "--no-ws", "--log-level", "warning",
                           "benchmarks.asgi_app:factory"),
           flag="others", help="also the ASGI app under granian and uvicorn (for the record; pip install '.[bench]')"),
    Server("uvicorn", asgi("uvicorn", "--factory", "benchmarks.asgi_app:factory", "--host", "127.0.0.1",
                           "--port", "{port}", "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                           "--log-level", "warning", "--lifespan", "on"), flag="others"),
]


@dataclass(frozen=True)
class Scenario:
    """One kind of request. ``path`` is what a device asks for; ``paths`` overrides it per server variant
    (nginx serves the download as a plain file); ``version`` is the ``x-ESP8266-version`` sent;
    ``lua`` a wrk script (e.g. one that rotates the MAC per request); ``default``: run without ``--scenarios``."""

    name: str
    models: str
    path: str
    version: str | None
    paths: tuple[tuple[str, str], ...] = ()
    lua: str | None = None
    default: bool = True

    def path_for(self, server: str) -> str:
        return dict(self.paths).get(server, self.path)

    def headers(self) -> list[tuple[str, str]]:
        version = [("x-ESP8266-version", self.version)] if self.version else []
        return [*ESP8266_HEADERS, *version, ("Authorization", AUTHORIZATION)]


SCENARIOS = [
    Scenario("check", "a device already on the newest release checks: 304, no body", CHECK_PATH, "1.1.0"),
    Scenario("download", "a device one release behind fetches a 1 MiB image (acrelease: the update URL, so the "
             "whole decision runs; nginx: the same file with sendfile)", "/update/demo/big1m", "0.9.0",
             paths=(("nginx", "/demo/big1m/demo-big1m-1.0.0.bin"),)),
]

Metric = Literal["rate", "p99", "cpu"]


@dataclass(frozen=True)
class Goal:
    """A target on the median of one per-round ratio (``server`` over ``base``)."""

    text: str
    scenario: str
    concurrency: int
    server: str
    base: str
    metric: Metric
    at_least: float | None = None
    at_most: float | None = None

    def passes(self, ratio: float) -> bool:
        return (self.at_least is None or ratio >= self.at_least) and (self.at_most is None or ratio <= self.at_most)


GOALS = [
    Goal("checks >= 0.75x nginx (c=50)", "check", 50, "acrelease", "nginx", "rate", at_least=0.75),
    Goal("check p99 at c=200 <= 2x nginx", "check", 200, "acrelease", "nginx", "p99", at_most=2.0),
    Goal("1 MiB downloads >= 0.9x nginx (c=50)", "download", 50, "acrelease", "nginx", "rate", at_least=0.9),
    Goal("checks with --auth within 20% of without (c=50)", "check", 50, "acrelease-auth", "acrelease", "rate",
         at_least=0.8),
    Goal("checks with --admin within 5% of without (c=50)", "check", 50, "acrelease-admin", "acrelease", "rate",
         at_least=0.95),
    Goal("checks recording devices >= 0.9x --no-fleet (c=50)", "check", 50, "acrelease", "acrelease-nofleet",
         "rate", at_least=0.9),
]
RSS_GOAL_MIB = 150


# -- the rounds ----------------------------------------------------------------------------------

@dataclass
class Measure:
    """One wrk run against one server, with everything needed to recompute any summary."""

    round: int
    order: int  # position within its round (the order is reversed every other round)
    scenario: str
    concurrency: int
    server: str
    started: str
    requests_per_s: float
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int
    bad_status: int
    server_cpu_s: float
    cpu_us_per_request: float | None
    wrk_cpu_s: float
    # The rest of the machine while this ran: busy CPU not spent by the server, wrk or this script
    # (other engineers' tests), interrupts (loopback networking, ours included) and hypervisor steal.
    others_cores: float
    softirq_cores: float
    steal_cores: float
    load_average: tuple[float, float, float]
    wrk_output: str


def measure(round_: int, order: int, scenario: Scenario, concurrency: int, server: str, url: str, pids: list[int],
            seconds: int, script: Path | None) -> Measure:
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    load = os.getloadavg()
    cpu0, wrk0, self0, machine0, wall0 = (tree_cpu_seconds(pids), children_cpu_seconds(), self_cpu_seconds(),
                                          MachineCpu.read(), time.monotonic())
    result = wrk(url, concurrency, seconds, scenario.headers(), script)
    wall = time.monotonic() - wall0
    machine = MachineCpu.read() - machine0
    server_cpu, wrk_cpu = tree_cpu_seconds(pids) - cpu0, children_cpu_seconds() - wrk0
    others = machine.process - server_cpu - wrk_cpu - (self_cpu_seconds() - self0)
    return Measure(
        round_, order, scenario.name, concurrency, server, started, result.requests_per_s, result.requests,
        result.seconds, result.p50_ms, result.p90_ms, result.p99_ms, result.errors, result.bad_status,
        round(server_cpu, 3), round(server_cpu / result.requests * 1e6, 2) if result.requests else None,
        round(wrk_cpu, 3), round(max(others, 0.0) / wall, 3), round(machine.softirq / wall, 3),
        round(machine.steal / wall, 3), load, result.output)


def lua_script(scenario: Scenario, workdir: Path) -> Path | None:
    if scenario.lua is None:
        return None
    path = workdir / f"{scenario.name}.lua"
    path.write_text(scenario.lua)
    return path


def run_rounds(scenarios: Sequence[Scenario], servers: Sequence[Server], concurrencies: Sequence[int],
               args: argparse.Namespace, ports: dict[str, int], pids: dict[str, list[int]], workdir: Path
               ) -> list[Measure]:
    def url(scenario: Scenario, server: Server) -> str:
        return f"http://127.0.0.1:{ports[server.name]}{scenario.path_for(server.name)}"

    def taking_part(scenario: Scenario) -> list[Server]:
        return [s for s in servers if not s.only or scenario.name in s.only]

    if args.warmup:
        # Not recorded: a fleet meets a server that has run for hours (caches filled, credentials verified).
        for scenario in scenarios:
            for server in taking_part(scenario):
                wrk(url(scenario, server), max(concurrencies), args.warmup, scenario.headers(),
                    lua_script(scenario, workdir))
    measures = []
    for round_ in range(1, args.runs + 1):
        for concurrency in concurrencies:
            for scenario in scenarios:
                order = taking_part(scenario)
                for position, server in enumerate(order if round_ % 2 else order[::-1]):
                    m = measure(round_, position, scenario, concurrency, server.name, url(scenario, server),
                                pids[server.name], args.duration, lua_script(scenario, workdir))
                    measures.append(m)
                    print(f"round {round_} c={concurrency:<3} {scenario.name:<9} {server.name:<15} "
                          f"{m.requests_per_s:>9,.0f} req/s  p99 {m.p99_ms:7.2f} ms  cpu {m.cpu_us_per_request} us/req"
                          f"  others {m.others_cores:.2f} cores  errors {m.errors}  non-2xx/3xx {m.bad_status}",
                          flush=True)
    return measures


# -- memory under 200 slow downloads -------------------------------------------------------------

async def slow_downloads(port: int, clients: int, seconds: float) -> dict[str, int]:
    """``clients`` connections each downloading the 16 MiB image, reading 64 KiB every 20 ms."""
    request = (f"GET {RSS_FILE} HTTP/1.0\r\nHost: 127.0.0.1\r\n" +
               "".join(f"{k}: {v}\r\n" for k, v in ESP8266_HEADERS) + "\r\n").encode()
    done = {"complete": 0, "partial": 0, "failed": 0}
    deadline = time.monotonic() + seconds

    async def one() -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            received = 0
            while time.monotonic() < deadline:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                received += len(chunk)
                await asyncio.sleep(0.02)
            writer.close()
            done["complete" if received > 16 << 20 else "partial"] += 1
        except OSError:
            done["failed"] += 1

    await asyncio.gather(*(one() for _ in range(clients)))
    return done


def measure_rss(port: int, pids: list[int], clients: int, seconds: float) -> dict[str, Any]:
    peak = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
    baseline = rss_kib(pids)
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {CLIENT_CORE})  # the slow clients run here, beside wrk's core, not the server's
    try:
        loop = asyncio.new_event_loop()
        task = loop.create_task(slow_downloads(port, clients, seconds))
        while not task.done():
            loop.run_until_complete(asyncio.sleep(0.2))
            now = rss_kib(pids)
            peak = {k: max(peak[k], now[k]) for k in peak}
        outcome = loop.run_until_complete(task)
        loop.close()
    finally:
        os.sched_setaffinity(0, affinity)
    fast = wrk(f"http://127.0.0.1:{port}{RSS_FILE}", clients, 5, ESP8266_HEADERS)
    after = rss_kib(pids)
    peak = {k: max(peak[k], after[k]) for k in peak}
    return {"clients": clients, "baseline_kib": baseline, "peak_kib": peak, "slow_clients": outcome,
            "fast_wrk_downloads_per_s": fast.requests_per_s, "peak_mib": round(peak["VmRSS"] / 1024, 1)}


# -- summary -------------------------------------------------------------------------------------

METRICS: dict[Metric, Callable[[Measure], float | None]] = {
    "rate": lambda m: m.requests_per_s, "p99": lambda m: m.p99_ms, "cpu": lambda m: m.cpu_us_per_request}


def ratios(measures: Sequence[Measure], scenario: str, concurrency: int, server: str, base: str,
           metric: Metric) -> list[float]:
    """``server``'s figure over ``base``'s, round by round (both measured within seconds of each other)."""
    get = METRICS[metric]
    by_round = {(m.round, m.server): get(m) for m in measures
                if m.scenario == scenario and m.concurrency == concurrency}
    out = []
    for (round_, name), value in sorted(by_round.items()):
        other = by_round.get((round_, base))
        if name == server and value is not None and other:
            out.append(value / other)
    return out


def summarize(measures: Sequence[Measure], servers: Sequence[Server]) -> list[dict[str, Any]]:
    rows = []
    for scenario, concurrency in dict.fromkeys((m.scenario, m.concurrency) for m in measures):
        for server in servers:
            key = (scenario, concurrency, server.name)
            mine = [m for m in measures if (m.scenario, m.concurrency, m.server) == key]
            if not mine:
                continue
            row: dict[str, Any] = {
                "scenario": scenario, "concurrency": concurrency, "server": server.name,
                "requests_per_s": Spread.of([m.requests_per_s for m in mine]),
                "p99_ms": Spread.of([m.p99_ms for m in mine]),
                "cpu_us_per_request": Spread.of([m.cpu_us_per_request for m in mine
                                                 if m.cpu_us_per_request is not None]),
                "others_cores": Spread.of([m.others_cores for m in mine]),
                "errors": sum(m.errors for m in mine), "bad_status": sum(m.bad_status for m in mine),
                "vs": {base: {metric: Spread.of(ratios(measures, scenario, concurrency, server.name, base, metric))
                              for metric in METRICS} for base in server.compare},
            }
            rows.append(row)
    return rows


def judge(measures: Sequence[Measure], rss: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal on the median of its per-round ratios, with how many rounds met it on their own."""
    verdicts = []
    for goal in GOALS:
        values = ratios(measures, goal.scenario, goal.concurrency, goal.server, goal.base, goal.metric)
        spread = Spread.of(values)
        verdicts.append({"goal": goal.text, "met": None if spread is None else goal.passes(spread.median),
                         "ratio": spread, "rounds_met": sum(goal.passes(v) for v in values), "rounds": len(values)})
    peak = rss.get("peak_mib")
    baseline = round(rss["baseline_kib"]["VmRSS"] / 1024, 1) if "baseline_kib" in rss else None
    verdicts.append({"goal": f"RSS < {RSS_GOAL_MIB} MiB with 200 downloads of 16 MiB",
                     "met": None if peak is None else peak < RSS_GOAL_MIB, "peak_mib": peak, "baseline_mib": baseline})
    return verdicts


COLUMNS = (("requests_per_s", "req/s", 0), ("p99_ms", "p99 ms", 2), ("cpu_us_per_request", "cpu us/req", 1),
           ("others_cores", "others' load (cores)", 2))


def relative_spread(rows: Sequence[dict[str, Any]], key: str) -> str:
    """How much a figure moved from round to round: (max-min)/median of each row, as median (min-max)."""
    spreads = Spread.of([(v.high - v.low) / v.median * 100 for row in rows
                         if (v := row[key]) and v.n > 1 and v.median])
    return spreads.show(0, "%") if spreads else "-"


def print_summary(rows: Sequence[dict[str, Any]], goals: Sequence[dict[str, Any]], rss: dict[str, Any],
                  runs: int) -> None:
    print(f"\nmedian (min-max) over {runs} rounds; ratios are taken within each round, then summarised")
    cells = [[row["server"], *(row[key].show(digits) if row[key] else "-" for key, _, digits in COLUMNS)]
             for row in rows]
    widths = [max(len(text) for text in column) + 3 for column in zip(["server", *(c[1] for c in COLUMNS)], *cells,
                                                                       strict=True)]
    last: tuple[str, int] | None = None
    for row, texts in zip(rows, cells, strict=True):
        if (row["scenario"], row["concurrency"]) != last:
            last = (row["scenario"], row["concurrency"])
            models = next(s.models for s in SCENARIOS if s.name == row["scenario"])
            print(f"\n{row['scenario']} c={row['concurrency']}: {models}")
            print("  " + "".join(f"{title:<{w}}" for title, w in zip(["server", *(c[1] for c in COLUMNS)], widths,
                                                                        strict=True)).rstrip())
        failures = (f"  errors {row['errors']}, non-2xx/3xx {row['bad_status']}"
                    if row["errors"] or row["bad_status"] else "")
        print("  " + "".join(f"{text:<{w}}" for text, w in zip(texts, widths, strict=True)).rstrip() + failures)
        for base, figures in row["vs"].items():
            shown = "  ".join(f"{label} {figures[metric].show(2, 'x')}" for metric, label in
                              (("rate", "req/s"), ("p99", "p99"), ("cpu", "cpu/req")) if figures[metric])
            print(f"  {'':<{widths[0]}}vs {base}: {shown}")
    print(f"\nRound-to-round spread, (max-min)/median of each row: req/s {relative_spread(rows, 'requests_per_s')}, "
          f"p99 {relative_spread(rows, 'p99_ms')}, cpu us/req {relative_spread(rows, 'cpu_us_per_request')}."
          "\nCPU per request is the server's own work: time spent waiting for a core that other "
          "processes hold ('others')\nlowers req/s and raises p99 but is not counted in it. A busy machine still "
          "raises it (likely: caches cooled\nby each preemption, fewer requests per event-loop wake-up): compare CPU "
          "figures taken under similar 'others' load.")
    if rss:
        peak, base_kib = rss["peak_kib"], rss["baseline_kib"]
        print(f"\nacrelease RSS with {rss['clients']} clients downloading 16 MiB: peak {rss['peak_mib']} MiB "
              f"(anon {peak['RssAnon'] / 1024:.1f} MiB, file-backed {peak['RssFile'] / 1024:.1f} MiB;"
              f" baseline {base_kib['VmRSS'] / 1024:.1f} MiB); slow clients {rss['slow_clients']}")
    print("\ngoals (on the median of the per-round ratios):")
    for verdict in goals:
        status = {None: "not measured", True: "met", False: "NOT MET"}[verdict["met"]]
        ratio: Spread | None = verdict.get("ratio")
        detail = (f": {ratio.show(2, 'x')}, met in {verdict['rounds_met']} of {verdict['rounds']} rounds"
                  if ratio else f": peak {verdict['peak_mib']} MiB (baseline {verdict['baseline_mib']})"
                  if verdict.get("peak_mib") else "")
        print(f"  {status:<13}{verdict['goal']}{detail}")


# -- main ----------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench_serve", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measure (default 10)")
    parser.add_argument("--runs", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--concurrency", default="50,200", help="comma-separated connection counts")
    parser.add_argument("--scenarios", default=",".join(s.name for s in SCENARIOS if s.default),
                        help="comma-separated, from: " + ", ".join(s.name for s in SCENARIOS))
    parser.add_argument("--warmup", type=int, default=1, help="seconds of unrecorded load per server and scenario "
                        "before the first round (0: none)")
    parser.add_argument("--no-rss", action="store_true", help="skip the memory measurement")
    parser.add_argument("--list", action="store_true", help="print the scenarios and server variants, then exit")
    parser.add_argument("--results", type=Path, default=RESULTS, metavar="DIR",
                        help="where the JSON goes (default benchmarks/results, ignored by git)")
    parser.add_argument("--report", type=Path, metavar="JSON",
                        help="summarise a results file again from its raw measures (measures nothing)")
    parser.add_argument("--markdown", action="store_true", help="with --report: as the README's tables")
    for flag in dict.fromkeys(s.flag for s in SERVERS if s.flag):
        parser.add_argument(f"--{flag}", action="store_true",
                            help=next(s.help for s in SERVERS if s.flag == flag and s.help))
    args = parser.parse_args(argv)
    known = {s.name for s in SCENARIOS}
    unknown = [name for name in args.scenarios.split(",") if name not in known]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; choose from {', '.join(sorted(known))}")
    try:
        args.concurrencies = [int(c) for c in args.concurrency.split(",")]
    except ValueError:
        parser.error(f"--concurrency {args.concurrency!r}: expected numbers separated by commas, e.g. 50,200")
    if args.runs < 1 or args.duration < 1 or min(args.concurrencies) < 1:
        parser.error("--runs, --duration and --concurrency must be at least 1")
    return args


def print_tables() -> None:
    print("scenarios (* run by default):")
    for scenario in SCENARIOS:
        print(f"  {'*' if scenario.default else ' '} {scenario.name:<10}{scenario.path:<24}{scenario.models}")
    print("server variants:")
    for server in SERVERS:
        when = f"with --{server.flag}" if server.flag else "always"
        only = f", scenarios {','.join(server.only)}" if server.only else ""
        print(f"    {server.name:<18}{when}{only}")


def markdown(rows: Sequence[dict[str, Any]], goals: Sequence[dict[str, Any]]) -> str:
    """The README's tables: the goals, then every figure and per-round ratio."""
    dash = "\u2013"  # an en dash between the ends of a range

    def show(value: Spread | None, digits: int, unit: str = "") -> str:
        return value.show(digits, unit, dash) if value else ""

    lines = [f"| goal | median of the rounds (min{dash}max) | rounds that met it | |", "|---|---|---|---|"]
    for verdict in goals:
        ratio: Spread | None = verdict.get("ratio")
        memory = (f"peak {verdict['peak_mib']} MiB (baseline {verdict['baseline_mib']})"
                  if verdict.get("peak_mib") else "")
        rounds = f"{verdict['rounds_met']} of {verdict['rounds']}" if ratio else ""
        status = {None: "not measured", True: "met", False: "**not met**"}[verdict["met"]]
        goal = verdict["goal"].replace(">=", "≥").replace("<=", "≤")
        lines.append(f"| {goal} | {show(ratio, 2, 'x') if ratio else memory} | {rounds} | {status} |")
    lines += ["", "| scenario | server | req/s | p99 ms | CPU µs/request | others' load (cores) |",
              "|---|---|---|---|---|---|"]
    last: tuple[str, int] | None = None
    for row in rows:
        title = " "
        if (row["scenario"], row["concurrency"]) != last:
            last = (row["scenario"], row["concurrency"])
            title = f" {row['scenario']}, c={row['concurrency']} "
        lines.append(f"|{title}| {row['server']} | {show(row['requests_per_s'], 0)} | {show(row['p99_ms'], 2)} | "
                     f"{show(row['cpu_us_per_request'], 1)} | {show(row['others_cores'], 2)} |")
        for base, figures in row["vs"].items():
            lines.append(f"| | {row['server']} / {base} | {show(figures['rate'], 2, 'x')} | "
                         f"{show(figures['p99'], 2, 'x')} | {show(figures['cpu'], 2, 'x')} | |")
    return "\n".join(lines)


def reprint(path: Path, as_markdown: bool = False) -> None:
    """The summary and goals of an earlier run, recomputed from the raw measures in its JSON."""
    try:
        saved = json.loads(path.read_text())
        measures = [Measure(**{**m, "load_average": tuple(m["load_average"])}) for m in saved["measures"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"bench: error: cannot read {path}: {exc}; give a benchmarks/results/serve-*.json") from exc
    names = set(saved.get("servers", []))
    servers = [s for s in SERVERS if s.name in names]
    rows, goals = summarize(measures, servers), judge(measures, saved.get("rss", {}))
    print(f"{saved['date']}  {saved['command']}")
    if as_markdown:
        print(markdown(rows, goals))
    else:
        print_summary(rows, goals, saved.get("rss", {}), saved["settings"]["runs"])


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.list:
        print_tables()
        return
    if args.report:
        reprint(args.report, args.markdown)
        return
    for tool in ("wrk", "nginx", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: error: {tool} not found; apt-get install -y wrk nginx util-linux")
    scenarios = [s for s in SCENARIOS if s.name in args.scenarios.split(",")]
    servers = [s for s in SERVERS if s.flag is None or getattr(args, s.flag)]
    servers = [s for s in servers if any(not s.only or sc.name in s.only for sc in scenarios)]
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    report: dict[str, Any] = {
        "date": date, "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg(), "python": sys.version.split()[0]},
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "scenarios": [{"name": s.name, "models": s.models, "path": s.path, "version": s.version} for s in scenarios],
        "servers": [s.name for s in servers],
    }
    rss: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="acrelease-bench-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        workdir.chmod(0o755)  # nginx's worker runs as an unprivileged user and must read the files
        setup = Setup(workdir, workdir / "catalog", workdir / "devices.auth")
        build_catalog(setup.catalog)
        add_user(setup.credentials, AUTH_USER, AUTH_PASSWORD)  # the slow hash, as a fleet's file has
        ports, pids = {}, {}
        for server in servers:
            procs = server.launch(setup)
            ports[server.name] = procs[-1].port
            pids[server.name] = stack.enter_context(running(procs, workdir, server.name))
        measures = run_rounds(scenarios, servers, args.concurrencies, args, ports, pids, workdir)
        if not args.no_rss:
            rss = measure_rss(ports["acrelease"], pids["acrelease"], 200, args.duration)
    rows = summarize(measures, servers)
    goals = judge(measures, rss)
    print_summary(rows, goals, rss, args.runs)
    report.update(summary=rows, goals=goals, rss=rss, measures=[asdict(m) for m in measures])
    out = args.results / f"serve-{date.replace(':', '')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=lambda o: asdict(o)) + "\n")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
