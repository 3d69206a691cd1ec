#!/usr/bin/env python3
"""CI smoke of the bench's W2 and W3 against schedd alone: every fire exactly once.

    python bench/smoke.py [--burst 300] [--steady 20] [--seconds 8]

Starts `sys.executable -m schedd serve` on a temporary database and a free 127.0.0.1
port, with a webhook sink in this process (aiohttp, on 127.0.0.1 too). Then, overlapped:
  W3  --steady interval schedules every 1 s from S = now + 3 s, counted for --seconds s
      (occurrences S + k s, 0 <= k < --seconds);
  W2  --burst one-shot schedules all due at T = S + 3.5 s.
Every webhook POSTs {"job": name, "due": "{{run.scheduled_for}}"}; the sink counts each
(job, due) pair. It waits (bounded, generously: a slow machine is not a failure) until
every expected fire has arrived, lingers 1.5 s for duplicates, stops the daemon with
SIGTERM and prints the counts, lateness and what the daemon recorded.

Exit status: 1 when any expected fire is missing or any fire arrived twice (or an
unexpected one arrived); 0 otherwise. Timings are printed, never judged. Needs no
network beyond 127.0.0.1 and no benchmark venv: only schedd and its dependencies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime

import aiohttp
from aiohttp import web


def rfc3339_ms(t: float) -> str:
    ms = round(t * 1000.0)
    s, frac = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{frac:03d}Z"


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).timestamp()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def body(name: str, url: str, **timing: str) -> dict[str, object]:
    return {
        "name": name, **timing, "action_type": "webhook",
        "action_config": {"url": url, "method": "POST",
                          "body": {"job": name, "due": "{{run.scheduled_for}}"}},
        # as in bench/peers: never drop an occurrence, never retry one (a retry is a double)
        "overlap_policy": "ALLOW", "max_retries": 0,
    }


def pct(vals: list[float], q: float) -> float:
    s = sorted(vals)
    return s[min(len(s) - 1, int(q * len(s)))]


async def main(a: argparse.Namespace) -> int:
    arrivals: list[tuple[float, str, str]] = []

    async def hook(request: web.Request) -> web.Response:
        now = time.time()
        d = await request.json()
        rec = (now, str(d.get("job")), str(d.get("due")))
        if a.inject == "drop" and rec[1] == "burst0":
            return web.Response(text="ok")  # self-test: lose one fire
        arrivals.append(rec)
        if a.inject == "double" and rec[1] == "burst1":
            arrivals.append(rec)  # self-test: count one fire twice
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sink_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", sink_port).start()
    url = f"http://127.0.0.1:{sink_port}/hook"

    tmp = tempfile.mkdtemp(prefix="schedd-smoke-")
    db = os.path.join(tmp, "smoke.db")
    port = free_port()
    log_path = os.path.join(tmp, "schedd.log")
    logf = open(log_path, "w")  # noqa: SIM115 (closed in finally)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDD_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "schedd", "serve", "--db", db, "--host", "127.0.0.1",
         "--port", str(port)], stdout=logf, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    expected: set[tuple[str, str]] = set()
    lead_problem = None
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.time() + 60
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"schedd exited with {proc.returncode} before it was ready")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(base + "/readyz") as r:
                        if r.status == 200:
                            break
                if time.time() > deadline:
                    raise RuntimeError("schedd was not ready within 60 s")
                await asyncio.sleep(0.05)
            while not os.path.exists(db + ".key") and time.time() < deadline:
                await asyncio.sleep(0.05)
            with open(db + ".key") as f:
                hdr = {"Authorization": f"Bearer {f.read().strip()}"}

            start = time.time()
            S = float(int(start) + 3)  # steady grid on whole seconds, >= 2 s ahead
            T = S + 3.5  # the burst falls between two steady ticks
            for i in range(a.steady):
                name = f"steady{i}"
                async with http.post(base + "/v1/schedules", headers=hdr, json=body(
                        name, url, schedule_type="interval", schedule_expression="1s",
                        start_at=rfc3339_ms(S))) as r:
                    if r.status not in (200, 201):
                        raise RuntimeError(f"create {name}: HTTP {r.status} {await r.text()}")
                for k in range(a.seconds):
                    expected.add((name, rfc3339_ms(S + k)))
            for i in range(a.burst):
                name = f"burst{i}"
                async with http.post(base + "/v1/schedules", headers=hdr, json=body(
                        name, url, schedule_type="once", schedule_expression=rfc3339_ms(T))) as r:
                    if r.status not in (200, 201):
                        raise RuntimeError(f"create {name}: HTTP {r.status} {await r.text()}")
                expected.add((name, rfc3339_ms(T)))
            created_at = time.time()
            if created_at > S:
                lead_problem = f"creating took {created_at - start:.1f} s: S was already past"

            # wait for every expected fire (bounded, generous), then linger for doubles
            end_window = S + a.seconds
            hard = max(end_window, T) + a.wait
            while time.time() < hard:
                got = {(j, d) for _, j, d in arrivals}
                if time.time() > end_window and expected <= got:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)
    except Exception as exc:
        print(f"smoke: ERROR {exc}", file=sys.stderr)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        logf.close()
        await runner.cleanup()

    # count: only occurrences inside the window matter (the steady ones go on firing)
    counts = Counter((j, d) for _, j, d in arrivals)
    steady_grid = {rfc3339_ms(S + k) for k in range(a.seconds)} if expected else set()
    in_scope = Counter({jd: c for jd, c in counts.items()
                        if jd[0].startswith("burst") or jd[1] in steady_grid})
    missing = sorted(expected - set(in_scope))
    doubled = sorted((jd, c) for jd, c in in_scope.items() if c > 1)
    unexpected = sorted(jd for jd in in_scope if jd not in expected)
    lat = {"burst": [], "steady": []}
    for t, j, d in arrivals:
        if (j, d) in expected:
            lat["burst" if j.startswith("burst") else "steady"].append(t - epoch(d))

    recorded = {}
    with contextlib.suppress(Exception):
        c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        recorded = dict(c.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall())
        c.close()

    n_b = sum(1 for j, _ in expected if j.startswith("burst"))
    n_s = len(expected) - n_b
    print(f"smoke: schedd {sys.executable} -m schedd; db {db}; log {log_path} (removed if OK)")
    print(f"smoke: W2 burst {a.burst} one-shots + W3 {a.steady} interval x 1 s x {a.seconds} s")
    print(f"smoke: expected {len(expected)} fires ({n_b} burst, {n_s} steady); received "
          f"{sum(in_scope.values())} in scope ({len(arrivals)} in all)")
    for k, v in lat.items():
        if v:
            print(f"smoke: {k} lateness s (not judged): p50 {statistics.median(v):.3f} "
                  f"p99 {pct(v, 0.99):.3f} max {max(v):.3f}")
    print(f"smoke: runs recorded by schedd (info): {json.dumps(recorded, sort_keys=True)}; "
          f"daemon exit {proc.returncode}")
    if lead_problem:
        print(f"smoke: note: {lead_problem}")
    print(f"smoke: missing {len(missing)}  doubled {len(doubled)}  unexpected {len(unexpected)}")
    for jd in missing[:10]:
        print(f"smoke:   missing {jd}")
    for jd, c in doubled[:10]:
        print(f"smoke:   doubled x{c} {jd}")
    for jd in unexpected[:10]:
        print(f"smoke:   unexpected {jd}")
    bad = bool(missing or doubled or unexpected) or not expected
    if bad:
        with contextlib.suppress(OSError), open(log_path) as f:
            tail = f.read()[-3000:]
        print("smoke: FAILED; schedd log tail:\n" + tail, file=sys.stderr)
        return 1
    print("smoke: OK (every fire exactly once)")
    shutil.rmtree(tmp, ignore_errors=True)  # kept only when something failed
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--burst", type=int, default=300, help="one-shots due together (W2)")
    ap.add_argument("--steady", type=int, default=20, help="interval schedules, every 1 s (W3)")
    ap.add_argument("--seconds", type=int, default=8, help="steady occurrences counted")
    ap.add_argument("--wait", type=float, default=60.0,
                    help="how long past the window a late fire is still waited for")
    ap.add_argument("--inject", choices=("drop", "double"),
                    help="self-test of the checker: the sink loses one fire or counts one twice "
                         "(the smoke must then exit 1)")
    sys.exit(asyncio.run(main(ap.parse_args())))
