"""Every benchmark script starts (its imports resolve, its options parse), and the several-hosts
benchmark's rounds and ratios are what its report says they are. A script that is only run by hand
rots silently when a helper it imports moves; these catch that in the test run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import bench_hosts

HERE = Path(__file__).resolve().parent
SCRIPTS = sorted(p.name for p in HERE.glob("bench_*.py"))


def test_the_scripts_are_found() -> None:
    assert {"bench_serve.py", "bench_check.py", "bench_fleet.py", "bench_hosts.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_script_starts(script: str) -> None:
    done = subprocess.run([sys.executable, str(HERE / script), "--help"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: "), done.stdout


def test_rounds_alternate_their_order_and_ratios_stay_within_a_round() -> None:
    seen: list[tuple[int, str]] = []

    def measure(run: int, name: str) -> dict[str, float]:
        seen.append((run, name))
        return {"requests_per_s": {"nginx": 100.0 * run, "accel": 90.0 * run}[name]}

    measures = bench_hosts.interleaved(3, ["nginx", "accel"], measure)
    assert seen == [(1, "nginx"), (1, "accel"), (2, "accel"), (2, "nginx"), (3, "nginx"), (3, "accel")]
    # Each round's machine speed differs (x run); the per-round ratio does not.
    assert bench_hosts.ratios(measures, "accel", "nginx") == [0.9, 0.9, 0.9]
    summary = bench_hosts.spread(measures, "accel", "requests_per_s")
    assert summary is not None and (summary.median, summary.low, summary.high) == (180.0, 90.0, 270.0)


def test_a_round_without_its_reference_gives_no_ratio() -> None:
    measures = [{"round": 1, "name": "accel", "requests_per_s": 5.0},
                {"round": 2, "name": "accel", "requests_per_s": 5.0},
                {"round": 2, "name": "nginx", "requests_per_s": 0}]
    assert bench_hosts.ratios(measures, "accel", "nginx") == []
