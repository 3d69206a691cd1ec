#!/usr/bin/env python3
"""The list's `total` at a large store: the first page of GET /v1/schedules as the store
reads it, with the count kept by migration 0006's triggers against a count(*) of the
tenant's schedules (what every page paid before).

    python bench/list_total.py [--schedules 1000000] [--reps 20]

Builds a database in a temporary directory (schedd's migrations, one tenant, N schedules
cloned from one created through Store.insert_schedule by a single INSERT ... SELECT), then
times, on the read-only connection schedd's reader uses: the page with the kept total
(Store.list_schedules), the same with status=active, and the old count(*). Medians of
`--reps`, in ms. No daemon, no network.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from schedd.db import Conn, Database
from schedd.models import ActionType, Schedule, ScheduleType
from schedd.store import Store


def timed(fn: object, reps: int) -> float:
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--schedules", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=20)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="schedd-list-total-") as tmp:
        async with Database(Path(tmp) / "schedd.db") as db:
            store = Store(db)
            s = Schedule(id="00000000-0000-7000-8000-000000000000", tenant_id="t1", name="s",
                         description=None, schedule_type=ScheduleType.interval,
                         schedule_expression="1h", timezone="UTC", start_ms=None, end_ms=None,
                         action_type=ActionType.noop, action_config={}, next_run_ms=2**40,
                         created_ms=1, updated_ms=1)

            def build(c: Conn) -> None:
                c.execute("INSERT INTO tenants (id, name, created_ms) VALUES ('t1', 'a', 1)")
                store.insert_schedule(c, s)
                cols = [r[1] for r in c.execute("PRAGMA table_info(schedules)")
                        if r[1] not in ("seq", "id")]
                c.execute(
                    f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                    f"WHERE i < ?) INSERT INTO schedules (id, {', '.join(cols)}) "
                    f"SELECT printf('%08d-0000-7000-8000-000000000000', i), {', '.join(cols)} "
                    f"FROM n, (SELECT * FROM schedules LIMIT 1)", (a.schedules - 1,))

            t0 = time.perf_counter()
            await db.write(build)
            built = time.perf_counter() - t0

            def measure(c: Conn) -> dict[str, float]:
                def page(**kw: str | None) -> None:
                    store.list_schedules(c, "t1", customer_id=None, external_id=None,
                                         status=kw.get("status"), limit=50, offset=0)

                return {
                    "page_with_kept_total_ms": timed(page, a.reps),
                    "page_status_active_ms": timed(lambda: page(status="active"), a.reps),
                    "old_count_star_ms": timed(lambda: c.execute(
                        "SELECT count(*) FROM schedules WHERE tenant_id = 't1'").fetchone(),
                        a.reps),
                }

            r = await db.read(measure)
            total = await db.read(lambda c: store.list_schedules(
                c, "t1", customer_id=None, external_id=None, status=None, limit=1, offset=0)[1])
    print({"schedules": a.schedules, "total": total, "build_s": round(built, 1),
           **{k: round(v, 3) for k, v in r.items()}})


if __name__ == "__main__":
    asyncio.run(main())
