"""The fleet scenario: checks from 100,000 distinct devices with 100,000 already registered.

``wrk`` runs a Lua script that gives every request another ``x-ESP8266-STA-MAC`` (rotating over
100,000 MACs), with the rest of the ESP8266 header set of docs/protocol.md G, answered 304. Measured
side by side, interleaved, on the same catalog: ``acrelease serve`` (recording every check into
the fleet store, 100,000 devices registered beforehand), ``acrelease serve --no-fleet``, and nginx
(``return 304``). Server pinned to core 0, wrk to core 1, as in ``bench_serve.py`` (whose helpers
this imports). Also: the server's RSS at the end (goal: under 250 MiB with 100,000 devices
registered) and how long ``acrelease devices --json`` takes for them (goal: under 3 s).

    python benchmarks/bench_fleet.py                       # 10 s per measure, two runs, c=50
    python benchmarks/bench_fleet.py --duration 5 --runs 1  # a short sanity run
Writes benchmarks/results/fleet-<UTC time>.json (ignored by git).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from acrelease.fleet.model import Observation  # noqa: E402  (after the path set-up)
from acrelease.fleet.store import open_store  # noqa: E402
from benchmarks.bench_serve import (  # noqa: E402
    CHECK_PATH,
    CLIENT_CORE,
    ESP8266_HEADERS,
    build_catalog,
    cpu_seconds,
    rss_kib,
    running,
    server_commands,
)
from tests.integration.served import free_port  # noqa: E402

DEVICES = 100_000
SERVERS = ("acrelease-fleet", "acrelease-no-fleet", "nginx")

LUA = """
-- Every request another device: STA-MAC 02:00:00:xx:xx:xx over %(devices)d MACs.
local n = 0
request = function()
  n = (n + 1) %% %(devices)d
  wrk.headers["x-ESP8266-STA-MAC"] = string.format("02:00:00:%%02X:%%02X:%%02X",
    math.floor(n / 65536) %% 256, math.floor(n / 256) %% 256, n %% 256)
  return wrk.format(nil, "%(path)s")
end
"""


def mac(n: int) -> str:
    return f"02:00:00:{(n >> 16) & 0xFF:02X}:{(n >> 8) & 0xFF:02X}:{n & 0xFF:02X}"


def register(catalog: Path, count: int) -> float:
    """Put ``count`` devices into the catalog's fleet store, as servers would have; seconds taken."""
    started = time.monotonic()
    store = open_store(None, catalog)
    now = int(time.time() * 1000)
    batch = [Observation(mac(n), "demo", "d1mini", "stable", "1.1.0", "a43ad019932b627ab90ee35a94a764ee", 16777216,
                         16777216, "2.5.0", "127.0.0.1", now, now, 1) for n in range(count)]
    for start in range(0, count, 10_000):
        store.record(batch[start:start + 10_000])
    store.close()
    return time.monotonic() - started


def wrk_fleet(url: str, script: Path, concurrency: int, duration: int) -> dict[str, float]:
    command = ["taskset", "-c", CLIENT_CORE, "wrk", "-t1", f"-c{concurrency}", f"-d{duration}s", "--latency",
               "-s", str(script)]
    for name, value in [*ESP8266_HEADERS, ("x-ESP8266-version", "1.1.0")]:
        if name != "x-ESP8266-STA-MAC":
            command += ["-H", f"{name}: {value}"]
    out = subprocess.run([*command, url], capture_output=True, text=True, timeout=duration + 60).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if rate is None:
        raise SystemExit(f"cannot read wrk's output:\n{out}")
    return {"rate": float(rate.group(1)), "requests": int(total.group(1)) if total else 0,
            "bad": int(bad.group(1)) if bad else 0}


def command_for(name: str, catalog: Path, port: int, workdir: Path) -> tuple[list[str], dict[str, str]]:
    if name == "nginx":
        return server_commands(catalog, port, workdir, "nginx")
    command, env = server_commands(catalog, port, workdir, "acrelease")
    return ([*command, "--no-fleet"] if name == "acrelease-no-fleet" else command), env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--devices", type=int, default=DEVICES)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in SERVERS}
    report: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                              "command": " ".join(sys.argv), "devices": args.devices}
    with tempfile.TemporaryDirectory(prefix="acrelease-bench-fleet-") as tmp:
        workdir = Path(tmp)
        catalog = workdir / "catalog"
        build_catalog(catalog)
        report["register_s"] = round(register(catalog, args.devices), 1)
        script = workdir / "fleet.lua"
        script.write_text(LUA % {"devices": args.devices, "path": CHECK_PATH})
        for run in range(args.runs):
            for name in SERVERS:
                port = free_port()
                command, env = command_for(name, catalog, port, workdir)
                with running(command, port, workdir, env) as process:
                    time.sleep(1.0)
                    before = cpu_seconds(process.pid)
                    measured = wrk_fleet(f"http://127.0.0.1:{port}{CHECK_PATH}", script, args.concurrency,
                                         args.duration)
                    cpu = cpu_seconds(process.pid) - before
                    measured["cpu_us"] = round(cpu / max(measured["requests"], 1) * 1e6, 1)
                    if name == "acrelease-fleet":
                        time.sleep(2.0)  # the last flush
                        measured["rss_mib"] = round(rss_kib(process.pid)["VmRSS"] / 1024, 1)
                results[name].append(measured)
                print(f"run {run + 1} {name:20} {measured['rate']:>9,.0f} req/s  cpu {measured['cpu_us']} us/check"
                      + (f"  RSS {measured['rss_mib']} MiB" if "rss_mib" in measured else ""), flush=True)
        started = time.monotonic()
        listed = subprocess.run([sys.executable, "-m", "acrelease", "devices", "--catalog", str(catalog), "--json"],
                                capture_output=True, text=True, cwd=ROOT, timeout=300)
        report["devices_json_s"] = round(time.monotonic() - started, 2)
        report["devices_listed"] = len(json.loads(listed.stdout)) if listed.returncode == 0 else None
    rate = {name: sum(m["rate"] for m in ms) / len(ms) for name, ms in results.items()}
    report["measures"] = results
    report["summary"] = {
        "fleet_vs_no_fleet": round(rate["acrelease-fleet"] / rate["acrelease-no-fleet"], 3),
        "fleet_vs_nginx": round(rate["acrelease-fleet"] / rate["nginx"], 3),
        "rss_mib": max(m.get("rss_mib", 0) for m in results["acrelease-fleet"]),
        "devices_json_s": report["devices_json_s"],
    }
    print(json.dumps(report["summary"], indent=1))
    print("goals: fleet >= 0.9x no-fleet, >= 0.7x nginx, RSS < 250 MiB, devices --json < 3 s")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / f"fleet-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
