#!/usr/bin/env python3
"""Fire lateness of the real daemon on an idle machine.

Starts `schedd serve` on a temporary database, a webhook sink in this process, and N
interval schedules (default 20, every 1 s, aligned to whole seconds). For every request
the sink receives, lateness = arrival - the occurrence (X-Schedd-Scheduled-For); from the
run records, start lateness = started_at - due_at. Prints median, p90, p99 and max of both.

    python bench/lateness.py [--schedules 20] [--seconds 20] [--port 18790]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
from common import start_sink, wait_ready


def iso_ms(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def summary(name: str, values: list[float]) -> str:
    if not values:
        return f"{name}: no samples"
    return (f"{name}: n={len(values)} median={statistics.median(values):.2f} ms "
            f"p90={pct(values, 0.9):.2f} p99={pct(values, 0.99):.2f} max={max(values):.2f}")


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--schedules", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--port", type=int, default=18790)
    args = ap.parse_args()

    arrivals: list[tuple[float, str]] = []
    runner, sink_port = await start_sink(arrivals)

    tmp = Path(tempfile.mkdtemp(prefix="schedd-lateness-"))
    db = str(tmp / "schedd.db")
    env = {**os.environ, "SCHEDD_LOG_LEVEL": "warning"}
    proc = subprocess.Popen([sys.executable, "-m", "schedd", "serve", "--db", db,
                             "--port", str(args.port)], env=env)
    base = f"http://127.0.0.1:{args.port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            await wait_ready(client)
            key = Path(db + ".key").read_text().strip()
            h = {"Authorization": f"Bearer {key}"}
            start = (int(time.time()) + 2) * 1000
            start_iso = datetime.fromtimestamp(start / 1000).astimezone().isoformat()
            ids = []
            for i in range(args.schedules):
                r = await client.post("/v1/schedules", headers=h, json={
                    "name": f"lat-{i}", "schedule_type": "interval", "schedule_expression": "1s",
                    "start_at": start_iso, "overlap_policy": "ALLOW", "max_retries": 0,
                    "action_type": "webhook",
                    "action_config": {"url": f"http://127.0.0.1:{sink_port}/hook"},
                })
                r.raise_for_status()
                ids.append(r.json()["id"])
            await asyncio.sleep(2 + args.seconds)
            starts: list[float] = []
            for sid in ids:
                offset = 0
                while True:
                    page = (await client.get(f"/v1/schedules/{sid}/runs", headers=h,
                                             params={"limit": 100, "offset": offset})).json()
                    for run in page["runs"]:
                        if run["started_at"]:
                            starts.append(iso_ms(run["started_at"]) - iso_ms(run["due_at"]))
                    if not page["has_more"]:
                        break
                    offset += 100
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        await runner.cleanup()

    fires = [arr - iso_ms(occ) for arr, occ in arrivals]
    print(f"schedd lateness, {args.schedules} schedules every 1 s for {args.seconds:.0f} s")
    print(summary("webhook arrival - occurrence", fires))
    print(summary("run started_at - due_at     ", starts))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
