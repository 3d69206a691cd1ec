"""PostgreSQL access, the twin of db.py: one writer thread with group commit, a few reader
threads, each owning a psycopg 3 connection, running the same synchronous units of work
`fn(conn, *args)` as on SQLite.

The store's statements are written once, in the SQL both databases speak; `PgConn` hands
them to PostgreSQL after a mechanical translation, cached per statement text: `?`
parameters become `%s`, SQLite's `INDEXED BY` hints go, `LIKE` (ASCII case-insensitive in
SQLite) becomes `ILIKE`, and the scalar `max(a, b)` becomes `greatest(a, b)`. Python bools
are bound as 0/1 (the flag columns are integers, as on SQLite). What must differ beyond
that is a method of store/postgres.py.

The writer is db.py's (Database._write_one and _write_group, in PostgreSQL's spelling,
PG_TX): units queued while a transaction runs share the next one, each inside its own
SAVEPOINT, every caller answered only after the one COMMIT. On PostgreSQL a failed
statement leaves the transaction aborted until `ROLLBACK TO SAVEPOINT`, which is what the
group does anyway. Several schedd nodes may write at once (each has its own writer);
what they must not both do (claim the same due schedule) is settled by row locks in the
store's statements, not here.

A storage fault (the server down or restarting, the connection lost, too many clients, a
full disk on the server) raises StorageUnavailable like a SQLite fault, so /readyz and the
metrics say so; the next unit reconnects.

Migrations (schedd/migrations/postgres/, numbered like SQLite's) run under a
`pg_advisory_lock`, by whichever node starts first; the others wait, then find them done.
The version is kept in table `schedd_schema`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Any, Concatenate, ParamSpec, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus

from schedd.db import (
    _STOP,
    Cursor,
    Database,
    SchemaTooNew,
    TxDialect,
    _Worker,
    migrations,
)
from schedd.errors import ConfigError, InvalidField, StorageUnavailable

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger(__name__)

READERS = 2  # reader connections (threads); reads are short, the writer is the bottleneck
CONNECT_TIMEOUT_S = 5
MIGRATION_LOCK = 0x5C4EDD  # pg_advisory_lock key of schedd's migrations

_INDEXED_BY = re.compile(r"\s+INDEXED BY \w+")
_LIKE = re.compile(r"\bLIKE\b")
_MAX2 = re.compile(r"\bmax\((\w+), \?\)")
_WRITES = ("INSERT", "UPDATE", "DELETE")


@lru_cache(maxsize=4096)
def translate(sql: str) -> tuple[str, bool]:
    """(PostgreSQL text of a store statement, whether it writes). Question marks inside
    quoted literals stay; a literal % is doubled (psycopg's placeholders)."""
    sql = _INDEXED_BY.sub("", sql)
    sql = _LIKE.sub("ILIKE", sql)
    sql = _MAX2.sub(r"greatest(\1, ?)", sql)
    parts = sql.split("'")
    for i in range(0, len(parts), 2):  # outside quotes
        parts[i] = parts[i].replace("%", "%%").replace("?", "%s")
    for i in range(1, len(parts), 2):  # inside quotes
        parts[i] = parts[i].replace("%", "%%")
    out = "'".join(parts)
    return out, out.lstrip().upper().startswith(_WRITES)


def _bind(params: Sequence[Any]) -> tuple[Any, ...]:
    """Bools as 0/1: the flag columns are integers on both databases. PostgreSQL's text
    cannot hold U+0000 (SQLite's can): a value with one is refused as the client's (a 422),
    never half-written (JSON columns hold it escaped, as \\u0000, and are not concerned)."""
    out = tuple(int(p) if p is True or p is False else p for p in params)
    for p in out:
        if type(p) is str and "\x00" in p:
            raise InvalidField(["body"], "a text value contains U+0000 (NUL), which the"
                               " PostgreSQL backend cannot store", "value_error")
    return out


class PgConn:
    """The transaction handle of a unit of work on PostgreSQL (see the module docstring):
    the part of sqlite3.Connection the store uses, over a psycopg connection."""

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw
        self.changes = 0  # rows written through it (db.write's "did it write" test)

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        text, writes = translate(sql)
        cur = self.raw.cursor()
        cur.execute(text, _bind(parameters) if parameters else None)
        if writes and cur.rowcount > 0:
            self.changes += cur.rowcount
        return cur

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor:
        text, writes = translate(sql)
        cur = self.raw.cursor()
        cur.executemany(text, [_bind(p) for p in parameters])
        if writes and cur.rowcount > 0:
            self.changes += cur.rowcount
        return cur

    def copy_rows(self, table: str, cols: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Insert rows with COPY (one statement, rows streamed): PostgreSQL only, for the
        store's bulk inserts. A unique violation fails the whole COPY (IntegrityError)."""
        with self.raw.cursor().copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as cp:
            for row in rows:
                cp.write_row(_bind(row))
        self.changes += len(rows)

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != TransactionStatus.IDLE


PG_TX = TxDialect(
    begin="BEGIN", savepoint="SAVEPOINT schedd_group",
    release="RELEASE SAVEPOINT schedd_group", rollback_to="ROLLBACK TO SAVEPOINT schedd_group",
    error=psycopg.Error,
    # a failed statement leaves PostgreSQL's transaction open (aborted until ROLLBACK TO); a
    # lost connection ends it
    alive=lambda conn: conn.in_transaction and not conn.raw.broken,
)


def fault_kind(exc: BaseException) -> str | None:
    """The StorageUnavailable kind of a PostgreSQL error, or None when it is not the
    storage's (a constraint, a bug): "io" for a lost or refused connection, "full" for a
    full disk or out of memory on the server, "locked" for a lock or statement timeout or a
    deadlock broken by the server, "readonly" for a read-only server (a standby)."""
    if isinstance(exc, pg_errors.DiskFull | pg_errors.OutOfMemory):
        return "full"
    if isinstance(exc, pg_errors.ReadOnlySqlTransaction):
        return "readonly"
    if isinstance(exc, pg_errors.LockNotAvailable | pg_errors.QueryCanceled
                  | pg_errors.DeadlockDetected | pg_errors.SerializationFailure):
        return "locked"
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return "io"
    return None


#: The SQLSTATEs (classes by their first two characters) of an error that says nothing of
#: the statement, only of the moment: the same statements can succeed on a later try.
#: 08 connection exception; 40 transaction rollback (40001 serialization_failure, 40P01
#: deadlock_detected, 40003 statement_completion_unknown) but not 40002, a deferred
#: constraint that fails again; 53 insufficient resources (disk full, out of memory, too
#: many connections); 55P03 lock_not_available (lock_timeout, NOWAIT) but not the rest of
#: class 55 (an object in the wrong state stays so); 57 operator intervention (57014
#: query_canceled and statement_timeout, an administrator's shutdown or cancel, a server
#: restarting); 58 the server's own I/O; 25006 a read-only server (a standby after a
#: failover). Not 54 program_limit_exceeded: a statement too large is so again.
_TRANSIENT_STATES = frozenset({"08", "40", "53", "55P03", "57", "58", "25006"})


def transient(exc: BaseException) -> bool:
    """Whether an error raised inside a unit of work is the storage's, for now
    (_TRANSIENT_STATES, or a connection error libpq gives no SQLSTATE), not the unit's: a
    constraint, a type or syntax error, a corrupt index (XX) would fail again. Each such
    error has a `fault_kind`, so that the write fails as StorageUnavailable."""
    if isinstance(exc, StorageUnavailable | MemoryError):
        return True
    if not isinstance(exc, psycopg.Error) or fault_kind(exc) is None:
        return False
    state = exc.sqlstate
    if state is None:  # libpq's own: the connection was lost or refused
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return state != "40002" and (state in _TRANSIENT_STATES or state[:2] in _TRANSIENT_STATES)


def _connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                           application_name="schedd")


def _schema_version(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT to_regclass('schedd_schema')").fetchone()
    if row is None or row[0] is None:
        return 0
    got = conn.execute("SELECT version FROM schedd_schema").fetchone()
    return 0 if got is None else int(got[0])


def migrate(url: str) -> None:
    """Bring the database's schema up to this schedd's, under the migration lock."""
    known = migrations("postgres")
    with _connect(url) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            current = _schema_version(conn)
            if current > len(known):
                raise SchemaTooNew(
                    f"PostgreSQL database schema version {current} is newer than this schedd "
                    f"({len(known)}); upgrade schedd or restore a backup")
            for version, sql in known[current:]:
                with conn.transaction():
                    conn.execute("CREATE TABLE IF NOT EXISTS schedd_schema (version INTEGER"
                                 " NOT NULL)")
                    conn.execute(sql)
                    conn.execute("DELETE FROM schedd_schema")
                    conn.execute("INSERT INTO schedd_schema (version) VALUES (%s)", (version,))
                log.info("PostgreSQL schema migrated to version %d", version)
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))


#: What a connection refused for good looks like. libpq keeps no SQLSTATE for a failed
#: connection (psycopg's OperationalError has sqlstate None), so the server's message, as
#: libpq passes it on, decides: 28P01 invalid_password, 28000 invalid_authorization_
#: specification (an unknown role, no pg_hba.conf entry, a failed peer or certificate
#: authentication; not LDAP, RADIUS or PAM, whose "authentication failed" is also what
#: an unreachable LDAP or RADIUS server gives: temporary, then), 3D000
#: invalid_catalog_name (no such database), 42501 no CONNECT privilege, 42704 and 22023
#: an unknown setting or a bad value in `options`; and libpq's own complaints about the
#: url (an invalid value or option, no password given where one is asked for). Anything
#: else (refused, unknown host, timeout, 57P03 starting up or shutting down, 53300 too
#: many connections, a message in another language) counts as temporary.
_REFUSED_FOR_GOOD = re.compile(
    r"(password|peer|certificate) authentication failed for user|no password supplied"
    r'|(role|database) "[^"]*" does not exist|no pg_hba\.conf entry'
    r"|permission denied for database|unrecognized configuration parameter"
    r"|invalid value for parameter|invalid (connection option|URI|\w+ value)")
#: The SQLSTATEs of errors that trying again cannot mend, when psycopg has one: class 28
#: (authorization), 3D000, and 42501 insufficient_privilege (e.g. a role without CREATE on
#: the schema, met when migrating).
_FOR_GOOD_SQLSTATE = re.compile(r"28...|3D000|42501")


def refused_for_good(exc: psycopg.Error) -> bool:
    """Whether a failure to connect to (or migrate) a database is permanent: a wrong
    password, an unknown role or database, a bad url or option, a missing privilege; not
    a server down, restarting, too busy or out of reach (see _REFUSED_FOR_GOOD)."""
    if exc.sqlstate is not None:
        return bool(_FOR_GOOD_SQLSTATE.fullmatch(exc.sqlstate))
    if isinstance(exc, psycopg.ProgrammingError):  # the url itself (psycopg's parser)
        return True
    return bool(_REFUSED_FOR_GOOD.search(str(exc)))


def prepare(url: str) -> None:
    """migrate(url). A database that refuses the connection for good (refused_for_good: a
    wrong password, an unknown role or database, a bad url, a missing privilege) is raised
    as ConfigError; one that cannot be reached now (refused, unknown host, timeout, starting
    up, too many clients) as StorageUnavailable("io"). Either message has no password and
    fits on one line. SchemaTooNew as migrate raises it."""
    try:
        migrate(url)
    except psycopg.Error as exc:
        message = one_line(_scrub(str(exc), url))
        if refused_for_good(exc):
            raise ConfigError(message) from None
        if isinstance(exc, psycopg.OperationalError):
            raise StorageUnavailable("io", message) from None
        raise


def one_line(text: str) -> str:
    """libpq's messages span lines (a hint on the next, tab-indented): joined with "; "."""
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


class PgDatabase(Database):
    """Database's interface over PostgreSQL: write, read, fetch_all/one, probe_write,
    fault, fault_listeners, commits. `path` is the url (never logged: it may hold a
    password)."""

    dialect = "postgres"
    _tx = PG_TX

    def __init__(self, url: str, *, readers: int = READERS) -> None:
        super().__init__(url)
        self.url = url
        self._nreaders = readers
        self._readers: list[_Worker] = []
        self._next_reader = 0

    async def open(self) -> None:
        try:
            await asyncio.to_thread(migrate, self.url)
            self._writer = _Worker("schedd-pg-writer", self._write_one, self._write_group)
            self._writer.conn = await self._writer.call(lambda: PgConn(_connect(self.url)))
            for i in range(self._nreaders):
                w = _Worker(f"schedd-pg-reader-{i}")
                self._readers.append(w)
                w.conn = await w.call(lambda: PgConn(_connect(self.url)))
        except psycopg.OperationalError as exc:
            await self.close()
            raise StorageUnavailable("io", _scrub(str(exc), self.url)) from None
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        readers, writer = self._readers, self._writer
        self._readers, self._writer = [], None
        for w in [*readers, *([writer] if writer is not None else [])]:
            conn, w.conn = w.conn, None
            if conn is not None:
                await w.call(conn.raw.close)
            w._queue.put(_STOP)

    # ------------------------------------------------------------------ the writer
    def _conn(self) -> PgConn:
        """The writer's connection, reconnected first when it was lost."""
        w = self._writer
        if w is None or w.conn is None:
            raise RuntimeError("database is not open")
        conn: PgConn = w.conn
        if conn.raw.closed or conn.raw.broken:
            with contextlib.suppress(Exception):
                conn.raw.close()
            conn = w.conn = PgConn(_connect(self.url))
        return conn

    async def write(self, fn: Callable[Concatenate[Any, P], T], *args: P.args,
                    **kwargs: P.kwargs) -> T:
        w = self._worker(self._writer)

        def unit() -> tuple[T, bool]:
            conn = self._conn()
            before = conn.changes
            result = fn(conn, *args, **kwargs)
            return result, conn.changes != before

        try:
            result, wrote = await w.call(unit, grouped=True)
        except psycopg.Error as exc:
            kind = fault_kind(exc)
            if kind is None:
                raise
            fault = StorageUnavailable(kind, _scrub(str(exc), self.url))
            self.fault = fault
            for listener in self.fault_listeners:
                listener(fault)
            raise fault from exc
        if wrote:
            self.fault = None
        return result

    def transient(self, exc: BaseException) -> bool:
        return transient(exc)

    async def probe_write(self) -> None:
        await self.write(_probe)
        self.fault = None

    # ------------------------------------------------------------------ readers
    async def read(self, fn: Callable[Concatenate[Any, P], T], *args: P.args,
                   **kwargs: P.kwargs) -> T:
        if not self._readers:
            raise RuntimeError("database is not open")
        w = self._readers[self._next_reader % len(self._readers)]
        self._next_reader += 1

        def unit() -> T:
            conn: PgConn = w.conn
            if not (conn.raw.closed or conn.raw.broken):
                try:
                    return fn(conn, *args, **kwargs)
                except psycopg.OperationalError:
                    if not conn.raw.broken:
                        raise
                # the connection was lost (a server restart, a proxy): a read changes
                # nothing, so it is asked again once on a new connection
            with contextlib.suppress(Exception):
                conn.raw.close()
            conn = w.conn = PgConn(_connect(self.url))
            return fn(conn, *args, **kwargs)

        try:
            return await w.call(unit)
        except psycopg.Error as exc:
            kind = fault_kind(exc)
            if kind is None:
                raise
            raise StorageUnavailable(kind, _scrub(str(exc), self.url)) from exc


def _probe(conn: PgConn) -> None:
    conn.execute("SELECT 1")


def _scrub(text: str, url: str) -> str:
    """An error message without the url's passwords (`password`, `sslpassword`), also
    when the url cannot be parsed: psycopg's parser quotes the part it could not read,
    which may be the password itself, so they are then found in the raw text too."""
    secrets: set[str] = set()
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        info = {}
    secrets.update(str(info[k]) for k in ("password", "sslpassword") if info.get(k))
    _, sep, rest = url.partition("://")
    if sep:
        authority = re.split(r"[/?]", rest, maxsplit=1)[0]
        userinfo = authority.rpartition("@")[0]
        if ":" in userinfo:
            raw = userinfo.split(":", 1)[1]
            secrets.update((raw, urllib.parse.unquote(raw)))
    for m in re.finditer(r"(?i)\b(?:ssl)?password\s*=\s*('[^']*'|[^&\s]*)", url):
        raw = m.group(1).strip("'")
        secrets.update((raw, urllib.parse.unquote(raw)))
    for secret in sorted((x for x in secrets if x), key=len, reverse=True):
        text = text.replace(secret, "********")
    return text
