"""Names inside the catalog tree.

A published file lives at ``<project>/<target>/<project>-<target>-<version><suffix>``. The
directory part is exactly the ``path=`` an AutoConnect device asks the catalog for, and the
file name is what it joins onto that path to download (docs/protocol.md A.3), so the names are
kept short enough for AutoConnect's 256-byte JSON pool (F.10).
"""

from __future__ import annotations

import re

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
NAME_RULE = "1-32 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"

FIRMWARE_SUFFIX = {"plain": ".bin", "gzip": ".bin.gz", "signed": ".bin.signed", "gzip+signed": ".bin.gz.signed"}
FILESYSTEM_SUFFIX = ".fs.bin"


RESERVED_PROJECTS = frozenset({"update"})
"""First path segments the server routes itself (``/update/...``); ``_catalog`` cannot be a name anyway."""


def valid_name(name: str) -> bool:
    """Project and target names: safe as one path component and in a URL without escaping."""
    return bool(NAME_RE.fullmatch(name)) and name not in (".", "..")


def valid_project(name: str) -> bool:
    """A project name must also not shadow a server route: ``/update/<file>`` would never download."""
    return valid_name(name) and name.lower() not in RESERVED_PROJECTS


def target_dir(project: str, target: str) -> str:
    return f"{project}/{target}"


def firmware_file(project: str, target: str, version: str, fmt: str) -> str:
    return f"{target_dir(project, target)}/{project}-{target}-{version}{FIRMWARE_SUFFIX.get(fmt, '.bin')}"


def filesystem_file(project: str, target: str, version: str) -> str:
    return f"{target_dir(project, target)}/{project}-{target}-{version}{FILESYSTEM_SUFFIX}"
