"""A local webhook receiver for tests.

    async with Sink() as sink:
        sink.route("/slow", delay=2.0)
        sink.route("/fail", status=503, body=b"down")
        sink.route("/moved", redirect="/target")        # 302 unless another 3xx is given
        ... send to sink.url("/slow") ...
        [req] = await sink.wait_for(1)
        assert req.headers["idempotency-key"] == run_id  # header names are lower-cased

An aiohttp.web server on 127.0.0.1 with an ephemeral port. Every request is recorded in
`sink.requests` (method, path, query, headers, body, arrival times) as soon as its body has
been read, before any delay. A delayed answer ends early when the sink closes, and a
client that goes away mid-delay is noticed (`req.aborted`), because the server cancels a
handler whose connection was lost. Waiting is event-driven: every change (a request
arriving, answered or aborted) wakes the waiters, which re-check their condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class SinkRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-cased names; a repeated header keeps its last value
    body: bytes
    arrived_at: float  # time.monotonic()
    arrived_wall: float  # time.time()
    answered: bool = False  # the sink's answer was handed to the server
    aborted: bool = False  # the client went away before the answer

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Behaviour:
    status: int = 200
    delay: float = 0.0
    redirect: str | None = None
    body: bytes = b'{"ok": true}'
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class Sink:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.requests: list[SinkRequest] = []
        self._routes: dict[str, Behaviour] = {}
        self._default = Behaviour()
        self._waiters: list[asyncio.Future[None]] = []
        self._closing: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------- configuration

    def route(
        self,
        path: str,
        *,
        status: int | None = None,
        delay: float = 0.0,
        redirect: str | None = None,
        body: bytes = b'{"ok": true}',
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        """How the sink answers `path` (exact match, query ignored). `redirect` is a path
        on this sink or an absolute url, sent as Location with a 302 by default."""
        if status is None:
            status = 302 if redirect is not None else 200
        self._routes[path] = Behaviour(
            status=status,
            delay=delay,
            redirect=redirect,
            body=body,
            content_type=content_type,
            headers=dict(headers or {}),
        )

    def url(self, path: str = "/") -> str:
        if not self.port:
            raise RuntimeError("the sink is not started")
        if not path.startswith("/"):
            path = "/" + path
        return f"http://{self.host}:{self.port}{path}"

    def requests_to(self, path: str) -> list[SinkRequest]:
        return [r for r in self.requests if r.path == path]

    # ------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Sink:
        self._closing = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            raise
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._closing is not None:
            self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._changed()

    # ------------------------------------------------------------- waiting

    def _changed(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait_until(
        self, predicate: Callable[[Sink], bool], timeout: float = 5.0, what: str = "condition"
    ) -> None:
        """Wait (bounded) until predicate(sink) holds; re-checked on every change."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"sink: {what} not reached within {timeout} s")
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append(fut)
            try:
                await asyncio.wait({fut}, timeout=remaining)
            finally:
                if not fut.done():
                    fut.cancel()

    async def wait_for(self, n: int, timeout: float = 5.0) -> list[SinkRequest]:
        """Wait until at least n requests arrived; answer the first n."""
        await self.wait_until(
            lambda s: len(s.requests) >= n,
            timeout,
            f"{n} request(s) (got {len(self.requests)})",
        )
        return self.requests[:n]

    # ------------------------------------------------------------- serving

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        record = SinkRequest(
            method=request.method,
            path=request.path,
            query=request.query_string,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            arrived_at=time.monotonic(),
            arrived_wall=time.time(),
        )
        self.requests.append(record)
        self._changed()
        behaviour = self._routes.get(request.path, self._default)
        try:
            if behaviour.delay > 0 and self._closing is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), behaviour.delay)
        except asyncio.CancelledError:
            record.aborted = True
            self._changed()
            raise
        headers = dict(behaviour.headers)
        if behaviour.redirect is not None:
            headers["Location"] = behaviour.redirect
        record.answered = True
        self._changed()
        return web.Response(
            status=behaviour.status,
            body=behaviour.body,
            content_type=behaviour.content_type,
            headers=headers,
        )
