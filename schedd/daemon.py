"""Composition root: settings -> db -> store -> services -> engine -> app -> uvicorn.

`schedd serve` runs serve(settings) under uvloop. SIGTERM: uvicorn stops accepting and
drains, then the lifespan stops the engine (running actions get shutdown_grace_seconds,
the rest are recorded as interrupted and retried at the next start) and the process
exits 0.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import uvicorn
from litestar import Litestar

from schedd import __version__
from schedd.actions import ActionRunner
from schedd.api import create_app
from schedd.clock import Clock, SystemClock
from schedd.config import Settings
from schedd.db import Database
from schedd.engine import Engine
from schedd.logs import setup_logging
from schedd.services import Services
from schedd.store import Store

log = logging.getLogger("schedd")


@asynccontextmanager
async def running(settings: Settings, clock: Clock | None = None) -> AsyncIterator[Services]:
    """Open everything the daemon needs, start the engine, and close it all on exit."""
    clock = clock or SystemClock()
    async with AsyncExitStack() as stack:
        db = await stack.enter_async_context(Database(settings.db))
        store = Store(db)
        services = Services(store, clock, settings)
        key_path = await services.ensure_first_key(settings.db + ".key")
        if key_path is not None:
            log.info("created the first API key (tenant 'default'); it is in %s", key_path)
        runner = await stack.enter_async_context(ActionRunner(
            user_agent=f"schedd/{__version__}",
            max_connections=settings.webhook_max_connections,
            follow_redirects=settings.webhook_follow_redirects,
            allow_commands=settings.allow_commands,
            now_s=lambda: clock.now_ms() / 1000.0,
        ))
        engine = Engine(store, clock, settings, runner)
        services.attach_engine(engine)
        await engine.start()
        try:
            yield services
        finally:
            await engine.stop(settings.shutdown_grace_seconds)


def build_app(settings: Settings, clock: Clock | None = None) -> Litestar:
    """The Litestar app whose lifespan runs the whole daemon (used by serve and by tests)."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with running(settings, clock) as services:
            app.state.services = services
            app.state.readiness = services.engine_readiness
            yield

    return create_app(None, lifespan=[lifespan])


async def serve(settings: Settings) -> int:
    app = build_app(settings)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, http="httptools", loop="none",
        lifespan="on", log_config=None, access_log=False, server_header=False,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_seconds)),
    )
    server = uvicorn.Server(config)
    log.info("schedd %s listening on http://%s:%d (database %s)", __version__, settings.host,
             settings.port, settings.db)
    await server.serve()
    if not server.started:
        return 1
    log.info("schedd stopped")
    return 0


def run_serve(settings: Settings) -> int:
    import uvloop

    setup_logging(settings.log_level, settings.log_format)
    # uvicorn re-raises SIGTERM to the previous handler after a graceful stop; with the
    # default handler the process would die by the signal instead of exiting 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGINT, lambda *_: None)
    result: int = uvloop.run(serve(settings))
    return result


