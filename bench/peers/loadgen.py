#!/usr/bin/env python3
"""W5 fallback load generator (when wrk is not installed): an aiohttp client in its own
process, `--conns` closed-loop connections for `--seconds`, against the schedd under test
on 127.0.0.1.  Prints LOAD_JSON {...} with the same fields as bench.py's wrk script.

    loadgen.py --kind get|list|create --base http://127.0.0.1:PORT --key KEY
               --seconds 15 --conns 16 [--ids a,b,c] [--body JSON]
"""
import argparse
import asyncio
import json
import time

import aiohttp

try:
    import uvloop  # type: ignore
except Exception:  # pragma: no cover
    uvloop = None


async def main(a):
    ids = [x for x in a.ids.split(",") if x]
    hdr = {"Authorization": f"Bearer {a.key}", "Content-Type": "application/json"}
    lat, errs = [], {"status": 0, "connect": 0, "timeout": 0}
    n = [0]
    conn = aiohttp.TCPConnector(limit=a.conns)
    async with aiohttp.ClientSession(connector=conn, headers=hdr,
                                     timeout=aiohttp.ClientTimeout(total=5)) as s:
        end = time.perf_counter() + a.seconds

        async def worker():
            while time.perf_counter() < end:
                n[0] += 1
                if a.kind == "get":
                    req = s.get(f"{a.base}/v1/schedules/{ids[n[0] % len(ids)]}")
                elif a.kind == "list":
                    req = s.get(f"{a.base}/v1/schedules?limit=50")
                else:
                    req = s.post(f"{a.base}/v1/schedules", data=a.body)
                t0 = time.perf_counter()
                try:
                    async with req as r:
                        await r.read()
                        if r.status >= 400:
                            errs["status"] += 1
                except TimeoutError:
                    errs["timeout"] += 1
                except aiohttp.ClientError:
                    errs["connect"] += 1
                lat.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(a.conns)))
        dur = time.perf_counter() - t0
    lat.sort()

    def p(q):
        return int(1e6 * lat[min(len(lat) - 1, int(q * len(lat)))]) if lat else 0

    print("LOAD_JSON " + json.dumps({
        "requests": len(lat), "duration_us": int(dur * 1e6), "status_errors": errs["status"],
        "connect_errors": errs["connect"], "read_errors": 0, "write_errors": 0,
        "timeouts": errs["timeout"], "p50_us": p(0.5), "p90_us": p(0.9), "p99_us": p(0.99),
        "max_us": int(1e6 * lat[-1]) if lat else 0,
        "mean_us": 1e6 * sum(lat) / len(lat) if lat else 0}), flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", choices=["get", "list", "create"], required=True)
    ap.add_argument("--base", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--ids", default="")
    ap.add_argument("--body", default="{}")
    a = ap.parse_args()
    (uvloop.run if uvloop else asyncio.run)(main(a))
