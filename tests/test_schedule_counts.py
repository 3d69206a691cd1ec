"""The per-tenant, per-status schedule counts (migration 0006's triggers) stay exact
through every kind of change, and the list's `total` reads them."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Api, schedule_body

from schedd import db as dbmod
from schedd.clock import FakeClock
from schedd.config import Settings
from schedd.db import Conn, Database
from schedd.models import ActionType, Schedule, ScheduleStatus, ScheduleType
from schedd.store import Store, open_database, store_for

MIN = 60_000


Counts = dict[tuple[str, str], int]


def _read_truth_and_counts(con: Conn) -> tuple[Counts, Counts]:
    truth = {(t, s): n for t, s, n in con.execute(
        "SELECT tenant_id, status, count(*) FROM schedules GROUP BY tenant_id, status")}
    counts = {(t, s): n for t, s, n in con.execute(
        "SELECT tenant_id, status, n FROM schedule_counts WHERE n != 0")}
    return truth, counts


def _truth_and_counts(path: str) -> tuple[Counts, Counts]:
    con = sqlite3.connect(path)
    try:
        return _read_truth_and_counts(con)
    finally:
        con.close()


async def _check(api: Api, *tenants: Api) -> dict[tuple[str, str], int]:
    # through the app's own database (SQLite or PostgreSQL)
    truth, counts = api.call(api.services.store.db.read, _read_truth_and_counts)
    assert counts == truth
    for t in (api, *tenants):
        body = (await t.get("/v1/schedules?limit=1")).json()
        tid = body["schedules"][0]["tenant_id"] if body["schedules"] else None
        want = sum(n for (tt, _), n in truth.items() if tt == tid)
        assert body["total"] == want
        for status in ScheduleStatus:
            got = (await t.get(f"/v1/schedules?status={status.value}")).json()
            assert got["total"] == truth.get((tid, status.value), 0) if tid else 0
            assert got["total"] == len(got["schedules"])  # all on one page here
    return truth


async def _create(api: Api, **kw: Any) -> dict[str, Any]:
    r = await api.post("/v1/schedules", schedule_body(**kw))
    assert r.status_code in (200, 201), r.text
    body: dict[str, Any] = r.json()
    return body


async def test_counts_stay_exact_through_creates_deletes_and_status_changes(
        api: Api, clock: FakeClock) -> None:
    other = await api.other_tenant()
    soon = "2026-11-22T09:01:00Z"
    ids = [(await _create(api, name=f"i{i}"))["id"] for i in range(6)]
    once = [(await _create(api, name=f"o{i}", schedule_type="once", schedule_expression=soon))
            ["id"] for i in range(3)]
    gone = (await _create(api, name="bye", schedule_type="once", schedule_expression=soon,
                          action_after_completion="DELETE"))["id"]
    await _create(other, name="x")
    await _create(other, name="y", deduplication_key="k")
    await _create(other, name="y again", deduplication_key="k")  # 200, nothing new
    truth = await _check(api, other)
    assert sum(truth.values()) == 12

    assert (await api.post(f"/v1/schedules/{ids[0]}/pause")).status_code == 200
    assert (await api.post(f"/v1/schedules/{ids[0]}/pause")).status_code == 200  # no change
    assert (await api.put(f"/v1/schedules/{ids[1]}", {"status": "paused"})).status_code == 200
    assert (await api.post(f"/v1/schedules/{ids[1]}/resume")).status_code == 200
    assert (await api.put(f"/v1/schedules/{ids[2]}", {"name": "renamed"})).status_code == 200
    assert (await api.delete(f"/v1/schedules/{ids[3]}")).status_code == 204
    assert (await api.delete(f"/v1/schedules/{ids[0]}")).status_code == 204  # a paused one
    assert (await api.delete(f"/v1/schedules/{ids[0]}")).status_code == 404
    assert (await api.put(f"/v1/schedules/{ids[4]}", {"status": "completed"})).status_code == 422
    await _check(api, other)

    # the engine completes the one-shots (and deletes the DELETE one after its run)
    engine = api.services.engine
    assert engine is not None
    api.call(clock.advance, 2 * MIN)
    for _ in range(200):  # bounded
        api.call(engine.tick, clock.now_ms())
        got = [(await api.get(f"/v1/schedules/{s}")).json().get("status") for s in once]
        if got == ["completed"] * 3 and (await api.get(f"/v1/schedules/{gone}")).status_code \
                == 404:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the one-shots did not complete")
    assert (await api.post(f"/v1/schedules/{once[0]}/pause")).status_code == 409
    truth = await _check(api, other)
    tid = (await api.get(f"/v1/schedules/{ids[1]}")).json()["tenant_id"]
    assert truth[(tid, "completed")] == 3
    assert truth[(tid, "active")] == 4  # i1 (resumed), i2, i4, i5


async def test_a_rolled_back_change_leaves_the_counts_alone(
        make_settings: Callable[..., Settings]) -> None:
    async with open_database(make_settings()) as db:
        store = store_for(db)
        await db.write(lambda c: c.execute(
            "INSERT INTO tenants (id, name, created_ms) VALUES ('t1', 'a', 1)"))

        def add_then_fail(c: Conn) -> None:
            store.insert_schedule(c, _schedule("s1"))
            raise LookupError("no")

        with pytest.raises(LookupError):
            await db.write(add_then_fail)
        assert await db.read(store.count_schedules_by_status) == {}
        await db.write(store.insert_schedule, _schedule("s2"))
        assert await db.read(store.count_schedules_by_status) == {"active": 1}


def _schedule(sid: str, tenant: str = "t1",
              status: ScheduleStatus = ScheduleStatus.active) -> Schedule:
    return Schedule(id=sid, tenant_id=tenant, name=sid, description=None,
                    schedule_type=ScheduleType.interval, schedule_expression="1h",
                    timezone="UTC", start_ms=None, end_ms=None, action_type=ActionType.noop,
                    action_config={}, status=status, created_ms=1, updated_ms=1)


@pytest.mark.sqlite_only("builds a SQLite file from before migration 0006")
def test_the_migration_counts_the_schedules_already_there(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    con = sqlite3.connect(path, isolation_level=None)
    try:
        for version, sql in dbmod.migrations()[:5]:  # a database from before 0006
            con.executescript(f"BEGIN;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;")
        con.execute("INSERT INTO tenants (id, name, created_ms) VALUES ('t1', 'a', 1), "
                    "('t2', 'b', 1)")
        con.execute("BEGIN")
        store = Store(None)  # type: ignore[arg-type]  # only its sync, connection-first methods
        for i, (tenant, status) in enumerate([("t1", ScheduleStatus.active)] * 3 + [
                ("t1", ScheduleStatus.paused), ("t2", ScheduleStatus.completed)]):
            store.insert_schedule(con, _schedule(f"s{i}", tenant, status))
        con.execute("COMMIT")
    finally:
        con.close()

    async def open_it() -> None:
        async with Database(path):
            pass

    asyncio.run(open_it())
    truth, counts = _truth_and_counts(str(path))
    assert counts == truth == {("t1", "active"): 3, ("t1", "paused"): 1, ("t2", "completed"): 1}
