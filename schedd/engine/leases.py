"""Worker leases: runs of `worker` schedules, executed by external workers that poll a queue.

A worker claims the oldest due pending run of its queues (`claim`, a long poll woken when a
run is queued), which becomes `running` and leased to it until lease_until_ms; each
`heartbeat` extends the lease; `complete` records its outcome through the Recorder. A lease
that ran out without a heartbeat fails its run with `heartbeat_timeout` (`expire_tx`, in
every cycle of the loop), which then follows the retry policy like any failure.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from schedd.clock import Clock
from schedd.engine.effects import Effects, log_run
from schedd.engine.recording import Recorder
from schedd.errors import Conflict, NotFound
from schedd.models import Run, RunStatus
from schedd.outcomes import Outcome
from schedd.store import Store, Tx

LEASE_COLS = ("status", "started_ms", "worker_id", "lease_until_ms", "last_heartbeat_ms")
EXPIRE_BATCH = 1000  # expired leases failed per cycle


class WorkerLeases:
    """The worker side of the engine. `apply` runs an Effects after its commit (the loop's
    Engine._apply); `wake(ms)` tells the loop something is due at ms."""

    def __init__(self, store: Store, clock: Clock, recorder: Recorder,
                 apply: Callable[[Effects], None],
                 wake: Callable[[int | None], None]) -> None:
        self.db = store.db
        self.store = store
        self.clock = clock
        self.recorder = recorder
        self.apply = apply
        self.wake = wake
        self.stopping = False  # open long polls answer with nothing
        self._queue_event = asyncio.Event()

    def notify(self) -> None:
        """A run was queued (or the engine stops): wake every open long poll."""
        self._queue_event.set()
        self._queue_event = asyncio.Event()

    async def claim(self, tenant_id: str, queues: Sequence[str], worker_id: str,
                    wait_s: float, lease_s: float) -> Run | None:
        """The oldest due run of these queues, now running and leased to worker_id; or None
        when none came within wait_s (long poll)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s

        def tx(c: Tx, now: int) -> Run | None:
            run = self.store.claim_queued_run(c, tenant_id, queues, now)
            if run is not None:
                run.status = RunStatus.running
                run.started_ms = now
                run.worker_id = worker_id
                run.lease_until_ms = now + int(lease_s * 1000)
                run.last_heartbeat_ms = now
                self.store.update_runs(c, [run], LEASE_COLS)
            return run

        while True:
            event = self._queue_event
            run = await self.db.write(tx, self.clock.now_ms())
            if run is not None:
                log_run(run)
                self.wake(run.lease_until_ms)
                return run
            remaining = deadline - loop.time()
            if remaining <= 0 or self.stopping:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=min(remaining, 1.0))

    async def heartbeat(self, tenant_id: str, run_id: str, worker_id: str,
                        lease_s: float) -> tuple[Run, bool]:
        """Extend the lease; (run, True) when the run was cancelled meanwhile."""
        now = self.clock.now_ms()

        def tx(c: Tx) -> tuple[Run, bool]:
            run = self._worker_run(c, tenant_id, run_id, worker_id)
            if run.status is RunStatus.cancelled:
                return run, True
            if run.status is not RunStatus.running:
                raise Conflict(f"Run is {run.status.value}")
            run.lease_until_ms = now + int(lease_s * 1000)
            run.last_heartbeat_ms = now
            self.store.update_runs(c, [run], ("lease_until_ms", "last_heartbeat_ms"))
            return run, False

        return await self.db.write(tx)

    async def complete(self, tenant_id: str, run_id: str, worker_id: str, succeeded: bool,
                       result: Any, error_message: str | None) -> Run:
        now = self.clock.now_ms()
        fx = Effects()

        def tx(c: Tx) -> Run:
            run = self._worker_run(c, tenant_id, run_id, worker_id)
            if run.status is not RunStatus.running:
                raise Conflict(f"Run is {run.status.value}; it cannot be completed")
            outcome = Outcome(ok=succeeded, result=result if isinstance(result, dict) else (
                None if result is None else {"value": result}),
                error_code=None if succeeded else "worker_failed",
                error_message=None if succeeded else (error_message or "the worker failed"))
            self.recorder.record_tx(c, [(run, outcome, now)], fx)
            return run

        run = await self.db.write(tx)
        self.apply(fx)
        return run

    def expire_tx(self, c: Tx, now: int, fx: Effects) -> None:
        """Fail the runs whose lease ended without a heartbeat (oldest first, a batch)."""
        expired = self.store.expired_leases(c, now, EXPIRE_BATCH)
        if expired:
            self.recorder.record_tx(c, [
                (r, Outcome(ok=False, error_code="heartbeat_timeout",
                            error_message=f"worker {r.worker_id} sent no heartbeat before its "
                                          "lease ended"), now)
                for r in expired
            ], fx)

    def _worker_run(self, c: Tx, tenant_id: str, run_id: str, worker_id: str) -> Run:
        run = self.store.get_run(c, tenant_id, run_id)
        if run is None:
            raise NotFound("Run")
        if run.worker_id is None or run.worker_id != worker_id:
            raise Conflict("This run is not leased to this worker")
        return run
