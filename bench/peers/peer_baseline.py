#!/usr/bin/env python3
""""Physical limit" baseline: a bare asyncio loop with an in-memory heap.

Store: one SQLite table jobs(id PRIMARY KEY, due, period) in WAL with
synchronous=NORMAL (the same durability setting as every peer).
register: one INSERT + COMMIT per job (like a per-request API would do);
          --via batch puts all N in one transaction (reported separately).
run:      loads every row into a heap, then sleeps until the earliest due time,
          pops everything due and POSTs it with the shared client and the same
          concurrency cap (BENCH_CONC) as the peers; interval jobs are pushed back
          at due+period.  It writes nothing back after a fire: this is the upper
          bound for "read the plan, fire on time", not a durable scheduler.
"""
import asyncio
import heapq
import os
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peerlib


def connect(db: str) -> sqlite3.Connection:
    c = sqlite3.connect(db, isolation_level=None)
    c.execute("pragma journal_mode=WAL")
    c.execute("pragma synchronous=NORMAL")
    c.execute("create table if not exists jobs (id text primary key, due real not null, period real)")
    c.execute("create index if not exists jobs_due on jobs(due)")
    return c


def register(args):
    c = connect(args.db)
    with peerlib.Timer() as t:
        if args.via == "batch":
            c.execute("begin")
        for i in range(args.n):
            jid = f"{args.prefix}{i}"
            if args.kind == "oneshot":
                row = (jid, peerlib.job_due(args.due, i, args.n, args.spread), None)
            else:
                row = (jid, args.due, args.period)
            c.execute("insert into jobs(id, due, period) values (?,?,?)", row)
        if args.via == "batch":
            c.execute("commit")
    c.close()
    peerlib.emit("REGISTERED", {"n": args.n, "seconds": t.seconds, "cpu_s": t.cpu,
                                "rate": args.n / t.seconds if t.seconds else None,
                                "via": args.via})


def run(args):
    async def main():
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        peerlib.install_stop_handlers(loop, stop)
        peerlib.aclient()
        c = connect(args.db)
        heap = [(due, jid, period) for jid, due, period in c.execute("select id, due, period from jobs")]
        heapq.heapify(heap)
        c.close()
        peerlib.ready({"loaded": len(heap)})
        tasks = set()
        deadline = time.time() + args.max_seconds
        stopper = asyncio.ensure_future(stop.wait())
        while not stop.is_set() and time.time() < deadline:
            now = time.time()
            if not heap:
                await asyncio.wait([stopper], timeout=deadline - now)
                continue
            due = heap[0][0]
            if due > now:
                await asyncio.wait([stopper], timeout=min(due - now, deadline - now))
                continue
            while heap and heap[0][0] <= now:
                due, jid, period = heapq.heappop(heap)
                t = asyncio.ensure_future(peerlib.afire(jid, due))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                if period:
                    heapq.heappush(heap, (due + period, jid, period))
            await asyncio.sleep(0)
        stopper.cancel()
        for t in list(tasks):
            t.cancel()
        await peerlib.aclose()
        d = {"errors": peerlib.ERRORS["n"]}
        d.update(peerlib.rusage_self())
        peerlib.emit("RUN_DONE", d)

    asyncio.run(main())


if __name__ == "__main__":
    peerlib.cli(register, run)
