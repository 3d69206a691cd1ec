"""The engine's pure parts by tables: what a due schedule produces (schedd/engine/planning.py)
and how an outcome is recorded (the pure functions of schedd/engine/recording.py). No
database, no loop, no clock: `now` is an argument, as in test_policies.py."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from schedd.engine.planning import (
    PER_SCHEDULE_CAP,
    plan_fixed,
    plan_relative,
    settle_relative,
)
from schedd.engine.recording import PAUSED_FAILURES, finish, retry_of, tally
from schedd.models import (
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
)
from schedd.outcomes import Outcome

T0 = int(datetime(2026, 11, 22, 9, 0, tzinfo=UTC).timestamp() * 1000)  # a Sunday, 09:00Z
SEC = 1000
MIN = 60 * SEC


def sched(**kw: Any) -> Schedule:
    """An interval schedule, every minute, created a minute before T0: T0 is its first
    occurrence (an interval's first is one interval after its creation)."""
    base: dict[str, Any] = dict(
        id="s-1", tenant_id="t", name="n", schedule_type=ScheduleType.interval,
        schedule_expression="1m", action_type=ActionType.webhook,
        action_config={"url": "http://127.0.0.1:9/"}, next_run_ms=T0,
        created_ms=T0 - MIN, updated_ms=T0 - MIN)
    base.update(kw)
    return Schedule(**base)


def shape(runs: list[Run]) -> list[tuple[int, str, str, str | None, bool]]:
    """(occurrence - T0 in s, status, trigger, error code, waiting) of each run planned."""
    return [((r.scheduled_for_ms - T0) // SEC, str(r.status), str(r.trigger_type),
             r.error_code, r.waiting) for r in runs]


# --------------------------------------------------------------------- plan_fixed by table

# (what, schedule fields, now - T0 in s, active (pending or running, waiting),
#  planned runs, next_run - T0 in s (None: none left), cancel the earlier active runs)
CASES: list[tuple[str, dict[str, Any], int, tuple[int, int],
                  list[tuple[int, str, str, str | None, bool]], int | None, bool]] = [
    ("on time: one run, started now", {}, 0, (0, 0),
     [(0, "running", "scheduled", None, False)], 60, False),
    ("a worker's run waits in its queue", {"action_type": ActionType.worker,
                                           "action_config": {"queue": "q"}}, 0, (0, 0),
     [(0, "pending", "scheduled", None, False)], 60, False),
    ("more than the on-time grace late: catchup", {}, 2, (0, 0),
     [(0, "running", "catchup", None, False)], 60, False),
    ("three due within the window, ALL: each runs, catchup",
     {"overlap_policy": OverlapPolicy.ALLOW}, 120, (0, 0),
     [(0, "running", "catchup", None, False), (60, "running", "catchup", None, False),
      (120, "running", "scheduled", None, False)], 180, False),
    ("three due, LATEST: the older two are one missed record",
     {"catchup_policy": CatchupPolicy.LATEST}, 120, (0, 0),
     [(0, "skipped", "catchup", "missed", False), (120, "running", "scheduled", None, False)],
     180, False),
    ("older than the catch-up window: missed, counted once",
     {"catchup_window_minutes": 1}, 300, (0, 0),
     [(0, "skipped", "catchup", "missed", False), (240, "running", "catchup", None, False),
      (300, "skipped", "scheduled", "overlap", False)], 360, False),
    ("two due under SKIP: the second finds the first active", {}, 60, (0, 0),
     [(0, "running", "catchup", None, False), (60, "skipped", "scheduled", "overlap", False)],
     120, False),
    ("SKIP while a run is active: a skipped record", {}, 0, (1, 0),
     [(0, "skipped", "scheduled", "overlap", False)], 60, False),
    ("ALLOW while a run is active: runs", {"overlap_policy": OverlapPolicy.ALLOW}, 0, (1, 0),
     [(0, "running", "scheduled", None, False)], 60, False),
    ("BUFFER_ONE: one waits, the next is skipped",
     {"overlap_policy": OverlapPolicy.BUFFER_ONE}, 60, (1, 0),
     [(0, "pending", "catchup", None, True), (60, "skipped", "scheduled", "overlap", False)],
     120, False),
    ("BUFFER_ALL: every one waits", {"overlap_policy": OverlapPolicy.BUFFER_ALL}, 60, (1, 1),
     [(0, "pending", "catchup", None, True), (60, "pending", "scheduled", None, True)],
     120, False),
    ("CANCEL_OTHER: the active runs go, this one runs",
     {"overlap_policy": OverlapPolicy.CANCEL_OTHER}, 0, (1, 0),
     [(0, "running", "scheduled", None, False)], 60, True),
    ("CANCEL_OTHER, two due: the newer replaces the older of this claim",
     {"overlap_policy": OverlapPolicy.CANCEL_OTHER}, 60, (0, 0),
     [(0, "cancelled", "catchup", "cancelled", False),
      (60, "running", "scheduled", None, False)], 120, True),
    ("a once schedule fires and is done",
     {"schedule_type": ScheduleType.once, "schedule_expression": "2026-11-22T09:00:00Z"},
     0, (0, 0), [(0, "running", "scheduled", None, False)], None, False),
    ("ends at end_at", {"end_ms": T0 + 90 * SEC, "overlap_policy": OverlapPolicy.ALLOW},
     60, (0, 0),
     [(0, "running", "catchup", None, False), (60, "running", "scheduled", None, False)],
     None, False),
]


@pytest.mark.parametrize(("what", "fields", "now_s", "active", "runs", "next_s", "cancel"),
                         CASES, ids=[c[0] for c in CASES])
def test_plan_fixed(what: str, fields: dict[str, Any], now_s: int, active: tuple[int, int],
                    runs: list[tuple[int, str, str, str | None, bool]], next_s: int | None,
                    cancel: bool) -> None:
    s = sched(**fields)
    out: list[Run] = []
    notes: list[tuple[int, str, tuple[Any, ...]]] = []
    now = T0 + now_s * SEC
    assert plan_fixed(s, now, active, [], out, notes) is cancel
    assert shape(out) == runs
    assert s.next_run_ms == (None if next_s is None else T0 + next_s * SEC)
    assert s.status is (ScheduleStatus.completed if next_s is None else ScheduleStatus.active)
    for r in out:
        assert r.schedule_id == s.id and r.attempt == 1 and r.attempt_root_run_id == r.id
        assert r.triggered_ms == now
        assert (r.completed_ms == now) is (r.status in ("skipped", "cancelled"))
    # a missed stretch is one record, counted on the schedule and said in one warning
    missed = [r for r in out if r.error_code == "missed"]
    assert s.missed_count == sum(r.result["missed_count"] for r in missed if r.result)
    assert [n[0] for n in notes] == [logging.WARNING] * len(missed)


def test_plan_fixed_counts_a_missed_stretch_and_says_it() -> None:
    s = sched(catchup_window_minutes=1)
    out: list[Run] = []
    notes: list[tuple[int, str, tuple[Any, ...]]] = []
    plan_fixed(s, T0 + 300 * SEC, (0, 0), [], out, notes)
    # 09:00 to 09:03 are older than 09:05 minus the one-minute window
    first, last = "2026-11-22T09:00:00.000Z", "2026-11-22T09:03:00.000Z"
    assert out[0].result == {"missed_count": 4, "first": first, "last": last}
    assert out[0].error_message == "4 occurrence(s) older than the catch-up window"
    assert s.missed_count == 4
    assert notes == [(logging.WARNING, "schedule %s missed %d occurrence(s) from %s to %s",
                      ("s-1", 4, first, last))]


def test_plan_fixed_claims_at_most_the_cap_and_leaves_the_rest_due() -> None:
    s = sched(schedule_expression="1s", catchup_window_minutes=60)
    out: list[Run] = []
    now = T0 + 2 * PER_SCHEDULE_CAP * SEC
    plan_fixed(s, now, (0, 0), [], out, [])
    assert len(out) == PER_SCHEDULE_CAP
    assert s.next_run_ms == T0 + PER_SCHEDULE_CAP * SEC  # still due: the loop claims again


def test_plan_fixed_defers_by_the_rate_limit() -> None:
    # two starts allowed per minute; two already planned in the last minute
    s = sched(rate_limit_per_minute=2)
    planned = [T0 - 30 * SEC, T0 - 10 * SEC]
    out: list[Run] = []
    plan_fixed(s, T0, (0, 0), planned, out, [])
    (run,) = out
    assert (run.status, run.due_ms) == (RunStatus.pending, T0 + 30 * SEC)
    assert planned[-1] == T0 + 30 * SEC  # the deferred start counts for the next ones


def test_plan_fixed_spreads_by_the_flexible_window() -> None:
    s = sched(flexible_window_minutes=10)
    out: list[Run] = []
    plan_fixed(s, T0, (0, 0), [], out, [])
    (run,) = out
    assert T0 < run.due_ms <= T0 + 10 * MIN  # its own offset, fixed for (schedule, occurrence)
    assert run.status is RunStatus.pending
    again: list[Run] = []
    plan_fixed(sched(flexible_window_minutes=10), T0, (0, 0), [], again, [])
    assert again[0].due_ms == run.due_ms


# ------------------------------------------------------------------ plan_relative by table

def rel(**kw: Any) -> Schedule:
    return sched(schedule_type=ScheduleType.relative, schedule_expression="09:00",
                 relative_entity_definition_id="d-1", relative_field_name="due",
                 relative_offset_days=0, **kw)


# (what, schedule fields, due occurrences (key, instant - T0 in s), active counts by key,
#  runs (key, status, error code, waiting), records whose active runs are cancelled)
REL_CASES: list[tuple[str, dict[str, Any], list[tuple[str, int]], dict[str, tuple[int, int]],
                      list[tuple[str | None, str, str | None, bool]], list[str]]] = [
    ("each record its run", {}, [("a", 0), ("b", 0)], {},
     [("a", "running", None, False), ("b", "running", None, False)], []),
    ("older than the window: a missed record of its own",
     {"catchup_window_minutes": 1}, [("a", -120), ("b", 0)], {},
     [("a", "skipped", "missed", False), ("b", "running", None, False)], []),
    ("SKIP counts per record", {}, [("a", 0), ("b", 0)], {"a": (1, 0)},
     [("a", "skipped", "overlap", False), ("b", "running", None, False)], []),
    ("BUFFER_ONE waits per record", {"overlap_policy": OverlapPolicy.BUFFER_ONE},
     [("a", 0)], {"a": (1, 0)}, [("a", "pending", None, True)], []),
    ("CANCEL_OTHER names the record", {"overlap_policy": OverlapPolicy.CANCEL_OTHER},
     [("a", 0)], {"a": (1, 0)}, [("a", "running", None, False)], ["a"]),
]


@pytest.mark.parametrize(("what", "fields", "due", "counts", "runs", "cancelled"), REL_CASES,
                         ids=[c[0] for c in REL_CASES])
def test_plan_relative(what: str, fields: dict[str, Any], due: list[tuple[str, int]],
                       counts: dict[str, tuple[int, int]],
                       runs: list[tuple[str | None, str, str | None, bool]],
                       cancelled: list[str]) -> None:
    s = rel(**fields)
    out: list[Run] = []
    cancel: list[tuple[str, str]] = []
    notes: list[tuple[int, str, tuple[Any, ...]]] = []
    plan_relative(s, T0, [(k, T0 + o * SEC) for k, o in due], counts, [], out, cancel, notes)
    assert [(r.record_key, str(r.status), r.error_code, r.waiting) for r in out] == runs
    assert cancel == [(s.id, k) for k in cancelled]
    assert len(notes) == (1 if any(r.error_code == "missed" for r in out) else 0)


@pytest.mark.parametrize(("earliest_s", "end_s", "now_s", "next_s", "completed"), [
    (60, None, 0, 60, False),  # the next record's occurrence
    (None, None, 0, None, False),  # none pending: sleeps until a record comes
    (None, 30, 0, 30, False),  # none pending, end_at ahead: wakes then to complete
    (None, 30, 30, None, True),  # past end_at: done
])
def test_settle_relative(earliest_s: int | None, end_s: int | None, now_s: int,
                         next_s: int | None, completed: bool) -> None:
    s = rel(end_ms=None if end_s is None else T0 + end_s * SEC)
    settle_relative(s, T0 + now_s * SEC, None if earliest_s is None else T0 + earliest_s * SEC)
    assert s.next_run_ms == (None if next_s is None else T0 + next_s * SEC)
    assert (s.status is ScheduleStatus.completed) is completed


# ------------------------------------------------------------------ recording's pure parts

def a_run(**kw: Any) -> Run:
    base: dict[str, Any] = dict(
        id="r-1", schedule_id="s-1", tenant_id="t", status=RunStatus.running,
        trigger_type=TriggerType.scheduled, scheduled_for_ms=T0, due_ms=T0, triggered_ms=T0,
        started_ms=T0, attempt=1, attempt_root_run_id="r-1", action_type=ActionType.webhook)
    base.update(kw)
    return Run(**base)


@pytest.mark.parametrize(("outcome", "status", "code"), [
    (Outcome(ok=True, error_code="ignored", result={"status": 200}), "succeeded", None),
    (Outcome(ok=False, error_code="cancelled", error_message="x"), "cancelled", "cancelled"),
    (Outcome(ok=False, error_code="http_status", error_message="500"), "failed",
     "http_status"),
])
def test_finish(outcome: Outcome, status: str, code: str | None) -> None:
    run = a_run()
    finish(run, outcome, T0 + 5 * SEC)
    assert (str(run.status), run.error_code, run.completed_ms) == (status, code, T0 + 5 * SEC)
    assert run.result == outcome.result
    assert run.error_message == (None if outcome.ok else outcome.error_message)


@pytest.mark.parametrize(("attempt", "base_s", "cap_s", "rand", "delay_s"), [
    (1, 60, 3600, 0.5, 60),  # base, jitter centred
    (3, 60, 3600, 0.5, 240),  # doubles per attempt
    (1, 60, 3600, 0.0, 54),  # -10 %
    (10, 60, 3600, 0.5, 3600),  # capped
])
def test_retry_of(attempt: int, base_s: int, cap_s: float, rand: float, delay_s: int) -> None:
    run = a_run(attempt=attempt, status=RunStatus.failed, record_key="k",
                config_patch={"payload": 1}, manual=True)
    now = T0 + 7 * SEC
    nxt = retry_of(run, base_s, cap_s, rand, now)
    assert nxt.due_ms - now == delay_s * SEC
    assert (nxt.status, nxt.trigger_type, nxt.attempt) == (
        RunStatus.pending, TriggerType.retry, attempt + 1)
    assert (nxt.previous_attempt_run_id, nxt.attempt_root_run_id) == ("r-1", "r-1")
    assert (nxt.scheduled_for_ms, nxt.record_key, nxt.config_patch, nxt.manual) == (
        T0, "k", {"payload": 1}, True)
    assert nxt.id != run.id


def a_tally(**kw: Any) -> ScheduleTally:
    base: dict[str, Any] = dict(
        id="s-1", status=ScheduleStatus.active, max_retries=1, retry_backoff_seconds=60,
        pause_on_failure_count=2, overlap_policy=OverlapPolicy.SKIP,
        action_after_completion=AfterCompletion.NONE, run_count=0, consecutive_failures=0,
        last_run_ms=None, last_run_status=None)
    base.update(kw)
    return ScheduleTally(**base)


# (what, run fields, chain ended, failures before, schedule status,
#  failures after, paused now, run_count after)
TALLY_CASES: list[tuple[str, dict[str, Any], bool, int, ScheduleStatus, int, bool, int]] = [
    ("a success clears the failures", {"status": RunStatus.succeeded}, True, 1,
     ScheduleStatus.active, 0, False, 1),
    ("a failure with a retry to come counts nothing yet", {"status": RunStatus.failed}, False,
     0, ScheduleStatus.active, 0, False, 1),
    ("the chain's last failure counts once", {"status": RunStatus.failed, "attempt": 2}, True,
     0, ScheduleStatus.active, 1, False, 1),
    ("the count reached: paused", {"status": RunStatus.failed, "attempt": 2}, True, 1,
     ScheduleStatus.active, 2, True, 1),
    ("already paused by hand: stays so, no reason set",
     {"status": RunStatus.failed, "attempt": 2}, True, 1, ScheduleStatus.paused, 2, False, 1),
    ("a manual run never counts", {"status": RunStatus.failed, "manual": True}, True, 1,
     ScheduleStatus.active, 1, False, 1),
    ("a manual retry past the automatic ones does not count again",
     {"status": RunStatus.failed, "attempt": 3}, True, 1, ScheduleStatus.active, 1, False, 1),
    ("never started (cancelled while pending): no run counted",
     {"status": RunStatus.cancelled, "started_ms": None}, True, 1, ScheduleStatus.active, 1,
     False, 0),
]


@pytest.mark.parametrize(("what", "fields", "ended", "before", "status", "after", "paused",
                          "count"), TALLY_CASES, ids=[c[0] for c in TALLY_CASES])
def test_tally(what: str, fields: dict[str, Any], ended: bool, before: int,
               status: ScheduleStatus, after: int, paused: bool, count: int) -> None:
    t = a_tally(consecutive_failures=before, status=status)
    run = a_run(**fields)
    assert tally(t, run, ended) is paused
    assert (t.consecutive_failures, t.run_count) == (after, count)
    assert t.paused_reason == (PAUSED_FAILURES if paused else None)
    assert t.status is (ScheduleStatus.paused if paused else status)
    if run.started_ms is not None:
        assert (t.last_run_ms, t.last_run_status) == (run.started_ms, run.status)
