"""Execution backends without a network: drive() against a scripted remote backend, and the
engine's handling of `backend` runs across a stop and a start (fake clock, real SQLite)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from conftest import T0
from engine_kit import kit

from schedd.backends import (
    BackendRefused,
    BackendRunner,
    BackendUnavailable,
    Job,
    RemoteState,
    drive,
)
from schedd.engine import Engine
from schedd.models import ActionType, RunStatus


class Scripted:
    """A remote backend whose answers are a script: each item a RemoteState to return or
    an exception to raise; `hang` makes a call wait forever."""

    name = "scripted"

    def __init__(self, script: list[Any]) -> None:
        self.script = list(script)
        self.calls: list[tuple[str, str | None]] = []
        self.cancelled: list[str] = []

    async def _next(self, what: str, ref: str | None) -> RemoteState:
        self.calls.append((what, ref))
        item = self.script.pop(0)
        if item == "hang":
            await asyncio.Event().wait()
        if isinstance(item, Exception):
            raise item
        assert isinstance(item, RemoteState)
        return item

    async def start(self, job: Job) -> RemoteState:
        return await self._next("start", None)

    async def poll(self, job: Job, ref: str) -> RemoteState:
        return await self._next("poll", ref)

    async def cancel(self, job: Job, ref: str) -> None:
        self.cancelled.append(ref)


class Port:
    def __init__(self, saved: str | None = None, cancelled: bool = False) -> None:
        self.saved_refs = {"r1": saved} if saved else {}
        self.saves: list[tuple[str, dict[str, Any], int]] = []
        self.cancelled = cancelled

    async def run_mode(self, run_id: str) -> str:
        return "incremental"

    async def saved_ref(self, run_id: str) -> str | None:
        return self.saved_refs.get(run_id)

    async def save(self, run_id: str, state: RemoteState, seen_ms: int) -> None:
        self.saved_refs[run_id] = state.ref
        self.saves.append((state.ref, state.status, seen_ms))

    async def is_cancelled(self, run_id: str) -> bool:
        return self.cancelled


def job(**cfg: Any) -> Job:
    return Job(run_id="r1", sync_id="s1", attempt=1, run_mode="incremental",
               config={"api_url": "http://p/api", "poll_interval_seconds": 0, **cfg})


def state(stype: str, **kw: Any) -> RemoteState:
    final = stype in ("COMPLETED", "FAILED", "CANCELLED")
    return RemoteState(ref="fr-1", final=final, ok=stype == "COMPLETED",
                       cancelled=stype == "CANCELLED",
                       error_code="backend_failed" if stype == "FAILED" else None,
                       message=kw.get("message"), status={"stateType": stype})


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        self.now += 400  # each reading is 0.4 s later
        return self.now


async def test_drive_starts_once_saves_each_state_and_ends_with_the_final_one() -> None:
    b = Scripted([state("SCHEDULED"), state("RUNNING"), state("COMPLETED")])
    port = Port()
    out = await drive(b, port, job(), now_ms=Clock())
    assert out.ok and out.result == {"backendRunRef": "fr-1", "stateType": "COMPLETED"}
    assert b.calls == [("start", None), ("poll", "fr-1"), ("poll", "fr-1")]
    assert [s[1]["stateType"] for s in port.saves] == ["SCHEDULED", "RUNNING", "COMPLETED"]


async def test_drive_with_a_saved_reference_polls_and_never_starts() -> None:
    b = Scripted([state("FAILED", message="Prefect flow run Failed: boom")])
    out = await drive(b, Port(saved="fr-1"), job(), now_ms=Clock())
    assert b.calls == [("poll", "fr-1")]
    assert not out.ok and out.error_code == "backend_failed" and "boom" in (out.error_message or "")


async def test_drive_tolerates_an_unavailable_server_for_a_while_then_fails_clearly() -> None:
    down = BackendUnavailable("ClientConnectorError: connection refused")
    # 0.4 s per clock reading: a tolerance of 1 s survives two failures in a row
    b = Scripted([state("SCHEDULED"), down, down, state("RUNNING"), down, down, down, down])
    out = await drive(b, Port(), job(unavailable_tolerance_seconds=1.0), now_ms=Clock())
    assert not out.ok and out.error_code == "backend_unavailable"
    assert out.error_message is not None
    assert out.error_message.startswith("scripted at http://p/api unavailable for 1.2 s")
    assert "connection refused" in out.error_message
    assert out.result == {"backendRunRef": "fr-1"}
    assert len(b.calls) == 8


async def test_drive_fails_at_once_when_the_backend_refuses() -> None:
    b = Scripted([BackendRefused("HTTP 404 from POST /deployments/x/create_flow_run")])
    out = await drive(b, Port(), job(), now_ms=Clock())
    assert out.error_code == "backend_refused" and "HTTP 404" in (out.error_message or "")


async def test_drive_maps_a_cancelled_remote_run_to_a_cancelled_outcome() -> None:
    b = Scripted([state("CANCELLED")])
    out = await drive(b, Port(), job(), now_ms=Clock())
    assert not out.ok and out.error_code == "cancelled"


@pytest.mark.parametrize("cancelled", [True, False])
async def test_cancelling_the_task_cancels_the_remote_run_only_when_the_run_was_cancelled(
    cancelled: bool
) -> None:
    b = Scripted([state("RUNNING"), "hang"])
    task = asyncio.ensure_future(drive(b, Port(cancelled=cancelled), job(), now_ms=Clock()))
    while len(b.calls) < 2:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # cancelled: the run was cancelled; not: schedd is stopping and will poll it again
    assert b.cancelled == (["fr-1"] if cancelled else [])


async def test_a_cancel_during_the_create_finds_the_remote_run_and_cancels_it() -> None:
    b = Scripted(["hang", state("SCHEDULED")])
    task = asyncio.ensure_future(drive(b, Port(cancelled=True), job(), now_ms=Clock()))
    while not b.calls:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert b.calls == [("start", None), ("start", None)]  # the idempotent create again
    assert b.cancelled == ["fr-1"]


@pytest.mark.usefixtures("database_url")  # on SQLite and on PostgreSQL
async def test_backend_runs_survive_a_stop_and_are_resumed_not_interrupted(
    tmp_path: Path
) -> None:
    async with kit(tmp_path, T0) as k:
        s = await k.create(schedule_expression="1m", max_retries=3)
        s.action_type = ActionType.backend
        s.action_config = {"backend": "x", "headers": {"x-hang": "1"}}  # FakeRunner hangs
        await k.db.write(k.store.update_schedule, s)
        k.clock.set(s.next_run_ms or 0)
        await k.engine.tick(k.clock.now_ms())
        await asyncio.sleep(0)
        [run] = await k.runs(s.id)
        assert run.status is RunStatus.running and run.id in k.engine.inflight
        await asyncio.wait_for(k.engine.stop(grace_s=3600), 5)  # no wait for the grace
        [run] = await k.runs(s.id)
        assert run.status is RunStatus.running and run.error_code is None  # not interrupted
        calls = len(k.runner.calls)
        again = Engine(k.store, k.clock, k.settings, k.runner)  # type: ignore[arg-type]
        assert await again.recover(k.clock.now_ms()) == 0  # nothing failed as interrupted
        await asyncio.sleep(0)
        assert run.id in again.inflight and len(k.runner.calls) == calls + 1
        assert len(await k.runs(s.id)) == 1  # no retry, no second attempt
        cancelled = await again.cancel(k.tenant, run.id, "enough")
        await asyncio.sleep(0)
        assert cancelled.status is RunStatus.cancelled and run.id not in again.inflight
        await again.stop(grace_s=1)


class LongFlows:
    """A remote backend whose runs are created at once and then never end (long flow
    runs): every poll waits."""

    name = "long"

    def __init__(self) -> None:
        self.started: list[str] = []

    async def start(self, job: Job) -> RemoteState:
        self.started.append(job.run_id)
        return RemoteState(ref=f"fr-{job.run_id}", status={"stateType": "RUNNING"})

    async def poll(self, job: Job, ref: str) -> RemoteState:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def cancel(self, job: Job, ref: str) -> None:
        pass


async def test_remote_runs_being_polled_give_their_action_slot_back(tmp_path: Path) -> None:
    """max_concurrent_actions 2, three long Prefect-like runs: once their remote runs
    exist schedd only polls them, so they hold no slot, and a webhook due later fires."""
    async with kit(tmp_path, T0, max_concurrent_actions=2) as k:
        remote = LongFlows()
        runner = BackendRunner(k.runner, {"long": remote}, Port(), now_ms=k.clock.now_ms)
        engine = Engine(k.store, k.clock, k.settings, runner)
        flows = []
        for i in range(3):
            s = await k.create(name=f"flow-{i}", schedule_expression="1h")
            s.action_type = ActionType.backend
            s.action_config = {"backend": "long", "sync_id": s.id, "api_url": "http://p/api",
                               "poll_interval_seconds": 0}
            await k.db.write(k.store.update_schedule, s)
            flows.append(s)
        hook = await k.create(name="hook", schedule_expression="90m")
        try:
            k.clock.set(T0 + 3_600_000)
            for _ in range(50):
                await engine.tick(k.clock.now_ms())
                await asyncio.sleep(0.01)
                if len(remote.started) == 3:
                    break
            assert len(remote.started) == 3  # the third was claimed once two were polling
            assert engine.counted() == 0 and len(engine.inflight) == 3
            k.clock.set(T0 + 5_400_000)
            for _ in range(50):
                await engine.tick(k.clock.now_ms())
                await asyncio.sleep(0.01)
                runs = await k.runs(hook.id)
                if runs and runs[0].status is RunStatus.succeeded:
                    break
            [run] = await k.runs(hook.id)
            assert run.status is RunStatus.succeeded and run.started_ms == T0 + 5_400_000
            for s in flows:
                [r] = await k.runs(s.id)
                assert r.status is RunStatus.running
        finally:
            await asyncio.wait_for(engine.stop(grace_s=0), 10)
        assert not engine.inflight
