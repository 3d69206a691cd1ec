#!/usr/bin/env python3
"""Adapter for the schedd daemon, speaking the native API of shared/SPEC.md (section 3).

It implements the same command line as every other adapter (peerlib.cli) on top
of schedd's HTTP API.  Everything schedd-specific comes from the environment:

  SCHEDD_CMD      the schedd executable (may be several words, e.g. "/venv/bin/python -m
                  schedd").  Default: the repository's .venv/bin/schedd if present, else
                  /tmp/venv/bin/schedd (default_schedd_cmd()).  The adapter runs
                      $SCHEDD_CMD serve --db {db} --host 127.0.0.1 --port {port}
                  If SCHEDD_CMD itself contains {db} or {port}, it is used as the whole
                  command line instead, with those two filled in (the older template form).
  SCHEDD_PORT     port for the daemon (default 18765), bound on 127.0.0.1
  SCHEDD_READY    readiness path (default /readyz; SCHEDD_HEALTH is accepted as an alias)
  SCHEDD_CREATE   create-schedule path (default /v1/schedules)
  SCHEDD_API_KEY  optional: use this key instead of reading {db}.key

Auth (SPEC 3.1): on first start schedd writes the key of tenant "default" to
"{db}.key"; the adapter sends it as "Authorization: Bearer KEY".  If a store
already exists but its .key file does not (a copied store), the adapter asks for
a new key with "$SCHEDD_CMD keys create --tenant default --db {db}".

register: starts the daemon on --db, waits for GET /readyz = 200, reads the key,
          POSTs N schedules over BENCH_SCHEDD_CONNS keep-alive connections (default
          16, each sending one request at a time: how an API is driven, and issue 12
          §4(a)'s shape; 1 = runs 1-11, one create at a time) (timed: only the
          POSTs), stops the daemon with SIGTERM and waits for it.
run:      starts the daemon on --db, prints READY once /readyz answers 200, waits
          for SIGTERM, forwards it, waits for the daemon.  Because this process
          waits for the daemon, the driver's os.wait4() rusage includes the
          daemon's CPU time and peak RSS.

Each schedule (schedule_body()): name = the bench job id; a webhook POST to
BENCH_SINK_URL (the driver starts the sink before registering) with body
{"job": "<job id>", "due": "{{run.scheduled_for}}"}.  schedd fills in the
occurrence as an RFC 3339 string; sink.py converts it to epoch seconds.
One-shot:  schedule_type "once", schedule_expression = due (RFC 3339 UTC, ms, "Z").
Interval:  schedule_type "interval", schedule_expression "<period>s", start_at = the
           first due instant (SPEC 3.3: fires at start_at + k*interval, k >= 0).
overlap_policy "ALLOW" (SPEC's default SKIP would drop an occurrence whose
predecessor is still in flight; the peers never drop).  Every other field keeps
SPEC's default.  Due times are rounded to the millisecond, the precision of
SPEC's timestamps, so the `due` the sink receives is exactly the stored one.
"""
import asyncio
import ctypes
import http.client
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peerlib

HOST = "127.0.0.1"
PORT = int(os.environ.get("SCHEDD_PORT", "18765"))
CREATE = os.environ.get("SCHEDD_CREATE", "/v1/schedules")
CONNS = int(os.environ.get("BENCH_SCHEDD_CONNS", "16"))
READY = os.environ.get("SCHEDD_READY", os.environ.get("SCHEDD_HEALTH", "/readyz"))


def log(msg):
    print(f"peer_schedd: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ body
def rfc3339_ms(t):
    """Epoch seconds -> '2026-11-22T09:00:00.250Z' (UTC, millisecond precision)."""
    ms = int(round(t * 1000.0))
    s, frac = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{frac:03d}Z"


def duration(seconds):
    """A period in seconds as a SPEC duration ('1s', '60s'; 'PT1.5S' for a fraction)."""
    if seconds < 1:
        raise SystemExit(f"interval {seconds} s: SPEC 3.3 requires at least 1 s")
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return "PT" + (f"{seconds:.3f}".rstrip("0").rstrip(".")) + "S"


def schedule_body(jid, kind, due, period, sink_url):
    """The request body of one POST /v1/schedules (SPEC 3.2-3.4)."""
    body = {"name": jid}
    if kind == "oneshot":
        body["schedule_type"] = "once"
        body["schedule_expression"] = rfc3339_ms(due)
    else:
        body["schedule_type"] = "interval"
        body["schedule_expression"] = duration(period)
        body["start_at"] = rfc3339_ms(due)
    body["action_type"] = "webhook"
    body["action_config"] = {
        "url": sink_url,
        "method": "POST",
        # schedd substitutes the occurrence (RFC 3339); the sink turns it into epoch seconds
        "body": {"job": jid, "due": "{{run.scheduled_for}}"},
    }
    body["overlap_policy"] = "ALLOW"
    body["max_retries"] = 0  # peers never retry; a late retry would count as a duplicate
    return body


# ---------------------------------------------------------------- daemon
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def default_schedd_cmd():
    """The repository's own venv if it has one, else the development venv in /tmp."""
    for cand in (os.path.join(REPO, ".venv", "bin", "schedd"), "/tmp/venv/bin/schedd"):
        if os.access(cand, os.X_OK):
            return cand
    return None


def _base_cmd():
    cmd = os.environ.get("SCHEDD_CMD") or default_schedd_cmd()
    if not cmd:
        raise SystemExit("SCHEDD_CMD is not set and neither .venv/bin/schedd nor "
                         "/tmp/venv/bin/schedd exists (see bench/RESULTS.md)")
    return cmd


def _is_template(cmd):
    return "{db}" in cmd or "{port}" in cmd


def daemon_argv(db):
    cmd = _base_cmd()
    if _is_template(cmd):
        return [a.replace("{db}", db).replace("{port}", str(PORT)) for a in shlex.split(cmd)]
    return shlex.split(cmd) + ["serve", "--db", db, "--host", HOST, "--port", str(PORT)]


def _die_with_parent():
    """In the child: get SIGTERM if the adapter dies (e.g. SIGKILLed by the driver's
    timeout), so that no daemon is left holding the port."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _port_in_use():
    s = socket.socket()
    s.settimeout(0.5)
    try:
        return s.connect_ex((HOST, PORT)) == 0
    finally:
        s.close()


def start_daemon(db):
    if _port_in_use():
        raise SystemExit(f"127.0.0.1:{PORT} is already in use (a daemon left over? set SCHEDD_PORT)")
    argv = daemon_argv(db)
    log("starting " + " ".join(shlex.quote(a) for a in argv))
    return subprocess.Popen(argv, stdout=sys.stderr, stderr=sys.stderr, preexec_fn=_die_with_parent)


def wait_ready(proc, timeout=60.0):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise SystemExit(f"schedd exited early with {proc.returncode}")
        try:
            c = http.client.HTTPConnection(HOST, PORT, timeout=2)
            c.request("GET", READY)
            r = c.getresponse()
            r.read()
            c.close()
            if r.status == 200:
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise SystemExit(f"schedd did not answer 200 on {READY} within {timeout:.0f} s")


def stop_daemon(proc, timeout=20.0):
    """SIGTERM, then SIGKILL after `timeout` (below the driver's own 30 s, so the
    adapter always outlives its daemon)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log(f"schedd did not stop within {timeout:.0f} s of SIGTERM; killing it")
        proc.kill()
        proc.wait()


def api_key(db, existed_before, timeout=10.0):
    """The key: SCHEDD_API_KEY, else {db}.key (written by schedd on the first start of a
    fresh store), else a new one from `schedd keys create` (a store copied without it)."""
    k = os.environ.get("SCHEDD_API_KEY")
    if k:
        return k.strip()
    path = db + ".key"
    end = time.time() + (timeout if not existed_before else 0.0)
    while True:
        try:
            with open(path) as f:
                k = f.read().strip()
            if k:
                return k
        except FileNotFoundError:
            pass
        if time.time() >= end:
            break
        time.sleep(0.02)
    cmd = _base_cmd()
    if _is_template(cmd):
        raise SystemExit(f"no API key: {path} is missing (and SCHEDD_CMD is a template, so "
                         "'keys create' cannot be derived; set SCHEDD_API_KEY)")
    argv = shlex.split(cmd) + ["keys", "create", "--tenant", "default", "--db", db]
    log(f"{path} is missing; running " + " ".join(shlex.quote(a) for a in argv))
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=sys.stderr, text=True, timeout=60)
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        raise SystemExit(f"keys create failed (exit {r.returncode})")
    return lines[-1].strip()


# -------------------------------------------------------------- commands
async def _post_all(bodies, key, conns):
    """POST every (job id, body) over `conns` keep-alive connections, each one request
    at a time (a minimal HTTP/1.1 client on asyncio streams: the adapter stays stdlib
    only)."""
    head = (f"POST {CREATE} HTTP/1.1\r\nHost: {HOST}:{PORT}\r\n"
            f"Content-Type: application/json\r\nAuthorization: Bearer {key}\r\n"
            "Content-Length: ").encode()
    todo = iter(bodies)

    async def worker():
        reader, writer = await asyncio.open_connection(HOST, PORT)
        try:
            for jid, body in todo:
                writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
                status_line = await asyncio.wait_for(reader.readline(), 30)
                length = 0
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                answer = await reader.readexactly(length)
                status = int(status_line.split()[1]) if status_line else 0
                if status not in (200, 201):
                    raise SystemExit(f"create {jid}: HTTP {status} {answer[:600]!r}\n"
                                     f"request: {body.decode()}")
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(conns)))


def register(args):
    sink_url = os.environ.get("BENCH_SINK_URL", "http://127.0.0.1:9/hook")
    existed = os.path.exists(args.db)
    proc = start_daemon(args.db)
    try:
        wait_ready(proc)
        key = api_key(args.db, existed)

        def bodies():  # made as they are sent, inside the timing (as the peers' jobs are)
            for i in range(args.n):
                jid = f"{args.prefix}{i}"
                due = (peerlib.job_due(args.due, i, args.n, args.spread)
                       if args.kind == "oneshot" else args.due)
                yield jid, json.dumps(
                    schedule_body(jid, args.kind, due, args.period, sink_url)).encode()

        with peerlib.Timer() as t:
            asyncio.run(_post_all(bodies(), key, max(1, min(CONNS, args.n))))
    finally:
        stop_daemon(proc)
    peerlib.emit("REGISTERED", {"n": args.n, "seconds": t.seconds, "cpu_s": t.cpu,
                                "rate": args.n / t.seconds if t.seconds else None,
                                "via": "api", "conns": max(1, min(CONNS, args.n)),
                                "daemon_exit": proc.returncode})


def run(args):
    stop = {"flag": False}

    def on_term(*_):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    proc = start_daemon(args.db)
    try:
        wait_ready(proc, timeout=120)
        peerlib.ready()
        end = time.time() + args.max_seconds
        while not stop["flag"] and time.time() < end and proc.poll() is None:
            time.sleep(0.05)
        early = proc.poll()
    finally:
        stop_daemon(proc)
    if early is not None:
        log(f"schedd exited on its own with {early} before it was told to stop")
    peerlib.emit("RUN_DONE", {"errors": None, "daemon_exit": proc.returncode})


if __name__ == "__main__":
    peerlib.cli(register, run)
