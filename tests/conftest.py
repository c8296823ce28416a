"""Fixtures shared by several test folders: a throwaway PostgreSQL (tests/pgserver.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pgserver import PgServer, missing


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL for the session (about 3 s to start); skips only where it is not installed."""
    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    server = PgServer()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """The URL of a new, empty database of the session's PostgreSQL."""
    return pg_server.database()
