"""Files acrelease writes for users (manifest skeleton, sketch snippets, service units).

Shipped inside the package as ``acrelease.templates``; read them with :func:`read`."""

from importlib.resources import files


def read(name: str) -> str:
    return (files(__name__) / name).read_text(encoding="utf-8")
