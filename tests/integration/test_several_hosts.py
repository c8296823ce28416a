"""Several hosts behind nginx (README, "Running on several hosts"): a real PostgreSQL, two
``acrelease serve`` processes on 127.0.0.2 and 127.0.0.3 with one catalog and one fleet store, and
nginx from ``acrelease template nginx.conf`` on 127.0.0.1 in front (docs/testing.md, "PostgreSQL").

A device sees one consistent server; a device looping on one host is held on the other; a rollout
widened through the CLI is honoured by both within a second; one host killed with SIGKILL under load
costs no check (nginx retries connection errors) and the fleet store loses no device; images sent by
nginx (``--accel-redirect``) are the catalog's bytes with the right ``x-MD5`` for the ESP8266 and
ESP32 header sets, and direct downloads keep ``Range`` and ``HEAD``.
"""

from __future__ import annotations

import hashlib
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import clirun
from tests.factories.catalog import demo_catalog
from tests.fleet.fleetsim import Device, Reply, check_all, cli_json, mac_of, wait_for
from tests.integration import nginx
from tests.integration.devices import check_update, esp32_request, exchange, read_answer
from tests.integration.served import free_port, stop, wait_listening
from tests.pgserver import missing

pytestmark = [pytest.mark.slow, nginx.needs_nginx,
              pytest.mark.skipif(missing() is not None, reason=str(missing()))]

HOSTS = ("127.0.0.2", "127.0.0.3")


@dataclass
class Cluster:
    catalog: Path
    fleet: str
    port: int
    """Each acrelease host's port (the same on both addresses)."""
    front: int
    """nginx's port on 127.0.0.1: what devices use."""
    processes: dict[str, Any]

    def cli(self, *args: str) -> Any:
        return cli_json(*args, "--catalog", str(self.catalog), "--fleet", self.fleet)

    def check(self, device: Device, host: str | None = None) -> Reply:
        """One check of ``device`` on one acrelease host directly (``host``) or through nginx."""
        port = self.port if host else self.front
        address = host or "127.0.0.1"
        return _one(address, port, device)


def _one(address: str, port: int, device: Device) -> Reply:
    raw = device.request(f"{address}:{port}")
    with socket.create_connection((address, port), timeout=15) as conn:
        conn.sendall(raw)
        answer = read_answer(conn)
    return Reply(answer.status, {k.lower(): v for k, v in answer.headers}, answer.body).checked()


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str) -> Iterator[Cluster]:
    catalog = demo_catalog(tmp_path / "catalog").root
    port = free_port()
    processes: dict[str, Any] = {}
    logs = {host: tmp_path / f"serve-{host}.log" for host in HOSTS}
    try:
        for host in HOSTS:
            # The log goes to a file: a pipe nobody reads fills up under load and stalls the server.
            with open(logs[host], "w") as log:
                processes[host] = clirun.popen("serve", "--catalog", str(catalog), "--bind", host, "--port",
                                               str(port), "--accel-redirect", "/_files/", "--fleet", pg_url,
                                               "--loop-limit", "3", stdout=log, stderr=subprocess.STDOUT)
            wait_listening(processes[host], port, logs[host].read_text, host)
        with nginx.running([f"{h}:{port}" for h in HOSTS], catalog, tmp_path / "nginx") as front:
            yield Cluster(catalog, pg_url, port, front, processes)
    finally:
        for host, process in processes.items():
            if process.poll() is None:
                code = stop(process)
                text = logs[host].read_text(errors="replace")
                assert code == 0 and "Traceback" not in text, text[-3000:]


def test_a_device_sees_one_consistent_server(cluster: Cluster) -> None:
    current = Device(mac_of(1), "1.1.0")
    behind = [Device(mac_of(100 + n), "1.0.0") for n in range(12)]
    image = (cluster.catalog / "demo/d1mini/demo-d1mini-1.1.0.bin").read_bytes()
    for _ in range(10):  # round robin: both hosts answer, the same way
        assert cluster.check(current).status == 304
    for device in behind:
        reply = cluster.check(device)
        assert reply.status == 200 and reply.body == image and reply.headers["x-version"] == "1.1.0"
    for host in HOSTS:
        assert cluster.check(current, host).status == 304
    rows = wait_for(lambda: (got := {r["mac"]: r for r in cluster.cli("devices")}) and len(got) == 13
                    and got[current.mac]["checks"] == 12 and got, timeout=10)
    assert rows, "the two hosts' observations did not add up in the one store"
    assert {rows[d.mac]["state"] for d in behind} == {"updating"} and rows[current.mac]["state"] == "current"


def test_downloads_through_two_hosts_are_the_catalogs_bytes(cluster: Cluster) -> None:
    port = cluster.front
    host = f"127.0.0.1:{port}"
    esp32 = (cluster.catalog / "demo/esp32dev/demo-esp32dev-1.1.0.bin").read_bytes()
    for new_core in (True, False, True, False):  # consecutive requests go to both hosts
        answer, _ = exchange(port, esp32_request(host, "/update/demo/esp32dev", version="1.0.0", new_core=new_core))
        check_update(answer, sha256=True)
        assert answer.body == esp32 and answer.header("x-MD5") == [hashlib.md5(esp32).hexdigest()]
    name = "demo/d1mini/demo-d1mini-1.0.0.bin"
    image = (cluster.catalog / name).read_bytes()
    head = f"Host: {host}\r\nConnection: close\r\n"
    for _ in range(2):
        whole = _raw(port, f"GET /{name} HTTP/1.1\r\n{head}\r\n")
        assert whole.status == 200 and whole.body == image
        assert whole.header("x-MD5") == [hashlib.md5(image).hexdigest()]
        part = _raw(port, f"GET /{name} HTTP/1.1\r\n{head}Range: bytes=16-115\r\n\r\n")
        assert part.status == 206 and part.body == image[16:116]
        only = _raw(port, f"HEAD /{name} HTTP/1.1\r\n{head}\r\n")
        assert only.status == 200 and only.header("Content-Length") == [str(len(image))] and only.body == b""


def _raw(port: int, text: str) -> Any:
    with socket.create_connection(("127.0.0.1", port), timeout=15) as conn:
        conn.sendall(text.encode())
        return read_answer(conn, head_only_body=text.startswith("HEAD"))


def test_a_device_looping_on_one_host_is_held_on_the_other(cluster: Cluster) -> None:
    a, b = HOSTS
    looping = Device(mac_of(7), "1.0.0")
    for _ in range(3):  # three images on host A, and it still reports 1.0.0
        assert cluster.check(looping, a).status == 200
    # Host A writes the sends (armed hold) within a second; host B reloads and holds the device.
    assert wait_for(lambda: cluster.check(looping, b).status == 304, timeout=5, interval=0.3)
    device = wait_for(lambda: (got := cluster.cli("device", looping.mac))["state"] == "held" and got, timeout=5)
    assert device and [e["event"] for e in device["events"]].count("held") == 1
    assert cluster.check(looping, a).status == 304 and cluster.check(looping).status == 304


def test_a_rollout_widened_through_the_cli_reaches_both_hosts_within_a_second(cluster: Cluster) -> None:
    def rollout(percent: str) -> None:
        done = clirun.run("rollout", "1.1.0", "--percent", percent, "--target", "demo/d1mini", "--catalog",
                          str(cluster.catalog), "--fleet", cluster.fleet)
        assert done.returncode == 0, done.stderr

    rollout("1")
    candidates = [Device(mac_of(1000 + n), "1.0.0") for n in range(40)]
    # Once both hosts apply the 1 % rollout, most devices are outside it (a 304 sends nothing).
    outside = wait_for(lambda: (found := [d for d in candidates if all(cluster.check(d, h).status == 304
                                                                        for h in HOSTS)]) and len(found) > 20
                       and found, timeout=5)
    assert outside, "the 1 % rollout did not reach both hosts"
    waiting = dict(zip(HOSTS, outside, strict=False))
    rollout("100")
    widened = time.monotonic()
    seen: dict[str, float] = {}
    while len(seen) < len(HOSTS) and time.monotonic() - widened < 5:
        for host, device in waiting.items():
            if host not in seen and cluster.check(device, host).status == 200:
                seen[host] = time.monotonic() - widened
        time.sleep(0.02)
    assert set(seen) == set(HOSTS) and max(seen.values()) < 1.0, seen


def test_one_host_killed_under_load_costs_no_check_and_no_device(cluster: Cluster) -> None:
    fleet = [Device(mac_of(5000 + n), "1.1.0") for n in range(400)]
    statuses: list[int] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                statuses.extend(r.status for r in check_all(cluster.front, fleet, concurrency=32))
            except BaseException as exc:  # a connection error reaching a device
                failures.append(exc)
                return

    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(2)
        cluster.processes[HOSTS[0]].send_signal(signal.SIGKILL)
        cluster.processes[HOSTS[0]].wait(timeout=10)
        killed_at = len(statuses)
        time.sleep(3)
    finally:
        stop.set()
        worker.join(timeout=60)
    assert not failures, failures[0]
    assert len(statuses) > killed_at > 0 and set(statuses) == {304}, {s: statuses.count(s) for s in set(statuses)}
    # Each device checked again after the kill, through the surviving host: none is missing.
    rows = wait_for(lambda: len(got := cluster.cli("devices")) == len(fleet) and got, timeout=10)
    assert rows and {r["mac"] for r in rows} == {d.mac for d in fleet}
