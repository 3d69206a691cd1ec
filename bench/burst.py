#!/usr/bin/env python3
"""CPU per fire of schedd's engine in one process: a quick loop for profiling W2.

    python bench/burst.py [--n 10000] [--action webhook|noop] [--reps 3] [--profile out.prof]
                          [--postgres]

Builds a fresh store with N one-shot schedules due at the same instant T (created through
Services, as the API would), starts the real Engine and ActionRunner on uvloop pinned to
cpu1, the bench sink (bench/peers/sink.py) in its own process on cpu0, and measures from T
until every run is recorded: drain time, fires/s, CPU µs per fire of this process (all its
threads) and how many engine cycles (transactions) it took. No HTTP API, no subprocess
daemon: the numbers isolate claim + webhook + record. Compare runs of one invocation
only; the whole-daemon figures are bench/peers (bench/run_peers.sh).

--postgres: each rep runs twice, on SQLite and on PostgreSQL (a throwaway PostgreSQL 15
server, tests/pg_kit.py, started here on cpu0 beside the sink, with fsync on and
synchronous_commit off: the durability of SQLite's synchronous=NORMAL in WAL mode, a crash
of the machine may lose the last commits, never corrupt), a fresh database per rep. Its CPU
is reported too ("server CPU µs/fire": the postgres processes' user+system time).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from kit import SinkProcess, children  # noqa: E402

from schedd.actions import ActionRunner  # noqa: E402
from schedd.clock import SystemClock  # noqa: E402
from schedd.config import Settings  # noqa: E402
from schedd.daemon import freeze_startup_objects, tune_gc  # noqa: E402
from schedd.engine import Engine  # noqa: E402
from schedd.logs import setup_logging  # noqa: E402
from schedd.services import Services  # noqa: E402
from schedd.store import open_database, store_for  # noqa: E402
from schedd.timing import format_ms  # noqa: E402

PRAGMAS: list[str] = []  # --pragma: experiments on the writer connection


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def thread_cpu_s(native_id: int | None) -> float:
    """CPU seconds of one thread of this process (Linux schedstat: ns on a cpu)."""
    try:
        return int(Path(f"/proc/self/task/{native_id}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return float("nan")


def server_cpu_s(pg: Any) -> float:
    """User+system CPU seconds of the PostgreSQL server's processes so far (live ones)."""
    if pg is None:
        return 0.0
    pid = int((pg.datadir / "postmaster.pid").read_text().split()[0])
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for p in [pid, *children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


async def one(n: int, action: str, port: int, tmp: str, profile: str | None,
              pg: Any = None) -> dict[str, float]:
    db_path = Path(tmp) / f"burst-{time.monotonic_ns()}.db"
    url = pg.create_database() if pg is not None else ""
    settings = Settings(db=str(db_path), log_level="warning", database_url=url)
    clock = SystemClock()
    async with open_database(settings) as db, ActionRunner(
        user_agent="schedd-bench", now_s=time.time,
        max_connections=settings.max_concurrent_actions,
    ) as runner:
        store = store_for(db)
        for pragma in PRAGMAS if pg is None else ():
            await db._worker(db._writer).run(lambda c, p=pragma: c.execute(f"PRAGMA {p}"))
        services = Services(store, clock, settings)
        engine = Engine(store, clock, settings, runner)
        services.attach_engine(engine)
        _, key = await services.create_key("default")
        tenant = await services.authenticate(key)
        due_ms = clock.now_ms() + 2000 + n // 5  # creating takes ~0.2 ms each
        config = ({"url": f"http://127.0.0.1:{port}/hook",
                   "body": {"job": "{{schedule.name}}", "due": "{{run.scheduled_for}}"}}
                  if action == "webhook" else {})
        for i in range(n):
            await services.create_schedule(tenant, {
                "name": f"b{i}", "schedule_type": "once", "schedule_expression": format_ms(due_ms),
                "action_type": action, "action_config": config, "overlap_policy": "ALLOW",
                "max_retries": 0,
            })
        freeze_startup_objects()  # as `schedd serve` does once it listens
        await engine.start()
        await asyncio.sleep(max(0.0, due_ms / 1000 - time.time() - 0.05))
        assert db._writer is not None
        writer_tid = db._writer._thread.native_id
        ticks0, cpu0, wcpu0 = engine.ticks, cpu_s(), thread_cpu_s(writer_tid)
        scpu0 = server_cpu_s(pg)
        prof = cProfile.Profile() if profile else None
        if prof:
            prof.enable()
        while True:
            # Cheap poll (runs_active, a partial index, holds only the unfinished runs: its
            # condition must be named as it is written); the full O(N) count runs only once
            # nothing is running. Counting every 5 ms was a bench artefact that grew with N
            # (a scan of N rows on the pinned core).
            running = await db.read(lambda c: c.execute(
                "SELECT count(*) FROM runs WHERE status IN ('pending', 'running')").fetchone()[0])
            if not running and not engine.inflight:
                done = await db.read(lambda c: c.execute(
                    "SELECT count(*) FROM runs WHERE status IN ('succeeded', 'failed')"
                ).fetchone()[0])
                if done >= n:
                    break
            await asyncio.sleep(0.005)
        if prof:
            prof.disable()
            prof.dump_stats(profile)
        t1, cpu1, ticks1 = time.time(), cpu_s(), engine.ticks
        wcpu1 = thread_cpu_s(writer_tid)
        scpu1 = server_cpu_s(pg)
        failed = await db.read(lambda c: c.execute(
            "SELECT count(*) FROM runs WHERE status != 'succeeded'").fetchone()[0])
        await engine.stop(5)
    drain = t1 - due_ms / 1000
    return {"drain_s": drain, "fires_per_s": n / drain, "cpu_us_per_fire": (cpu1 - cpu0) / n * 1e6,
            "writer_us_per_fire": (wcpu1 - wcpu0) / n * 1e6,
            "cycles": ticks1 - ticks0, "not_succeeded": failed,
            "server_us_per_fire": (scpu1 - scpu0) / n * 1e6}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--action", choices=("webhook", "noop"), default="webhook")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--profile", default=None, help="cProfile the drain of the last rep")
    ap.add_argument("--log", default=None, metavar="FILE",
                    help="log at INFO as the daemon does (text lines) to FILE; default: no logs")
    ap.add_argument("--switch-interval", type=float, default=None, metavar="S",
                    help="sys.setswitchinterval (GIL hand-over; Python's default 0.005)")
    ap.add_argument("--pragma", action="append", default=[],
                    help="e.g. wal_autocheckpoint=10000 (an experiment; repeatable)")
    ap.add_argument("--postgres", action="store_true",
                    help="each rep on SQLite and then on a throwaway PostgreSQL 15 server")
    a = ap.parse_args()
    PRAGMAS.extend(a.pragma)
    tune_gc()  # as `schedd serve` does
    if a.switch_interval is not None:
        sys.setswitchinterval(a.switch_interval)
    if a.log:
        # the daemon's own setup (schedd serve), its stderr sent to a file as systemd or the
        # peer harness would
        sys.stderr.flush()
        os.dup2(os.open(a.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644), 2)
        setup_logging("info")
    os.sched_setaffinity(0, {1})
    pg = None
    if a.postgres:
        sys.path.insert(0, str(HERE.parent / "tests"))
        from pg_kit import PgServer

        pg = PgServer({"fsync": "on", "full_page_writes": "on", "synchronous_commit": "off"})
        pg.start()
        pid = int((pg.datadir / "postmaster.pid").read_text().split()[0])
        for p in [pid, *children(pid)]:  # beside the sink, away from schedd's core
            os.sched_setaffinity(p, {0})
    os.sched_setaffinity(0, {1})
    backends = [("sqlite", None)] + ([("postgres", pg)] if pg is not None else [])
    with tempfile.TemporaryDirectory() as tmp:
        sink = SinkProcess(Path(tmp), cpus="0")  # beside the server, away from schedd's core
        port = sink.port
        try:
            print(f"{'rep':>3} {'backend':>8} {'drain s':>8} {'fires/s':>8} {'CPU µs/fire':>12}"
                  f" {'cycles':>7} {'failed':>6} {'writer µs/fire':>14}"
                  f" {'server CPU µs/fire':>18}")
            results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in backends}
            for rep in range(a.reps):
                for name, server in backends:
                    prof = a.profile if rep == a.reps - 1 and name == "sqlite" else None
                    r = uvloop.run(one(a.n, a.action, port, tmp, prof, server))
                    results[name].append(r)
                    print(f"{rep:>3} {name:>8} {r['drain_s']:>8.3f} {r['fires_per_s']:>8.0f}"
                          f" {r['cpu_us_per_fire']:>12.1f} {r['cycles']:>7.0f}"
                          f" {r['not_succeeded']:>6.0f} {r['writer_us_per_fire']:>14.1f}"
                          f" {r['server_us_per_fire']:>18.1f}", flush=True)
            for name, rs in results.items():
                if len(rs) > 1:
                    med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                    print(f"med {name:>8} {med['drain_s']:>8.3f} {med['fires_per_s']:>8.0f}"
                          f" {med['cpu_us_per_fire']:>12.1f} {med['cycles']:>7.0f}"
                          f" {'':>6} {med['writer_us_per_fire']:>14.1f}"
                          f" {med['server_us_per_fire']:>18.1f}", flush=True)
        finally:
            sink.stop()
            if pg is not None:
                pg.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
