"""No request, however malformed, gets a 500 (SPEC §3.1).

A table of hostile inputs is thrown at every route: lone surrogates and NUL bytes in
strings, integers far beyond 64 bits, floats where integers go, deep nesting, a body over
the size limit, extreme dates, odd headers. Every answer must be below 500, and every 422
must have the documented shape.
"""

from __future__ import annotations

import json
from itertools import product
from typing import Any

import pytest
from conftest import Api, schedule_body

NIL = "00000000-0000-0000-0000-000000000000"

# Routes that take a JSON body, with a valid body to start from ("{sid}"/"{rid}" filled in).
BODY_ROUTES = [
    ("POST", "/v1/schedules"),
    ("PUT", "/v1/schedules/{sid}"),
    ("POST", "/v1/runs/{rid}/cancel"),
    ("POST", "/v1/worker/claim"),
    ("POST", "/v1/runs/{rid}/heartbeat"),
    ("POST", "/v1/runs/{rid}/complete"),
]
ALL_ROUTES = [
    ("GET", "/v1/schedules"),
    ("POST", "/v1/schedules"),
    ("GET", "/v1/schedules/{sid}"),
    ("PUT", "/v1/schedules/{sid}"),
    ("DELETE", "/v1/schedules/{sid}"),
    ("POST", "/v1/schedules/{sid}/pause"),
    ("POST", "/v1/schedules/{sid}/resume"),
    ("POST", "/v1/schedules/{sid}/trigger"),
    ("GET", "/v1/schedules/{sid}/runs"),
    ("GET", "/v1/runs"),
    ("GET", "/v1/runs/{rid}"),
    ("POST", "/v1/runs/{rid}/cancel"),
    ("POST", "/v1/runs/{rid}/retry"),
    ("POST", "/v1/worker/claim"),
    ("POST", "/v1/runs/{rid}/heartbeat"),
    ("POST", "/v1/runs/{rid}/complete"),
    ("GET", "/v1/preview"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
]

CREATE_FIELDS = [
    "name", "schedule_type", "action_type", "action_config", "schedule_expression", "timezone",
    "start_at", "end_at", "description", "customer_id", "external_id", "deduplication_key",
    "overlap_policy", "catchup_window_minutes", "catchup_policy", "flexible_window_minutes",
    "max_retries", "retry_backoff_seconds", "pause_on_failure_count", "rate_limit_per_minute",
    "action_after_completion", "relative_entity_definition_id", "relative_field_name",
    "relative_offset_days", "relative_filter",
]
UPDATE_FIELDS = [
    "action_config", "catchup_window_minutes", "description", "flexible_window_minutes",
    "max_retries", "name", "overlap_policy", "rate_limit_per_minute", "schedule_expression",
    "status", "timezone",
]
INT_FIELDS = [
    "catchup_window_minutes", "flexible_window_minutes", "max_retries", "retry_backoff_seconds",
    "pause_on_failure_count", "rate_limit_per_minute", "relative_offset_days",
]


def deep(levels: int, leaf: Any = 1) -> str:
    """JSON text of `levels` nested objects around `leaf` (built as text: no recursion)."""
    return '{"a":' * levels + json.dumps(leaf) + "}" * levels


# Values as raw JSON text, so that they can hold what json.dumps would refuse or repair.
HOSTILE_VALUES: list[tuple[str, str]] = [
    ("lone_surrogate", '"\\ud800"'),
    ("low_surrogate_first", '"\\udc00\\ud800"'),
    ("nul", '"a\\u0000b"'),
    ("only_nul", '"\\u0000"'),
    ("control_chars", '"\\u0001\\u001f\\u007f\\n\\r\\t"'),
    ("empty", '""'),
    ("spaces", '"   "'),
    ("unicode", '"Zeitplan \\u540d\\u524d \\ud83c\\udf89 \\u202e\\u0301"'),
    ("long_string", json.dumps("x" * 100_000)),
    ("huge_int", str(10**30)),
    ("huge_negative_int", str(-(10**30))),
    ("int64_max_plus_one", str(2**63)),
    ("int64_min", str(-(2**63))),
    ("float", "1.5"),
    ("float_integral", "3.0"),
    ("float_huge", "1e308"),
    ("float_overflow", "1e400"),
    ("negative_zero", "-0.0"),
    ("true", "true"),
    ("null", "null"),
    ("array", "[1, 2, 3]"),
    ("object", '{"a": {"b": [1, {"c": null}]}}'),
    ("deep_object", deep(200)),
    ("deeper_object", deep(900)),
    ("very_deep_object", deep(5000)),
    ("deep_array", "[" * 3000 + "]" * 3000),
    ("date_max", '"9999-12-31T23:59:59-14:00"'),
    ("date_min", '"0001-01-01T00:00:00+14:00"'),
    ("date_min_naive", '"0001-01-01T00:00:00"'),
    ("expression_like", '"*/0 * * * *"'),
]


def assert_ok_or_client_error(r: Any, what: str) -> None:
    assert r.status_code < 500, f"{what}: {r.status_code} {r.text[:500]}"
    if r.status_code == 422:
        body = r.json()
        assert set(body) == {"detail"}, (what, body)
        assert isinstance(body["detail"], list) and body["detail"], (what, body)
        for item in body["detail"]:
            assert set(item) == {"loc", "msg", "type"}, (what, item)
            assert isinstance(item["loc"], list) and item["loc"], (what, item)
            assert item["loc"][0] in ("body", "query", "path"), (what, item)
            assert all(isinstance(p, str | int) for p in item["loc"]), (what, item)
            assert isinstance(item["msg"], str) and isinstance(item["type"], str), (what, item)
    elif r.status_code >= 400:
        body = r.json()
        assert set(body) == {"detail"} and isinstance(body["detail"], str), (what, body)


def with_raw_field(body: dict[str, Any], field: str, raw: str) -> bytes:
    """`body` as JSON with `field` set to the raw JSON text `raw`."""
    marker = "__HOSTILE_VALUE__"
    text = json.dumps({**body, field: marker})
    return text.replace(json.dumps(marker), raw, 1).encode("utf-8")


class World:
    """One tenant with a schedule, a pending worker run and a running (claimed) worker run."""

    def __init__(self, api: Api, sid: str, rid: str) -> None:
        self.api = api
        self.sid = sid
        self.rid = rid

    def path(self, template: str) -> str:
        return template.format(sid=self.sid, rid=self.rid)

    async def send(self, method: str, path: str, content: bytes | None = None,
                   headers: dict[str, str] | None = None) -> Any:
        h = {**self.api.headers, "Content-Type": "application/json", **(headers or {})}
        if "{sid}" in path or "{rid}" in path:
            path = self.path(path)
        return await self.api.client.request(method, path, content=content, headers=h)


@pytest.fixture
async def world(api: Api) -> World:
    r = await api.post("/v1/schedules", schedule_body(
        action_type="worker", action_config={"queue": "q"}))
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    run = await api.post(f"/v1/schedules/{sid}/trigger")
    assert run.status_code == 202, run.text
    return World(api, sid, run.json()["id"])


VALID_BODIES: dict[str, dict[str, Any]] = {
    "/v1/schedules": schedule_body(),
    "/v1/schedules/{sid}": {"name": "renamed"},
    "/v1/runs/{rid}/cancel": {"reason": "because"},
    "/v1/worker/claim": {"queues": ["q"], "worker_id": "w1", "wait_seconds": 0},
    "/v1/runs/{rid}/heartbeat": {"worker_id": "w1", "lease_seconds": 30},
    "/v1/runs/{rid}/complete": {"worker_id": "w1", "status": "succeeded", "result": {"ok": 1}},
}


ACTION_KEYS = {
    "webhook": ["url", "method", "headers", "body", "timeout_seconds", "secret"],
    "command": ["argv", "env", "cwd", "timeout_seconds"],
    "worker": ["queue", "payload"],
    "noop": ["anything"],
}
ACTION_BASE: dict[str, dict[str, Any]] = {
    "webhook": {"url": "https://example.com/h"}, "command": {"argv": ["/bin/true"]},
    "worker": {"queue": "q"}, "noop": {},
}


@pytest.mark.parametrize(("name", "raw"), HOSTILE_VALUES, ids=[n for n, _ in HOSTILE_VALUES])
async def test_hostile_value_in_every_field_of_every_route(world: World, name: str,
                                                           raw: str) -> None:
    # every create field
    for field in CREATE_FIELDS:
        r = await world.send("POST", "/v1/schedules",
                             with_raw_field(schedule_body(), field, raw))
        assert_ok_or_client_error(r, f"create {field}={name}")
        if r.status_code == 201:  # whatever was accepted can be read back
            sid = r.json()["id"]
            assert_ok_or_client_error(await world.send("GET", f"/v1/schedules/{sid}"), name)
    assert_ok_or_client_error(await world.send("GET", "/v1/schedules?limit=200"), name)

    # every update field
    for field in UPDATE_FIELDS:
        r = await world.send("PUT", "/v1/schedules/{sid}", with_raw_field({}, field, raw))
        assert_ok_or_client_error(r, f"update {field}={name}")
    assert_ok_or_client_error(await world.send("GET", "/v1/schedules/{sid}"), name)

    # every key of every action config
    for action_type, keys in ACTION_KEYS.items():
        for key in keys:
            config = with_raw_field(ACTION_BASE[action_type], key, raw).decode()
            body = json.dumps(schedule_body(action_type=action_type, action_config="__C__"))
            r = await world.send("POST", "/v1/schedules",
                                 body.replace('"__C__"', config).encode())
            what = f"{action_type}.{key}={name}"
            assert_ok_or_client_error(r, what)
            if r.status_code == 201:
                sid = r.json()["id"]
                t = await world.send("POST", f"/v1/schedules/{sid}/trigger")
                assert_ok_or_client_error(t, f"trigger {what}")
                # and back through PUT, as a client sends a config it read
                cfg = r.json()["action_config"]
                u = await world.api.put(f"/v1/schedules/{sid}", {"action_config": cfg})
                assert_ok_or_client_error(u, f"put back {what}")

    # every field of the run and worker bodies
    for path, valid in VALID_BODIES.items():
        if path in ("/v1/schedules", "/v1/schedules/{sid}"):
            continue
        for field in valid:
            if field == "wait_seconds" and name in ("float", "float_integral", "true"):
                continue  # a valid wait: the long poll would really wait that long
            r = await world.send("POST", path, with_raw_field(valid, field, raw))
            assert_ok_or_client_error(r, f"{path} {field}={name}")


HOSTILE_BODIES: list[tuple[str, bytes]] = [
    ("malformed", b'{"name": '),
    ("trailing_garbage", b"{} {}"),
    ("array", b"[]"),
    ("string", b'"x"'),
    ("number", b"12"),
    ("null", b"null"),
    ("empty", b""),
    ("whitespace", b"   \n"),
    ("bom", b'\xef\xbb\xbf{"name": "x"}'),
    ("invalid_utf8", b'{"name": "\xff\xfe"}'),
    ("raw_nul", b'{"name": "a\x00b"}'),
    ("nan", b'{"max_retries": NaN}'),
    ("infinity", b'{"max_retries": Infinity}'),
    ("single_quotes", b"{'name': 'x'}"),
    ("duplicate_keys", b'{"name": "a", "name": "b"}'),
    ("very_deep", deep(100_000).encode()),
    ("very_deep_array", b"[" * 100_000 + b"]" * 100_000),
    ("lone_surrogate", b'{"name": "\\ud800"}'),
    ("raw_surrogate_bytes", b'{"name": "\xed\xa0\x80"}'),
]


@pytest.mark.parametrize(("name", "content"), HOSTILE_BODIES,
                         ids=[n for n, _ in HOSTILE_BODIES])
async def test_hostile_bodies_on_every_body_route(world: World, name: str,
                                                  content: bytes) -> None:
    for method, path in BODY_ROUTES:
        r = await world.send(method, path, content)
        assert_ok_or_client_error(r, f"{method} {path} {name}")
        if name.startswith(("malformed", "invalid_utf8", "raw_surrogate", "very_deep")):
            assert r.status_code == 422, (method, path, name, r.text[:200])
            assert r.json()["detail"][0]["loc"] == ["body"]


async def test_oversized_body(world: World) -> None:
    big = json.dumps({"name": "x" * (2 * 1024 * 1024)}).encode()
    many = ("[" + ",".join(["1"] * 600_000) + "]").encode()
    for method, path in BODY_ROUTES:
        for content in (big, many):
            r = await world.send(method, path, content)
            assert r.status_code in (413, 422), (method, path, r.status_code)
            assert_ok_or_client_error(r, f"{method} {path} {len(content)} bytes")


CONTENT_TYPES = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                 "application/json; charset=latin-1", "", "application/xml"]


async def test_wrong_content_types(world: World) -> None:
    for (method, path), ctype in product(ALL_ROUTES, CONTENT_TYPES):
        body = json.dumps(VALID_BODIES.get(path, {})).encode()
        r = await world.send(method, path, body, headers={"Content-Type": ctype})
        assert_ok_or_client_error(r, f"{method} {path} content-type {ctype!r}")


HOSTILE_IDS = [
    "%00", "%ED%A0%80", "%FF", "x" * 5000, "..%2F..%2Fetc", "%E5%90%8D", "00000000-0000-0000-"
    "0000-00000000000g", "{00000000-0000-0000-0000-000000000000}",
    "urn:uuid:00000000-0000-0000-0000-000000000000", "00000000000000000000000000000000",
    " 00000000-0000-0000-0000-000000000000",
]


async def test_hostile_path_ids(world: World) -> None:
    id_routes = [(m, p) for m, p in ALL_ROUTES if "{" in p]
    for (method, path), bad in product(id_routes, HOSTILE_IDS):
        target = path.replace("{sid}", bad).replace("{rid}", bad)
        body = json.dumps(VALID_BODIES.get(path, {})).encode()
        r = await world.send(method, target, body)
        assert_ok_or_client_error(r, f"{method} {target[:80]}")
        assert r.status_code in (404, 422), (target[:80], r.status_code, r.text[:200])


QUERY_VALUES = [
    "", "%00", "%ED%A0%80", "%FF", str(10**30), str(-(10**30)), "1e3", "1.5", "NaN", "inf",
    "-0", "0x10", "%20%201", "x" * 10_000, "active%00", "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00%2B14:00", "0001-01-01",
]
QUERY_ROUTES = [
    ("/v1/schedules", ["customer_id", "external_id", "status", "limit", "offset"], ""),
    ("/v1/runs", ["schedule_id", "status", "limit", "offset"], ""),
    ("/v1/schedules/{sid}/runs", ["limit", "offset"], ""),
    ("/v1/preview", ["schedule_type", "schedule_expression", "timezone", "after", "count"],
     "schedule_type=cron&schedule_expression=@daily"),
    ("/v1/preview", ["schedule_expression", "after", "count"], "schedule_type=interval&"
     "schedule_expression=1h"),
    ("/v1/preview", ["schedule_expression", "after", "timezone"], "schedule_type=once&"
     "schedule_expression=2027-01-01T00:00:00"),
]


@pytest.mark.parametrize(("path", "params", "base"), QUERY_ROUTES,
                         ids=[f"{p}?{b[:20]}" for p, _, b in QUERY_ROUTES])
async def test_hostile_query_values(world: World, path: str, params: list[str],
                                    base: str) -> None:
    for param in params:
        for value in QUERY_VALUES:
            query = "&".join(x for x in (base, f"{param}={value}") if x)
            r = await world.send("GET", f"{path}?{query}")
            assert_ok_or_client_error(r, f"{path}?{param}={value[:40]}")
        # repeated parameter
        r = await world.send("GET", f"{path}?{base}&{param}=1&{param}=2")
        assert_ok_or_client_error(r, f"{path} repeated {param}")


@pytest.mark.parametrize(("stype", "expr"), [
    ("cron", "0 0 29 2 *"),
    ("cron", "0 0 31 2 *"),  # never happens
    ("cron", "0 0 30 2 *"),
    ("cron", "59 23 31 12 *"),
    ("cron", "0 0 1 1 * "),
    ("cron", "* * * * *"),
    ("cron", "0-59/1 0-23 1-31 1-12 0-7"),
    ("cron", "0 0 L 2 *"),
    ("cron", "0 0 LW * *"),
    ("cron", "0 0 * * 5L"),
    ("cron", "0 0 * * 5#5"),
    ("cron", "0 0 * * 5#6"),
    ("cron", "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20 * * * *"),
    ("cron", "0 0 " + ",".join(["1"] * 5000) + " * *"),
    ("interval", "366d"),
    ("interval", "367d"),
    ("interval", "1e9s"),
    ("interval", "9" * 400 + "s"),
    ("interval", "PT" + "9" * 400 + "S"),
    ("interval", "0.0000001s"),
    ("interval", "1ms"),
    ("interval", "1000ms"),
    ("once", "9999-12-31T23:59:59"),
    ("once", "9999-12-31T23:59:59-14:00"),
    ("once", "9999-12-31"),
    ("once", "0001-01-01T00:00:00+14:00"),
    ("once", "2027-02-29T00:00:00"),
    ("once", "2027-01-01T24:00:00"),
    ("once", "2027-01-01T00:00:00.9999999999Z"),
    ("once", "2027-01-01T00:00:00+99:99"),
    ("relative", "25:00"),
])
async def test_extreme_expressions(world: World, stype: str, expr: str) -> None:
    for tz in ["UTC", "Pacific/Kiritimati", "Etc/GMT+12", "Europe/Berlin"]:
        r = await world.api.post("/v1/schedules", schedule_body(
            schedule_type=stype, schedule_expression=expr, timezone=tz))
        assert_ok_or_client_error(r, f"{stype} {expr[:40]} {tz}")
        p = await world.api.get("/v1/preview", params={
            "schedule_type": stype, "schedule_expression": expr, "timezone": tz,
            "count": 100})
        assert_ok_or_client_error(p, f"preview {stype} {expr[:40]} {tz}")
        if r.status_code != 201:
            continue
        sid = r.json()["id"]
        for patch in ({"timezone": "Pacific/Kiritimati"}, {"timezone": "Etc/GMT+12"},
                      {"status": "paused"}, {"status": "active"}):
            u = await world.api.put(f"/v1/schedules/{sid}", patch)
            assert_ok_or_client_error(u, f"put {patch} on {expr[:40]}")


@pytest.mark.parametrize(("start", "end"), [
    ("9999-12-31T23:59:59-14:00", None),
    ("9999-12-31T23:59:59", None),
    (None, "9999-12-31T23:59:59-14:00"),
    ("0001-01-01T00:00:00+14:00", None),
    ("0001-01-01T00:00:00", "0001-01-01T00:00:01"),
    ("0001-01-01", "9999-12-31"),
    ("2026-11-22T09:00:00Z", "2026-11-22T09:00:00.001Z"),
])
async def test_extreme_start_and_end(world: World, start: str | None,
                                     end: str | None) -> None:
    kinds = [("interval", "1s"), ("cron", "@yearly"), ("once", "2026-12-01T00:00:00Z")]
    for (stype, expr), tz in product(kinds, ["UTC", "Pacific/Kiritimati", "Etc/GMT+12"]):
        body = schedule_body(schedule_type=stype, schedule_expression=expr, timezone=tz)
        if start is not None:
            body["start_at"] = start
        if end is not None:
            body["end_at"] = end
        r = await world.api.post("/v1/schedules", body)
        assert_ok_or_client_error(r, f"{stype} start={start} end={end} {tz}")
        if r.status_code != 201:
            continue
        sid = r.json()["id"]
        assert_ok_or_client_error(await world.api.get(f"/v1/schedules/{sid}"), "get")
        for action in ("pause", "resume", "trigger"):
            assert_ok_or_client_error(
                await world.api.post(f"/v1/schedules/{sid}/{action}"), action)
        u = await world.api.put(f"/v1/schedules/{sid}", {"schedule_expression": expr})
        assert_ok_or_client_error(u, "put")


HOSTILE_AUTH: list[dict[str, bytes]] = [
    {"X-Api-Key": b"\xff\xfe"},
    {"Authorization": b"Bearer \xff"},
    {"Authorization": b"Bearer \xed\xa0\x80"},
    {"Authorization": b"Bearer " + b"k" * 100_000},
    {"X-Api-Key": b"k" * 100_000},
    {"Authorization": b"Bearer"},
    {"Authorization": b"Bearer  \t"},
    {"Authorization": b"bEaReR x"},
    {"Authorization": b"\xff"},
]


async def test_hostile_auth_headers(world: World) -> None:
    for headers, (method, path) in product(HOSTILE_AUTH, ALL_ROUTES):
        r = await world.api.client.request(method, world.path(path), headers=headers)
        assert_ok_or_client_error(r, f"{method} {path}")
        if path.startswith("/v1"):
            assert r.status_code == 401, (method, path, r.status_code)


async def test_unicode_round_trips(world: World) -> None:
    name = "Zeitplan 名前 🎉 \u202eabc \u0301 ﷽"
    r = await world.api.post("/v1/schedules", schedule_body(
        name=name, description="d\u00e9j\u00e0 vu", external_id="外部-1",
        deduplication_key="🔑"))
    assert r.status_code == 201, r.text
    got = (await world.api.get(f"/v1/schedules/{r.json()['id']}")).json()
    assert (got["name"], got["description"], got["external_id"], got["deduplication_key"]) == (
        name, "d\u00e9j\u00e0 vu", "外部-1", "🔑")
    listed = (await world.api.get("/v1/schedules", params={"external_id": "外部-1"})).json()
    assert [s["id"] for s in listed["schedules"]] == [got["id"]]
    # 200 characters of 4-byte UTF-8 are still 200 characters
    r = await world.api.post("/v1/schedules", schedule_body(name="🎉" * 200))
    assert r.status_code == 201, r.text
    r = await world.api.post("/v1/schedules", schedule_body(name="🎉" * 201))
    assert r.status_code == 422


async def test_nesting_limits_are_422_naming_the_field(world: World) -> None:
    """Deep documents are refused before anything walks them recursively."""
    for levels, loc in ((100, ["body", "action_config"]), (900, ["body", "action_config"]),
                        (50_000, ["body"])):
        cfg = '{"url": "https://e.com/", "body": ' + deep(levels) + "}"
        body = json.dumps(schedule_body(action_type="webhook", action_config="__C__"))
        r = await world.send("POST", "/v1/schedules", body.replace('"__C__"', cfg).encode())
        assert_ok_or_client_error(r, f"depth {levels}")
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == loc, (levels, r.text)
        r = await world.send("PUT", "/v1/schedules/{sid}",
                             b'{"action_config": ' + cfg.encode() + b"}")
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == loc, (levels, r.text)
    # a modest depth is fine
    cfg = '{"url": "https://e.com/", "body": ' + deep(20) + "}"
    body = json.dumps(schedule_body(action_type="webhook", action_config="__C__"))
    r = await world.send("POST", "/v1/schedules", body.replace('"__C__"', cfg).encode())
    assert r.status_code == 201, r.text
    # relative_filter is bounded the same way
    r = await world.send("POST", "/v1/schedules",
                         with_raw_field(schedule_body(), "relative_filter", deep(500)))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "relative_filter"]


async def test_every_route_answers_without_a_500(world: World) -> None:
    """A smoke pass over every route with valid input, so that the tables above are not
    vacuous: each route is reachable and answers a success or a documented error."""
    for method, path in ALL_ROUTES:
        body = VALID_BODIES.get(path)
        content = None if body is None else json.dumps(body).encode()
        r = await world.send(method, path, content)
        assert_ok_or_client_error(r, f"{method} {path}")
        assert r.status_code not in (404, 405) or path.startswith("/v1/schedules/{sid}") or (
            path.startswith("/v1/runs/{rid}")), (method, path, r.status_code)


@pytest.mark.parametrize("levels", [10, 200, 900, 5000])
async def test_worker_results_of_any_depth(world: World, levels: int) -> None:
    """A worker's result is stored and read back (or refused), never a 500."""
    claim = await world.api.post("/v1/worker/claim",
                                 {"queues": ["q"], "worker_id": "w1", "wait_seconds": 0})
    assert claim.status_code == 200, claim.text
    assert claim.json()["id"] == world.rid
    content = b'{"worker_id": "w1", "status": "failed", "error_message": "\\u0000", "result": '
    r = await world.send("POST", "/v1/runs/{rid}/complete",
                         content + deep(levels).encode() + b"}")
    assert_ok_or_client_error(r, f"complete depth {levels}")
    for path in ("/v1/runs/{rid}", "/v1/runs", "/v1/schedules/{sid}/runs"):
        assert_ok_or_client_error(await world.send("GET", path), f"read depth {levels}")
    run = (await world.send("GET", "/v1/runs/{rid}")).json()
    assert run["status"] in ("running", "failed"), run["status"]
    retry = await world.send("POST", "/v1/runs/{rid}/retry")
    assert_ok_or_client_error(retry, f"retry depth {levels}")


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/v1/nothing-here", 404),
    ("GET", "/nothing", 404),
    ("PATCH", "/v1/schedules/{sid}", 405),
    ("DELETE", "/v1/schedules", 405),
    ("PUT", "/v1/runs/{rid}", 405),
    ("GET", "/v1/schedules/{sid}/pause", 405),
])
async def test_unknown_routes_and_methods(world: World, method: str, path: str,
                                          status: int) -> None:
    r = await world.send(method, path, b"{}")
    assert r.status_code == status, r.text
    assert_ok_or_client_error(r, f"{method} {path}")
