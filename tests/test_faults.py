"""Faults at the engine level, on the fake clock: the database refusing writes (a real lock
held by another connection) and the wall clock jumping forward and back.

The daemon-level versions (a full tmpfs, an immutable file, a 10 s lock, a shifted clock)
are in tests/test_faults_daemon.py; what each fault does is in docs/operations.md."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_kit import Kit, kit, until

from schedd import db as dbmod
from schedd.engine import loop as engmod
from schedd.errors import StorageUnavailable
from schedd.models import Run, RunStatus, ScheduleStatus
from schedd.timing import format_ms, load_zone, parse_instant_ms

UTC = load_zone("UTC")
MIN = 60_000
HOUR = 60 * MIN


def ms(text: str) -> int:
    return parse_instant_ms(text, UTC)


def hhmm(t: int) -> str:
    return format_ms(t)[11:16]


@pytest.fixture
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # a lock held past the busy timeout is the fault; 50 ms instead of 5 s keeps it quick
    monkeypatch.setattr(dbmod, "BUSY_TIMEOUT_MS", 50)
    yield


class Locker:
    """Another connection to the same file holding the write lock (BEGIN IMMEDIATE)."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    def __enter__(self) -> Locker:
        self.conn.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


def errors_of(k: Kit, kind: str) -> float:
    value: float = k.engine.metrics.db_errors.labels(kind)._value.get()
    return value


# ---------------------------------------------------------------------- the database refuses
async def test_a_locked_database_fails_the_cycle_keeps_outcomes_and_catches_up(
        tmp_path: Path, short_busy_timeout: None) -> None:
    t = ms("2026-11-22T09:00:00Z")
    async with kit(tmp_path, t) as k:
        s = await k.create(schedule_expression="1h")
        k.clock.set(t + HOUR)
        await k.engine.tick(t + HOUR)
        await until(lambda: not k.engine.inflight and bool(k.engine._done))
        with Locker(k.settings.db):
            k.clock.set(t + 2 * HOUR)
            with pytest.raises(StorageUnavailable) as caught:
                await k.engine.tick(t + 2 * HOUR)
            assert caught.value.kind == "locked"
            assert k.db.fault is not None and k.db.fault.kind == "locked"
            assert errors_of(k, "locked") == 1
            # nothing of the cycle was kept: the 10:00 run is still running in the
            # database, 11:00 not claimed, and the 10:00 outcome waits in memory
            [run] = await k.runs(s.id)
            assert run.status is RunStatus.running
            assert [r.id for r, _, _ in k.engine._done] == [run.id]
            assert len(k.runner.calls) == 1
        k.clock.set(t + 2 * HOUR + 5_000)
        await k.engine.tick(t + 2 * HOUR + 5_000)
        await k.settle()
        assert k.db.fault is None
        runs = sorted(await k.runs(s.id), key=lambda r: r.scheduled_for_ms)
        assert [(hhmm(r.scheduled_for_ms), r.status.value, r.trigger_type.value)
                for r in runs] == [("10:00", "succeeded", "scheduled"),
                                   ("11:00", "succeeded", "catchup")]  # 5 s late
        # recorded with the instant it finished, not the instant it could be written
        assert runs[0].completed_ms == t + HOUR
        assert runs[1].started_ms == t + 2 * HOUR + 5_000
        assert len(k.runner.calls) == 2
        assert (await k.schedule(s.id)).run_count == 2


async def test_outcomes_of_a_failing_record_wait_for_the_next_cycle(
        tmp_path: Path, short_busy_timeout: None) -> None:
    # outcomes that keep arriving while the database refuses are all kept, in order, and
    # a failed attempt's retry is chained once the outcome can be written
    t = ms("2026-11-22T09:00:00Z")
    async with kit(tmp_path, t) as k:
        ok = await k.create(schedule_expression="1h")
        bad = await k.create(schedule_expression="1h", headers={"x-fail": "1"},
                             retry_backoff_seconds=60)
        k.clock.set(t + HOUR)
        await k.engine.tick(t + HOUR)
        await until(lambda: not k.engine.inflight and len(k.engine._done) == 2)
        with Locker(k.settings.db):
            for i in range(4):
                with pytest.raises(StorageUnavailable):
                    await k.engine.tick(t + HOUR + i)
            assert len(k.engine._done) == 2
            assert errors_of(k, "locked") == 4
        await k.engine.tick(t + HOUR + 10)
        await k.settle()
        assert not k.engine._done
        [r_ok] = await k.runs(ok.id)
        assert r_ok.status is RunStatus.succeeded
        chain = sorted(await k.runs(bad.id), key=lambda r: r.attempt)
        assert [(r.attempt, r.status.value) for r in chain] == [(1, "failed"), (2, "pending")]
        # 60 s ± 10 % from the instant the attempt finished
        assert t + HOUR + 54_000 <= chain[1].due_ms <= t + HOUR + 66_000


async def test_the_loop_logs_one_line_backs_off_and_recovers(
        tmp_path: Path, short_busy_timeout: None, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engmod, "FAULT_RETRY_CAP_S", 0.2)
    t = ms("2026-11-22T09:00:00Z")
    caplog.set_level(logging.INFO, logger="schedd")
    async with kit(tmp_path, t) as k:
        s = await k.create(schedule_expression="1m")
        await k.engine.start()
        await until(lambda: bool(k.clock.sleeps))  # asleep until 09:01
        with Locker(k.settings.db):
            k.clock.set(t + 3 * MIN)
            await until(lambda: errors_of(k, "locked") >= 6, timeout=10)
            assert k.engine.fault_since is not None
            ok, _ = k.engine.readiness()
            assert ok  # the loop itself is alive; /readyz adds db.fault (daemon test)
            assert not await k.runs(s.id)
        await until(lambda: k.engine.fault_since is None, timeout=10)
        await until(lambda: len(k.runner.calls) == 3)
        await k.engine.stop(1)
        lines = [r.getMessage() for r in caplog.records if r.name == "schedd.engine"]
        down = [m for m in lines if "cannot be written" in m]
        up = [m for m in lines if "can be written again" in m]
        assert len(down) == 1, lines
        assert "locked" in down[0] and "database is locked" in down[0]
        assert len(up) == 1 and "failed cycle(s)" in up[0]
        assert not [r for r in caplog.records if r.exc_info]  # no traceback flood
        runs = sorted(await k.runs(s.id), key=lambda r: r.scheduled_for_ms)
        assert [hhmm(r.scheduled_for_ms) for r in runs] == ["09:01", "09:02", "09:03"]


async def test_a_cycle_that_waited_for_the_lock_decides_at_the_instant_it_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The loop's cycle for 09:01 waits for a lock another process holds; meanwhile wall
    # time reaches 09:01:30. The run it claims once the lock is released started 30 s
    # late, as a catch-up: not "on time at 09:01".
    monkeypatch.setattr(dbmod, "BUSY_TIMEOUT_MS", 10_000)
    t = ms("2026-11-22T09:00:00Z")
    async with kit(tmp_path, t) as k:
        s = await k.create(schedule_expression="1m")
        await k.engine.start()
        await until(lambda: bool(k.clock.sleeps))
        with Locker(k.settings.db):
            ticks = k.engine.ticks
            k.clock.set(t + MIN)
            await until(lambda: k.engine.ticks > ticks)  # its cycle waits for the lock
            await asyncio.sleep(0.2)
            k.clock.set(t + MIN + 30_000)
        await until(lambda: len(k.runner.calls) == 1)
        await k.engine.stop(1)
        [run] = await k.runs(s.id)
        assert run.scheduled_for_ms == t + MIN
        assert run.started_ms == t + MIN + 30_000
        assert run.trigger_type.value == "catchup"


async def test_a_refused_api_write_makes_the_idle_loop_probe_until_it_can_write(
        tmp_path: Path, short_busy_timeout: None, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing is due, so no cycle of the loop would write: the fault an API write met is
    # still noticed, reported once and seen to end, by the loop's probe write.
    monkeypatch.setattr(engmod, "FAULT_RETRY_CAP_S", 0.2)
    t = ms("2026-11-22T09:00:00Z")
    caplog.set_level(logging.INFO, logger="schedd")
    async with kit(tmp_path, t) as k:
        await k.create(schedule_expression="1h")
        await k.engine.start()
        await until(lambda: bool(k.clock.sleeps))
        with Locker(k.settings.db):
            with pytest.raises(StorageUnavailable):
                await k.create(schedule_expression="1h")
            await until(lambda: errors_of(k, "locked") >= 3, timeout=10)
            assert k.engine.fault_since is not None and k.db.fault is not None
        await until(lambda: k.db.fault is None and k.engine.fault_since is None, timeout=10)
        await k.engine.stop(1)
        lines = [r.getMessage() for r in caplog.records if r.name == "schedd.engine"]
        assert len([m for m in lines if "cannot be written (locked" in m]) == 1
        assert len([m for m in lines if "can be written again" in m]) == 1


async def test_only_a_write_that_wrote_ends_a_fault(tmp_path: Path) -> None:
    t = ms("2026-11-22T09:00:00Z")
    async with kit(tmp_path, t) as k:
        k.db.fault = StorageUnavailable("full", "database or disk is full")
        await k.db.write(lambda c: c.execute("SELECT 1").fetchone())
        assert k.db.fault is not None  # an empty transaction proves nothing
        await k.create(schedule_expression="1h")
        assert k.db.fault is None
        k.db.fault = StorageUnavailable("full", "database or disk is full")
        await k.db.probe_write()
        assert k.db.fault is None


async def test_a_fault_that_comes_and_goes_is_logged_once_a_minute_at_most(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # a nearly full disk: some writes still fit, so the fault flaps; the log does not
    t = ms("2026-11-22T09:00:00Z")
    caplog.set_level(logging.INFO, logger="schedd")
    full = StorageUnavailable("full", "database or disk is full")
    async with kit(tmp_path, t) as k:
        e = k.engine

        def lines() -> list[str]:
            return [("down" if "cannot" in r.getMessage() else "up") for r in caplog.records
                    if "written" in r.getMessage()]

        e._storage_failed(full)
        e._storage_failed(full)
        e._storage_recovered()
        assert lines() == ["down", "up"]
        for _ in range(5):  # every 10 s for 50 s: silent
            k.clock.advance(10_000)
            e._storage_failed(full)
            e._storage_recovered()
        assert lines() == ["down", "up"]
        k.clock.advance(15_000)  # 65 s after the last line
        e._storage_failed(full)
        assert lines() == ["down", "up", "down"]
        e._storage_failed(StorageUnavailable("locked", "database is locked"))
        assert lines() == ["down", "up", "down", "down"]  # another kind: said at once
        k.clock.advance(int(engmod.FAULT_REMIND_S * 1000))
        e._storage_failed(StorageUnavailable("locked", "database is locked"))
        assert "still cannot be written" in caplog.records[-1].getMessage()
        e._storage_recovered()
        assert lines()[-1] == "up"


async def test_a_bug_in_the_cycle_is_not_a_storage_fault(tmp_path: Path) -> None:
    t = ms("2026-11-22T09:00:00Z")
    async with kit(tmp_path, t) as k:
        await k.create(schedule_expression="1h")

        def broken(*args: object, **kwargs: object) -> object:
            raise sqlite3.OperationalError("no such column: oops")

        k.store.due_schedules = broken  # type: ignore[method-assign]
        with pytest.raises(sqlite3.OperationalError):
            await k.engine.tick(t + HOUR)
        assert k.db.fault is None
        assert sum(errors_of(k, kind) for kind in StorageUnavailable.KINDS) == 0


@pytest.mark.parametrize(("message", "kind"), [
    ("database or disk is full", "full"),
    ("attempt to write a readonly database", "readonly"),
    ("database is locked", "locked"),
    ("disk I/O error", "io"),
    ("no such table: x", None),
])
def test_fault_kinds_by_message(message: str, kind: str | None) -> None:
    assert dbmod.fault_kind(sqlite3.OperationalError(message)) == kind
    assert dbmod.fault_kind(sqlite3.IntegrityError(message)) is None


@pytest.mark.parametrize(("exc", "transient"), [
    # the storage's, for now: the cycle fails and is tried again
    (sqlite3.OperationalError("database or disk is full"), True),
    (sqlite3.OperationalError("database is locked"), True),
    (sqlite3.OperationalError("database table is locked"), True),
    (sqlite3.OperationalError("disk I/O error"), True),
    (sqlite3.OperationalError("attempt to write a readonly database"), True),
    (MemoryError(), True),  # SQLITE_NOMEM, as sqlite3 raises it
    (StorageUnavailable("io", "lost"), True),
    # the statement's or the code's: it would fail again
    (sqlite3.OperationalError("no such column: x"), False),
    (sqlite3.IntegrityError("UNIQUE constraint failed: runs.id"), False),
    (sqlite3.DatabaseError("database disk image is malformed"), False),
    (RuntimeError("database is locked"), False),
    (ValueError("bad filter"), False),
])
def test_transient_errors_are_told_from_the_units_own(exc: BaseException,
                                                      transient: bool) -> None:
    assert dbmod.transient(exc) is transient


def test_transient_sqlite_errors_by_result_code() -> None:
    def coded(code: int) -> sqlite3.OperationalError:
        exc = sqlite3.OperationalError("whatever")
        exc.sqlite_errorcode = code  # type: ignore[attr-defined]
        return exc

    # BUSY, LOCKED, READONLY, IOERR (and an extended IOERR_WRITE), FULL, CANTOPEN
    assert [c for c in (5, 6, 8, 10, 778, 13, 14, 1, 11, 19, 26) if dbmod.transient(coded(c))] \
        == [5, 6, 8, 10, 778, 13, 14]


# ---------------------------------------------------------------------- the clock jumps
def occurrences(runs: list[Run]) -> Counter[int]:
    """How many attempt-1 runs each occurrence has (missed records excluded)."""
    return Counter(r.scheduled_for_ms for r in runs
                   if r.attempt == 1 and r.error_code != "missed")


@pytest.mark.usefixtures("database_url")  # on SQLite and on PostgreSQL
async def test_clock_jumps_forward_two_hours_then_back_one(tmp_path: Path) -> None:
    """09:00, every minute. Wall time jumps 09:05 -> 11:05 (+2 h): the 10-minute window
    runs 10:55..11:05 as catch-up and records 09:06..10:54 as one missed stretch; the 3 h
    window runs all 120; LATEST runs 11:05 only. Then 11:05 -> 10:05 (-1 h): nothing is
    claimed again, nothing fires until wall time passes 11:05 again, and every minute
    afterwards fires exactly once. A one-off at 10:30 fires once, never again."""
    t = ms("2026-11-22T09:00:00Z")
    async with kit(tmp_path, t) as k:
        win10 = await k.create(schedule_expression="1m", catchup_window_minutes=10)
        win180 = await k.create(schedule_expression="1m", catchup_window_minutes=180)
        latest = await k.create(schedule_expression="1m", catchup_window_minutes=180,
                                catchup_policy="LATEST")
        once = await k.create(schedule_type="once", schedule_expression="2026-11-22T10:30:00Z",
                              catchup_window_minutes=60)
        await k.run_until(t + 5 * MIN)
        for s in (win10, win180, latest):
            assert [hhmm(o) for o in sorted(occurrences(await k.runs(s.id)))] == [
                "09:01", "09:02", "09:03", "09:04", "09:05"]

        # forward: 09:05 -> 11:05
        jump = t + 2 * HOUR + 5 * MIN
        k.clock.set(jump)
        while await k.engine.tick(jump):
            await k.settle()
        await k.settle()
        runs10 = await k.runs(win10.id)
        [missed] = [r for r in runs10 if r.error_code == "missed"]
        assert missed.result == {"missed_count": 109, "first": "2026-11-22T09:06:00.000Z",
                                 "last": "2026-11-22T10:54:00.000Z"}
        caught10 = sorted(o for o in occurrences(runs10) if o > t + 5 * MIN)
        assert [hhmm(o) for o in caught10] == [f"10:{m}" for m in range(55, 60)] + [
            f"11:0{m}" for m in range(6)]
        assert len(occurrences(await k.runs(win180.id))) == 5 + 120
        runs_l = await k.runs(latest.id)
        assert sorted(hhmm(o) for o in occurrences(runs_l))[-1] == "11:05"
        assert len(occurrences(runs_l)) == 6
        [skip_l] = [r for r in runs_l if r.error_code == "missed"]
        assert skip_l.result is not None and skip_l.result["missed_count"] == 119
        [o_run] = await k.runs(once.id)
        assert o_run.trigger_type.value == "catchup" and o_run.status is RunStatus.succeeded
        assert (await k.schedule(once.id)).status is ScheduleStatus.completed
        assert all(r.status in (RunStatus.succeeded, RunStatus.skipped)
                   for r in await k.runs())
        before_back = len(await k.runs())
        calls_before = len(k.runner.calls)

        # back: 11:05 -> 10:05; the loop ticks as wall time creeps forward again
        back = jump - HOUR
        for minute in range(0, 60):
            now = back + minute * MIN + 30_000
            k.clock.set(now)
            assert not await k.engine.tick(now)
            await k.settle()
        assert len(await k.runs()) == before_back  # 10:05..11:04:30: nothing at all
        assert len(k.runner.calls) == calls_before
        await k.run_until(jump + 5 * MIN)
        for s in (win10, win180, latest):
            c = occurrences(await k.runs(s.id))
            assert set(c.values()) == {1}, "an occurrence ran twice"
            assert [hhmm(o) for o in sorted(c)][-5:] == [f"11:{m:02d}" for m in range(6, 11)]
        assert len(await k.runs(once.id)) == 1
        # nothing lost: every minute 09:01..11:10 either ran or is inside a missed record
        for s in (win10, win180, latest):
            runs = await k.runs(s.id)
            covered = set(occurrences(runs))
            for r in runs:
                if r.error_code == "missed" and isinstance(r.result, dict):
                    lo, hi = (parse_instant_ms(r.result["first"], UTC),
                              parse_instant_ms(r.result["last"], UTC))
                    covered |= {m for m in range(lo, hi + 1, MIN)}
            assert covered == {t + i * MIN for i in range(1, 131)}, s.name


@pytest.mark.usefixtures("database_url")  # on SQLite and on PostgreSQL
async def test_clock_back_while_a_retry_waits_delays_it_by_the_jump(tmp_path: Path) -> None:
    # A retry due 10:01 (60 s backoff from a 10:00 failure) when the clock steps back an
    # hour waits for wall time 10:01 again: due instants are wall instants. It runs once.
    t = ms("2026-11-22T09:00:00Z")
    async with kit(tmp_path, t, retry_backoff_cap_seconds=60) as k:
        s = await k.create(schedule_expression="1h", headers={"x-fail": "1"},
                           retry_backoff_seconds=60)
        k.clock.set(t + HOUR)
        await k.engine.tick(t + HOUR)
        await k.settle()
        [_, retry] = sorted(await k.runs(s.id), key=lambda r: r.attempt)
        assert retry.status is RunStatus.pending
        k.clock.set(t + 5 * MIN)  # 10:00 -> 09:05
        for step in range(56):
            now = t + 5 * MIN + step * MIN
            k.clock.set(now)
            await k.engine.tick(now)
            await k.settle()
        assert (await k.runs(s.id, attempt=2))[0].status is RunStatus.pending
        await k.run_until(t + HOUR + 5 * MIN)
        chain = sorted(await k.runs(s.id), key=lambda r: r.attempt)
        assert [(r.attempt, r.status.value) for r in chain] == [(1, "failed"),
                                                                (2, "succeeded")]
        assert chain[1].started_ms is not None and chain[1].started_ms >= retry.due_ms


@pytest.mark.usefixtures("database_url")  # on SQLite and on PostgreSQL
async def test_no_sleep_outlasts_the_cap_after_a_jump_back(tmp_path: Path) -> None:
    # The loop's sleep toward a due instant that is now an hour away is capped at
    # sleep_cap_seconds, so a later jump forward (or the wall catching up) is noticed.
    t = ms("2026-11-22T09:00:00Z")
    async with kit(tmp_path, t, sleep_cap_seconds=5) as k:
        await k.create(schedule_expression="1h")
        k.clock.set(t - HOUR)
        await k.engine.start()
        await until(lambda: bool(k.clock.sleeps))
        assert k.clock.sleeps[-1] == t - HOUR + 5_000
        await k.engine.stop(1)
    await asyncio.sleep(0)
