"""SIGKILL with a sync on the `native` backend (issue 15): the real daemon, a local webhook
sink, kills at seeded instants while the sync fires every second. Nothing lost or doubled:
each occurrence has exactly one first attempt (a run, a run skipped by the overlap policy,
or a place in a missed record); an interrupted run is retried, chained; no run reaches the
sink twice. The external backend's leased run and the Prefect backend's flow run across a
SIGKILL are in tests/test_syncs_prefect.py."""

from __future__ import annotations

import asyncio
import os
import random
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from daemon_kit import Daemon, poll
from sink import Sink, SinkRequest

pytestmark = pytest.mark.e2e

BASE = "/api/v1/syncs"
CONN = "84b500d7-71c8-4b1f-adf4-f1eb0000973d"
FINISHED = {"succeeded", "failed", "cancelled", "skipped"}


def ms(ts: str) -> int:
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


def _account(sync_id: str, created_ms: int, runs: list[dict[str, Any]],
             reqs: list[SinkRequest]) -> dict[str, int]:
    by_id = {r["id"]: r for r in runs}
    assert len(by_id) == len(runs)
    first: dict[int, list[str]] = defaultdict(list)
    for r in runs:
        assert r["schedule_id"] == sync_id and r["status"] in FINISHED, r
        if r["error_code"] == "missed":
            res = r["result"]
            lo, hi, n = ms(res["first"]), ms(res["last"]), res["missed_count"]
            assert r["status"] == "skipped" and n == (hi - lo) // 1000 + 1, r
            for occ in range(lo, hi + 1, 1000):
                first[occ].append(r["id"])
            continue
        if r["attempt"] == 1:
            assert r["trigger_type"] in ("scheduled", "catchup"), r
            first[ms(r["scheduled_for"])].append(r["id"])
        else:
            prev = by_id.get(r["previous_attempt_run_id"])
            assert prev is not None and prev["next_attempt_run_id"] == r["id"], r
            assert prev["scheduled_for"] == r["scheduled_for"] and r["trigger_type"] == "retry"
        if r["status"] == "skipped":
            assert r["error_code"] == "overlap", r  # SKIP, the sync's overlap policy
            assert r["attempt"] == 1 and r["started_at"] is None, r
        if r["error_code"] == "interrupted":
            nxt = by_id.get(r["next_attempt_run_id"] or "")
            assert nxt is not None and nxt["attempt"] == r["attempt"] + 1, r
        if r["next_attempt_run_id"] is None and r["status"] != "skipped":
            assert r["status"] == "succeeded", f"a chain ended {r['status']}: {r}"
    last = max(first)
    expected = set(range(created_ms + 1000, last + 1, 1000))
    missing = sorted(expected - set(first))
    doubled = {o: ids for o, ids in first.items() if len(ids) != 1}
    assert not missing, f"lost occurrences: {missing}"
    assert not set(first) - expected, "occurrences off the 1 s grid"
    assert not doubled, f"doubled occurrences: {doubled}"
    sent: dict[str, int] = defaultdict(int)
    for q in reqs:
        assert q.headers["x-schedd-schedule-id"] == sync_id
        run = by_id.get(q.headers["x-schedd-run-id"])
        assert run is not None and str(run["attempt"]) == q.headers["x-schedd-attempt"]
        sent[run["id"]] += 1
    assert not {k: n for k, n in sent.items() if n > 1}, "a run sent twice"
    for r in runs:
        if r["status"] == "succeeded":
            assert sent.get(r["id"]) == 1, f"a succeeded run never reached the sink: {r}"
    return {"occurrences": len(expected), "runs": len(runs),
            "interrupted": sum(r["error_code"] == "interrupted" for r in runs),
            "skipped": sum(r["status"] == "skipped" for r in runs)}


async def test_sigkill_with_a_native_sync_loses_and_doubles_nothing(
        tmp_path: Path, sink: Sink) -> None:
    rng = random.Random(int(os.environ.get("SCHEDD_E2E_KILL_SEED", "20261204")))
    sink.route("/slow", delay=0.6)  # a kill likely lands while a request is in flight
    async with Daemon(tmp_path / "d") as d:
        r = await d.post(BASE, json={
            "connectionId": CONN, "name": "every second", "status": "active",
            "triggerMode": "scheduled",
            "schedule": {"scheduleType": "interval", "scheduleExpression": "1s"},
            "executionConfig": {"action_type": "webhook",
                                "action_config": {"url": sink.url("/slow")},
                                "maxRetries": 10, "retryBackoffSeconds": 0}})
        assert r.status_code == 201, r.text
        sync = r.json()
        sid = sync["id"]
        for _ in range(3):
            await asyncio.sleep(rng.uniform(1.5, 3.0))
            d.kill()
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            await d.start()
        await asyncio.sleep(1.5)
        # stop it firing through its own API, then let what is left finish
        r = await d.client.patch(f"{BASE}/{sid}", json={"status": "paused"})
        assert r.status_code == 200, r.text

        async def active() -> int:
            total = 0
            for status in ("pending", "running"):
                got = await d.get("/v1/runs", params={"schedule_id": sid, "status": status,
                                                      "limit": 1})
                total += got.json()["total"]
            return total

        await poll(active, lambda n: n == 0, 20, "no pending or running run")
        runs = await d.all_runs(sid)
        stats = _account(sid, ms(sync["createdAt"]), runs, sink.requests_to("/slow"))
        print("native sync kill test:", stats)
        assert stats["occurrences"] >= 5
        # the Syncs API shows the same runs in its own shape, retries chained
        r = await d.get(f"{BASE}/{sid}/runs", params={"limit": 100})
        assert r.status_code == 200
        shown = r.json()
        assert shown["total"] == len(runs) and shown["runs"]
        for x in shown["runs"]:
            assert x["triggeredBy"] == ("retry" if x["attemptNumber"] > 1 else "schedule"), x
        assert d.log_text().count("===== start #") == 4
