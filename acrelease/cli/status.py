"""``status``: the headline numbers of the dashboard, in the terminal (or ``--json``)."""

from __future__ import annotations

from pathlib import Path

import typer

from acrelease.cli.common import CATALOG_OPTION, FLEET_OPTION, JSON_OPTION, console, print_json
from acrelease.cli.fleet import catalog_index, fleet_store
from acrelease.fleet import rollouts
from acrelease.fleet.report import build_report, status_json


def status(
    catalog: Path | None = CATALOG_OPTION,
    fleet: str | None = FLEET_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Per target: releases with rollout state and progress, devices per state and per version."""
    index = catalog_index(catalog)
    with fleet_store(catalog, fleet, create=False) as store:
        report = build_report(store.devices(), store.load_view(), index, rollouts.statuses(store, index))
    summary = status_json(report, index)
    if as_json:
        print_json(summary)
        return
    console.print(f"catalog generation {summary['catalog_generation']}, {summary['devices']} devices")
    for target in summary["targets"]:
        console.print(f"\n{target['target']} ({target['chip']}, {target['devices']} devices)")
        states = ", ".join(f"{state} {count}" for state, count in target["states"].items() if count)
        console.print(f"  states:   {states or 'no devices yet'}")
        versions = ", ".join(f"{version} {count}" for version, count in target["versions"].items())
        if versions:
            console.print(f"  versions: {versions}")
        for release in target["releases"]:
            mark = " (yanked)" if release["yanked"] else ""
            console.print(f"  release {release['version']}{mark} [{release['channel']}]: "
                          f"{release['devices']} devices run it")
        for r in target["rollouts"]:
            console.print(f"  rollout {r['version']}: {r['state']} at {r['percent']:g} %, sent {r['sent']}, "
                          f"updated {r['updated']}, held {r['held']}, waiting {r['waiting']}")


def register(app: typer.Typer) -> None:
    app.command()(status)
