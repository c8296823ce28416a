"""A real nginx in the foreground, configured from `acrelease template nginx.conf`, for the tests of
acrelease behind a proxy (``--accel-redirect``, several hosts). Everything it writes stays in the
test's folder; it listens on 127.0.0.1 only and is stopped at the end of the block.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests import clirun
from tests.integration.served import free_port, wait_listening

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
needs_nginx = pytest.mark.skipif(NGINX is None, reason="needs nginx (apt-get install -y nginx; .ci/run installs it)")


def config(upstreams: Sequence[str], port: int, catalog: Path, work: Path) -> str:
    """`acrelease template nginx.conf` filled in by its options, and its files kept in ``work``."""
    done = clirun.run("template", "nginx.conf", *(a for u in upstreams for a in ("--upstream", u)),
                      "--listen", f"127.0.0.1:{port}", "--catalog", str(catalog.resolve()), timeout=30)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    temp = "".join(f"    {name}_temp_path {work / name};\n" for name in ("client_body", "proxy", "fastcgi",
                                                                            "uwsgi", "scgi"))
    text = text.replace("http {\n", f"http {{\n    access_log {work / 'access.log'};\n{temp}", 1)
    assert all(f"server {u} " in text for u in upstreams) and f"alias {catalog.resolve()}/;" in text
    return text


def command(conf: Path, work: Path) -> list[str]:
    """nginx in the foreground with ``conf``, its pid file and error log in ``work``."""
    assert NGINX is not None, "needs nginx"
    return [NGINX, "-p", str(work), "-c", str(conf), "-g", f"daemon off; master_process on; user root; "
            f"pid {work / 'nginx.pid'}; error_log {work / 'error.log'};"]


@contextmanager
def running(upstreams: Sequence[str], catalog: Path, work: Path) -> Iterator[int]:
    """nginx in front of ``upstreams`` (``host:port``); yields the port devices use."""
    assert NGINX is not None
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(config(upstreams, port, catalog, work))
    process = subprocess.Popen(command(conf, work), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_listening(process, port, lambda: (work / "error.log").read_text(errors="replace"))
        yield port
    finally:
        process.send_signal(signal.SIGQUIT)  # graceful
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        time.sleep(0.05)
