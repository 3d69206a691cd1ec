#!/usr/bin/env python3
"""CPU cost per webhook request: aiohttp (as schedd uses it) vs schedd.webhook_http.LeanHttp.

    /tmp/venv/bin/python bench/http_client.py [--n 20000] [--concurrency 64] [--reps 3]

Starts the benchmark sink (bench/peers/sink.py) pinned to cpu0 (`taskset -c 0`), then for
each repetition runs one client process per variant pinned to cpu1 (`taskset -c 1`),
under uvloop, alternating which variant goes first. A client sends 500 warm-up POSTs, then
N timed POSTs with `concurrency` requests in flight (that many worker coroutines): a
~200-byte JSON body and schedd's headers (Content-Type, User-Agent, Idempotency-Key,
X-Schedd-Schedule-Id, X-Schedd-Run-Id, X-Schedd-Attempt, X-Schedd-Scheduled-For, and an
Authorization header), reading the status and at most 1 KiB of body. It reports wall
requests/s and CPU µs per request (getrusage user+system of the client process over the
timed part). The sink's count is checked after each run. 127.0.0.1 only; every client
process is killed after 100 s.

Variants
  aiohttp  ClientSession.request(method, url, data=, headers=,
           timeout=ClientTimeout(total=30), allow_redirects=False), a TCPConnector(limit=64,
           ttl_dns_cache=300) and DummyCookieJar, exactly like schedd/webhooks.py
  lean     LeanHttp(max_connections=64).request(...) after urlsplit of the same URL
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from statistics import median
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
SINK = HERE / "peers" / "sink.py"
EXCERPT = 1024
WARMUP = 500


def _headers(i: int) -> dict[str, str]:
    run_id = str(uuid.UUID(int=i))
    return {
        "Content-Type": "application/json",
        "User-Agent": "schedd/0.1 (+https://github.com/schedd)",
        "Idempotency-Key": run_id,
        "X-Schedd-Schedule-Id": "01JD7Z6K3M8Q2V5T9W4X0Y1B2C",
        "X-Schedd-Run-Id": run_id,
        "X-Schedd-Attempt": "1",
        "X-Schedd-Scheduled-For": "2026-11-22T09:00:00.000Z",
        "Authorization": "Bearer 0123456789abcdef0123456789abcdef",
    }


def _body(i: int) -> bytes:
    return json.dumps(
        {
            "schedule_id": "01JD7Z6K3M8Q2V5T9W4X0Y1B2C",
            "run_id": str(uuid.UUID(int=i)),
            "attempt": 1,
            "scheduled_for": "2026-11-22T09:00:00.000Z",
            "triggered_at": "2026-11-22T09:00:00.004Z",
            "trigger_type": "schedule",
            "payload": {"job": "bench", "n": i},
        },
        separators=(",", ":"),
    ).encode()


# ---------------------------------------------------------------- client process


async def _client(variant: str, url: str, n: int, concurrency: int) -> dict[str, float]:
    import aiohttp

    from schedd.webhook_http import LeanHttp

    bodies = [_body(i) for i in range(64)]
    counter = iter(range(0))
    errors = 0

    if variant == "aiohttp":
        connector = aiohttp.TCPConnector(limit=concurrency, ttl_dns_cache=300)
        session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),
            raise_for_status=False,
        )

        async def one(i: int) -> tuple[int, bytes]:
            async with session.request(
                "POST",
                url,
                data=bodies[i & 63],
                headers=_headers(i),
                timeout=aiohttp.ClientTimeout(total=30.0),
                allow_redirects=False,
            ) as resp:
                status = resp.status
                buf = bytearray()
                try:
                    while len(buf) < EXCERPT:
                        chunk = await resp.content.read(EXCERPT - len(buf))
                        if not chunk:
                            break
                        buf += chunk
                except (aiohttp.ClientError, TimeoutError, OSError):
                    pass
                return status, bytes(buf)

        async def close() -> None:
            await session.close()

    else:
        http = LeanHttp(max_connections=concurrency)

        async def one(i: int) -> tuple[int, bytes]:
            parts = urlsplit(url)
            host = parts.hostname or ""
            port = parts.port or 80
            target = parts.path or "/"
            if parts.query:
                target += "?" + parts.query
            return await http.request(
                "POST", host, port, target, _headers(i), bodies[i & 63], 30.0, EXCERPT
            )

        async def close() -> None:
            await http.aclose()

    async def worker() -> None:
        nonlocal errors
        for i in counter:  # shared: each worker takes the next index
            status, excerpt = await one(i)
            if status != 200 or excerpt != b"{}":
                errors += 1

    # warm-up: connections opened, code paths hot
    counter = iter(range(WARMUP))
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    counter = iter(range(WARMUP, WARMUP + n))
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    await close()
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {
        "rps": n / wall,
        "cpu_us": cpu / n * 1e6,
        "user_us": (ru1.ru_utime - ru0.ru_utime) / n * 1e6,
        "sys_us": (ru1.ru_stime - ru0.ru_stime) / n * 1e6,
        "wall_s": wall,
        "errors": errors,
    }


def client_main(args: argparse.Namespace) -> None:
    import uvloop

    result = uvloop.run(_client(args.client, args.url, args.n, args.concurrency))
    print(json.dumps(result), flush=True)


# ------------------------------------------------------------------- driver


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        data: bytes = r.read()
    return data.decode()


def driver_main(args: argparse.Namespace) -> None:
    sink_python = args.sink_python or sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        ready = os.path.join(tmp, "port")
        sink = subprocess.Popen(
            ["taskset", "-c", "0", sink_python, str(SINK), "--port", "0",
             "--out", os.path.join(tmp, "sink.jsonl"), "--ready-file", ready],
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while not os.path.exists(ready):
                if time.monotonic() > deadline or sink.poll() is not None:
                    raise SystemExit("the sink did not start")
                time.sleep(0.05)
            port = int(Path(ready).read_text())
            url = f"http://127.0.0.1:{port}/hook"
            rows: dict[str, list[dict[str, float]]] = {"aiohttp": [], "lean": []}
            for rep in range(args.reps):
                order = ["aiohttp", "lean"] if rep % 2 == 0 else ["lean", "aiohttp"]
                for variant in order:
                    _get(port, "/reset")
                    out = subprocess.run(
                        ["taskset", "-c", "1", sys.executable, __file__, "--client", variant,
                         "--url", url, "--n", str(args.n),
                         "--concurrency", str(args.concurrency)],
                        capture_output=True, text=True, timeout=100, check=True,
                    ).stdout
                    res = json.loads(out.strip().splitlines()[-1])
                    got = int(_get(port, "/count"))
                    if got != args.n + WARMUP or res["errors"]:
                        raise SystemExit(f"{variant}: sink got {got}, errors {res['errors']}")
                    res["rep"] = rep + 1
                    rows[variant].append(res)
                    print(f"rep {rep + 1} {variant:8s} {res['rps']:8.0f} req/s "
                          f"{res['cpu_us']:6.1f} µs CPU/req (user {res['user_us']:.1f}, "
                          f"sys {res['sys_us']:.1f})", flush=True)
        finally:
            sink.terminate()
            sink.wait(10)
    print()
    print(f"N={args.n}, {args.concurrency} in flight, client on cpu1, sink on cpu0, uvloop")
    print("| client | rep | req/s | CPU µs/req | user µs | sys µs |")
    print("|---|---|---|---|---|---|")
    for variant, results in rows.items():
        for r in results:
            print(f"| {variant} | {r['rep']} | {r['rps']:.0f} | {r['cpu_us']:.1f} "
                  f"| {r['user_us']:.1f} | {r['sys_us']:.1f} |")
    a = median(r["cpu_us"] for r in rows["aiohttp"])
    b = median(r["cpu_us"] for r in rows["lean"])
    print(f"\nmedian CPU µs/req: aiohttp {a:.1f}, lean {b:.1f} -> {a / b:.2f}x cheaper")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--sink-python", default=None, help="python for the sink (default: this)")
    ap.add_argument("--client", choices=["aiohttp", "lean"], help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        client_main(args)
    else:
        driver_main(args)


if __name__ == "__main__":
    main()
