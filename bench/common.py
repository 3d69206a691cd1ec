"""Pieces the bench scripts share: a recording webhook sink and a readiness wait."""

from __future__ import annotations

import asyncio
import time

import httpx
from aiohttp import web


async def start_sink(arrivals: list[tuple[float, str]]) -> tuple[web.AppRunner, int]:
    """A sink on 127.0.0.1 that records (arrival ms, X-Schedd-Scheduled-For) per request."""

    async def hook(request: web.Request) -> web.Response:
        arrivals.append((time.time() * 1000, request.headers["X-Schedd-Scheduled-For"]))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def wait_ready(client: httpx.AsyncClient, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.05)
    raise SystemExit(f"the daemon was not ready within {timeout_s:.0f} s")
