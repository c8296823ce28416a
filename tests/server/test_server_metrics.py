"""Metrics kept per worker and summed across workers through the shared block."""

from __future__ import annotations

import os
import time

from prometheus_client.parser import text_string_to_metric_families

from acrelease.admin import exposition
from acrelease.policy import NoUpdate, Refuse
from acrelease.server import metrics


def test_rows_add_up_and_a_replacement_worker_continues_its_row() -> None:
    block = metrics.SharedBlock(2)
    first, second = metrics.Metrics(block, 0), metrics.Metrics(block, 1)
    started = time.perf_counter()
    first.answered("/update/demo/d1", 304, None, NoUpdate("version current"), started)
    second.answered("/update/demo/d1", 304, None, NoUpdate("version current"), started)
    second.answered("/update/demo/d1", 403, None, Refuse(403, "too big", "space"), started)
    first.set(metrics.GENERATION, 7)
    second.set(metrics.GENERATION, 6)  # a worker that has not reloaded yet: the newest generation wins
    first.publish()
    second.publish()
    totals = block.totals()
    assert totals[metrics.INDEX[("requests", (("route", "update"), ("status", "304")))]] == 2
    assert totals[metrics.INDEX[("refusals", (("reason", "space"),))]] == 1
    assert totals[metrics.GENERATION] == 7
    assert totals[metrics.INDEX[("check_latency_count", ())]] == 3

    pid = os.fork()  # the block is shared across fork, as serve's workers share it
    if pid == 0:
        replacement = metrics.Metrics(block, 1)  # takes over row 1 with its counts so far
        replacement.answered("/update/demo/d1", 304, None, NoUpdate("version current"), started)
        replacement.publish()
        os._exit(0)
    os.waitpid(pid, 0)
    assert block.totals()[metrics.INDEX[("requests", (("route", "update"), ("status", "304")))]] == 3


def test_labels_are_bounded_whatever_clients_send() -> None:
    counts = metrics.Metrics()
    started = time.perf_counter()
    for path in ("/update/x/y", "/_catalog", "/a/b/c.bin", "/../../etc/passwd", "/" + "z" * 5000):
        for status in (200, 299, 404, 599):
            counts.answered(path, status, None, None, started)
    counts.publish()
    text = exposition.render(counts.block.totals).decode()
    series = [s for f in text_string_to_metric_families(text) for s in f.samples]
    assert len(series) == len({(s.name, tuple(sorted(s.labels.items()))) for s in series})
    routes = {s.labels["route"] for s in series if "route" in s.labels}
    assert routes == {"update", "catalog", "download"}
    assert {s.labels["status"] for s in series if "status" in s.labels} <= {
        *(str(code) for code in metrics.STATUSES), "other"}
    other = [s for s in series if s.labels.get("status") == "other" and s.labels.get("route") == "download"]
    assert other[0].value == 6  # 299 and 599 on three download paths
