"""Huey application module shared by the producer (register) and the consumer.

SqliteHuey on the file named by BENCH_HUEY_DB, WAL (Huey's default) plus
synchronous=NORMAL (same durability setting as every other peer).

`fire` is the only task.  With `period` set it emulates an interval job: it
first re-schedules itself for due+period through the public `schedule()` API
(Huey has no persisted interval jobs; @periodic_task is code-defined and has
minute granularity), then POSTs.
"""
import datetime as dt
import os

from huey import SqliteHuey
from huey.storage import SqliteStorage

import peerlib


class Storage(SqliteStorage):
    def _create_connection(self):
        conn = super()._create_connection()
        conn.execute("pragma synchronous=NORMAL")
        return conn


class BenchHuey(SqliteHuey):
    storage_class = Storage


huey = BenchHuey("bench", filename=os.environ.get("BENCH_HUEY_DB", "/tmp/peers-run/huey.db"),
                 utc=True)


def eta(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


@huey.task()
def fire(job, due, period=None):
    if period:
        nxt = due + period
        fire.schedule(args=(job, nxt, period), eta=eta(nxt))
    peerlib.sfire(job, due)
