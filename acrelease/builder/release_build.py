"""``acrelease build`` and ``acrelease collect``: from sources or IDE exports to a recorded release.

Both end in exactly one call of :func:`acrelease.release.add_release`, the code path of
``acrelease add``: it re-validates every image and is the only writer of ``dist/`` and
``releases.toml``. What this module adds is everything *before* that call: deciding the
version, building each env with it compiled in, checking each image as soon as it exists (so
a bad env stops the run before the next one builds), and staging the outputs in a temp dir.
A failure anywhere leaves ``releases.toml`` and ``dist/`` as they were.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import semver

from acrelease import manifest as manifest_mod
from acrelease.builder import arduino, platformio
from acrelease.errors import BuildError, ImageError, UsageError, VersionError
from acrelease.image import check_ota_image, contains_version, inspect_image
from acrelease.manifest import Manifest, Target
from acrelease.release import AddResult, ArtifactInput, add_release, check_release_terms
from acrelease.versioning import Bump, next_version, parse_release_version


@dataclass(frozen=True)
class BuildEvent:
    """Progress of a build, for the CLI to render. ``kind``: ``start`` (an env begins),
    ``output`` (one line of PlatformIO output in ``line``), ``done`` (an env's outputs are
    collected and checked), ``record`` (the release is being recorded)."""

    kind: str
    target: str = ""
    env: str = ""
    elapsed: float = 0.0
    line: str = ""
    step: int = 0
    """Which env of the build this is, from 1 (with ``steps``, how many there are)."""
    steps: int = 0


Progress = Callable[[BuildEvent], None]


@dataclass(frozen=True)
class PlannedEnv:
    target: Target
    env: str


@dataclass(frozen=True)
class BuiltTarget:
    target: str
    env: str
    firmware_size: int
    firmware_format: str
    chip: str
    version_found: bool
    filesystem: bool
    elapsed: float


@dataclass(frozen=True)
class BuildOutcome:
    version: semver.Version
    planned: tuple[PlannedEnv, ...]
    dry_run: bool
    built: tuple[BuiltTarget, ...] = ()
    added: AddResult | None = None
    flag: str = ""
    """The build flag that carries the version (for display)."""


def decide_version(manifest: Manifest, explicit: str | None, bump: Bump | None) -> semver.Version:
    """The release's version: ``explicit``, or ``bump`` (default patch) from the newest release
    (0.1.0 for the first). An already recorded version is refused here, before any build."""
    if explicit is not None and bump is not None:
        raise UsageError("give either --version or --bump, not both")
    versions = manifest.versions()
    version = parse_release_version(explicit) if explicit is not None else next_version(versions, bump)
    if version in manifest.versions():
        newest = max(manifest.versions())
        raise VersionError(f"{manifest.path}: version {version} is already released (newest: {newest}); "
                           "releases are immutable: pick a new version or use --bump")
    return version


def select_targets(manifest: Manifest, names: Sequence[str]) -> tuple[PlannedEnv, ...]:
    """The targets to build: those named, else every target of the manifest. A release is built
    for all its targets or for the subset the user names, so a target that cannot be built (no
    PlatformIO env) is refused here, by name, rather than left out of the release in silence."""
    if names:
        planned = []
        for name in names:
            target = manifest.target(name)
            if target is None:
                known = ", ".join(t.name for t in manifest.targets) or "none"
                raise UsageError(f"--target {name}: no such target in {manifest.path} (known: {known})")
            if not target.env:
                raise UsageError(f"--target {name}: this target names no PlatformIO env (set env = \"...\" "
                                 f"in {manifest.path}), or record its image with `acrelease add`/`collect`")
            planned.append(PlannedEnv(target, target.env))
        return tuple(planned)
    planned = [PlannedEnv(t, t.env) for t in manifest.targets if t.env]
    if not planned:
        raise UsageError(f"{manifest.path}: no target names a PlatformIO env (env = \"...\"); "
                         "run `acrelease init --platformio` in the project, or use `acrelease collect`")
    skipped = [t.name for t in manifest.targets if not t.env]
    if skipped:
        others = " ".join(f"--target {p.target.name}" for p in planned)
        raise UsageError(f"{manifest.path}: target {', '.join(skipped)} names no PlatformIO env, so the release "
                         f"would lack it; give it one (`acrelease target set {skipped[0]} --env ENV`) or build "
                         f"only the others ({others}); nothing was built")
    return tuple(planned)


def _check_output(plan: PlannedEnv, outputs: platformio.EnvOutputs, version: semver.Version,
                  define: str, allow_missing_version: bool) -> BuiltTarget:
    """Inspect one env's firmware right after its build, with the env named in every error."""
    where = f"env '{plan.env}' (target '{plan.target.name}'): {outputs.firmware.name}"
    data = outputs.firmware.read_bytes()
    try:
        info = inspect_image(data)
    except ImageError as exc:  # its text is about the bytes; say which env made them
        raise ImageError(f"{where}: {exc}") from None
    check_ota_image(info, plan.target.chip, where=where)
    found = contains_version(data, str(version))
    if not found and not allow_missing_version:
        raise BuildError(
            f"{where}: the firmware does not contain the version string \"{version}\" although it was "
            f"built with -D{define}; the sketch never uses {define}, so devices would keep reporting an old "
            f"version and download this release forever. Use it in the update call, e.g. "
            f"ESPhttpUpdate.update(client, url, {define}); (ESP32: httpUpdate.update(client, url, "
            f"{define});) or pass --allow-missing-version")
    return BuiltTarget(plan.target.name, plan.env, len(data), info.format, info.chip.key, found,
                       outputs.filesystem is not None, outputs.elapsed)


def build_release(
    manifest_path: Path,
    *,
    version: str | None = None,
    bump: Bump | None = None,
    targets: Sequence[str] = (),
    channel: str | None = None,
    notes: str | None = None,
    dry_run: bool = False,
    allow_missing_version: bool = False,
    project_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> BuildOutcome:
    """Build every selected target's env with the version compiled in and record the release.

    ``dry_run`` decides the version and the envs, checks them against ``platformio.ini`` and
    stops: nothing is built or written.
    """
    manifest = manifest_mod.load(manifest_path)
    chosen = decide_version(manifest, version, bump)
    planned = select_targets(manifest, targets)
    check_release_terms(manifest, chosen, planned[0].target, channel=channel, notes=notes)  # before minutes of pio
    project = platformio.read_project(project_dir or manifest.root, environ=environ)
    for plan in planned:
        if project.env(plan.env) is None:
            envs = ", ".join(e.name for e in project.envs) or "none"
            raise BuildError(f"target '{plan.target.name}' names env '{plan.env}', which "
                             f"{project.path / 'platformio.ini'} does not define (envs: {envs})")
    flag = platformio.version_flag(manifest.version_define, str(chosen))
    if dry_run:
        return BuildOutcome(chosen, planned, True, flag=flag)

    emit = progress or (lambda event: None)
    built: list[BuiltTarget] = []
    inputs: list[ArtifactInput] = []
    with tempfile.TemporaryDirectory(prefix="acrelease-build-") as tmp:
        for step, plan in enumerate(planned, 1):
            started = time.monotonic()
            emit(BuildEvent("start", plan.target.name, plan.env, step=step, steps=len(planned)))

            def on_line(line: str, plan: PlannedEnv = plan, started: float = started, step: int = step) -> None:
                emit(BuildEvent("output", plan.target.name, plan.env, time.monotonic() - started, line, step,
                                len(planned)))

            outputs = platformio.build_env(
                project, plan.env, version=str(chosen), define=manifest.version_define,
                filesystem=plan.target.filesystem, staging=Path(tmp) / plan.target.name,
                environ=environ, on_line=on_line)
            built.append(_check_output(plan, outputs, chosen, manifest.version_define, allow_missing_version))
            inputs.append(ArtifactInput(plan.target.name, outputs.firmware, outputs.filesystem))
            emit(BuildEvent("done", plan.target.name, plan.env, time.monotonic() - started, step=step,
                            steps=len(planned)))
        emit(BuildEvent("record"))
        # add_release is all or nothing: on failure it removes what it copied into dist/.
        added = add_release(manifest_path, chosen, inputs, channel=channel, notes=notes,
                            allow_missing_version=allow_missing_version)
    return BuildOutcome(chosen, planned, False, tuple(built), added, flag)


def collect_release(
    manifest_path: Path,
    sketch_dir: Path,
    version: str,
    *,
    targets: Sequence[str] = (),
    explicit: Mapping[str, Path] | None = None,
    channel: str | None = None,
    notes: str | None = None,
    allow_missing_version: bool = False,
) -> AddResult:
    """Record the images an Arduino IDE / arduino-cli exported in ``sketch_dir`` as ``version``:
    for every target of the manifest, or only for those named in ``targets`` and ``explicit``
    (target -> file); a target without its image refuses the whole release."""
    manifest = manifest_mod.load(manifest_path)
    chosen = parse_release_version(version)
    mapping = arduino.map_exports(sketch_dir, manifest.targets, explicit or {}, targets)
    inputs = [ArtifactInput(target, path) for target, path in sorted(mapping.items())]
    return add_release(manifest_path, chosen, inputs, channel=channel, notes=notes,
                       allow_missing_version=allow_missing_version)


def read_next_version(manifest_path: Path, bump: Bump | None) -> tuple[semver.Version | None, semver.Version]:
    """(newest recorded version or None, the version ``build`` would use with ``bump``)."""
    manifest = manifest_mod.load(manifest_path, verify_files=False)
    versions = manifest.versions()
    return (max(versions) if versions else None), next_version(versions, bump)

