"""Measuring pieces of the serve benchmark: processes, wrk, CPU time from /proc, spreads.

Nothing here knows which servers or scenarios exist (``bench_serve.py`` holds those tables), so a
new scenario or server variant reuses all of it. Linux only: CPU and memory come from ``/proc``
(proc(5): ``/proc/<pid>/stat`` fields 14-17 utime, stime, cutime, cstime; ``/proc/stat`` per-CPU
lines), so no psutil is needed.
"""

from __future__ import annotations

import os
import re
import resource
import socket
import statistics
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

SERVER_CORE, CLIENT_CORE = 0, 1
TICKS = os.sysconf("SC_CLK_TCK")


# -- spreads -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Spread:
    """The median of a figure over the rounds, with its min and max (the range, not a deviation)."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        """None when nothing was measured (a scenario or concurrency left out, a division by zero)."""
        finite = [v for v in values if v == v and v not in (float("inf"), float("-inf"))]
        if not finite:
            return None
        return cls(statistics.median(finite), min(finite), max(finite), len(finite))

    def show(self, digits: int = 0, unit: str = "", dash: str = "-") -> str:
        """``22,677 (21,900-23,100)``: the median first, the range after it."""
        def fmt(v: float) -> str:
            return f"{v:,.{digits}f}{unit}"
        if self.n == 1:
            return fmt(self.median)
        return f"{fmt(self.median)} ({fmt(self.low)}{dash}{fmt(self.high)})"


# -- processes -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Proc:
    """One server process: its argv, extra environment, the port it listens on once ready, and the core it
    is pinned to (the server core unless a benchmark lays processes out otherwise)."""

    command: list[str]
    env: Mapping[str, str]
    port: int
    core: int = SERVER_CORE


def wait_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(300):
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise SystemExit(f"bench: error: server exited early ({process.args!r}); its log ends:\n{tail}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"bench: error: server did not listen on 127.0.0.1:{port} within 30 s ({process.args!r})")


@contextmanager
def running(procs: Sequence[Proc], workdir: Path, label: str) -> Iterator[list[int]]:
    """Start ``procs`` in order, each pinned to its core; yield their pids; stop them all at the end.

    Each is ready (accepts connections) before the next starts, so a front server can rely on its
    upstream. Output goes to a file in ``workdir``: a pipe nobody reads would stall a server's log.
    """
    with ExitStack() as stack:
        pids = []
        for index, proc in enumerate(procs):
            log_path = workdir / f"{label}-{index}.log"
            log = stack.enter_context(log_path.open("wb"))
            process = subprocess.Popen(["taskset", "-c", str(proc.core), *proc.command], stdout=log, stderr=log,
                                       env={**os.environ, **proc.env}, cwd=workdir)
            stack.callback(stop, process)
            wait_port(proc.port, process, log_path)
            pids.append(process.pid)
        yield pids


def pin(pid: int, core: int) -> None:
    """Move a process that was started elsewhere (PostgreSQL's postmaster), its threads and its children
    to ``core``; children it forks later inherit the pinning."""
    for each in (pid, *descendants(pid)):
        subprocess.run(["taskset", "-a", "-cp", str(core), str(each)], capture_output=True, check=False)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# -- CPU time --------------------------------------------------------------------------------------

def descendants(pid: int) -> list[int]:
    """Live children, grandchildren, ... (nginx's worker, acrelease's worker processes)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found + [g for c in found for g in descendants(c)]


def tree_cpu_seconds(pids: Sequence[int]) -> float:
    """User+system CPU of ``pids``, all their threads and descendants, reaped children included.

    A live process's own fields count it; ``cutime``/``cstime`` count children that exited and were
    waited for (proc(5)), so a worker that restarts during a measure is neither lost nor counted twice.
    """
    total = 0
    for pid in {p for root in pids for p in (root, *descendants(root))}:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited between listing and reading: its time is in its parent's cutime
        total += sum(int(f) for f in fields[11:15])
    return total / TICKS


@dataclass(frozen=True)
class MachineCpu:
    """Busy CPU seconds of the whole machine, split by what /proc/stat can tell apart."""

    process: float  # user + nice + system: processes, ours and everyone else's
    softirq: float  # interrupts and softirqs (loopback networking lands here, for both sides)
    steal: float    # time the hypervisor gave to other guests

    @classmethod
    def read(cls) -> MachineCpu:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
        return cls((user + nice + system) / TICKS, (irq + softirq) / TICKS, steal / TICKS)

    def __sub__(self, other: MachineCpu) -> MachineCpu:
        return MachineCpu(self.process - other.process, self.softirq - other.softirq, self.steal - other.steal)


def children_cpu_seconds() -> float:
    """CPU of this process's reaped children (wrk, once it has exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- wrk -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int      # connect and timeout errors: real failures
    bad_status: int  # answers that are neither 2xx nor 3xx
    output: str


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def wrk(url: str, concurrency: int, seconds: int, headers: Sequence[tuple[str, str]] = (),
        script: Path | None = None, core: int = CLIENT_CORE) -> WrkResult:
    """``wrk`` pinned to ``core``, one thread, ``concurrency`` connections, ``--latency``."""
    command = ["taskset", "-c", str(core), "wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency"]
    for name, value in headers:
        command += ["-H", f"{name}: {value}"]
    if script is not None:
        command += ["-s", str(script)]
    done = subprocess.run([*command, url], capture_output=True, text=True, timeout=seconds + 60, check=False)
    return parse_wrk(done.stdout + done.stderr)


def parse_wrk(out: str) -> WrkResult:
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", out)
    latency = {q: re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s|m)\b", out, re.M) for q in ("50", "90", "99")}
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if rate is None or total is None or any(m is None for m in latency.values()):
        raise SystemExit(f"bench: error: cannot read wrk's output:\n{out}")

    def ms(match: re.Match[str] | None) -> float:
        assert match is not None
        return float(match.group(1)) * _UNIT_MS[match.group(2)]

    # Read errors end every Connection: close exchange (wrk sees the server close); connect and
    # timeout errors are real failures.
    failures = int(errors.group(1)) + int(errors.group(4)) if errors else 0
    seconds = float(total.group(2)) * _UNIT_MS[total.group(3)] / 1000.0
    return WrkResult(float(rate.group(1)), int(total.group(1)), seconds, ms(latency["50"]),
                     ms(latency["90"]), ms(latency["99"]), failures, int(bad.group(1)) if bad else 0, out)


# -- memory ----------------------------------------------------------------------------------------

def rss_kib(pids: Sequence[int]) -> dict[str, int]:
    """VmRSS, RssAnon and RssFile of ``pids`` and their descendants, summed (proc(5) ``status``)."""
    total = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
    for pid in {p for root in pids for p in (root, *descendants(root))}:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                key = line.split(":")[0]
                if key in total:
                    total[key] += int(line.split()[1])
        except OSError:
            continue
    return total
