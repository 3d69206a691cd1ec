"""Claiming: the transaction side of planning, on the writer thread.

`claim_tx` reads the due schedules, asks planning (pure) what each produces, and writes it
in the cycle's transaction: the new runs inserted (UNIQUE(schedule, occurrence, attempt)
forbids a double: an occurrence claimed before is neither inserted nor started), the
schedules advanced, CANCEL_OTHER's replaced runs ended, completed schedules deleted when
they ask for it. A schedule whose planning raises is marked and pushed an hour on, and
nothing of its planning is kept (a relative schedule's runs inside a savepoint of its own:
the occurrences it marked fired are pending again); unless the error is the storage's for
now (Store.transient: a deadlock, a timeout, a full disk), which fails the whole cycle.
`start_pending_tx` starts the pending runs that came due (retries, deferred and triggered
runs). Each run that starts is resolved once here (`prepare`: its payload, its record's
data) and handed to the loop through `Effects.start`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from schedd.actions import Prepared
from schedd.backends import Runner
from schedd.engine.effects import Effects
from schedd.engine.planning import (
    PER_SCHEDULE_CAP,
    REPLACED,
    config_of,
    context_for,
    plan_fixed,
    plan_relative,
    settle_relative,
)
from schedd.engine.recording import Recorder
from schedd.models import (
    FINISHED,
    AfterCompletion,
    OverlapPolicy,
    Run,
    RunStatus,
    Schedule,
    ScheduleStatus,
    ScheduleType,
)
from schedd.outcomes import Outcome
from schedd.store import Store, Tx

START_COLS = ("status", "started_ms", "resolved_payload", "triggered_ms", "node_id",
              "node_lease_until_ms")


class Preparer:
    """Resolves what a run will send, once, when it starts or is queued for a worker: the
    action config with the run's patch, its context, and its record's data (relative
    schedules)."""

    def __init__(self, store: Store, runner: Runner) -> None:
        self.store = store
        self.runner = runner

    def resolve_queued(self, c: Tx, run: Run) -> None:
        """The payload of a new pending run of a worker queue (an automatic retry),
        resolved in the transaction that inserts it (the Recorder's ResolveQueued)."""
        s = self.store.get_schedule(c, None, run.schedule_id)
        if s is not None:
            recs = self.records_of(c, {s.id: s}, [run])
            run.resolved_payload = self.prepare(run, s, recs).resolved

    def records_of(self, c: Tx, schedules: dict[str, Schedule],
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

    def prepare(self, run: Run, s: Schedule,
                 records: dict[tuple[str, str], dict[str, Any]] | None = None) -> Prepared:
        """What the run will send, resolved once for its record and its start."""
        record = None
        if run.record_key is not None:
            record = (records or {}).get((s.id, run.record_key))
        config = config_of(run, s)
        return self.runner.prepare(run.action_type, config,
                                   context_for(run, s, record, config))


class Claimer:
    """Claims due work in the caller's transaction; the Recorder ends what a claim ends
    (orphaned pending runs, CANCEL_OTHER)."""

    def __init__(self, store: Store, preparer: Preparer, recorder: Recorder, *,
                 node_id: str = "", lease_ms: int = 0) -> None:
        self.store = store
        self.preparer = preparer
        self.recorder = recorder
        # a run started here carries this node and its lease (schedd/engine/nodes.py)
        self.node_id = node_id
        self.lease_ms = lease_ms

    def start_pending_tx(self, c: Tx, now: int, limit: int, fx: Effects) -> None:
        runs = self.store.due_pending_runs(c, now, limit)
        if not runs:
            return
        schedules = self.store.schedules_by_ids(c, [r.schedule_id for r in runs])
        records = self.preparer.records_of(c, schedules, runs)
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
            r.node_id = self.node_id
            r.node_lease_until_ms = now + self.lease_ms
            prepared = self.preparer.prepare(r, s, records)
            r.resolved_payload = prepared.resolved
            started.append(r)
            fx.start.append((r, s, prepared))
        self.store.update_runs(c, started, START_COLS)
        if orphans:
            self.recorder.record_tx(c, orphans, fx)
        if len(runs) == limit:
            fx.more = True

    def claim_tx(self, c: Tx, now: int, limit: int, fx: Effects) -> None:
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
            # what planning counts on `s` (advance_schedules writes it) and notes, restored
            # if it raises: the missed runs it made are dropped with the rest
            missed, notes = s.missed_count, len(fx.notes)
            try:
                if s.schedule_type is ScheduleType.relative:
                    # its planning writes (the occurrences it fires), so all of it is undone
                    # if any step raises: no occurrence stays marked fired without its run
                    with self.store.undone_on_error(c):
                        planned = (self.store.planned_starts(c, s.id, now - 60_000)
                                   if s.rate_limit_per_minute else [])
                        budget -= self._plan_relative_tx(
                            c, s, now, min(budget, PER_SCHEDULE_CAP), new_runs, fx, planned)
                else:
                    # reads and pure planning only: nothing written to undo
                    planned = (self.store.planned_starts(c, s.id, now - 60_000)
                               if s.rate_limit_per_minute else [])
                    if plan_fixed(s, now, counts.get(s.id, (0, 0)), planned, new_runs,
                                  fx.notes) and s.id not in fx.cancel_schedules:
                        fx.cancel_schedules.append(s.id)  # CANCEL_OTHER: its earlier runs
                    budget -= 1
                if s.next_run_ms is not None and s.next_run_ms <= now:
                    fx.more = True
            except Exception as exc:
                if not self.store.tx_alive(c) or self.store.transient(exc):
                    # the database ended the cycle's transaction, or the storage failed for
                    # now (a deadlock, a lock or statement timeout, a full disk): the
                    # schedule is not at fault, so the whole cycle fails (nothing of it is
                    # kept) and is tried again as soon as the storage takes writes
                    raise
                # One broken schedule never stops the loop: mark it, push it forward.
                new_runs[:] = [r for r in new_runs if r.schedule_id != s.id]
                s.missed_count = missed
                del fx.notes[notes:]  # what planning noted of runs that are not made
                fx.note(logging.ERROR, "schedule %s cannot be planned: %s: %s", s.id,
                        type(exc).__name__, exc)
                s.last_error = f"cannot plan the next run: {exc}"[:500]
                s.next_run_ms = now + 3_600_000
            s.updated_ms = now
        due = claimed
        by_id = {s.id: s for s in due}
        records = self.preparer.records_of(c, by_id, [
            r for r in new_runs if r.status is RunStatus.running or (
                r.queue is not None and r.status is RunStatus.pending)])
        prepare = self.preparer.prepare
        node_id, lease_until = self.node_id, now + self.lease_ms
        for r in new_runs:
            if r.status is RunStatus.running:
                s = by_id[r.schedule_id]
                r.started_ms = now
                r.node_id = node_id
                r.node_lease_until_ms = lease_until
                prepared = prepare(r, s, records)
                r.resolved_payload = prepared.resolved
                fx.start.append((r, s, prepared))
            elif r.queue is not None and r.status is RunStatus.pending:
                r.resolved_payload = prepare(r, by_id[r.schedule_id], records).resolved
                fx.queued = True
        if fx.cancel_schedules:
            # CANCEL_OTHER: the active runs end before the new ones are inserted
            self.recorder.cancel_active_tx(c, fx.cancel_schedules, now, REPLACED, fx)
            fx.cancel_schedules = []
        if fx.cancel_records:
            self.recorder.cancel_active_records_tx(c, fx.cancel_records, now, REPLACED, fx)
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

    def _plan_relative_tx(self, c: Tx, s: Schedule, now: int, cap: int, out: list[Run],
                          fx: Effects, planned: list[int]) -> int:
        """Claim a relative schedule's due occurrences (at most `cap`), found through the
        occurrences_due index: each becomes a run of its record (or a missed or skipped
        record, planning.plan_relative); the rows are marked fired in this transaction (in
        the savepoint claim_tx opens for it, rolled back if anything raises), and
        next_run_ms becomes the earliest occurrence still pending. Returns how many
        occurrences it took."""
        store = self.store
        due = store.due_occurrences(c, s.id, now, cap)
        if not due:
            settle_relative(s, now, store.earliest_occurrence(c, s.id))
            return 0
        counts = ({} if s.overlap_policy is OverlapPolicy.ALLOW
                  else store.active_counts_by_record(c, s.id, [k for k, _ in due]))
        # the records whose active runs CANCEL_OTHER replaces are handed on only once the
        # planning succeeded: if any step raises, claim_tx drops this schedule's new runs,
        # and nothing may be cancelled for runs that were never made
        replace: list[tuple[str, str]] = []
        plan_relative(s, now, due, counts, planned, out, replace, fx.notes)
        store.fire_occurrences(c, s.id, due)
        settle_relative(s, now, store.earliest_occurrence(c, s.id))
        s.last_error = None
        fx.cancel_records.extend(replace)
        return len(due)
