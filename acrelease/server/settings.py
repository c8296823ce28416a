"""ServerSettings: everything ``acrelease serve`` can be told, in one frozen value."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Settings of one server; the CLI maps ``acrelease serve`` flags onto it."""

    catalog: Path
    host: str = "0.0.0.0"
    port: int = 8000
    log_level: str = "INFO"
    log_format: str = "text"
    """``text`` (one line per record, local time) or ``json`` (one JSON object per line)."""
    workers: int = 1
    public_url: str | None = None
    """How devices reach this server (``http://ota.lan:8000``), for the URLs printed at start."""

    # Limits of the HTTP/1.x front end (docs/operations.md, "Limits").
    max_target_bytes: int = 8 * 1024
    """Longer request-target -> 414, before any routing."""
    max_header_bytes: int = 16 * 1024
    """Larger request head -> 431."""
    max_header_lines: int = 100
    """More header lines -> 431."""
    head_timeout: float = 10.0
    """No complete request head within this many seconds -> 408."""
    keep_alive_timeout: float = 15.0
    """Idle HTTP/1.1 connection closed after this many seconds."""
    send_timeout: float = 60.0
    """A client that reads nothing of a response for this long is dropped (docs/protocol.md F.4)."""
    shutdown_grace: float = 10.0
    """On SIGTERM/SIGINT, running responses get this long to finish."""

    max_downloads: int | None = None
    """Concurrent firmware transfers at most (all workers together); more get 503 + Retry-After,
    which the stock clients treat as a failed poll and retry later. Checks are never capped."""
    retry_after: int = 60
    """Seconds a refused download is told to wait."""

    tls_cert: Path | None = None
    """PEM certificate (chain): serve HTTPS instead of HTTP."""
    tls_key: Path | None = None
    """PEM private key of ``tls_cert`` (omit if the certificate file holds it)."""

    # Access control (docs/operations.md, "Access files").
    auth_file: Path | None = None
    """Credentials file (``acrelease auth add``): HTTP Basic required on update, download, catalog."""
    allow_file: Path | None = None
    """MAC allowlist: updates and downloads only for devices on it."""
    catalog_auth: bool = True
    """With ``auth_file``: also require credentials for the catalog. AutoConnect's catalog request
    cannot carry any (its HTTPClient never calls setAuthorization), so ``--open-catalog`` lifts
    this for the listing only; images still need credentials."""

    # Admin listener: dashboard, /metrics, /healthz (off by default).
    admin: tuple[str, int] | None = None
    """``--admin ADDR:PORT``: where the admin listener binds; never the device port."""
    admin_auth: Path | None = None
    """``--admin-auth FILE``: credentials (the ``--auth`` file format) for every admin route; required
    when ``admin`` is not a loopback address."""

    accel_redirect: str | None = None
    """``--accel-redirect PREFIX`` (``/_files/``): answers with an image carry ``X-Accel-Redirect:
    PREFIX<catalog path>`` and no body, and nginx in front sends the file (several hosts, one catalog)."""

    # Catalog watcher.
    poll_interval: float = 0.25
    """How often index.json's stat is polled (a new publish is served within 1 s)."""
    recheck_interval: float = 5.0
    """How often every served file is re-stat'ed (a file changed or deleted behind our back)."""

    # Fleet registry (docs/architecture.md, "State").
    fleet_enabled: bool = True
    """Record every device that checks (``--no-fleet``: record nothing, apply no fleet intent)."""
    fleet: str | None = None
    """Fleet store (a SQLite path or ``sqlite:`` URL); default ``<catalog>/.acrelease/fleet.sqlite3``."""
    loop_limit: int = 3
    """Loop breaker: a device sent the whole image of a release this many times and still running
    an older one is held on it (``--loop-limit``)."""
