"""``acrelease serve`` as a user runs it: the start-up banner, the log levels and formats, and the
unknown-channel warning, read from the real process's output."""

from __future__ import annotations

import json
from pathlib import Path

from tests import clirun
from tests.factories.catalog import demo_catalog
from tests.integration.devices import MAC, esp8266_request, exchange
from tests.integration.served import start_cli, stop_cli


def check(port: int, query: str = "", version: str | None = "1.0.0") -> int:
    host = f"127.0.0.1:{port}"
    return exchange(port, esp8266_request(host, "/update/demo/d1mini" + query, version=version))[0].status


def serve_and_ask(catalog: Path, *flags: str, queries: tuple[str, ...] = ("",)) -> tuple[str, str]:
    process, port = start_cli(catalog, *flags)
    try:
        for query in queries:
            check(port, query)
    finally:
        code, out, err = stop_cli(process)
    assert code == 0 and "Traceback" not in err, err
    return out, err


def test_banner_names_the_newest_release_of_each_channel(tmp_path: Path) -> None:
    built = demo_catalog(tmp_path / "catalog")  # d1mini: 1.0.0, 1.1.0 stable; 1.2.0-beta.1 beta
    out, _ = serve_and_ask(built.root)
    assert "demo/d1mini (esp8266, newest: stable 1.1.0, beta 1.2.0-beta.1)" in out
    assert "demo/esp32dev (esp32, newest: stable 1.1.0)" in out
    assert "demo/empty (esp32s3, nothing published)" in out


def test_unknown_channel_warned_once_and_answered_as_stable(tmp_path: Path) -> None:
    built = demo_catalog(tmp_path / "catalog")
    process, port = start_cli(built.root)
    try:
        # A device on 1.0.0 gets stable 1.1.0 whatever the unknown channel; beta gets the beta.
        statuses = [check(port, q) for q in ("?channel=nosuch", "?channel=nosuch", "?channel=beta", "")]
        assert check(port, "?channel=nosuch", version="1.1.0") == 304  # stable's newest: current
    finally:
        code, _, err = stop_cli(process)
    assert code == 0 and statuses == [200, 200, 200, 200]
    warnings = [line for line in err.splitlines() if " WARNING " in line]
    assert len(warnings) == 1, err
    assert "'nosuch'" in warnings[0] and "demo/d1mini" in warnings[0] and MAC in warnings[0]
    assert "answered as stable" in warnings[0]
    served = [line for line in err.splitlines() if "channel=" in line and " INFO " in line]
    assert len(served) == 4 and "serving 1.2.0-beta.1" in served[2] and "serving 1.1.0" in served[0]


def test_json_log_format_every_line_is_an_object(tmp_path: Path) -> None:
    built = demo_catalog(tmp_path / "catalog")
    _, err = serve_and_ask(built.root, "--log-format", "json", "--log", "Debug",
                           queries=("", "?channel=nosuch"))
    lines = err.splitlines()
    documents = [json.loads(line) for line in lines]  # every line, not just most
    assert all({"time", "level", "logger", "message"} <= d.keys() for d in documents)
    decisions = [d for d in documents if d["level"] == "INFO" and "status" in d]
    assert len(decisions) == 2
    assert decisions[0]["mac"] == MAC and decisions[0]["address"] == "127.0.0.1" and decisions[0]["status"] == 200
    assert decisions[0]["version"] == "1.0.0" and decisions[0]["serving_version"] == "1.1.0"
    assert decisions[0]["serving_file"] == "demo-d1mini-1.1.0.bin" and decisions[0]["method"] == "GET"
    assert decisions[1]["path"] == "/update/demo/d1mini?channel=nosuch"
    assert any(d["level"] == "WARNING" and "'nosuch'" in d["message"] for d in documents)
    assert any(d["level"] == "DEBUG" and d.get("free_space") == 4194304 for d in documents)


def test_log_debug_prints_request_details_and_catalog_details(tmp_path: Path) -> None:
    built = demo_catalog(tmp_path / "catalog")
    _, err = serve_and_ask(built.root, "--log", "debug")
    debug = [line for line in err.splitlines() if " DEBUG " in line]
    assert any(f"{MAC} 127.0.0.1 request details: arch='ESP8266'" in line and "version='1.0.0'" in line
               and "channel='stable'" in line for line in debug), err
    assert any("catalog: demo/d1mini (esp8266): 3 releases, newest: stable 1.1.0, beta 1.2.0-beta.1" in line
               for line in debug), err
    assert any("demo-d1mini-1.1.0.bin read and verified" in line for line in debug), err
    _, err = serve_and_ask(built.root)  # INFO: one line per decision, no DEBUG
    assert " DEBUG " not in err and sum(" -> 200 " in line for line in err.splitlines()) == 1


def test_bad_log_flags_are_one_line_before_anything_starts(tmp_path: Path) -> None:
    built = demo_catalog(tmp_path / "catalog")
    for flags, word in ((("--log", "verbose"), "--log verbose"), (("--log-format", "xml"), "--log-format xml")):
        result = clirun.run("serve", "--catalog", str(built.root), "--port", "1", *flags, timeout=60)
        assert result.returncode == 2, result
        assert result.stderr.startswith(f"acrelease: error: {word}") and result.stderr.count("\n") == 1
        assert "Traceback" not in result.stderr and result.stdout == ""
