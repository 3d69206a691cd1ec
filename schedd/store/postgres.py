"""The store on PostgreSQL: Store's statements (translated by schedd.pgdb.PgConn), and the
few methods whose SQL must differ."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from psycopg import errors as pg_errors

from schedd.db import Conn
from schedd.models import Run, Schedule
from schedd.notify import CHANNEL, REVOKED, encode
from schedd.pgdb import PgConn
from schedd.store.sqlite import _S_SELECT, RUN_COLS, Store, _all, _values, schedule_from_row


class PgStore(Store):
    integrity_errors = (pg_errors.IntegrityError,)
    # several nodes share the database: rows a transaction is about to change are locked,
    # and another node's claim skips them (see Store.ROW_CLAIM); the outcome's read locks
    # the runs only (not the outer-joined schedules, which PostgreSQL cannot lock), in the
    # order of their ids so that two nodes locking overlapping sets cannot deadlock
    ROW_CLAIM = " FOR UPDATE SKIP LOCKED"
    RECORD_LOCK = " ORDER BY r.id FOR UPDATE OF r"

    def signal_revocation(self, c: Conn, key_id: str) -> None:
        """NOTIFY in the revoking transaction: delivered to every node's listener when (and
        only if) it commits, whichever process revoked (a node, `schedd keys revoke`)."""
        c.execute("SELECT pg_notify(?, ?)", (CHANNEL, encode("-", REVOKED, key_id)))

    def due_schedules(self, c: Conn, now_ms: int, limit: int) -> list[Schedule]:
        """The due schedules, locked for this transaction: another node's claim skips the
        rows this one holds (and claims the next ones) instead of waiting for them or
        claiming them twice."""
        rows = _all(
            c,
            f"SELECT {_S_SELECT} FROM schedules"
            " WHERE status = 'active' AND next_run_ms IS NOT NULL AND next_run_ms <= ?"
            " ORDER BY next_run_ms LIMIT ? FOR UPDATE SKIP LOCKED",
            (now_ms, limit),
        )
        return [schedule_from_row(r) for r in rows]

    def _insert_run_rows(self, c: Conn, runs: Sequence[Run]) -> None:
        """A claim's runs in one COPY: the server inserts them as one statement instead of
        one INSERT each (about half the server's and the writer's CPU per run, bench/RESULTS.md
        §PG2). A run whose occurrence has its run already fails the whole COPY, as the
        executemany did: insert_claimed_runs then inserts them one by one."""
        cast(PgConn, c).copy_rows("runs", RUN_COLS, [_values(r, RUN_COLS) for r in runs])
