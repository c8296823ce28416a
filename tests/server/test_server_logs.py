"""The server's batched log: decision lines formatted in bulk, in order with other records; the
text and JSON formats, DEBUG details; channels as the log and the banner name them."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
from pathlib import Path

import pytest

from acrelease.errors import ServeError
from acrelease.policy import NoUpdate, Offer
from acrelease.server.channels import ChannelWatch, describe_newest
from acrelease.server.decisions import Decision, DecisionLog, fields, format_line
from acrelease.server.device import device_facts
from acrelease.server.logs import BatchedLog, _BatchedHandler, _Formatter, _JSONFormatter, log_level
from tests.factories.catalog import CatalogBuilder, demo_catalog
from tests.server.esp import MAC, esp8266


def test_lines_are_formatted_when_written_and_keep_their_order() -> None:
    stream = io.StringIO()
    handler = _BatchedHandler(stream, _Formatter())
    logger = logging.getLogger("acrelease.test-batched")
    logger.propagate = False
    logger.addHandler(handler)
    sink = BatchedLog(handler)
    device = device_facts([(k.lower().encode(), v.encode()) for k, v in esp8266("1.0.0").items()])
    sink.write(Decision(("10.0.0.5", 1), "GET", "/update/demo/d1mini", b"", device, 304, "version current"))
    assert stream.getvalue() == ""  # queued, not yet formatted or written
    logger.warning("catalog: something")
    sink.write(Decision(None, "GET", "/x\x1b[2J", b"a=1", None, 404, "no such file"))
    handler.flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].endswith(f"INFO {MAC} 10.0.0.5 GET /update/demo/d1mini -> 304 version current "
                             "(device ESP8266 sketch version 1.0.0)")
    assert lines[1].endswith("WARNING catalog: something")
    assert lines[2].endswith("INFO - - GET /x\\x1b[2J?a=1 -> 404 no such file")  # escaped, never raw
    logger.removeHandler(handler)


def test_format_line_cuts_long_paths() -> None:
    line = format_line(Decision(None, "GET", "/" + "a" * 500, b"", None, 404, "no such file"))
    assert len(line) < 260


def esp8266_device(version: str | None = "1.0.0") -> object:
    return device_facts([(k.lower().encode(), v.encode()) for k, v in esp8266(version).items()])


def offer_entry(tmp_path: Path) -> Decision:
    built = demo_catalog(tmp_path / "catalog")
    target = built.targets[("demo", "d1mini")]
    release = next(r for r in target.releases if str(r.version) == "1.1.0")
    device = esp8266_device("1.0.0")
    return Decision(("10.0.0.5", 1), "GET", "/update/demo/d1mini", b"", device,  # type: ignore[arg-type]
                    200, "version older", Offer(release, release.firmware, "version older"))


def test_no_line_is_lost_when_written_and_flushed_on_two_threads() -> None:
    # The event loop appends decisions while another thread (a catalog reload logging, the
    # periodic flush) drains them: every line must come out exactly once.
    stream = io.StringIO()
    handler = _BatchedHandler(stream, _Formatter())
    sink = BatchedLog(handler)
    count = 60_000
    entries = [Decision(None, "GET", f"/n/{i}", b"", None, 404, "no such file") for i in range(count)]
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            handler.flush()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    flusher = threading.Thread(target=drain)
    flusher.start()
    try:
        for entry in entries:
            sink.write(entry)
    finally:
        stop.set()
        flusher.join()
        sys.setswitchinterval(interval)
    handler.flush()
    seen = [int(line.split(" GET /n/")[1].split()[0]) for line in stream.getvalue().splitlines()]
    assert len(seen) == count and sorted(seen) == list(range(count))


def test_json_format_one_object_per_line(tmp_path: Path) -> None:
    stream = io.StringIO()
    handler = _BatchedHandler(stream, _JSONFormatter())
    logger = logging.getLogger("acrelease.test-json")
    logger.propagate = False
    logger.addHandler(handler)
    sink = BatchedLog(handler)
    offer = offer_entry(tmp_path)
    odd = Decision(("10.0.0.6", 2), "GET", "/caf\u00e9/\x1b[2J\n", b"q=\"1\"", None, 404, "no such file")
    current = Decision(("10.0.0.7", 3), "GET", "/update/demo/d1mini", b"channel=beta",
                       esp8266_device("1.1.0"), 304, "version current",  # type: ignore[arg-type]
                       NoUpdate("version current"))
    for entry in (offer, odd, current):
        sink.write(entry)
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        logger.exception("catalog: failed\nacross lines")
    handler.flush()
    logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4
    documents = [json.loads(line) for line in lines]
    for document, entry in zip(documents, (offer, odd, current), strict=False):
        assert document["level"] == "INFO" and document["logger"] == "acrelease.server"
        assert document["message"] == format_line(entry)
        assert {k: v for k, v in document.items() if k not in ("time", "level", "logger", "message")} == fields(entry)
        assert document["time"].endswith("Z") and document["time"][10] == "T"
    assert documents[0]["serving_version"] == "1.1.0" and documents[0]["serving_file"] == "demo-d1mini-1.1.0.bin"
    assert documents[0]["mac"] == MAC and documents[0]["version"] == "1.0.0" and documents[0]["status"] == 200
    assert documents[2]["serving_version"] is None and documents[2]["path"] == "/update/demo/d1mini?channel=beta"
    assert documents[3]["level"] == "ERROR" and "boom" in documents[3]["exception"]
    assert documents[3]["logger"] == "acrelease.test-json"


def test_debug_details_precede_each_decision(tmp_path: Path) -> None:
    for formatter in (_Formatter(), _JSONFormatter()):
        stream = io.StringIO()
        handler = _BatchedHandler(stream, formatter, debug=True)
        sink = BatchedLog(handler)
        sink.write(offer_entry(tmp_path))
        sink.write(Decision(("10.0.0.5", 1), "GET", "/update/demo/d1mini", b"channel=beta",
                            esp8266_device(None), 200, "running version unknown"))  # type: ignore[arg-type]
        sink.write(Decision(None, "GET", "/_catalog", b"op=list&path=.", None, 200, "catalog listed"))
        handler.flush()
        lines = stream.getvalue().splitlines()
        assert len(lines) == 6
        if isinstance(formatter, _JSONFormatter):
            documents = [json.loads(line) for line in lines]
            assert [d["level"] for d in documents] == ["DEBUG", "INFO"] * 3
            first = documents[0]
            assert first["mac"] == MAC and first["version"] == "1.0.0" and first["version_parsed"] == "1.0.0"
            assert first["free_space"] == 4194304 and first["mode"] == "sketch" and first["channel"] == "stable"
            assert first["sketch_md5"] == "a43ad019932b627ab90ee35a94a764ee"
            assert documents[2]["channel"] == "beta" and documents[2]["version"] is None
            assert documents[4]["device"] is None
        else:
            assert [line.split()[2] for line in lines] == ["DEBUG", "INFO"] * 3
            assert f"DEBUG {MAC} 10.0.0.5 request details: arch='ESP8266'" in lines[0]
            assert "version='1.0.0' version-parsed='1.0.0'" in lines[0] and "free-space=4194304" in lines[0]
            assert "channel='stable'" in lines[0] and "channel='beta'" in lines[2]
            assert "not an ESP update client (GET /_catalog?op=list&path=.)" in lines[4]


def test_default_sink_logs_details_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="acrelease")
    DecisionLog().write(Decision(("10.0.0.5", 1), "GET", "/update/demo/d1mini", b"", esp8266_device(),  # type: ignore[arg-type]
                                 304, "version current"))
    assert [r.levelname for r in caplog.records] == ["DEBUG", "INFO"]
    assert "request details" in caplog.records[0].getMessage()


@pytest.mark.parametrize(("name", "level"), [("debug", logging.DEBUG), ("Debug", logging.DEBUG),
                                             ("INFO", logging.INFO), (" warning ", logging.WARNING)])
def test_log_level_in_any_case(name: str, level: int) -> None:
    assert log_level(name) == level


@pytest.mark.parametrize("name", ["verbose", "", "NOTSET", "5"])
def test_log_level_refuses_what_is_not_a_level(name: str) -> None:
    with pytest.raises(ServeError, match="--log"):
        log_level(name)


def channel_target(tmp_path: Path) -> CatalogBuilder:
    built = CatalogBuilder(tmp_path / "catalog")
    built.add("p", "t", "esp8266", "1.0.0")
    built.add("p", "t", "esp8266", "1.1.0")
    built.add("p", "t", "esp8266", "1.2.0-rc.1", channel="beta")
    built.add("p", "t", "esp8266", "1.3.0-rc.1", channel="nightly", yanked=True)
    return built


def test_describe_newest_names_each_channel(tmp_path: Path) -> None:
    built = channel_target(tmp_path)
    assert describe_newest(built.targets[("p", "t")]) == "newest: stable 1.1.0, beta 1.2.0-rc.1"
    built.target("p", "none", "esp32")
    assert describe_newest(built.targets[("p", "none")]) == "nothing published"


def test_unknown_channel_warned_once_per_target_and_channel(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    target = channel_target(tmp_path).targets[("p", "t")]
    watch = ChannelWatch(limit=3)
    caplog.set_level(logging.WARNING, logger="acrelease")
    for channel in ("stable", "beta", "nightly"):  # nightly: its only release is yanked, still known
        watch.check(target, channel, MAC, "10.0.0.5")
    assert caplog.records == []
    for _ in range(3):
        watch.check(target, "nosuch", MAC, "10.0.0.5")
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "'nosuch'" in message and "p/t" in message and MAC in message and "answered as stable" in message
    watch.check(target, "bad\x1b[2J", None, None)
    assert "'bad\\x1b[2J'" in caplog.records[-1].getMessage()  # escaped, never raw
    for i in range(10):  # a client inventing names: memory stays bounded, one last warning says so
        watch.check(target, f"x{i}", None, None)
    assert len(watch._warned) == 3
    assert len(caplog.records) == 4 and "further ones are not" in caplog.records[-1].getMessage()
