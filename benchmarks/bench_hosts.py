"""Several hosts: the fleet store on PostgreSQL vs SQLite, and images sent by nginx (README, "Running on
several hosts").

* ``fleet``: two ``acrelease serve`` (one worker each) answer checks from N distinct devices (wrk with
  ``bench_fleet.py``'s Lua script rotating the MAC over N, the ESP8266 header set of docs/protocol.md G,
  a new TCP connection per check as devices make), recording every one: one into SQLite, one into a
  throwaway PostgreSQL (tests/pgserver.py, with PostgreSQL's durable defaults). Both stores hold the N
  devices beforehand. Goal: PostgreSQL >= 0.85x SQLite's checks per second.
* ``download``: a 1 MiB image through nginx configured by ``acrelease template nginx.conf``: the update
  URL answered by ``acrelease serve --accel-redirect /_files/`` and sent by nginx, vs the same nginx
  serving the same file from a plain location. Goal: >= 0.95x of nginx alone.

Two cores stand in for the machines, and where each process runs is part of the result:

* ``fleet``: both servers and PostgreSQL on core 0 (the server side: what a check costs there includes
  what its store costs), wrk on core 1.
* ``download``, layout ``hosts`` (the README's deployment, where the goal is judged): acrelease alone on
  core 0, standing in for the acrelease hosts; nginx on core 1 with wrk, the front host and the devices'
  end of loopback. Both runs of a round give nginx and wrk the same core; only acrelease's answer is
  added, on its own core, as on its own host.
* ``download``, layout ``one-host``: nginx and acrelease on core 0, wrk on core 1 (bench_serve.py's
  layout): acrelease's CPU comes out of nginx's core, as when both run on one machine.

Every figure is the median of the rounds (min-max); a ratio is taken within a round (both runs seconds
apart, the order reversed every other round), then summarised. nginx's and acrelease's CPU per image
come from /proc (``harness.tree_cpu_seconds``).

    python benchmarks/bench_hosts.py                                   # the README's figures
    python benchmarks/bench_hosts.py --devices 10000 --duration 3 --runs 1   # a short look

Writes benchmarks/results/hosts-<UTC time>.json (ignored by git).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from acrelease.fleet.store import open_store  # noqa: E402  (after the path set-up)
from benchmarks import bench_fleet  # noqa: E402
from benchmarks.bench_serve import CHECK_PATH, ESP8266_HEADERS, build_catalog  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    CLIENT_CORE,
    SERVER_CORE,
    Proc,
    Spread,
    pin,
    running,
    tree_cpu_seconds,
    wrk,
)
from tests import clirun  # noqa: E402
from tests.integration import nginx  # noqa: E402
from tests.integration.served import free_port  # noqa: E402
from tests.pgserver import PgServer  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
UPDATE_URL = "/update/demo/big1m"
DIRECT_URL = "/direct/demo/big1m/demo-big1m-1.0.0.bin"
# A device one release behind (the catalog's big1m is 1.0.0): every request is a 200 with the image.
BEHIND = [*ESP8266_HEADERS, ("x-ESP8266-version", "0.9.0")]
# (acrelease's core, the core of what runs on other hosts in the README's deployment: nginx, PostgreSQL)
LAYOUTS = {"hosts": (SERVER_CORE, CLIENT_CORE), "one-host": (SERVER_CORE, SERVER_CORE)}
GOAL_FLEET, GOAL_DOWNLOAD = 0.85, 0.95


def serve(catalog: Path, *args: str, core: int = SERVER_CORE) -> Proc:
    port = free_port()
    return Proc(clirun.command("serve", "--catalog", str(catalog), "--bind", "127.0.0.1", "--port", str(port),
                               *args), clirun.environment(), port, core)


def front(catalog: Path, upstream: Proc, work: Path, core: int) -> Proc:
    """nginx from ``acrelease template nginx.conf`` in front of ``upstream``, plus ``/direct/``: the
    catalog as plain files, the reference."""
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    text = nginx.config([f"127.0.0.1:{upstream.port}"], port, catalog, work)
    direct = (f"        location /direct/ {{\n            alias {catalog.resolve()}/;\n            sendfile on;\n"
              "            tcp_nopush on;\n        }\n\n")
    marker = "        location /_files/ {"
    assert marker in text, "the template's internal location moved: update this benchmark"
    conf = work / "nginx.conf"
    conf.write_text(text.replace(marker, direct + marker, 1))
    return Proc(nginx.command(conf, work), {}, port, core)


def interleaved(runs: int, names: Sequence[str], measure: Callable[[int, str], dict[str, Any]]
                ) -> list[dict[str, Any]]:
    """``measure(round, name)`` for every name in every round, the order reversed every other round."""
    out = []
    for run in range(1, runs + 1):
        for name in (names if run % 2 else list(reversed(names))):
            out.append({"round": run, "name": name, **measure(run, name)})
    return out


def ratios(measures: Sequence[dict[str, Any]], name: str, base: str, key: str = "requests_per_s") -> list[float]:
    by = {(m["round"], m["name"]): m[key] for m in measures}
    return [value / by[(run, base)] for (run, who), value in sorted(by.items()) if who == name and by.get((run, base))]


def spread(measures: Sequence[dict[str, Any]], name: str, key: str) -> Spread | None:
    return Spread.of([m[key] for m in measures if m["name"] == name and m.get(key) is not None])


def outcome(measures: Sequence[dict[str, Any]], name: str, base: str, goal: float, cpu: str,
            cores: dict[str, int]) -> dict[str, Any]:
    """One layout's result: every figure per server as median (min-max), ``name``'s rate over ``base``'s
    round by round against ``goal``, and the same for the CPU figure ``cpu`` (``base``'s over ``name``'s:
    above 1 means ``name`` costs more)."""
    keys = sorted({k for m in measures for k, v in m.items() if isinstance(v, float) and k != "round"})
    rates = ratios(measures, name, base)
    ratio = Spread.of(rates)
    return {"cores": cores, "measures": measures,
            "summary": {who: {key: spread(measures, who, key) for key in keys} for who in (base, name)},
            "ratio": ratio, "cpu_ratio": Spread.of(ratios(measures, base, name, cpu)),
            "rounds_met": sum(v >= goal for v in rates), "goal": goal,
            "met": ratio is not None and ratio.median >= goal}


# -- fleet -------------------------------------------------------------------------------------------

def fleet(catalog: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    pg = PgServer(durable=True)
    try:
        pg.start()
        specs = {"sqlite": str(work / "fleet.sqlite3"), "postgresql": pg.database()}
        for spec in specs.values():
            bench_fleet.register(spec, None, args.devices)
        out = {layout: fleet_in(layout, catalog, work, args, specs, pg.pid()) for layout in LAYOUTS}
        for name, spec in specs.items():
            store = open_store(spec, None, create=False)
            rows = store.devices()
            store.close()
            out[f"stored_{name}"] = {"devices": len(rows), "checks": sum(r.checks for r in rows)}
    finally:
        pg.destroy()
    return out


def fleet_in(layout: str, catalog: Path, work: Path, args: argparse.Namespace, specs: dict[str, str],
             postmaster: int) -> dict[str, Any]:
    acrelease_core, store_core = LAYOUTS[layout]
    pin(postmaster, store_core)  # its backends, and those it forks for the servers' connections
    lua = bench_fleet.script(work, args.devices)
    headers = bench_fleet.HEADERS
    procs = {name: serve(catalog, "--fleet", spec, core=acrelease_core) for name, spec in specs.items()}
    with running(list(procs.values()), work, f"fleet-{layout}") as started:
        pids = dict(zip(procs, started, strict=True))
        cpu_of = {"sqlite": [pids["sqlite"]], "postgresql": [pids["postgresql"], postmaster]}
        # Warm-up, not measured: about one pass over the fleet, so each server knows its devices as one that
        # has run for hours does (a device it wrote before and that tells nothing new is only touched).
        for proc in procs.values():
            wrk(f"http://127.0.0.1:{proc.port}{CHECK_PATH}", args.concurrency, max(3, args.devices // 4000),
                headers, lua)

        def measure(run: int, name: str) -> dict[str, Any]:
            time.sleep(1.5)  # the other server's last flush is not this one's CPU
            own0, all0 = tree_cpu_seconds([pids[name]]), tree_cpu_seconds(cpu_of[name])
            got = wrk(f"http://127.0.0.1:{procs[name].port}{CHECK_PATH}", args.concurrency, args.duration,
                      headers, lua)
            time.sleep(1.5)  # the flush of the measure's last second counts too
            n = max(got.requests, 1)
            row = {"requests_per_s": got.requests_per_s, "requests": got.requests, "p99_ms": got.p99_ms,
                   "errors": got.errors, "bad_status": got.bad_status,
                   "acrelease_cpu_us": (tree_cpu_seconds([pids[name]]) - own0) / n * 1e6,
                   "with_store_cpu_us": (tree_cpu_seconds(cpu_of[name]) - all0) / n * 1e6}
            print(f"fleet    round {run}  {layout:8} {name:10} {got.requests_per_s:8,.0f} checks/s  acrelease "
                  f"{row['acrelease_cpu_us']:5.0f} us/check, with its store {row['with_store_cpu_us']:5.0f}  "
                  f"errors {got.errors}  non-2xx/3xx {got.bad_status}", flush=True)
            return row

        measures = interleaved(args.runs, list(specs), measure)
        time.sleep(3)  # the last flush
    return outcome(measures, "postgresql", "sqlite", GOAL_FLEET, "with_store_cpu_us",
                   {"acrelease": acrelease_core, "postgresql": store_core, "wrk": CLIENT_CORE})


# -- download ----------------------------------------------------------------------------------------

def download(catalog: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    return {layout: download_in(layout, catalog, work, args) for layout in LAYOUTS}


def download_in(layout: str, catalog: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    acrelease_core, nginx_core = LAYOUTS[layout]
    upstream = serve(catalog, "--accel-redirect", "/_files/", "--no-fleet", core=acrelease_core)
    proxy = front(catalog, upstream, work / f"nginx-{layout}", nginx_core)
    urls = {"nginx": DIRECT_URL, "accel": UPDATE_URL}
    with running([upstream, proxy], work, f"download-{layout}") as (acrelease_pid, nginx_pid):
        def measure(run: int, name: str) -> dict[str, Any]:
            ng0, ac0 = tree_cpu_seconds([nginx_pid]), tree_cpu_seconds([acrelease_pid])
            got = wrk(f"http://127.0.0.1:{proxy.port}{urls[name]}", args.download_concurrency, args.duration,
                      BEHIND, core=CLIENT_CORE)
            n = max(got.requests, 1)
            row = {"requests_per_s": got.requests_per_s, "requests": got.requests, "p99_ms": got.p99_ms,
                   "errors": got.errors, "bad_status": got.bad_status,
                   "nginx_cpu_us": (tree_cpu_seconds([nginx_pid]) - ng0) / n * 1e6,
                   "acrelease_cpu_us": (tree_cpu_seconds([acrelease_pid]) - ac0) / n * 1e6}
            print(f"download round {run}  {layout:8} {name:6} {got.requests_per_s:7,.0f} images/s  nginx "
                  f"{row['nginx_cpu_us']:4.0f} us/image  acrelease {row['acrelease_cpu_us']:4.0f} us/image  "
                  f"errors {got.errors}  non-2xx/3xx {got.bad_status}", flush=True)
            return row

        measures = interleaved(args.runs, list(urls), measure)
    return outcome(measures, "accel", "nginx", GOAL_DOWNLOAD, "nginx_cpu_us",
                   {"acrelease": acrelease_core, "nginx": nginx_core, "wrk": CLIENT_CORE})


# -- report ------------------------------------------------------------------------------------------

def show(value: Spread | None, digits: int = 0, unit: str = "") -> str:
    return value.show(digits, unit) if value is not None else "-"


def print_summary(report: dict[str, Any]) -> None:
    runs = report["args"]["runs"]
    print(f"\nmedian of {runs} rounds (min-max)")
    scenarios = (("fleet", "checks", "PostgreSQL / SQLite", "with_store_cpu_us", "with the store", "us/check"),
                 ("download", "images", "--accel-redirect / nginx alone", "nginx_cpu_us", "nginx", "us/image"))
    for scenario, unit, what, cpu, cpu_what, per in scenarios:
        for layout in LAYOUTS if scenario in report else ():
            got = report[scenario][layout]
            for name, row in got["summary"].items():
                print(f"  {scenario:8} {layout:8} {name:10} {show(row['requests_per_s']):>24} {unit}/s  acrelease "
                      f"{show(row['acrelease_cpu_us'])} {per}, {cpu_what} {show(row[cpu])} {per}")
            judged = layout == "hosts"
            verdict = ("met" if got["met"] else "NOT MET") if judged else "(not judged)"
            print(f"  {'goal' if judged else 'also':8} {layout:8} {what} {show(got['ratio'], 2, 'x')} in {unit}/s "
                  f"({got['rounds_met']} of {runs} rounds >= {got['goal']}) {verdict}; {unit} per CPU second "
                  f"({cpu_what}) {show(got['cpu_ratio'], 2, 'x')}")
    for name in ("sqlite", "postgresql") if "fleet" in report else ():
        stored = report["fleet"][f"stored_{name}"]
        print(f"  stored   {name:10} {stored['devices']:,} devices, {stored['checks']:,} checks")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measure (10)")
    parser.add_argument("--runs", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--concurrency", type=int, default=50, help="connections for checks (50)")
    parser.add_argument("--download-concurrency", type=int, default=20, help="connections for downloads (20)")
    parser.add_argument("--scenarios", default="fleet,download")
    args = parser.parse_args()
    report: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                              "command": " ".join(sys.argv), "args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="acrelease-bench-hosts-") as folder:
        work = Path(folder)
        catalog = work / "catalog"
        build_catalog(catalog)
        if "fleet" in args.scenarios:
            report["fleet"] = fleet(catalog, work, args)
        if "download" in args.scenarios:
            report["download"] = download(catalog, work, args)
    print_summary(report)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"hosts-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(report, indent=1, default=vars))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
