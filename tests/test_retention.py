"""Run history retention: old finished runs go, the newest 100 of each schedule and every
active run stay."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_kit import kit

from schedd import retention
from schedd.models import RunStatus
from schedd.timing import load_zone, parse_instant_ms

# on SQLite and on PostgreSQL (tests/db_backend.py)
pytestmark = pytest.mark.usefixtures("database_url")

T0 = parse_instant_ms("2026-11-22T09:00:00Z", load_zone("UTC"))
DAY = 86_400_000


async def test_prunes_old_runs_keeping_the_newest_100_per_schedule(tmp_path: Path) -> None:
    async with kit(tmp_path, T0) as k:
        busy = await k.create(schedule_expression="1h")  # 24 × 5 = 120 runs
        quiet = await k.create(schedule_expression="1d")  # 5 runs
        hang = await k.create(schedule_expression="5d", headers={"x-hang": "1"})
        await k.run_until(T0 + 5 * DAY)
        assert len(await k.runs(busy.id)) == 120
        (running,) = await k.runs(hang.id)
        assert running.status is RunStatus.running
        now = T0 + 40 * DAY  # all of them are older than 30 days now
        deleted = await retention.prune_once(k.store, now, 30, batch=7)
        assert deleted == 20
        kept = await k.runs(busy.id)
        assert len(kept) == 100
        # the newest 100 stayed
        assert min(r.scheduled_for_ms for r in kept) == T0 + 21 * 3_600_000
        assert len(await k.runs(quiet.id)) == 5
        assert [r.status for r in await k.runs(hang.id)] == [RunStatus.running]


async def test_recent_runs_are_never_pruned(tmp_path: Path) -> None:
    async with kit(tmp_path, T0) as k:
        s = await k.create(schedule_expression="10m")
        await k.run_until(T0 + 2 * DAY)
        assert await retention.prune_once(k.store, T0 + 2 * DAY, 30) == 0
        assert len(await k.runs(s.id)) == 288
