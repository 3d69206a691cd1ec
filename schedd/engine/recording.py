"""Recording: how runs end, inside the caller's write transaction.

An outcome finishes its run (`finish`), a failed attempt within the schedule's retries
chains the next one (`retry_of`, due after policies.backoff_ms), and the schedule's tallies
move (`tally`: run count, last run, consecutive failed occurrences, the pause after
pause_on_failure_count of them). Those three are pure and tested by tables
(tests/test_engine_planning.py). `Recorder` applies them to a batch of outcomes through the
store, releases what a BUFFER_* schedule held back, deletes a completed schedule whose
last run ended (action_after_completion = DELETE), and ends runs by cancellation
(a request, or CANCEL_OTHER).

It touches no asyncio object: what the loop must do after the commit goes into the
caller's `Effects`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Sequence

from schedd import policies
from schedd.config import Settings
from schedd.engine.effects import Effects
from schedd.engine.planning import mark_cancelled
from schedd.models import (
    ActionType,
    AfterCompletion,
    OverlapPolicy,
    Run,
    RunStatus,
    ScheduleStatus,
    ScheduleTally,
    TriggerType,
    new_id,
)
from schedd.outcomes import Outcome
from schedd.store import Store, Tx

PAUSED_FAILURES = "consecutive_failures"
FINISH_COLS = ("status", "completed_ms", "error_code", "error_message", "result",
               "next_attempt_run_id")
CANCEL_COLS = ("status", "completed_ms", "error_code", "error_message", "cancel_requested_ms",
               "cancel_reason", "waiting")
_BUFFERED = (OverlapPolicy.BUFFER_ONE, OverlapPolicy.BUFFER_ALL)

#: resolves the payload of a new pending run of a worker queue, in the transaction
ResolveQueued = Callable[[Tx, Run], None]


def finish(run: Run, outcome: Outcome, at: int) -> None:
    """The run ended at `at` with `outcome`: succeeded, cancelled or failed."""
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


def retry_of(run: Run, backoff_s: int, cap_s: float, rand: float, now: int) -> Run:
    """The next automatic attempt of failed `run`: pending, due after the backoff
    (policies.backoff_ms with `rand` in [0, 1) for the jitter), same occurrence, record and
    config patch."""
    delay = policies.backoff_ms(run.attempt, backoff_s, cap_s, rand)
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


def tally(t: ScheduleTally, run: Run, chain_ended: bool) -> bool:
    """Count finished `run` on its schedule's tallies. An occurrence's outcome counts once,
    when its chain of attempts ends (a manual run never does): a success clears the
    consecutive failures, a failure adds one. True when this failure paused the schedule
    (pause_on_failure_count reached)."""
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
                return True
    return False


class Recorder:
    """Writes how runs end, in the transaction of whoever calls it (a cycle, a recovery, a
    worker's completion, a cancel)."""

    def __init__(self, store: Store, settings: Settings, rng: random.Random,
                 resolve_queued: ResolveQueued) -> None:
        self.store = store
        self.settings = settings
        self.rng = rng
        self.resolve_queued = resolve_queued

    def record_tx(self, c: Tx, items: Sequence[tuple[Run, Outcome, int]],
                  fx: Effects) -> None:
        """Finish runs, chain retries, update schedule counters, in the caller's tx."""
        store = self.store
        # A run cancelled (or otherwise finished) since its outcome was queued keeps that
        # end: no status overwrite, no retry, no counters.
        still, tallies = store.active_runs_and_tallies(c, [r.id for r, _, _ in items])
        items = [it for it in items if it[0].id in still]
        if not items:
            return
        retries: list[Run] = []
        finished: list[Run] = []
        touched: dict[str, ScheduleTally] = {}
        cap_s = self.settings.retry_backoff_cap_seconds
        for run, outcome, at in items:
            finish(run, outcome, at)
            t = tallies.get(run.schedule_id)
            chain_ended = True
            if run.status is RunStatus.failed and t is not None and run.attempt <= t.max_retries:
                retry = retry_of(run, t.retry_backoff_seconds, cap_s, self.rng.random(), at)
                if retry.queue is not None:
                    self.resolve_queued(c, retry)
                run.next_attempt_run_id = retry.id
                retries.append(retry)
                chain_ended = False
            finished.append(run)
            if run.action_type is ActionType.webhook and run.started_ms is not None:
                fx.webhook_times.append((outcome.ok, max(0, at - run.started_ms) / 1000.0))
            if t is None:
                continue
            touched[t.id] = t
            if tally(t, run, chain_ended):
                fx.note(logging.WARNING, "schedule %s paused after %d failed occurrences",
                        t.id, t.consecutive_failures)
        now = max(at for _, _, at in items)
        store.update_runs(c, finished, FINISH_COLS, guard_active=True)
        fx.ended.extend(finished)
        store.insert_runs(c, retries)
        store.tally_schedules(c, touched.values(), now)
        record_ends = {(r.schedule_id, r.record_key) for r in finished
                       if r.record_key is not None and r.next_attempt_run_id is None}
        for t in touched.values():
            if t.overlap_policy in _BUFFERED:
                keys = [k for sid, k in record_ends if sid == t.id]
                if keys:
                    if any([store.release_buffered(c, t.id, now, record_key=k)
                            for k in keys]):
                        fx.wake_at(now)
                elif store.release_buffered(c, t.id, now):
                    fx.wake_at(now)
            if (t.status is ScheduleStatus.completed
                    and t.action_after_completion is AfterCompletion.DELETE
                    and not store.active_counts(c, [t.id]).get(t.id)):
                store.delete_schedule(c, t.id)
                fx.note(logging.INFO, "schedule %s completed and was deleted", t.id)
        if retries:
            fx.wake_at(min(r.due_ms for r in retries))

    # ------------------------------------------------------------------ cancellation
    def cancel_active_tx(self, c: Tx, schedule_ids: Iterable[str], now: int, reason: str,
                         fx: Effects) -> None:
        """CANCEL_OTHER: cancel every pending or running run of these schedules."""
        for sid in schedule_ids:
            self._cancel(c, self.store.active_runs_of(c, sid), now, reason, fx)

    def cancel_active_records_tx(self, c: Tx, items: Iterable[tuple[str, str]], now: int,
                                 reason: str, fx: Effects) -> None:
        """CANCEL_OTHER of a relative schedule: cancel the active runs of these records."""
        for sid, key in dict.fromkeys(items):
            self._cancel(c, self.store.active_runs_of(c, sid, record_key=key), now, reason, fx)

    def _cancel(self, c: Tx, active: list[Run], now: int, reason: str, fx: Effects) -> None:
        for r in active:
            mark_cancelled(r, now, reason)
        self.store.update_runs(c, active, CANCEL_COLS)
        fx.ended.extend(active)
        fx.cancel_tasks.extend(r.id for r in active)

    def cancel_tx(self, c: Tx, run: Run, now: int, reason: str, fx: Effects) -> None:
        """End one active run as cancelled (a request); a BUFFER_* schedule's next waiting
        run of the same chain (or record) may start."""
        mark_cancelled(run, now, reason)
        self.store.update_runs(c, [run], CANCEL_COLS)
        fx.ended.append(run)
        s = self.store.get_schedule(c, None, run.schedule_id)
        if (s is not None and s.overlap_policy in _BUFFERED
                and self.store.release_buffered(c, s.id, now, record_key=run.record_key)):
            fx.wake_at(now)
