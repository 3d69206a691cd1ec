"""Several real `schedd serve` processes on one PostgreSQL (issue 16, SPEC §8): they share
the work, and SIGKILLing one of them loses and doubles nothing: every occurrence has exactly
one first attempt (a run, or inside a missed record's range), every interrupted run was
retried (by another node once the dead node's lease ran out, or by the node itself at its
restart), and no run reached the receiver twice."""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any

from daemon_kit import Daemon, poll
from sink import Sink
from test_e2e import _check_accounting, webhook_schedule

NODES = 3
SCHEDULES = 100
LEASE_S = 3  # short, so that a dead node's runs are retried within seconds


async def _active(d: Daemon) -> int:
    total = 0
    for status in ("pending", "running"):
        r = await d.get("/v1/runs", params={"status": status, "limit": 1})
        assert r.status_code == 200, r.text
        total += r.json()["total"]
    return total


async def test_three_nodes_on_one_postgresql_survive_sigkills_of_one_of_them(
    tmp_path: Path, sink: Sink, pg_url: str
) -> None:
    rng = random.Random(int(os.environ.get("SCHEDD_E2E_KILL_SEED", "20261204")))
    # each request stays in flight a good part of the second: a kill lands mid-action
    sink.route("/n", delay=0.4)
    env = {"SCHEDD_DATABASE_URL": pg_url, "SCHEDD_NODE_LEASE_SECONDS": str(LEASE_S),
           "SCHEDD_SLEEP_CAP_SECONDS": "2", "SCHEDD_MAX_CONCURRENT_ACTIONS": "300"}
    nodes = [Daemon(tmp_path / f"node{i}", env=env) for i in range(NODES)]
    try:
        await nodes[0].start()
        for d in nodes[1:]:
            # the key is in the database; each node's client finds it beside its --db
            d.key_path.write_text(nodes[0].key_path.read_text())
            await d.start()
        body = {"schedule_expression": "1s", "overlap_policy": "ALLOW", "max_retries": 10,
                "retry_backoff_seconds": 0, "schedule_type": "interval"}
        schedules: list[dict[str, Any]] = []
        for i in range(SCHEDULES):  # created through every node in turn
            schedules.append(await nodes[i % NODES].create_schedule(
                **webhook_schedule(sink.url("/n"), name=f"m{i}", **body)))
        victim = nodes[1]
        for _ in range(3):
            await asyncio.sleep(rng.uniform(2.0, 3.5))
            victim.kill()
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            await victim.start()
        await asyncio.sleep(2.0)
        for s in schedules:
            r = await nodes[0].post(f"/v1/schedules/{s['id']}/pause")
            assert r.status_code == 200, r.text
        # what was running on the victim at its last kill is retried within a lease or so
        await poll(lambda: _active(nodes[2]), lambda n: n == 0, 8 * LEASE_S + 20,
                   "no pending or running run")

        totals: Counter[str] = Counter()
        requests = sink.requests_to("/n")
        for s in schedules:
            schedule = (await nodes[2].get(f"/v1/schedules/{s['id']}")).json()
            runs = await nodes[0].all_runs(s["id"])
            mine = [q for q in requests if q.header("x-schedd-schedule-id") == s["id"]]
            totals.update(_check_accounting(schedule, runs, mine))
        print("three nodes:", dict(totals))
        assert totals["interrupted"] > 0, "no kill landed mid-action: the test proved nothing"
        for d in nodes:  # every node did a share of the work
            assert d.log_text().count(" run running") > 0, d.workdir
        assert victim.log_text().count("===== start #") == 4
    finally:
        for d in nodes:
            await d.close()
