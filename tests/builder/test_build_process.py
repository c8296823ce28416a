"""The subprocess wrapper and the registry watcher."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from acrelease.builder import platformio
from acrelease.builder._process import run_process
from acrelease.builder._registry import RegistryWatcher
from acrelease.errors import BuildError
from tests.builder.piohelpers import ProjectFactory

# What `pio run` printed here for `platform = espressif8266` with the registry unreachable:
# one minute of silence after "Installing", then the error (docs/testing.md section 1).
CAPTURED_UNREACHABLE = """\
Processing d1 (platform: espressif8266; board: d1_mini; framework: arduino)
--------------------------------------------------------------------------------
Platform Manager: Installing espressif8266
HTTPClientError:
"""


def test_streams_lines_keeps_tail_and_returns_status(tmp_path: Path) -> None:
    seen: list[str] = []
    script = "import sys\nfor i in range(100): print(i)\nsys.exit(3)"
    result = run_process([sys.executable, "-c", script], cwd=tmp_path, env={}, timeout=30, on_line=seen.append)
    assert result.returncode == 3
    assert seen == [str(i) for i in range(100)]
    assert result.tail == tuple(str(i) for i in range(60, 100))


def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    marker = tmp_path / "child-survived"
    # The grandchild would write the marker after 2 s unless the whole group is killed.
    grandchild = tmp_path / "grandchild.py"
    grandchild.write_text(f"import time\ntime.sleep(2)\nopen({str(marker)!r}, 'w').close()\n")
    parent = tmp_path / "parent.py"
    parent.write_text(f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, {str(grandchild)!r}])\n"
                      "print('started', flush=True)\ntime.sleep(60)\n")
    script = parent.read_text()
    with pytest.raises(BuildError, match="did not finish within 1 s") as error:
        run_process([sys.executable, "-c", script], cwd=tmp_path, env={}, timeout=1)
    assert "started" in error.value.output_tail
    time.sleep(1.5)
    assert not marker.exists()


def test_missing_program_names_the_install_hint(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="`no-such-tool` was not found on PATH; pip install it"):
        run_process(["no-such-tool"], cwd=tmp_path, env={"PATH": str(tmp_path)}, timeout=5,
                    missing_hint="pip install it")


def feed(watcher: RegistryWatcher, text: str) -> None:
    for line in text.splitlines():
        watcher.feed(line)


def wait_for_verdict(watcher: RegistryWatcher) -> str | None:
    for _ in range(100):
        if watcher.verdict() is not None:
            break
        time.sleep(0.01)
    return watcher.verdict()


def test_watcher_on_captured_output_probes_on_install() -> None:
    head = CAPTURED_UNREACHABLE.split("HTTPClientError")[0]
    down = RegistryWatcher(probe=lambda: False)
    feed(down, head)
    verdict = wait_for_verdict(down)
    assert verdict is not None and "registry is unreachable" in verdict and "espressif8266" in verdict
    up = RegistryWatcher(probe=lambda: True)
    feed(up, head)
    time.sleep(0.1)
    assert up.verdict() is None


def test_watcher_stops_on_the_client_error_and_ignores_local_platforms() -> None:
    probes: list[int] = []

    def probe() -> bool:
        probes.append(1)
        return True

    watcher = RegistryWatcher(probe=probe)
    feed(watcher, "Platform Manager: Installing file:///work/tests/pio_platform\n")
    assert watcher.verdict() is None and probes == []
    feed(watcher, CAPTURED_UNREACHABLE.splitlines()[-1])
    assert watcher.verdict() is not None and "registry is unreachable" in str(watcher.verdict())


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_real_pio_with_unreachable_registry_is_cut_short(make_project: ProjectFactory,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`platform = espressif8266` must be downloaded. The registry is made unreachable for sure
    with an HTTPS proxy on a closed local port (PlatformIO would retry it for minutes); the
    watcher's probe fails at once and the build stops with the registry message."""
    project = make_project()
    (project / "platformio.ini").write_text("[env:d1]\nplatform = espressif8266\nboard = d1_mini\n")
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{closed_port()}")
    pio_project = platformio.read_project(project)
    with pytest.raises(BuildError, match="registry is unreachable") as error:
        # the timeout only bounds the test if detection were broken; it is never reached
        platformio.build_env(pio_project, "d1", version="1.0.0", define="FW_VERSION", filesystem=False,
                             staging=project / "staging", timeout=90)
    assert "Installing espressif8266" in error.value.output_tail
