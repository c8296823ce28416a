"""The front end's limits are configurable from `acrelease serve` (docs/operations.md, "Limits"), on a real process."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.factories.catalog import demo_catalog
from tests.integration.devices import esp8266_request, read_answer
from tests.integration.served import start_cli, stop_cli


def test_limit_flags_reach_the_server(tmp_path: Path) -> None:
    built = demo_catalog(tmp_path / "catalog")
    process, port = start_cli(built.root, "--head-timeout", "1", "--max-target", "100", "--max-header-lines", "12",
                          "--max-downloads", "3")
    host = f"127.0.0.1:{port}"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as silent:
            assert read_answer(silent).status == 408  # nothing sent for --head-timeout 1
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"GET /" + b"a" * 150 + b" HTTP/1.0\r\n\r\n")
            assert read_answer(conn).status == 414
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(esp8266_request(host, "/update/demo/d1mini", version="1.1.0"))  # 14 header lines
            assert read_answer(conn).status == 431
    finally:
        code, _, err = stop_cli(process)
    assert code == 0 and "Traceback" not in err
