"""Execution backends of the Syncs API (SPEC 7.3): who does a sync run's work.

Each backend is one module:
- `native`   — schedd runs a native action itself (webhook, command, noop): the sync's
  schedule carries that action and the engine runs it like any other;
- `external` — the run waits on a worker queue and goes through the worker protocol of
  SPEC 3.6 (claim, heartbeat, complete): the sync's schedule carries a `worker` action;
- `prefect`  — a Prefect 3 server runs it: schedd creates a flow run of a deployment,
  polls its state until it is final, and cancels it when the run is cancelled;
- `temporal` — refused (no Temporal support in this build).

Every module turns a sync's `executionConfig` into the action its schedule carries
(`plan`). Backends whose work runs elsewhere and is driven by schedd (`prefect`) also
implement `RemoteBackend` — start, poll, cancel — and are run by `BackendRunner` through
`drive()`: one asyncio task per running run, which only awaits HTTP calls and sleeps, so
a slow or dead server never blocks the scheduler loop. What the driver learns is saved
through a `RunPort` the composition root wires to the database.

A remote run survives a restart of schedd: `start` is idempotent per run id (the run id
is the remote idempotency key) and its reference is saved as soon as it is known, so the
engine resumes such a run after a restart (polls it again) instead of starting it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from schedd.actions import Outcome, Prepared, RunContext

log = logging.getLogger("schedd.backends")

BACKEND_ACTION = "backend"


class RemoteState(msgspec.Struct, kw_only=True):
    """What a remote backend said about its run."""

    ref: str                      # the remote run's id (backendRunRef)
    url: str | None = None        # where a person can look at it (backendRunUrl)
    final: bool = False
    ok: bool = False
    cancelled: bool = False
    error_code: str | None = None  # for a final state that is not ok
    message: str | None = None
    status: dict[str, Any] = msgspec.field(default_factory=dict)  # backendStatus


class BackendUnavailable(Exception):
    """The backend could not be reached or answered with a server error: transient."""


class BackendRefused(Exception):
    """The backend answered that it cannot do this (a missing deployment, bad input)."""


class Job(msgspec.Struct, kw_only=True):
    """One run, as a remote backend needs it."""

    run_id: str
    sync_id: str
    attempt: int
    run_mode: str
    config: dict[str, Any]   # the schedule's action_config (see prefect.plan)


class RemoteBackend(Protocol):
    name: str

    async def start(self, job: Job) -> RemoteState:
        """Create the remote run, or find the one already created for job.run_id."""
        ...

    async def poll(self, job: Job, ref: str) -> RemoteState:
        ...

    async def cancel(self, job: Job, ref: str) -> None:
        ...


class RunPort(Protocol):
    """What the driver reads and writes about a run (wired to the database by the daemon)."""

    async def run_mode(self, run_id: str) -> str:
        ...

    async def saved_ref(self, run_id: str) -> str | None:
        ...

    async def save(self, run_id: str, state: RemoteState, seen_ms: int) -> None:
        ...

    async def is_cancelled(self, run_id: str) -> bool:
        ...


def _fmt(seconds: float) -> str:
    return f"{seconds:g}"


async def drive(backend: RemoteBackend, port: RunPort, job: Job, *,
                now_ms: Callable[[], int],
                polling: Callable[[], None] | None = None) -> Outcome:
    """Run one attempt on a remote backend until its remote run is final.

    Unreachable or erroring servers are retried for `unavailable_tolerance_seconds`
    (from the first failure in a row), then the attempt fails with error_code
    `backend_unavailable` (and the schedule's retry policy decides what follows).
    Cancellation: when the run was cancelled (its row says so) the remote run is cancelled
    too; otherwise (schedd stopping) it is left alone, to be resumed at the next start.
    `polling()` is called once, when the remote run exists and is not final: from then on
    this task only polls it (its action slot may go to other work)."""
    cfg = job.config
    interval = float(cfg.get("poll_interval_seconds", 2.0))
    tolerance_ms = int(float(cfg.get("unavailable_tolerance_seconds", 60.0)) * 1000)
    where = f"{backend.name} at {cfg.get('api_url', '?')}"
    ref = await port.saved_ref(job.run_id)
    failing_since: int | None = None
    last_problem = ""
    try:
        while True:
            try:
                if ref is None:
                    state = await backend.start(job)
                    ref = state.ref
                else:
                    state = await backend.poll(job, ref)
            except BackendRefused as exc:
                return Outcome(ok=False, error_code="backend_refused",
                               error_message=f"{where} refused: {exc}"[:500],
                               result=None if ref is None else {"backendRunRef": ref})
            except BackendUnavailable as exc:
                now = now_ms()
                failing_since = now if failing_since is None else failing_since
                last_problem = str(exc)
                if now - failing_since >= tolerance_ms:
                    return Outcome(
                        ok=False, error_code="backend_unavailable",
                        error_message=(f"{where} unavailable for "
                                       f"{_fmt((now - failing_since) / 1000)} s: "
                                       f"{last_problem}")[:500],
                        result=None if ref is None else {"backendRunRef": ref})
                log.warning("run %s: %s unavailable (%s); trying again", job.run_id, where,
                            last_problem)
                await asyncio.sleep(interval)
                continue
            failing_since = None
            await port.save(job.run_id, state, now_ms())
            if polling is not None and not state.final:
                polling()
                polling = None
            if state.final:
                summary = {"backendRunRef": state.ref, **state.status}
                if state.ok:
                    return Outcome(ok=True, result=summary)
                if state.cancelled:
                    return Outcome(ok=False, error_code="cancelled",
                                   error_message=state.message or "cancelled in the backend",
                                   result=summary)
                return Outcome(ok=False, error_code=state.error_code or "backend_failed",
                               error_message=(state.message or "the backend run failed")[:500],
                               result=summary)
            await asyncio.sleep(interval)
    except asyncio.CancelledError:
        # the run was cancelled (its row says so), or schedd is stopping (then the remote
        # run goes on and the next start polls it again)
        with contextlib.suppress(Exception):
            if await asyncio.shield(port.is_cancelled(job.run_id)):
                await asyncio.shield(_cancel_remote(backend, job, ref))
        raise


async def _cancel_remote(backend: RemoteBackend, job: Job, ref: str | None) -> None:
    """Cancel the remote run of a cancelled run. When its create was still in flight (no
    reference yet), asking to start again finds it (the run id is its idempotency key)."""
    try:
        if ref is None:
            ref = (await backend.start(job)).ref
        await backend.cancel(job, ref)
    except Exception as exc:  # the run is cancelled here either way
        log.warning("run %s: could not cancel %s run %s: %s", job.run_id, backend.name, ref,
                    exc)


class Runner(Protocol):
    """What the engine needs of an action runner."""

    def prepare(self, action_type: str, config: dict[str, Any], ctx: RunContext) -> Prepared:
        ...

    async def run_prepared(self, p: Prepared) -> Outcome:
        ...


class BackendRunner:
    """The engine's action runner: `backend` actions are driven here, every other action
    goes to the wrapped runner (webhook, command, noop)."""

    def __init__(self, inner: Runner, backends: dict[str, RemoteBackend], port: RunPort, *,
                 now_ms: Callable[[], int]) -> None:
        self.inner = inner
        self.backends = backends
        self.port = port
        self.now_ms = now_ms
        self.wait_hook: Callable[[str], None] | None = None

    def set_wait_hook(self, hook: Callable[[str], None] | None) -> None:
        """The engine's hook for actions that only wait (their slot is given back): a
        remote run once schedd only polls it, and the wrapped runner's waiting webhooks."""
        self.wait_hook = hook
        inner_hook = getattr(self.inner, "set_wait_hook", None)
        if inner_hook is not None:
            inner_hook(hook)

    def prepare(self, action_type: str, config: dict[str, Any], ctx: RunContext) -> Prepared:
        if action_type != BACKEND_ACTION:
            return self.inner.prepare(action_type, config, ctx)
        resolved = {"backend": config.get("backend"), "syncId": config.get("sync_id"),
                    "runId": ctx.run_id}
        return Prepared(action_type, config, ctx, resolved)

    async def run_prepared(self, p: Prepared) -> Outcome:
        if p.action_type != BACKEND_ACTION:
            return await self.inner.run_prepared(p)
        name = str(p.config.get("backend"))
        backend = self.backends.get(name)
        if backend is None:
            return Outcome(ok=False, error_code="backend_refused",
                           error_message=f"no execution backend {name!r} in this daemon")
        job = Job(run_id=p.ctx.run_id, sync_id=str(p.config.get("sync_id")),
                  attempt=p.ctx.attempt, run_mode=await self.port.run_mode(p.ctx.run_id),
                  config=p.config)
        hook = self.wait_hook
        run_id = p.ctx.run_id
        return await drive(backend, self.port, job, now_ms=self.now_ms,
                           polling=None if hook is None else lambda: hook(run_id))
