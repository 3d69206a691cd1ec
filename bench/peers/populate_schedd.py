#!/usr/bin/env python3
"""Fast W4 populate for schedd: grow a store that schedd itself created to N schedules.

Creating 1,000,000 schedules through the API takes far too long for the bench (one POST
and one COMMIT each), so the W4 store is made like APScheduler 4's ("SQL clone"):

1. the driver registers a seed of schedules through the public API (`peer_schedd.py
   register`, default 1,000): those rows are exactly what schedd writes;
2. this script copies that store (the schema is schedd's own, its migrations/*.sql
   at its user_version) and, with the daemon stopped, inserts clones of the seed rows with
   plain sqlite3 in one transaction until the table holds N rows.

A clone keeps every column of its seed row (tenant, type, timezone, policies, status,
counters: as the API wrote them) except those that make a schedule itself:
  id                   a new uuid4 string (as the API makes it)
  seq                  the next rowid (creation order)
  name                 f"{prefix}{i}" (the bench job id)
  schedule_expression  its own once-time, RFC 3339 UTC with milliseconds and "Z"
  next_run_ms          that same instant: --due + spread*i/n, far in the future (days)
  action_config        the seed's JSON with body.job = the new name (compact JSON, the
                       same encoding as msgspec's)
  created_ms/updated_ms  now
So nothing but the W4 canary falls due while the bench runs.

    populate_schedd.py --src SEED.db --db OUT.db --n 1000000 --due EPOCH [--spread 86400]

Prints POPULATED {"n", "seconds", "db_mb"} on stdout (peerlib.emit format).
"""
import argparse
import json
import os
import shutil
import sqlite3
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peerlib


def rfc3339_ms(ms):
    s, frac = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{frac:03d}Z"


def copy_store(src, dst):
    for suf in ("", "-wal", "-shm", "-journal", ".key"):
        if os.path.exists(dst + suf):
            os.remove(dst + suf)
    # a consistent single file (the seed's daemon is stopped; fold its WAL in first)
    c = sqlite3.connect(src)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()
    shutil.copyfile(src, dst)
    if os.path.exists(src + ".key"):
        shutil.copyfile(src + ".key", dst + ".key")
        os.chmod(dst + ".key", 0o600)


def populate(db, n, due, spread, prefix):
    c = sqlite3.connect(db, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=NORMAL")
    c.execute("PRAGMA cache_size=-1048576")  # 1 GiB: the random uuid index stays in memory
    cols = [r[1] for r in c.execute("PRAGMA table_info(schedules)")]
    seeds = c.execute(f"SELECT {', '.join(cols)} FROM schedules WHERE schedule_type = 'once'"
                      " ORDER BY seq").fetchall()
    have = c.execute("SELECT count(*) FROM schedules").fetchone()[0]
    if not seeds:
        raise SystemExit(f"{db}: no once-schedules to clone (register a seed through the API)")
    ix = {name: i for i, name in enumerate(cols)}
    ins_cols = [x for x in cols if x != "seq"]
    sql = (f"INSERT INTO schedules ({', '.join(ins_cols)}) "
           f"VALUES ({', '.join('?' * len(ins_cols))})")
    now_ms = int(time.time() * 1000)
    base_ms = int(round(due * 1000))
    configs = []
    for row in seeds:
        cfg = json.loads(row[ix["action_config"]])
        configs.append(cfg)
    todo = n - have

    def rows():
        for k in range(todo):
            i = have + k
            seed = seeds[i % len(seeds)]
            r = list(seed)
            at = base_ms + (int(spread * 1000 * i / n) if n and spread else 0)
            name = f"{prefix}{i}"
            cfg = configs[i % len(seeds)]
            body = cfg.get("body")
            if isinstance(body, dict) and "job" in body:
                body["job"] = name
            r[ix["id"]] = str(uuid.uuid4())
            r[ix["name"]] = name
            r[ix["schedule_expression"]] = rfc3339_ms(at)
            r[ix["next_run_ms"]] = at
            r[ix["action_config"]] = json.dumps(cfg, separators=(",", ":"), ensure_ascii=False)
            r[ix["created_ms"]] = now_ms
            r[ix["updated_ms"]] = now_ms
            yield [r[ix[x]] for x in ins_cols]

    t0 = time.perf_counter()
    c.execute("BEGIN IMMEDIATE")
    c.executemany(sql, rows())
    c.execute("COMMIT")
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    total = c.execute("SELECT count(*) FROM schedules").fetchone()[0]
    ok = c.execute("PRAGMA quick_check").fetchone()[0]
    c.close()
    secs = time.perf_counter() - t0
    if ok != "ok":
        raise SystemExit(f"{db}: quick_check after populate: {ok}")
    return total, secs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True, help="seed store written by schedd (daemon stopped)")
    ap.add_argument("--db", required=True, help="the store to write (replaced)")
    ap.add_argument("--n", type=int, required=True, help="schedules in the result")
    ap.add_argument("--due", type=float, required=True, help="first once-time, epoch s")
    ap.add_argument("--spread", type=float, default=86400.0)
    ap.add_argument("--prefix", default="f")
    a = ap.parse_args()
    t0 = time.perf_counter()
    copy_store(a.src, a.db)
    total, secs = populate(a.db, a.n, a.due, a.spread, a.prefix)
    mb = sum(os.path.getsize(a.db + s) for s in ("", "-wal") if os.path.exists(a.db + s)) / 2**20
    peerlib.emit("POPULATED", {"n": total, "seconds": round(time.perf_counter() - t0, 2),
                               "insert_seconds": round(secs, 2), "db_mb": round(mb, 1),
                               "via": "sql-clone"})


if __name__ == "__main__":
    main()
