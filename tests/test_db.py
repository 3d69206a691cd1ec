"""schedd.db: the write-ahead log is copied back by the checkpoint thread, never by a COMMIT."""

from __future__ import annotations

import asyncio
import sqlite3
from enum import Enum
from pathlib import Path

import msgspec
import pytest

from schedd import db as dbmod
from schedd.db import Database
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
from schedd.store import sqlite as store_mod
from schedd.store.sqlite import RUN_COLS, SCHEDULE_COLS, _values


async def test_writes_are_checkpointed_by_the_checkpoint_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dbmod, "CHECKPOINT_IDLE_S", 60.0)  # only the 64th write's nudge
    path = tmp_path / "ck.db"
    async with Database(path) as db:
        # the writer checkpoints only as a backstop, far later than SQLite's 1,000 pages
        assert await db.write(lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) \
            == dbmod.WAL_BACKSTOP_PAGES
        await db.write(lambda c: c.execute("CREATE TABLE t (x TEXT)"))
        before = path.stat().st_size
        for i in range(dbmod.CHECKPOINT_EVERY_WRITES * 2):
            await db.write(lambda c, i=i: c.execute("INSERT INTO t VALUES (?)", ("x" * 3000,)))
        ck = db._checkpointer
        assert ck is not None
        for _ in range(500):  # bounded: 5 s
            if ck.copied_pages > 0:
                break
            await asyncio.sleep(0.01)
        assert ck.copied_pages > 0
        assert path.stat().st_size > before  # the pages reached the database file
        rows = await db.read(lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0])
        assert rows == dbmod.CHECKPOINT_EVERY_WRITES * 2
    # closed: the checkpoint thread ended, and the file holds everything without its log
    assert db._checkpointer is None
    con = sqlite3.connect(path)
    try:
        assert con.execute("SELECT count(*) FROM t").fetchone()[0] == rows
    finally:
        con.close()


async def test_memory_database_has_no_checkpoint_thread() -> None:
    async with Database(":memory:") as db:
        assert db._checkpointer is None
        await db.write(lambda c: c.execute("CREATE TABLE t (x)"))


async def test_the_engines_run_queries_read_an_index_never_the_whole_runs_table(
        tmp_path: Path) -> None:
    # Every SELECT the engine runs on `runs` when it records outcomes, expires leases,
    # recovers after a crash and plans its wake-up must search an index: the runs table
    # holds the whole history (millions of rows on a long-lived box).
    from engine_kit import kit

    from schedd.engine.effects import Effects
    async with kit(tmp_path, 1_795_338_000_000) as k:
        def traced(c: sqlite3.Connection) -> list[tuple[str, list[str]]]:
            seen: list[str] = []
            c.set_trace_callback(seen.append)
            try:
                k.engine._recover_tx(c, 1_795_338_000_000, Effects())
                k.engine.leases.expire_tx(c, 1_795_338_000_000, Effects())
                k.store.next_wake_ms(c, include_due_work=True)
                k.store.active_runs_and_tallies(c, ["r-1", "r-2"])
            finally:
                c.set_trace_callback(None)
            return [(sql, [row[3] for row in c.execute("EXPLAIN QUERY PLAN " + sql)])
                    for sql in seen if sql.lstrip().upper().startswith("SELECT")]

        plans = await k.db.write(traced)
    assert len(plans) >= 4
    for sql, plan in plans:
        for step in plan:
            if "runs" in step or " r " in f" {step} ":
                assert not (step.startswith("SCAN") and "USING" not in step), (sql, plan)
    used = " ".join(" ".join(p) for _, p in plans)
    assert "runs_leased" in used and "runs_active" in used


async def test_the_wal_stays_bounded_under_writes_without_a_pause(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # SQLite rewinds the WAL only when a write begins with every frame copied back; a
    # checkpoint on another thread never catches a writer that does not pause, so the
    # writer's own backstop checkpoint must bound the log. Here the thread never runs.
    monkeypatch.setattr(dbmod, "CHECKPOINT_IDLE_S", 3600.0)
    monkeypatch.setattr(dbmod, "CHECKPOINT_EVERY_WRITES", 10**9)
    monkeypatch.setattr(dbmod, "WAL_BACKSTOP_PAGES", 200)
    path = tmp_path / "wal.db"
    wal = Path(str(path) + "-wal")
    async with Database(path) as db:
        await db.write(lambda c: c.execute("CREATE TABLE t (x TEXT)"))
        biggest = 0
        for i in range(1500):  # ~1 page a transaction: 7 times the backstop without it
            await db.write(lambda c, i=i: c.execute("INSERT INTO t VALUES (?)",
                                                    (f"{i}" * (3000 // len(str(i))),)))
            biggest = max(biggest, wal.stat().st_size)
        assert db._checkpointer is not None and db._checkpointer.runs == 0
    assert biggest < 200 * 4096 * 3  # the backstop, not 1,500 pages of log


def _as_sqlite_returns(values: list[object]) -> tuple[object, ...]:
    return tuple(int(v) if isinstance(v, bool) else v.value if isinstance(v, Enum) else v
                 for v in values)


@pytest.mark.parametrize("cls", [Schedule, Run, ScheduleTally], ids=["schedule", "run", "tally"])
def test_rows_read_back_as_msgspec_convert_would(
        cls: type[Schedule] | type[Run] | type[ScheduleTally]) -> None:
    """store's generated row readers (one constructor call per row) give what
    msgspec.convert of a column dict gives, for every field: enums, bools, JSON, NULLs."""
    if cls is Schedule:
        obj: Schedule | Run | ScheduleTally = Schedule(
            id="s-1", tenant_id="t", name="n", description=None,
            schedule_type=ScheduleType.cron, schedule_expression="*/5 * * * *",
            timezone="Europe/Berlin", start_ms=5, end_ms=None, action_type=ActionType.webhook,
            action_config={"url": "http://x/", "headers": {"A": "b"}, "n": [1, 2.5, None]},
            overlap_policy=OverlapPolicy.BUFFER_ONE, catchup_policy=CatchupPolicy.LATEST,
            action_after_completion=AfterCompletion.DELETE, relative_filter={"k": "v"},
            status=ScheduleStatus.paused, paused_reason="why", next_run_ms=7, run_count=3,
            created_ms=1, updated_ms=2)
        cols = SCHEDULE_COLS
    elif cls is ScheduleTally:
        obj = ScheduleTally(
            id="s-1", status=ScheduleStatus.completed, max_retries=2, retry_backoff_seconds=9,
            pause_on_failure_count=4, overlap_policy=OverlapPolicy.CANCEL_OTHER,
            action_after_completion=AfterCompletion.DELETE, run_count=5,
            consecutive_failures=1, last_run_ms=None, last_run_status="failed")
        cols = store_mod._TALLY_COLS
    else:
        obj = Run(id="r-1", schedule_id="s-1", tenant_id="t", status=RunStatus.failed,
                  trigger_type=TriggerType.retry, manual=True, scheduled_for_ms=1, due_ms=2,
                  triggered_ms=3, attempt=2, attempt_root_run_id="r-0",
                  result={"status_code": 500}, resolved_payload=None,
                  action_type=ActionType.command, waiting=True, lease_until_ms=9)
        cols = RUN_COLS
    row = _as_sqlite_returns(_values(obj, cols))
    read = store_mod._from_row(type(obj), cols, row)
    assert read == obj
    by_convert = msgspec.convert(
        {c: (msgspec.json.decode(v) if c in store_mod._JSON_COLS and v is not None else v)
         for c, v in zip(cols, row, strict=True)}, type(obj), strict=False)
    assert read == by_convert
    assert type(read.status) is type(by_convert.status)  # an enum, not its value


def test_a_field_the_row_reader_cannot_convert_is_refused() -> None:
    class Odd(msgspec.Struct):
        when: float

    with pytest.raises(TypeError, match=r"Odd\.when"):
        store_mod._reader(Odd, ("when",))
