"""The scheduler loop: the Engine that drives the parts (see schedd/engine/__init__.py).

One cycle is ONE write transaction run on the database's writer thread (`_cycle_tx`): it
records the outcomes that came in since the last cycle (retries chained, counters, pauses),
fails worker leases that ran out, starts due pending runs (retries, deferred, triggered),
claims every due occurrence of the due schedules (each occurrence's run row inserted and
the schedule's next_run_at advanced together; UNIQUE(schedule, occurrence, attempt)
forbids a double: claiming.py, with planning.py deciding), and plans the next wake-up.
Nothing in it touches asyncio: what the loop must do after the commit (start actions,
cancel tasks, wake, log, count) comes back as `Effects`. Actions run after the commit,
outside any transaction, bounded by max_concurrent_actions; an outcome wakes the loop, and
a busy engine records a whole batch in its next cycle.

Webhook runs that wait do not hold a slot for ever (issue 12: 2,000 schedules pointing at
a receiver that never answers must not starve the others): a webhook run stops counting
against max_concurrent_actions when it waits for one of its host's connections (the
webhook sender tells us, `release`), or, while the engine is full, once it has had no
answer for SLOW_WEBHOOK_MS. At most MAX_RELEASED runs are released at once; past that
they count again, and claiming stops until one ends, as before. A remote backend's run
(Prefect) is released the same way once its remote run exists and it is only polled.

The loop sleeps until the next due instant or a wake() from a change, capped by
sleep_cap_seconds so a clock jump or a suspended host is noticed; it never polls on a tick.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from schedd.actions import Prepared
from schedd.backends import Runner
from schedd.clock import Clock
from schedd.config import Settings
from schedd.engine.claiming import Claimer, Preparer
from schedd.engine.effects import Effects, log, log_run
from schedd.engine.leases import WorkerLeases
from schedd.engine.nodes import NodeLeases, new_node_id
from schedd.engine.planning import (
    new_run,
)
from schedd.engine.recording import Recorder
from schedd.errors import Conflict, NotFound, StorageUnavailable
from schedd.metrics import Metrics
from schedd.models import (
    FINISHED,
    ActionType,
    Run,
    RunStatus,
    Schedule,
    TriggerType,
    new_id,
)
from schedd.notify import CANCEL, LOST, QUEUED, WAKE, LocalHub, Notifier
from schedd.outcomes import Outcome
from schedd.store import Store, Tx

#: A webhook run without an answer for this long stops counting against
#: max_concurrent_actions, when the engine is full (see the module docstring).
SLOW_WEBHOOK_MS = 1000
#: At most this many webhook runs released from the count at once (each holds a task,
#: and a connection when it got one: webhook_max_connections bounds those).
MAX_RELEASED = 10_000
# on a shared database, how often a node looks for other nodes' runs whose lease ran out
# (one indexed read in the cycle's transaction): a dead node's runs are retried within this
# of their lease's end
EXPIRY_CHECK_MS = 1000
FAULT_RETRY_CAP_S = 2.0  # longest pause between cycles while the database cannot be written
FAULT_REMIND_S = 300.0  # while it lasts, the fault is logged again this often (not a flood)
FAULT_QUIET_S = 60.0  # a fault of the same kind back this soon after its last line: not logged
# a caller's addition to the transaction that inserts a manual run (see Engine.trigger)
AlsoTx = Callable[[Tx, Run], None]


class Engine:
    def __init__(self, store: Store, clock: Clock, settings: Settings, runner: Runner,
                 *, rng: random.Random | None = None, metrics: Metrics | None = None,
                 node_id: str | None = None, exclusive: bool = True,
                 previous_nodes: Iterable[str] = (), notifier: Notifier | None = None) -> None:
        self.store = store
        self.db = store.db
        self.clock = clock
        self.settings = settings
        self.runner = runner
        self.rng = rng or random.Random()
        self.metrics = metrics or Metrics()
        self.capacity = settings.max_concurrent_actions
        self.inflight: dict[str, asyncio.Task[None]] = {}
        # webhook runs in flight that count against capacity: run id -> started (clock ms),
        # in dispatch order; and the runs in flight that no longer count
        self._young_webhooks: dict[str, int] = {}
        self._released: set[str] = set()
        self._cancelled: set[str] = set()
        # runs of `backend` actions executing here: the work runs elsewhere (a Prefect
        # server) and this process only drives it, so a stop leaves them running and the
        # next start resumes them (polls the same remote run) instead of failing them
        self._resumable: set[str] = set()
        self._done: list[tuple[Run, Outcome, int]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # set while no cycle is in progress
        self._idle.set()
        self._planned_ms: int | None = None
        self._stopping = False
        self._closing = False
        self._loop_task: asyncio.Task[None] | None = None
        self.last_wake_mono: float | None = None
        self.ticks = 0
        # called after every healthy wake of the loop (the daemon pings systemd's watchdog)
        self.on_alive: Any = None
        # a burst of due work: on_burst(True) when the loop wakes at an instant it planned
        # for due work (burst_lead_ms before it, when set), on_burst(False) once what that
        # instant claimed has all been started and its actions have ended (the daemon
        # pauses reading new HTTP requests between the two, within bounds:
        # schedd/read_gate.py). Changes and manual triggers are not bursts.
        self.on_burst: Callable[[bool], None] | None = None
        self.burst_lead_ms = 0
        self._burst: set[str] | None = None  # the burst's runs in flight; None: no burst
        self._burst_due = 0  # the due instant of the open burst
        self._burst_claiming = False  # the burst's cycles have not all been run yet
        self._claimed_with_room = False  # the last cycle could claim (a free action slot)
        self.sleep_cap_s = settings.sleep_cap_seconds
        hook = getattr(runner, "set_wait_hook", None)
        if hook is not None:
            hook(self.release)
        # while cycles fail because the database cannot be written: since when (monotonic),
        # how many in a row, when it was last logged
        self.fault_since: float | None = None
        self._fault_cycles = 0
        self._fault_logged: tuple[str, float] | None = None  # kind, when its line was written
        self._fault_said = False  # this fault's start was logged (so its end is too)
        self.db.fault_listeners.append(self._on_storage_fault)
        # the parts: resolving what a run sends, how runs end, claiming due work, and the
        # runs leased to external workers
        self.preparer = Preparer(store, runner)
        self.recorder = Recorder(store, settings, self.rng, self.preparer.resolve_queued)
        # this node (nodes.py): the runs it starts carry its id and a lease it renews every
        # third of node_lease_seconds; `exclusive`: no other node shares the database
        # (SQLite), so every run found running at start is a dead process's
        self.node_id = node_id or new_node_id()
        self.exclusive = exclusive
        lease_ms = int(settings.node_lease_seconds * 1000)
        self.claimer = Claimer(store, self.preparer, self.recorder, node_id=self.node_id,
                               lease_ms=lease_ms)
        self.leases = WorkerLeases(store, clock, self.recorder, self._apply, self.wake)
        self.nodes = NodeLeases(store, self.preparer, self.recorder, node_id=self.node_id,
                                lease_ms=lease_ms, exclusive=exclusive,
                                previous=previous_nodes)
        self.lease_ms = lease_ms
        self._lease_due_ms = 0  # the next renewal and expiry check (clock ms)
        # on a shared database, the next look for other nodes' expired leases: every
        # EXPIRY_CHECK_MS, so that a dead node's runs are retried within a second of their
        # lease's end, not up to a third of a lease later (issue 16: lease + 2 s)
        self._expiry_due_ms = 0
        # the runs executing here that hold a node lease -> until when, in the order their
        # leases end (dispatch order; a renewal moves them all to the same end)
        self._leases: dict[str, int] = {}
        # signals to and from the other nodes on the database (hints: schedd/notify.py)
        self.notifier: Notifier = notifier if notifier is not None else LocalHub()
        self.notifier.subscribe(self.node_id, self._on_signal)

    # ------------------------------------------------------------------ lifecycle
    async def start(self, *, run_loop: bool = True) -> None:
        log.info("node %s starting (%s database, run leases of %.0f s)", self.node_id,
                 "exclusive" if self.exclusive else "shared", self.lease_ms / 1000)
        await self.recover(self.clock.now_ms())
        if run_loop:
            self._loop_task = asyncio.create_task(self._loop(), name="schedd-loop")

    def stop_claiming(self) -> None:
        """The first step of a shutdown (on SIGTERM, before HTTP drains): claim nothing
        more, and answer open worker long polls with nothing. Outcomes are still recorded."""
        self._stopping = True
        self.leases.stopping = True
        self._close_burst()
        self._wake.set()
        self.leases.notify()

    async def stop(self, grace_s: float) -> None:
        """Stop claiming; let running actions finish for grace_s (their outcomes are
        recorded as they end); record the rest as interrupted (they are retried at the
        next start); then stop the loop."""
        self.stop_claiming()
        await self._idle.wait()  # a cycle in progress may still start what it claimed
        resumable = [t for rid, t in self.inflight.items() if rid in self._resumable]
        for t in resumable:  # nothing to wait for: the next start picks them up again
            t.cancel()
        await asyncio.gather(*resumable, return_exceptions=True)
        tasks = list(self.inflight.values())
        if tasks:
            log.info("waiting up to %.0f s for %d running action(s)", grace_s, len(tasks))
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._closing = True
        self._wake.set()
        if self._loop_task is not None:
            await asyncio.gather(self._loop_task, return_exceptions=True)
        await self._flush()

    def wake(self, due_ms: int | None = None) -> None:
        """A change may have made something due earlier than the loop plans to wake."""
        if due_ms is None or self._planned_ms is None or due_ms < self._planned_ms:
            self._wake.set()

    def changed(self, due_ms: int | None = None) -> None:
        """A schedule changed through this node (the API): wake this loop and tell the
        other nodes, any of which may claim it."""
        self.wake(due_ms)
        self.notifier.publish(self.node_id, WAKE, "" if due_ms is None else str(due_ms))

    def _queued(self) -> None:
        """A run was queued for workers: wake the long polls here and on the other nodes."""
        self.leases.notify()
        self.notifier.publish(self.node_id, QUEUED)

    def _on_signal(self, kind: str, arg: str) -> None:
        """Another node's signal (on the event loop)."""
        if kind == WAKE:
            self.wake(int(arg) if arg.lstrip("-").isdigit() else None)
        elif kind == QUEUED:
            if not self.leases.stopping:
                self.leases.notify()
        elif kind == CANCEL:
            self._cancel_task(arg)
        elif kind == LOST:  # any of the above may have been missed: act as on all of them
            self._lease_due_ms = 0  # the next cycle renews the leases: finds cancelled runs
            self.wake()
            if not self.leases.stopping:
                self.leases.notify()

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """The loop is alive when it woke within twice its sleep cap."""
        cap = self.settings.sleep_cap_seconds
        alive = self._loop_task is not None and not self._loop_task.done()
        age = None if self.last_wake_mono is None else self.clock.monotonic() - self.last_wake_mono
        ok = alive and age is not None and age <= 2 * cap + 1
        return ok, {"node_id": self.node_id, "alive": alive,
                    "last_wake_seconds_ago": None if age is None else round(age, 3),
                    "running_actions": len(self.inflight),
                    "waiting_webhooks": len(self._released), "ticks": self.ticks}

    # ------------------------------------------------------------------ the capacity
    def counted(self) -> int:
        """Actions in flight that count against max_concurrent_actions."""
        return len(self.inflight) - len(self._released)

    def release(self, run_id: str) -> None:
        """The action of `run_id` only waits now: a webhook for a connection to its host,
        or a remote backend's run (a Prefect flow run) that schedd only polls until it
        ends. It no longer counts against max_concurrent_actions, so the loop can claim
        again."""
        webhook = self._young_webhooks.pop(run_id, None) is not None
        if run_id not in self.inflight or run_id in self._released or not (
                webhook or run_id in self._resumable):
            return
        if len(self._released) >= MAX_RELEASED:
            if webhook:
                self._young_webhooks[run_id] = self.clock.now_ms()
            return
        self._released.add(run_id)
        self._wake.set()

    def _release_slow(self, now: int) -> None:
        """The engine is full: webhook runs without an answer for SLOW_WEBHOOK_MS stop
        counting (oldest first)."""
        cutoff = now - SLOW_WEBHOOK_MS
        young = self._young_webhooks
        for run_id, started in list(young.items()):
            if started > cutoff or len(self._released) >= MAX_RELEASED:
                return
            del young[run_id]
            self._released.add(run_id)

    def _slow_wake_ms(self) -> int | None:
        """When the oldest counted webhook run turns slow, if the engine is full."""
        if not self._young_webhooks or self.counted() < self.capacity:
            return None
        return next(iter(self._young_webhooks.values())) + SLOW_WEBHOOK_MS

    async def _loop(self) -> None:
        """One cycle = one write transaction: record the outcomes that came in, fail expired
        leases, start and claim what is due, find when to wake next. Outcomes wake the loop,
        so a busy engine commits once per cycle and batches whatever arrived meanwhile."""
        failures = 0
        while True:
            self._wake.clear()
            now = self.clock.now_ms()
            self.last_wake_mono = self.clock.monotonic()
            try:
                fx = await self._cycle(now, plan_wake=True)
                if self.db.fault is not None:
                    # a write failed (this loop's or the API's) and none has succeeded
                    # since (a cycle with nothing to write proves nothing): try one, so
                    # that recovery is noticed without waiting for work to come due
                    await self.db.probe_write()
                failures = 0
                if self.fault_since is not None:
                    self._storage_recovered()
            except StorageUnavailable as fault:
                # the storage's, not ours: said once (see _storage_failed), tried again soon
                # and often, since the cycle's work (claims, outcomes) waits for it
                self._close_burst()
                self._storage_failed(fault)
                if self._closing:
                    return
                await asyncio.sleep(min(FAULT_RETRY_CAP_S, 0.05 * 2**self._fault_cycles))
                continue
            except Exception:
                self._close_burst()
                failures += 1
                log.exception("scheduler tick failed (%d in a row)", failures)
                if self._closing:
                    return
                await asyncio.sleep(min(5.0, 0.1 * 2**failures))
                continue
            if self.on_alive is not None:
                self.on_alive()
            if (self._burst_claiming and not fx.more and self._claimed_with_room
                    and now >= self._burst_due):
                # everything the burst claimed was started (a cycle with every action slot
                # busy claims nothing and so finds nothing more due: the burst goes on,
                # and the runs claimed as slots free up are part of it)
                self._burst_claiming = False
                self._end_burst_if_done()
            if self._closing and not self._done:
                return
            if fx.more or self._done:
                await asyncio.sleep(0)
                continue
            cap = self.sleep_cap_s
            nxt = fx.next_wake_ms
            slow = self._slow_wake_ms()
            if slow is not None and not self._stopping:
                nxt = slow if nxt is None else min(nxt, slow)
            self._planned_ms = nxt if nxt is not None and not self._stopping else (
                now + int(cap * 1000))
            if self._leases:
                # wake to renew them with a third of the lease to spare (a wake that comes
                # anyway, an outcome or a due instant, renews them sooner)
                first = next(iter(self._leases.values())) - self.lease_ms // 3
                self._planned_ms = min(self._planned_ms, max(first, self._lease_due_ms))
            if not self.exclusive:
                # a shared database: other nodes' leases to check
                self._planned_ms = min(self._planned_ms, self._expiry_due_ms)
            due = nxt if (nxt is not None and nxt == fx.next_wake_ms == self._planned_ms
                          and not self._stopping) else None
            if due is not None and self.burst_lead_ms > 0 and self._burst_due != due:
                # the burst starts a little before its due instant, so that what the API
                # is doing then is over by the due instant (see on_burst)
                if self.clock.now_ms() < due - self.burst_lead_ms:
                    await self.clock.sleep_until(due - self.burst_lead_ms, self._wake, cap)
                    if (self._wake.is_set()
                            or self.clock.now_ms() < due - self.burst_lead_ms):
                        self._planned_ms = None
                        continue  # a change (or the cap) first, as without the lead
                # at the lead, or already inside it: a busy loop (outcomes, the API's
                # triggers) wakes often, and a cycle that ends inside the lead must open
                # the burst at once, not at the due instant (bench/RESULTS.md §S9)
                self._open_burst(due)
            await self.clock.sleep_until(self._planned_ms, self._wake, cap)
            if due is not None and self._burst_due != due and self.clock.now_ms() >= due:
                self._open_burst(due)  # woken by the timer of a due instant, not a change
            self._planned_ms = None

    # ------------------------------------------------------------------ bursts
    def _open_burst(self, due_ms: int) -> None:
        """The loop woke for due work at due_ms (or burst_lead_ms before it): a burst
        starts (one still open, e.g. an action that hangs, is over: each due instant has a
        burst of its own)."""
        self._close_burst()
        self._burst = set()
        self._burst_due = due_ms
        self._burst_claiming = True
        self._signal_burst(True)

    def _end_burst_if_done(self) -> None:
        if self._burst is not None and not self._burst and not self._burst_claiming:
            self._close_burst()

    def _close_burst(self) -> None:
        if self._burst is None:
            return
        self._burst = None
        self._burst_due = 0
        self._burst_claiming = False
        self._signal_burst(False)

    def _signal_burst(self, on: bool) -> None:
        """Tell on_burst (the HTTP side's read gate); whatever it raises is its own: the
        loop, which called it between two cycles, goes on."""
        if self.on_burst is None:
            return
        try:
            self.on_burst(on)
        except Exception:
            log.exception("the burst signal's handler failed (on=%s)", on)

    # ------------------------------------------------------------------ storage faults
    def _on_storage_fault(self, fault: StorageUnavailable) -> None:
        """Any write the storage refused (the loop's or the API's): counted, and the loop
        woken so that its next cycle notices, reports and retries until it can write."""
        self.metrics.db_errors.labels(fault.kind).inc()
        self._wake.set()

    def _storage_failed(self, fault: StorageUnavailable) -> None:
        now = self.clock.monotonic()
        self._fault_cycles += 1
        if self.fault_since is None:
            self.fault_since = now
        said = self._fault_logged
        if said is None or said[0] != fault.kind or (
                not self._fault_said and now - said[1] >= FAULT_QUIET_S):
            # a new fault; one that comes and goes (a nearly full disk, where some writes
            # still fit) is said once a minute at most: /readyz and the metrics show each
            log.error("the database cannot be written (%s: %s): nothing is claimed or "
                      "recorded until it can; finished actions wait in memory; retrying "
                      "every %.0f s", fault.kind, fault.message, FAULT_RETRY_CAP_S)
        elif self._fault_said and now - said[1] >= FAULT_REMIND_S:
            log.error("the database still cannot be written (%s: %s) after %.0f s",
                      fault.kind, fault.message, now - self.fault_since)
        else:
            return
        self._fault_logged = (fault.kind, now)
        self._fault_said = True

    def _storage_recovered(self) -> None:
        since = self.fault_since if self.fault_since is not None else self.clock.monotonic()
        if self._fault_said:
            log.warning("the database can be written again after %.1f s (%d failed "
                        "cycle(s)); catching up", self.clock.monotonic() - since,
                        self._fault_cycles)
        self.fault_since = None
        self._fault_cycles = 0
        self._fault_said = False

    # ------------------------------------------------------------------ one step
    async def tick(self, now: int) -> bool:
        """Record the outcomes that came in, then claim and start what is due at `now`.
        True when a batch limit left more due."""
        return (await self._cycle(now, plan_wake=False)).more

    async def _cycle(self, now: int, *, plan_wake: bool) -> Effects:
        self.ticks += 1
        limit = 0
        counted = self.counted()
        if counted >= self.capacity and self._young_webhooks:
            self._release_slow(now)
            counted = self.counted()
        if not self._stopping:
            limit = min(self.capacity - counted, self.settings.claim_batch_size)
        self._claimed_with_room = limit > 0
        done, self._done = self._done, []
        # every third of the lease: the runs executing here, whose leases are renewed
        renew = list(self._leases) if now >= self._lease_due_ms else None
        check = renew is not None or (not self.exclusive and now >= self._expiry_due_ms)
        self._idle.clear()
        try:
            unit = asyncio.ensure_future(self.db.write(
                self._cycle_tx, now, limit, done, counted, plan_wake, renew, check))
            try:
                # the transaction commits whether or not this task is cancelled meanwhile:
                # what it claimed is then still started (and stop() ends it)
                fx = await asyncio.shield(unit)
            except asyncio.CancelledError:
                unit.add_done_callback(self._apply_late)
                raise
            except StorageUnavailable:
                # nothing of the cycle was kept; its outcomes are recorded by the first
                # cycle that can write (a write of their own would fail the same way)
                self._done[:0] = done
                raise
            except Exception:
                if done:
                    await self._record_alone(done)
                raise
        finally:
            self._idle.set()
        if check:
            self._expiry_due_ms = now + min(EXPIRY_CHECK_MS, self.lease_ms // 3)
        if renew is not None:
            self._lease_due_ms = now + self.lease_ms // 3
            until = now + self.lease_ms
            leases = self._leases
            renewed = {rid: until for rid in renew if rid in leases}
            self._leases = renewed | {rid: v for rid, v in leases.items() if rid not in renewed}
        self._apply(fx, woken=not plan_wake)
        return fx

    async def _record_alone(self, done: list[tuple[Run, Outcome, int]]) -> None:
        """The cycle failed: record its outcomes in a transaction of their own, so a claim
        that keeps failing never holds up recording. If that fails too, the runs stay
        `running`; the next start fails them as interrupted and retries them."""
        fx = Effects()
        try:
            await self.db.write(self.recorder.record_tx, done, fx)
        except StorageUnavailable:
            self._done[:0] = done  # kept for the first cycle that can write
            return
        except Exception:
            log.exception("could not record %d run outcome(s)", len(done))
            return
        self._apply(fx)

    def _apply_late(self, unit: asyncio.Future[Effects]) -> None:
        if not unit.cancelled() and unit.exception() is None:
            self._apply(unit.result())

    def _cycle_tx(self, c: Tx, now: int, limit: int, done: list[tuple[Run, Outcome, int]],
                  inflight: int, plan_wake: bool, renew: list[str] | None = None,
                  check: bool = False) -> Effects:
        """The cycle's transaction, on the writer thread. Touches no asyncio object: what
        the loop must do afterwards goes into the returned Effects."""
        if plan_wake:
            # the loop's cycle may have waited for the write lock (another process holding
            # it, a group ahead of it): what is due, whether it is late, and the instant a
            # run starts are decided when the transaction runs, not when it was queued
            now = max(now, self.clock.now_ms())
        fx = Effects()
        if done:
            self.recorder.record_tx(c, done, fx)
        if check or renew is not None:
            self.nodes.check_tx(c, now, renew, fx)
        self.leases.expire_tx(c, now, fx)
        if limit > 0:
            self.claimer.start_pending_tx(c, now, limit, fx)
            if limit - len(fx.start) > 0:
                self.claimer.claim_tx(c, now, limit - len(fx.start), fx)
        if plan_wake and not fx.more:
            full = inflight + len(fx.start) >= self.capacity
            fx.next_wake_ms = self.store.next_wake_ms(c, include_due_work=not full)
        return fx

    def _apply(self, fx: Effects, *, woken: bool = True) -> None:
        """After a commit, on the loop: say what happened, cancel, start, notify, wake
        (not when the loop's own cycle already planned its wake-up: woken=False)."""
        for level, msg, args in fx.notes:
            log.log(level, msg, *args)
        for r in fx.ended:
            log_run(r)
            self.metrics.run_ended(r.status, r.action_type)
            if r.error_code == "missed" and isinstance(r.result, dict):
                self.metrics.missed.inc(r.result.get("missed_count", 0))
        for ok, seconds in fx.webhook_times:
            self.metrics.webhook_done(ok, seconds)
        cancelled = set(fx.cancel_tasks)
        for run_id in fx.cancel_tasks:
            if run_id in self.inflight:
                self._cancel_task(run_id)
            else:  # it may run on another node: that one stops it
                self.notifier.publish(self.node_id, CANCEL, run_id)
        for run, s, prepared in fx.start:
            if run.id not in cancelled:  # CANCEL_OTHER in the same cycle ended it
                self._dispatch(run, s, prepared)
        if fx.queued:
            self._queued()
        if fx.wake_ms is not None and woken:
            self.wake(fx.wake_ms)

    # ------------------------------------------------------------------ running actions
    def _dispatch(self, run: Run, s: Schedule, prepared: Prepared) -> None:
        if run.started_ms is not None:
            self.metrics.lateness.observe(max(0, run.started_ms - run.due_ms) / 1000.0)
        log_run(run)
        task = asyncio.create_task(self._execute(run, prepared), name=f"run-{run.id}")
        self.inflight[run.id] = task
        burst = self._burst  # (read once: see _execute)
        if (burst is not None and self._burst_claiming and not run.manual
                and run.due_ms <= self._burst_due):
            # the due instant's work, not a manual trigger (or its retry) that started in
            # the lead: a slow one would hold the burst, and the API, to the gate's bound
            burst.add(run.id)
        if run.node_lease_until_ms is not None:
            self._leases[run.id] = run.node_lease_until_ms
        if run.action_type is ActionType.backend:
            self._resumable.add(run.id)
        elif run.action_type == ActionType.webhook:
            self._young_webhooks[run.id] = (run.started_ms if run.started_ms is not None
                                            else self.clock.now_ms())

    async def _execute(self, run: Run, prepared: Prepared) -> None:
        outcome: Outcome | None = None
        try:
            outcome = await self.runner.run_prepared(prepared)
        except asyncio.CancelledError:
            if run.id not in self._cancelled and run.id not in self._resumable:
                outcome = Outcome(ok=False, error_code="interrupted",
                                  error_message="schedd stopped while the action was running")
        except Exception as exc:
            log.exception("action of run %s raised", run.id)
            outcome = Outcome(ok=False, error_code="internal_error",
                              error_message=f"internal error: {type(exc).__name__}")
        finally:
            self.inflight.pop(run.id, None)
            self._leases.pop(run.id, None)
            self._young_webhooks.pop(run.id, None)
            self._released.discard(run.id)
            self._cancelled.discard(run.id)
            self._resumable.discard(run.id)
            burst = self._burst  # read once: stop_claiming may clear it between two lines
            if burst is not None:
                burst.discard(run.id)
                self._end_burst_if_done()
            if outcome is not None:
                self._done.append((run, outcome, self.clock.now_ms()))
                self._wake.set()  # the loop records it in its next cycle

    def _cancel_task(self, run_id: str) -> None:
        """Abort the action of a run executing in this process, if it is."""
        task = self.inflight.get(run_id)
        if task is not None:
            self._cancelled.add(run_id)
            task.cancel()

    # ------------------------------------------------------------------ recording outcomes
    async def _flush(self) -> None:
        """Record the outcomes that came in, outside the loop (at stop, and in tests)."""
        while self._done:
            batch, self._done = self._done, []
            try:
                fx = Effects()
                await self.db.write(self.recorder.record_tx, batch, fx)
            except Exception:
                # The runs stay `running` in the database: the next start fails them as
                # interrupted and retries them. Nothing is lost, an action may repeat.
                log.exception("could not record %d run outcome(s)", len(batch))
                continue
            self._apply(fx)

    # ------------------------------------------------------------------ crash recovery
    async def recover(self, now: int) -> int:
        """Runs left `running` by a dead process (not leased to a worker) fail with
        `interrupted` and follow the retry policy. Returns how many."""
        fx = Effects()
        n = await self.db.write(self._recover_tx, now, fx)
        self._apply(fx)
        return n

    def _recover_tx(self, c: Tx, now: int, fx: Effects) -> int:
        return self.nodes.recover_tx(c, now, fx)

    # ------------------------------------------------------------------ manual operations
    async def trigger(self, s: Schedule, *, also: AlsoTx | None = None,
                      config_patch: dict[str, Any] | None = None) -> Run:
        """A manual run now, regardless of next_run_at and overlap; next_run_at stays.
        `also(c, run)` runs in the same transaction, before the insert (a caller's own
        rows about the run, or its resolved payload). `config_patch` (already validated
        merged over the config) changes the action's config for this run and its retries."""
        now = self.clock.now_ms()
        run = new_run(s, occurrence_ms=now, due_ms=now, now_ms=now, trigger=TriggerType.manual,
                      status=RunStatus.pending, manual=True)
        run.config_patch = config_patch
        if run.queue is not None:
            run.resolved_payload = self.preparer.prepare(run, s).resolved

        def tx(c: Tx) -> None:
            if also is not None:
                also(c, run)
            self.store.insert_runs(c, [run])

        await self.db.write(tx)
        self._after_new_pending(run)
        return run

    def _after_new_pending(self, run: Run) -> None:
        if run.queue is not None:
            self._queued()
        else:
            self.wake(run.due_ms)  # due now: this node starts it

    async def cancel(self, tenant_id: str, run_id: str, reason: str | None, *,
                     also: AlsoTx | None = None) -> Run:
        """Cancel a run not finished yet. `also(c, run)` runs in the same transaction, after
        the run is marked (a caller's own rows about the cancel: both or neither are kept)."""
        now = self.clock.now_ms()
        fx = Effects()

        def tx(c: Tx) -> Run:
            run = self.store.get_run(c, tenant_id, run_id)
            if run is None:
                raise NotFound("Run")
            if run.status in FINISHED:
                raise Conflict(f"Run is already {run.status.value}")
            self.recorder.cancel_tx(c, run, now, reason or "cancelled by request", fx)
            if also is not None:
                also(c, run)
            return run

        run = await self.db.write(tx)
        fx.cancel_tasks.append(run.id)
        self._apply(fx)
        return run

    def cancel_schedule_runs_tx(self, c: Tx, schedule_id: str, now: int,
                                reason: str) -> tuple[list[Run], Effects]:
        """In the caller's write transaction: cancel every pending (not started, retrying,
        buffered) or running run of a schedule. Hand the effects to `after_commit` once the
        transaction committed (running actions are stopped then, workers learn it at their
        next heartbeat)."""
        fx = Effects()
        self.recorder.cancel_active_tx(c, [schedule_id], now, reason, fx)
        return list(fx.ended), fx

    def after_commit(self, fx: Effects) -> None:
        """What a caller's committed transaction left for the loop (see
        cancel_schedule_runs_tx)."""
        self._apply(fx)

    async def retry(self, tenant_id: str, run_id: str, *, also: AlsoTx | None = None) -> Run:
        """A new attempt of the same occurrence, chained to a failed or cancelled run that
        ends its chain (trigger_type manual). `also` as for trigger()."""
        now = self.clock.now_ms()

        def tx(c: Tx) -> Run:
            run = self.store.get_run(c, tenant_id, run_id)
            if run is None:
                raise NotFound("Run")
            if run.status not in (RunStatus.failed, RunStatus.cancelled):
                raise Conflict(f"Only a failed or cancelled run can be retried; this one is "
                               f"{run.status.value}")
            if run.next_attempt_run_id is not None:
                raise Conflict("This run already has a next attempt; retry the last one")
            s = self.store.get_schedule(c, None, run.schedule_id)
            if s is None:
                raise Conflict("The schedule of this run was deleted")
            new = Run(
                id=new_id(now), schedule_id=run.schedule_id, tenant_id=run.tenant_id,
                status=RunStatus.pending, trigger_type=TriggerType.manual, manual=run.manual,
                scheduled_for_ms=run.scheduled_for_ms, due_ms=now, triggered_ms=now,
                attempt=run.attempt + 1, attempt_root_run_id=run.attempt_root_run_id,
                previous_attempt_run_id=run.id, action_type=run.action_type, queue=run.queue,
                record_key=run.record_key,
                config_patch=run.config_patch,
            )
            if new.queue is not None:
                recs = self.preparer.records_of(c, {s.id: s}, [new])
                new.resolved_payload = self.preparer.prepare(new, s, recs).resolved
            run.next_attempt_run_id = new.id
            if also is not None:
                also(c, new)
            self.store.insert_runs(c, [new])
            self.store.update_runs(c, [run], ("next_attempt_run_id",))
            return new

        new = await self.db.write(tx)
        self._after_new_pending(new)
        return new

    # ------------------------------------------------------------------ external workers
    # (schedd/engine/leases.py; these are the public API services call)
    async def claim_for_worker(self, tenant_id: str, queues: Sequence[str], worker_id: str,
                               wait_s: float, lease_s: float) -> Run | None:
        """The oldest due run of these queues, now running and leased to worker_id; or None
        when none came within wait_s (long poll)."""
        return await self.leases.claim(tenant_id, queues, worker_id, wait_s, lease_s)

    async def heartbeat(self, tenant_id: str, run_id: str, worker_id: str,
                        lease_s: float) -> tuple[Run, bool]:
        return await self.leases.heartbeat(tenant_id, run_id, worker_id, lease_s)

    async def complete(self, tenant_id: str, run_id: str, worker_id: str, succeeded: bool,
                       result: Any, error_message: str | None) -> Run:
        return await self.leases.complete(tenant_id, run_id, worker_id, succeeded, result,
                                          error_message)
