"""The fleet store on PostgreSQL vs SQLite, and images sent by nginx (README, "Running on several hosts").

* ``fleet``: ``acrelease serve`` (one worker) answers checks from N distinct devices (wrk with a
  Lua script rotating the MAC over N, full ESP8266 header set of docs/protocol.md G, a new TCP
  connection per check as devices make), recording every one: once with the SQLite store, once
  with a throwaway PostgreSQL (tests/pgserver.py). A warm-up pass first puts the N devices in the
  store, then the measured pass; the goal is PostgreSQL >= 0.85x SQLite's checks per second.
* ``download``: a 1 MiB image through nginx (the template's config): the update URL answered by
  acrelease with ``--accel-redirect`` (nginx sends the file), vs nginx serving the same file
  itself from a plain location. The goal is >= 0.95x of nginx alone.

Short runs while developing (``--seconds 3 --devices 10000``); the README's figures come from

    python benchmarks/bench_hosts.py --devices 100000 --seconds 10
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from acrelease.fleet.model import Observation  # noqa: E402
from acrelease.fleet.store import open_store  # noqa: E402
from tests import clirun  # noqa: E402
from tests.factories.catalog import CatalogBuilder  # noqa: E402
from tests.integration import nginx  # noqa: E402
from tests.integration.served import free_port, wait_listening  # noqa: E402
from tests.pgserver import PgServer  # noqa: E402

HEADERS = {  # ESP8266HTTPUpdate's header set (docs/protocol.md G); the MAC is set per request
    "User-Agent": "ESP8266-http-Update", "x-ESP8266-Chip-ID": "15602487", "x-ESP8266-AP-MAC": "DE:BA:7A:B1:E0:42",
    "x-ESP8266-free-space": "4194304", "x-ESP8266-sketch-size": "400000",
    "x-ESP8266-sketch-md5": "a43ad019932b627ab90ee35a94a764ee", "x-ESP8266-chip-size": "4194304",
    "x-ESP8266-sdk-version": "2.5.0", "x-ESP8266-mode": "sketch", "Connection": "close",
}

LUA = """
local devices = {devices}
local n = 0
local threads = 0
function setup(thread)  -- threads start half the fleet apart
  thread:set("offset", threads * math.floor(devices / 2))
  threads = threads + 1
end
function request()
  n = n + 1
  local i = (n + (offset or 0)) % devices
  wrk.headers["x-ESP8266-STA-MAC"] = string.format("02:00:00:%02X:%02X:%02X", math.floor(i / 65536) % 256,
                                                   math.floor(i / 256) % 256, i % 256)
  return wrk.format("GET", "{path}")
end
"""


def plain_image(size: int, fill: bytes) -> bytes:
    """A plain ESP image as a client sees it: magic 0xE9, 4 MB flash in the header, then filler."""
    return (bytes([0xE9, 0x03, 0x02, 0x40]) + fill * (size // len(fill) + 1))[:size]


def catalog(root: Path) -> Path:
    built = CatalogBuilder(root)
    built.add("demo", "d1mini", "esp8266", "1.1.0", plain_image(400_016, b"fleet"))
    built.add("demo", "big1m", "esp8266", "1.0.0", plain_image(1 << 20, b"onemebibyte"))
    built.write()
    return root


def wrk(url: str, seconds: int, connections: int, headers: dict[str, str], script: Path | None = None
        ) -> dict[str, float]:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    if script is not None:
        command += ["-s", str(script)]
    out = subprocess.run([*command, url], capture_output=True, text=True, timeout=seconds + 60).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)([KMG]?B)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if rate is None or transfer is None:
        raise SystemExit(f"cannot read wrk's output:\n{out}")
    scale = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}[transfer.group(2)]
    total = re.search(r"(\d+) requests in", out)
    return {"rate": float(rate.group(1)), "bytes_per_s": float(transfer.group(1)) * scale,
            "requests": int(total.group(1)) if total else 0,
            "errors": int(errors.group(1)) + int(errors.group(4)) if errors else 0,
            "bad": int(bad.group(1)) if bad else 0}


def prefill(spec: str, devices: int) -> None:
    """The fleet as the store holds it after a day: every device seen once, running 1.1.0."""
    store = open_store(spec, None)
    at = int(time.time() * 1000) - 86_400_000
    for start in range(0, devices, 5000):
        store.record([Observation(_mac(i), "demo", "d1mini", "stable", "1.1.0", None, 4194304, 1000000, "2.5.0",
                                  "10.0.0.1", at, at, 1, (), ()) for i in range(start, min(devices, start + 5000))])
    store.close()


def _mac(i: int) -> str:
    return f"02:00:00:{(i >> 16) & 255:02X}:{(i >> 8) & 255:02X}:{i & 255:02X}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` so far (/proc/PID/stat fields 14 and 15, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def serve(root: Path, work: Path, *extra: str) -> Iterator[tuple[int, int]]:
    """``acrelease serve`` on 127.0.0.1; yields (port, pid)."""
    port = free_port()
    log = work / f"serve-{port}.log"
    with open(log, "w") as out:
        process = clirun.popen("serve", "--catalog", str(root), "--bind", "127.0.0.1", "--port", str(port),
                               "--log", "WARNING", *extra, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_listening(process, port, log.read_text)
        yield port, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def fleet(root: Path, work: Path, devices: int, seconds: int, connections: int, runs: int) -> dict[str, Any]:
    script = work / "devices.lua"
    script.write_text(LUA.replace("{devices}", str(devices)).replace("{path}", "/update/demo/d1mini"))
    headers = {**HEADERS, "x-ESP8266-version": "1.1.0"}
    pg = PgServer()
    results: dict[str, Any] = {}
    try:
        pg.start()
        specs = {"sqlite": str(work / "fleet.sqlite3"), "postgresql": pg.database()}
        for spec in specs.values():
            prefill(spec, devices)
        with serve(root, work, "--fleet", specs["sqlite"], "--loop-limit", "1000000") as lite, \
                serve(root, work, "--fleet", specs["postgresql"], "--loop-limit", "1000000") as postgres:
            servers = {"sqlite": lite, "postgresql": postgres}
            for name, (port, _) in servers.items():
                url = f"http://127.0.0.1:{port}/update/demo/d1mini"
                results[name] = {"warm_up": wrk(url, min(seconds, 5), connections, headers, script), "runs": []}
            for run in range(runs):  # interleaved: the machine is shared, its speed drifts
                for name, (port, pid) in servers.items():
                    time.sleep(2)
                    before = cpu_seconds(pid)
                    got = wrk(f"http://127.0.0.1:{port}/update/demo/d1mini", seconds, connections, headers, script)
                    time.sleep(1.5)  # the flush of the run's last second counts too
                    got["cpu_us_per_check"] = (cpu_seconds(pid) - before) / max(got["requests"], 1) * 1e6
                    results[name]["runs"].append(got)
                    print(f"fleet {name:10} run {run + 1}: {got['rate']:8.0f} checks/s, acrelease CPU "
                          f"{got['cpu_us_per_check']:.0f} us/check, errors {got['errors']}, "
                          f"non-2xx/3xx {got['bad']}", flush=True)
            time.sleep(3)  # the last flush
        for name, spec in specs.items():
            store = open_store(spec, None, create=False)
            count = store._rows("SELECT COUNT(*), SUM(checks) FROM devices")[0]
            store.close()
            entry = results[name]
            entry["rate"] = sum(r["rate"] for r in entry["runs"]) / len(entry["runs"])
            entry["cpu_us_per_check"] = sum(r["cpu_us_per_check"] for r in entry["runs"]) / len(entry["runs"])
            entry["devices_in_store"], entry["checks_in_store"] = int(count[0]), int(count[1] or 0)
            print(f"fleet {name:10}: {entry['rate']:8.0f} checks/s on average, acrelease CPU "
                  f"{entry['cpu_us_per_check']:.0f} us/check, {count[0]} devices and {count[1]} checks in the store",
                  flush=True)
    finally:
        pg.destroy()
    results["ratio"] = results["postgresql"]["rate"] / results["sqlite"]["rate"]
    results["cpu_ratio"] = results["sqlite"]["cpu_us_per_check"] / results["postgresql"]["cpu_us_per_check"]
    print(f"fleet: PostgreSQL / SQLite = {results['ratio']:.2f} in checks/s (goal >= 0.85), "
          f"{results['cpu_ratio']:.2f} in acrelease's CPU per check", flush=True)
    return results


def download(root: Path, work: Path, seconds: int, connections: int, runs: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with serve(root, work, "--accel-redirect", "/_files/", "--no-fleet") as (port, _):
        front_work = work / "nginx"
        front_work.mkdir(exist_ok=True)
        conf = nginx.config([f"127.0.0.1:{port}"], free_port(), root, front_work)
        direct = f"        location /direct/ {{\n            alias {root.resolve()}/;\n            sendfile on;\n" \
                 "            tcp_nopush on;\n        }\n\n        location /_files/ {"
        conf = conf.replace("        location /_files/ {", direct, 1)
        with _nginx_with(conf, front_work) as (front, master):
            workers = [int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()]
            base = f"http://127.0.0.1:{front}"
            headers = {**HEADERS, "x-ESP8266-version": "0.9.0", "x-ESP8266-STA-MAC": "DE:BA:7A:B1:E0:42"}
            for run in range(runs):  # interleaved: the machine is shared
                for name, url in (("nginx", f"{base}/direct/demo/big1m/demo-big1m-1.0.0.bin"),
                                  ("accel", f"{base}/update/demo/big1m")):
                    before = sum(cpu_seconds(pid) for pid in workers)
                    got = wrk(url, seconds, connections, headers)
                    got["nginx_cpu_us_per_image"] = ((sum(cpu_seconds(pid) for pid in workers) - before)
                                                     / max(got["requests"], 1) * 1e6)
                    results.setdefault(name, []).append(got)
                    print(f"download {name:6} run {run + 1}: {got['rate']:7.0f} images/s, "
                          f"{got['bytes_per_s'] / (1 << 20):7.0f} MiB/s, nginx CPU "
                          f"{got['nginx_cpu_us_per_image']:.0f} us/image, errors {got['errors']}, "
                          f"non-2xx/3xx {got['bad']}", flush=True)
    mean = {name: sum(r["rate"] for r in runs) / len(runs) for name, runs in results.items()}
    cpu = {name: sum(r["nginx_cpu_us_per_image"] for r in runs) / len(runs) for name, runs in results.items()}
    results["ratio"] = mean["accel"] / mean["nginx"]
    results["nginx_cpu_ratio"] = cpu["nginx"] / cpu["accel"]
    print(f"download: accel-redirect / nginx alone = {results['ratio']:.2f} in images/s on this machine "
          f"(goal >= 0.95), {results['nginx_cpu_ratio']:.2f} in images per nginx CPU second", flush=True)
    return results


@contextmanager
def _nginx_with(text: str, work: Path) -> Iterator[tuple[int, int]]:
    """nginx.running() writes its own config; this one carries the extra plain location."""
    port = int(re.search(r"listen 127\.0\.0\.1:(\d+);", text).group(1))  # type: ignore[union-attr]
    conf = work / "bench.conf"
    conf.write_text(text)
    assert nginx.NGINX is not None, "needs nginx"
    process = subprocess.Popen([nginx.NGINX, "-p", str(work), "-c", str(conf), "-g",
                                f"daemon off; master_process on; user root; pid {work / 'nginx.pid'}; "
                                f"error_log {work / 'error.log'};"], stdout=subprocess.DEVNULL)
    try:
        wait_listening(process, port, lambda: (work / "error.log").read_text(errors="replace"))
        yield port, process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--scenarios", default="fleet,download")
    args = parser.parse_args()
    report: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="bench-hosts-") as folder:
        work = Path(folder)
        root = catalog(work / "catalog")
        if "fleet" in args.scenarios:
            report["fleet"] = fleet(root, work, args.devices, args.seconds, args.connections, args.runs)
        if "download" in args.scenarios:
            report["download"] = download(root, work, args.seconds, min(args.connections, 20), args.runs)
    out = ROOT / "benchmarks" / "results" / f"hosts-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
