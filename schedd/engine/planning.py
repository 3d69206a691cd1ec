"""Pure: what a due schedule produces when the loop claims it.

`plan_fixed` turns the occurrences of a cron/interval/once schedule that are due at `now`
into runs (started, pending, buffered, deferred by the rate limit) and records (missed,
skipped for overlap), and advances the schedule past them. `plan_relative` does the same
for the due occurrences of a relative schedule's records, which the store found. Neither
reads the clock or the database: the loop passes `now`, the schedule's active run counts
and its planned starts in the last minute, and writes what comes back (tests/
test_engine_planning.py checks them by tables, as test_policies checks policies.py).

The record rules of relative schedules (entity fields, filters, the occurrence of one
record) are `schedd/planning.py`'s; this module only turns occurrences into runs.

Hot path: `plan_fixed` runs once per claimed schedule, so it appends to the caller's lists
(`out`, `notes`) instead of building a result object per schedule.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from schedd import planning as relative
from schedd import policies, timing
from schedd.models import (
    FINISHED,
    ActionType,
    CatchupPolicy,
    Run,
    RunStatus,
    Schedule,
    ScheduleStatus,
    TriggerType,
    new_id,
)
from schedd.outcomes import RunContext

PER_SCHEDULE_CAP = 1000  # occurrences one schedule may claim in one tick
MISSED_CHUNK = 100_000  # occurrences counted per step of a long missed stretch
REPLACED = "replaced by a newer occurrence"

#: a line to log after the commit: (level, message, args)
Note = tuple[int, str, tuple[Any, ...]]


# Hot paths pass StrEnum members where a str is wanted: a member is its value as a str
# (hash, ==, formatting, JSON, SQLite binding), and `.value` is a property costing ~0.3 µs.
def timer_for(s: Schedule) -> timing.Timer:
    return timing.compile_timer(
        s.schedule_type, s.schedule_expression, s.timezone,
        anchor_ms=s.created_ms, start_ms=s.start_ms, end_ms=s.end_ms,
    )


def new_run(s: Schedule, *, occurrence_ms: int, due_ms: int, now_ms: int,
            trigger: TriggerType, status: RunStatus, manual: bool = False,
            record_key: str | None = None) -> Run:
    """The first attempt of an occurrence of `s`."""
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
    run = new_run(s, occurrence_ms=first, due_ms=first, now_ms=now,
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


def mark_cancelled(run: Run, now: int, reason: str) -> None:
    run.status = RunStatus.cancelled
    run.completed_ms = now
    run.error_code = "cancelled"
    run.error_message = reason
    run.cancel_requested_ms = now
    run.cancel_reason = reason
    run.waiting = False


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


def _missed(s: Schedule, first: int, last: int, count: int, now: int,
            notes: list[Note]) -> Run:
    msg, args = missed_note(s, first, last, count)
    notes.append((logging.WARNING, msg, args))
    return missed_run(s, first, last, count, now,
                      f"{count} occurrence(s) older than the catch-up window")


def plan_fixed(s: Schedule, now: int, active: tuple[int, int], planned: list[int],
               out: list[Run], notes: list[Note]) -> bool:
    """Turn the occurrences of due schedule `s` up to `now` into runs (or missed/skipped
    records) appended to `out`, and advance s.next_run_ms past them (completing `s` when
    none is left).

    `active` is (pending or running runs, of which waiting on BUFFER_*) of `s` before this
    claim; `planned` its starts in the last minute, sorted, when it has a rate limit (runs
    deferred by the limit are appended to it). Warnings go to `notes`. True when
    CANCEL_OTHER replaced active runs: the caller cancels the schedule's runs from before
    this claim (this claim's own replaced runs are already marked cancelled in `out`)."""
    timer = timer_for(s)
    o = s.next_run_ms
    assert o is not None
    cancel_earlier = False
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
            out.append(_missed(s, first, last, count, now, notes))
        o = timer.next_after(max(cutoff - 1, last if last is not None else cutoff - 1))
    occurrences: list[int] = []
    while o is not None and o <= now and len(occurrences) < PER_SCHEDULE_CAP:
        occurrences.append(o)
        o = timer.next_after(o)
    if s.catchup_policy is CatchupPolicy.LATEST and len(occurrences) > 1:
        out.append(_missed(s, occurrences[0], occurrences[-2], len(occurrences) - 1, now,
                           notes))
        occurrences = occurrences[-1:]
    n_active, n_waiting = active
    mine: list[Run] = []  # this claim's runs of this schedule
    for i, occ in enumerate(occurrences):
        trigger = policies.trigger_for(occ, now, newer_due=i < len(occurrences) - 1 or (
            o is not None and o <= now))
        decision = policies.overlap(s.overlap_policy, n_active, n_waiting)
        if not decision.run:
            out.append(new_run(s, occurrence_ms=occ, due_ms=occ, now_ms=now, trigger=trigger,
                               status=RunStatus.skipped))
            out[-1].error_code = "overlap"
            out[-1].error_message = "an earlier run of this schedule was still active"
            continue
        if decision.cancel_active and n_active:
            cancel_earlier = True  # the runs from before this claim
            for earlier in mine:  # and this claim's, which have not started yet
                if earlier.status in (RunStatus.running, RunStatus.pending):
                    mark_cancelled(earlier, now, REPLACED)
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
            run = new_run(s, occurrence_ms=occ, due_ms=due, now_ms=now, trigger=trigger,
                          status=RunStatus.pending)
            run.waiting = True
            n_waiting += 1
        elif due <= now and s.action_type is not ActionType.worker:
            run = new_run(s, occurrence_ms=occ, due_ms=due, now_ms=now, trigger=trigger,
                          status=RunStatus.running)
        else:
            run = new_run(s, occurrence_ms=occ, due_ms=due, now_ms=now, trigger=trigger,
                          status=RunStatus.pending)
        n_active += 1
        out.append(run)
        mine.append(run)
    s.next_run_ms = o
    if o is None:
        s.status = ScheduleStatus.completed
    s.last_error = None
    return cancel_earlier


def plan_relative(s: Schedule, now: int, due: Sequence[tuple[str, int]],
                  counts: Mapping[str, tuple[int, int]], planned: list[int], out: list[Run],
                  cancel_records: list[tuple[str, str]], notes: list[Note]) -> None:
    """Turn the due occurrences of relative schedule `s` ((record key, instant), found by
    the store) into runs of their records (or missed or skipped records) appended to `out`.

    `counts` is record key -> (active, waiting) runs of `s` for that record (empty under
    ALLOW); `planned` as for plan_fixed. A record whose active runs CANCEL_OTHER replaces
    is appended to `cancel_records` as (schedule id, record key). The caller marks the
    occurrences fired and then calls `settle_relative`."""
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
            run = new_run(s, occurrence_ms=occ, due_ms=occ, now_ms=now, trigger=trigger,
                          status=RunStatus.skipped, record_key=key)
            run.error_code = "overlap"
            run.error_message = ("an earlier run of this schedule for this record was "
                                 "still active")
            out.append(run)
            continue
        if decision.cancel_active:
            cancel_records.append((s.id, key))
        due_ms = occ + policies.flex_offset_ms(relative.flex_key(s.id, key), occ,
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
        run = new_run(s, occurrence_ms=occ, due_ms=due_ms, now_ms=now, trigger=trigger,
                      status=status, record_key=key)
        run.waiting = decision.buffered
        out.append(run)
    if missed:
        notes.append((logging.WARNING, "schedule %s missed %d record occurrence(s) older than "
                      "the catch-up window", (s.id, missed)))


def settle_relative(s: Schedule, now: int, earliest_ms: int | None) -> None:
    """A relative schedule's next_run_ms once its due occurrences are fired: the earliest
    occurrence still pending (`earliest_ms`), bounded by end_at; past end_at with nothing
    before it, the schedule is completed."""
    s.next_run_ms = relative.next_run_of(earliest_ms, s.end_ms)
    if s.end_ms is not None and now >= s.end_ms and s.next_run_ms == s.end_ms:
        s.status = ScheduleStatus.completed
        s.next_run_ms = None
