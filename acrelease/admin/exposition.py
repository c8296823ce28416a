"""``/metrics``: the workers' shared counts in the Prometheus text format, by ``prometheus_client``.

The counts are kept by :mod:`acrelease.server.metrics` (cheap on the request path, summed across
workers); this module only turns one snapshot of them into metric families, and the fleet's
figures (devices per state, rollouts) into gauges when a fleet store is attached.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from acrelease.server import metrics

PREFIX = "acrelease_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

ExtraFamilies = Callable[[], Iterator[Metric]]


class _Counts(Collector):
    def __init__(self, totals: Callable[[], Sequence[int]], extra: ExtraFamilies | None) -> None:
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
        if self.extra is not None:
            yield from self.extra()


def _single(kind: type[CounterMetricFamily] | type[GaugeMetricFamily], name: str, documentation: str,
            by_family: dict[str, list[tuple[tuple[tuple[str, str], ...], int]]]) -> Metric:
    (_, value), = by_family[name]
    return kind(PREFIX + name, documentation, value=value)


def render(totals: Callable[[], Sequence[int]], extra: ExtraFamilies | None = None) -> bytes:
    """The exposition of one snapshot (a registry per scrape: nothing global, nothing kept)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Counts(totals, extra))
    return generate_latest(registry)
