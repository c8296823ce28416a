"""The `acrelease` command as a user runs it: one line per mistake, the right exit code, no traceback."""

import json
import subprocess
from pathlib import Path

import pytest

from tests import clirun
from tests.factories.images import esp32_image, esp8266_image, merged_image

REPO = Path(__file__).resolve().parents[1]


def run(cwd: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = clirun.run(*args, cwd=cwd, timeout=60, env={"COLUMNS": "200"}, inherit=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert (proc.returncode == 0) == ok, (proc.returncode, proc.stdout, proc.stderr)
    return proc


@pytest.fixture
def project(tmp_path: Path) -> Path:
    run(tmp_path, "init", "--name", "demo", "--target", "d1mini:esp8266", "--target", "s3:esp32s3")
    (tmp_path / "fw.bin").write_bytes(esp8266_image("1.0.0"))
    (tmp_path / "s3.bin").write_bytes(esp32_image("esp32s3", "1.0.0"))
    return tmp_path


def test_release_flow(project: Path) -> None:
    run(project, "add", "1.0.0", "fw.bin", "--target", "d1mini")
    run(project, "add", "1.0.0", "s3.bin", "--target", "s3")
    again = run(project, "add", "1.0.0", "s3.bin", "--target", "s3", "--json")
    assert json.loads(again.stdout)["changed"] is False
    listing = json.loads(run(project, "list", "--json").stdout)
    assert listing["project"] == "demo"
    assert {(r["version"], r["target"], r["published"]) for r in listing["releases"]} == {
        ("1.0.0", "d1mini", None), ("1.0.0", "s3", None)}
    published = json.loads(run(project, "publish", "--catalog", "cat", "--json").stdout)
    assert len(published["published"]) == 2 and published["generation"] == 1
    assert "Nothing new to publish" in run(project, "publish", "--catalog", "cat").stdout
    listing = json.loads(run(project, "list", "--catalog", "cat", "--json").stdout)
    assert all(r["published"] for r in listing["releases"])
    run(project, "yank", "1.0.0", "--catalog", "cat")


def test_inspect(project: Path) -> None:
    info = json.loads(run(project, "inspect", "s3.bin", "--json").stdout)
    assert info["chip"] == "esp32s3" and info["servable"] and info["app_descriptor"]["version"] == "1.4.2"
    (project / "merged.bin").write_bytes(merged_image("esp32", "1.0.0"))
    text = run(project, "inspect", "merged.bin", ok=False)
    assert "not OTA-servable" in text.stdout and "merged" in text.stdout


@pytest.mark.parametrize("args, code, message", [
    (["add", "1.0", "fw.bin", "--target", "d1mini"], 5, '"1.0" is not a semantic version'),
    (["add", "1.0.0", "s3.bin", "--target", "d1mini"], 4, "s3.bin: "),
    (["add", "1.0.0", "nope.bin", "--target", "d1mini"], 4, "nope.bin: no such file"),
    (["add", "1.0.0", "fw.bin", "--target", "zz"], 3, 'no target named "zz"'),
    (["inspect", "releases.toml"], 4, "releases.toml: not an ESP firmware image"),
    (["publish"], 2, "--catalog DIR"),
    (["publish", "9.9.9", "--catalog", "cat"], 5, "no release 9.9.9"),
    (["init", "--name", "x", "--target", "a:esp9000"], 2, 'unknown chip "esp9000"'),
    (["init", "--name", "x", "--target", "a:esp32"], 3, "already exists"),
])
def test_user_mistakes_are_one_line(project: Path, args: list[str], code: int, message: str) -> None:
    proc = run(project, *args, ok=False)
    assert proc.returncode == code
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("acrelease: error: ") and message in lines[0], proc.stderr


def test_broken_manifest_lists_every_problem(project: Path) -> None:
    manifest = project / "releases.toml"
    manifest.write_text(manifest.read_text().replace('chip = "esp32s3"', 'chip = "esp99"')
                        + '\n[[releases]]\nversion = "x"\n')
    proc = run(project, "list", ok=False)
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert any('targets[1].chip: unknown chip "esp99"' in line for line in lines)
    assert any('releases[0].version: "x" is not a semantic version' in line for line in lines)


def test_the_bundled_demo_manifest_is_valid_and_publishes(tmp_path: Path) -> None:
    listing = json.loads(run(REPO, "list", "--json").stdout)
    assert {(r["version"], r["target"]) for r in listing["releases"]} == {
        ("1.0.0", "d1mini"), ("1.0.0", "esp32dev"), ("1.1.0", "d1mini"), ("1.1.0", "esp32dev")}
    result = json.loads(run(REPO, "publish", "--catalog", str(tmp_path / "cat"), "--json").stdout)
    assert len(result["published"]) == 4


def test_templates_are_listed_and_printed(tmp_path: Path) -> None:
    names = run(tmp_path, "template").stdout.split()
    assert {"acrelease_version.h", "ota_esp8266.ino", "acrelease-serve.service", "releases.toml"} <= set(names)
    header = run(tmp_path, "template", "acrelease_version.h").stdout
    assert "#ifndef FW_VERSION" in header
    proc = run(tmp_path, "template", "nope", ok=False)
    assert proc.returncode == 2 and 'no template "nope"' in proc.stderr


def test_nginx_conf_is_filled_in_by_its_options(tmp_path: Path) -> None:
    examples = run(tmp_path, "template", "nginx.conf").stdout
    assert "server 10.0.0.2:8000 " in examples and "alias /srv/ota/;" in examples
    filled = run(tmp_path, "template", "nginx.conf", "--upstream", "192.0.2.7:8000", "--upstream", "[fd00::3]:8001",
                 "--upstream", "ota-3.lan:8000", "--listen", "127.0.0.1:8080", "--catalog", "/mnt/ota//").stdout
    servers = [line.split()[1] for line in filled.splitlines() if line.startswith("        server ")]
    assert servers == ["192.0.2.7:8000", "[fd00::3]:8001", "ota-3.lan:8000"]
    assert "        listen 127.0.0.1:8080;" in filled and "            alias /mnt/ota/;" in filled
    assert filled.count("\n") == examples.count("\n") + 1  # the examples replaced, nothing else moved
    only_port = run(tmp_path, "template", "nginx.conf", "--listen", "80").stdout
    assert "        listen 80;" in only_port and "server 10.0.0.2:8000 " in only_port


@pytest.mark.parametrize("args, says", [
    (["nginx.conf", "--upstream", "10.0.0.2"], '--upstream "10.0.0.2": expected HOST:PORT'),
    (["nginx.conf", "--upstream", "10.0.0.2:70000"], "expected HOST:PORT"),
    (["nginx.conf", "--upstream", "a b:80"], "expected HOST:PORT"),
    (["nginx.conf", "--listen", "0"], '--listen "0": expected [ADDR:]PORT'),
    (["nginx.conf", "--catalog", "srv/ota"], '--catalog "srv/ota": expected an absolute folder'),
    (["nginx.conf", "--catalog", "/srv/ota; root /"], "expected an absolute folder"),
    (["ota_esp32.ino", "--listen", "80"], "fill in nginx.conf only, not ota_esp32.ino"),
])
def test_nginx_conf_options_refuse_what_nginx_would_not_take(tmp_path: Path, args: list[str], says: str) -> None:
    proc = run(tmp_path, "template", *args, ok=False)
    assert proc.returncode == 2 and proc.stdout == "" and says in proc.stderr and proc.stderr.count("\n") == 1
