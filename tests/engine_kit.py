"""A deterministic harness for the engine: real SQLite on tmp_path, a FakeClock, and a
fake action runner whose behaviour each schedule sets through webhook headers
(x-fail: fail the first N attempts, x-always-fail, x-hang: never finish)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import db_backend

from schedd.actions import Outcome, Prepared, RunContext
from schedd.clock import FakeClock
from schedd.config import Settings
from schedd.db import Database
from schedd.engine import Engine
from schedd.models import Run, Schedule
from schedd.services import Services
from schedd.store import open_database, store_for


class FakeRunner:
    def __init__(self) -> None:
        self.calls: list[RunContext] = []

    def resolve(self, action_type: str, config: dict[str, Any], ctx: RunContext) -> Any:
        return {"attempt": ctx.attempt}

    def prepare(self, action_type: str, config: dict[str, Any], ctx: RunContext) -> Prepared:
        return Prepared(action_type, config, ctx, self.resolve(action_type, config, ctx))

    async def run_prepared(self, p: Prepared) -> Outcome:
        return await self.run(p.action_type, p.config, p.ctx)

    async def run(self, action_type: str, config: dict[str, Any], ctx: RunContext) -> Outcome:
        self.calls.append(ctx)
        headers = config.get("headers") or {}
        if "x-hang" in headers:
            await asyncio.Event().wait()
        if "x-always-fail" in headers or ctx.attempt <= int(headers.get("x-fail", "0")):
            return Outcome(ok=False, error_code="http_status", error_message="HTTP 500",
                           result={"http_status": 500, "body_excerpt": ""})
        return Outcome(ok=True, result={"http_status": 200, "body_excerpt": "ok"})


class Kit:
    def __init__(self, db: Database, clock: FakeClock, settings: Settings) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.store = store_for(db)
        self.services = Services(self.store, clock, settings)
        self.runner = FakeRunner()
        self.engine = Engine(self.store, clock, settings, self.runner)  # type: ignore[arg-type]
        self.services.attach_engine(self.engine)
        self.tenant = ""

    async def setup(self) -> None:
        await self.engine.recover(self.clock.now_ms())
        await self.services.create_key("default")
        tid = await self.db.read(self.store.tenant_id_by_name, "default")
        assert tid is not None
        self.tenant = tid

    async def create(self, **fields: Any) -> Schedule:
        base: dict[str, Any] = {
            "name": "s", "schedule_type": "interval", "schedule_expression": "1m",
            "action_type": "webhook", "action_config": {"url": "http://127.0.0.1:9/hook"},
            "timezone": "UTC", "overlap_policy": "ALLOW", "catchup_window_minutes": 10,
            "catchup_policy": "ALL", "flexible_window_minutes": 0, "max_retries": 3,
            "retry_backoff_seconds": 60, "pause_on_failure_count": 5,
            "action_after_completion": "NONE",
        }
        headers = fields.pop("headers", None)
        base.update(fields)
        if headers:
            base["action_config"] = {**base["action_config"], "headers": headers}
        s, _ = await self.services.create_schedule(self.tenant, base)
        return s

    async def settle(self) -> None:
        """Let started actions finish (the fake ones finish at once) and record them."""
        for _ in range(3):
            await asyncio.sleep(0)
        pending = [t for t in self.engine.inflight.values()]
        done = [t for t in pending if t.done()]
        await asyncio.gather(*done, return_exceptions=True)
        await self.engine._flush()

    async def step(self) -> bool:
        """Jump the clock to the next instant the engine has work and run one tick there."""
        nxt = await self.db.read(self.store.next_wake_ms, include_due_work=True)
        if nxt is None:
            return False
        self.clock.set(max(nxt, self.clock.now_ms()))
        while await self.engine.tick(self.clock.now_ms()):
            await self.settle()
        await self.settle()
        return True

    async def run_until(self, end_ms: int, max_steps: int = 200_000) -> None:
        for _ in range(max_steps):
            nxt = await self.db.read(self.store.next_wake_ms, include_due_work=True)
            if nxt is None or nxt > end_ms:
                self.clock.set(max(self.clock.now_ms(), end_ms))
                return
            await self.step()
        raise AssertionError("run_until did not reach its end")

    async def runs(self, schedule_id: str | None = None, **cond: Any) -> list[Run]:
        where, params = ["1 = 1"], []
        if schedule_id:
            where.append("schedule_id = ?")
            params.append(schedule_id)
        for k, v in cond.items():
            where.append(f"{k} = ?")
            params.append(v)
        return await self.db.read(self.store._runs_where, " AND ".join(where), params,
                                  limit=10**7)

    async def schedule(self, schedule_id: str) -> Schedule:
        s = await self.db.read(self.store.get_schedule, None, schedule_id)
        assert s is not None
        return s


@asynccontextmanager
async def kit(tmp_path: Path, start_ms: int, **settings: Any) -> AsyncIterator[Kit]:
    cfg = Settings(db=str(tmp_path / "engine.db"), database_url=db_backend.current_url,
                   **settings)
    async with open_database(cfg) as db:
        k = Kit(db, FakeClock(start_ms), cfg)
        await k.setup()
        try:
            yield k
        finally:
            for t in list(k.engine.inflight.values()):
                t.cancel()
            await asyncio.gather(*k.engine.inflight.values(), return_exceptions=True)


async def until(cond: Any, timeout: float = 5.0) -> None:
    """Wait (bounded) for a condition that depends on the database thread's hops; the fake
    clock still decides every due time."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.001)
