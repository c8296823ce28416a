"""``GET /healthz`` on the device port and the admin port: is this server fit to take devices?

For load balancers and systemd watchdogs. The answer reveals nothing about the fleet: ``200`` with
the catalog generation being served while the catalog is loaded and the fleet store (when there
is one) is being written; ``503`` with the reason otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Check = Callable[[], str | None]
"""A part of the server that may be unhealthy: returns why, or ``None`` when it is fine."""


def health(generation: int, loaded: bool, checks: Sequence[Check] = ()) -> tuple[int, bytes]:
    """The status and the one-line body of ``/healthz``."""
    if not loaded:
        return 503, b"catalog not loaded yet\n"
    for check in checks:
        problem = check()
        if problem:
            return 503, f"{problem}\n".encode()
    return 200, f"ok: catalog generation {generation}\n".encode()
