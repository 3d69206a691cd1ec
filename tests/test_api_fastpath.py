"""api/fastpath.py: the lean path for POST /v1/schedules and GET /v1/schedules/{id} answers
byte for byte what Litestar answers, and leaves everything else to Litestar.

Each request is sent as raw ASGI messages twice, once with the fast path and once without
(`App.fast_path = False`), and the two answers (status, header list, body) are compared;
a counter on Litestar's own entry point tells which path answered.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Api, schedule_body
from litestar import Litestar

from schedd.api.fastpath import App
from schedd.errors import StorageUnavailable

VOLATILE = re.compile(rb'"(id|created_at|updated_at|next_run_at)":"[^"]*"')


@pytest.fixture
def litestar_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The paths Litestar itself was asked to answer."""
    calls: list[str] = []
    original = Litestar.__call__

    async def counted(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            calls.append(f"{scope['method']} {scope['path']}")
        await original(self, scope, receive, send)

    monkeypatch.setattr(Litestar, "__call__", counted)
    yield calls


async def _asgi(app: App, method: str, path: str, body: bytes, headers: list[tuple[bytes, bytes]],
                chunks: int, query: bytes) -> list[dict[str, Any]]:
    parts = [body[i * len(body) // chunks:(i + 1) * len(body) // chunks] for i in range(chunks)]
    messages = [{"type": "http.request", "body": p, "more_body": i < chunks - 1}
                for i, p in enumerate(parts)]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
             "http_version": "1.1", "method": method, "scheme": "http", "path": path,
             "raw_path": path.encode(), "query_string": query, "root_path": "",
             "headers": [(b"host", b"127.0.0.1:8080"), *headers],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080), "state": {}}
    await app(scope, receive, send)
    return sent


def send(api: Api, method: str, path: str, body: Any = None, *, fast: bool = True,
         headers: list[tuple[bytes, bytes]] | None = None, key: str | None = None,
         chunks: int = 1, query: bytes = b"") -> tuple[int, list[Any], bytes]:
    """(status, headers, body) of one request sent as raw ASGI messages."""
    raw = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
    if headers is None:
        headers = [(b"authorization", f"Bearer {key or api.key}".encode()),
                   (b"content-type", b"application/json"),
                   (b"content-length", str(len(raw)).encode())]
    app = api.client.app
    assert isinstance(app, App)
    app.fast_path = fast
    try:
        sent = api.call(_asgi, app, method, path, raw, headers, chunks, query)
    finally:
        app.fast_path = True
    start, rest = sent[0], sent[1:]
    assert start["type"] == "http.response.start"
    assert all(m["type"] == "http.response.body" for m in rest)
    assert rest[-1].get("more_body", False) is False
    return start["status"], list(start["headers"]), b"".join(m["body"] for m in rest)


def same_answer(api: Api, method: str, path: str, body: Any = None, **kw: Any
                ) -> tuple[int, bytes]:
    """Send with and without the fast path; the two answers must be the same bytes (ids
    and times aside, when the request creates)."""
    fast = send(api, method, path, body, fast=True, **kw)
    slow = send(api, method, path, body, fast=False, **kw)
    assert fast[0] == slow[0]
    assert fast[1] == slow[1]
    if method == "POST" and fast[0] == 201:
        assert VOLATILE.sub(b"", fast[2]) == VOLATILE.sub(b"", slow[2])
        assert len(fast[2]) == len(slow[2])
    else:
        assert fast[2] == slow[2]
    return fast[0], fast[2]


CREATES = [
    schedule_body(),
    schedule_body(schedule_type="cron", schedule_expression="0 9 * * 1-5",
                  timezone="Europe/Berlin", description="weekdays",
                  customer_id="6f1f4a4e-8a7b-4c55-9d61-3e1c7a6f0b11", external_id="ext-1"),
    schedule_body(action_type="webhook",
                  action_config={"url": "https://example.com/hook", "method": "POST",
                                 "headers": {"X-A": "1"}, "secret": "s3cr3t",
                                 "body": {"run": "{{run.id}}"}}),
    schedule_body(action_type="worker", action_config={"queue": "q", "payload": {"a": [1, 2]}},
                  overlap_policy="BUFFER_ONE", max_retries=0, start_at="2026-12-01T00:00:00Z",
                  end_at="2027-12-01T00:00:00Z", rate_limit_per_minute=10),
    # Litestar converts leniently (strict=False): a number in a string is a number
    schedule_body(max_retries="2", catchup_window_minutes="5"),
    schedule_body(schedule_type="once", schedule_expression="2026-11-23T09:00:00"),
    schedule_body(name="ünïcødé ☃"),
]


@pytest.mark.parametrize("body", CREATES, ids=range(len(CREATES)))
async def test_create_answers_litestars_bytes(api: Api, body: dict[str, Any],
                                              litestar_calls: list[str]) -> None:
    status, out = same_answer(api, "POST", "/v1/schedules", body)
    assert status == 201, out
    # the fast one was answered without Litestar, the other by it
    assert litestar_calls == ["POST /v1/schedules"]
    # both were created, and read back the same through Litestar's GET
    r = await api.get(f"/v1/schedules/{json.loads(out)['id']}")
    assert r.status_code == 200 and r.content == out


async def test_create_deduplicated_and_get_one(api: Api, litestar_calls: list[str]) -> None:
    body = schedule_body(deduplication_key="once-only")
    status, first = send(api, "POST", "/v1/schedules", body)[::2]
    assert status == 201
    again = send(api, "POST", "/v1/schedules", body)
    again_slow = send(api, "POST", "/v1/schedules", body, fast=False)
    assert again[0] == again_slow[0] == 200
    assert again[1:] == again_slow[1:] and again[2] == first
    sid = json.loads(first)["id"]
    status, out = same_answer(api, "GET", f"/v1/schedules/{sid}")
    assert status == 200 and out == first
    assert litestar_calls == ["POST /v1/schedules", "GET /v1/schedules/" + sid]


async def test_body_in_several_messages(api: Api, litestar_calls: list[str]) -> None:
    status, _ = same_answer(api, "POST", "/v1/schedules", schedule_body(), chunks=3)
    assert status == 201
    assert litestar_calls == ["POST /v1/schedules"]


def _hdrs(api: Api, raw: bytes, **change: bytes | None) -> list[tuple[bytes, bytes]]:
    base = {b"authorization": f"Bearer {api.key}".encode(), b"content-type": b"application/json",
            b"content-length": str(len(raw)).encode()}
    for k, v in change.items():
        name = k.replace("_", "-").encode()
        if v is None:
            base.pop(name, None)
        else:
            base[name] = v
    return list(base.items())


GOOD = json.dumps(schedule_body()).encode()


@pytest.mark.parametrize(("body", "change", "status"), [
    (b'{"name": ', {}, 422),  # malformed JSON
    (b"", {}, 422),  # no body
    (json.dumps(schedule_body(bogus=1)).encode(), {}, 422),  # unknown field
    (json.dumps(schedule_body(max_retries=11)).encode(), {}, 422),  # out of range
    (json.dumps(schedule_body(schedule_expression="every day")).encode(), {}, 422),  # service
    (json.dumps(schedule_body(timezone="Mars/Base")).encode(), {}, 422),
    (json.dumps(schedule_body(action_type="command",
                              action_config={"argv": ["true"]}) | {"name": "x" * 201}).encode(),
     {}, 422),
    (GOOD, {"authorization": None}, 401),  # no key
    (GOOD, {"authorization": b"Bearer sk_wrong"}, 401),  # wrong key
    (GOOD, {"content_type": b"text/plain"}, 201),  # Litestar reads JSON regardless
    (GOOD, {"content_length": None}, 201),  # no length: Litestar's path
    (b"[1, 2]", {}, 422),
    (b'"\xff"', {}, 422),  # not UTF-8
    (b"[" * 5000 + b"]" * 5000, {}, 422),  # deep
], ids=range(14))
async def test_anything_unusual_is_litestars(api: Api, litestar_calls: list[str], body: bytes,
                                             change: dict[str, bytes | None],
                                             status: int) -> None:
    hdrs = _hdrs(api, body, **change)
    got, out = same_answer(api, "POST", "/v1/schedules", body, headers=hdrs)
    assert got == status, out
    # both sends ended in Litestar (the fast path declined, or tried and fell through)
    assert litestar_calls == ["POST /v1/schedules"] * 2


async def test_a_failed_fast_attempt_is_not_done_again(api: Api,
                                                       litestar_calls: list[str]) -> None:
    """A storage fault on the fast path's write falls through to Litestar, which answers
    that attempt's error (a 503) without writing again, as a plain Litestar route answers
    its one attempt; the client's retry then creates exactly one schedule."""
    db = api.services.db
    real = db.write
    faults = [2]

    async def flaky(*args: Any, **kw: Any) -> Any:
        if faults[0]:
            faults[0] -= 1
            raise StorageUnavailable("full", "database or disk is full")
        return await real(*args, **kw)

    db.write = flaky  # type: ignore[method-assign]
    try:
        status, _, out = send(api, "POST", "/v1/schedules", schedule_body(name="faulty"))
        assert status == 503, out
        assert json.loads(out)["detail"].startswith("The database cannot be written")
        assert faults[0] == 1  # one attempt, not two
        # a fault over by the time of a second attempt: still the one attempt's 503
        status, _, out = send(api, "POST", "/v1/schedules", schedule_body(name="faulty"))
        assert status == 503, out
        assert faults[0] == 0
        status, _, out = send(api, "POST", "/v1/schedules", schedule_body(name="faulty"))
        assert status == 201, out
    finally:
        db.write = real  # type: ignore[method-assign]
    assert litestar_calls == ["POST /v1/schedules"] * 2
    r = await api.get("/v1/schedules?limit=200")
    assert [s["name"] for s in r.json()["schedules"]].count("faulty") == 1


async def test_other_shapes_go_to_litestar(api: Api, litestar_calls: list[str]) -> None:
    first = send(api, "POST", "/v1/schedules", schedule_body())[2]
    sid = json.loads(first)["id"]
    other = await api.other_tenant()
    cases = [
        ("GET", f"/v1/schedules/{sid}", {"key": other.key}, 404),  # another tenant's
        ("GET", "/v1/schedules/" + "0" * 8 + "-0000-0000-0000-" + "0" * 12, {}, 404),
        ("GET", f"/v1/schedules/{sid.upper()}", {}, 200),  # not canonical: Litestar's
        ("GET", f"/v1/schedules/{sid}", {"key": "sk_nope"}, 401),
        ("GET", f"/v1/schedules/{sid}", {"query": b"x=1"}, 200),
        ("POST", "/v1/schedules", {"query": b"x=1"}, 201),
        ("GET", "/v1/schedules/not-a-uuid", {}, 422),
    ]
    for method, path, kw, want in cases:
        body = schedule_body() if method == "POST" else None
        litestar_calls.clear()
        got, out = same_answer(api, method, path, body, **kw)
        assert got == want, (path, kw, out)
        assert len(litestar_calls) == 2, (path, kw)
    dup = [(b"authorization", f"Bearer {api.key}".encode())] * 2
    litestar_calls.clear()
    got, _ = same_answer(api, "GET", f"/v1/schedules/{sid}", headers=dup)
    assert len(litestar_calls) == 2
