"""A differential test of api/fastpath.py against Litestar: generated requests (headers,
bodies, paths, auth) sent once through the fast path and once through plain Litestar on
the same app must get the same status, header list and body bytes, and a create must
create exactly one schedule whichever path served it. Seeded and bounded (hypothesis,
derandomized, a fixed number of examples)."""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

import pytest
from conftest import Api, schedule_body
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_api_fastpath import VOLATILE, send

from schedd.api import fastpath
from schedd.clock import FakeClock
from schedd.services import DEFAULT_TENANT, KEY_TOUCH_INTERVAL_MS

# seeded and bounded (~15 s here); FASTPATH_EXAMPLES=4000 for a longer hunt
EXAMPLES = int(os.environ.get("FASTPATH_EXAMPLES", "1000"))

# what a client may send where the create's fields go
_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 12), st.sampled_from(
    ["", "x", "15m", "2", "0 9 * * *", "UTC", "Mars/Base", "noop", "worker", "\x00", "é",
     "BUFFER_ONE", "2026-12-01T00:00:00Z", "6f1f4a4e-8a7b-4c55-9d61-3e1c7a6f0b11"]),
    st.lists(st.integers(0, 3), max_size=2), st.just({"queue": "q"}), st.just({}))
_FIELDS = ["name", "schedule_type", "schedule_expression", "action_type", "action_config",
           "timezone", "max_retries", "overlap_policy", "customer_id", "status", "start_at",
           "end_at", "description", "external_id", "relative_offset_days", "bogus"]


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["valid", "mutated", "mutated", "raw", "json"]))
    if kind == "raw":
        return draw(st.sampled_from([
            b"", b" ", b"{", b"null", b"[]", b"1", b'"x"', b"\xff\xfe", b'{"name":"\xff"}',
            b'\xef\xbb\xbf{"name":"a"}', b"{}", b'{"name": "a\\u0000"}',
            b'{"name":"\\ud800","schedule_type":"interval","schedule_expression":"15m",'
            b'"action_type":"noop","action_config":{}}',
            json.dumps(schedule_body()).encode() + b" \n",
            json.dumps(schedule_body()).encode() + b"x",
            json.dumps(schedule_body()).encode().replace(b'"name"', b'"name":"dup","name"'),
            json.dumps(schedule_body()).encode().replace(b'"noop"', b'"noop","action_type":1'),
        ]))
    if kind == "json":
        return json.dumps(draw(st.one_of(_VALUES, st.dictionaries(
            st.sampled_from(_FIELDS), _VALUES, max_size=4)))).encode()
    body = schedule_body()
    if kind == "mutated":
        for field in draw(st.lists(st.sampled_from(_FIELDS), min_size=1, max_size=3)):
            if draw(st.booleans()):
                body[field] = draw(_VALUES)
            else:
                body.pop(field, None)
    if draw(st.booleans()):
        body["deduplication_key"] = draw(st.sampled_from(["taken", "taken-too"]))
    return json.dumps(body, ensure_ascii=draw(st.booleans())).encode()


@st.composite
def requests(draw: st.DrawFn, ids: dict[str, str]) -> dict[str, Any]:
    method = draw(st.sampled_from(["POST"] * 6 + ["GET"] * 3 + ["HEAD", "OPTIONS", "PUT"]))
    path = draw(st.sampled_from([
        "/v1/schedules", "/v1/schedules", "/v1/schedules", "/v1/schedules/", "//v1/schedules",
        "/V1/schedules", "/v1/Schedules", "/v1/schedules/" + ids["mine"],
        "/v1/schedules/" + ids["mine"], "/v1/schedules/" + ids["mine"] + "/",
        "/v1/schedules/" + ids["mine"].upper(), "/v1/schedules/" + ids["theirs"],
        "/v1/schedules/" + ids["none"], "/v1/schedules/" + ids["mine"][:-1],
        "/v1/schedules//" + ids["mine"], "/v1/schedules/" + ids["mine"] + "%00",
    ]))
    raw = draw(bodies()) if method in ("POST", "PUT") or draw(st.booleans()) else b""
    auth = draw(st.sampled_from(["bearer"] * 4 + [
        "x-api-key", "both", "lower-bearer", "none", "empty", "bad", "revoked", "other",
        "basic", "bearer-spaces", "dup"]))
    key, other, revoked = ids["key"], ids["other_key"], ids["revoked_key"]
    headers: list[tuple[bytes, bytes]] = []
    auth_headers = {
        "bearer": [(b"authorization", f"Bearer {key}".encode())],
        "x-api-key": [(b"x-api-key", key.encode())],
        "both": [(b"authorization", b"Bearer sk_wrong"), (b"x-api-key", key.encode())],
        "lower-bearer": [(b"authorization", f"bearer {key}".encode())],
        "none": [], "empty": [(b"authorization", b"Bearer ")],
        "bad": [(b"authorization", b"Bearer sk_wrong")],
        "revoked": [(b"authorization", f"Bearer {revoked}".encode())],
        "other": [(b"authorization", f"Bearer {other}".encode())],
        "basic": [(b"authorization", f"Basic {key}".encode())],
        "bearer-spaces": [(b"authorization", f"Bearer   {key}  ".encode())],
        "dup": [(b"authorization", f"Bearer {key}".encode()),
                (b"authorization", b"Bearer sk_wrong")],
    }
    headers += auth_headers[auth]
    ctype = draw(st.sampled_from([
        b"application/json"] * 4 + [b"application/json; charset=utf-8",
                                    b"APPLICATION/JSON", b"application/json;charset=latin-1",
                                    b"application/json ; charset=utf-8", b"application/jsonx",
                                    b"text/plain", b"application/x-www-form-urlencoded",
                                    b"multipart/form-data; boundary=x", None]))
    if ctype is not None:
        headers.append((b"content-type", ctype))
    length = draw(st.sampled_from(["right"] * 5 + ["none", "chunked", "dup", "plus"]))
    if length == "right":
        headers.append((b"content-length", str(len(raw)).encode()))
    elif length == "chunked":
        headers.append((b"transfer-encoding", b"chunked"))
    elif length == "dup":
        headers += [(b"content-length", str(len(raw)).encode())] * 2
    elif length == "plus":
        headers.append((b"content-length", b"+" + str(len(raw)).encode()))
    query = draw(st.sampled_from([b""] * 6 + [b"x=1", b"limit=1", b"%ff"]))
    return {"method": method, "path": path, "body": raw, "headers": headers,
            "chunks": draw(st.integers(1, 3)) if raw else 1, "query": query}


def _schedules(api: Api) -> int:
    return int(api.call(_count, api))


async def _count(api: Api) -> int:
    svc = api.services
    return int(await svc.db.read(lambda c: c.execute("SELECT count(*) FROM schedules")
                                 .fetchone()[0]))


def _ids(api: Api) -> dict[str, str]:
    sid = json.loads(send(api, "POST", "/v1/schedules", schedule_body())[2])["id"]
    other_id, other_key = api.call(api.services.create_key, "other")
    # both dedup keys taken in both tenants, by different schedules (their answers tell)
    for dedup in ("taken", "taken-too"):
        send(api, "POST", "/v1/schedules", schedule_body(deduplication_key=dedup))
        theirs = send(api, "POST", "/v1/schedules",
                      schedule_body(deduplication_key=dedup, name="theirs"), key=other_key)[2]
    revoked_id, revoked_key = api.call(api.services.create_key, DEFAULT_TENANT)
    # used once (so that it is in the key cache), then revoked
    assert send(api, "GET", f"/v1/schedules/{sid}", key=revoked_key)[0] in (200, 404)
    api.call(api.services.revoke_key, revoked_id)
    return {"mine": sid, "theirs": json.loads(theirs)["id"], "key": api.key,
            "other_key": other_key, "revoked_key": revoked_key, "other_id": other_id,
            "none": "00000000-0000-4000-8000-000000000000"}


def test_generated_requests_get_litestars_answer(api: Api) -> None:
    ids = _ids(api)
    seen: dict[int, int] = {}

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(requests(ids))
    def one(req: dict[str, Any]) -> None:
        kw = {"headers": req["headers"], "chunks": req["chunks"], "query": req["query"]}
        before = _schedules(api)
        fast = send(api, req["method"], req["path"], req["body"], fast=True, **kw)
        middle = _schedules(api)
        slow = send(api, req["method"], req["path"], req["body"], fast=False, **kw)
        after = _schedules(api)
        assert fast[0] == slow[0], (req, fast, slow)
        assert fast[1] == slow[1], (req, fast, slow)
        if fast[0] == 201:
            assert VOLATILE.sub(b"", fast[2]) == VOLATILE.sub(b"", slow[2]), (req,)
            assert middle - before == 1 and after - middle == 1, (req,)
        else:
            assert fast[2] == slow[2], (req, fast, slow)
            assert middle == before and after == middle, (req,)
        seen[fast[0]] = seen.get(fast[0], 0) + 1

    one()
    # the generated set reaches the answers that matter
    for status in (200, 201, 401, 404, 405, 422):
        assert seen.get(status, 0) > 0, seen


async def _advance(clock: FakeClock, ms: int) -> None:
    clock.advance(ms)


@pytest.mark.sqlite_only("the refusal is injected as SQLite's 'database is locked' error")
@pytest.mark.parametrize("which", ["create", "key touch"])
def test_a_refused_write_is_counted_and_tried_once(api: Api, clock: FakeClock,
                                                   which: str) -> None:
    """A write the storage refuses (the create's, or the key check's touch of the key's
    last use) is one refused write whichever path serves the request: one attempt (the
    busy timeout is waited once), one schedd_db_errors count, the client's 503, and no
    schedule. Before: the fast path fell through to Litestar, which tried again."""
    db = api.services.db
    real = db.write
    attempts: list[str] = []
    target = "create_schedule" if which == "create" else "touch_key"

    def locked(*args: Any, **kw: Any) -> Any:
        raise sqlite3.OperationalError("database is locked")

    async def refused(fn: Any, *args: Any, **kw: Any) -> Any:
        if target not in fn.__qualname__:  # the loop's own writes go on
            return await real(fn, *args, **kw)
        attempts.append(fn.__qualname__)
        return await real(locked)  # the storage's refusal, as the writer thread meets it

    async def errors() -> float:
        engine = api.services.engine
        assert engine is not None
        return float(engine.metrics.db_errors.labels("locked")._value.get())

    for fast in (True, False):
        send(api, "GET", "/v1/schedules/00000000-0000-4000-8000-000000000000")  # key touched
        if which == "key touch":  # the next key check touches the key again
            api.call(_advance, clock, KEY_TOUCH_INTERVAL_MS)
        before = _schedules(api)
        attempts.clear()
        count = api.call(errors)
        db.write = refused  # type: ignore[method-assign]
        try:
            status, _, out = send(api, "POST", "/v1/schedules", schedule_body(), fast=fast)
        finally:
            db.write = real  # type: ignore[method-assign]
        assert status == 503, (fast, out)
        assert len(attempts) == 1, (fast, attempts)
        assert api.call(errors) == count + 1, fast
        assert _schedules(api) == before


def test_a_request_without_a_valid_key_has_no_body_decoded(api: Api,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """Litestar's guard runs before it parses a body; the fast path checks the key before
    reading and decoding one too, so a client without a key cannot have up to a MiB of
    JSON decoded per request (and a valid key's request is decoded once)."""
    decoded: list[int] = []
    real = fastpath._DECODE

    class Counting:
        def decode(self, body: bytes) -> Any:
            decoded.append(len(body))
            return real.decode(body)

    monkeypatch.setattr(fastpath, "_DECODE", Counting())
    body = schedule_body(action_type="worker",
                         action_config={"queue": "q", "payload": {"big": ["x" * 1000] * 500}})
    for key in ("sk_wrong", ""):
        status, _, out = send(api, "POST", "/v1/schedules", body, key=key or None,
                              headers=None if key else [(b"content-type", b"application/json")])
        assert status == 401, out
    assert decoded == []
    assert send(api, "POST", "/v1/schedules", body)[0] == 201
    assert len(decoded) == 1
