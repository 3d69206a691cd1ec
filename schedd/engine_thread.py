"""The engine on a thread of its own, with an event loop of its own (`engine_thread`).

Why: with one loop, every turn of it also runs the HTTP requests that arrived meanwhile.
Under a busy API a turn takes tens of milliseconds, and a burst of due runs needs several
turns (claim, start, send, record), so fires arrive late (bench/RESULTS.md §S6). On its
own loop the engine's turns hold only its own work; the two threads still share the GIL,
which CPython hands over at least every `sys.getswitchinterval()`: lowered to
SWITCH_INTERVAL_S while the engine thread runs.

What the HTTP side calls on the engine goes through `EngineProxy`: coroutines run on the
engine's loop (`run_coroutine_threadsafe`) and are awaited from the caller's, `wake` and
`stop_claiming` are scheduled onto it, and reads (readiness, metrics, counts) are plain
attribute reads. The database's writer and reader threads answer each caller on its own
loop, so both loops share them as before: still one writer.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from schedd.engine import Engine
from schedd.errors import StorageUnavailable
from schedd.metrics import Metrics
from schedd.models import Run

T = TypeVar("T")

#: Python's GIL switch interval while the engine runs on its own thread (CPython's default
#: is 5 ms). A thread that wants the GIL waits up to this long for the one holding it; the
#: engine thread wakes many times per burst of due runs (timer, claim answer, each round
#: of webhook answers), and with the API thread busy every wake paid up to 5 ms. W3 p99
#: under the mixed API load, 3 interleaved rounds (bench/RESULTS.md §S6): 5 ms 192 / 321 /
#: 215 ms, 1 ms 208 / 159 / 411 ms, 0.2 ms 95 / 138 / 108 ms.
SWITCH_INTERVAL_S = 0.0002


class EngineThread:
    """A daemon thread running one event loop until close()."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.previous_switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_S)  # process-wide; set back by close()
        self._thread = threading.Thread(target=self._main, name="schedd-engine", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            try:
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            finally:
                self.loop.close()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run coro on the engine's loop; its result, awaited from the caller's loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    async def close(self) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)
            await asyncio.to_thread(self._thread.join, 30)
        sys.setswitchinterval(self.previous_switch_interval)


class EngineProxy:
    """The Engine as the HTTP side sees it when the engine runs on its own thread."""

    def __init__(self, engine: Engine, host: EngineThread) -> None:
        self._engine = engine
        self._host = host
        self.metrics: Metrics = engine.metrics

    # ---------------------------------------------------------------- scheduled onto its loop
    def wake(self, due_ms: int | None = None) -> None:
        """Engine.wake's own test, made here first: a create due after the instant the
        engine sleeps until needs no wake, and a hop to its thread costs more CPU than
        the create (a year-out create woke the engine thread for nothing each time). The
        read is safe across threads: `_planned_ms` is set just before the engine sleeps
        and cleared as it wakes, before its next cycle reads the schedules; the caller's
        write committed before this read, so that cycle sees it."""
        if self._must_wake(due_ms):
            self._host.loop.call_soon_threadsafe(self._engine.wake, due_ms)

    def _must_wake(self, due_ms: int | None) -> bool:
        planned = self._engine._planned_ms
        return due_ms is None or planned is None or due_ms < planned

    def changed(self, due_ms: int | None = None) -> None:
        """Engine.changed: wake here, and tell the other nodes. With no other node (an
        exclusive engine, whose notifier is this process's own hub), as wake()."""
        if self._engine.exclusive and not self._must_wake(due_ms):
            return
        self._host.loop.call_soon_threadsafe(self._engine.changed, due_ms)

    def stop_claiming(self) -> None:
        self._host.loop.call_soon_threadsafe(self._engine.stop_claiming)

    def storage_fault(self, fault: StorageUnavailable) -> None:
        """The database's fault listener, from whichever loop's write failed."""
        self._host.loop.call_soon_threadsafe(self._engine._on_storage_fault, fault)

    # ---------------------------------------------------------------- reads
    def readiness(self) -> tuple[bool, dict[str, Any]]:
        return self._engine.readiness()

    @property
    def inflight(self) -> Any:
        return self._engine.inflight

    # ---------------------------------------------------------------- use cases, on its loop
    async def trigger(self, s: Any, **kw: Any) -> Run:
        return await self._host.run(self._engine.trigger(s, **kw))

    async def cancel(self, tenant_id: str, run_id: str, reason: str | None,
                     **kw: Any) -> Run:
        return await self._host.run(self._engine.cancel(tenant_id, run_id, reason, **kw))

    def cancel_schedule_runs_tx(self, *args: Any) -> Any:
        """In the caller's transaction (the writer thread): touches no loop state."""
        return self._engine.cancel_schedule_runs_tx(*args)

    def after_commit(self, fx: Any) -> None:
        self._host.loop.call_soon_threadsafe(self._engine.after_commit, fx)

    async def retry(self, tenant_id: str, run_id: str, **kw: Any) -> Run:
        return await self._host.run(self._engine.retry(tenant_id, run_id, **kw))

    async def claim_for_worker(self, tenant_id: str, queues: Sequence[str], worker_id: str,
                               *args: Any, **kw: Any) -> Any:
        return await self._host.run(
            self._engine.claim_for_worker(tenant_id, queues, worker_id, *args, **kw))

    async def heartbeat(self, *args: Any, **kw: Any) -> Any:
        return await self._host.run(self._engine.heartbeat(*args, **kw))

    async def complete(self, *args: Any, **kw: Any) -> Any:
        return await self._host.run(self._engine.complete(*args, **kw))
