"""The ``acrelease`` command of the checkout under test, run as a user runs it.

Every test that drives the CLI goes through here: ``python -m acrelease`` with this checkout first
on ``PYTHONPATH``, so a test never runs whatever ``acrelease`` happens to be on ``PATH`` (a fresh
clone has none) nor another installed copy of the package.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def command(*args: str) -> list[str]:
    """The argv of ``acrelease ARGS`` for this checkout."""
    return [sys.executable, "-m", "acrelease", *args]


def environment(extra: Mapping[str, str] | None = None, *, inherit: bool = True) -> dict[str, str]:
    """The environment the CLI runs in: this checkout first on ``PYTHONPATH``."""
    base = dict(os.environ) if inherit else {"PATH": "/usr/bin:/bin"}
    return {**base, **(extra or {}), "PYTHONPATH": str(ROOT)}


def run(*args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None, inherit: bool = True,
        timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``acrelease ARGS`` to completion, output captured as text; never raises on a non-zero exit."""
    return subprocess.run(command(*args), cwd=cwd, env=environment(env, inherit=inherit), capture_output=True,
                          text=True, timeout=timeout, check=False, **kwargs)


def popen(*args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None,
          **kwargs: Any) -> subprocess.Popen[Any]:
    """``acrelease ARGS`` started in the background (a server, a publisher under load)."""
    return subprocess.Popen(command(*args), cwd=cwd if cwd is not None else ROOT, env=environment(env), **kwargs)
