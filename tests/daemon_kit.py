"""Start the REAL daemon (`python -m schedd serve`) as a subprocess, for end-to-end tests.

    async with Daemon(tmp_path, env={"SCHEDD_SHUTDOWN_GRACE_SECONDS": "1"}) as d:
        r = await d.client.post("/v1/schedules", json={...})   # Bearer key already set
        code = await d.stop()        # SIGTERM, bounded wait, the exit code
        await d.start()              # again, on the same database (a new port)
        d.kill()                     # SIGKILL, no grace: a crash

Every start waits (bounded) for `GET /readyz` == 200 and reads the key from `<db>.key`.
The daemon's stderr (its log) goes to `<dir>/daemon.stderr.log`, appended across restarts
with a marker line per start; `log_text()` reads it, and leaving the context (or a test
failure) prints its tail so a failing test shows what the daemon said. No process is ever
left behind: leaving the context kills a daemon still running, and an atexit hook kills
any the tests forgot.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import db_backend
import httpx
import pytest
from sink import Sink

READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0

# Defaults that keep tests fast; a test's own env overrides them.
FAST_ENV = {
    "SCHEDD_SHUTDOWN_GRACE_SECONDS": "2",
    "SCHEDD_SLEEP_CAP_SECONDS": "5",
    "SCHEDD_LOG_LEVEL": "info",
}

_LIVE: set[subprocess.Popen[bytes]] = set()


def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
    _LIVE.clear()


atexit.register(_kill_leftovers)


async def poll(fetch: Any, predicate: Any, timeout: float, what: str) -> Any:
    """Call `await fetch()` until predicate(value) holds (bounded); the value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if predicate(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s; last: {value!r}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    """A local webhook receiver (tests/sink.py), closed after the test. Every test module
    has it (tests/conftest.py imports it)."""
    async with Sink() as s:
        yield s


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class DaemonError(RuntimeError):
    pass


class Daemon:
    def __init__(self, workdir: Path, *, env: dict[str, str] | None = None,
                 db_name: str = "schedd.db", db_dir: Path | None = None,
                 launcher: list[str] | None = None) -> None:
        """db_dir: where the database lives (default workdir), e.g. a small tmpfs.
        launcher: what runs the CLI instead of `python -m schedd` (tests/shifted_clock.py)."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db = Path(db_dir or self.workdir) / db_name
        self.launcher = launcher or [sys.executable, "-m", "schedd"]
        self.key_path = Path(str(self.db) + ".key")
        self.stderr_path = self.workdir / "daemon.stderr.log"
        self.env = {**FAST_ENV, **(env or {})}
        if db_backend.current_url:  # the test runs on PostgreSQL (tests/db_backend.py)
            self.env.setdefault("SCHEDD_DATABASE_URL", db_backend.current_url)
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.key = ""
        self.starts = 0
        self._client: httpx.AsyncClient | None = None
        self._stale: list[httpx.AsyncClient] = []

    # ------------------------------------------------------------------ context
    async def __aenter__(self) -> Daemon:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, exc_type: Any, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Kill whatever still runs, close the client, print the log tail."""
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        await self._close_client()
        self.print_log()

    # ------------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise DaemonError("the daemon is not running")
        return self._client

    async def start(self) -> None:
        """Start the daemon on this directory's database and wait until /readyz is 200."""
        if self.running:
            raise DaemonError("already running")
        await self._close_client()
        self.port = free_port()
        self.starts += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDD_")}
        env.update(self.env)
        env["PYTHONUNBUFFERED"] = "1"
        argv = [*self.launcher, "serve", "--db", str(self.db),
                "--host", "127.0.0.1", "--port", str(self.port)]
        with open(self.stderr_path, "ab") as log:  # the child keeps its own descriptor
            log.write(f"===== start #{self.starts} on port {self.port} "
                      f"at {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                argv, cwd=self.workdir, env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=log, start_new_session=True,
            )
        _LIVE.add(self.proc)
        try:
            await self._wait_ready()
        except BaseException:
            self.kill()
            self.print_log()
            raise
        self.key = self.key_path.read_text(encoding="utf-8").strip()
        self._client = httpx.AsyncClient(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.key}"},
            timeout=httpx.Timeout(20.0),
        )

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = "no answer"
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2.0) as probe:
            while True:
                assert self.proc is not None
                code = self.proc.poll()
                if code is not None:
                    raise DaemonError(f"the daemon exited with {code} before it was ready")
                try:
                    r = await probe.get("/readyz")
                    if r.status_code == 200 and self.key_path.is_file():
                        return
                    last = f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as exc:
                    last = type(exc).__name__
                if time.monotonic() > deadline:
                    raise DaemonError(f"not ready within {READY_TIMEOUT_S} s (last: {last})")
                await asyncio.sleep(0.05)

    async def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, then wait (bounded) for the exit; the exit code. Past the bound the
        process is killed and DaemonError raised."""
        proc = self._require_proc()
        await self._close_client()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = await self._wait_exit(timeout)
        if code is None:
            self.kill()
            raise DaemonError(f"no exit within {timeout} s of SIGTERM")
        self._finished()
        return code

    def kill(self) -> int:
        """SIGKILL: a crash at an arbitrary instant. Reaps the process; its exit code."""
        proc = self._require_proc()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        code = proc.wait(10)
        self._finished()
        if self._client is not None:
            # Its connections lead to a dead process; closed at the next start or close.
            self._stale.append(self._client)
            self._client = None
        return code

    async def restart(self) -> None:
        await self.start()

    async def _wait_exit(self, timeout: float) -> int | None:
        proc = self._require_proc()
        deadline = time.monotonic() + timeout
        while True:
            code = proc.poll()
            if code is not None:
                return code
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.05)

    def _require_proc(self) -> subprocess.Popen[bytes]:
        if self.proc is None:
            raise DaemonError("the daemon was never started")
        return self.proc

    def _finished(self) -> None:
        if self.proc is not None:
            _LIVE.discard(self.proc)

    async def _close_client(self) -> None:
        clients, self._stale = self._stale, []
        if self._client is not None:
            clients.append(self._client)
            self._client = None
        for client in clients:
            await client.aclose()

    # ------------------------------------------------------------------ debugging
    def log_text(self) -> str:
        try:
            return self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def print_log(self, lines: int = 80) -> None:
        """Print the tail of the daemon's log (pytest shows it only for a failing test)."""
        text = self.log_text().splitlines()
        print(f"----- daemon log {self.stderr_path} (last {lines} of {len(text)} lines) -----")
        print("\n".join(text[-lines:]))

    # ------------------------------------------------------------------ API helpers
    async def get(self, path: str, **kw: Any) -> httpx.Response:
        return await self.client.get(path, **kw)

    async def post(self, path: str, json: Any = None, **kw: Any) -> httpx.Response:
        return await self.client.post(path, json=json, **kw)

    async def put(self, path: str, json: Any = None, **kw: Any) -> httpx.Response:
        return await self.client.put(path, json=json, **kw)

    async def patch(self, path: str, json: Any = None, **kw: Any) -> httpx.Response:
        return await self.client.patch(path, json=json, **kw)

    async def delete(self, path: str, **kw: Any) -> httpx.Response:
        return await self.client.delete(path, **kw)

    async def create_schedule(self, **body: Any) -> dict[str, Any]:
        r = await self.post("/v1/schedules", json=body)
        if r.status_code != 201:
            raise AssertionError(f"create schedule: {r.status_code} {r.text}")
        out: dict[str, Any] = r.json()
        return out

    async def get_run(self, run_id: str) -> dict[str, Any]:
        r = await self.get(f"/v1/runs/{run_id}")
        if r.status_code != 200:
            raise AssertionError(f"get run: {r.status_code} {r.text}")
        out: dict[str, Any] = r.json()
        return out

    async def all_runs(self, schedule_id: str | None = None) -> list[dict[str, Any]]:
        """Every run (of a schedule), paging /v1/runs 100 at a time, newest first. Runs
        inserted meanwhile push older ones to later pages, so a run may be read twice but
        never skipped; duplicates are dropped (the first read wins)."""
        seen: dict[str, dict[str, Any]] = {}
        offset = 0
        params: dict[str, Any] = {"limit": 100}
        if schedule_id is not None:
            params["schedule_id"] = schedule_id
        while True:
            r = await self.get("/v1/runs", params={**params, "offset": offset})
            if r.status_code != 200:
                raise AssertionError(f"list runs: {r.status_code} {r.text}")
            page = r.json()
            for run in page["runs"]:
                seen.setdefault(run["id"], run)
            offset += len(page["runs"])
            if not page["has_more"] or not page["runs"]:
                return list(seen.values())

    async def wait_run(self, run_id: str, predicate: Any, timeout: float = 10.0,
                       what: str = "condition") -> dict[str, Any]:
        """Poll GET /v1/runs/{id} (bounded) until predicate(run) holds; the run."""
        deadline = time.monotonic() + timeout
        while True:
            run = await self.get_run(run_id)
            if predicate(run):
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id}: {what} not reached within {timeout} s; "
                                     f"last seen {run}")
            await asyncio.sleep(0.05)
