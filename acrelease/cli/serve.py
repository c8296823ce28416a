"""``serve``: the version-aware update server.

The four flags and their defaults are those of AutoConnect's ``updateserver.py``, so the
command line in AutoConnect's documentation keeps working.
"""

from __future__ import annotations

from pathlib import Path

import typer

from acrelease.cli.common import resolve_catalog
from acrelease.errors import UsageError

PROXY = "Behind a proxy (several hosts)"
ADMIN = "Admin listener (dashboard, metrics, health)"
FLEET = "Fleet registry (acrelease devices, rollout, pin, assign)"
LIMITS = "Limits (defaults suit devices; a client past one gets 408/414/431, never a hang)"


def serve(
    catalog: Path | None = typer.Option(None, "--catalog", "-d",
                                        help="The catalog folder (env ACRELEASE_CATALOG; default: this folder)."),
    port: int = typer.Option(8000, "--port", "-p", min=0, max=65535,
                             help="TCP port, 0..65535; 0 picks a free one (AutoConnect's default is 8000)."),
    bind: str = typer.Option("0.0.0.0", "--bind", "-b", help="Address to listen on."),
    log: str = typer.Option("INFO", "--log", "-l", help="Log level, any case: DEBUG (also each request's "
                            "parsed device facts and channel, catalog reload details), INFO (one line per "
                            "decision), WARNING, ERROR."),
    log_format: str = typer.Option("text", "--log-format", help="text, or json: one JSON object per line "
                                   "(time, level, logger, message; decision lines add mac, address, method, "
                                   "path, status, reason, version, serving_version, serving_file). Measured "
                                   "(benchmarks/bench_check.py): json formats a decision line in 2-2.3x the "
                                   "time of text, 3-5% more CPU per check."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="Worker processes (one per core)."),
    max_downloads: int | None = typer.Option(None, "--max-downloads", min=1, help="Concurrent firmware "
                                             "transfers at most; more get 503 + Retry-After (checks never wait)."),
    head_timeout: float = typer.Option(10.0, "--head-timeout", min=0.1, rich_help_panel=LIMITS,
                                       help="Seconds a client has to send its request head (then 408)."),
    idle_timeout: float = typer.Option(15.0, "--idle-timeout", min=0.1, rich_help_panel=LIMITS,
                                       help="Seconds an idle HTTP/1.1 keep-alive connection is kept."),
    max_target: int = typer.Option(8192, "--max-target", min=64, rich_help_panel=LIMITS,
                                   help="Longest request-target in bytes (then 414)."),
    max_header_bytes: int = typer.Option(16384, "--max-header-bytes", min=1024, rich_help_panel=LIMITS,
                                         help="Largest request head in bytes (then 431)."),
    max_header_lines: int = typer.Option(100, "--max-header-lines", min=8, rich_help_panel=LIMITS,
                                         help="Most header lines (then 431)."),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="PEM certificate: serve HTTPS."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert."),
    auth: Path | None = typer.Option(None, "--auth", help="Credentials file (`acrelease auth add`): "
                                     "HTTP Basic on update, download and catalog."),
    allow: Path | None = typer.Option(None, "--allow", help="MAC allowlist: one MAC per line, # comments."),
    open_catalog: bool = typer.Option(False, "--open-catalog", help="With --auth: let the AutoConnect catalog "
                                      "list without credentials (its client cannot send any)."),
    accel_redirect: str | None = typer.Option(
        None, "--accel-redirect", metavar="PREFIX", rich_help_panel=PROXY,
        help="Behind nginx: let nginx send images from its internal location PREFIX (e.g. /_files/) with "
        "X-Accel-Redirect; see `acrelease template nginx.conf`."),
    admin: str | None = typer.Option(None, "--admin", metavar="ADDR:PORT", rich_help_panel=ADMIN,
                                     help="Serve the dashboard, /metrics and /healthz on this address "
                                     "(e.g. 127.0.0.1:8001); never on the device port."),
    admin_auth: Path | None = typer.Option(None, "--admin-auth", rich_help_panel=ADMIN,
                                           help="Credentials file (`acrelease auth add`) for every admin route; "
                                           "required when --admin is not a loopback address."),
    fleet: str | None = typer.Option(None, "--fleet", envvar="ACRELEASE_FLEET", rich_help_panel=FLEET,
                                     help="Fleet store: a SQLite file or postgresql://USER:PASSWORD@HOST/DB "
                                          "(default <catalog>/.acrelease/fleet.sqlite3)."),
    no_fleet: bool = typer.Option(False, "--no-fleet", rich_help_panel=FLEET,
                                  help="Record no devices and apply no rollouts, pins or assignments."),
    loop_limit: int = typer.Option(3, "--loop-limit", min=1, rich_help_panel=FLEET,
                                   help="Hold a device sent the same release this many times without it coming up."),
) -> None:
    """Serve the catalog to ESP8266/ESP32 devices and AutoConnect (Ctrl-C stops)."""
    from acrelease.server.logs import FORMATS, LEVELS
    from acrelease.server.run import ServerSettings
    from acrelease.server.run import serve as run_server

    if tls_key is not None and tls_cert is None:
        # Without this, the key would be ignored and the server would quietly speak plain HTTP.
        raise UsageError(f"--tls-key {tls_key} without --tls-cert: HTTPS needs both; pass the certificate "
                         "with --tls-cert CERT.pem (or drop --tls-key to serve plain HTTP)")
    level, fmt = log.strip().upper(), log_format.strip().lower()
    if level not in LEVELS:
        raise UsageError(f"--log {log}: not a log level; use one of {', '.join(LEVELS)} (any case)")
    if fmt not in FORMATS:
        raise UsageError(f"--log-format {log_format}: use one of {', '.join(FORMATS)}")
    root = resolve_catalog(catalog) or Path.cwd()
    run_server(ServerSettings(
        catalog=root, host=bind, port=port, log_level=level, log_format=fmt, workers=workers,
        max_downloads=max_downloads,
        tls_cert=tls_cert, tls_key=tls_key, auth_file=auth, allow_file=allow, catalog_auth=not open_catalog,
        head_timeout=head_timeout, keep_alive_timeout=idle_timeout, max_target_bytes=max_target,
        max_header_bytes=max_header_bytes, max_header_lines=max_header_lines,
        admin=parse_address(admin, "--admin") if admin else None, admin_auth=admin_auth,
        accel_redirect=_accel_prefix(accel_redirect) if accel_redirect else None,
        fleet_enabled=not no_fleet, fleet=fleet, loop_limit=loop_limit))


def _accel_prefix(text: str) -> str:
    """An nginx location prefix: an absolute path ending with ``/`` (``/_files/``)."""
    if not text.startswith("/") or not text.endswith("/") or any(c.isspace() or c in "?#%" for c in text):
        raise UsageError(f"--accel-redirect {text}: expected the nginx internal location's prefix, a path like "
                         "/_files/ (starting and ending with /)")
    return text


def parse_address(text: str, flag: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port); a bad value is one usage error line."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"{flag} {text}: expected ADDR:PORT, e.g. 127.0.0.1:8001")
    return host, int(port)


def register(app: typer.Typer) -> None:
    app.command()(serve)
