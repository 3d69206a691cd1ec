"""The process harness the bench scripts share: real `python -m schedd serve` daemons and
the bench sink (bench/peers/sink.py) as subprocesses on 127.0.0.1, the CPU a process took
(from /proc), and percentiles. No third-party import (the daemon's readiness is asked with
schedd's own LeanHttp, imported when used). The in-process aiohttp sink of lateness.py and
prune.py is bench/common.py.

Every process started here is bounded: `ServeProcess.stop` and `SinkProcess.stop` send
SIGTERM, wait 30 s, then kill.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HOST = "127.0.0.1"


def pct(values: list[float], q: float) -> float:
    """The q-quantile of values (nearest rank below), NaN when there are none."""
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def proc_cpu_s(pid: int, children_done: bool = False) -> float:
    """User+system CPU seconds of a live process (with its reaped children's if asked);
    0.0 once it is gone."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(f[11]) + int(f[12]) + ((int(f[13]) + int(f[14])) if children_done else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The pids of a process's live children."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def free_port() -> int:
    """A port free on 127.0.0.1 now (a random one collided once)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def terminate(proc: subprocess.Popen[Any], timeout_s: float = 30.0) -> None:
    """SIGTERM, wait (bounded), then SIGKILL; reaped either way."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class SinkProcess:
    """bench/peers/sink.py (the harness's sink: a raw asyncio protocol) in its own process,
    so that the webhooks' receiver takes nothing from the measured process; it writes one
    JSON line a request (arrival s, path, job, due s) to `<workdir>/sink.jsonl`.
    cpus: pin it (taskset), e.g. "0" beside a process pinned to cpu1."""

    def __init__(self, workdir: Path, cpus: str | None = None) -> None:
        self.out = Path(workdir) / "sink.jsonl"
        argv = [sys.executable, str(HERE / "peers" / "sink.py"), "--host", HOST, "--port", "0",
                "--out", str(self.out)]
        self.proc = subprocess.Popen(([ "taskset", "-c", cpus] if cpus else []) + argv,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("SINK_READY "):
            self.proc.kill()
            self.proc.wait()
            raise SystemExit(f"the sink did not start: {line!r}")
        self.port = int(line.split()[1])
        self.url = f"http://{HOST}:{self.port}"

    def stop(self) -> list[dict[str, Any]]:
        """Stop it; every request it received, in order."""
        terminate(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if not self.out.exists():
            return []
        return [json.loads(x) for x in self.out.read_text().splitlines() if x]


class ServeProcess:
    """One `python -m schedd serve` on `<dir>/schedd.db`, on a free port, its output in
    `<dir>/daemon.log`. tree: the source tree whose schedd runs (PYTHONPATH; default this
    one); env: its SCHEDD_* settings (over SCHEDD_LOG_LEVEL=warning); inherit_schedd:
    whether this process's own SCHEDD_* variables reach it."""

    def __init__(self, directory: Path, *, tree: str | Path | None = None,
                 env: dict[str, str] | None = None, inherit_schedd: bool = True) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.db = str(self.dir / "schedd.db")
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        full = {k: v for k, v in os.environ.items()
                if inherit_schedd or not k.startswith("SCHEDD_")}
        # the tree's schedd first on the path; run from the daemon's directory, since `-m`
        # would put the current directory (maybe another tree) before it
        full |= {"SCHEDD_LOG_LEVEL": "warning", **(env or {}),
                 "PYTHONPATH": str(Path(tree or ROOT).resolve())}
        self.log = open(self.dir / "daemon.log", "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "schedd", "serve", "--db", self.db, "--host", HOST,
             "--port", str(self.port)], env=full, cwd=self.dir, stdout=self.log,
            stderr=subprocess.STDOUT)

    async def ready(self, timeout_s: float = 60.0, key_file: bool = True) -> dict[str, Any]:
        """Wait (bounded) until GET /readyz answers 200 and (key_file) the key file is
        written (only the first start on a database writes one); the /readyz body.
        SystemExit, with the log's tail, if it exits or is not ready."""
        from schedd.webhook_http import LeanHttp

        async with LeanHttp() as http:
            for _ in range(int(timeout_s / 0.05)):
                if self.proc.poll() is not None:
                    raise SystemExit(f"the daemon exited ({self.proc.returncode}); see "
                                     f"{self.log.name}:\n{self.log_tail()}")
                with contextlib.suppress(OSError):
                    status, body = await http.request("GET", HOST, self.port, "/readyz", {},
                                                      b"", timeout=1.0, excerpt=1 << 14)
                    if status == 200 and (not key_file or Path(self.db + ".key").exists()):
                        try:
                            out: dict[str, Any] = json.loads(body)
                        except ValueError:
                            out = {}
                        return out
                await asyncio.sleep(0.05)
        raise SystemExit(f"the daemon was not ready within {timeout_s:.0f} s; see "
                         f"{self.log.name}:\n{self.log_tail()}")

    def key(self) -> str:
        return Path(self.db + ".key").read_text().strip()

    def cpu_s(self) -> float:
        return proc_cpu_s(self.proc.pid)

    def kill(self) -> None:
        """SIGKILL (a crash), reaped."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        terminate(self.proc)
        self.log.close()

    def log_tail(self, chars: int = 2000) -> str:
        return Path(self.log.name).read_text(errors="replace")[-chars:]

    def errors(self) -> list[str]:
        """The log's ERROR and Traceback lines."""
        text = Path(self.log.name).read_text(errors="replace")
        return [x for x in text.splitlines() if " ERROR " in x or "Traceback" in x]
