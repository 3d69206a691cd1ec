"""End to end through the compatibility routers: the real daemon as a subprocess, a worker
claiming an action's runs from the queue named by its endpoint_id, a webhook endpoint
mapped by [compat] endpoints, Kragle ticks recorded as runs, and /v1 seeing (and pausing)
what the routers made. Every wait is bounded."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

try:
    from tests.daemon_kit import Daemon
    from tests.sink import Sink
except ModuleNotFoundError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from daemon_kit import Daemon
    from sink import Sink

# on SQLite and on PostgreSQL (tests/db_backend.py)
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("database_url")]

BASE = "/v1/orgs/acme/workspaces/ws-e2e/apps/app-e2e/actions"


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    async with Daemon(tmp_path / "daemon") as d:
        yield d


async def test_an_every_minute_action_is_delivered_to_its_endpoint_queue(
        daemon: Daemon) -> None:
    r = await daemon.post(BASE, json={
        "name": "sync threads", "endpoint_id": "ep-e2e", "namespace_id": "ns-e2e",
        "cron_expression": "* * * * *", "thread_mode": "template",
        "thread_id_template": "thread-{{run.id}}", "payload": {"kind": "digest", "n": 1}})
    assert r.status_code == 201, r.text
    action = r.json()
    aid = action["action_id"]
    # the next fire is the next minute boundary
    nxt = datetime.fromisoformat(action["next_run_at"].replace("Z", "+00:00"))
    assert nxt.second == 0 and nxt.microsecond == 0
    assert 0 <= nxt.timestamp() - time.time() <= 61
    # Rather than wait up to a minute for it, trigger the same action now (the scheduled
    # run takes the same path: a pending run on queue endpoint_id).
    r = await daemon.post(f"{BASE}/{aid}/trigger", json={"payload": {"n": 2}})
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    r = await daemon.post("/v1/worker/claim", json={"queues": ["ep-e2e"], "worker_id": "w1",
                                                    "wait_seconds": 5})
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["id"] == run_id
    assert job["resolved_payload"] == {
        "payload": {"kind": "digest", "n": 2}, "thread_id": f"thread-{run_id}",
        "namespace_id": "ns-e2e", "action_id": aid}
    running = (await daemon.get(f"{BASE}/{aid}")).json()
    assert (running["is_running"], running["total_runs"]) == (True, 1)
    r = await daemon.post(f"/v1/runs/{run_id}/complete",
                          json={"worker_id": "w1", "status": "succeeded"})
    assert r.status_code == 200, r.text
    after = (await daemon.get(f"{BASE}/{aid}")).json()
    assert (after["is_running"], after["successful_runs"], after["last_execution_id"]) == (
        False, 1, run_id)
    run = (await daemon.get(f"{BASE}/{aid}/runs/{run_id}")).json()
    assert (run["status"], run["resolved_thread_id"]) == ("succeeded", f"thread-{run_id}")

    # created through the router, paused through /v1: the router shows it disabled
    r = await daemon.post(f"/v1/schedules/{aid}/pause")
    assert r.status_code == 200, r.text
    shown = (await daemon.get(f"{BASE}/{aid}")).json()
    assert (shown["is_enabled"], shown["next_run_at"]) == (False, None)
    listed = (await daemon.get(BASE)).json()
    assert [(a["action_id"], a["is_enabled"]) for a in listed["actions"]] == [(aid, False)]


async def test_a_mapped_endpoint_is_called_as_a_webhook(tmp_path: Path) -> None:
    async with Sink() as sink:
        env = {"SCHEDD_COMPAT_ENDPOINTS": json.dumps({"hook-ep": sink.url("/in")})}
        async with Daemon(tmp_path / "d", env=env) as daemon:
            r = await daemon.post(BASE, json={
                "name": "hook", "endpoint_id": "hook-ep", "namespace_id": "ns",
                "cron_expression": "0 0 1 1 *", "thread_mode": "fixed", "thread_id": "T-1",
                "payload": {"a": 1}})
            assert r.status_code == 201, r.text
            aid = r.json()["action_id"]
            r = await daemon.post(f"{BASE}/{aid}/trigger")
            assert r.status_code == 202, r.text
            [req] = await sink.wait_for(1, 10)
            assert json.loads(req.body) == {"payload": {"a": 1}, "thread_id": "T-1",
                                            "namespace_id": "ns", "action_id": aid}
            run_id = r.json()["run_id"]
            assert req.headers["idempotency-key"] == run_id
            await daemon.wait_run(run_id, lambda x: x["status"] == "succeeded")


async def test_kragle_ticks_appear_as_runs(daemon: Daemon) -> None:
    r = await daemon.post("/kragle/schedules", json={"config": {"period": 1}, "name": "tick"})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    deadline = time.monotonic() + 10
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        runs = (await daemon.get(f"/v1/schedules/{sid}/runs")).json()["runs"]
        if sum(x["status"] == "succeeded" for x in runs) >= 2:
            break
        await asyncio.sleep(0.1)
    done = [x for x in runs if x["status"] == "succeeded"]
    assert len(done) >= 2, runs
    assert {x["action_type"] for x in done} == {"noop"}
    assert {x["trigger_type"] for x in done} <= {"scheduled", "catchup"}
    got = (await daemon.get(f"/kragle/schedules/byid/{sid}")).json()
    assert got == {"id": sid, "name": "tick", "once": False, "config": {"period": 1}}
    page = (await daemon.get("/kragle/schedules")).json()
    assert (page["count"], page["pagesize"], page["page"]) == (1, 1, 1)

