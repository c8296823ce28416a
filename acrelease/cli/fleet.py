"""The fleet commands: ``devices``, ``device``, ``retry``, ``pin``, ``unpin``, ``assign``, ``rollout``.

Each opens the fleet store (``--fleet PATH`` / ``ACRELEASE_FLEET``, else the catalog's
``.acrelease/fleet.sqlite3``), reads the catalog's index where states or releases matter, and
renders. Changes reach running servers within a second (they poll the store's generation).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import semver
import typer

from acrelease.catalog.index import CatalogIndex, TargetIndex, load_index
from acrelease.catalog.store import PublishResult
from acrelease.catalog.store import publish as publish_releases
from acrelease.cli.common import (
    CATALOG_OPTION,
    FLEET_OPTION,
    JSON_OPTION,
    console,
    make_console,
    print_json,
    resolve_catalog,
)
from acrelease.errors import AcreleaseError, FleetError
from acrelease.fleet import rollouts
from acrelease.fleet.model import DEVICE_STATES, RolloutStatus, TargetKey, iso
from acrelease.fleet.report import device_json, event_json, rollout_json
from acrelease.fleet.states import Classifier, device_state
from acrelease.fleet.store import FleetStore, default_path, open_store
from acrelease.manifest import Manifest
from acrelease.server.device import normalise_mac
from acrelease.versioning import parse_release_version

PROPAGATION = 1.0
"""Seconds within which running servers see an intent change (they poll the store's generation)."""


# -- shared ----------------------------------------------------------------------------------------

def _mac(text: str) -> str:
    mac = normalise_mac(text.strip())
    if mac is None:
        raise FleetError(f"{text!r} is not a MAC address; write it as AA:BB:CC:DD:EE:FF, aa-bb-cc-dd-ee-ff "
                         "or aabbccddeeff")
    return mac


def catalog_index(catalog: Path | None) -> CatalogIndex:
    root = resolve_catalog(catalog)
    if root is None:
        raise FleetError("name the catalog folder with --catalog DIR (or set ACRELEASE_CATALOG): states and "
                         "releases are read from its index")
    if not root.is_dir():
        raise FleetError(f"{root}: catalog folder not found; pass the folder `acrelease serve` serves")
    return load_index(root)


@contextlib.contextmanager
def fleet_store(catalog: Path | None, fleet: str | None, *, create: bool = True) -> Iterator[FleetStore]:
    store = open_store(fleet, resolve_catalog(catalog), create=create)
    try:
        yield store
    finally:
        store.close()


def _target_key(text: str, index: CatalogIndex | None = None) -> TargetKey:
    """``PROJECT/TARGET``, or a bare ``TARGET`` that names exactly one target of the catalog."""
    project, slash, name = text.partition("/")
    if slash and project and name and "/" not in name:
        return (project, name)
    if not slash and index is not None:
        found = [key for key in index.targets if key[1] == text]
        if len(found) == 1:
            return found[0]
    raise FleetError(f"--target {text}: write it as PROJECT/TARGET (e.g. demo/d1mini)")


# -- devices, device --------------------------------------------------------------------------------

def devices(
    catalog: Path | None = CATALOG_OPTION,
    fleet: str | None = FLEET_OPTION,
    target: str | None = typer.Option(None, "--target", help="Only PROJECT/TARGET."),
    state: str | None = typer.Option(None, "--state", help="Only devices in this state: " + ", ".join(DEVICE_STATES)),
    as_json: bool = JSON_OPTION,
) -> None:
    """Every device that checked in, with what it runs and its state against the catalog."""
    if state is not None and state not in DEVICE_STATES:
        raise FleetError(f"--state {state}: not a state; use one of {', '.join(DEVICE_STATES)}")
    index = catalog_index(catalog)
    key = _target_key(target, index) if target else None
    with fleet_store(catalog, fleet, create=False) as store:
        rows = store.devices(*(key or (None, None)))
        view = store.load_view()
    classify = Classifier(index, view).state
    listed = [(row, s) for row in rows if (s := classify(row)) == state or state is None]
    if as_json:
        objects = [device_json(row, s) for row, s in listed]
        if len(objects) > 1000:
            # Large fleets in one call of the C encoder (indent= falls back to the pure-Python one):
            # 100,000 devices list within the 3 s the issue asks for.
            print(json.dumps(objects, ensure_ascii=False))
        else:
            print_json(objects)
        return
    if not listed:
        console.print("No devices" + (f" in state {state}" if state else "") + (f" on {target}" if target else ""))
        return
    lines = [f"{'MAC':17}  {'TARGET':24}  {'VERSION':14}  {'STATE':8}  {'CHECKS':>7}  {'LAST SEEN':24}  ADDRESS"]
    for row, s in listed:
        version = row.version or (f"md5 {row.sketch_md5[:8]}" if row.sketch_md5 else "-")
        if row.pinned:
            version += f" (pin {row.pinned})"
        lines.append(f"{row.mac:17}  {row.project + '/' + row.target:24}  {version:14}  {s:8}  {row.checks:>7}  "
                     f"{iso(row.last_seen):24}  {row.address or '-'}")
    print("\n".join(lines))


def device(
    mac: str = typer.Argument(..., help="The device's MAC (any case, with or without colons)."),
    catalog: Path | None = CATALOG_OPTION,
    fleet: str | None = FLEET_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """One device: what it reports, its state, and its history (newest first)."""
    key = _mac(mac)
    index = catalog_index(catalog)
    with fleet_store(catalog, fleet, create=False) as store:
        row = store.device(key)
        if row is None:
            raise FleetError(f"{key}: no such device in the fleet store; it appears after its first check "
                             "(`acrelease devices` lists those seen)")
        view = store.load_view()
        events = store.events(key)
        pin = store.pin_of(key)
    state = device_state(row, index, view)
    if as_json:
        print_json({**device_json(row, state), "events": [event_json(e) for e in events]})
        return
    for name, value in device_json(row, state).items():
        console.print(f"{name + ':':12} {value if value is not None else '-'}")
    note = _pin_note(index, row.target_key, pin) if pin is not None else None
    if note is not None:
        console.print(f"{'':12} {note}")
    if row.held:
        console.print(f"{'held on:':12} {', '.join(row.held)}")
    console.print("events:")
    for event in events:
        console.print(f"  {iso(event.at)}  {event.event:9} {event.version or '-':14} {event.detail}")


def _pin_note(index: CatalogIndex, checks: TargetKey, pin: tuple[str, str, str]) -> str | None:
    """Why the device's pin is not applied now, or None when it is."""
    project, target, version = pin
    where = f"{project}/{target} {version}"
    if (project, target) != checks:
        return f"(pin to {where} not applied: the device now checks {checks[0]}/{checks[1]})"
    problem = _pin_problem(index, (project, target), parse_release_version(version))
    if problem is not None:
        return f"(pin to {where} not applied while it is {problem}: the device gets what it would without it)"
    return None


# -- retry, pin, unpin, assign ----------------------------------------------------------------------

def retry(
    mac: str = typer.Argument(..., help="The device's MAC."),
    catalog: Path | None = CATALOG_OPTION,
    fleet: str | None = FLEET_OPTION,
) -> None:
    """Clear the loop breaker's hold on a device: it is offered the release again, with a fresh count."""
    key = _mac(mac)
    with fleet_store(catalog, fleet, create=False) as store:
        if store.device(key) is None:
            raise FleetError(f"{key}: no such device in the fleet store; nothing to retry")
        released = store.retry(key)
    if released:
        console.print(f"{key}: hold on {', '.join(released)} cleared; it is offered again at its next check")
    else:
        console.print(f"{key}: was not held; its send counts start again")


def pin(
    mac: str = typer.Argument(..., help="The device's MAC."),
    version: str = typer.Argument(..., help="The published release it must run (older ones included)."),
    catalog: Path | None = CATALOG_OPTION,
    fleet: str | None = FLEET_OPTION,
    target: str | None = typer.Option(None, "--target", help="PROJECT/TARGET, for a device not seen yet."),
) -> None:
    """Make a device run exactly VERSION: sent it whenever it reports anything else, downgrades included."""
    key = _mac(mac)
    wanted = parse_release_version(version)
    index = catalog_index(catalog)
    # A device not seen yet needs --target; then the store may be created by this pin, once the
    # release is checked. Without --target the store must know the device. Either way a refused
    # pin leaves no new file behind.
    if target is not None:
        where = _target_key(target, index)
        _pinnable(index, where, wanted)
        with fleet_store(catalog, fleet) as store:
            store.set_pin(key, where[0], where[1], str(wanted))
    else:
        with fleet_store(catalog, fleet, create=False) as store:
            row = store.device(key)
            if row is None:
                raise FleetError(f"{key}: the fleet store has not seen this device yet; say which target it is "
                                 "with --target PROJECT/TARGET")
            where = row.target_key
            _pinnable(index, where, wanted)
            store.set_pin(key, where[0], where[1], str(wanted))
    console.print(f"{key}: pinned to {where[0]}/{where[1]} {wanted}")


def _pinnable(index: CatalogIndex, where: TargetKey, wanted: semver.Version) -> None:
    problem = _pin_problem(index, where, wanted)
    if problem == "not published":
        raise FleetError(f"{where[0]}/{where[1]} {wanted}: not published; `acrelease list --catalog DIR` shows "
                         "what is")
    if problem == "yanked":
        raise FleetError(f"{where[0]}/{where[1]} {wanted}: yanked; pin a release that is offered "
                         f"(or `acrelease yank {wanted} --undo` first)")


def _pin_problem(index: CatalogIndex, where: TargetKey, wanted: semver.Version) -> str | None:
    """Why a pin to ``wanted`` on ``where`` cannot be served ("not published", "yanked"), or None.
    The decision skips such a pin (``policy._pinned_release``): the device gets what it would without it."""
    found: TargetIndex | None = index.target(*where)
    release = found.release(wanted) if found is not None else None
    if release is None:
        return "not published"
    return "yanked" if release.yanked else None


def pinned_to(catalog: Path, fleet: str | None, project: str, targets: Sequence[str],
              version: semver.Version) -> list[tuple[str, str]] | None:
    """(MAC, target) of the devices pinned to ``version`` of ``project`` on one of ``targets``, for
    ``yank`` to say whom it moves: [] with no fleet store yet, None (and one line on stderr) when the
    store cannot be read. The yank stands either way; it is the catalog that decides."""
    if fleet is None and not default_path(catalog).exists():
        return []
    keys = {(project, target) for target in targets}
    try:
        with fleet_store(catalog, fleet, create=False) as store:
            view = store.load_view()
    except AcreleaseError as exc:
        make_console(stderr=True).print(f"warning: devices pinned to {project} {version} not looked up: {exc}",
                                        markup=False)
        return None
    return sorted((mac, intent.pin_target[1]) for mac, intent in view.by_mac.items()
                  if intent.pin == version and intent.pin_target in keys)


def unpin(
    mac: str = typer.Argument(..., help="The device's MAC."),
    catalog: Path | None = CATALOG_OPTION,
    fleet: str | None = FLEET_OPTION,
) -> None:
    """Remove a device's pin: it follows its channel and rollouts again."""
    key = _mac(mac)
    with fleet_store(catalog, fleet, create=False) as store:
        if not store.clear_pin(key):
            raise FleetError(f"{key}: not pinned; nothing to do")
    console.print(f"{key}: unpinned")


def assign(
    mac: str = typer.Argument(..., help="The device's MAC."),
    channel: str = typer.Option(..., "--channel", help="The channel (`stable` puts it back)."),
    catalog: Path | None = CATALOG_OPTION,
    fleet: str | None = FLEET_OPTION,
) -> None:
    """Put a device on a channel, whatever ?channel= its URL says."""
    key = _mac(mac)
    name = channel.strip()
    if not name or len(name) > 32 or not name.isprintable() or not name.isascii():
        raise FleetError(f"--channel {channel!r}: a channel is 1 to 32 printable ASCII characters")
    with fleet_store(catalog, fleet) as store:
        store.assign(key, None if name == "stable" else name)
    console.print(f"{key}: on channel {name}")


# -- rollout ----------------------------------------------------------------------------------------

def rollout(
    version: str | None = typer.Argument(None, help="The release (omit to list rollouts)."),
    catalog: Path | None = CATALOG_OPTION,
    fleet: str | None = FLEET_OPTION,
    percent: float | None = typer.Option(None, "--percent", help="Offer the release to this share of devices."),
    target: str | None = typer.Option(None, "--target", help="PROJECT/TARGET (default: every target with VERSION)."),
    pause: bool = typer.Option(False, "--pause", help="Offer it to no new device until --resume."),
    resume: bool = typer.Option(False, "--resume", help="Continue a paused or halted rollout."),
    abort: bool = typer.Option(False, "--abort", help="Stop offering it; devices already on it keep it."),
    stages: str | None = typer.Option(None, "--stages", help="Autopilot stages, e.g. 1,10,50,100."),
    advance_at: float | None = typer.Option(None, "--advance-at", help="Autopilot: % of devices sent it in a stage "
                                            "that must report it before the next stage (default 95)."),
    min_updated: int | None = typer.Option(None, "--min-updated", min=0, help="Autopilot: at least this many "
                                           "devices must report it (default 10)."),
    max_failures: int | None = typer.Option(None, "--max-failures", min=1, help="Halt when this many devices are "
                                            "held on it (default 5)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Start, widen, pause, resume or abort a staged rollout; without VERSION, list rollouts."""
    index = catalog_index(catalog)
    actions = [name for name, on in (("pause", pause), ("resume", resume), ("abort", abort)) if on]
    if version is None:
        if actions or percent is not None or stages or target:
            raise FleetError("name the release: acrelease rollout VERSION --percent N (or --pause/--resume/--abort)")
        with fleet_store(catalog, fleet, create=False) as store:
            _print_rollouts(rollouts.statuses(store, index), as_json)
        return
    wanted = str(parse_release_version(version))
    if len(actions) > 1 or (actions and (percent is not None or stages)):
        raise FleetError("give one of --percent/--stages, --pause, --resume, --abort")
    if not actions:  # everything a start can refuse is checked before the store is opened (or created)
        keys = rollout_targets(index, wanted, target)
        if target is None:
            # Widening without --target: the targets whose rollout of it is in progress, if any.
            going = _in_progress(catalog, fleet, wanted)
            keys = [k for k in keys if k in going] or keys
        stage_list = rollouts.parse_stages(stages) if stages else ()
        if percent is None and not stage_list:
            raise FleetError("say how far to roll out: --percent N, or --stages 1,10,50,100")
        rollouts.check_percent(percent if percent is not None else stage_list[0])
    with fleet_store(catalog, fleet, create=not actions) as store:
        if actions:
            keys = [_target_key(target, index)] if target else [
                (r.project, r.target) for r in store.rollouts() if r.version == wanted]
            if not keys:
                raise FleetError(f"{wanted}: no rollout; start one with `acrelease rollout {wanted} --percent N`")
            changed = rollouts.change(store, keys, wanted, actions[0])
        else:
            changed = rollouts.start(store, keys, wanted, percent=percent, stages=stage_list,
                                     advance_at=advance_at, min_updated=min_updated, max_failures=max_failures)
        statuses = [s for s in rollouts.statuses(store, index)
                    if (s.rollout.project, s.rollout.target, s.rollout.version) in
                    {(r.project, r.target, r.version) for r in changed}]
    _print_rollouts(statuses, as_json)


def _in_progress(catalog: Path | None, fleet: str | None, version: str) -> set[TargetKey]:
    try:
        with fleet_store(catalog, fleet, create=False) as store:
            return {(r.project, r.target) for r in store.rollouts()
                    if r.version == version and r.state in rollouts.IN_PROGRESS}
    except FleetError:
        return set()


def rollout_targets(index: CatalogIndex, version: str, target: str | None) -> list[TargetKey]:
    """The targets a rollout of ``version`` applies to: ``--target``, else every target with it published."""
    wanted = parse_release_version(version)
    if target:
        key = _target_key(target, index)
        found = index.target(*key)
        if found is None or found.release(wanted) is None:
            raise FleetError(f"{key[0]}/{key[1]} {wanted}: not published; publish it first (or use "
                             "`acrelease publish --percent N`)")
        return [key]
    keys = sorted(key for key, t in index.targets.items() if t.release(wanted) is not None)
    if not keys:
        raise FleetError(f"{wanted}: not published on any target; publish it first (or use "
                         "`acrelease publish --percent N`)")
    return keys


def _print_rollouts(statuses: list[RolloutStatus], as_json: bool) -> None:
    if as_json:
        print_json([rollout_json(s) for s in statuses])
        return
    if not statuses:
        console.print("No rollouts")
        return
    print(f"{'TARGET':24}  {'VERSION':14}  {'PERCENT':>7}  {'STATE':9}  {'SENT':>6}  {'UPDATED':>7}  "
          f"{'HELD':>5}  STAGES")
    for s in statuses:
        r = s.rollout
        print(f"{r.project + '/' + r.target:24}  {r.version:14}  {r.percent:>7g}  {r.state:9}  {s.sent:>6}  "
              f"{s.updated:>7}  {s.held:>5}  {','.join(f'{x:g}' for x in r.stages) or '-'}")


def staged_publish(loaded: Manifest, root: Path, versions: list[semver.Version] | None, fleet: str | None, *,
                   percent: float | None, stages: str | None, advance_at: float | None, min_updated: int | None,
                   max_failures: int | None) -> PublishResult:
    """``publish --percent``: the rollouts are written first, and the index only after running
    servers have had the time to load them (they poll every 0.25 s, so within a second), so that
    no device outside the first stage is ever offered the release. A failed publish removes them."""
    stage_list = rollouts.parse_stages(stages) if stages else ()
    rollouts.check_percent(percent if percent is not None else stage_list[0])
    planned = rollouts.unpublished(loaded, load_index(root), versions) if root.is_dir() else [
        ((loaded.project, t), str(r.version)) for r in loaded.releases
        if versions is None or r.version in versions for t in r.artifacts]
    created: list[tuple[TargetKey, str]] = []
    if planned:
        with fleet_store(root, fleet) as store:
            for key, version in planned:
                if store.rollout(*key, version) is None:
                    created.append((key, version))
                rollouts.start(store, [key], version, percent=percent, stages=stage_list, advance_at=advance_at,
                               min_updated=min_updated, max_failures=max_failures)
        time.sleep(PROPAGATION)
    try:
        return publish_releases(loaded, root, versions)
    except AcreleaseError:
        with fleet_store(root, fleet) as store:
            for key, version in created:
                store.remove_rollout(*key, version)
        raise


def register(app: typer.Typer) -> None:
    for command in (devices, device, retry, pin, unpin, assign, rollout):
        app.command()(command)
