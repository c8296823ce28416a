"""HTTPS for ``serve --tls-cert/--tls-key``.

The stock clients speak TLS through ``WiFiClientSecure``: ESP8266 (BearSSL) pins the server
certificate's SHA-1 fingerprint (``client.setFingerprint``) or trusts a CA
(``client.setTrustAnchors``); ESP32 trusts a CA (``client.setCACert``). Both do TLS 1.2.
"""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path

from acrelease.errors import ServeError


def server_context(cert: Path, key: Path | None) -> ssl.SSLContext:
    """A TLS 1.2+ server context for ``cert`` (PEM, chain first) and ``key``; one-line ServeError if unusable."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # what BearSSL and mbedTLS on the devices speak
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise ServeError(f"{exc.filename}: no such file; pass the PEM certificate with --tls-cert "
                         "and its key with --tls-key") from None
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise ServeError(f"{cert}: cannot use this certificate and key ({reason}); they must be PEM files "
                         "that belong together") from None
    return context


def sha1_fingerprint(cert: Path) -> str:
    """The ``AA:BB:...`` SHA-1 fingerprint of the first certificate in ``cert``, as ESP8266's
    ``client.setFingerprint()`` takes it."""
    pem = cert.read_text(encoding="ascii", errors="replace")
    end = "-----END CERTIFICATE-----"
    der = ssl.PEM_cert_to_DER_cert(pem[: pem.index(end) + len(end)])
    return ":".join(f"{byte:02X}" for byte in hashlib.sha1(der).digest())
