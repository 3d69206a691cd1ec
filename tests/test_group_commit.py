"""Group commit (db.py): write units queued while one transaction runs share the next,
each in its own savepoint, every caller answered only after the COMMIT."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from schedd import db as dbmod
from schedd.db import Conn, Database
from schedd.store import Store


def _insert(c: Conn, v: str) -> int:
    cur = c.execute("INSERT INTO t (v) VALUES (?)", (v,))
    assert cur.lastrowid is not None
    return cur.lastrowid


async def _held_group(db: Database, units: list[Callable[[Conn], Any]],
                      commits: int = 1) -> list[Any]:
    """Hold the writer with one unit, queue `units` behind it, then let it go: they run
    as one group (`commits` transactions committed for them). Their outcomes (results or
    exceptions), in order."""
    release = threading.Event()
    started = threading.Event()

    def hold(c: Conn) -> None:
        started.set()
        assert release.wait(10)

    first = asyncio.ensure_future(db.write(hold))
    for _ in range(1000):  # bounded: the writer has taken the holding unit
        if started.is_set():
            break
        await asyncio.sleep(0.005)
    assert started.is_set()
    futs = [asyncio.ensure_future(db.write(u)) for u in units]
    await asyncio.sleep(0)  # each queued its unit
    before = db.commits
    release.set()
    await first
    out = await asyncio.gather(*futs, return_exceptions=True)
    # the holder's transaction plus ONE for all of the queued units
    assert db.commits - before == 1 + commits
    return out


@pytest.fixture
async def db(tmp_path: Path) -> Any:
    async with Database(tmp_path / "g.db") as d:
        await d.write(lambda c: c.execute(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL UNIQUE)"))
        yield d


async def _values(db: Database) -> list[str]:
    rows = await db.read(lambda c: c.execute("SELECT v FROM t ORDER BY id").fetchall())
    return [r[0] for r in rows]


async def test_concurrent_writes_share_one_transaction_and_each_is_visible(
        db: Database) -> None:
    n = 40
    out = await _held_group(db, [lambda c, i=i: _insert(c, f"v{i}") for i in range(n)])
    assert all(isinstance(o, int) for o in out)
    assert len(set(out)) == n
    # every caller was answered after the commit: the reader sees all of them
    assert await _values(db) == [f"v{i}" for i in range(n)]


async def test_a_failing_unit_fails_alone_and_its_changes_are_undone(db: Database) -> None:
    def bad(c: Conn) -> None:
        _insert(c, "half-done")  # written inside the unit, then undone with it
        raise LookupError("this one fails")

    out = await _held_group(db, [
        lambda c: _insert(c, "a"), bad, lambda c: _insert(c, "a"),  # duplicate: IntegrityError
        lambda c: _insert(c, "b"),
    ])
    assert isinstance(out[0], int)
    assert isinstance(out[1], LookupError)
    assert isinstance(out[2], sqlite3.IntegrityError)
    assert isinstance(out[3], int)
    assert await _values(db) == ["a", "b"]


async def test_units_in_a_group_see_the_earlier_units_writes(db: Database) -> None:
    # as if run one after another: the second finds the first's row
    out = await _held_group(db, [
        lambda c: _insert(c, "x"),
        lambda c: c.execute("SELECT count(*) FROM t WHERE v = 'x'").fetchone()[0],
    ])
    assert out[1] == 1


async def test_a_lost_transaction_fails_the_units_that_shared_it_and_runs_the_rest(
        db: Database) -> None:
    def breaks_the_transaction(c: Conn) -> None:
        _insert(c, "broken")
        c.execute("ROLLBACK")  # as SQLite does itself on a full disk or an I/O error

    out = await _held_group(db, [
        lambda c: _insert(c, "before"), breaks_the_transaction,
        lambda c: _insert(c, "after1"), lambda c: _insert(c, "after2"),
    ], commits=2)  # the two after it, one transaction each
    # "before" shared the lost transaction: its caller is told, nothing of it is kept
    assert isinstance(out[0], sqlite3.Error)
    assert isinstance(out[1], sqlite3.Error)
    assert isinstance(out[2], int) and isinstance(out[3], int)
    assert await _values(db) == ["after1", "after2"]
    # the connection is usable afterwards
    assert isinstance(await db.write(_insert, "later"), int)


def _partly_undone(c: Conn, store: Store, fail: Callable[[Conn], Any]) -> str:
    """A unit that writes, has a block of it undone (the block raises), then writes on."""
    _insert(c, "kept-before")
    with contextlib.suppress(Exception), store.undone_on_error(c):
        _insert(c, "undone")
        fail(c)
    with store.undone_on_error(c):
        _insert(c, "kept-block")
    _insert(c, "kept-after")
    return "ok"


async def test_a_block_undone_on_error_is_undone_alone_inside_a_group(db: Database) -> None:
    """Store.undone_on_error (a savepoint of its own, nested in the group's): the block's
    writes go, the rest of its unit and the group's other units are kept."""
    store = Store(db)

    def raises(c: Conn) -> None:
        raise LookupError("planning failed")

    def violates(c: Conn) -> None:
        _insert(c, "kept-before")  # a failed statement: UNIQUE

    out = await _held_group(db, [
        lambda c: _insert(c, "a"),
        lambda c: _partly_undone(c, store, raises),
        lambda c: _insert(c, "b"),
    ])
    assert out[1] == "ok" and isinstance(out[0], int) and isinstance(out[2], int)
    assert await _values(db) == ["a", "kept-before", "kept-block", "kept-after", "b"]
    # alone in its transaction (no group savepoint around it), with a failed statement
    await db.write(lambda c: c.execute("DELETE FROM t"))
    assert await db.write(_partly_undone, store, violates) == "ok"
    assert await _values(db) == ["kept-before", "kept-block", "kept-after"]


async def test_a_failing_commit_fails_every_unit_of_the_group(db: Database) -> None:
    await db.write(lambda c: c.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
    await db.write(lambda c: c.execute(
        "CREATE TABLE child (p INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)"))

    def dangling(c: Conn) -> None:  # checked at COMMIT only
        c.execute("INSERT INTO child VALUES (42)")

    out = await _held_group(db, [lambda c: _insert(c, "a"), dangling,
                                 lambda c: _insert(c, "b")], commits=0)
    assert all(isinstance(o, sqlite3.IntegrityError) for o in out)
    assert await _values(db) == []
    assert isinstance(await db.write(_insert, "c"), int)


async def test_a_lone_write_runs_without_a_savepoint(db: Database) -> None:
    with pytest.raises(sqlite3.OperationalError, match="no such savepoint"):
        await db.write(lambda c: c.execute("RELEASE schedd_group"))


CRASH_SCRIPT = textwrap.dedent("""
    import asyncio, os, sys, threading
    from schedd.db import Database

    async def main(path):
        async with Database(path) as db:
            await db.write(lambda c: c.execute(
                "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL UNIQUE)"))

            def insert(c, v):
                c.execute("INSERT INTO t (v) VALUES (?)", (v,))

            async def create(v):
                await db.write(insert, v)
                print("ack", v, flush=True)  # acknowledged: must survive the crash

            # rounds of concurrent writes, each answered after its group's commit
            for r in range(5):
                await asyncio.gather(*(create(f"r{r}-{i}") for i in range(16)))
            # then a group that dies in the middle: half its units have run
            release = threading.Event()
            first = asyncio.ensure_future(db.write(lambda c: release.wait(10)))
            await asyncio.sleep(0.05)

            def die(c):
                os._exit(7)  # the process crashes mid-transaction

            futs = [asyncio.ensure_future(create(f"doomed-{i}")) for i in range(8)]
            futs.append(asyncio.ensure_future(db.write(die)))
            futs += [asyncio.ensure_future(create(f"doomed-{i}")) for i in range(8, 16)]
            await asyncio.sleep(0)
            release.set()
            await asyncio.gather(first, *futs)

    asyncio.run(main(sys.argv[1]))
""")


def test_a_crash_in_the_middle_of_a_group_loses_no_acknowledged_write(
        tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 7, proc.stderr
    acked = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("ack ")]
    assert len(acked) == 5 * 16
    con = sqlite3.connect(path)
    try:
        kept = {r[0] for r in con.execute("SELECT v FROM t")}
    finally:
        con.close()
    assert set(acked) <= kept  # every acknowledged write is on disk
    # the group that died was never committed: none of it is there, half-done or not
    assert not {v for v in kept if v.startswith("doomed-")}


async def test_a_group_is_bounded(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dbmod, "MAX_GROUP", 4)
    release = threading.Event()
    started = threading.Event()

    def hold(c: Conn) -> None:
        started.set()
        assert release.wait(10)

    first = asyncio.ensure_future(db.write(hold))
    for _ in range(1000):
        if started.is_set():
            break
        await asyncio.sleep(0.005)
    futs = [asyncio.ensure_future(db.write(_insert, f"v{i}")) for i in range(10)]
    await asyncio.sleep(0)
    before = db.commits
    release.set()
    await asyncio.gather(first, *futs)
    assert db.commits - before == 1 + 3  # 4 + 4 + 2
    assert len(await _values(db)) == 10
