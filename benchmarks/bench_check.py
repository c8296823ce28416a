"""CPU per version check inside one process: the HTTP/1 front end, the app, the policy, the log.

No sockets and no kernel: a stand-in transport takes what the server writes, so the figure is the
Python cost of one ``Connection: close`` check (a new protocol object, the head parsed, the app
run, the 304 written, the decision queued and formatted by the batched log), without the TCP
stack that ``bench_serve.py`` also measures. Use it to compare two versions of the code before
and after a change to the check path (same machine, same sitting, interleaved runs).

    python benchmarks/bench_check.py                  # best of 7 rounds of 20,000 checks
    python benchmarks/bench_check.py --log-format json --rounds 5
    python benchmarks/bench_check.py --root /path/to/other/checkout   # that checkout's code
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if "--root" in sys.argv:  # measure another checkout's code with this script
    ROOT = Path(sys.argv[sys.argv.index("--root") + 1]).resolve()
sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402  (after the path set-up)

from acrelease.server import logs  # noqa: E402
from acrelease.server.app import create_app  # noqa: E402
from acrelease.server.catalog import Catalog  # noqa: E402
from acrelease.server.http1 import HTTP1Protocol, ServerState  # noqa: E402
from acrelease.server.settings import ServerSettings  # noqa: E402
from tests.factories.catalog import demo_catalog  # noqa: E402
from tests.integration.devices import esp8266_request  # noqa: E402


class NullTransport:
    """Just enough of an ``asyncio.Transport`` for one short answer; closing it reports the
    connection lost from the loop, as a real transport does."""

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: HTTP1Protocol) -> None:
        self.loop = loop
        self.protocol = protocol
        self.closed = False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("10.0.0.5", 50000) if name == "peername" else default

    def write(self, data: bytes) -> None:
        pass

    def writelines(self, parts: Any) -> None:
        pass

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.call_soon(self.protocol.connection_lost, None)

    abort = close

    def is_closing(self) -> bool:
        return self.closed


async def measure(catalog_root: Path, rounds: int, checks: int, version: str) -> list[float]:
    """CPU microseconds per check, per round: each check is one loop callback (as a connection's
    data arriving is), so whatever the server schedules (a Task, a callback) runs between them."""
    settings = ServerSettings(catalog=catalog_root, host="127.0.0.1", port=0)
    catalog = Catalog(catalog_root)
    catalog.load()
    handler = next(h for h in logging.getLogger().handlers if isinstance(h, logs._BatchedHandler))
    app = create_app(settings, catalog, logs.BatchedLog(handler))
    state = ServerState(app, settings, ("127.0.0.1", 8000))
    request = esp8266_request("127.0.0.1:8000", "/update/demo/d1mini", version=version)
    results = [await one_round(state, request, checks) for _ in range(rounds)]
    if state.connections:
        raise SystemExit(f"{len(state.connections)} connections were never answered")
    return results


async def one_round(state: ServerState, request: bytes, checks: int) -> float:
    """CPU microseconds per check over ``checks`` checks, each run from its own loop callback."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    remaining = checks

    def check() -> None:
        nonlocal remaining
        protocol = HTTP1Protocol(state)
        protocol.connection_made(NullTransport(loop, protocol))  # type: ignore[arg-type]
        protocol.data_received(request)
        remaining -= 1
        if remaining:
            loop.call_soon(check)
        else:
            done.set_result(None)

    start = time.process_time()
    loop.call_soon(check)
    await done
    await asyncio.sleep(0)
    logs.flush_logs()
    return (time.process_time() - start) / checks * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--checks", type=int, default=20_000)
    parser.add_argument("--version", default="1.1.0", help="the device's version (1.1.0: answered 304)")
    parser.add_argument("--log-format", default="text", choices=("text", "json"))
    parser.add_argument("--log", default="INFO")
    parser.add_argument("--root", help="the checkout whose code is measured (default: this one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "catalog"
        demo_catalog(root)
        sink = io.StringIO()
        configure: Any = logs.configure_logging
        try:
            configure(args.log, args.log_format, stream=sink)
        except TypeError:  # the code before --log-format: the same text log, written to stderr
            configure(args.log)
            handler = next(h for h in logging.getLogger("acrelease").handlers)
            handler.stream = sink
            logging.getLogger().addHandler(handler)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            figures = runner.run(measure(root, args.rounds, args.checks, args.version))
    print(f"cpu per check: best {min(figures):.2f} us, median {sorted(figures)[len(figures) // 2]:.2f} us "
          f"({args.rounds} rounds of {args.checks}; log {args.log} {args.log_format})")


if __name__ == "__main__":
    main()
