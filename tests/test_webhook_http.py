"""schedd.webhook_http.LeanHttp against scripted raw HTTP servers on 127.0.0.1.

Each server runs a small coroutine per connection, so a test can answer exactly the bytes
it wants (chunked, close-delimited, stalled, closed without answering) and count
connections. A parity table compares (status, excerpt) with aiohttp as schedd uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType

import aiohttp
import pytest

from schedd.outcomes import EXCERPT_BYTES
from schedd.webhook_http import (
    ConnectError,
    InvalidRequest,
    InvalidResponse,
    LeanHttp,
    ServerDisconnected,
)
from schedd.webhooks import read_excerpt

HEADERS = {"Content-Type": "application/json", "Idempotency-Key": "run-1"}
BODY = b'{"hello": "world"}'


@dataclass
class Req:
    method: str
    target: str
    head: bytes  # the raw request head, up to and including the blank line
    headers: dict[str, str]  # lower-cased names
    body: bytes


async def read_request(reader: asyncio.StreamReader) -> Req | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode().split("\r\n")
    method, target, _ = lines[0].split(" ")
    headers = {}
    for line in lines[1:]:
        if line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Req(method, target, head, headers, body)


def ok(body: bytes = b"{}", status: str = "200 OK", extra: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


Handler = Callable[["Server", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Server:
    handler: Handler
    port: int = 0
    connections: int = 0
    active: int = 0
    max_active: int = 0
    requests: list[Req] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._on_conn, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await self.handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # __aexit__ ends it; a cancelled handler task makes asyncio log an error
        finally:
            self.active -= 1
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()
            self._tasks.discard(task)

    async def next(self, reader: asyncio.StreamReader) -> Req | None:
        req = await read_request(reader)
        if req is not None:
            self.requests.append(req)
        return req


def keep_alive(answer: bytes | Callable[[Req], bytes], delay: float = 0.0) -> Handler:
    """Answer every request on the connection with `answer`."""

    async def handler(srv: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while (req := await srv.next(reader)) is not None:
            if delay:
                await asyncio.sleep(delay)
            w.write(answer(req) if callable(answer) else answer)
            await w.drain()

    return handler


def once(*parts: bytes, pause: float = 0.0) -> Handler:
    """Answer the first request with `parts` (pausing between them), then close."""

    async def handler(srv: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if await srv.next(reader) is None:
            return
        for i, part in enumerate(parts):
            if i and pause:
                await asyncio.sleep(pause)
            w.write(part)
            await w.drain()

    return handler


async def post(http: LeanHttp, srv: Server, **kw: object) -> tuple[int, bytes]:
    args: dict[str, object] = {
        "method": "POST",
        "host": "127.0.0.1",
        "port": srv.port,
        "target": "/hook",
        "headers": HEADERS,
        "body": BODY,
        "timeout": 5.0,
        "excerpt": 4096,
    }
    args.update(kw)
    return await http.request(**args)  # type: ignore[arg-type]


# ------------------------------------------------------------------ responses


async def test_content_length_response_and_request_bytes() -> None:
    async with Server(keep_alive(ok(b'{"ok": true}', "201 Created"))) as srv, LeanHttp() as http:
        assert await post(http, srv) == (201, b'{"ok": true}')
    [req] = srv.requests
    assert req.head == (
        f"POST /hook HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n"
        "Content-Type: application/json\r\nIdempotency-Key: run-1\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode()
    assert req.body == BODY


@pytest.mark.parametrize(
    ("method", "body", "length"),
    [("GET", None, None), ("HEAD", None, None), ("DELETE", None, "0"), ("POST", None, "0"),
     ("PUT", b"", "0"), ("PATCH", b"abc", "3")],
)
async def test_content_length_by_method(method: str, body: bytes | None, length: str) -> None:
    headers = {"X-Thing": "ü", "content-length": "99", "Transfer-Encoding": "chunked"}
    async with Server(keep_alive(ok(b""))) as srv, LeanHttp() as http:
        await post(http, srv, method=method, body=body, headers=headers)
    [req] = srv.requests
    assert req.method == method
    assert req.headers.get("content-length") == length
    assert "transfer-encoding" not in req.headers
    assert "X-Thing: ü\r\n".encode() in req.head  # values as UTF-8, names as given


async def test_caller_host_header_wins() -> None:
    async with Server(keep_alive(ok())) as srv, LeanHttp() as http:
        await post(http, srv, headers={"host": "example.com"})
    assert srv.requests[0].head.count(b"ost:") == 1
    assert srv.requests[0].headers["host"] == "example.com"


async def test_chunked_response_with_trailer() -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    async with Server(keep_alive(answer)) as srv, LeanHttp() as http:
        assert await post(http, srv) == (200, b"hello world")
        assert await post(http, srv) == (200, b"hello world")
    assert srv.connections == 1  # read to the end, so reused


async def test_chunked_response_split_across_writes() -> None:
    parts = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"3\r\nabc\r\n",
             b"3\r\ndef\r\n", b"0\r\n\r\n")
    async with Server(once(*parts, pause=0.02)) as srv, LeanHttp() as http:
        assert await post(http, srv) == (200, b"abcdef")


async def test_close_delimited_response() -> None:
    async with (
        Server(once(b"HTTP/1.1 200 OK\r\n\r\npart one, ", b"part two", pause=0.02)) as srv,
        LeanHttp() as http,
    ):
        assert await post(http, srv) == (200, b"part one, part two")
        assert http.open_connections == 0  # not reusable: closed


async def test_http10_response_is_not_reused() -> None:
    async with (
        Server(keep_alive(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")) as srv,
        LeanHttp() as http,
    ):
        assert await post(http, srv) == (200, b"ok")
        assert http.open_connections == 0


async def test_interim_1xx_responses_are_skipped() -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + ok()
    async with Server(keep_alive(answer)) as srv, LeanHttp() as http:
        assert await post(http, srv) == (200, b"{}")
        assert await post(http, srv) == (200, b"{}")
    assert srv.connections == 1


@pytest.mark.parametrize(
    ("method", "answer"),
    [
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"),
        ("HEAD", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ("POST", b"HTTP/1.1 204 No Content\r\n\r\n"),
        ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\nETag: x\r\n\r\n"),
    ],
)
async def test_responses_without_body_keep_the_connection(method: str, answer: bytes) -> None:
    async with Server(keep_alive(answer)) as srv, LeanHttp() as http:
        for _ in range(3):
            status, excerpt = await post(http, srv, method=method, body=None)
            assert excerpt == b""
            assert status == int(answer.split(b" ")[1])
        # the next, ordinary response on the same connection parses fine
    assert srv.connections == 1


async def test_head_then_post_on_the_same_connection() -> None:
    def answer(req: Req) -> bytes:
        if req.method == "HEAD":
            return b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
        return ok(b"after")

    async with Server(keep_alive(answer)) as srv, LeanHttp() as http:
        assert await post(http, srv, method="HEAD", body=None) == (200, b"")
        assert await post(http, srv) == (200, b"after")
    assert srv.connections == 1


async def test_invalid_response() -> None:
    async with Server(once(b"SMTP ready\r\n\r\n")) as srv, LeanHttp() as http:
        with pytest.raises(InvalidResponse) as info:
            await post(http, srv)
        assert isinstance(info.value, OSError)
        assert http.open_connections == 0


async def test_closed_mid_headers() -> None:
    async with Server(once(b"HTTP/1.1 200 OK\r\nContent-Le")) as srv, LeanHttp() as http:
        with pytest.raises(ServerDisconnected):
            await post(http, srv)


async def test_bad_chunk_after_the_headers_keeps_what_arrived() -> None:
    async def handler(srv: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await srv.next(reader)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\n")
        await asyncio.sleep(30)  # stays open: the answer must not wait for the close

    async with Server(handler) as srv, LeanHttp() as http:
        assert await post(http, srv, timeout=5.0) == (200, b"ok")
        assert http.open_connections == 0


async def test_truncated_body_keeps_what_arrived() -> None:
    async with (
        Server(once(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 100\r\n\r\nshort")) as srv,
        LeanHttp() as http,
    ):
        assert await post(http, srv) == (502, b"short")
        assert http.open_connections == 0


# ------------------------------------------------------------- large bodies


async def test_body_larger_than_excerpt_in_one_piece_is_drained_and_reused() -> None:
    big = bytes(range(256)) * 40  # 10 KiB, written at once
    async with Server(keep_alive(ok(big))) as srv, LeanHttp() as http:
        for _ in range(3):
            assert await post(http, srv, excerpt=1000) == (200, big[:1000])
        assert await post(http, srv, excerpt=0) == (200, b"")
    # a loopback read takes the whole response: read to the end in the same callback, so
    # the connection is reusable; if it were not, it would have been closed instead
    assert srv.connections in (1, 2, 3, 4)
    assert len(srv.requests) == 4


async def test_body_larger_than_excerpt_still_arriving_returns_early_and_closes() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 20000\r\n\r\n"
    async with (
        Server(once(head + b"a" * 2000, b"b" * 18000, pause=1.0)) as srv,
        LeanHttp() as http,
    ):
        started = time.monotonic()
        assert await post(http, srv, excerpt=1024) == (200, b"a" * 1024)
        assert time.monotonic() - started < 0.5  # did not wait for the rest
        assert http.open_connections == 0


# ---------------------------------------------------------------- keep-alive


async def test_keep_alive_reuses_one_connection() -> None:
    async with Server(keep_alive(ok())) as srv, LeanHttp() as http:
        for _ in range(10):
            assert await post(http, srv) == (200, b"{}")
        assert http.open_connections == 1
    assert srv.connections == 1
    assert len(srv.requests) == 10


async def test_connection_close_answer_is_not_reused() -> None:
    async with Server(keep_alive(ok(extra="Connection: close\r\n"))) as srv, LeanHttp() as http:
        for _ in range(3):
            assert await post(http, srv) == (200, b"{}")
    assert srv.connections == 3


def stale_after_first() -> Handler:
    """Answer a connection's first request; close on its second without answering (as a
    server does that closed the idle connection just as the request went out)."""

    async def handler(srv: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if await srv.next(reader) is None:
            return
        w.write(ok())
        await w.drain()
        await srv.next(reader)

    return handler


async def test_stale_reused_connection_is_retried_once_on_a_fresh_one() -> None:
    async with Server(stale_after_first()) as srv, LeanHttp() as http:
        assert await post(http, srv) == (200, b"{}")
        assert await post(http, srv) == (200, b"{}")  # stale, then a fresh connection
    assert srv.connections == 2
    assert len(srv.requests) == 3  # sent twice: the receiver deduplicates by Idempotency-Key


async def test_stale_retry_needs_a_replayable_request() -> None:
    async with Server(stale_after_first()) as srv, LeanHttp() as http:
        await post(http, srv, headers={})
        with pytest.raises(ServerDisconnected):
            await post(http, srv, headers={})  # POST without Idempotency-Key: not resent
        assert await post(http, srv, method="PUT", headers={}) == (200, b"{}")  # fresh
        assert await post(http, srv, method="PUT", headers={}) == (200, b"{}")  # resent
    assert srv.connections == 3


async def test_fresh_connection_closed_without_answer_is_not_retried() -> None:
    async with Server(once()) as srv, LeanHttp() as http:
        with pytest.raises(ServerDisconnected) as info:
            await post(http, srv)
        assert isinstance(info.value, OSError)
    assert srv.connections == 1


async def test_server_closing_idle_connections_is_noticed() -> None:
    async def handler(srv: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if await srv.next(reader) is not None:
            w.write(ok())
            await w.drain()
            await asyncio.sleep(0.02)  # idle timeout of the server

    async with Server(handler) as srv, LeanHttp() as http:
        assert await post(http, srv) == (200, b"{}")
        await asyncio.sleep(0.2)
        assert http.open_connections == 0  # dropped from the pool when the server closed
        assert await post(http, srv) == (200, b"{}")
    assert srv.connections == 2
    assert len(srv.requests) == 2  # no retry was needed


async def test_idle_connections_expire_after_keepalive_timeout() -> None:
    async with Server(keep_alive(ok())) as srv, LeanHttp(keepalive_timeout=0.05) as http:
        await asyncio.gather(post(http, srv), post(http, srv))
        assert http.open_connections == 2
        await asyncio.sleep(0.3)
        assert http.open_connections == 0


# ------------------------------------------------------------ failures, timeout


async def test_server_that_never_answers_times_out() -> None:
    async with Server(stall) as srv, LeanHttp() as http:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await post(http, srv, timeout=0.2)
        assert 0.15 < time.monotonic() - started < 1.0
        assert http.open_connections == 0


async def stall(srv: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await srv.next(reader)
    await asyncio.sleep(30)


async def test_timeout_after_the_headers_returns_what_arrived() -> None:
    async def handler(srv: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await srv.next(reader)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await asyncio.sleep(30)

    async with Server(handler) as srv, LeanHttp() as http:
        assert await post(http, srv, timeout=0.2) == (200, b"partial")
        assert http.open_connections == 0


def answer_first_then(rest: bytes | None) -> Handler:
    """Answer a connection's first request; on its second write `rest` (if any) and then
    stall: the second request goes out on a reused keep-alive connection."""

    async def handler(srv: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if await srv.next(reader) is None:
            return
        w.write(ok())
        await w.drain()
        if await srv.next(reader) is None:
            return
        if rest:
            w.write(rest)
            await w.drain()
        await asyncio.sleep(30)

    return handler


async def test_a_reused_connection_that_never_answers_times_out() -> None:
    async with Server(answer_first_then(None)) as srv, LeanHttp() as http:
        assert await post(http, srv) == (200, b"{}")
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await post(http, srv, timeout=0.2)
        assert 0.15 < time.monotonic() - started < 1.0
        assert http.open_connections == 0  # not reused after a timeout
        assert srv.connections == 1


async def test_a_reused_connection_timing_out_after_the_headers_returns_what_arrived() -> None:
    partial = b"HTTP/1.1 201 Created\r\nContent-Length: 100\r\n\r\npart"
    async with Server(answer_first_then(partial)) as srv, LeanHttp() as http:
        assert await post(http, srv) == (200, b"{}")
        assert await post(http, srv, timeout=0.2) == (201, b"part")
        assert http.open_connections == 0


async def test_a_cancelled_request_on_a_reused_connection_frees_it() -> None:
    async with Server(answer_first_then(None)) as srv, LeanHttp(max_connections=1) as http:
        assert await post(http, srv) == (200, b"{}")
        task = asyncio.create_task(post(http, srv, timeout=30.0))
        for _ in range(200):  # bounded: 2 s
            if len(srv.requests) == 2:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert http.open_connections == 0  # closed, and its slot free for the next request


async def test_a_replay_keeps_the_first_deadline() -> None:
    """A stale reused connection is replayed on a fresh one within what is left of the
    request's timeout, not a new one."""

    async def handler(srv: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if srv.connections == 1:  # answer once, then close on the next request after 0.5 s
            await srv.next(reader)
            w.write(ok())
            await w.drain()
            await srv.next(reader)
            await asyncio.sleep(0.5)
            return
        await stall(srv, reader, w)  # the fresh connection never answers

    async with Server(handler) as srv, LeanHttp() as http:
        assert await post(http, srv) == (200, b"{}")
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await post(http, srv, timeout=0.8)
        assert 0.7 < time.monotonic() - started < 1.2  # 0.8 in all, not 0.5 + 0.8
    assert srv.connections == 2


async def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        async with LeanHttp() as http:
            with pytest.raises(ConnectError) as info:
                await http.request("POST", "127.0.0.1", port, "/", {}, b"x", 5.0, 10)
            assert http.open_connections == 0
    assert isinstance(info.value, OSError)
    assert info.value.errno == errno.ECONNREFUSED
    assert f"cannot connect to 127.0.0.1:{port}" in str(info.value)


async def test_unknown_host() -> None:
    async with LeanHttp() as http:
        with pytest.raises(ConnectError):
            await http.request("GET", "does-not-exist.invalid", 80, "/", {}, None, 5.0, 10)


# ------------------------------------------------------------- pool and cap


async def test_global_cap_is_respected_under_load() -> None:
    async with Server(keep_alive(ok(), delay=0.01)) as srv, LeanHttp(max_connections=4) as http:
        results = await asyncio.gather(*(post(http, srv) for _ in range(60)))
        assert http.open_connections <= 4
    assert results == [(200, b"{}")] * 60
    assert srv.max_active <= 4
    assert srv.connections == 4


async def test_cap_spans_hosts_and_evicts_idle_connections() -> None:
    async with (
        Server(keep_alive(ok(b"a"))) as a,
        Server(keep_alive(ok(b"b"), delay=0.02)) as b,
        LeanHttp(max_connections=2) as http,
    ):
        await asyncio.gather(post(http, a), post(http, a))
        assert http.open_connections == 2  # both idle, to a
        assert list(await asyncio.gather(post(http, b), post(http, b))) == [(200, b"b")] * 2
        assert http.open_connections == 2
        assert a.active == 0  # a's idle connections were closed to make room
        assert await post(http, a) == (200, b"a")
        assert http.open_connections == 2


async def test_a_waiter_that_times_out_does_not_block_the_others() -> None:
    async with Server(keep_alive(ok(), delay=0.3)) as srv, LeanHttp(max_connections=1) as http:
        first = asyncio.create_task(post(http, srv))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(post(http, srv, timeout=0.05))
        third = asyncio.create_task(post(http, srv))
        assert await first == (200, b"{}")
        with pytest.raises(TimeoutError):
            await second
        assert await third == (200, b"{}")
    assert srv.connections == 1


async def test_aclose_closes_everything_and_leaks_nothing() -> None:
    fds = len(os.listdir("/proc/self/fd"))
    async with Server(keep_alive(ok())) as srv:
        for _ in range(5):
            http = LeanHttp()
            await asyncio.gather(*(post(http, srv) for _ in range(8)))
            assert http.open_connections == 8
            await http.aclose()
            assert http.open_connections == 0
            with pytest.raises(RuntimeError):
                await post(http, srv)
        await asyncio.sleep(0.05)
        assert srv.active == 0
    assert len(os.listdir("/proc/self/fd")) == fds


# ------------------------------------------------------------ parity, uvloop


async def aiohttp_as_schedd(url: str, method: str, timeout: float) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
        session.request(
            method, url, data=None if method in ("GET", "HEAD") else BODY, headers=HEADERS,
            timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False,
        ) as resp,
    ):
        return resp.status, await read_excerpt(resp)


PARITY = [
    ("POST", (ok(b'{"a": 1}', "202 Accepted"),)),
    ("POST", (b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nboom\r\n0\r\n\r\n",)),
    ("POST", (b"HTTP/1.1 200 OK\r\n\r\nuntil ", b"close")),
    ("POST", (ok(b"x" * 10_000),)),
    ("POST", (b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n",)),
    ("POST", (b"HTTP/1.1 204 No Content\r\n\r\n",)),
    ("GET", (b"HTTP/1.1 304 Not Modified\r\n\r\n",)),
    ("HEAD", (b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",)),
    ("POST", (b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"final"),)),
    ("POST", (b"HTTP/1.1 503 Busy\r\nContent-Length: 50\r\n\r\ntruncated",)),
    # (aiohttp raises ClientResponseError(400) instead when the bad chunk comes with the head)
    ("POST", (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"4\r\nboom\r\nzz\r\n")),
]


@pytest.mark.parametrize(("method", "parts"), PARITY)
async def test_same_answer_as_aiohttp(method: str, parts: tuple[bytes, ...]) -> None:
    async with Server(once(*parts, pause=0.02)) as srv, LeanHttp() as http:
        # 1 s: after a bad chunk aiohttp waits out its timeout even though the server closed
        theirs = await aiohttp_as_schedd(f"http://127.0.0.1:{srv.port}/hook", method, 1.0)
        ours = await post(http, srv, method=method, body=None if method in ("GET", "HEAD")
                          else BODY, excerpt=EXCERPT_BYTES)
    assert ours == theirs


async def test_same_answer_as_aiohttp_on_timeout_after_headers() -> None:
    async def handler(srv: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await srv.next(reader)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nsome")
        await asyncio.sleep(30)

    async with Server(handler) as srv, LeanHttp() as http:
        theirs = await aiohttp_as_schedd(f"http://127.0.0.1:{srv.port}/", "POST", 0.2)
        assert await post(http, srv, timeout=0.2) == theirs == (200, b"some")


def test_under_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
        async with Server(keep_alive(ok())) as srv, LeanHttp(max_connections=3) as http:
            results = await asyncio.gather(*(post(http, srv) for _ in range(30)))
            assert results == [(200, b"{}")] * 30
            assert srv.connections == 3
        async with Server(keep_alive(chunked)) as srv, LeanHttp() as http:
            assert await post(http, srv) == (200, b"ok")
            assert await post(http, srv) == (200, b"ok")
            assert srv.connections == 1
        async with Server(once(b"HTTP/1.1 200 OK\r\n\r\nbye")) as srv, LeanHttp() as http:
            assert await post(http, srv) == (200, b"bye")
        async with Server(stale_after_first()) as srv, LeanHttp() as http:
            await post(http, srv)
            assert await post(http, srv) == (200, b"{}")
            assert srv.connections == 2
        async with Server(stall) as srv, LeanHttp() as http:
            with pytest.raises(TimeoutError):
                await post(http, srv, timeout=0.1)
        async with Server(answer_first_then(None)) as srv, LeanHttp() as http:
            await post(http, srv)
            with pytest.raises(TimeoutError):  # the reused connection's timer
                await post(http, srv, timeout=0.1)

    uvloop.run(scenario())


# ------------------------------------------------------------- SPEC §10 in the lean client


@pytest.mark.parametrize("headers", [
    {"X-A": "v\r\nInjected: 1"},
    {"X-A": "v\nInjected: 1"},
    {"X-A": "v\rx"},
    {"X-A": "v\x00x"},
    {"X-A\r\nInjected": "v"},
])
async def test_a_header_with_cr_lf_or_nul_is_refused_before_connecting(
    headers: dict[str, str],
) -> None:
    # the caller checks first (schedd.webhooks); this is the client's own last defence
    async with Server(keep_alive(ok())) as srv, LeanHttp() as http:
        with pytest.raises(InvalidRequest):
            await http.request("POST", "127.0.0.1", srv.port, "/", headers, BODY, 5.0, 4096)
        assert srv.connections == 0
        # and a clean request on the same client goes through
        status, _ = await http.request("POST", "127.0.0.1", srv.port, "/",
                                       {"X-A": "v\tw"}, BODY, 5.0, 4096)
        assert status == 200
        assert srv.requests[0].headers["x-a"] == "v\tw"


class Refused(OSError):
    pass


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_address_check_sees_the_resolved_address(host: str) -> None:
    seen: list[str] = []

    def refuse_loopback(address: str) -> None:
        seen.append(address)
        if address in ("127.0.0.1", "::1"):
            raise Refused(f"{address} refused")

    async with Server(keep_alive(ok())) as srv, \
            LeanHttp(address_check=refuse_loopback) as http:
        with pytest.raises(Refused):  # raised as is, not wrapped in ConnectError
            await http.request("GET", host, srv.port, "/", {}, None, 5.0, 4096)
        assert srv.connections == 0
        assert http.open_connections == 0  # the refused attempt gave its slot back
    assert "127.0.0.1" in seen


async def test_address_check_connects_to_a_permitted_address_only() -> None:
    # localhost may resolve to ::1 and 127.0.0.1; refusing ::1 must still reach the
    # server on 127.0.0.1, and refusing 127.0.0.1 never connects to it
    def refuse_v6(address: str) -> None:
        if ":" in address:
            raise Refused(address)

    async with Server(keep_alive(ok())) as srv, LeanHttp(address_check=refuse_v6) as http:
        status, _ = await http.request("GET", "localhost", srv.port, "/", {}, None, 5.0, 4096)
        assert status == 200
        assert srv.connections == 1
