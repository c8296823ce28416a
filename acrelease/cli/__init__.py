"""The ``acrelease`` command: a thin shell over the library.

Commands parse their arguments, call one core function and render its result (rich text, or
JSON with ``--json``). Errors are mapped to exit codes here and nowhere else, in :func:`main`:

* an :class:`~acrelease.errors.AcreleaseError` is a user mistake: one line per problem on
  stderr, ``acrelease: error: <what>``, and the class's exit code;
* a usage error found while parsing the command line (unknown option, a value out of range,
  a missing argument) is the same single line and exit 2, never Typer's framed box;
* with ``--json`` on the command line, either is one JSON object on one line of stderr instead
  (:func:`acrelease.cli.common.error_json`), with the same exit code;
* any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence

import typer
import typer.main

from acrelease import __version__
from acrelease.cli import auth, build, common, fleet, fleetstore, importing, publish, releases, serve, status, template
from acrelease.errors import AcreleaseError, BuildError, ManifestError

app = typer.Typer(
    name="acrelease",
    help="Release, publish and serve OTA firmware for ESP8266/ESP32 devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

PROG = "acrelease"
USAGE_EXIT = 2
INTERRUPTED_EXIT = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C


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


for group in (releases, importing, build, publish, serve, fleet, fleetstore, status, auth, template):
    group.register(app)


def _emit(lines: Sequence[str], *, code: int, as_json: bool, output_tail: str = "") -> None:
    """Print an error: ``acrelease: error: LINE`` per line, or one JSON object under ``--json``."""
    if as_json:
        print(common.error_json(lines, code, output_tail), file=sys.stderr)
        return
    for line in lines:
        print(f"{PROG}: error: {line}", file=sys.stderr)
    if output_tail:
        print(output_tail.rstrip(), file=sys.stderr)


def report(error: AcreleaseError, *, as_json: bool = False) -> None:
    """Print a user error: one line per problem, then any tool output it carries."""
    lines = error.problems if isinstance(error, ManifestError) else (str(error),)
    tail = error.output_tail if isinstance(error, BuildError) else ""
    _emit(lines, code=error.exit_code, as_json=as_json, output_tail=tail)


def _path_in(command: object, args: Sequence[str]) -> str:
    """``acrelease auth list``: the (sub)command ``args`` name, read off the command tree."""
    path = [PROG]
    for token in args:
        commands = getattr(command, "commands", None)
        if not commands:
            break  # a command, not a group: the rest are its arguments
        if token.startswith("-"):
            continue  # an option of the group (--version) before the command's name
        if token not in commands:
            break
        command = commands[token]
        path.append(token)
    return " ".join(path)


def usage_line(error: typer.TyperException, command: object, args: Sequence[str]) -> str:
    """A command-line mistake as one line: ``serve: invalid value for ...; see 'acrelease serve --help'``.

    Click's messages can span lines (a list of choices, a suggestion); they are joined, since a
    script reads the first line of stderr and a person reads one sentence.
    """
    message = " ".join(error.format_message().split()).rstrip(".")
    if len(message) > 1 and message[1].islower():  # "No such option" -> "no such option"; keep "VERSION"
        message = message[0].lower() + message[1:]
    context = getattr(error, "ctx", None)
    # Some parser errors carry no context ("option '--catalog' requires an argument"): read the path off args.
    path = context.command_path if context is not None else _path_in(command, args)
    where = path.removeprefix(PROG).strip()  # "serve", "auth add"; nothing for acrelease itself
    return f"{where + ': ' if where else ''}{message}; see '{path} --help'"


def _commands(command: object) -> Iterator[object]:
    yield command
    for sub in getattr(command, "commands", {}).values():
        yield from _commands(sub)


def _plain_help(command: object) -> None:
    """Help as plain text, not rich's boxes drawn for an 80-column window, when stdout is not a
    terminal (``acrelease serve --help | grep tls``, a man-page generator)."""
    for each in _commands(command):
        if hasattr(each, "rich_markup_mode"):
            each.rich_markup_mode = None


def _wants_json(args: Sequence[str]) -> bool:
    """Whether an error is to be JSON: the command parsed its ``--json``, or, for a mistake found
    before that option was reached, ``--json`` is among the options (not after ``--``)."""
    options = args[: args.index("--")] if "--" in args else args
    return common.json_output() or "--json" in options


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``acrelease ARGS`` and exit with its code; every way out of a command is mapped here."""
    args = list(sys.argv[1:] if argv is None else argv)
    common.reset_output()
    command = typer.main.get_command(app)
    if not common.console.is_terminal:
        _plain_help(command)
    code = 0
    try:
        with command.make_context(PROG, args) as context:
            command.invoke(context)
    except typer.Exit as done:  # --help, --version, a command's own exit code (inspect: not servable)
        code = done.exit_code
    except typer.TyperException as error:  # Click's usage errors, raised while parsing
        code = getattr(error, "exit_code", USAGE_EXIT) or USAGE_EXIT
        if type(error).__name__ == "NoArgsIsHelpError":  # `acrelease` / `acrelease auth` alone: the help
            print(error.format_message(), file=sys.stderr)
        else:
            _emit([usage_line(error, command, args)], code=code, as_json=_wants_json(args))
    except AcreleaseError as error:
        report(error, as_json=_wants_json(args))
        code = error.exit_code
    except (KeyboardInterrupt, typer.Abort):
        _emit(["interrupted"], code=INTERRUPTED_EXIT, as_json=common.json_output())
        code = INTERRUPTED_EXIT
    except EOFError:  # a prompt (auth add on a terminal) whose input ended
        _emit(["stdin ended before the input was complete; nothing changed"], code=USAGE_EXIT,
              as_json=common.json_output())
        code = USAGE_EXIT
    except BrokenPipeError:  # `acrelease list | head`: the reader left; say nothing more
        # Python flushes stdout again at exit; point it at /dev/null so that flush cannot fail
        # (the recipe of the Python docs, "Note on SIGPIPE" in the signal module).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    sys.exit(code)
