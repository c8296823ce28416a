"""The dashboard in a real headless Chromium, against a real `acrelease serve --admin` and a fleet of
simulated devices on real sockets; the figures on the pages must equal the CLI's `--json`.

Chromium and its driver are Debian's (`apt-get install -y chromium chromium-driver`, which `.ci/run`
does); Selenium drives the installed browser and never downloads one. Screenshots of the pages go
to the test's temporary folder, and to ``ACRELEASE_SCREENSHOTS`` when set (the README's picture).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import clirun
from tests.factories.catalog import demo_catalog
from tests.integration.devices import esp8266_request, exchange
from tests.integration.served import free_port, start_cli, stop_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is a test dependency: pip install -e '.[test]'")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium "
                              "chromium-driver; .ci/run installs them)"),
]
DEVICES = 180


def mac(number: int) -> str:
    return f"02:AC:00:00:{number >> 8:02X}:{number & 0xFF:02X}"


def check(port: int, number: int, version: str | None, path: str = "/update/demo/d1mini") -> int:
    request = esp8266_request(f"127.0.0.1:{port}", path, version=version)
    return exchange(port, request.replace(b"DE:BA:7A:B1:E0:42", mac(number).encode()))[0].status


def cli_json(*args: str) -> Any:
    done = clirun.run(*args, "--json", timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def seed_history(catalog: Path) -> None:
    """Two days of hourly version counts, as the servers record them (here: today's counts)."""
    from acrelease.fleet.store import open_store

    store = open_store(None, catalog, create=False)
    try:
        hour = int(time.time()) // 3600 * 3_600_000
        for back in range(1, 49):
            store.snapshot_versions(hour - back * 3_600_000)
    finally:
        store.close()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Path, int, int]]:
    catalog = demo_catalog(tmp_path / "catalog").root
    admin = free_port()
    process, port = start_cli(catalog, "--admin", f"127.0.0.1:{admin}")
    try:
        started = clirun.run("rollout", "1.1.0", "--percent", "40", "--target", "demo/d1mini",
                             "--catalog", str(catalog), timeout=60)
        assert started.returncode == 0, started.stderr
        time.sleep(1.5)  # the server picks the rollout up within a second
        for number in range(DEVICES):
            check(port, number, "1.0.0" if number % 3 else "1.1.0")
        time.sleep(2.5)  # observations are written about a second behind
        seed_history(catalog)
        yield catalog, port, admin
    finally:
        code, _, err = stop_cli(process)
        assert code == 0 and "Traceback" not in err, err


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def macs_listed(driver: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    return [row.find_element(By.TAG_NAME, "code").text
            for row in driver.find_elements(By.CSS_SELECTOR, "#devices tr")[1:]]


def open_page(driver: Any, url: str, shots: Path, name: str) -> None:
    driver.get(url)
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors
    driver.save_screenshot(str(shots / f"{name}.png"))
    if os.environ.get("ACRELEASE_SCREENSHOTS"):
        Path(os.environ["ACRELEASE_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(os.environ["ACRELEASE_SCREENSHOTS"]) / f"dashboard-{name}.png"))


def test_pages_show_what_the_cli_says(fleet: tuple[Path, int, int], browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    catalog, _, admin = fleet
    base = f"http://127.0.0.1:{admin}"
    devices = cli_json("devices", "--catalog", str(catalog))
    rollouts = cli_json("rollout", "--catalog", str(catalog))
    status = cli_json("status", "--catalog", str(catalog))
    assert len(devices) == DEVICES
    states = Counter(d["state"] for d in devices if d["target"] == "demo/d1mini")
    assert states["waiting"] > 0 and states["current"] > 0  # the 40 % rollout leaves some devices out

    # The JSON API says exactly what the CLI says.
    def api(path: str) -> Any:
        with urllib.request.urlopen(base + path, timeout=10) as response:
            return json.load(response)
    assert api("/api/devices") == devices
    assert api("/api/rollouts") == rollouts
    assert api("/api/status") == status

    shots = tmp_path / "screenshots"
    shots.mkdir()
    open_page(browser, base + "/", shots, "overview")
    section = browser.find_element(By.ID, "demo/d1mini")
    chips = {chip.text.rsplit(" ", 1)[0]: int(chip.text.rsplit(" ", 1)[1])
             for chip in section.find_elements(By.CSS_SELECTOR, ".chips a.chip[href*='state=']")}
    assert chips == {state: count for state, count in states.items() if count}
    (rollout,) = [r for r in rollouts if r["target"] == "demo/d1mini"]
    row = section.find_element(By.XPATH, ".//h3[text()='Rollouts']/following-sibling::div//tr[2]")
    cells = [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
    assert cells[0] == "1.1.0" and cells[1] == rollout["state"] == "rolling"
    assert [int(c) for c in cells[3:6]] == [rollout["sent"], rollout["updated"], rollout["held"]]
    assert int(cells[6]) == states["waiting"]
    assert "acrelease rollout 1.1.0 --percent 80" in cells[7]  # the obvious next step, as a command
    lines = section.find_elements(By.CSS_SELECTOR, "svg.chart polyline")
    legend = [item.text for item in section.find_elements(By.CSS_SELECTOR, ".legend span")]
    versions = Counter(d["version"] for d in devices if d["target"] == "demo/d1mini")
    assert len(lines) == len(versions) and sorted(legend) == sorted(f"{v} ({n})" for v, n in versions.items())

    # Filters through the form, as an operator uses them, then paging.
    open_page(browser, base + "/devices", shots, "devices")
    Select(browser.find_element(By.NAME, "state")).select_by_visible_text("waiting")
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    time.sleep(0.5)
    listed = macs_listed(browser)
    waiting = sorted((d for d in devices if d["state"] == "waiting"), key=lambda d: d["last_seen"], reverse=True)
    assert len(listed) == min(50, len(waiting)) and set(listed) <= {d["mac"] for d in waiting}
    assert "state=waiting" in browser.current_url
    browser.get(base + "/devices?sort=mac")
    first_page = macs_listed(browser)
    browser.find_element(By.CSS_SELECTOR, "a[rel=next]").click()
    time.sleep(0.5)
    second_page = macs_listed(browser)
    by_mac = sorted(d["mac"] for d in devices)
    assert first_page == by_mac[:50] and second_page == by_mac[50:100]
    assert "sort=mac" in browser.current_url  # the filters survive paging

    # A device page shows its events.
    browser.find_element(By.LINK_TEXT, by_mac[51]).click()
    time.sleep(0.5)
    one = cli_json("device", by_mac[51], "--catalog", str(catalog))
    events = [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
              for row in browser.find_elements(By.CSS_SELECTOR, "#events tr")[1:]]
    assert [e[1] for e in events] == [e["event"] for e in one["events"]] and events
    open_page(browser, browser.current_url, shots, "device")

    # It refreshes itself without losing the filters: the same URL, the new figures.
    browser.get(base + "/devices?state=waiting&sort=mac")
    check(fleet[1], 5000, "1.0.0")  # a new device appears
    time.sleep(12)  # the page refreshes every 10 s; reports are at most 5 s old
    assert "state=waiting" in browser.current_url
    assert "updated" in browser.find_element(By.ID, "refreshed").text
    assert not [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert {p.name for p in shots.iterdir()} == {"overview.png", "devices.png", "device.png"}
