"""A throwaway PostgreSQL for the tests of the PostgreSQL fleet store (docs/testing.md, "PostgreSQL").

Debian's ``postgresql`` package (``/usr/lib/postgresql/<major>/bin``): ``initdb -A trust`` in a
temporary folder, ``pg_ctl start`` on 127.0.0.1 and a free port with ``fsync=off`` (nothing a test
writes needs to survive a power cut; a benchmark asks for ``durable=True``, PostgreSQL's defaults),
stopped with ``-m immediate`` at the end. PostgreSQL refuses to run as root, so as root it runs as
the ``postgres`` user, in a folder that user owns. Each test gets a database of its own
(:meth:`PgServer.database`), so tests never see each other's rows.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.integration.served import free_port

USER = "acr"


def bin_dir() -> Path | None:
    """The newest installed PostgreSQL's programs, or None (not installed)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else 0)
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def missing() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None."""
    if bin_dir() is None:
        return "needs PostgreSQL (apt-get install -y postgresql; .ci/run installs it)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "needs psycopg (pip install -e '.[test]')"
    return None


class PgServer:
    """One cluster in a temporary folder; :meth:`stop` and :meth:`start` again keep its data."""

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        programs = bin_dir()
        assert programs is not None, missing()
        self.bin = programs
        # Not under pytest's tmp_path: its parents are 0700 root, which the postgres user cannot enter.
        self.folder = Path(tempfile.mkdtemp(prefix="acrelease-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self._names = itertools.count(1)
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run("initdb", "-A", "trust", "-U", USER, "-E", "UTF8", "--no-sync", "-D", str(self.data))

    def _run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / program), *args]
        if self._as_postgres:
            command = ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(_quote(a) for a in command)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=self.folder)
        if check and done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr or done.stdout}\n{self.log()}")
        return done

    def log(self) -> str:
        try:
            return (self.folder / "pg.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "pg.log"), "-w", "-t", "30", "-o",
                  f"-p {self.port} -k {self.folder} -h 127.0.0.1 -c max_connections=200"
                  + ("" if self.durable else " -c fsync=off"), "start")

    def pid(self) -> int:
        """The postmaster's process id (the first line of ``postmaster.pid``)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        """Immediately, as a crash or a pulled cable would (``-m immediate``)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        secret = f":{password}" if password else ""
        return f"postgresql://{USER}{secret}@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A new, empty database; returns its URL."""
        import psycopg

        name = f"fleet{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"
