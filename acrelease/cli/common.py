"""Options and rendering shared by the command modules."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from acrelease.manifest import DEFAULT_CHANNEL, MANIFEST_NAME

# Off a terminal there is no width to fit: a line as long as this is never cut or wrapped.
UNLIMITED_WIDTH = 1 << 16


def make_console(*, stderr: bool = False) -> Console:
    """The console commands print through.

    On a terminal: rich as usual (colour, tables fitted to the window). Anywhere else (a pipe,
    a file, a test) nothing may depend on a window that is not there: tables are as wide as
    their content instead of cut at 80 columns with ``…``, and text is never wrapped mid-sentence.
    Emoji codes (``:x:`` in release notes) and highlighting never rewrite what is printed.
    """
    probe = Console(stderr=stderr)
    if probe.is_terminal:
        return Console(stderr=stderr, highlight=False, emoji=False)
    return Console(stderr=stderr, highlight=False, emoji=False, width=UNLIMITED_WIDTH, soft_wrap=True)


console = make_console()


class _Output:
    """What this run of the command was asked for; read by ``acrelease.cli.main`` to render errors."""

    json = False


def _remember_json(value: bool) -> bool:
    if value:
        _Output.json = True
    return value


def reset_output() -> None:
    _Output.json = False


def json_output() -> bool:
    """True once a command's ``--json`` option was parsed: its errors go to stderr as JSON too."""
    return _Output.json


MANIFEST_OPTION = typer.Option(
    Path(MANIFEST_NAME), "--manifest", "-m", envvar="ACRELEASE_MANIFEST",
    help="The release manifest.", show_default=True,
)
JSON_OPTION = typer.Option(False, "--json", callback=_remember_json,
                           help="Print the result as JSON on stdout (an error: one JSON object on stderr).")
CATALOG_HELP = "The catalog folder (env ACRELEASE_CATALOG)."
FLEET_HELP = ("The fleet store: a SQLite file or postgresql://USER:PASSWORD@HOST/DB (env ACRELEASE_FLEET; "
              "default <catalog>/.acrelease/fleet.sqlite3).")
CATALOG_OPTION = typer.Option(None, "--catalog", "-d", help=CATALOG_HELP)
FLEET_OPTION = typer.Option(None, "--fleet", envvar="ACRELEASE_FLEET", help=FLEET_HELP)
CHANNEL_HELP = f"Release channel (default: {DEFAULT_CHANNEL}; a version already recorded keeps its own)."

# The kind of an error by exit code (README, "Commands"), named in JSON errors for scripts.
ERROR_KINDS = {1: "error", 2: "usage", 3: "manifest", 4: "image", 5: "version", 6: "catalog", 7: "build",
               8: "server", 9: "access", 130: "interrupted"}


def error_json(problems: Sequence[str], exit_code: int, output_tail: str = "") -> str:
    """An error as one line of JSON: ``{"error", "problems", "kind", "exit_code"[, "output_tail"]}``.

    ``error`` is the first problem (what the text form prints first), ``problems`` all of them
    (a broken manifest has several), ``kind`` names the exit code, ``output_tail`` is the end of
    a build tool's output when a build failed.
    """
    value: dict[str, Any] = {"error": problems[0] if problems else "", "problems": list(problems),
                             "kind": ERROR_KINDS.get(exit_code, "error"), "exit_code": exit_code}
    if output_tail:
        value["output_tail"] = output_tail
    return json.dumps(value, ensure_ascii=False)


def resolve_catalog(flag: Path | None) -> Path | None:
    """Where the catalog is: the flag, then ``ACRELEASE_CATALOG``; ``None`` if neither says."""
    if flag is not None:
        return flag
    env = os.environ.get("ACRELEASE_CATALOG")
    return Path(env) if env else None


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))
