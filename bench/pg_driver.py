"""psycopg 3 against asyncpg on schedd's claim/record path, on a throwaway PostgreSQL 15.

    .venv/bin/pip install -r bench/requirements-pg.txt    # asyncpg: bench-only
    .venv/bin/python bench/pg_driver.py                    # ~1-2 min

Each run claims N due schedules in batches of B and records their outcomes in batches of B,
the way schedd's engine does it:

- claim (one transaction): `SELECT … FOR UPDATE SKIP LOCKED` the next B due schedules,
  advance their next_run, insert one running run each;
- record (one transaction): finish the B runs (guarded on still being active) and update
  their schedules' tallies.

Drivers:

- `psycopg-thread`: psycopg 3's synchronous Connection in one writer thread that the
  asyncio loop (uvloop) hands each transaction to, which is how schedd's store units run
  (synchronous functions in a writer thread, group commit);
- `asyncpg`: asyncpg on the loop itself;
- `psycopg-async`: psycopg 3's AsyncConnection on the loop, for reference.

Statement styles:

- `many`: a statement per row through the driver's executemany (the direct port of the
  SQLite store, which issues per-row statements);
- `unnest`: one set-based statement per step, the rows passed as arrays.

Every run gets fresh tables (not timed); runs are interleaved in rounds so the box's load
falls on every driver alike. Reported: occurrences per second (claim + record, wall), the
client's CPU (this process, all threads) and the server backend's CPU per occurrence, and
each driver's ratio to psycopg-thread in the same round. The server has fsync off (the
tests' settings), which leaves the drivers' own costs as large a share as they can be.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pg_kit import PgServer, missing_reason

SCHEMA = """
CREATE TABLE schedules (
    seq          bigserial PRIMARY KEY,
    id           text NOT NULL UNIQUE,
    tenant_id    text NOT NULL,
    status       text NOT NULL,
    interval_ms  bigint NOT NULL,
    action_config text NOT NULL,
    next_run_ms  bigint,
    last_run_ms  bigint,
    last_run_status text,
    run_count    bigint NOT NULL,
    updated_ms   bigint NOT NULL
);
CREATE INDEX schedules_due ON schedules(next_run_ms)
    WHERE status = 'active' AND next_run_ms IS NOT NULL;
CREATE TABLE runs (
    seq              bigserial PRIMARY KEY,
    id               text NOT NULL UNIQUE,
    schedule_id      text NOT NULL,
    tenant_id        text NOT NULL,
    status           text NOT NULL,
    scheduled_for_ms bigint NOT NULL,
    due_ms           bigint NOT NULL,
    started_ms       bigint,
    completed_ms     bigint,
    attempt          integer NOT NULL,
    node_id          text,
    lease_until_ms   bigint,
    result           text
);
CREATE UNIQUE INDEX runs_occurrence ON runs(schedule_id, scheduled_for_ms, attempt);
CREATE INDEX runs_active ON runs(schedule_id) WHERE status IN ('pending', 'running');
"""

NOW = 1_795_338_000_000
CONFIG = '{"url": "http://127.0.0.1:9/hook", "method": "POST", "headers": {}}'
RESULT = '{"status_code": 200, "duration_ms": 3}'

# -- SQL, in each driver's placeholder style ----------------------------------------------

CLAIM = (
    "SELECT id, tenant_id, next_run_ms, interval_ms FROM schedules"
    " WHERE status = 'active' AND next_run_ms IS NOT NULL AND next_run_ms <= {0}"
    " ORDER BY next_run_ms LIMIT {1} FOR UPDATE SKIP LOCKED"
)
ADVANCE = "UPDATE schedules SET next_run_ms = {0}, updated_ms = {1} WHERE id = {2}"
INSERT_RUN = (
    "INSERT INTO runs (id, schedule_id, tenant_id, status, scheduled_for_ms, due_ms,"
    " started_ms, attempt, node_id, lease_until_ms)"
    " VALUES ({0}, {1}, {2}, 'running', {3}, {4}, {5}, 1, 'n1', {6})"
)
FINISH = (
    "UPDATE runs SET status = 'succeeded', completed_ms = {0}, result = {1}"
    " WHERE id = {2} AND status IN ('pending', 'running')"
)
TALLY = (
    "UPDATE schedules SET run_count = run_count + 1, last_run_ms = {0},"
    " last_run_status = 'succeeded', updated_ms = {1} WHERE id = {2}"
)
ADVANCE_SET = (
    "UPDATE schedules s SET next_run_ms = v.n, updated_ms = {0}"
    " FROM unnest({1}::text[], {2}::bigint[]) AS v(id, n) WHERE s.id = v.id"
)
INSERT_RUN_SET = (
    "INSERT INTO runs (id, schedule_id, tenant_id, status, scheduled_for_ms, due_ms,"
    " started_ms, attempt, node_id, lease_until_ms)"
    " SELECT v.id, v.sid, v.tid, 'running', v.at, v.at, {0}, 1, 'n1', {1}"
    " FROM unnest({2}::text[], {3}::text[], {4}::text[], {5}::bigint[]) AS v(id, sid, tid, at)"
)
FINISH_SET = (
    "UPDATE runs r SET status = 'succeeded', completed_ms = {0}, result = {1}"
    " FROM unnest({2}::text[]) AS v(id) WHERE r.id = v.id AND r.status IN ('pending', 'running')"
)
TALLY_SET = (
    "UPDATE schedules s SET run_count = s.run_count + 1, last_run_ms = {0},"
    " last_run_status = 'succeeded', updated_ms = {1}"
    " FROM unnest({2}::text[]) AS v(id) WHERE s.id = v.id"
)


def pg(sql: str) -> str:
    """psycopg's placeholders."""
    return sql.format(*(["%s"] * 8))


def apg(sql: str) -> str:
    """asyncpg's placeholders."""
    return sql.format(*[f"${i}" for i in range(1, 9)])


Claimed = list[tuple[str, str, str, int]]  # run id, schedule id, tenant id, occurrence


def plan(rows: list[Any], seq: list[int]) -> tuple[Claimed, list[tuple[str, int]]]:
    """What the engine would compute from claimed rows: a run per row, the next occurrence."""
    runs: Claimed = []
    nexts: list[tuple[str, int]] = []
    for sid, tid, at, every in rows:
        seq[0] += 1
        runs.append((f"r{seq[0]:09d}", sid, tid, at))
        nexts.append((sid, at + every))
    return runs, nexts


# -- psycopg 3, synchronous, in a writer thread ----------------------------------------------


class PsycopgUnit:
    """The two units of work over one synchronous connection (runs in the writer thread)."""

    def __init__(self, url: str, style: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)  # transaction() = BEGIN/COMMIT
        self.style = style
        self.seq = [0]

    def claim(self, limit: int) -> Claimed:
        with self.conn.transaction():
            cur = self.conn.cursor()
            rows = cur.execute(pg(CLAIM), (NOW, limit)).fetchall()
            runs, nexts = plan(rows, self.seq)
            if self.style == "many":
                cur.executemany(pg(ADVANCE), [(n, NOW, sid) for sid, n in nexts])
                cur.executemany(
                    pg(INSERT_RUN), [(r, s, t, at, at, NOW, NOW + 60_000) for r, s, t, at in runs]
                )
            elif runs:
                cur.execute(pg(ADVANCE_SET), (NOW, [s for s, _ in nexts], [n for _, n in nexts]))
                cur.execute(
                    pg(INSERT_RUN_SET),
                    (NOW, NOW + 60_000, [r[0] for r in runs], [r[1] for r in runs],
                     [r[2] for r in runs], [r[3] for r in runs]),
                )  # fmt: skip
        return runs

    def record(self, runs: Claimed) -> None:
        with self.conn.transaction():
            cur = self.conn.cursor()
            if self.style == "many":
                cur.executemany(pg(FINISH), [(NOW + 5, RESULT, r[0]) for r in runs])
                cur.executemany(pg(TALLY), [(NOW + 5, NOW + 5, r[1]) for r in runs])
            else:
                cur.execute(pg(FINISH_SET), (NOW + 5, RESULT, [r[0] for r in runs]))
                cur.execute(pg(TALLY_SET), (NOW + 5, NOW + 5, [r[1] for r in runs]))

    def backend_pid(self) -> int:
        row = self.conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        return int(row[0])

    def close(self) -> None:
        self.conn.close()


async def run_psycopg_thread(url: str, style: str, n: int, batch: int) -> tuple[int, int]:
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="writer")
    loop = asyncio.get_running_loop()
    unit = await loop.run_in_executor(writer, PsycopgUnit, url, style)
    pid = await loop.run_in_executor(writer, unit.backend_pid)
    done = 0
    try:
        async with _timed(pid) as t:
            while done < n:
                runs = await loop.run_in_executor(writer, unit.claim, batch)
                if not runs:
                    break
                await loop.run_in_executor(writer, unit.record, runs)
                done += len(runs)
    finally:
        await loop.run_in_executor(writer, unit.close)
        writer.shutdown()
    return done, t.server_cpu_ns


# -- psycopg 3, AsyncConnection on the loop ------------------------------------------------


async def run_psycopg_async(url: str, style: str, n: int, batch: int) -> tuple[int, int]:
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    seq = [0]
    row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
    assert row is not None
    done = 0
    try:
        async with _timed(int(row[0])) as t:
            while done < n:
                async with conn.transaction():
                    cur = conn.cursor()
                    rows = await (await cur.execute(pg(CLAIM), (NOW, batch))).fetchall()
                    runs, nexts = plan(rows, seq)
                    if not runs:
                        break
                    if style == "many":
                        await cur.executemany(pg(ADVANCE), [(x, NOW, s) for s, x in nexts])
                        await cur.executemany(
                            pg(INSERT_RUN),
                            [(r, s, tt, at, at, NOW, NOW + 60_000) for r, s, tt, at in runs],
                        )
                    else:
                        await cur.execute(
                            pg(ADVANCE_SET), (NOW, [s for s, _ in nexts], [x for _, x in nexts])
                        )
                        await cur.execute(
                            pg(INSERT_RUN_SET),
                            (NOW, NOW + 60_000, [r[0] for r in runs], [r[1] for r in runs],
                             [r[2] for r in runs], [r[3] for r in runs]),
                        )  # fmt: skip
                async with conn.transaction():
                    cur = conn.cursor()
                    if style == "many":
                        await cur.executemany(pg(FINISH), [(NOW + 5, RESULT, r[0]) for r in runs])
                        await cur.executemany(pg(TALLY), [(NOW + 5, NOW + 5, r[1]) for r in runs])
                    else:
                        await cur.execute(pg(FINISH_SET), (NOW + 5, RESULT, [r[0] for r in runs]))
                        await cur.execute(pg(TALLY_SET), (NOW + 5, NOW + 5, [r[1] for r in runs]))
                done += len(runs)
    finally:
        await conn.close()
    return done, t.server_cpu_ns


# -- asyncpg on the loop -------------------------------------------------------------------


async def run_asyncpg(url: str, style: str, n: int, batch: int) -> tuple[int, int]:
    import asyncpg

    conn = await asyncpg.connect(url)
    seq = [0]
    pid = int(await conn.fetchval("SELECT pg_backend_pid()"))
    done = 0
    try:
        async with _timed(pid) as t:
            while done < n:
                async with conn.transaction():
                    rows = await conn.fetch(apg(CLAIM), NOW, batch)
                    runs, nexts = plan([tuple(r) for r in rows], seq)
                    if not runs:
                        break
                    if style == "many":
                        await conn.executemany(apg(ADVANCE), [(x, NOW, s) for s, x in nexts])
                        await conn.executemany(
                            apg(INSERT_RUN),
                            [(r, s, tt, at, at, NOW, NOW + 60_000) for r, s, tt, at in runs],
                        )
                    else:
                        await conn.execute(
                            apg(ADVANCE_SET), NOW, [s for s, _ in nexts], [x for _, x in nexts]
                        )
                        await conn.execute(
                            apg(INSERT_RUN_SET), NOW, NOW + 60_000, [r[0] for r in runs],
                            [r[1] for r in runs], [r[2] for r in runs], [r[3] for r in runs],
                        )  # fmt: skip
                async with conn.transaction():
                    if style == "many":
                        await conn.executemany(apg(FINISH), [(NOW + 5, RESULT, r[0]) for r in runs])
                        await conn.executemany(apg(TALLY), [(NOW + 5, NOW + 5, r[1]) for r in runs])
                    else:
                        await conn.execute(apg(FINISH_SET), NOW + 5, RESULT, [r[0] for r in runs])
                        await conn.execute(apg(TALLY_SET), NOW + 5, NOW + 5, [r[1] for r in runs])
                done += len(runs)
    finally:
        await conn.close()
    return done, t.server_cpu_ns


# -- measuring -----------------------------------------------------------------------------

_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def _proc_cpu_ns(pid: int) -> int:
    """utime + stime of a process (the server backend serving our connection)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * _TICK_NS


class _timed:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.server_cpu_ns = 0

    async def __aenter__(self) -> _timed:
        self.c0 = _proc_cpu_ns(self.pid)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server_cpu_ns = _proc_cpu_ns(self.pid) - self.c0


DRIVERS: dict[str, Callable[[str, str, int, int], Awaitable[tuple[int, int]]]] = {
    "psycopg-thread": run_psycopg_thread,
    "asyncpg": run_asyncpg,
    "psycopg-async": run_psycopg_async,
}


def fresh_tables(url: str, n: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS runs, schedules")
        for stmt in SCHEMA.split(";"):
            if stmt.strip():
                conn.execute(stmt.encode())
        rng = random.Random(16)
        with conn.cursor().copy(
            "COPY schedules (id, tenant_id, status, interval_ms, action_config, next_run_ms,"
            " run_count, updated_ms) FROM STDIN"
        ) as copy:
            for i in range(n):
                due = NOW - rng.randrange(0, 60_000)  # all due, in a random order
                copy.write_row((f"s{i:07d}", f"t{i % 8}", "active", 3_600_000, CONFIG, due, 0, 0))
        conn.execute("VACUUM ANALYZE schedules")


def check(url: str, n: int) -> None:
    """Every claimed occurrence has exactly one finished run and its tally, nothing more."""
    with psycopg.connect(url) as conn:
        runs = conn.execute("SELECT count(*), count(DISTINCT schedule_id) FROM runs").fetchone()
        ok = conn.execute("SELECT count(*) FROM runs WHERE status = 'succeeded'").fetchone()
        tally = conn.execute("SELECT sum(run_count) FROM schedules").fetchone()
    if runs != (n, n) or ok != (n,) or tally != (n,):
        raise SystemExit(f"wrong state after a run: runs {runs}, succeeded {ok}, tally {tally}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="1,10,100,500", help="batch sizes")
    ap.add_argument("--n", type=int, default=3000, help="occurrences per run (batch > 1)")
    ap.add_argument("--n1", type=int, default=600, help="occurrences per run at batch 1")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--drivers", default=",".join(DRIVERS))
    ap.add_argument("--styles", default="many,unnest")
    args = ap.parse_args()
    try:
        import asyncpg
    except ImportError:
        raise SystemExit(
            "asyncpg is bench-only: pip install -r bench/requirements-pg.txt"
        ) from None
    reason = missing_reason()
    if reason:
        raise SystemExit(reason)

    drivers = args.drivers.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    styles = args.styles.split(",")
    print(
        f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__}), asyncpg {asyncpg.__version__},"
        f" Python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f}"
    )
    srv = PgServer().start()
    t_start = time.monotonic()
    # (style, batch, driver) -> [(occ/s, client µs/occ, server µs/occ, ratio to psycopg-thread)]
    results: dict[tuple[str, int, str], list[tuple[float, float, float]]] = {}
    try:
        url = srv.create_database()
        rng = random.Random(7)
        for rnd in range(args.rounds):
            for style in styles:
                for batch in batches:
                    if batch == 1 and style != styles[0]:
                        continue  # one row: both styles are the same statements' count
                    n = args.n1 if batch == 1 else args.n
                    order = drivers[:]
                    rng.shuffle(order)
                    for drv in order:
                        fresh_tables(url, n)
                        c0, w0 = time.process_time(), time.perf_counter()
                        done, server_ns = uvloop.run(DRIVERS[drv](url, style, n, batch))
                        w1, c1 = time.perf_counter(), time.process_time()
                        if done != n:
                            raise SystemExit(f"{drv} claimed {done} of {n}")
                        check(url, n)
                        results.setdefault((style, batch, drv), []).append(
                            (n / (w1 - w0), (c1 - c0) / n * 1e6, server_ns / n / 1000)
                        )
            print(f"round {rnd + 1} done at {time.monotonic() - t_start:.0f} s", flush=True)
    finally:
        srv.stop()

    print(
        f"\nN={args.n} (batch 1: {args.n1}), {args.rounds} rounds interleaved, medians;"
        " ratio = occ/s against psycopg-thread's, same style and batch\n"
    )
    print("| style | batch | driver | occ/s | ratio | client CPU µs/occ | server CPU µs/occ |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for style in styles:
        for batch in batches:
            base = results.get((style, batch, "psycopg-thread"))
            for drv in drivers:
                rows = results.get((style, batch, drv))
                if not rows:
                    continue
                rate = statistics.median(r[0] for r in rows)
                ratio = rate / statistics.median(r[0] for r in base) if base else float("nan")
                print(
                    f"| {style} | {batch} | {drv} | {rate:,.0f} | {ratio:.2f} |"
                    f" {statistics.median(r[1] for r in rows):.0f} |"
                    f" {statistics.median(r[2] for r in rows):.0f} |"
                )
    print(f"\ntotal {time.monotonic() - t_start:.0f} s, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
