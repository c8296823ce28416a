"""The admin listener as an operator and a load balancer use it: a real `acrelease serve --admin`.

Devices check on the device port over real sockets (the ESP8266 client's exact head); `/metrics`
is read from the admin port and parsed by prometheus_client's own parser.
"""

from __future__ import annotations

import base64
import http.client
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from acrelease import access
from tests import clirun
from tests.factories.catalog import demo_catalog
from tests.integration.devices import esp8266_request, exchange
from tests.integration.served import free_port, start_cli, stop_cli


def get(port: int, path: str, headers: dict[str, str] | None = None,
        host: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, headers, body = get(port, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    found = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


@pytest.fixture
def admin_server(tmp_path: Path) -> Iterator[tuple[int, int]]:
    catalog = demo_catalog(tmp_path / "catalog").root
    admin_port = free_port()
    # One device re-sent the same image on purpose: the loop breaker must not hold it mid-test.
    process, port = start_cli(catalog, "--admin", f"127.0.0.1:{admin_port}", "--workers", "2", "--loop-limit", "1000")
    try:
        yield port, admin_port
    finally:
        code, out, err = stop_cli(process)
        assert code == 0 and "Traceback" not in err, err
        assert f"admin: dashboard http://127.0.0.1:{admin_port}/" in out


def test_metrics_count_checks_across_two_workers(admin_server: tuple[int, int]) -> None:
    port, admin_port = admin_server
    host = f"127.0.0.1:{port}"
    image_size = 0
    for number in range(40):  # two workers share the connections: both rows must be summed
        version = "1.1.0" if number % 4 else "1.0.0"  # 30 current (304), 10 stale (200 with the image)
        answer, _ = exchange(port, esp8266_request(host, "/update/demo/d1mini", version=version))
        assert answer.status == (304 if number % 4 else 200)
        image_size = max(image_size, len(answer.body))
    wrong_chip = esp8266_request(host, "/update/demo/esp32dev", version="1.0.0")  # refused, another device
    exchange(port, wrong_chip.replace(b"DE:BA:7A:B1:E0:42", b"02:00:00:00:00:01"))
    deadline = time.monotonic() + 15
    while True:  # counts are published every half second, the fleet's figures read every few seconds
        found = samples(admin_port)
        known = found.get(("acrelease_devices_by_version", (("target", "demo/d1mini"), ("version", "1.1.0"))))
        if found[("acrelease_decisions_total", (("kind", "current"),))] == 30 and known:
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert found[("acrelease_requests_total", (("route", "update"), ("status", "304")))] == 30
    assert found[("acrelease_requests_total", (("route", "update"), ("status", "200")))] == 10
    assert found[("acrelease_decisions_total", (("kind", "current"),))] == 30
    assert found[("acrelease_decisions_total", (("kind", "sent"),))] == 10
    assert found[("acrelease_decisions_total", (("kind", "refused"),))] == 1
    assert found[("acrelease_refusals_total", (("reason", "chip"),))] == 1
    assert found[("acrelease_check_latency_seconds_count", ())] == 41
    assert found[("acrelease_check_latency_seconds_bucket", (("le", "+Inf"),))] == 41
    assert found[("acrelease_bytes_sent_total", ())] == 10 * image_size
    assert found[("acrelease_catalog_generation", ())] == 1
    assert not any("mac" in dict(labels) or "address" in dict(labels) for _, labels in found)
    # The fleet's gauges: the one device above (every check used the same MAC) and its version.
    devices = {dict(labels)["state"]: value for (name, labels), value in found.items() if name == "acrelease_devices"
               and dict(labels)["target"] == "demo/d1mini"}
    assert sum(devices.values()) == 1 and set(devices) == {"current", "behind", "updating", "waiting", "held",
                                                            "unknown"}
    assert found[("acrelease_devices_by_version", (("target", "demo/d1mini"), ("version", "1.1.0")))] == 1
    assert found[("acrelease_fleet_write_errors_total", ())] == 0
    assert found[("acrelease_fleet_write_lag_seconds", ())] < 5


def test_health_on_both_ports_and_routes_kept_apart(admin_server: tuple[int, int]) -> None:
    port, admin_port = admin_server
    for where in (port, admin_port):
        status, _, body = get(where, "/healthz")
        assert (status, body) == (200, b"ok: catalog generation 1\n")
    assert get(port, "/metrics")[0] == 404  # the device port never answers an admin route
    assert get(admin_port, "/demo/d1mini/demo-d1mini-1.1.0.bin")[0] == 404  # the admin port serves no firmware
    answer, _ = exchange(admin_port, esp8266_request(f"127.0.0.1:{admin_port}", "/update/demo/d1mini",
                                                      version="1.0.0"))
    assert answer.status == 404


def test_non_loopback_admin_needs_credentials(tmp_path: Path) -> None:
    catalog = demo_catalog(tmp_path / "catalog").root
    before = sorted(p.name for p in catalog.iterdir())
    refused = clirun.run("serve", "--catalog", str(catalog), "-b", "127.0.0.1", "-p", str(free_port()),
                         "--admin", f"0.0.0.0:{free_port()}", timeout=30)
    assert refused.returncode == 8 and "Traceback" not in refused.stderr
    assert refused.stderr.count("\n") == 1 and "--admin-auth" in refused.stderr
    assert sorted(p.name for p in catalog.iterdir()) == before


def test_admin_auth_requires_basic_on_every_route(tmp_path: Path) -> None:
    catalog = demo_catalog(tmp_path / "catalog").root
    credentials = tmp_path / "admin.auth"
    access.add_user(credentials, "ops", "correct horse")
    admin_port = free_port()
    process, port = start_cli(catalog, "--admin", f"0.0.0.0:{admin_port}", "--admin-auth", str(credentials))
    try:
        good = "Basic " + base64.b64encode(b"ops:correct horse").decode()
        bad = "Basic " + base64.b64encode(b"ops:wrong").decode()
        for path in ("/metrics", "/healthz"):
            status, headers, _ = get(admin_port, path)
            assert status == 401 and headers["www-authenticate"].startswith("Basic")
            assert get(admin_port, path, {"Authorization": bad})[0] == 401
            assert get(admin_port, path, {"Authorization": good})[0] == 200
        assert get(port, "/healthz")[0] == 200  # the device port's health check needs no admin credentials
    finally:
        code, _, err = stop_cli(process)
    assert code == 0 and "Traceback" not in err


@pytest.mark.slow
def test_health_says_when_the_fleet_store_is_not_written(tmp_path: Path) -> None:
    """A store that cannot be written turns /healthz to 503 with the reason; checks go on."""
    catalog = demo_catalog(tmp_path / "catalog").root
    (tmp_path / "not-a-folder").write_text("a file where the store's folder should be\n")
    admin_port = free_port()
    process, port = start_cli(catalog, "--admin", f"127.0.0.1:{admin_port}",
                              "--fleet", str(tmp_path / "not-a-folder" / "fleet.sqlite3"))
    try:
        answer, _ = exchange(port, esp8266_request(f"127.0.0.1:{port}", "/update/demo/d1mini", version="1.1.0"))
        assert answer.status == 304  # bookkeeping fails, the device's answer does not change
        deadline = time.monotonic() + 20
        while (status := get(port, "/healthz"))[0] == 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert status[0] == 503 and status[2].startswith(b"fleet store not written for ")
        assert get(admin_port, "/healthz")[0] == 503
    finally:
        code, _, err = stop_cli(process)
    assert code == 0 and "Traceback" not in err
