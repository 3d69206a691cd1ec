"""Names and keys that identify something take text only: a NUL character is a 422 naming
the field, and a path key whose percent-encoded bytes are not UTF-8 is a 422 too (it used
to be decoded to U+FFFD, so %FF and %FE were the same key)."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Api, schedule_body
from test_api_schedules import assert_422

CONN = "84b500d7-71c8-4b1f-adf4-f1eb0000973d"
SYNCS = "/api/v1/syncs"


async def _definition(api: Api) -> str:
    r = await api.post("/v1/entity-definitions", json={"name": "customers",
                                                        "fields": {"d": "date"}})
    assert r.status_code == 201, r.text
    did: str = r.json()["id"]
    return did


async def _put(api: Api, did: str, raw_key: str) -> Any:
    return await api.put(f"/v1/entity-definitions/{did}/records/{raw_key}",
                         json={"data": {"d": "2026-01-01"}})


async def test_record_keys_in_the_path(api: Api) -> None:
    did = await _definition(api)
    assert_422(await _put(api, did, "a%00b"), ["path", "key"], "string_pattern_mismatch")
    for raw in ("%FF", "%FE", "ab%C3", "%ED%A0%80"):  # not UTF-8 (the last: a surrogate)
        r = await _put(api, did, raw)
        body = assert_422(r, ["path", "key"], "string_unicode")
        assert "UTF-8" in body["msg"]
        for verb in ("get", "delete"):
            r = await getattr(api, verb)(f"/v1/entity-definitions/{did}/records/{raw}")
            assert_422(r, ["path", "key"], "string_unicode")
    r = await api.get(f"/v1/entity-definitions/{did}/records")
    assert r.json()["records"] == []  # nothing was stored
    # U+FFFD itself, sent as UTF-8, is an ordinary key, and only that key
    assert (await _put(api, did, "%EF%BF%BD")).status_code == 201
    r = await api.get(f"/v1/entity-definitions/{did}/records/%EF%BF%BD")
    assert r.status_code == 200 and r.json()["key"] == "\ufffd"
    assert_422(await api.get(f"/v1/entity-definitions/{did}/records/%FF"), ["path", "key"],
               "string_unicode")
    # other non-ASCII keys are untouched
    assert (await _put(api, did, "caf%C3%A9")).status_code == 201
    assert (await api.get(f"/v1/entity-definitions/{did}/records/caf%C3%A9")).json()[
        "key"] == "café"


async def test_record_keys_in_a_batch(api: Api) -> None:
    did = await _definition(api)
    url = f"/v1/entity-definitions/{did}/records/batch"
    r = await api.post(url, json={"upsert": [{"key": "ok", "data": {"d": "2026-01-01"}},
                                             {"key": "k\x00", "data": {"d": "2026-01-01"}}]})
    assert_422(r, ["body", "upsert", 1, "key"], "string_pattern_mismatch")
    assert_422(await api.post(url, json={"delete": ["x\x00y"]}), ["body", "delete", 0],
               "string_pattern_mismatch")
    assert (await api.get(f"/v1/entity-definitions/{did}/records")).json()["records"] == []


async def test_definition_names(api: Api) -> None:
    r = await api.post("/v1/entity-definitions", json={"name": "a\x00b",
                                                        "fields": {"d": "date"}})
    assert_422(r, ["body", "name"], "string_pattern_mismatch")
    assert (await api.get("/v1/entity-definitions")).json()["total"] == 0


@pytest.mark.parametrize("field", ["slug", "taskSlug", "name"])
async def test_sync_names_and_slugs(api: Api, field: str) -> None:
    body = {"connectionId": CONN, "name": "orders", field: "a\x00b"}
    assert_422(await api.post(SYNCS, json=body), ["body", field], "string_pattern_mismatch")
    r = await api.post(SYNCS, json={"connectionId": CONN, "name": "orders", field: "ok"})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    if field != "taskSlug":  # set at create only
        assert_422(await api.patch(f"{SYNCS}/{sid}", json={field: "b\x00"}),
                   ["body", field], "string_pattern_mismatch")
    assert (await api.get(f"{SYNCS}/{sid}")).json()[field] == "ok"


# ------------------------------------------------------------------ every string field
# No string field a client sends takes U+0000: a 422 naming the field, at the API's
# validation, on both backends (PostgreSQL's text cannot hold it; SQLite's could, so the
# same request used to be stored there and refused by the PostgreSQL store, naming only
# "body"). Free JSON objects (action_config, payload, record data, sourceConfig, a
# worker's result) are stored as JSON text, escaped, and keep it on both.
NUL = "a\x00b"
NUL_Q = "a%00b"  # the same, in a query string or a path
RANDOM_ID = "9b2f0c3e-8a41-4d51-9f7a-2c1e5d6b7a80"


async def test_schedule_strings(api: Api) -> None:
    did = await _definition(api)
    relative = {"schedule_type": "relative", "schedule_expression": "09:00",
                "relative_entity_definition_id": did, "relative_field_name": "d"}
    cases: list[tuple[dict[str, Any], list[Any]]] = [
        ({"name": NUL}, ["body", "name"]),
        ({"description": NUL}, ["body", "description"]),
        ({"external_id": NUL}, ["body", "external_id"]),
        ({"deduplication_key": NUL}, ["body", "deduplication_key"]),
        ({"schedule_expression": "15m\x00"}, ["body", "schedule_expression"]),
        ({"timezone": "UTC\x00"}, ["body", "timezone"]),
        ({"start_at": "2026-11-23T09:00:00Z\x00"}, ["body", "start_at"]),
        ({"end_at": "2027-11-23T09:00:00Z\x00"}, ["body", "end_at"]),
        ({**relative, "relative_field_name": "d\x00"}, ["body", "relative_field_name"]),
    ]
    for fields, loc in cases:
        assert_422(await api.post("/v1/schedules", json=schedule_body(**fields)), loc,
                   "string_pattern_mismatch")
    assert (await api.get("/v1/schedules")).json()["total"] == 0
    r = await api.post("/v1/schedules", json=schedule_body(name="ok"))
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    for field in ("name", "description", "schedule_expression", "timezone"):
        assert_422(await api.put(f"/v1/schedules/{sid}", json={field: "15m\x00"}),
                   ["body", field], "string_pattern_mismatch")
    assert (await api.get(f"/v1/schedules/{sid}")).json()["name"] == "ok"
    assert_422(await api.get("/v1/schedules", params={"external_id": NUL}),
               ["query", "external_id"], "string_pattern_mismatch")


async def test_run_and_worker_strings(api: Api) -> None:
    r = await api.post("/v1/schedules", json=schedule_body(
        action_type="worker", action_config={"queue": "q1"}))
    assert r.status_code == 201, r.text
    run = (await api.post(f"/v1/schedules/{r.json()['id']}/trigger")).json()
    rid = run["id"]
    assert_422(await api.post(f"/v1/runs/{rid}/cancel", json={"reason": NUL}),
               ["body", "reason"], "string_pattern_mismatch")
    assert_422(await api.post("/v1/worker/claim", json={"queues": ["q1", NUL],
                                                          "worker_id": "w", "wait_seconds": 0}),
               ["body", "queues", 1], "string_pattern_mismatch")
    assert_422(await api.post("/v1/worker/claim", json={"queues": ["q1"], "worker_id": NUL,
                                                          "wait_seconds": 0}),
               ["body", "worker_id"], "string_pattern_mismatch")
    assert (await api.get(f"/v1/runs/{rid}")).json()["status"] == "pending"  # not claimed
    claimed = await api.post("/v1/worker/claim", json={"queues": ["q1"], "worker_id": "w",
                                                        "wait_seconds": 0})
    assert claimed.status_code == 200 and claimed.json()["id"] == rid, claimed.text
    assert_422(await api.post(f"/v1/runs/{rid}/heartbeat", json={"worker_id": NUL}),
               ["body", "worker_id"], "string_pattern_mismatch")
    for body, loc in (({"worker_id": NUL, "status": "succeeded"}, ["body", "worker_id"]),
                      ({"worker_id": "w", "status": "failed", "error_message": NUL},
                       ["body", "error_message"])):
        assert_422(await api.post(f"/v1/runs/{rid}/complete", json=body), loc,
                   "string_pattern_mismatch")
    got = (await api.get(f"/v1/runs/{rid}")).json()
    assert got["status"] == "running" and got["cancel_reason"] is None


async def test_entity_strings(api: Api) -> None:
    assert_422(await api.post("/v1/entity-definitions", json={
        "name": "c", "description": NUL, "fields": {"d": "date"}}),
        ["body", "description"], "string_pattern_mismatch")
    did = await _definition(api)
    assert_422(await api.put(f"/v1/entity-definitions/{did}", json={"description": NUL}),
               ["body", "description"], "string_pattern_mismatch")
    assert (await api.get(f"/v1/entity-definitions/{did}")).json()["description"] is None
    assert_422(await api.get(f"/v1/entity-definitions/{did}/records", params={"after": NUL}),
               ["query", "after"], "string_pattern_mismatch")


ACTIONS = "/v1/orgs/acme/workspaces/ws1/apps/app1/actions"


async def test_compat_action_strings(api: Api) -> None:
    base = {"name": "digest", "endpoint_id": "ep-1", "namespace_id": "ns-1",
            "cron_expression": "0 10 * * *"}
    cases: list[dict[str, Any]] = [
        {"name": NUL}, {"namespace_id": NUL}, {"description": NUL},
        {"cron_expression": "0 10 * * *\x00"}, {"timezone": "UTC\x00"},
        {"thread_mode": "fixed", "thread_id": NUL},
        {"thread_mode": "template", "thread_id_template": NUL},
        {"cron_expression": None, "schedule_type": "once", "scheduled_at": NUL},
    ]
    for fields in cases:
        body = {k: v for k, v in {**base, **fields}.items() if v is not None}
        field = next(k for k, v in fields.items() if isinstance(v, str) and "\x00" in v)
        assert_422(await api.post(ACTIONS, json=body), ["body", field],
                   "string_pattern_mismatch")
    for i, part in enumerate(("orgs", "workspaces", "apps")):
        segs = ACTIONS.split("/")
        segs[3 + 2 * i] = NUL_Q
        name = {"orgs": "org_id", "workspaces": "workspace_id", "apps": "app_id"}[part]
        assert_422(await api.post("/".join(segs), json=base), ["path", name],
                   "string_pattern_mismatch")
    assert_422(await api.get(ACTIONS, params={"search": NUL}), ["query", "search"],
               "string_pattern_mismatch")
    assert (await api.get(ACTIONS)).json()["actions"] == []
    r = await api.post(ACTIONS, json=base)
    assert r.status_code == 201, r.text
    aid = r.json()["action_id"]
    for field in ("name", "namespace_id", "description", "timezone"):
        assert_422(await api.put(f"{ACTIONS}/{aid}", json={field: NUL}), ["body", field],
                   "string_pattern_mismatch")
    assert (await api.get(f"{ACTIONS}/{aid}")).json()["name"] == "digest"


async def test_kragle_strings(api: Api) -> None:
    body = {"config": {"period": 60}, "name": NUL}
    assert_422(await api.post("/kragle/schedules", json=body), ["body", "name"],
               "string_pattern_mismatch")
    assert (await api.get("/kragle/schedules")).json()["count"] == 0
    r = await api.post("/kragle/schedules", json={"config": {"period": 60}, "name": "ok"})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert_422(await api.put(f"/kragle/schedules/{sid}", json={"name": NUL}), ["body", "name"],
               "string_pattern_mismatch")
    assert (await api.get(f"/kragle/schedules/byid/{sid}")).json()["name"] == "ok"


async def test_sync_strings(api: Api) -> None:
    base = {"connectionId": CONN, "name": "orders"}
    binding = {"entityKey": "e", "tableName": "t"}
    cases: list[tuple[dict[str, Any], list[Any]]] = [
        ({"schedule": {"scheduleExpression": "0 * * * *\x00"}},
         ["body", "schedule", "scheduleExpression"]),
        ({"schedule": {"scheduleExpression": "0 * * * *", "timezone": "UTC\x00"}},
         ["body", "schedule", "timezone"]),
        ({"entities": ["ok", NUL]}, ["body", "entities", 1]),
        ({"tableBindings": [{**binding, "entityKey": NUL}]},
         ["body", "tableBindings", 0, "entityKey"]),
        ({"tableBindings": [{**binding, "tableName": NUL}]},
         ["body", "tableBindings", 0, "tableName"]),
        ({"tableBindings": [{**binding, "cursorField": NUL}]},
         ["body", "tableBindings", 0, "cursorField"]),
        ({"tableBindings": [{**binding, "primaryKeyColumns": ["id", NUL]}]},
         ["body", "tableBindings", 0, "primaryKeyColumns", 1]),
    ]
    for fields, loc in cases:
        assert_422(await api.post(SYNCS, json={**base, **fields}), loc,
                   "string_pattern_mismatch")
    assert (await api.get(SYNCS)).json()["total"] == 0
    r = await api.post(SYNCS, json=base)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    for fields, loc in cases:
        assert_422(await api.patch(f"{SYNCS}/{sid}", json=fields), loc,
                   "string_pattern_mismatch")
    assert_422(await api.get(SYNCS, params={"q": NUL}), ["query", "q"],
               "string_pattern_mismatch")
    got = (await api.get(f"{SYNCS}/{sid}")).json()
    assert got["schedule"] is None and got["tableBindings"] == []


async def test_json_objects_keep_it_on_both_backends(api: Api) -> None:
    """Free JSON is stored as JSON text: U+0000 inside it is kept, escaped, on both."""
    r = await api.post("/v1/schedules", json=schedule_body(
        action_type="webhook", action_config={"url": "http://127.0.0.1:9/h",
                                              "body": {"note": NUL}}))
    assert r.status_code == 201, r.text
    got = (await api.get(f"/v1/schedules/{r.json()['id']}")).json()
    assert got["action_config"]["body"] == {"note": NUL}
