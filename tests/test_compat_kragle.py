"""The Kragle schedules compatibility router (seed 003, SPEC §7.2) against its contract:
period and timestamp configs, page-based listing of 10, /byid, partial PUT, the `action`
extension, ticks recorded as runs, and public_read."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import T0, Api
from litestar.testing import AsyncTestClient
from test_api_schedules import MIN, UUID, advance, assert_422, assert_error, tick

from schedd.clock import FakeClock
from schedd.config import Settings
from schedd.daemon import build_app

NIL_UUID = "00000000-0000-0000-0000-000000000000"
T0_S = T0 // 1000


async def create(api: Api, body: dict[str, Any]) -> str:
    r = await api.post("/kragle/schedules", body)
    assert r.status_code == 201, r.text
    assert list(r.json()) == ["id"] and UUID.match(r.json()["id"])
    sid: str = r.json()["id"]
    return sid


async def test_create_and_read_a_period_schedule(api: Api) -> None:
    sid = await create(api, {"config": {"period": 300}, "name": "every five"})
    r = await api.get(f"/kragle/schedules/byid/{sid}")
    assert r.status_code == 200
    assert r.json() == {"id": sid, "name": "every five", "once": False,
                        "config": {"period": 300}}
    s = (await api.get(f"/v1/schedules/{sid}")).json()
    assert (s["schedule_type"], s["schedule_expression"], s["action_type"]) == (
        "interval", "300s", "noop")
    assert s["next_run_at"] == "2026-11-22T09:05:00.000Z"


async def test_defaults_name_none_and_once_false(api: Api) -> None:
    sid = await create(api, {"config": {"period": 60}})
    assert (await api.get(f"/kragle/schedules/byid/{sid}")).json() == {
        "id": sid, "name": None, "once": False, "config": {"period": 60}}


async def test_a_once_schedule_takes_a_timestamp(api: Api) -> None:
    at = T0_S + 3600
    sid = await create(api, {"config": {"timestamp": at}, "once": True, "name": "one"})
    assert (await api.get(f"/kragle/schedules/byid/{sid}")).json() == {
        "id": sid, "name": "one", "once": True, "config": {"timestamp": at}}
    s = (await api.get(f"/v1/schedules/{sid}")).json()
    assert (s["schedule_type"], s["next_run_at"]) == ("once", "2026-11-22T10:00:00.000Z")


@pytest.mark.parametrize(("body", "loc"), [
    ({}, ["body", "config"]),
    ({"config": {}}, ["body", "config"]),
    ({"config": {"period": 60, "timestamp": T0_S}}, ["body", "config"]),
    ({"config": {"timestamp": T0_S + 60}}, ["body", "config"]),  # once defaults to false
    ({"config": {"period": 60}, "once": True}, ["body", "config"]),
    ({"config": {"period": "sixty"}}, ["body", "config", "period"]),
    ({"config": {"period": 1.5}}, ["body", "config", "period"]),
    ({"config": {"period": True}}, ["body", "config", "period"]),
    ({"config": {"period": 0}}, ["body", "config", "period"]),
    ({"config": {"period": -5}}, ["body", "config", "period"]),
    ({"config": {"period": 10**30}}, ["body", "config", "period"]),
    ({"config": {"timestamp": 10**12}, "once": True}, ["body", "config", "timestamp"]),
    ({"config": {"timestamp": T0_S - 86400}, "once": True}, ["body", "config", "timestamp"]),
    ({"config": {"cron": "* * * * *"}}, ["body", "config", "cron"]),
    ({"config": [1]}, ["body", "config"]),
    ({"config": {"period": 60}, "name": 5}, ["body", "name"]),
    ({"config": {"period": 60}, "name": "x" * 201}, ["body", "name"]),
    ({"config": {"period": 60}, "once": "no"}, ["body", "once"]),
    ({"config": {"period": 60}, "extra": 1}, ["body", "extra"]),
    ({"config": {"period": 60}, "action": {"action_type": "nope"}},
     ["body", "action", "action_type"]),
    ({"config": {"period": 60}, "action": {"action_type": "webhook",
                                           "action_config": {"url": "ftp://x"}}},
     ["body", "action", "action_config", "url"]),
])
async def test_bad_input_is_422_naming_the_field(api: Api, body: dict[str, Any],
                                                 loc: list[Any]) -> None:
    assert_422(await api.post("/kragle/schedules", body), loc)
    assert (await api.get("/kragle/schedules")).json()["count"] == 0


async def test_listing_is_ten_a_page(api: Api, clock: FakeClock) -> None:
    ids = []
    for i in range(23):
        ids.append(await create(api, {"config": {"period": 60 + i}, "name": f"s{i}"}))
        advance(api, clock, 1)
    await api.post("/v1/schedules", {"name": "native", "schedule_type": "interval",
                                     "schedule_expression": "1h", "action_type": "noop",
                                     "action_config": {}})
    seen = []
    for page, size in ((1, 10), (2, 10), (3, 3)):
        r = (await api.get(f"/kragle/schedules?page={page}")).json()
        assert list(r) == ["count", "pagesize", "page", "schedules"]
        assert (r["count"], r["pagesize"], r["page"], len(r["schedules"])) == (
            23, size, page, size)
        seen += [s["id"] for s in r["schedules"]]
    assert seen == ids
    assert (await api.get("/kragle/schedules")).json()["page"] == 1
    assert (await api.get("/kragle/schedules")).json()["schedules"][0]["id"] == ids[0]
    beyond = (await api.get("/kragle/schedules?page=4")).json()
    assert (beyond["count"], beyond["pagesize"], beyond["schedules"]) == (23, 0, [])


@pytest.mark.parametrize("page", ["0", "-1", "x", "1.5", str(10**16)])
async def test_bad_pages_are_422(api: Api, page: str) -> None:
    assert_422(await api.get(f"/kragle/schedules?page={page}"), ["query", "page"])


async def test_put_is_partial_and_answers_the_schedule(api: Api) -> None:
    sid = await create(api, {"config": {"period": 60}, "name": "n"})
    r = await api.put(f"/kragle/schedules/{sid}", {"name": "renamed"})
    assert r.status_code == 200, r.text
    assert r.json() == {"id": sid, "name": "renamed", "once": False, "config": {"period": 60}}
    r = await api.put(f"/kragle/schedules/{sid}", {"config": {"period": 120}})
    assert r.json()["config"] == {"period": 120}
    assert (await api.get(f"/v1/schedules/{sid}")).json()["schedule_expression"] == "120s"
    at = T0_S + 7200
    r = await api.put(f"/kragle/schedules/{sid}", {"config": {"timestamp": at}, "once": True})
    assert r.status_code == 200, r.text
    assert r.json() == {"id": sid, "name": "renamed", "once": True,
                        "config": {"timestamp": at}}
    s = (await api.get(f"/v1/schedules/{sid}")).json()
    assert (s["schedule_type"], s["next_run_at"]) == ("once", "2026-11-22T11:00:00.000Z")
    assert_422(await api.put(f"/kragle/schedules/{sid}", {"once": False}), ["body", "config"])
    assert_422(await api.put(f"/kragle/schedules/{sid}", {"config": {"period": 5}}),
               ["body", "config"])
    r = await api.put(f"/kragle/schedules/{sid}", {"config": {"period": 5}, "once": False,
                                                   "name": None})
    assert r.json() == {"id": sid, "name": None, "once": False, "config": {"period": 5}}
    assert (await api.put(f"/kragle/schedules/{sid}", {})).json()["config"] == {"period": 5}
    assert_422(await api.put(f"/kragle/schedules/{sid}", {"config": {"period": 1,
                                                                     "timestamp": 2}}),
               ["body", "config"])


async def test_not_found_and_bad_ids(api: Api) -> None:
    assert_error(await api.get(f"/kragle/schedules/byid/{NIL_UUID}"), 404, "Schedule not found")
    assert_error(await api.put(f"/kragle/schedules/{NIL_UUID}", {"name": "x"}), 404)
    assert_422(await api.get("/kragle/schedules/byid/42"), ["path", "id"])
    assert_422(await api.put("/kragle/schedules/42", {"name": "x"}), ["path", "id"])
    r = await api.post("/v1/schedules", {"name": "native", "schedule_type": "interval",
                                         "schedule_expression": "1h", "action_type": "noop",
                                         "action_config": {}})
    assert_error(await api.get(f"/kragle/schedules/byid/{r.json()['id']}"), 404)
    sid = await create(api, {"config": {"period": 60}})
    other = await api.other_tenant()
    assert_error(await other.get(f"/kragle/schedules/byid/{sid}"), 404)
    assert_error(await other.put(f"/kragle/schedules/{sid}", {"name": "x"}), 404)
    assert (await other.get("/kragle/schedules")).json()["count"] == 0


async def test_ticks_are_recorded_as_runs(api: Api, clock: FakeClock) -> None:
    sid = await create(api, {"config": {"period": 60}})
    for _ in range(3):
        advance(api, clock, MIN)
        tick(api, clock)
        # the noop runs as a task of the app's loop: let it end before the next tick (on a
        # loaded box it could still run then, and the tick be skipped as an overlap)
        for _ in range(500):
            runs = (await api.get(f"/v1/schedules/{sid}/runs")).json()["runs"]
            if all(r["status"] not in ("pending", "running") for r in runs):
                break
            api.call(asyncio.sleep, 0.01)
    runs = (await api.get(f"/v1/schedules/{sid}/runs")).json()["runs"]
    assert [(r["action_type"], r["status"]) for r in runs] == [("noop", "succeeded")] * 3
    assert [r["scheduled_for"] for r in runs] == [
        "2026-11-22T09:03:00.000Z", "2026-11-22T09:02:00.000Z", "2026-11-22T09:01:00.000Z"]


async def test_the_action_extension_gives_ticks_real_work(api: Api, clock: FakeClock) -> None:
    sid = await create(api, {"config": {"period": 60}, "action": {
        "action_type": "worker", "action_config": {"queue": "kq", "payload": {"n": 1}}}})
    assert (await api.get(f"/kragle/schedules/byid/{sid}")).json()["config"] == {"period": 60}
    advance(api, clock, MIN)
    tick(api, clock)
    r = await api.post("/v1/worker/claim", {"queues": ["kq"], "worker_id": "w",
                                            "wait_seconds": 0})
    assert r.status_code == 200 and r.json()["resolved_payload"] == {"n": 1}
    r = await api.put(f"/kragle/schedules/{sid}", {"action": {"action_type": "noop"}})
    assert r.status_code == 200
    assert (await api.get(f"/v1/schedules/{sid}")).json()["action_type"] == "noop"


async def test_keys_are_needed_by_default(api: Api) -> None:
    for method, path in (("GET", "/kragle/schedules"),
                         ("GET", f"/kragle/schedules/byid/{NIL_UUID}"),
                         ("POST", "/kragle/schedules"),
                         ("PUT", f"/kragle/schedules/{NIL_UUID}")):
        r = await api.client.request(method, path, json={"config": {"period": 60}})
        assert r.status_code == 401, (method, path)


async def test_public_read_serves_the_named_tenant_without_a_key(
    make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    settings = make_settings(kragle_public_read=True, kragle_tenant="default")
    async with AsyncTestClient(app=build_app(settings, clock)) as client:
        api = Api(client, Path(settings.db + ".key").read_text().strip())
        sid = await create(api, {"config": {"period": 60}, "name": "pub"})
        other = await api.other_tenant()
        hidden = await create(other, {"config": {"period": 60}, "name": "theirs"})
        r = await client.get("/kragle/schedules")
        assert r.status_code == 200
        assert [s["id"] for s in r.json()["schedules"]] == [sid]
        assert (await client.get(f"/kragle/schedules/byid/{sid}")).json()["name"] == "pub"
        assert_error(await client.get(f"/kragle/schedules/byid/{hidden}"), 404)
        # a key still means its own tenant; writes always need one
        mine = (await other.get("/kragle/schedules")).json()
        assert [s["id"] for s in mine["schedules"]] == [hidden]
        r = await client.post("/kragle/schedules", json={"config": {"period": 60}})
        assert r.status_code == 401
        r = await client.put(f"/kragle/schedules/{sid}", json={"name": "x"})
        assert r.status_code == 401
        bad = await client.get("/kragle/schedules", headers={"X-Api-Key": "wrong"})
        assert bad.status_code == 401


async def test_public_read_of_a_tenant_that_does_not_exist(
    make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    settings = make_settings(kragle_public_read=True, kragle_tenant="nobody")
    async with AsyncTestClient(app=build_app(settings, clock)) as client:
        r = await client.get("/kragle/schedules")
        assert r.json() == {"count": 0, "pagesize": 0, "page": 1, "schedules": []}
        assert_error(await client.get(f"/kragle/schedules/byid/{NIL_UUID}"), 404)


async def test_the_router_can_be_switched_off(make_settings: Callable[..., Settings],
                                              clock: FakeClock) -> None:
    settings = make_settings(kragle_enabled=False)
    async with AsyncTestClient(app=build_app(settings, clock)) as client:
        key = Path(settings.db + ".key").read_text().strip()
        r = await client.get("/kragle/schedules", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 404
        paths = (await client.get("/schema/openapi.json")).json()["paths"]
        assert not any(p.startswith("/kragle") for p in paths)


async def test_the_routes_are_in_the_openapi_document(api: Api) -> None:
    paths = (await api.client.get("/schema/openapi.json")).json()["paths"]
    assert {"get", "post"} <= set(paths["/kragle/schedules"])
    assert "get" in paths["/kragle/schedules/byid/{id}"]
    assert "put" in paths["/kragle/schedules/{id}"]
    # one ActionType component: a second enum of that name made Litestar rename both and
    # left the native create's $ref dangling
    components = (await api.client.get("/schema/openapi.json")).json()["components"]["schemas"]
    assert "ActionType" in components and not [n for n in components if "_ActionType" in n]
    page = {p["name"]: p for p in paths["/kragle/schedules"]["get"]["parameters"]}["page"]
    assert (page["schema"]["minimum"], page["schema"]["default"]) == (1, 1)

