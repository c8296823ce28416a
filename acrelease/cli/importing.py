"""``import``: turn a folder of images (AutoConnect's updateserver.py catalog) into releases."""

from __future__ import annotations

from pathlib import Path

import typer

from acrelease.cli.common import JSON_OPTION, MANIFEST_OPTION, console, print_json
from acrelease.errors import ManifestError
from acrelease.importer import plan_import, record
from acrelease.versioning import parse_release_version


def import_(
    source: Path = typer.Argument(..., help="The folder updateserver.py served, or one image file."),
    name: str | None = typer.Option(None, "--name", help="Project name (needed when releases.toml is created)."),
    version: str | None = typer.Option(None, "--version", help="With one FILE: its version, e.g. 1.2.3."),
    target: str | None = typer.Option(None, "--target", "-t", help="With one FILE: its target (default: its chip)."),
    allow_missing_version: bool = typer.Option(
        False, "--allow-missing-version", help="Record images whose version string is not in them (marked)."),
    manifest_path: Path = MANIFEST_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Record a folder of images (as updateserver.py serves it) as releases.

    Sub-folders are targets, top-level files go to a target named after their chip; versions come
    from the file names or the images."""
    plan = plan_import(source, manifest_path, project=name,
                       version=parse_release_version(version) if version is not None else None,
                       target=target, allow_missing_version=allow_missing_version)
    if not as_json:
        for line in plan.skipped:
            console.print(line, markup=False, soft_wrap=True)
    if plan.problems:
        raise ManifestError((*plan.problems, f"nothing was recorded in {manifest_path}"))
    result = record(plan, allow_missing_version=allow_missing_version)
    if as_json:
        print_json({"manifest": str(manifest_path), "project": plan.project, "changed": result.changed,
                    "skipped": list(plan.skipped),
                    "recorded": [{"version": str(i.version), "target": i.target, "file": str(i.source),
                                  "version_from": i.how, "version_in_image": i.version_found}
                                 for i in sorted(plan.images, key=lambda i: (i.version, i.target))]})
        return
    if not result.changed:
        console.print(f"Every image is already recorded in {manifest_path}; nothing to do", markup=False)
        return
    console.print(f"Recorded in {manifest_path} (project {plan.project}):", markup=False)
    for image in sorted(plan.images, key=lambda i: (i.version, i.target)):
        marked = "" if image.version_found else ", version string not in the image (allowed)"
        console.print(f"  {image.version}  {image.target}  {image.source}  (version from {image.how}{marked})",
                      markup=False, soft_wrap=True)
    console.print("Next: acrelease publish --catalog DIR, then acrelease serve --catalog DIR", markup=False)


def register(app: typer.Typer) -> None:
    app.command("import")(import_)
