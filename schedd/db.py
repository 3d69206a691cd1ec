"""SQLite access: one writer thread and one reader thread, each owning a sqlite3 connection.

Every unit of work is ONE plain function `fn(conn, *args)` run on the connection's own
thread: `await db.write(fn, ...)` wraps it in `BEGIN IMMEDIATE ... COMMIT` (ROLLBACK when it
raises), `await db.read(fn, ...)` runs it on the read-only connection, which sees committed
data only. One thread hop per unit of work, not per statement: a hop (queue put, thread
wake-up, `call_soon_threadsafe` back to the loop) costs about as much as a small statement,
and a claim or a record is 5-10 statements. aiosqlite hops once per statement and has no
public way to run a function on its thread, so schedd owns its two threads (this module).

Writes are serialised by the one writer thread (FIFO); a unit of work never interleaves
with another, so no lock is needed. A caller cancelled while its unit runs does not stop
the unit: it commits or rolls back as a whole, as it would had the caller waited.

Group commit: the write units that queue up while one transaction runs share the next
one (at most MAX_GROUP, in arrival order). Each runs inside its own SAVEPOINT, so a unit
that raises is rolled back alone and its caller gets its exception while the others go
on; every caller's future is resolved only after the one COMMIT, so nothing is reported
done before it is on disk (as durable as a transaction of its own: synchronous=NORMAL in
WAL mode survives a crash of the process). A COMMIT costs the same for 1 unit or 50, and
so does the thread hop back to the loop (one call_soon_threadsafe for the group): 16
clients creating schedules at once share ~1 COMMIT per round. A lone unit runs exactly as
before (BEGIN IMMEDIATE, fn, COMMIT; no savepoint). If the group's transaction itself
fails (COMMIT, or an error after which SQLite rolled the whole transaction back, such as a
full disk), every unit of it that had succeeded fails with that error too: none of them
was acknowledged, none is kept; the units not yet run then run one transaction each.

A third thread copies the write-ahead log back into the database file (a PASSIVE
checkpoint, on its own connection) every CHECKPOINT_EVERY_WRITES write transactions and
at least every CHECKPOINT_IDLE_S. The writer's automatic checkpoint only backstops it, at
WAL_BACKSTOP_PAGES instead of SQLite's 1,000: at 1,000 it ran inside a COMMIT about every
second under load, ~4 ms (half of it an fsync) in the middle of a claim. The backstop is
needed: SQLite rewinds the log only when a write begins with every frame copied back, and
under writes without a pause a checkpoint on another thread never catches the writer.
The writer's own checkpoint, between its transactions, copies the few frames the thread
has not yet, and the next write rewinds; journal_size_limit then trims the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from queue import SimpleQueue
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from schedd.errors import StorageUnavailable


class SchemaTooNew(RuntimeError):
    """The database was written by a newer schedd."""


_MIGRATION_NAME = re.compile(r"^(\d{4})_[\w-]+\.sql$")
BUSY_TIMEOUT_MS = 5000
CHECKPOINT_EVERY_WRITES = 64
MAX_GROUP = 64  # write units sharing one transaction (group commit), at most
CHECKPOINT_IDLE_S = 1.0
WAL_BACKSTOP_PAGES = 10_000  # ~40 MB of WAL at 4 KiB pages
WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024  # what a rewound WAL file is trimmed to

log = logging.getLogger(__name__)

# SQLite's primary result codes (extended code & 0xff) that mean "the storage refused this
# write for now", not "this transaction is wrong": the same write can succeed later.
_FAULT_CODES = {13: "full", 8: "readonly", 5: "locked", 6: "locked", 10: "io", 14: "io"}
_FAULT_MESSAGES = (("disk is full", "full"), ("readonly database", "readonly"),
                   ("is locked", "locked"), ("disk i/o error", "io"))

P = ParamSpec("P")
T = TypeVar("T")


class Cursor(Protocol):
    """What a statement gives back (sqlite3.Cursor; psycopg's Cursor on PostgreSQL)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    """The transaction handle a unit of work `fn(conn, ...)` is given: the store's functions
    run their statements on it (SQLite's dialect, `?` parameters). On SQLite it is the
    sqlite3.Connection itself; on PostgreSQL schedd.pgdb.PgConn, which translates."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor: ...


def migrations(dialect: str = "sqlite") -> list[tuple[int, str]]:
    """(version, sql) of every packaged migration of a dialect (schedd/migrations/sqlite/,
    schedd/migrations/postgres/), in order; versions are 1, 2, 3, ..."""
    found: list[tuple[int, str]] = []
    for entry in (resources.files("schedd.migrations") / dialect).iterdir():
        m = _MIGRATION_NAME.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry.read_text(encoding="utf-8")))
    found.sort()
    if [v for v, _ in found] != list(range(1, len(found) + 1)):
        raise RuntimeError("migrations must be numbered 0001, 0002, ... without gaps")
    return found


def fault_kind(exc: BaseException) -> str | None:
    """The StorageUnavailable kind of a failed write ("full", "readonly", "locked", "io"),
    or None when the error is not the storage's (a constraint, a bug)."""
    if not isinstance(exc, sqlite3.OperationalError):
        return None
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return _FAULT_CODES.get(code & 0xFF)
    text = str(exc).lower()  # raised without a code (not by SQLite itself)
    return next((kind for needle, kind in _FAULT_MESSAGES if needle in text), None)


def transient(exc: BaseException) -> bool:
    """Whether an error raised inside a unit of work is the storage's, for now (SQLite's
    BUSY, LOCKED, FULL, IOERR, READONLY, CANTOPEN: `fault_kind`; NOMEM, which sqlite3
    raises as MemoryError), not the unit's: the same statements can succeed on a later
    try, so the whole transaction is failed and tried again rather than the error
    swallowed as the unit's own (a relative schedule's planning, engine/claiming.py).
    A constraint, a type or syntax error, a corrupt file is not: it would fail again."""
    return (isinstance(exc, StorageUnavailable | MemoryError)
            or (isinstance(exc, sqlite3.Error) and fault_kind(exc) is not None))


def _set_result(fut: asyncio.Future[Any], result: Any) -> None:
    if not fut.done():
        fut.set_result(result)


def _set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


_STOP = object()

# (loop, future, fn, grouped): grouped units are write transactions that may share one
_Item = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any], bool]
_Reply = tuple[Callable[["asyncio.Future[Any]", Any], None], "asyncio.Future[Any]", Any]
# how a worker runs grouped units, on its thread: one alone (its result), or several
# together (one (ok, result or exception) per unit, in order)
OneRunner = Callable[[Callable[[], Any]], Any]
GroupRunner = Callable[[list[Callable[[], Any]]], list[tuple[bool, Any]]]


def _deliver(replies: list[_Reply]) -> None:
    for reply, fut, value in replies:
        reply(fut, value)


class _Worker:
    """One thread that owns one sqlite3 connection and runs functions on it, in order.
    With a group runner, consecutive grouped items waiting in the queue are handed to it
    together (group commit)."""

    def __init__(self, name: str, one: OneRunner | None = None,
                 group: GroupRunner | None = None) -> None:
        self._queue: SimpleQueue[Any] = SimpleQueue()
        self._one = one
        self._group = group
        # grouped units submitted during the current turn of each loop (see call)
        self._turns: dict[asyncio.AbstractEventLoop, list[_Item]] = {}
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self.conn: Any = None  # the connection this thread owns (sqlite3 or psycopg)

    def _main(self) -> None:
        queue = self._queue
        backlog: deque[Any] = deque()  # items taken from the queue, not yet run

        def more() -> bool:
            """Is another item there without waiting? (it is then backlog[0])"""
            if not backlog:
                if queue.empty():
                    return False
                got = queue.get_nowait()
                backlog.extend(got) if isinstance(got, list) else backlog.append(got)
            return True

        while True:
            if not backlog:
                got = queue.get()
                backlog.extend(got) if isinstance(got, list) else backlog.append(got)
            item = backlog.popleft()
            if item is _STOP:
                return
            items: list[_Item] = [item]
            if item[3] and self._group is not None:
                while len(items) < MAX_GROUP and more():
                    nxt = backlog[0]
                    if nxt is _STOP or not nxt[3]:
                        break  # order kept: it runs right after this group
                    items.append(backlog.popleft())
            if len(items) > 1 and self._group is not None:
                outcomes = self._group([it[2] for it in items])
            elif item[3] and self._one is not None:
                outcomes = [_call(item[2], self._one)]
            else:
                outcomes = [_call(item[2])]
            # one hop back per loop for the whole group, after its COMMIT
            by_loop: dict[asyncio.AbstractEventLoop, list[_Reply]] = {}
            for (loop, fut, _, _), (ok, value) in zip(items, outcomes, strict=True):
                by_loop.setdefault(loop, []).append(
                    (_set_result if ok else _set_exception, fut, value))
            for loop, replies in by_loop.items():
                # the caller's loop may be closed by now (a teardown): the thread goes on
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_deliver, replies)

    async def call(self, fn: Callable[[], T], *, grouped: bool = False) -> T:
        """Run fn on the thread; its result. Grouped units submitted in one turn of a loop
        reach the thread together, at the end of that turn (one queue put, one wake-up of
        the thread, instead of one per unit); anything else goes at once, after them."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        if grouped:
            turn = self._turns.get(loop)
            if turn is None:
                turn = self._turns[loop] = []
                loop.call_soon(self._submit, loop)
            turn.append((loop, fut, fn, True))
        else:
            self._submit(loop)
            self._queue.put((loop, fut, fn, False))
        return await fut

    def _submit(self, loop: asyncio.AbstractEventLoop) -> None:
        turn = self._turns.pop(loop, None)
        if turn:
            self._queue.put(turn)

    async def run(self, fn: Callable[Concatenate[Any, P], T], *args: P.args,
                  **kwargs: P.kwargs) -> T:
        conn = self.conn
        if conn is None:
            raise RuntimeError("database is not open")
        return await self.call(lambda: fn(conn, *args, **kwargs))

    async def stop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            await self.call(conn.close)
        self._queue.put(_STOP)


class _Checkpointer:
    """A thread with its own connection that runs `PRAGMA wal_checkpoint(PASSIVE)` when
    nudged and at least every CHECKPOINT_IDLE_S. PASSIVE never blocks the writer or a
    reader (it copies what no reader still needs); the writer rewinds the log once all of
    it is copied. Its fsync waits here, not in a COMMIT."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._wake = threading.Event()
        self._stopping = False
        self.runs = 0  # checkpoints done (tests and diagnostics)
        self.copied_pages = 0
        self._thread = threading.Thread(target=self._main, name="schedd-db-checkpoint",
                                        daemon=True)
        self._thread.start()

    def nudge(self) -> None:
        self._wake.set()

    def _main(self) -> None:
        conn: sqlite3.Connection | None = None
        failing = False
        try:
            while not self._stopping:
                self._wake.wait(CHECKPOINT_IDLE_S)
                self._wake.clear()
                if self._stopping:
                    break
                try:
                    if conn is None:
                        conn = sqlite3.connect(self._path, isolation_level=None)
                    row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.runs += 1
                    if row is not None and row[2] > 0:
                        self.copied_pages += int(row[2])
                except Exception as exc:  # the thread must outlive any error
                    # tried again at the next nudge (the writer's backstop meanwhile); said
                    # once per run of failures
                    if not failing:
                        with contextlib.suppress(Exception):
                            log.warning("WAL checkpoint failed (will retry): %s", exc)
                    failing = True
                else:
                    failing = False
        finally:
            if conn is not None:
                conn.close()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(30)


def _call(fn: Callable[[], Any], via: OneRunner | None = None) -> tuple[bool, Any]:
    """(True, fn()) or (False, what it raised); with `via`, (True, via(fn))."""
    try:
        return True, (fn() if via is None else via(fn))
    except BaseException as exc:  # handed to the awaiting task, never lost here
        return False, exc


@dataclass(frozen=True, slots=True)
class TxDialect:
    """How one database spells a write transaction and the savepoints of a group (see the
    module's docstring), and how to tell, after an error, that the transaction is still
    open and usable (`alive`); `error` is what a failed ROLLBACK raises (ignored: the first
    error is the one reported). The group-commit logic itself is written once, in
    Database._write_one and Database._write_group."""

    begin: str
    savepoint: str
    release: str
    rollback_to: str
    error: type[Exception]
    alive: Callable[[Any], bool]


SQLITE_TX = TxDialect(
    begin="BEGIN IMMEDIATE", savepoint="SAVEPOINT schedd_group",
    release="RELEASE schedd_group", rollback_to="ROLLBACK TO schedd_group",
    error=sqlite3.Error,
    # False once SQLite rolled the whole transaction back itself (a full disk, ...)
    alive=lambda conn: bool(conn.in_transaction),
)


def _in_tx(conn: Any, fn: Callable[[], T], tx: TxDialect) -> T:
    conn.execute(tx.begin)
    try:
        result = fn()
        conn.execute("COMMIT")
    except BaseException:
        if tx.alive(conn):
            # keep the first error; a failed ROLLBACK means the database ended the tx itself
            with contextlib.suppress(tx.error):
                conn.execute("ROLLBACK")
        raise
    return result


def _rewrite_header(conn: Conn) -> None:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    conn.execute(f"PRAGMA user_version = {version}")  # same value, but page 1 is written


class Database:
    """Owns the writer and the reader; close() (or `async with`) closes both."""

    _tx = SQLITE_TX  # the writer's transaction statements (PgDatabase: PostgreSQL's)

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._writer: _Worker | None = None
        self._reader: _Worker | None = None
        self._checkpointer: _Checkpointer | None = None
        self._writes = 0
        # the storage fault of the last failed write, None again once a write that changed
        # something (or probe_write) committed; every failed write is handed to each
        # listener (the engine counts it and wakes)
        self.fault: StorageUnavailable | None = None
        self.fault_listeners: list[Callable[[StorageUnavailable], None]] = []

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _connect_writer(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if self.path != ":memory:" and (mode is None or str(mode[0]).lower() != "wal"):
                raise RuntimeError(f"{self.path}: could not switch the database to WAL mode")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            if self.path != ":memory:":
                # the checkpoint thread's job; the writer only backstops it (see above)
                conn.execute(f"PRAGMA wal_autocheckpoint = {int(WAL_BACKSTOP_PAGES)}")
                conn.execute(f"PRAGMA journal_size_limit = {int(WAL_SIZE_LIMIT_BYTES)}")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_reader(self) -> sqlite3.Connection:
        uri = Path(self.path).resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return conn

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._writer = _Worker("schedd-db-writer", self._write_one, self._write_group)
            self._writer.conn = await self._writer.call(self._connect_writer)
            if self.path == ":memory:":
                self._reader = self._writer
            else:
                self._reader = _Worker("schedd-db-reader")
                self._reader.conn = await self._reader.call(self._connect_reader)
                self._checkpointer = _Checkpointer(self.path)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        reader, writer, checkpointer = self._reader, self._writer, self._checkpointer
        self._reader = self._writer = self._checkpointer = None
        if checkpointer is not None:
            await asyncio.to_thread(checkpointer.stop)
        if reader is not None and reader is not writer:
            await reader.stop()
        if writer is not None:
            await writer.stop()

    def _migrate(self, conn: sqlite3.Connection) -> None:
        current = int(conn.execute("PRAGMA user_version").fetchone()[0])
        known = migrations()
        if current > len(known):
            raise SchemaTooNew(
                f"{self.path}: database schema version {current} is newer than this schedd "
                f"({len(known)}); upgrade schedd or restore a backup"
            )
        for version, sql in known[current:]:
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;"
            )

    def _worker(self, which: _Worker | None) -> _Worker:
        if which is None:
            raise RuntimeError("database is not open")
        return which

    async def write(self, fn: Callable[Concatenate[Conn, P], T], *args: P.args,
                    **kwargs: P.kwargs) -> T:
        """Run fn(conn, *args) as one write transaction on the writer thread; its result.
        A write the storage refuses (disk full, read-only, locked past the busy timeout, an
        I/O error) raises StorageUnavailable; nothing of it was kept."""
        w = self._worker(self._writer)
        conn = w.conn
        if conn is None:
            raise RuntimeError("database is not open")

        def unit() -> tuple[T, bool]:
            before = conn.total_changes
            result = fn(conn, *args, **kwargs)  # in its transaction (or a group's savepoint)
            return result, conn.total_changes != before

        try:
            result, wrote = await w.call(unit, grouped=True)
        except sqlite3.OperationalError as exc:
            kind = fault_kind(exc)
            if kind is None:
                raise
            fault = StorageUnavailable(kind, str(exc))
            self.fault = fault
            for listener in self.fault_listeners:
                listener(fault)
            raise fault from exc
        if wrote:  # a transaction that wrote nothing proves nothing about the storage
            self.fault = None
        return result

    async def probe_write(self) -> None:
        """One small real write (the header page rewritten with the same user_version):
        StorageUnavailable while the storage still refuses, otherwise the fault is over."""
        await self.write(_rewrite_header)
        self.fault = None

    def _conn(self) -> Any:
        """On the writer thread: the writer's connection (PgDatabase reconnects a lost one)."""
        conn = self._writer.conn if self._writer is not None else None
        if conn is None:
            raise RuntimeError("database is not open")
        return conn

    def tx_alive(self, conn: Any) -> bool:
        """On the writer thread, after an error inside a unit of work: whether its
        transaction is still open and usable (a savepoint can be rolled back to), or the
        database ended it (SQLite rolled it back itself, the connection was lost)."""
        return self._tx.alive(conn)

    def transient(self, exc: BaseException) -> bool:
        """After an error inside a unit of work: whether it is the storage's, for now
        (`transient`), so that the whole unit should fail and be tried again."""
        return transient(exc)

    def _write_one(self, fn: Callable[[], T]) -> T:
        """On the writer thread: a unit alone in its transaction, then maybe a nudge to the
        checkpointer."""
        result = _in_tx(self._conn(), fn, self._tx)
        self._committed()
        return result

    @property
    def commits(self) -> int:
        """Write transactions committed so far (a group's counts once)."""
        return self._writes

    def _committed(self) -> None:
        self._writes += 1
        if self._writes % CHECKPOINT_EVERY_WRITES == 0 and self._checkpointer is not None:
            self._checkpointer.nudge()

    def _write_group(self, units: list[Callable[[], Any]]) -> list[tuple[bool, Any]]:
        """On the writer thread: several write units in one transaction, each inside its
        own savepoint (see the module's docstring). One (ok, result or exception) per unit."""
        tx = self._tx
        try:
            conn = self._conn()
            conn.execute(tx.begin)
        except BaseException as exc:
            return [(False, exc) for _ in units]
        outcomes: list[tuple[bool, Any]] = []
        for i, unit in enumerate(units):
            try:
                conn.execute(tx.savepoint)
                outcomes.append((True, unit()))
                conn.execute(tx.release)
                continue
            except BaseException as exc:
                error = exc
            if tx.alive(conn):
                try:
                    conn.execute(tx.rollback_to)
                    conn.execute(tx.release)
                except BaseException as exc:  # the transaction is gone with it
                    error = exc
            if i < len(outcomes):
                outcomes[i] = (False, error)  # raised by RELEASE
            else:
                outcomes.append((False, error))
            if not tx.alive(conn):
                # the database rolled the whole transaction back (or the connection is
                # lost): what the others did is gone
                lost = [(False, error) if ok else (ok, v) for ok, v in outcomes]
                return lost + [_call(u, self._write_one) for u in units[i + 1:]]
        try:
            conn.execute("COMMIT")
        except BaseException as exc:
            if tx.alive(conn):
                with contextlib.suppress(tx.error):
                    conn.execute("ROLLBACK")
            return [(False, exc) for _ in units]
        self._committed()
        return outcomes

    async def read(self, fn: Callable[Concatenate[Conn, P], T], *args: P.args,
                   **kwargs: P.kwargs) -> T:
        """Run fn(conn, *args) on the read-only connection's thread; its result."""
        return await self._worker(self._reader).run(fn, *args, **kwargs)

    async def fetch_all(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[Any]:
        return await self.read(lambda c: c.execute(sql, params).fetchall())

    async def fetch_one(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> Any:
        return await self.read(lambda c: c.execute(sql, params).fetchone())


def backup(src: str | Path, dest: str | Path) -> None:
    """A consistent copy through SQLite's online backup API, safe while a daemon writes:
    one backup step copies every page inside a single WAL read snapshot, so writers go on.
    Written to DEST.partial first and renamed, so DEST is never half a database."""
    dest = Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} already exists")
    tmp = dest.with_name(dest.name + ".partial")
    tmp.unlink(missing_ok=True)
    source = sqlite3.connect(Path(src).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        source.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        target = sqlite3.connect(tmp)
        try:
            source.backup(target, pages=-1)
        finally:
            target.close()
    finally:
        source.close()
    tmp.replace(dest)


def schema_version(path: str | Path) -> int | None:
    """The schema version of an existing database file (None when there is none yet)."""
    if not Path(path).is_file():
        return None
    con = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return int(con.execute("PRAGMA user_version").fetchone()[0])
    finally:
        con.close()


def check_schema(path: str | Path) -> None:
    """Refuse, before anything starts, a database written by a newer schedd."""
    current, known = schema_version(path), len(migrations())
    if current is not None and current > known:
        raise SchemaTooNew(
            f"{path}: database schema version {current} is newer than this schedd ({known}); "
            "upgrade schedd or restore a backup"
        )
