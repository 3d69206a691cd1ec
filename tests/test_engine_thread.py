"""`engine_thread = true`: the scheduler loop on its own thread and event loop, the HTTP API
on the main one (schedd/engine_thread.py). The real daemon runs end-to-end tests of
test_e2e.py again in that mode: fires on time with their envelope, manual trigger, cancel
and retry of a running webhook (the engine's use cases called from the API's loop), the
worker protocol with its long poll, and a SIGTERM that stops both loops cleanly."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from daemon_kit import Daemon
from sink import Sink
from test_e2e import (
    ms,
    test_cancel_aborts_a_slow_webhook_and_manual_retry,
    test_interval_webhook_fires_with_headers_envelope_and_signature,
    test_worker_claim_heartbeat_complete_and_long_poll,
)

pytestmark = pytest.mark.e2e

THREAD = {"SCHEDD_ENGINE_THREAD": "true"}

__all__ = [
    "test_cancel_aborts_a_slow_webhook_and_manual_retry",
    "test_interval_webhook_fires_with_headers_envelope_and_signature",
    "test_worker_claim_heartbeat_complete_and_long_poll",
]


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    """The daemon of the imported tests, with the engine on its own thread."""
    async with Daemon(tmp_path / "daemon", env=THREAD) as d:
        assert "the scheduler loop runs on its own thread" in d.log_text()
        yield d


async def test_sigterm_stops_both_loops_and_exits_0(tmp_path: Path, sink: Sink) -> None:
    """As test_e2e's SIGTERM test: the running webhook is interrupted and recorded by the
    stopping daemon itself (the engine's loop, on its thread, ran to its end)."""
    sink.route("/slow", delay=30)
    env = {**THREAD, "SCHEDD_SHUTDOWN_GRACE_SECONDS": "1"}
    async with Daemon(tmp_path / "d", env=env) as d:
        r = await d.post("/v1/schedules", json={
            "name": "slow", "schedule_type": "interval", "schedule_expression": "1h",
            "action_type": "webhook", "max_retries": 2, "retry_backoff_seconds": 60,
            "action_config": {"url": sink.url("/slow"), "timeout_seconds": 60}})
        assert r.status_code == 201, r.text
        r = await d.post(f"/v1/schedules/{r.json()['id']}/trigger")
        assert r.status_code == 202, r.text
        rid = r.json()["id"]
        await d.wait_run(rid, lambda x: x["status"] == "running", 10, "running")
        await sink.wait_for(1, 10)
        ready = await d.client.get("/readyz")
        assert ready.status_code == 200, ready.text
        metrics = await d.client.get("/metrics")
        assert "schedd_running_actions 1.0" in metrics.text
        t0 = time.monotonic()
        assert await d.stop() == 0
        assert time.monotonic() - t0 < 10
        await sink.wait_until(lambda k: k.requests[0].aborted, 5, "the request aborted")
        stopped_ms = int(time.time() * 1000)
        log = d.log_text()
        assert "the scheduler loop runs on its own thread" in log
        assert "Traceback" not in log

        await d.start()
        run = await d.get_run(rid)
        assert run["status"] == "failed"
        assert run["error_code"] == "interrupted"
        assert ms(run["completed_at"]) <= stopped_ms
        assert run["next_attempt_run_id"] is not None


async def test_engine_thread_runs_coroutines_on_its_loop_and_restores_the_interval() -> None:
    import asyncio
    import sys
    import threading

    from schedd.engine_thread import SWITCH_INTERVAL_S, EngineThread

    before = sys.getswitchinterval()
    host = EngineThread(asyncio.new_event_loop())
    try:
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)

        async def where() -> tuple[str, asyncio.AbstractEventLoop]:
            return threading.current_thread().name, asyncio.get_running_loop()

        name, loop = await host.run(where())
        assert name == "schedd-engine" and loop is host.loop
        assert loop is not asyncio.get_running_loop()

        async def fails() -> None:
            raise LookupError("from the engine's loop")

        with pytest.raises(LookupError, match="engine's loop"):
            await host.run(fails())
    finally:
        await host.close()
    assert host.loop.is_closed()
    assert sys.getswitchinterval() == pytest.approx(before)


async def test_proxy_wakes_the_engine_thread_only_when_it_must() -> None:
    """A create due after the engine's planned wake-up costs no hop to its thread; one due
    before it, one while a cycle runs (nothing planned) and a bare wake do."""
    import asyncio
    from typing import Any, cast

    from schedd.engine import Engine
    from schedd.engine_thread import EngineProxy, EngineThread

    class Recorded:
        metrics = None

        def __init__(self) -> None:
            self._planned_ms: int | None = 10_000
            self.woken: list[int | None] = []

        exclusive = True

        def wake(self, due_ms: int | None = None) -> None:
            self.woken.append(due_ms)

        def changed(self, due_ms: int | None = None) -> None:
            self.woken.append(-1 if due_ms is None else -due_ms)

    fake = Recorded()
    host = EngineThread(asyncio.new_event_loop())
    try:
        proxy = EngineProxy(cast(Engine, cast(Any, fake)), host)
        proxy.wake(20_000)  # after the planned wake-up: nothing to do
        proxy.wake(10_000)
        proxy.wake(9_999)  # before it
        fake._planned_ms = None  # a cycle runs: always
        proxy.wake(50_000)
        proxy.wake(None)
        fake._planned_ms = 10_000
        proxy.changed(20_000)  # one node: as wake
        proxy.changed(9_999)
        fake.exclusive = False  # other nodes share the database: always told
        proxy.changed(20_000)

        async def settled() -> None:
            return None

        await host.run(settled())  # the loop ran what was scheduled before it
        assert fake.woken == [9_999, 50_000, None, -9_999, -20_000]
    finally:
        await host.close()


async def test_a_syncs_archive_and_cancel_reach_the_engine_on_its_thread(
        daemon: Daemon) -> None:
    """The Syncs API's cancel (one transaction with its cancelRequestedBy) and archive (its
    runs cancelled in the archiving transaction, then stopped on the engine's loop), and a
    worker's claim with the sync's sourceConfig, through EngineProxy."""
    base = "/api/v1/syncs"
    r = await daemon.post(base, json={
        "connectionId": "84b500d7-71c8-4b1f-adf4-f1eb0000973d", "name": "orders",
        "providerKey": "shopify", "executionBackend": "external",
        "executionConfig": {"queue": "q"}, "status": "active",
        "sourceConfig": {"accessToken": "shpat-T"}})
    assert r.status_code == 201, r.text
    sid, by = r.json()["id"], r.json()["createdBy"]
    runs = []
    for _ in range(3):
        r = await daemon.post(f"{base}/{sid}/trigger", json={})
        assert r.status_code == 202, r.text
        runs.append(r.json()["id"])
    claim = await daemon.post("/v1/worker/claim", json={
        "queues": ["q"], "worker_id": "w", "wait_seconds": 0})
    assert claim.status_code == 200, claim.text
    assert claim.json()["resolved_payload"]["sourceConfig"] == {"accessToken": "shpat-T"}
    running = claim.json()["id"]
    pending = [x for x in runs if x != running]
    r = await daemon.post(f"{base}/runs/{pending[0]}/cancel", json={"reason": "no"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled" and r.json()["cancelRequestedBy"] == by
    r = await daemon.client.patch(f"{base}/{sid}", json={"status": "archived"})
    assert r.status_code == 200, r.text
    for rid in (running, pending[1]):
        got = (await daemon.get(f"{base}/runs/{rid}")).json()
        assert got["status"] == "cancelled", got
        assert got["cancelReason"] == "the sync was archived" and got["cancelRequestedBy"] == by
    r = await daemon.post(f"/v1/runs/{running}/heartbeat", json={"worker_id": "w"})
    assert r.status_code == 200 and r.json()["cancel_requested"] is True
    assert "Traceback" not in daemon.log_text()
