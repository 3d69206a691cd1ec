"""/v1/entity-definitions, records and relative schedules against SPEC §3.7: every route,
its answers, and every kind of bad input answered with a 4xx naming the place."""

from __future__ import annotations

from typing import Any

from conftest import T0, Api, schedule_body
from test_api_schedules import NIL_UUID, TS, UUID, advance, assert_422, assert_error, tick

from schedd.clock import FakeClock

DEFS = "/v1/entity-definitions"
DAY = 86_400_000


async def make_def(api: Api, name: str = "customers", **fields: str) -> dict[str, Any]:
    r = await api.post(DEFS, {"name": name, "description": "our customers",
                              "fields": fields or {"renewal": "date", "plan": "string",
                                                   "seats": "number", "active": "boolean",
                                                   "signed": "datetime"}})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def relative_body(def_id: str, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"schedule_type": "relative", "schedule_expression": "09:00",
                              "relative_entity_definition_id": def_id,
                              "relative_field_name": "renewal"}
    fields.update(overrides)
    return schedule_body(**fields)


# ---------------------------------------------------------------------- definitions
async def test_definition_crud(api: Api) -> None:
    d = await make_def(api)
    assert UUID.match(d["id"]) and TS.match(d["created_at"]) and TS.match(d["updated_at"])
    assert d["name"] == "customers" and d["record_count"] == 0
    assert set(d) == {"id", "tenant_id", "name", "description", "fields", "record_count",
                      "created_at", "updated_at"}
    r = await api.get(f"{DEFS}/{d['id']}")
    assert r.status_code == 200 and r.json() == d
    await make_def(api, "orders", placed="date")
    r = await api.get(DEFS, params={"limit": 1})
    body = r.json()
    assert (body["total"], body["limit"], body["offset"], body["has_more"]) == (2, 1, 0, True)
    assert [x["name"] for x in body["entity_definitions"]] == ["customers"]
    # fields merge: add one, retype one, remove one
    r = await api.put(f"{DEFS}/{d['id']}", {"description": "changed", "fields": {
        "region": "string", "seats": "string", "active": None}})
    assert r.status_code == 200, r.text
    assert r.json()["fields"] == {"renewal": "date", "plan": "string", "seats": "string",
                                  "signed": "datetime", "region": "string"}
    assert r.json()["description"] == "changed"
    r = await api.delete(f"{DEFS}/{d['id']}")
    assert r.status_code == 204
    assert_error(await api.get(f"{DEFS}/{d['id']}"), 404, "Entity definition not found")


async def test_definition_bad_input(api: Api) -> None:
    await make_def(api)
    assert_error(await api.post(DEFS, {"name": "customers", "fields": {"a": "date"}}), 409)
    assert_422(await api.post(DEFS, {"name": "", "fields": {"a": "date"}}), ["body", "name"])
    assert_422(await api.post(DEFS, {"name": "x" * 101, "fields": {"a": "date"}}),
               ["body", "name"])
    assert_422(await api.post(DEFS, {"name": "n", "fields": {}}), ["body", "fields"])
    assert_422(await api.post(DEFS, {"name": "n", "fields": {"a": "text"}}),
               ["body", "fields", "a"], "enum")
    assert_422(await api.post(DEFS, {"name": "n", "fields": {"9a": "date"}}),
               ["body", "fields", "9a"])
    assert_422(await api.post(DEFS, {"name": "n", "fields": {f"f{i}": "date"
                                                              for i in range(101)}}),
               ["body", "fields"])
    assert_422(await api.post(DEFS, {"name": "n"}), ["body", "fields"], "missing")
    assert_422(await api.post(DEFS, {"name": "n", "fields": {"a": "date"}, "x": 1}),
               ["body", "x"], "extra_forbidden")
    assert_422(await api.get(f"{DEFS}/not-a-uuid"), ["path", "definition_id"])
    assert_error(await api.get(f"{DEFS}/{NIL_UUID}"), 404)
    assert_422(await api.get(DEFS, params={"limit": 0}), ["query", "limit"])


async def test_definitions_are_per_tenant(api: Api) -> None:
    d = await make_def(api)
    other = await api.other_tenant()
    assert_error(await other.get(f"{DEFS}/{d['id']}"), 404)
    assert_error(await other.put(f"{DEFS}/{d['id']}/records/k", {"data": {}}), 404)
    assert (await other.get(DEFS)).json()["total"] == 0
    # the same name is free in another tenant
    r = await other.post(DEFS, {"name": "customers", "fields": {"a": "date"}})
    assert r.status_code == 201
    # a schedule cannot use another tenant's definition
    assert_422(await other.post("/v1/schedules", relative_body(d["id"])),
               ["body", "relative_entity_definition_id"])


async def test_used_fields_cannot_be_retyped_or_removed_nor_the_definition_deleted(
        api: Api) -> None:
    d = await make_def(api)
    r = await api.post("/v1/schedules", relative_body(d["id"],
                                                      relative_filter={"plan": "pro"}))
    assert r.status_code == 201, r.text
    s = r.json()
    for change in ({"renewal": "datetime"}, {"renewal": None}, {"plan": "number"},
                   {"plan": None}):
        assert_error(await api.put(f"{DEFS}/{d['id']}", {"fields": change}), 409)
    r = await api.put(f"{DEFS}/{d['id']}", {"fields": {"seats": None, "new": "date"}})
    assert r.status_code == 200
    assert_error(await api.delete(f"{DEFS}/{d['id']}"), 409)
    assert (await api.delete(f"/v1/schedules/{s['id']}")).status_code == 204
    assert (await api.delete(f"{DEFS}/{d['id']}")).status_code == 204


# ---------------------------------------------------------------------- records
async def test_record_crud_and_keyset_pages(api: Api) -> None:
    d = await make_def(api)
    base = f"{DEFS}/{d['id']}/records"
    r = await api.put(f"{base}/c1", {"data": {"renewal": "2027-01-01", "extra": [1, 2]}})
    assert r.status_code == 201, r.text
    rec = r.json()
    assert set(rec) == {"key", "data", "created_at", "updated_at"}
    assert rec["data"] == {"renewal": "2027-01-01", "extra": [1, 2]}  # undeclared kept
    r = await api.put(f"{base}/c1", {"data": {"renewal": None, "plan": "pro"}})
    assert r.status_code == 200
    assert r.json()["created_at"] == rec["created_at"]
    assert (await api.get(f"{base}/c1")).json()["data"] == {"renewal": None, "plan": "pro"}
    for k in ("c3", "c2", "c4"):
        assert (await api.put(f"{base}/{k}", {"data": {}})).status_code == 201
    assert (await api.get(f"{DEFS}/{d['id']}")).json()["record_count"] == 4
    page = (await api.get(base, params={"limit": 3})).json()
    assert [x["key"] for x in page["records"]] == ["c1", "c2", "c3"]
    assert page["next_after"] == "c3"
    page = (await api.get(base, params={"limit": 3, "after": "c3"})).json()
    assert [x["key"] for x in page["records"]] == ["c4"] and page["next_after"] is None
    assert (await api.delete(f"{base}/c2")).status_code == 204
    assert_error(await api.get(f"{base}/c2"), 404, "Record not found")
    assert_error(await api.delete(f"{base}/c2"), 404)
    assert (await api.get(f"{DEFS}/{d['id']}")).json()["record_count"] == 3


async def test_record_bad_input(api: Api) -> None:
    d = await make_def(api)
    base = f"{DEFS}/{d['id']}/records"
    for field, value in (("renewal", "2027-13-01"), ("renewal", "tomorrow"),
                         ("renewal", 20270101), ("signed", "2027-01-01T09:00:00"),
                         ("signed", "2027-01-01"), ("seats", "3"), ("seats", True),
                         ("active", 1), ("plan", 5)):
        assert_422(await api.put(f"{base}/k", {"data": {field: value}}),
                   ["body", "data", field], "type_error")
    assert_422(await api.put(f"{base}/{'k' * 201}", {"data": {}}), ["path", "key"])
    assert_422(await api.put(f"{base}/k", {"data": []}), ["body", "data"])
    assert_422(await api.put(f"{base}/k", {}), ["body", "data"], "missing")
    assert_error(await api.put(f"{DEFS}/{NIL_UUID}/records/k", {"data": {}}), 404,
                 "Entity definition not found")
    assert_422(await api.get(base, params={"limit": 1001}), ["query", "limit"])
    # nothing was written
    assert (await api.get(base)).json()["records"] == []


async def test_batch_is_all_or_none(api: Api) -> None:
    d = await make_def(api)
    base = f"{DEFS}/{d['id']}/records"
    await api.put(f"{base}/old", {"data": {}})
    ups = [{"key": f"k{i:05d}", "data": {"renewal": "2027-01-01", "seats": i}}
           for i in range(5000)]
    r = await api.post(f"{base}/batch", {"upsert": ups, "delete": ["old", "missing"]})
    assert r.status_code == 200, r.text
    assert r.json() == {"upserted": 5000, "deleted": 1}
    assert (await api.get(f"{DEFS}/{d['id']}")).json()["record_count"] == 5000
    # one bad item: 422 naming it, nothing applied
    bad = [{"key": f"n{i}", "data": {"seats": i}} for i in range(100)]
    bad[57]["data"]["renewal"] = "2027-02-30"
    r = await api.post(f"{base}/batch", {"upsert": bad, "delete": ["k00000"]})
    assert_422(r, ["body", "upsert", 57, "data", "renewal"], "type_error")
    assert (await api.get(f"{DEFS}/{d['id']}")).json()["record_count"] == 5000
    assert_error(await api.get(f"{base}/n0"), 404)
    assert (await api.get(f"{base}/k00000")).status_code == 200
    # sizes and shapes
    big = [{"key": f"b{i}", "data": {}} for i in range(10_000)]
    assert_422(await api.post(f"{base}/batch", {"upsert": big, "delete": ["x"]}),
               ["body", "upsert"], "too_long")
    assert_422(await api.post(f"{base}/batch", {"upsert": [*big, {"key": "z", "data": {}}]}),
               ["body", "upsert"], "too_long")
    assert_422(await api.post(f"{base}/batch", {"upsert": [{"key": "k" * 201, "data": {}}]}),
               ["body", "upsert", 0, "key"], "string_too_long")
    assert_422(await api.post(f"{base}/batch", {"upsert": [{"key": "a", "data": {}},
                                                           {"key": "a", "data": {}}]}),
               ["body", "upsert", 1, "key"])
    assert_422(await api.post(f"{base}/batch", {"upsert": [{"key": "a"}]}),
               ["body", "upsert", 0, "data"], "missing")
    assert_422(await api.post(f"{base}/batch", {"delete": ["", "a"]}), ["body", "delete", 0])
    assert_422(await api.post(f"{base}/batch", {"upsert": [], "remove": []}),
               ["body", "remove"], "extra_forbidden")
    assert (await api.get(f"{DEFS}/{d['id']}")).json()["record_count"] == 5000


# ---------------------------------------------------------------------- relative schedules
async def test_relative_schedule_create_and_bad_input(api: Api) -> None:
    d = await make_def(api)
    r = await api.post("/v1/schedules", relative_body(d["id"], relative_offset_days=-3))
    assert r.status_code == 201, r.text
    s = r.json()
    assert s["schedule_type"] == "relative" and s["relative_offset_days"] == -3
    assert s["next_run_at"] is None  # no records yet
    # the expression defaults to 00:00 and the offset to 0
    r = await api.post("/v1/schedules", relative_body(d["id"], schedule_expression=None))
    assert r.status_code == 201
    assert (r.json()["schedule_expression"], r.json()["relative_offset_days"]) == ("00:00", 0)
    cases: list[tuple[dict[str, Any], list[Any]]] = [
        ({"relative_entity_definition_id": None}, ["body", "relative_entity_definition_id"]),
        ({"relative_entity_definition_id": NIL_UUID}, ["body", "relative_entity_definition_id"]),
        ({"relative_entity_definition_id": "nope"}, ["body", "relative_entity_definition_id"]),
        ({"relative_field_name": None}, ["body", "relative_field_name"]),
        ({"relative_field_name": "nope"}, ["body", "relative_field_name"]),
        ({"relative_field_name": "plan"}, ["body", "relative_field_name"]),
        ({"schedule_expression": "25:00"}, ["body", "schedule_expression"]),
        ({"schedule_expression": "0 9 * * *"}, ["body", "schedule_expression"]),
        ({"relative_offset_days": 36_501}, ["body", "relative_offset_days"]),
        ({"relative_filter": {"nope": 1}}, ["body", "relative_filter", "nope"]),
        ({"relative_filter": {"plan": {"like": "p%"}}},
         ["body", "relative_filter", "plan", "like"]),
        ({"relative_filter": {"plan": {}}}, ["body", "relative_filter", "plan"]),
        ({"relative_filter": {"seats": "ten"}}, ["body", "relative_filter", "seats"]),
        ({"relative_filter": {"seats": {"gte": "ten"}}},
         ["body", "relative_filter", "seats", "gte"]),
        ({"relative_filter": {"active": {"lt": True}}},
         ["body", "relative_filter", "active", "lt"]),
        ({"relative_filter": {"plan": {"in": "pro"}}},
         ["body", "relative_filter", "plan", "in"]),
        ({"relative_filter": {"plan": {"in": ["pro", 3]}}},
         ["body", "relative_filter", "plan", "in", 1]),
        ({"relative_filter": {"plan": {"exists": "yes"}}},
         ["body", "relative_filter", "plan", "exists"]),
        ({"relative_filter": {"renewal": {"gte": "2027-1-1"}}},
         ["body", "relative_filter", "renewal", "gte"]),
        ({"relative_filter": {"plan": ["a", "b"]}}, ["body", "relative_filter", "plan"]),
    ]
    for overrides, loc in cases:
        assert_422(await api.post("/v1/schedules", relative_body(d["id"], **overrides)), loc)
    # relative fields on another type
    assert_422(await api.post("/v1/schedules", schedule_body(relative_field_name="renewal")),
               ["body", "relative_field_name"])
    # a schedule update re-validates
    assert_422(await api.put(f"/v1/schedules/{s['id']}", {"relative_field_name": "plan"}),
               ["body", "relative_field_name"])
    assert_422(await api.put(f"/v1/schedules/{s['id']}",
                             {"relative_filter": {"x": {"eq": 1}}}),
               ["body", "relative_filter", "x"])
    r = await api.put(f"/v1/schedules/{s['id']}", {"relative_offset_days": 2,
                                                   "relative_filter": {"seats": {"gt": 1}}})
    assert r.status_code == 200, r.text
    assert r.json()["relative_filter"] == {"seats": {"gt": 1}}


async def test_occurrences_and_runs_name_their_record(api: Api, clock: FakeClock) -> None:
    # T0 is 2026-11-22T09:00:00Z
    d = await make_def(api)
    base = f"{DEFS}/{d['id']}/records"
    r = await api.post(f"{base}/batch", {"upsert": [
        {"key": "b", "data": {"renewal": "2026-11-25", "plan": "pro"}},
        {"key": "a", "data": {"renewal": "2026-11-24", "plan": "pro"}},
        {"key": "c", "data": {"renewal": "2026-11-24", "plan": "free"}},
    ]})
    assert r.status_code == 200
    s = (await api.post("/v1/schedules", relative_body(
        d["id"], schedule_expression="10:30", relative_offset_days=-1,
        relative_filter={"plan": "pro"}))).json()
    assert s["next_run_at"] == "2026-11-23T10:30:00.000Z"
    occ = (await api.get(f"/v1/schedules/{s['id']}/occurrences")).json()
    assert occ == {"occurrences": [
        {"record_key": "a", "scheduled_for": "2026-11-23T10:30:00.000Z",
         "due_at": "2026-11-23T10:30:00.000Z"},
        {"record_key": "b", "scheduled_for": "2026-11-24T10:30:00.000Z",
         "due_at": "2026-11-24T10:30:00.000Z"}]}
    assert len((await api.get(f"/v1/schedules/{s['id']}/occurrences",
                              params={"limit": 1})).json()["occurrences"]) == 1
    assert_422(await api.get(f"/v1/schedules/{s['id']}/occurrences", params={"limit": 1001}),
               ["query", "limit"])
    advance(api, clock, DAY + 90 * 60_000)  # 2026-11-23T10:30Z
    tick(api, clock)
    runs = (await api.get(f"/v1/schedules/{s['id']}/runs")).json()["runs"]
    assert [(x["record_key"], x["scheduled_for"]) for x in runs] == [
        ("a", "2026-11-23T10:30:00.000Z")]
    got = (await api.get(f"/v1/schedules/{s['id']}")).json()
    assert got["next_run_at"] == "2026-11-24T10:30:00.000Z"


async def test_occurrences_of_other_schedule_types(api: Api) -> None:
    r = await api.post("/v1/schedules", schedule_body(schedule_type="cron",
                                                      schedule_expression="0 9 * * *",
                                                      timezone="Europe/Berlin"))
    s = r.json()
    occ = (await api.get(f"/v1/schedules/{s['id']}/occurrences",
                         params={"limit": 3})).json()["occurrences"]
    assert occ == [{"record_key": None, "scheduled_for": f"2026-11-{d}T08:00:00.000Z",
                    "due_at": f"2026-11-{d}T08:00:00.000Z"} for d in (23, 24, 25)]
    once = (await api.post("/v1/schedules", schedule_body(
        schedule_type="once", schedule_expression="2026-12-01T09:00:00Z"))).json()
    occ = (await api.get(f"/v1/schedules/{once['id']}/occurrences")).json()["occurrences"]
    assert [o["scheduled_for"] for o in occ] == ["2026-12-01T09:00:00.000Z"]
    assert_422(await api.get("/v1/schedules/nope/occurrences"), ["path", "schedule_id"])
    assert_error(await api.get(f"/v1/schedules/{NIL_UUID}/occurrences"), 404)


def test_t0_is_what_the_occurrence_test_assumes() -> None:
    assert T0 == 1_795_338_000_000
