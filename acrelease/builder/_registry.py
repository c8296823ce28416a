"""Notice early that PlatformIO is trying to download from a registry it cannot reach.

The first build of a platform makes ``pio`` install it and its toolchains from PlatformIO's
registry. When the registry is unreachable, ``pio`` prints ``Installing <name>`` and then
nothing for about a minute per request (urllib3 retries with back-off on two mirrors) before
``HTTPClientError:``, and a project needs several requests: minutes of silence. So when a
registry install starts we probe the registry ourselves (DNS + TCP connect, a few seconds),
and any PlatformIO connection error in the output stops the run at once.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

REGISTRY_HOSTS: tuple[tuple[str, int], ...] = (
    ("registry.platformio.org", 443),
    ("registry.nm1.platformio.org", 443),  # PlatformIO's mirror
)
PROBE_TIMEOUT = 4.0

# "Platform Manager: Installing espressif8266", "Tool Manager: Installing platformio/tool-x @ ~1.0"
_INSTALLING = re.compile(r"^\s*(?:Platform|Tool|Library|Package) Manager: Installing (\S+)")
# What PlatformIO prints when a request finally fails, whatever the cause.
_CONNECTION_ERRORS = (
    "HTTPClientError",
    "InternetConnectionError",
    "You are not connected to the Internet",
    "Max retries exceeded",
    "NameResolutionError",
)

Probe = Callable[[], bool]


def unreachable_message(package: str) -> str:
    return (
        f"PlatformIO's registry is unreachable, and it must download {package} for this build; "
        "install the platform and its toolchains first where the registry is reachable "
        "(`pio pkg install -e ENV`), or check your network/proxy"
    )


def registry_reachable(timeout: float = PROBE_TIMEOUT, environ: Mapping[str, str] | None = None) -> bool:
    """True when a TCP connection to a registry host (or to the HTTPS proxy that ``pio``, run
    with ``environ``, would use) can be opened within ``timeout`` seconds."""
    environ = os.environ if environ is None else environ
    proxy = environ.get("HTTPS_PROXY") or environ.get("https_proxy")
    targets = list(REGISTRY_HOSTS)
    if proxy:
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        targets = [(parts.hostname or "", parts.port or 8080)]
    for host, port in targets:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            continue
    return False


def _needs_registry(spec: str) -> bool:
    """Bare names (``espressif8266``, ``platformio/tool-x``) come from the registry; local
    folders and URLs (``file://``, ``https://``, ``git+``) do not."""
    return "://" not in spec and not spec.startswith(("/", ".", "~", "git+", "symlink:"))


class RegistryWatcher:
    """A :class:`acrelease.builder._process.Watcher` for ``pio`` runs.

    ``probe`` is injectable so the decision logic can be tested on captured output without a
    network; by default it is :func:`registry_reachable`, run on a thread so that the build's
    output keeps streaming meanwhile.
    """

    def __init__(self, probe: Probe = registry_reachable) -> None:
        self._probe = probe
        self._reason: str | None = None
        self._probing: threading.Thread | None = None
        self._lock = threading.Lock()

    def feed(self, line: str) -> None:
        match = _INSTALLING.match(line)
        if match and _needs_registry(match.group(1)) and self._probing is None:
            package = match.group(1)
            self._probing = threading.Thread(target=self._run_probe, args=(package,), daemon=True)
            self._probing.start()
        elif any(marker in line for marker in _CONNECTION_ERRORS):
            self._set(unreachable_message("packages"))

    def verdict(self) -> str | None:
        with self._lock:
            return self._reason

    def _run_probe(self, package: str) -> None:
        if not self._probe():
            self._set(unreachable_message(package))

    def _set(self, reason: str) -> None:
        with self._lock:
            if self._reason is None:
                self._reason = reason
