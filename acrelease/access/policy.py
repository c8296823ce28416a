"""The access decision for one request: credentials first, then the MAC allowlist.

* Credentials (when configured) are required on every route that can reveal firmware: the
  update endpoint, downloads and the AutoConnect catalog. Missing or wrong -> 401 with
  ``WWW-Authenticate: Basic realm="acrelease"`` (ESP8266 reports -108, ESP32 -104; docs/protocol.md F.25).
* The allowlist (when configured) applies to updates and downloads: a MAC not on it, or no
  usable MAC, -> 403 (F.25, F.32). The catalog request carries no MAC (A.2): credentials only.
* Caveat: AutoConnect's catalog request is made by a local ``HTTPClient`` in ``_onCatalog`` that
  never gets ``setAuthorization`` (A.2), so with credentials on, AutoConnect's update page shows
  "Update server responds (401)". ``catalog_auth=False`` opens the listing (names, sizes,
  dates; never image bytes) for deployments that use AutoConnect's page; downloads stay gated.
* Credentials are checked before the allowlist so that an unauthenticated client cannot probe
  which MACs are listed (403 vs 401).

``reason`` strings are fixed texts (plus, once authenticated, the user name from our own file):
never the password, the header, or a user name a client made up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from acrelease.access.allowlist import Allowlist, load_allowlist
from acrelease.access.credentials import AuthBusy, Credentials, load_credentials

__all__ = ["AccessPolicy", "AccessResult", "RouteKind"]

RouteKind = Literal["update", "download", "catalog"]
Header = tuple[bytes, bytes]

CHALLENGE: Header = (b"www-authenticate", b'Basic realm="acrelease"')
RETRY_AFTER: Header = (b"retry-after", b"5")


@dataclass(frozen=True, slots=True)
class AccessResult:
    """``allowed`` or not; when not, answer ``status`` with ``headers`` added, and log ``reason``."""

    allowed: bool
    status: int
    """200 when allowed; 401, 403 or 503 otherwise."""
    reason: str
    user: str | None = None
    headers: tuple[Header, ...] = ()


OPEN = AccessResult(True, 200, "open")
NO_CREDENTIALS = AccessResult(False, 401, "auth: no credentials", headers=(CHALLENGE,))
WRONG_CREDENTIALS = AccessResult(False, 401, "auth: wrong or malformed credentials", headers=(CHALLENGE,))
BUSY = AccessResult(False, 503, "auth: too many verifications pending", headers=(RETRY_AFTER,))
NO_MAC = AccessResult(False, 403, "allowlist: no usable MAC header")
NOT_LISTED = AccessResult(False, 403, "allowlist: MAC not listed")


class AccessPolicy:
    """Combines optional :class:`Credentials` and :class:`Allowlist`; with neither, everything is open."""

    def __init__(self, credentials: Credentials | None = None, allowlist: Allowlist | None = None, *,
                 catalog_auth: bool = True) -> None:
        self.credentials = credentials
        self.catalog_auth = catalog_auth
        self.allowlist = allowlist
        self._granted: dict[str, AccessResult] = {}

    @classmethod
    def from_files(cls, auth: Path | None, allow: Path | None, *, catalog_auth: bool = True) -> AccessPolicy:
        """``serve --auth FILE --allow FILE``; raises :class:`~acrelease.access.files.AccessError`."""
        return cls(load_credentials(auth) if auth else None, load_allowlist(allow) if allow else None,
                   catalog_auth=catalog_auth)

    @property
    def enabled(self) -> bool:
        """False when nothing is configured: the server may skip the check entirely."""
        return self.credentials is not None or self.allowlist is not None

    def check(self, route: RouteKind, authorization: str | bytes | None, mac: str | None) -> AccessResult:
        """Decide synchronously (a cache miss hashes inline, ~50-100 ms). Never raises."""
        user = None
        if self.credentials is not None and (route != "catalog" or self.catalog_auth):
            if authorization is None:
                return NO_CREDENTIALS
            user = self.credentials.check(authorization)
            if user is None:
                return WRONG_CREDENTIALS
        return self._after_credentials(route, user, mac)

    async def check_async(self, route: RouteKind, authorization: str | bytes | None,
                          mac: str | None) -> AccessResult:
        """Decide without blocking the event loop (cache hits answer at once). Never raises
        for client input; a flood of distinct guesses gets :data:`BUSY` (503 + Retry-After)."""
        user = None
        if self.credentials is not None and (route != "catalog" or self.catalog_auth):
            if authorization is None:
                return NO_CREDENTIALS
            try:
                user = await self.credentials.check_async(authorization)
            except AuthBusy:
                return BUSY
            if user is None:
                return WRONG_CREDENTIALS
        return self._after_credentials(route, user, mac)

    def _after_credentials(self, route: RouteKind, user: str | None, mac: str | None) -> AccessResult:
        if self.allowlist is not None and route != "catalog" and not self.allowlist.allows(mac):
            return NO_MAC if mac is None else NOT_LISTED
        if user is None:
            return OPEN
        granted = self._granted.get(user)
        if granted is None:
            if len(self._granted) > 4096:
                self._granted.clear()
            granted = self._granted[user] = AccessResult(True, 200, f"user {user}", user)
        return granted

    def reload_if_changed(self) -> bool:
        """Re-stat both files now (for a server watcher); True if either was reloaded."""
        reloaded = self.credentials.reload_if_changed() if self.credentials else False
        return (self.allowlist.reload_if_changed() if self.allowlist else False) or reloaded

    def close(self) -> None:
        if self.credentials is not None:
            self.credentials.close()
