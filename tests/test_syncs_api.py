"""The Syncs API (seed 004, SPEC 7.3) against its contract: every path, camelCase field,
default, range, enum and error of the seed, over the real app on a fake clock.

As in test_api_schedules.py, whatever a test does to the app directly (moving the fake
clock, ticking the engine, making keys) goes through the app's portal (`in_app`)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import Api
from test_api_schedules import advance, assert_422, other_tenant, tick

from schedd.clock import FakeClock
from schedd.errors import ConfigError
from schedd.syncs import PROVIDERS, load_catalog

BASE = "/api/v1/syncs"
CONN = "84b500d7-71c8-4b1f-adf4-f1eb0000973d"
NIL = "00000000-0000-0000-0000-000000000000"
TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
NOOP = {"action_type": "noop", "action_config": {}}

SYNC_FIELDS = {"connectionId", "createdAt", "createdBy", "destinationConfig", "entities",
               "executionBackend", "executionConfig", "executionMode", "freshnessSlaSeconds",
               "id", "lastError", "lastSuccessAt", "name", "providerKey", "schedule", "slug",
               "sourceConfig", "status", "tableBindings", "taskSlug", "triggerMode",
               "updatedAt", "updatedBy"}
RUN_FIELDS = {"attemptNumber", "attemptRootRunId", "backendHeartbeatAt", "backendRunRef",
              "backendRunUrl", "backendStatus", "cancelReason", "cancelRequestedAt",
              "cancelRequestedBy", "completedAt", "createdAt", "error", "executionBackend",
              "executionMode", "executorId", "id", "lastHeartbeatAt", "maxAutoResumeAttempts",
              "nextAttemptRunId", "previousAttemptRunId", "resultClass", "resultReasonCode",
              "runMode", "startedAt", "status", "summary", "syncId", "triggerRef",
              "triggeredBy", "updatedAt"}


async def create(api: Api, **body: Any) -> dict[str, Any]:
    r = await api.post(BASE, json={"connectionId": CONN, "name": "orders", **body})
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


async def wait_run(api: Api, run_id: str, pred: Any, what: str) -> dict[str, Any]:
    for _ in range(400):
        r = await api.get(f"{BASE}/runs/{run_id}")
        assert r.status_code == 200, r.text
        if pred(r.json()):
            out: dict[str, Any] = r.json()
            return out
        await asyncio.sleep(0.01)
    raise AssertionError(f"{what}: last {r.json()}")


# ------------------------------------------------------------------------------ create/read
async def test_create_with_only_the_required_fields_gets_every_default(api: Api) -> None:
    s = await create(api)
    assert set(s) == SYNC_FIELDS
    assert UUID.match(s["id"]) and TS.match(s["createdAt"]) and TS.match(s["updatedAt"])
    assert s["connectionId"] == CONN and s["name"] == "orders"
    assert (s["executionBackend"], s["executionMode"], s["status"], s["triggerMode"],
            s["providerKey"]) == ("native", "sequential", "draft", "manual", "http_api")
    assert s["schedule"] is None and s["entities"] == [] and s["tableBindings"] == []
    assert s["sourceConfig"] == {} and s["destinationConfig"] == {}
    assert s["lastSuccessAt"] is None and s["lastError"] is None
    assert s["createdBy"] is not None  # the key's id, never the key
    assert api.key not in json.dumps(s)
    # an ordinary schedule underneath, visible through /v1, not firing while draft
    v1 = (await api.get(f"/v1/schedules/{s['id']}")).json()
    assert v1["status"] == "paused" and v1["paused_reason"] == "sync_draft"
    assert v1["name"] == "orders"
    got = await api.get(f"{BASE}/{s['id']}")
    assert got.status_code == 200 and got.json() == s


async def test_create_with_every_field(api: Api) -> None:
    s = await create(
        api, name="x" * 255, providerKey="shopify", slug="shop-orders",
        entities=["orders", "customers"], executionMode="fan_out_entity",
        executionConfig={"queue": "shopify-q"}, executionBackend="external",
        sourceConfig={"shopDomain": "a.myshopify.com"}, destinationConfig={"schema": "raw"},
        freshnessSlaSeconds=3600, status="paused", triggerMode="scheduled",
        schedule={"scheduleType": "cron", "scheduleExpression": "0 * * * *",
                  "timezone": "Europe/Paris"},
        tableBindings=[{"entityKey": "orders", "tableName": "orders",
                        "primaryKeyColumns": ["id"], "cursorField": "updated_at"}])
    assert s["providerKey"] == "shopify" and s["slug"] == "shop-orders"
    assert s["schedule"] == {"scheduleType": "cron", "scheduleExpression": "0 * * * *",
                             "timezone": "Europe/Paris"}
    b = s["tableBindings"][0]
    assert set(b) == {"createdAt", "cursorField", "entityKey", "id", "loadMode",
                      "logicalTableName", "physicalTableName", "primaryKeyColumns",
                      "sourceInstanceKey", "tableName", "tableNamingVersion", "updatedAt"}
    assert b["loadMode"] == "append_event" and b["tableNamingVersion"] == "legacy"
    assert s["freshnessSlaSeconds"] == 3600 and s["executionMode"] == "fan_out_entity"
    v1 = (await api.get(f"/v1/schedules/{s['id']}")).json()
    assert v1["action_type"] == "worker" and v1["action_config"]["queue"] == "shopify-q"
    assert v1["schedule_expression"] == "0 * * * *" and v1["timezone"] == "Europe/Paris"


@pytest.mark.parametrize(("body", "loc", "type_"), [
    ({"connectionId": "not-a-uuid"}, ["body", "connectionId"], "uuid_parsing"),
    ({"name": ""}, ["body", "name"], "string_too_short"),
    ({"name": "x" * 256}, ["body", "name"], "string_too_long"),
    ({"executionBackend": "lambda"}, ["body", "executionBackend"], "enum"),
    ({"executionMode": "parallel"}, ["body", "executionMode"], "enum"),
    ({"status": "running"}, ["body", "status"], "enum"),
    ({"triggerMode": "cron"}, ["body", "triggerMode"], "enum"),
    ({"providerKey": "myspace"}, ["body", "providerKey"], "enum"),
    ({"freshnessSlaSeconds": 0}, ["body", "freshnessSlaSeconds"], "greater_than_equal"),
    ({"schedule": {"scheduleType": "cron", "scheduleExpression": "61 * * * *"}},
     ["body", "schedule", "scheduleExpression"], None),
    ({"schedule": {"scheduleType": "interval", "scheduleExpression": "0s"}},
     ["body", "schedule", "scheduleExpression"], None),
    ({"schedule": {"scheduleType": "cron", "scheduleExpression": "@daily",
                   "timezone": "Mars/Olympus"}}, ["body", "schedule", "timezone"], None),
    ({"schedule": {"scheduleType": "yearly", "scheduleExpression": "x"}},
     ["body", "schedule", "scheduleType"], "enum"),
    ({"executionBackend": "temporal"}, ["body", "executionBackend"], None),
    ({"status": "active"}, ["body", "executionConfig"], "missing"),
    ({"status": "active", "executionConfig": {"action_type": "webhook",
                                              "action_config": {"url": "ftp://x"}}},
     ["body", "executionConfig", "action_config", "url"], None),
    ({"executionConfig": {"action_type": "worker", "action_config": {"queue": "q"}}},
     ["body", "executionConfig", "action_type"], "enum"),
    ({"executionBackend": "external", "executionConfig": {"queue": "bad queue"}},
     ["body", "executionConfig", "queue"], None),
    ({"executionBackend": "prefect", "status": "active",
      "executionConfig": {"apiUrl": "http://127.0.0.1:1/api"}},
     ["body", "executionConfig", "deploymentId"], "missing"),
    ({"executionBackend": "prefect", "executionConfig": {"deploymentId": "nope"}},
     ["body", "executionConfig", "deploymentId"], "uuid_parsing"),
    ({"status": "active", "triggerMode": "scheduled", "executionConfig": NOOP},
     ["body", "schedule"], "missing"),
    ({"status": "error"}, ["body", "status"], None),
    ({"tableBindings": [{"entityKey": "orders"}]}, ["body", "tableBindings", 0, "tableName"],
     "missing"),
    ({"surprise": 1}, ["body", "surprise"], "extra_forbidden"),
])
async def test_create_refuses_bad_input_naming_the_field(
    api: Api, body: dict[str, Any], loc: list[Any], type_: str | None
) -> None:
    r = await api.post(BASE, json={"connectionId": CONN, "name": "n", **body})
    item = assert_422(r, loc, type_)
    if loc == ["body", "executionBackend"] and body.get("executionBackend") == "temporal":
        assert "Temporal" in item["msg"]


async def test_missing_required_fields_and_bad_paths(api: Api) -> None:
    assert_422(await api.post(BASE, json={"name": "n"}), ["body", "connectionId"], "missing")
    assert_422(await api.post(BASE, json={"connectionId": CONN}), ["body", "name"], "missing")
    assert_422(await api.get(f"{BASE}/nope"), ["path", "sync_id"], "uuid_parsing")
    assert_422(await api.get(f"{BASE}/runs/nope"), ["path", "run_id"], "uuid_parsing")
    assert_422(await api.post(f"{BASE}/runs/nope/cancel"), ["path", "run_id"], "uuid_parsing")
    r = await api.get(f"{BASE}/{NIL}")
    assert r.status_code == 404 and r.json() == {"detail": "Sync not found"}
    r = await api.get(f"{BASE}/runs/{NIL}")
    assert r.status_code == 404 and r.json() == {"detail": "Run not found"}


# ------------------------------------------------------------------------------------ auth
async def test_keys_by_bearer_x_api_key_or_vai_token_cookie(api: Api) -> None:
    s = await create(api)
    c = api.client
    assert (await c.get(BASE)).status_code == 401
    assert (await c.get(BASE, headers={"Authorization": "Bearer nope"})).status_code == 401
    for headers in ({"X-API-Key": api.key}, {"Authorization": f"Bearer {api.key}"},
                    {"Cookie": f"vai_token={api.key}"}):
        r = await c.get(f"{BASE}/{s['id']}", headers=headers)
        assert r.status_code == 200, (headers, r.text)
    assert (await c.get(f"{BASE}/providers/shopify/catalog")).status_code == 401


async def test_another_tenants_sync_and_runs_are_404(api: Api) -> None:
    s = await create(api, executionConfig=NOOP)
    run = (await api.post(f"{BASE}/{s['id']}/trigger", json={})).json()
    other = other_tenant(api)
    sid, rid = s["id"], run["id"]
    for method, path, body in (
            ("get", f"{BASE}/{sid}", None), ("patch", f"{BASE}/{sid}", {"name": "x"}),
            ("delete", f"{BASE}/{sid}", None), ("get", f"{BASE}/{sid}/runs", None),
            ("post", f"{BASE}/{sid}/trigger", {}), ("get", f"{BASE}/runs/{rid}", None),
            ("post", f"{BASE}/runs/{rid}/cancel", {}), ("post", f"{BASE}/runs/{rid}/retry", {})):
        r = await other.client.request(method.upper(), path, json=body, headers=other.headers)
        assert r.status_code == 404, (method, path, r.text)
    assert (await other.get(BASE)).json()["total"] == 0
    assert (await api.get(f"{BASE}/{sid}")).status_code == 200


# ------------------------------------------------------------------------------------ list
async def test_list_filters_pages_and_has_next(api: Api) -> None:
    a = await create(api, name="Shop orders", providerKey="shopify")
    b = await create(api, name="Klaviyo events", providerKey="klaviyo", status="paused",
                     slug="kl-orders")
    c = await create(api, name="Files", providerKey="s3", status="archived")
    r = await api.get(BASE)
    page = r.json()
    assert set(page) == {"hasNext", "limit", "offset", "syncs", "total"}
    assert page["total"] == 3 and page["limit"] == 50 and page["offset"] == 0
    assert not page["hasNext"] and [s["id"] for s in page["syncs"]] == [a["id"], b["id"], c["id"]]

    async def ids(**params: Any) -> list[str]:
        r = await api.get(BASE, params=params)
        assert r.status_code == 200, r.text
        return [s["id"] for s in r.json()["syncs"]]

    assert await ids(q="orders") == [a["id"], b["id"]]  # name or slug, any case
    assert await ids(q="ORDERS") == [a["id"], b["id"]]
    assert await ids(q="%") == []
    assert await ids(status=["paused", "archived"]) == [b["id"], c["id"]]
    assert await ids(provider=["shopify", "s3"]) == [a["id"], c["id"]]
    assert await ids(provider="klaviyo", status="paused") == [b["id"]]
    r = await api.get(BASE, params={"limit": 2, "offset": 0})
    assert r.json()["hasNext"] and len(r.json()["syncs"]) == 2
    r = await api.get(BASE, params={"limit": 2, "offset": 2})
    assert not r.json()["hasNext"] and r.json()["total"] == 3
    assert_422(await api.get(BASE, params={"limit": 0}), ["query", "limit"])
    assert_422(await api.get(BASE, params={"limit": 101}), ["query", "limit"])
    assert_422(await api.get(BASE, params={"offset": -1}), ["query", "offset"])
    assert_422(await api.get(BASE, params={"status": "sleeping"}), ["query", "status"])
    assert_422(await api.get(BASE, params={"provider": "myspace"}), ["query", "provider"])


# ----------------------------------------------------------------------------- update/del
async def test_status_and_trigger_mode_decide_whether_the_schedule_fires(api: Api) -> None:
    sched = {"scheduleType": "interval", "scheduleExpression": "15m"}
    s = await create(api, executionConfig=NOOP, schedule=sched, triggerMode="scheduled")

    async def v1() -> dict[str, Any]:
        out: dict[str, Any] = (await api.get(f"/v1/schedules/{s['id']}")).json()
        return out

    assert (await v1())["status"] == "paused"  # draft
    r = await api.patch(f"{BASE}/{s['id']}", json={"status": "active"})
    assert r.status_code == 200 and r.json()["status"] == "active", r.text
    assert (await v1())["status"] == "active" and (await v1())["next_run_at"] is not None
    for patch, reason in (({"triggerMode": "manual"}, "sync_manual"),
                          ({"triggerMode": "on_create"}, "sync_on_create"),
                          ({"triggerMode": "scheduled", "status": "paused"}, "sync_paused"),
                          ({"status": "archived"}, "sync_archived")):
        r = await api.patch(f"{BASE}/{s['id']}", json=patch)
        assert r.status_code == 200, r.text
        got = await v1()
        assert (got["status"], got["paused_reason"]) == ("paused", reason), patch
    r = await api.patch(f"{BASE}/{s['id']}", json={
        "status": "active", "name": "renamed", "schedule": {
            "scheduleType": "cron", "scheduleExpression": "0 9 * * *", "timezone": "UTC"}})
    body = r.json()
    assert body["status"] == "active" and body["name"] == "renamed"
    assert body["schedule"]["scheduleExpression"] == "0 9 * * *"
    assert (await v1())["next_run_at"].endswith("T09:00:00.000Z")
    assert_422(await api.patch(f"{BASE}/{s['id']}", json={
        "schedule": {"scheduleType": "cron", "scheduleExpression": "nope"}}),
        ["body", "schedule", "scheduleExpression"])
    assert_422(await api.patch(f"{BASE}/{s['id']}", json={"executionBackend": "temporal"}),
               ["body", "executionBackend"])
    assert_422(await api.patch(f"{BASE}/{s['id']}", json={"status": "bogus"}),
               ["body", "status"], "enum")
    assert_422(await api.patch(f"{BASE}/{s['id']}", json={"name": ""}), ["body", "name"])
    assert_422(await api.patch(f"{BASE}/{s['id']}", json={"name": None}), ["body", "name"])
    # an active native sync cannot lose its action
    assert_422(await api.patch(f"{BASE}/{s['id']}", json={"executionConfig": {}}),
               ["body", "executionConfig"], "missing")
    assert (await api.get(f"{BASE}/{s['id']}")).json()["name"] == "renamed"  # unchanged


async def test_v1_cannot_resume_or_trigger_what_its_sync_holds(api: Api) -> None:
    """A draft (or manual, paused, archived) sync's schedule is paused by the sync; /v1's
    resume or status update must not make it fire (on a placeholder timing, for a sync
    without a schedule) while the sync still says draft."""
    s = await create(api, executionConfig=NOOP)  # draft, manual, no schedule
    sched = f"/v1/schedules/{s['id']}"
    r = await api.post(f"{sched}/resume")
    assert r.status_code == 409 and "PATCH /api/v1/syncs/" in r.json()["detail"], r.text
    r = await api.put(sched, json={"status": "active"})
    assert r.status_code == 409, r.text
    got = (await api.get(sched)).json()
    assert (got["status"], got["paused_reason"]) == ("paused", "sync_draft")
    # pausing and resuming an active scheduled sync through /v1 still works
    r = await api.patch(f"{BASE}/{s['id']}", json={
        "status": "active", "triggerMode": "scheduled",
        "schedule": {"scheduleType": "interval", "scheduleExpression": "15m"}})
    assert r.status_code == 200, r.text
    assert (await api.post(f"{sched}/pause")).json()["status"] == "paused"
    assert (await api.post(f"{sched}/resume")).json()["status"] == "active"
    # an archived sync does not run, whichever API asks
    r = await api.patch(f"{BASE}/{s['id']}", json={"status": "archived"})
    assert r.status_code == 200, r.text
    assert (await api.post(f"{BASE}/{s['id']}/trigger")).status_code == 409
    r = await api.post(f"{sched}/trigger")
    assert r.status_code == 409 and "archived" in r.json()["detail"], r.text
    assert (await api.get(f"{BASE}/{s['id']}/runs")).json()["total"] == 0


async def test_source_config_secrets_of_the_catalog_are_never_shown(api: Api) -> None:
    """The catalog marks a provider's secrets writeOnly (shopify's accessToken): a sync
    shows them as "********", and sending the mask back keeps the stored token."""
    s = await create(api, providerKey="shopify", sourceConfig={
        "shopDomain": "x.myshopify.com", "accessToken": "shpat-TOKEN-1"})
    assert s["sourceConfig"] == {"shopDomain": "x.myshopify.com", "accessToken": "********"}
    for r in (await api.get(f"{BASE}/{s['id']}"), await api.get(BASE)):
        assert r.status_code == 200 and "shpat-TOKEN-1" not in r.text, r.text
    # read-modify-write: the mask sent back keeps the token; a new value replaces it
    r = await api.patch(f"{BASE}/{s['id']}", json={"sourceConfig": {
        "shopDomain": "y.myshopify.com", "accessToken": "********"}})
    assert r.status_code == 200 and "shpat-TOKEN-1" not in r.text, r.text
    r = await api.patch(f"{BASE}/{s['id']}", json={"executionBackend": "external",
                                                   "executionConfig": {"queue": "q"}})
    assert r.status_code == 200, r.text
    r = await api.post(f"{BASE}/{s['id']}/trigger", json={})
    assert r.status_code == 202, r.text
    claim = await api.post("/v1/worker/claim", json={"queues": ["q"], "worker_id": "w",
                                                      "wait_seconds": 0})
    assert claim.status_code == 200, claim.text
    source = claim.json()["resolved_payload"]["sourceConfig"]  # the worker gets the token
    assert source == {"shopDomain": "y.myshopify.com", "accessToken": "shpat-TOKEN-1"}
    r = await api.patch(f"{BASE}/{s['id']}", json={"sourceConfig": {
        "shopDomain": "y.myshopify.com", "accessToken": "shpat-TOKEN-2"}})
    assert r.json()["sourceConfig"]["accessToken"] == "********"


async def test_delete_sync(api: Api) -> None:
    s = await create(api, executionConfig=NOOP)
    r = await api.delete(f"{BASE}/{s['id']}")
    assert r.status_code == 204 and r.content == b""
    assert (await api.get(f"{BASE}/{s['id']}")).status_code == 404
    assert (await api.get(f"/v1/schedules/{s['id']}")).status_code == 404
    assert (await api.delete(f"{BASE}/{s['id']}")).status_code == 404


# ------------------------------------------------------------------------------------ runs
async def test_trigger_runs_a_native_action_and_shows_the_run_in_the_seeds_shape(
    api: Api
) -> None:
    s = await create(api, executionConfig=NOOP, entities=["orders"])
    r = await api.post(f"{BASE}/{s['id']}/trigger", json={"runMode": "full_refresh"})
    assert r.status_code == 202, r.text
    run = r.json()
    assert set(run) == RUN_FIELDS
    assert run["syncId"] == s["id"] and run["attemptNumber"] == 1
    assert run["attemptRootRunId"] == run["id"] and run["triggeredBy"] == "manual"
    assert run["runMode"] == "full_refresh" and run["executionBackend"] == "native"
    # the engine may already have started (or run) it by the time the answer is built
    assert run["status"] in ("pending", "running", "succeeded")
    assert run["resultClass"] == ("success" if run["status"] == "succeeded" else None)
    done = await wait_run(api, run["id"], lambda x: x["status"] == "succeeded", "noop ran")
    assert done["resultClass"] == "success" and done["executorId"] == "schedd"
    assert TS.match(done["completedAt"]) and done["resultReasonCode"] is None
    got = (await api.get(f"{BASE}/{s['id']}")).json()
    assert got["lastSuccessAt"] == done["completedAt"] and got["lastError"] is None
    # default runMode; empty body and no body
    r2 = await api.post(f"{BASE}/{s['id']}/trigger")
    assert r2.status_code == 202 and r2.json()["runMode"] == "incremental"
    assert_422(await api.post(f"{BASE}/{s['id']}/trigger", json={"runMode": "sideways"}),
               ["body", "runMode"], "enum")
    page = (await api.get(f"{BASE}/{s['id']}/runs")).json()
    assert set(page) == {"hasNext", "limit", "offset", "runs", "total"}
    assert page["limit"] == 25 and page["total"] == 2 and not page["hasNext"]
    assert [x["id"] for x in page["runs"]] == [r2.json()["id"], run["id"]]  # newest first
    page = (await api.get(f"{BASE}/{s['id']}/runs", params={"limit": 1})).json()
    assert page["hasNext"] and len(page["runs"]) == 1
    assert_422(await api.get(f"{BASE}/{s['id']}/runs", params={"limit": 0}),
               ["query", "limit"])
    assert_422(await api.get(f"{BASE}/{s['id']}/runs", params={"limit": 101}),
               ["query", "limit"])
    # the same run through /v1
    v1 = (await api.get(f"/v1/runs/{run['id']}")).json()
    assert v1["schedule_id"] == s["id"] and v1["status"] == "succeeded"


async def test_trigger_conflicts(api: Api) -> None:
    draft = await create(api)  # native without an action
    r = await api.post(f"{BASE}/{draft['id']}/trigger", json={})
    assert r.status_code == 409 and "executionConfig" in r.json()["detail"]
    archived = await create(api, executionConfig=NOOP, status="archived")
    r = await api.post(f"{BASE}/{archived['id']}/trigger", json={})
    assert r.status_code == 409 and "archived" in r.json()["detail"]
    prefect = await create(api, executionBackend="prefect")
    r = await api.post(f"{BASE}/{prefect['id']}/trigger", json={})
    assert r.status_code == 409 and "apiUrl" in r.json()["detail"]


async def test_cancel_and_retry_chain_external_runs(api: Api) -> None:
    s = await create(api, executionBackend="external", providerKey="gorgias")
    run = (await api.post(f"{BASE}/{s['id']}/trigger", json={"runMode": "full_refresh"})).json()
    assert run["executionBackend"] == "external" and run["status"] == "pending"
    v1 = (await api.get(f"/v1/runs/{run['id']}")).json()
    assert v1["queue"] == "sync.gorgias"
    assert v1["resolved_payload"]["syncId"] == s["id"]
    assert v1["resolved_payload"]["runMode"] == "full_refresh"
    r = await api.post(f"{BASE}/runs/{run['id']}/cancel", json={"reason": "not today"})
    assert r.status_code == 200, r.text
    c = r.json()
    assert c["status"] == "cancelled" and c["resultClass"] == "cancelled"
    assert c["cancelReason"] == "not today" and TS.match(c["cancelRequestedAt"])
    assert c["cancelRequestedBy"] == s["createdBy"] and c["resultReasonCode"] == "cancelled"
    r = await api.post(f"{BASE}/runs/{run['id']}/cancel", json={})
    assert r.status_code == 409  # finished
    r = await api.post(f"{BASE}/runs/{run['id']}/retry", json={})
    assert r.status_code == 202, r.text
    nxt = r.json()
    assert nxt["attemptNumber"] == 2 and nxt["previousAttemptRunId"] == run["id"]
    assert nxt["attemptRootRunId"] == run["id"] and nxt["triggeredBy"] == "retry"
    assert nxt["runMode"] == "full_refresh" and nxt["triggerRef"] == run["id"]
    first = (await api.get(f"{BASE}/runs/{run['id']}")).json()
    assert first["nextAttemptRunId"] == nxt["id"]
    r = await api.post(f"{BASE}/runs/{run['id']}/retry", json={})
    assert r.status_code == 409  # no longer ends its chain
    r = await api.post(f"{BASE}/runs/{nxt['id']}/retry", json={})
    assert r.status_code == 409  # pending, not finished
    assert_422(await api.post(f"{BASE}/runs/{nxt['id']}/retry", json={"runMode": "x"}),
               ["body", "runMode"], "enum")
    assert_422(await api.post(f"{BASE}/runs/{nxt['id']}/cancel", json={"reason": 5}),
               ["body", "reason"])


async def test_a_v1_schedules_run_is_not_a_sync_run(api: Api) -> None:
    r = await api.post("/v1/schedules", json={"name": "n", "schedule_type": "interval",
                                               "schedule_expression": "15m",
                                               "action_type": "noop", "action_config": {}})
    run = (await api.post(f"/v1/schedules/{r.json()['id']}/trigger")).json()
    assert (await api.get(f"{BASE}/runs/{run['id']}")).status_code == 404
    r = await api.post("/v1/schedules", json={"name": "n", "schedule_type": "interval",
                                               "schedule_expression": "15m",
                                               "action_type": "backend", "action_config": {}})
    assert_422(r, ["body", "action_type"], "enum")


async def test_on_create_fires_once_when_the_sync_first_becomes_active(api: Api) -> None:
    s = await create(api, executionConfig=NOOP, triggerMode="on_create", status="active")
    runs = (await api.get(f"{BASE}/{s['id']}/runs")).json()["runs"]
    assert [r["triggeredBy"] for r in runs] == ["on_create"]
    for status in ("paused", "active", "paused", "active"):
        assert (await api.patch(f"{BASE}/{s['id']}", json={"status": status})).status_code == 200
    assert (await api.get(f"{BASE}/{s['id']}/runs")).json()["total"] == 1
    later = await create(api, executionConfig=NOOP, triggerMode="on_create")
    assert (await api.get(f"{BASE}/{later['id']}/runs")).json()["total"] == 0  # draft
    await api.patch(f"{BASE}/{later['id']}", json={"status": "active"})
    runs = (await api.get(f"{BASE}/{later['id']}/runs")).json()["runs"]
    assert [r["triggeredBy"] for r in runs] == ["on_create"]


async def test_scheduled_sync_fires_on_its_schedule_and_auto_pause_shows_error(
    api: Api, clock: FakeClock
) -> None:
    fail = {"action_type": "command", "action_config": {"argv": ["false"]}, "maxRetries": 0}
    s = await create(api, executionConfig=fail, status="active", triggerMode="scheduled",
                     schedule={"scheduleType": "interval", "scheduleExpression": "1m"})
    for _ in range(5):  # pause_on_failure_count: 5 occurrences in a row failed
        advance(api, clock, 60_000)
        tick(api, clock)
        for _ in range(300):
            runs = (await api.get(f"{BASE}/{s['id']}/runs", params={"limit": 1})).json()
            if runs["runs"] and runs["runs"][0]["status"] == "failed":
                break
            await asyncio.sleep(0.01)
    page = (await api.get(f"{BASE}/{s['id']}/runs")).json()
    assert page["total"] == 5
    assert {r["triggeredBy"] for r in page["runs"]} == {"schedule"}
    assert all(r["resultClass"] == "failure" and r["resultReasonCode"] == "exit_status"
               for r in page["runs"])
    for _ in range(300):
        got = (await api.get(f"{BASE}/{s['id']}")).json()
        if got["status"] == "error":
            break
        await asyncio.sleep(0.01)
    assert got["status"] == "error" and "exit status 1" in got["lastError"]
    assert (await api.get(BASE, params={"status": "error"})).json()["total"] == 1
    r = await api.patch(f"{BASE}/{s['id']}", json={"status": "active"})
    assert r.json()["status"] == "active"
    v1 = (await api.get(f"/v1/schedules/{s['id']}")).json()
    assert v1["status"] == "active" and v1["consecutive_failures"] == 0


async def test_freshness_sla_breach_shows_in_last_error_and_metrics(
    api: Api, clock: FakeClock
) -> None:
    s = await create(api, executionConfig=NOOP, status="active", freshnessSlaSeconds=60)
    assert (await api.get(f"{BASE}/{s['id']}")).json()["lastError"] is None

    async def gauge() -> float:
        text = (await api.client.get("/metrics")).text
        m = re.search(r"^schedd_sync_freshness_breached (\S+)$", text, re.M)
        assert m, text[:500]
        return float(m[1])

    assert await gauge() == 0
    advance(api, clock, 61_000)
    got = (await api.get(f"{BASE}/{s['id']}")).json()
    assert "freshness SLA of 60 s breached" in got["lastError"]
    assert await gauge() == 1
    run = (await api.post(f"{BASE}/{s['id']}/trigger")).json()
    await wait_run(api, run["id"], lambda x: x["status"] == "succeeded", "noop ran")
    assert (await api.get(f"{BASE}/{s['id']}")).json()["lastError"] is None
    assert await gauge() == 0


# --------------------------------------------------------------------------------- catalog
async def test_every_provider_has_a_catalog_entry(api: Api) -> None:
    assert len(PROVIDERS) == 21
    for provider in PROVIDERS:
        r = await api.get(f"{BASE}/providers/{provider}/catalog")
        assert r.status_code == 200, (provider, r.text)
        entry = r.json()
        assert set(entry) == {"availableResources", "configSchema", "defaultResources",
                              "defaults", "displayName", "dynamicResources", "name",
                              "provider", "resources"}
        assert entry["provider"] == provider and entry["resources"]
        assert set(entry["defaultResources"]) <= set(entry["availableResources"])
        assert set(entry["resources"][0]) == {
            "configSchema", "cursorField", "defaultSelected", "dependsOn", "description",
            "displayName", "entityKey", "loadMode", "sizeClass", "slicing",
            "storageDescription", "storageKind"}
    assert_422(await api.get(f"{BASE}/providers/myspace/catalog"), ["path", "provider"], "enum")


def test_catalog_dir_adds_and_replaces_entries(tmp_path: Path) -> None:
    (tmp_path / "shopify.json").write_text(json.dumps({
        "provider": "shopify", "name": "shopify", "displayName": "Shopify (ours)",
        "resources": [{"entityKey": "orders", "displayName": "Orders"}]}))
    (tmp_path / "acme.json").write_text(json.dumps({
        "provider": "acme", "name": "acme", "displayName": "ACME"}))
    cat = load_catalog(str(tmp_path))
    assert cat["shopify"].display_name == "Shopify (ours)"
    assert cat["acme"].display_name == "ACME" and cat["klaviyo"].display_name == "Klaviyo"
    (tmp_path / "bad.json").write_text('{"provider": 1}')
    with pytest.raises(ConfigError, match=r"bad\.json"):
        load_catalog(str(tmp_path))
    with pytest.raises(ConfigError, match="not a directory"):
        load_catalog(str(tmp_path / "missing"))
