"""While a burst of due runs fires, the HTTP server reads no new requests (within bounds).

Why (issue 12 §4, bench/RESULTS.md §S6 and §S7): the API and the scheduler share one event
loop, and every turn of it also runs every HTTP request that arrived meanwhile. A burst of
due runs needs many turns (the claim's answer from the writer thread, starting the
actions, rounds of webhook answers, recording), so under a busy API each turn, and the
burst, gets longer and fires arrive late. The engine says when a burst starts and ends
(`Engine.on_burst`); this gate then stops reading from the HTTP connections
(`transport.pause_reading()`), so the loop's turns go to the burst. Requests already read
finish normally; the clients' next requests wait in the kernel's socket buffers and are
read when the burst is over.

Bounds, so that the scheduler can never starve the API:
- one pause per burst, at most `max_pause_s` long (then reading resumes, even if the burst
  goes on: an action that hangs, a backlog of thousands of due runs);
- after a pause, at least `min_read_s` of reading before the next one starts (a burst that
  starts sooner pauses once that time has passed, if it is still going on).
So the API reads at least min_read_s / (max_pause_s + min_read_s) of the time whatever the
engine does, and a request waits at most max_pause_s longer than it would have.

What it touches, and what it leaves alone: only connections that were reading when the
pause began (the server's own flow control, `protocol.flow.read_paused`, may have paused
one itself: that one is left as it is; an idle connection whose keep-alive timeout,
`protocol.timeout_keep_alive_task`, ends within the pause is left reading too), and on
resume only the transports this gate paused, still open, that the server does not
itself want paused meanwhile. A connection opened during a pause is read normally (it was
not in the set when the pause began). The listening socket keeps accepting.

The cyclic garbage collector waits too, for the same bounded time: under API load its
generation-1 collections take ~18 ms (every object the requests left for it to walk), and
one that lands in a burst makes every fire after it that much later (bench/RESULTS.md
§S9). What it would have collected during the pause is collected right after it, by the
first allocation past its threshold. A collector someone else turned off stays off.

It knows nothing of uvicorn but this shape: `connections` is a live collection of protocol
objects, each with a `transport` (pause_reading / resume_reading / is_reading /
is_closing) and, optionally, a `flow` with `read_paused` (uvicorn's
`server.server_state.connections`). The engine knows nothing of the gate.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Collection
from typing import Any, Protocol

log = logging.getLogger("schedd")

#: The longest pause of reading per burst (counted from its start, which the daemon sets
#: 20 ms before the due instant). A burst of 200 due webhooks takes ~30 ms on a quiet
#: 2-core box (W3's p99 alone), so a paused burst is normally over well within this. On a
#: box loaded by other work, paused bursts took 90 ms on average (bench/RESULTS.md §S7)
#: and a bound of 100 ms cut a third of them short. A longer burst (a backlog, an action
#: that hangs) gets this much and then shares the loop with the API as before. So an API
#: request waits at most this much longer than without the gate.
MAX_PAUSE_S = 0.15
#: The least reading between two pauses: whatever the engine does (bursts back to back),
#: the API reads at least MIN_READ_S / (MAX_PAUSE_S + MIN_READ_S) = 40 % of the time.
MIN_READ_S = 0.1


class _Timer(Protocol):
    def cancel(self) -> None: ...


class _Collector(Protocol):
    """The gc module's switch (a fake in tests)."""

    def isenabled(self) -> bool: ...

    def disable(self) -> None: ...

    def enable(self) -> None: ...


class ReadGate:
    """`burst(True)` / `burst(False)`, from the engine (on the loop that serves HTTP)."""

    def __init__(self, connections: Collection[Any], *, monotonic: Callable[[], float],
                 call_later: Callable[[float, Callable[[], None]], _Timer],
                 max_pause_s: float = MAX_PAUSE_S, min_read_s: float = MIN_READ_S,
                 enabled: bool = True, collector: _Collector = gc) -> None:
        self.connections = connections
        self.monotonic = monotonic
        self.call_later = call_later
        self.max_pause_s = max_pause_s
        self.min_read_s = min_read_s
        self.enabled = enabled
        self.collector = collector
        self._held_gc = False  # this gate turned the collector off for its pause
        self._paused: list[Any] = []  # the transports this gate paused
        self._pausing = False
        self._paused_at = 0.0
        self._resumed_at: float | None = None
        self._timer: _Timer | None = None
        # a burst is going on that has not had its pause yet
        self._owed = False
        # counters (read by the metrics collector): pauses begun, pauses ended by the bound,
        # seconds paused in all
        self.pauses = 0
        self.bounded = 0
        self.paused_s = 0.0

    @property
    def paused(self) -> bool:
        return self._pausing

    def burst(self, on: bool) -> None:
        if not self.enabled:
            return
        if on:
            if self._pausing:
                return  # a new burst within a pause: the same pause (its bound holds)
            self._owed = True
            self._try_pause()
        else:
            self._owed = False
            if self._pausing:
                self._resume()
            elif self._timer is not None:  # a deferred pause no longer needed
                self._timer.cancel()
                self._timer = None

    def _try_pause(self) -> None:
        now = self.monotonic()
        if self._resumed_at is not None and now < self._resumed_at + self.min_read_s:
            if self._timer is None:
                self._timer = self.call_later(self._resumed_at + self.min_read_s - now,
                                              self._deferred)
            return
        if self._timer is not None:
            # a deferred pause's timer due in this same turn: cancelled, so that it cannot
            # clear the bound's timer set below (which would then cut a later pause short)
            self._timer.cancel()
            self._timer = None
        self._owed = False
        self._pausing = True
        self._paused_at = now
        self.pauses += 1
        # the bound first: whatever raises below, the pause (and the collector's) ends
        self._timer = self.call_later(self.max_pause_s, self._bound)
        if self.collector.isenabled():
            self.collector.disable()
            self._held_gc = True
        # tracked as they are paused: if anything below raises, the bound resumes these
        paused: list[Any] = []
        self._paused = paused
        for proto in list(self.connections):
            t = getattr(proto, "transport", None)
            flow = getattr(proto, "flow", None)
            if t is None or t.is_closing() or (flow is not None and flow.read_paused):
                continue
            keep_alive = getattr(proto, "timeout_keep_alive_task", None)
            if keep_alive is not None and keep_alive.when() - now < self.max_pause_s:
                # an idle connection the server closes within the pause: a request sent
                # just before that must be read, not left unread until the close
                continue
            if t.is_reading():
                t.pause_reading()
                paused.append((proto, t))
        if not self._pausing:
            # ended meanwhile (a burst(False) from inside the loop above, e.g. a transport
            # callback; SIGTERM's handler no longer does it, see daemon.py): its resume
            # took the list as it was then; every one paused is read again
            self._release_gc()
            self._resume_all(paused)

    def _deferred(self) -> None:
        self._timer = None
        if self._owed and not self._pausing:
            self._try_pause()

    def _bound(self) -> None:
        self._timer = None
        if self._pausing:
            self.bounded += 1
            self._resume()

    def _resume(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        now = self.monotonic()
        self._pausing = False
        self._resumed_at = now
        self.paused_s += now - self._paused_at
        paused, self._paused = self._paused, []
        self._release_gc()
        self._resume_all(paused)

    def _release_gc(self) -> None:
        if self._held_gc:
            self._held_gc = False
            self.collector.enable()

    @staticmethod
    def _resume_all(paused: list[Any]) -> None:
        for proto, t in paused:
            flow = getattr(proto, "flow", None)
            if t.is_closing() or (flow is not None and flow.read_paused):
                continue  # closed meanwhile, or the server wants it paused itself
            if not t.is_reading():
                t.resume_reading()

    def close(self) -> None:
        """Read again, and pause no more (shutdown)."""
        self.enabled = False
        self._owed = False
        if self._pausing:
            self._resume()
        elif self._timer is not None:
            self._timer.cancel()
            self._timer = None
