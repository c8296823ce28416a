"""acrelease serve vs nginx, in one run, same files, same load (issue 2, Performance).

Devices check with HTTP/1.0 and ``Connection: close``: a new TCP connection per check. Each
server is pinned to core 0 (``taskset``), wrk to core 1, with the full ESP8266 header set of
PROTOCOL.md G. Scenarios:

* ``check``: a version check answered 304 (nginx: ``return 304`` on the same URL);
* ``download``: a 1 MiB image (nginx: the same file with ``sendfile on``; acrelease: the
  version-aware update URL, so the whole policy runs);
* ``rss``: acrelease's resident memory while 200 clients download a 16 MiB image.

acrelease runs as ``acrelease serve`` does by default: ``--log INFO``, one line per decision
(written to a file here); nginx runs with ``access_log off``. ``--quiet`` adds acrelease with
``--log WARNING``. For the record the same ASGI app also runs under granian and uvicorn
(``--others``), both without access logs.
Absolute numbers on a shared machine drift by 30 % or more between runs: read the ratios, which
compare servers measured back to back in the same run (the runs are interleaved).

    python benchmarks/bench_serve.py                  # c=50 and c=200, 10 s, two runs each
    python benchmarks/bench_serve.py --duration 5 --runs 1 --others --quiet
Writes benchmarks/results/serve-<UTC time>.json (ignored by git).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from acrelease.access import add_user  # noqa: E402  (after the path set-up)
from tests.factories.catalog import CatalogBuilder  # noqa: E402
from tests.integration.served import free_port  # noqa: E402

SERVER_CORE, CLIENT_CORE = "0", "1"
CHECK_PATH = "/update/demo/d1mini"
DOWNLOAD_FILE = "/demo/big1m/demo-big1m-1.0.0.bin"
DOWNLOAD_UPDATE = "/update/demo/big1m"
RSS_FILE = "/demo/big16m/demo-big16m-1.0.0.bin"

ESP8266_HEADERS = [
    ("User-Agent", "ESP8266-http-Update"), ("Connection", "close"), ("x-ESP8266-Chip-ID", "15602487"),
    ("x-ESP8266-STA-MAC", "DE:BA:7A:B1:E0:42"), ("x-ESP8266-AP-MAC", "DE:BA:7A:B1:E0:42"),
    ("x-ESP8266-free-space", "16777216"), ("x-ESP8266-sketch-size", "400000"),
    ("x-ESP8266-sketch-md5", "a43ad019932b627ab90ee35a94a764ee"), ("x-ESP8266-chip-size", "16777216"),
    ("x-ESP8266-sdk-version", "2.5.0"), ("x-ESP8266-mode", "sketch"), ("Content-Length", "0"),
]


@dataclass
class Measure:
    server: str
    scenario: str
    concurrency: int
    run: int
    requests_per_s: float
    p99_ms: float
    errors: int
    bad_status: int
    cpu_us_per_request: float | None = None


@dataclass
class Report:
    date: str
    command: str
    machine: dict[str, Any]
    measures: list[Measure] = field(default_factory=list)
    rss: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


# -- catalog -----------------------------------------------------------------------------------

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


# -- servers -----------------------------------------------------------------------------------

def wait_port(port: int, process: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if process.poll() is not None:
            raise SystemExit(f"server exited early: {process.args!r}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server did not listen: {process.args!r}")


@contextmanager
def running(command: list[str], port: int, workdir: Path, env: dict[str, str] | None = None
            ) -> Iterator[subprocess.Popen[bytes]]:
    log = (workdir / f"server-{port}.log").open("wb")
    process = subprocess.Popen(["taskset", "-c", SERVER_CORE, *command], stdout=log, stderr=log,
                               env={**os.environ, **(env or {})}, cwd=ROOT)
    try:
        wait_port(port, process)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def nginx_command(workdir: Path, catalog: Path, port: int) -> list[str]:
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/body; proxy_temp_path {workdir}/proxy;
  fastcgi_temp_path {workdir}/fastcgi; uwsgi_temp_path {workdir}/uwsgi; scgi_temp_path {workdir}/scgi;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = {CHECK_PATH} {{ return 304; }}
    location / {{ root {catalog}; sendfile on; }}
  }}
}}
""")
    return [shutil.which("nginx") or "nginx", "-c", str(conf), "-p", str(workdir)]


def server_commands(catalog: Path, port: int, workdir: Path, name: str) -> tuple[list[str], dict[str, str]]:
    env = {"ACRELEASE_CATALOG": str(catalog), "PYTHONPATH": str(ROOT)}
    if name == "nginx":
        return nginx_command(workdir, catalog, port), env
    if name.startswith("acrelease"):
        # The default (INFO) logs one line per decision, as `acrelease serve` does out of the box.
        level = "WARNING" if name == "acrelease-quiet" else "INFO"
        auth = ["--auth", str(credentials_file(workdir))] if name == "acrelease-auth" else []
        return [sys.executable, "-m", "acrelease", "serve", "--catalog", str(catalog), "--port", str(port),
                "--bind", "127.0.0.1", "--log", level, *auth], env
    if name == "granian":
        return [sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--host", "127.0.0.1",
                "--port", str(port), "--workers", "1", "--loop", "uvloop", "--no-ws", "--log-level", "warning",
                "benchmarks.asgi_app:factory"], env
    if name == "uvicorn":
        return [sys.executable, "-m", "uvicorn", "--factory", "benchmarks.asgi_app:factory", "--host",
                "127.0.0.1", "--port", str(port), "--loop", "uvloop", "--http", "httptools",
                "--no-access-log", "--log-level", "warning", "--lifespan", "on"], env
    raise ValueError(name)


AUTH_USER, AUTH_PASSWORD = "fleet", "bench-password"
AUTHORIZATION = "Basic " + base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()


def credentials_file(workdir: Path) -> Path:
    """The credentials of the ``acrelease-auth`` variant (the slow hash, as a fleet would use)."""
    path = workdir / "devices.auth"
    if not path.exists():
        add_user(path, AUTH_USER, AUTH_PASSWORD)
    return path


def cpu_seconds(pid: int) -> float:
    """utime+stime of ``pid`` and its children (nginx's worker, acrelease's workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for candidate in [pid, *children(pid)]:
        try:
            fields = Path(f"/proc/{candidate}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found + [g for c in found for g in children(c)]


# -- wrk ---------------------------------------------------------------------------------------

def wrk(url: str, concurrency: int, duration: int, esp_headers: bool = True) -> dict[str, float]:
    command = ["taskset", "-c", CLIENT_CORE, "wrk", "-t1", f"-c{concurrency}", f"-d{duration}s", "--latency"]
    if esp_headers:
        # Every server gets the same credentials (nginx ignores them): only acrelease-auth checks them.
        for name, value in [*ESP8266_HEADERS, ("x-ESP8266-version", version_for(url)),
                            ("Authorization", AUTHORIZATION)]:
            command += ["-H", f"{name}: {value}"]
    out = subprocess.run([*command, url], capture_output=True, text=True, timeout=duration + 60).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if rate is None or p99 is None:
        raise SystemExit(f"cannot read wrk's output:\n{out}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    # Read errors at the end of Connection: close exchanges are wrk's way of seeing the close;
    # connect/timeout errors are real failures.
    failures = int(errors.group(1)) + int(errors.group(4)) if errors else 0
    total = re.search(r"(\d+) requests in", out)
    return {"rate": float(rate.group(1)), "p99": float(p99.group(1)) * scale, "errors": failures,
            "bad": int(bad.group(1)) if bad else 0, "requests": int(total.group(1)) if total else 0}


def version_for(url: str) -> str:
    return "1.1.0" if url.endswith(CHECK_PATH) else "0.9.0"


# -- RSS under 200 downloads ---------------------------------------------------------------------

def rss_kib(pid: int) -> dict[str, int]:
    total = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
    for candidate in [pid, *children(pid)]:
        try:
            for line in Path(f"/proc/{candidate}/status").read_text().splitlines():
                key = line.split(":")[0]
                if key in total:
                    total[key] += int(line.split()[1])
        except OSError:
            continue
    return total


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


def measure_rss(port: int, pid: int, clients: int, seconds: float) -> dict[str, Any]:
    peak = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
    baseline = rss_kib(pid)
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    loop = asyncio.new_event_loop()
    task = loop.create_task(slow_downloads(port, clients, seconds))
    while not task.done():
        loop.run_until_complete(asyncio.sleep(0.2))
        now = rss_kib(pid)
        peak = {k: max(peak[k], now[k]) for k in peak}
    outcome = loop.run_until_complete(task)
    loop.close()
    fast = wrk(f"http://127.0.0.1:{port}{RSS_FILE}", clients, 5)
    after = rss_kib(pid)
    peak = {k: max(peak[k], after[k]) for k in peak}
    return {"clients": clients, "baseline_kib": baseline, "peak_kib": peak, "slow_clients": outcome,
            "fast_wrk_downloads_per_s": fast["rate"], "peak_mib": round(peak["VmRSS"] / 1024, 1)}


# -- main ----------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--concurrency", default="50,200")
    parser.add_argument("--others", action="store_true", help="also granian and uvicorn (for the record)")
    parser.add_argument("--quiet", action="store_true",
                        help="also acrelease with --log WARNING (no decision lines); the goals use the default")
    parser.add_argument("--auth", action="store_true",
                        help="also acrelease with --auth (HTTP Basic checked on every request)")
    parser.add_argument("--scenarios", default="check,download", help="comma-separated: check, download")
    parser.add_argument("--no-rss", action="store_true", help="skip the RSS measurement")
    args = parser.parse_args()
    for tool in ("wrk", "nginx", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install -y wrk nginx util-linux")
    servers = ["nginx", "acrelease"] + (["acrelease-quiet"] if args.quiet else []) + (
        ["acrelease-auth"] if args.auth else []) + (
        ["granian", "uvicorn"] if args.others else [])
    report = Report(date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    command=" ".join([Path(sys.executable).name, *sys.argv]),
                    machine={"cpus": os.cpu_count(), "load": os.getloadavg(), "python": sys.version.split()[0]})
    with tempfile.TemporaryDirectory(prefix="acrelease-bench-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)  # nginx's worker runs as an unprivileged user and must read the files
        catalog = workdir / "catalog"
        build_catalog(catalog)
        ports = {name: free_port() for name in servers}
        with contextmanager_stack(servers, catalog, ports, workdir) as processes:
            for run in range(1, args.runs + 1):
                for concurrency in [int(c) for c in args.concurrency.split(",")]:
                    for scenario in args.scenarios.split(","):
                        for name in servers:  # interleaved: drift hits every server alike
                            path = CHECK_PATH if scenario == "check" else (
                                DOWNLOAD_FILE if name == "nginx" else DOWNLOAD_UPDATE)
                            pid = processes[name].pid
                            before = cpu_seconds(pid)
                            result = wrk(f"http://127.0.0.1:{ports[name]}{path}", concurrency, args.duration)
                            cpu = cpu_seconds(pid) - before
                            report.measures.append(Measure(
                                name, scenario, concurrency, run, result["rate"], result["p99"],
                                int(result["errors"]), int(result["bad"]),
                                round(cpu / result["requests"] * 1e6, 1) if result["requests"] else None))
                            print(f"run {run} c={concurrency:<3} {scenario:<8} {name:<14} "
                                  f"{result['rate']:>9.0f} req/s  p99 {result['p99']:7.2f} ms  "
                                  f"errors {result['errors']:.0f}  non-2xx/3xx {result['bad']:.0f}", flush=True)
            if not args.no_rss:
                report.rss = measure_rss(ports["acrelease"], processes["acrelease"].pid, 200, args.duration)
    report.summary = summarize(report, servers)
    print_table(report, servers)
    out = ROOT / "benchmarks" / "results" / f"serve-{report.date.replace(':', '')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(asdict(report), indent=1) + "\n")
    print(f"\nwritten: {out.relative_to(ROOT)}")


@contextmanager
def contextmanager_stack(servers: list[str], catalog: Path, ports: dict[str, int], workdir: Path
                         ) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    from contextlib import ExitStack
    with ExitStack() as stack:
        processes = {}
        for name in servers:
            command, env = server_commands(catalog, ports[name], workdir, name)
            processes[name] = stack.enter_context(running(command, ports[name], workdir, env))
        yield processes


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def summarize(report: Report, servers: list[str]) -> dict[str, Any]:
    def pick(name: str, scenario: str, concurrency: int, attr: str) -> float:
        return mean([getattr(m, attr) for m in report.measures
                     if m.server == name and m.scenario == scenario and m.concurrency == concurrency])

    summary: dict[str, Any] = {}
    concurrencies = sorted({m.concurrency for m in report.measures})
    for name in servers:
        if name == "nginx":
            continue
        for c in concurrencies:
            for scenario in ("check", "download"):
                summary[f"{name} {scenario} c={c} rate ratio"] = round(
                    pick(name, scenario, c, "requests_per_s") / pick("nginx", scenario, c, "requests_per_s"), 3)
                summary[f"{name} {scenario} c={c} p99 ratio"] = round(
                    pick(name, scenario, c, "p99_ms") / pick("nginx", scenario, c, "p99_ms"), 3)
    def met(key: str, passes: Callable[[float], bool]) -> bool | None:
        """None when the run did not measure it (a scenario or concurrency left out)."""
        value = summary.get(key)
        return None if value is None or math.isnan(value) else passes(value)

    goals: dict[str, bool | None] = {
        "checks >= 0.75x nginx (c=50)": met("acrelease check c=50 rate ratio", lambda r: r >= 0.75),
        "1 MiB downloads >= 0.9x nginx (c=50)": met("acrelease download c=50 rate ratio", lambda r: r >= 0.9),
        "check p99 at c=200 <= 2x nginx": met("acrelease check c=200 p99 ratio", lambda r: r <= 2.0),
        "RSS < 150 MiB with 200 downloads of 16 MiB":
            report.rss["peak_mib"] < 150 if "peak_mib" in report.rss else None,
    }
    if "acrelease-auth" in servers:
        with_auth = pick("acrelease-auth", "check", concurrencies[0], "requests_per_s")
        without = pick("acrelease", "check", concurrencies[0], "requests_per_s")
        summary[f"acrelease-auth/acrelease check c={concurrencies[0]} rate ratio"] = round(with_auth / without, 3)
        goals[f"checks with --auth >= 0.8x without (c={concurrencies[0]})"] = with_auth / without >= 0.8
    summary["goals"] = goals
    return summary


def print_table(report: Report, servers: list[str]) -> None:
    print(f"\n{report.date}  {report.command}")
    print(f"{'scenario':<10}{'c':>5}  {'server':<14}{'req/s':>10}{'p99 ms':>9}{'cpu us/req':>12}{'vs nginx':>10}")
    rows: dict[tuple[str, int, str], list[Measure]] = {}
    for m in report.measures:
        rows.setdefault((m.scenario, m.concurrency, m.server), []).append(m)
    for scenario in ("check", "download"):
        for c in sorted({m.concurrency for m in report.measures}):
            base = mean([m.requests_per_s for m in rows.get((scenario, c, "nginx"), [])])
            for name in servers:
                ms = rows.get((scenario, c, name), [])
                rate = mean([m.requests_per_s for m in ms])
                cpus = [m.cpu_us_per_request for m in ms if m.cpu_us_per_request is not None]
                print(f"{scenario:<10}{c:>5}  {name:<14}{rate:>10.0f}{mean([m.p99_ms for m in ms]):>9.2f}"
                      f"{mean(cpus):>12.1f}{rate / base:>9.2f}x")
    rss = report.rss
    if rss:
        peak, base_kib = rss["peak_kib"], rss["baseline_kib"]
        print(f"\nacrelease RSS with {rss['clients']} clients downloading 16 MiB: peak {rss['peak_mib']} MiB "
              f"(anon {peak['RssAnon'] / 1024:.1f} MiB, file-backed {peak['RssFile'] / 1024:.1f} MiB;"
              f" baseline {base_kib['VmRSS'] / 1024:.1f} MiB); slow clients {rss['slow_clients']}")
    print("\ngoals:")
    for goal, ok in report.summary["goals"].items():
        print(f"  {'not measured' if ok is None else 'PASS' if ok else 'FAIL'}  {goal}")


if __name__ == "__main__":
    main()
