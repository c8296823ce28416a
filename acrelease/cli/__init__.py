"""The ``acrelease`` command: a thin shell over the library.

Commands parse their arguments, call one core function and render its result (rich text, or
JSON with ``--json``). Errors are mapped to exit codes here and nowhere else: an
:class:`~acrelease.errors.AcreleaseError` is a user mistake and prints one line per problem on
stderr; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import typer

from acrelease import __version__
from acrelease.cli import auth, build, fleet, fleetstore, publish, releases, serve, status, template
from acrelease.errors import AcreleaseError, BuildError, ManifestError

app = typer.Typer(
    name="acrelease",
    help="Release, publish and serve OTA firmware for ESP8266/ESP32 devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"acrelease {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Show acrelease's version and exit."),
) -> None:
    """Release, publish and serve OTA firmware for ESP8266/ESP32 devices."""


for group in (releases, build, publish, serve, fleet, fleetstore, status, auth, template):
    group.register(app)


def report(error: AcreleaseError) -> None:
    """Print a user error: one line per problem, then any tool output it carries."""
    lines = error.problems if isinstance(error, ManifestError) else (str(error),)
    for line in lines:
        print(f"acrelease: error: {line}", file=sys.stderr)
    if isinstance(error, BuildError) and error.output_tail:
        print(error.output_tail.rstrip(), file=sys.stderr)


def main() -> None:
    try:
        app()
    except AcreleaseError as error:
        report(error)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        print("acrelease: interrupted", file=sys.stderr)
        sys.exit(130)
