#!/usr/bin/env python3
"""APScheduler 4.0 (pre-release) adapter: AsyncScheduler + SQLAlchemyDataStore
on SQLite through aiosqlite (async engine), LocalEventBroker (single process).

Config (identical for every workload):
  * sqlite+aiosqlite file, WAL + synchronous=NORMAL
  * max_concurrent_jobs = BENCH_CONC (64); the task is configured with
    max_running_jobs=None (AP4's default of 1 per task would serialise all fires)
  * misfire_grace_time None (AP4 default), coalesce 'latest' (AP4 default),
    job_result_expiration_time 0 (default: no result rows kept)
  * cleanup_interval None during runs (the default 15 min never triggers anyway)
  * one-shot: DateTrigger; interval: IntervalTrigger(seconds=P, start_time=...)
The job reads its scheduled fire time from apscheduler.current_job.
Registration: public add_schedule() on an initialised (not started) scheduler;
one transaction per schedule.
"""
import asyncio
import datetime as dt
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from apscheduler import AsyncScheduler
from apscheduler.datastores.sqlalchemy import SQLAlchemyDataStore
from apscheduler.eventbrokers.local import LocalEventBroker
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.ext.asyncio import create_async_engine

import peerlib

UTC = dt.UTC


def make_scheduler(db: str):
    engine = create_async_engine(f"sqlite+aiosqlite:///{db}")
    peerlib.sqlite_pragmas_sqlalchemy(engine.sync_engine)
    store = SQLAlchemyDataStore(engine)
    sched = AsyncScheduler(store, LocalEventBroker(), max_concurrent_jobs=peerlib.CONC,
                           cleanup_interval=None)
    return sched, engine


def _sql_clone(db: str, target: int) -> int:
    """Duplicate existing schedule rows (new ids, same trigger/args) until the
    table holds `target` rows.  Only used to build W4's 100k-row store: rows
    are what add_schedule() would have written for the same trigger."""
    import sqlite3
    c = sqlite3.connect(db, isolation_level=None)
    cols = [r[1] for r in c.execute("pragma table_info(schedules)")]
    rest = ", ".join(f'"{x}"' for x in cols if x != "id")
    k = 0
    while True:
        have = c.execute("select count(*) from schedules").fetchone()[0]
        if have >= target:
            break
        k += 1
        c.execute("begin")
        c.execute(f"insert into schedules (id, {rest}) select id || '_c{k}', {rest} "
                  f"from schedules where id not like '%\\_c%' escape '\\' limit ?",
                  (target - have,))
        c.execute("commit")
    n = c.execute("select count(*) from schedules").fetchone()[0]
    c.close()
    return n


def register(args):
    if args.via == "sql-clone":
        n_api = min(args.n, 1000)
        with peerlib.Timer() as t:
            base = args.n
            args.n = n_api
            register_api(args, quiet=True)
            args.n = base
            n = _sql_clone(args.db, args.n)
        peerlib.emit("REGISTERED", {"n": n, "seconds": t.seconds, "cpu_s": t.cpu,
                                    "via": "sql-clone", "api_rows": n_api, "rate": None})
        return
    register_api(args)


def register_api(args, quiet=False):
    async def main():
        sched, engine = make_scheduler(args.db)
        async with sched:
            await sched.configure_task(peerlib.ap4_fire, max_running_jobs=None)
            with peerlib.Timer() as t:
                for i in range(args.n):
                    jid = f"{args.prefix}{i}"
                    if args.kind == "oneshot":
                        due = peerlib.job_due(args.due, i, args.n, args.spread)
                        await sched.add_schedule(
                            peerlib.ap4_fire,
                            DateTrigger(dt.datetime.fromtimestamp(due, UTC)),
                            id=jid, args=[jid, due])
                    else:
                        await sched.add_schedule(
                            peerlib.ap4_fire,
                            IntervalTrigger(seconds=args.period,
                                            start_time=dt.datetime.fromtimestamp(args.due, UTC)),
                            id=jid, args=[jid])
        await engine.dispose()
        if not quiet:
            peerlib.emit("REGISTERED", {"n": args.n, "seconds": t.seconds, "cpu_s": t.cpu,
                                        "rate": args.n / t.seconds if t.seconds else None})

    asyncio.run(main())


def run(args):
    async def main():
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        peerlib.install_stop_handlers(loop, stop)
        peerlib.aclient()
        sched, engine = make_scheduler(args.db)
        async with sched:
            await sched.start_in_background()
            peerlib.ready()
            try:
                await asyncio.wait_for(stop.wait(), args.max_seconds)
            except TimeoutError:
                pass
            await sched.stop()
        await engine.dispose()
        await peerlib.aclose()
        d = {"errors": peerlib.ERRORS["n"]}
        d.update(peerlib.rusage_self())
        peerlib.emit("RUN_DONE", d)

    asyncio.run(main())


if __name__ == "__main__":
    peerlib.cli(register, run)
