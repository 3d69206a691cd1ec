"""A real `schedd serve` tells a (fake) systemd READY, WATCHDOG and STOPPING."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from schedd import systemd


def test_notify_is_a_no_op_without_a_socket() -> None:
    assert systemd.notify("READY=1", env={}) is False
    assert systemd.watchdog_interval(env={}) is None
    assert systemd.watchdog_interval(env={"WATCHDOG_USEC": "4000000"}) == 2.0
    assert systemd.watchdog_interval(env={"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}) is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.e2e
def test_serve_sends_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(0.2)
    env = {**os.environ, "NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "1000000",
           "SCHEDD_LOG_LEVEL": "warning"}
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "schedd", "serve", "--db", str(tmp_path / "s.db"),
         "--port", str(_free_port())], env=env)
    got: list[str] = []

    def collect(until: float, want: str) -> bool:
        while time.monotonic() < until:
            with contextlib.suppress(TimeoutError):
                got.extend(sock.recv(4096).decode().split("\n"))
            if want in got:
                return True
        return False

    try:
        assert collect(time.monotonic() + 20, "READY=1"), got
        # WatchdogSec=1 s: the loop (capped at 0.5 s) keeps pinging while idle
        n = got.count("WATCHDOG=1")
        deadline = time.monotonic() + 5
        while got.count("WATCHDOG=1") < n + 3 and time.monotonic() < deadline:
            collect(time.monotonic() + 0.3, "never")
        assert got.count("WATCHDOG=1") >= n + 3, got
        proc.send_signal(signal.SIGTERM)
        assert collect(time.monotonic() + 10, "STOPPING=1"), got
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
