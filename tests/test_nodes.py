"""Several engines (nodes) over one database: run leases, recovery by expired lease, a node's
earlier lives, cancels that cross nodes, exclusive claims. SQLite hosts two engines in one
process here (the lease logic does not depend on the backend); the fake clock decides every
instant."""

from __future__ import annotations

import asyncio
import importlib
import signal
import subprocess
import sys
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from engine_kit import FakeRunner, Kit, kit

from schedd.db import Database
from schedd.engine import Engine
from schedd.models import Run, RunStatus
from schedd.node_file import NodeFile
from schedd.notify import LOST, LocalHub
from schedd.timing import UTC, parse_instant_ms

# the engine tests run on SQLite and on PostgreSQL (tests/db_backend.py)
pytestmark = pytest.mark.usefixtures("database_url")

T = parse_instant_ms("2026-11-22T09:00:00Z", UTC)
HOUR = 3_600_000
LEASE = 15_000  # the default node_lease_seconds


def node(k: Kit, **kw: object) -> Engine:
    """Another node over the kit's database: a shared one, as on PostgreSQL."""
    return Engine(k.store, k.clock, k.settings, FakeRunner(),  # type: ignore[arg-type]
                  exclusive=False, **kw)  # type: ignore[arg-type]


async def separate_node(k: Kit, stack: AsyncExitStack) -> Engine:
    """Another node with a connection of its own to the kit's database, as another process
    has: on PostgreSQL its transactions really run beside the kit engine's."""
    url = getattr(k.settings, "database_url", "")
    db = (importlib.import_module("schedd.pgdb").PgDatabase(url) if url
          else Database(k.settings.db))
    await stack.enter_async_context(db)
    return Engine(type(k.store)(db), k.clock, k.settings, FakeRunner(),  # type: ignore[arg-type]
                  exclusive=False)


async def hung_run(k: Kit) -> Run:
    """A run that node A (the kit's engine) starts and never finishes."""
    s = await k.create(schedule_expression="1h", headers={"x-hang": "1"},
                       retry_backoff_seconds=5)
    k.clock.set(T + HOUR)
    await k.engine.tick(T + HOUR)
    await asyncio.sleep(0)
    (run,) = await k.runs(s.id)
    assert run.status is RunStatus.running and run.id in k.engine.inflight
    return run


async def chain(k: Kit, run: Run) -> list[Run]:
    return sorted(await k.runs(run.schedule_id), key=lambda r: r.attempt)


async def stop_tasks(*engines: Engine) -> None:
    for e in engines:
        for t in list(e.inflight.values()):
            t.cancel()
        await asyncio.gather(*e.inflight.values(), return_exceptions=True)


async def test_a_run_carries_its_node_and_a_lease(tmp_path: Path) -> None:
    async with kit(tmp_path, T) as k:
        run = await hung_run(k)
        assert run.node_id == k.engine.node_id and run.node_id.startswith("node-")
        assert run.node_lease_until_ms == T + HOUR + LEASE
        assert run.worker_id is None and run.lease_until_ms is None  # not a worker's lease
        _, info = k.engine.readiness()
        assert info["node_id"] == k.engine.node_id


async def test_the_lease_is_renewed_while_the_action_runs(tmp_path: Path) -> None:
    async with kit(tmp_path, T) as k:
        run = await hung_run(k)
        b = node(k)
        await b.recover(k.clock.now_ms())
        for step in range(1, 13):  # two minutes: a renewal every 5 s keeps it alive
            now = T + HOUR + step * 10_000
            k.clock.set(now)
            await k.engine.tick(now)
            await b.tick(now)
            [r] = await chain(k, run)
            assert r.status is RunStatus.running, step
            assert r.node_lease_until_ms == now + LEASE
        assert run.id in k.engine.inflight and not b.inflight
        await stop_tasks(b)


async def test_a_starting_node_leaves_a_live_nodes_runs_alone(tmp_path: Path) -> None:
    async with kit(tmp_path, T) as k:
        run = await hung_run(k)
        b = node(k)
        k.clock.set(T + HOUR + LEASE - 1)
        assert await b.recover(k.clock.now_ms()) == 0
        [r] = await chain(k, run)
        assert r.status is RunStatus.running and r.node_id == k.engine.node_id


async def test_a_dead_nodes_runs_fail_interrupted_after_their_lease_and_are_retried_elsewhere(
        tmp_path: Path) -> None:
    async with kit(tmp_path, T) as k:
        run = await hung_run(k)
        b = node(k)
        await b.recover(k.clock.now_ms())
        # node A dies: it ticks no more. B checks every third of the lease.
        k.clock.set(T + HOUR + LEASE - 1)
        await b.tick(k.clock.now_ms())
        assert [r.status for r in await chain(k, run)] == [RunStatus.running]
        k.clock.set(T + HOUR + LEASE + 5_000)
        await b.tick(k.clock.now_ms())
        first, retry = await chain(k, run)
        assert (first.status, first.error_code) == (RunStatus.failed, "interrupted")
        assert first.error_message is not None and k.engine.node_id in first.error_message
        assert (retry.status, retry.attempt, retry.trigger_type.value) == (
            RunStatus.pending, 2, "retry")
        # the retry is due 5 s later (retry_backoff_seconds, ±10 %); B starts it
        k.clock.set(retry.due_ms)
        await b.tick(retry.due_ms)
        await asyncio.sleep(0)
        _, retry = await chain(k, run)
        assert retry.node_id == b.node_id and retry.status is RunStatus.running
        await stop_tasks(b)


async def test_a_dead_nodes_runs_fail_within_a_second_of_their_lease_not_a_third_later(
        tmp_path: Path) -> None:
    """Issue 16: a dead node's runs are retried within lease + 2 s of the kill. Renewals
    come every third of the lease, but a node on a shared database looks for expired
    leases every second: a look just before the lease ran out does not postpone the next
    one by a third of the lease."""
    async with kit(tmp_path, T) as k:
        run = await hung_run(k)
        b = node(k)
        await b.recover(k.clock.now_ms())
        k.clock.set(T + HOUR + LEASE - 1)  # B looks: still alive
        await b.tick(k.clock.now_ms())
        assert [r.status for r in await chain(k, run)] == [RunStatus.running]
        k.clock.set(T + HOUR + LEASE + 999)  # B's next look, a second later
        await b.tick(k.clock.now_ms())
        first, retry = await chain(k, run)
        assert (first.status, first.error_code) == (RunStatus.failed, "interrupted")
        assert retry.status is RunStatus.pending and retry.attempt == 2
        await stop_tasks(b)


async def test_a_nodes_earlier_life_is_recovered_at_once(tmp_path: Path) -> None:
    async with kit(tmp_path, T) as k:
        run = await hung_run(k)
        # the same node restarted: a new id, told which ids were its own earlier lives
        again = node(k, previous_nodes=[k.engine.node_id])
        k.clock.set(T + HOUR + 1_000)  # well within the lease
        assert await again.recover(k.clock.now_ms()) == 1
        first, retry = await chain(k, run)
        assert (first.status, first.error_code) == (RunStatus.failed, "interrupted")
        assert retry.status is RunStatus.pending
        # an unrelated starting node would not have touched it
        other = node(k)
        assert await other.recover(k.clock.now_ms()) == 0


async def test_an_exclusive_node_recovers_every_running_run_at_start(tmp_path: Path) -> None:
    """SQLite, one node (today's rule): whatever is running at start is a dead process's,
    lease or not."""
    async with kit(tmp_path, T) as k:
        run = await hung_run(k)
        again = Engine(k.store, k.clock, k.settings, FakeRunner())  # type: ignore[arg-type]
        assert await again.recover(k.clock.now_ms()) == 1
        assert [r.error_code for r in await chain(k, run)] == ["interrupted", None]


async def test_a_cancel_through_another_node_stops_the_action_where_it_runs(
        tmp_path: Path) -> None:
    async with kit(tmp_path, T) as k:
        run = await hung_run(k)
        b = node(k)
        cancelled = await b.cancel(k.tenant, run.id, "from node B")
        assert cancelled.status is RunStatus.cancelled
        task = k.engine.inflight[run.id]
        # A learns at its next lease renewal (no notifier here): the action is stopped
        k.clock.set(T + HOUR + LEASE // 3)
        await k.engine.tick(k.clock.now_ms())
        await asyncio.sleep(0)
        assert task.cancelled() or task.done()
        assert run.id not in k.engine.inflight
        await k.engine._flush()
        [r] = await chain(k, run)
        assert (r.status, r.error_code, r.error_message) == (
            RunStatus.cancelled, "cancelled", "from node B")  # not overwritten by A


async def test_a_stalled_node_whose_run_was_failed_elsewhere_stops_its_action(
        tmp_path: Path) -> None:
    async with kit(tmp_path, T) as k:
        run = await hung_run(k)
        b = node(k)
        k.clock.set(T + HOUR + LEASE + 1)
        await b.tick(k.clock.now_ms())  # A stalled past the lease: B fails the run
        first, retry = await chain(k, run)
        assert first.error_code == "interrupted"
        await k.engine.tick(k.clock.now_ms())  # A wakes: its renewal finds the run ended
        await asyncio.sleep(0)
        assert run.id not in k.engine.inflight
        await k.engine._flush()
        first, retry = await chain(k, run)
        assert first.error_code == "interrupted" and retry.status is RunStatus.pending
        await stop_tasks(b)


async def test_two_nodes_claim_each_occurrence_once(tmp_path: Path) -> None:
    async with kit(tmp_path, T, claim_batch_size=7) as k, AsyncExitStack() as stack:
        schedules = [await k.create(name=f"s{i}", schedule_expression="10s")
                     for i in range(30)]
        b = await separate_node(k, stack)
        for step in range(1, 31):  # five minutes, both nodes ticking at every instant
            now = T + step * 10_000
            k.clock.set(now)
            while True:
                more_a, more_b = await asyncio.gather(k.engine.tick(now), b.tick(now))
                if not (more_a or more_b):
                    break
            await asyncio.sleep(0)
            await k.engine._flush()
            await b._flush()
        runs = await k.runs()
        per = Counter((r.schedule_id, r.scheduled_for_ms, r.attempt) for r in runs)
        assert max(per.values()) == 1
        assert len(per) == 30 * 30
        assert {r.status for r in runs} == {RunStatus.succeeded}
        by_node = Counter(r.node_id for r in runs)
        assert set(by_node) == {k.engine.node_id, b.node_id}  # both did a share
        assert {r.schedule_id for r in runs} == {s.id for s in schedules}


# ---------------------------------------------------------------------- the node file
def test_the_node_file_names_a_dead_predecessor_and_nothing_while_it_lives(
        tmp_path: Path) -> None:
    path = tmp_path / "schedd.db.node"
    first = NodeFile(path)
    assert first.acquire("node-1") == []  # nobody before
    second = NodeFile(path)
    assert second.acquire("node-2") == []  # node-1 is alive: nothing is known dead
    assert path.read_text() == "node-1\n"
    first.release()
    third = NodeFile(path)
    assert third.acquire("node-3") == ["node-1"]
    third.release()


def test_a_sigkilled_holder_releases_the_node_file(tmp_path: Path) -> None:
    path = tmp_path / "schedd.db.node"
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from schedd.node_file import NodeFile\n"
         f"assert NodeFile({str(path)!r}).acquire('node-dead') == []\n"
         "print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        assert NodeFile(path).acquire("node-x") == []  # held by a live process
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        again = NodeFile(path)
        assert again.acquire("node-new") == ["node-dead"]
        again.release()
    finally:
        child.kill()
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()


# ---------------------------------------------------------------------- signals between nodes
async def test_a_cancel_through_another_node_stops_the_action_at_once_with_a_signal(
        tmp_path: Path) -> None:
    async with kit(tmp_path, T) as k:
        run = await hung_run(k)
        b = node(k, notifier=k.engine.notifier)  # the same hub: A hears B's signals
        task = k.engine.inflight[run.id]
        await b.cancel(k.tenant, run.id, "from node B")
        for _ in range(3):
            await asyncio.sleep(0)
        assert task.done() and run.id not in k.engine.inflight  # no renewal needed
        await k.engine._flush()
        [r] = await chain(k, run)
        assert (r.status, r.error_message) == (RunStatus.cancelled, "from node B")


async def test_a_run_queued_through_one_node_wakes_a_long_poll_on_another(
        tmp_path: Path) -> None:
    async with kit(tmp_path, T) as k:
        s = await k.create(schedule_expression="1h", action_type="worker",
                           action_config={"queue": "q"})
        b = node(k, notifier=k.engine.notifier)
        poll = asyncio.create_task(b.claim_for_worker(k.tenant, ["q"], "w1", 30, 30))
        for _ in range(20):  # let the poll find nothing and wait
            await asyncio.sleep(0)
        assert not poll.done()
        waiting = b.leases._queue_event
        await k.engine.trigger(s)  # queued through node A
        for _ in range(3):
            await asyncio.sleep(0)
        assert waiting.is_set()  # B's long poll was woken, not left to its 1 s look
        run = await asyncio.wait_for(poll, 10)
        assert run is not None and run.schedule_id == s.id and run.worker_id == "w1"


async def test_a_schedule_changed_through_one_node_wakes_the_others(tmp_path: Path) -> None:
    async with kit(tmp_path, T) as k:
        b = node(k, notifier=k.engine.notifier)
        b._wake.clear()
        s = await k.create(schedule_expression="10s")
        for _ in range(3):
            await asyncio.sleep(0)
        assert b._wake.is_set()
        assert s.next_run_ms == T + 10_000


async def test_a_node_told_that_signals_were_lost_acts_as_on_every_signal(
        tmp_path: Path) -> None:
    """LOST (a notifier reconnected: schedd/notify.py) wakes the loop and the long polls
    and makes the next cycle renew the leases, which finds a run cancelled elsewhere
    whose signal was lost, without waiting for the renewal's turn."""
    async with kit(tmp_path, T) as k:
        run = await hung_run(k)
        b = node(k)  # no notifier shared with A: B's cancel signal never reaches A
        task = k.engine.inflight[run.id]
        await b.cancel(k.tenant, run.id, "from node B")
        await k.engine.tick(k.clock.now_ms())  # the renewal is not due: A does not know
        await asyncio.sleep(0)
        assert not task.done() and run.id in k.engine.inflight
        k.engine._wake.clear()
        waiting = k.engine.leases._queue_event
        k.engine._on_signal(LOST, "")
        assert k.engine._wake.is_set() and waiting.is_set()
        await k.engine.tick(k.clock.now_ms())  # the same instant: the renewal finds the cancel
        await asyncio.sleep(0)
        assert task.done() and run.id not in k.engine.inflight
        await k.engine._flush()
        [r] = await chain(k, run)
        assert (r.status, r.error_message) == (RunStatus.cancelled, "from node B")


async def test_the_hub_tells_every_other_subscriber_and_not_the_sender(
        tmp_path: Path) -> None:
    async with kit(tmp_path, T) as k:
        sent: list[tuple[str, str]] = []
        hub = k.engine.notifier
        assert isinstance(hub, LocalHub)
        hub.subscribe("listener", lambda kind, arg: sent.append((kind, arg)))
        s = await k.create(schedule_expression="10s")
        for _ in range(3):
            await asyncio.sleep(0)
        assert sent == [("wake", str(s.next_run_ms))]
        hub.publish("listener", "wake", "1")  # its own signal does not come back to it
        for _ in range(3):
            await asyncio.sleep(0)
        assert sent == [("wake", str(s.next_run_ms))]


async def test_two_nodes_start_each_due_retry_once(tmp_path: Path) -> None:
    """Pending runs (here retries) due at once are started by one node each, never both:
    the rows a cycle starts are claimed (ROW_CLAIM on a shared database)."""
    async with kit(tmp_path, T) as k, AsyncExitStack() as stack:
        for i in range(40):
            await k.create(name=f"f{i}", schedule_expression="1h", headers={"x-fail": "1"},
                           retry_backoff_seconds=5)
        b = await separate_node(k, stack)
        k.clock.set(T + HOUR)
        while True:
            more = await asyncio.gather(k.engine.tick(T + HOUR), b.tick(T + HOUR))
            await asyncio.sleep(0)
            await k.engine._flush()
            await b._flush()
            if not any(more):
                break
        retries = await k.runs(status="pending")
        assert len(retries) == 40
        now = T + HOUR + 10_000  # every retry due (5 s ± 10 %)
        k.clock.set(now)
        for _ in range(5):
            await asyncio.gather(k.engine.tick(now), b.tick(now))
            await asyncio.sleep(0)
            await k.engine._flush()
            await b._flush()
        second = [c for c in k.runner.calls + b.runner.calls  # type: ignore[attr-defined]
                  if c.attempt == 2]
        assert len(second) == 40
        assert len({c.run_id for c in second}) == 40  # no retry started twice
        assert {r.status for r in await k.runs()} == {RunStatus.failed, RunStatus.succeeded}
