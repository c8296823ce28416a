"""The decision log: one line per answer, naming the device's MAC (or ``-``), the source
address, method and path, status and reason (PROTOCOL.md H.5, H.7).

The app hands over a :class:`Decision` record, cheap to build; the line is formatted by the
sink. By default that is the ``acrelease.server`` logger at INFO; ``serve`` installs a batched
sink that formats lines in bulk when it writes them (``logs.BatchedLog``), which keeps logging
every check from costing a fleet's check rate a third (measured with benchmarks/bench_serve.py).
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from acrelease.policy import Announce, DeviceFacts, Offer
from acrelease.policy import Decision as PolicyDecision

log = logging.getLogger("acrelease.server")


class Decision(NamedTuple):
    """What one log line says; formatted only when written."""

    client: tuple[str, int] | None
    method: str
    path: str
    query: bytes
    device: DeviceFacts | None
    status: int
    reason: str
    decision: PolicyDecision | None = None


def format_line(entry: Decision) -> str:
    """``MAC source METHOD path -> status reason (device details)``; control characters and
    overlong paths from clients are escaped and cut, never written raw."""
    target = entry.path + ("?" + entry.query.decode("latin-1") if entry.query else "")
    if len(target) > 200 or not (target.isascii() and target.isprintable()):
        target = ascii(target[:200])[1:-1]
    device = entry.device
    reason = entry.reason
    if device is not None and device.arch is not None:
        reason += f" (device {device.arch} {device.mode or '-'} version {device.version_text or '-'}"
        if isinstance(entry.decision, Offer | Announce):
            reason += f", serving {entry.decision.release.version} {entry.decision.artifact.name}"
        reason += ")"
    mac = (device.mac if device else None) or "-"
    source = entry.client[0] if entry.client else "-"
    return f"{mac} {source} {entry.method} {target} -> {entry.status} {reason}"


class DecisionLog:
    """Default sink: the ``acrelease.server`` logger at INFO."""

    def enabled(self) -> bool:
        return log.isEnabledFor(logging.INFO)

    def write(self, entry: Decision) -> None:
        log.info("%s", format_line(entry))
