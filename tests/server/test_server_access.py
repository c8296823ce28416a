"""Access control in the app (docs/operations.md, "Access files"): credentials on every route that can reveal firmware,
the MAC allowlist on updates and downloads, refusals before any lookup, no secret in the log."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from acrelease.access import add_user
from acrelease.server.app import UpdateApp, create_app
from acrelease.server.settings import ServerSettings
from tests.factories.catalog import CatalogBuilder
from tests.server.esp import MAC, SOURCE, esp8266

pytestmark = pytest.mark.anyio
D1 = "/update/demo/d1mini"
PASSWORD = "s3cret-Pa55"


def basic(user: str, password: str) -> dict[str, str]:
    """What ESPhttpUpdate.setAuthorization(user, password) sends (docs/protocol.md C.2)."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def make_client(built: CatalogBuilder, tmp_path: Path, *, auth: bool = True, allow: str | None = None,
                      catalog_auth: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    auth_file = allow_file = None
    if auth:
        auth_file = tmp_path / "devices.auth"
        add_user(auth_file, "fleet", PASSWORD)
    if allow is not None:
        allow_file = tmp_path / "allow.txt"
        allow_file.write_text(allow)
    app: UpdateApp = create_app(ServerSettings(catalog=built.root, auth_file=auth_file, allow_file=allow_file,
                                               catalog_auth=catalog_auth))
    app.catalog.load()
    transport = httpx.ASGITransport(app=app, client=SOURCE)
    async with httpx.AsyncClient(transport=transport, base_url="http://ota.test:8000") as client:
        yield client
    app.access.close()


@pytest.fixture
async def authed(built: CatalogBuilder, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for client in make_client(built, tmp_path):
        yield client


async def test_credentials_guard_every_route_that_reveals_firmware(authed: httpx.AsyncClient,
                                                                   built: CatalogBuilder) -> None:
    name = built.targets[("demo", "d1mini")].releases[-1].firmware.file
    for path in (D1, "/_catalog?op=list&path=demo/d1mini", f"/{name}", "/update/demo/nope", "/no/such/file.bin"):
        response = await authed.get(path, headers=esp8266("1.0.0"))
        assert response.status_code == 401, path  # before any lookup: a stranger learns nothing
        assert response.headers["www-authenticate"] == 'Basic realm="acrelease"'
    wrong = await authed.get(D1, headers={**esp8266("1.0.0"), **basic("fleet", "nope")})
    assert wrong.status_code == 401
    good = {**esp8266("1.0.0"), **basic("fleet", PASSWORD)}
    assert (await authed.get(D1, headers=good)).status_code == 200
    assert (await authed.get("/update/demo/nope", headers=good)).status_code == 404
    assert (await authed.get("/_catalog?op=list&path=demo/d1mini", headers=basic("fleet", PASSWORD))).status_code == 200
    assert (await authed.get(f"/{name}", headers=basic("fleet", PASSWORD))).status_code == 200


async def test_open_catalog_lists_without_credentials_but_images_stay_closed(built: CatalogBuilder,
                                                                             tmp_path: Path) -> None:
    async for client in make_client(built, tmp_path, catalog_auth=False):
        listing = await client.get("/_catalog?op=list&path=demo/d1mini")
        assert listing.status_code == 200 and listing.json()[0]["type"] == "bin"
        name = listing.json()[0]["name"]
        assert (await client.get(f"/demo/d1mini/{name}")).status_code == 401


async def test_allowlist_gates_updates_and_downloads_not_the_catalog(built: CatalogBuilder, tmp_path: Path) -> None:
    other = "AA:BB:CC:DD:EE:01"
    async for client in make_client(built, tmp_path, auth=False, allow=f"# the lab\n{other.lower()}\n"):
        refused = await client.get(D1, headers=esp8266("1.0.0"))
        assert refused.status_code == 403
        name = built.targets[("demo", "d1mini")].releases[-1].firmware.file
        assert (await client.get(f"/{name}", headers=esp8266("1.0.0"))).status_code == 403
        assert (await client.get(f"/{name}")).status_code == 403  # no MAC at all: not on the list
        assert (await client.get("/_catalog?op=list&path=demo/d1mini")).status_code == 200
    (tmp_path / "allow.txt").unlink()
    async for client in make_client(built, tmp_path, auth=False, allow=MAC.replace(":", "") + "  # this device\n"):
        assert (await client.get(D1, headers=esp8266("1.0.0"))).status_code == 200


async def test_log_names_the_device_and_never_the_secret(authed: httpx.AsyncClient,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="acrelease.server")
    header = basic("fleet", "wrong-" + PASSWORD)
    await authed.get(D1, headers={**esp8266("1.0.0"), **header})
    await authed.get(D1, headers={**esp8266("1.0.0"), **basic("fleet", PASSWORD)})
    text = caplog.text
    assert f"{MAC} {SOURCE[0]} GET {D1} -> 401" in text
    assert f"{MAC} {SOURCE[0]} GET {D1} -> 200" in text
    assert PASSWORD not in text and header["Authorization"].split()[1] not in text
