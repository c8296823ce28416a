"""A real ``acrelease`` update server process for the proofs in tests/integration (hostile input, faults, load).

``acrelease serve`` has flags for the front end's limits (``--head-timeout``, ``--max-target``, ...)
and ``--max-downloads``, but none for two settings these proofs also change: the catalog's
``recheck_interval`` and the 503's ``retry_after``. So the process runs
``acrelease.server.run.serve(ServerSettings(...))`` itself: the same code path as the CLI, in its
own process, on 127.0.0.1 and a free port. Its stdout and stderr go to files (a pipe nobody reads
would fill up under load and stall the server's log writes), so a test can read the log while the
server runs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests import clirun
from tests.integration.devices import Answer, esp8266_request, exchange

ROOT = Path(__file__).resolve().parents[2]

_SERVE = (
    "import json, sys\n"
    "from pathlib import Path\n"
    "from acrelease.server.run import ServerSettings, serve\n"
    "serve(ServerSettings(catalog=Path(sys.argv[1]), host='127.0.0.1', port=int(sys.argv[2]),"
    " **json.loads(sys.argv[3])))\n"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def check(self, path: str = "/update/demo/d1mini", version: str | None = "1.1.0") -> Answer:
        """One ESP8266 check on a fresh connection (docs/protocol.md G)."""
        return exchange(self.port, esp8266_request(self.host, path, version=version))[0]

    def alive(self) -> bool:
        return self.process.poll() is None


@contextmanager
def serving(catalog: Path, logs: Path, **settings: Any) -> Iterator[Served]:
    """Run the server on ``catalog`` until the block ends; then SIGTERM it and assert it exited 0
    without a traceback (a crash anywhere in a test shows up here)."""
    # These tests replay one device (one MAC) that reports an old version dozens of times; the
    # fleet registry's loop breaker would rightly hold it after three images (docs/protocol.md H,
    # README "Fleet control"). Tests of the loop breaker itself pass loop_limit.
    settings.setdefault("loop_limit", 1_000_000)
    port = free_port()
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"server-{port}.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log_path, "wb") as err, open(logs / f"server-{port}.out", "wb") as out:
        process = subprocess.Popen([sys.executable, "-c", _SERVE, str(catalog), str(port), json.dumps(settings)],
                                   cwd=ROOT, env=env, stdout=out, stderr=err)
    served = Served(process, port, log_path)
    try:
        wait_listening(process, port, served.log)
        yield served
    finally:
        code = stop(process)
    text = served.log()
    assert "Traceback" not in text, text[-4000:]
    assert code == 0, f"server exited {code} (negative = killed by that signal): {text[-2000:]}"


def wait_listening(process: subprocess.Popen[Any], port: int, log: Callable[[], str] = str,
                   host: str = "127.0.0.1") -> None:
    """Return once ``process`` accepts connections on ``host:port`` (bounded: about 20 s)."""
    for _ in range(200):
        if process.poll() is not None:
            raise AssertionError(f"server exited {process.returncode}: {log()}")
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("server did not start listening")


def start_cli(catalog: Path, *extra: str, host: str = "127.0.0.1",
              port: int | None = None) -> tuple[subprocess.Popen[str], int]:
    """``acrelease serve`` itself, as a user runs it, on ``host`` (a loopback address) and a free port."""
    port = port or free_port()
    process = clirun.popen("serve", "--catalog", str(catalog), "--port", str(port), "--bind", host, *extra,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_listening(process, port, lambda: "".join(process.communicate()), host)
    return process, port


def stop_cli(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    """SIGTERM (a graceful stop), then the exit code and everything the server printed."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        out, err = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return process.returncode, out, err


def stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return -9
