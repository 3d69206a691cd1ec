#!/usr/bin/env python3
"""APScheduler 3.11 adapter: AsyncIOScheduler + SQLAlchemyJobStore on a SQLite file.

Config (kept identical for every workload):
  * SQLite file via SQLAlchemy (sync engine), WAL + synchronous=NORMAL
  * AsyncIOScheduler, default AsyncIOExecutor; jobs are coroutines that POST with
    the shared httpx.AsyncClient (<= BENCH_CONC in flight)
  * job_defaults: misfire_grace_time=None (AP3's default of 1 s would silently
    drop late fires in the burst), coalesce=False, max_instances=1
  * one-shot: 'date' trigger; interval: 'interval' trigger with start_date
Registration uses the public add_job() on a started-but-paused scheduler, which
writes each job to the store immediately (one INSERT + COMMIT per job).
"""
import asyncio
import datetime as dt

import sqlalchemy
from apscheduler.events import EVENT_JOB_SUBMITTED
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler

import peerlib

UTC = dt.UTC


def make_scheduler(db: str) -> AsyncIOScheduler:
    engine = sqlalchemy.create_engine(f"sqlite:///{db}")
    peerlib.sqlite_pragmas_sqlalchemy(engine)
    return AsyncIOScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=engine)},
        job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": 1},
        timezone=UTC,
    )


def register(args):
    async def main():
        sched = make_scheduler(args.db)
        sched.start(paused=True)
        with peerlib.Timer() as t:
            for i in range(args.n):
                jid = f"{args.prefix}{i}"
                if args.kind == "oneshot":
                    due = peerlib.job_due(args.due, i, args.n, args.spread)
                    sched.add_job(peerlib.ap3_oneshot, "date",
                                  run_date=dt.datetime.fromtimestamp(due, UTC),
                                  args=[jid, due], id=jid)
                else:
                    sched.add_job(peerlib.ap3_interval, "interval", seconds=args.period,
                                  start_date=dt.datetime.fromtimestamp(args.due, UTC),
                                  args=[jid], id=jid)
        await asyncio.sleep(0)
        sched.shutdown(wait=False)
        peerlib.emit("REGISTERED", {"n": args.n, "seconds": t.seconds, "cpu_s": t.cpu,
                                    "rate": args.n / t.seconds if t.seconds else None})

    asyncio.run(main())


def run(args):
    async def main():
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        peerlib.install_stop_handlers(loop, stop)
        peerlib.aclient()
        sched = make_scheduler(args.db)
        sched.add_listener(peerlib.ap3_on_submitted, EVENT_JOB_SUBMITTED)
        sched.start()
        peerlib.ready()
        try:
            await asyncio.wait_for(stop.wait(), args.max_seconds)
        except TimeoutError:
            pass
        sched.shutdown(wait=False)
        await peerlib.aclose()
        d = {"errors": peerlib.ERRORS["n"]}
        d.update(peerlib.rusage_self())
        peerlib.emit("RUN_DONE", d)

    asyncio.run(main())


if __name__ == "__main__":
    peerlib.cli(register, run)
