"""The server's batched log: decision lines formatted in bulk, in order with other records."""

from __future__ import annotations

import io
import logging

from acrelease.server.decisions import Decision, format_line
from acrelease.server.device import device_facts
from acrelease.server.logs import BatchedLog, _BatchedHandler, _Formatter
from tests.server.esp import MAC, esp8266


def test_lines_are_formatted_when_written_and_keep_their_order() -> None:
    stream = io.StringIO()
    handler = _BatchedHandler(stream, _Formatter("%(asctime)s %(levelname)s %(message)s"))
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
