"""The device credentials file and the per-request check behind ``acrelease serve --auth FILE``.

File format: UTF-8 text, one ``user:<hash>`` per line (hash format: :mod:`.passwords`), blank
lines and ``#`` comment lines ignored. A user name is 1-64 characters, no ``:``, no whitespace,
no control characters, not starting with ``#``.

The request path must not pay the slow hash (a fleet re-presents the same header on
every check). :meth:`Credentials.check` therefore keys a cache on a keyed BLAKE2b digest of the
exact header bytes (per-process random key; the raw header and password are never stored):

* positive entries (header -> user), LRU-bounded: the slow hash runs once per distinct header;
  on reload, entries survive only for users whose stored hash is unchanged;
* negative entries (header -> expiry), bounded and short-lived: the same wrong header repeated
  by a misconfigured fleet costs one slow hash per TTL instead of one per request, while every
  *new* guess of a brute-force attack still pays the full hash. Cleared on every reload so a
  newly added user is let in at once.

An unknown user costs the same slow hash as a known one (a dummy hash), so timing does not
reveal which user names exist.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from acrelease.access.files import WatchedFile, read_file, write_atomically
from acrelease.access.passwords import KEY_BYTES, MAX_HEADER, N, P, R, ScryptHash, parse_basic, parse_hash
from acrelease.access.passwords import hash_password as hash_password
from acrelease.access.passwords import verify_password as verify_password
from acrelease.errors import AccessError

__all__ = ["AuthBusy", "Credentials", "add_user", "list_users", "load_credentials", "remove_user", "valid_user"]

WHAT = "credentials file"
MAX_USER = 64
Users = Mapping[str, ScryptHash]


class AuthBusy(Exception):
    """:meth:`Credentials.check_async` has ``max_pending`` slow verifications queued already."""


def valid_user(name: str) -> str | None:
    """Why ``name`` cannot be a user name, or ``None`` when it can."""
    if not 1 <= len(name) <= MAX_USER:
        return f"a user name has 1-{MAX_USER} characters"
    if ":" in name or name.startswith("#") or any(c.isspace() or not c.isprintable() for c in name):
        return "a user name has no ':', whitespace or control characters and does not start with '#'"
    return None


def _lines(data: bytes, path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every line, decoding each alone so an error names its line."""
    result = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        try:
            result.append((number, raw.rstrip(b"\r").decode("utf-8")))
        except UnicodeDecodeError:
            raise AccessError(f"{path}:{number}: not UTF-8 text") from None
    return result


def _user_of(line: str) -> str | None:
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    return stripped.partition(":")[0]


def parse_credentials(data: bytes, path: Path) -> dict[str, ScryptHash]:
    """Parse a credentials file's bytes; raises :class:`AccessError` ``file:line: problem``."""
    users: dict[str, ScryptHash] = {}
    for number, line in _lines(data, path):
        user = _user_of(line)
        if user is None:
            continue
        where = f"{path}:{number}"
        _, colon, encoded = line.strip().partition(":")
        if not colon:
            raise AccessError(f"{where}: expected user:$scrypt$...; add users with 'acrelease auth add'")
        problem = valid_user(user)
        if problem:
            raise AccessError(f"{where}: bad user name: {problem}")
        if user in users:
            raise AccessError(f"{where}: user {user!r} appears twice; keep one line per user")
        try:
            users[user] = parse_hash(encoded)
        except ValueError as exc:
            raise AccessError(f"{where}: bad password hash for {user!r}: {exc}; set it again with "
                              f"'acrelease auth add {user}'") from None
    return users


def load_credentials(path: Path, *, interval: float = 1.0, cache_size: int = 4096, negative_size: int = 1024,
                     negative_ttl: float = 10.0, max_pending: int = 64) -> Credentials:
    """Load ``path`` (raises :class:`AccessError`, one line) into a :class:`Credentials`."""
    watched = WatchedFile(path, WHAT, lambda data: parse_credentials(data, path), interval=interval)
    return Credentials(watched, cache_size=cache_size, negative_size=negative_size, negative_ttl=negative_ttl,
                       max_pending=max_pending)


class Credentials:
    """Checks ``Authorization`` header values against a credentials file (see the module docstring).

    Not thread-safe: use it from one thread (the server's event loop). :meth:`check_async`
    moves only the pure slow hash to a small thread pool (scrypt releases the GIL).
    """

    def __init__(self, file: WatchedFile[dict[str, ScryptHash]], *, cache_size: int = 4096,
                 negative_size: int = 1024, negative_ttl: float = 10.0, max_pending: int = 64) -> None:
        self.file = file
        self._users: Users = file.value
        self._key = os.urandom(32)
        self._hits: OrderedDict[bytes, str] = OrderedDict()
        self._misses: dict[bytes, float] = {}
        self._cache_size, self._negative_size, self._negative_ttl = cache_size, negative_size, negative_ttl
        self._max_pending = max_pending
        self._pending: dict[bytes, asyncio.Future[str | None]] = {}
        self._executor: ThreadPoolExecutor | None = None  # created on first use: survives serve's fork
        # Same cost as a real user's hash; no password derives to these random bytes.
        self._dummy = ScryptHash(N, R, P, os.urandom(16), os.urandom(KEY_BYTES))

    @property
    def users(self) -> list[str]:
        return sorted(self._users)

    def reload_if_changed(self) -> bool:
        """Re-read the file now if it changed (a broken file keeps the previous users). True if reloaded."""
        return self.file.reload_if_changed() and self._apply()

    def _poll(self) -> None:
        if self.file.poll():
            self._apply()

    def _apply(self) -> bool:
        old, new = self._users, self.file.value
        self._users = new
        for digest, user in list(self._hits.items()):
            if new.get(user) != old.get(user):  # removed, or password changed
                del self._hits[digest]
        self._misses.clear()
        return True

    # -- the request path --------------------------------------------------------------------

    def _digest(self, value: str | bytes) -> bytes | None:
        if len(value) > MAX_HEADER:
            return None
        if isinstance(value, str):
            try:
                value = value.encode("latin-1")  # ASGI header bytes round-trip through latin-1
            except UnicodeEncodeError:
                return None
        return hashlib.blake2b(value, key=self._key, digest_size=16).digest()

    def _cached(self, digest: bytes) -> str | bool | None:
        """The cached user, ``False`` for a cached failure, ``True`` for "not cached"."""
        user = self._hits.get(digest)
        if user is not None:
            self._hits.move_to_end(digest)
            return user
        expiry = self._misses.get(digest)
        if expiry is not None:
            if time.monotonic() < expiry:
                return False
            del self._misses[digest]
        return True

    def _lookup(self, authorization: str | bytes | None) -> bytes | str | None:
        """What is known without hashing: the header's digest when it must be verified (bytes),
        else the answer itself (the cached user, or ``None``)."""
        self._poll()
        if authorization is None:
            return None
        digest = self._digest(authorization)
        if digest is None:
            return None
        cached = self._cached(digest)
        return digest if cached is True else cached or None

    def check(self, authorization: str | bytes | None) -> str | None:
        """The user whose credentials ``authorization`` (the raw header value) carries, else ``None``.

        Never raises. Runs the slow hash inline on a cache miss (~50-100 ms): fine for tests and
        tools; the server should prefer :meth:`check_async`.
        """
        digest = self._lookup(authorization)
        if not isinstance(digest, bytes):
            return digest
        parsed = parse_basic(authorization)
        if parsed is None:
            return None  # parsing is cheap: nothing to cache
        return self._store(digest, self._verify(parsed))

    async def check_async(self, authorization: str | bytes | None) -> str | None:
        """Like :meth:`check`, but a cache miss hashes in a worker thread so the event loop keeps
        serving, and concurrent requests with the same header share one hash (a fleet arriving
        at once after a restart costs one hash per distinct credential, not one per device).

        Raises :class:`AuthBusy` when ``max_pending`` distinct verifications are already queued
        (a flood of guesses); answer 503 + Retry-After rather than queue without bound.
        """
        digest = self._lookup(authorization)
        if not isinstance(digest, bytes):
            return digest
        future = self._pending.get(digest)
        if future is None:
            parsed = parse_basic(authorization)
            if parsed is None:
                return None
            if len(self._pending) >= self._max_pending:
                raise AuthBusy()
            # A task of its own, not the first requester's: cancelling one request (client gone)
            # must not cancel the hash the others wait for.
            future = asyncio.ensure_future(self._verify_async(digest, parsed))
            self._pending[digest] = future
            future.add_done_callback(lambda _: self._pending.pop(digest, None))
        return await asyncio.shield(future)

    async def _verify_async(self, digest: bytes, parsed: tuple[str, bytes]) -> str | None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="acrelease-auth")
        users = self._users
        user = await asyncio.get_running_loop().run_in_executor(self._executor, self._verify, parsed)
        if self._users is not users:
            # Reloaded while hashing: the user may be gone or have a new password; do not cache.
            return user if user is not None and self._users.get(user) == users.get(user) else None
        return self._store(digest, user)

    def close(self) -> None:
        """Stop the hashing threads (the server's shutdown)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _verify(self, parsed: tuple[str, bytes]) -> str | None:
        """The slow part; pure with respect to the caches (runs in a worker thread)."""
        user, password = parsed
        stored = self._users.get(user)
        ok = verify_password(password, stored if stored is not None else self._dummy)
        return user if ok and stored is not None else None

    def _store(self, digest: bytes, user: str | None) -> str | None:
        if user is not None:
            self._hits[digest] = user
            if len(self._hits) > self._cache_size:
                self._hits.popitem(last=False)
            return user
        now = time.monotonic()
        if len(self._misses) >= self._negative_size:
            for key in [k for k, expiry in self._misses.items() if expiry <= now]:
                del self._misses[key]
            while len(self._misses) >= self._negative_size:
                del self._misses[next(iter(self._misses))]  # oldest first (insertion order)
        self._misses[digest] = now + self._negative_ttl
        return None


# -- editing the file (the CLI) -------------------------------------------------------------------

def _read_existing(path: Path) -> list[tuple[int, str]]:
    data, _ = read_file(path, WHAT)
    parse_credentials(data, path)  # refuse to rewrite a file we cannot fully understand
    lines = _lines(data, path)
    if lines and lines[-1][1] == "":
        lines.pop()  # the empty string after the final newline
    return lines


def add_user(path: Path, user: str, password: str) -> bool:
    """Set ``user``'s password in ``path`` (created 0600 if missing); True if the user is new.

    Other lines, comments included, are kept verbatim; the file is replaced atomically.
    """
    problem = valid_user(user)
    if problem:
        raise AccessError(f"bad user name {user!r}: {problem}")
    if not password:
        raise AccessError("the password is empty")
    lines = _read_existing(path) if path.exists() else []
    entry = f"{user}:{hash_password(password)}"
    texts = [entry if _user_of(text) == user else text for _, text in lines]
    new = entry not in texts
    if new:
        texts.append(entry)
    write_atomically(path, "".join(t + "\n" for t in texts).encode("utf-8"))
    return new


def remove_user(path: Path, user: str) -> None:
    """Remove ``user`` from ``path``; raises :class:`AccessError` if the user is not there."""
    lines = _read_existing(path)
    texts = [text for _, text in lines if _user_of(text) != user]
    if len(texts) == len(lines):
        raise AccessError(f"{path}: no user {user!r}; see 'acrelease auth list --file {path}'")
    write_atomically(path, "".join(t + "\n" for t in texts).encode("utf-8"))


def list_users(path: Path) -> list[str]:
    """The user names in ``path``, in file order."""
    data, _ = read_file(path, WHAT)
    return list(parse_credentials(data, path))
