"""`acrelease build / version / collect` through Typer, with real `pio` underneath."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from acrelease import manifest
from acrelease.builder import platformio
from acrelease.cli import build as build_cli
from acrelease.errors import BuildError
from tests.builder.piohelpers import ProjectFactory
from tests.factories.images import esp8266_image


def make_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """Commands under test."""

    build_cli.register(app)
    return app


def test_build_version_json(make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    project = make_project()
    path = project / manifest.MANIFEST_NAME
    manifest.init_manifest(path, "demo", platformio.read_project_targets(project))
    monkeypatch.chdir(project)
    runner = CliRunner()
    app = make_app()

    shown = runner.invoke(app, ["version", "--bump", "minor", "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout) == {"current": None, "next": "0.1.0"}

    dry = runner.invoke(app, ["build", "--dry-run", "--json"])
    assert dry.exit_code == 0 and json.loads(dry.stdout)["dry_run"] is True

    done = runner.invoke(app, ["build", "--version", "1.0.0", "--notes", "first", "--json"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert result["version"] == "1.0.0" and result["release"]["changed"] is True
    assert {b["target"]: b["version_found"] for b in result["built"]} == {"d1_mini": True, "esp32dev": True}
    assert result["release"]["targets"]["d1_mini"]["filesystem"]["file"].startswith("dist/1.0.0/d1_mini/")

    shown = runner.invoke(app, ["version", "--json"])
    assert json.loads(shown.stdout) == {"current": "1.0.0", "next": "1.0.1"}

    refused = runner.invoke(app, ["build", "--bump", "sideways"])
    assert refused.exit_code != 0 and "--bump sideways" in str(refused.exception)


def test_build_failure_surfaces_as_build_error(make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    project = make_project(extra_ini="build_flags = -DACRELEASE_TEST_COMPILE_ERROR\n")
    manifest.init_manifest(project / manifest.MANIFEST_NAME, "demo", platformio.read_project_targets(project))
    monkeypatch.chdir(project)
    failed = CliRunner().invoke(make_app(), ["build", "--target", "esp32dev", "--verbose"])
    assert isinstance(failed.exception, BuildError)  # acrelease.cli.main prints it as one line + the tail
    assert "env 'esp32dev'" in str(failed.exception)


def test_collect_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from acrelease import chips
    from acrelease.manifest import Target

    manifest.init_manifest(tmp_path / manifest.MANIFEST_NAME, "blink", [Target("d1mini", chips.lookup("esp8266"))])
    export = tmp_path / "Blink"
    export.mkdir()
    (export / "Blink.ino.generic.bin").write_bytes(esp8266_image("2.0.0"))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    done = runner.invoke(make_app(), ["collect", "Blink", "--version", "2.0.0",
                                      "--target", "d1mini=Blink/Blink.ino.generic.bin", "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["targets"]["d1mini"]["firmware"]["version_found"] is True
    bad = runner.invoke(make_app(), ["collect", "Blink", "--version", "2.0.1", "--target", "d1mini="])
    assert "expected TARGET or TARGET=FILE" in str(bad.exception)
    unmapped = runner.invoke(make_app(), ["collect", "Blink", "--version", "2.0.1", "--target", "d1mini"])
    assert "no exported image matches target d1mini" in str(unmapped.exception)
