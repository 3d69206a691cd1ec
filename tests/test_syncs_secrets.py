"""A sync's sourceConfig (its secrets) is handed to the worker that claims the run and to
nothing else: no read endpoint of any API, no console page, no log line shows it
(SPEC 6 and 7.3: never a secret returned after creation or logged)."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Api, schedule_body
from litestar.testing import AsyncTestClient
from test_api_schedules import advance, other_tenant, tick

from schedd.clock import FakeClock
from schedd.config import Settings
from schedd.daemon import build_app
from schedd.db import Database, migrations
from tests.test_console import signed_in

BASE = "/api/v1/syncs"
CONN = "84b500d7-71c8-4b1f-adf4-f1eb0000973d"
TOKEN = "shpat-SECRET-7f3a9c"          # writeOnly in shopify's catalog
PLAIN = "plain-SECRET-4411e0"          # a key the catalog does not know: shown by the
                                       # Syncs API (the sync's own view), by nothing else
SOURCE = {"shopDomain": "x.myshopify.com", "accessToken": TOKEN, "note": PLAIN}


async def _external_sync(api: Api) -> dict[str, Any]:
    r = await api.post(BASE, json={
        "connectionId": CONN, "name": "orders", "providerKey": "shopify",
        "executionBackend": "external", "executionConfig": {"queue": "shop-q"},
        "sourceConfig": SOURCE, "status": "active", "triggerMode": "scheduled",
        "schedule": {"scheduleType": "interval", "scheduleExpression": "1m"}})
    assert r.status_code == 201, r.text
    assert TOKEN not in r.text
    out: dict[str, Any] = r.json()
    return out


async def _claim(api: Api) -> Any:
    return await api.post("/v1/worker/claim", json={
        "queues": ["shop-q"], "worker_id": "w1", "wait_seconds": 0})


async def test_only_the_workers_claim_carries_the_source_config(
        api: Api, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    s = await _external_sync(api)
    sid = s["id"]
    # a scheduled run and a manual one
    advance(api, clock, 61_000)
    tick(api, clock)
    r = await api.post(f"{BASE}/{sid}/trigger", json={"runMode": "full_refresh"})
    assert r.status_code == 202, r.text
    manual = r.json()["id"]
    # another tenant with a queue of the same name gets nothing
    other = other_tenant(api)
    r = await other.post("/v1/worker/claim", json={
        "queues": ["shop-q"], "worker_id": "thief", "wait_seconds": 0})
    assert r.status_code == 204 and TOKEN not in r.text
    claims = [await _claim(api), await _claim(api)]
    for c in claims:
        assert c.status_code == 200, c.text
        payload = c.json()["resolved_payload"]
        assert payload["sourceConfig"] == SOURCE  # the worker gets the token, unmasked
        assert payload["syncId"] == sid and payload["providerKey"] == "shopify"
    assert {c.json()["id"] for c in claims} >= {manual}
    run_ids = [c.json()["id"] for c in claims]
    # the worker heartbeats and completes one: these answers show no secret either
    r = await api.post(f"/v1/runs/{run_ids[0]}/heartbeat", json={"worker_id": "w1"})
    assert r.status_code == 200 and TOKEN not in r.text
    r = await api.post(f"/v1/runs/{run_ids[0]}/complete", json={
        "worker_id": "w1", "status": "succeeded", "result": {"rows": 3}})
    assert r.status_code == 200 and TOKEN not in r.text and PLAIN not in r.text

    reads = [f"/v1/schedules/{sid}", "/v1/schedules", f"/v1/schedules/{sid}/runs",
             "/v1/runs", *(f"/v1/runs/{rid}" for rid in run_ids),
             f"{BASE}/{sid}", BASE, f"{BASE}/{sid}/runs",
             *(f"{BASE}/runs/{rid}" for rid in run_ids),
             "/kragle/schedules", f"/kragle/schedules/byid/{sid}",
             "/v1/orgs/o/workspaces/w/apps/a/actions"]
    seen = 0
    for path in reads:
        r = await api.get(path)
        assert r.status_code in (200, 404), (path, r.text)
        seen += r.status_code == 200
        assert TOKEN not in r.text, (path, r.text)
        if not path.startswith(BASE):
            assert PLAIN not in r.text, (path, r.text)
    assert seen >= 11
    assert (await api.get(f"{BASE}/{sid}")).json()["sourceConfig"] == {
        **SOURCE, "accessToken": "********"}
    v1 = (await api.get(f"/v1/schedules/{sid}")).json()
    assert "sourceConfig" not in v1["action_config"]["payload"]
    assert v1["action_config"]["queue"] == "shop-q"
    for rid in run_ids:
        got = (await api.get(f"/v1/runs/{rid}")).json()
        assert "sourceConfig" not in got["resolved_payload"]
        assert got["resolved_payload"]["syncId"] == sid

    browser = await signed_in(api)
    pages = ["/ui/schedules", f"/ui/schedules/{sid}", "/ui/runs",
             *(f"/ui/runs/{rid}" for rid in run_ids)]
    for page in pages:
        r = await browser.get(page)
        assert r.status_code == 200, (page, r.text[:300])
        assert TOKEN not in r.text and PLAIN not in r.text, page
    assert sid in (await browser.get(f"/ui/schedules/{sid}")).text

    lines = [rec.getMessage() + repr(rec.__dict__) for rec in caplog.records]
    assert lines  # the runs were logged
    assert not [x for x in lines if TOKEN in x or PLAIN in x]


async def test_a_rotated_secret_reaches_the_next_claim(api: Api) -> None:
    s = await _external_sync(api)
    r = await api.patch(f"{BASE}/{s['id']}", json={"sourceConfig": {
        **SOURCE, "accessToken": "shpat-ROTATED"}})
    assert r.status_code == 200 and "shpat-ROTATED" not in r.text
    assert (await api.post(f"{BASE}/{s['id']}/trigger", json={})).status_code == 202
    c = await _claim(api)
    assert c.json()["resolved_payload"]["sourceConfig"]["accessToken"] == "shpat-ROTATED"
    v1 = await api.get(f"/v1/schedules/{s['id']}")
    assert "shpat-ROTATED" not in v1.text and TOKEN not in v1.text


@pytest.mark.sqlite_only("earlier SQLite builds wrote the copies; PostgreSQL's twin is a "
                         "no-op")
async def test_migration_removes_the_copies_made_before(
        make_settings: Callable[..., Settings], clock: FakeClock) -> None:
    """Databases written by the earlier code kept the sourceConfig in the schedule's action
    and in runs' resolved_payload; migration 0010 removes it there and nowhere else."""
    settings = make_settings()
    async with AsyncTestClient(app=build_app(settings, clock)) as client:
        api = Api(client, Path(settings.db + ".key").read_text().strip())
        sid = (await _external_sync(api))["id"]
        assert (await api.post(f"{BASE}/{sid}/trigger", json={})).status_code == 202
        r = await api.post("/v1/schedules", json=schedule_body(
            action_type="worker", action_config={"queue": "q", "payload": {
                "sourceConfig": {"accessToken": "MINE"}}}))
        assert r.status_code == 201, r.text
        plain = r.json()["id"]
        assert (await api.post(f"/v1/schedules/{plain}/trigger")).status_code == 202
    # what the earlier code wrote
    con = sqlite3.connect(settings.db)
    with con:
        con.execute("UPDATE schedules SET action_config = json_set(action_config, "
                    "'$.payload.sourceConfig', json(?)) WHERE id = ?",
                    ('{"accessToken": "OLD-TOKEN"}', sid))
        con.execute("UPDATE runs SET resolved_payload = json_set(resolved_payload, "
                    "'$.sourceConfig', json(?)) WHERE schedule_id = ?",
                    ('{"accessToken": "OLD-TOKEN"}', sid))
        assert con.execute("SELECT count(*) FROM runs WHERE resolved_payload LIKE "
                           "'%OLD-TOKEN%'").fetchone()[0] == 1
        version = next(v for v, sql in migrations() if "sourceConfig" in sql)
        con.execute(f"PRAGMA user_version = {version - 1}")
    con.close()
    async with Database(settings.db):
        pass
    con = sqlite3.connect(settings.db)
    got = dict(con.execute("SELECT id, action_config FROM schedules"))
    runs = dict(con.execute("SELECT schedule_id, resolved_payload FROM runs"))
    kept = con.execute("SELECT source_config FROM syncs").fetchone()[0]
    con.close()
    assert "OLD-TOKEN" not in got[sid] and "OLD-TOKEN" not in runs[sid]
    assert json.loads(got[sid])["payload"]["syncId"] == sid
    assert json.loads(runs[sid])["syncId"] == sid
    # a /v1 worker schedule that is no sync keeps its payload as its owner wrote it
    assert "MINE" in got[plain] and "MINE" in runs[plain]
    assert TOKEN in kept  # the sync itself keeps it, for the worker
