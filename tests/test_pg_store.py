"""The PostgreSQL side of the store itself: its migrations mirror SQLite's, the statement
translation, and storage faults of a lost server mapped to StorageUnavailable. (The
behaviour of the store on PostgreSQL is tested by the whole behavioural suite, which runs
on both backends: tests/db_backend.py.)"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from test_group_commit import _held_group

from schedd import db as dbmod
from schedd.config import Settings
from schedd.db import Conn, Database
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


_FAILED = 'connection failed: connection to server at "10.0.0.5", port 5432 failed: '


@pytest.mark.parametrize(("message", "for_good"), [
    # what the server answers at connect while it cannot take schedd now: temporary
    (_FAILED + "FATAL:  the database system is starting up", False),
    (_FAILED + "FATAL:  the database system is shutting down", False),
    (_FAILED + "FATAL:  the database system is in recovery mode", False),
    (_FAILED + "FATAL:  sorry, too many clients already", False),
    (_FAILED + 'FATAL:  too many connections for role "schedd"', False),
    (_FAILED + "FATAL:  remaining connection slots are reserved for roles with the"
     " SUPERUSER attribute", False),
    (_FAILED + "Connection refused\n\tIs the server running on that host and accepting"
     " TCP/IP connections?", False),
    (_FAILED + "timeout expired", False),
    ("failed to resolve host 'db.internal': [Errno -3] Temporary failure in name resolution",
     False),
    # what trying again cannot mend
    (_FAILED + 'FATAL:  password authentication failed for user "schedd"', True),
    (_FAILED + 'FATAL:  role "schedd" does not exist', True),
    (_FAILED + 'FATAL:  database "schedd" does not exist', True),
    (_FAILED + 'FATAL:  no pg_hba.conf entry for host "10.0.0.9", user "schedd", database'
     ' "schedd", no encryption', True),
    (_FAILED + 'FATAL:  permission denied for database "schedd"', True),
    (_FAILED + "fe_sendauth: no password supplied", True),
    (_FAILED + 'FATAL:  unrecognized configuration parameter "foo"', True),
    (_FAILED + 'FATAL:  invalid value for parameter "TimeZone": "Mars/Olympus"', True),
    ('connection is bad: invalid sslmode value: "bogus"', True),
])
def test_a_connection_refused_for_good_is_told_from_a_temporary_one(message: str,
                                                                    for_good: bool) -> None:
    import psycopg

    assert pgdb.refused_for_good(psycopg.OperationalError(message)) is for_good
    assert pgdb.refused_for_good(psycopg.ProgrammingError('invalid URI query parameter: "x"'))
    assert pgdb.refused_for_good(psycopg.errors.InsufficientPrivilege("permission denied"))
    assert not pgdb.refused_for_good(psycopg.errors.AdminShutdown("terminating connection"))


@pytest.mark.parametrize(("name", "transient"), [
    # the moment's: the whole transaction is tried again
    ("DeadlockDetected", True),  # 40P01
    ("SerializationFailure", True),  # 40001
    ("StatementCompletionUnknown", True),  # 40003
    ("LockNotAvailable", True),  # 55P03, lock_timeout
    ("QueryCanceled", True),  # 57014, statement_timeout
    ("AdminShutdown", True),  # 57P01
    ("CannotConnectNow", True),  # 57P03
    ("DiskFull", True),  # 53100
    ("OutOfMemory", True),  # 53200
    ("TooManyConnections", True),  # 53300
    ("ConnectionFailure", True),  # 08006
    ("IoError", True),  # 58030
    ("ReadOnlySqlTransaction", True),  # 25006, a standby
    # the statement's: it would fail again
    ("TransactionIntegrityConstraintViolation", False),  # 40002
    ("ProgramLimitExceeded", False),  # 54000
    ("ObjectNotInPrerequisiteState", False),  # 55000
    ("UniqueViolation", False),
    ("InvalidTextRepresentation", False),
    ("UndefinedColumn", False),
    ("DataCorrupted", False),  # XX001
])
def test_transient_errors_are_told_from_the_statements_own(name: str,
                                                           transient: bool) -> None:
    import psycopg

    exc = getattr(psycopg.errors, name)("message")
    assert pgdb.transient(exc) is transient
    if transient:  # so that the write fails as a storage fault
        assert pgdb.fault_kind(exc) is not None


def test_transient_connection_errors_without_a_sqlstate() -> None:
    import psycopg

    assert pgdb.transient(psycopg.OperationalError("server closed the connection"))
    assert pgdb.transient(psycopg.InterfaceError("the connection is closed"))
    assert pgdb.transient(StorageUnavailable("io", "lost"))
    assert not pgdb.transient(psycopg.ProgrammingError("syntax error"))
    assert not pgdb.transient(RuntimeError("deadlock detected"))


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


# ---------------------------------------------------------------- group commit on PostgreSQL
# The same properties as tests/test_group_commit.py shows for SQLite's writer.

def _pg_insert(c: Conn, v: str) -> int:
    row = c.execute("INSERT INTO t (v) VALUES (?) RETURNING id", (v,)).fetchone()
    return int(row[0])


@pytest.fixture
async def pg(make_settings: Callable[..., Settings]) -> AsyncIterator[Database]:
    async with open_database(make_settings()) as d:
        await d.write(lambda c: c.execute(
            "CREATE TABLE t (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
            " v TEXT NOT NULL UNIQUE)"))
        yield d


async def _pg_values(db: Database) -> list[str]:
    rows = await db.read(lambda c: c.execute("SELECT v FROM t ORDER BY id").fetchall())
    return [r[0] for r in rows]


@pytest.mark.parametrize("backend", ["postgres"])
async def test_pg_concurrent_writes_share_one_transaction(pg: Database) -> None:
    out = await _held_group(pg, [lambda c, i=i: _pg_insert(c, f"v{i}") for i in range(30)])
    assert all(isinstance(o, int) for o in out) and len(set(out)) == 30
    assert await _pg_values(pg) == [f"v{i}" for i in range(30)]


@pytest.mark.parametrize("backend", ["postgres"])
async def test_pg_a_failing_unit_fails_alone_and_its_changes_are_undone(pg: Database) -> None:
    import psycopg

    def bad(c: Conn) -> None:
        _pg_insert(c, "half-done")
        raise LookupError("this one fails")

    out = await _held_group(pg, [
        lambda c: _pg_insert(c, "a"), bad, lambda c: _pg_insert(c, "a"),  # a unique violation
        lambda c: _pg_insert(c, "b"),
    ])
    assert isinstance(out[0], int)
    assert isinstance(out[1], LookupError)
    assert isinstance(out[2], psycopg.errors.UniqueViolation)
    assert isinstance(out[3], int)  # after an error, PostgreSQL's transaction goes on
    assert await _pg_values(pg) == ["a", "b"]


@pytest.mark.parametrize("backend", ["postgres"])
async def test_pg_a_failing_commit_fails_every_unit_of_the_group(pg: Database) -> None:
    import psycopg

    await pg.write(lambda c: c.execute("CREATE TABLE parent (id BIGINT PRIMARY KEY)"))
    await pg.write(lambda c: c.execute(
        "CREATE TABLE child (p BIGINT REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)"))

    def dangling(c: Conn) -> None:  # checked at COMMIT only
        c.execute("INSERT INTO child VALUES (42)")

    out = await _held_group(pg, [lambda c: _pg_insert(c, "a"), dangling,
                                 lambda c: _pg_insert(c, "b")], commits=0)
    assert all(isinstance(o, psycopg.errors.ForeignKeyViolation) for o in out)
    assert await _pg_values(pg) == []
    assert isinstance(await pg.write(_pg_insert, "c"), int)


@pytest.mark.parametrize("backend", ["postgres"])
async def test_pg_a_block_undone_on_error_is_undone_alone_inside_a_group(pg: Database) -> None:
    """Store.undone_on_error on PostgreSQL: a failed statement inside the block aborts the
    transaction only until the block's savepoint is rolled back to; the unit and the
    group go on."""
    store = store_for(pg)

    def partly_undone(c: Conn) -> str:
        _pg_insert(c, "kept-before")
        with contextlib.suppress(Exception), store.undone_on_error(c):
            _pg_insert(c, "undone")
            _pg_insert(c, "kept-before")  # a unique violation: the transaction is aborted
        with store.undone_on_error(c):
            _pg_insert(c, "kept-block")
        _pg_insert(c, "kept-after")
        return "ok"

    out = await _held_group(pg, [lambda c: _pg_insert(c, "a"), partly_undone,
                                 lambda c: _pg_insert(c, "b")])
    assert out[1] == "ok"
    assert await _pg_values(pg) == ["a", "kept-before", "kept-block", "kept-after", "b"]
    await pg.write(lambda c: c.execute("DELETE FROM t"))
    assert await pg.write(partly_undone) == "ok"  # alone: no group savepoint around it
    assert await _pg_values(pg) == ["kept-before", "kept-block", "kept-after"]


# ---------------------------------------------------------------- row locks between nodes
@pytest.mark.parametrize("backend", ["postgres"])
async def test_two_nodes_locking_overlapping_runs_do_not_deadlock(
        make_settings: Callable[..., Settings], database_url: str) -> None:
    """Two nodes recording outcomes of overlapping runs (a run's node, and one failing it
    after its lease) lock them in one order (RECORD_LOCK, by id), so one waits for the
    other instead of each holding rows the other waits for. More runs than one statement's
    chunk (500): the chunks too must come in one order, whatever order each node has the
    ids in. A third transaction holds one run so that both lockers are surely under way
    (and waiting) before either can finish."""
    import threading

    import psycopg

    from schedd.models import ActionType, Run, RunStatus, TriggerType

    async with open_database(make_settings()) as db:
        store = store_for(db)
        ids = sorted(f"run-{i:04d}" for i in range(1000))
        await db.write(store.insert_runs, [
            Run(id=i, schedule_id="s1", tenant_id="t1", status=RunStatus.running,
                trigger_type=TriggerType.scheduled, scheduled_for_ms=n, due_ms=n,
                triggered_ms=n, started_ms=n, attempt_root_run_id=i,
                action_type=ActionType.noop)
            for n, i in enumerate(ids)])
    held = ids[499]  # the last of the first chunk of the ids in ascending order

    def connect() -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(database_url, autocommit=True)

    results: dict[str, object] = {}

    def locker(name: str, order: list[str]) -> None:
        with connect() as raw:
            c = pgdb.PgConn(raw)
            try:
                c.execute("BEGIN")
                active, _ = store.active_runs_and_tallies(c, order)
                c.execute("COMMIT")
                results[name] = len(active)
            except Exception as exc:  # a deadlock broken by the server
                results[name] = exc

    with connect() as holder, connect() as watch:
        holder.execute("BEGIN")
        holder.execute("SELECT id FROM runs WHERE id = %s FOR UPDATE", (held,))
        threads = [threading.Thread(target=locker, args=("up", ids)),
                   threading.Thread(target=locker, args=("down", ids[::-1]))]
        for t in threads:
            t.start()
        waiting = 0
        for _ in range(1000):  # bounded: until both lockers wait for a row lock (<= 10 s)
            row = watch.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock'").fetchone()
            waiting = int(row[0]) if row else 0
            if waiting == 2:
                break
            threading.Event().wait(0.01)
        assert waiting == 2
        holder.execute("COMMIT")
        for t in threads:
            t.join(60)
    assert results == {"up": 1000, "down": 1000}
