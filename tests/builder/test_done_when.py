"""The PlatformIO flow end to end, as a user runs it: a fresh PlatformIO project, `acrelease init --platformio`,
`acrelease build --bump minor` (twice), `acrelease publish`, `acrelease serve`; then a device reporting the
previous version gets the new image and a device reporting the new version gets 304. Real `pio`, real
processes, a real socket."""

from __future__ import annotations

import json
from pathlib import Path

from tests import clirun
from tests.builder.piohelpers import ProjectFactory
from tests.integration.devices import check_no_update, check_update, esp8266_request, exchange
from tests.integration.served import start_cli, stop_cli

ROOT = Path(__file__).resolve().parents[2]


def acrelease(project: Path, *args: str) -> str:
    proc = clirun.run(*args, cwd=project, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def test_init_build_publish_serve(make_project: ProjectFactory, tmp_path: Path) -> None:
    project = make_project()
    acrelease(project, "init", "--platformio")
    first = json.loads(acrelease(project, "build", "--bump", "minor", "--json"))
    second = json.loads(acrelease(project, "build", "--bump", "minor", "--json"))
    assert (first["version"], second["version"]) == ("0.1.0", "0.2.0")
    catalog = tmp_path / "catalog"
    acrelease(project, "publish", "--catalog", str(catalog))
    name = project.name
    process, port = start_cli(catalog)
    try:
        host = f"127.0.0.1:{port}"
        answer, _ = exchange(port, esp8266_request(host, f"/update/{name}/d1_mini", version="0.1.0"))
        check_update(answer)
        assert answer.header("x-version") == ["0.2.0"]
        built = project / second["release"]["targets"]["d1_mini"]["firmware"]["file"]
        assert answer.body == built.read_bytes() and b"0.2.0\0" in answer.body
        check_no_update(*exchange(port, esp8266_request(host, f"/update/{name}/d1_mini", version="0.2.0")))
    finally:
        code, _, err = stop_cli(process)
    assert code == 0 and "Traceback" not in err
