"""Simulated fleets on real sockets: thousands of devices with distinct MACs (locally administered,
``02:...``), each check a fresh HTTP/1.0 connection with the ESP8266 header set of docs/protocol.md G,
from its own loopback source address where asked (docs/testing.md, "A fleet on one machine")."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests import clirun
from tests.integration.devices import MAC, esp8266_request

UNKNOWN_MD5 = "a43ad019932b627ab90ee35a94a764ee"


def mac_of(n: int, prefix: int = 0x02) -> str:
    raw = (prefix << 40) | n
    return ":".join(f"{(raw >> shift) & 0xFF:02X}" for shift in range(40, -8, -8))


def address_of(n: int) -> str:
    return f"127.{1 + n // 62500}.{(n // 250) % 250}.{1 + n % 250}"


@dataclass
class Device:
    mac: str
    version: str | None
    md5: str = UNKNOWN_MD5
    address: str = "127.0.0.1"

    def request(self, host: str, path: str = "/update/demo/d1mini", mode: str = "sketch") -> bytes:
        raw = esp8266_request(host, path, version=self.version, mode=mode, md5=self.md5)
        return raw.replace(MAC.encode(), self.mac.encode())


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def checked(self) -> Reply:
        """What the device itself checks (docs/protocol.md C.3): exact length and x-MD5 of a 200."""
        if self.status == 200 and self.body:
            assert int(self.headers["content-length"]) == len(self.body)
            assert self.headers["x-md5"] == hashlib.md5(self.body).hexdigest()
        if self.status == 304:
            assert self.body == b""
        return self


async def _exchange(port: int, request: bytes, address: str) -> Reply:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))
    try:
        writer.write(request)
        data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return Reply(int(lines[0].split(" ")[1]), headers, body).checked()


def check_all(port: int, devices: Iterable[Device], path: str = "/update/demo/d1mini", *,
              concurrency: int = 64, mode: str = "sketch") -> list[Reply]:
    """Every device checks once (``concurrency`` at a time); replies in the devices' order."""
    host = f"127.0.0.1:{port}"
    listed = list(devices)

    async def main() -> list[Reply]:
        gate = asyncio.Semaphore(concurrency)

        async def one(device: Device) -> Reply:
            async with gate:
                return await _exchange(port, device.request(host, path, mode), device.address)

        return list(await asyncio.gather(*(one(d) for d in listed)))

    return asyncio.run(main())


def cli_json(*args: str, env: dict[str, str] | None = None) -> Any:
    done = clirun.run(*args, "--json", env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait_for(what: Callable[[], Any], timeout: float = 15.0, interval: float = 0.25) -> Any:
    """Poll until ``what()`` is truthy (bounded); returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def store_file(catalog: Path) -> Path:
    return catalog / ".acrelease" / "fleet.sqlite3"
