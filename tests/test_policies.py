"""Every policy of SPEC §5 on a fake clock. Each test states its timeline in a comment
and asserts the exact runs (status, trigger_type, scheduled_for, due_at, error_code)."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest
from engine_kit import kit

from schedd import policies
from schedd.models import OverlapPolicy, Run, RunStatus, ScheduleStatus
from schedd.timing import format_ms, load_zone, parse_instant_ms

# on SQLite and on PostgreSQL (tests/db_backend.py)
pytestmark = pytest.mark.usefixtures("database_url")

UTC = load_zone("UTC")
SEC = 1000
MIN = 60 * SEC
T0 = parse_instant_ms("2026-11-22T09:00:00Z", UTC)


def hm(ms: int) -> str:
    return format_ms(ms)[11:19]


def table(runs: list[Run]) -> list[tuple[str, int, str, str, str | None]]:
    """(scheduled_for HH:MM:SS, attempt, status, trigger_type, error_code), in order."""
    return [(hm(r.scheduled_for_ms), r.attempt, r.status.value, r.trigger_type.value,
             r.error_code)
            for r in sorted(runs, key=lambda r: (r.scheduled_for_ms, r.attempt))]


# ---------------------------------------------------------------------- pure functions
@pytest.mark.parametrize(("attempt", "base", "cap", "rand", "expected"), [
    (1, 60, 3600, 0.5, 60_000), (2, 60, 3600, 0.5, 120_000), (3, 60, 3600, 0.5, 240_000),
    (7, 60, 3600, 0.5, 3_600_000),  # capped
    (1, 60, 3600, 0.0, 54_000), (1, 60, 3600, 0.999999, 66_000),  # ±10 % jitter
    (1, 0, 3600, 0.5, 0),
])
def test_backoff(attempt: int, base: float, cap: float, rand: float, expected: int) -> None:
    assert policies.backoff_ms(attempt, base, cap, rand) == expected


def test_flexible_offset_is_fixed_per_occurrence_and_inside_the_window() -> None:
    offsets = [policies.flex_offset_ms("sched-a", T0 + i * MIN, 10) for i in range(500)]
    assert offsets == [policies.flex_offset_ms("sched-a", T0 + i * MIN, 10) for i in range(500)]
    assert all(0 <= o <= 10 * MIN for o in offsets)
    assert len(set(offsets)) > 400  # spread, not one fixed delay
    assert policies.flex_offset_ms("sched-a", T0, 0) == 0


@pytest.mark.parametrize(("policy", "active", "waiting", "run", "buffered", "cancel"), [
    (OverlapPolicy.SKIP, 0, 0, True, False, False),
    (OverlapPolicy.SKIP, 1, 0, False, False, False),
    (OverlapPolicy.ALLOW, 3, 0, True, False, False),
    (OverlapPolicy.BUFFER_ONE, 1, 0, True, True, False),
    (OverlapPolicy.BUFFER_ONE, 2, 1, False, False, False),
    (OverlapPolicy.BUFFER_ALL, 5, 4, True, True, False),
    (OverlapPolicy.CANCEL_OTHER, 1, 0, True, False, True),
])
def test_overlap_decisions(policy: OverlapPolicy, active: int, waiting: int, run: bool,
                           buffered: bool, cancel: bool) -> None:
    d = policies.overlap(policy, active, waiting)
    assert (d.run, d.buffered, d.cancel_active) == (run, buffered, cancel)


def test_rate_limited_start() -> None:
    assert policies.rate_limited_start(100, [], 2) == 100
    assert policies.rate_limited_start(100, [50], 2) == 100
    assert policies.rate_limited_start(100, [50, 60], 2) == 60_050
    assert policies.rate_limited_start(100, [50, 60], None) == 100


# ---------------------------------------------------------------------- overlap
async def test_skip_with_retries_a_pending_retry_counts_as_running(tmp_path: Path) -> None:
    # every 1 min from 09:01, always failing, 2 retries 90 s apart (±10 %), doubling:
    # 09:01 fails; its retry is pending at 09:02 -> 09:02 skipped; the retry (~09:02:30)
    # fails, the next (~09:05:30) keeps 09:03..09:05 skipped; 09:06 runs again.
    async with kit(tmp_path, T0) as k:
        s = await k.create(schedule_expression="1m", overlap_policy="SKIP", max_retries=2,
                           retry_backoff_seconds=90, headers={"x-always-fail": "1"},
                           pause_on_failure_count=100)
        await k.run_until(T0 + 6 * MIN + 10 * SEC)
        assert table(await k.runs(s.id)) == [
            ("09:01:00", 1, "failed", "scheduled", "http_status"),
            ("09:01:00", 2, "failed", "retry", "http_status"),
            ("09:01:00", 3, "failed", "retry", "http_status"),
            ("09:02:00", 1, "skipped", "scheduled", "overlap"),
            ("09:03:00", 1, "skipped", "scheduled", "overlap"),
            ("09:04:00", 1, "skipped", "scheduled", "overlap"),
            ("09:05:00", 1, "skipped", "scheduled", "overlap"),
            ("09:06:00", 1, "failed", "scheduled", "http_status"),
            ("09:06:00", 2, "pending", "retry", None),
        ]


async def test_buffer_one_with_a_catch_up_burst(tmp_path: Path) -> None:
    # every 1 min; the loop was away until 09:05:30: 09:01..09:05 are due at once.
    # 09:01 runs, 09:02 waits (buffered) and starts when 09:01 ends, 09:03..09:05 skipped.
    async with kit(tmp_path, T0) as k:
        s = await k.create(schedule_expression="1m", overlap_policy="BUFFER_ONE")
        k.clock.set(T0 + 5 * MIN + 30 * SEC)
        await k.step()
        await k.step()  # the buffered run, released when 09:01 ended
        assert table(await k.runs(s.id)) == [
            ("09:01:00", 1, "succeeded", "catchup", None),
            ("09:02:00", 1, "succeeded", "catchup", None),
            ("09:03:00", 1, "skipped", "catchup", "overlap"),
            ("09:04:00", 1, "skipped", "catchup", "overlap"),
            ("09:05:00", 1, "skipped", "catchup", "overlap"),
        ]


async def test_buffer_all_runs_every_occurrence_one_after_another(tmp_path: Path) -> None:
    async with kit(tmp_path, T0) as k:
        s = await k.create(schedule_expression="1m", overlap_policy="BUFFER_ALL")
        k.clock.set(T0 + 4 * MIN)
        for _ in range(6):
            await k.step()
        runs = sorted((r for r in await k.runs(s.id) if r.scheduled_for_ms <= T0 + 4 * MIN),
                      key=lambda r: r.scheduled_for_ms)
        assert [r.status.value for r in runs] == ["succeeded"] * 4
        # one at a time, in order: each starts after the previous one completed
        for a, b in itertools.pairwise(runs):
            assert a.completed_ms is not None and b.started_ms is not None
            assert b.started_ms >= a.completed_ms


async def test_cancel_other_cancels_the_running_one_then_starts(tmp_path: Path) -> None:
    async with kit(tmp_path, T0) as k:
        s = await k.create(schedule_expression="1m", overlap_policy="CANCEL_OTHER",
                           headers={"x-hang": "1"})
        await k.run_until(T0 + MIN)
        (first,) = await k.runs(s.id)
        task = k.engine.inflight[first.id]
        await k.run_until(T0 + 2 * MIN)
        await asyncio.gather(task, return_exceptions=True)
        assert task.done()
        assert table(await k.runs(s.id)) == [
            ("09:01:00", 1, "cancelled", "scheduled", "cancelled"),
            ("09:02:00", 1, "running", "scheduled", None),
        ]
        cancelled = next(r for r in await k.runs(s.id) if r.status is RunStatus.cancelled)
        assert cancelled.cancel_reason == "replaced by a newer occurrence"


async def test_manual_triggers_run_regardless_of_overlap(tmp_path: Path) -> None:
    async with kit(tmp_path, T0) as k:
        s = await k.create(schedule_expression="1h", overlap_policy="SKIP",
                           headers={"x-hang": "1"})
        await k.services.trigger_schedule(k.tenant, s.id)
        await k.services.trigger_schedule(k.tenant, s.id)
        await k.engine.tick(T0)
        await asyncio.sleep(0)
        runs = await k.runs(s.id)
        assert [(r.status.value, r.trigger_type.value) for r in runs] == [
            ("running", "manual"), ("running", "manual")]


# ---------------------------------------------------------------------- catch-up
async def test_catchup_latest_runs_only_the_newest(tmp_path: Path) -> None:
    # every 1 min; away until 09:05:30 with a 10 min window: 09:05 runs, 09:01..09:04 missed
    async with kit(tmp_path, T0) as k:
        s = await k.create(schedule_expression="1m", catchup_policy="LATEST")
        k.clock.set(T0 + 5 * MIN + 30 * SEC)
        await k.step()
        runs = await k.runs(s.id)
        assert table(runs) == [
            ("09:01:00", 1, "skipped", "catchup", "missed"),
            ("09:05:00", 1, "succeeded", "catchup", None),
        ]
        missed = next(r for r in runs if r.error_code == "missed")
        assert missed.result == {"missed_count": 4, "first": "2026-11-22T09:01:00.000Z",
                                 "last": "2026-11-22T09:04:00.000Z"}
        assert (await k.schedule(s.id)).missed_count == 4


async def test_window_zero_never_catches_up(tmp_path: Path) -> None:
    async with kit(tmp_path, T0) as k:
        s = await k.create(schedule_expression="1m", catchup_window_minutes=0)
        k.clock.set(T0 + 5 * MIN + 30 * SEC)
        await k.step()
        assert table(await k.runs(s.id)) == [("09:01:00", 1, "skipped", "catchup", "missed")]
        assert format_ms((await k.schedule(s.id)).next_run_ms or 0) == "2026-11-22T09:06:00.000Z"


async def test_a_wall_clock_jump_forward_is_caught_up_by_the_window(tmp_path: Path) -> None:
    # the host clock steps from 09:00 to 11:00:10 (suspend, NTP step): 10:51..11:00 run
    async with kit(tmp_path, T0) as k:
        s = await k.create(schedule_expression="1m", overlap_policy="ALLOW")
        k.clock.set(T0 + 2 * 60 * MIN + 10 * SEC)
        await k.step()
        runs = await k.runs(s.id)
        missed = [r for r in runs if r.error_code == "missed"]
        ran = [r for r in runs if r.status is RunStatus.succeeded]
        assert len(missed) == 1 and missed[0].result["missed_count"] == 110
        assert [hm(r.scheduled_for_ms)[:5] for r in sorted(ran, key=lambda r: r.scheduled_for_ms)
                ] == [f"10:{m}" for m in range(51, 60)] + ["11:00"]
        assert {r.trigger_type.value for r in ran} == {"catchup"}


async def test_a_wall_clock_jump_backward_doubles_nothing(tmp_path: Path) -> None:
    async with kit(tmp_path, T0) as k:
        s = await k.create(schedule_expression="1m")
        await k.run_until(T0 + 3 * MIN)
        k.clock.set(T0 + MIN)  # the clock steps back two minutes
        await k.run_until(T0 + 5 * MIN)
        assert [hm(r.scheduled_for_ms) for r in sorted(await k.runs(s.id),
                key=lambda r: r.scheduled_for_ms)] == [f"09:0{m}:00" for m in range(1, 6)]


# ---------------------------------------------------------------------- flexible window
async def test_flexible_window_start_is_fixed_across_restarts(tmp_path: Path) -> None:
    async with kit(tmp_path, T0) as k:
        s = await k.create(schedule_expression="1h", flexible_window_minutes=30)
        k.clock.set(T0 + 60 * MIN)
        await k.engine.tick(k.clock.now_ms())
        (run,) = await k.runs(s.id)
        expected = T0 + 60 * MIN + policies.flex_offset_ms(s.id, T0 + 60 * MIN, 30)
        assert run.due_ms == expected and run.status is RunStatus.pending
    async with kit(tmp_path, T0 + 60 * MIN + 1) as k2:  # a restart does not move it
        (run2,) = await k2.runs(s.id)
        assert run2.due_ms == expected
        await k2.run_until(T0 + 95 * MIN)
        (done,) = await k2.runs(s.id)
        assert done.status is RunStatus.succeeded and done.started_ms == expected


# ---------------------------------------------------------------------- rate limit
async def test_rate_limit_with_catch_up_defers_never_drops(tmp_path: Path) -> None:
    # every 10 s, at most 2 starts a minute; the loop was away until 09:01:05, so 09:00:10
    # .. 09:01:00 (6 occurrences) are due: 2 start now, 2 a minute later, 2 after that.
    async with kit(tmp_path, T0) as k:
        s = await k.create(schedule_expression="10s", rate_limit_per_minute=2,
                           overlap_policy="ALLOW")
        now = T0 + 65 * SEC
        k.clock.set(now)
        await k.engine.tick(now)
        runs = sorted(await k.runs(s.id), key=lambda r: r.scheduled_for_ms)
        assert [r.due_ms - now for r in runs[2:]] == [60_000, 60_000, 120_000, 120_000]
        assert [r.due_ms for r in runs[:2]] == [T0 + 10 * SEC, T0 + 20 * SEC]  # on their way
        assert [r.status.value for r in runs] == ["running"] * 2 + ["pending"] * 4
        end = T0 + 10 * MIN
        await k.run_until(end)
        runs = await k.runs(s.id)
        # 6 occurrences a minute against a limit of 2: the rest wait, deferred, none dropped
        assert all(r.status is RunStatus.succeeded or (r.status is RunStatus.pending
                                                       and r.due_ms > end) for r in runs)
        assert sum(r.status is RunStatus.succeeded for r in runs) == 2 * 9  # 09:01:05 .. 09:09:05
        starts = sorted(r.started_ms for r in runs if r.started_ms is not None)
        assert all(sum(1 for x in starts if t <= x < t + MIN) <= 2 for t in starts)
        scheduled = sorted(r.scheduled_for_ms for r in runs)
        assert scheduled == sorted(set(scheduled))  # nothing doubled, nothing dropped
        assert scheduled == [T0 + i * 10 * SEC for i in range(1, len(scheduled) + 1)]


# ---------------------------------------------------------------------- pause on failure
async def test_pause_on_failure_counts_occurrences_after_their_retries(tmp_path: Path) -> None:
    # every 1 min, 1 retry each, pause after 2 failed occurrences: 09:01 (2 attempts)
    # and 09:02 (2 attempts) fail -> paused; nothing fires after that.
    async with kit(tmp_path, T0) as k:
        s = await k.create(schedule_expression="1m", max_retries=1, retry_backoff_seconds=5,
                           pause_on_failure_count=2, headers={"x-always-fail": "1"})
        await k.run_until(T0 + 10 * MIN)
        assert table(await k.runs(s.id)) == [
            ("09:01:00", 1, "failed", "scheduled", "http_status"),
            ("09:01:00", 2, "failed", "retry", "http_status"),
            ("09:02:00", 1, "failed", "scheduled", "http_status"),
            ("09:02:00", 2, "failed", "retry", "http_status"),
        ]
        after = await k.schedule(s.id)
        assert (after.status, after.paused_reason, after.consecutive_failures) == (
            ScheduleStatus.paused, "consecutive_failures", 2)
        resumed = await k.services.resume_schedule(k.tenant, s.id)
        assert (resumed.paused_reason, resumed.consecutive_failures) == (None, 0)


async def test_a_success_resets_the_failure_count(tmp_path: Path) -> None:
    async with kit(tmp_path, T0) as k:
        s = await k.create(schedule_expression="1m", max_retries=1, retry_backoff_seconds=5,
                           pause_on_failure_count=2, headers={"x-fail": "1"})
        await k.run_until(T0 + 5 * MIN)
        after = await k.schedule(s.id)
        assert after.status is ScheduleStatus.active and after.consecutive_failures == 0


# ---------------------------------------------------------------------- bounds and completion
async def test_nothing_fires_before_start_at(tmp_path: Path) -> None:
    async with kit(tmp_path, T0) as k:
        s = await k.create(schedule_type="cron", schedule_expression="*/10 * * * *",
                           start_at="2026-11-22T09:25:00Z")
        await k.run_until(T0 + 45 * MIN)
        assert [hm(r.scheduled_for_ms) for r in await k.runs(s.id)] == [
            "09:30:00", "09:40:00"]


async def test_delete_after_completion_waits_for_the_last_retry(tmp_path: Path) -> None:
    async with kit(tmp_path, T0) as k:
        s = await k.create(schedule_type="once", schedule_expression="2026-11-22T09:01:00Z",
                           action_after_completion="DELETE", headers={"x-fail": "1"},
                           retry_backoff_seconds=30)
        await k.run_until(T0 + MIN)
        assert (await k.schedule(s.id)).status is ScheduleStatus.completed  # retry pending
        await k.run_until(T0 + 5 * MIN)
        assert await k.db.read(k.store.get_schedule, None, s.id) is None
        assert table(await k.runs(s.id)) == [
            ("09:01:00", 1, "failed", "scheduled", "http_status"),
            ("09:01:00", 2, "succeeded", "retry", None),
        ]


# ---------------------------------------------------------------------- regressions
async def test_cancel_other_inside_one_catch_up_burst_keeps_only_the_newest(
        tmp_path: Path) -> None:
    async with kit(tmp_path, T0) as k:
        s = await k.create(schedule_expression="1m", overlap_policy="CANCEL_OTHER",
                           headers={"x-hang": "1"})
        k.clock.set(T0 + 4 * MIN)
        await k.engine.tick(k.clock.now_ms())
        assert table(await k.runs(s.id)) == [
            ("09:01:00", 1, "cancelled", "catchup", "cancelled"),
            ("09:02:00", 1, "cancelled", "catchup", "cancelled"),
            ("09:03:00", 1, "cancelled", "catchup", "cancelled"),
            ("09:04:00", 1, "running", "scheduled", None),
        ]
        assert len(k.engine.inflight) == 1


async def test_rate_limit_counts_a_late_run_at_its_real_start(tmp_path: Path) -> None:
    # every 30 s, 2 a minute; the loop was away until 09:01:05: 09:00:30 and 09:01:00 start
    # at 09:01:05, so 09:01:30 must wait until 09:02:05 (not start 25 s after two others)
    async with kit(tmp_path, T0) as k:
        s = await k.create(schedule_expression="30s", rate_limit_per_minute=2,
                           overlap_policy="ALLOW")
        k.clock.set(T0 + 65 * SEC)
        await k.step()
        await k.run_until(T0 + 3 * MIN)
        starts = sorted(r.started_ms for r in await k.runs(s.id) if r.started_ms)
        assert all(sum(1 for x in starts if t <= x < t + MIN) <= 2 for t in starts), [
            hm(x) for x in starts]
        assert hm(starts[2]) == "09:02:05"


async def test_a_long_missed_stretch_is_counted_whole(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from schedd.engine import planning
    monkeypatch.setattr(planning, "MISSED_CHUNK", 500)  # count in chunks smaller than the gap
    async with kit(tmp_path, T0) as k:
        s = await k.create(schedule_type="cron", schedule_expression="* * * * *",
                           catchup_window_minutes=0)
        k.clock.set(T0 + 3000 * MIN + 30 * SEC)
        await k.step()
        (missed,) = [r for r in await k.runs(s.id) if r.error_code == "missed"]
        # created at 09:00:00.000 exactly, so 09:00 is its first occurrence: 3001 in all
        assert missed.result == {"missed_count": 3001, "first": format_ms(T0),
                                 "last": format_ms(T0 + 3000 * MIN)}
        assert (await k.schedule(s.id)).missed_count == 3001


async def test_delete_after_completion_when_the_only_occurrence_was_missed(
        tmp_path: Path) -> None:
    async with kit(tmp_path, T0) as k:
        s = await k.create(schedule_type="once", schedule_expression="2026-11-22T09:01:00Z",
                           action_after_completion="DELETE", catchup_window_minutes=0)
        k.clock.set(T0 + 30 * MIN)
        await k.step()
        assert await k.db.read(k.store.get_schedule, None, s.id) is None
        assert table(await k.runs(s.id)) == [("09:01:00", 1, "skipped", "catchup", "missed")]


async def test_a_manual_retry_after_the_chain_ended_does_not_count_twice(
        tmp_path: Path) -> None:
    async with kit(tmp_path, T0) as k:
        s = await k.create(schedule_type="once", schedule_expression="2026-11-22T09:01:00Z",
                           max_retries=0, pause_on_failure_count=2,
                           headers={"x-always-fail": "1"})
        await k.run_until(T0 + 2 * MIN)
        (first,) = await k.runs(s.id)
        assert (await k.schedule(s.id)).consecutive_failures == 1
        retry = await k.services.retry_run(k.tenant, first.id)
        await k.step()
        done = await k.db.read(k.store.get_run, None, retry.id)
        assert done is not None and done.status is RunStatus.failed
        after = await k.schedule(s.id)
        assert after.consecutive_failures == 1 and after.paused_reason is None


# ---------------------------------------------------------------------- pause, resume, PUT
async def test_resume_plans_from_now_without_catching_up(tmp_path: Path) -> None:
    # every 10 min; paused at 09:05, resumed at 11:02: next is 11:10, nothing in between
    async with kit(tmp_path, T0) as k:
        s = await k.create(schedule_expression="10m")
        k.clock.set(T0 + 5 * MIN)
        await k.services.pause_schedule(k.tenant, s.id)
        await k.run_until(T0 + 122 * MIN)
        resumed = await k.services.resume_schedule(k.tenant, s.id)
        assert format_ms(resumed.next_run_ms or 0) == "2026-11-22T11:10:00.000Z"
        await k.run_until(T0 + 125 * MIN)
        assert await k.runs(s.id) == []


async def test_resuming_a_once_schedule_after_its_time_records_it_missed(
        tmp_path: Path) -> None:
    async with kit(tmp_path, T0) as k:
        s = await k.create(schedule_type="once", schedule_expression="2026-11-22T09:30:00Z")
        await k.services.pause_schedule(k.tenant, s.id)
        await k.run_until(T0 + 35 * MIN)  # inside the default 10 min window, but paused
        resumed = await k.services.resume_schedule(k.tenant, s.id)
        assert resumed.status is ScheduleStatus.completed and resumed.next_run_ms is None
        assert resumed.missed_count == 1
        await k.run_until(T0 + 60 * MIN)
        assert table(await k.runs(s.id)) == [("09:30:00", 1, "skipped", "catchup", "missed")]


async def test_a_put_that_leaves_no_future_occurrence_is_refused(tmp_path: Path) -> None:
    from schedd.errors import InvalidField
    async with kit(tmp_path, T0) as k:
        s = await k.create(schedule_type="cron", schedule_expression="0 10 * * *",
                           end_at="2026-11-22T12:00:00Z")
        with pytest.raises(InvalidField) as err:
            await k.services.update_schedule(k.tenant, s.id, {"schedule_expression": "0 13 * * *"})
        assert err.value.loc == ["body", "schedule_expression"]
        assert (await k.schedule(s.id)).schedule_expression == "0 10 * * *"  # unchanged


@pytest.mark.parametrize("now_ms", [0, 1, 1_795_338_000_123, (1 << 48) - 1])
def test_new_id_is_a_uuidv7_of_the_given_millisecond(now_ms: int) -> None:
    import uuid

    from schedd.models import new_id
    ids = [new_id(now_ms) for _ in range(500)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        u = uuid.UUID(text)
        assert str(u) == text  # canonical: lower-case hex, 8-4-4-4-12
        assert u.version == 7 and u.variant == uuid.RFC_4122
        assert u.int >> 80 == now_ms
    # the random bits vary across the whole field, not a fixed pattern
    assert len({uuid.UUID(t).int & ((1 << 62) - 1) for t in ids}) == len(ids)
    assert len({(uuid.UUID(t).int >> 64) & 0xFFF for t in ids}) > 1


def test_new_ids_sort_by_their_millisecond() -> None:
    from schedd.models import new_id
    assert sorted([new_id(2), new_id(1), new_id(3)])[0].startswith("00000000-0001-7")
    assert new_id(1_795_338_000_000) < new_id(1_795_338_000_001)
