"""The wheel ships every package: pyproject.toml lists them by hand (templates/ is mapped in)."""

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {".".join(init.parent.relative_to(REPO).parts) for init in (REPO / "acrelease").rglob("__init__.py")}
    assert on_disk | {"acrelease.templates"} == listed
    assert config["package-dir"]["acrelease.templates"] == "templates"
