"""sd_notify over $NOTIFY_SOCKET, standard library only.

READY=1 once the API answers and the loop runs, WATCHDOG=1 from the scheduler loop after
each healthy wake (so a hung loop, not merely a live process, is what systemd watches),
STOPPING=1 on SIGTERM. Without NOTIFY_SOCKET every call is a no-op.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def notify(*messages: str, env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    addr = env.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr[0] == "@":  # abstract namespace
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall("\n".join(messages).encode())
    except OSError:
        return False
    return True


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when not asked."""
    env = os.environ if env is None else env
    usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    try:
        return max(0.5, int(usec) / 2e6)
    except ValueError:
        return None
