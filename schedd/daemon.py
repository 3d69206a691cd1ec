"""Composition root: settings -> db -> store -> services -> engine -> app -> uvicorn.

`schedd serve` runs serve(settings) under uvloop. SIGTERM: uvicorn stops accepting and
drains, then the lifespan stops the engine (running actions get shutdown_grace_seconds,
the rest are recorded as interrupted and retried at the next start) and the process
exits 0.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, cast

import uvicorn
from litestar import Litestar

from schedd import __version__, config, console, retention, systemd
from schedd.actions import ActionRunner
from schedd.api import create_app
from schedd.backends import BackendRunner
from schedd.backends.prefect import PrefectBackend
from schedd.clock import Clock, SystemClock
from schedd.config import Settings
from schedd.engine import Engine, new_node_id
from schedd.engine_thread import EngineProxy, EngineThread
from schedd.logs import setup_logging
from schedd.metrics import Metrics
from schedd.node_file import NodeFile
from schedd.notify import LocalHub, Notifier
from schedd.notify_pg import PgNotifier
from schedd.read_gate import ReadGate
from schedd.services import Services
from schedd.store import Store, open_database, store_for
from schedd.syncs import SyncService, load_catalog

log = logging.getLogger("schedd")
HTTP_DRAIN_SECONDS = 5
#: With api_yields_to_fires: the HTTP server stops reading new requests this long before a
#: planned due instant, so that the requests it is serving are done when the burst starts
#: (read_gate.py; the pause's bound counts from here).
BURST_LEAD_MS = 20


@asynccontextmanager
async def running(settings: Settings, clock: Clock | None = None,
                  gate: ReadGate | None = None) -> AsyncIterator[Services]:
    """Open everything the daemon needs, start the engine, and close it all on exit.
    `gate`: the HTTP server's read gate, paused by the engine's bursts (read_gate.py)."""
    clock = clock or SystemClock()
    async with AsyncExitStack() as stack:
        db = await stack.enter_async_context(open_database(settings))
        # the key, node and console files live beside `db`; on PostgreSQL no database
        # file made its directory
        Path(settings.db).parent.mkdir(parents=True, exist_ok=True)
        store = store_for(db)
        services = Services(store, clock, settings)
        key_path = await services.ensure_first_key(settings.db + ".key")
        if key_path is not None:
            log.info("created the first API key (tenant 'default'); it is in %s", key_path)
        if settings.console_enabled:
            services.console_secret = await services.load_console_secret(
                settings.db + ".console-secret")
        syncs = SyncService(services, store, clock, settings,
                            load_catalog(settings.syncs_catalog_dir or None))
        services.syncs = syncs
        host: EngineThread | None = None
        if settings.engine_thread:
            import uvloop

            host = EngineThread(uvloop.new_event_loop())
            log.info("the scheduler loop runs on its own thread (engine_thread)")
            stack.push_async_callback(host.close)
            parts = AsyncExitStack()  # the engine's clients, opened and closed on its loop
            stack.push_async_callback(lambda: host.run(parts.aclose()))
            engine = await host.run(_engine(parts, settings, store, clock, syncs))
            proxy = EngineProxy(engine, host)
            # the API's failed writes reach the engine on its own loop
            db.fault_listeners[db.fault_listeners.index(engine._on_storage_fault)] = (
                proxy.storage_fault)
            services.attach_engine(cast(Engine, proxy))
            if gate is not None and gate.enabled:
                http_loop = asyncio.get_running_loop()

                def on_burst(on: bool) -> None:  # from the engine's thread
                    http_loop.call_soon_threadsafe(gate.burst, on)

                engine.on_burst = on_burst
                engine.burst_lead_ms = BURST_LEAD_MS
            await host.run(engine.start())
        else:
            engine = await _engine(stack, settings, store, clock, syncs)
            services.attach_engine(engine)
            if gate is not None and gate.enabled:
                engine.on_burst = gate.burst
                engine.burst_lead_ms = BURST_LEAD_MS
            await engine.start()
        if settings.database_url:
            # other nodes' revocations reach this node's auth cache (services.on_signal);
            # on SQLite nobody else signals (and the hub stays alone, so publishing is free)
            engine.notifier.subscribe(f"{engine.node_id}/auth", services.on_signal)
        if gate is not None:
            stack.callback(gate.close)
            engine.metrics.registry.register(GateCollector(gate))
        services.metrics_hooks.append(syncs_metrics(syncs, engine.metrics))
        await syncs.repair_on_create()
        prune = asyncio.create_task(
            retention.pruner(store, clock, settings.run_retention_days), name="schedd-pruner")
        try:
            yield services
        finally:
            prune.cancel()
            await asyncio.gather(prune, return_exceptions=True)
            if host is None:
                await engine.stop(settings.shutdown_grace_seconds)
            else:
                await host.run(engine.stop(settings.shutdown_grace_seconds))


async def _engine(stack: AsyncExitStack, settings: Settings, store: Store, clock: Clock,
                  syncs: SyncService) -> Engine:
    """The engine and the clients its actions use (on the loop it will run on)."""
    runner = await stack.enter_async_context(ActionRunner.from_settings(
        settings, user_agent=f"schedd/{__version__}",
        now_s=lambda: clock.now_ms() / 1000.0,
    ))
    prefect = await stack.enter_async_context(PrefectBackend())
    backends = BackendRunner(runner, {prefect.name: prefect}, syncs, now_ms=clock.now_ms)
    # several nodes (docs/operations.md): on a database other nodes share, a run left
    # running is only known dead once its lease ran out, or when this place's node file
    # names its node (a process that died, since the lock was free); and the nodes' signals
    # go through PostgreSQL's LISTEN/NOTIFY (schedd/notify.py)
    url: str = getattr(settings, "database_url", "")
    shared = bool(url)
    node_id = new_node_id()
    previous: list[str] = []
    notifier: Notifier = LocalHub()
    if shared:
        node_file = NodeFile(settings.db + ".node")
        previous = node_file.acquire(node_id)
        stack.callback(node_file.release)
        pg_notifier = PgNotifier(url)
        await pg_notifier.start()
        stack.push_async_callback(pg_notifier.close)
        notifier = pg_notifier
    engine = Engine(store, clock, settings, backends, metrics=Metrics(), node_id=node_id,
                    exclusive=not shared, previous_nodes=previous, notifier=notifier)
    interval = systemd.watchdog_interval()
    if interval is not None:
        engine.on_alive = _watchdog_pinger(clock, interval)
        engine.sleep_cap_s = min(engine.sleep_cap_s, interval)
    return engine


class GateCollector:
    """The read gate's counters, at scrape time."""

    def __init__(self, gate: ReadGate) -> None:
        self.gate = gate

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily

        g = self.gate
        yield CounterMetricFamily(
            "schedd_api_read_pauses", "Times the HTTP server stopped reading new requests "
            "while a burst of due runs fired", value=g.pauses)
        yield CounterMetricFamily(
            "schedd_api_read_pauses_bounded", "Of those, pauses ended by their bound (the "
            "burst went on)", value=g.bounded)
        yield CounterMetricFamily(
            "schedd_api_read_paused_seconds", "Time the HTTP server did not read new "
            "requests, in all", value=g.paused_s)


def syncs_metrics(syncs: SyncService, metrics: Metrics) -> Any:
    """The gauge of syncs past their freshness SLA, read at scrape time."""
    from prometheus_client import Gauge

    gauge = Gauge("schedd_sync_freshness_breached",
                  "Active syncs whose freshnessSlaSeconds passed without a successful run",
                  registry=metrics.registry)

    async def update() -> None:
        gauge.set(await syncs.freshness_breaches())

    return update


def _watchdog_pinger(clock: Clock, interval: float) -> Any:
    """WATCHDOG=1 from the loop itself, at most every interval/2: a loop that stops waking
    stops the pings and systemd restarts the service. (The loop's sleep is capped at the
    interval so that an idle loop still pings.)"""
    last = [float("-inf")]

    def ping() -> None:
        now = clock.monotonic()
        if now - last[0] >= interval / 2:
            last[0] = now
            systemd.notify("WATCHDOG=1")

    return ping


def build_app(settings: Settings, clock: Clock | None = None,
              gate: ReadGate | None = None) -> Litestar:
    """The Litestar app whose lifespan runs the whole daemon (used by serve and by tests)."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with running(settings, clock, gate) as services:
            app.state.services = services
            app.state.syncs = services.syncs
            app.state.readiness = services.engine_readiness
            yield

    if not settings.console_enabled:
        return create_app(None, lifespan=[lifespan], syncs=settings.syncs_enabled,
                          settings=settings)
    return create_app(None, lifespan=[lifespan], syncs=settings.syncs_enabled,
                      extra_routes=console.route_handlers(),
                      template_config=console.template_config(), settings=settings)


async def serve(settings: Settings) -> int:
    loop = asyncio.get_running_loop()
    gate = ReadGate(set(), monotonic=loop.time, call_later=loop.call_later,
                    enabled=settings.api_yields_to_fires)
    app = build_app(settings, gate=gate)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, http="httptools", loop="none",
        lifespan="on", log_config=None, access_log=False, server_header=False,
        # open connections (a worker's long poll holds one up to 30 s) get a short drain;
        # running actions get their own shutdown_grace_seconds afterwards, in the lifespan
        timeout_graceful_shutdown=HTTP_DRAIN_SECONDS,
    )
    server = _Server(config, app)
    gate.connections = server.server_state.connections  # uvicorn's live set of protocols
    freeze_startup_objects()  # before the engine starts: no run's objects get frozen
    ready = asyncio.create_task(_notify_ready(server, settings))
    try:
        await server.serve()
    finally:
        ready.cancel()
    if not server.started:
        return 1
    log.info("schedd stopped")
    return 0


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: Litestar) -> None:
        super().__init__(config)
        self.schedd_app = app

    def handle_exit(self, sig: int, frame: Any) -> None:
        systemd.notify("STOPPING=1")
        # stop claiming at once, before uvicorn drains open connections (a worker's long
        # poll would otherwise keep the loop firing during the drain)
        services = getattr(self.schedd_app.state, "services", None)
        engine = getattr(services, "engine", None)
        if engine is not None:
            # a signal handler runs between two bytecodes of whatever the loop was doing:
            # stop_claiming runs as the loop's next callback instead, never in the middle
            # of the engine's own code (it still comes before uvicorn's drain, which starts
            # at its next 0.1 s tick)
            try:
                asyncio.get_running_loop().call_soon_threadsafe(engine.stop_claiming)
            except RuntimeError:  # no loop running (not serving yet)
                engine.stop_claiming()
        super().handle_exit(sig, frame)


async def _notify_ready(server: uvicorn.Server, settings: Settings) -> None:
    """READY=1 once the socket is bound (the lifespan, which starts the loop, ran first)."""
    while not server.started:  # noqa: ASYNC110 (uvicorn exposes a flag, not an event)
        await asyncio.sleep(0.02)
    log.info("schedd %s listening on http://%s:%d (database %s)", __version__, settings.host,
             settings.port, config.database_label(settings))
    systemd.notify("READY=1", f"STATUS=listening on {settings.host}:{settings.port}")


# The cyclic garbage collector's first threshold: collect generation 0 after this many
# more container objects were made than freed (CPython's default is 700). Nearly all of a
# run's objects (its Run, dicts, task, future) are freed by reference counting as it ends,
# so at 700 a busy daemon ran a collection every few dozen runs for almost nothing to
# collect: ~5% of its CPU per fire (bench/burst.py), plus the full collections (10+ ms,
# a whole second's burst late) they escalate to.
GC_THRESHOLD0 = 10_000


def tune_gc() -> None:
    """Before start-up: collect less often (see GC_THRESHOLD0)."""
    _, g1, g2 = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD0, g1, g2)


def freeze_startup_objects() -> None:
    """Before serving: what start-up made (modules, the app, its routes and types) lives as
    long as the process, so move it out of the collector's sight: a full collection then
    walks only what the daemon made since, not everything it ever imported."""
    gc.collect()
    gc.freeze()


def run_serve(settings: Settings) -> int:
    import uvloop

    tune_gc()
    setup_logging(settings.log_level, settings.log_format)
    # uvicorn re-raises SIGTERM to the previous handler after a graceful stop; with the
    # default handler the process would die by the signal instead of exiting 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGINT, lambda *_: None)
    result: int = uvloop.run(serve(settings))
    return result


