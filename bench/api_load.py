#!/usr/bin/env python3
"""The API under load: creates/s from concurrent keep-alive clients, and W3's lateness
alone and while the API serves a mixed load from another process.

    python bench/api_load.py creates [--tree DIR] [--conns 16] [--seconds 10]
    python bench/api_load.py creates --trees A,B --reps 3   # interleaved A,B,A,B,A,B; medians
    python bench/api_load.py w3 [--tree DIR] [--schedules 200] [--seconds 20] [--conns 16]
    python bench/api_load.py w3 --trees A,B --reps 2        # interleaved; medians
    python bench/api_load.py goals [--trees A,B] [--reps 3]  # both of issue 12 §4's goals
    python bench/api_load.py client --base URL --key KEY --mix create|mixed ...  (internal)

`goals` runs, per tree and repetition (trees interleaved), `creates` (16 connections,
10 s) and `w3` (200 schedules, 20 s alone + 20 s under load), then prints one verdict
line per tree and goal: (a) creates/s median >= 6,000, every create in the database;
(b) W3 p99 under the mixed load <= 1.5x W3 alone (median of the per-run ratios), zero
missing and zero doubled. Without --trees it measures this tree.

`creates` starts `python -m schedd serve` (from DIR when given: PYTHONPATH=DIR, so two
trees can be compared with one interpreter; `DIR;SCHEDD_X=V` also sets that environment
variable for its daemon) on a fresh database in a temporary directory
and runs the load client in its own process: `--conns` keep-alive connections, each
sending one request at a time (closed loop), POST /v1/schedules of a noop schedule due
once a year from now, for `--seconds` after a 1 s warm-up. It prints creates/s, latency
percentiles, non-201 answers, the daemon's CPU per create, and checks that the database
holds every schedule answered 201.

`w3` is issue 6's W3 with a separate load process: `--schedules` interval schedules
firing every second at the same instants into the harness's webhook sink
(bench/peers/sink.py, its own process); lateness = the sink's arrival - the occurrence
(the run's scheduled_for, sent in the body). It measures `--seconds` of W3 alone, then
`--seconds` of W3 while the client process drives the API at its maximum rate with a
mixed load (per connection, in turn: GET a schedule by id, list a page of 50, create, and
trigger a noop schedule), and reports both, the ratio of their p99s, and missing or
doubled fires (every occurrence in each window must arrive exactly once).

The client is schedd's own lean HTTP/1.1 client (webhook_http.LeanHttp, ~17 µs of CPU a
request), so that the load process leaves the daemon as much of the 2-core box as it can.
Everything binds and connects to 127.0.0.1 only; every child process is bounded by a
timeout and killed on exit. Nothing here asserts a timing; compare two trees by running
them interleaved (A, B, A, B) on the same box.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kit import HOST, ServeProcess, SinkProcess, pct

HERE = Path(__file__).resolve().parent
YEAR_S = 365 * 86400


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def noop_body(name: str, due_s: float) -> bytes:
    return json.dumps({"name": name, "schedule_type": "once", "schedule_expression": iso(due_s),
                       "action_type": "noop", "action_config": {}}).encode()


# ------------------------------------------------------------------ the load client
async def client_main(a: argparse.Namespace) -> None:
    from schedd.webhook_http import LeanHttp

    port = int(a.base.rsplit(":", 1)[1])
    hdr = {"Authorization": f"Bearer {a.key}", "Content-Type": "application/json"}
    ids = [x for x in a.ids.split(",") if x]
    kinds = ["create"] if a.mix == "create" else ["get", "list", "create", "trigger"]
    lat: dict[str, list[float]] = {k: [] for k in kinds}
    statuses: Counter[str] = Counter()
    created: list[str] = []
    due = time.time() + YEAR_S
    async with LeanHttp(max_connections=a.conns) as http:
        async def one(kind: str, n: int) -> None:
            if kind == "get":
                req = ("GET", f"/v1/schedules/{ids[n % len(ids)]}", b"")
            elif kind == "list":
                req = ("GET", f"/v1/schedules?limit=50&offset={n % 200}", b"")
            elif kind == "create":
                req = ("POST", "/v1/schedules", noop_body(f"load-{os.getpid()}-{n}", due))
            else:
                req = ("POST", f"/v1/schedules/{ids[n % len(ids)]}/trigger", b"")
            t0 = time.perf_counter()
            status, body = await http.request(req[0], HOST, port, req[1], hdr, req[2],
                                              timeout=10.0, excerpt=1 << 20)
            lat[kind].append(time.perf_counter() - t0)
            statuses[f"{kind} {status}"] += 1
            if kind == "create" and status == 201 and a.check:
                created.append(json.loads(body)["id"])

        stop = time.perf_counter() + a.warmup
        counter = [0]

        async def worker(w: int) -> None:
            k = w % len(kinds)
            while time.perf_counter() < stop:
                counter[0] += 1
                await one(kinds[k % len(kinds)], counter[0])
                k += 1

        # warm-up (not counted), then the timed window
        await asyncio.gather(*(worker(w) for w in range(a.conns)))
        for v in lat.values():
            v.clear()
        statuses.clear()
        created.clear()
        cpu0, t0 = time.process_time(), time.perf_counter()
        stop = t0 + a.seconds
        await asyncio.gather(*(worker(w) for w in range(a.conns)))
        dur, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    out: dict[str, Any] = {"seconds": round(dur, 3), "client_cpu_s": round(cpu, 3),
                           "statuses": dict(statuses), "kinds": {}}
    total = 0
    for k, v in lat.items():
        total += len(v)
        out["kinds"][k] = {"n": len(v), "per_s": round(len(v) / dur, 1),
                           "p50_ms": round(1000 * pct(v, 0.5), 2),
                           "p99_ms": round(1000 * pct(v, 0.99), 2)}
    out["requests"] = total
    out["per_s"] = round(total / dur, 1)
    if a.check:
        Path(a.check).write_text("\n".join(created))
    print("LOAD_JSON " + json.dumps(out), flush=True)


# ------------------------------------------------------------------ the daemon
def tree_spec(tree: str | None) -> tuple[str, dict[str, str]]:
    """`DIR` or `DIR;NAME=VALUE;...`: a source tree and settings for its daemon, e.g.
    `.;SCHEDD_ENGINE_THREAD=true` (so one tree can be compared with itself, two ways)."""
    path, *assignments = (tree or str(HERE.parent)).split(";")
    env = dict(a.split("=", 1) for a in assignments if a)
    return path or str(HERE.parent), env


def start_daemon(tree: str | None, workdir: Path) -> ServeProcess:
    """`python -m schedd serve` of a tree (tree_spec) on a fresh database in workdir."""
    path, settings = tree_spec(tree)
    return ServeProcess(workdir, tree=path, env=settings)


def run_client(base: str, key: str, mix: str, conns: int, seconds: float,
               ids: list[str], check: str = "") -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "client", "--base", base, "--key", key,
           "--mix", mix, "--conns", str(conns), "--seconds", str(seconds),
           "--ids", ",".join(ids)]
    if check:
        cmd += ["--check", check]
    # the client imports this tree's schedd (its LeanHttp), whatever tree the daemon runs
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, env=env,
                          cwd=tempfile.gettempdir())
    for line in proc.stdout.splitlines():
        if line.startswith("LOAD_JSON "):
            result: dict[str, Any] = json.loads(line[len("LOAD_JSON "):])
            return result
    raise SystemExit(f"the load client failed: {proc.stderr[-2000:]}")


async def creates_ab(a: argparse.Namespace) -> None:
    """--trees A,B --reps N: one `creates` run per tree in turn, N rounds; then medians."""
    trees = [t for t in a.trees.split(",") if t]
    rows: dict[str, list[dict[str, Any]]] = {t: [] for t in trees}
    for _ in range(a.reps):
        for t in trees:
            a.tree = t
            rows[t].append(await creates_main(a))
    for t in trees:
        r = rows[t]
        print(json.dumps({"tree": t, "reps": len(r),
                          "creates_per_s_median": statistics.median(x["creates_per_s"] for x in r),
                          "creates_per_s": [x["creates_per_s"] for x in r],
                          "daemon_cpu_us_per_create_median": statistics.median(
                              x["daemon_cpu_us_per_create"] for x in r),
                          "p99_ms_median": statistics.median(x["p99_ms"] for x in r),
                          "missing_in_db": sum(x["missing_in_db"] for x in r)}), flush=True)


async def creates_main(a: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="schedd-api-load-") as tmp:
        d = start_daemon(a.tree, Path(tmp))
        try:
            await d.ready(30)
            key = d.key()
            check = str(Path(tmp) / "created.txt")
            cpu0 = d.cpu_s()
            r = await asyncio.to_thread(run_client, d.base, key, "create", a.conns, a.seconds,
                                        [], check)
            cpu = d.cpu_s() - cpu0
        finally:
            d.stop()
        acked = [x for x in Path(check).read_text().split("\n") if x]
        con = sqlite3.connect(d.db)
        try:
            have = {row[0] for row in con.execute("SELECT id FROM schedules")}
        finally:
            con.close()
        missing = sum(1 for x in acked if x not in have)
    k = r["kinds"]["create"]
    out = {"tree": a.tree or str(HERE.parent), "conns": a.conns,
           "creates_per_s": k["per_s"], "p50_ms": k["p50_ms"], "p99_ms": k["p99_ms"],
           "statuses": r["statuses"],
           # the daemon's CPU over warm-up + window, per create answered in the window
           "daemon_cpu_us_per_create": round(1e6 * cpu / max(1, k["n"]), 1),
           "client_cpu_us_per_request": round(1e6 * r["client_cpu_s"] / max(1, k["n"]), 1),
           "acknowledged": len(acked), "missing_in_db": missing}
    print(json.dumps(out), flush=True)
    return out


# ------------------------------------------------------------------ W3 with and without load
def fires(records: list[dict[str, Any]]) -> list[tuple[float, str, float]]:
    """(arrival ms, job, due ms) of every request the sink received."""
    return [(r["arrival"] * 1000, str(r["job"]), r["due"] * 1000) for r in records
            if r.get("due") is not None]


async def w3_ab(a: argparse.Namespace) -> None:
    """--trees A,B --reps N: one `w3` run per tree in turn, N rounds; then medians."""
    trees = [t for t in a.trees.split(",") if t]
    rows: dict[str, list[dict[str, Any]]] = {t: [] for t in trees}
    for _ in range(a.reps):
        for t in trees:
            a.tree = t
            rows[t].append(await w3_main(a))
    for t in trees:
        r = rows[t]
        print(json.dumps({
            "tree": t, "reps": len(r),
            "alone_p99_ms": [x["alone"]["p99_ms"] for x in r],
            "under_load_p99_ms": [x["under_load"]["p99_ms"] for x in r],
            "p99_ratio": [x["p99_ratio"] for x in r],
            "p99_ratio_median": statistics.median(x["p99_ratio"] for x in r),
            # the median burst's last fire, alone and under load (less noisy than a p99
            # on a shared box: one slow second is one burst, a p99 of 2,000 fires)
            "alone_burst_median_ms": [x["alone"]["burst_last_median_ms"] for x in r],
            "under_load_burst_median_ms": [x["under_load"]["burst_last_median_ms"] for x in r],
            "api_req_per_s": [x["load"]["per_s"] for x in r],
            "missing": sum(x["alone"]["missing"] + x["under_load"]["missing"] for x in r),
            "doubled": sum(x["alone"]["doubled"] + x["under_load"]["doubled"] for x in r),
        }), flush=True)


async def w3_main(a: argparse.Namespace) -> dict[str, Any]:
    from schedd.webhook_http import LeanHttp

    arrivals: list[tuple[float, str, float]] = []
    with tempfile.TemporaryDirectory(prefix="schedd-w3-load-") as tmp:
        sink = SinkProcess(Path(tmp))
        sink_port = sink.port
        d = start_daemon(a.tree, Path(tmp))
        try:
            await d.ready(30)
            key = d.key()
            async with LeanHttp(max_connections=32) as http:
                hdr = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
                start = int(time.time()) + 3
                for i in range(a.schedules):
                    body = json.dumps({
                        "name": f"w3-{i}", "schedule_type": "interval",
                        "schedule_expression": "1s", "start_at": iso(start),
                        "action_type": "webhook", "max_retries": 0, "overlap_policy": "ALLOW",
                        "action_config": {"url": f"http://{HOST}:{sink_port}/hook",
                                          "method": "POST",
                                          "body": {"job": f"w3-{i}",
                                                   "due": "{{run.scheduled_for}}"}},
                    }).encode()
                    status, _ = await http.request("POST", HOST, d.port, "/v1/schedules", hdr,
                                                   body, timeout=10.0, excerpt=64)
                    assert status == 201, status
                ids = []
                for i in range(100):  # noop schedules the mixed load reads and triggers
                    status, body = await http.request(
                        "POST", HOST, d.port, "/v1/schedules", hdr,
                        noop_body(f"target-{i}", time.time() + YEAR_S), timeout=10.0,
                        excerpt=1 << 16)
                    ids.append(json.loads(body)["id"])
            while time.time() < start + 2:
                await asyncio.sleep(0.05)
            # window 1: W3 alone
            t_alone = int(time.time()) + 1
            await asyncio.sleep(t_alone + a.seconds + 0.9 - time.time())
            # window 2: W3 while the client drives the API (its 1 s warm-up first)
            t_load = int(time.time()) + 2
            load = asyncio.create_task(asyncio.to_thread(
                run_client, d.base, key, "mixed", a.conns, a.seconds + 2, ids))
            await asyncio.sleep(t_load + a.seconds + 0.9 - time.time())
            result = await load
            await asyncio.sleep(1.5)
            gate: dict[str, float] = {}  # the read gate's counters, when the tree has one
            async with LeanHttp() as http:
                status, text = await http.request("GET", HOST, d.port, "/metrics", {}, b"",
                                                  timeout=10.0, excerpt=1 << 22)
            for line in text.decode().splitlines() if status == 200 else []:
                if line.startswith("schedd_api_read_") and "_created" not in line:
                    name, value = line.rsplit(" ", 1)
                    gate[name.removeprefix("schedd_api_read_")] = round(float(value), 3)
        finally:
            d.stop()
            arrivals = fires(sink.stop())

    def window(t0: int) -> dict[str, Any]:
        """Every occurrence t0 <= t < t0 + seconds of every W3 schedule: once each."""
        lo, hi = t0 * 1000, (t0 + a.seconds) * 1000
        inside = [(arr, job, due) for arr, job, due in arrivals if lo <= due < hi]
        seen = Counter((sid, t) for _, sid, t in inside)
        late = [arr - t for arr, _, t in inside]
        schedules = {sid for sid, _ in seen}
        want = a.seconds * a.schedules
        last: dict[float, float] = {}  # due instant -> its latest arrival's lateness
        first: dict[float, float] = {}  # due instant -> its earliest arrival's lateness
        for arr, _, t in inside:
            last[t] = max(last.get(t, 0.0), arr - t)
            first[t] = min(first.get(t, 1e9), arr - t)
        return {"fires": len(inside), "missing": want - len(seen),
                # per due instant, the lateness of its last fire: one slow burst or many
                "burst_last_ms": [round(last[t]) for t in sorted(last)],
                # and of its first: a late start (claim) or a slow burst (sending)
                "burst_first_ms": [round(first[t]) for t in sorted(first)],
                "burst_last_median_ms": round(statistics.median(last.values())) if last
                else None,
                "doubled": sum(n - 1 for n in seen.values()), "schedules": len(schedules),
                "p50_ms": round(statistics.median(late), 2) if late else None,
                "p99_ms": round(pct(late, 0.99), 2),
                "max_ms": round(max(late), 2) if late else None}

    alone, loaded = window(t_alone), window(t_load)
    out = {"tree": a.tree or str(HERE.parent), "schedules": a.schedules,
           "seconds": a.seconds, "alone": alone, "under_load": loaded,
           "p99_ratio": round(loaded["p99_ms"] / alone["p99_ms"], 2), "read_gate": gate,
           "load": {"per_s": result["per_s"], "kinds": result["kinds"],
                    "statuses": result["statuses"]}}
    print(json.dumps(out), flush=True)
    return out


GOAL_CREATES_PER_S = 6000.0
GOAL_W3_RATIO = 1.5


async def goals_main(a: argparse.Namespace) -> None:
    """Both goals of issue 12 §4, trees interleaved (see the module docstring)."""
    trees = [t for t in a.trees.split(",") if t] or [str(HERE.parent)]
    creates: dict[str, list[dict[str, Any]]] = {t: [] for t in trees}
    w3: dict[str, list[dict[str, Any]]] = {t: [] for t in trees}
    for _ in range(a.reps):
        for t in trees:
            a.tree = t
            a.conns, a.seconds = 16, a.creates_seconds
            creates[t].append(await creates_main(a))
            a.seconds, a.schedules = a.w3_seconds, 200
            w3[t].append(await w3_main(a))
    for t in trees:
        c, w = creates[t], w3[t]
        per_s = statistics.median(x["creates_per_s"] for x in c)
        lost = sum(x["missing_in_db"] for x in c)
        ratio = statistics.median(x["p99_ratio"] for x in w)
        missing = sum(x["alone"]["missing"] + x["under_load"]["missing"] for x in w)
        doubled = sum(x["alone"]["doubled"] + x["under_load"]["doubled"] for x in w)
        print(json.dumps({
            "tree": t, "reps": a.reps,
            "a_creates_per_s": [x["creates_per_s"] for x in c],
            "a_daemon_cpu_us_per_create": [x["daemon_cpu_us_per_create"] for x in c],
            "a_missing_in_db": lost,
            "b_alone_p99_ms": [x["alone"]["p99_ms"] for x in w],
            "b_under_load_p99_ms": [x["under_load"]["p99_ms"] for x in w],
            "b_p99_ratio": [x["p99_ratio"] for x in w],
            "b_alone_burst_median_ms": [x["alone"]["burst_last_median_ms"] for x in w],
            "b_under_load_burst_median_ms": [x["under_load"]["burst_last_median_ms"]
                                             for x in w],
            "b_api_req_per_s": [x["load"]["per_s"] for x in w],
            "b_missing": missing, "b_doubled": doubled}), flush=True)
        ok_a = per_s >= GOAL_CREATES_PER_S and lost == 0
        ok_b = ratio <= GOAL_W3_RATIO and missing == 0 and doubled == 0
        print(f"GOAL a {t}: {per_s:,.0f} creates/s (median of {len(c)}), {lost} lost"
              f" -> {'met' if ok_a else 'NOT met'} (>= {GOAL_CREATES_PER_S:,.0f}/s)", flush=True)
        print(f"GOAL b {t}: W3 p99 under load / alone = {ratio:.2f} (median of {len(w)}),"
              f" {missing} missing, {doubled} doubled -> {'met' if ok_b else 'NOT met'}"
              f" (<= {GOAL_W3_RATIO}x, 0 missing)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("creates")
    c.add_argument("--tree", help="run the daemon from this source tree (PYTHONPATH)")
    c.add_argument("--conns", type=int, default=16)
    c.add_argument("--seconds", type=float, default=10.0)
    c.add_argument("--trees", default="", help="A,B: compare trees, interleaved")
    c.add_argument("--reps", type=int, default=1)
    w = sub.add_parser("w3")
    w.add_argument("--tree")
    w.add_argument("--schedules", type=int, default=200)
    w.add_argument("--seconds", type=int, default=20)
    w.add_argument("--conns", type=int, default=16)
    w.add_argument("--trees", default="", help="A,B: compare trees, interleaved")
    w.add_argument("--reps", type=int, default=1)
    g = sub.add_parser("goals")
    g.add_argument("--trees", default="", help="A,B: compare trees, interleaved")
    g.add_argument("--reps", type=int, default=3)
    g.add_argument("--creates-seconds", type=float, default=10.0)
    g.add_argument("--w3-seconds", type=int, default=20)
    cl = sub.add_parser("client")
    cl.add_argument("--base", required=True)
    cl.add_argument("--key", required=True)
    cl.add_argument("--mix", choices=["create", "mixed"], required=True)
    cl.add_argument("--conns", type=int, default=16)
    cl.add_argument("--seconds", type=float, default=10.0)
    cl.add_argument("--warmup", type=float, default=1.0)
    cl.add_argument("--ids", default="")
    cl.add_argument("--check", default="", help="write the ids answered 201 to this file")
    a = ap.parse_args()
    if a.cmd in ("creates", "w3") and not 1 <= a.conns <= 256:
        ap.error("--conns must be 1..256")
    if getattr(a, "seconds", 1) > 120:
        ap.error("--seconds is at most 120 (the bench is bounded)")
    import uvloop  # schedd's own dependency

    run = uvloop.run
    if a.cmd == "goals":
        if max(a.creates_seconds, a.w3_seconds) > 120:
            ap.error("--creates-seconds and --w3-seconds are at most 120")
        run(goals_main(a))
    elif a.cmd == "creates" and a.trees:
        run(creates_ab(a))
    elif a.cmd == "w3" and a.trees:
        run(w3_ab(a))
    else:
        run({"creates": creates_main, "w3": w3_main, "client": client_main}[a.cmd](a))


if __name__ == "__main__":
    main()
