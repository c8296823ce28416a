"""``acrelease serve --workers N`` as a real process tree: stop signals at any moment, dead
workers replaced and logged, and no worker outliving its parent."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import clirun
from tests.factories.catalog import demo_catalog
from tests.integration.devices import esp8266_request, exchange
from tests.integration.served import free_port, wait_listening


def session_members(session: int) -> list[int]:
    """Every live process of ``session`` (``/proc/PID/stat``: state, ppid, pgrp, session...)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            members.append(int(entry))
    return members


def children_of(pid: int) -> set[int]:
    return {p for p in session_members(pid) if p != pid and _ppid(p) == pid}


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1


def wait_for(condition: object, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.05)
    return False


@dataclass
class Tree:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def prefork(tmp_path: Path, workers: int = 2, *, wait: bool = True) -> Iterator[Tree]:
    """``acrelease serve --workers N`` in a session of its own (so that every process it forks
    can be found after it is gone); killed with its whole session at the end, whatever happens."""
    catalog = tmp_path / "catalog"
    if not catalog.exists():
        demo_catalog(catalog)
    port = free_port()
    log_path = tmp_path / f"serve-{port}.log"
    with open(log_path, "wb") as err:
        process = clirun.popen("serve", "--catalog", str(catalog), "--port", str(port), "--bind", "127.0.0.1",
                               "--workers", str(workers), stdout=subprocess.DEVNULL, stderr=err,
                               start_new_session=True)
    tree = Tree(process, port, log_path)
    try:
        if wait:
            wait_listening(process, port, tree.log)
        yield tree
    finally:
        session = process.pid
        if process.poll() is None:
            process.kill()
        process.wait()
        for pid in session_members(session):  # leave nothing behind, even when a test failed
            os.kill(pid, signal.SIGKILL)


def check(port: int) -> int:
    return exchange(port, esp8266_request(f"127.0.0.1:{port}", "/update/demo/d1mini", version="1.1.0"))[0].status


def test_a_dead_worker_is_logged_with_its_exit_and_replaced(tmp_path: Path) -> None:
    with prefork(tmp_path) as tree:
        assert wait_for(lambda: len(children_of(tree.process.pid)) == 2)
        time.sleep(1.1)  # past the restart back-off of a worker that dies at once
        first, second = sorted(children_of(tree.process.pid))
        os.kill(first, signal.SIGKILL)
        assert wait_for(lambda: len(children_of(tree.process.pid) - {second}) == 1 and
                        first not in children_of(tree.process.pid)), tree.log()
        assert wait_for(lambda: f"worker {first} killed by SIGKILL; starting a new one" in tree.log()), tree.log()
        time.sleep(1.1)
        os.kill(second, signal.SIGTERM)  # a worker told to stop on its own stops gracefully: exit code 0
        assert wait_for(lambda: f"worker {second} exited with code 0; starting a new one" in tree.log()), tree.log()
        assert wait_for(lambda: len(children_of(tree.process.pid)) == 2)
        assert check(tree.port) == 304  # still serving
        tree.process.send_signal(signal.SIGTERM)
        assert tree.process.wait(timeout=30) == 0
        assert session_members(tree.process.pid) == []
    assert "status" not in tree.log() and "Traceback" not in tree.log(), tree.log()


def test_no_worker_survives_a_parent_killed_outright(tmp_path: Path) -> None:
    with prefork(tmp_path) as tree:
        assert wait_for(lambda: len(children_of(tree.process.pid)) == 2)
        workers = children_of(tree.process.pid)
        tree.process.kill()  # SIGKILL: the parent can do nothing; the kernel tells the workers
        tree.process.wait()
        assert wait_for(lambda: not set(session_members(tree.process.pid)) & workers, timeout=30), \
            f"workers {workers} still running after their parent died"


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
def test_sigterm_at_random_moments_leaves_no_worker(tmp_path: Path, seed: int) -> None:
    """SIGTERM during start-up, forking, serving, or right after a worker died (while its
    replacement is being forked): the parent exits and no worker is left running."""
    rng = random.Random(seed)
    moments = ["start", "serving", "respawn"] * (2 if seed else 1)
    rng.shuffle(moments)
    for attempt, moment in enumerate(moments):
        with prefork(tmp_path, wait=False) as tree:
            if moment == "start":
                time.sleep(rng.uniform(0.0, 1.5))
            else:
                wait_listening(tree.process, tree.port, tree.log)
                assert wait_for(lambda: len(children_of(tree.process.pid)) == 2)
                if moment == "respawn":
                    time.sleep(1.1)
                    os.kill(min(children_of(tree.process.pid)), signal.SIGKILL)
                time.sleep(rng.uniform(0.0, 0.05))
            tree.process.send_signal(signal.SIGTERM)
            code = tree.process.wait(timeout=30)
            # Before the parent installs its own handling (still importing), SIGTERM kills it
            # at once, with nothing forked yet.
            assert code in (0, -signal.SIGTERM), (moment, code, tree.log())
            left = session_members(tree.process.pid)
            assert wait_for(lambda: not session_members(tree.process.pid), timeout=1), \
                f"attempt {attempt} ({moment}): processes {left} outlived the parent: {tree.log()}"
            assert "Traceback" not in tree.log() and not re.search(r"status \d+", tree.log()), tree.log()
