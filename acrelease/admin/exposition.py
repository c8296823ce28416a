"""``/metrics``: the workers' shared counts in the Prometheus text format, by ``prometheus_client``.

The counts are kept by :mod:`acrelease.server.metrics` (cheap on the request path, summed across
workers); this module only turns one snapshot of them into metric families, and the fleet's
figures (devices per state, rollouts) into gauges when a fleet store is attached.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from acrelease.server import metrics

PREFIX = "acrelease_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"



class _Counts(Collector):
    def __init__(self, totals: Callable[[], Sequence[int]], extra: Sequence[Metric]) -> None:
        self.totals = totals
        self.extra = extra

    def collect(self) -> Iterator[Metric]:
        values = self.totals()
        by_family: dict[str, list[tuple[tuple[tuple[str, str], ...], int]]] = {}
        for family, labels, value in metrics.families(values):
            by_family.setdefault(family, []).append((labels, value))

        requests = CounterMetricFamily(PREFIX + "requests", "Answers by route and HTTP status.",
                                       labels=["route", "status"])
        for labels, value in by_family["requests"]:
            requests.add_metric([v for _, v in labels], value)
        yield requests
        decisions = CounterMetricFamily(
            PREFIX + "decisions", "What devices were told: current (304), sent (200 with an image), announced "
            "(x-version only), refused, held (loop breaker), denied (401/403), busy (503), unknown (404).",
            labels=["kind"])
        for labels, value in by_family["decisions"]:
            decisions.add_metric([labels[0][1]], value)
        yield decisions
        refusals = CounterMetricFamily(PREFIX + "refusals", "Devices refused by the update policy, by reason.",
                                       labels=["reason"])
        for labels, value in by_family["refusals"]:
            refusals.add_metric([labels[0][1]], value)
        yield refusals

        cumulative, buckets = 0, []
        for labels, value in by_family["check_latency_bucket"]:
            cumulative += value
            buckets.append((labels[0][1], cumulative))
        (_, total_ns), = by_family["check_latency_sum_ns"]
        yield HistogramMetricFamily(PREFIX + "check_latency_seconds",
                                    "Application time of a version check (/update/...), from request head to "
                                    "answer.", buckets=buckets, sum_value=total_ns / 1e9)
        yield _single(CounterMetricFamily, "bytes_sent", "Image bytes written to clients.", by_family)
        yield _single(CounterMetricFamily, "catalog_reload_errors",
                      "Times index.json could not be read (the last good state kept serving).", by_family)
        yield _single(GaugeMetricFamily, "downloads_active", "Firmware transfers in flight (download slots in use).",
                      by_family)
        yield _single(GaugeMetricFamily, "catalog_generation", "Generation of the catalog index being served.",
                      by_family)
        yield _single(CounterMetricFamily, "fleet_write_errors",
                      "Failed writes to the fleet store (checks were answered as before).", by_family)
        yield _single(CounterMetricFamily, "fleet_dropped",
                      "Observations dropped because the store stayed unwritable and the buffer was full.", by_family)
        (_, lag_ms), = by_family["fleet_write_lag_ms"]
        yield GaugeMetricFamily(PREFIX + "fleet_write_lag_seconds",
                                "Seconds since the fleet store last took a worker's observations (the worst worker).",
                                value=lag_ms / 1000)
        yield from self.extra


def _single(kind: type[CounterMetricFamily] | type[GaugeMetricFamily], name: str, documentation: str,
            by_family: dict[str, list[tuple[tuple[tuple[str, str], ...], int]]]) -> Metric:
    (_, value), = by_family[name]
    return kind(PREFIX + name, documentation, value=value)


def render(totals: Callable[[], Sequence[int]], extra: Sequence[Metric] = ()) -> bytes:
    """The exposition of one snapshot (a registry per scrape: nothing global, nothing kept)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Counts(totals, extra))
    return generate_latest(registry)


def fleet_families(status: Mapping[str, Any]) -> list[Metric]:
    """Gauges of the fleet from ``status_json``: devices per target and state, per target and
    version (published versions by name; anything else a device reports as ``other``), and each
    rollout's percent and counts. Every label value is a target or release the operator made."""
    devices = GaugeMetricFamily(PREFIX + "devices", "Devices per target and state (against the catalog now).",
                                labels=["target", "state"])
    versions = GaugeMetricFamily(PREFIX + "devices_by_version",
                                 "Devices per target and reported version; versions that are not releases of "
                                 "the target are counted as other, none reported as unknown.",
                                 labels=["target", "version"])
    percent = GaugeMetricFamily(PREFIX + "rollout_percent", "Share of the fleet a rollout is open to.",
                                labels=["target", "version", "state"])
    counts = GaugeMetricFamily(PREFIX + "rollout_devices",
                               "Devices of a rollout: sent its image, updated to it, held by the loop breaker.",
                               labels=["target", "version", "kind"])
    for target in status["targets"]:
        key = target["target"]
        for state, count in target["states"].items():
            devices.add_metric([key, state], count)
        published = {release["version"] for release in target["releases"]}
        bounded: dict[str, int] = {}
        for version, count in target["versions"].items():
            label = version if version in published or version == "unknown" else "other"
            bounded[label] = bounded.get(label, 0) + count
        for version, count in sorted(bounded.items()):
            versions.add_metric([key, version], count)
        for rollout in target["rollouts"]:
            percent.add_metric([key, rollout["version"], rollout["state"]], rollout["percent"])
            for kind in ("sent", "updated", "held"):
                counts.add_metric([key, rollout["version"], kind], rollout[kind])
    return [devices, versions, percent, counts]
