"""Fixtures for the server tests: a real catalog tree and the app on it, in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from acrelease.server.app import UpdateApp, create_app
from acrelease.server.settings import ServerSettings
from tests.factories.catalog import CatalogBuilder, demo_catalog
from tests.server.esp import SOURCE


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def built(tmp_path: Path) -> CatalogBuilder:
    return demo_catalog(tmp_path / "catalog")


@pytest.fixture
def app(built: CatalogBuilder) -> UpdateApp:
    application = create_app(ServerSettings(catalog=built.root))
    application.catalog.load()
    return application


@pytest.fixture
async def client(app: UpdateApp) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=SOURCE)
    async with httpx.AsyncClient(transport=transport, base_url="http://ota.test:8000") as c:
        yield c
