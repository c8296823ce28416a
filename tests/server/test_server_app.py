"""The ASGI app in-process (httpx ASGITransport): routes, the decision matrix, downloads."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acrelease.server.app import UpdateApp
from tests.factories.catalog import CatalogBuilder, image_for
from tests.server.esp import MAC, esp32, esp8266

pytestmark = pytest.mark.anyio
D1 = "/update/demo/d1mini"
DEV = "/update/demo/esp32dev"


def check_image(response: httpx.Response, version: str, *, esp32_family: bool = False) -> None:
    """What the device checks (docs/protocol.md F.16-F.21)."""
    assert response.status_code == 200
    body = response.content
    assert int(response.headers["content-length"]) == len(body) > 0
    assert response.headers["x-md5"] == hashlib.md5(body).hexdigest()
    assert len(response.headers.get_list("x-md5")) == 1
    assert response.headers["x-version"] == version
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"].startswith('attachment; filename="')
    assert body[0] == 0xE9
    if esp32_family:
        assert response.headers["x-sha256"] == hashlib.sha256(body).hexdigest()
    else:
        assert "x-sha256" not in response.headers


async def test_esp8266_older_gets_image(client: httpx.AsyncClient) -> None:
    response = await client.get(D1, headers=esp8266("1.0.0"))
    check_image(response, "1.1.0")
    assert response.content == image_for("esp8266", "1.1.0")


async def test_esp8266_current_gets_304_without_body(client: httpx.AsyncClient) -> None:
    response = await client.get(D1, headers=esp8266("1.1.0"))
    assert response.status_code == 304 and response.content == b""


async def test_no_version_is_served(client: httpx.AsyncClient) -> None:
    check_image(await client.get(D1, headers=esp8266()), "1.1.0")  # F.28


async def test_sketch_md5_of_current_release_is_304(client: httpx.AsyncClient, built: CatalogBuilder) -> None:
    md5 = hashlib.md5(image_for("esp8266", "1.1.0")).hexdigest()
    response = await client.get(D1, headers=esp8266(md5=md5))
    assert response.status_code == 304


async def test_channel_query(client: httpx.AsyncClient) -> None:
    check_image(await client.get(D1 + "?channel=beta", headers=esp8266("1.1.0")), "1.2.0-beta.1")


async def test_esp32_new_and_old_core(client: httpx.AsyncClient) -> None:
    check_image(await client.get(DEV, headers=esp32("1.0.0")), "1.1.0", esp32_family=True)
    check_image(await client.get(DEV, headers=esp32(new_core=False)), "1.1.0", esp32_family=True)
    assert (await client.get(DEV, headers=esp32("1.1.0"))).status_code == 304


async def test_head_has_headers_and_no_body(client: httpx.AsyncClient) -> None:
    response = await client.head(D1, headers=esp8266("1.0.0"))
    assert response.status_code == 200 and response.content == b""
    assert int(response.headers["content-length"]) == len(image_for("esp8266", "1.1.0"))


async def test_filesystem_mode(client: httpx.AsyncClient, built: CatalogBuilder) -> None:
    response = await client.get(D1, headers=esp8266("1.0.0", mode="spiffs"))
    assert response.status_code == 200
    assert response.content[0] != 0xE9  # a filesystem image, never the sketch (F.31)
    assert response.headers["x-md5"] == hashlib.md5(response.content).hexdigest()
    assert (await client.get(D1, headers=esp8266("1.1.0", mode="spiffs"))).status_code == 304
    assert (await client.get(DEV, headers=esp32("0.1.0", mode="littlefs"))).status_code == 304  # none published


async def test_version_mode(client: httpx.AsyncClient) -> None:
    response = await client.get(D1, headers=esp8266("1.1.0", mode="version"))
    assert response.status_code == 200 and response.content == b""
    assert response.headers["x-version"] == "1.1.0"
    assert response.headers["x-md5"] == hashlib.md5(image_for("esp8266", "1.1.0")).hexdigest()


@pytest.mark.parametrize(("path", "headers", "status"), [
    (D1, {"User-Agent": "curl/8.0"}, 403),
    (D1, {}, 403),  # no User-Agent at all (the baseline crashes, B.5)
    (D1, {k: v for k, v in esp8266().items() if k != "x-ESP8266-mode"}, 403),
    (D1, esp32("1.0.0"), 403),  # wrong chip family
    (DEV, esp8266("1.0.0"), 403),
    (D1, esp8266("1.0.0", free=100), 403),  # does not fit
    (D1, esp8266("1.0.0", chip_size=512 * 1024), 403),  # declares 4 MB flash
    ("/update/demo/nope", esp8266(), 404),
    ("/update/nope/d1mini", esp8266(), 404),
    ("/update/demo", esp8266(), 404),
    ("/update/demo/d1mini/extra", esp8266(), 404),
    ("/update/demo/empty", esp32(), 304),  # known target, nothing published
])
async def test_refusals(client: httpx.AsyncClient, path: str, headers: dict[str, str], status: int) -> None:
    response = await client.get(path, headers=headers)
    assert response.status_code == status
    if status == 304:
        assert response.content == b""
    else:
        assert b"/" not in response.content  # never a filesystem path in an answer


async def test_logs_name_mac_source_and_decision(client: httpx.AsyncClient,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="acrelease.server"):
        await client.get(D1, headers=esp8266("1.0.0", free=100))
        await client.get("/_catalog?op=list&path=.")
    lines = [r.getMessage() for r in caplog.records if r.name == "acrelease.server"]
    assert any(MAC in line and "10.0.0.5" in line and "403" in line and "free-space" in line for line in lines)
    assert any(line.startswith("- 10.0.0.5 GET /_catalog") for line in lines)


# -- catalog ---------------------------------------------------------------------------------------

async def catalog(client: httpx.AsyncClient, query: str, agent: str = "ESP8266HTTPClient") -> httpx.Response:
    return await client.get("/_catalog?" + query, headers={"User-Agent": agent})


async def test_catalog_root_project_target(client: httpx.AsyncClient) -> None:
    for path in (".", "", "./", "/"):
        response = await catalog(client, f"op=list&path={path}")
        assert response.status_code == 200 and response.json() == [{"name": "demo", "type": "directory"}]
    response = await catalog(client, "op=list&path=demo")
    assert [e["name"] for e in response.json()] == ["d1mini", "empty", "esp32dev"]
    for path in ("demo/d1mini", "./demo/d1mini/", "/demo/d1mini"):
        response = await catalog(client, f"op=list&path={path}", agent="curl/8")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert int(response.headers["content-length"]) == len(response.content)
        entries = response.json()
        assert [e["name"] for e in entries] == ["demo-d1mini-1.2.0-beta.1.bin", "demo-d1mini-1.1.0.bin",
                                                "demo-d1mini-1.0.0.bin"]  # newest first
        for entry in entries:
            assert set(entry) == {"name", "type", "date", "time", "size"} and entry["type"] == "bin"
            assert isinstance(entry["size"], int) and entry["time"][2] == ":"
            assert len(json.dumps(entry)) < 160  # far below AutoConnect's 256-byte pool (F.10)


async def test_catalog_empty_target_never_bare_list(client: httpx.AsyncClient) -> None:
    response = await catalog(client, "op=list&path=demo/empty")
    assert response.json() == [{"name": ".", "type": "directory"}]  # F.12


@pytest.mark.parametrize(("query", "status"), [
    ("op=list&path=nope", 404), ("op=list&path=demo/nope", 404), ("op=list&path=../etc", 404),
    ("op=list&path=demo/d1mini/../../..", 404), ("op=list&path=demo/d1mini/x", 404),
    ("op=delete&path=.", 400), ("path=.", 400), ("", 400),
])
async def test_catalog_errors(client: httpx.AsyncClient, query: str, status: int) -> None:
    assert (await catalog(client, query)).status_code == status


async def test_catalog_hides_yanked(client: httpx.AsyncClient, built: CatalogBuilder, app: object) -> None:
    built.yank("demo", "d1mini", "1.1.0")
    built.write()
    app.catalog.load()  # type: ignore[attr-defined]
    names = [e["name"] for e in (await catalog(client, "op=list&path=demo/d1mini")).json()]
    assert "demo-d1mini-1.1.0.bin" not in names


# -- downloads -------------------------------------------------------------------------------------

FILE = "/demo/d1mini/demo-d1mini-1.0.0.bin"


async def test_download_any_agent(client: httpx.AsyncClient) -> None:
    response = await client.get(FILE, headers={"User-Agent": "Mozilla/5.0"})
    assert response.status_code == 200 and response.content == image_for("esp8266", "1.0.0")
    assert response.headers["etag"] == '"' + hashlib.sha256(response.content).hexdigest() + '"'
    assert response.headers["x-md5"] == hashlib.md5(response.content).hexdigest()
    head = await client.head(FILE)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == response.headers["content-length"]


async def test_download_with_esp_headers(client: httpx.AsyncClient) -> None:
    # AutoConnect: the normal update request, never a version (A.3).
    assert (await client.get(FILE, headers=esp8266())).status_code == 200
    md5 = hashlib.md5(image_for("esp8266", "1.0.0")).hexdigest()
    assert (await client.get(FILE, headers=esp8266(md5=md5))).status_code == 304  # already running it
    assert (await client.get(FILE, headers=esp32())).status_code == 403  # wrong family
    assert (await client.get(FILE, headers=esp8266(free=10))).status_code == 403


async def test_download_cache_and_ranges(client: httpx.AsyncClient) -> None:
    data = image_for("esp8266", "1.0.0")
    etag = '"' + hashlib.sha256(data).hexdigest() + '"'
    cached = await client.get(FILE, headers={"If-None-Match": etag})
    assert cached.status_code == 304 and cached.content == b"" and cached.headers["etag"] == etag
    assert "x-md5" not in cached.headers and "content-type" not in cached.headers
    part = await client.get(FILE, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == data[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"
    tail = await client.get(FILE, headers={"Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == data[-5:]
    beyond = await client.get(FILE, headers={"Range": f"bytes={len(data)}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(data)}"
    stale = await client.get(FILE, headers={"Range": "bytes=10-19", "If-Range": '"other"'})
    assert stale.status_code == 200 and stale.content == data  # never stitch two images
    fresh = await client.get(FILE, headers={"Range": "bytes=10-19", "If-Range": etag})
    assert fresh.status_code == 206
    several = await client.get(FILE, headers={"Range": "bytes=0-1,5-6"})
    assert several.status_code == 200 and several.content == data


@pytest.mark.parametrize("path", [
    "/../../etc/hostname", "/demo/d1mini/../../index.json", "/index.json", "/demo/d1mini/",
    "/demo/d1mini", "/demo/d1mini/nope.bin", "/demo//d1mini/demo-d1mini-1.0.0.bin", "/etc/passwd",
    "/demo/d1mini/demo-d1mini-1.0.0.bin/", "/demo/d1mini/demo-d1mini-1.0.0.bin%00", "/%2e%2e/%2e%2e/etc/passwd",
])
async def test_download_unknown_is_404(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert b"/" not in response.content


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
async def test_other_methods_405(client: httpx.AsyncClient, method: str) -> None:
    response = await client.request(method, FILE)
    assert response.status_code == 405 and response.headers["allow"] == "GET, HEAD"


async def test_new_publish_is_served_after_reload(client: httpx.AsyncClient, built: CatalogBuilder,
                                                  app: object) -> None:
    built.add("demo", "d1mini", "esp8266", "1.3.0")
    built.write()
    app.catalog.load()  # type: ignore[attr-defined]
    check_image(await client.get(D1, headers=esp8266("1.1.0")), "1.3.0")


# -- fuzz: no client input is a 500 -------------------------------------------------------------

fuzz_headers = st.lists(st.tuples(
    st.sampled_from([b"user-agent", b"x-esp8266-version", b"x-esp8266-mode", b"x-esp8266-free-space",
                     b"x-esp32-sketch-md5", b"x-esp8266-chip-size", b"range", b"if-range", b"if-none-match",
                     b"x-esp32-base-mac", b"host"]),
    st.one_of(st.binary(max_size=80), st.sampled_from([b"ESP8266-http-Update", b"ESP32-http-Update", b"bytes=0-",
                                                       b"bytes=-1", b"spiffs", b"version", b"1.0.0"]))),
    max_size=12)
fuzz_paths = st.one_of(
    st.text(max_size=60).map(lambda t: "/" + t),
    st.sampled_from(["/update/demo/d1mini", "/update/demo/esp32dev", "/_catalog", FILE, "/update/demo/empty"]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "HEAD", "POST"]), path=fuzz_paths, query=st.binary(max_size=60),
       headers=fuzz_headers)
def test_fuzz_never_500(app: UpdateApp, method: str, path: str, query: bytes,
                        headers: list[tuple[bytes, bytes]]) -> None:
    messages: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        messages.append(message)

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode("utf-8", "replace"),
             "query_string": query, "headers": headers, "client": ("10.0.0.9", 1)}
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    start = messages[0]
    assert start["type"] == "http.response.start" and int(start["status"]) < 500  # type: ignore[call-overload]
    assert messages[-1].get("more_body", False) is False
    body = b"".join(bytes(m.get("body", b"")) for m in messages[1:])  # type: ignore[call-overload]
    if method == "HEAD" or start["status"] == 304:
        assert body == b""


async def test_max_downloads_answers_503_and_checks_keep_flowing(built: CatalogBuilder) -> None:
    """Beyond --max-downloads concurrent transfers a download gets 503 + Retry-After;
    a version check (304, no body) is never held back."""
    from acrelease.server.app import create_app
    from acrelease.server.settings import ServerSettings

    app = create_app(ServerSettings(catalog=built.root, max_downloads=1, retry_after=30))
    app.catalog.load()
    first_chunk_sent, release = asyncio.Event(), asyncio.Event()
    messages: list[dict[str, object]] = []

    async def slow_send(message: dict[str, object]) -> None:  # a device that reads slowly
        messages.append(message)
        if message["type"] == "http.response.body":
            first_chunk_sent.set()
            await release.wait()

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    def scope(version: str) -> dict[str, object]:
        headers = [(k.lower().encode(), v.encode()) for k, v in esp8266(version).items()]
        return {"type": "http", "method": "GET", "path": D1, "query_string": b"", "headers": headers,
                "client": ("10.0.0.9", 1), "extensions": {}}

    transfer = asyncio.create_task(app(scope("1.0.0"), receive, slow_send))
    await first_chunk_sent.wait()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ota.test") as client:
        busy = await client.get(D1, headers=esp8266("1.0.0"))
        assert busy.status_code == 503 and busy.headers["retry-after"] == "30"
        assert (await client.get(D1, headers=esp8266("1.1.0"))).status_code == 304
        release.set()
        await transfer
        assert messages[0]["status"] == 200
        check_image(await client.get(D1, headers=esp8266("1.0.0")), "1.1.0")  # the slot is free again
