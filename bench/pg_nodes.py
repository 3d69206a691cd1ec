#!/usr/bin/env python3
"""Issue 16's speed figures: schedd on PostgreSQL, one node and three, and a failover.

    python bench/pg_nodes.py                          # every scenario, ~6-8 min loaded
    python bench/pg_nodes.py --scenario one --reps 3  # only the one-node comparison
    python bench/pg_nodes.py --scenario three,failover

Starts its own throwaway PostgreSQL 15 (tests/pg_kit.py; fsync and full-page writes on,
synchronous_commit off: the durability of SQLite's synchronous=NORMAL in WAL mode), the
webhook sink of bench/peers (sink.py, its own process) and real `python -m schedd serve`
nodes as subprocesses, all on 127.0.0.1, nothing pinned (the database shares the two cores
with the nodes and the sink). Every process it starts is stopped at the end, also on error.

Scenarios (`--scenario`, comma-separated):

  one       One node, SQLite against PostgreSQL, interleaved rep by rep (S, P, S, P, ...):
            W2: `--w2` one-shot webhooks (10,000) created through the API, all due at one
            instant T; fires/s = N / (last arrival - T). W3: `--w3` interval-1s schedules
            (200), `--seconds` occurrences each counted; lateness = arrival - occurrence.
            Targets: PG W2 fires/s >= 0.5x SQLite's, PG W3 p99 <= 2x SQLite's. It prints the
            CPU the nodes and the PostgreSQL server took over each window.
  three     Three nodes on one PostgreSQL database: `--w3-nodes` interval-1s schedules (600)
            created through the three in turn; every occurrence of the window exactly once,
            p99 against one PG node's W3 p99 from `one` (when run in the same invocation);
            how the runs spread over the nodes.
  failover  The same three nodes and W3, plus `--slow` interval-1s schedules whose webhook
            answers after `--slow-ms` (so each node always has runs in flight); SIGKILL one
            node `--kill-after` s into the window; every occurrence must still fire (no
            occurrence lost), none twice with the same attempt (nothing doubled), and each
            of the dead node's runs is failed `interrupted` and its retry started by another
            node within node_lease_seconds (`--lease`) + 2 s of the kill.

Every schedule has overlap ALLOW. W2/W3 of `one` and `three` have max_retries 0 (a retry
would be a double); `failover`'s schedules have max_retries 3 with no backoff, so that the
dead node's runs are retried: an action that reached the sink just before the kill arrives
again as the next attempt (at-least-once), which is reported, not counted as doubled.
The box is shared: read ratios from one invocation, never a number against an older run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from kit import HOST, ServeProcess, SinkProcess, children, pct, proc_cpu_s  # noqa: E402


def iso(ts: float) -> str:
    ms = round(ts * 1000)
    s, frac = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{frac:03d}Z"


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[0]


# ------------------------------------------------------------------ the pieces
class Postgres:
    """A throwaway PostgreSQL 15 server (tests/pg_kit.py) with durable-enough settings."""

    def __init__(self) -> None:
        from pg_kit import PgServer, missing_reason

        reason = missing_reason()
        if reason:
            raise SystemExit(f"pg_nodes: {reason}")
        self.server = PgServer({"fsync": "on", "full_page_writes": "on",
                                "synchronous_commit": "off", "autovacuum": "on"}).start()
        self.pid = int((self.server.datadir / "postmaster.pid").read_text().split()[0])

    def cpu_s(self) -> float:
        """The server's CPU so far: the postmaster with its exited backends, and the live ones."""
        return proc_cpu_s(self.pid, children_done=True) + sum(
            proc_cpu_s(c) for c in children(self.pid))

    def database(self) -> str:
        return self.server.create_database()

    def stop(self) -> None:
        self.server.stop()


class Node(ServeProcess):
    """One `python -m schedd serve` process of this tree in `<workdir>/<name>`; none of
    this process's SCHEDD_* variables reach it."""

    def __init__(self, workdir: Path, name: str, url: str = "", lease: float = 0.0) -> None:
        env = {}
        if url:
            env["SCHEDD_DATABASE_URL"] = url
        if lease:
            env["SCHEDD_NODE_LEASE_SECONDS"] = str(lease)
        super().__init__(workdir / name, env=env, inherit_schedd=False)
        self.node_id = ""

    async def ready(self, timeout_s: float = 60.0, key_file: bool = False) -> dict[str, Any]:
        """Ready, its node id read; a node that joins a PostgreSQL database writes no key
        file (the first node did)."""
        body = await super().ready(timeout_s, key_file)
        with contextlib.suppress(KeyError, TypeError):
            self.node_id = body["scheduler"]["node_id"]
        return body


def schedule_body(name: str, hook: str, retries: int, **timing: str) -> bytes:
    return json.dumps({
        "name": name, **timing, "action_type": "webhook", "overlap_policy": "ALLOW",
        "max_retries": retries, "retry_backoff_seconds": 0,
        "action_config": {"url": hook, "method": "POST", "timeout_seconds": 30,
                          "body": {"job": name + "#{{run.attempt}}",
                                   "due": "{{run.scheduled_for}}"}},
    }).encode()


async def create_all(http: Any, nodes: list[Node], key: str, bodies: list[bytes],
                     conns: int = 16) -> None:
    """POST every body to /v1/schedules, `conns` at a time, through the nodes in turn."""
    hdr = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    it = iter(enumerate(bodies))

    async def worker() -> None:
        for i, body in it:
            node = nodes[i % len(nodes)]
            status, text = await http.request("POST", HOST, node.port, "/v1/schedules", hdr,
                                              body, timeout=60.0, excerpt=300)
            if status != 201:
                raise SystemExit(f"create: HTTP {status} {text!r}")

    await asyncio.gather(*(worker() for _ in range(conns)))


def split_job(job: str) -> tuple[str, int]:
    name, _, attempt = job.rpartition("#")
    return name, int(attempt)


def arrivals_of(records: list[dict[str, Any]]) -> list[tuple[float, str, int, float]]:
    """(arrival ms, schedule name, attempt, occurrence ms) of every fire the sink got."""
    out = []
    for r in records:
        if r.get("due") is None or not r.get("job"):
            continue
        name, attempt = split_job(str(r["job"]))
        out.append((r["arrival"] * 1000, name, attempt, r["due"] * 1000))
    return out


def lateness_summary(late: list[float]) -> dict[str, Any]:
    if not late:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    return {"p50_ms": round(statistics.median(late), 1), "p99_ms": round(pct(late, 0.99), 1),
            "max_ms": round(max(late), 1)}


async def sleep_until(t: float) -> None:
    await asyncio.sleep(max(0.0, t - time.time()))


class Db:
    """Read the runs of a node's database after a scenario (SQLite file or PostgreSQL)."""

    def __init__(self, node: Node, url: str) -> None:
        self.node, self.url = node, url

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self.url:
            import psycopg

            with psycopg.connect(self.url, autocommit=True) as c:
                return list(c.execute(sql.encode()).fetchall())
        con = sqlite3.connect(f"file:{self.node.db}?mode=ro", uri=True)
        try:
            return list(con.execute(sql).fetchall())
        finally:
            con.close()


# ------------------------------------------------------------------ scenario `one`
async def w2_run(backend: str, pg: Postgres | None, n: int, lead: float) -> dict[str, Any]:
    from schedd.webhook_http import LeanHttp

    with tempfile.TemporaryDirectory(prefix="schedd-pgn-") as tmp:
        sink = SinkProcess(Path(tmp))
        url = pg.database() if pg else ""
        node = Node(Path(tmp), "n1", url)
        records: list[dict[str, Any]] = []
        try:
            async with LeanHttp(max_connections=32) as http:
                await node.ready()
                t_create = time.time()
                T = float(int(t_create + lead) + 1)
                await create_all(http, [node], node.key(), [
                    schedule_body(f"w2-{i}", sink.url + "/hook", 0, schedule_type="once",
                                  schedule_expression=iso(T)) for i in range(n)])
                created = time.time()
                if created > T - 0.5:  # the caller runs it again with a longer lead
                    return {"backend": backend, "past_t": round(created - t_create, 1)}
                await sleep_until(T - 0.3)
                ncpu0, pcpu0 = node.cpu_s(), pg.cpu_s() if pg else 0.0
                # wait (bounded) until the sink has them all
                deadline = T + 120
                while time.time() < deadline:
                    status, body = await http.request("GET", HOST, sink.port, "/count", {}, b"",
                                                      timeout=5.0, excerpt=64)
                    if status == 200 and int(body) >= n:
                        break
                    await asyncio.sleep(0.1)
                ncpu1, pcpu1 = node.cpu_s(), pg.cpu_s() if pg else 0.0
                await asyncio.sleep(0.5)
        finally:
            node.stop()
            records = sink.stop()
        arr = arrivals_of(records)
        seen = Counter(name for _, name, _, _ in arr)
        last = max((a for a, *_ in arr), default=float("nan"))
        drain = (last - T * 1000) / 1000
        return {"backend": backend, "n": n, "received": len(arr),
                "missing": n - len(seen), "doubled": sum(c - 1 for c in seen.values()),
                "drain_s": round(drain, 3), "fires_per_s": round(n / drain, 1),
                **lateness_summary([a - d for a, _, _, d in arr]),
                "create_s": round(created - t_create, 1),
                "node_cpu_s": round(ncpu1 - ncpu0, 2),
                "pg_cpu_s": round(pcpu1 - pcpu0, 2), "errors": node.errors()[:5]}


async def w3_run(backend: str, pg: Postgres | None, nodes_n: int, schedules: int,
                 seconds: int) -> dict[str, Any]:
    """`schedules` interval-1s webhooks on `nodes_n` nodes; the window's every occurrence."""
    from schedd.webhook_http import LeanHttp

    with tempfile.TemporaryDirectory(prefix="schedd-pgn-") as tmp:
        sink = SinkProcess(Path(tmp))
        url = pg.database() if pg else ""
        nodes: list[Node] = []
        try:
            async with LeanHttp(max_connections=32) as http:
                nodes.append(Node(Path(tmp), "n1", url))
                await nodes[0].ready()  # the first start migrates and writes the key
                nodes += [Node(Path(tmp), f"n{i + 1}", url) for i in range(1, nodes_n)]
                for nd in nodes[1:]:
                    await nd.ready()
                key = nodes[0].key()
                start = float(int(time.time()) + max(3, schedules // 200 + 2))
                await create_all(http, nodes, key, [
                    schedule_body(f"w3-{i}", sink.url + "/hook", 0, schedule_type="interval",
                                  schedule_expression="1s", start_at=iso(start))
                    for i in range(schedules)])
                t0 = float(int(max(time.time(), start)) + 2)  # first counted occurrence
                await sleep_until(t0 - 0.3)
                cpu0 = [nd.cpu_s() for nd in nodes]
                pcpu0 = pg.cpu_s() if pg else 0.0
                await sleep_until(t0 + seconds - 0.3)
                cpu1 = [nd.cpu_s() for nd in nodes]
                pcpu1 = pg.cpu_s() if pg else 0.0
                await asyncio.sleep(3.0)  # the window's last fires, and any double
                spread = {}
                if nodes_n > 1:
                    db = Db(nodes[0], url)
                    with contextlib.suppress(Exception):
                        spread = dict(db.rows(
                            f"SELECT node_id, count(*) FROM runs WHERE scheduled_for_ms >= "
                            f"{int(t0 * 1000)} AND scheduled_for_ms < "
                            f"{int((t0 + seconds) * 1000)} GROUP BY node_id"))
        finally:
            for nd in nodes:
                nd.stop()
            records = sink.stop()
        lo, hi = t0 * 1000, (t0 + seconds) * 1000
        inside = [(a, nm, d) for a, nm, _, d in arrivals_of(records) if lo <= d < hi]
        seen = Counter((nm, d) for _, nm, d in inside)
        return {"backend": backend, "nodes": nodes_n, "schedules": schedules,
                "seconds": seconds, "fires": len(inside),
                "missing": schedules * seconds - len(seen),
                "doubled": sum(c - 1 for c in seen.values()),
                **lateness_summary([a - d for a, _, d in inside]),
                "node_cpu_s": [round(b - a, 2) for a, b in zip(cpu0, cpu1, strict=True)],
                "pg_cpu_s": round(pcpu1 - pcpu0, 2),
                "runs_per_node": {(k or "none")[-6:]: v for k, v in spread.items()},
                "errors": [e for nd in nodes for e in nd.errors()][:5]}


def show(r: dict[str, Any]) -> None:
    print(json.dumps(r), flush=True)


async def scenario_one(a: argparse.Namespace, pg: Postgres) -> dict[str, Any]:
    w2: dict[str, list[dict[str, Any]]] = {"sqlite": [], "postgres": []}
    w3: dict[str, list[dict[str, Any]]] = {"sqlite": [], "postgres": []}
    lead = {"sqlite": a.lead, "postgres": a.lead}
    for rep in range(a.reps):
        order = ["sqlite", "postgres"] if rep % 2 == 0 else ["postgres", "sqlite"]
        for b in order:
            for _ in range(3):  # creates slower than the lead: again, with a longer one
                r = await w2_run(b, pg if b == "postgres" else None, a.w2, lead[b])
                if "past_t" not in r:
                    break
                print(f"pg_nodes: {b}: creating took {r['past_t']} s, more than the lead "
                      f"({lead[b]:.0f} s): again", flush=True)
                lead[b] = r["past_t"] * 1.5 + 3
            else:
                raise SystemExit("the creates never finished before T")
            lead[b] = max(lead[b], r["create_s"] * 1.3 + 3)
            r |= {"scenario": "one/W2", "rep": rep, "load": loadavg()}
            show(r)
            w2[b].append(r)
        for b in order:
            r = await w3_run(b, pg if b == "postgres" else None, 1, a.w3, a.seconds)
            r |= {"scenario": "one/W3", "rep": rep, "load": loadavg()}
            show(r)
            w3[b].append(r)
    fires = [p["fires_per_s"] / s["fires_per_s"]
             for s, p in zip(w2["sqlite"], w2["postgres"], strict=True)]
    p99 = [p["p99_ms"] / s["p99_ms"] for s, p in zip(w3["sqlite"], w3["postgres"], strict=True)]
    med = statistics.median
    summary = {
        "scenario": "one/summary",
        "w2_fires_per_s": {b: med(x["fires_per_s"] for x in w2[b]) for b in w2},
        "w2_pg_over_sqlite": [round(x, 2) for x in fires],
        "w2_pg_over_sqlite_median": round(med(fires), 2), "w2_target": ">= 0.5",
        "w2_node_cpu_s": {b: med(x["node_cpu_s"] for x in w2[b]) for b in w2},
        "w2_pg_server_cpu_s": med(x["pg_cpu_s"] for x in w2["postgres"]),
        "w3_p99_ms": {b: med(x["p99_ms"] for x in w3[b]) for b in w3},
        "w3_pg_over_sqlite": [round(x, 2) for x in p99],
        "w3_pg_over_sqlite_median": round(med(p99), 2), "w3_target": "<= 2",
        "w3_node_cpu_s": {b: med(x["node_cpu_s"][0] for x in w3[b]) for b in w3},
        "w3_pg_server_cpu_s": med(x["pg_cpu_s"] for x in w3["postgres"]),
        "missing": sum(x["missing"] for b in w2 for x in w2[b] + w3[b]),
        "doubled": sum(x["doubled"] for b in w2 for x in w2[b] + w3[b]),
    }
    show(summary)
    return summary


# ------------------------------------------------------------------ scenario `failover`
async def failover_run(a: argparse.Namespace, pg: Postgres) -> dict[str, Any]:
    from schedd.webhook_http import LeanHttp

    seconds = int(a.kill_after + a.lease + 8)
    with tempfile.TemporaryDirectory(prefix="schedd-pgn-") as tmp:
        sink = SinkProcess(Path(tmp))
        url = pg.database()
        nodes: list[Node] = []
        victim: Node | None = None
        try:
            async with LeanHttp(max_connections=32) as http:
                nodes.append(Node(Path(tmp), "n1", url, a.lease))
                await nodes[0].ready()
                nodes += [Node(Path(tmp), f"n{i + 1}", url, a.lease) for i in range(1, 3)]
                for nd in nodes[1:]:
                    await nd.ready()
                key = nodes[0].key()
                start = float(int(time.time()) + max(3, a.w3_nodes // 200 + 2))
                bodies = [schedule_body(f"w3-{i}", sink.url + "/hook", 3,
                                        schedule_type="interval", schedule_expression="1s",
                                        start_at=iso(start)) for i in range(a.w3_nodes)]
                bodies += [schedule_body(f"slow-{i}", f"{sink.url}/slow?ms={a.slow_ms}", 3,
                                         schedule_type="interval", schedule_expression="1s",
                                         start_at=iso(start)) for i in range(a.slow)]
                await create_all(http, nodes, key, bodies)
                t0 = float(int(max(time.time(), start)) + 2)
                t_kill = t0 + a.kill_after
                await sleep_until(t_kill)
                victim = nodes[1]
                victim.kill()
                kill_ms = time.time() * 1000
                await sleep_until(t0 + seconds)
                # bounded: until no run of the window is still active (the slow ones end)
                db = Db(nodes[0], url)
                lo, hi = int(t0 * 1000), int((t0 + seconds) * 1000)
                active = -1
                for _ in range(int((a.slow_ms / 1000 + a.lease + 10) * 4)):
                    active = db.rows(f"SELECT count(*) FROM runs WHERE scheduled_for_ms >= {lo}"
                                     f" AND scheduled_for_ms < {hi} AND status IN "
                                     f"('pending', 'running')")[0][0]
                    if active == 0:
                        break
                    await asyncio.sleep(0.25)
                await asyncio.sleep(1.0)
                runs = db.rows(
                    "SELECT r.id, r.node_id, r.status, r.error_code, r.scheduled_for_ms, "
                    "r.started_ms, r.attempt, n.started_ms, n.status, n.node_id "
                    "FROM runs r LEFT JOIN runs n ON n.id = r.next_attempt_run_id "
                    f"WHERE r.scheduled_for_ms >= {lo} AND r.scheduled_for_ms < {hi}")
        finally:
            for nd in nodes:
                nd.stop()
            records = sink.stop()
            errors = [e for nd in nodes if nd is not victim for e in nd.errors()][:5]
    assert victim is not None
    arr = arrivals_of(records)
    inside = [(at, nm, att, d) for at, nm, att, d in arr if lo <= d < hi]
    per_attempt = Counter((nm, d, att) for _, nm, att, d in inside)
    fired = {(nm, d) for _, nm, _, d in inside}
    names = [f"w3-{i}" for i in range(a.w3_nodes)] + [f"slow-{i}" for i in range(a.slow)]
    want = {(nm, float(t)) for nm in names for t in range(lo, hi, 1000)}
    again = Counter((nm, d) for (nm, d, _att) in per_attempt)
    victim_runs = [r for r in runs if r[1] == victim.node_id]
    interrupted = [r for r in victim_runs if r[3] == "interrupted"]
    retry_s = [(r[7] - kill_ms) / 1000 for r in interrupted if r[7] is not None]
    not_retried = [r[0] for r in interrupted if r[7] is None]
    retry_on_victim = [r[0] for r in interrupted if r[9] == victim.node_id]
    by_status = Counter((r[2], r[3]) for r in runs)
    out = {
        "scenario": "failover", "nodes": 3, "schedules": a.w3_nodes, "slow": a.slow,
        "slow_ms": a.slow_ms, "seconds": seconds, "lease_s": a.lease,
        "killed_at_s": a.kill_after, "victim": victim.node_id[-6:],
        "fires": len(inside), "occurrences": len(want),
        "lost": len(want - fired), "doubled": sum(c - 1 for c in per_attempt.values()),
        "delivered_again_as_retry": sum(1 for c in again.values() if c > 1),
        "victim_runs": len(victim_runs), "victim_interrupted": len(interrupted),
        "victim_still_running": sum(1 for r in victim_runs if r[2] == "running"),
        "not_retried": len(not_retried), "retried_on_victim": len(retry_on_victim),
        "retry_after_kill_s": {"min": round(min(retry_s), 2) if retry_s else None,
                               "max": round(max(retry_s), 2) if retry_s else None},
        "bound_s": a.lease + 2,
        "within_bound": bool(retry_s) and max(retry_s) <= a.lease + 2,
        "runs_by_status": {f"{s}/{e or ''}": c for (s, e), c in by_status.items()},
        **lateness_summary([at - d for at, _, att, d in inside if att == 1]),
        "errors": errors, "load": loadavg(),
    }
    show(out)
    return out


async def main(a: argparse.Namespace) -> int:
    wanted = {s.strip() for s in a.scenario.split(",") if s.strip()}
    print(f"pg_nodes: scenarios {sorted(wanted)}; load {loadavg()}; "
          f"{os.cpu_count()} cores", flush=True)
    pg = Postgres()
    results: dict[str, Any] = {}
    try:
        if "one" in wanted:
            results["one"] = await scenario_one(a, pg)
        if "three" in wanted:
            rows = []
            for rep in range(a.reps):
                r = await w3_run("postgres", pg, 3, a.w3_nodes, a.seconds)
                r |= {"scenario": "three/W3", "rep": rep, "load": loadavg()}
                show(r)
                rows.append(r)
            three = {"scenario": "three/summary", "p99_ms": [x["p99_ms"] for x in rows],
                     "missing": sum(x["missing"] for x in rows),
                     "doubled": sum(x["doubled"] for x in rows)}
            if "one" in results:
                one_p99 = results["one"]["w3_p99_ms"]["postgres"]
                three["p99_over_one_pg_node"] = round(
                    statistics.median(x["p99_ms"] for x in rows) / one_p99, 2)
            show(three)
            results["three"] = three
        if "failover" in wanted:
            results["failover"] = await failover_run(a, pg)
    finally:
        pg.stop()
    print(f"pg_nodes: done; load {loadavg()}", flush=True)
    return 0


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # runs the finally blocks: every child is stopped


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--scenario", default="one,three,failover")
    ap.add_argument("--reps", type=int, default=2, help="interleaved reps of one and three")
    ap.add_argument("--w2", type=int, default=10_000, help="one-shots of W2")
    ap.add_argument("--lead", type=float, default=30.0,
                    help="s from the first W2 create to T at first (the creates must finish "
                         "before; lengthened from what they took)")
    ap.add_argument("--w3", type=int, default=200, help="W3 schedules on one node")
    ap.add_argument("--w3-nodes", type=int, default=600, help="W3 schedules on three nodes")
    ap.add_argument("--seconds", type=int, default=20, help="W3 occurrences counted")
    ap.add_argument("--lease", type=float, default=15.0, help="node_lease_seconds (failover)")
    ap.add_argument("--kill-after", type=float, default=8.0)
    ap.add_argument("--slow", type=int, default=30, help="failover: slow schedules")
    ap.add_argument("--slow-ms", type=int, default=3000, help="failover: their answer delay")
    sys.exit(asyncio.run(main(ap.parse_args())))
