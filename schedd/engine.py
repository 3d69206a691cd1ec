"""The scheduler loop.

One cycle is ONE write transaction run on the database's writer thread (`_cycle_tx`): it
records the outcomes that came in since the last cycle (retries chained, counters, pauses),
fails worker leases that ran out, starts due pending runs (retries, deferred, triggered),
claims every due occurrence of the due schedules (each occurrence's run row inserted and
the schedule's next_run_at advanced together; UNIQUE(schedule, occurrence, attempt)
forbids a double), and plans the next wake-up. Nothing in it touches asyncio: what the
loop must do after the commit (start actions, cancel tasks, wake, log, count) comes back
as `_Effects`. Actions run after the commit, outside any transaction, bounded by
max_concurrent_actions; an outcome wakes the loop, and a busy engine records a whole
batch in its next cycle.

Webhook runs that wait do not hold a slot for ever (issue 12: 2,000 schedules pointing at
a receiver that never answers must not starve the others): a webhook run stops counting
against max_concurrent_actions when it waits for one of its host's connections (the
webhook sender tells us, `release`), or, while the engine is full, once it has had no
answer for SLOW_WEBHOOK_MS. At most MAX_RELEASED runs are released at once; past that
they count again, and claiming stops until one ends, as before.

The loop sleeps until the next due instant or a wake() from a change, capped by
sleep_cap_seconds so a clock jump or a suspended host is noticed; it never polls on a tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from schedd import logs, planning, policies, timing
from schedd.actions import Outcome, Prepared, RunContext
from schedd.backends import Runner
from schedd.clock import Clock
from schedd.config import Settings
from schedd.db import Conn
from schedd.errors import Conflict, NotFound, StorageUnavailable
from schedd.metrics import Metrics
from schedd.models import (
    FINISHED,
    ActionType,
    AfterCompletion,
    CatchupPolicy,
    OverlapPolicy,
    Run,
    RunStatus,
    Schedule,
    ScheduleStatus,
    ScheduleTally,
    ScheduleType,
    TriggerType,
    new_id,
)
from schedd.store import Store

log = logging.getLogger("schedd.engine")

PER_SCHEDULE_CAP = 1000  # occurrences one schedule may claim in one tick
MISSED_CHUNK = 100_000  # occurrences counted per step of a long missed stretch
PAUSED_FAILURES = "consecutive_failures"
#: A webhook run without an answer for this long stops counting against
#: max_concurrent_actions, when the engine is full (see the module docstring).
SLOW_WEBHOOK_MS = 1000
#: At most this many webhook runs released from the count at once (each holds a task,
#: and a connection when it got one: webhook_max_connections bounds those).
MAX_RELEASED = 10_000
FAULT_RETRY_CAP_S = 2.0  # longest pause between cycles while the database cannot be written
FAULT_REMIND_S = 300.0  # while it lasts, the fault is logged again this often (not a flood)
FAULT_QUIET_S = 60.0  # a fault of the same kind back this soon after its last line: not logged
_FINISH_COLS = ("status", "completed_ms", "error_code", "error_message", "result",
                "next_attempt_run_id")
_START_COLS = ("status", "started_ms", "resolved_payload", "triggered_ms")
# a caller's addition to the transaction that inserts a manual run (see Engine.trigger)
AlsoTx = Callable[[Conn, Run], None]


# Hot paths pass StrEnum members where a str is wanted: a member is its value as a str
# (hash, ==, formatting, JSON, SQLite binding), and `.value` is a property costing ~0.3 µs.
def timer_for(s: Schedule) -> timing.Timer:
    return timing.compile_timer(
        s.schedule_type, s.schedule_expression, s.timezone,
        anchor_ms=s.created_ms, start_ms=s.start_ms, end_ms=s.end_ms,
    )


def _new_run(s: Schedule, *, occurrence_ms: int, due_ms: int, now_ms: int,
             trigger: TriggerType, status: RunStatus, manual: bool = False,
             record_key: str | None = None) -> Run:
    rid = new_id(now_ms)
    queue = s.action_config.get("queue") if s.action_type is ActionType.worker else None
    return Run(
        id=rid, schedule_id=s.id, tenant_id=s.tenant_id, status=status, trigger_type=trigger,
        manual=manual, scheduled_for_ms=occurrence_ms, due_ms=due_ms, triggered_ms=now_ms,
        attempt=1, attempt_root_run_id=rid, action_type=s.action_type, queue=queue,
        completed_ms=now_ms if status in FINISHED else None, record_key=record_key,
    )


def missed_run(s: Schedule, first: int, last: int, count: int, now: int, why: str,
               record_key: str | None = None) -> Run:
    """The one skipped record of a stretch of missed occurrences (SPEC 4.1); counts them on
    the schedule. A relative schedule's are per record."""
    run = _new_run(s, occurrence_ms=first, due_ms=first, now_ms=now,
                   trigger=TriggerType.catchup, status=RunStatus.skipped, record_key=record_key)
    run.error_code = "missed"
    run.error_message = why
    run.result = {"missed_count": count, "first": timing.format_ms(first),
                  "last": timing.format_ms(last)}
    s.missed_count += count
    return run


def missed_note(s: Schedule, first: int, last: int, count: int) -> tuple[str, tuple[Any, ...]]:
    """The warning logged (after the commit) for a missed_run record."""
    return ("schedule %s missed %d occurrence(s) from %s to %s",
            (s.id, count, timing.format_ms(first), timing.format_ms(last)))


def merge_config(base: Any, patch: Any) -> Any:
    """`patch` merged over `base`: objects merge key by key, recursively; any other value
    (a list, a string, null) replaces what was there. Neither argument is changed."""
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return patch
    out = dict(base)
    for key, value in patch.items():
        out[key] = merge_config(base.get(key), value) if key in base else value
    return out


def config_of(run: Run, s: Schedule) -> dict[str, Any]:
    """The action config a run uses: the schedule's, with the run's trigger patch merged."""
    if run.config_patch is None:
        return s.action_config
    merged: dict[str, Any] = merge_config(s.action_config, run.config_patch)
    return merged


def context_for(run: Run, s: Schedule, record: dict[str, Any] | None = None,
                config: dict[str, Any] | None = None) -> RunContext:
    """What the action of `run` may know; `record` is the data of its record (relative
    schedules), as it is when the run starts; `config` the action config it runs with
    (default the schedule's)."""
    return RunContext(
        run_id=run.id, schedule_id=s.id, schedule_name=s.name, attempt=run.attempt,
        scheduled_for=timing.format_ms(run.scheduled_for_ms),
        triggered_at=timing.format_ms(run.triggered_ms),
        trigger_type=run.trigger_type,
        payload=(s.action_config if config is None else config).get("payload"),
        attempt_root_run_id=run.attempt_root_run_id,
        record_key=run.record_key,
        record=record,
    )


@dataclass
class _Effects:
    """What a unit of work on the writer thread leaves for the event loop to do after its
    commit: actions to start, tasks to cancel, queues to notify, when to wake."""

    start: list[tuple[Run, Schedule, Prepared]] = field(default_factory=list)
    cancel_tasks: list[str] = field(default_factory=list)
    cancel_schedules: list[str] = field(default_factory=list)
    cancel_records: list[tuple[str, str]] = field(default_factory=list)  # (schedule, record)
    queued: bool = False
    more: bool = False
    wake_ms: int | None = None
    next_wake_ms: int | None = None
    # said only once the transaction committed (a rolled-back cycle is tried again)
    ended: list[Run] = field(default_factory=list)  # runs that finished: a log line, counted
    webhook_times: list[tuple[bool, float]] = field(default_factory=list)
    notes: list[tuple[int, str, tuple[Any, ...]]] = field(default_factory=list)

    def wake_at(self, ms: int) -> None:
        self.wake_ms = ms if self.wake_ms is None else min(self.wake_ms, ms)

    def note(self, level: int, msg: str, *args: Any) -> None:
        self.notes.append((level, msg, args))


class Engine:
    def __init__(self, store: Store, clock: Clock, settings: Settings, runner: Runner,
                 *, rng: random.Random | None = None, metrics: Metrics | None = None) -> None:
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
        self._queue_event = asyncio.Event()
        self._planned_ms: int | None = None
        self._stopping = False
        self._closing = False
        self._loop_task: asyncio.Task[None] | None = None
        self.last_wake_mono: float | None = None
        self.ticks = 0
        # called after every healthy wake of the loop (the daemon pings systemd's watchdog)
        self.on_alive: Any = None
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

    # ------------------------------------------------------------------ lifecycle
    async def start(self, *, run_loop: bool = True) -> None:
        await self.recover(self.clock.now_ms())
        if run_loop:
            self._loop_task = asyncio.create_task(self._loop(), name="schedd-loop")

    def stop_claiming(self) -> None:
        """The first step of a shutdown (on SIGTERM, before HTTP drains): claim nothing
        more, and answer open worker long polls with nothing. Outcomes are still recorded."""
        self._stopping = True
        self._wake.set()
        self._notify_queues()

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

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """The loop is alive when it woke within twice its sleep cap."""
        cap = self.settings.sleep_cap_seconds
        alive = self._loop_task is not None and not self._loop_task.done()
        age = None if self.last_wake_mono is None else self.clock.monotonic() - self.last_wake_mono
        ok = alive and age is not None and age <= 2 * cap + 1
        return ok, {"alive": alive, "last_wake_seconds_ago": None if age is None else round(age, 3),
                    "running_actions": len(self.inflight),
                    "waiting_webhooks": len(self._released), "ticks": self.ticks}

    # ------------------------------------------------------------------ the capacity
    def counted(self) -> int:
        """Actions in flight that count against max_concurrent_actions."""
        return len(self.inflight) - len(self._released)

    def release(self, run_id: str) -> None:
        """The webhook of `run_id` waits (for a connection to its host): it no longer
        counts against max_concurrent_actions, so the loop can claim again."""
        if self._young_webhooks.pop(run_id, None) is None or run_id not in self.inflight:
            return
        if len(self._released) >= MAX_RELEASED:
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
                self._storage_failed(fault)
                if self._closing:
                    return
                await asyncio.sleep(min(FAULT_RETRY_CAP_S, 0.05 * 2**self._fault_cycles))
                continue
            except Exception:
                failures += 1
                log.exception("scheduler tick failed (%d in a row)", failures)
                if self._closing:
                    return
                await asyncio.sleep(min(5.0, 0.1 * 2**failures))
                continue
            if self.on_alive is not None:
                self.on_alive()
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
            await self.clock.sleep_until(self._planned_ms, self._wake, cap)
            self._planned_ms = None

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

    async def _cycle(self, now: int, *, plan_wake: bool) -> _Effects:
        self.ticks += 1
        limit = 0
        counted = self.counted()
        if counted >= self.capacity and self._young_webhooks:
            self._release_slow(now)
            counted = self.counted()
        if not self._stopping:
            limit = min(self.capacity - counted, self.settings.claim_batch_size)
        done, self._done = self._done, []
        self._idle.clear()
        try:
            unit = asyncio.ensure_future(self.db.write(
                self._cycle_tx, now, limit, done, counted, plan_wake))
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
        self._apply(fx, woken=not plan_wake)
        return fx

    async def _record_alone(self, done: list[tuple[Run, Outcome, int]]) -> None:
        """The cycle failed: record its outcomes in a transaction of their own, so a claim
        that keeps failing never holds up recording. If that fails too, the runs stay
        `running`; the next start fails them as interrupted and retries them."""
        fx = _Effects()
        try:
            await self.db.write(self._record_tx, done, fx)
        except StorageUnavailable:
            self._done[:0] = done  # kept for the first cycle that can write
            return
        except Exception:
            log.exception("could not record %d run outcome(s)", len(done))
            return
        self._apply(fx)

    def _apply_late(self, unit: asyncio.Future[_Effects]) -> None:
        if not unit.cancelled() and unit.exception() is None:
            self._apply(unit.result())

    def _cycle_tx(self, c: Conn, now: int, limit: int, done: list[tuple[Run, Outcome, int]],
                  inflight: int, plan_wake: bool) -> _Effects:
        """The cycle's transaction, on the writer thread. Touches no asyncio object: what
        the loop must do afterwards goes into the returned _Effects."""
        if plan_wake:
            # the loop's cycle may have waited for the write lock (another process holding
            # it, a group ahead of it): what is due, whether it is late, and the instant a
            # run starts are decided when the transaction runs, not when it was queued
            now = max(now, self.clock.now_ms())
        fx = _Effects()
        if done:
            self._record_tx(c, done, fx)
        self._expire_leases_tx(c, now, fx)
        if limit > 0:
            self._start_pending_tx(c, now, limit, fx)
            if limit - len(fx.start) > 0:
                self._claim_tx(c, now, limit - len(fx.start), fx)
        if plan_wake and not fx.more:
            full = inflight + len(fx.start) >= self.capacity
            fx.next_wake_ms = self.store.next_wake_ms(c, include_due_work=not full)
        return fx

    def _apply(self, fx: _Effects, *, woken: bool = True) -> None:
        """After a commit, on the loop: say what happened, cancel, start, notify, wake
        (not when the loop's own cycle already planned its wake-up: woken=False)."""
        for level, msg, args in fx.notes:
            log.log(level, msg, *args)
        for r in fx.ended:
            self._log_run(r)
            self.metrics.run_ended(r.status, r.action_type)
            if r.error_code == "missed" and isinstance(r.result, dict):
                self.metrics.missed.inc(r.result.get("missed_count", 0))
        for ok, seconds in fx.webhook_times:
            self.metrics.webhook_done(ok, seconds)
        cancelled = set(fx.cancel_tasks)
        for run_id in fx.cancel_tasks:
            self._cancel_task(run_id)
        for run, s, prepared in fx.start:
            if run.id not in cancelled:  # CANCEL_OTHER in the same cycle ended it
                self._dispatch(run, s, prepared)
        if fx.queued:
            self._notify_queues()
        if fx.wake_ms is not None and woken:
            self.wake(fx.wake_ms)

    def _start_pending_tx(self, c: Conn, now: int, limit: int, fx: _Effects) -> None:
        runs = self.store.due_pending_runs(c, now, limit)
        if not runs:
            return
        schedules = self.store.schedules_by_ids(c, [r.schedule_id for r in runs])
        records = self._records_of(c, schedules, runs)
        started: list[Run] = []
        orphans: list[tuple[Run, Outcome, int]] = []
        for r in runs:
            s = schedules.get(r.schedule_id)
            if s is None:
                orphans.append((r, Outcome(ok=False, error_code="cancelled",
                                           error_message="the schedule was deleted"), now))
                continue
            r.status = RunStatus.running
            r.started_ms = now
            r.triggered_ms = now
            prepared = self._prepare(r, s, records)
            r.resolved_payload = prepared.resolved
            started.append(r)
            fx.start.append((r, s, prepared))
        self.store.update_runs(c, started, _START_COLS)
        if orphans:
            self._record_tx(c, orphans, fx)
        if len(runs) == limit:
            fx.more = True

    def _claim_tx(self, c: Conn, now: int, limit: int, fx: _Effects) -> None:
        due = self.store.due_schedules(c, now, limit)
        if not due:
            return
        if len(due) == limit:
            fx.more = True
        needs_counts = [s.id for s in due if s.overlap_policy is not OverlapPolicy.ALLOW
                        and s.schedule_type is not ScheduleType.relative]
        counts = self.store.active_counts(c, needs_counts) if needs_counts else {}
        new_runs: list[Run] = []
        budget = limit  # runs this claim may make: a relative schedule may make many
        claimed: list[Schedule] = []
        for s in due:
            if budget <= 0:
                fx.more = True  # the rest stay due for the next cycle, untouched
                break
            claimed.append(s)
            try:
                planned = (self.store.planned_starts(c, s.id, now - 60_000)
                           if s.rate_limit_per_minute else [])
                if s.schedule_type is ScheduleType.relative:
                    budget -= self._plan_relative(c, s, now, min(budget, PER_SCHEDULE_CAP),
                                                  new_runs, fx, planned)
                else:
                    self._plan(s, now, counts.get(s.id, (0, 0)), new_runs, fx, planned)
                    budget -= 1
                if s.next_run_ms is not None and s.next_run_ms <= now:
                    fx.more = True
            except Exception as exc:
                # One broken schedule never stops the loop: mark it, push it forward.
                fx.note(logging.ERROR, "schedule %s cannot be planned: %s: %s", s.id,
                        type(exc).__name__, exc)
                new_runs[:] = [r for r in new_runs if r.schedule_id != s.id]
                s.last_error = f"cannot plan the next run: {exc}"[:500]
                s.next_run_ms = now + 3_600_000
            s.updated_ms = now
        due = claimed
        by_id = {s.id: s for s in due}
        records = self._records_of(c, by_id, [
            r for r in new_runs if r.status is RunStatus.running or (
                r.queue is not None and r.status is RunStatus.pending)])
        for r in new_runs:
            if r.status is RunStatus.running:
                s = by_id[r.schedule_id]
                r.started_ms = now
                prepared = self._prepare(r, s, records)
                r.resolved_payload = prepared.resolved
                fx.start.append((r, s, prepared))
            elif r.queue is not None and r.status is RunStatus.pending:
                r.resolved_payload = self._prepare(r, by_id[r.schedule_id], records).resolved
                fx.queued = True
        if fx.cancel_schedules:
            # CANCEL_OTHER: the active runs end before the new ones are inserted
            self._cancel_active_tx(c, fx.cancel_schedules, now, "replaced by a newer occurrence",
                                   fx)
            fx.cancel_schedules = []
        if fx.cancel_records:
            self._cancel_active_records_tx(c, fx.cancel_records, now,
                                           "replaced by a newer occurrence", fx)
            fx.cancel_records = []
        skipped = self.store.insert_claimed_runs(c, new_runs)
        if skipped:
            # an occurrence claimed before (a schedule re-planned onto an instant it had
            # already fired, in the same millisecond or after the clock stepped back):
            # it has its run; this one is not inserted and not started
            fx.note(logging.WARNING, "%d occurrence(s) were already claimed; not again",
                    len(skipped))
            new_runs = [r for r in new_runs if r.id not in skipped]
            fx.start = [st for st in fx.start if st[0].id not in skipped]
        self.store.advance_schedules(c, due)
        done = [s.id for s in due if s.status is ScheduleStatus.completed
                and s.action_after_completion is AfterCompletion.DELETE]
        if done:
            active = self.store.active_counts(c, done)
            for sid in done:
                if not active.get(sid):
                    self.store.delete_schedule(c, sid)
                    fx.note(logging.INFO, "schedule %s completed and was deleted", sid)
        fx.ended.extend(r for r in new_runs if r.status in FINISHED)

    def _plan(self, s: Schedule, now: int, active: tuple[int, int], out: list[Run],
              fx: _Effects, planned: list[int]) -> None:
        """Turn a due schedule's occurrences up to `now` into runs (or missed/skipped
        records) and advance next_run_ms past them."""
        timer = timer_for(s)
        o = s.next_run_ms
        assert o is not None
        cutoff = policies.missed_cutoff_ms(now, s.catchup_window_minutes)
        if o < cutoff:
            count, last, first = 0, None, o
            cursor: int | None = o
            while cursor is not None and cursor < cutoff:
                n, chunk_last = timer.count_between(cursor, cutoff, MISSED_CHUNK)
                if not n or chunk_last is None:
                    break
                count, last = count + n, chunk_last
                cursor = timer.next_after(chunk_last)
            if count and last is not None:
                out.append(self._missed(s, first, last, count, now, fx))
            o = timer.next_after(max(cutoff - 1, last if last is not None else cutoff - 1))
        occurrences: list[int] = []
        while o is not None and o <= now and len(occurrences) < PER_SCHEDULE_CAP:
            occurrences.append(o)
            o = timer.next_after(o)
        if s.catchup_policy is CatchupPolicy.LATEST and len(occurrences) > 1:
            out.append(self._missed(s, occurrences[0], occurrences[-2], len(occurrences) - 1, now,
                                    fx))
            occurrences = occurrences[-1:]
        n_active, n_waiting = active
        mine: list[Run] = []  # this tick's runs of this schedule
        for i, occ in enumerate(occurrences):
            trigger = policies.trigger_for(occ, now, newer_due=i < len(occurrences) - 1 or (
                o is not None and o <= now))
            decision = policies.overlap(s.overlap_policy, n_active, n_waiting)
            if not decision.run:
                out.append(_new_run(s, occurrence_ms=occ, due_ms=occ, now_ms=now, trigger=trigger,
                                    status=RunStatus.skipped))
                out[-1].error_code = "overlap"
                out[-1].error_message = "an earlier run of this schedule was still active"
                continue
            if decision.cancel_active and n_active:
                if s.id not in fx.cancel_schedules:
                    fx.cancel_schedules.append(s.id)  # the runs from before this tick
                for earlier in mine:  # and this tick's, which have not started yet
                    if earlier.status in (RunStatus.running, RunStatus.pending):
                        self._mark_cancelled(earlier, now, "replaced by a newer occurrence")
                        earlier.started_ms = None
                n_active = 0
            due = occ + policies.flex_offset_ms(s.id, occ, s.flexible_window_minutes)
            if s.rate_limit_per_minute and not decision.buffered:
                # the window counts real starts: a late (catch-up) run starts now
                start = max(due, now)
                deferred = policies.rate_limited_start(start, planned, s.rate_limit_per_minute)
                if deferred > start:
                    due = deferred
                planned.append(deferred)
            if decision.buffered:
                run = _new_run(s, occurrence_ms=occ, due_ms=due, now_ms=now, trigger=trigger,
                               status=RunStatus.pending)
                run.waiting = True
                n_waiting += 1
            elif due <= now and s.action_type is not ActionType.worker:
                run = _new_run(s, occurrence_ms=occ, due_ms=due, now_ms=now, trigger=trigger,
                               status=RunStatus.running)
            else:
                run = _new_run(s, occurrence_ms=occ, due_ms=due, now_ms=now, trigger=trigger,
                               status=RunStatus.pending)
            n_active += 1
            out.append(run)
            mine.append(run)
        s.next_run_ms = o
        if o is None:
            s.status = ScheduleStatus.completed
        s.last_error = None

    def _plan_relative(self, c: Conn, s: Schedule, now: int, cap: int, out: list[Run],
                       fx: _Effects, planned: list[int]) -> int:
        """Claim a relative schedule's due occurrences (at most `cap`), found through the
        occurrences_due index: each becomes a run of its record (or a missed or skipped
        record); the rows are marked fired in this transaction, and next_run_ms becomes the
        earliest occurrence still pending. Returns how many occurrences it took."""
        due = self.store.due_occurrences(c, s.id, now, cap)
        if not due:
            s.next_run_ms = planning.next_run_of(self.store.earliest_occurrence(c, s.id),
                                                 s.end_ms)
            if s.end_ms is not None and now >= s.end_ms and s.next_run_ms == s.end_ms:
                s.status = ScheduleStatus.completed
                s.next_run_ms = None
            return 0
        counts = ({} if s.overlap_policy is OverlapPolicy.ALLOW
                  else self.store.active_counts_by_record(c, s.id, [k for k, _ in due]))
        cutoff = policies.missed_cutoff_ms(now, s.catchup_window_minutes)
        missed = 0
        for key, occ in due:
            if occ < cutoff:
                out.append(missed_run(s, occ, occ, 1, now,
                                      "the occurrence is older than the catch-up window",
                                      record_key=key))
                missed += 1
                continue
            trigger = policies.trigger_for(occ, now, newer_due=False)
            n_active, n_waiting = counts.get(key, (0, 0))
            decision = policies.overlap(s.overlap_policy, n_active, n_waiting)
            if not decision.run:
                run = _new_run(s, occurrence_ms=occ, due_ms=occ, now_ms=now, trigger=trigger,
                               status=RunStatus.skipped, record_key=key)
                run.error_code = "overlap"
                run.error_message = ("an earlier run of this schedule for this record was "
                                     "still active")
                out.append(run)
                continue
            if decision.cancel_active:
                fx.cancel_records.append((s.id, key))
            due_ms = occ + policies.flex_offset_ms(planning.flex_key(s.id, key), occ,
                                                   s.flexible_window_minutes)
            if s.rate_limit_per_minute and not decision.buffered:
                start = max(due_ms, now)
                deferred = policies.rate_limited_start(start, planned, s.rate_limit_per_minute)
                if deferred > start:
                    due_ms = deferred
                planned.append(deferred)
            if decision.buffered:
                status = RunStatus.pending
            elif due_ms <= now and s.action_type is not ActionType.worker:
                status = RunStatus.running
            else:
                status = RunStatus.pending
            run = _new_run(s, occurrence_ms=occ, due_ms=due_ms, now_ms=now, trigger=trigger,
                           status=status, record_key=key)
            run.waiting = decision.buffered
            out.append(run)
        if missed:
            fx.note(logging.WARNING, "schedule %s missed %d record occurrence(s) older than "
                    "the catch-up window", s.id, missed)
        self.store.fire_occurrences(c, s.id, due)
        s.next_run_ms = planning.next_run_of(self.store.earliest_occurrence(c, s.id), s.end_ms)
        if s.end_ms is not None and now >= s.end_ms and s.next_run_ms == s.end_ms:
            s.status = ScheduleStatus.completed
            s.next_run_ms = None
        s.last_error = None
        return len(due)

    def _records_of(self, c: Conn, schedules: dict[str, Schedule],
                    runs: Sequence[Run]) -> dict[tuple[str, str], dict[str, Any]]:
        """(schedule id, record key) -> the record's data now, for the runs of relative
        schedules among `runs` (one indexed read per definition)."""
        wanted: dict[str, list[str]] = {}
        for r in runs:
            if r.record_key is not None:
                s = schedules.get(r.schedule_id)
                if s is not None and s.relative_entity_definition_id is not None:
                    wanted.setdefault(s.id, []).append(r.record_key)
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for sid, keys in wanted.items():
            def_id = schedules[sid].relative_entity_definition_id
            assert def_id is not None
            for key, data in self.store.records_data(c, def_id, keys).items():
                out[(sid, key)] = data
        return out

    def _prepare(self, run: Run, s: Schedule,
                 records: dict[tuple[str, str], dict[str, Any]] | None = None) -> Prepared:
        """What the run will send, resolved once for its record and its start."""
        record = None
        if run.record_key is not None:
            record = (records or {}).get((s.id, run.record_key))
        config = config_of(run, s)
        return self.runner.prepare(run.action_type, config,
                                   context_for(run, s, record, config))

    def _missed(self, s: Schedule, first: int, last: int, count: int, now: int,
                fx: _Effects) -> Run:
        msg, args = missed_note(s, first, last, count)
        fx.note(logging.WARNING, msg, *args)
        return missed_run(s, first, last, count, now,
                          f"{count} occurrence(s) older than the catch-up window")

    # ------------------------------------------------------------------ running actions
    def _dispatch(self, run: Run, s: Schedule, prepared: Prepared) -> None:
        if run.started_ms is not None:
            self.metrics.lateness.observe(max(0, run.started_ms - run.due_ms) / 1000.0)
        self._log_run(run)
        task = asyncio.create_task(self._execute(run, prepared), name=f"run-{run.id}")
        self.inflight[run.id] = task
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
            self._young_webhooks.pop(run.id, None)
            self._released.discard(run.id)
            self._cancelled.discard(run.id)
            self._resumable.discard(run.id)
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
                fx = _Effects()
                await self.db.write(self._record_tx, batch, fx)
            except Exception:
                # The runs stay `running` in the database: the next start fails them as
                # interrupted and retries them. Nothing is lost, an action may repeat.
                log.exception("could not record %d run outcome(s)", len(batch))
                continue
            self._apply(fx)

    def _record_tx(self, c: Conn, items: Sequence[tuple[Run, Outcome, int]],
                   fx: _Effects) -> None:
        """Finish runs, chain retries, update schedule counters, in the caller's tx."""
        # A run cancelled (or otherwise finished) since its outcome was queued keeps that
        # end: no status overwrite, no retry, no counters.
        still, tallies = self.store.active_runs_and_tallies(c, [r.id for r, _, _ in items])
        items = [it for it in items if it[0].id in still]
        if not items:
            return
        retries: list[Run] = []
        finished: list[Run] = []
        touched: dict[str, ScheduleTally] = {}
        for run, outcome, at in items:
            if outcome.ok:
                run.status = RunStatus.succeeded
            elif outcome.error_code == "cancelled":
                run.status = RunStatus.cancelled
            else:
                run.status = RunStatus.failed
            run.completed_ms = at
            run.error_code = None if outcome.ok else outcome.error_code
            run.error_message = None if outcome.ok else outcome.error_message
            run.result = outcome.result
            t = tallies.get(run.schedule_id)
            chain_ended = True
            if run.status is RunStatus.failed and t is not None and run.attempt <= t.max_retries:
                retry = self._retry_of(run, t.retry_backoff_seconds, at)
                if retry.queue is not None:
                    s = self.store.get_schedule(c, None, run.schedule_id)
                    if s is not None:
                        recs = self._records_of(c, {s.id: s}, [retry])
                        retry.resolved_payload = self._prepare(retry, s, recs).resolved
                run.next_attempt_run_id = retry.id
                retries.append(retry)
                chain_ended = False
            finished.append(run)
            if run.action_type is ActionType.webhook and run.started_ms is not None:
                fx.webhook_times.append((outcome.ok, max(0, at - run.started_ms) / 1000.0))
            if t is None:
                continue
            touched[t.id] = t
            if run.started_ms is not None:
                t.run_count += 1
                t.last_run_ms = run.started_ms
                t.last_run_status = run.status
            if chain_ended and not run.manual:
                if run.status is RunStatus.succeeded:
                    t.consecutive_failures = 0
                elif run.status is RunStatus.failed and run.attempt <= t.max_retries + 1:
                    # an occurrence counts once: a manual retry after its chain had ended
                    # (attempt beyond the automatic ones) does not count it again
                    t.consecutive_failures += 1
                    if (t.consecutive_failures >= t.pause_on_failure_count
                            and t.status is ScheduleStatus.active):
                        t.status = ScheduleStatus.paused
                        t.paused_reason = PAUSED_FAILURES
                        fx.note(logging.WARNING, "schedule %s paused after %d failed occurrences",
                                t.id, t.consecutive_failures)
        now = max(at for _, _, at in items)
        self.store.update_runs(c, finished, _FINISH_COLS, guard_active=True)
        fx.ended.extend(finished)
        self.store.insert_runs(c, retries)
        self.store.tally_schedules(c, touched.values(), now)
        record_ends = {(r.schedule_id, r.record_key) for r in finished
                       if r.record_key is not None and r.next_attempt_run_id is None}
        for t in touched.values():
            if t.overlap_policy in (OverlapPolicy.BUFFER_ONE, OverlapPolicy.BUFFER_ALL):
                keys = [k for sid, k in record_ends if sid == t.id]
                if keys:
                    if any([self.store.release_buffered(c, t.id, now, record_key=k)
                            for k in keys]):
                        fx.wake_at(now)
                elif self.store.release_buffered(c, t.id, now):
                    fx.wake_at(now)
            if (t.status is ScheduleStatus.completed
                    and t.action_after_completion is AfterCompletion.DELETE
                    and not self.store.active_counts(c, [t.id]).get(t.id)):
                self.store.delete_schedule(c, t.id)
                fx.note(logging.INFO, "schedule %s completed and was deleted", t.id)
        if retries:
            fx.wake_at(min(r.due_ms for r in retries))

    def _retry_of(self, run: Run, backoff_s: int, now: int) -> Run:
        delay = policies.backoff_ms(run.attempt, backoff_s,
                                    self.settings.retry_backoff_cap_seconds, self.rng.random())
        rid = new_id(now)
        return Run(
            id=rid, schedule_id=run.schedule_id, tenant_id=run.tenant_id,
            status=RunStatus.pending, trigger_type=TriggerType.retry, manual=run.manual,
            scheduled_for_ms=run.scheduled_for_ms, due_ms=now + delay, triggered_ms=now,
            attempt=run.attempt + 1, attempt_root_run_id=run.attempt_root_run_id,
            previous_attempt_run_id=run.id, action_type=run.action_type, queue=run.queue,
            record_key=run.record_key,
            config_patch=run.config_patch,
        )

    def _log_run(self, run: Run) -> None:
        """One line per run transition: ids, status, lateness, duration; never a payload,
        a header or a secret."""
        if not log.isEnabledFor(logging.INFO):
            return  # nothing to build
        started = run.started_ms
        status = run.status
        logs.record(log, logging.INFO, "run %s", (status,), {
            "schedule_id": run.schedule_id, "run_id": run.id, "attempt": run.attempt,
            "trigger": run.trigger_type, "status": status,
            "error_code": run.error_code,
            "lateness_ms": None if started is None else started - run.due_ms,
            "duration_ms": None if started is None or run.completed_ms is None
            else run.completed_ms - started,
        })

    # ------------------------------------------------------------------ crash recovery
    async def recover(self, now: int) -> int:
        """Runs left `running` by a dead process (not leased to a worker) fail with
        `interrupted` and follow the retry policy. Returns how many."""
        fx = _Effects()
        n = await self.db.write(self._recover_tx, now, fx)
        self._apply(fx)
        return n

    def _recover_tx(self, c: Conn, now: int, fx: _Effects) -> int:
        stale = self.store.unleased_running_runs(c)
        backend = [r for r in stale if r.action_type is ActionType.backend]
        if backend:
            # their work goes on elsewhere: drive (poll) it again, never start it twice
            schedules = self.store.schedules_by_ids(c, [r.schedule_id for r in backend])
            for r in backend:
                s = schedules.get(r.schedule_id)
                if s is not None:
                    fx.start.append((r, s, self._prepare(r, s)))
            resumed = {r.id for r, _, _ in fx.start}
            stale = [r for r in stale if r.id not in resumed]
            if resumed:
                fx.note(logging.INFO, "%d backend run(s) were running when schedd last "
                        "stopped; resuming them", len(resumed))
        if stale:
            fx.note(logging.WARNING, "%d run(s) were running when schedd last stopped; marking "
                    "them interrupted", len(stale))
            self._record_tx(c, [
                (r, Outcome(ok=False, error_code="interrupted",
                            error_message="schedd stopped while the action was running"), now)
                for r in stale
            ], fx)
        return len(stale)

    def _expire_leases_tx(self, c: Conn, now: int, fx: _Effects) -> None:
        expired = self.store.runs_where(
            c, "status = 'running' AND lease_until_ms IS NOT NULL AND lease_until_ms <= ?",
            (now,), order="lease_until_ms", limit=1000)
        if expired:
            self._record_tx(c, [
                (r, Outcome(ok=False, error_code="heartbeat_timeout",
                            error_message=f"worker {r.worker_id} sent no heartbeat before its "
                                          "lease ended"), now)
                for r in expired
            ], fx)

    # ------------------------------------------------------------------ manual operations
    async def trigger(self, s: Schedule, *, also: AlsoTx | None = None,
                      config_patch: dict[str, Any] | None = None) -> Run:
        """A manual run now, regardless of next_run_at and overlap; next_run_at stays.
        `also(c, run)` runs in the same transaction, before the insert (a caller's own
        rows about the run, or its resolved payload). `config_patch` (already validated
        merged over the config) changes the action's config for this run and its retries."""
        now = self.clock.now_ms()
        run = _new_run(s, occurrence_ms=now, due_ms=now, now_ms=now, trigger=TriggerType.manual,
                       status=RunStatus.pending, manual=True)
        run.config_patch = config_patch
        if run.queue is not None:
            run.resolved_payload = self._prepare(run, s).resolved

        def tx(c: Conn) -> None:
            if also is not None:
                also(c, run)
            self.store.insert_runs(c, [run])

        await self.db.write(tx)
        self._after_new_pending(run)
        return run

    def _after_new_pending(self, run: Run) -> None:
        if run.queue is not None:
            self._notify_queues()
        else:
            self.wake(run.due_ms)

    async def cancel(self, tenant_id: str, run_id: str, reason: str | None) -> Run:
        now = self.clock.now_ms()
        fx = _Effects()

        def tx(c: Conn) -> Run:
            run = self.store.get_run(c, tenant_id, run_id)
            if run is None:
                raise NotFound("Run")
            if run.status in FINISHED:
                raise Conflict(f"Run is already {run.status.value}")
            self._mark_cancelled(run, now, reason or "cancelled by request")
            self.store.update_runs(c, [run], _CANCEL_COLS)
            fx.ended.append(run)
            self._after_chain_change_tx(c, run, now, fx)
            return run

        run = await self.db.write(tx)
        fx.cancel_tasks.append(run.id)
        self._apply(fx)
        return run

    def _mark_cancelled(self, run: Run, now: int, reason: str) -> None:
        run.status = RunStatus.cancelled
        run.completed_ms = now
        run.error_code = "cancelled"
        run.error_message = reason
        run.cancel_requested_ms = now
        run.cancel_reason = reason
        run.waiting = False

    def _cancel_active_tx(self, c: Conn, schedule_ids: Iterable[str], now: int, reason: str,
                          fx: _Effects) -> None:
        """CANCEL_OTHER: cancel every pending or running run of these schedules."""
        for sid in schedule_ids:
            active = self.store.active_runs_of(c, sid)
            for r in active:
                self._mark_cancelled(r, now, reason)
            self.store.update_runs(c, active, _CANCEL_COLS)
            fx.ended.extend(active)
            fx.cancel_tasks.extend(r.id for r in active)

    def _cancel_active_records_tx(self, c: Conn, items: Iterable[tuple[str, str]], now: int,
                                  reason: str, fx: _Effects) -> None:
        """CANCEL_OTHER of a relative schedule: cancel the active runs of these records."""
        for sid, key in dict.fromkeys(items):
            active = self.store.active_runs_of(c, sid, record_key=key)
            for r in active:
                self._mark_cancelled(r, now, reason)
            self.store.update_runs(c, active, _CANCEL_COLS)
            fx.ended.extend(active)
            fx.cancel_tasks.extend(r.id for r in active)

    def _after_chain_change_tx(self, c: Conn, run: Run, now: int, fx: _Effects) -> None:
        s = self.store.get_schedule(c, None, run.schedule_id)
        if (s is not None
                and s.overlap_policy in (OverlapPolicy.BUFFER_ONE, OverlapPolicy.BUFFER_ALL)
                and self.store.release_buffered(c, s.id, now, record_key=run.record_key)):
            fx.wake_at(now)

    async def retry(self, tenant_id: str, run_id: str, *, also: AlsoTx | None = None) -> Run:
        """A new attempt of the same occurrence, chained to a failed or cancelled run that
        ends its chain (trigger_type manual). `also` as for trigger()."""
        now = self.clock.now_ms()

        def tx(c: Conn) -> Run:
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
                recs = self._records_of(c, {s.id: s}, [new])
                new.resolved_payload = self._prepare(new, s, recs).resolved
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
    def _notify_queues(self) -> None:
        self._queue_event.set()
        self._queue_event = asyncio.Event()

    async def claim_for_worker(self, tenant_id: str, queues: Sequence[str], worker_id: str,
                               wait_s: float, lease_s: float) -> Run | None:
        """The oldest due run of these queues, now running and leased to worker_id; or None
        when none came within wait_s (long poll)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s

        def tx(c: Conn, now: int) -> Run | None:
            run = self.store.claim_queued_run(c, tenant_id, queues, now)
            if run is not None:
                run.status = RunStatus.running
                run.started_ms = now
                run.worker_id = worker_id
                run.lease_until_ms = now + int(lease_s * 1000)
                run.last_heartbeat_ms = now
                self.store.update_runs(c, [run], _LEASE_COLS)
            return run

        while True:
            event = self._queue_event
            run = await self.db.write(tx, self.clock.now_ms())
            if run is not None:
                self._log_run(run)
                self.wake(run.lease_until_ms)
                return run
            remaining = deadline - loop.time()
            if remaining <= 0 or self._stopping:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=min(remaining, 1.0))

    async def heartbeat(self, tenant_id: str, run_id: str, worker_id: str,
                        lease_s: float) -> tuple[Run, bool]:
        now = self.clock.now_ms()

        def tx(c: Conn) -> tuple[Run, bool]:
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
        fx = _Effects()

        def tx(c: Conn) -> Run:
            run = self._worker_run(c, tenant_id, run_id, worker_id)
            if run.status is not RunStatus.running:
                raise Conflict(f"Run is {run.status.value}; it cannot be completed")
            outcome = Outcome(ok=succeeded, result=result if isinstance(result, dict) else (
                None if result is None else {"value": result}),
                error_code=None if succeeded else "worker_failed",
                error_message=None if succeeded else (error_message or "the worker failed"))
            self._record_tx(c, [(run, outcome, now)], fx)
            return run

        run = await self.db.write(tx)
        self._apply(fx)
        return run

    def _worker_run(self, c: Conn, tenant_id: str, run_id: str, worker_id: str) -> Run:
        run = self.store.get_run(c, tenant_id, run_id)
        if run is None:
            raise NotFound("Run")
        if run.worker_id is None or run.worker_id != worker_id:
            raise Conflict("This run is not leased to this worker")
        return run


_CANCEL_COLS = ("status", "completed_ms", "error_code", "error_message", "cancel_requested_ms",
                "cancel_reason", "waiting")
_LEASE_COLS = ("status", "started_ms", "worker_id", "lease_until_ms", "last_heartbeat_ms")
_ = ScheduleType
