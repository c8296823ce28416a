"""``acrelease serve`` on a plain updateserver.py-style folder (no index), as a real process.

Played by the AutoConnect flow byte for byte (catalog, then the download with the request-target
without a leading slash it sends), probed with a traversal corpus (as ``test_hostile.py``) and with
files copied in slowly; and the switch to the catalog's index once one is published into the folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import clirun
from tests.factories import images
from tests.factories.catalog import demo_catalog
from tests.integration.devices import (
    Answer,
    autoconnect_catalog_request,
    check_no_update,
    check_update,
    esp32_request,
    esp8266_request,
    exchange,
    parse_catalog_like_autoconnect,
    read_answer,
)
from tests.integration.served import free_port, start_cli, stop_cli, wait_listening

CANARY = b"ACRELEASE-CANARY-outside-the-folder-"
FW8266 = images.esp8266_image("1.0.0")
FW32 = images.esp32_image("esp32", "2.0.0")
TOP = images.esp8266_image("0.9.0")


@dataclass
class Plain:
    process: subprocess.Popen[str]
    port: int
    root: Path
    outside: Path

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def catalog(self, path: str) -> Answer:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as conn:
            conn.sendall(autoconnect_catalog_request(self.host, path))
            return read_answer(conn)

    def get(self, target: str, **device: str | None) -> Answer:
        return exchange(self.port, esp8266_request(self.host, target, version=None, **device))[0]  # type: ignore[arg-type]


def aged(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def updateserver_folder(base: Path) -> tuple[Path, Path]:
    """A folder as AutoConnect's updateserver.py users keep it, plus things around it that must
    never be reachable: canary files, a sibling folder whose name starts with the folder's own,
    symlinks out, a hidden folder."""
    root, outside = base / "ota", base / "outside"
    aged(root / "bin" / "fw-1.0.0.bin", FW8266)
    aged(root / "bin" / "esp32-2.0.0.bin", FW32)
    aged(root / "bin" / "notes.txt", b"release notes\n")
    aged(root / "bin" / "merged.bin", images.merged_image("esp32s3"))
    aged(root / "bin" / "half.bin", images.truncated(FW8266))
    (root / "bin" / "old").mkdir()
    aged(root / "top.bin", TOP)
    aged(root / ".acrelease" / "state.bin", FW8266)
    aged(root / ".hidden.bin", FW8266)
    aged(outside / "canary.txt", CANARY + b"text\n")
    aged(outside / "secret.bin", images.esp8266_image("6.6.6"))
    aged(base / "ota-private" / "secret.bin", images.esp8266_image("6.6.6"))  # name starts with "ota"
    os.symlink(outside / "secret.bin", root / "bin" / "out.bin")
    os.symlink(base / "ota-private", root / "private")
    os.symlink(outside, root / "bin" / "outdir")
    os.symlink("fw-1.0.0.bin", root / "bin" / "latest.bin")  # a link inside the folder is fine
    return root, outside


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plain]:
    base = tmp_path_factory.mktemp("plain")
    root, outside = updateserver_folder(base)
    time.sleep(1.1)  # files older than the settle time are served from the first scan
    # updateserver.py's own short flags, a relative --catalog with a trailing slash, a lower-case level.
    # Output goes to files: a pipe nobody reads would fill up with debug lines and stall the server.
    port, out_path, err_path = free_port(), base / "serve.out", base / "serve.err"
    with open(out_path, "w") as out_file, open(err_path, "w") as err_file:
        process = clirun.popen("serve", "-p", str(port), "-b", "127.0.0.1", "-d", "ota/", "-l", "debug", cwd=base,
                               stdout=out_file, stderr=err_file, text=True)
    wait_listening(process, port, err_path.read_text)
    try:
        yield Plain(process, port, root, outside)
    finally:
        code = stop_cli(process)[0]
        out, err = out_path.read_text(), err_path.read_text()
        assert code == 0 and "Traceback" not in err, err[-3000:]
        lines = [line for line in out.splitlines() if "plain folder" in line]
        assert len(lines) == 1 and f"acrelease import {root}" in lines[0], out


def test_autoconnect_catalog_lists_folders_images_and_files(plain: Plain) -> None:
    answer = plain.catalog("bin")
    assert answer.status == 200 and answer.header("Content-Type") == ["application/json"]
    assert not answer.header("Transfer-Encoding") and int(answer.header("Content-Length")[0]) == len(answer.body)
    entries = parse_catalog_like_autoconnect(answer.body)
    kinds = {str(e["name"]): e["type"] for e in entries}
    assert kinds == {"old": "directory", "fw-1.0.0.bin": "bin", "esp32-2.0.0.bin": "bin", "latest.bin": "bin",
                     "notes.txt": "file", "merged.bin": "file", "half.bin": "file"}
    for entry in entries:
        if entry["type"] == "bin":
            assert set(entry) == {"name", "type", "date", "time", "size"}
            assert isinstance(entry["size"], int) and str(entry["time"])[2] == ":"
    sizes = {e["name"]: e["size"] for e in entries if e["type"] == "bin"}
    assert sizes["fw-1.0.0.bin"] == len(FW8266) and sizes["esp32-2.0.0.bin"] == len(FW32)
    root = {str(e["name"]): e["type"] for e in parse_catalog_like_autoconnect(plain.catalog(".").body)}
    assert root == {"bin": "directory", "top.bin": "bin"}  # no hidden entries, no link out
    empty = parse_catalog_like_autoconnect(plain.catalog("bin/old").body)
    assert empty == [{"name": ".", "type": "directory"}]  # never a bare []
    assert plain.catalog("/bin").status == 200  # updateserver.py refused a leading slash (B.4)
    assert plain.catalog("nope").status == 404


def test_autoconnect_download_without_leading_slash(plain: Plain) -> None:
    # AutoConnect with update.uri = "bin" sends GET bin/<name> HTTP/1.0 (docs/protocol.md A.3).
    answer, rest = exchange(plain.port, esp8266_request(plain.host, "bin/fw-1.0.0.bin", version=None))
    check_update(answer)
    assert rest == b"" and answer.body == FW8266
    assert answer.header("Content-Type") == ["application/octet-stream"]
    assert answer.header("Content-Disposition") == ['attachment; filename="fw-1.0.0.bin"']
    assert answer.header("x-MD5") == [hashlib.md5(FW8266).hexdigest()]
    assert plain.get("/top.bin").body == TOP  # uri "." gives /top.bin
    assert plain.get("bin/latest.bin").body == FW8266
    esp32, _ = exchange(plain.port, esp32_request(plain.host, "bin/esp32-2.0.0.bin", version=None))
    check_update(esp32, sha256=True)
    assert esp32.body == FW32


def test_device_running_the_image_gets_304(plain: Plain) -> None:
    answer, rest = exchange(plain.port, esp8266_request(plain.host, "bin/fw-1.0.0.bin", version=None,
                                                        md5=hashlib.md5(FW8266).hexdigest()))
    check_no_update(answer, rest)
    md5 = hashlib.md5(FW32).hexdigest()
    answer, rest = exchange(plain.port, esp32_request(plain.host, "bin/esp32-2.0.0.bin", version=None, md5=md5))
    check_no_update(answer, rest)


def test_only_valid_images_are_served(plain: Plain) -> None:
    for target in ("bin/notes.txt", "bin/merged.bin", "bin/half.bin", "bin/old", "bin", "/", ".hidden.bin",
                   ".acrelease/state.bin", "/_catalog/x", "/update/bin/fw-1.0.0.bin"):
        assert plain.get(target).status in (403, 404), target
    # Another chip family's image is refused to a device (updateserver.py sent it).
    assert plain.get("bin/esp32-2.0.0.bin").status == 403
    assert exchange(plain.port, b"HEAD /bin/fw-1.0.0.bin HTTP/1.0\r\n\r\n")[0].status == 200


PAYLOADS = [
    "../outside/canary.txt", "../../outside/canary.txt", "%2e%2e/outside/canary.txt", "..%2foutside%2fcanary.txt",
    "%252e%252e/outside/canary.txt", "..\\outside\\canary.txt", "%2e%2e%5coutside%5ccanary.txt",
    "../ota-private/secret.bin", "..%2fota-private/secret.bin", "private/secret.bin", "bin/out.bin",
    "bin/outdir/canary.txt", "bin/outdir/secret.bin", "bin/../../outside/secret.bin", "bin/fw-1.0.0.bin%00.txt",
    "/etc/passwd", "//etc/passwd", "%2fetc%2fpasswd", "../../../../../../etc/passwd", "bin/./fw-1.0.0.bin/..",
    ".acrelease/state.bin", "%2eacrelease/state.bin", ".hidden.bin",
]


def test_traversal_corpus(plain: Plain) -> None:
    secret = images.esp8266_image("6.6.6")
    counts: dict[int, int] = {}
    for payload in PAYLOADS:
        for target in (f"/{payload}", payload.lstrip("/"), f"/bin/{payload}", f"/_catalog?op=list&path={payload}",
                       f"/_catalog?op=list&path=bin/{payload}", f"http://127.0.0.1/../{payload}"):
            for request in (esp8266_request(plain.host, target, version=None),
                            f"GET {target} HTTP/1.0\r\nHost: x\r\n\r\n".encode()):
                with socket.create_connection(("127.0.0.1", plain.port), timeout=10) as conn:
                    conn.sendall(request)
                    reply = b""
                    while chunk := conn.recv(65536):
                        reply += chunk
                status = int(reply[9:12])
                counts[status] = counts.get(status, 0) + 1
                assert CANARY not in reply and secret not in reply and b"root:" not in reply, target
                assert status in (400, 403, 404, 414), (target, status)
    print(f"plain traversal corpus: answers by status {sorted(counts.items())}")
    assert plain.process.poll() is None


def test_a_file_copied_in_slowly_is_never_served_half_written(plain: Plain) -> None:
    image = images.esp8266_image("3.0.0", extra=bytes(range(256)) * 64)
    path = plain.root / "bin" / "slow-3.0.0.bin"
    seen: list[tuple[int, bytes]] = []
    first_served: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            answer = plain.get("bin/slow-3.0.0.bin")
            seen.append((answer.status, answer.body))
            if answer.status == 200 and not first_served:
                first_served.append(time.monotonic())  # when the answer was in: an upper bound
            listed = parse_catalog_like_autoconnect(plain.catalog("bin").body)
            if any(e["name"] == "slow-3.0.0.bin" and e["type"] == "bin" for e in listed):
                seen.append((-1, b""))  # listed as an image
            time.sleep(0.02)

    watcher = threading.Thread(target=probe)
    watcher.start()
    try:
        pieces = [image[i:i + len(image) // 5 + 1] for i in range(0, len(image), len(image) // 5 + 1)]
        with open(path, "wb") as out:
            for number, piece in enumerate(pieces):
                if number:  # pauses shorter and longer than the settle time: a stable prefix is no image
                    time.sleep(1.6 if number == 2 else 0.4)
                out.write(piece)
                out.flush()
        done = time.monotonic()
        while time.monotonic() - done < 6 and not first_served:
            time.sleep(0.02)
    finally:
        stop.set()
        watcher.join()
    served_after = first_served[0] - done
    first_ok = next(i for i, (status, _) in enumerate(seen) if status == 200)
    assert all(status in (404, -1) for status, _ in seen[:first_ok]), seen[:first_ok]
    assert all(status != -1 for status, _ in seen[:first_ok - 1]), "listed before it was complete"
    assert all(body == image for status, body in seen if status == 200)
    print(f"slow copy: served {served_after:.2f} s after the last byte was written")
    assert served_after <= 2.0


def test_a_replaced_image_is_picked_up(plain: Plain) -> None:
    path = plain.root / "bin" / "swap.bin"
    first, second = images.esp8266_image("4.0.0"), images.esp8266_image("4.0.1")
    path.write_bytes(first)
    deadline = time.monotonic() + 4
    while plain.get("bin/swap.bin").body != first:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    path.write_bytes(second)  # in place: same inode
    changed = time.monotonic()
    while (answer := plain.get("bin/swap.bin")).body != second:
        assert answer.status == 404 or answer.body == first  # never a mix, never under another MD5
        if answer.status == 200:
            assert answer.header("x-MD5") == [hashlib.md5(first).hexdigest()]
        assert time.monotonic() - changed < 2.0
        time.sleep(0.05)
    assert answer.header("x-MD5") == [hashlib.md5(second).hexdigest()]
    path.unlink()
    gone = time.monotonic()
    while plain.get("bin/swap.bin").status != 404:
        assert time.monotonic() - gone < 2.0
        time.sleep(0.05)


def test_publishing_into_the_folder_switches_to_the_index(tmp_path: Path) -> None:
    root = tmp_path / "ota"
    aged(root / "bin" / "fw-1.0.0.bin", FW8266)
    time.sleep(1.1)
    process, port = start_cli(root)
    host = f"127.0.0.1:{port}"
    try:
        answer, _ = exchange(port, esp8266_request(host, "bin/fw-1.0.0.bin", version=None))
        check_update(answer)
        built = demo_catalog(root)  # what `acrelease publish` writes: files, then index.json last
        published = time.monotonic()
        while exchange(port, esp8266_request(host, "bin/fw-1.0.0.bin", version=None))[0].status != 404:
            assert time.monotonic() - published < 1.0
            time.sleep(0.02)
        switched = time.monotonic() - published
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(autoconnect_catalog_request(host, "demo/d1mini"))
            names = [e["name"] for e in parse_catalog_like_autoconnect(read_answer(conn).body)]
        assert "demo-d1mini-1.1.0.bin" in names
        assert built.index().generation == 1
        check_update(exchange(port, esp8266_request(host, "/update/demo/d1mini", version="1.0.0"))[0])
        print(f"index served {switched:.2f} s after it was written")
        time.sleep(1.0)  # the scanner's next poll notices the index and says so in the log
    finally:
        code, out, err = stop_cli(process)
    assert code == 0 and "Traceback" not in err
    assert "plain folder" in out
    assert "index.json" in err  # the log says plain mode ended
    assert json.loads((root / "index.json").read_bytes())["generation"] == 1
