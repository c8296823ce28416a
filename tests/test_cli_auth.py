"""``acrelease auth``: add/remove/list through the command group (docs/operations.md, "Access files")."""

from __future__ import annotations

import base64
import stat
import subprocess
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from acrelease import access
from acrelease.cli import auth
from tests import clirun

ROOT = Path(__file__).resolve().parents[1]


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """A bare root so ``auth`` is a sub-command, as in the real CLI."""

    auth.register(app)
    return app


APP = _app()
runner = CliRunner()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_add_list_remove(tmp_path: Path) -> None:
    path = tmp_path / "devices.auth"
    result = runner.invoke(APP, ["auth", "add", "fleet", "--file", str(path)], input="pa ss\n")
    assert result.exit_code == 0, result.output
    assert result.output == f"Added user fleet in {path}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "pa ss" not in path.read_text()
    # The trailing space is part of the password; only the line break is dropped.
    assert access.load_credentials(path).check(basic("fleet", "pa ss")) == "fleet"

    result = runner.invoke(APP, ["auth", "add", "lab", "-f", str(path)], input="x\nignored\n")
    assert result.exit_code == 0
    result = runner.invoke(APP, ["auth", "add", "fleet", "-f", str(path)], input="new\n")
    assert result.output == f"Changed the password of fleet in {path}\n"
    result = runner.invoke(APP, ["auth", "list", "--file", str(path)])
    assert (result.exit_code, result.output) == (0, "fleet\nlab\n")
    result = runner.invoke(APP, ["auth", "remove", "lab", "--file", str(path)])
    assert result.output == f"Removed user lab from {path}\n"
    assert access.list_users(path) == ["fleet"]


@pytest.mark.parametrize(("args", "stdin", "error", "words"), [
    (["add", "fleet"], "", "UsageError", "no password given for fleet"),
    (["add", "fleet"], "\n", "UsageError", "no password given"),
    (["add", "bad:name"], "pw\n", "UsageError", "bad user name"),
    (["remove", "ghost"], "", "AccessError", "cannot read the credentials file"),
    (["list"], "", "AccessError", "cannot read the credentials file"),
])
def test_mistakes_are_one_line_errors(tmp_path: Path, args: list[str], stdin: str, error: str, words: str) -> None:
    path = tmp_path / "devices.auth"
    result = runner.invoke(APP, ["auth", *args, "--file", str(path)], input=stdin)
    # The real CLI's main() turns these AcreleaseErrors into one stderr line and the exit code.
    assert type(result.exception).__name__ == error
    assert words in str(result.exception) and "\n" not in str(result.exception)
    assert not path.exists()


def _wired() -> bool:
    from acrelease.cli import app

    return any(group.name == "auth" for group in app.registered_groups)


@pytest.mark.skipif(not _wired(), reason="acrelease.cli does not register the auth group yet (lead wires it)")
def test_real_command(tmp_path: Path) -> None:
    path = tmp_path / "devices.auth"

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return clirun.run("auth", *args, "--file", str(path), input=stdin, timeout=60)

    added = run("add", "fleet", stdin="s3cret\n")
    assert added.returncode == 0, added.stderr
    assert access.load_credentials(path).check(basic("fleet", "s3cret")) == "fleet"
    assert run("list").stdout == "fleet\n"
    empty = run("add", "other")
    assert empty.returncode == 2 and empty.stderr.startswith("acrelease: error: no password given")
    assert len(empty.stderr.splitlines()) == 1
    path.write_text("broken\n")
    broken = run("list")
    assert broken.returncode == access.AccessError.exit_code
    assert broken.stderr == f"acrelease: error: {path}:1: expected user:$scrypt$...; add users with " \
                            "'acrelease auth add'\n"
