"""`schedd migrate-data --from sqlite:PATH --to postgresql://…`: copy a SQLite deployment
into an empty PostgreSQL database.

What it does, in order:

1. opens the SQLite file read-only and checks that its schema is this schedd's (an older
   file must be migrated by starting this schedd on it once; a newer one is refused);
2. brings the target's schema up to this schedd's (the same migrations, under the same
   advisory lock, as `schedd serve` runs);
3. in ONE PostgreSQL transaction: locks every table, refuses a target that holds any row
   (exit 2), copies every table (COPY, in an order that satisfies the foreign keys) keeping
   every id, `seq` and instant as it is, recomputes the derived per-tenant schedule counts,
   sets every identity/serial sequence past the largest copied value, and compares each
   table's row count with the source's; only then commits. A failure at any step leaves
   the target as it was (empty, schema migrated).

Nothing is transformed: API keys are copied as their hashes (the same keys, and the same
key file, keep working), JSON columns as their text. The SQLite file is read inside one
read transaction, so the copy is a consistent snapshot; stop the daemon first all the same,
or what it writes afterwards is not copied.
"""

from __future__ import annotations

import re
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

# Tables in the order that satisfies their foreign keys (parents first). A table the
# source has and this list does not is copied after these (a later migration's table).
ORDER = (
    "tenants",
    "api_keys",
    "console_sessions",
    "schedules",
    "schedule_ext",
    "entity_definitions",
    "records",
    "occurrences",
    "runs",
    "syncs",
    "sync_runs",
    "shared_secrets",
)
# Kept by triggers from `schedules`: recomputed on the target, never copied.
DERIVED = ("schedule_counts",)
# PostgreSQL's own bookkeeping of its schema version.
PG_BOOKKEEPING = ("schedd_schema",)

COPY_ROWS_PER_PROGRESS = 100_000
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


class MigrateError(Exception):
    """A refusal or a failure, with the message to show (exit status `code`)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Report:
    tables: dict[str, int] = field(default_factory=dict)  # table -> rows copied
    sequences: dict[str, int] = field(default_factory=dict)  # "table.column" -> next value


# -- arguments ---------------------------------------------------------------------------


def sqlite_path(source: str) -> Path:
    """PATH of `sqlite:PATH` (also `sqlite:///abs/path`)."""
    if not source.startswith("sqlite:"):
        raise MigrateError(f"--from must be sqlite:PATH (got {source!r})")
    path = source[len("sqlite:") :]
    if path.startswith("///"):
        path = path[2:]
    elif path.startswith("//"):
        raise MigrateError("--from: sqlite://HOST/... is not a file; use sqlite:PATH")
    if not path:
        raise MigrateError("--from: sqlite: needs a PATH (sqlite:/var/lib/schedd/schedd.db)")
    p = Path(path)
    if not p.is_file():
        raise MigrateError(f"--from: {p}: no such SQLite database")
    return p


def redact(url: str) -> str:
    """The url without its password, to show in messages."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "the --to url"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    user = urllib.parse.quote(parts.username or "", safe="")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:********@{host}"))


def check_target_url(url: str) -> None:
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError as exc:
        raise MigrateError(f"--to: not a valid URL ({exc})") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise MigrateError(
            f"--to must be a postgresql://USER:PASSWORD@HOST:PORT/DATABASE url"
            f" (got scheme {parts.scheme or 'none'!r})"
        )
    if not parts.path.strip("/") and "dbname=" not in parts.query:
        raise MigrateError("--to: the url names no database (postgresql://HOST/DATABASE)")


# -- the source ----------------------------------------------------------------------------


def _open_source(path: Path) -> sqlite3.Connection:
    from schedd.db import migrations

    con = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        con.execute("PRAGMA busy_timeout = 10000")
        version = int(con.execute("PRAGMA user_version").fetchone()[0])
        has_schedules = con.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schedules'"
        ).fetchone()
    except sqlite3.DatabaseError as exc:
        con.close()
        raise MigrateError(f"--from: {path}: not a SQLite database ({exc})") from None
    known = len(migrations())
    if version == 0 or not has_schedules:
        con.close()
        raise MigrateError(f"--from: {path}: not a schedd database")
    if version > known:
        con.close()
        raise MigrateError(
            f"--from: {path}: schema version {version} is newer than this schedd ({known});"
            " upgrade schedd first"
        )
    if version < known:
        con.close()
        raise MigrateError(
            f"--from: {path}: schema version {version} is older than this schedd's ({known}):"
            f" start this schedd on it once (schedd serve --db {path}), stop it, and run"
            " migrate-data again"
        )
    return con


def _source_tables(con: sqlite3.Connection) -> list[str]:
    names = [
        str(r[0])
        for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    first = [t for t in ORDER if t in names]
    rest = sorted(t for t in names if t not in ORDER and t not in DERIVED)
    return first + rest


def _columns(con: sqlite3.Connection, table: str) -> list[str]:
    return [str(r[1]) for r in con.execute(f'PRAGMA table_info("{table}")')]


# -- the target ----------------------------------------------------------------------------


def _connect(url: str) -> psycopg.Connection[Any]:
    try:
        import psycopg
    except ImportError:
        raise MigrateError(
            "PostgreSQL needs psycopg: pip install 'schedd[postgres]'", code=2
        ) from None
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise MigrateError(
            f"--to: cannot connect to {redact(url)}: {_first_line(exc, url)}"
        ) from None


def _first_line(exc: BaseException, url: str) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    try:
        password = urllib.parse.urlsplit(url).password
    except ValueError:
        password = None
    return text.replace(password, "********") if password else text


def _target_tables(conn: psycopg.Connection[Any]) -> dict[str, list[str]]:
    rows = conn.execute(
        "SELECT c.table_name, c.column_name FROM information_schema.columns c"
        " JOIN information_schema.tables t"
        "   ON t.table_schema = c.table_schema AND t.table_name = c.table_name"
        " WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'"
        " ORDER BY c.table_name, c.ordinal_position"
    ).fetchall()
    out: dict[str, list[str]] = {}
    for table, column in rows:
        out.setdefault(str(table), []).append(str(column))
    return out


def _quote(name: str) -> str:
    if not _IDENT.match(name):
        raise MigrateError(f"unexpected table or column name {name!r}", code=1)
    return f'"{name}"'


def _rows(con: sqlite3.Connection, table: str, cols: list[str]) -> Iterator[tuple[Any, ...]]:
    sql = f"SELECT {', '.join(_quote(c) for c in cols)} FROM {_quote(table)}"
    try:
        cur = con.execute(sql)
        while batch := cur.fetchmany(2000):
            yield from batch
    except sqlite3.OperationalError as exc:  # e.g. text that is not UTF-8
        raise MigrateError(f"reading {table}: {exc}", code=1) from None


def _check_row(table: str, cols: list[str], row: tuple[Any, ...]) -> None:
    for col, value in zip(cols, row, strict=True):
        if isinstance(value, str) and "\x00" in value:
            raise MigrateError(
                f"{table}.{col}: a value holds a NUL character ({value[:40]!r}),"
                " which PostgreSQL text cannot store; fix or delete that row first",
                code=1,
            )
        if isinstance(value, bytes):
            raise MigrateError(f"{table}.{col}: a binary value where schedd writes text", code=1)


def migrate(
    source: str, target: str, *, progress: Callable[[str], None] | None = None
) -> Report:
    """Copy the SQLite deployment at `source` (sqlite:PATH) into the empty PostgreSQL
    database at `target`. Raises MigrateError with what to tell the user."""
    say = progress or (lambda _msg: None)
    path = sqlite_path(source)
    check_target_url(target)
    src = _open_source(path)
    with closing(src):
        conn = _connect(target)
        with conn:
            from schedd.db import SchemaTooNew
            from schedd.pgdb import migrate as migrate_schema

            say(f"migrating the schema of {redact(target)}")
            try:
                migrate_schema(target)
            except SchemaTooNew as exc:
                raise MigrateError(f"--to: {exc}") from None
            except Exception as exc:
                raise MigrateError(
                    f"--to: the schema could not be created: {_first_line(exc, target)}"
                ) from None
            return _copy(src, conn, say)


def _copy(
    src: sqlite3.Connection, conn: psycopg.Connection[Any], say: Callable[[str], None]
) -> Report:
    report = Report()
    target_cols = _target_tables(conn)
    tables = _source_tables(src)
    plan: list[tuple[str, list[str]]] = []
    for table in tables:
        cols = _columns(src, table)
        if table not in target_cols:
            raise MigrateError(
                f"table {table} has no PostgreSQL twin in this schedd's schema", code=1
            )
        missing = [c for c in cols if c not in target_cols[table]]
        if missing:
            raise MigrateError(
                f"{table}: column(s) {', '.join(missing)} missing on PostgreSQL", code=1
            )
        plan.append((table, cols))

    src.execute("BEGIN")  # one read snapshot of the whole file
    try:
        with conn.transaction():
            data_tables = [t for t in target_cols if t not in PG_BOOKKEEPING]
            conn.execute(
                "LOCK TABLE "
                + ", ".join(_quote(t) for t in sorted(data_tables))
                + " IN ACCESS EXCLUSIVE MODE"
            )
            for t in sorted(data_tables):
                if conn.execute(f"SELECT EXISTS (SELECT 1 FROM {_quote(t)})").fetchone() != (
                    False,
                ):
                    raise MigrateError(
                        f"the target database is not empty (table {t} has rows):"
                        " migrate-data copies only into an empty database"
                    )
            for table, cols in plan:
                report.tables[table] = _copy_table(src, conn, table, cols, say)
            _recount(conn, target_cols)
            report.sequences = _reset_sequences(conn, [t for t, _ in plan])
            _verify(src, conn, [t for t, _ in plan], target_cols)
    finally:
        src.rollback()
    return report


def _copy_table(
    src: sqlite3.Connection,
    conn: psycopg.Connection[Any],
    table: str,
    cols: list[str],
    say: Callable[[str], None],
) -> int:
    n = 0
    collist = ", ".join(_quote(c) for c in cols)
    with conn.cursor() as cur, cur.copy(f"COPY {_quote(table)} ({collist}) FROM STDIN") as copy:
        for row in _rows(src, table, cols):
            _check_row(table, cols, row)
            copy.write_row(row)
            n += 1
            if n % COPY_ROWS_PER_PROGRESS == 0:
                say(f"  {table}: {n:,} rows")
    say(f"{table}: {n:,} rows copied")
    return n


def _recount(conn: psycopg.Connection[Any], target_cols: dict[str, list[str]]) -> None:
    """schedule_counts is kept by triggers from `schedules`: whatever the copy's triggers
    left, make it exactly the count of the copied rows."""
    if "schedule_counts" in target_cols:
        conn.execute("DELETE FROM schedule_counts")
        conn.execute(
            "INSERT INTO schedule_counts (tenant_id, status, n)"
            " SELECT tenant_id, status, count(*) FROM schedules GROUP BY tenant_id, status"
        )


def _reset_sequences(conn: psycopg.Connection[Any], tables: list[str]) -> dict[str, int]:
    """Every identity or serial column's sequence continues after the largest copied value
    (the copy wrote the values themselves, which leaves the sequences at their start)."""
    out: dict[str, int] = {}
    rows = conn.execute(
        "SELECT table_name, column_name, pg_get_serial_sequence(quote_ident(table_name),"
        " column_name) FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = ANY(%s)"
        "   AND pg_get_serial_sequence(quote_ident(table_name), column_name) IS NOT NULL",
        (tables,),
    ).fetchall()
    for table, column, seq in rows:
        got = conn.execute(
            f"SELECT coalesce(max({_quote(str(column))}), 0) + 1 FROM {_quote(str(table))}"
        ).fetchone()
        nxt = int(got[0]) if got else 1
        conn.execute("SELECT setval(%s::regclass, %s, false)", (seq, nxt))
        out[f"{table}.{column}"] = nxt
    return out


def _verify(
    src: sqlite3.Connection,
    conn: psycopg.Connection[Any],
    tables: list[str],
    target_cols: dict[str, list[str]],
) -> None:
    wrong = []
    for table in tables:
        a = src.execute(f"SELECT count(*) FROM {_quote(table)}").fetchone()[0]
        b = conn.execute(f"SELECT count(*) FROM {_quote(table)}").fetchone()
        if b is None or int(b[0]) != int(a):
            wrong.append(f"{table}: {a} in SQLite, {b[0] if b else '?'} in PostgreSQL")
    if "schedule_counts" in target_cols and "schedule_counts" in _source_set(src):
        a_counts = {
            (str(t), str(s)): int(n)
            for t, s, n in src.execute("SELECT tenant_id, status, n FROM schedule_counts")
            if int(n) != 0
        }
        b_counts = {
            (str(t), str(s)): int(n)
            for t, s, n in conn.execute("SELECT tenant_id, status, n FROM schedule_counts")
            if int(n) != 0
        }
        if a_counts != b_counts:
            wrong.append(f"schedule_counts: {a_counts} in SQLite, {b_counts} in PostgreSQL")
    if wrong:
        raise MigrateError("the copy does not match (nothing committed): " + "; ".join(wrong), 1)


def _source_set(src: sqlite3.Connection) -> set[str]:
    return {str(r[0]) for r in src.execute("SELECT name FROM sqlite_master WHERE type='table'")}
