"""Load and stalled clients: a real ``acrelease`` server process under 500 stalled
connections, a thundering herd of 2,000 fresh-connection checks, and a device that reads slowly.

Latencies are measured and printed, never asserted (team rule: no timing assertions); what is
asserted is that every request is answered, completely and correctly, and nothing is reset.
"""

from __future__ import annotations

import asyncio
import hashlib
import resource
import socket
import statistics
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.factories.catalog import CatalogBuilder, demo_catalog, image_for
from tests.factories.images import esp8266_image
from tests.integration.devices import check_update, esp8266_request, read_answer
from tests.integration.served import serving

D1MINI = "/update/demo/d1mini"


def raise_fd_limit(needed: int) -> None:
    """Raise this process's RLIMIT_NOFILE soft limit to the hard limit; skip if still too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed and (hard == resource.RLIM_INFINITY or hard > soft):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft != resource.RLIM_INFINITY and soft < needed:
        pytest.skip(f"needs {needed} open files, RLIMIT_NOFILE allows {soft} (raise it with ulimit -n)")


async def exchange_async(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.0 exchange on a fresh connection: (status, headers, body) read to the close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1."):
        raise AssertionError(f"no complete answer: {data[:80]!r}")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split(" ")[1]), headers, body


def verify(status: int, headers: dict[str, str], body: bytes) -> None:
    """What the device checks (F.16-F.19, F.23)."""
    if status == 304:
        assert body == b""
    elif status == 200:
        assert int(headers["content-length"]) == len(body) > 0
        assert headers["x-md5"] == hashlib.md5(body).hexdigest()


# -- 500 stalled connections --------------------------------------------------------------------

@pytest.mark.slow
def test_500_stalled_connections_do_not_hold_up_a_check(tmp_path: Path) -> None:
    """250 clients trickle a head one byte a second, 250 open and send nothing; meanwhile device
    checks on fresh connections are answered 304 (latency printed). With head_timeout 4 s every
    stalled client then gets 408 and a close: nothing hangs."""
    raise_fd_limit(1200)
    built = demo_catalog(tmp_path / "catalog")
    with serving(built.root, tmp_path / "logs", head_timeout=4.0) as served:
        check = esp8266_request(served.host, D1MINI, version="1.1.0")
        trickled = esp8266_request(served.host, D1MINI, version="1.1.0")
        outcomes: Counter[str] = Counter()
        latencies: list[float] = []

        async def stalled(trickle: bool) -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
            try:
                sent = 0
                while True:
                    if trickle and sent < len(trickled):
                        writer.write(trickled[sent:sent + 1])
                        sent += 1
                    try:
                        reply = await asyncio.wait_for(reader.read(), timeout=1.0)
                        break
                    except TimeoutError:
                        continue
                outcomes[reply[:12].decode("latin-1") or "closed without an answer"] += 1
            finally:
                writer.close()

        async def scenario() -> None:
            stallers = []
            for i in range(500):
                stallers.append(asyncio.create_task(stalled(trickle=i % 2 == 0)))
                if i % 50 == 49:
                    await asyncio.sleep(0)  # let the connections open
            await asyncio.sleep(1.0)  # all 500 connected and hanging on
            for _ in range(20):
                started = time.perf_counter()
                status, headers, body = await exchange_async(served.port, check)
                latencies.append(time.perf_counter() - started)
                assert status == 304, status
                verify(status, headers, body)
                await asyncio.sleep(0.1)
            await asyncio.gather(*stallers)

        asyncio.run(asyncio.wait_for(scenario(), timeout=20))
    print(f"\nversion check beside 500 stalled connections: median {statistics.median(latencies) * 1000:.1f} ms, "
          f"max {max(latencies) * 1000:.1f} ms over {len(latencies)} checks (goal: < 100 ms); "
          f"stalled clients' outcome: {dict(outcomes)}")
    assert outcomes == {"HTTP/1.1 408": 500}


# -- thundering herd -------------------------------------------------------------------------------

@pytest.mark.slow
def test_thundering_herd_of_2000_checks(tmp_path: Path) -> None:
    """2,000 devices check over fresh connections within about a second (HTTP/1.0,
    Connection: close, the full ESP8266 header set; one in five on a stale version gets the image).
    Every one is answered completely, nothing is reset."""
    raise_fd_limit(2500)
    built = demo_catalog(tmp_path / "catalog")
    image = image_for("esp8266", "1.1.0")
    with serving(built.root, tmp_path / "logs") as served:
        current = esp8266_request(served.host, D1MINI, version="1.1.0")
        stale = esp8266_request(served.host, D1MINI, version="1.0.0")
        statuses: Counter[int] = Counter()
        errors: Counter[str] = Counter()
        wrong: list[str] = []

        async def device(n: int) -> None:
            is_stale = n % 5 == 0
            try:
                status, headers, body = await exchange_async(served.port, stale if is_stale else current)
            except (OSError, AssertionError) as exc:
                errors[type(exc).__name__] += 1
                return
            statuses[status] += 1
            if status != (200 if is_stale else 304) or (is_stale and body != image):
                wrong.append(f"device {n}: {status}")
            verify(status, headers, body)

        async def herd() -> float:
            started = time.perf_counter()
            tasks = []
            for n in range(2000):  # 20 waves of 100, 50 ms apart: all started within ~1 s
                tasks.append(asyncio.create_task(device(n)))
                if n % 100 == 99:
                    await asyncio.sleep(0.05)
            await asyncio.gather(*tasks)
            return time.perf_counter() - started

        elapsed = asyncio.run(asyncio.wait_for(herd(), timeout=30))
    print(f"\nthundering herd: 2000 checks answered in {elapsed:.2f} s: by status {dict(statuses)}, "
          f"errors {dict(errors) or 0}")
    assert not errors and not wrong
    assert statuses == {304: 1600, 200: 400}


# -- a device slower than the server ----------------------------------------------------------------

def test_a_slow_reader_gets_the_whole_image(tmp_path: Path) -> None:
    """A device reads slower than the server writes (here: nothing for 0.3 s, then everything),
    so the response outgrows the socket buffers and the server must wait on flow control
    (regression: the eager-start driver once aborted such downloads with "await wasn't used with
    future"). The image is 8 MiB, as a 16 MB ESP32's app partition allows."""
    built = CatalogBuilder(tmp_path / "catalog")
    built.add("demo", "d1mini", "esp8266", "1.0.0")
    # patch_crc=False: the factory's pure-Python CRC over 8 MiB takes seconds; no server checks it.
    large = esp8266_image("1.1.0", extra=bytes(range(256)) * (32 << 10), patch_crc=False)
    built.add("demo", "d1mini", "esp8266", "1.1.0", large)
    built.write()
    with serving(built.root, tmp_path / "logs") as served:
        request = esp8266_request(served.host, D1MINI, version="1.0.0").replace(
            b"x-ESP8266-free-space: 4194304", b"x-ESP8266-free-space: 16777216")
        conn = socket.socket()
        with conn:
            conn.settimeout(15)
            conn.connect(("127.0.0.1", served.port))
            conn.sendall(request)
            time.sleep(0.3)
            answer = read_answer(conn)
        check_update(answer)
        assert answer.body == large


def test_max_downloads_caps_transfers_while_checks_flow(tmp_path: Path) -> None:
    """max_downloads 4: four devices hold their 8 MiB transfers open (reading nothing yet); the
    next sixteen get 503 with Retry-After at once, version checks keep getting 304, and once the
    four have read their images whole a new download is served again."""
    built = CatalogBuilder(tmp_path / "catalog")
    built.add("demo", "d1mini", "esp8266", "1.0.0")
    large = esp8266_image("1.1.0", extra=bytes(range(256)) * (32 << 10), patch_crc=False)  # see above
    built.add("demo", "d1mini", "esp8266", "1.1.0", large)
    built.write()
    with serving(built.root, tmp_path / "logs", max_downloads=4, retry_after=30) as served:
        download = esp8266_request(served.host, D1MINI, version="1.0.0").replace(
            b"x-ESP8266-free-space: 4194304", b"x-ESP8266-free-space: 16777216")
        holders = []
        try:
            for _ in range(4):
                conn = socket.create_connection(("127.0.0.1", served.port), timeout=15)
                conn.sendall(download)
                holders.append(conn)
            time.sleep(0.3)  # the four transfers have started and fill their buffers
            refused = []
            for _ in range(16):
                with socket.create_connection(("127.0.0.1", served.port), timeout=15) as conn:
                    conn.sendall(download)
                    refused.append(read_answer(conn))
            assert [a.status for a in refused] == [503] * 16
            assert all(a.header("Retry-After") == ["30"] for a in refused)
            for _ in range(20):  # checks are never capped
                with socket.create_connection(("127.0.0.1", served.port), timeout=15) as conn:
                    conn.sendall(esp8266_request(served.host, D1MINI, version="1.1.0"))
                    assert read_answer(conn).status == 304
            for conn in holders:
                answer = read_answer(conn)
                check_update(answer)
                assert answer.body == large
        finally:
            for conn in holders:
                conn.close()
        time.sleep(0.2)  # the slots are released when the transfers end
        with socket.create_connection(("127.0.0.1", served.port), timeout=15) as conn:
            conn.sendall(download)
            answer = read_answer(conn)
        check_update(answer)
