"""The nodes' signals (schedd/notify.py) over PostgreSQL's LISTEN/NOTIFY.

Two threads, each with its own autocommit connection, so that nothing here waits on the
event loop or on the writer's transactions: the listener LISTENs on channel `schedd` and
hands each notification to the loop (call_soon_threadsafe); the sender takes what the loop
published from a queue and sends everything queued so far in one statement (a burst of
schedule changes costs one round trip, and WAKE signals are folded into the earliest).
A lost connection is reconnected after a pause. The signals sent meanwhile are lost (they
are hints: see notify.py), so once the listener LISTENs again it delivers LOST to every
subscriber, who then acts as if any signal might have come: a key revoked through another
node during the gap is forgotten at the reconnect (not up to services.AUTH_CACHE_S later),
a change made there wakes the loop, a cancel is looked for at once. The gap is what the
listener needs to notice (at once for a connection the server closed, as when it is
terminated or restarts) plus RETRY_S and the reconnect. A signal the sender could not send
is lost for the other nodes without their knowing: they find the change by their fallback
bounds.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Any

from schedd.notify import CHANNEL, LOST, WAKE, Handler, decode, encode

log = logging.getLogger("schedd.notify")

__all__ = ["CHANNEL", "PgNotifier"]

RETRY_S = 1.0
START_WAIT_S = 10.0  # how long start() waits for the listener to listen
_STOP = object()


class PgNotifier:
    def __init__(self, url: str) -> None:
        self.url = url
        self._handlers: dict[str, Handler] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._out: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._late = False  # start() went on before the listener listened
        self._threads: list[threading.Thread] = []

    async def start(self) -> None:
        """Start both threads; returns once the listener listens (bounded)."""
        self._loop = asyncio.get_running_loop()
        for target, name in ((self._listen, "schedd-notify-listen"),
                             (self._send, "schedd-notify-send")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        if not await asyncio.get_running_loop().run_in_executor(
                None, self._listening.wait, START_WAIT_S):
            # the node goes on without (the signals are hints); what it misses until the
            # listener listens counts as lost then
            self._late = True
            log.warning("not listening for other nodes' signals yet; starting without")

    def subscribe(self, node_id: str, handler: Handler) -> None:
        self._handlers[node_id] = handler

    def publish(self, node_id: str, kind: str, arg: str = "") -> None:
        self._out.put(encode(node_id, kind, arg))

    async def close(self) -> None:
        self._stop.set()
        self._out.put(_STOP)
        threads, self._threads = self._threads, []
        loop = asyncio.get_running_loop()
        for t in threads:
            await loop.run_in_executor(None, t.join, 5.0)

    # ------------------------------------------------------------------ threads
    def _connect(self, role: str) -> Any:
        import psycopg

        # application_name: which connection is which in pg_stat_activity
        return psycopg.connect(self.url, autocommit=True, connect_timeout=5,
                               application_name=f"schedd-notify-{role}")

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with self._connect("listen") as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    # again, or late: what came meanwhile is lost
                    if self._listening.is_set() or self._late:
                        log.info("listening for other nodes' signals again; any sent "
                                 "meanwhile are treated as lost")
                        self._deliver_all(LOST)
                    self._listening.set()
                    while not self._stop.is_set():
                        for n in conn.notifies(timeout=0.5):
                            self._dispatch(n.payload)
            except Exception as exc:
                if self._stop.is_set():
                    return
                log.warning("listening for other nodes' signals failed (%s); again in "
                            "%.0f s", type(exc).__name__, RETRY_S)
                self._stop.wait(RETRY_S)

    def _dispatch(self, payload: str) -> None:
        got = decode(payload)
        loop = self._loop
        if got is None or loop is None:
            return
        sender, kind, arg = got
        for node_id, handler in list(self._handlers.items()):
            if node_id != sender:
                loop.call_soon_threadsafe(_deliver, handler, kind, arg)

    def _deliver_all(self, kind: str, arg: str = "") -> None:
        """The notifier's own signal (LOST), to every subscriber."""
        loop = self._loop
        if loop is None:
            return
        for handler in list(self._handlers.values()):
            loop.call_soon_threadsafe(_deliver, handler, kind, arg)

    def _send(self) -> None:
        conn: Any = None
        while True:
            item = self._out.get()
            if item is _STOP:
                break
            batch = [item]
            while True:  # everything queued meanwhile goes in the same statement
                try:
                    more = self._out.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    self._out.put(_STOP)
                    break
                batch.append(more)
            payloads = _fold(batch)
            try:
                if conn is None or conn.closed:
                    conn = self._connect("send")
                conn.execute("SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p",
                             (CHANNEL, payloads))
            except Exception as exc:
                log.warning("could not signal other nodes (%s): they find the change at "
                            "their next wake", type(exc).__name__)
                if conn is not None:
                    conn.close()
                conn = None
                self._stop.wait(RETRY_S)
        if conn is not None:
            conn.close()


def _fold(batch: list[str]) -> list[str]:
    """Distinct payloads in order; the WAKE signals of one sender folded into the earliest."""
    out: dict[str, None] = {}
    wakes: dict[str, int | None] = {}
    for p in batch:
        got = decode(p)
        if got is not None and got[1] == WAKE:
            sender, _, arg = got
            ms = int(arg) if arg.lstrip("-").isdigit() else None
            if sender not in wakes:
                wakes[sender] = ms
            else:
                prev = wakes[sender]
                wakes[sender] = None if ms is None or prev is None else min(prev, ms)
            continue
        out[p] = None
    for sender, ms in wakes.items():
        out[encode(sender, WAKE, "" if ms is None else str(ms))] = None
    return list(out)


def _deliver(handler: Handler, kind: str, arg: str) -> None:
    try:
        handler(kind, arg)
    except Exception:
        log.exception("a %s signal could not be handled", kind)
