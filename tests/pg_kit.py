"""A throwaway PostgreSQL 15 server for the tests: real, never a mock.

One server per pytest session (`pg_server`), started on first use:

- `initdb` into a fresh temporary directory (as the `postgres` user when the tests run as
  root, since PostgreSQL refuses to run as root; as the current user otherwise), with the
  settings a test server wants (fsync, full-page writes and synchronous commit off, no JIT,
  minimal WAL), listening only on 127.0.0.1 on a free port and on a Unix socket inside that
  directory, trust authentication for local connections only;
- stopped (`pg_ctl stop -m immediate`) and its directory removed at the end of the session,
  by the fixture's teardown; by an `atexit` hook when the interpreter exits without it; and
  by a watchdog process holding the read end of a pipe whose write end only pytest holds,
  so that even a SIGKILLed or Ctrl-C'd pytest never leaves a server running.

Each test that wants a database asks for `pg_url` (a new empty database, dropped after the
test) or calls `pg_server.create_database(template=...)` itself: `CREATE DATABASE tN` copies
a template (an empty one by default; a migrated one if a test set up a template), which
costs about 15-25 ms on a quiet 2-core box, 50-60 ms when it is loaded, and the drop after
the test 10-15 ms (`pytest -s tests/test_pg_kit.py -k cost` prints it).

When the binaries are missing (`SCHEDD_PG_BIN`, default `/usr/lib/postgresql/15/bin`) the
PostgreSQL tests skip with the reason, unless `SCHEDD_REQUIRE_POSTGRES=1` (set by `.ci/run`),
where they fail instead.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PG_BIN = Path(os.environ.get("SCHEDD_PG_BIN", "/usr/lib/postgresql/15/bin"))
REQUIRED = os.environ.get("SCHEDD_REQUIRE_POSTGRES", "") not in ("", "0")
SUPERUSER = "postgres"
#: A role the test server authenticates by password (scram-sha-256; every other role is
#: trusted): for tests of a wrong password. A test creates it (CREATE ROLE ... PASSWORD).
PASSWORD_ROLE = "schedd_pw"

# Settings for a server whose data is thrown away: nothing has to survive a crash.
TEST_SETTINGS: dict[str, str] = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_wal_size": "'1GB'",
    "checkpoint_timeout": "'30min'",
    "jit": "off",
    "autovacuum": "off",
    "max_connections": "300",
    "shared_buffers": "'128MB'",
    "log_min_messages": "warning",
    "log_min_error_statement": "panic",
    "log_checkpoints": "off",
    "timezone": "'UTC'",
}

# The watchdog: blocks on stdin until pytest's end of the pipe closes (pytest exited in any
# way, SIGKILL included), then stops the server at once and removes its directory.
_WATCHDOG = r"""
import os, shutil, subprocess, sys
pg_ctl, datadir, root, user = sys.argv[1:5]
sys.stdin.buffer.read()
if os.path.exists(os.path.join(datadir, "postmaster.pid")):
    cmd = [pg_ctl, "stop", "-D", datadir, "-m", "immediate", "-w", "-t", "30"]
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
shutil.rmtree(root, ignore_errors=True)
"""


def missing_reason() -> str | None:
    """Why a server cannot be started here, or None when it can."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / tool).is_file():
            return f"PostgreSQL 15 is not installed ({PG_BIN / tool} is missing)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root and runuser is missing (initdb refuses root)"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PgServer:
    """A running throwaway server. `url(dbname)` gives a libpq URL over TCP to 127.0.0.1."""

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        self.settings = {**TEST_SETTINGS, **(settings or {})}
        self.root = Path(tempfile.mkdtemp(prefix="schedd-pg-"))
        self.datadir = self.root / "data"
        self.sockdir = self.root / "sock"
        self.logfile = self.root / "server.log"
        self.port = 0
        self.run_as = SUPERUSER if os.geteuid() == 0 else ""
        self._names = itertools.count(1)
        self._lock = threading.Lock()
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._stopped = False

    # -- lifecycle -------------------------------------------------------------------------

    def _cmd(self, *argv: str) -> list[str]:
        cmd = [str(PG_BIN / argv[0]), *argv[1:]]
        return ["runuser", "-u", self.run_as, "--", *cmd] if self.run_as else cmd

    def _run(self, *argv: str, timeout: float = 120) -> None:
        res = subprocess.run(
            self._cmd(*argv), capture_output=True, text=True, timeout=timeout, check=False
        )
        if res.returncode != 0:
            raise RuntimeError(
                f"{argv[0]} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}\n"
                + self.log_tail()
            )

    def start(self) -> PgServer:
        self.sockdir.mkdir()
        if self.run_as:
            shutil.chown(self.root, self.run_as)
            shutil.chown(self.sockdir, self.run_as)
        self._start_watchdog()
        atexit.register(self.stop)
        self._run(
            "initdb", "-D", str(self.datadir), "-U", SUPERUSER, "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        conf = "\n".join(f"{k} = {v}" for k, v in self.settings.items())
        conf += f"\nunix_socket_directories = '{self.sockdir}'\n"
        with (self.datadir / "postgresql.conf").open("a") as f:
            f.write("\n# schedd tests\n" + conf)
        # Only 127.0.0.1 and the private socket: trust authentication never leaves the box.
        # The role PASSWORD_ROLE (made by a test that needs it) must give its password.
        (self.datadir / "pg_hba.conf").write_text(
            f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n"
            "local all all trust\nhost all all 127.0.0.1/32 trust\n"
        )
        last: Exception | None = None
        for _ in range(5):  # a free port can be taken between the probe and the bind
            self.port = _free_port()
            try:
                self._run(
                    "pg_ctl", "start", "-D", str(self.datadir), "-l", str(self.logfile),
                    "-w", "-t", "60", "-o", f"-p {self.port}",
                )  # fmt: skip
                return self
            except RuntimeError as e:
                last = e
        self.stop()
        raise RuntimeError(f"the test PostgreSQL server did not start: {last}")

    def _start_watchdog(self) -> None:
        self._watchdog = subprocess.Popen(
            [
                sys.executable, "-c", _WATCHDOG, str(PG_BIN / "pg_ctl"), str(self.datadir),
                str(self.root), self.run_as,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to pytest's process group does not kill it
        )  # fmt: skip

    def stop(self) -> None:
        """Stop the server at once and remove its directory. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if (self.datadir / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self._run("pg_ctl", "stop", "-D", str(self.datadir), "-m", "immediate", "-w")
        if self._watchdog is not None:
            with contextlib.suppress(Exception):
                assert self._watchdog.stdin is not None
                self._watchdog.stdin.close()
                self._watchdog.wait(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.logfile.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "server log:\n" + "\n".join(lines[-n:])

    # -- databases -------------------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def execute(self, sql: str, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement in autocommit (CREATE/DROP DATABASE need it); its rows."""
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True) as conn:
            cur = conn.execute(sql.encode())
            return cur.fetchall() if cur.description is not None else []

    def create_database(self, template: str = "template0", name: str | None = None) -> str:
        """A new database copied from `template` (empty by default); its URL."""
        if name is None:
            with self._lock:
                name = f"t{next(self._names)}"
        # FILE_COPY (copy the files, after a checkpoint that fsync=off makes cheap) measured
        # ~1.5x faster than PostgreSQL 15's default WAL_LOG for small templates
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def make_template(self, name: str) -> str:
        """An empty database marked as a template (fill it through its URL, then pass its
        name to `create_database`): copying a migrated template is cheaper than migrating
        every test's database."""
        url = self.create_database(name=name)
        self.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true')
        return url


def dbname_of(url: str) -> str:
    return url.rsplit("/", 1)[1].split("?", 1)[0]


_server: PgServer | None = None
_server_error: str | None = None


def server() -> PgServer:
    """The session's server, started on first use; skips (or fails in CI) when it cannot
    be started here."""
    global _server, _server_error
    if _server is not None:
        return _server
    reason = _server_error or missing_reason()
    if reason is None:
        try:
            _server = PgServer().start()
            return _server
        except Exception as e:
            _server_error = reason = f"the test PostgreSQL server did not start: {e}"
    _server_error = reason
    if REQUIRED:
        pytest.fail(f"SCHEDD_REQUIRE_POSTGRES is set but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    srv = server()
    yield srv
    srv.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh empty database for one test; dropped after it (connections are forced off)."""
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(dbname_of(url))


def report_header() -> str:
    """For conftest's pytest_report_header: say up front whether PostgreSQL tests run."""
    reason = missing_reason()
    if reason is None:
        return f"postgresql: {PG_BIN} (tests start a throwaway server)"
    if REQUIRED:
        return f"postgresql: REQUIRED but {reason}: PostgreSQL tests fail"
    return f"postgresql: {reason}: PostgreSQL tests skip"
