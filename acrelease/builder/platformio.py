"""PlatformIO: read a project's envs, build one env with the version stamped in, collect outputs.

Everything goes through the real ``pio`` command (never PlatformIO's Python internals, which
are not an API): ``pio project config --json-output`` to read ``platformio.ini`` as PlatformIO
resolves it (``extends``, ``${sysenv.X}``), and ``pio run`` to build.

The version reaches the firmware as a C string define passed in ``PLATFORMIO_BUILD_FLAGS``, so
``platformio.ini`` needs no edit; PlatformIO appends that variable to each env's build_flags.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acrelease import chips
from acrelease.builder._process import run_process
from acrelease.builder._registry import RegistryWatcher, registry_reachable
from acrelease.chips import Chip
from acrelease.errors import BuildError
from acrelease.manifest import Target

PIO_MISSING_HINT = "install it with `pip install platformio` (or `pip install 'acrelease[platformio]'`)"
CONFIG_TIMEOUT = 120.0
BUILD_TIMEOUT = 1800.0  # a first build downloads toolchains; the registry watcher cuts dead ones short

# Platform name -> chip, where the platform alone decides it. espressif32 spans many chips:
# its boards' mcu decides (see env_chip).
PLATFORM_CHIPS: Mapping[str, str] = {"espressif8266": "esp8266"}
FILESYSTEM_IMAGES = ("littlefs.bin", "spiffs.bin", "fatfs.bin", "fat.bin")
FIRMWARE_NAME = "firmware.bin"

Options = Mapping[str, str | tuple[str, ...]]
LineCallback = Callable[[str], None]


@dataclass(frozen=True)
class PioEnv:
    name: str
    options: Options

    def option(self, key: str) -> str | None:
        value = self.options.get(key)
        if isinstance(value, tuple):
            return "\n".join(value)
        return value

    @property
    def platform(self) -> str | None:
        return self.option("platform")

    @property
    def board(self) -> str | None:
        return self.option("board")


@dataclass(frozen=True)
class PioProject:
    """``platformio.ini`` as PlatformIO resolved it."""

    path: Path
    settings: Options
    """The ``[platformio]`` section."""
    envs: tuple[PioEnv, ...]

    def env(self, name: str) -> PioEnv | None:
        return next((e for e in self.envs if e.name == name), None)

    def dir_option(self, key: str, default: Path) -> Path:
        value = self.settings.get(key)
        if isinstance(value, str) and value:
            return _under(self.path, value)
        return default

    def core_dir(self, environ: Mapping[str, str]) -> Path:
        fallback = environ.get("PLATFORMIO_CORE_DIR") or "~/.platformio"
        return self.dir_option("core_dir", Path(fallback).expanduser())

    def data_dir(self) -> Path:
        return self.dir_option("data_dir", self.path / "data")

    def build_dir(self, environ: Mapping[str, str]) -> Path:
        """Where ``pio run`` writes, in PlatformIO's own order (docs/testing.md section 1):
        ``PLATFORMIO_BUILD_DIR``, ``[platformio] build_dir``, workspace dir + ``/build``
        (``workspace_dir`` or ``PLATFORMIO_WORKSPACE_DIR``), then ``<project>/.pio/build``."""
        if environ.get("PLATFORMIO_BUILD_DIR"):
            return _under(self.path, environ["PLATFORMIO_BUILD_DIR"])
        build_dir = self.settings.get("build_dir")
        if isinstance(build_dir, str) and build_dir:
            return _under(self.path, build_dir)
        workspace = environ.get("PLATFORMIO_WORKSPACE_DIR") or self.settings.get("workspace_dir")
        if isinstance(workspace, str) and workspace:
            return _under(self.path, workspace) / "build"
        return self.path / ".pio" / "build"


def _under(project: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else project / path


PHASES: tuple[tuple[str, str], ...] = (
    ("Processing ", "configuring"),
    ("Tool Manager:", "installing tools"),
    ("Platform Manager:", "installing the platform"),
    ("Library Manager:", "installing libraries"),
    ("Compiling ", "compiling"),
    ("Archiving ", "archiving"),
    ("Linking ", "linking"),
    ("Building FS image", "building the filesystem image"),
    ("Building ", "building the image"),
    ("Creating BIN file", "building the image"),
    ("Checking size", "checking size"),
)
"""What a line of ``pio run`` output starts with -> the phase it means (PlatformIO's own wording;
``Building FS image`` before ``Building``: the first match wins)."""


def phase_of(line: str) -> str | None:
    """The build phase a line of PlatformIO output announces, or ``None`` for any other line."""
    for prefix, phase in PHASES:
        if line.startswith(prefix):
            return phase
    return None


def pio_command(environ: Mapping[str, str] | None = None) -> list[str]:
    """How to run PlatformIO: ``pio`` on the ``PATH`` of ``environ`` (default: this process's),
    else the ``pio`` installed beside the Python running acrelease (``.venv/bin/acrelease build``
    from a venv that is not activated); ``["pio"]`` when neither exists, so that the missing-tool
    error names it."""
    path = (os.environ if environ is None else environ).get("PATH", os.defpath)
    found = shutil.which("pio", path=path)
    if found:
        return [found]
    beside = Path(sys.executable).parent / "pio"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    return ["pio"]


def pio_environ(base: Mapping[str, str] | None = None) -> dict[str, str]:
    environ = dict(os.environ if base is None else base)
    environ.setdefault("PYTHONUNBUFFERED", "1")  # stream pio's output as it happens
    return environ


def _run_pio(args: list[str], project_dir: Path, environ: Mapping[str, str], timeout: float,
             on_line: LineCallback | None) -> tuple[int, str]:
    watcher = RegistryWatcher(probe=lambda: registry_reachable(environ=environ))
    result = run_process([*pio_command(environ), *args], cwd=project_dir, env=environ, timeout=timeout, on_line=on_line,
                         watcher=watcher, missing_hint=PIO_MISSING_HINT)
    return result.returncode, result.tail_text


def _value(raw: Any) -> str | tuple[str, ...]:
    # Multi-line options (build_flags, lib_deps) come as lists.
    return tuple(str(x) for x in raw) if isinstance(raw, list) else str(raw)


def parse_project_config(project_dir: Path, text: str) -> PioProject:
    """Parse the JSON of ``pio project config --json-output``: ``[[section, [[key, value]...]]...]``."""
    try:
        sections: Any = json.loads(text)
        settings: dict[str, str | tuple[str, ...]] = {}
        envs: list[PioEnv] = []
        for section, items in sections:
            options = {str(k): _value(v) for k, v in items}
            if section == "platformio":
                settings = options
            elif section.startswith("env:"):
                envs.append(PioEnv(section[4:], options))
    except (ValueError, TypeError) as exc:
        raise BuildError(f"{project_dir}: cannot read `pio project config` output ({exc})",
                         text[-2000:]) from None
    return PioProject(project_dir, settings, tuple(envs))


def read_project(project_dir: Path, *, environ: Mapping[str, str] | None = None) -> PioProject:
    """Read ``platformio.ini`` through ``pio project config``; BuildError if it is not a project."""
    project_dir = project_dir.resolve()
    if not (project_dir / "platformio.ini").is_file():
        raise BuildError(f"{project_dir}: no platformio.ini here; run acrelease in a PlatformIO project")
    env = pio_environ(environ)
    code, tail = _run_pio(["project", "config", "--json-output", "-d", str(project_dir)], project_dir, env,
                          CONFIG_TIMEOUT, None)
    if code != 0:
        raise BuildError(f"{project_dir / 'platformio.ini'}: PlatformIO cannot read it (pio project config "
                         f"exited {code})", tail)
    # The JSON is one line; anything else pio printed (banners) precedes it.
    json_line = next((ln for ln in reversed(tail.splitlines()) if ln.startswith("[")), "")
    return parse_project_config(project_dir, json_line)


def _board_manifest(project: PioProject, env: PioEnv, environ: Mapping[str, str]) -> dict[str, Any] | None:
    """The board's JSON, from the places PlatformIO looks: the project's boards_dir, the core's
    boards folder, then the platform's own boards (a ``file://`` platform, or an installed one)."""
    board = env.board
    if not board:
        return None
    core = project.core_dir(environ)
    folders = [project.dir_option("boards_dir", project.path / "boards"), core / "boards"]
    platform = env.platform or ""
    if platform.startswith("file://"):
        folders.append(Path(platform[len("file://"):]) / "boards")
    elif platform and "://" not in platform:
        folders.append(core / "platforms" / platform_name(platform) / "boards")
    for folder in folders:
        try:
            loaded: Any = json.loads((folder / f"{board}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(loaded, dict):
            return loaded
    return None


def platform_name(spec: str) -> str:
    """``platformio/espressif32 @ ^6.4`` -> ``espressif32``; URLs -> their last path part."""
    name = spec.split("@", 1)[0].strip().rstrip("/")
    name = name.rsplit("/", 1)[-1]
    return name.removesuffix(".git").removeprefix("platform-")


def env_chip(project: PioProject, env: PioEnv, environ: Mapping[str, str] | None = None) -> Chip | None:
    """The chip family an env builds for, or ``None`` when ``platformio.ini`` does not tell
    (then the first image built decides). Order: ``board_build.mcu``, the board's ``build.mcu``,
    then the platform (``espressif8266`` is always esp8266)."""
    mcu = env.option("board_build.mcu")
    if mcu is None:
        board = _board_manifest(project, env, pio_environ(environ))
        build = board.get("build") if board else None
        value = build.get("mcu") if isinstance(build, dict) else None
        mcu = value if isinstance(value, str) else None
    if mcu:
        chip = chips.lookup(mcu)
        if chip is not None:
            return chip
    key = PLATFORM_CHIPS.get(platform_name(env.platform or ""))
    return chips.lookup(key) if key else None


def read_project_targets(project_dir: Path, *, environ: Mapping[str, str] | None = None) -> list[Target]:
    """Targets for ``acrelease init --platformio``: one per env, named after it, with its chip
    (when ``platformio.ini`` tells), board id, and a filesystem image when a data folder exists."""
    project = read_project(project_dir, environ=environ)
    if not project.envs:
        raise BuildError(f"{project.path / 'platformio.ini'}: defines no [env:NAME] section to release")
    has_data = project.data_dir().is_dir()
    return [Target(env.name, env_chip(project, env, environ), env.name, env.board, has_data)
            for env in project.envs]


def version_flag(define: str, version: str) -> str:
    """``-DFW_VERSION=\\"1.2.3\\"``: one of the spellings that survive PlatformIO's flag parsing
    and SCons' shell quoting as a C string (``-D FW_VERSION="1.2.3"`` silently loses the quotes)."""
    if not define.isidentifier():
        raise BuildError(f'version define "{define}" is not a C identifier; fix project.version_define')
    if any(c in version for c in "\"'\\ $`"):
        raise BuildError(f'version "{version}" contains characters that cannot be passed as a build flag')
    return f'-D{define}=\\"{version}\\"'


@dataclass(frozen=True)
class EnvOutputs:
    env: str
    firmware: Path
    filesystem: Path | None
    elapsed: float


def build_env(project: PioProject, env: str, *, version: str, define: str, filesystem: bool, staging: Path,
              environ: Mapping[str, str] | None = None, on_line: LineCallback | None = None,
              timeout: float = BUILD_TIMEOUT) -> EnvOutputs:
    """Build ``env`` with the version define, then its filesystem image, and copy both into
    ``staging/<env>/`` straight away: the next env's build (other flags) wipes the build dir.

    Raises BuildError naming the env, with the tail of PlatformIO's output.
    """
    started = time.monotonic()
    base = pio_environ(environ)
    # Appended to any flags the user already passes this way; the ini's build_flags stay as they are.
    user_flags = base.get("PLATFORMIO_BUILD_FLAGS", "")
    flags = " ".join(part for part in (user_flags, version_flag(define, version)) if part)
    run_env = {**base, "PLATFORMIO_BUILD_FLAGS": flags}
    out_dir = staging / env
    out_dir.mkdir(parents=True, exist_ok=True)

    run = ["run", "-d", str(project.path), "-e", env]
    code, tail = _run_pio(run, project.path, run_env, timeout, on_line)
    if code != 0:
        raise BuildError(f"PlatformIO build of env '{env}' failed (pio run exited {code}); its output ends:",
                         tail)
    env_build = project.build_dir(run_env) / env
    firmware = _collect(env_build / FIRMWARE_NAME, out_dir, env, tail, "firmware image")

    fs_image: Path | None = None
    if filesystem:
        # Identical environment: other flags would make PlatformIO wipe the build dir again.
        code, tail = _run_pio([*run, "-t", "buildfs"], project.path, run_env, timeout, on_line)
        if code != 0:
            raise BuildError(f"PlatformIO filesystem build (-t buildfs) of env '{env}' failed "
                             f"(exit {code}); its output ends:", tail)
        found = next((env_build / n for n in FILESYSTEM_IMAGES if (env_build / n).is_file()), None)
        if found is None:
            raise BuildError(f"env '{env}': `pio run -t buildfs` wrote no {'/'.join(FILESYSTEM_IMAGES)} in "
                             f"{env_build}", tail)
        fs_image = _collect(found, out_dir, env, tail, "filesystem image")
    return EnvOutputs(env, firmware, fs_image, time.monotonic() - started)


def _collect(source: Path, out_dir: Path, env: str, tail: str, what: str) -> Path:
    if not source.is_file():
        raise BuildError(f"env '{env}': the build succeeded but wrote no {what} at {source}; if this project "
                         "moves its build dir, set PLATFORMIO_BUILD_DIR or [platformio] build_dir", tail)
    dest = out_dir / source.name
    shutil.copyfile(source, dest)
    return dest
