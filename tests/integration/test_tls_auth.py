"""HTTPS and device credentials on a real ``acrelease serve`` process (docs/operations.md, "TLS")."""

from __future__ import annotations

import base64
import hashlib
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from acrelease.access import add_user
from tests import clirun
from tests.factories.catalog import demo_catalog
from tests.integration.devices import check_update, esp8266_request, read_answer
from tests.integration.served import start_cli, stop_cli


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


def test_https_device_update_and_fingerprint(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    built = demo_catalog(tmp_path / "catalog")
    process, port = start_cli(built.root, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        context = ssl.create_default_context(cafile=str(cert))
        context.maximum_version = ssl.TLSVersion.TLSv1_2  # what BearSSL / mbedTLS on the devices speak
        with socket.create_connection(("127.0.0.1", port), timeout=15) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
            conn.sendall(esp8266_request(f"127.0.0.1:{port}", "/update/demo/d1mini", version="1.0.0"))
            answer = read_answer(conn)
        check_update(answer)
        assert answer.header("x-version") == ["1.1.0"]
        with socket.create_connection(("127.0.0.1", port), timeout=15) as plain:  # plaintext to a TLS port
            plain.sendall(b"GET /update/demo/d1mini HTTP/1.0\r\n\r\n")
            assert b"HTTP/1.1 200" not in plain.recv(4096)
    finally:
        _, out, err = stop_cli(process)
    fingerprint = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha1", "-in", str(cert)],
                                 capture_output=True, text=True, check=True).stdout.strip().split("=")[1]
    assert f'client.setFingerprint("{fingerprint}")' in out
    assert f"https://127.0.0.1:{port}/update/demo/d1mini" in out
    assert "Traceback" not in err


def test_bad_certificate_is_one_line(tmp_path: Path) -> None:
    built = demo_catalog(tmp_path / "catalog")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    proc = clirun.run("serve", "--catalog", str(built.root), "-b", "127.0.0.1", "-p", "0",
                      "--tls-cert", str(tmp_path / "junk.pem"), timeout=30)
    assert proc.returncode == 8
    assert proc.stderr.count("\n") == 1 and "junk.pem: cannot use this certificate" in proc.stderr


def test_basic_auth_as_the_esp8266_client_sends_it(tmp_path: Path) -> None:
    """ESPhttpUpdate.setAuthorization(user, pass): `Authorization: Basic ...` after User-Agent (C.2)."""
    built = demo_catalog(tmp_path / "catalog")
    credentials = tmp_path / "devices.auth"
    add_user(credentials, "fleet", "correct horse")
    process, port = start_cli(built.root, "--auth", str(credentials))
    host = f"127.0.0.1:{port}"
    token = base64.b64encode(b"fleet:correct horse").decode()

    def ask(authorization: str | None) -> tuple[int, bytes, list[str]]:
        request = esp8266_request(host, "/update/demo/d1mini", version="1.0.0")
        if authorization is not None:
            request = request.replace(b"Connection: close\r\n",
                                      f"Authorization: {authorization}\r\nConnection: close\r\n".encode())
        with socket.create_connection(("127.0.0.1", port), timeout=15) as conn:
            conn.sendall(request)
            answer = read_answer(conn)
        return answer.status, answer.body, answer.header("www-authenticate")

    try:
        assert ask(None)[0] == 401 and ask(None)[2] == ['Basic realm="acrelease"']  # ESP8266: -108
        assert ask("Basic " + base64.b64encode(b"fleet:wrong").decode())[0] == 401
        status, body, _ = ask("Basic " + token)
        assert status == 200 and hashlib.md5(body).hexdigest()
    finally:
        _, _, err = stop_cli(process)
    assert "correct horse" not in err and token not in err
