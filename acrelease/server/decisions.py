"""The decision log: one line per answer, naming the device's MAC (or ``-``), the source
address, method and path, status and reason (docs/protocol.md H.5, H.7).

The app hands over a :class:`Decision` record, cheap to build; the line is formatted by the
sink. By default that is the ``acrelease.server`` logger at INFO; ``serve`` installs a batched
sink that formats lines in bulk when it writes them (``logs.BatchedLog``), which keeps logging
every check from costing a fleet's check rate a third (measured with benchmarks/bench_serve.py).
At DEBUG each decision is preceded by what the request told the policy (:func:`format_details`).
"""

from __future__ import annotations

import json
import logging
from typing import NamedTuple
from urllib.parse import parse_qsl

from acrelease.channels import STABLE
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


def _target(entry: Decision) -> str:
    """Path and query as the client sent them, escaped and cut to 200 characters."""
    target = entry.path + ("?" + entry.query.decode("latin-1") if entry.query else "")
    if len(target) > 200 or not (target.isascii() and target.isprintable()):
        target = ascii(target[:200])[1:-1]
    return target


def format_line(entry: Decision) -> str:
    """``MAC source METHOD path -> status reason (device details)``; control characters and
    overlong paths from clients are escaped and cut, never written raw."""
    target = _target(entry)
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


def fields(entry: Decision) -> dict[str, object]:
    """The decision line's structured fields (``serve --log-format json``): ``mac``,
    ``address``, ``method``, ``path``, ``status``, ``reason``, the device's ``version`` as
    sent and, when something is served, ``serving_version`` and ``serving_file``."""
    device = entry.device
    decision = entry.decision
    serving = decision if isinstance(decision, Offer | Announce) else None
    return {
        "mac": device.mac if device else None,
        "address": entry.client[0] if entry.client else None,
        "method": entry.method,
        "path": _target(entry),
        "status": entry.status,
        "reason": entry.reason,
        "version": device.version_text if device else None,
        "serving_version": str(serving.release.version) if serving else None,
        "serving_file": serving.artifact.name if serving else None,
    }


def json_members(entry: Decision) -> str:
    """:func:`fields` as the members of a JSON object (``"mac":"DE:..","address":..``), spelled
    out with the json module's C string encoder: a third of the cost of ``json.dumps`` of the
    dict, and the JSON log format writes one per check. Tests hold the two equal."""
    device = entry.device
    decision = entry.decision
    if isinstance(decision, Offer | Announce):
        serving_version, serving_file = _json(str(decision.release.version)), _json(decision.artifact.name)
    else:
        serving_version = serving_file = "null"
    mac = version = "null"
    if device is not None:
        mac, version = _maybe(device.mac), _maybe(device.version_text)
    address = _json(entry.client[0]) if entry.client else "null"
    return (f'"mac":{mac},"address":{address},"method":{_json(entry.method)},"path":{_json(_target(entry))},'
            f'"status":{int(entry.status)},"reason":{_json(entry.reason)},"version":{version},'
            f'"serving_version":{serving_version},"serving_file":{serving_file}')


_json = json.encoder.encode_basestring
"""A str as a JSON string literal, non-ASCII kept as is (``ensure_ascii=False``)."""


def _maybe(text: str | None) -> str:
    return "null" if text is None else _json(text)


def device_details(entry: Decision) -> dict[str, object]:
    """What the request told the policy (its inputs besides the catalog): every parsed device
    fact and the channel asked for. Logged at DEBUG, one line per request."""
    device = entry.device
    details: dict[str, object] = {"mac": device.mac if device else None,
                                  "address": entry.client[0] if entry.client else None}
    if device is None or device.arch is None:
        details["device"] = None  # not an ESP client (a browser, AutoConnect's catalog request)
        return details
    details.update(
        arch=device.arch, update_agent=device.update_agent, mode=device.mode, version=device.version_text,
        version_parsed=str(device.version) if device.version is not None else None,
        sketch_md5=device.sketch_md5, free_space=device.free_space, sketch_size=device.sketch_size,
        chip_size=device.chip_size, sdk_version=device.sdk_version, chip_id=device.chip_id,
        missing=list(device.missing))
    if entry.path.startswith("/update/"):
        details["channel"] = channel_of(entry.query)
    return details


def format_details(entry: Decision) -> str:
    """``MAC source request details: arch=ESP8266 mode=sketch version='1.0.0' ...`` (DEBUG)."""
    details = device_details(entry)
    mac, source = details.pop("mac") or "-", details.pop("address") or "-"
    if "device" in details:
        return f"{mac} {source} request details: not an ESP update client ({entry.method} {_target(entry)})"
    text = " ".join(f"{name.replace('_', '-')}={value!r}" for name, value in details.items()
                    if value is not None and value != [])
    return f"{mac} {source} request details: {text}"


def channel_of(query: bytes) -> str:
    """The ``channel`` of an update request's query, as the app reads it (default stable)."""
    try:
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True, max_num_fields=20)
    except ValueError:  # more than 20 fields: the app reads no query at all
        return STABLE
    value = next((value for name, value in pairs if name == "channel"), "")
    return value[:32] if value else STABLE


class DecisionLog:
    """Default sink: the ``acrelease.server`` logger, the decision at INFO and what the request
    told the policy at DEBUG."""

    def enabled(self) -> bool:
        return log.isEnabledFor(logging.INFO)

    def write(self, entry: Decision) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s", format_details(entry))
        log.info("%s", format_line(entry))
