#!/usr/bin/env python3
"""Tiny, fast HTTP/1.1 webhook sink for the scheduler benchmark.

Raw asyncio protocol (uvloop when importable), no framework.  Every POST is
answered 200 at once (or after ``ms`` milliseconds for ``/slow?ms=N``) and
recorded in memory as (arrival=time.time(), path, raw body).  Bodies are only
parsed when dumping, so the hot path is a buffer scan plus a list append.

Endpoints
  POST <any path>            -> 200 {} ; recorded ("/slow?ms=N" answers after N ms,
                                arrival is still taken when the request is read)
  GET  /count                -> 200 <number of records>
  GET  /dump                 -> writes records as JSON lines to --out, 200 <count>
  GET  /reset                -> clears the records, 200 <count cleared>
  GET  /health               -> 200 ok
SIGTERM / SIGINT             -> writes --out, then exits 0.

Each dumped line: {"job": str|null, "due": float|null, "arrival": float,
                   "path": str, "seq": int}  (body that is not JSON -> "raw")
"due" may arrive as a JSON number (epoch seconds: every in-process peer) or as a
string: an RFC 3339 timestamp such as schedd's {{run.scheduled_for}}
("2026-11-22T09:00:00.000Z"; without an offset it is taken as UTC) or a number in
a string.  Strings are converted to float epoch seconds when dumping, never on
the request path, and the original is kept as "due_raw"; one that cannot be
parsed dumps as due null (the driver then counts no lateness for it).

Usage: sink.py --port 0 --out /tmp/x.jsonl [--host 127.0.0.1] [--ready-file F]
Prints "SINK_READY <port>" on stdout once listening.
"""
import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections import deque
from datetime import UTC, datetime

try:  # optional, faster loop
    import uvloop  # type: ignore
except Exception:  # pragma: no cover
    uvloop = None

_now = time.time
RECORDS = []  # list of (arrival, path_bytes, body_bytes)
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
OK_CLOSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\n{}")


def _resp(body: bytes, close: bool = False) -> bytes:
    hdr = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n" % len(body)
    if close:
        hdr += b"Connection: close\r\n"
    return hdr + b"\r\n" + body


def _bad(code: bytes) -> bytes:
    return b"HTTP/1.1 " + code + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def due_epoch(v):
    """`due` as epoch seconds: numbers pass through unchanged; strings are parsed as
    a number or as an RFC 3339 / ISO 8601 timestamp (no offset = UTC); else None."""
    if not isinstance(v, str):
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    s = v.strip()
    try:
        return float(s)
    except ValueError:
        pass
    s = s.upper()  # RFC 3339 allows "t" and "z"; fromisoformat wants them upper-case
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    try:
        t = datetime.fromisoformat(s)
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.timestamp()


class Sink:
    def __init__(self, out_path: str):
        self.out_path = out_path
        self.dumps = 0

    def dump(self) -> int:
        recs = list(RECORDS)
        tmp = self.out_path + ".tmp"
        with open(tmp, "w") as f:
            for seq, (arr, path, body) in enumerate(recs):
                job = due = due_raw = None
                raw = None
                try:
                    d = json.loads(body) if body else {}
                    job = d.get("job")
                    due = d.get("due")
                    if due is not None and not isinstance(due, float):
                        due_raw = due if isinstance(due, str) else None
                        due = due_epoch(due)
                except Exception:
                    raw = body[:200].decode("latin-1")
                rec = {"job": job, "due": due, "arrival": arr,
                       "path": path.decode("latin-1"), "seq": seq}
                if due_raw is not None:
                    rec["due_raw"] = due_raw
                if raw is not None:
                    rec["raw"] = raw
                f.write(json.dumps(rec, separators=(",", ":")) + "\n")
        os.replace(tmp, self.out_path)
        self.dumps += 1
        return len(recs)


class SinkProtocol(asyncio.Protocol):
    __slots__ = ("buf", "closed", "loop", "pending", "sink", "transport")

    def __init__(self, sink: Sink, loop):
        self.sink = sink
        self.loop = loop
        self.transport = None
        self.buf = b""
        # ordered response slots: [bytes|None, close_after]
        self.pending = deque()
        self.closed = False

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.closed = True

    def _flush(self):
        p = self.pending
        t = self.transport
        while p and p[0][0] is not None:
            data, close = p.popleft()
            if not self.closed:
                t.write(data)
                if close:
                    t.close()
                    self.closed = True

    def _later(self, slot, data):
        slot[0] = data
        self._flush()

    def data_received(self, data):
        arrival = _now()
        buf = self.buf + data if self.buf else data
        while True:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                break
            head = buf[:i]
            # request line
            nl = head.find(b"\r\n")
            line = head if nl < 0 else head[:nl]
            parts = line.split(b" ")
            if len(parts) != 3:
                self.pending.append([_bad(b"400 Bad Request"), True])
                buf = b""
                break
            method, target = parts[0], parts[1]
            clen = 0
            close = False
            if nl >= 0:
                low = head[nl + 2:].lower()
                j = low.find(b"content-length:")
                if j >= 0:
                    k = low.find(b"\r\n", j)
                    clen = int(low[j + 15:(k if k >= 0 else len(low))].strip() or b"0")
                if b"transfer-encoding:" in low and b"chunked" in low:
                    self.pending.append([_bad(b"411 Length Required"), True])
                    buf = b""
                    break
                if b"connection: close" in low:
                    close = True
            end = i + 4 + clen
            if len(buf) < end:
                break  # wait for the rest of the body
            body = buf[i + 4:end]
            buf = buf[end:]
            if method == b"POST":
                RECORDS.append((arrival, target, body))
                if target.startswith(b"/slow"):
                    ms = 0.0
                    q = target.find(b"ms=")
                    if q >= 0:
                        v = target[q + 3:].split(b"&", 1)[0]
                        try:
                            ms = float(v)
                        except ValueError:
                            ms = 0.0
                    slot = [None, close]
                    self.pending.append(slot)
                    self.loop.call_later(ms / 1000.0, self._later, slot, OK_CLOSE if close else OK)
                    continue
                self.pending.append([OK_CLOSE if close else OK, close])
            elif method == b"GET":
                if target.startswith(b"/count"):
                    self.pending.append([_resp(b"%d" % len(RECORDS), close), close])
                elif target.startswith(b"/dump"):
                    n = self.sink.dump()
                    self.pending.append([_resp(b"%d" % n, close), close])
                elif target.startswith(b"/reset"):
                    n = len(RECORDS)
                    RECORDS.clear()
                    self.pending.append([_resp(b"%d" % n, close), close])
                else:
                    self.pending.append([_resp(b"ok", close), close])
            else:
                self.pending.append([_bad(b"405 Method Not Allowed"), True])
            if close:
                buf = b""
                break
        self.buf = buf
        self._flush()


async def main_async(args):
    loop = asyncio.get_running_loop()
    sink = Sink(args.out)
    server = await loop.create_server(lambda: SinkProtocol(sink, loop), args.host, args.port,
                                      backlog=4096, reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()

    def on_signal(*_):
        stop.set()

    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, on_signal)
    if args.ready_file:
        with open(args.ready_file + ".tmp", "w") as f:
            f.write(str(port))
        os.replace(args.ready_file + ".tmp", args.ready_file)
    print(f"SINK_READY {port}", flush=True)
    await stop.wait()
    server.close()
    n = sink.dump()
    print(f"SINK_DUMPED {n} {args.out}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--out", required=True, help="JSON-lines file written on SIGTERM or GET /dump")
    ap.add_argument("--ready-file", default=None, help="write the bound port here once listening")
    args = ap.parse_args()
    if uvloop is not None:
        uvloop.run(main_async(args))
    else:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
