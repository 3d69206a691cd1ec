#!/usr/bin/env python3
"""Entity records and relative schedules at scale (issue 13). Two measurements:

    python bench/records.py import [--records 1000000] [--small 1000]
    python bench/records.py burst [--n 10000] [--reps 2]

`import`: the real daemon (`python -m schedd serve`, a subprocess on a temp database) with
one entity definition and 3 relative schedules over it (one with a filter). N records are
imported through POST .../records/batch, 10,000 a request, every batch re-planned for the
3 schedules in its transaction (dates spread over 2028-2037, so nothing fires meanwhile):
records/s. Then the daemon's RSS (VmRSS) is compared with the same daemon after the same
steps with `--small` records. Then a 4th relative schedule is created whose filter matches
5 marked records dated today, due at the next whole minute (creating it plans all N
records: its time is reported), and the 5 webhooks' arrival at a sink minus their
occurrence, and the runs' started_at - due_at, give the fire lateness at that scale.

`burst`: as bench/burst.py (Engine + ActionRunner in this process, the bench sink in its
own), N records whose relative occurrence is the same whole minute, against N one-shot
schedules due at one instant: fires/s of each, interleaved rep by rep. The box is shared:
compare the ratio of one invocation, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvloop

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from burst import one as one_shots  # noqa: E402
from common import start_sink  # noqa: E402
from kit import ServeProcess, SinkProcess, proc_cpu_s  # noqa: E402

from schedd.actions import ActionRunner  # noqa: E402
from schedd.clock import SystemClock  # noqa: E402
from schedd.config import Settings  # noqa: E402
from schedd.daemon import freeze_startup_objects, tune_gc  # noqa: E402
from schedd.db import Database  # noqa: E402
from schedd.engine import Engine  # noqa: E402
from schedd.services import Services  # noqa: E402
from schedd.store import Store  # noqa: E402

BATCH = 10_000


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def next_minute(lead_s: float) -> datetime:
    """The next whole minute at least lead_s from now (UTC)."""
    t = datetime.now(UTC) + timedelta(seconds=lead_s)
    return (t + timedelta(minutes=1)).replace(second=0, microsecond=0)


def _record(i: int) -> dict[str, Any]:
    day = datetime(2028, 1, 1) + timedelta(days=i % 3650)
    return {"key": f"cus_{i:07d}", "data": {"renewal": day.date().isoformat(),
                                          "plan": ("pro", "free", "team")[i % 3],
                                          "seats": i % 50}}


async def import_phase(n: int, lateness: bool) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="schedd-records-")
    d = ServeProcess(Path(tmp))
    out: dict[str, Any] = {"records": n}
    arrivals: list[tuple[float, str]] = []
    sink, sink_port = await start_sink(arrivals)
    try:
        await d.ready()
        async with httpx.AsyncClient(base_url=d.base, timeout=600) as c:
            c.headers["Authorization"] = "Bearer " + d.key()
            r = await c.post("/v1/entity-definitions", json={
                "name": "customers", "fields": {"renewal": "date", "plan": "string",
                                                "seats": "number"}})
            def_id = r.json()["id"]
            hook = {"url": f"http://127.0.0.1:{sink_port}/hook"}
            for off, flt in ((-3, None), (-30, {"plan": "pro"}), (0, None)):
                r = await c.post("/v1/schedules", json={
                    "name": f"reminder {off}", "schedule_type": "relative",
                    "schedule_expression": "09:00", "timezone": "Europe/Berlin",
                    "relative_entity_definition_id": def_id, "relative_field_name": "renewal",
                    "relative_offset_days": off, "relative_filter": flt,
                    "action_type": "webhook", "action_config": hook})
                assert r.status_code == 201, r.text
            rss_before = rss_kb(d.proc.pid)
            cpu0 = proc_cpu_s(d.proc.pid)
            t0 = time.perf_counter()
            encode_s = 0.0
            for lo in range(0, n, BATCH):
                e0 = time.perf_counter()
                body = json.dumps({"upsert": [_record(i) for i in range(lo, min(n, lo + BATCH))]})
                encode_s += time.perf_counter() - e0
                r = await c.post(f"/v1/entity-definitions/{def_id}/records/batch",
                                 content=body, headers={"Content-Type": "application/json"})
                assert r.status_code == 200, r.text[:300]
            took = time.perf_counter() - t0
            cpu = proc_cpu_s(d.proc.pid) - cpu0
            out.update(import_s=round(took, 2), records_per_s=round(n / took),
                       daemon_cpu_s=round(cpu, 2), records_per_daemon_cpu_s=round(n / cpu),
                       records_per_s_server=round(n / (took - encode_s)),
                       client_encode_s=round(encode_s, 2))
            r = await c.get(f"/v1/entity-definitions/{def_id}")
            assert r.json()["record_count"] == n
            occ = await c.get("/v1/schedules")
            out["next_run_at"] = [s["next_run_at"] for s in occ.json()["schedules"]]
            await asyncio.sleep(2)
            out.update(rss_before_mb=round(rss_before / 1024, 1),
                       rss_after_mb=round(rss_kb(d.proc.pid) / 1024, 1))
            if lateness:
                at = next_minute(12)
                today = at.date().isoformat()
                marked = [{"key": f"late_{i}", "data": {"renewal": today, "plan": "late"}}
                          for i in range(5)]
                r = await c.post(f"/v1/entity-definitions/{def_id}/records/batch",
                                 json={"upsert": marked})
                assert r.status_code == 200
                t1 = time.perf_counter()
                r = await c.post("/v1/schedules", json={
                    "name": "due soon", "schedule_type": "relative",
                    "schedule_expression": at.strftime("%H:%M"), "timezone": "UTC",
                    "relative_entity_definition_id": def_id, "relative_field_name": "renewal",
                    "relative_filter": {"plan": "late"}, "action_type": "webhook",
                    "action_config": hook})
                assert r.status_code == 201, r.text
                out["create_schedule_over_all_records_s"] = round(time.perf_counter() - t1, 2)
                sid = r.json()["id"]
                assert r.json()["next_run_at"] == at.strftime("%Y-%m-%dT%H:%M:00.000Z")
                while len(arrivals) < 5:
                    if datetime.now(UTC) > at + timedelta(seconds=30):
                        raise SystemExit("the due occurrences did not fire")
                    await asyncio.sleep(0.05)
                due = at.timestamp() * 1000
                late = sorted(a - due for a, _ in arrivals)
                runs = (await c.get(f"/v1/schedules/{sid}/runs")).json()["runs"]
                eng = sorted(_ms(x["started_at"]) - _ms(x["due_at"]) for x in runs)
                out.update(arrival_late_ms=[round(x, 1) for x in late], started_minus_due_ms=eng)
    finally:
        d.stop()
        await sink.cleanup()
        for f in Path(tmp).iterdir():
            f.unlink()
        Path(tmp).rmdir()
    return out


def _ms(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000


async def relative_burst(n: int, port: int, tmp: str) -> dict[str, float]:
    """N records due at one whole minute under one relative schedule (burst.py's shape)."""
    db_path = Path(tmp) / f"rel-{time.monotonic_ns()}.db"
    settings = Settings(db=str(db_path), log_level="warning")
    clock = SystemClock()
    async with Database(db_path) as db, ActionRunner(
        user_agent="schedd-bench", now_s=time.time,
        max_connections=settings.max_concurrent_actions,
    ) as runner:
        store = Store(db)
        services = Services(store, clock, settings)
        engine = Engine(store, clock, settings, runner)
        services.attach_engine(engine)
        _, key = await services.create_key("default")
        tenant = await services.authenticate(key)
        at = next_minute(5 + n / 4000)
        d = await services.entities.create_definition(tenant, "c", None, {"renewal": "date"})
        await services.create_schedule(tenant, {
            "name": "burst", "schedule_type": "relative",
            "schedule_expression": at.strftime("%H:%M"), "timezone": "UTC",
            "relative_entity_definition_id": d.id, "relative_field_name": "renewal",
            "action_type": "webhook", "overlap_policy": "SKIP", "max_retries": 0,
            "action_config": {"url": f"http://127.0.0.1:{port}/hook",
                              "body": {"job": "{{record.key}}", "due": "{{run.scheduled_for}}"}},
        })
        day = at.date().isoformat()
        for lo in range(0, n, BATCH):
            await services.entities.batch(tenant, d.id, [
                (f"r{i:06d}", {"renewal": day}) for i in range(lo, min(n, lo + BATCH))], [])
        freeze_startup_objects()
        await engine.start()
        due_ms = at.timestamp() * 1000
        await asyncio.sleep(max(0.0, due_ms / 1000 - time.time() - 0.05))
        ticks0 = engine.ticks
        while True:
            running = await db.read(lambda c: c.execute(
                "SELECT count(*) FROM runs WHERE status IN ('pending', 'running')").fetchone()[0])
            if not running and not engine.inflight:
                done = await db.read(lambda c: c.execute(
                    "SELECT count(*) FROM runs WHERE status IN ('succeeded', 'failed')"
                ).fetchone()[0])
                if done >= n:
                    break
            await asyncio.sleep(0.005)
        t1, ticks1 = time.time(), engine.ticks
        bad = await db.read(lambda c: c.execute(
            "SELECT count(*) FROM runs WHERE status != 'succeeded'").fetchone()[0])
        doubled = await db.read(lambda c: c.execute(
            "SELECT count(*) FROM (SELECT record_key FROM runs GROUP BY record_key"
            " HAVING count(*) > 1)").fetchone()[0])
        await engine.stop(5)
    drain = t1 - due_ms / 1000
    return {"drain_s": drain, "fires_per_s": n / drain, "cycles": ticks1 - ticks0,
            "not_succeeded": bad, "doubled": doubled}


def cmd_burst(a: argparse.Namespace) -> int:
    tune_gc()
    os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory() as tmp:
        sink = SinkProcess(Path(tmp), cpus="0")
        port = sink.port
        try:
            rel, once = [], []
            for rep in range(a.reps):
                o = uvloop.run(one_shots(a.n, "webhook", port, tmp, None))
                r = uvloop.run(relative_burst(a.n, port, tmp))
                once.append(o["fires_per_s"])
                rel.append(r["fires_per_s"])
                print(f"rep {rep}: one-shots {o['fires_per_s']:.0f}/s "
                      f"(drain {o['drain_s']:.2f} s, {o['cycles']:.0f} cycles); records "
                      f"{r['fires_per_s']:.0f}/s (drain {r['drain_s']:.2f} s, "
                      f"{r['cycles']:.0f} cycles, not succeeded {r['not_succeeded']:.0f}, "
                      f"doubled {r['doubled']:.0f})", flush=True)
            ro, rr = statistics.median(once), statistics.median(rel)
            print(f"median: one-shots {ro:.0f}/s, records {rr:.0f}/s, ratio {rr / ro:.2f}")
        finally:
            sink.stop()
    return 0


def cmd_import(a: argparse.Namespace) -> int:
    big = asyncio.run(import_phase(a.records, lateness=True))
    print(json.dumps(big, indent=1), flush=True)
    small = asyncio.run(import_phase(a.small, lateness=False))
    print(json.dumps(small, indent=1), flush=True)
    print(f"RSS after import: {big['rss_after_mb']} MB with {a.records:,} records, "
          f"{small['rss_after_mb']} MB with {a.small:,}: "
          f"+{big['rss_after_mb'] - small['rss_after_mb']:.1f} MB")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("import")
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--small", type=int, default=1000)
    p.set_defaults(func=cmd_import)
    p = sub.add_parser("burst")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--reps", type=int, default=2)
    p.set_defaults(func=cmd_burst)
    a = ap.parse_args()
    code: int = a.func(a)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
