"""A node's earlier lives: the file `<db>.node` (beside the key file) names the node that last
served from this place, and is locked (flock) for as long as that node runs.

A node id is new at every start, so a restarted node cannot recognise its own runs by id.
This file tells it: when the lock is free, the process that held it is gone (the kernel
drops a flock when its process dies, SIGKILL included), so the runs of the node it names are
nobody's and can be failed at once instead of after their lease. When the lock is held,
another live process serves from the same place: nothing is known dead, and that node's runs
wait for their lease like any other's. A node that cannot use the file at all (read-only
directory) just starts without that knowledge: leases still recover everything, later.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path

log = logging.getLogger("schedd.node")


class NodeFile:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self, node_id: str) -> list[str]:
        """Lock the file and write `node_id` into it; returns the id it named before (a
        dead node: its process released the lock), or [] when there was none or the lock
        is held by a live process."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            log.warning("cannot open %s (%s): a restart of this node waits for its runs' "
                        "leases", self.path, exc)
            return []
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            log.warning("%s is locked by another schedd serving from the same place: its "
                        "runs are left to their leases", self.path)
            return []
        previous = os.read(fd, 200).decode("ascii", "replace").strip()
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, f"{node_id}\n".encode("ascii"))
        os.fsync(fd)
        self._fd = fd
        return [previous] if previous and previous != node_id else []

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
