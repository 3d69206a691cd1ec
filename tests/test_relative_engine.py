"""Relative schedules on a fake clock (SPEC §3.7): one occurrence per (schedule, record),
planned on every record write and schedule change, claimed through the occurrences index.

Each test states its timeline and asserts the exact instants: none missing, none doubled."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import db_backend
import pytest
from engine_kit import Kit, kit

from schedd.engine import claiming
from schedd.errors import StorageUnavailable
from schedd.models import EntityDefinition, Run, RunStatus, ScheduleStatus
from schedd.timing import format_ms, load_zone, parse_instant_ms

# on SQLite and on PostgreSQL (tests/db_backend.py)
pytestmark = pytest.mark.usefixtures("database_url")

UTC = load_zone("UTC")
MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR


def ms(text: str) -> int:
    return parse_instant_ms(text, UTC)


def fired(runs: list[Run]) -> list[tuple[str, str]]:
    """(record key, occurrence) of every first attempt that ran, sorted."""
    return sorted((r.record_key or "", format_ms(r.scheduled_for_ms)) for r in runs
                  if r.attempt == 1 and r.status is not RunStatus.skipped)


def assert_no_double(runs: list[Run]) -> None:
    c = Counter((r.record_key, r.scheduled_for_ms, r.attempt) for r in runs if not r.manual)
    assert [k for k, n in c.items() if n > 1] == []


async def definition(k: Kit, **fields: str) -> EntityDefinition:
    return await k.services.entities.create_definition(
        k.tenant, "customers", None, fields or {"renewal": "date", "plan": "string"})


async def put(k: Kit, d: EntityDefinition, key: str, **data: Any) -> None:
    await k.services.entities.put_record(k.tenant, d.id, key, data)


async def relative(k: Kit, d: EntityDefinition, **fields: Any) -> Any:
    base: dict[str, Any] = {"schedule_type": "relative", "schedule_expression": "09:00",
                            "relative_entity_definition_id": d.id,
                            "relative_field_name": "renewal", "relative_offset_days": 0}
    base.update(fields)
    return await k.create(**base)


async def test_a_renewal_reminder_fires_per_record_at_its_date(tmp_path: Path) -> None:
    async with kit(tmp_path, ms("2027-01-01T00:00:00Z")) as k:
        d = await definition(k)
        await put(k, d, "c1", renewal="2027-01-10", plan="pro")
        await put(k, d, "c2", renewal="2027-01-05", plan="free")
        s = await relative(k, d, relative_offset_days=-3)
        assert (await k.schedule(s.id)).next_run_ms == ms("2027-01-02T09:00:00Z")
        await k.run_until(ms("2027-03-01T00:00:00Z"))
        runs = await k.runs(s.id)
        assert fired(runs) == [("c1", "2027-01-07T09:00:00.000Z"),
                               ("c2", "2027-01-02T09:00:00.000Z")]
        assert all(r.status is RunStatus.succeeded for r in runs)
        assert_no_double(runs)
        got = await k.schedule(s.id)
        assert got.run_count == 2
        assert got.next_run_ms is None
        assert got.status is ScheduleStatus.active


# ---------------------------------------------------------------------- daylight saving
@pytest.mark.parametrize(
    ("expr", "renewal", "offset", "expected"),
    [
        # America/New_York springs forward 2027-03-14 02:00 EST -> 03:00 EDT: 02:30 does not
        # exist that day and fires once, right after the jump (03:00 EDT = 07:00Z).
        ("02:30", "2027-03-13", 0, "2027-03-13T07:30:00.000Z"),
        ("02:30", "2027-03-14", 0, "2027-03-14T07:00:00.000Z"),
        ("02:30", "2027-03-15", 0, "2027-03-15T06:30:00.000Z"),
        ("02:30", "2027-04-13", -30, "2027-03-14T07:00:00.000Z"),
        ("02:30", "2027-03-04", 10, "2027-03-14T07:00:00.000Z"),
        # ... and falls back 2027-11-07 02:00 EDT -> 01:00 EST: 01:30 happens twice and fires
        # once, at the first (EDT, 05:30Z).
        ("01:30", "2027-11-06", 0, "2027-11-06T05:30:00.000Z"),
        ("01:30", "2027-11-07", 0, "2027-11-07T05:30:00.000Z"),
        ("01:30", "2027-11-08", 0, "2027-11-08T06:30:00.000Z"),
        ("01:30", "2027-12-07", -30, "2027-11-07T05:30:00.000Z"),
    ],
)
async def test_time_of_day_across_new_york_dst(tmp_path: Path, expr: str, renewal: str,
                                               offset: int, expected: str) -> None:
    async with kit(tmp_path, ms("2027-01-01T00:00:00Z")) as k:
        d = await definition(k)
        await put(k, d, "c", renewal=renewal)
        s = await relative(k, d, schedule_expression=expr, timezone="America/New_York",
                           relative_offset_days=offset)
        assert format_ms((await k.schedule(s.id)).next_run_ms or 0) == expected
        await k.run_until(ms("2028-01-01T00:00:00Z"))
        runs = await k.runs(s.id)
        assert fired(runs) == [("c", expected)]
        assert len(runs) == 1


async def test_dates_across_both_transitions_over_a_year(tmp_path: Path) -> None:
    # One record a day around both New York transitions of 2027, 02:30 and 01:30 daily
    # reminders: every record fires exactly once, the gap day right after the jump and the
    # repeated day at the first 01:30.
    async with kit(tmp_path, ms("2027-01-01T00:00:00Z")) as k:
        d = await definition(k)
        days = [f"2027-03-{n:02d}" for n in range(12, 17)] + [
            f"2027-11-{n:02d}" for n in range(5, 10)]
        for day in days:
            await put(k, d, day, renewal=day)
        spring = await relative(k, d, schedule_expression="02:30", timezone="America/New_York")
        autumn = await relative(k, d, schedule_expression="01:30", timezone="America/New_York")
        await k.run_until(ms("2028-01-01T00:00:00Z"))
        assert fired(await k.runs(spring.id)) == [
            ("2027-03-12", "2027-03-12T07:30:00.000Z"), ("2027-03-13", "2027-03-13T07:30:00.000Z"),
            ("2027-03-14", "2027-03-14T07:00:00.000Z"), ("2027-03-15", "2027-03-15T06:30:00.000Z"),
            ("2027-03-16", "2027-03-16T06:30:00.000Z"), ("2027-11-05", "2027-11-05T06:30:00.000Z"),
            ("2027-11-06", "2027-11-06T06:30:00.000Z"), ("2027-11-07", "2027-11-07T07:30:00.000Z"),
            ("2027-11-08", "2027-11-08T07:30:00.000Z"), ("2027-11-09", "2027-11-09T07:30:00.000Z"),
        ]
        assert fired(await k.runs(autumn.id)) == [
            ("2027-03-12", "2027-03-12T06:30:00.000Z"), ("2027-03-13", "2027-03-13T06:30:00.000Z"),
            # 01:30 on the 14th is before the 02:00 jump: still EST
            ("2027-03-14", "2027-03-14T06:30:00.000Z"), ("2027-03-15", "2027-03-15T05:30:00.000Z"),
            ("2027-03-16", "2027-03-16T05:30:00.000Z"), ("2027-11-05", "2027-11-05T05:30:00.000Z"),
            ("2027-11-06", "2027-11-06T05:30:00.000Z"), ("2027-11-07", "2027-11-07T05:30:00.000Z"),
            ("2027-11-08", "2027-11-08T06:30:00.000Z"), ("2027-11-09", "2027-11-09T06:30:00.000Z"),
        ]
        for s in (spring, autumn):
            runs = await k.runs(s.id)
            assert len(runs) == 10
            assert_no_double(runs)


async def test_a_datetime_field_is_converted_to_the_schedules_zone_first(tmp_path: Path) -> None:
    # 2027-03-14T04:00Z is 2027-03-13 23:00 in New York (EST): its local date is the 13th;
    # one day later at 02:30 is the gap of the 14th, so 03:00 EDT (07:00Z).
    async with kit(tmp_path, ms("2027-01-01T00:00:00Z")) as k:
        d = await definition(k, due="datetime")
        await put(k, d, "a", due="2027-03-14T04:00:00Z")
        await put(k, d, "b", due="2027-03-14T09:00:00+05:00")  # 04:00Z too
        await put(k, d, "c", due="2027-03-14T12:00:00Z")  # 08:00 EDT, the 14th
        s = await relative(k, d, schedule_expression="02:30", timezone="America/New_York",
                           relative_field_name="due", relative_offset_days=1)
        await k.run_until(ms("2027-04-01T00:00:00Z"))
        assert fired(await k.runs(s.id)) == [
            ("a", "2027-03-14T07:00:00.000Z"), ("b", "2027-03-14T07:00:00.000Z"),
            ("c", "2027-03-15T06:30:00.000Z")]


# ---------------------------------------------------------------------- re-planning on writes
async def test_an_upsert_moves_a_pending_occurrence(tmp_path: Path) -> None:
    async with kit(tmp_path, ms("2027-01-01T00:00:00Z")) as k:
        d = await definition(k)
        await put(k, d, "c", renewal="2027-02-01")
        s = await relative(k, d)
        await k.run_until(ms("2027-01-15T00:00:00Z"))
        await put(k, d, "c", renewal="2027-01-20")  # earlier
        assert (await k.schedule(s.id)).next_run_ms == ms("2027-01-20T09:00:00Z")
        await k.run_until(ms("2027-01-18T00:00:00Z"))
        await put(k, d, "c", renewal="2027-03-01")  # later, before the 20th fired
        await k.run_until(ms("2027-06-01T00:00:00Z"))
        runs = await k.runs(s.id)
        assert fired(runs) == [("c", "2027-03-01T09:00:00.000Z")]
        assert len(runs) == 1


async def test_a_yearly_renewal_fires_again_and_a_same_date_upsert_does_not(
        tmp_path: Path) -> None:
    async with kit(tmp_path, ms("2027-01-01T00:00:00Z")) as k:
        d = await definition(k)
        await put(k, d, "c", renewal="2027-02-01")
        s = await relative(k, d, relative_offset_days=-7)
        await k.run_until(ms("2027-01-25T09:05:00Z"))
        assert fired(await k.runs(s.id)) == [("c", "2027-01-25T09:00:00.000Z")]
        # the same date written again, inside the catch-up window: not planned again
        await put(k, d, "c", renewal="2027-02-01", plan="pro")
        assert (await k.schedule(s.id)).next_run_ms is None
        await k.run_until(ms("2027-03-01T00:00:00Z"))
        # renewed: the next year's date is a new occurrence
        await put(k, d, "c", renewal="2028-02-01")
        assert (await k.schedule(s.id)).next_run_ms == ms("2028-01-25T09:00:00Z")
        await k.run_until(ms("2028-06-01T00:00:00Z"))
        runs = await k.runs(s.id)
        assert fired(runs) == [("c", "2027-01-25T09:00:00.000Z"),
                               ("c", "2028-01-25T09:00:00.000Z")]
        assert len(runs) == 2
        assert_no_double(runs)


async def test_a_delete_drops_the_pending_occurrence(tmp_path: Path) -> None:
    async with kit(tmp_path, ms("2027-01-01T00:00:00Z")) as k:
        d = await definition(k)
        await put(k, d, "a", renewal="2027-01-10")
        await put(k, d, "b", renewal="2027-01-20")
        s = await relative(k, d)
        await k.services.entities.delete_record(k.tenant, d.id, "a")
        assert (await k.schedule(s.id)).next_run_ms == ms("2027-01-20T09:00:00Z")
        n, m = await k.services.entities.batch(k.tenant, d.id, [], ["b", "zz"])
        assert (n, m) == (0, 1)
        assert (await k.schedule(s.id)).next_run_ms is None
        await k.run_until(ms("2027-03-01T00:00:00Z"))
        assert await k.runs(s.id) == []
        assert (await k.services.entities.get_definition(k.tenant, d.id)).record_count == 0


async def test_a_written_occurrence_already_past_the_window_is_not_planned(
        tmp_path: Path) -> None:
    async with kit(tmp_path, ms("2027-01-10T09:05:00Z")) as k:
        d = await definition(k)
        await put(k, d, "old", renewal="2027-01-09")   # a day ago: not planned, not missed
        await put(k, d, "recent", renewal="2027-01-10")  # 5 min ago, inside the 10 min window
        s = await relative(k, d)
        await k.run_until(ms("2027-02-01T00:00:00Z"))
        runs = await k.runs(s.id)
        assert [(r.record_key, r.trigger_type.value, r.status.value) for r in runs] == [
            ("recent", "catchup", "succeeded")]
        assert (await k.schedule(s.id)).missed_count == 0


async def test_downtime_longer_than_the_window_records_missed_per_record(
        tmp_path: Path) -> None:
    async with kit(tmp_path, ms("2027-01-01T00:00:00Z")) as k:
        d = await definition(k)
        for key, day in (("a", "2027-01-05"), ("b", "2027-01-05"), ("c", "2027-01-06")):
            await put(k, d, key, renewal=day)
        s = await relative(k, d, catchup_window_minutes=60)
        # the daemon is down from before Jan 5 09:00 until Jan 6 09:30
        k.clock.set(ms("2027-01-06T09:30:00Z"))
        await k.run_until(ms("2027-02-01T00:00:00Z"))
        runs = sorted(await k.runs(s.id), key=lambda r: r.record_key or "")
        assert [(r.record_key, r.status.value, r.error_code, r.trigger_type.value)
                for r in runs] == [("a", "skipped", "missed", "catchup"),
                                   ("b", "skipped", "missed", "catchup"),
                                   ("c", "succeeded", None, "catchup")]
        assert runs[0].result == {"missed_count": 1, "first": "2027-01-05T09:00:00.000Z",
                                  "last": "2027-01-05T09:00:00.000Z"}
        assert (await k.schedule(s.id)).missed_count == 2


async def test_filters_and_their_changes(tmp_path: Path) -> None:
    async with kit(tmp_path, ms("2027-01-01T00:00:00Z")) as k:
        d = await definition(k, renewal="date", plan="string", seats="number")
        await put(k, d, "a", renewal="2027-02-01", plan="pro", seats=10)
        await put(k, d, "b", renewal="2027-02-02", plan="free", seats=1)
        await put(k, d, "c", renewal="2027-02-03", plan="pro", seats=2)
        await put(k, d, "d", renewal="2027-02-04", seats=50)
        s = await relative(k, d, relative_filter={"plan": "pro", "seats": {"gte": 5}})
        occ = await k.services.occurrences(k.tenant, s.id, 100)
        assert [o.record_key for o in occ] == ["a"]
        # a record that starts matching gains an occurrence; one that stops loses it
        await put(k, d, "c", renewal="2027-02-03", plan="pro", seats=20)
        await put(k, d, "a", renewal="2027-02-01", plan="free", seats=10)
        occ = await k.services.occurrences(k.tenant, s.id, 100)
        assert [o.record_key for o in occ] == ["c"]
        # the schedule's filter changes: every record is re-planned
        await k.services.update_schedule(k.tenant, s.id, {
            "relative_filter": {"plan": {"in": ["free"]}, "seats": {"lt": 100}}})
        occ = await k.services.occurrences(k.tenant, s.id, 100)
        assert [o.record_key for o in occ] == ["a", "b"]
        await k.services.update_schedule(k.tenant, s.id, {
            "relative_filter": {"plan": {"exists": False}}})
        occ = await k.services.occurrences(k.tenant, s.id, 100)
        assert [o.record_key for o in occ] == ["d"]
        await k.run_until(ms("2027-03-01T00:00:00Z"))
        assert fired(await k.runs(s.id)) == [("d", "2027-02-04T09:00:00.000Z")]


async def test_schedule_edits_re_plan_every_record(tmp_path: Path) -> None:
    async with kit(tmp_path, ms("2027-01-01T00:00:00Z")) as k:
        d = await definition(k, renewal="date", trial_end="date")
        await put(k, d, "a", renewal="2027-03-01", trial_end="2027-02-01")
        await put(k, d, "b", renewal="2027-01-20")
        s = await relative(k, d)
        await k.run_until(ms("2027-01-21T00:00:00Z"))
        assert fired(await k.runs(s.id)) == [("b", "2027-01-20T09:00:00.000Z")]
        await k.services.update_schedule(k.tenant, s.id, {"schedule_expression": "17:45"})
        assert (await k.schedule(s.id)).next_run_ms == ms("2027-03-01T17:45:00Z")
        await k.services.update_schedule(k.tenant, s.id, {"relative_offset_days": -14,
                                                          "timezone": "Europe/Berlin"})
        assert (await k.schedule(s.id)).next_run_ms == ms("2027-02-15T16:45:00Z")
        await k.services.update_schedule(k.tenant, s.id, {"relative_field_name": "trial_end",
                                                          "relative_offset_days": 0})
        # b has no trial_end; a's is Feb 1
        occ = await k.services.occurrences(k.tenant, s.id, 10)
        assert [(o.record_key, format_ms(o.scheduled_for_ms)) for o in occ] == [
            ("a", "2027-02-01T16:45:00.000Z")]
        await k.run_until(ms("2027-12-31T00:00:00Z"))
        runs = await k.runs(s.id)
        assert fired(runs) == [("a", "2027-02-01T16:45:00.000Z"),
                               ("b", "2027-01-20T09:00:00.000Z")]
        assert_no_double(runs)


async def test_start_and_end_bound_the_occurrences(tmp_path: Path) -> None:
    async with kit(tmp_path, ms("2027-01-01T00:00:00Z")) as k:
        d = await definition(k)
        for day in ("2027-01-05", "2027-01-10", "2027-01-20"):
            await put(k, d, day, renewal=day)
        s = await relative(k, d, start_at="2027-01-06T00:00:00Z", end_at="2027-01-15T00:00:00Z")
        await k.run_until(ms("2027-02-01T00:00:00Z"))
        assert fired(await k.runs(s.id)) == [("2027-01-10", "2027-01-10T09:00:00.000Z")]
        assert (await k.schedule(s.id)).status is ScheduleStatus.completed


async def test_pause_then_resume_misses_what_passed_while_paused(tmp_path: Path) -> None:
    async with kit(tmp_path, ms("2027-01-01T00:00:00Z")) as k:
        d = await definition(k)
        await put(k, d, "a", renewal="2027-01-05")
        await put(k, d, "b", renewal="2027-01-20")
        s = await relative(k, d)
        await k.services.pause_schedule(k.tenant, s.id)
        await k.run_until(ms("2027-01-10T00:00:00Z"))
        assert await k.runs(s.id) == []
        await k.services.resume_schedule(k.tenant, s.id)
        await k.run_until(ms("2027-02-01T00:00:00Z"))
        runs = sorted(await k.runs(s.id), key=lambda r: r.record_key or "")
        assert [(r.record_key, r.status.value, r.error_code) for r in runs] == [
            ("a", "skipped", "missed"), ("b", "succeeded", None)]
        assert (await k.schedule(s.id)).missed_count == 1


async def test_overlap_is_per_record(tmp_path: Path) -> None:
    async with kit(tmp_path, ms("2027-01-01T00:00:00Z")) as k:
        d = await definition(k)
        await put(k, d, "a", renewal="2027-01-05")
        await put(k, d, "b", renewal="2027-01-05")
        s = await relative(k, d, overlap_policy="SKIP", headers={"x-hang": "1"})
        await k.run_until(ms("2027-01-05T09:00:00Z"))
        runs = await k.runs(s.id)
        # two records at one instant: both run, neither overlaps the other
        assert sorted((r.record_key, r.status.value) for r in runs) == [
            ("a", "running"), ("b", "running")]
        # a's next date comes while its first run still hangs: skipped for a only
        await put(k, d, "a", renewal="2027-01-06")
        await k.run_until(ms("2027-01-07T00:00:00Z"))
        runs = await k.runs(s.id, record_key="a")
        assert sorted((format_ms(r.scheduled_for_ms), r.status.value, r.error_code)
                      for r in runs) == [("2027-01-05T09:00:00.000Z", "running", None),
                                         ("2027-01-06T09:00:00.000Z", "skipped", "overlap")]


async def test_a_schedule_whose_planning_raises_cancels_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CANCEL_OTHER replaces a record's running run only when the new run is made: if the
    schedule's planning raises after it chose to replace (here: marking the occurrences
    fired fails once), the broken schedule is pushed on and its record's run keeps running;
    it is replaced once the planning succeeds."""
    async with kit(tmp_path, ms("2027-01-01T00:00:00Z")) as k:
        d = await definition(k)
        await put(k, d, "a", renewal="2027-01-05")
        s = await relative(k, d, overlap_policy="CANCEL_OTHER", headers={"x-hang": "1"},
                           catchup_window_minutes=120)
        await k.run_until(ms("2027-01-05T09:00:00Z"))
        (first,) = await k.runs(s.id)
        assert first.status is RunStatus.running
        await put(k, d, "a", renewal="2027-01-06")  # its next occurrence, while it hangs
        fire = k.store.fire_occurrences
        failures: list[int] = []

        def fail_once(c: Any, sid: str, due: Any) -> None:
            if sid == s.id and not failures:
                failures.append(1)
                raise RuntimeError("injected")
            fire(c, sid, due)

        monkeypatch.setattr(k.store, "fire_occurrences", fail_once)
        t = ms("2027-01-06T09:00:00Z")
        k.clock.set(t)
        await k.engine.tick(t)
        await k.settle()
        assert failures == [1]
        got = await k.schedule(s.id)
        assert got.last_error and "cannot plan" in got.last_error
        runs = await k.runs(s.id)
        assert [(r.id, r.status, r.cancel_reason) for r in runs] == [
            (first.id, RunStatus.running, None)]
        # the next try plans it: the occurrence runs (caught up), the hanging run replaced
        await k.run_until(t + 2 * HOUR)
        runs = {r.scheduled_for_ms: r for r in await k.runs(s.id)}
        assert set(runs) == {first.scheduled_for_ms, t}
        assert runs[first.scheduled_for_ms].status is RunStatus.cancelled
        assert runs[t].status is RunStatus.running and runs[t].trigger_type.value == "catchup"


def fail_earliest_once(monkeypatch: pytest.MonkeyPatch, k: Any, sid: str,
                       fault: Callable[[Any], None]) -> list[str]:
    """The store's earliest_occurrence calls fault(connection) the first time it is asked
    for schedule `sid` (inside the cycle's transaction), then works as before; the list
    of the schedules it failed for."""
    earliest = k.store.earliest_occurrence
    failures: list[str] = []

    def earliest_fails(c: Any, schedule_id: str) -> int | None:
        if schedule_id == sid and not failures:
            failures.append(schedule_id)
            fault(c)
        return earliest(c, schedule_id)

    monkeypatch.setattr(k.store, "earliest_occurrence", earliest_fails)
    return failures


@pytest.mark.parametrize("fault", ["settle_relative", "earliest_occurrence", "sql_error"])
async def test_a_schedule_whose_planning_raises_after_firing_loses_no_occurrence(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    """The occurrences a relative schedule marked fired are unmarked when its planning
    raises afterwards (its own savepoint is rolled back): they stay pending, the schedule is
    pushed on, and they fire once each when it is planned again. The other schedules of
    the same cycle fire as if nothing happened. `sql_error`: a statement fails inside the
    database (on PostgreSQL that aborts the transaction until the savepoint is rolled
    back; without it the whole cycle would fail)."""
    async with kit(tmp_path, ms("2027-01-01T00:00:00Z")) as k:
        d = await definition(k)
        await put(k, d, "a", renewal="2027-01-05")
        await put(k, d, "b", renewal="2027-01-05")
        bad = await relative(k, d, catchup_window_minutes=120)
        good = await relative(k, d, catchup_window_minutes=120)
        fixed = await k.create(schedule_type="cron", schedule_expression="0 9 * * *")
        t = ms("2027-01-05T09:00:00Z")
        await k.run_until(t - 1)
        failures: list[str] = []

        def should_fail(sid: str) -> bool:
            if sid == bad.id and not failures:
                failures.append(sid)
                return True
            return False

        if fault == "settle_relative":
            settle = claiming.settle_relative

            def settle_fails(s: Any, now: int, earliest: int | None) -> None:
                if should_fail(s.id):
                    raise RuntimeError("injected")
                settle(s, now, earliest)

            monkeypatch.setattr(claiming, "settle_relative", settle_fails)
        else:
            earliest = k.store.earliest_occurrence

            def earliest_fails(c: Any, sid: str) -> int | None:
                if should_fail(sid):
                    if fault == "sql_error":
                        c.execute("SELECT no_such_column FROM occurrences")
                    raise RuntimeError("injected")
                return earliest(c, sid)

            monkeypatch.setattr(k.store, "earliest_occurrence", earliest_fails)
        k.clock.set(t)
        while await k.engine.tick(t):
            await k.settle()
        await k.settle()
        assert failures == [bad.id]
        # the broken one: no run, its occurrences still pending, retried an hour later
        assert await k.runs(bad.id) == []
        occ = await k.services.occurrences(k.tenant, bad.id, 10)
        assert sorted((o.record_key, o.scheduled_for_ms) for o in occ) == [("a", t), ("b", t)]
        got = await k.schedule(bad.id)
        assert got.last_error and "cannot plan" in got.last_error
        assert got.next_run_ms == t + HOUR
        assert got.status is ScheduleStatus.active and got.missed_count == 0
        # the others of the same cycle fired at t
        assert fired(await k.runs(good.id)) == [("a", "2027-01-05T09:00:00.000Z"),
                                                ("b", "2027-01-05T09:00:00.000Z")]
        assert len(await k.runs(fixed.id, scheduled_for_ms=t)) == 1
        # once the fault is gone, the next try fires each occurrence once (caught up)
        await k.run_until(t + 2 * HOUR)
        runs = await k.runs(bad.id)
        assert fired(runs) == [("a", "2027-01-05T09:00:00.000Z"),
                               ("b", "2027-01-05T09:00:00.000Z")]
        assert_no_double(runs)
        assert all(r.status is RunStatus.succeeded and r.started_ms == t + HOUR
                   for r in runs)
        got = await k.schedule(bad.id)
        assert got.last_error is None
        assert await k.services.occurrences(k.tenant, bad.id, 10) == []
        assert fired(await k.runs(good.id)) == [("a", "2027-01-05T09:00:00.000Z"),
                                                ("b", "2027-01-05T09:00:00.000Z")]


async def test_a_schedule_whose_planning_raises_counts_no_missed_occurrence(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """What planning counted on the schedule before raising (missed occurrences) is not
    kept with the schedule when its runs are dropped: each missed occurrence is recorded,
    counted and logged once, by the planning that succeeds."""
    async with kit(tmp_path, ms("2027-01-01T00:00:00Z")) as k:
        d = await definition(k)
        await put(k, d, "a", renewal="2027-01-05")
        await put(k, d, "b", renewal="2027-01-05")
        s = await relative(k, d, catchup_window_minutes=10)
        t = ms("2027-01-05T09:00:00Z")
        await k.run_until(t - 1)
        settle = claiming.settle_relative
        failures: list[int] = []

        def settle_fails(sched: Any, now: int, earliest: int | None) -> None:
            if sched.id == s.id and len(failures) < 2:
                failures.append(now)
                raise RuntimeError("injected")
            settle(sched, now, earliest)

        monkeypatch.setattr(claiming, "settle_relative", settle_fails)
        # fails at t, then again an hour later, when both occurrences are past the window
        await k.run_until(t + HOUR)
        assert failures == [t, t + HOUR]
        got = await k.schedule(s.id)
        assert got.missed_count == 0 and got.status is ScheduleStatus.active
        assert await k.runs(s.id) == []
        await k.run_until(t + 3 * HOUR)
        runs = await k.runs(s.id)
        assert sorted((r.record_key, r.scheduled_for_ms, r.status, r.error_code)
                      for r in runs) == [("a", t, RunStatus.skipped, "missed"),
                                         ("b", t, RunStatus.skipped, "missed")]
        got = await k.schedule(s.id)
        assert got.missed_count == 2 and got.last_error is None
        said = [r.getMessage() for r in caplog.records]
        assert [m for m in said if "record occurrence(s) older" in m] == [
            f"schedule {s.id} missed 2 record occurrence(s) older than the catch-up window"]
        assert len([m for m in said if "cannot be planned" in m]) == 2


async def test_planning_that_ends_the_transaction_fails_the_whole_cycle(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the database itself ended the cycle's transaction during a schedule's planning
    (SQLite rolls it back on a full disk; a lost connection), there is no savepoint left:
    the cycle fails as a whole instead of going on statement by statement outside any
    transaction, and nothing of it is kept; the next cycle claims it all once."""
    async with kit(tmp_path, ms("2027-01-01T00:00:00Z")) as k:
        d = await definition(k)
        await put(k, d, "a", renewal="2027-01-05")
        bad = await relative(k, d, catchup_window_minutes=120)
        good = await relative(k, d, catchup_window_minutes=120)
        fixed = await k.create(schedule_type="cron", schedule_expression="0 9 * * *")
        t = ms("2027-01-05T09:00:00Z")
        await k.run_until(t - 1)

        def ends_the_tx(c: Any) -> None:
            c.execute("ROLLBACK")  # as SQLite does itself on SQLITE_FULL
            raise RuntimeError("injected")

        failures = fail_earliest_once(monkeypatch, k, bad.id, ends_the_tx)
        k.clock.set(t)
        with pytest.raises(RuntimeError, match="injected"):
            await k.engine.tick(t)
        assert failures == [bad.id]
        for sid in (bad.id, good.id):
            assert await k.runs(sid) == []
        assert await k.runs(fixed.id, scheduled_for_ms=t) == []
        for sid in (bad.id, good.id):
            occ = await k.services.occurrences(k.tenant, sid, 10)
            assert [(o.record_key, o.scheduled_for_ms) for o in occ] == [("a", t)]
            assert (await k.schedule(sid)).next_run_ms == t
        while await k.engine.tick(t):
            await k.settle()
        await k.settle()
        for sid in (bad.id, good.id):
            runs = await k.runs(sid)
            assert fired(runs) == [("a", "2027-01-05T09:00:00.000Z")]
            assert_no_double(runs)
        assert len(await k.runs(fixed.id, scheduled_for_ms=t)) == 1


def _transient_fault(c: Any, fault: str) -> None:
    """Raise, inside the planning of a relative schedule, an error that is the storage's
    for now: `injected` as the driver raises it (a deadlock the server broke on
    PostgreSQL, a full disk on SQLite), `server` raised by the database itself (a statement
    timeout, which aborts PostgreSQL's transaction; a full database file)."""
    if db_backend.current_url:
        import psycopg

        if fault == "injected":
            raise psycopg.errors.DeadlockDetected("deadlock detected")
        c.execute("SET LOCAL statement_timeout = 1")
        c.execute("SELECT pg_sleep(1)")
    else:
        if fault == "injected":
            raise sqlite3.OperationalError("database or disk is full")
        pages = c.execute("PRAGMA page_count").fetchone()[0]
        c.execute(f"PRAGMA max_page_count = {pages}")
        c.execute("CREATE TABLE fill (x BLOB)")
        c.execute("INSERT INTO fill VALUES (zeroblob(1000000))")
    raise AssertionError("the fault was not raised")


@pytest.mark.parametrize("fault", ["injected", "server"])
async def test_a_storage_fault_in_planning_fails_the_cycle_not_the_schedule(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    """A deadlock, a lock or statement timeout, a full disk met while a relative schedule
    is planned (after it marked its occurrences fired) is the storage's, not the
    schedule's: it is not marked "cannot be planned" nor pushed an hour on (its
    occurrences would fire late, or be missed past a short catch-up window); the whole
    cycle fails as a storage fault, nothing of it is kept, and the next cycle fires each
    occurrence once, on time."""
    async with kit(tmp_path, ms("2027-01-01T00:00:00Z")) as k:
        d = await definition(k)
        await put(k, d, "a", renewal="2027-01-05")
        await put(k, d, "b", renewal="2027-01-05")
        bad = await relative(k, d, catchup_window_minutes=10)
        good = await relative(k, d, catchup_window_minutes=10)
        fixed = await k.create(schedule_type="cron", schedule_expression="0 9 * * *")
        t = ms("2027-01-05T09:00:00Z")
        await k.run_until(t - 1)
        failures = fail_earliest_once(monkeypatch, k, bad.id,
                                      lambda c: _transient_fault(c, fault))
        k.clock.set(t)
        with pytest.raises(StorageUnavailable):
            await k.engine.tick(t)
        assert failures == [bad.id]
        if fault == "server" and not db_backend.current_url:
            await k.db.write(lambda c: c.execute("PRAGMA max_page_count = 1073741823"))
        # nothing of the cycle is kept: no run, every occurrence pending, nothing marked
        for sid in (bad.id, good.id):
            assert await k.runs(sid) == []
            occ = await k.services.occurrences(k.tenant, sid, 10)
            assert sorted((o.record_key, o.scheduled_for_ms) for o in occ) == [
                ("a", t), ("b", t)]
            got = await k.schedule(sid)
            assert got.next_run_ms == t and got.last_error is None
        assert await k.runs(fixed.id, scheduled_for_ms=t) == []
        # the next cycle (the loop retries a storage fault within milliseconds)
        k.clock.set(t + 50)
        while await k.engine.tick(t + 50):
            await k.settle()
        await k.settle()
        for sid in (bad.id, good.id):
            runs = await k.runs(sid)
            assert fired(runs) == [("a", "2027-01-05T09:00:00.000Z"),
                                   ("b", "2027-01-05T09:00:00.000Z")]
            assert_no_double(runs)
            assert all(r.status is RunStatus.succeeded and r.started_ms == t + 50
                       for r in runs)
            got = await k.schedule(sid)
            assert got.last_error is None and got.missed_count == 0
            assert await k.services.occurrences(k.tenant, sid, 10) == []
        assert len(await k.runs(fixed.id, scheduled_for_ms=t)) == 1


def _lasting_error(c: Any, kind: str) -> None:
    """An error of the statement or of the code, which would fail again: even those the
    driver files with storage errors (PostgreSQL's program_limit_exceeded is a psycopg
    OperationalError; SQLite's "no such column" a sqlite3.OperationalError)."""
    if kind == "bug":
        raise RuntimeError("injected")
    if db_backend.current_url:
        import psycopg

        if kind == "limit":
            raise psycopg.errors.ProgramLimitExceeded("statement is too complex")
        raise psycopg.errors.TransactionIntegrityConstraintViolation("deferred constraint")
    if kind == "limit":
        raise sqlite3.OperationalError("no such column: x")
    raise sqlite3.IntegrityError("UNIQUE constraint failed: runs.id")


@pytest.mark.parametrize("kind", ["bug", "limit", "constraint"])
async def test_an_error_that_would_fail_again_still_marks_the_schedule(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """The counterpart: an error of the planning itself marks the schedule "cannot be
    planned" and pushes it an hour on, and the rest of the cycle is kept."""
    async with kit(tmp_path, ms("2027-01-01T00:00:00Z")) as k:
        d = await definition(k)
        await put(k, d, "a", renewal="2027-01-05")
        bad = await relative(k, d, catchup_window_minutes=120)
        good = await relative(k, d, catchup_window_minutes=120)
        t = ms("2027-01-05T09:00:00Z")
        await k.run_until(t - 1)
        failures = fail_earliest_once(monkeypatch, k, bad.id, lambda c: _lasting_error(c, kind))
        k.clock.set(t)
        while await k.engine.tick(t):
            await k.settle()
        await k.settle()
        assert failures == [bad.id]
        got = await k.schedule(bad.id)
        assert got.last_error and "cannot plan" in got.last_error
        assert got.next_run_ms == t + HOUR
        assert await k.runs(bad.id) == []
        assert fired(await k.runs(good.id)) == [("a", "2027-01-05T09:00:00.000Z")]


async def test_retries_keep_the_record_and_failures_count_across_records(
        tmp_path: Path) -> None:
    async with kit(tmp_path, ms("2027-01-01T00:00:00Z")) as k:
        d = await definition(k)
        for i in range(3):
            await put(k, d, f"r{i}", renewal=f"2027-01-0{i + 2}")
        s = await relative(k, d, headers={"x-always-fail": "1"}, max_retries=1,
                           retry_backoff_seconds=10, pause_on_failure_count=2)
        await k.run_until(ms("2027-01-10T00:00:00Z"))
        runs = await k.runs(s.id)
        assert sorted((r.record_key, r.attempt) for r in runs) == [
            ("r0", 1), ("r0", 2), ("r1", 1), ("r1", 2)]
        assert all(r.status is RunStatus.failed for r in runs)
        got = await k.schedule(s.id)
        assert got.status is ScheduleStatus.paused
        assert got.consecutive_failures == 2
        assert got.run_count == 4
        # r2's occurrence stays pending while paused
        occ = await k.services.occurrences(k.tenant, s.id, 10)
        assert [o.record_key for o in occ] == ["r2"]


async def test_rate_limit_defers_records_due_together(tmp_path: Path) -> None:
    async with kit(tmp_path, ms("2027-01-01T00:00:00Z")) as k:
        d = await definition(k)
        for i in range(5):
            await put(k, d, f"r{i}", renewal="2027-01-05")
        s = await relative(k, d, rate_limit_per_minute=2)
        await k.run_until(ms("2027-01-06T00:00:00Z"))
        runs = await k.runs(s.id)
        assert len(runs) == 5 and all(r.status is RunStatus.succeeded for r in runs)
        t0 = ms("2027-01-05T09:00:00Z")
        assert sorted(r.started_ms - t0 for r in runs if r.started_ms is not None) == [
            0, 0, 60_000, 60_000, 120_000]


async def test_the_action_sees_the_record_as_it_is_when_the_run_starts(
        tmp_path: Path) -> None:
    async with kit(tmp_path, ms("2027-01-01T00:00:00Z")) as k:
        d = await definition(k)
        await put(k, d, "c1", renewal="2027-01-05", plan="free")
        s = await relative(k, d)
        await put(k, d, "c1", renewal="2027-01-05", plan="pro")
        await k.run_until(ms("2027-01-06T00:00:00Z"))
        assert [c.record for c in k.runner.calls] == [
            {"renewal": "2027-01-05", "plan": "pro"}]
        assert [c.record_key for c in k.runner.calls] == ["c1"]
        assert [r.record_key for r in await k.runs(s.id)] == ["c1"]


async def test_deleting_the_schedule_drops_its_occurrences(tmp_path: Path) -> None:
    async with kit(tmp_path, ms("2027-01-01T00:00:00Z")) as k:
        d = await definition(k)
        await put(k, d, "a", renewal="2027-01-05")
        s = await relative(k, d)
        await k.services.delete_schedule(k.tenant, s.id)
        rows = await k.db.fetch_all("SELECT count(*) FROM occurrences")
        assert rows[0][0] == 0
        await k.services.entities.delete_definition(k.tenant, d.id)


# ---------------------------------------------------------------------- scale
async def _cycle_steps(tmp_path: Path, n_records: int) -> int:
    """SQLite VM steps of the one engine cycle that fires one record's occurrence, with
    `n_records` records (all but one due in ten years) under three relative schedules."""
    async with kit(tmp_path / str(n_records), ms("2027-01-01T00:00:00Z")) as k:
        d = await definition(k)
        ent = k.services.entities
        for lo in range(0, n_records - 1, 10_000):
            items = [(f"r{i:07d}", {"renewal": "2037-01-01", "plan": "pro"})
                     for i in range(lo, min(lo + 10_000, n_records - 1))]
            await ent.batch(k.tenant, d.id, items, [])
        for off in (0, 1, 2):
            await relative(k, d, relative_offset_days=-off,
                           schedule_expression=f"0{9 - off}:00")
        await put(k, d, "early", renewal="2027-01-10", plan="pro")
        await k.run_until(ms("2027-01-10T08:59:00Z"))  # the other two fire before
        k.clock.set(ms("2027-01-10T09:00:00Z"))
        steps = [0]

        def count() -> int:
            steps[0] += 1
            return 0

        await k.db.write(lambda c: c.set_progress_handler(count, 10))
        more = await k.engine.tick(k.clock.now_ms())
        await k.db.write(lambda c: c.set_progress_handler(None, 10))
        assert not more
        await k.settle()
        runs = await k.runs()
        assert all(r.status is RunStatus.succeeded for r in runs)
        assert sorted((r.record_key, format_ms(r.scheduled_for_ms)) for r in runs) == [
            ("early", "2027-01-08T07:00:00.000Z"), ("early", "2027-01-09T08:00:00.000Z"),
            ("early", "2027-01-10T09:00:00.000Z")]
        plan = await k.db.fetch_all(
            "EXPLAIN QUERY PLAN SELECT record_key, next_ms FROM occurrences INDEXED BY "
            "occurrences_due WHERE schedule_seq = ? AND next_ms IS NOT NULL AND next_ms <= ? "
            "ORDER BY next_ms LIMIT ?", (1, 0, 10))
        assert any("USING COVERING INDEX occurrences_due (schedule_seq=? AND next_ms" in r[-1]
                   or "USING INDEX occurrences_due (schedule_seq=? AND next_ms" in r[-1]
                   for r in plan), plan
        return steps[0] * 10


@pytest.mark.sqlite_only("counts SQLite's VM steps (a progress handler) and reads its query plan")
async def test_the_loops_work_per_fire_does_not_grow_with_the_record_count(
        tmp_path: Path) -> None:
    # Planning happens when records and schedules are written; a cycle reads only the due
    # rows of an index. 100x the records must not cost the cycle measurably more SQLite
    # work (B-tree depth grows by a level or so: allow 1.5x).
    small = await _cycle_steps(tmp_path, 300)
    large = await _cycle_steps(tmp_path, 30_000)
    print(f"VM steps of the firing cycle: {small} (300 records), {large} (30,000)")
    assert large < 1.5 * small, (small, large)
