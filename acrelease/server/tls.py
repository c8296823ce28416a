"""HTTPS for ``serve --tls-cert/--tls-key``.

The stock clients speak TLS through ``WiFiClientSecure``: ESP8266 (BearSSL) pins the server
certificate's SHA-1 fingerprint (``client.setFingerprint``) or trusts a CA
(``client.setTrustAnchors``); ESP32 trusts a CA (``client.setCACert``). Both do TLS 1.2.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Callable
from pathlib import Path

from acrelease.errors import ServeError
from acrelease.inputs import MIB, read_input

MAX_PEM = MIB  # a certificate chain and its key are a few KiB


def _no_passphrase(where: str) -> Callable[[], bytes]:
    """``load_cert_chain``'s password callback: OpenSSL would otherwise prompt on the terminal
    for an encrypted key, and a server started as a service has none to answer it."""

    def refuse() -> bytes:
        raise ServeError(f"{where}: the private key is encrypted and the server cannot ask for its passphrase; "
                         "decrypt it with `openssl pkey -in KEY.pem -out plain.pem`")

    return refuse


def server_context(cert: Path, key: Path | None) -> ssl.SSLContext:
    """A TLS 1.2+ server context for ``cert`` (PEM, chain first) and ``key``; one-line ServeError if unusable.

    ``key`` may be omitted only when ``cert``'s PEM file holds the private key as well (as
    :meth:`ssl.SSLContext.load_cert_chain` allows). Both files are read bounded first
    (:func:`acrelease.inputs.read_input`), so a missing file, a folder or a device is named with
    its flag, never OpenSSL's error string.
    """
    pem = read_input(cert, what="a PEM certificate", limit=MAX_PEM, error=ServeError, label="--tls-cert",
                     hint="pass the server certificate (PEM) with --tls-cert and its private key with --tls-key")
    if key is not None:
        read_input(key, what="a PEM private key", limit=MAX_PEM, error=ServeError, label="--tls-key",
                   hint="pass the private key (PEM) of the --tls-cert certificate")
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise ServeError(f"--tls-cert {cert}: cannot use this certificate (no -----BEGIN CERTIFICATE----- "
                         "in it); pass a PEM certificate, e.g. from `openssl req -x509 ...`")
    if key is None and b"PRIVATE KEY-----" not in pem:
        raise ServeError(f"--tls-cert {cert}: holds no private key and no --tls-key was given; pass the "
                         "certificate's key with --tls-key KEY.pem")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # what BearSSL and mbedTLS on the devices speak
    try:
        context.load_cert_chain(cert, key, password=_no_passphrase(
            f"--tls-key {key}" if key is not None else f"--tls-cert {cert}"))
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise ServeError(f"--tls-cert {cert}: cannot use this certificate and key ({reason}); they must be "
                         "PEM files that belong together (--tls-cert CERT.pem --tls-key KEY.pem)") from None
    return context


def sha1_fingerprint(cert: Path) -> str:
    """The ``AA:BB:...`` SHA-1 fingerprint of the first certificate in ``cert``, as ESP8266's
    ``client.setFingerprint()`` takes it."""
    pem = cert.read_text(encoding="ascii", errors="replace")
    end = "-----END CERTIFICATE-----"
    der = ssl.PEM_cert_to_DER_cert(pem[: pem.index(end) + len(end)])
    return ":".join(f"{byte:02X}" for byte in hashlib.sha1(der).digest())
