"""Every SQL statement of schedd. Typed methods; instants are bound parameters (never SQL's
clock); no rules here, those live in services, engine and policies.

Write methods take the connection of an open `db.write_tx()` so callers compose them into one
transaction; read methods use the read-only connection unless given a `conn` inside a tx.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import aiosqlite
import msgspec

from schedd.db import Database
from schedd.models import ApiKey, Run, RunStatus, Schedule

T = TypeVar("T", bound=msgspec.Struct)

SCHEDULE_COLS: tuple[str, ...] = Schedule.__struct_fields__
RUN_COLS: tuple[str, ...] = Run.__struct_fields__
_JSON_COLS = frozenset({"action_config", "relative_filter", "result", "resolved_payload"})
_S_SELECT = ", ".join(SCHEDULE_COLS)
_R_SELECT = ", ".join(RUN_COLS)
_S_INSERT = (
    f"INSERT INTO schedules ({_S_SELECT}) VALUES ({', '.join('?' * len(SCHEDULE_COLS))})"
)
_R_INSERT = f"INSERT INTO runs ({_R_SELECT}) VALUES ({', '.join('?' * len(RUN_COLS))})"
_S_UPDATE = (
    "UPDATE schedules SET "
    + ", ".join(f"{c} = ?" for c in SCHEDULE_COLS if c not in ("id", "tenant_id", "created_ms"))
    + " WHERE id = ?"
)
_S_UPDATE_COLS = tuple(c for c in SCHEDULE_COLS if c not in ("id", "tenant_id", "created_ms"))

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()


def _to_db(col: str, value: Any) -> Any:
    if col in _JSON_COLS:
        return None if value is None else _enc.encode(value).decode()
    if isinstance(value, bool):
        return int(value)
    return value


def _from_row(cls: type[T], cols: Sequence[str], row: Sequence[Any]) -> T:
    data = {
        c: (_dec.decode(v) if c in _JSON_COLS and v is not None else v)
        for c, v in zip(cols, row, strict=True)
    }
    return msgspec.convert(data, cls, strict=False)


def _values(obj: msgspec.Struct, cols: Iterable[str]) -> list[Any]:
    return [_to_db(c, getattr(obj, c)) for c in cols]


def schedule_from_row(row: Sequence[Any]) -> Schedule:
    return _from_row(Schedule, SCHEDULE_COLS, row)


def run_from_row(row: Sequence[Any]) -> Run:
    return _from_row(Run, RUN_COLS, row)


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def _all(
        self, sql: str, params: Sequence[Any], conn: aiosqlite.Connection | None = None
    ) -> list[Any]:
        c = conn or self.db.reader
        return list(await c.execute_fetchall(sql, params))

    # ------------------------------------------------------------------ tenants and keys
    async def tenant_id_by_name(
        self, name: str, conn: aiosqlite.Connection | None = None
    ) -> str | None:
        rows = await self._all("SELECT id FROM tenants WHERE name = ?", (name,), conn)
        return str(rows[0][0]) if rows else None

    async def insert_tenant(
        self, conn: aiosqlite.Connection, tenant_id: str, name: str, now_ms: int
    ) -> None:
        await conn.execute(
            "INSERT INTO tenants (id, name, created_ms) VALUES (?, ?, ?)", (tenant_id, name, now_ms)
        )

    async def insert_key(
        self,
        conn: aiosqlite.Connection,
        key_id: str,
        tenant_id: str,
        prefix: str,
        key_hash: str,
        now_ms: int,
    ) -> None:
        await conn.execute(
            "INSERT INTO api_keys (id, tenant_id, prefix, key_hash, created_ms) VALUES (?,?,?,?,?)",
            (key_id, tenant_id, prefix, key_hash, now_ms),
        )

    async def count_keys(self, conn: aiosqlite.Connection | None = None) -> int:
        rows = await self._all("SELECT count(*) FROM api_keys", (), conn)
        return int(rows[0][0])

    async def list_keys(self) -> list[ApiKey]:
        rows = await self._all(
            "SELECT k.id, k.tenant_id, t.name, k.prefix, k.created_ms, k.last_used_ms, k.revoked_ms"
            " FROM api_keys k JOIN tenants t ON t.id = k.tenant_id ORDER BY k.created_ms, k.id",
            (),
        )
        cols = ("id", "tenant_id", "tenant_name", "prefix", "created_ms", "last_used_ms",
                "revoked_ms")
        return [_from_row(ApiKey, cols, r) for r in rows]

    async def revoke_key(self, conn: aiosqlite.Connection, key_id: str, now_ms: int) -> bool:
        cur = await conn.execute(
            "UPDATE api_keys SET revoked_ms = ? WHERE id = ? AND revoked_ms IS NULL",
            (now_ms, key_id),
        )
        return cur.rowcount == 1

    async def key_exists(self, key_id: str) -> bool:
        return bool(await self._all("SELECT 1 FROM api_keys WHERE id = ?", (key_id,)))

    async def active_key_by_hash(self, key_hash: str) -> tuple[str, str, int | None] | None:
        """(key id, tenant id, last used) of a key that is not revoked."""
        rows = await self._all(
            "SELECT id, tenant_id, last_used_ms FROM api_keys"
            " WHERE key_hash = ? AND revoked_ms IS NULL",
            (key_hash,),
        )
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    async def touch_key(self, conn: aiosqlite.Connection, key_id: str, now_ms: int) -> None:
        await conn.execute("UPDATE api_keys SET last_used_ms = ? WHERE id = ?", (now_ms, key_id))

    # ------------------------------------------------------------------ schedules
    async def insert_schedule(self, conn: aiosqlite.Connection, s: Schedule) -> None:
        await conn.execute(_S_INSERT, _values(s, SCHEDULE_COLS))

    async def update_schedule(self, conn: aiosqlite.Connection, s: Schedule) -> None:
        await conn.execute(_S_UPDATE, [*_values(s, _S_UPDATE_COLS), s.id])

    async def update_schedules(self, conn: aiosqlite.Connection, items: Sequence[Schedule]) -> None:
        if items:
            await conn.executemany(_S_UPDATE, [[*_values(s, _S_UPDATE_COLS), s.id] for s in items])

    async def delete_schedule(self, conn: aiosqlite.Connection, schedule_id: str) -> None:
        await conn.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,))

    async def get_schedule(
        self, tenant_id: str | None, schedule_id: str, conn: aiosqlite.Connection | None = None
    ) -> Schedule | None:
        params: tuple[str, ...]
        if tenant_id is None:
            sql, params = f"SELECT {_S_SELECT} FROM schedules WHERE id = ?", (schedule_id,)
        else:
            sql = f"SELECT {_S_SELECT} FROM schedules WHERE id = ? AND tenant_id = ?"
            params = (schedule_id, tenant_id)
        rows = await self._all(sql, params, conn)
        return schedule_from_row(rows[0]) if rows else None

    async def find_by_dedup_key(
        self, conn: aiosqlite.Connection, tenant_id: str, key: str
    ) -> Schedule | None:
        rows = await self._all(
            f"SELECT {_S_SELECT} FROM schedules WHERE tenant_id = ? AND deduplication_key = ?",
            (tenant_id, key),
            conn,
        )
        return schedule_from_row(rows[0]) if rows else None

    async def list_schedules(
        self,
        tenant_id: str,
        *,
        customer_id: str | None,
        external_id: str | None,
        status: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[Schedule], int]:
        where, params = ["tenant_id = ?"], [tenant_id]
        for col, val in (("customer_id", customer_id), ("external_id", external_id),
                         ("status", status)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        cond = " AND ".join(where)
        total = (await self._all(f"SELECT count(*) FROM schedules WHERE {cond}", params))[0][0]
        rows = await self._all(
            f"SELECT {_S_SELECT} FROM schedules WHERE {cond} ORDER BY seq LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [schedule_from_row(r) for r in rows], int(total)

    async def due_schedules(
        self, conn: aiosqlite.Connection, now_ms: int, limit: int
    ) -> list[Schedule]:
        rows = await self._all(
            f"SELECT {_S_SELECT} FROM schedules INDEXED BY schedules_due"
            " WHERE status = 'active' AND next_run_ms IS NOT NULL AND next_run_ms <= ?"
            " ORDER BY next_run_ms LIMIT ?",
            (now_ms, limit),
            conn,
        )
        return [schedule_from_row(r) for r in rows]

    async def next_schedule_due_ms(self, conn: aiosqlite.Connection | None = None) -> int | None:
        rows = await self._all(
            "SELECT min(next_run_ms) FROM schedules INDEXED BY schedules_due"
            " WHERE status = 'active'"
            " AND next_run_ms IS NOT NULL",
            (),
            conn,
        )
        return None if rows[0][0] is None else int(rows[0][0])

    async def count_schedules_by_status(self) -> dict[str, int]:
        rows = await self._all("SELECT status, count(*) FROM schedules GROUP BY status", ())
        return {str(r[0]): int(r[1]) for r in rows}

    # ------------------------------------------------------------------ runs
    async def insert_runs(self, conn: aiosqlite.Connection, runs: Sequence[Run]) -> None:
        if len(runs) == 1:
            await conn.execute(_R_INSERT, _values(runs[0], RUN_COLS))
        elif runs:
            await conn.executemany(_R_INSERT, [_values(r, RUN_COLS) for r in runs])

    async def update_runs(
        self,
        conn: aiosqlite.Connection,
        runs: Sequence[Run],
        cols: Sequence[str],
        *,
        guard_active: bool = False,
    ) -> None:
        """Write `cols` of each run (by id); with guard_active only while it is not finished."""
        if not runs:
            return
        sql = f"UPDATE runs SET {', '.join(f'{c} = ?' for c in cols)} WHERE id = ?"
        if guard_active:
            sql += " AND status IN ('pending', 'running')"
        await conn.executemany(sql, [[*_values(r, cols), r.id] for r in runs])

    async def get_run(
        self, tenant_id: str | None, run_id: str, conn: aiosqlite.Connection | None = None
    ) -> Run | None:
        params: tuple[str, ...]
        if tenant_id is None:
            sql, params = f"SELECT {_R_SELECT} FROM runs WHERE id = ?", (run_id,)
        else:
            sql = f"SELECT {_R_SELECT} FROM runs WHERE id = ? AND tenant_id = ?"
            params = (run_id, tenant_id)
        rows = await self._all(sql, params, conn)
        return run_from_row(rows[0]) if rows else None

    async def list_runs(
        self,
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
        total = (await self._all(f"SELECT count(*) FROM runs WHERE {cond}", params))[0][0]
        rows = await self._all(
            f"SELECT {_R_SELECT} FROM runs WHERE {cond} ORDER BY seq DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [run_from_row(r) for r in rows], int(total)

    async def runs_where(
        self,
        conn: aiosqlite.Connection | None,
        cond: str,
        params: Sequence[Any],
        *,
        order: str = "seq",
        limit: int = 10_000,
    ) -> list[Run]:
        rows = await self._all(
            f"SELECT {_R_SELECT} FROM runs WHERE {cond} ORDER BY {order} LIMIT ?",
            [*params, limit],
            conn,
        )
        return [run_from_row(r) for r in rows]

    async def _where_in(
        self, conn: aiosqlite.Connection, sql: str, ids: Sequence[str]
    ) -> list[Any]:
        """Rows of `sql`, whose `{in}` is filled with `(?, ?, ...)`, for every id (distinct),
        in chunks that stay below SQLite's parameter limit."""
        distinct = list(dict.fromkeys(ids))
        rows: list[Any] = []
        for i in range(0, len(distinct), 500):
            chunk = distinct[i : i + 500]
            rows += await self._all(sql.format(**{"in": f"({','.join('?' * len(chunk))})"}),
                                    chunk, conn)
        return rows

    async def schedules_by_ids(
        self, conn: aiosqlite.Connection, ids: Sequence[str]
    ) -> dict[str, Schedule]:
        rows = await self._where_in(
            conn, f"SELECT {_S_SELECT} FROM schedules WHERE id IN {{in}}", ids)
        return {s.id: s for s in map(schedule_from_row, rows)}

    async def active_run_ids(self, conn: aiosqlite.Connection, ids: Sequence[str]) -> set[str]:
        """Which of these runs are still pending or running."""
        rows = await self._where_in(
            conn, "SELECT id FROM runs WHERE id IN {in} AND status IN ('pending', 'running')",
            ids)
        return {str(r[0]) for r in rows}

    async def active_counts(
        self, conn: aiosqlite.Connection, ids: Sequence[str]
    ) -> dict[str, tuple[int, int]]:
        """schedule id -> (pending or running runs, of which buffered/waiting)."""
        rows = await self._where_in(
            conn,
            "SELECT schedule_id, count(*), sum(waiting) FROM runs"
            " WHERE status IN ('pending', 'running') AND schedule_id IN {in}"
            " GROUP BY schedule_id",
            ids)
        return {str(r[0]): (int(r[1]), int(r[2] or 0)) for r in rows}

    async def next_wake_ms(
        self, conn: aiosqlite.Connection | None, *, include_due_work: bool
    ) -> int | None:
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
        rows = await self._all("SELECT " + ", ".join(f"({p})" for p in parts), (), conn)
        found = [int(v) for v in rows[0] if v is not None]
        return min(found) if found else None

    async def planned_starts(
        self, conn: aiosqlite.Connection, schedule_id: str, since_ms: int
    ) -> list[int]:
        """Starts of a schedule's occurrences after since_ms: the real start once started,
        else the planned one (deferred runs included). What its rate limit counts."""
        rows = await self._all(
            "SELECT coalesce(started_ms, due_ms) AS t FROM runs WHERE schedule_id = ?"
            " AND manual = 0 AND attempt = 1 AND status NOT IN ('skipped', 'cancelled')"
            " AND coalesce(started_ms, due_ms) > ? ORDER BY t",
            (schedule_id, since_ms),
            conn,
        )
        return [int(r[0]) for r in rows]

    async def release_buffered(
        self, conn: aiosqlite.Connection, schedule_id: str, now_ms: int
    ) -> bool:
        """Start the oldest buffered run of a schedule once nothing else of it is active."""
        cur = await conn.execute(
            "UPDATE runs SET waiting = 0, due_ms = max(due_ms, ?) WHERE id = ("
            " SELECT id FROM runs WHERE schedule_id = ? AND status = 'pending' AND waiting = 1"
            " ORDER BY scheduled_for_ms, seq LIMIT 1)"
            " AND NOT EXISTS (SELECT 1 FROM runs WHERE schedule_id = ?"
            " AND status IN ('pending', 'running') AND waiting = 0)",
            (now_ms, schedule_id, schedule_id),
        )
        return cur.rowcount == 1

    async def claim_queued_run(
        self, conn: aiosqlite.Connection, tenant_id: str, queues: Sequence[str], now_ms: int
    ) -> Run | None:
        """The oldest due pending run of these worker queues."""
        found = await self.runs_where(
            conn,
            f"tenant_id = ? AND status = 'pending' AND waiting = 0 AND queue IN"
            f" ({','.join('?' * len(queues))}) AND due_ms <= ?",
            [tenant_id, *queues, now_ms],
            order="due_ms, seq",
            limit=1,
        )
        return found[0] if found else None

    async def due_pending_runs(
        self, conn: aiosqlite.Connection, now_ms: int, limit: int
    ) -> list[Run]:
        """Pending runs the engine starts itself (not worker-queued), due by now."""
        return await self.runs_where(
            conn, "status = 'pending' AND queue IS NULL AND waiting = 0 AND due_ms <= ?",
            (now_ms,),
            order="due_ms", limit=limit,
        )

    async def next_pending_due_ms(self, conn: aiosqlite.Connection | None = None) -> int | None:
        rows = await self._all(
            "SELECT min(due_ms) FROM runs WHERE status = 'pending' AND queue IS NULL", (), conn
        )
        return None if rows[0][0] is None else int(rows[0][0])

    async def next_lease_end_ms(self, conn: aiosqlite.Connection | None = None) -> int | None:
        rows = await self._all(
            "SELECT min(lease_until_ms) FROM runs WHERE status = 'running'"
            " AND lease_until_ms IS NOT NULL",
            (),
            conn,
        )
        return None if rows[0][0] is None else int(rows[0][0])

    async def active_runs_of(self, conn: aiosqlite.Connection, schedule_id: str) -> list[Run]:
        """Pending or running runs of one schedule, oldest first."""
        return await self.runs_where(
            conn, "schedule_id = ? AND status IN ('pending', 'running')", (schedule_id,)
        )

    async def due_backlog(self, now_ms: int) -> int:
        """Occurrences and runs due by now that have not started yet."""
        rows = await self._all(
            "SELECT (SELECT count(*) FROM schedules INDEXED BY schedules_due"
            " WHERE status = 'active'"
            " AND next_run_ms IS NOT NULL AND next_run_ms <= ?),"
            " (SELECT count(*) FROM runs WHERE status = 'pending' AND waiting = 0"
            " AND due_ms <= ?)",
            (now_ms, now_ms),
        )
        return int(rows[0][0]) + int(rows[0][1])

    async def prune_runs_batch(
        self, conn: aiosqlite.Connection, after_seq: int, cutoff_ms: int, keep: int, limit: int
    ) -> tuple[int, int | None]:
        """Delete finished runs completed before cutoff_ms among the next `limit` runs after
        `after_seq` (in insertion order), sparing each schedule's newest `keep` runs.
        Returns (deleted, the last seq looked at, or None when the table is exhausted)."""
        rows = await self._all(
            "SELECT seq FROM runs WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit), conn
        )
        if not rows:
            return 0, None
        last = int(rows[-1][0])
        cur = await conn.execute(
            "DELETE FROM runs WHERE seq > ? AND seq <= ? AND completed_ms IS NOT NULL"
            " AND completed_ms < ? AND status NOT IN ('pending', 'running')"
            " AND seq < coalesce((SELECT r2.seq FROM runs r2"
            "  WHERE r2.schedule_id = runs.schedule_id ORDER BY r2.seq DESC LIMIT 1 OFFSET ?),"
            "  -1)",
            (after_seq, last, cutoff_ms, keep - 1),
        )
        return int(cur.rowcount), last

    async def count_runs_by_status(self) -> dict[str, int]:
        rows = await self._all("SELECT status, count(*) FROM runs GROUP BY status", ())
        return {str(r[0]): int(r[1]) for r in rows}

    async def cancel_pending_runs_of(
        self, conn: aiosqlite.Connection, schedule_id: str, now_ms: int, reason: str
    ) -> int:
        cur = await conn.execute(
            "UPDATE runs SET status = ?, completed_ms = ?, error_code = 'cancelled',"
            " cancel_requested_ms = ?, cancel_reason = ?"
            " WHERE schedule_id = ? AND status = 'pending'",
            (RunStatus.cancelled.value, now_ms, now_ms, reason, schedule_id),
        )
        return int(cur.rowcount)
