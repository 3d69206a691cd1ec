"""The scheduler engine on a fake clock: days of schedules in milliseconds, no sleeping.

Each test states its timeline and asserts the exact runs."""

from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from engine_kit import kit, until

from schedd.models import RunStatus, ScheduleStatus
from schedd.store.sqlite import RUN_COLS
from schedd.timing import format_ms, load_zone, parse_instant_ms

# on SQLite and on PostgreSQL (tests/db_backend.py)
pytestmark = pytest.mark.usefixtures("database_url")

UTC = load_zone("UTC")
MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR


def ms(text: str) -> int:
    return parse_instant_ms(text, UTC)


def fired(runs: list) -> list[str]:
    return sorted(format_ms(r.scheduled_for_ms) for r in runs if r.attempt == 1
                  and r.status is not RunStatus.skipped)


# ---------------------------------------------------------------------- occurrences over days
async def test_daily_cron_in_berlin_over_ten_days(tmp_path: Path) -> None:
    # 09:00 Europe/Berlin is 08:00Z in winter (CET, +01:00).
    async with kit(tmp_path, ms("2026-11-22T10:00:00Z")) as k:
        s = await k.create(schedule_type="cron", schedule_expression="0 9 * * *",
                           timezone="Europe/Berlin")
        await k.run_until(ms("2026-12-02T12:00:00Z"))
        assert fired(await k.runs(s.id)) == [
            f"2026-11-{d}T08:00:00.000Z" for d in range(23, 31)
        ] + ["2026-12-01T08:00:00.000Z", "2026-12-02T08:00:00.000Z"]
        assert all(r.status is RunStatus.succeeded for r in await k.runs(s.id))
        assert (await k.schedule(s.id)).run_count == 10


@pytest.mark.parametrize(
    ("expr", "start", "end", "expected"),
    [
        # America/New_York spring forward 2026-03-08 02:00 EST -> 03:00 EDT: the fixed time
        # 02:30 does not exist that day and fires once, right after the jump (07:00Z).
        ("30 2 * * *", "2026-03-06T12:00:00Z", "2026-03-10T12:00:00Z",
         ["2026-03-07T07:30:00.000Z", "2026-03-08T07:00:00.000Z", "2026-03-09T06:30:00.000Z",
          "2026-03-10T06:30:00.000Z"]),
        # America/New_York fall back 2026-11-01 02:00 EDT -> 01:00 EST: 01:30 happens twice
        # and a fixed-time expression fires once, at the first (EDT, 05:30Z).
        ("30 1 * * *", "2026-10-30T12:00:00Z", "2026-11-03T12:00:00Z",
         ["2026-10-31T05:30:00.000Z", "2026-11-01T05:30:00.000Z", "2026-11-02T06:30:00.000Z",
          "2026-11-03T06:30:00.000Z"]),
        # Wildcard across the same fall back follows real time: :30 fires in both 01:xx hours.
        ("30 * * * *", "2026-11-01T04:00:00Z", "2026-11-01T08:00:00Z",
         ["2026-11-01T04:30:00.000Z", "2026-11-01T05:30:00.000Z", "2026-11-01T06:30:00.000Z",
          "2026-11-01T07:30:00.000Z"]),
        # Wildcard across spring forward: 02:xx does not exist, so 3 fires in 4 wall hours.
        ("30 * * * *", "2026-03-08T05:00:00Z", "2026-03-08T09:00:00Z",
         ["2026-03-08T05:30:00.000Z", "2026-03-08T06:30:00.000Z", "2026-03-08T07:30:00.000Z",
          "2026-03-08T08:30:00.000Z"]),
    ],
)
async def test_cron_across_new_york_dst(tmp_path: Path, expr: str, start: str, end: str,
                                        expected: list[str]) -> None:
    async with kit(tmp_path, ms(start)) as k:
        s = await k.create(schedule_type="cron", schedule_expression=expr,
                           timezone="America/New_York")
        await k.run_until(ms(end))
        assert fired(await k.runs(s.id)) == expected


async def test_every_second_for_an_hour_no_gap_no_double(tmp_path: Path) -> None:
    t0 = ms("2026-11-22T09:00:00Z")
    async with kit(tmp_path, t0) as k:
        s = await k.create(schedule_expression="1s", start_at="2026-11-22T09:00:01Z")
        await k.run_until(t0 + HOUR)
        times = sorted(r.scheduled_for_ms for r in await k.runs(s.id))
        assert len(times) == 3600
        assert times[0] == t0 + 1000
        assert all(b - a == 1000 for a, b in itertools.pairwise(times))
        # each ran on time: claimed exactly at its occurrence, as trigger "scheduled"
        runs = await k.runs(s.id)
        assert {r.trigger_type.value for r in runs} == {"scheduled"}
        assert all(r.started_ms == r.scheduled_for_ms for r in runs)


async def test_once_fires_once_then_completes(tmp_path: Path) -> None:
    async with kit(tmp_path, ms("2026-11-22T09:00:00Z")) as k:
        s = await k.create(schedule_type="once", schedule_expression="2026-11-22T12:00:00",
                           timezone="Europe/Berlin")
        await k.run_until(ms("2026-11-25T00:00:00Z"))
        assert fired(await k.runs(s.id)) == ["2026-11-22T11:00:00.000Z"]
        after = await k.schedule(s.id)
        assert after.status is ScheduleStatus.completed
        assert after.next_run_ms is None


async def test_interval_with_end_at_completes(tmp_path: Path) -> None:
    async with kit(tmp_path, ms("2026-11-22T09:00:00Z")) as k:
        s = await k.create(schedule_expression="1h", start_at="2026-11-22T10:00:00Z",
                           end_at="2026-11-22T13:00:00Z")
        await k.run_until(ms("2026-11-23T00:00:00Z"))
        assert fired(await k.runs(s.id)) == [f"2026-11-22T{h}:00:00.000Z" for h in (10, 11, 12, 13)]
        assert (await k.schedule(s.id)).status is ScheduleStatus.completed


# ---------------------------------------------------------------------- uniqueness and claims
async def test_a_second_claim_at_the_same_instant_finds_nothing(tmp_path: Path) -> None:
    t = ms("2026-11-22T09:00:00Z")
    async with kit(tmp_path, t) as k:
        s = await k.create(schedule_expression="1m")
        k.clock.set(t + MIN)
        await k.engine.tick(t + MIN)
        await k.engine.tick(t + MIN)  # same instant again: next_run_at already advanced
        await k.settle()
        assert len(await k.runs(s.id)) == 1


async def test_the_schema_forbids_a_doubled_occurrence(tmp_path: Path) -> None:
    t = ms("2026-11-22T09:00:00Z")
    async with kit(tmp_path, t) as k:
        s = await k.create(schedule_expression="1m")
        await k.run_until(t + MIN)
        (run,) = await k.runs(s.id)
        cols = ", ".join(c for c in RUN_COLS if c != "id")
        # SQLite: "UNIQUE constraint failed"; PostgreSQL: "violates unique constraint"
        with pytest.raises(k.store.integrity_errors, match=r"(?i)unique constraint"):
            await k.db.write(lambda c: c.execute(
                f"INSERT INTO runs (id, {cols}) SELECT 'copy', {cols} FROM runs WHERE id = ?",
                (run.id,)))


async def test_a_broken_schedule_is_marked_and_does_not_stop_the_others(tmp_path: Path) -> None:
    t = ms("2026-11-22T09:00:00Z")
    async with kit(tmp_path, t) as k:
        bad = await k.create(schedule_expression="1m")
        good = await k.create(schedule_expression="1m")
        await k.db.write(lambda c: c.execute(
            "UPDATE schedules SET schedule_expression = 'garbage' WHERE id = ?", (bad.id,)))
        await k.run_until(t + 5 * MIN)
        assert len(fired(await k.runs(good.id))) == 5
        assert await k.runs(bad.id) == []
        broken = await k.schedule(bad.id)
        assert broken.last_error and "cannot plan" in broken.last_error
        assert broken.next_run_ms is not None and broken.next_run_ms > t + 5 * MIN


# ---------------------------------------------------------------------- retries and failures
async def test_failed_attempts_are_chained_with_exponential_backoff(tmp_path: Path) -> None:
    t = ms("2026-11-22T09:00:00Z")
    async with kit(tmp_path, t) as k:
        s = await k.create(schedule_type="once", schedule_expression="2026-11-22T09:01:00Z",
                           headers={"x-fail": "2"}, retry_backoff_seconds=10)
        await k.run_until(t + HOUR)
        chain = sorted(await k.runs(s.id), key=lambda r: r.attempt)
        assert [(r.attempt, r.status.value, r.trigger_type.value) for r in chain] == [
            (1, "failed", "scheduled"), (2, "failed", "retry"), (3, "succeeded", "retry")]
        root = chain[0]
        assert all(r.attempt_root_run_id == root.id for r in chain)
        assert all(r.scheduled_for_ms == root.scheduled_for_ms for r in chain)
        assert chain[0].next_attempt_run_id == chain[1].id
        assert chain[1].previous_attempt_run_id == chain[0].id
        assert chain[2].next_attempt_run_id is None
        # backoff × 2^(attempt−1) with ±10 % jitter: 10 s then 20 s
        gap1 = chain[1].due_ms - chain[0].completed_ms
        gap2 = chain[2].due_ms - chain[1].completed_ms
        assert 9_000 <= gap1 <= 11_000
        assert 18_000 <= gap2 <= 22_000
        after = await k.schedule(s.id)
        assert after.consecutive_failures == 0
        assert after.run_count == 3
        assert after.last_run_status == "succeeded"


async def test_retries_stop_after_max_retries(tmp_path: Path) -> None:
    t = ms("2026-11-22T09:00:00Z")
    async with kit(tmp_path, t) as k:
        s = await k.create(schedule_type="once", schedule_expression="2026-11-22T09:01:00Z",
                           headers={"x-always-fail": "1"}, max_retries=2,
                           retry_backoff_seconds=1)
        await k.run_until(t + HOUR)
        chain = sorted(await k.runs(s.id), key=lambda r: r.attempt)
        assert [r.status.value for r in chain] == ["failed"] * 3
        assert (await k.schedule(s.id)).consecutive_failures == 1


async def test_consecutive_failed_occurrences_pause_the_schedule(tmp_path: Path) -> None:
    t = ms("2026-11-22T09:00:00Z")
    async with kit(tmp_path, t) as k:
        s = await k.create(schedule_expression="1m", headers={"x-always-fail": "1"},
                           max_retries=0, pause_on_failure_count=3)
        await k.run_until(t + 10 * MIN)
        after = await k.schedule(s.id)
        assert after.status is ScheduleStatus.paused
        assert after.paused_reason == "consecutive_failures"
        assert len(await k.runs(s.id)) == 3


# ---------------------------------------------------------------------- catch-up and missed
async def test_downtime_yields_catchup_runs_inside_the_window_and_one_missed_record(
        tmp_path: Path) -> None:
    t = ms("2026-11-22T09:00:00Z")
    async with kit(tmp_path, t) as k:
        s = await k.create(schedule_expression="1m", catchup_window_minutes=10)
        await k.run_until(t + 2 * MIN)  # 09:01 and 09:02 ran
        k.clock.set(t + HOUR + 30_000)  # the loop was away until 10:00:30
        await k.step()
        runs = await k.runs(s.id)
        missed = [r for r in runs if r.error_code == "missed"]
        assert len(missed) == 1
        m = missed[0]
        assert m.status is RunStatus.skipped
        # cutoff is 09:50:30: 09:03 .. 09:50 were missed (48), 09:51 .. 10:00 caught up (10)
        assert m.result == {"missed_count": 48, "first": "2026-11-22T09:03:00.000Z",
                            "last": "2026-11-22T09:50:00.000Z"}
        assert format_ms(m.scheduled_for_ms) == "2026-11-22T09:03:00.000Z"
        caught = [r for r in runs if r.trigger_type.value == "catchup" and r.error_code is None]
        assert [format_ms(r.scheduled_for_ms)[11:16] for r in sorted(
            caught, key=lambda r: r.scheduled_for_ms)] == [f"09:{m_}" for m_ in range(51, 60)] + [
            "10:00"]
        after = await k.schedule(s.id)
        assert after.missed_count == 48
        assert format_ms(after.next_run_ms) == "2026-11-22T10:01:00.000Z"


async def test_catch_up_burst_under_skip_runs_one_and_skips_the_rest(tmp_path: Path) -> None:
    t = ms("2026-11-22T09:00:00Z")
    async with kit(tmp_path, t) as k:
        s = await k.create(schedule_expression="1m", overlap_policy="SKIP")
        k.clock.set(t + 5 * MIN)
        await k.engine.tick(t + 5 * MIN)
        await k.settle()
        runs = sorted(await k.runs(s.id), key=lambda r: r.scheduled_for_ms)
        assert [(r.status.value, r.error_code) for r in runs] == [
            ("succeeded", None)] + [("skipped", "overlap")] * 4


# ---------------------------------------------------------------------- crash safety
async def test_runs_left_running_by_a_dead_process_are_interrupted_and_retried(
        tmp_path: Path) -> None:
    t = ms("2026-11-22T09:00:00Z")
    async with kit(tmp_path, t) as k:
        s = await k.create(schedule_expression="1h", headers={"x-hang": "1"},
                           retry_backoff_seconds=5)
        k.clock.set(t + HOUR)
        await k.engine.tick(t + HOUR)
        await asyncio.sleep(0)
        (running,) = await k.runs(s.id)
        assert running.status is RunStatus.running
    # "restart": a new engine over the same file finds the run still running
    async with kit(tmp_path, t + HOUR + 1000) as k2:
        chain = sorted(await k2.runs(s.id), key=lambda r: r.attempt)
        assert [(r.attempt, r.status.value, r.error_code) for r in chain] == [
            (1, "failed", "interrupted"), (2, "pending", None)]
        assert chain[1].trigger_type.value == "retry"
        assert 4_500 <= chain[1].due_ms - (t + HOUR + 1000) <= 5_500


async def test_shutdown_gives_grace_then_records_interrupted(tmp_path: Path) -> None:
    t = ms("2026-11-22T09:00:00Z")
    async with kit(tmp_path, t) as k:
        s = await k.create(schedule_expression="1h", headers={"x-hang": "1"})
        k.clock.set(t + HOUR)
        await k.engine.tick(t + HOUR)
        await asyncio.sleep(0)
        await k.engine.start(run_loop=False)
        await k.engine.stop(grace_s=0.05)
        chain = sorted(await k.runs(s.id), key=lambda r: r.attempt)
        assert [(r.status.value, r.error_code) for r in chain] == [
            ("failed", "interrupted"), ("pending", None)]


# ---------------------------------------------------------------------- manual operations
async def test_trigger_runs_now_and_leaves_next_run_at(tmp_path: Path) -> None:
    t = ms("2026-11-22T09:00:00Z")
    async with kit(tmp_path, t) as k:
        s = await k.create(schedule_expression="1h")
        run = await k.services.trigger_schedule(k.tenant, s.id)
        assert run.trigger_type.value == "manual"
        await k.engine.tick(t)
        await k.settle()
        done = await k.db.read(k.store.get_run, None, run.id)
        assert done is not None and done.status is RunStatus.succeeded
        assert (await k.schedule(s.id)).next_run_ms == t + HOUR


async def test_cancel_aborts_a_running_action_without_retry(tmp_path: Path) -> None:
    t = ms("2026-11-22T09:00:00Z")
    async with kit(tmp_path, t) as k:
        s = await k.create(schedule_expression="1h", headers={"x-hang": "1"})
        k.clock.set(t + HOUR)
        await k.engine.tick(t + HOUR)
        await asyncio.sleep(0)
        (run,) = await k.runs(s.id)
        task = k.engine.inflight[run.id]
        cancelled = await k.services.cancel_run(k.tenant, run.id, "operator said so")
        assert cancelled.status is RunStatus.cancelled
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled() or task.done()
        await k.settle()
        (after,) = await k.runs(s.id)
        assert (after.status, after.cancel_reason) == (RunStatus.cancelled, "operator said so")
        from schedd.errors import Conflict
        with pytest.raises(Conflict):
            await k.services.cancel_run(k.tenant, run.id, None)
        retry = await k.services.retry_run(k.tenant, run.id)
        assert (retry.attempt, retry.trigger_type.value, retry.previous_attempt_run_id) == (
            2, "manual", run.id)


# ---------------------------------------------------------------------- workers
async def test_worker_claims_heartbeats_and_completes(tmp_path: Path) -> None:
    t = ms("2026-11-22T09:00:00Z")
    async with kit(tmp_path, t) as k:
        s = await k.create(schedule_expression="1h", action_type="worker",
                           action_config={"queue": "reports", "payload": {"n": 1}})
        assert await k.services.claim_work(k.tenant, ["reports"], "w1", 0, 60) is None
        k.clock.set(t + HOUR)
        await k.engine.tick(t + HOUR)
        run = await k.services.claim_work(k.tenant, ["reports"], "w1", 0, 60)
        assert run is not None and run.status is RunStatus.running and run.worker_id == "w1"
        assert await k.services.heartbeat(k.tenant, run.id, "w1", 60) is False
        from schedd.errors import Conflict
        with pytest.raises(Conflict):
            await k.services.heartbeat(k.tenant, run.id, "w2", 60)
        done = await k.services.complete_run(k.tenant, run.id, "w1", True, {"rows": 3}, None)
        assert done.status is RunStatus.succeeded and done.result == {"rows": 3}
        assert (await k.schedule(s.id)).last_run_status == "succeeded"


async def test_a_lease_that_runs_out_fails_with_heartbeat_timeout_and_retries(
        tmp_path: Path) -> None:
    t = ms("2026-11-22T09:00:00Z")
    async with kit(tmp_path, t) as k:
        s = await k.create(schedule_expression="1h", action_type="worker",
                           action_config={"queue": "q"}, retry_backoff_seconds=1)
        k.clock.set(t + HOUR)
        await k.engine.tick(t + HOUR)
        run = await k.services.claim_work(k.tenant, ["q"], "w1", 0, 30)
        assert run is not None
        k.clock.set(t + HOUR + 31_000)
        await k.engine.tick(k.clock.now_ms())
        chain = sorted(await k.runs(s.id), key=lambda r: r.attempt)
        assert [(r.status.value, r.error_code) for r in chain] == [
            ("failed", "heartbeat_timeout"), ("pending", None)]
        assert chain[1].queue == "q"
        assert chain[1].resolved_payload is not None  # the retry carries its payload too


# ---------------------------------------------------------------------- the loop itself
async def test_the_loop_sleeps_until_the_next_due_instant(tmp_path: Path) -> None:
    t = ms("2026-11-22T09:00:00Z")
    async with kit(tmp_path, t) as k:
        s = await k.create(schedule_expression="10s")
        await k.engine.start()
        await until(lambda: k.clock.sleeps)
        # it sleeps until due, not on a polling tick (a spurious wake may repeat the deadline)
        assert set(k.clock.sleeps) == {t + 10_000}
        k.clock.set(t + 10_000)
        await until(lambda: k.clock.sleeps[-1] == t + 20_000)
        assert set(k.clock.sleeps) == {t + 10_000, t + 20_000}
        await k.engine.stop(1)
        assert Counter(r.status.value for r in await k.runs(s.id)) == {"succeeded": 1}


async def test_sleeps_are_capped_and_a_new_earlier_schedule_wakes_the_loop(
        tmp_path: Path) -> None:
    t = ms("2026-11-22T09:00:00Z")
    async with kit(tmp_path, t, sleep_cap_seconds=60) as k:
        await k.create(schedule_expression="1h")
        await k.engine.start()
        await until(lambda: k.clock.sleeps)
        assert set(k.clock.sleeps) == {t + MIN}  # capped: a clock jump is noticed in a minute
        await k.create(schedule_expression="5s")
        await until(lambda: k.clock.sleeps[-1] == t + 5000)
        assert set(k.clock.sleeps) == {t + MIN, t + 5000}
        await k.engine.stop(1)


async def test_one_log_line_per_transition_and_never_a_secret(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from schedd.logs import JsonFormatter, TextFormatter
    t = ms("2026-11-22T09:00:00Z")
    async with kit(tmp_path, t) as k:
        caplog.set_level(logging.INFO, logger="schedd")
        s = await k.create(schedule_expression="1m", action_config={
            "url": "http://127.0.0.1:9/hook?token=SECRET-IN-URL", "secret": "whsec_c2VjcmV0",
            "headers": {"Authorization": "Bearer SECRET-HEADER"},
            "body": {"card": "SECRET-BODY"}}, headers=None)
        await k.run_until(t + MIN)
        lines = [r for r in caplog.records if r.name == "schedd.engine"]
        assert [r.getMessage() for r in lines] == ["run running", "run succeeded"]
        assert {getattr(r, "run_id", None) for r in lines} == {
            (await k.runs(s.id))[0].id}
        for fmt in (TextFormatter(), JsonFormatter()):
            text = "\n".join(fmt.format(r) for r in caplog.records)
            for secret in ("SECRET-IN-URL", "c2VjcmV0", "SECRET-HEADER", "SECRET-BODY"):
                assert secret not in text


# ---------------------------------------------------------------------- cycles and their failures
async def test_stop_during_a_claim_in_progress_ends_what_that_claim_started(
        tmp_path: Path) -> None:
    # stop() is called while a cycle's transaction is on the writer thread: the runs that
    # cycle claims are started after stop() was called, and must still be ended by it.
    t = ms("2026-11-22T09:00:00Z")
    async with kit(tmp_path, t) as k:
        s = await k.create(schedule_expression="1h", headers={"x-hang": "1"})
        k.clock.set(t + HOUR)
        tick = asyncio.create_task(k.engine.tick(t + HOUR))
        await asyncio.sleep(0)  # the tick's transaction is queued on the writer
        await k.engine.stop(grace_s=0.05)
        await tick
        assert not k.engine.inflight
        chain = sorted(await k.runs(s.id), key=lambda r: r.attempt)
        assert [(r.status.value, r.error_code) for r in chain] == [
            ("failed", "interrupted"), ("pending", None)]


async def test_a_failing_cycle_still_records_outcomes_once(tmp_path: Path) -> None:
    t = ms("2026-11-22T09:00:00Z")
    async with kit(tmp_path, t) as k:
        s = await k.create(schedule_expression="1h")
        k.clock.set(t + HOUR)
        await k.engine.tick(t + HOUR)
        await until(lambda: not k.engine.inflight and bool(k.engine._done))
        real = k.store.due_schedules

        def broken(*args: object, **kwargs: object) -> object:
            # a bug, not the storage (storage faults keep outcomes: tests/test_faults.py)
            raise sqlite3.InterfaceError("a claim that cannot be done")

        k.store.due_schedules = broken  # type: ignore[method-assign]
        with pytest.raises(sqlite3.InterfaceError):
            await k.engine.tick(t + HOUR + 1)
        [run] = await k.runs(s.id)
        assert run.status is RunStatus.succeeded  # recorded alone, in its own transaction
        assert not k.engine._done
        k.store.due_schedules = real  # type: ignore[method-assign]
        await k.engine.tick(t + HOUR + 2)
        assert [r.status for r in await k.runs(s.id)] == [RunStatus.succeeded]
        assert k.engine.metrics.runs.labels("succeeded", "webhook")._value.get() == 1


async def test_an_occurrence_claimed_before_is_skipped_not_fatal(tmp_path: Path) -> None:
    # A schedule whose next_run_at points at an occurrence that already has its run (a PUT
    # re-planned it in the same millisecond, or the clock stepped back): the unique index
    # refuses the second run. The claim skips it; the other schedules still fire.
    t = ms("2026-11-22T09:00:00Z")
    async with kit(tmp_path, t) as k:
        a = await k.create(schedule_expression="1h")
        b = await k.create(schedule_expression="1h")
        await k.run_until(t + HOUR)
        assert len(fired(await k.runs(a.id))) == 1
        await k.db.write(lambda c: c.execute(
            "UPDATE schedules SET next_run_ms = ? WHERE id = ?", (t + HOUR, a.id)))
        await k.run_until(t + 2 * HOUR)
        assert fired(await k.runs(a.id)) == [format_ms(t + HOUR), format_ms(t + 2 * HOUR)]
        assert fired(await k.runs(b.id)) == [format_ms(t + HOUR), format_ms(t + 2 * HOUR)]
        assert Counter(r.scheduled_for_ms for r in await k.runs(a.id))[t + HOUR] == 1
        assert len(k.runner.calls) == 4


async def test_cancel_other_in_the_same_cycle_does_not_start_the_run_it_cancels(
        tmp_path: Path) -> None:
    # A manual trigger is due in the same cycle as the schedule's next occurrence under
    # CANCEL_OTHER: the cycle starts the trigger's run, then the occurrence cancels it. The
    # cancelled run's action must not be performed.
    t = ms("2026-11-22T09:00:00Z")
    async with kit(tmp_path, t) as k:
        s = await k.create(schedule_expression="1h", overlap_policy="CANCEL_OTHER")
        k.clock.set(t + HOUR)
        manual = await k.services.trigger_schedule(k.tenant, s.id)
        await k.engine.tick(t + HOUR)
        await k.settle()
        runs = {r.id: r for r in await k.runs(s.id)}
        assert runs[manual.id].status is RunStatus.cancelled
        assert [c.run_id for c in k.runner.calls] == [
            r.id for r in runs.values() if r.id != manual.id]


async def test_an_occurrence_claimed_twice_gets_one_run_and_the_rest_of_the_claim_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A schedule put back onto an instant it already fired (as a clock stepping back
    can) is claimed again in the same claim as another schedule's new occurrence: the
    occurrence's unique index refuses the second run, which is skipped and not started,
    and the other schedule's run is inserted and started. On PostgreSQL this is the
    fallback from the claim's one COPY to inserts one by one."""
    t0 = parse_instant_ms("2026-11-22T10:00:00Z", UTC)
    async with kit(tmp_path, t0) as k:
        a = await k.create(name="a", schedule_expression="1m", action_type="noop",
                           action_config={})
        first = (await k.schedule(a.id)).next_run_ms
        assert first is not None
        k.clock.set(first)
        await k.engine.tick(first)
        await k.settle()
        assert [r.scheduled_for_ms for r in await k.runs(a.id)] == [first]
        b = await k.create(name="b", schedule_expression="1m", action_type="noop",
                           action_config={})
        # a goes back onto the instant it fired (its run exists); b is due too
        s = await k.schedule(a.id)
        s.next_run_ms = first
        await k.db.write(k.store.advance_schedules, [s])
        now = max(first, (await k.schedule(b.id)).next_run_ms or first) + 1
        k.clock.set(now)
        with caplog.at_level(logging.WARNING, logger="schedd"):
            await k.engine.tick(now)
        await k.settle()
        # a's instant `first` is not run twice; its next one (first + 1 min) is new
        assert sorted(r.scheduled_for_ms for r in await k.runs(a.id)) == [first,
                                                                           first + 60_000]
        [rb] = await k.runs(b.id)
        assert rb.status is RunStatus.succeeded
        assert any("already claimed" in r.getMessage() for r in caplog.records)
