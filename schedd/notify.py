"""Signals between the nodes that share one database (docs/operations.md, "Running several
nodes"): a schedule changed (wake), a run was queued for workers (queued), a run was
cancelled (cancel), an API key was revoked (revoked). Each is a hint that makes another
node act sooner, never the only way it learns: the database stays the truth, and without
any signal a node still finds the work at its next wake, a worker's long poll looks again
every second, the node running a cancelled run stops it at its next lease renewal, and a
node forgets a verified key within services.AUTH_CACHE_S. A notifier that may have missed
signals (a reconnect) says so to every subscriber with LOST.

`LocalHub` delivers within one process: the engines subscribed to the same hub (tests run
two nodes in one process; a daemon on SQLite has its own, with nobody else on it). A
PostgreSQL implementation carries the same events over LISTEN/NOTIFY.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("schedd.notify")

#: the kinds of signal and what their argument is
WAKE = "wake"  # the earliest instant something may be due, in ms ("" : now)
QUEUED = "queued"  # a worker queue got a run (no argument)
CANCEL = "cancel"  # a run id whose action must stop wherever it runs
# an API key id that was revoked: forget the keys verified lately (services' auth cache).
# Sent by the store inside the revoking transaction (sender "-"), not through publish.
REVOKED = "revoked"
# any of the above may have been missed (no argument): the notifier lost its way to the
# other nodes for a while (PostgreSQL's listener reconnected) and tells every subscriber
# once it is back, so that each acts as on every kind of signal at once (wakes its loop
# and its long polls, checks the runs executing here, forgets the keys it verified): a
# signal lost in the gap then costs one reconnect, not the whole fallback bound.
LOST = "lost"
#: PostgreSQL's channel of these signals (schedd/notify_pg.py)
CHANNEL = "schedd"

Handler = Callable[[str, str], None]


class Notifier(Protocol):
    def subscribe(self, node_id: str, handler: Handler) -> None:
        """Deliver the other nodes' signals to `handler(kind, arg)`, on the event loop."""

    def publish(self, node_id: str, kind: str, arg: str = "") -> None:
        """Tell the other nodes (after the change committed). Never raises, never blocks."""

    async def close(self) -> None: ...


def encode(node_id: str, kind: str, arg: str) -> str:
    return f"{node_id} {kind} {arg}"


def decode(payload: str) -> tuple[str, str, str] | None:
    parts = payload.split(" ", 2)
    if len(parts) != 3:
        return None
    return parts[0], parts[1], parts[2]


class LocalHub:
    """Signals between the engines of this process."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def subscribe(self, node_id: str, handler: Handler) -> None:
        self._handlers[node_id] = handler

    def publish(self, node_id: str, kind: str, arg: str = "") -> None:
        if len(self._handlers) < 2 and node_id in self._handlers:
            return  # alone: nobody to tell (the daemon on SQLite)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        for other, handler in list(self._handlers.items()):
            if other != node_id:
                loop.call_soon(_deliver, handler, kind, arg)

    async def close(self) -> None:
        self._handlers.clear()


def _deliver(handler: Handler, kind: str, arg: str) -> None:
    try:
        handler(kind, arg)
    except Exception:
        log.exception("a %s signal could not be handled", kind)
