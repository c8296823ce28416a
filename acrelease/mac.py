"""MAC addresses: the one normal form acrelease keys devices by (docs/protocol.md H.7).

The ESP cores send ``AA:BB:CC:DD:EE:FF`` (upper-case hex with colons, ``WiFi.macAddress()``);
people type MACs in allowlists and commands in any case, with colons, dashes or nothing between
the octets. All of these become ``AA:BB:CC:DD:EE:FF``; anything else is not a MAC.
"""

from __future__ import annotations

import re

_MAC = re.compile(r"[0-9A-Fa-f]{2}([:-]?)[0-9A-Fa-f]{2}(?:\1[0-9A-Fa-f]{2}){4}")
"""Six octets, one separator style throughout (``:``, ``-`` or none)."""


def normalise_mac(text: str | None) -> str | None:
    """``aa:bb:cc:dd:ee:ff``, ``AA-BB-CC-DD-EE-FF`` or ``aabbccddeeff`` -> ``AA:BB:CC:DD:EE:FF``;
    ``None`` for anything else (mixed separators, other lengths, non-hex, empty)."""
    if not text or len(text) > 17 or not _MAC.fullmatch(text):
        return None
    digits = text.replace(":", "").replace("-", "").upper()
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))
