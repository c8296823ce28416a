"""``template``: print the files acrelease offers users (sketch snippets, PlatformIO hook, service unit,
nginx configuration); ``nginx.conf`` can be printed with its servers, port and catalog filled in."""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import PurePosixPath

import typer

from acrelease import read_template
from acrelease.cli.common import JSON_OPTION, print_json
from acrelease.errors import UsageError

NGINX = "nginx.conf"
# The three lines of templates/nginx.conf that name this deployment (marked EDIT there).
_UPSTREAM_LINE = re.compile(r"^        server \S+ max_fails=1 fail_timeout=5s;\n", re.M)
_LISTEN_LINE = re.compile(r"^(        listen )\S+;", re.M)
_ALIAS_LINE = re.compile(r"^(            alias )\S+;", re.M)
_HOST_PORT = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$")
# What an nginx argument may hold unquoted: no whitespace, ';', braces, quotes, '$' or '#'.
_NGINX_UNSAFE = re.compile(r"[\s;{}'\"$#\\]")


def _names() -> list[str]:
    return sorted(entry.name for entry in files("acrelease.templates").iterdir()
                  if entry.is_file() and not entry.name.startswith(("_", ".")))


def template(
    name: str | None = typer.Argument(None, help="The template to print (omit to list them)."),
    upstream: list[str] = typer.Option([], "--upstream", metavar="HOST:PORT",
                                       help="nginx.conf: an acrelease server (repeatable); replaces the examples."),
    listen: str | None = typer.Option(None, "--listen", metavar="[ADDR:]PORT",
                                      help="nginx.conf: where devices connect (the port in their update URL)."),
    catalog: str | None = typer.Option(None, "--catalog", metavar="DIR",
                                       help="nginx.conf: the catalog folder as the nginx host sees it (absolute)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List the templates, or print one: `acrelease template ota_esp8266.ino > src/ota.ino`,
    `acrelease template nginx.conf --upstream 10.0.0.2:8000 --upstream 10.0.0.3:8000 --catalog /srv/ota`."""
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
    text = read_template(name)
    if name == NGINX:
        text = nginx_conf(text, upstream, listen, catalog)
    elif upstream or listen is not None or catalog is not None:
        raise UsageError(f"--upstream, --listen and --catalog fill in {NGINX} only, not {name}")
    if as_json:
        print_json({"name": name, "text": text})
        return
    print(text, end="")


def nginx_conf(text: str, upstreams: list[str], listen: str | None, catalog: str | None) -> str:
    """templates/nginx.conf with what was given filled in; the rest keeps its examples."""
    if upstreams:
        servers = "".join(f"        server {_host_port('--upstream', u, 'HOST:PORT')} max_fails=1 fail_timeout=5s;\n"
                          for u in upstreams)
        first = _UPSTREAM_LINE.search(text)
        if first is None:
            raise AssertionError(f"templates/{NGINX} has no upstream server line")  # a packaging mistake
        text = text[:first.start()] + servers + _UPSTREAM_LINE.sub("", text[first.start():])
    if listen is not None:
        port_only = listen.isdigit() and 0 < int(listen) < 65536
        where = listen if port_only else _host_port("--listen", listen, "[ADDR:]PORT")
        text = _replace(_LISTEN_LINE, text, rf"\g<1>{where};")
    if catalog is not None:
        text = _replace(_ALIAS_LINE, text, rf"\g<1>{_folder(catalog)};")
    return text


def _replace(line: re.Pattern[str], text: str, new: str) -> str:
    done, count = line.subn(new, text)
    if count == 0:  # a packaging mistake, not the user's: the shipped template lost its line
        raise AssertionError(f"templates/{NGINX} has no line matching {line.pattern!r}")
    return done


def _host_port(flag: str, value: str, expected: str) -> str:
    found = _HOST_PORT.match(value)
    if found is None or not 0 < int(found.group(1)) < 65536:
        raise UsageError(f'{flag} "{value}": expected {expected}, e.g. 10.0.0.2:8000 or [fd00::2]:8000')
    return value


def _folder(value: str) -> str:
    path = PurePosixPath(value)
    if not path.is_absolute() or _NGINX_UNSAFE.search(value):
        raise UsageError(f'--catalog "{value}": expected an absolute folder without spaces, quotes, ";", "{{", '
                         '"}", "$" or "#", e.g. /srv/ota (the folder `acrelease serve --catalog` serves, as the '
                         "nginx host sees it)")
    return f"{str(path).rstrip('/')}/"


def register(app: typer.Typer) -> None:
    app.command()(template)
