#!/usr/bin/env python3
"""Huey 3.x adapter: SqliteHuey + its consumer (thread workers) in this process.

register --via api (default): fire.schedule(args, eta=...) -- the public API;
    each call is one INSERT into the queue table; a running consumer later moves
    it to the schedule table (dequeue + insert) because its eta is in the future.
register --via schedule-table: huey.add_schedule(task) -- writes exactly the row
    the consumer would have written, i.e. the state of a running system whose
    consumer has already accepted the tasks.  Used to prepare W2/W3/W4 so that
    those measure firing, not the queue->schedule shuffle.
Interval jobs: emulated by a self-rescheduling task (see huey_app.py).

Consumer options (env): BENCH_HUEY_WORKERS (default 16 threads),
BENCH_HUEY_DELAY (initial poll delay, default 0.1 s = Huey default),
BENCH_HUEY_MAX_DELAY (default 10 s = Huey default), backoff 1.15 (default),
scheduler interval 1 s (Huey's minimum), periodic tasks off (none defined).
"""
import os
import sys
import time


def _setup_db(db):
    os.environ["BENCH_HUEY_DB"] = db


def register(args):
    _setup_db(args.db)
    import peerlib
    from huey_app import eta, fire, huey
    with peerlib.Timer() as t:
        for i in range(args.n):
            jid = f"{args.prefix}{i}"
            if args.kind == "oneshot":
                due = peerlib.job_due(args.due, i, args.n, args.spread)
                a = (jid, due)
            else:
                due = args.due
                a = (jid, due, args.period)
            if args.via == "schedule-table":
                huey.add_schedule(fire.s(*a, eta=eta(due)))
            else:
                fire.schedule(args=a, eta=eta(due))
    huey.storage.close()
    peerlib.emit("REGISTERED", {"n": args.n, "seconds": t.seconds, "cpu_s": t.cpu,
                                "rate": args.n / t.seconds if t.seconds else None,
                                "via": args.via})


def run(args):
    _setup_db(args.db)
    import logging

    from huey.consumer import ConsumerStopped

    import peerlib
    from huey_app import huey
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    consumer = huey.create_consumer(
        workers=int(os.environ.get("BENCH_HUEY_WORKERS", "16")),
        worker_type="thread",
        periodic=False,
        initial_delay=float(os.environ.get("BENCH_HUEY_DELAY", "0.1")),
        backoff=1.15,
        max_delay=float(os.environ.get("BENCH_HUEY_MAX_DELAY", "10")),
        scheduler_interval=1,
        check_worker_health=True,
    )
    peerlib.sclient()  # create the shared client before the clock starts
    consumer.start()  # installs SIGTERM/SIGINT handlers
    peerlib.ready()
    deadline = time.monotonic() + args.max_seconds
    hc = time.monotonic()
    while True:
        try:
            hc = consumer.loop(hc)
        except ConsumerStopped:
            break
        if time.monotonic() > deadline:
            consumer.stop(graceful=False)
            break
    d = {"errors": peerlib.ERRORS["n"]}
    d.update(peerlib.rusage_self())
    peerlib.emit("RUN_DONE", d)
    sys.stdout.flush()
    os._exit(0)  # worker threads may still be sleeping in their poll backoff


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import peerlib
    peerlib.cli(register, run)
