"""acrelease.server.device: DeviceFacts from request headers (never raises on client input)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acrelease.server.device import device_facts, normalise_mac
from acrelease.server.h1parse import Request, parse_head
from tests.server.esp import MAC, esp32, esp8266


def raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode(), v.encode()) for k, v in headers.items()]


def test_esp8266_header_set() -> None:
    facts = device_facts(raw(esp8266("1.2.3")))
    assert facts.arch == "ESP8266" and facts.update_agent and facts.missing == ()
    assert facts.mac == MAC
    assert facts.free_space == 4194304 and facts.chip_size == 4194304 and facts.sketch_size == 400000
    assert facts.sketch_md5 == "a43ad019932b627ab90ee35a94a764ee"
    assert str(facts.version) == "1.2.3" and facts.mode == "sketch" and facts.chip_id == "15602487"


def test_names_case_insensitive() -> None:
    # F.6: names reach the app lower-cased (ASGI); the HTTP/1 parser does it for any spelling.
    head = "GET / HTTP/1.0\r\n" + "\r\n".join(f"{k.upper()}: {v}" for k, v in esp8266("1.0.0").items())
    request = parse_head(head.encode())
    assert isinstance(request, Request)
    facts = device_facts(request.headers)
    assert facts.arch == "ESP8266" and facts.missing == () and str(facts.version) == "1.0.0"


def test_esp32_new_and_old_core() -> None:
    new = device_facts(raw(esp32("2.0.0", md5="A" * 32)))
    assert new.arch == "ESP32" and new.missing == () and new.mac == MAC and new.sketch_md5 == "a" * 32
    old = device_facts(raw(esp32(new_core=False)))
    assert old.arch == "ESP32" and old.missing == () and old.sketch_md5 is None and old.mac == MAC


def test_base_mac_when_no_sta_mac() -> None:
    headers = esp32()
    del headers["x-ESP32-STA-MAC"]
    headers["x-ESP32-BASE-MAC"] = "aa:bb:cc:dd:ee:0f"
    assert device_facts(raw(headers)).mac == "AA:BB:CC:DD:EE:0F"


def test_missing_mandatory_and_non_esp() -> None:
    headers = esp8266()
    del headers["x-ESP8266-free-space"], headers["x-ESP8266-mode"]
    assert device_facts(raw(headers)).missing == ("x-ESP8266-free-space", "x-ESP8266-mode")
    browser = device_facts([(b"user-agent", b"curl/8.0")])
    assert browser.arch is None and not browser.update_agent
    no_agent = device_facts(raw({k: v for k, v in esp8266().items() if k != "User-Agent"}))
    assert no_agent.arch == "ESP8266" and not no_agent.update_agent


@pytest.mark.parametrize(("text", "expected"), [
    ("DE:BA:7A:B1:E0:42", MAC), ("de:ba:7a:b1:e0:42", MAC), ("deba7ab1e042", MAC), ("DE-BA-7A-B1-E0-42", MAC),
    ("DE:BA:7A:B1:E0", None), ("GG:BA:7A:B1:E0:42", None), ("", None), ("DE:BA:7A:B1:E0:42:00", None),
    # Octets split elsewhere, or separators mixed: not a MAC (one normaliser for headers, files and commands)
    ("D:EBA:7A:B1:E0:42", None), ("DE:BA-7A:B1:E0:42", None), ("DEBA7A:B1E042", None),
])
def test_normalise_mac(text: str, expected: str | None) -> None:
    assert normalise_mac(text) == expected


@pytest.mark.parametrize("value", ["-1", "12k", "1e6", "", " ", "9" * 25, "١٢٣", "0x10"])
def test_bad_numbers_are_none(value: str) -> None:
    headers = raw(esp8266())
    headers = [(k, v) if k != b"x-esp8266-free-space" else (k, value.encode()) for k, v in headers]
    facts = device_facts(headers)
    assert facts.free_space is None
    assert "x-ESP8266-free-space" not in facts.missing  # sent, but unusable


def test_long_non_ascii_and_duplicates() -> None:
    headers = raw(esp8266())
    headers += [(b"x-esp8266-version", b"1" * 300), (b"x-esp8266-sta-mac", MAC.encode())]
    facts = device_facts(headers)
    assert facts.version is None and facts.version_text is None
    assert facts.mac == MAC  # identical repeat: one value
    conflicting = [*raw(esp8266()), (b"x-esp8266-sta-mac", b"AA:AA:AA:AA:AA:AA")]
    assert device_facts(conflicting).mac is None  # ambiguous: unusable
    non_ascii = [*raw(esp8266()), (b"x-esp8266-version", "1.0.0é".encode())]
    assert device_facts(non_ascii).version is None


header_names = st.sampled_from([
    b"user-agent", b"x-esp8266-version", b"x-esp8266-mode", b"x-esp8266-free-space", b"x-esp8266-sta-mac",
    b"x-esp32-base-mac", b"x-esp32-sketch-md5", b"x-esp32-chip-size", b"x-esp8266-chip-size", b"host",
])
header_values = st.one_of(st.binary(max_size=300), st.sampled_from(
    [b"ESP8266-http-Update", b"ESP32-http-Update", b"1.2.3", b"sketch", b"spiffs", b"-5", b"4194304"]))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(header_names, header_values), max_size=20))
def test_never_raises_and_values_are_sane(headers: list[tuple[bytes, bytes]]) -> None:
    facts = device_facts(headers)
    assert facts.arch in (None, "ESP8266", "ESP32")
    for number in (facts.free_space, facts.chip_size, facts.sketch_size):
        assert number is None or number >= 0
    assert facts.mac is None or normalise_mac(facts.mac) == facts.mac
    assert facts.sketch_md5 is None or (len(facts.sketch_md5) == 32 and facts.sketch_md5 == facts.sketch_md5.lower())
    for text in (facts.version_text, facts.mode, facts.sdk_version):
        assert text is None or (text.isascii() and len(text) <= 128)
