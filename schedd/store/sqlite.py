"""Every SQL statement of schedd. Typed functions; instants are bound parameters (never
SQL's clock); no rules here, those live in services, engine and policies.

Every method is synchronous and takes the sqlite3 connection `c` it runs on as its first
argument, so callers compose them into one unit of work run on the database's thread:
`await db.write(fn)` (one transaction) or `await db.read(store.get_run, tenant, id)`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from enum import Enum
from functools import lru_cache
from operator import attrgetter
from typing import Any, TypeVar

import msgspec

from schedd.db import Conn, Database
from schedd.models import (
    ApiKey,
    EntityDefinition,
    EntityRecord,
    Run,
    RunStatus,
    RunTally,
    Schedule,
    ScheduleExt,
    ScheduleTally,
)

T = TypeVar("T", bound=msgspec.Struct)

SCHEDULE_COLS: tuple[str, ...] = Schedule.__struct_fields__
RUN_COLS: tuple[str, ...] = Run.__struct_fields__
_TALLY_COLS = ScheduleTally.__struct_fields__[:-1]  # all but paused_reason
_TALLY_OF_ACTIVE = (
    "SELECT r.id, " + ", ".join(f"s.{col}" for col in _TALLY_COLS)
    + " FROM runs r LEFT JOIN schedules s ON s.id = r.schedule_id"
    " WHERE r.id IN {in} AND r.status IN ('pending', 'running')")
_JSON_COLS = frozenset({"action_config", "relative_filter", "result", "resolved_payload",
                        "fields", "data", "config_patch"})
DEF_COLS: tuple[str, ...] = EntityDefinition.__struct_fields__
_D_SELECT = ", ".join(DEF_COLS)
_REC_COLS: tuple[str, ...] = EntityRecord.__struct_fields__
_REC_SELECT = ", ".join(_REC_COLS)
# A record write: created_ms stays what it was when the key existed.
_REC_UPSERT = ("INSERT INTO records (definition_id, key, data, created_ms, updated_ms)"
               " VALUES (?, ?, ?, ?, ?) ON CONFLICT (definition_id, key) DO UPDATE SET"
               " data = excluded.data, updated_ms = excluded.updated_ms")
_OCC_UPSERT = ("INSERT INTO occurrences (schedule_seq, record_key, next_ms, fired_ms)"
               " VALUES (?, ?, ?, ?) ON CONFLICT (schedule_seq, record_key) DO UPDATE SET"
               " next_ms = excluded.next_ms, fired_ms = excluded.fired_ms")
_S_SELECT = ", ".join(SCHEDULE_COLS)
_S_COLS_OF_S = ", ".join(f"s.{col}" for col in SCHEDULE_COLS)
_R_SELECT = ", ".join(RUN_COLS)
_S_INSERT = (
    f"INSERT INTO schedules ({_S_SELECT}) VALUES ({', '.join('?' * len(SCHEDULE_COLS))})"
)
_R_INSERT = f"INSERT INTO runs ({_R_SELECT}) VALUES ({', '.join('?' * len(RUN_COLS))})"
_R_INSERT_OR_IGNORE = _R_INSERT + " ON CONFLICT DO NOTHING"  # both dialects
_S_UPDATE_COLS = tuple(c for c in SCHEDULE_COLS if c not in ("id", "tenant_id", "created_ms"))
_S_UPDATE = f"UPDATE schedules SET {', '.join(f'{c} = ?' for c in _S_UPDATE_COLS)} WHERE id = ?"
# What a claim changes of a schedule. Naming only these keeps the schedule's other indexes
# (tenant, dedup) untouched: SQLite updates the indexes of the columns a SET names.
_ADVANCE_COLS = ("next_run_ms", "status", "last_error", "missed_count", "updated_ms")
_S_ADVANCE = f"UPDATE schedules SET {', '.join(f'{c} = ?' for c in _ADVANCE_COLS)} WHERE id = ?"
# What recording an outcome changes (status and paused_reason only when it pauses).
_S_TALLY = ("UPDATE schedules SET run_count = ?, last_run_ms = ?, last_run_status = ?,"
            " consecutive_failures = ?, updated_ms = ? WHERE id = ?")

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()


def _from_row(cls: type[T], cols: Sequence[str], row: Sequence[Any]) -> T:
    read: Callable[[Sequence[Any]], T] = _reader(cls, tuple(cols))
    return read(row)


_AS_STORED = (str, int, str | None, int | None)


@lru_cache(maxsize=16)
def _reader(cls: type[T], cols: tuple[str, ...]) -> Callable[[Sequence[Any]], T]:
    """A function that builds `cls` from a row of `cols`, generated once per (cls, cols):
    one keyword call of the struct's constructor, each value taken as SQLite returns it
    (STRICT tables: an INTEGER column holds an int, a TEXT one a str), except enums (looked
    up by value), bools (0/1) and JSON columns (decoded). msgspec.convert of a dict did
    the same generically at ~5 µs a schedule row, which the engine reads for every fire."""
    hints = {f.name: f.type for f in msgspec.structs.fields(cls)}
    if set(cols) - set(hints):
        raise ValueError(f"{cls.__name__} has no field(s) {sorted(set(cols) - set(hints))}")
    env: dict[str, Any] = {"cls": cls, "dec": _dec.decode}
    args = []
    for i, col in enumerate(cols):
        kind = hints[col]
        if col in _JSON_COLS:
            expr = f"None if r[{i}] is None else dec(r[{i}])"
        elif isinstance(kind, type) and issubclass(kind, Enum):
            env[f"E{i}"] = {m.value: m for m in kind}
            expr = f"E{i}[r[{i}]]"
        elif kind is bool:
            expr = f"bool(r[{i}])"
        elif kind in _AS_STORED:
            expr = f"r[{i}]"
        else:  # a new kind of field: say how to read it here
            raise TypeError(f"{cls.__name__}.{col}: no conversion for {kind}")
        args.append(f"{col}=({expr})")
    exec(f"def read(r):\n    return cls({', '.join(args)})", env)  # noqa: S102
    read: Callable[[Sequence[Any]], T] = env["read"]
    return read


@lru_cache(maxsize=64)
def _getter(cols: tuple[str, ...]) -> tuple[Callable[[Any], Any], tuple[int, ...]]:
    """For a column list: one attrgetter of them all, and where the JSON columns are."""
    return attrgetter(*cols), tuple(i for i, c in enumerate(cols) if c in _JSON_COLS)


def _values(obj: msgspec.Struct, cols: Iterable[str]) -> list[Any]:
    """The bound parameters of `cols` of obj: JSON columns encoded, the rest as they are
    (sqlite3 binds bools and str enums as integers and text)."""
    key = cols if isinstance(cols, tuple) else tuple(cols)
    get, json_at = _getter(key)
    values = list(get(obj)) if len(key) > 1 else [get(obj)]
    for i in json_at:
        if values[i] is not None:
            values[i] = _enc.encode(values[i]).decode()
    return values


def schedule_from_row(row: Sequence[Any]) -> Schedule:
    return _from_row(Schedule, SCHEDULE_COLS, row)


def run_from_row(row: Sequence[Any]) -> Run:
    return _from_row(Run, RUN_COLS, row)


def _tally_from_row(row: Sequence[Any]) -> ScheduleTally:
    return _from_row(ScheduleTally, _TALLY_COLS, row)


def _where_in_args(c: Conn, sql: str, head: Sequence[Any], ids: Sequence[str]) -> list[Any]:
    """_where_in with leading parameters `head` bound before the ids of each chunk."""
    distinct = list(dict.fromkeys(ids))
    rows: list[Any] = []
    for i in range(0, len(distinct), 500):
        chunk = distinct[i : i + 500]
        rows += _all(c, sql.format(**{"in": f"({','.join('?' * len(chunk))})"}),
                     [*head, *chunk])
    return rows


def _all(c: Conn, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    return c.execute(sql, params).fetchall()


def _where_in(c: Conn, sql: str, ids: Sequence[str]) -> list[Any]:
    """Rows of `sql`, whose `{in}` is filled with `(?, ?, ...)`, for every id (distinct), in
    chunks that stay below SQLite's parameter limit."""
    distinct = list(dict.fromkeys(ids))
    rows: list[Any] = []
    for i in range(0, len(distinct), 500):
        chunk = distinct[i : i + 500]
        rows += _all(c, sql.format(**{"in": f"({','.join('?' * len(chunk))})"}), chunk)
    return rows


class Store:
    """Every statement over the schedules, runs, keys, records and their neighbours, in the
    SQL SQLite and PostgreSQL share (store/postgres.py overrides what must differ)."""

    #: what a unique index refusing a row raises through this store's connections
    integrity_errors: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)

    #: Several nodes on one database (a PostgreSQL store sets these): ROW_CLAIM ends a
    #: SELECT of rows this transaction is about to change (pending runs it starts, expired
    #: runs it fails), so that another node's transaction skips them rather than taking
    #: them too; RECORD_LOCK ends the read of the runs an outcome is recorded for, so that
    #: two nodes recording the same run (its node, and one failing it after its lease)
    #: take turns and the second finds it finished. SQLite has one writer: nothing to add.
    ROW_CLAIM = ""
    RECORD_LOCK = ""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._seqs: dict[str, int] = {}  # schedule id -> seq (occurrence rows)

    # ------------------------------------------------------------------ tenants and keys
    def tenant_id_by_name(self, c: Conn, name: str) -> str | None:
        rows = _all(c, "SELECT id FROM tenants WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    def insert_tenant(self, c: Conn, tenant_id: str, name: str, now_ms: int) -> None:
        c.execute("INSERT INTO tenants (id, name, created_ms) VALUES (?, ?, ?)",
                  (tenant_id, name, now_ms))

    def insert_key(self, c: Conn, key_id: str, tenant_id: str, prefix: str, key_hash: str,
                   now_ms: int) -> None:
        c.execute(
            "INSERT INTO api_keys (id, tenant_id, prefix, key_hash, created_ms) VALUES (?,?,?,?,?)",
            (key_id, tenant_id, prefix, key_hash, now_ms),
        )

    def ping(self, c: Conn) -> None:
        """A trivial read: the database answers."""
        _all(c, "SELECT 1")

    def count_keys(self, c: Conn) -> int:
        return int(_all(c, "SELECT count(*) FROM api_keys")[0][0])

    def list_keys(self, c: Conn) -> list[ApiKey]:
        rows = _all(
            c,
            "SELECT k.id, k.tenant_id, t.name, k.prefix, k.created_ms, k.last_used_ms, k.revoked_ms"
            " FROM api_keys k JOIN tenants t ON t.id = k.tenant_id ORDER BY k.created_ms, k.id",
        )
        cols = ("id", "tenant_id", "tenant_name", "prefix", "created_ms", "last_used_ms",
                "revoked_ms")
        return [_from_row(ApiKey, cols, r) for r in rows]

    def revoke_key(self, c: Conn, key_id: str, now_ms: int) -> bool:
        cur = c.execute(
            "UPDATE api_keys SET revoked_ms = ? WHERE id = ? AND revoked_ms IS NULL",
            (now_ms, key_id),
        )
        revoked: bool = cur.rowcount == 1
        if revoked:
            self.signal_revocation(c, key_id)
        return revoked

    def signal_revocation(self, c: Conn, key_id: str) -> None:
        """Tell the other nodes of a shared database, when this transaction commits, that
        the key was revoked (PostgreSQL: NOTIFY). One SQLite file has one node: nothing."""

    def key_exists(self, c: Conn, key_id: str) -> bool:
        return bool(_all(c, "SELECT 1 FROM api_keys WHERE id = ?", (key_id,)))

    def active_key_by_hash(self, c: Conn, key_hash: str) -> tuple[str, str, int | None] | None:
        """(key id, tenant id, last used) of a key that is not revoked."""
        rows = _all(
            c,
            "SELECT id, tenant_id, last_used_ms FROM api_keys"
            " WHERE key_hash = ? AND revoked_ms IS NULL",
            (key_hash,),
        )
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    def touch_key(self, c: Conn, key_id: str, now_ms: int) -> None:
        c.execute("UPDATE api_keys SET last_used_ms = ? WHERE id = ?", (now_ms, key_id))

    # ------------------------------------------------------------------ console sessions
    def shared_secret(self, c: Conn, name: str) -> str | None:
        rows = _all(c, "SELECT value FROM shared_secrets WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    def ensure_shared_secret(self, c: Conn, name: str, value: str, now_ms: int) -> str:
        """The secret `name`, stored as `value` unless a node stored one first."""
        c.execute(
            "INSERT INTO shared_secrets (name, value, created_ms) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO NOTHING",
            (name, value, now_ms),
        )
        got = self.shared_secret(c, name)
        if got is None:
            raise RuntimeError(f"the shared secret {name!r} was not stored")
        return got

    def insert_console_session(self, c: Conn, token_hash: str, key_id: str, tenant_id: str,
                               now_ms: int, expires_ms: int) -> None:
        c.execute("DELETE FROM console_sessions WHERE expires_ms <= ?", (now_ms,))
        c.execute(
            "INSERT INTO console_sessions (token_hash, key_id, tenant_id, created_ms, expires_ms)"
            " VALUES (?, ?, ?, ?, ?)",
            (token_hash, key_id, tenant_id, now_ms, expires_ms),
        )

    def console_session_tenant(self, c: Conn, token_hash: str, now_ms: int) -> str | None:
        """The tenant of a live session whose key is not revoked, else None."""
        rows = _all(
            c,
            "SELECT s.tenant_id FROM console_sessions s JOIN api_keys k ON k.id = s.key_id"
            " WHERE s.token_hash = ? AND s.expires_ms > ? AND k.revoked_ms IS NULL",
            (token_hash, now_ms),
        )
        return str(rows[0][0]) if rows else None

    def delete_console_session(self, c: Conn, token_hash: str) -> None:
        c.execute("DELETE FROM console_sessions WHERE token_hash = ?", (token_hash,))

    def tenant_recent_runs(self, c: Conn, tenant_id: str, since_ms: int,
                           limit: int) -> list[tuple[str, int | None, int, int | None]]:
        """(status, started_ms, due_ms, completed_ms) of the tenant's newest runs (at most
        `limit`) created since `since_ms`: the console's health page."""
        rows = _all(
            c,
            "SELECT status, started_ms, due_ms, completed_ms FROM runs"
            " WHERE tenant_id = ? AND triggered_ms >= ? ORDER BY seq DESC LIMIT ?",
            (tenant_id, since_ms, limit),
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    # ------------------------------------------------------------------ schedules
    def insert_schedule(self, c: Conn, s: Schedule) -> None:
        c.execute(_S_INSERT, _values(s, SCHEDULE_COLS))

    def update_schedule(self, c: Conn, s: Schedule) -> None:
        """Write every column of one schedule (API changes)."""
        c.execute(_S_UPDATE, [*_values(s, _S_UPDATE_COLS), s.id])

    def advance_schedules(self, c: Conn, items: Sequence[Schedule]) -> None:
        """Write what a claim changed: next run, status, last error, missed count."""
        if items:
            c.executemany(_S_ADVANCE, [[*_values(s, _ADVANCE_COLS), s.id] for s in items])

    def tally_schedules(self, c: Conn, items: Iterable[ScheduleTally], now_ms: int) -> None:
        """Write what recording outcomes changed: counters, last run; pauses."""
        # by id: each UPDATE locks its row until the commit; two nodes tallying overlapping
        # schedules lock them in one order (no deadlock between them)
        items = sorted(items, key=attrgetter("id"))
        c.executemany(_S_TALLY, [(t.run_count, t.last_run_ms, t.last_run_status,
                                  t.consecutive_failures, now_ms, t.id) for t in items])
        paused = [(t.paused_reason, t.id) for t in items if t.paused_reason is not None]
        if paused:
            c.executemany("UPDATE schedules SET status = 'paused', paused_reason = ?"
                          " WHERE id = ? AND status = 'active'", paused)

    def delete_schedule(self, c: Conn, schedule_id: str) -> None:
        """Delete a schedule and its occurrence rows (a relative schedule's): a later
        schedule may reuse its seq (INTEGER PRIMARY KEY), and must not inherit them."""
        c.execute("DELETE FROM occurrences WHERE schedule_seq ="
                  " (SELECT seq FROM schedules WHERE id = ?)", (schedule_id,))
        c.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,))

    def get_schedule(self, c: Conn, tenant_id: str | None, schedule_id: str) -> Schedule | None:
        if tenant_id is None:
            rows = _all(c, f"SELECT {_S_SELECT} FROM schedules WHERE id = ?", (schedule_id,))
        else:
            rows = _all(c, f"SELECT {_S_SELECT} FROM schedules WHERE id = ? AND tenant_id = ?",
                        (schedule_id, tenant_id))
        return schedule_from_row(rows[0]) if rows else None

    def find_by_dedup_key(self, c: Conn, tenant_id: str, key: str) -> Schedule | None:
        rows = _all(
            c, f"SELECT {_S_SELECT} FROM schedules WHERE tenant_id = ? AND deduplication_key = ?",
            (tenant_id, key),
        )
        return schedule_from_row(rows[0]) if rows else None

    def list_schedules(
        self,
        c: Conn,
        tenant_id: str,
        *,
        customer_id: str | None,
        external_id: str | None,
        status: str | None,
        limit: int,
        offset: int,
        text: str | None = None,
    ) -> tuple[list[Schedule], int]:
        where, params = ["tenant_id = ?"], [tenant_id]
        for col, val in (("customer_id", customer_id), ("external_id", external_id),
                         ("status", status)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        if text:
            # the console's text filter: name, description or expression contain it
            like = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append("(name LIKE ? ESCAPE '\\' OR coalesce(description, '') LIKE ?"
                         " ESCAPE '\\' OR coalesce(schedule_expression, '') LIKE ? ESCAPE '\\')")
            params += [like, like, like]
        cond = " AND ".join(where)
        if customer_id is None and external_id is None and not text:
            # kept by triggers (migration 0006): a few rows, however many schedules
            # (any other filter counts its matches)
            total = _all(c, "SELECT coalesce(sum(n), 0) FROM schedule_counts WHERE "
                         + cond, params)[0][0]
        else:
            total = _all(c, f"SELECT count(*) FROM schedules WHERE {cond}", params)[0][0]
        rows = _all(
            c, f"SELECT {_S_SELECT} FROM schedules WHERE {cond} ORDER BY seq LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [schedule_from_row(r) for r in rows], int(total)

    def due_schedules(self, c: Conn, now_ms: int, limit: int) -> list[Schedule]:
        rows = _all(
            c,
            f"SELECT {_S_SELECT} FROM schedules INDEXED BY schedules_due"
            " WHERE status = 'active' AND next_run_ms IS NOT NULL AND next_run_ms <= ?"
            " ORDER BY next_run_ms LIMIT ?",
            (now_ms, limit),
        )
        return [schedule_from_row(r) for r in rows]

    def count_schedules_by_status(self, c: Conn) -> dict[str, int]:
        rows = _all(c, "SELECT status, sum(n) FROM schedule_counts GROUP BY status")
        return {str(r[0]): int(r[1]) for r in rows}

    def schedules_by_ids(self, c: Conn, ids: Sequence[str]) -> dict[str, Schedule]:
        rows = _where_in(c, f"SELECT {_S_SELECT} FROM schedules WHERE id IN {{in}}", ids)
        return {s.id: s for s in map(schedule_from_row, rows)}

    def unleased_running_runs(self, c: Conn) -> list[Run]:
        """Runs `running` without a worker's lease: at start, those a dead process left.
        Read through runs_active (SQLite would otherwise scan every run in seq order)."""
        return [run_from_row(r) for r in _all(
            c, f"SELECT {_R_SELECT} FROM runs INDEXED BY runs_active"
               " WHERE status IN ('pending', 'running') AND status = 'running'"
               " AND lease_until_ms IS NULL ORDER BY seq")]

    def recoverable_runs(self, c: Conn, now_ms: int, previous: Sequence[str]) -> list[Run]:
        """Runs `running` without a worker's lease that no live node holds, at a node's
        start on a shared database: a node's lease ran out, the node is one of `previous`
        (this node's earlier lives), or no node (a copy from before node leases)."""
        nodes = list(dict.fromkeys(previous))
        in_prev = f" OR node_id IN ({','.join('?' * len(nodes))})" if nodes else ""
        return [run_from_row(r) for r in _all(
            c, f"SELECT {_R_SELECT} FROM runs INDEXED BY runs_active"
               " WHERE status IN ('pending', 'running') AND status = 'running'"
               " AND lease_until_ms IS NULL AND (node_id IS NULL OR node_lease_until_ms <= ?"
               f"{in_prev}) ORDER BY seq{self.ROW_CLAIM}", [now_ms, *nodes])]

    def expired_node_runs(self, c: Conn, now_ms: int, limit: int, *,
                          other_than: str) -> list[Run]:
        """Runs `running` whose node lease ran out by now_ms (their node died or stalled),
        oldest first, of nodes other than `other_than` (the asking node knows its own).
        Read through runs_active: the active runs only, no index of its own (a node asks
        every few seconds, not per run)."""
        return [run_from_row(r) for r in _all(
            c, f"SELECT {_R_SELECT} FROM runs INDEXED BY runs_active"
               " WHERE status IN ('pending', 'running') AND status = 'running'"
               " AND lease_until_ms IS NULL AND node_lease_until_ms <= ? AND node_id <> ?"
               f" ORDER BY seq LIMIT ?{self.ROW_CLAIM}", (now_ms, other_than, limit))]

    def renew_node_leases(self, c: Conn, node_id: str, run_ids: Sequence[str],
                          until_ms: int) -> set[str]:
        """Extend the lease of these runs of `node_id` that are still running; returns the
        ids renewed (the others ended elsewhere: cancelled, or failed after their lease)."""
        if not run_ids:
            return set()
        return {str(r[0]) for r in _where_in_args(
            c, "UPDATE runs SET node_lease_until_ms = ? WHERE node_id = ?"
               " AND status = 'running' AND id IN {in} RETURNING id",
            [until_ms, node_id], run_ids)}

    def active_runs_and_tallies(self, c: Conn, run_ids: Sequence[str]
                                ) -> tuple[set[str], dict[str, ScheduleTally]]:
        """Which of these runs are still pending or running, and the few columns recording
        their outcomes reads of their schedules (none for a deleted schedule): one query."""
        active: set[str] = set()
        tallies: dict[str, ScheduleTally] = {}
        # sorted (and each chunk's rows locked ORDER BY id on PostgreSQL, RECORD_LOCK): two
        # nodes locking overlapping sets take the rows in one order, so neither holds a row
        # the other waits for while it waits for one the other holds (a deadlock)
        ids = sorted(set(run_ids)) if self.RECORD_LOCK else run_ids
        for row in _where_in(c, _TALLY_OF_ACTIVE + self.RECORD_LOCK, ids):
            active.add(row[0])
            if row[1] is not None and row[1] not in tallies:
                tallies[row[1]] = _tally_from_row(row[1:])
        return active, tallies

    # ------------------------------------------------------------------ schedule extensions
    def insert_ext(self, c: Conn, s: Schedule, ext: ScheduleExt) -> None:
        c.execute(
            "INSERT INTO schedule_ext (schedule_id, tenant_id, kind, scope, created_ms, data)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (s.id, s.tenant_id, ext.kind, ext.scope, s.created_ms, _enc.encode(ext.data).decode()),
        )

    def update_ext_data(self, c: Conn, schedule_id: str, data: dict[str, Any]) -> None:
        c.execute("UPDATE schedule_ext SET data = ? WHERE schedule_id = ?",
                  (_enc.encode(data).decode(), schedule_id))

    def get_ext(self, c: Conn, tenant_id: str, schedule_id: str
                ) -> tuple[Schedule, ScheduleExt] | None:
        rows = _all(
            c, f"SELECT e.kind, e.scope, e.data, {_S_COLS_OF_S} FROM schedule_ext e"
               " JOIN schedules s ON s.id = e.schedule_id"
               " WHERE e.schedule_id = ? AND e.tenant_id = ?", (schedule_id, tenant_id))
        if not rows:
            return None
        r = rows[0]
        return schedule_from_row(r[3:]), ScheduleExt(kind=r[0], scope=r[1], data=_dec.decode(r[2]))

    def page_ext(
        self,
        c: Conn,
        tenant_id: str,
        kind: str,
        scope: str,
        *,
        search: str | None,
        after: tuple[int, str] | None,
        limit: int,
        offset: int = 0,
    ) -> tuple[list[tuple[int, Schedule, ScheduleExt]], int]:
        """Schedules of one kind and scope, oldest first by (created, id), after the keyset
        `after` (or from `offset`): ((created_ms, schedule, ext) ..., total). `search` is a
        case-insensitive substring of the name or the description; total counts every
        match, whatever `after` and `offset` say."""
        where = ["e.tenant_id = ?", "e.kind = ?", "e.scope = ?"]
        params: list[Any] = [tenant_id, kind, scope]
        if search:
            like = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append("(s.name LIKE ? ESCAPE '\\' OR s.description LIKE ? ESCAPE '\\')")
            params += [like, like]
        cond = " AND ".join(where)
        base = " FROM schedule_ext e JOIN schedules s ON s.id = e.schedule_id WHERE "
        total = int(_all(c, "SELECT count(*)" + base + cond, params)[0][0])
        if after is not None:
            cond += " AND (e.created_ms, e.schedule_id) > (?, ?)"
            params += [after[0], after[1]]
        rows = _all(
            c, f"SELECT e.created_ms, e.kind, e.scope, e.data, {_S_COLS_OF_S}" + base + cond
               + " ORDER BY e.created_ms, e.schedule_id LIMIT ? OFFSET ?",
            [*params, limit, offset])
        return [(int(r[0]), schedule_from_row(r[4:]),
                 ScheduleExt(kind=r[1], scope=r[2], data=_dec.decode(r[3]))) for r in rows], total

    def run_tallies(self, c: Conn, schedule_ids: Sequence[str]) -> dict[str, RunTally]:
        """Exact counts of each schedule's recorded runs, and its newest run's chain root."""
        out: dict[str, RunTally] = {}
        for r in _where_in(
            c,
            "SELECT schedule_id, count(*), count(*) FILTER (WHERE status = 'succeeded'),"
            " count(*) FILTER (WHERE status = 'failed'),"
            " count(*) FILTER (WHERE status = 'running'),"
            " (SELECT r2.attempt_root_run_id FROM runs r2"
            "  WHERE r2.schedule_id = runs.schedule_id ORDER BY r2.seq DESC LIMIT 1)"
            " FROM runs WHERE schedule_id IN {in} GROUP BY schedule_id",
            schedule_ids,
        ):
            out[str(r[0])] = RunTally(total=int(r[1]), succeeded=int(r[2]), failed=int(r[3]),
                                      running=int(r[4]), last_root_run_id=r[5])
        return out

    def page_schedule_runs(
        self, c: Conn, tenant_id: str, schedule_id: str, *, status: str | None,
        before_seq: int | None, limit: int,
    ) -> tuple[list[tuple[int, Run]], int]:
        """A schedule's runs newest first, older than the keyset `before_seq`:
        ((seq, run) ..., total matching `status`)."""
        where = ["tenant_id = ?", "schedule_id = ?"]
        params: list[Any] = [tenant_id, schedule_id]
        if status is not None:
            where.append("status = ?")
            params.append(status)
        cond = " AND ".join(where)
        total = int(_all(c, f"SELECT count(*) FROM runs WHERE {cond}", params)[0][0])
        if before_seq is not None:
            cond += " AND seq < ?"
            params.append(before_seq)
        rows = _all(c, f"SELECT seq, {_R_SELECT} FROM runs WHERE {cond}"
                       " ORDER BY seq DESC LIMIT ?", [*params, limit])
        return [(int(r[0]), run_from_row(r[1:])) for r in rows], total

    # ------------------------------------------------------------------ runs
    def insert_runs(self, c: Conn, runs: Sequence[Run]) -> None:
        if len(runs) == 1:
            c.execute(_R_INSERT, _values(runs[0], RUN_COLS))
        elif runs:
            self._insert_run_rows(c, runs)

    def _insert_run_rows(self, c: Conn, runs: Sequence[Run]) -> None:
        """Insert several runs (PostgreSQL copies them: store/postgres.py)."""
        c.executemany(_R_INSERT, [_values(r, RUN_COLS) for r in runs])

    @contextmanager
    def undone_on_error(self, c: Conn) -> Iterator[None]:
        """What the block writes is undone if it raises, and the rest of the transaction
        goes on (a SAVEPOINT rolled back to; nested in the group commit's `schedd_group`
        when the unit shares a transaction); kept if it does not raise. On PostgreSQL this
        also ends the abort a failed statement leaves. When the database ended the whole
        transaction itself (tx_alive is False) there is nothing to roll back to: the error
        goes up as it is, and the caller must not go on."""
        c.execute("SAVEPOINT schedd_plan")
        try:
            yield
            c.execute("RELEASE schedd_plan")  # a RELEASE that fails is rolled back too
        except BaseException:
            if self.db.tx_alive(c):
                c.execute("ROLLBACK TO schedd_plan")
                c.execute("RELEASE schedd_plan")
            raise

    def tx_alive(self, c: Conn) -> bool:
        """After an error inside a unit of work: whether its transaction can go on."""
        return self.db.tx_alive(c)

    def transient(self, exc: BaseException) -> bool:
        """Whether an error inside a unit of work is the storage's, for now (a lock, a
        deadlock, a timeout, a full disk, a lost connection: schedd.db.transient,
        schedd.pgdb.transient), not the unit's: the caller fails the whole unit so that it
        is tried again, rather than treat the error as its own."""
        return self.db.transient(exc)

    def insert_claimed_runs(self, c: Conn, runs: Sequence[Run]) -> set[str]:
        """Insert a claim's runs; an occurrence that already has its run (the unique
        occurrence index) is skipped, not raised, so one such row cannot fail the whole
        claim. Returns the ids of the runs skipped."""
        if not runs:
            return set()
        c.execute("SAVEPOINT claim")
        try:
            self._insert_run_rows(c, runs)
        except self.integrity_errors:
            c.execute("ROLLBACK TO claim")
        else:
            c.execute("RELEASE claim")
            return set()
        c.execute("RELEASE claim")
        skipped: set[str] = set()
        for r in runs:
            if c.execute(_R_INSERT_OR_IGNORE, _values(r, RUN_COLS)).rowcount != 1:
                skipped.add(r.id)
        return skipped

    def update_runs(self, c: Conn, runs: Sequence[Run], cols: Sequence[str], *,
                    guard_active: bool = False) -> None:
        """Write `cols` of each run (by id); with guard_active only while it is not finished."""
        if not runs:
            return
        sql = f"UPDATE runs SET {', '.join(f'{col} = ?' for col in cols)} WHERE id = ?"
        if guard_active:
            sql += " AND status IN ('pending', 'running')"
        c.executemany(sql, [[*_values(r, cols), r.id] for r in runs])

    def get_run(self, c: Conn, tenant_id: str | None, run_id: str) -> Run | None:
        if tenant_id is None:
            rows = _all(c, f"SELECT {_R_SELECT} FROM runs WHERE id = ?", (run_id,))
        else:
            rows = _all(c, f"SELECT {_R_SELECT} FROM runs WHERE id = ? AND tenant_id = ?",
                        (run_id, tenant_id))
        return run_from_row(rows[0]) if rows else None

    def list_runs(
        self,
        c: Conn,
        tenant_id: str,
        *,
        schedule_id: str | None,
        status: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[Run], int]:
        where, params = ["tenant_id = ?"], [tenant_id]
        if schedule_id is not None:
            where.append("schedule_id = ?")
            params.append(schedule_id)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        cond = " AND ".join(where)
        total = _all(c, f"SELECT count(*) FROM runs WHERE {cond}", params)[0][0]
        rows = _all(
            c, f"SELECT {_R_SELECT} FROM runs WHERE {cond} ORDER BY seq DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [run_from_row(r) for r in rows], int(total)

    def _runs_where(self, c: Conn, cond: str, params: Sequence[Any], *, order: str = "seq",
                    limit: int = 10_000, claim: bool = False) -> list[Run]:
        """Runs matching an SQL condition: the store's own helper (and the test kit's);
        nothing outside the store passes SQL text in. claim: the rows are this
        transaction's to change; another node's transaction skips them (ROW_CLAIM)."""
        rows = _all(c, f"SELECT {_R_SELECT} FROM runs WHERE {cond} ORDER BY {order} LIMIT ?"
                       f"{self.ROW_CLAIM if claim else ''}", [*params, limit])
        return [run_from_row(r) for r in rows]

    def active_counts(self, c: Conn, ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """schedule id -> (pending or running runs, of which buffered/waiting)."""
        rows = _where_in(
            c,
            "SELECT schedule_id, count(*), sum(waiting) FROM runs"
            " WHERE status IN ('pending', 'running') AND schedule_id IN {in}"
            " GROUP BY schedule_id",
            ids)
        return {str(r[0]): (int(r[1]), int(r[2] or 0)) for r in rows}

    def next_wake_ms(self, c: Conn, *, include_due_work: bool) -> int | None:
        """The earliest instant the engine has something to do: a schedule's next run, a
        pending run's due time (both only with include_due_work), a worker lease's end."""
        parts = ["SELECT min(lease_until_ms) FROM runs WHERE status = 'running'"
                 " AND lease_until_ms IS NOT NULL"]
        if include_due_work:
            parts += [
                "SELECT min(next_run_ms) FROM schedules INDEXED BY schedules_due"
                " WHERE status = 'active' AND next_run_ms IS NOT NULL",
                "SELECT min(due_ms) FROM runs WHERE status = 'pending' AND queue IS NULL"
                " AND waiting = 0",
            ]
        rows = _all(c, "SELECT " + ", ".join(f"({p})" for p in parts))
        found = [int(v) for v in rows[0] if v is not None]
        return min(found) if found else None

    def planned_starts(self, c: Conn, schedule_id: str, since_ms: int) -> list[int]:
        """Starts of a schedule's occurrences after since_ms: the real start once started,
        else the planned one (deferred runs included). What its rate limit counts."""
        rows = _all(
            c,
            "SELECT coalesce(started_ms, due_ms) AS t FROM runs WHERE schedule_id = ?"
            " AND manual = 0 AND attempt = 1 AND status NOT IN ('skipped', 'cancelled')"
            " AND coalesce(started_ms, due_ms) > ? ORDER BY t",
            (schedule_id, since_ms),
        )
        return [int(r[0]) for r in rows]

    def release_buffered(self, c: Conn, schedule_id: str, now_ms: int, *,
                         record_key: str | None = None) -> bool:
        """Start the oldest buffered run of a schedule once nothing else of it is active
        (of a relative schedule: of that record)."""
        if record_key is not None:
            cur = c.execute(
                "UPDATE runs SET waiting = 0, due_ms = max(due_ms, ?) WHERE id = ("
                " SELECT id FROM runs INDEXED BY runs_active WHERE schedule_id = ?"
                " AND record_key = ? AND status IN ('pending', 'running')"
                " AND status = 'pending' AND waiting = 1"
                " ORDER BY scheduled_for_ms, seq LIMIT 1)"
                " AND NOT EXISTS (SELECT 1 FROM runs INDEXED BY runs_active"
                " WHERE schedule_id = ? AND record_key = ?"
                " AND status IN ('pending', 'running') AND waiting = 0)",
                (now_ms, schedule_id, record_key, schedule_id, record_key),
            )
            return cur.rowcount == 1
        cur = c.execute(
            "UPDATE runs SET waiting = 0, due_ms = max(due_ms, ?) WHERE id = ("
            " SELECT id FROM runs WHERE schedule_id = ? AND status = 'pending' AND waiting = 1"
            " ORDER BY scheduled_for_ms, seq LIMIT 1)"
            " AND NOT EXISTS (SELECT 1 FROM runs WHERE schedule_id = ?"
            " AND status IN ('pending', 'running') AND waiting = 0)",
            (now_ms, schedule_id, schedule_id),
        )
        return cur.rowcount == 1

    def claim_queued_run(self, c: Conn, tenant_id: str, queues: Sequence[str],
                         now_ms: int) -> Run | None:
        """The oldest due pending run of these worker queues."""
        found = self._runs_where(
            c,
            f"tenant_id = ? AND status = 'pending' AND waiting = 0 AND queue IN"
            f" ({','.join('?' * len(queues))}) AND due_ms <= ?",
            [tenant_id, *queues, now_ms],
            order="due_ms, seq",
            limit=1,
            claim=True,
        )
        return found[0] if found else None

    def due_pending_runs(self, c: Conn, now_ms: int, limit: int) -> list[Run]:
        """Pending runs the engine starts itself (not worker-queued), due by now."""
        return self._runs_where(
            c, "status = 'pending' AND queue IS NULL AND waiting = 0 AND due_ms <= ?",
            (now_ms,), order="due_ms", limit=limit, claim=True,
        )

    def active_runs_of(self, c: Conn, schedule_id: str, *,
                       record_key: str | None = None) -> list[Run]:
        """Pending or running runs of one schedule (or of one record of it), oldest first."""
        if record_key is not None:
            return self._runs_where(
                c, "schedule_id = ? AND record_key = ? AND status IN ('pending', 'running')",
                (schedule_id, record_key))
        return self._runs_where(
            c, "schedule_id = ? AND status IN ('pending', 'running')", (schedule_id,))

    def expired_leases(self, c: Conn, now_ms: int, limit: int) -> list[Run]:
        """Running runs leased to a worker whose lease ended by now, the oldest lease first."""
        return self._runs_where(
            c, "status = 'running' AND lease_until_ms IS NOT NULL AND lease_until_ms <= ?",
            (now_ms,), order="lease_until_ms", limit=limit, claim=True)

    def cancel_pending_runs_of_records(self, c: Conn, schedule_id: str, keys: Sequence[str],
                                       now_ms: int, reason: str) -> None:
        """Deleted records: their runs not yet started (deferred, buffered, retries) end."""
        if keys:
            c.executemany(
                "UPDATE runs SET status = 'cancelled', completed_ms = ?, error_code ="
                " 'cancelled', error_message = ?, cancel_requested_ms = ?, cancel_reason = ?,"
                " waiting = 0 WHERE schedule_id = ? AND record_key = ? AND status = 'pending'",
                [(now_ms, reason, now_ms, reason, schedule_id, k) for k in keys])

    def due_backlog(self, c: Conn, now_ms: int) -> int:
        """Occurrences and runs due by now that have not started yet."""
        rows = _all(
            c,
            "SELECT (SELECT count(*) FROM schedules INDEXED BY schedules_due"
            " WHERE status = 'active'"
            " AND next_run_ms IS NOT NULL AND next_run_ms <= ?),"
            " (SELECT count(*) FROM runs WHERE status = 'pending' AND waiting = 0"
            " AND due_ms <= ?)",
            (now_ms, now_ms),
        )
        return int(rows[0][0]) + int(rows[0][1])

    def prune_runs_batch(self, c: Conn, after_seq: int, cutoff_ms: int, keep: int,
                         limit: int) -> tuple[int, int | None]:
        """Delete finished runs completed before cutoff_ms among the next `limit` runs after
        `after_seq` (in insertion order), sparing each schedule's newest `keep` runs.
        Returns (deleted, the last seq looked at, or None when the table is exhausted)."""
        rows = _all(c, "SELECT seq FROM runs WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after_seq, limit))
        if not rows:
            return 0, None
        last = int(rows[-1][0])
        cur = c.execute(
            "DELETE FROM runs WHERE seq > ? AND seq <= ? AND completed_ms IS NOT NULL"
            " AND completed_ms < ? AND status NOT IN ('pending', 'running')"
            " AND seq < coalesce((SELECT r2.seq FROM runs r2"
            "  WHERE r2.schedule_id = runs.schedule_id ORDER BY r2.seq DESC LIMIT 1 OFFSET ?),"
            "  -1)",
            (after_seq, last, cutoff_ms, keep - 1),
        )
        return int(cur.rowcount), last

    def count_runs_by_status(self, c: Conn) -> dict[str, int]:
        rows = _all(c, "SELECT status, count(*) FROM runs GROUP BY status")
        return {str(r[0]): int(r[1]) for r in rows}

    def cancel_pending_runs_of(self, c: Conn, schedule_id: str, now_ms: int,
                               reason: str) -> int:
        cur = c.execute(
            "UPDATE runs SET status = ?, completed_ms = ?, error_code = 'cancelled',"
            " cancel_requested_ms = ?, cancel_reason = ?"
            " WHERE schedule_id = ? AND status = 'pending'",
            (RunStatus.cancelled.value, now_ms, now_ms, reason, schedule_id),
        )
        return int(cur.rowcount)

    # ------------------------------------------------------------------ entity definitions
    def insert_definition(self, c: Conn, d: EntityDefinition) -> None:
        c.execute(f"INSERT INTO entity_definitions ({_D_SELECT})"
                  f" VALUES ({', '.join('?' * len(DEF_COLS))})", _values(d, DEF_COLS))

    def update_definition(self, c: Conn, d: EntityDefinition) -> None:
        c.execute("UPDATE entity_definitions SET description = ?, fields = ?, updated_ms = ?"
                  " WHERE id = ?", [*_values(d, ("description", "fields", "updated_ms")), d.id])

    def get_definition(self, c: Conn, tenant_id: str | None,
                       definition_id: str) -> EntityDefinition | None:
        sql = f"SELECT {_D_SELECT} FROM entity_definitions WHERE id = ?"
        params: list[Any] = [definition_id]
        if tenant_id is not None:
            sql += " AND tenant_id = ?"
            params.append(tenant_id)
        rows = _all(c, sql, params)
        return _from_row(EntityDefinition, DEF_COLS, rows[0]) if rows else None

    def definition_name_taken(self, c: Conn, tenant_id: str, name: str) -> bool:
        return bool(_all(c, "SELECT 1 FROM entity_definitions WHERE tenant_id = ? AND name = ?",
                         (tenant_id, name)))

    def list_definitions(self, c: Conn, tenant_id: str, limit: int,
                         offset: int) -> tuple[list[EntityDefinition], int]:
        total = _all(c, "SELECT count(*) FROM entity_definitions WHERE tenant_id = ?",
                     (tenant_id,))[0][0]
        rows = _all(c, f"SELECT {_D_SELECT} FROM entity_definitions WHERE tenant_id = ?"
                       " ORDER BY seq LIMIT ? OFFSET ?", (tenant_id, limit, offset))
        return [_from_row(EntityDefinition, DEF_COLS, r) for r in rows], int(total)

    def delete_definition(self, c: Conn, definition_id: str) -> None:
        c.execute("DELETE FROM records WHERE definition_id = ?", (definition_id,))
        c.execute("DELETE FROM entity_definitions WHERE id = ?", (definition_id,))

    def add_record_count(self, c: Conn, definition_id: str, delta: int, now_ms: int) -> None:
        if delta:
            c.execute("UPDATE entity_definitions SET record_count = record_count + ?"
                      " WHERE id = ?", (delta, definition_id))

    def schedules_of_definition(self, c: Conn, definition_id: str) -> list[Schedule]:
        """Every relative schedule over this definition (any status)."""
        rows = _all(c, f"SELECT {_S_SELECT} FROM schedules INDEXED BY schedules_definition"
                       " WHERE relative_entity_definition_id = ? ORDER BY seq",
                    (definition_id,))
        return [schedule_from_row(r) for r in rows]

    # ------------------------------------------------------------------ records
    def get_record(self, c: Conn, definition_id: str, key: str) -> EntityRecord | None:
        rows = _all(c, f"SELECT {_REC_SELECT} FROM records WHERE definition_id = ? AND key = ?",
                    (definition_id, key))
        return _from_row(EntityRecord, _REC_COLS, rows[0]) if rows else None

    def existing_record_keys(self, c: Conn, definition_id: str, keys: Sequence[str]) -> set[str]:
        return {str(r[0]) for r in _where_in_args(
            c, "SELECT key FROM records WHERE definition_id = ? AND key IN {in}",
            (definition_id,), keys)}

    def records_data(self, c: Conn, definition_id: str,
                     keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """key -> data of the records that exist among `keys`."""
        return {str(r[0]): _dec.decode(r[1]) for r in _where_in_args(
            c, "SELECT key, data FROM records WHERE definition_id = ? AND key IN {in}",
            (definition_id,), keys)}

    def upsert_records(self, c: Conn, definition_id: str,
                       items: Sequence[tuple[str, str]], now_ms: int) -> None:
        """Write (key, data as JSON text) records; created_ms stays for existing keys."""
        c.executemany(_REC_UPSERT, [(definition_id, k, d, now_ms, now_ms) for k, d in items])

    def delete_records(self, c: Conn, definition_id: str, keys: Sequence[str]) -> int:
        cur = c.executemany("DELETE FROM records WHERE definition_id = ? AND key = ?",
                            [(definition_id, k) for k in keys])
        return int(cur.rowcount)

    def list_records(self, c: Conn, definition_id: str, after: str | None,
                     limit: int) -> list[EntityRecord]:
        if after is None:
            rows = _all(c, f"SELECT {_REC_SELECT} FROM records WHERE definition_id = ?"
                           " ORDER BY key LIMIT ?", (definition_id, limit))
        else:
            rows = _all(c, f"SELECT {_REC_SELECT} FROM records WHERE definition_id = ?"
                           " AND key > ? ORDER BY key LIMIT ?", (definition_id, after, limit))
        return [_from_row(EntityRecord, _REC_COLS, r) for r in rows]

    def record_page(self, c: Conn, definition_id: str, after: str | None,
                    limit: int) -> list[tuple[str, dict[str, Any]]]:
        """(key, data) of the next `limit` records after `after`: what re-planning a whole
        definition walks, a page at a time."""
        rows = _all(c, "SELECT key, data FROM records WHERE definition_id = ? AND key > ?"
                       " ORDER BY key LIMIT ?", (definition_id, after or "", limit))
        return [(str(r[0]), _dec.decode(r[1])) for r in rows]

    # ------------------------------------------------------------------ occurrences
    # Occurrence rows name their schedule by schedules.seq (migration 0007); the id -> seq
    # map is cached: a schedule's seq never changes and ids are never reused.
    def _seq(self, c: Conn, schedule_id: str) -> int | None:
        seq = self._seqs.get(schedule_id)
        if seq is None:
            rows = _all(c, "SELECT seq FROM schedules WHERE id = ?", (schedule_id,))
            if not rows:
                return None
            seq = self._seqs[schedule_id] = int(rows[0][0])
        return seq

    def occurrence_rows(self, c: Conn, schedule_id: str,
                        keys: Sequence[str]) -> dict[str, tuple[int | None, int | None]]:
        """record key -> (pending occurrence, last fired occurrence), for rows that exist."""
        seq = self._seq(c, schedule_id)
        if seq is None:
            return {}
        return {str(r[0]): (r[1], r[2]) for r in _where_in_args(
            c, "SELECT record_key, next_ms, fired_ms FROM occurrences"
               " WHERE schedule_seq = ? AND record_key IN {in}", (seq,), keys)}

    def write_occurrences(self, c: Conn, schedule_id: str,
                          rows: Sequence[tuple[str, int | None, int | None]]) -> None:
        """Upsert (record key, pending occurrence, last fired) rows."""
        seq = self._seq(c, schedule_id)
        if rows and seq is not None:
            c.executemany(_OCC_UPSERT, [(seq, k, n, f) for k, n, f in rows])

    def delete_occurrences(self, c: Conn, schedule_id: str, keys: Sequence[str]) -> None:
        seq = self._seq(c, schedule_id)
        if keys and seq is not None:
            c.executemany("DELETE FROM occurrences WHERE schedule_seq = ? AND record_key = ?",
                          [(seq, k) for k in keys])

    def delete_schedule_occurrences(self, c: Conn, schedule_id: str) -> None:
        seq = self._seq(c, schedule_id)
        if seq is not None:
            c.execute("DELETE FROM occurrences WHERE schedule_seq = ?", (seq,))

    def earliest_occurrence(self, c: Conn, schedule_id: str) -> int | None:
        seq = self._seq(c, schedule_id)
        if seq is None:
            return None
        rows = _all(c, "SELECT min(next_ms) FROM occurrences INDEXED BY occurrences_due"
                       " WHERE schedule_seq = ? AND next_ms IS NOT NULL", (seq,))
        return None if rows[0][0] is None else int(rows[0][0])

    def due_occurrences(self, c: Conn, schedule_id: str, now_ms: int,
                        limit: int) -> list[tuple[str, int]]:
        """(record key, occurrence) of a schedule's pending occurrences due by now, soonest
        first: a range of occurrences_due, as many rows as are claimed."""
        seq = self._seq(c, schedule_id)
        if seq is None:
            return []
        rows = _all(c, "SELECT record_key, next_ms FROM occurrences INDEXED BY occurrences_due"
                       " WHERE schedule_seq = ? AND next_ms IS NOT NULL AND next_ms <= ?"
                       " ORDER BY next_ms LIMIT ?", (seq, now_ms, limit))
        return [(str(r[0]), int(r[1])) for r in rows]

    def pending_occurrences(self, c: Conn, schedule_id: str,
                            limit: int) -> list[tuple[str, int]]:
        seq = self._seq(c, schedule_id)
        if seq is None:
            return []
        rows = _all(c, "SELECT record_key, next_ms FROM occurrences INDEXED BY occurrences_due"
                       " WHERE schedule_seq = ? AND next_ms IS NOT NULL"
                       " ORDER BY next_ms, record_key LIMIT ?", (seq, limit))
        return [(str(r[0]), int(r[1])) for r in rows]

    def fire_occurrences(self, c: Conn, schedule_id: str,
                         items: Sequence[tuple[str, int]]) -> None:
        """Claimed: each (record key, occurrence) is no longer pending and is the last fired,
        compare-and-set on the pending instant."""
        seq = self._seq(c, schedule_id)
        if items and seq is not None:
            c.executemany("UPDATE occurrences SET next_ms = NULL, fired_ms = next_ms"
                          " WHERE schedule_seq = ? AND record_key = ? AND next_ms = ?",
                          [(seq, k, o) for k, o in items])

    def set_next_run(self, c: Conn, schedule_id: str, next_ms: int | None, now_ms: int) -> None:
        c.execute("UPDATE schedules SET next_run_ms = ? WHERE id = ?", (next_ms, schedule_id))

    def active_counts_by_record(self, c: Conn, schedule_id: str,
                                keys: Sequence[str]) -> dict[str, tuple[int, int]]:
        """record key -> (pending or running runs of the schedule for it, of which waiting)."""
        rows = _where_in_args(
            c, "SELECT record_key, count(*), sum(waiting) FROM runs INDEXED BY runs_active"
               " WHERE status IN ('pending', 'running') AND schedule_id = ?"
               " AND record_key IN {in} GROUP BY record_key", (schedule_id,), keys)
        return {str(r[0]): (int(r[1]), int(r[2] or 0)) for r in rows}
