"""The Actions API compatibility router (seed 002, SPEC §7.1) against its contract: every
endpoint's shape, defaults and ranges, org/workspace/app scoping, keyset pagination,
triggers with a payload override, thread modes, delivery to worker queues or webhooks, the
run counters, and enable/disable on the fake clock."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Api
from litestar.testing import AsyncTestClient
from test_api_schedules import MIN, TS, UUID, advance, assert_422, assert_error, in_app, tick

from schedd.clock import FakeClock
from schedd.config import Settings
from schedd.daemon import build_app

BASE = "/v1/orgs/acme/workspaces/ws1/apps/app1/actions"
OTHER_PATHS = [
    "/v1/orgs/other/workspaces/ws1/apps/app1/actions",
    "/v1/orgs/acme/workspaces/other/apps/app1/actions",
    "/v1/orgs/acme/workspaces/ws1/apps/other/actions",
]
NIL_UUID = "00000000-0000-0000-0000-000000000000"

# Every field of an action in seed 002, in its order.
ACTION_FIELDS = [
    "action_id", "workspace_id", "app_id", "endpoint_id", "name", "description",
    "namespace_id", "thread_mode", "thread_id", "thread_id_template", "payload", "action_type",
    "schedule_type", "cron_expression", "scheduled_at", "timezone", "max_retries",
    "retry_delay_seconds", "is_enabled", "is_running", "next_run_at", "last_run_at",
    "last_run_status", "last_execution_id", "total_runs", "successful_runs", "failed_runs",
    "created_by", "created_at", "updated_at",
]
RUN_FIELDS = [
    "run_id", "action_id", "workspace_id", "execution_id", "status", "attempt", "trigger_type",
    "triggered_at", "started_at", "completed_at", "duration_seconds", "resolved_payload",
    "resolved_thread_id", "error_message", "error_code",
]


def action_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "Nightly digest", "endpoint_id": "ep-1",
                            "namespace_id": "ns-1", "cron_expression": "0 10 * * *"}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


async def create(api: Api, base: str = BASE, **overrides: Any) -> dict[str, Any]:
    r = await api.post(base, action_body(**overrides))
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


async def claim(api: Api, queue: str) -> dict[str, Any] | None:
    r = await api.post("/v1/worker/claim", {"queues": [queue], "worker_id": "w1",
                                            "wait_seconds": 0})
    assert r.status_code in (200, 204), r.text
    return None if r.status_code == 204 else r.json()


async def complete(api: Api, run_id: str, status: str = "succeeded") -> None:
    r = await api.post(f"/v1/runs/{run_id}/complete", {"worker_id": "w1", "status": status})
    assert r.status_code == 200, r.text


# ---------------------------------------------------------------------------- create / get


async def test_create_answers_every_seed_field_with_the_defaults(api: Api,
                                                                 clock: FakeClock) -> None:
    advance(api, clock, 30_000)
    r = await api.post(BASE, {"name": "n", "endpoint_id": "ep", "namespace_id": "ns",
                              "cron_expression": "*/5 * * * *"})
    assert r.status_code == 201, r.text
    a = r.json()
    assert list(a) == ACTION_FIELDS
    assert UUID.match(a["action_id"])
    keys = in_app(api, api.services.list_keys)
    assert a["created_by"] in {k.id for k in keys}
    assert {k: a[k] for k in ACTION_FIELDS if k not in (
        "action_id", "created_by", "created_at", "updated_at", "next_run_at")} == {
        "workspace_id": "ws1", "app_id": "app1", "endpoint_id": "ep", "name": "n",
        "description": None, "namespace_id": "ns", "thread_mode": "new_each_run",
        "thread_id": None, "thread_id_template": None, "payload": {}, "action_type": "trigger",
        "schedule_type": "cron", "cron_expression": "*/5 * * * *", "scheduled_at": None,
        "timezone": "UTC", "max_retries": 3, "retry_delay_seconds": 60, "is_enabled": True,
        "is_running": False, "last_run_at": None, "last_run_status": None,
        "last_execution_id": None, "total_runs": 0, "successful_runs": 0, "failed_runs": 0,
    }
    assert a["created_at"] == a["updated_at"] == "2026-11-22T09:00:30.000Z"
    assert a["next_run_at"] == "2026-11-22T09:05:00.000Z"
    got = await api.get(f"{BASE}/{a['action_id']}")
    assert got.status_code == 200 and got.json() == a


async def test_an_action_is_an_ordinary_schedule_of_the_tenant(api: Api) -> None:
    a = await create(api, payload={"k": "v"}, max_retries=5, retry_delay_seconds=7,
                     timezone="Europe/Paris", description="d")
    s = (await api.get(f"/v1/schedules/{a['action_id']}")).json()
    assert (s["name"], s["description"], s["schedule_type"], s["schedule_expression"]) == (
        "Nightly digest", "d", "cron", "0 10 * * *")
    assert (s["timezone"], s["max_retries"], s["retry_backoff_seconds"]) == (
        "Europe/Paris", 5, 7)
    assert s["action_type"] == "worker"
    assert s["action_config"] == {"queue": "ep-1", "payload": {
        "payload": {"k": "v"}, "thread_id": "{{run.id}}", "namespace_id": "ns-1",
        "action_id": "{{schedule.id}}"}}


async def test_once_actions_take_scheduled_at(api: Api) -> None:
    a = await create(api, cron_expression=None, scheduled_at="2026-11-23T08:00:00+01:00")
    assert (a["schedule_type"], a["scheduled_at"], a["cron_expression"]) == (
        "once", "2026-11-23T07:00:00.000Z", None)
    assert a["next_run_at"] == "2026-11-23T07:00:00.000Z"
    b = await create(api, schedule_type="once", cron_expression=None,
                     scheduled_at="2026-11-23T08:00:00", timezone="Europe/Paris")
    assert b["scheduled_at"] == "2026-11-23T07:00:00.000Z"


async def test_create_disabled(api: Api) -> None:
    a = await create(api, is_enabled=False)
    assert (a["is_enabled"], a["next_run_at"]) == (False, None)
    assert (await api.get(f"/v1/schedules/{a['action_id']}")).json()["status"] == "paused"


@pytest.mark.parametrize(("change", "loc", "type_"), [
    ({"name": None}, ["body", "name"], "missing"),
    ({"endpoint_id": None}, ["body", "endpoint_id"], "missing"),
    ({"namespace_id": None}, ["body", "namespace_id"], "missing"),
    ({"name": 5}, ["body", "name"], "type_error"),
    ({"endpoint_id": 5}, ["body", "endpoint_id"], "type_error"),
    ({"endpoint_id": ["a"]}, ["body", "endpoint_id"], "type_error"),
    ({"endpoint_id": ""}, ["body", "endpoint_id"], "string_too_short"),
    ({"endpoint_id": "two words"}, ["body", "endpoint_id"], "string_pattern_mismatch"),
    ({"name": "x" * 201}, ["body", "name"], "string_too_long"),
    ({"max_retries": 11}, ["body", "max_retries"], "less_than_equal"),
    ({"max_retries": -1}, ["body", "max_retries"], "greater_than_equal"),
    ({"retry_delay_seconds": -1}, ["body", "retry_delay_seconds"], "greater_than_equal"),
    ({"is_enabled": "yes"}, ["body", "is_enabled"], "type_error"),
    ({"payload": [1]}, ["body", "payload"], None),
    ({"action_type": "webhook"}, ["body", "action_type"], "enum"),
    ({"thread_mode": "sometimes"}, ["body", "thread_mode"], "enum"),
    ({"schedule_type": "interval"}, ["body", "schedule_type"], "enum"),
    ({"unknown": 1}, ["body", "unknown"], "extra_forbidden"),
    ({"cron_expression": "61 * * * *"}, ["body", "cron_expression"], None),
    ({"cron_expression": None}, ["body", "cron_expression"], "missing"),
    ({"timezone": "Mars/Olympus"}, ["body", "timezone"], None),
    ({"schedule_type": "once", "cron_expression": None}, ["body", "scheduled_at"], "missing"),
    ({"schedule_type": "once", "cron_expression": None, "scheduled_at": "tomorrow"},
     ["body", "scheduled_at"], None),
    ({"cron_expression": None, "scheduled_at": "2020-01-01T00:00:00Z"},
     ["body", "scheduled_at"], None),
    ({"scheduled_at": "2026-12-01T00:00:00Z"}, ["body", "scheduled_at"], None),
    ({"thread_mode": "fixed"}, ["body", "thread_id"], "missing"),
    ({"thread_mode": "template", "thread_id": "t"}, ["body", "thread_id_template"], "missing"),
    ({"payload": {"deep": _deep(70)}} if (_deep := lambda n: {"a": _deep(n - 1)} if n else 1)
     else {}, ["body", "payload"], None),
])
async def test_create_refuses_bad_input_naming_the_field(
    api: Api, change: dict[str, Any], loc: list[Any], type_: str | None
) -> None:
    body = action_body()
    for k, v in change.items():
        if v is None:
            body.pop(k, None)
        else:
            body[k] = v
    assert_422(await api.post(BASE, body), loc, type_)
    assert (await api.get(BASE)).json()["total"] == 0


async def test_bad_bodies_and_paths_are_422(api: Api) -> None:
    r = await api.client.post(BASE, content=b"{nope", headers={
        **api.headers, "Content-Type": "application/json"})
    assert_422(r, ["body"])
    assert_422(await api.get(f"{BASE}/not-a-uuid"), ["path", "action_id"])
    a = await create(api)
    assert_422(await api.get(f"{BASE}/{a['action_id']}/runs/nope"), ["path", "run_id"])
    assert_422(await api.get("/v1/orgs/" + "o" * 201 + "/workspaces/w/apps/a/actions"),
               ["path", "org_id"])


async def test_a_key_is_needed(api: Api) -> None:
    r = await api.client.get(BASE)
    assert r.status_code == 401 and isinstance(r.json()["detail"], str)


# ---------------------------------------------------------------------------- scoping


async def test_an_action_is_found_only_under_its_path_and_tenant(api: Api) -> None:
    a = await create(api)
    aid = a["action_id"]
    other = await api.other_tenant()
    for client, base in [(api, p) for p in OTHER_PATHS] + [(other, BASE)]:
        assert_error(await client.get(f"{base}/{aid}"), 404, "Action not found")
        assert_error(await client.put(f"{base}/{aid}", {"name": "x"}), 404, "Action not found")
        assert_error(await client.delete(f"{base}/{aid}"), 404, "Action not found")
        assert_error(await client.post(f"{base}/{aid}/trigger"), 404, "Action not found")
        assert_error(await client.post(f"{base}/{aid}/enable"), 404, "Action not found")
        assert_error(await client.post(f"{base}/{aid}/disable"), 404, "Action not found")
        assert_error(await client.get(f"{base}/{aid}/runs"), 404, "Action not found")
        assert (await client.get(base)).json()["total"] == 0
    assert_error(await api.get(f"{BASE}/{NIL_UUID}"), 404, "Action not found")
    # a native schedule is not an action
    r = await api.post("/v1/schedules", {"name": "n", "schedule_type": "interval",
                                         "schedule_expression": "1h", "action_type": "noop",
                                         "action_config": {}})
    assert_error(await api.get(f"{BASE}/{r.json()['id']}"), 404, "Action not found")
    assert (await api.get(f"{BASE}/{aid}")).json()["name"] == "Nightly digest"


async def test_a_run_is_found_only_under_its_action(api: Api) -> None:
    a = await create(api)
    b = await create(api, name="other")
    run_id = (await api.post(f"{BASE}/{a['action_id']}/trigger")).json()["run_id"]
    assert (await api.get(f"{BASE}/{a['action_id']}/runs/{run_id}")).status_code == 200
    assert_error(await api.get(f"{BASE}/{b['action_id']}/runs/{run_id}"), 404, "Run not found")
    assert_error(await api.get(f"{OTHER_PATHS[0]}/{a['action_id']}/runs/{run_id}"), 404)
    assert_error(await api.get(f"{BASE}/{a['action_id']}/runs/{NIL_UUID}"), 404,
                 "Run not found")


# ---------------------------------------------------------------------------- listing


async def test_list_pages_by_cursor_oldest_first_and_ends_with_null(api: Api,
                                                                   clock: FakeClock) -> None:
    ids = []
    for i in range(5):
        ids.append((await create(api, name=f"a{i}"))["action_id"])
        advance(api, clock, 1)
    await create(api, OTHER_PATHS[1], name="elsewhere")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        q = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await api.get(BASE + q)).json()
        assert list(page) == ["total", "has_more", "next_cursor", "actions"]
        assert page["total"] == 5
        seen += [x["action_id"] for x in page["actions"]]
        pages += 1
        assert page["has_more"] is (page["next_cursor"] is not None)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert (seen, pages) == (ids, 3)
    full = (await api.get(BASE + "?limit=5")).json()
    assert (len(full["actions"]), full["has_more"], full["next_cursor"]) == (5, False, None)
    default = (await api.get(BASE)).json()
    assert len(default["actions"]) == 5


async def test_cursor_is_stable_while_actions_are_added(api: Api, clock: FakeClock) -> None:
    ids = []
    for i in range(6):
        ids.append((await create(api, name=f"a{i}"))["action_id"])
    page = (await api.get(BASE + "?limit=2")).json()
    seen = [x["action_id"] for x in page["actions"]]
    added = []
    while page["next_cursor"]:
        advance(api, clock, 1)
        added.append((await create(api, name="late"))["action_id"])
        page = (await api.get(BASE + f"?limit=2&cursor={page['next_cursor']}")).json()
        seen += [x["action_id"] for x in page["actions"]]
    # nothing skipped, nothing repeated; rows added meanwhile come after the old ones
    # (created in one millisecond, the first six are ordered by id)
    assert len(seen) == len(set(seen))
    assert seen[:6] == sorted(ids)
    assert set(seen[6:]) <= set(added) and len(seen) > 6


async def test_search_matches_name_or_description_case_insensitively(api: Api) -> None:
    await create(api, name="Daily Report")
    await create(api, name="other", description="the weekly REPORT")
    await create(api, name="100% sure")
    await create(api, name="unrelated")
    names = lambda r: sorted(a["name"] for a in r.json()["actions"])  # noqa: E731
    assert names(await api.get(BASE + "?search=report")) == ["Daily Report", "other"]
    r = await api.get(BASE + "?search=%25")
    assert (names(r), r.json()["total"]) == (["100% sure"], 1)
    assert names(await api.get(BASE + "?search=_")) == []
    assert (await api.get(BASE + "?search=zzz")).json() == {
        "total": 0, "has_more": False, "next_cursor": None, "actions": []}


@pytest.mark.parametrize("cursor", [
    "zzz", "!!!", "%00", base64.urlsafe_b64encode(b"1\x1fx\x1fy").decode(),
    base64.urlsafe_b64encode(b"abc\x1fid").decode(),
    base64.urlsafe_b64encode(b"99999999999999999999999\x1fid").decode(),
    base64.urlsafe_b64encode(b"-5\x1fid").decode(), "A" * 500,
    base64.urlsafe_b64encode(b"\xff\xfe").decode(),
])
async def test_garbage_cursors_are_422(api: Api, cursor: str) -> None:
    await create(api)
    assert_422(await api.get(BASE, params={"cursor": cursor}), ["query", "cursor"])


@pytest.mark.parametrize(("query", "loc"), [
    ("limit=0", ["query", "limit"]), ("limit=201", ["query", "limit"]),
    ("limit=x", ["query", "limit"]), ("search=" + "s" * 201, ["query", "search"]),
])
async def test_list_query_ranges(api: Api, query: str, loc: list[str]) -> None:
    assert_422(await api.get(f"{BASE}?{query}"), loc)


# ---------------------------------------------------------------------------- update / delete


async def test_put_is_partial(api: Api) -> None:
    a = await create(api, payload={"x": 1}, description="keep me")
    r = await api.put(f"{BASE}/{a['action_id']}", {"name": "renamed"})
    assert r.status_code == 200, r.text
    b = r.json()
    assert b["name"] == "renamed"
    assert {k: v for k, v in b.items() if k not in ("name", "updated_at")} == {
        k: v for k, v in a.items() if k not in ("name", "updated_at")}
    r = await api.put(f"{BASE}/{a['action_id']}", {})
    assert r.status_code == 200 and r.json()["name"] == "renamed"


async def test_put_changes_delivery_thread_and_timing(api: Api) -> None:
    a = await create(api)
    aid = a["action_id"]
    r = await api.put(f"{BASE}/{aid}", {"endpoint_id": "ep-2", "thread_mode": "fixed",
                                        "thread_id": "th-1", "payload": {"y": 2},
                                        "retry_delay_seconds": 5, "max_retries": 0})
    assert r.status_code == 200, r.text
    b = r.json()
    assert (b["endpoint_id"], b["thread_mode"], b["thread_id"], b["payload"]) == (
        "ep-2", "fixed", "th-1", {"y": 2})
    assert (b["retry_delay_seconds"], b["max_retries"]) == (5, 0)
    s = (await api.get(f"/v1/schedules/{aid}")).json()
    assert s["action_config"]["queue"] == "ep-2"
    assert s["action_config"]["payload"]["thread_id"] == "th-1"
    assert s["retry_backoff_seconds"] == 5
    r = await api.put(f"{BASE}/{aid}", {"schedule_type": "once",
                                        "scheduled_at": "2026-11-25T10:00:00Z"})
    assert r.status_code == 200, r.text
    assert (r.json()["schedule_type"], r.json()["next_run_at"], r.json()["cron_expression"]) == (
        "once", "2026-11-25T10:00:00.000Z", None)
    r = await api.put(f"{BASE}/{aid}", {"schedule_type": "cron", "cron_expression": "30 9 * * *"})
    assert r.json()["next_run_at"] == "2026-11-22T09:30:00.000Z"
    r = await api.put(f"{BASE}/{aid}", {"cron_expression": "15 9 * * *"})
    assert r.json()["next_run_at"] == "2026-11-22T09:15:00.000Z"


@pytest.mark.parametrize(("change", "loc"), [
    ({"name": None}, ["body", "name"]),
    ({"endpoint_id": None}, ["body", "endpoint_id"]),
    ({"is_enabled": None}, ["body", "is_enabled"]),
    ({"endpoint_id": 3}, ["body", "endpoint_id"]),
    ({"thread_mode": "template"}, ["body", "thread_id_template"]),
    ({"cron_expression": "bad"}, ["body", "cron_expression"]),
    ({"schedule_type": "once"}, ["body", "scheduled_at"]),
    ({"scheduled_at": "2026-12-01T00:00:00Z"}, ["body", "scheduled_at"]),
    ({"timezone": "Nope/Nope"}, ["body", "timezone"]),
    ({"max_retries": 99}, ["body", "max_retries"]),
    ({"what": 1}, ["body", "what"]),
])
async def test_put_refuses_bad_input(api: Api, change: dict[str, Any], loc: list[str]) -> None:
    a = await create(api)
    assert_422(await api.put(f"{BASE}/{a['action_id']}", change), loc)
    assert (await api.get(f"{BASE}/{a['action_id']}")).json() == a


async def test_delete_is_204_then_404(api: Api) -> None:
    a = await create(api)
    run_id = (await api.post(f"{BASE}/{a['action_id']}/trigger")).json()["run_id"]
    r = await api.delete(f"{BASE}/{a['action_id']}")
    assert r.status_code == 204 and r.content == b""
    assert_error(await api.get(f"{BASE}/{a['action_id']}"), 404, "Action not found")
    assert_error(await api.delete(f"{BASE}/{a['action_id']}"), 404)
    assert_error(await api.get(f"/v1/schedules/{a['action_id']}"), 404)
    # its pending run was cancelled and stays readable natively
    assert (await api.get(f"/v1/runs/{run_id}")).json()["status"] == "cancelled"


async def test_deleting_the_schedule_through_v1_deletes_the_action(api: Api) -> None:
    a = await create(api)
    assert (await api.delete(f"/v1/schedules/{a['action_id']}")).status_code == 204
    assert_error(await api.get(f"{BASE}/{a['action_id']}"), 404)
    assert (await api.get(BASE)).json()["total"] == 0


# ---------------------------------------------------------------------------- trigger / runs


async def test_trigger_merges_the_payload_for_that_run_only(api: Api) -> None:
    a = await create(api, payload={"a": 1, "nested": {"x": 1, "y": 2}})
    aid = a["action_id"]
    r = await api.post(f"{BASE}/{aid}/trigger", {"payload": {"b": 2, "nested": {"y": 3}}})
    assert r.status_code == 202, r.text
    t = r.json()
    assert list(t) == ["action_id", "run_id", "execution_id", "status", "message"]
    assert (t["action_id"], t["execution_id"], t["status"]) == (aid, t["run_id"], "pending")
    assert isinstance(t["message"], str) and t["message"]
    run = (await api.get(f"{BASE}/{aid}/runs/{t['run_id']}")).json()
    assert list(run) == RUN_FIELDS
    assert run["resolved_payload"] == {
        "payload": {"a": 1, "nested": {"x": 1, "y": 3}, "b": 2},
        "thread_id": t["run_id"], "namespace_id": "ns-1", "action_id": aid}
    assert (run["resolved_thread_id"], run["trigger_type"], run["attempt"]) == (
        t["run_id"], "manual", 1)
    assert run["workspace_id"] == "ws1"
    # the action's own payload is unchanged; a trigger without a body uses it
    assert (await api.get(f"{BASE}/{aid}")).json()["payload"] == a["payload"]
    t2 = (await api.post(f"{BASE}/{aid}/trigger")).json()
    run2 = (await api.get(f"{BASE}/{aid}/runs/{t2['run_id']}")).json()
    assert run2["resolved_payload"]["payload"] == a["payload"]
    t3 = (await api.post(f"{BASE}/{aid}/trigger", {})).json()
    assert t3["status"] == "pending"


@pytest.mark.parametrize(("body", "loc"), [
    ({"payload": [1]}, ["body", "payload"]),
    ({"payload": "x"}, ["body", "payload"]),
    ({"other": 1}, ["body", "other"]),
    ([1], ["body"]),
])
async def test_trigger_refuses_bad_bodies(api: Api, body: Any, loc: list[str]) -> None:
    a = await create(api)
    assert_422(await api.post(f"{BASE}/{a['action_id']}/trigger", body), loc)
    assert (await api.get(f"{BASE}/{a['action_id']}/runs")).json()["total"] == 0


@pytest.mark.parametrize(("mode", "extra", "expect"), [
    ("new_each_run", {}, "{run}"),
    ("fixed", {"thread_id": "thread-42"}, "thread-42"),
    ("template", {"thread_id_template": "t-{{schedule.name}}-{{run.id}}"},
     "t-Nightly digest-{run}"),
])
async def test_thread_modes_resolve_per_run(api: Api, mode: str, extra: dict[str, Any],
                                            expect: str) -> None:
    a = await create(api, thread_mode=mode, **extra)
    for _ in range(2):
        t = (await api.post(f"{BASE}/{a['action_id']}/trigger")).json()
        run = (await api.get(f"{BASE}/{a['action_id']}/runs/{t['run_id']}")).json()
        assert run["resolved_thread_id"] == expect.format(run=t["run_id"])
        assert run["resolved_payload"]["thread_id"] == run["resolved_thread_id"]


async def test_runs_are_newest_first_with_a_status_filter_and_stable_cursor(api: Api) -> None:
    a = await create(api, endpoint_id="q-runs")
    aid = a["action_id"]
    ids = [(await api.post(f"{BASE}/{aid}/trigger")).json()["run_id"] for _ in range(5)]
    # the oldest two end: one succeeded, one failed (max_retries 3: a retry is queued)
    first = await claim(api, "q-runs")
    assert first is not None and first["id"] == ids[0]
    await complete(api, ids[0])
    second = await claim(api, "q-runs")
    assert second is not None and second["id"] == ids[1]
    await complete(api, ids[1], "failed")
    page = (await api.get(f"{BASE}/{aid}/runs?limit=2")).json()
    assert list(page) == ["total", "has_more", "next_cursor", "runs"]
    total = page["total"]
    assert total == 6  # five triggered + the failed one's retry
    seen = [r["run_id"] for r in page["runs"]]
    while page["next_cursor"]:
        await api.post(f"{BASE}/{aid}/trigger")  # newer runs do not shift older pages
        page = (await api.get(f"{BASE}/{aid}/runs?limit=2&cursor={page['next_cursor']}")).json()
        seen += [r["run_id"] for r in page["runs"]]
    assert page["has_more"] is False
    assert len(seen) == len(set(seen)) == 6
    assert seen[-5:] == ids[::-1]
    ok = (await api.get(f"{BASE}/{aid}/runs?status=succeeded")).json()
    assert [r["run_id"] for r in ok["runs"]] == [ids[0]] and ok["total"] == 1
    failed = (await api.get(f"{BASE}/{aid}/runs?status=failed")).json()
    assert [r["run_id"] for r in failed["runs"]] == [ids[1]]
    assert failed["runs"][0]["error_code"] == "worker_failed"
    assert_422(await api.get(f"{BASE}/{aid}/runs?status=done"), ["query", "status"])
    assert_422(await api.get(f"{BASE}/{aid}/runs?limit=0"), ["query", "limit"])
    assert_422(await api.get(f"{BASE}/{aid}/runs?limit=201"), ["query", "limit"])
    assert_422(await api.get(f"{BASE}/{aid}/runs?cursor=garbage"), ["query", "cursor"])


async def test_counters_running_and_last_run_are_exact(api: Api) -> None:
    a = await create(api, endpoint_id="q-count", max_retries=1)
    aid = a["action_id"]
    t1 = (await api.post(f"{BASE}/{aid}/trigger", {"payload": {"p": 1}})).json()
    claimed = await claim(api, "q-count")
    assert claimed is not None and claimed["id"] == t1["run_id"]
    mid = (await api.get(f"{BASE}/{aid}")).json()
    assert (mid["is_running"], mid["total_runs"]) == (True, 1)
    await complete(api, t1["run_id"], "failed")
    # the retry keeps the trigger's payload override
    retry = await claim(api, "q-count")
    assert retry is None  # not due before its backoff
    runs = (await api.get(f"{BASE}/{aid}/runs")).json()["runs"]
    assert runs[0]["trigger_type"] == "retry" and runs[0]["execution_id"] == t1["run_id"]
    assert runs[0]["resolved_payload"]["payload"] == {"p": 1}
    assert runs[0]["resolved_thread_id"] == runs[0]["run_id"]
    t2 = (await api.post(f"{BASE}/{aid}/trigger")).json()
    c2 = await claim(api, "q-count")
    assert c2 is not None and c2["id"] == t2["run_id"]
    await complete(api, t2["run_id"])
    b = (await api.get(f"{BASE}/{aid}")).json()
    assert (b["is_running"], b["total_runs"], b["successful_runs"], b["failed_runs"]) == (
        False, 3, 1, 1)
    assert (b["last_run_status"], b["last_execution_id"]) == ("succeeded", t2["run_id"])
    assert TS.match(b["last_run_at"])
    listed = (await api.get(BASE)).json()["actions"][0]
    assert {k: listed[k] for k in ("total_runs", "successful_runs", "failed_runs")} == {
        "total_runs": 3, "successful_runs": 1, "failed_runs": 1}


# ---------------------------------------------------------------------------- enable / disable


async def test_disable_stops_and_enable_restarts_fires(api: Api, clock: FakeClock) -> None:
    a = await create(api, cron_expression="* * * * *", endpoint_id="q-tick")
    aid = a["action_id"]
    assert a["next_run_at"] == "2026-11-22T09:00:00.000Z"
    tick(api, clock)
    assert (await api.get(f"{BASE}/{aid}/runs")).json()["total"] == 1
    r = await api.post(f"{BASE}/{aid}/disable")
    assert r.status_code == 200, r.text
    assert list(r.json()) == ACTION_FIELDS
    assert (r.json()["is_enabled"], r.json()["next_run_at"]) == (False, None)
    for _ in range(3):
        advance(api, clock, MIN)
        tick(api, clock)
    assert (await api.get(f"{BASE}/{aid}/runs")).json()["total"] == 1
    r = await api.post(f"{BASE}/{aid}/disable")  # idempotent
    assert r.status_code == 200 and r.json()["is_enabled"] is False
    r = await api.post(f"{BASE}/{aid}/enable")
    assert r.status_code == 200
    assert (r.json()["is_enabled"], r.json()["next_run_at"]) == (True, "2026-11-22T09:03:00.000Z")
    tick(api, clock)
    runs = (await api.get(f"{BASE}/{aid}/runs")).json()["runs"]
    assert [r["trigger_type"] for r in runs] == ["scheduled", "scheduled"]
    job = await claim(api, "q-tick")
    assert job is not None
    assert job["resolved_payload"]["thread_id"] == job["id"]
    assert job["resolved_payload"]["action_id"] == aid


async def test_pausing_through_v1_shows_is_enabled_false(api: Api) -> None:
    a = await create(api)
    assert (await api.post(f"/v1/schedules/{a['action_id']}/pause")).status_code == 200
    assert (await api.get(f"{BASE}/{a['action_id']}")).json()["is_enabled"] is False
    assert (await api.post(f"/v1/schedules/{a['action_id']}/resume")).status_code == 200
    assert (await api.get(f"{BASE}/{a['action_id']}")).json()["is_enabled"] is True


async def test_enabling_a_completed_once_action_is_409(api: Api, clock: FakeClock) -> None:
    a = await create(api, cron_expression=None, scheduled_at="2026-11-22T09:30:00Z")
    advance(api, clock, 31 * MIN)
    tick(api, clock)
    b = (await api.get(f"{BASE}/{a['action_id']}")).json()
    assert (b["is_enabled"], b["total_runs"]) == (False, 1)
    assert_error(await api.post(f"{BASE}/{a['action_id']}/enable"), 409)


# ---------------------------------------------------------------------------- webhooks, config


@pytest.fixture
async def hooked(make_settings: Callable[..., Settings], clock: FakeClock,
                 ) -> AsyncIterator[Api]:
    settings = make_settings(compat_endpoints={"ep-hook": "http://127.0.0.1:9/hook"})
    async with AsyncTestClient(app=build_app(settings, clock)) as client:
        yield Api(client, Path(settings.db + ".key").read_text().strip())


async def test_a_mapped_endpoint_is_a_webhook_with_the_same_body(hooked: Api,
                                                                 clock: FakeClock) -> None:
    a = await create(hooked, endpoint_id="ep-hook", payload={"k": 1})
    s = (await hooked.get(f"/v1/schedules/{a['action_id']}")).json()
    assert s["action_type"] == "webhook"
    assert s["action_config"]["url"] == "http://127.0.0.1:9/hook"
    assert s["action_config"]["body"] == {"payload": {"k": 1}, "thread_id": "{{run.id}}",
                                          "namespace_id": "ns-1",
                                          "action_id": "{{schedule.id}}"}
    t = (await hooked.post(f"{BASE}/{a['action_id']}/trigger", {"payload": {"o": 2}})).json()
    tick(hooked, clock)  # the engine starts it: resolved now
    run = (await hooked.get(f"{BASE}/{a['action_id']}/runs/{t['run_id']}")).json()
    assert run["resolved_payload"] == {"payload": {"k": 1, "o": 2}, "thread_id": t["run_id"],
                                       "namespace_id": "ns-1", "action_id": a["action_id"]}
    assert run["resolved_thread_id"] == t["run_id"]
    # an unmapped endpoint of the same daemon stays a worker queue; switching maps it
    b = await create(hooked, endpoint_id="plain")
    assert (await hooked.get(f"/v1/schedules/{b['action_id']}")).json()["action_type"] == "worker"
    r = await hooked.put(f"{BASE}/{b['action_id']}", {"endpoint_id": "ep-hook"})
    assert r.status_code == 200, r.text
    assert (await hooked.get(f"/v1/schedules/{b['action_id']}")).json()["action_type"] == (
        "webhook")


async def test_the_router_can_be_switched_off(make_settings: Callable[..., Settings],
                                              clock: FakeClock) -> None:
    settings = make_settings(actions_enabled=False)
    async with AsyncTestClient(app=build_app(settings, clock)) as client:
        key = Path(settings.db + ".key").read_text().strip()
        r = await client.get(BASE, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 404
        schema = (await client.get("/schema/openapi.json")).json()
        assert not any(p.startswith("/v1/orgs") for p in schema["paths"])


async def test_the_routes_are_in_the_openapi_document(api: Api) -> None:
    schema = (await api.client.get("/schema/openapi.json")).json()
    base = "/v1/orgs/{org_id}/workspaces/{workspace_id}/apps/{app_id}/actions"
    paths = schema["paths"]
    expected = {
        base: {"get", "post"}, base + "/{action_id}": {"get", "put", "delete"},
        base + "/{action_id}/trigger": {"post"}, base + "/{action_id}/runs": {"get"},
        base + "/{action_id}/runs/{run_id}": {"get"}, base + "/{action_id}/enable": {"post"},
        base + "/{action_id}/disable": {"post"},
    }
    for path, methods in expected.items():
        assert path in paths, sorted(paths)
        assert methods <= set(paths[path]), (path, paths[path].keys())
    listing = paths[base]["get"]
    params = {p["name"]: p for p in listing["parameters"]}
    assert params["limit"]["schema"].get("maximum") == 200
    assert params["limit"]["schema"].get("minimum") == 1
    assert params["limit"]["schema"].get("default") == 50
    assert {"search", "cursor"} <= set(params)
    assert paths[base]["post"]["responses"].keys() >= {"201", "422"}
    assert paths[base + "/{action_id}/trigger"]["post"]["responses"].keys() >= {"202"}
