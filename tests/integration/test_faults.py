"""Faults, with nothing lost: a real ``acrelease`` server process while the catalog
changes under it: publishes during 200 concurrent downloads (``acrelease publish``, its own process), an
index corrupted by hand, files deleted, truncated or overwritten behind the server's back.

The invariant checked everywhere: every complete 200 carries a body whose MD5 is its ``x-MD5``
and whose length is its ``Content-Length`` (what the device verifies, docs/protocol.md F.16-F.19).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from acrelease import chips, manifest
from acrelease.catalog import store
from acrelease.catalog.index import INDEX_NAME
from acrelease.manifest import ArtifactRecord, Release, Target
from acrelease.versioning import parse_release_version
from tests import clirun
from tests.factories.catalog import CatalogBuilder, demo_catalog, image_for
from tests.factories.images import esp8266_image
from tests.integration.devices import check_no_update, check_update, esp8266_request, exchange, read_answer
from tests.integration.served import ROOT, Served, serving

D1MINI = "/update/demo/d1mini"


def wait_for(predicate: Callable[[], bool], *, seconds: float = 10.0, step: float = 0.05) -> float:
    """Poll ``predicate`` (bounded); returns how long it took, fails the test on timeout."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"not true within {seconds} s: {predicate.__doc__ or predicate}")
        time.sleep(step)
    return time.monotonic() - started


def md5_ok(answer_status: int, headers: dict[str, str], body: bytes) -> None:
    """A complete 200 is exactly what its headers say (F.16, F.19)."""
    if answer_status != 200:
        return
    assert int(headers["content-length"]) == len(body), "Content-Length differs from the body"
    assert headers["x-md5"] == hashlib.md5(body).hexdigest(), "body MD5 differs from x-MD5"


# -- publishing while 200 devices download --------------------------------------------------------

def big_image(version: str) -> bytes:
    """A real ESP8266 image of about 600 KiB (a realistic sketch), version string inside."""
    return esp8266_image(version, extra=hashlib.sha256(version.encode()).digest() * (600 * 1024 // 32))


def make_project(root: Path, versions: list[str]) -> Path:
    """A releases.toml with one esp8266 target and a release per version, as ``acrelease add``
    records it (files under dist/)."""
    path = root / "releases.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest.init_manifest(path, "demo", [Target("d1mini", chips.lookup("esp8266"))])
    for version in versions:
        data = big_image(version)
        rel = f"dist/{version}/d1mini/firmware.bin"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        record = ArtifactRecord("firmware", rel, len(data), hashlib.md5(data).hexdigest(),
                                hashlib.sha256(data).hexdigest(), "esp8266", "plain", None, True)
        manifest.record_artifacts(path, Release(parse_release_version(version), date="2026-11-27"),
                                  {"d1mini": [record]})
    return path


@dataclass
class Download:
    status: int
    headers: dict[str, str]
    body: bytes


async def fetch(port: int, request: bytes) -> Download:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        data = await reader.read()  # HTTP/1.0: the server closes after the answer
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        assert name.lower() not in headers or name.lower() == "date", f"header {name} sent twice"
        headers[name.lower()] = value.strip()
    return Download(int(lines[0].split(" ")[1]), headers, body)


@pytest.mark.slow
def test_publish_while_200_devices_download(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", ["1.0.0", "1.1.0", "1.2.0"])
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    store.publish(manifest.load(project), catalog, [parse_release_version("1.0.0")])
    images = {v: big_image(v) for v in ("1.0.0", "1.1.0", "1.2.0")}

    with serving(catalog, tmp_path / "logs") as served:
        request = esp8266_request(served.host, D1MINI, version="0.1.0")  # always gets the newest
        downloads: list[Download] = []
        failures: list[str] = []
        timeline: dict[str, float] = {}

        async def device(stop: asyncio.Event) -> None:
            while not stop.is_set():
                try:
                    downloads.append(await fetch(served.port, request))
                except OSError as exc:
                    failures.append(repr(exc))

        async def publish(version: str) -> None:
            """`acrelease publish VERSION` as the operator runs it, in its own process."""
            process = await asyncio.create_subprocess_exec(
                *clirun.command("publish", version, "--catalog", str(catalog), "--manifest", str(project)),
                cwd=ROOT, env=clirun.environment(),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await process.communicate()
            assert process.returncode == 0 and f"Published demo/d1mini {version}" in out.decode(), (out, err)

        async def scenario() -> None:
            stop = asyncio.Event()
            devices = [asyncio.create_task(device(stop)) for _ in range(200)]
            while len(downloads) < 200:  # every device is downloading
                await asyncio.sleep(0.01)
            await publish("1.1.0")
            timeline["1.1.0"] = len(downloads)
            await asyncio.sleep(0.3)
            await publish("1.2.0")
            published = time.monotonic()
            timeline["1.2.0"] = len(downloads)
            while True:  # a new device gets the new version (the watcher polls every 0.25 s)
                fresh = await fetch(served.port, request)
                if fresh.headers.get("x-version") == "1.2.0":
                    timeline["new version served after s"] = time.monotonic() - published
                    break
                assert time.monotonic() - published < 10, "new release not served within 10 s"
                await asyncio.sleep(0.02)
            mark = len(downloads)
            while len(downloads) < mark + 200:  # a full round more, on the new state
                await asyncio.sleep(0.01)
            stop.set()
            await asyncio.gather(*devices)

        started = time.monotonic()
        asyncio.run(asyncio.wait_for(scenario(), timeout=45))
        elapsed = time.monotonic() - started
        check_no_update(*exchange(served.port, esp8266_request(served.host, D1MINI, version="1.2.0")))

    by_version: dict[str, int] = {}
    for one in downloads:
        assert one.status == 200
        md5_ok(one.status, one.headers, one.body)
        version = one.headers["x-version"]
        assert one.body == images[version]  # the whole image of the version it names, never a mix
        by_version[version] = by_version.get(version, 0) + 1
    print(f"\n{len(downloads)} downloads of ~600 KiB by 200 devices in {elapsed:.1f} s while publishing twice: "
          f"by version {sorted(by_version.items())}, MD5/length mismatches 0, connection errors {len(failures)}; "
          f"publishes after {timeline['1.1.0']:.0f} and {timeline['1.2.0']:.0f} downloads; new version served "
          f"{timeline['new version served after s']:.2f} s after publish returned")
    assert failures == []
    assert by_version.get("1.0.0") and by_version.get("1.2.0")


# -- the catalog changed behind the server's back -------------------------------------------------

def test_corrupted_index_keeps_the_previous_state_and_logs_it(tmp_path: Path) -> None:
    built = demo_catalog(tmp_path / "catalog")
    index = built.root / INDEX_NAME
    good = index.read_bytes()
    with serving(built.root, tmp_path / "logs") as served:
        for broken in (good[: len(good) // 2], b"", b"\x00" * 100, b'{"generation": "x"}', b"[]"):
            with open(index, "r+b") as handle:  # by hand, in place: not the atomic rename publish uses
                handle.write(broken)
                handle.truncate()
            before = served.log().count("still serving generation 1")

            def logged(before: int = before) -> bool:
                """the broken index is logged at ERROR"""
                return served.log().count("still serving generation 1") > before

            wait_for(logged)
            # Still the previous state: 304 for the current version, the image for an old one.
            assert served.check(version="1.1.0").status == 304
            answer = served.check(version="1.0.0")
            check_update(answer)
            assert answer.header("x-version") == ["1.1.0"] and answer.body == image_for("esp8266", "1.1.0")
            time.sleep(0.02)  # a distinct mtime for the next write
        log = served.log()
        assert "ERROR catalog:" in log and "still serving generation 1" in log
        # Repaired (a real publish of 1.4.0): served at once.
        built.add("demo", "d1mini", "esp8266", "1.4.0")
        built.write()
        wait_for(lambda: served.check(version="1.1.0").status == 200)
        check_update(served.check(version="1.1.0"))
    print("\n" + "\n".join(line for line in log.splitlines() if "ERROR" in line))


def test_deleted_file_is_404_and_the_rest_is_served(tmp_path: Path) -> None:
    built = demo_catalog(tmp_path / "catalog")
    name = "demo/d1mini/demo-d1mini-1.1.0.bin"
    with serving(built.root, tmp_path / "logs", recheck_interval=1.0) as served:
        check_update(served.check(version="1.0.0"))
        (built.root / name).unlink()
        deleted = time.monotonic()

        def refused() -> bool:
            """the deleted file answers 404 on the update route and the download route"""
            update = served.check(version="1.0.0")
            download, _ = exchange(served.port, esp8266_request(served.host, f"/{name}", version=None))
            for one in (update, download):
                if one.status == 200:  # until the recheck: the old inode's bytes, still exact
                    check_update(one)
            return update.status == 404 and download.status == 404

        wait_for(refused, seconds=8)
        print(f"\ndeleted file answered 404 after {time.monotonic() - deleted:.2f} s (recheck every 1 s)")
        # Everything else is still served, byte for byte.
        check_update(exchange(served.port, esp8266_request(served.host, "/demo/d1mini/demo-d1mini-1.0.0.bin",
                                                           version=None))[0])
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as conn:
            conn.sendall(f"GET /update/demo/esp32dev HTTP/1.0\r\nHost: {served.host}\r\nUser-Agent: "
                         "ESP32-http-Update\r\nx-ESP32-STA-MAC: DE:BA:7A:B1:E0:42\r\nx-ESP32-free-space: "
                         "1966080\r\nx-ESP32-sketch-size: 900000\r\nx-ESP32-chip-size: 4194304\r\n"
                         "x-ESP32-sdk-version: v5.1.4\r\nx-ESP32-mode: sketch\r\nx-ESP32-version: 1.0.0\r\n"
                         "\r\n".encode())
            check_update(read_answer(conn), sha256=True)
        listing, _ = exchange(served.port, f"GET /_catalog?op=list&path=demo/d1mini HTTP/1.0\r\n"
                                           f"Host: {served.host}\r\n\r\n".encode())
        assert listing.status == 200 and b"demo-d1mini-1.1.0.bin" not in listing.body
        assert b"demo-d1mini-1.0.0.bin" in listing.body
        assert f"WARNING catalog: {name} is not served (answered 404)" in served.log()


def test_file_truncated_during_a_download(tmp_path: Path) -> None:
    """A file cut short while a client downloads it: the client gets the verified image whole (or
    a short body it detects: fewer bytes than Content-Length), never other bytes; the server
    survives (no SIGBUS from a truncated mapping) and the file becomes 404."""
    built = CatalogBuilder(tmp_path / "catalog")
    built.add("demo", "d1mini", "esp8266", "1.0.0")
    # patch_crc=False: the factory's pure-Python CRC over 3 MiB takes seconds; no server checks it.
    built.add("demo", "d1mini", "esp8266", "1.1.0", esp8266_image("1.1.0", extra=os.urandom(3 << 20),
                                                                  patch_crc=False))
    built.write()
    name = built.root / "demo/d1mini/demo-d1mini-1.1.0.bin"
    with serving(built.root, tmp_path / "logs", recheck_interval=0.5) as served:
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as conn:
            conn.sendall(esp8266_request(served.host, D1MINI, version="1.0.0"))
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(1024)
            assert head.startswith(b"HTTP/1.1 200 "), head
            os.truncate(name, 1000)
            data = head.partition(b"\r\n\r\n")[2]
            while chunk := conn.recv(65536):
                data += chunk
        length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
                      .split(b":")[1])
        print(f"\nfile truncated mid-download: {len(data)} of {length} body bytes, then a close")
        assert len(data) <= length
        if len(data) == length:
            assert hashlib.md5(data).hexdigest().encode() in head
        wait_for(lambda: served.check(version="1.0.0").status == 404)
        assert served.alive()
        assert served.check(version="1.1.0").status == 304  # the other release is still known


def overwrite_in_place(path: Path, *, keep_mtime: bool) -> None:
    """Other bytes of the same size written into the published file itself (not a new inode),
    optionally with its mtime put back so a stat signature cannot see the change."""
    before = path.stat()
    with open(path, "r+b") as handle:
        handle.seek(before.st_size // 2)
        handle.write(os.urandom(512))
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def assert_never_mismatched(served: Served, tries: int) -> list[int]:
    statuses = []
    for _ in range(tries):
        answer = served.check(version="1.0.0")
        if answer.status == 200:
            md5_ok(200, {"content-length": answer.header("Content-Length")[0],
                         "x-md5": answer.header("x-MD5")[0]}, answer.body)
        statuses.append(answer.status)
        time.sleep(0.1)
    return statuses


def test_file_overwritten_in_place_is_never_served_with_the_old_md5(tmp_path: Path) -> None:
    built = demo_catalog(tmp_path / "catalog")
    with serving(built.root, tmp_path / "logs", recheck_interval=1.0) as served:
        check_update(served.check(version="1.0.0"))
        overwrite_in_place(built.root / "demo/d1mini/demo-d1mini-1.1.0.bin", keep_mtime=False)
        statuses = assert_never_mismatched(served, 20)  # 2 s: spans the 1 s recheck
        assert statuses[-1] == 404  # the recheck saw the new mtime, re-hashed, refused


def test_file_overwritten_in_place_with_mtime_kept_is_never_served_with_the_old_md5(tmp_path: Path) -> None:
    built = demo_catalog(tmp_path / "catalog")
    with serving(built.root, tmp_path / "logs", recheck_interval=0.5) as served:
        check_update(served.check(version="1.0.0"))
        overwrite_in_place(built.root / "demo/d1mini/demo-d1mini-1.1.0.bin", keep_mtime=True)
        time.sleep(1.0)  # two rechecks, which see an unchanged stat signature
        statuses = assert_never_mismatched(served, 5)
        assert set(statuses) <= {200, 404}
