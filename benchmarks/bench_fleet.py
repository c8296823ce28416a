"""The fleet scenario: checks from 100,000 distinct devices with 100,000 already registered.

``wrk`` runs a Lua script that gives every request another ``x-ESP8266-STA-MAC`` (rotating over
100,000 MACs), with the rest of the ESP8266 header set of docs/protocol.md G, answered 304. Measured
side by side in interleaved rounds, on the same catalog: ``acrelease serve`` (recording every check
into the fleet store, 100,000 devices registered beforehand), ``acrelease serve --no-fleet``, and
nginx (``return 304``). Servers on core 0, wrk on core 1, with ``bench_serve.py``'s servers and
``harness.py``'s measures. Also: the server's RSS at the end (goal: under 250 MiB with 100,000
devices registered) and how long ``acrelease devices --json`` takes for them (goal: under 3 s).

    python benchmarks/bench_fleet.py                          # 10 s per measure, three rounds, c=50
    python benchmarks/bench_fleet.py --duration 3 --runs 1    # a short sanity run

Every figure is the median of the rounds (min-max); a ratio is taken within a round, then summarised.
Writes benchmarks/results/fleet-<UTC time>.json (ignored by git).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from acrelease.fleet.model import Observation  # noqa: E402  (after the path set-up)
from acrelease.fleet.store import open_store  # noqa: E402
from benchmarks.bench_serve import CHECK_PATH, ESP8266_HEADERS, Setup, acrelease, build_catalog, nginx  # noqa: E402
from benchmarks.harness import Spread, children_cpu_seconds, rss_kib, running, tree_cpu_seconds, wrk  # noqa: E402
from tests import clirun  # noqa: E402

DEVICES = 100_000
RESULTS = ROOT / "benchmarks" / "results"

# A different device on every request: STA-MAC 02:00:00:xx:xx:xx over N MACs (the headers' own MAC is
# dropped from the command line, so this one is the only one sent).
LUA = """
local n = 0
request = function()
  n = (n + 1) %% %(devices)d
  wrk.headers["x-ESP8266-STA-MAC"] = string.format("02:00:00:%%02X:%%02X:%%02X",
    math.floor(n / 65536) %% 256, math.floor(n / 256) %% 256, n %% 256)
  return wrk.format(nil, "%(path)s")
end
"""

# Every device already runs the newest release (1.1.0 in bench_serve.py's catalog): each check is a 304.
HEADERS = [(k, v) for k, v in ESP8266_HEADERS if k != "x-ESP8266-STA-MAC"] + [("x-ESP8266-version", "1.1.0")]


def mac(n: int) -> str:
    return f"02:00:00:{(n >> 16) & 0xFF:02X}:{(n >> 8) & 0xFF:02X}:{n & 0xFF:02X}"


def script(workdir: Path, devices: int, path: str = CHECK_PATH) -> Path:
    out = workdir / f"fleet-{devices}.lua"
    out.write_text(LUA % {"devices": devices, "path": path})
    return out


def register(spec: str | None, catalog: Path | None, count: int) -> float:
    """Put ``count`` devices into a fleet store (``--fleet`` spec, or the catalog's own), as servers would
    have after a day, all on 1.1.0; seconds taken."""
    started = time.monotonic()
    store = open_store(spec, catalog)
    seen = int(time.time() * 1000) - 86_400_000
    for start in range(0, count, 10_000):
        store.record([Observation(mac(n), "demo", "d1mini", "stable", "1.1.0", "a43ad019932b627ab90ee35a94a764ee",
                                  16777216, 16777216, "2.5.0", "127.0.0.1", seen, seen, 1)
                      for n in range(start, min(count, start + 10_000))])
    store.close()
    return time.monotonic() - started


SERVERS = {
    "acrelease": acrelease(),  # as out of the box: INFO log, every check recorded
    "acrelease-no-fleet": acrelease("--no-fleet"),
    "nginx": nginx(),
}
GOALS = (("acrelease", "acrelease-no-fleet", 0.9), ("acrelease", "nginx", 0.7))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measure (10)")
    parser.add_argument("--runs", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--devices", type=int, default=DEVICES)
    args = parser.parse_args()
    report: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                              "command": " ".join(sys.argv), "devices": args.devices}
    measures: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="acrelease-bench-fleet-") as tmp:
        workdir = Path(tmp)
        setup = Setup(workdir, workdir / "catalog", workdir / "no-credentials")
        build_catalog(setup.catalog)
        report["register_s"] = round(register(None, setup.catalog, args.devices), 1)
        lua = script(workdir, args.devices)
        procs = [(name, proc) for name, launch in SERVERS.items() for proc in launch(setup)]
        with running([proc for _, proc in procs], workdir, "fleet") as started_pids:
            pids: dict[str, list[int]] = {}
            for (name, _), pid in zip(procs, started_pids, strict=True):
                pids.setdefault(name, []).append(pid)
            ports = {name: proc.port for name, proc in procs}  # the last one of a server's is the one wrk talks to
            for name in SERVERS:  # warm-up: every device seen once by the recording server before measuring
                wrk(f"http://127.0.0.1:{ports[name]}{CHECK_PATH}", args.concurrency, 3, HEADERS, lua)
            for run in range(args.runs):
                order = list(SERVERS) if run % 2 == 0 else list(reversed(SERVERS))
                for name in order:
                    time.sleep(1.5)  # the previous server's last flush is not this one's CPU
                    before = tree_cpu_seconds(pids[name])
                    got = wrk(f"http://127.0.0.1:{ports[name]}{CHECK_PATH}", args.concurrency, args.duration,
                              HEADERS, lua)
                    time.sleep(1.5)  # the flush of the measure's last second counts too
                    cpu = tree_cpu_seconds(pids[name]) - before
                    measure = {"round": run + 1, "server": name, "requests_per_s": got.requests_per_s,
                               "requests": got.requests, "p99_ms": got.p99_ms, "errors": got.errors,
                               "bad_status": got.bad_status,
                               "cpu_us": round(cpu / got.requests * 1e6, 1) if got.requests else None}
                    measures.append(measure)
                    print(f"round {run + 1} {name:20} {got.requests_per_s:>9,.0f} checks/s  "
                          f"cpu {measure['cpu_us']} us/check  errors {got.errors}  non-2xx/3xx {got.bad_status}",
                          flush=True)
            report["rss_mib"] = round(rss_kib(pids["acrelease"])["VmRSS"] / 1024, 1)
        cpu0, started = children_cpu_seconds(), time.monotonic()
        listed = clirun.run("devices", "--catalog", str(setup.catalog), "--json", timeout=300)
        report["devices_json_s"] = round(time.monotonic() - started, 2)
        report["devices_json_cpu_s"] = round(children_cpu_seconds() - cpu0, 2)
        report["devices_listed"] = len(json.loads(listed.stdout)) if listed.returncode == 0 else None
    report["measures"] = measures
    report["summary"] = summary(measures, args.runs)
    print_summary(report)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"fleet-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(report, indent=1, default=vars))
    print(f"wrote {out}")


def summary(measures: list[dict[str, Any]], runs: int) -> dict[str, Any]:
    def of(server: str, key: str) -> Spread | None:
        return Spread.of([m[key] for m in measures if m["server"] == server and m[key] is not None])

    def ratio(server: str, base: str) -> list[float]:
        by = {(m["round"], m["server"]): m["requests_per_s"] for m in measures}
        return [by[(r, server)] / by[(r, base)] for r in range(1, runs + 1) if by.get((r, base))]

    return {"servers": {name: {"checks_per_s": of(name, "requests_per_s"), "cpu_us": of(name, "cpu_us"),
                               "errors": sum(m["errors"] + m["bad_status"] for m in measures if m["server"] == name)}
                        for name in SERVERS},
            "goals": [{"server": server, "base": base, "goal": goal, "ratio": Spread.of(ratio(server, base)),
                       "rounds_met": sum(v >= goal for v in ratio(server, base))} for server, base, goal in GOALS]}


def print_summary(report: dict[str, Any]) -> None:
    print(f"\n{report['devices']:,} devices, {report['measures'][-1]['round']} rounds: median (min-max)")
    for name, row in report["summary"]["servers"].items():
        rate, cpu = row["checks_per_s"], row["cpu_us"]
        print(f"  {name:20} {rate.show() if rate else '-':>28} checks/s   {cpu.show(1) if cpu else '-':>22} us/check"
              f"   errors {row['errors']}")
    for goal in report["summary"]["goals"]:
        spread = goal["ratio"]
        met = spread is not None and spread.median >= goal["goal"]
        print(f"  goal {goal['server']} >= {goal['goal']}x {goal['base']}: "
              f"{spread.show(2, 'x') if spread else '-'} ({goal['rounds_met']} rounds met it) "
              f"{'met' if met else 'NOT MET'}")
    rss, took, cpu = report["rss_mib"], report["devices_json_s"], report["devices_json_cpu_s"]
    print(f"  goal RSS < 250 MiB: {rss} MiB {'met' if rss < 250 else 'NOT MET'}")
    print(f"  goal devices --json < 3 s for {report['devices_listed']} devices: {took} s ({cpu} s CPU) "
          f"{'met' if took < 3 else 'NOT MET'}")


if __name__ == "__main__":
    main()
