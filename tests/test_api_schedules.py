"""The native schedules API against its contract: SPEC §3.1-§3.3 and seed 001 (paths, field
names, defaults, ranges, error shape).

The app under test runs in the AsyncTestClient's portal thread (its lifespan starts the
engine there, and requests are served there). Whatever a test does to the app directly
(ticking the engine, moving the fake clock, creating or revoking keys) therefore goes
through that portal (`in_app`), so it shares the app's event loop instead of racing it
from the test's loop.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import pytest
from conftest import DROP, Api, schedule_body
from litestar.testing import AsyncTestClient

from schedd.clock import FakeClock
from schedd.config import Settings
from schedd.daemon import build_app

MIN = 60_000
HOUR = 3_600_000
NIL_UUID = "00000000-0000-0000-0000-000000000000"
TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


# ---------------------------------------------------------------------------------- helpers


def in_app(api: Api, fn: Callable[..., Any], *args: Any) -> Any:
    """Run fn(*args) (awaited when it is a coroutine function) on the app's event loop."""
    return api.client.blocking_portal.call(fn, *args)


def advance(api: Api, clock: FakeClock, ms: int) -> int:
    now: int = in_app(api, clock.advance, ms)
    return now


def tick(api: Api, clock: FakeClock) -> None:
    engine = api.services.engine
    assert engine is not None
    in_app(api, engine.tick, clock.now_ms())


def other_tenant(api: Api, name: str = "other") -> Api:
    _, key = in_app(api, api.services.create_key, name)
    return Api(api.client, key)


def assert_422(r: Any, loc: list[Any], type_: str | None = None) -> dict[str, Any]:
    """The exact 422 shape of SPEC §3.1, and that its first item names `loc`."""
    assert r.status_code == 422, r.text
    body = r.json()
    assert set(body) == {"detail"}, body
    assert isinstance(body["detail"], list) and body["detail"], body
    for item in body["detail"]:
        assert set(item) == {"loc", "msg", "type"}, item
        assert isinstance(item["loc"], list) and item["loc"], item
        assert all(isinstance(p, str | int) for p in item["loc"]), item
        assert isinstance(item["msg"], str) and item["msg"], item
        assert isinstance(item["type"], str) and item["type"], item
    first: dict[str, Any] = body["detail"][0]
    assert first["loc"] == loc, body
    if type_ is not None:
        assert first["type"] == type_, body
    return first


def assert_error(r: Any, status: int, detail: str | None = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str), body
    if detail is not None:
        assert body["detail"] == detail


async def create(api: Api, **overrides: Any) -> dict[str, Any]:
    r = await api.post("/v1/schedules", schedule_body(**overrides))
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def raw_post(api: Api, path: str, content: bytes, method: str = "POST") -> Any:
    headers = {**api.headers, "Content-Type": "application/json"}
    return await api.client.request(method, path, content=content, headers=headers)


# ---------------------------------------------------------------------------------- defaults

SEED_DEFAULTS: list[tuple[str, Any]] = [
    ("overlap_policy", "SKIP"),
    ("catchup_window_minutes", 10),
    ("flexible_window_minutes", 0),
    ("max_retries", 3),
    ("retry_backoff_seconds", 60),
    ("pause_on_failure_count", 5),
    ("rate_limit_per_minute", None),
    ("timezone", "UTC"),
    ("action_after_completion", "NONE"),
    ("catchup_policy", "ALL"),
    ("status", "active"),
    ("run_count", 0),
    ("consecutive_failures", 0),
    ("missed_count", 0),
    ("paused_reason", None),
    ("last_run_at", None),
    ("last_run_status", None),
    ("description", None),
    ("customer_id", None),
    ("external_id", None),
    ("deduplication_key", None),
    ("start_at", None),
    ("end_at", None),
    ("relative_entity_definition_id", None),
    ("relative_field_name", None),
    ("relative_offset_days", None),
    ("relative_filter", None),
    ("action_config", {}),
    ("created_at", "2026-11-22T09:00:00.000Z"),
    ("updated_at", "2026-11-22T09:00:00.000Z"),
    ("next_run_at", "2026-11-22T09:15:00.000Z"),
]

# Every field of the seed's schedule answer, and what SPEC §3.2 adds.
SEED_RESPONSE_FIELDS = {
    "action_config", "action_type", "created_at", "customer_id", "description", "external_id",
    "id", "last_run_at", "last_run_status", "name", "next_run_at", "overlap_policy",
    "relative_entity_definition_id", "relative_field_name", "relative_filter",
    "relative_offset_days", "run_count", "schedule_expression", "schedule_type", "status",
    "tenant_id", "timezone", "updated_at",
}
SPEC_RESPONSE_FIELDS = SEED_RESPONSE_FIELDS | {
    "start_at", "end_at", "deduplication_key", "catchup_window_minutes",
    "flexible_window_minutes", "max_retries", "retry_backoff_seconds", "pause_on_failure_count",
    "rate_limit_per_minute", "action_after_completion", "consecutive_failures", "paused_reason",
    "missed_count",
}


@pytest.fixture
async def minimal(api: Api) -> dict[str, Any]:
    return await create(api)


@pytest.mark.parametrize(("field", "expected"), SEED_DEFAULTS, ids=[f for f, _ in SEED_DEFAULTS])
async def test_create_fills_each_seed_default(
    minimal: dict[str, Any], field: str, expected: Any
) -> None:
    assert minimal[field] == expected


async def test_minimal_create_answers_every_documented_field(api: Api) -> None:
    r = await api.post("/v1/schedules", schedule_body())
    assert r.status_code == 201
    body = r.json()
    assert set(body) >= SPEC_RESPONSE_FIELDS, SPEC_RESPONSE_FIELDS - set(body)
    assert UUID.match(body["id"]) and UUID.match(body["tenant_id"])
    assert (body["name"], body["schedule_type"], body["schedule_expression"],
            body["action_type"]) == ("nightly report", "interval", "15m", "noop")
    got = await api.get(f"/v1/schedules/{body['id']}")
    assert got.status_code == 200
    assert got.json() == body


async def test_create_echoes_every_field_it_was_given(api: Api) -> None:
    body = schedule_body(
        name="all fields", description="d", timezone="Europe/Berlin",
        start_at="2026-12-01T10:00:00+01:00", end_at="2027-01-01T00:00:00Z",
        customer_id="497F6ECA-6276-4993-BFEB-53CBBBBA6F08", external_id="ext-1",
        deduplication_key="dk-1", overlap_policy="ALLOW", catchup_window_minutes=30,
        catchup_policy="LATEST", flexible_window_minutes=5, max_retries=7,
        retry_backoff_seconds=15, pause_on_failure_count=9, rate_limit_per_minute=4,
        action_after_completion="DELETE",
    )
    r = await api.post("/v1/schedules", body)
    assert r.status_code == 201, r.text
    got = r.json()
    for key, value in body.items():
        if key in ("start_at", "end_at", "customer_id"):
            continue
        assert got[key] == value, key
    assert got["customer_id"] == "497f6eca-6276-4993-bfeb-53cbbbba6f08"
    assert got["start_at"] == "2026-12-01T09:00:00.000Z"
    assert got["end_at"] == "2027-01-01T00:00:00.000Z"
    # interval with start_at: fires at start_at + k * interval, k >= 0
    assert got["next_run_at"] == "2026-12-01T09:00:00.000Z"
    for key in ("created_at", "updated_at", "start_at", "end_at", "next_run_at"):
        assert TS.match(got[key]), key


# ---------------------------------------------------------------------------------- ranges

# (field, accepted edge values, rejected values just outside)
BODY_RANGES: list[tuple[str, list[Any], list[Any]]] = [
    ("name", ["x" * 200, "x"], ["x" * 201]),
    ("catchup_window_minutes", [0, 1440], [-1, 1441]),
    ("flexible_window_minutes", [0, 60], [-1, 61]),
    ("max_retries", [0, 10], [-1, 11]),
    ("retry_backoff_seconds", [0], [-1]),
    ("pause_on_failure_count", [1, 100], [0, 101]),
    ("rate_limit_per_minute", [1], [0, -5]),
]


@pytest.mark.parametrize(("field", "ok", "bad"), BODY_RANGES, ids=[f for f, *_ in BODY_RANGES])
async def test_create_range_bounds(api: Api, field: str, ok: list[Any], bad: list[Any]) -> None:
    for value in ok:
        r = await api.post("/v1/schedules", schedule_body(**{field: value}))
        assert r.status_code == 201, (value, r.text)
        assert r.json()[field] == value
    for value in bad:
        r = await api.post("/v1/schedules", schedule_body(**{field: value}))
        assert_422(r, ["body", field])


async def test_timezone_length_bound(api: Api) -> None:
    longest_real = "America/Argentina/ComodRivadavia"
    r = await api.post("/v1/schedules", schedule_body(timezone=longest_real))
    assert r.status_code == 201, r.text
    # 50 characters passes the length check and is then refused as an unknown zone ...
    item = assert_422(await api.post("/v1/schedules", schedule_body(timezone="A" * 50)),
                      ["body", "timezone"])
    assert item["type"] != "string_too_long"
    # ... 51 characters is refused by the length check itself.
    assert_422(await api.post("/v1/schedules", schedule_body(timezone="A" * 51)),
               ["body", "timezone"], "string_too_long")


QUERY_RANGES: list[tuple[str, str, list[Any], list[Any]]] = [
    ("/v1/schedules", "limit", [1, 200], [0, 201, -1]),
    ("/v1/schedules", "offset", [0, 10**6], [-1]),
    ("/v1/runs", "limit", [1, 100], [0, 101]),
    ("/v1/runs", "offset", [0], [-1]),
    ("/v1/schedules/{sid}/runs", "limit", [1, 100], [0, 101]),
    ("/v1/schedules/{sid}/runs", "offset", [0], [-1]),
    ("/v1/preview?schedule_type=cron&schedule_expression=@daily", "count", [1, 100], [0, 101]),
]


@pytest.mark.parametrize(("path", "param", "ok", "bad"), QUERY_RANGES,
                         ids=[f"{p.split('?')[0]}:{q}" for p, q, *_ in QUERY_RANGES])
async def test_query_range_bounds(
    api: Api, path: str, param: str, ok: list[Any], bad: list[Any]
) -> None:
    s = await create(api)
    path = path.format(sid=s["id"])
    sep = "&" if "?" in path else "?"
    for value in ok:
        r = await api.get(f"{path}{sep}{param}={value}")
        assert r.status_code == 200, (value, r.text)
        if param == "count":
            assert len(r.json()["times"]) == value
        else:
            assert r.json()[param] == value
    for value in bad:
        assert_422(await api.get(f"{path}{sep}{param}={value}"), ["query", param])


async def test_list_defaults(api: Api) -> None:
    body = (await api.get("/v1/schedules")).json()
    assert (body["limit"], body["offset"]) == (50, 0)
    s = await create(api)
    runs = (await api.get(f"/v1/schedules/{s['id']}/runs")).json()
    assert set(runs) == {"runs", "total", "limit", "offset", "has_more"}
    assert (runs["limit"], runs["offset"], runs["total"], runs["has_more"]) == (20, 0, 0, False)
    assert len((await api.get("/v1/preview?schedule_type=cron&schedule_expression=@hourly"))
               .json()["times"]) == 10


PUT_OUT_OF_RANGE: list[tuple[str, Any]] = [
    ("name", "x" * 201),
    ("timezone", "A" * 51),
    ("catchup_window_minutes", 1441),
    ("catchup_window_minutes", -1),
    ("flexible_window_minutes", 61),
    ("flexible_window_minutes", -1),
    ("max_retries", 11),
    ("max_retries", -1),
    ("rate_limit_per_minute", 0),
]


@pytest.mark.parametrize(("field", "value"), PUT_OUT_OF_RANGE,
                         ids=[f"{f}={str(v)[:8]}" for f, v in PUT_OUT_OF_RANGE])
async def test_put_out_of_range(api: Api, field: str, value: Any) -> None:
    s = await create(api)
    assert_422(await api.put(f"/v1/schedules/{s['id']}", {field: value}), ["body", field])
    assert (await api.get(f"/v1/schedules/{s['id']}")).json() == s


async def test_put_range_edges_accepted(api: Api) -> None:
    s = await create(api)
    edges = {"name": "y" * 200, "catchup_window_minutes": 1440, "flexible_window_minutes": 60,
             "max_retries": 10, "rate_limit_per_minute": 1}
    r = await api.put(f"/v1/schedules/{s['id']}", edges)
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in edges} == edges
    low = {"catchup_window_minutes": 0, "flexible_window_minutes": 0, "max_retries": 0}
    r = await api.put(f"/v1/schedules/{s['id']}", low)
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in low} == low


# ---------------------------------------------------------------------------------- 422 shape


@pytest.mark.parametrize("field", ["name", "schedule_type", "action_type", "action_config"])
async def test_missing_required_field(api: Api, field: str) -> None:
    r = await api.post("/v1/schedules", schedule_body(**{field: DROP}))
    assert_422(r, ["body", field], "missing")


async def test_empty_object_names_a_missing_field(api: Api) -> None:
    item = assert_422(await api.post("/v1/schedules", {}), ["body", "name"], "missing")
    assert item["loc"][-1] == "name"


@pytest.mark.parametrize("path", ["/v1/schedules", f"/v1/schedules/{NIL_UUID}"])
async def test_unknown_field(api: Api, path: str) -> None:
    body = schedule_body(colour="blue") if path == "/v1/schedules" else {"colour": "blue"}
    r = await (api.post(path, body) if path == "/v1/schedules" else api.put(path, body))
    assert_422(r, ["body", "colour"], "extra_forbidden")


async def test_put_refuses_fields_that_cannot_change(api: Api) -> None:
    s = await create(api)
    for field, value in [("schedule_type", "cron"), ("action_type", "webhook"),
                         ("retry_backoff_seconds", 5), ("id", NIL_UUID)]:
        r = await api.put(f"/v1/schedules/{s['id']}", {field: value})
        assert_422(r, ["body", field], "extra_forbidden")


WRONG_TYPES: list[tuple[str, Any]] = [
    ("name", 5),
    ("name", None),
    ("max_retries", "three"),
    ("max_retries", 2.5),
    ("max_retries", True),
    ("catchup_window_minutes", [10]),
    ("action_config", []),
    ("action_config", "{}"),
    ("schedule_expression", 15),
    ("timezone", None),
    ("customer_id", 12),
    ("relative_filter", "x"),
    ("rate_limit_per_minute", "one"),
    ("retry_backoff_seconds", {"s": 1}),
]


@pytest.mark.parametrize(("field", "value"), WRONG_TYPES,
                         ids=[f"{f}={v!r}"[:30] for f, v in WRONG_TYPES])
async def test_wrong_type(api: Api, field: str, value: Any) -> None:
    assert_422(await api.post("/v1/schedules", schedule_body(**{field: value})), ["body", field])


@pytest.mark.parametrize(("field", "value"), [
    ("schedule_type", "hourly"), ("action_type", "email"), ("overlap_policy", "NEVER"),
    ("overlap_policy", "skip"), ("action_after_completion", "ARCHIVE"),
    ("catchup_policy", "SOME"),
])
async def test_bad_enum(api: Api, field: str, value: str) -> None:
    assert_422(await api.post("/v1/schedules", schedule_body(**{field: value})), ["body", field],
               "enum")


async def test_bad_enum_on_put(api: Api) -> None:
    s = await create(api)
    assert_422(await api.put(f"/v1/schedules/{s['id']}", {"overlap_policy": "NEVER"}),
               ["body", "overlap_policy"], "enum")
    assert_422(await api.put(f"/v1/schedules/{s['id']}", {"status": "sleeping"}),
               ["body", "status"], "enum")


@pytest.mark.parametrize(("raw", "type_"), [
    (b'{"name": "x",', "json_invalid"),
    (b"{name: 1}", "json_invalid"),
    (b"not json", "json_invalid"),
    (b'[{"name": "x"}]', None),
    (b"[]", None),
    (b'"a string"', None),
    (b"null", None),
    (b"", "missing"),
])
async def test_unparseable_or_non_object_body(api: Api, raw: bytes, type_: str | None) -> None:
    assert_422(await raw_post(api, "/v1/schedules", raw), ["body"], type_)
    s = await create(api)
    assert_422(await raw_post(api, f"/v1/schedules/{s['id']}", raw, "PUT"), ["body"], type_)


async def test_non_uuid_customer_id(api: Api) -> None:
    assert_422(await api.post("/v1/schedules", schedule_body(customer_id="customer-7")),
               ["body", "customer_id"], "uuid_parsing")


BAD_IDS = ["not-a-uuid", "123", "497f6eca-6276-4993-bfeb-53cbbbba6f0", "%20"]
SCHEDULE_ROUTES = [
    ("GET", "/v1/schedules/{id}"),
    ("PUT", "/v1/schedules/{id}"),
    ("DELETE", "/v1/schedules/{id}"),
    ("POST", "/v1/schedules/{id}/pause"),
    ("POST", "/v1/schedules/{id}/resume"),
    ("POST", "/v1/schedules/{id}/trigger"),
    ("GET", "/v1/schedules/{id}/runs"),
]
RUN_ROUTES = [
    ("GET", "/v1/runs/{id}"),
    ("POST", "/v1/runs/{id}/cancel"),
    ("POST", "/v1/runs/{id}/retry"),
]


@pytest.mark.parametrize(("method", "path"), SCHEDULE_ROUTES + RUN_ROUTES,
                         ids=[f"{m} {p}" for m, p in SCHEDULE_ROUTES + RUN_ROUTES])
async def test_bad_path_id(api: Api, method: str, path: str) -> None:
    name = "schedule_id" if path.startswith("/v1/schedules") else "run_id"
    for bad in BAD_IDS:
        kw: dict[str, Any] = {"json": {}} if method == "PUT" else {}
        r = await api.client.request(method, path.format(id=bad), headers=api.headers, **kw)
        assert_422(r, ["path", name])


@pytest.mark.parametrize(("query", "loc"), [
    ("status=bogus", "status"),
    ("status=ACTIVE", "status"),
    ("limit=0", "limit"),
    ("limit=abc", "limit"),
    ("limit=1.5", "limit"),
    ("limit=", "limit"),
    ("offset=-1", "offset"),
    ("offset=x", "offset"),
    ("customer_id=nope", "customer_id"),
])
async def test_bad_list_query(api: Api, query: str, loc: str) -> None:
    assert_422(await api.get(f"/v1/schedules?{query}"), ["query", loc])


async def test_bad_runs_query(api: Api) -> None:
    assert_422(await api.get("/v1/runs?status=bogus"), ["query", "status"])
    assert_422(await api.get("/v1/runs?schedule_id=zzz"), ["query", "schedule_id"])


# ---------------------------------------------------------------------------------- domain


@pytest.mark.parametrize(("stype", "expr"), [
    ("cron", "61 * * * *"),
    ("cron", "not a cron"),
    ("cron", "* * * *"),
    ("cron", "0 0 * * * *"),
    ("cron", "@fortnightly"),
    ("cron", ""),
    ("interval", "0s"),
    ("interval", "abc"),
    ("interval", "0.5s"),
    ("interval", "-5m"),
    ("interval", "P1M"),
    ("interval", ""),
    ("once", "tomorrow"),
    ("once", "2026-13-01T09:00:00"),
])
async def test_bad_expression(api: Api, stype: str, expr: str) -> None:
    r = await api.post("/v1/schedules", schedule_body(schedule_type=stype,
                                                      schedule_expression=expr))
    assert_422(r, ["body", "schedule_expression"])


@pytest.mark.parametrize("stype", ["cron", "interval", "once"])
async def test_expression_missing(api: Api, stype: str) -> None:
    r = await api.post("/v1/schedules", schedule_body(schedule_type=stype,
                                                      schedule_expression=DROP))
    assert_422(r, ["body", "schedule_expression"])


@pytest.mark.parametrize(("stype", "expr", "tz", "first"), [
    ("cron", "0 9 * * 1-5", "UTC", "2026-11-23T09:00:00.000Z"),
    ("cron", "0 9 * * 1-5", "Europe/Berlin", "2026-11-23T08:00:00.000Z"),
    ("cron", "@daily", "UTC", "2026-11-23T00:00:00.000Z"),
    ("cron", "0 0 L * *", "UTC", "2026-11-30T00:00:00.000Z"),
    ("interval", "90s", "UTC", "2026-11-22T09:01:30.000Z"),
    ("interval", "1h30m", "UTC", "2026-11-22T10:30:00.000Z"),
    ("interval", "PT15M", "UTC", "2026-11-22T09:15:00.000Z"),
    ("interval", "1.5s", "UTC", "2026-11-22T09:00:01.500Z"),
    ("once", "2026-12-01T09:00:00", "Europe/Berlin", "2026-12-01T08:00:00.000Z"),
    ("once", "2026-12-01T09:00:00Z", "Europe/Berlin", "2026-12-01T09:00:00.000Z"),
])
async def test_first_run_of_each_type(api: Api, stype: str, expr: str, tz: str,
                                      first: str) -> None:
    s = await create(api, schedule_type=stype, schedule_expression=expr, timezone=tz)
    assert s["next_run_at"] == first


async def test_once_time_in_the_past(api: Api) -> None:
    # 11 minutes ago: older than the default 10-minute catch-up window
    r = await api.post("/v1/schedules", schedule_body(
        schedule_type="once", schedule_expression="2026-11-22T08:49:00Z"))
    assert_422(r, ["body", "schedule_expression"])
    # 5 minutes ago: inside the window, fires at once
    s = await create(api, schedule_type="once", schedule_expression="2026-11-22T08:55:00Z")
    assert s["next_run_at"] == "2026-11-22T08:55:00.000Z"
    assert s["status"] == "active"
    # the window is the schedule's own
    r = await api.post("/v1/schedules", schedule_body(
        schedule_type="once", schedule_expression="2026-11-22T08:55:00Z",
        catchup_window_minutes=1))
    assert_422(r, ["body", "schedule_expression"])
    s = await create(api, schedule_type="once", schedule_expression="2026-11-22T08:00:00Z",
                     catchup_window_minutes=60)
    assert s["next_run_at"] == "2026-11-22T08:00:00.000Z"


@pytest.mark.parametrize("tz", ["Mars/Olympus_Mons", "utc+1", "", "../etc/passwd", "localtime",
                                "Europe/", "/etc/localtime"])
async def test_unknown_timezone(api: Api, tz: str) -> None:
    assert_422(await api.post("/v1/schedules", schedule_body(timezone=tz)), ["body", "timezone"])


@pytest.mark.parametrize(("start", "end"), [
    ("2026-12-01T00:00:00Z", "2026-12-01T00:00:00Z"),
    ("2026-12-01T00:00:00Z", "2026-11-30T23:59:59Z"),
    ("2026-12-01T01:00:00+01:00", "2026-12-01T00:00:00Z"),
])
async def test_end_not_after_start(api: Api, start: str, end: str) -> None:
    r = await api.post("/v1/schedules", schedule_body(start_at=start, end_at=end))
    assert_422(r, ["body", "end_at"])


@pytest.mark.parametrize("field", ["start_at", "end_at"])
async def test_bad_instant(api: Api, field: str) -> None:
    r = await api.post("/v1/schedules", schedule_body(**{field: "next tuesday"}))
    assert_422(r, ["body", field])


async def test_relative_needs_a_definition_of_the_tenant(api: Api) -> None:
    r = await api.post("/v1/schedules", schedule_body(
        schedule_type="relative", schedule_expression="09:00",
        relative_entity_definition_id=NIL_UUID, relative_field_name="renewal_date",
        relative_offset_days=-7))
    item = assert_422(r, ["body", "relative_entity_definition_id"])
    assert "no entity definition" in item["msg"]


@pytest.mark.parametrize("config", [
    {},
    {"method": "POST"},
    {"url": "ftp://example.com/x"},
    {"url": "example.com/hook"},
    {"url": "http://"},
    {"url": ""},
    {"url": 5},
    {"url": "http://user:pw@example.com/"},
])
async def test_webhook_url(api: Api, config: dict[str, Any]) -> None:
    r = await api.post("/v1/schedules", schedule_body(action_type="webhook",
                                                      action_config=config))
    assert_422(r, ["body", "action_config", "url"])


async def test_webhook_defaults_filled_in(api: Api) -> None:
    s = await create(api, action_type="webhook",
                     action_config={"url": "https://example.com/hook"})
    cfg = s["action_config"]
    assert cfg["url"] == "https://example.com/hook"
    assert cfg["method"] == "POST"
    assert cfg["timeout_seconds"] == 30


async def test_command_allowed_by_the_fixture(api: Api) -> None:
    s = await create(api, action_type="command", action_config={"argv": ["/bin/true"]})
    assert s["action_type"] == "command"
    assert s["action_config"]["argv"] == ["/bin/true"]


async def test_command_refused_when_commands_are_disabled(
    make_settings: Callable[..., Settings], clock: FakeClock, tmp_path: Any
) -> None:
    settings = make_settings(allow_commands=False)
    app = build_app(settings, clock)
    async with AsyncTestClient(app=app) as client:
        key = (tmp_path / "schedd.db.key").read_text().strip()
        api = Api(client, key)
        r = await api.post("/v1/schedules", schedule_body(
            action_type="command", action_config={"argv": ["/bin/true"]}))
        item = assert_422(r, ["body", "action_type"])
        assert "command" in item["msg"]
        # other action types are unaffected
        assert (await api.post("/v1/schedules", schedule_body())).status_code == 201


@pytest.mark.parametrize(("action_type", "config", "loc"), [
    ("noop", {"x": 1}, ["body", "action_config", "x"]),
    ("worker", {}, ["body", "action_config", "queue"]),
    ("worker", {"queue": "bad queue!"}, ["body", "action_config", "queue"]),
    ("command", {}, ["body", "action_config", "argv"]),
    ("command", {"argv": []}, ["body", "action_config", "argv"]),
    ("webhook", {"url": "https://e.com", "method": "TRACE"}, ["body", "action_config", "method"]),
    ("webhook", {"url": "https://e.com", "timeout_seconds": 301},
     ["body", "action_config", "timeout_seconds"]),
    ("webhook", {"url": "https://e.com", "timeout_seconds": 0},
     ["body", "action_config", "timeout_seconds"]),
])
async def test_action_config_validation(api: Api, action_type: str, config: dict[str, Any],
                                        loc: list[str]) -> None:
    r = await api.post("/v1/schedules", schedule_body(action_type=action_type,
                                                      action_config=config))
    assert_422(r, loc)


# ---------------------------------------------------------------------------------- auth


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer sk_wrong"},
    {"X-Api-Key": "sk_wrong"},
    {"Authorization": "Bearer "},
    {"Authorization": "Basic dXNlcjpwYXNz"},
    {"X-Api-Key": ""},
])
async def test_401_without_a_valid_key(api: Api, headers: dict[str, str]) -> None:
    for method, path in [("GET", "/v1/schedules"), ("POST", "/v1/schedules"),
                         ("GET", f"/v1/schedules/{NIL_UUID}"), ("GET", "/v1/runs"),
                         ("GET", "/v1/preview?schedule_type=cron&schedule_expression=@daily")]:
        kw: dict[str, Any] = {"json": schedule_body()} if method == "POST" else {}
        r = await api.client.request(method, path, headers=headers, **kw)
        assert_error(r, 401)
    # nothing was created
    assert (await api.get("/v1/schedules")).json()["total"] == 0


async def test_401_before_validation(api: Api) -> None:
    """An unauthenticated client learns nothing about the API, not even its 422s."""
    r = await api.client.post("/v1/schedules", json={"bogus": 1})
    assert_error(r, 401)
    r = await api.client.get("/v1/schedules/not-a-uuid")
    assert_error(r, 401)


async def test_both_key_styles_succeed(api: Api) -> None:
    s = await create(api)
    for headers in ({"Authorization": f"Bearer {api.key}"}, {"X-Api-Key": api.key},
                    {"authorization": f"bearer {api.key}"}):
        r = await api.client.get(f"/v1/schedules/{s['id']}", headers=headers)
        assert r.status_code == 200, (headers, r.text)


async def test_revoked_key_is_refused_at_once(api: Api) -> None:
    key_id, key = in_app(api, api.services.create_key, "default")
    for headers in ({"Authorization": f"Bearer {key}"}, {"X-Api-Key": key}):
        assert (await api.client.get("/v1/schedules", headers=headers)).status_code == 200
    in_app(api, api.services.revoke_key, key_id)
    for headers in ({"Authorization": f"Bearer {key}"}, {"X-Api-Key": key}):
        assert_error(await api.client.get("/v1/schedules", headers=headers), 401)
    # the fixture's own key of the same tenant still works
    assert (await api.get("/v1/schedules")).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/schema/openapi.json"])
async def test_public_routes_need_no_key(api: Api, path: str) -> None:
    r = await api.client.get(path)
    assert r.status_code == 200, r.text


# ---------------------------------------------------------------------------------- tenants


async def test_other_tenants_schedule_is_not_found(api: Api) -> None:
    s = await create(api, customer_id=NIL_UUID, external_id="e1")
    run = (await api.post(f"/v1/schedules/{s['id']}/trigger")).json()
    other = other_tenant(api)
    sid = s["id"]
    for method, path, body in [
        ("GET", f"/v1/schedules/{sid}", None),
        ("PUT", f"/v1/schedules/{sid}", {"name": "stolen"}),
        ("DELETE", f"/v1/schedules/{sid}", None),
        ("POST", f"/v1/schedules/{sid}/pause", None),
        ("POST", f"/v1/schedules/{sid}/resume", None),
        ("POST", f"/v1/schedules/{sid}/trigger", None),
        ("GET", f"/v1/schedules/{sid}/runs", None),
    ]:
        kw: dict[str, Any] = {} if body is None else {"json": body}
        r = await api.client.request(method, path, headers=other.headers, **kw)
        assert_error(r, 404, "Schedule not found")
    for method, path in [("GET", f"/v1/runs/{run['id']}"),
                         ("POST", f"/v1/runs/{run['id']}/cancel"),
                         ("POST", f"/v1/runs/{run['id']}/retry")]:
        r = await api.client.request(method, path, headers=other.headers)
        assert_error(r, 404, "Run not found")
    for query in ("", f"?customer_id={NIL_UUID}", "?external_id=e1", "?status=active"):
        listed = (await other.get(f"/v1/schedules{query}")).json()
        assert (listed["schedules"], listed["total"]) == ([], 0), query
    runs = (await other.get(f"/v1/runs?schedule_id={sid}")).json()
    assert (runs["runs"], runs["total"]) == ([], 0)
    assert (await other.get("/v1/runs")).json()["total"] == 0
    # and none of it touched the owner's schedule
    after = (await api.get(f"/v1/schedules/{sid}")).json()
    assert (after["name"], after["status"]) == (s["name"], "active")
    owner_runs = (await api.get(f"/v1/schedules/{sid}/runs")).json()
    assert [r["id"] for r in owner_runs["runs"]] == [run["id"]]


async def test_missing_schedule_and_run_are_404(api: Api) -> None:
    for method, path in SCHEDULE_ROUTES:
        kw: dict[str, Any] = {"json": {}} if method == "PUT" else {}
        r = await api.client.request(method, path.format(id=NIL_UUID), headers=api.headers,
                                     **kw)
        assert_error(r, 404, "Schedule not found")
    for method, path in RUN_ROUTES:
        r = await api.client.request(method, path.format(id=NIL_UUID), headers=api.headers)
        assert_error(r, 404, "Run not found")


# ---------------------------------------------------------------------------------- list


async def test_pagination_oldest_first(api: Api, clock: FakeClock) -> None:
    ids = []
    for i in range(7):
        ids.append((await create(api, name=f"s{i}"))["id"])
        advance(api, clock, 1000)
    seen: list[str] = []
    pages = []
    for offset in (0, 3, 6, 9):
        page = (await api.get(f"/v1/schedules?limit=3&offset={offset}")).json()
        assert set(page) == {"schedules", "total", "limit", "offset", "has_more"}
        assert (page["total"], page["limit"], page["offset"]) == (7, 3, offset)
        pages.append((len(page["schedules"]), page["has_more"]))
        seen += [s["id"] for s in page["schedules"]]
    assert pages == [(3, True), (3, True), (1, False), (0, False)]
    assert seen == ids
    everything = (await api.get("/v1/schedules")).json()
    assert [s["id"] for s in everything["schedules"]] == ids
    assert everything["has_more"] is False
    edge = (await api.get("/v1/schedules?limit=7")).json()
    assert (len(edge["schedules"]), edge["has_more"]) == (7, False)
    edge = (await api.get("/v1/schedules?limit=6")).json()
    assert (len(edge["schedules"]), edge["has_more"]) == (6, True)


async def test_list_filters(api: Api) -> None:
    c1, c2 = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
    a = await create(api, name="a", customer_id=c1, external_id="x")
    b = await create(api, name="b", customer_id=c1, external_id="y")
    c = await create(api, name="c", customer_id=c2, external_id="x")
    d = await create(api, name="d")
    assert (await api.post(f"/v1/schedules/{b['id']}/pause")).status_code == 200

    async def names(query: str) -> list[str]:
        body = (await api.get(f"/v1/schedules?{query}")).json()
        assert body["total"] == len(body["schedules"])
        return [s["name"] for s in body["schedules"]]

    assert await names(f"customer_id={c1}") == ["a", "b"]
    assert await names(f"customer_id={c1.upper()}") == ["a", "b"]
    assert await names(f"customer_id={c2}") == ["c"]
    assert await names("external_id=x") == ["a", "c"]
    assert await names("external_id=nope") == []
    assert await names("status=paused") == ["b"]
    assert await names("status=active") == ["a", "c", "d"]
    assert await names("status=completed") == []
    assert await names(f"customer_id={c1}&external_id=x") == ["a"]
    assert await names(f"customer_id={c1}&status=active") == ["a"]
    assert await names("") == ["a", "b", "c", "d"]
    assert a["id"] != c["id"] != d["id"]


# ---------------------------------------------------------------------------------- PUT


async def test_put_changes_only_the_sent_fields(api: Api, clock: FakeClock) -> None:
    s = await create(api, description="before", max_retries=4)
    advance(api, clock, MIN)
    r = await api.put(f"/v1/schedules/{s['id']}", {"name": "renamed"})
    assert r.status_code == 200, r.text
    after = r.json()
    assert after["name"] == "renamed"
    assert after["updated_at"] == "2026-11-22T09:01:00.000Z"
    unchanged = {k for k in s if k not in ("name", "updated_at")}
    assert {k: after[k] for k in unchanged} == {k: s[k] for k in unchanged}
    assert (await api.get(f"/v1/schedules/{s['id']}")).json() == after

    r = await api.put(f"/v1/schedules/{s['id']}", {})
    assert r.status_code == 200
    assert {k: v for k, v in r.json().items() if k != "updated_at"} == {
        k: v for k, v in after.items() if k != "updated_at"}

    patch = {"description": None, "max_retries": 0, "overlap_policy": "BUFFER_ALL",
             "catchup_window_minutes": 0, "flexible_window_minutes": 2,
             "rate_limit_per_minute": 12}
    r = await api.put(f"/v1/schedules/{s['id']}", patch)
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in patch} == patch
    assert r.json()["next_run_at"] == s["next_run_at"]
    r = await api.put(f"/v1/schedules/{s['id']}", {"rate_limit_per_minute": None})
    assert r.json()["rate_limit_per_minute"] is None


async def test_put_expression_recomputes_next_run(api: Api, clock: FakeClock) -> None:
    s = await create(api)  # interval 15m anchored at created_at 09:00
    advance(api, clock, 25 * MIN)  # 09:25
    r = await api.put(f"/v1/schedules/{s['id']}", {"schedule_expression": "1h"})
    assert r.json()["next_run_at"] == "2026-11-22T10:00:00.000Z"
    r = await api.put(f"/v1/schedules/{s['id']}", {"schedule_expression": "10m"})
    assert r.json()["next_run_at"] == "2026-11-22T09:30:00.000Z"
    assert r.json()["schedule_expression"] == "10m"
    assert (await api.get(f"/v1/schedules/{s['id']}")).json()["next_run_at"] == (
        "2026-11-22T09:30:00.000Z")


async def test_put_timezone_recomputes_next_run(api: Api) -> None:
    s = await create(api, schedule_type="cron", schedule_expression="0 12 * * *")
    assert s["next_run_at"] == "2026-11-22T12:00:00.000Z"
    r = await api.put(f"/v1/schedules/{s['id']}", {"timezone": "America/New_York"})
    assert r.status_code == 200, r.text
    assert r.json()["next_run_at"] == "2026-11-22T17:00:00.000Z"
    r = await api.put(f"/v1/schedules/{s['id']}", {"timezone": "Asia/Tokyo"})
    assert r.json()["next_run_at"] == "2026-11-23T03:00:00.000Z"
    r = await api.put(f"/v1/schedules/{s['id']}", {"schedule_expression": "30 8 * * 1",
                                                   "timezone": "Europe/Berlin"})
    assert r.json()["next_run_at"] == "2026-11-23T07:30:00.000Z"


async def test_put_bad_timing_is_refused_and_changes_nothing(api: Api) -> None:
    s = await create(api, schedule_type="cron", schedule_expression="0 12 * * *")
    sid = s["id"]
    assert_422(await api.put(f"/v1/schedules/{sid}", {"schedule_expression": "99 * * * *"}),
               ["body", "schedule_expression"])
    assert_422(await api.put(f"/v1/schedules/{sid}", {"timezone": "Nowhere/Land"}),
               ["body", "timezone"])
    assert_422(await api.put(f"/v1/schedules/{sid}", {"name": "ok", "timezone": "Nowhere/X"}),
               ["body", "timezone"])
    assert (await api.get(f"/v1/schedules/{sid}")).json() == s


async def test_put_once_expression_checks_the_catchup_window(api: Api) -> None:
    s = await create(api, schedule_type="once", schedule_expression="2026-11-23T09:00:00Z")
    r = await api.put(f"/v1/schedules/{s['id']}",
                      {"schedule_expression": "2026-11-22T08:00:00Z"})
    assert_422(r, ["body", "schedule_expression"])
    r = await api.put(f"/v1/schedules/{s['id']}",
                      {"schedule_expression": "2026-11-24T10:00:00Z"})
    assert r.json()["next_run_at"] == "2026-11-24T10:00:00.000Z"


async def test_put_status_pauses_and_resumes(api: Api, clock: FakeClock) -> None:
    s = await create(api)
    r = await api.put(f"/v1/schedules/{s['id']}", {"status": "paused"})
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["paused_reason"]) == ("paused", "manual")
    advance(api, clock, 2 * HOUR + 5 * MIN)  # 11:05
    r = await api.put(f"/v1/schedules/{s['id']}", {"status": "active"})
    assert (r.json()["status"], r.json()["paused_reason"]) == ("active", None)
    assert r.json()["next_run_at"] == "2026-11-22T11:15:00.000Z"


@pytest.mark.parametrize("field", [
    "name", "max_retries", "catchup_window_minutes", "flexible_window_minutes",
    "overlap_policy", "schedule_expression", "timezone", "action_config", "status",
])
async def test_put_null_for_a_non_nullable_field(api: Api, field: str) -> None:
    s = await create(api)
    assert_422(await api.put(f"/v1/schedules/{s['id']}", {field: None}), ["body", field])
    assert (await api.get(f"/v1/schedules/{s['id']}")).json() == s


async def test_put_status_completed_is_refused(api: Api) -> None:
    s = await create(api)
    assert_422(await api.put(f"/v1/schedules/{s['id']}", {"status": "completed"}),
               ["body", "status"])
    assert (await api.get(f"/v1/schedules/{s['id']}")).json()["status"] == "active"


async def test_webhook_secret_is_write_only(api: Api) -> None:
    secret = "whsec_" + "c2VjcmV0LWJ5dGVz"  # base64 of "secret-bytes"
    s = await create(api, action_type="webhook", action_config={
        "url": "https://example.com/hook", "secret": secret,
        "headers": {"Authorization": "Bearer downstream-token", "X-Plain": "visible"}})
    sid, tenant = s["id"], s["tenant_id"]
    assert s["action_config"]["secret"] == "********"
    assert s["action_config"]["headers"]["Authorization"] == "********"
    assert s["action_config"]["headers"]["X-Plain"] == "visible"
    read = (await api.get(f"/v1/schedules/{sid}")).json()
    assert secret not in str(read) and "downstream-token" not in str(read)
    listed = (await api.get("/v1/schedules")).text
    assert secret not in listed and "downstream-token" not in listed

    async def stored() -> dict[str, Any]:
        sched = await api.services.db.read(api.services.store.get_schedule, tenant, sid)
        assert sched is not None
        return sched.action_config

    # PUT the config as read back: the real secret and header stay
    cfg = read["action_config"]
    cfg["timeout_seconds"] = 12
    r = await api.put(f"/v1/schedules/{sid}", {"action_config": cfg})
    assert r.status_code == 200, r.text
    assert r.json()["action_config"]["secret"] == "********"
    kept = in_app(api, stored)
    assert kept["secret"] == secret
    assert kept["headers"]["Authorization"] == "Bearer downstream-token"
    assert kept["timeout_seconds"] == 12

    # a new secret replaces it
    cfg["secret"] = "plain-new-secret"
    r = await api.put(f"/v1/schedules/{sid}", {"action_config": cfg})
    assert r.status_code == 200, r.text
    assert in_app(api, stored)["secret"] == "plain-new-secret"
    # leaving it out removes it
    del cfg["secret"]
    r = await api.put(f"/v1/schedules/{sid}", {"action_config": cfg})
    assert r.status_code == 200, r.text
    assert "secret" not in r.json()["action_config"]
    assert "secret" not in in_app(api, stored)


async def test_redaction_placeholder_without_a_secret_is_refused(api: Api) -> None:
    r = await api.post("/v1/schedules", schedule_body(
        action_type="webhook",
        action_config={"url": "https://example.com/hook", "secret": "********"}))
    assert_422(r, ["body", "action_config", "secret"])


async def test_put_action_config_is_validated(api: Api) -> None:
    s = await create(api, action_type="webhook", action_config={"url": "https://e.com/a"})
    r = await api.put(f"/v1/schedules/{s['id']}", {"action_config": {"url": "ftp://e.com"}})
    assert_422(r, ["body", "action_config", "url"])
    r = await api.put(f"/v1/schedules/{s['id']}", {"action_config": {"url": "https://e.com/b"}})
    assert r.json()["action_config"]["url"] == "https://e.com/b"


# ---------------------------------------------------------------------------------- pause etc.


async def test_pause(api: Api) -> None:
    s = await create(api)
    r = await api.post(f"/v1/schedules/{s['id']}/pause")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["paused_reason"]) == ("paused", "manual")
    assert (await api.get(f"/v1/schedules/{s['id']}")).json() == body
    again = await api.post(f"/v1/schedules/{s['id']}/pause")
    assert again.status_code == 200
    assert again.json()["status"] == "paused"
    listed = (await api.get("/v1/schedules?status=paused")).json()
    assert [x["id"] for x in listed["schedules"]] == [s["id"]]


@pytest.mark.parametrize(("stype", "expr", "expected"), [
    ("interval", "15m", "2026-11-22T12:16:00.000Z"),  # anchored at created_at 09:01
    ("cron", "0 * * * *", "2026-11-22T13:00:00.000Z"),
    ("cron", "30 9 * * *", "2026-11-23T09:30:00.000Z"),
])
async def test_resume_plans_from_now(api: Api, clock: FakeClock, stype: str, expr: str,
                                     expected: str) -> None:
    advance(api, clock, MIN)  # 09:01: nothing is due at creation
    s = await create(api, schedule_type=stype, schedule_expression=expr)
    assert (await api.post(f"/v1/schedules/{s['id']}/pause")).status_code == 200
    advance(api, clock, 3 * HOUR + 6 * MIN)  # 12:07
    tick(api, clock)  # a paused schedule is not claimed
    r = await api.post(f"/v1/schedules/{s['id']}/resume")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["paused_reason"]) == ("active", None)
    assert body["next_run_at"] == expected
    tick(api, clock)
    # the paused stretch is not caught up: no run and no missed record
    runs = (await api.get(f"/v1/schedules/{s['id']}/runs")).json()
    assert runs["total"] == 0, runs
    after = (await api.get(f"/v1/schedules/{s['id']}")).json()
    assert (after["next_run_at"], after["missed_count"]) == (expected, 0)


async def test_resume_of_an_active_schedule_keeps_it(api: Api) -> None:
    s = await create(api)
    r = await api.post(f"/v1/schedules/{s['id']}/resume")
    assert r.status_code == 200
    assert (r.json()["status"], r.json()["next_run_at"]) == ("active", s["next_run_at"])


async def test_completed_schedule_cannot_be_resumed(api: Api, clock: FakeClock) -> None:
    s = await create(api, schedule_type="once", schedule_expression="2026-11-22T10:00:00Z")
    assert s["next_run_at"] == "2026-11-22T10:00:00.000Z"
    advance(api, clock, HOUR + MIN)
    tick(api, clock)
    done = (await api.get(f"/v1/schedules/{s['id']}")).json()
    assert (done["status"], done["next_run_at"]) == ("completed", None)
    assert_error(await api.post(f"/v1/schedules/{s['id']}/resume"), 409)
    assert_error(await api.put(f"/v1/schedules/{s['id']}", {"status": "active"}), 409)
    assert (await api.get(f"/v1/schedules/{s['id']}")).json()["status"] == "completed"
    runs = (await api.get(f"/v1/schedules/{s['id']}/runs")).json()["runs"]
    assert [(r["scheduled_for"], r["trigger_type"]) for r in runs] == [
        ("2026-11-22T10:00:00.000Z", "catchup")]


async def test_delete(api: Api) -> None:
    s = await create(api)
    run = (await api.post(f"/v1/schedules/{s['id']}/trigger")).json()
    r = await api.delete(f"/v1/schedules/{s['id']}")
    assert r.status_code == 204
    assert r.content == b""
    assert_error(await api.get(f"/v1/schedules/{s['id']}"), 404, "Schedule not found")
    assert_error(await api.delete(f"/v1/schedules/{s['id']}"), 404, "Schedule not found")
    assert_error(await api.get(f"/v1/schedules/{s['id']}/runs"), 404, "Schedule not found")
    assert (await api.get("/v1/schedules")).json()["total"] == 0
    # its runs stay readable
    got = await api.get(f"/v1/runs/{run['id']}")
    assert got.status_code == 200, got.text
    assert got.json()["schedule_id"] == s["id"]
    listed = (await api.get(f"/v1/runs?schedule_id={s['id']}")).json()
    assert [x["id"] for x in listed["runs"]] == [run["id"]]


async def test_delete_cancels_pending_runs(api: Api) -> None:
    s = await create(api, action_type="worker", action_config={"queue": "reports"})
    run = (await api.post(f"/v1/schedules/{s['id']}/trigger")).json()
    assert run["status"] == "pending"
    assert (await api.delete(f"/v1/schedules/{s['id']}")).status_code == 204
    got = (await api.get(f"/v1/runs/{run['id']}")).json()
    assert got["status"] == "cancelled"


async def test_trigger(api: Api, clock: FakeClock) -> None:
    s = await create(api, action_type="worker", action_config={"queue": "q"})
    advance(api, clock, 5 * MIN)
    r = await api.post(f"/v1/schedules/{s['id']}/trigger")
    assert r.status_code == 202, r.text
    run = r.json()
    assert run["schedule_id"] == s["id"]
    assert run["tenant_id"] == s["tenant_id"]
    assert run["trigger_type"] == "manual"
    assert run["status"] == "pending"
    assert run["attempt"] == 1
    assert run["attempt_root_run_id"] == run["id"]
    assert run["scheduled_for"] == "2026-11-22T09:05:00.000Z"
    assert run["due_at"] == "2026-11-22T09:05:00.000Z"
    after = (await api.get(f"/v1/schedules/{s['id']}")).json()
    assert after["next_run_at"] == s["next_run_at"]  # a trigger does not move next_run_at
    runs = (await api.get(f"/v1/schedules/{s['id']}/runs")).json()
    assert [x["id"] for x in runs["runs"]] == [run["id"]]
    assert (await api.get(f"/v1/runs/{run['id']}")).json()["trigger_type"] == "manual"
    # a second trigger runs regardless of the first (manual triggers ignore overlap)
    second = await api.post(f"/v1/schedules/{s['id']}/trigger")
    assert second.status_code == 202
    runs = (await api.get(f"/v1/schedules/{s['id']}/runs")).json()
    assert [x["id"] for x in runs["runs"]] == [second.json()["id"], run["id"]]  # newest first


async def test_trigger_runs_a_noop_now(api: Api, clock: FakeClock) -> None:
    s = await create(api)
    run = (await api.post(f"/v1/schedules/{s['id']}/trigger")).json()
    tick(api, clock)
    for _ in range(200):  # the action runs as a task of the app's loop; let it finish
        got = (await api.get(f"/v1/runs/{run['id']}")).json()
        if got["status"] == "succeeded":
            break
        in_app(api, asyncio.sleep, 0)
    assert got["status"] == "succeeded", got
    assert got["started_at"] == "2026-11-22T09:00:00.000Z"


# ---------------------------------------------------------------------------------- dedup


async def test_deduplication_key(api: Api) -> None:
    first = await api.post("/v1/schedules", schedule_body(deduplication_key="nightly"))
    assert first.status_code == 201
    again = await api.post("/v1/schedules", schedule_body(
        deduplication_key="nightly", name="different", max_retries=9,
        schedule_expression="1h", schedule_type="interval"))
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert (await api.get("/v1/schedules")).json()["total"] == 1
    # invalid bodies are still refused, key or not
    assert_422(await api.post("/v1/schedules", schedule_body(deduplication_key="nightly",
                                                             max_retries=99)),
               ["body", "max_retries"])
    # another key is another schedule
    assert (await api.post("/v1/schedules",
                           schedule_body(deduplication_key="weekly"))).status_code == 201
    # another tenant may reuse the key
    other = other_tenant(api)
    theirs = await other.post("/v1/schedules", schedule_body(deduplication_key="nightly"))
    assert theirs.status_code == 201
    assert theirs.json()["id"] != first.json()["id"]
    assert (await api.get("/v1/schedules")).json()["total"] == 2


async def test_dedup_after_delete_creates_anew(api: Api) -> None:
    first = await create(api, deduplication_key="k")
    assert (await api.delete(f"/v1/schedules/{first['id']}")).status_code == 204
    again = await api.post("/v1/schedules", schedule_body(deduplication_key="k"))
    assert again.status_code == 201
    assert again.json()["id"] != first["id"]


# ---------------------------------------------------------------------------------- preview


async def test_preview_cron_in_berlin(api: Api) -> None:
    r = await api.get("/v1/preview", params={
        "schedule_type": "cron", "schedule_expression": "0 9 * * 1-5",
        "timezone": "Europe/Berlin", "after": "2026-11-22T09:00:00Z", "count": 3})
    assert r.status_code == 200, r.text
    assert r.json() == {"times": ["2026-11-23T08:00:00.000Z", "2026-11-24T08:00:00.000Z",
                                  "2026-11-25T08:00:00.000Z"]}


async def test_preview_defaults_to_now_and_is_strictly_after(api: Api) -> None:
    r = await api.get("/v1/preview", params={"schedule_type": "cron",
                                             "schedule_expression": "0 * * * *"})
    times = r.json()["times"]
    assert len(times) == 10
    assert times[:2] == ["2026-11-22T10:00:00.000Z", "2026-11-22T11:00:00.000Z"]
    r = await api.get("/v1/preview", params={"schedule_type": "cron",
                                             "schedule_expression": "0 * * * *",
                                             "after": "2026-11-22T09:59:59.999Z", "count": 1})
    assert r.json()["times"] == ["2026-11-22T10:00:00.000Z"]


async def test_preview_daylight_saving(api: Api) -> None:
    # Europe/Berlin falls back on 2026-10-25: 02:30 happens twice, a fixed time fires once
    r = await api.get("/v1/preview", params={
        "schedule_type": "cron", "schedule_expression": "30 2 * * *",
        "timezone": "Europe/Berlin", "after": "2026-10-24T12:00:00Z", "count": 2})
    assert r.json()["times"] == ["2026-10-25T00:30:00.000Z", "2026-10-26T01:30:00.000Z"]


@pytest.mark.parametrize(("params", "loc"), [
    ({"schedule_type": "cron", "schedule_expression": "bad"}, "schedule_expression"),
    ({"schedule_type": "interval", "schedule_expression": "0s"}, "schedule_expression"),
    ({"schedule_type": "cron", "schedule_expression": "@daily", "timezone": "No/Where"},
     "timezone"),
    ({"schedule_type": "cron", "schedule_expression": "@daily", "after": "soon"}, "after"),
    ({"schedule_type": "weekly", "schedule_expression": "@daily"}, "schedule_type"),
    ({"schedule_type": "cron"}, "schedule_expression"),
    ({"schedule_expression": "@daily"}, "schedule_type"),
    ({"schedule_type": "cron", "schedule_expression": "@daily", "count": "many"}, "count"),
])
async def test_preview_errors(api: Api, params: dict[str, str], loc: str) -> None:
    assert_422(await api.get("/v1/preview", params=params), ["query", loc])


async def test_preview_missing_parameter_is_typed_missing(api: Api) -> None:
    r = await api.get("/v1/preview", params={"schedule_type": "cron"})
    assert_422(r, ["query", "schedule_expression"], "missing")


# ---------------------------------------------------------------------------------- OpenAPI


async def test_openapi_document(api: Api) -> None:
    r = await api.client.get("/schema/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    paths = doc["paths"]
    for path in ("/v1/schedules", "/v1/schedules/{schedule_id}",
                 "/v1/schedules/{schedule_id}/pause", "/v1/schedules/{schedule_id}/resume",
                 "/v1/schedules/{schedule_id}/trigger", "/v1/schedules/{schedule_id}/runs",
                 "/v1/preview"):
        assert path in paths, path
    assert {"get", "post"} <= set(paths["/v1/schedules"])
    assert {"get", "put", "delete"} <= set(paths["/v1/schedules/{schedule_id}"])

    def resolve(schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            schema = doc["components"]["schemas"][name]
        return schema

    for method in ("get", "post"):
        resp = paths["/v1/schedules"][method]["responses"]["422"]
        schema = resolve(resp["content"]["application/json"]["schema"])
        detail = schema["properties"]["detail"]
        assert detail["type"] == "array"
        item = resolve(detail["items"])
        assert set(item["properties"]) == {"loc", "msg", "type"}
        assert set(item["required"]) == {"loc", "msg", "type"}
        assert item["properties"]["msg"]["type"] == "string"
        assert item["properties"]["loc"]["type"] == "array"
    body = resolve(paths["/v1/schedules"]["post"]["requestBody"]["content"]["application/json"]
                   ["schema"])
    props = body["properties"]
    assert set(body["required"]) == {"name", "schedule_type", "action_type", "action_config"}
    assert props["name"]["maxLength"] == 200
    assert props["timezone"]["maxLength"] == 50
    assert props["timezone"]["default"] == "UTC"
    assert (props["max_retries"]["minimum"], props["max_retries"]["maximum"],
            props["max_retries"]["default"]) == (0, 10, 3)
    assert (props["catchup_window_minutes"]["minimum"],
            props["catchup_window_minutes"]["maximum"]) == (0, 1440)
    assert props["pause_on_failure_count"]["minimum"] == 1
    for path, name in (("/v1/schedules/{schedule_id}", "schedule_id"),
                       ("/v1/runs/{run_id}", "run_id")):
        (param,) = paths[path]["get"]["parameters"]
        assert (param["name"], param["in"], param["required"]) == (name, "path", True)
        assert param["schema"]["format"] == "uuid"
    security = {k for req in paths["/v1/schedules"]["get"].get("security", []) for k in req}
    assert security == {"bearer", "apiKey"}


async def test_errors_do_not_leak_internals(api: Api) -> None:
    for r in [await raw_post(api, "/v1/schedules", b""),
              await raw_post(api, "/v1/schedules", b"{"),
              await api.get("/v1/preview?schedule_type=cron")]:
        assert r.status_code == 422
        assert "Traceback" not in r.text and "/work/" not in r.text and "'data'" not in r.text
        assert "for path" not in r.text


async def test_preview_reads_a_naive_after_in_the_given_timezone(api: Api) -> None:
    r = await api.get("/v1/preview", params={
        "schedule_type": "cron", "schedule_expression": "0 9 * * *",
        "timezone": "Europe/Berlin", "after": "2026-11-23T08:30:00", "count": 1})
    assert r.status_code == 200, r.text
    # 08:30 Berlin is before that day's 09:00 Berlin (08:00Z)
    assert r.json() == {"times": ["2026-11-23T08:00:00.000Z"]}
