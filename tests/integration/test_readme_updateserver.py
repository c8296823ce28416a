"""The README's "Coming from updateserver.py" section, followed command by command.

The commands are read from the section's ``sh`` blocks, in order, and run as the real CLI in a
folder laid out as updateserver.py users keep it (``ota/bin/*.bin``). A ``serve`` line starts a
server (on a free port, bound to 127.0.0.1) that is played by AutoConnect; the first one keeps
running while ``import`` and ``publish`` run, as a user would leave it, and must switch to the
published index within a second.
"""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
import time
from pathlib import Path

from tests import clirun
from tests.factories import images
from tests.integration.devices import (
    Answer,
    autoconnect_catalog_request,
    check_no_update,
    check_update,
    esp8266_request,
    exchange,
    parse_catalog_like_autoconnect,
    read_answer,
)
from tests.integration.served import free_port, stop_cli, wait_listening

README = Path(__file__).resolve().parents[2] / "README.md"
OLD, NEW = images.esp8266_image("1.0.0"), images.esp8266_image("1.1.0")


def section_commands() -> list[list[str]]:
    text = README.read_text()
    section = text.split("## Coming from updateserver.py\n", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.DOTALL):
        for line in block.splitlines():
            if line.startswith("acrelease "):
                commands.append(shlex.split(line, comments=True))
    return commands


def catalog(port: int, path: str) -> Answer:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(autoconnect_catalog_request(f"127.0.0.1:{port}", path))
        return read_answer(conn)


def start(args: list[str], cwd: Path) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    args = list(args)
    for flag in ("--port", "-p"):
        if flag in args:
            args[args.index(flag) + 1] = str(port)
    log = open(cwd / f"serve-{port}.log", "w")  # noqa: SIM115 - closed with the process below
    process = clirun.popen(*args, "--bind", "127.0.0.1", cwd=cwd, stdout=log, stderr=log, text=True)
    log.close()
    wait_listening(process, port, (cwd / f"serve-{port}.log").read_text)
    return process, port


def test_the_readme_section_runs_as_written(tmp_path: Path) -> None:
    commands = section_commands()
    assert [c[:2] for c in commands] == [["acrelease", "serve"], ["acrelease", "import"],
                                         ["acrelease", "publish"], ["acrelease", "serve"]], commands
    (tmp_path / "ota" / "bin").mkdir(parents=True)
    (tmp_path / "ota" / "bin" / "fw-1.0.0.bin").write_bytes(OLD)
    (tmp_path / "ota" / "bin" / "fw-1.1.0.bin").write_bytes(NEW)
    time.sleep(1.1)  # copied in a while ago

    running, port = start(commands[0][1:], tmp_path)
    try:
        names = [e["name"] for e in parse_catalog_like_autoconnect(catalog(port, "bin").body) if e["type"] == "bin"]
        assert sorted(names) == ["fw-1.0.0.bin", "fw-1.1.0.bin"]
        answer, _ = exchange(port, esp8266_request(f"127.0.0.1:{port}", "bin/fw-1.1.0.bin", version=None))
        check_update(answer)
        assert answer.body == NEW

        for command in commands[1:3]:
            done = clirun.run(*command[1:], cwd=tmp_path)
            assert done.returncode == 0, (command, done.stdout, done.stderr)
        published = time.monotonic()
        while catalog(port, "bin").status != 404:
            assert time.monotonic() - published < 1.0
            time.sleep(0.02)
        entries = parse_catalog_like_autoconnect(catalog(port, "myproject/bin").body)
        assert [e["name"] for e in entries] == ["myproject-bin-1.1.0.bin", "myproject-bin-1.0.0.bin"]
    finally:
        code, _, _ = stop_cli(running)
    assert code == 0
    assert "plain folder" in (tmp_path / f"serve-{port}.log").read_text()

    again, port = start(commands[3][1:], tmp_path)
    try:
        host = f"127.0.0.1:{port}"
        check_update(exchange(port, esp8266_request(host, "/update/myproject/bin", version="1.0.0"))[0])
        check_no_update(*exchange(port, esp8266_request(host, "/update/myproject/bin", version="1.1.0")))
    finally:
        code, _, _ = stop_cli(again)
    assert code == 0
    log = (tmp_path / f"serve-{port}.log").read_text()
    assert "plain folder" not in log and "update.uri = \"myproject/bin\"" in log
