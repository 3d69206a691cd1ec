#!/usr/bin/env python3
"""Client and server CPU per row of the PostgreSQL store's bulk writes (bench/RESULTS.md §PG2).

    python bench/pg_rows.py [--n 4000] [--batch 60] [--reps 3]

A throwaway PostgreSQL 15 (tests/pg_kit.py, the settings of bench/pg_nodes.py), a fresh
migrated database per variant and rep, one connection: N running runs inserted in
transactions of about `--batch` rows (sizes drawn between 0.5x and 1.5x, as an engine cycle's
vary), then each finished (status, completed_ms, error, result; guarded on still active).

  insert many    executemany of one INSERT per run (the SQLite store's statement)
  insert copy    COPY runs FROM STDIN, one per batch (what PgStore does since §PG2)
  update many    executemany of one UPDATE per run (what the store does)
  update values  one UPDATE ... FROM (VALUES ...) per batch (tried in §PG2, not kept)

Per row, medians of the reps: wall µs, client CPU µs (this thread), server CPU µs (the
backend process serving the connection, /proc). Variants alternate within each rep.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

import psycopg  # noqa: E402
from pg_kit import PgServer, missing_reason  # noqa: E402

from schedd.models import ActionType, Run, RunStatus, TriggerType  # noqa: E402
from schedd.pgdb import PgConn, migrate  # noqa: E402
from schedd.store.sqlite import _R_INSERT, RUN_COLS, _values  # noqa: E402

FINISH = ("status", "completed_ms", "error_code", "error_message", "result")
UPDATE_MANY = (f"UPDATE runs SET {', '.join(f'{c} = ?' for c in FINISH)} WHERE id = ?"
               " AND status IN ('pending', 'running')")


def server_cpu_s(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def make_runs(n: int) -> list[Run]:
    now = 1_700_000_000_000
    out = []
    for i in range(n):
        rid = uuid.uuid4().hex
        out.append(Run(
            id=rid, schedule_id=uuid.uuid4().hex, tenant_id="t1", status=RunStatus.running,
            trigger_type=TriggerType.scheduled, scheduled_for_ms=now, due_ms=now,
            triggered_ms=now, started_ms=now, attempt_root_run_id=rid,
            action_type=ActionType.webhook, node_id="node-1", node_lease_until_ms=now + 15_000,
            resolved_payload={"url": "http://127.0.0.1/hook", "body": {"job": f"b{i}"}}))
    return out


def batches(n: int, size: int, seed: int) -> list[tuple[int, int]]:
    rnd, bounds = random.Random(seed), [0]
    while bounds[-1] < n:
        bounds.append(min(n, bounds[-1] + rnd.randint(max(1, size // 2), size * 3 // 2)))
    return list(itertools.pairwise(bounds))


def one(server: PgServer, style: str, n: int, size: int, seed: int) -> list[float]:
    url = server.create_database()
    migrate(url)
    with psycopg.connect(url, autocommit=True) as raw:
        c, pid, runs = PgConn(raw), raw.info.backend_pid, make_runs(n)
        out: list[float] = []
        for phase in ("insert", "update"):
            t0, c0, s0 = time.perf_counter(), time.thread_time(), server_cpu_s(pid)
            for i, j in batches(n, size, seed):
                chunk = runs[i:j]
                c.execute("BEGIN")
                if phase == "insert" and style == "many":
                    c.executemany(_R_INSERT, [_values(r, RUN_COLS) for r in chunk])
                elif phase == "insert":
                    c.copy_rows("runs", RUN_COLS, [_values(r, RUN_COLS) for r in chunk])
                elif style == "many":
                    c.executemany(UPDATE_MANY, [("succeeded", 1, None, None, '{"status":200}',
                                                 r.id) for r in chunk])
                else:
                    first = "(?::text, ?::text, ?::bigint, ?::text, ?::text, ?::text)"
                    rows = ", ".join([first] + ["(?, ?, ?, ?, ?, ?)"] * (len(chunk) - 1))
                    c.execute(
                        f"UPDATE runs AS t SET {', '.join(f'{x} = v.{x}' for x in FINISH)}"
                        f" FROM (VALUES {rows}) AS v(id, {', '.join(FINISH)})"
                        " WHERE t.id = v.id AND t.status IN ('pending', 'running')",
                        [v for r in chunk
                         for v in (r.id, "succeeded", 1, None, None, '{"status":200}')])
                c.execute("COMMIT")
            out += [(time.perf_counter() - t0) / n * 1e6, (time.thread_time() - c0) / n * 1e6,
                    (server_cpu_s(pid) - s0) / n * 1e6]
        if raw.execute("SELECT count(*) FROM runs WHERE status = 'succeeded'"
                       ).fetchone() != (n,):
            raise SystemExit(f"{style}: not every run was written")
    server.drop_database(url.rsplit("/", 1)[1])
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=60)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    reason = missing_reason()
    if reason:
        raise SystemExit(f"pg_rows: {reason}")
    server = PgServer({"fsync": "on", "full_page_writes": "on", "synchronous_commit": "off",
                       "autovacuum": "on"}).start()
    styles = {"many": "insert many / update many", "set": "insert copy / update values"}
    got: dict[str, list[list[float]]] = {s: [] for s in styles}
    try:
        for rep in range(a.reps):
            for s in (styles if rep % 2 == 0 else reversed(list(styles))):
                got[s].append(one(server, s, a.n, a.batch, seed=rep))
    finally:
        server.stop()
    print(f"{'µs per row (median of ' + str(a.reps) + ')':<30} {'wall':>7} {'client':>7}"
          f" {'server':>7}")
    for s, label in styles.items():
        med = [statistics.median(r[k] for r in got[s]) for k in range(6)]
        ins, upd = label.split(" / ")
        print(f"{ins:<30} {med[0]:7.1f} {med[1]:7.1f} {med[2]:7.1f}")
        print(f"{upd:<30} {med[3]:7.1f} {med[4]:7.1f} {med[5]:7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
