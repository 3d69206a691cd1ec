"""The Syncs API end to end with the `external` backend: the real daemon, and workers that
are separate processes speaking the worker protocol (tests/sync_worker.py)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from daemon_kit import Daemon, poll

# on SQLite and on PostgreSQL (tests/db_backend.py)
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("database_url")]

BASE = "/api/v1/syncs"
CONN = "84b500d7-71c8-4b1f-adf4-f1eb0000973d"
WORKER = Path(__file__).with_name("sync_worker.py")


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    async with Daemon(tmp_path / "d") as d:
        yield d


class Worker:
    def __init__(self, d: Daemon, out: Path, queue: str, worker_id: str, mode: str,
                 count: int = 1) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), d.base_url, d.key, queue, worker_id, mode,
             str(count), str(out)], stdin=subprocess.DEVNULL)

    def events(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines()]

    async def wait(self, timeout: float = 20) -> int:
        end = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > end:
                self.proc.kill()
                raise AssertionError("the worker did not finish")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


async def create_sync(d: Daemon, **body: Any) -> dict[str, Any]:
    r = await d.post(BASE, json={"connectionId": CONN, "name": "e2e",
                                 "executionBackend": "external", **body})
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


async def runs_of(d: Daemon, sync_id: str) -> list[dict[str, Any]]:
    r = await d.get(f"{BASE}/{sync_id}/runs", params={"limit": 100})
    assert r.status_code == 200, r.text
    out: list[dict[str, Any]] = r.json()["runs"]
    return out


async def test_every_second_sync_is_claimed_and_completed_by_a_worker_process(
    daemon: Daemon, tmp_path: Path
) -> None:
    d = daemon
    s = await create_sync(d, status="active", triggerMode="scheduled", providerKey="klaviyo",
                          entities=["events"],
                          schedule={"scheduleType": "interval", "scheduleExpression": "1s"})
    w = Worker(d, tmp_path / "w.jsonl", "sync.klaviyo", "worker-a", "complete", 3)
    try:
        assert await w.wait() == 0
    finally:
        w.close()
    r = await d.patch(f"{BASE}/{s['id']}", json={"status": "paused"})
    assert r.status_code == 200 and r.json()["status"] == "paused"
    done = [e for e in w.events() if e["event"] == "completed"]
    assert len(done) == 3
    claimed = [e for e in w.events() if e["event"] == "claimed"]
    assert all(e["payload"]["syncId"] == s["id"] and e["payload"]["entities"] == ["events"]
               for e in claimed)
    runs = {r["id"]: r for r in await runs_of(d, s["id"])}
    for i, e in enumerate(done):
        run = runs[e["run_id"]]
        assert run["status"] == "succeeded" and run["resultClass"] == "success"
        assert run["triggeredBy"] == "schedule" and run["executorId"] == "worker-a"
        assert run["summary"] == {"rowsWritten": 10 + i, "worker": "worker-a"}
        assert run["lastHeartbeatAt"] is not None and run["executionBackend"] == "external"
    got = (await d.get(f"{BASE}/{s['id']}")).json()
    assert got["lastSuccessAt"] == max(runs[e["run_id"]]["completedAt"] for e in done)


async def test_a_worker_that_stops_heartbeating_times_out_and_the_retry_is_chained(
    daemon: Daemon, tmp_path: Path
) -> None:
    d = daemon
    s = await create_sync(d, executionConfig={"queue": "hb", "maxRetries": 1,
                                              "retryBackoffSeconds": 0})
    first = (await d.post(f"{BASE}/{s['id']}/trigger", json={"runMode": "full_refresh"})).json()
    stalled = Worker(d, tmp_path / "stall.jsonl", "hb", "worker-stall", "stall")
    try:
        assert await stalled.wait() == 0
    finally:
        stalled.close()

    async def get(rid: str) -> dict[str, Any]:
        out: dict[str, Any] = (await d.get(f"{BASE}/runs/{rid}")).json()
        return out

    failed = await poll(lambda: get(first["id"]), lambda r: r["status"] == "failed", 10,
                        "the lease to run out")
    assert failed["resultReasonCode"] == "heartbeat_timeout"
    assert failed["resultClass"] == "failure" and "worker-stall" in failed["error"]
    assert failed["nextAttemptRunId"] is not None
    good = Worker(d, tmp_path / "good.jsonl", "hb", "worker-good", "complete", 1)
    try:
        assert await good.wait() == 0
    finally:
        good.close()
    retry = await poll(lambda: get(failed["nextAttemptRunId"]),
                       lambda r: r["status"] == "succeeded", 10, "the retry to succeed")
    assert retry["previousAttemptRunId"] == first["id"]
    assert retry["attemptRootRunId"] == first["id"] and retry["attemptNumber"] == 2
    assert retry["triggeredBy"] == "retry" and retry["runMode"] == "full_refresh"
    assert retry["executorId"] == "worker-good"


async def test_cancel_reaches_the_worker_at_its_next_heartbeat(
    daemon: Daemon, tmp_path: Path
) -> None:
    d = daemon
    s = await create_sync(d, executionConfig={"queue": "cx"})
    run = (await d.post(f"{BASE}/{s['id']}/trigger", json={})).json()
    w = Worker(d, tmp_path / "watch.jsonl", "cx", "worker-watch", "watch")
    try:
        await poll(lambda: d.get(f"{BASE}/runs/{run['id']}"),
                   lambda r: r.json()["status"] == "running", 10, "the claim")
        r = await d.post(f"{BASE}/runs/{run['id']}/cancel", json={"reason": "stop it"})
        assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
        assert await w.wait() == 0
    finally:
        w.close()
    assert [e["event"] for e in w.events()] == ["claimed", "cancel_seen"]
    got = (await d.get(f"{BASE}/runs/{run['id']}")).json()
    assert got["cancelReason"] == "stop it" and got["resultClass"] == "cancelled"
    assert got["executorId"] == "worker-watch"
