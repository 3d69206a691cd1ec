"""SQLite access: one WAL writer with explicit transactions, one read-only reader.

aiosqlite serialises statements, not transactions, so every multi-statement write runs in
`async with db.write_tx() as conn:` which holds an asyncio.Lock and `BEGIN IMMEDIATE`.
Reads go through a separate read-only connection and see committed data only.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite


class SchemaTooNew(RuntimeError):
    """The database was written by a newer schedd."""


_MIGRATION_NAME = re.compile(r"^(\d{4})_[\w-]+\.sql$")
BUSY_TIMEOUT_MS = 5000


def migrations() -> list[tuple[int, str]]:
    """(version, sql) of every packaged migration, in order; versions are 1, 2, 3, ..."""
    found: list[tuple[int, str]] = []
    for entry in resources.files("schedd.migrations").iterdir():
        m = _MIGRATION_NAME.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry.read_text(encoding="utf-8")))
    found.sort()
    if [v for v, _ in found] != list(range(1, len(found) + 1)):
        raise RuntimeError("migrations must be numbered 0001, 0002, ... without gaps")
    return found


class Database:
    """Owns the writer and the reader connection; close() (or `async with`) closes both."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._writer = await aiosqlite.connect(self.path, isolation_level=None)
            w = self._writer
            await w.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = await (await w.execute("PRAGMA journal_mode = WAL")).fetchone()
            if self.path != ":memory:" and (mode is None or str(mode[0]).lower() != "wal"):
                raise RuntimeError(f"{self.path}: could not switch the database to WAL mode")
            await w.execute("PRAGMA synchronous = NORMAL")
            await w.execute("PRAGMA foreign_keys = ON")
            await self._migrate(w)
            uri = Path(self.path).resolve().as_uri() + "?mode=ro"  # noqa: ASYNC240
            if self.path == ":memory:":
                self._reader = w
            else:
                self._reader = await aiosqlite.connect(uri, uri=True, isolation_level=None)
                await self._reader.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        reader, writer = self._reader, self._writer
        self._reader = self._writer = None
        if reader is not None and reader is not writer:
            await reader.close()
        if writer is not None:
            await writer.close()

    async def _migrate(self, w: aiosqlite.Connection) -> None:
        row = await (await w.execute("PRAGMA user_version")).fetchone()
        current = int(row[0]) if row else 0
        known = migrations()
        if current > len(known):
            raise SchemaTooNew(
                f"{self.path}: database schema version {current} is newer than this schedd "
                f"({len(known)}); upgrade schedd or restore a backup"
            )
        for version, sql in known[current:]:
            await w.executescript(
                f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;"
            )

    @property
    def writer(self) -> aiosqlite.Connection:
        if self._writer is None:
            raise RuntimeError("database is not open")
        return self._writer

    @property
    def reader(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise RuntimeError("database is not open")
        return self._reader

    @asynccontextmanager
    async def write_tx(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any exception)."""
        async with self._lock:
            w = self.writer
            await w.execute("BEGIN IMMEDIATE")
            try:
                yield w
            except BaseException:
                await w.execute("ROLLBACK")
                raise
            else:
                await w.execute("COMMIT")

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> Iterable[sqlite3.Row]:
        return await self.reader.execute_fetchall(sql, params)

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = list(await self.reader.execute_fetchall(sql, params))
        return rows[0] if rows else None


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
