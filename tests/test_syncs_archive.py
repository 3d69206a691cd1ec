"""What archiving a sync does to its runs, and a sync run's cancel as one transaction
(docs/compat.md "Archiving a sync")."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Api
from test_api_schedules import advance, tick

from schedd.clock import FakeClock
from schedd.store import sqlite_syncs as sync_store

BASE = "/api/v1/syncs"
CONN = "84b500d7-71c8-4b1f-adf4-f1eb0000973d"


async def _sync(api: Api, **body: Any) -> dict[str, Any]:
    r = await api.post(BASE, json={
        "connectionId": CONN, "name": "orders", "executionBackend": "external",
        "executionConfig": {"queue": "q", "retryBackoffSeconds": 60}, "status": "active",
        **body})
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


async def _trigger(api: Api, sid: str) -> str:
    r = await api.post(f"{BASE}/{sid}/trigger", json={})
    assert r.status_code == 202, r.text
    rid: str = r.json()["id"]
    return rid


async def _claim(api: Api) -> str:
    r = await api.post("/v1/worker/claim", json={"queues": ["q"], "worker_id": "w",
                                                  "wait_seconds": 0})
    assert r.status_code == 200, r.text
    rid: str = r.json()["id"]
    return rid


async def _run(api: Api, rid: str) -> dict[str, Any]:
    r = await api.get(f"{BASE}/runs/{rid}")
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


async def test_archiving_cancels_every_run_not_finished(api: Api, clock: FakeClock) -> None:
    s = await _sync(api)
    sid = s["id"]
    # A failed by its worker: its automatic retry A2 waits for its backoff
    a = await _trigger(api, sid)
    assert await _claim(api) == a
    r = await api.post(f"/v1/runs/{a}/complete", json={
        "worker_id": "w", "status": "failed", "error_message": "boom"})
    assert r.status_code == 200, r.text
    tick(api, clock)  # the engine records the failure and chains the retry
    a2 = (await _run(api, a))["nextAttemptRunId"]
    assert a2 is not None and (await _run(api, a2))["status"] == "pending"
    b = await _trigger(api, sid)
    assert await _claim(api) == b  # running at the worker
    done = await _trigger(api, sid)
    assert await _claim(api) == done
    r = await api.post(f"/v1/runs/{done}/complete", json={"worker_id": "w",
                                                          "status": "succeeded"})
    assert r.status_code == 200
    c = await _trigger(api, sid)   # waiting for a worker

    r = await api.patch(f"{BASE}/{sid}", json={"status": "archived"})
    assert r.status_code == 200 and r.json()["status"] == "archived", r.text
    for rid in (a2, b, c):
        run = await _run(api, rid)
        assert run["status"] == "cancelled" and run["resultClass"] == "cancelled", run
        assert run["cancelReason"] == "the sync was archived", run
        assert run["cancelRequestedBy"] == s["createdBy"] and run["cancelRequestedAt"]
    assert (await _run(api, done))["status"] == "succeeded"  # finished runs keep their end
    assert (await _run(api, a))["status"] == "failed"
    # the worker running B learns it at its next heartbeat
    r = await api.post(f"/v1/runs/{b}/heartbeat", json={"worker_id": "w"})
    assert r.status_code == 200 and r.json()["cancel_requested"] is True
    # nothing is left to claim, and no time brings a new run
    r = await api.post("/v1/worker/claim", json={"queues": ["q"], "worker_id": "w",
                                                  "wait_seconds": 0})
    assert r.status_code == 204, r.text
    advance(api, clock, 3_600_000)
    tick(api, clock)
    assert (await api.get(f"{BASE}/{sid}/runs")).json()["total"] == 5
    # and no one runs it again by hand
    for path in (f"{BASE}/runs/{c}/retry", f"/v1/runs/{c}/retry"):
        r = await api.post(path, json={})
        assert r.status_code == 409 and "archived" in r.text, (path, r.text)
    assert (await api.get(f"{BASE}/{sid}/runs")).json()["total"] == 5
    # archiving again changes nothing; un-archiving does not bring runs back
    assert (await api.patch(f"{BASE}/{sid}", json={"status": "archived"})).status_code == 200
    r = await api.patch(f"{BASE}/{sid}", json={"status": "paused"})
    assert r.status_code == 200
    assert (await _run(api, c))["status"] == "cancelled"
    r = await api.post(f"{BASE}/runs/{c}/retry", json={})  # now allowed again
    assert r.status_code == 202, r.text


async def test_pausing_a_sync_keeps_its_runs(api: Api) -> None:
    """Only archiving ends runs: a paused sync's started or queued runs go on."""
    s = await _sync(api)
    c = await _trigger(api, s["id"])
    r = await api.patch(f"{BASE}/{s['id']}", json={"status": "paused"})
    assert r.status_code == 200
    assert (await _run(api, c))["status"] == "pending"
    assert await _claim(api) == c


async def test_a_sync_runs_cancel_keeps_both_rows_or_neither(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's cancel and its cancelRequestedBy are written in one transaction: when
    writing the second fails (a crash between them), the run is not cancelled either."""
    s = await _sync(api)
    rid = await _trigger(api, s["id"])
    real = sync_store.set_cancelled_by

    def fail(*args: Any) -> None:
        raise RuntimeError("the process died here")

    monkeypatch.setattr(sync_store, "set_cancelled_by", fail)
    syncs = api.client.app.state.syncs
    tenant = api.call(api.services.authenticate, api.key)
    with pytest.raises(RuntimeError, match="died"):
        api.call(syncs.cancel_run, tenant, s["createdBy"], rid, "now")
    run = await _run(api, rid)
    assert run["status"] == "pending" and run["cancelRequestedBy"] is None, run
    assert run["cancelRequestedAt"] is None
    monkeypatch.setattr(sync_store, "set_cancelled_by", real)
    r = await api.post(f"{BASE}/runs/{rid}/cancel", json={"reason": "now"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled" and r.json()["cancelRequestedBy"] == s["createdBy"]
