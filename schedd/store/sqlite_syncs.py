"""The SQL of the Syncs API (tables `syncs` and `sync_runs`, migration 0003). Same habits
as store/sqlite.py: synchronous functions over the connection they are given, instants bound
as parameters, no rules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from schedd.db import Conn

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()


class SyncRow(msgspec.Struct, kw_only=True):
    id: str
    tenant_id: str
    connection_id: str
    provider_key: str
    slug: str | None = None
    task_slug: str | None = None
    status: str
    trigger_mode: str
    execution_backend: str
    execution_mode: str
    execution_config: dict[str, Any]
    source_config: dict[str, Any]
    destination_config: dict[str, Any]
    entities: list[str]
    table_bindings: list[dict[str, Any]]
    freshness_sla_seconds: int | None = None
    has_schedule: bool = False
    on_create_fired: bool = False
    created_by: str | None = None
    updated_by: str | None = None
    created_ms: int
    updated_ms: int


class SyncRunRow(msgspec.Struct, kw_only=True):
    run_id: str
    run_mode: str | None = None
    triggered_by: str | None = None
    backend_run_ref: str | None = None
    backend_run_url: str | None = None
    backend_status: dict[str, Any] | None = None
    backend_heartbeat_ms: int | None = None
    cancel_requested_by: str | None = None


SYNC_COLS = SyncRow.__struct_fields__
SYNC_RUN_COLS = SyncRunRow.__struct_fields__
_JSON = frozenset({"execution_config", "source_config", "destination_config", "entities",
                   "table_bindings", "backend_status"})
_BOOL = frozenset({"has_schedule", "on_create_fired"})
# what the Syncs API shows as a sync's status: `error` once auto-pause stopped an active one
DERIVED_STATUS = ("CASE WHEN y.status = 'active' AND s.status = 'paused'"
                  " AND s.paused_reason = 'consecutive_failures' THEN 'error'"
                  " ELSE y.status END")


def _bind(col: str, value: Any) -> Any:
    if col in _JSON and value is not None:
        return _enc.encode(value).decode()
    return value


def _row(cls: type[Any], cols: Sequence[str], values: Sequence[Any]) -> Any:
    kw: dict[str, Any] = {}
    for col, v in zip(cols, values, strict=True):
        if col in _JSON and v is not None:
            v = _dec.decode(v)
        elif col in _BOOL:
            v = bool(v)
        kw[col] = v
    return cls(**kw)


def insert_sync(c: Conn, row: SyncRow) -> None:
    c.execute(f"INSERT INTO syncs ({', '.join(SYNC_COLS)}) VALUES"
              f" ({', '.join('?' * len(SYNC_COLS))})",
              [_bind(col, getattr(row, col)) for col in SYNC_COLS])


def update_sync(c: Conn, row: SyncRow) -> None:
    cols = [col for col in SYNC_COLS if col not in ("id", "tenant_id", "created_ms")]
    c.execute(f"UPDATE syncs SET {', '.join(f'{col} = ?' for col in cols)} WHERE id = ?",
              [*(_bind(col, getattr(row, col)) for col in cols), row.id])


def get_sync(c: Conn, tenant_id: str | None, sync_id: str) -> SyncRow | None:
    sql = f"SELECT {', '.join(SYNC_COLS)} FROM syncs WHERE id = ?"
    params: list[Any] = [sync_id]
    if tenant_id is not None:
        sql += " AND tenant_id = ?"
        params.append(tenant_id)
    found = c.execute(sql, params).fetchone()
    return None if found is None else _row(SyncRow, SYNC_COLS, found)


def list_syncs(c: Conn, tenant_id: str, *, q: str | None, statuses: Sequence[str],
               providers: Sequence[str], limit: int, offset: int) -> tuple[list[str], int]:
    """Ids of a page of the tenant's syncs (oldest first), and how many match."""
    where, params = ["y.tenant_id = ?"], [tenant_id]
    if q:
        esc = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append("(s.name LIKE ? ESCAPE '\\' OR coalesce(y.slug, '') LIKE ? ESCAPE '\\')")
        params += [f"%{esc}%", f"%{esc}%"]
    if statuses:
        where.append(f"{DERIVED_STATUS} IN ({', '.join('?' * len(statuses))})")
        params += list(statuses)
    if providers:
        where.append(f"y.provider_key IN ({', '.join('?' * len(providers))})")
        params += list(providers)
    cond = " AND ".join(where)
    base = f"FROM syncs y JOIN schedules s ON s.id = y.id WHERE {cond}"
    total = int(c.execute(f"SELECT count(*) {base}", params).fetchone()[0])
    rows = c.execute(f"SELECT y.id {base} ORDER BY s.seq LIMIT ? OFFSET ?",
                     [*params, limit, offset]).fetchall()
    return [str(r[0]) for r in rows], total


def syncs_by_ids(c: Conn, ids: Sequence[str]) -> dict[str, SyncRow]:
    out: dict[str, SyncRow] = {}
    for i in range(0, len(ids), 500):
        chunk = list(ids[i:i + 500])
        for r in c.execute(f"SELECT {', '.join(SYNC_COLS)} FROM syncs WHERE id IN"
                           f" ({', '.join('?' * len(chunk))})", chunk).fetchall():
            row: SyncRow = _row(SyncRow, SYNC_COLS, r)
            out[row.id] = row
    return out


def is_sync(c: Conn, schedule_id: str) -> bool:
    return c.execute("SELECT 1 FROM syncs WHERE id = ?", (schedule_id,)).fetchone() is not None


def upsert_sync_run(c: Conn, run_id: str, **fields: Any) -> None:
    """Set these fields of a run's sync row (made when missing)."""
    cols = list(fields)
    c.execute(
        f"INSERT INTO sync_runs (run_id, {', '.join(cols)}) VALUES"
        f" (?, {', '.join('?' * len(cols))}) ON CONFLICT(run_id) DO UPDATE SET "
        + ", ".join(f"{col} = excluded.{col}" for col in cols),
        [run_id, *(_bind(col, fields[col]) for col in cols)])


def set_cancelled_by(c: Conn, run_id: str, who: str) -> None:
    upsert_sync_run(c, run_id, cancel_requested_by=who)


def save_backend_state(c: Conn, run_id: str, ref: str, url: str | None,
                       status: dict[str, Any], seen_ms: int) -> None:
    upsert_sync_run(c, run_id, backend_run_ref=ref, backend_run_url=url,
                    backend_status=status, backend_heartbeat_ms=seen_ms)


def sync_runs_by_ids(c: Conn, ids: Sequence[str]) -> dict[str, SyncRunRow]:
    out: dict[str, SyncRunRow] = {}
    distinct = list(dict.fromkeys(ids))
    for i in range(0, len(distinct), 500):
        chunk = distinct[i:i + 500]
        for r in c.execute(f"SELECT {', '.join(SYNC_RUN_COLS)} FROM sync_runs WHERE run_id IN"
                           f" ({', '.join('?' * len(chunk))})", chunk).fetchall():
            row: SyncRunRow = _row(SyncRunRow, SYNC_RUN_COLS, r)
            out[row.run_id] = row
    return out


def run_status(c: Conn, run_id: str) -> str | None:
    found = c.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
    return None if found is None else str(found[0])


def last_success_ms(c: Conn, schedule_id: str) -> int | None:
    found = c.execute("SELECT max(completed_ms) FROM runs WHERE schedule_id = ?"
                      " AND status = 'succeeded'", (schedule_id,)).fetchone()
    return None if found is None or found[0] is None else int(found[0])


def last_chain_end(c: Conn, schedule_id: str) -> tuple[str, str | None] | None:
    """(status, error message) of the newest run of a schedule that ended its chain
    (succeeded, failed or cancelled, with no next attempt)."""
    found = c.execute(
        "SELECT status, error_message FROM runs WHERE schedule_id = ?"
        " AND status IN ('succeeded', 'failed', 'cancelled') AND next_attempt_run_id IS NULL"
        " ORDER BY seq DESC LIMIT 1", (schedule_id,)).fetchone()
    return None if found is None else (str(found[0]), found[1])


def unfired_on_create(c: Conn) -> list[str]:
    return [str(r[0]) for r in c.execute(
        "SELECT id FROM syncs WHERE trigger_mode = 'on_create' AND status = 'active'"
        " AND on_create_fired = 0").fetchall()]


def freshness_watch(c: Conn) -> list[tuple[str, int, int, int | None]]:
    """(sync id, SLA seconds, created_ms, last success ms) of every active sync with an SLA."""
    rows = c.execute(
        "SELECT y.id, y.freshness_sla_seconds, y.created_ms,"
        " (SELECT max(completed_ms) FROM runs r WHERE r.schedule_id = y.id"
        "  AND r.status = 'succeeded')"
        " FROM syncs y WHERE y.status = 'active' AND y.freshness_sla_seconds IS NOT NULL"
    ).fetchall()
    return [(str(r[0]), int(r[1]), int(r[2]), None if r[3] is None else int(r[3]))
            for r in rows]
