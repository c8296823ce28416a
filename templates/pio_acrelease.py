"""PlatformIO extra script: `pio run -t acrelease` builds and records a release with acrelease.

Add to platformio.ini (copy this file next to it, e.g. as scripts/pio_acrelease.py):

    [env]
    extra_scripts = post:scripts/pio_acrelease.py

then `pio run -t acrelease` runs `acrelease build` in the project folder: every target of
releases.toml that names a PlatformIO env is built with the release version compiled in
(patch bump by default) and recorded. Pass options through the environment:
ACRELEASE_BUILD_ARGS="--bump minor --notes 'faster boot'" pio run -t acrelease

acrelease runs `pio` itself (one build per env, with the version define), so this target does
not depend on the current env's build, and it runs once even when `pio run` visits every env.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

from SCons.Script import DefaultEnvironment  # type: ignore[import-untyped]

env = DefaultEnvironment()  # the same construction environment `Import("env")` gives a post: script


def _command() -> list[str]:
    # PlatformIO runs this script with its own Python, which may not have acrelease installed:
    # prefer the `acrelease` command on PATH.
    exe = shutil.which("acrelease")
    return [exe] if exe else [sys.executable, "-m", "acrelease"]


def _run_acrelease(*args: object, **kwargs: object) -> None:
    # `pio run -t acrelease` without -e runs this once per env, each in its own SCons process
    # under the same `pio`: a marker named after that pio process makes the release happen once.
    workspace = env.subst("$PROJECT_WORKSPACE_DIR")
    marker = os.path.join(workspace, f"acrelease-{os.getppid()}.started")
    if os.path.exists(marker):
        print("acrelease: already run by this `pio run`")
        return
    os.makedirs(workspace, exist_ok=True)
    for name in os.listdir(workspace):  # markers of earlier `pio run`s
        if name.startswith("acrelease-") and name.endswith(".started"):
            os.remove(os.path.join(workspace, name))
    open(marker, "w").close()
    extra = shlex.split(os.environ.get("ACRELEASE_BUILD_ARGS", ""))
    command = [*_command(), "build", *extra]
    print("acrelease: " + " ".join(shlex.quote(part) for part in command))
    result = subprocess.run(command, cwd=env.subst("$PROJECT_DIR"), check=False)
    if result.returncode != 0:
        env.Exit(result.returncode)


env.AddCustomTarget(
    name="acrelease",
    dependencies=None,
    actions=[_run_acrelease],
    title="acrelease build",
    description="Build every env with the release version compiled in and record the release",
    always_build=True,
)
