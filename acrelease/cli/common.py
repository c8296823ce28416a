"""Options and rendering shared by the command modules."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from acrelease.manifest import DEFAULT_CHANNEL, MANIFEST_NAME

console = Console(highlight=False)

MANIFEST_OPTION = typer.Option(
    Path(MANIFEST_NAME), "--manifest", "-m", envvar="ACRELEASE_MANIFEST",
    help="The release manifest.", show_default=True,
)
JSON_OPTION = typer.Option(False, "--json", help="Print the result as JSON.")
CATALOG_HELP = "The catalog folder (env ACRELEASE_CATALOG)."
CHANNEL_HELP = f"Release channel (default: {DEFAULT_CHANNEL}; a version already recorded keeps its own)."


def resolve_catalog(flag: Path | None) -> Path | None:
    """Where the catalog is: the flag, then ``ACRELEASE_CATALOG``; ``None`` if neither says."""
    if flag is not None:
        return flag
    env = os.environ.get("ACRELEASE_CATALOG")
    return Path(env) if env else None


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))
