"""``template``: print the files acrelease offers users (sketch snippets, PlatformIO hook, service unit)."""

from __future__ import annotations

from importlib.resources import files

import typer

from acrelease import read_template
from acrelease.cli.common import JSON_OPTION, print_json
from acrelease.errors import UsageError


def _names() -> list[str]:
    return sorted(entry.name for entry in files("acrelease.templates").iterdir()
                  if entry.is_file() and not entry.name.startswith(("_", ".")))


def template(
    name: str | None = typer.Argument(None, help="The template to print (omit to list them)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List the templates, or print one: `acrelease template ota_esp8266.ino > src/ota.ino`."""
    names = _names()
    if name is None:
        if as_json:
            print_json({"templates": names})
            return
        for entry in names:
            print(entry)
        return
    if name not in names:
        raise UsageError(f'no template "{name}" (available: {", ".join(names)}); '
                         "run `acrelease template` to list them")
    if as_json:
        print_json({"name": name, "text": read_template(name)})
        return
    print(read_template(name), end="")


def register(app: typer.Typer) -> None:
    app.command()(template)
