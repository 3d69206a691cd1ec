#!/usr/bin/env python3
"""Does pruning a million runs stall the scheduler loop?

Creates a store with N old finished runs (default 1,000,000, written with sqlite3 in one
transaction: 1,000 schedules × 1,000 runs, all 60 days old), then starts the real daemon
on it. Its pruner runs at start, deleting in small batches. Meanwhile 5 interval schedules
fire every second to a local sink; the report gives their lateness during the pruning,
how long pruning took, and how many runs are left (each schedule keeps its newest 100).

    python bench/prune.py [--runs 1000000] [--port 18791]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx
from common import start_sink, wait_ready

DAY = 86_400_000


def populate(db: str, n_runs: int, per_schedule: int = 1000) -> None:
    """Old runs behind schedules that already exist (created by the daemon's first start)."""
    con = sqlite3.connect(db)
    tenant = con.execute("SELECT id FROM tenants").fetchone()[0]
    now = int(time.time() * 1000)
    old = now - 60 * DAY
    cols = [r[1] for r in con.execute("PRAGMA table_info(schedules)") if r[1] != "seq"]
    con.execute("BEGIN")
    for i in range(n_runs // per_schedule):
        sid = str(uuid.uuid4())
        row = {c: None for c in cols}
        row.update(id=sid, tenant_id=tenant, name=f"old-{i}", schedule_type="interval",
                   schedule_expression="1h", timezone="UTC", action_type="noop",
                   action_config="{}", overlap_policy="SKIP", catchup_window_minutes=10,
                   catchup_policy="ALL", flexible_window_minutes=0, max_retries=0,
                   retry_backoff_seconds=60, pause_on_failure_count=5,
                   action_after_completion="NONE", status="paused", run_count=0,
                   consecutive_failures=0, missed_count=0, created_ms=old, updated_ms=old,
                   paused_reason="manual")
        con.execute(f"INSERT INTO schedules ({','.join(cols)}) VALUES "
                    f"({','.join('?' * len(cols))})", [row[c] for c in cols])
        con.executemany(
            "INSERT INTO runs (id, schedule_id, tenant_id, status, trigger_type, manual,"
            " scheduled_for_ms, due_ms, triggered_ms, started_ms, completed_ms, attempt,"
            " attempt_root_run_id, action_type, waiting) VALUES"
            " (?, ?, ?, 'succeeded', 'scheduled', 0, ?, ?, ?, ?, ?, 1, ?, 'noop', 0)",
            [(rid, sid, tenant, t, t, t, t, t + 5, rid)
             for k in range(per_schedule)
             for rid, t in [(str(uuid.uuid4()), old + k * 60_000)]],
        )
    con.commit()
    con.close()


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1_000_000)
    ap.add_argument("--port", type=int, default=18791)
    args = ap.parse_args()

    arrivals: list[tuple[float, str]] = []
    runner, sink_port = await start_sink(arrivals)

    tmp = Path(tempfile.mkdtemp(prefix="schedd-prune-"))
    db = str(tmp / "schedd.db")
    cmd = [sys.executable, "-m", "schedd", "serve", "--db", db, "--port", str(args.port)]
    env = {**os.environ, "SCHEDD_LOG_LEVEL": "info"}
    # first start: schema and key; then stop, add the old runs, and start again
    first = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{args.port}"
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        await wait_ready(client)
    first.send_signal(signal.SIGTERM)
    first.wait(30)
    t = time.monotonic()
    populate(db, args.runs)
    print(f"populated {args.runs:,} old runs in {time.monotonic() - t:.1f} s "
          f"({os.path.getsize(db) / 1e6:.0f} MB)")

    log = open(tmp / "daemon.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, stderr=log)
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            await wait_ready(client)
            key = Path(db + ".key").read_text().strip()
            h = {"Authorization": f"Bearer {key}"}
            start_iso = datetime.fromtimestamp(int(time.time()) + 1).astimezone().isoformat()
            for i in range(5):
                r = await client.post("/v1/schedules", headers=h, json={
                    "name": f"tick-{i}", "schedule_type": "interval",
                    "schedule_expression": "1s", "start_at": start_iso,
                    "overlap_policy": "ALLOW", "max_retries": 0, "action_type": "webhook",
                    "action_config": {"url": f"http://127.0.0.1:{sink_port}/hook"}})
                r.raise_for_status()
            # wait for the pruner's log line (bounded)
            deadline = time.monotonic() + 600
            pruned_at = None
            while time.monotonic() < deadline:
                text = (tmp / "daemon.log").read_text()
                if "pruned" in text:
                    pruned_at = time.monotonic()
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        await runner.cleanup()
    con = sqlite3.connect(db)
    left = con.execute("SELECT count(*) FROM runs WHERE schedule_id IN"
                       " (SELECT id FROM schedules WHERE name LIKE 'old-%')").fetchone()[0]
    con.close()

    def parse(ts: str) -> float:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000

    late = sorted(a - parse(o) for a, o in arrivals)
    took = None if pruned_at is None else pruned_at - started
    print(f"pruning took {took:.1f} s after start; old runs left: {left:,} "
          f"(expected {args.runs // 1000 * 100:,})" if took else "pruning did not finish")
    if late:
        print(f"fires during and after pruning: n={len(late)} "
              f"median={statistics.median(late):.1f} ms "
              f"p99={late[min(len(late) - 1, int(0.99 * len(late)))]:.1f} ms "
              f"max={late[-1]:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
