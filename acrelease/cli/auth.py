"""``auth``: manage the device credentials file of ``acrelease serve --auth FILE``.

Passwords are never taken as arguments (they would land in shell history and ``ps``): ``add``
reads one line from stdin, without echo when stdin is a terminal.
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

import typer

from acrelease import access
from acrelease.cli.common import JSON_OPTION, print_json
from acrelease.errors import UsageError

FILE_OPTION = typer.Option(..., "--file", "-f", help="The credentials file (created 0600 by 'add').")
USER_ARGUMENT = typer.Argument(..., help="The user name the devices send with setAuthorization().")

auth_app = typer.Typer(name="auth", help="Manage device credentials (HTTP Basic) for 'serve --auth'.",
                       no_args_is_help=True)


def _read_password(user: str) -> str:
    if sys.stdin.isatty():
        first = getpass.getpass(f"Password for {user}: ")
        if first and getpass.getpass("Again: ") != first:
            raise UsageError("the two passwords differ; nothing changed")
        password = first
    else:
        # One line; only the line break is dropped (spaces may be part of the password).
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise UsageError(f"no password given for {user}: pipe it on stdin, e.g. "
                         f"'printf %s \"$PASS\" | acrelease auth add {user} --file FILE'")
    return password


@auth_app.command("add")
def add(user: str = USER_ARGUMENT, file: Path = FILE_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Add a user, or set a user's password (read from stdin)."""
    problem = access.valid_user(user)
    if problem:
        raise UsageError(f"bad user name {user!r}: {problem}")
    new = access.add_user(file, user, _read_password(user))
    if as_json:
        print_json({"file": str(file), "user": user, "added": new, "changed": True})
        return
    print(f"{'Added user' if new else 'Changed the password of'} {user} in {file}")


@auth_app.command("remove")
def remove(user: str = USER_ARGUMENT, file: Path = FILE_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Remove a user."""
    access.remove_user(file, user)
    if as_json:
        print_json({"file": str(file), "user": user, "removed": True})
        return
    print(f"Removed user {user} from {file}")


@auth_app.command("list")
def list_(file: Path = FILE_OPTION, as_json: bool = JSON_OPTION) -> None:
    """List the user names (one per line)."""
    users = access.list_users(file)
    if as_json:
        print_json({"file": str(file), "users": users})
        return
    for user in users:
        print(user)


def register(app: typer.Typer) -> None:
    app.add_typer(auth_app, name="auth")
