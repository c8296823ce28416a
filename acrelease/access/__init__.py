"""Access control for the update server: device credentials, MAC allowlist, the decision.

Public API (the server and the ``auth`` CLI use only these names)::

    hash_password(password) -> str
    add_user(path, user, password) -> bool          # True if new; atomic, 0600
    remove_user(path, user) -> None
    list_users(path) -> list[str]
    load_credentials(path) -> Credentials           # .check(header) / await .check_async(header)
    load_allowlist(path) -> Allowlist               # .allows(mac)
    AccessPolicy(credentials, allowlist)            # .check / await .check_async -> AccessResult
    authorization(headers) -> bytes | None          # the Authorization value of ASGI headers

Errors in files are :class:`AccessError` (an ``AcreleaseError``), one line naming ``file:line``.
"""

from __future__ import annotations

from collections.abc import Iterable

from acrelease.access.allowlist import Allowlist, load_allowlist, normalise_mac, parse_allowlist
from acrelease.access.credentials import (
    AuthBusy,
    Credentials,
    add_user,
    list_users,
    load_credentials,
    parse_credentials,
    remove_user,
    valid_user,
)
from acrelease.access.passwords import hash_password, parse_basic, verify_password
from acrelease.access.policy import AccessPolicy, AccessResult, RouteKind
from acrelease.errors import AccessError

__all__ = [
    "AccessError", "AccessPolicy", "AccessResult", "Allowlist", "AuthBusy", "Credentials", "RouteKind",
    "add_user", "authorization", "hash_password", "list_users", "load_allowlist", "load_credentials",
    "normalise_mac", "parse_allowlist", "parse_basic", "parse_credentials", "remove_user", "valid_user",
    "verify_password",
]

_MALFORMED = b"!"  # fails parse_basic: two different Authorization headers are ambiguous


def authorization(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The ``Authorization`` value of ASGI ``(name, value)`` pairs; ``None`` if absent. Two
    different values are ambiguous and yield a value that never authenticates."""
    found: bytes | None = None
    for name, value in headers:
        if len(name) == 13 and name.lower() == b"authorization":
            if found is not None and found != value:
                return _MALFORMED
            found = value
    return found
