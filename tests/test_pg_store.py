"""The PostgreSQL side of the store itself: its migrations mirror SQLite's, the statement
translation, and storage faults of a lost server mapped to StorageUnavailable. (The
behaviour of the store on PostgreSQL is tested by the whole behavioural suite, which runs
on both backends: tests/db_backend.py.)"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from schedd import db as dbmod
from schedd.config import Settings
from schedd.errors import InvalidField, StorageUnavailable
from schedd.store import open_database, store_for

pgdb = pytest.importorskip("schedd.pgdb")


def test_both_dialects_have_the_same_migration_numbers() -> None:
    sqlite = [v for v, _ in dbmod.migrations("sqlite")]
    postgres = [v for v, _ in dbmod.migrations("postgres")]
    assert sqlite == postgres
    assert sqlite == list(range(1, len(sqlite) + 1))


@pytest.mark.parametrize(("sqlite", "postgres", "writes"), [
    ("SELECT a FROM t WHERE b = ? AND c IN (?, ?)",
     "SELECT a FROM t WHERE b = %s AND c IN (%s, %s)", False),
    ("SELECT x FROM schedules INDEXED BY schedules_due WHERE y LIKE ? ESCAPE '\\'",
     "SELECT x FROM schedules WHERE y ILIKE %s ESCAPE '\\'", False),
    ("UPDATE runs SET due_ms = max(due_ms, ?) WHERE id = ?",
     "UPDATE runs SET due_ms = greatest(due_ms, %s) WHERE id = %s", True),
    # a question mark or a percent sign inside a literal is text, not a parameter
    ("INSERT INTO t (a, b) VALUES ('?%', ?)", "INSERT INTO t (a, b) VALUES ('?%%', %s)", True),
    ("  delete FROM t", "  delete FROM t", True),
])
def test_statement_translation(sqlite: str, postgres: str, writes: bool) -> None:
    assert pgdb.translate(sqlite) == (postgres, writes)


def test_bools_bind_as_integers_and_nul_is_refused_as_the_clients() -> None:
    assert pgdb._bind((True, False, 3, "x", None)) == (1, 0, 3, "x", None)
    with pytest.raises(InvalidField):
        pgdb._bind(("a\x00b",))


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_lost_connection_is_a_storage_fault_and_the_next_write_reconnects(
        make_settings: Callable[..., Settings], database_url: str) -> None:
    import psycopg

    async with open_database(make_settings()) as db:
        store = store_for(db)
        seen: list[StorageUnavailable] = []
        db.fault_listeners.append(seen.append)
        assert await db.read(store.count_keys) == 0
        with psycopg.connect(database_url, autocommit=True) as admin:
            # every connection of this database but the admin's own: the server "restarts"
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                          " WHERE datname = current_database() AND pid <> pg_backend_pid()")
        with pytest.raises(StorageUnavailable) as caught:
            await db.write(store.insert_tenant, "t1", "one", 1)
        assert caught.value.kind == "io"
        assert db.fault is caught.value and seen == [caught.value]
        assert "password" not in str(caught.value)
        # the next write reconnects, and ends the fault
        await db.write(store.insert_tenant, "t1", "one", 1)
        assert db.fault is None
        # reads change nothing: one on a cut connection is asked again on a new one
        for _ in range(pgdb.READERS + 1):
            assert await db.read(store.tenant_id_by_name, "one") == "t1"


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_server_that_is_gone_is_a_storage_fault(
        make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    async with open_database(settings) as db:
        store = store_for(db)
        db.url = db.path = settings.database_url.rsplit(":", 1)[0] + ":1/nothing"  # port 1
        for w in [db._writer, *db._readers]:
            assert w is not None
            w.conn.raw.close()
        with pytest.raises(StorageUnavailable) as caught:
            await db.write(store.insert_tenant, "t1", "one", 1)
        assert caught.value.kind == "io" and db.fault is caught.value
        with pytest.raises(StorageUnavailable):
            await db.read(store.count_keys)
