"""Staged rollouts: the operator's changes (CLI) and the health/autopilot evaluation (servers).

A rollout gates one release of one target: devices outside its cohort (:mod:`.cohort`), and every
device while it is paused, halted or aborted, are treated as if the release did not exist.
``percent`` 100 completes it (the gate goes). Decisions that several workers or hosts could take
at once, a halt or an autopilot step, are compare-and-set updates in the store
(:meth:`FleetStore.move_rollout`): exactly one of them takes effect and logs it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from acrelease.catalog.index import CatalogIndex
from acrelease.errors import FleetError
from acrelease.fleet.model import Rollout, RolloutState, RolloutStatus, TargetKey, now_ms
from acrelease.fleet.store import FleetStore
from acrelease.versioning import parse_device_version

log = logging.getLogger("acrelease.fleet")

DEFAULT_MAX_FAILURES = 5
DEFAULT_ADVANCE_AT = 95.0
DEFAULT_MIN_UPDATED = 10
IN_PROGRESS: tuple[RolloutState, ...] = ("rolling", "paused", "halted")


def parse_stages(text: str) -> tuple[float, ...]:
    """``1,10,50,100`` -> (1.0, 10.0, 50.0, 100.0): strictly increasing, within (0, 100], ending at 100."""
    try:
        stages = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise FleetError(f"--stages {text}: not a comma-separated list of percentages (e.g. 1,10,50,100)") from None
    if not stages or any(not 0 < s <= 100 for s in stages) or list(stages) != sorted(set(stages)) \
            or stages[-1] != 100:
        raise FleetError(f"--stages {text}: percentages must rise strictly, each in (0, 100], and end at 100 "
                         "(e.g. 1,10,50,100)")
    return stages


def check_percent(percent: float) -> float:
    if not 0 < percent <= 100:
        raise FleetError(f"--percent {percent:g}: must be above 0 and at most 100")
    return percent


def start(store: FleetStore, targets: Sequence[TargetKey], version: str, *, percent: float | None,
          stages: tuple[float, ...] = (), advance_at: float | None = None, min_updated: int | None = None,
          max_failures: int | None = None) -> list[Rollout]:
    """Start, widen or re-tune the rollout of ``version`` on each target. Widening keeps every
    device already in (cohorts nest); narrowing is refused (use pause or abort)."""
    if percent is None and not stages:
        raise FleetError("say how far to roll out: --percent N, or --stages 1,10,50,100")
    if percent is None:
        percent = stages[0]
    check_percent(percent)
    planned: list[Rollout] = []
    now = now_ms()
    for project, target in targets:
        existing = store.rollout(project, target, version)
        if existing is not None and existing.state in IN_PROGRESS:
            if percent < existing.percent:
                raise FleetError(f"{project}/{target} {version}: the rollout is at {existing.percent:g} %; it can "
                                 f"widen but not narrow (devices already offered it keep it); use --pause or --abort")
            rollout = replace(existing, percent=percent,
                              state="complete" if percent >= 100 else existing.state,
                              stages=stages or existing.stages,
                              advance_at=existing.advance_at if advance_at is None else advance_at,
                              min_updated=existing.min_updated if min_updated is None else min_updated,
                              max_failures=existing.max_failures if max_failures is None else max_failures,
                              stage_started=now if percent != existing.percent else existing.stage_started)
        else:
            held = store.release_counts(project, target, version, None)[2]
            rollout = Rollout(project, target, version, percent, "complete" if percent >= 100 else "rolling",
                              stages, DEFAULT_ADVANCE_AT if advance_at is None else advance_at,
                              DEFAULT_MIN_UPDATED if min_updated is None else min_updated,
                              DEFAULT_MAX_FAILURES if max_failures is None else max_failures,
                              held_base=held, stage_started=now, created=now)
        planned.append(rollout)
    for rollout in planned:
        store.put_rollout(rollout)
    return planned


def change(store: FleetStore, targets: Sequence[TargetKey], version: str, action: str) -> list[Rollout]:
    """``pause``, ``resume`` or ``abort`` the rollout of ``version`` on each target."""
    found = []
    for project, target in targets:
        rollout = store.rollout(project, target, version)
        if rollout is None:
            raise FleetError(f"{project}/{target} {version}: no rollout; start one with "
                             f"`acrelease rollout {version} --percent N`")
        found.append(rollout)
    moved = []
    for rollout in found:
        where = f"{rollout.project}/{rollout.target} {version}"
        if action == "pause":
            if rollout.state != "rolling":
                raise FleetError(f"{where}: the rollout is {rollout.state}, only a rolling one can be paused")
            ok = store.move_rollout(rollout, from_states=("rolling",), state="paused")
        elif action == "resume":
            if rollout.state not in ("paused", "halted"):
                raise FleetError(f"{where}: the rollout is {rollout.state}, only a paused or halted one resumes")
            held = store.release_counts(rollout.project, rollout.target, version, None)[2]
            # After a resume the halt counts holds anew: --max-failures more devices stop it again.
            ok = store.move_rollout(rollout, from_states=("paused", "halted"), state="rolling", held_base=held)
        elif action == "abort":
            if rollout.state in ("complete", "aborted"):
                raise FleetError(f"{where}: the rollout is already {rollout.state}")
            ok = store.move_rollout(rollout, from_states=IN_PROGRESS, state="aborted")
        else:  # pragma: no cover - the CLI passes one of the three
            raise ValueError(action)
        if not ok:
            raise FleetError(f"{where}: the rollout changed meanwhile (a server moved it); look at "
                             "`acrelease rollout --catalog DIR` and try again")
        moved.append(store.rollout(rollout.project, rollout.target, version) or rollout)
    return moved


def statuses(store: FleetStore, index: CatalogIndex) -> list[RolloutStatus]:
    result = []
    for rollout in store.rollouts():
        sent, updated, held = store.release_counts(rollout.project, rollout.target, rollout.version,
                                                   _md5(index, rollout))
        result.append(RolloutStatus(rollout, sent, updated, held))
    return result


def next_stage(rollout: Rollout) -> float | None:
    return next((s for s in rollout.stages if s > rollout.percent), None)


def evaluate(store: FleetStore, index: CatalogIndex, rollouts: Sequence[Rollout]) -> None:
    """Halt rolling rollouts with ``max_failures`` devices held since the last resume; move
    autopilot rollouts to their next stage when enough devices sent the release in this stage
    report it. Run by every server's recorder after a flush; the store decides who wins."""
    for rollout in rollouts:
        if rollout.state != "rolling":
            continue
        key = (rollout.project, rollout.target, rollout.version)
        md5 = _md5(index, rollout)
        _, _, held = store.release_counts(*key, md5)
        if held - rollout.held_base >= rollout.max_failures:
            if store.move_rollout(rollout, from_states=("rolling",), state="halted"):
                log.warning("fleet: rollout of %s/%s %s halted: %d devices held on it (--max-failures %d): %s; "
                            "`acrelease rollout %s --resume` continues it", rollout.project, rollout.target,
                            rollout.version, held - rollout.held_base, rollout.max_failures,
                            " ".join(store.held_on(*key)), rollout.version)
            continue
        stage = next_stage(rollout)
        if stage is None:
            continue
        sent, updated, _ = store.release_counts(*key, md5, since=rollout.stage_started)
        if sent and updated >= rollout.min_updated and updated * 100 >= rollout.advance_at * sent:
            state: RolloutState = "complete" if stage >= 100 else "rolling"
            if store.move_rollout(rollout, from_states=("rolling",), state=state, percent=stage):
                log.info("fleet: rollout of %s/%s %s advanced %g %% -> %g %% (%d of %d devices sent it in this "
                         "stage report it)", rollout.project, rollout.target, rollout.version, rollout.percent,
                         stage, updated, sent)


def _md5(index: CatalogIndex, rollout: Rollout) -> str | None:
    target = index.target(rollout.project, rollout.target)
    version = parse_device_version(rollout.version)
    release = target.release(version) if target is not None and version is not None else None
    return release.firmware.md5 if release is not None else None
