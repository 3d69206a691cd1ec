#!/usr/bin/env python3
"""Side-by-side scheduler benchmark driver (W1 register, W2 burst, W3 steady, W4 restart,
W5 API under load), schedd's copy of shared/bench-peers (see bench/RESULTS.md).

Every peer is an adapter script with the same command line (see peerlib.cli):
    <python> peer_X.py register --db F --kind oneshot|interval --n N --due EPOCH ...
    <python> peer_X.py run --db F          (prints READY {"t":...}, runs until SIGTERM)
Every fire is an HTTP POST {"job": id, "due": epoch} to the sink (sink.py),
which timestamps arrivals; lateness = arrival - due.  (schedd sends `due` as its
RFC 3339 {{run.scheduled_for}}; the sink converts it to epoch seconds.)

schedd is a first-class peer: SCHEDD_CMD defaults to the repository's .venv/bin/schedd,
else /tmp/venv/bin/schedd.  For schedd only:
  W4 restarts stores of 1,000 (seeded through the API), 100,000 and 1,000,000 schedules
     (the larger two cloned from the seed with sqlite3: populate_schedd.py), and probes
     point-read, create and list latency with that many rows;
  W5 runs W3 again while a separate load process (wrk, else loadgen.py) drives the API:
     GET /v1/schedules/{id}, GET /v1/schedules, POST /v1/schedules, one after the other;
  W2/W3 also count the run records schedd wrote (durability check).

The driver itself only talks to 127.0.0.1.  CPU time and peak RSS of each
scheduler process come from os.wait4() on it (includes children it waited for).

Usage:
    bench.py [--quick] [--peers baseline,ap3,huey,schedd] [--workloads w1,w2,w3,w4,w5]
             [--reps 3] [--out DIR] [--budget-s 1500]
    bench.py --report-only DIR/raw.json
"""
import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
RUN_DIR = os.environ.get("BENCH_RUN_DIR", "/tmp/peers-run")
VENV = os.environ.get("BENCH_VENV", "/tmp/peers-venv")
VENV_AP4 = os.environ.get("BENCH_VENV_AP4", "/tmp/peers-venv-ap4")
PIN = os.environ.get("BENCH_PIN", "1") == "1" and shutil.which("taskset") is not None
SINK_CPU, PEER_CPU = "0", "1"
REPO = os.path.dirname(os.path.dirname(HERE))


def default_schedd_cmd():
    """The repository's own venv if it has one, else the development venv in /tmp."""
    for cand in (os.path.join(REPO, ".venv", "bin", "schedd"), "/tmp/venv/bin/schedd"):
        if os.access(cand, os.X_OK):
            return cand
    return None


if not os.environ.get("SCHEDD_CMD") and default_schedd_cmd():
    os.environ["SCHEDD_CMD"] = default_schedd_cmd()
SCHEDD_PORT = int(os.environ.get("SCHEDD_PORT", "18765"))
PROFILE = bool(os.environ.get("BENCH_PYSPY"))  # diagnosis runs: py-spy on the scheduler

# name -> adapter description.  `prep_via` is the registration path used to set
# up W2/W3/W4 (W1 always measures the public API, via="api").
PEERS = {
    "baseline": dict(py=f"{VENV}/bin/python", script="peer_baseline.py", prep_via="api",
                     w1_interval=True, w4_via="batch", rate_guess=10000.0,
                     label="baseline (asyncio heap)"),
    "baseline-httpx": dict(py=f"{VENV}/bin/python", script="peer_baseline.py", prep_via="api",
                           w1_interval=True, w4_via="batch", rate_guess=10000.0,
                           env={"BENCH_CLIENT": "httpx"}, only={"w2"}, reps=1,
                           label="baseline with httpx.AsyncClient instead of aiohttp"),
    "huey-fastpoll": dict(py=f"{VENV}/bin/python", script="peer_huey.py", prep_via="schedule-table",
                          w1_interval=False, w4_via="schedule-table", rate_guess=8000.0,
                          env={"BENCH_HUEY_MAX_DELAY": "0.1"}, only={"w2", "w3"},
                          label="Huey, same but workers poll the queue every 0.1 s (max_delay 0.1)"),
    "ap3": dict(py=f"{VENV}/bin/python", script="peer_ap3.py", prep_via="api",
                w1_interval=True, w4_via="api", rate_guess=1500.0,
                label="APScheduler 3.11 (AsyncIO + SQLAlchemyJobStore)"),
    "huey": dict(py=f"{VENV}/bin/python", script="peer_huey.py", prep_via="schedule-table",
                 w1_interval=False, w4_via="schedule-table", rate_guess=8000.0,
                 label="Huey 3.5 (SqliteHuey, 16 thread workers)"),
    "ap4": dict(py=f"{VENV_AP4}/bin/python", script="peer_ap4.py", prep_via="api",
                w1_interval=True, w4_via="sql-clone", rate_guess=200.0,
                label="APScheduler 4.0.0a6 (AsyncScheduler + SQLAlchemy/aiosqlite)"),
    # The future project, through the HTTP adapter; only when asked for with
    # --peers ...,schedd and SCHEDD_CMD set (see results.md, "Contract for schedd").
    "schedd": dict(py=os.environ.get("SCHEDD_ADAPTER_PYTHON", f"{VENV}/bin/python"),
                   script="peer_schedd.py", prep_via="api", w1_interval=True, w4_via="sql-clone",
                   rate_guess=500.0, api=True,
                   label="schedd via its HTTP API (peer_schedd.py; daemon: $SCHEDD_CMD)"),
}


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


# ----------------------------------------------------------------- processes
def _pin(cmd, cpu):
    return (["taskset", "-c", cpu] + cmd) if PIN else cmd


def peer_env(peer, sink_url=None):
    env = dict(os.environ)
    env["TZ"] = "UTC"
    env.setdefault("BENCH_CONC", "64")
    env.setdefault("BENCH_CLIENT", "aiohttp")
    env.update(PEERS[peer].get("env", {}))
    if sink_url:
        env["BENCH_SINK_URL"] = sink_url
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait4_timeout(pid, timeout):
    """Reap pid with rusage; SIGKILL it after `timeout` seconds."""
    end = time.time() + timeout
    while True:
        try:
            wpid, status, ru = os.wait4(pid, os.WNOHANG)
        except ChildProcessError:
            return None, None
        if wpid == pid:
            return status, ru
        if time.time() > end:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            end = time.time() + 5
        time.sleep(0.02)


def ru_dict(ru):
    if ru is None:
        return {}
    return {"cpu_s": round(ru.ru_utime + ru.ru_stime, 3), "cpu_user_s": round(ru.ru_utime, 3),
            "cpu_sys_s": round(ru.ru_stime, 3), "maxrss_mb": round(ru.ru_maxrss / 1024, 1)}


def parse_lines(path, kind):
    out = []
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(kind + " "):
                    try:
                        out.append(json.loads(line[len(kind) + 1:]))
                    except ValueError:
                        pass
    except FileNotFoundError:
        pass
    return out


# Registrations that happen with no sink running get this URL (the discard port):
# nothing in them fires while the benchmark listens.
NO_SINK_URL = "http://127.0.0.1:9/hook"


def run_cmd(peer, args, tag, timeout, sink_url=NO_SINK_URL):
    """Run an adapter sub-command to completion; returns (parsed REGISTERED, rusage, wall).
    The sink URL is passed to `register` too, for adapters (e.g. an HTTP daemon) that
    persist the webhook URL inside each schedule."""
    p = PEERS[peer]
    so, se = f"{RUN_DIR}/{tag}.out", f"{RUN_DIR}/{tag}.err"
    cmd = _pin([p["py"], os.path.join(HERE, p["script"])] + args, PEER_CPU)
    t0 = time.time()
    with open(so, "w") as fo, open(se, "w") as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=peer_env(peer, sink_url), cwd=HERE)
        status, ru = wait4_timeout(proc.pid, timeout)
    wall = time.time() - t0
    reg = parse_lines(so, "REGISTERED")
    ok = status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and reg
    if not ok:
        tail = open(se).read()[-1500:]
        raise RuntimeError(f"{tag}: adapter failed (status={status}); stderr tail:\n{tail}")
    return reg[-1], ru_dict(ru), wall


class Sink:
    def __init__(self, tag):
        self.out = f"{RUN_DIR}/{tag}.sink.jsonl"
        self.ready_file = f"{RUN_DIR}/{tag}.sink.port"
        for f in (self.out, self.ready_file):
            if os.path.exists(f):
                os.remove(f)
        cmd = _pin([f"{VENV}/bin/python", os.path.join(HERE, "sink.py"), "--port", "0",
                    "--out", self.out, "--ready-file", self.ready_file], SINK_CPU)
        self.log = open(f"{RUN_DIR}/{tag}.sink.log", "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        end = time.time() + 15
        while not os.path.exists(self.ready_file):
            if time.time() > end or self.proc.poll() is not None:
                raise RuntimeError("sink did not start")
            time.sleep(0.02)
        self.port = int(open(self.ready_file).read())
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def count(self):
        with self._opener.open(f"http://127.0.0.1:{self.port}/count", timeout=5) as r:
            return int(r.read())

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        recs = []
        with open(self.out) as f:
            for line in f:
                recs.append(json.loads(line))
        return recs


class Runner:
    """A scheduler process in `run` mode."""

    def __init__(self, peer, db, sink, tag, max_seconds=900):
        p = PEERS[peer]
        self.so, self.se = f"{RUN_DIR}/{tag}.run.out", f"{RUN_DIR}/{tag}.run.err"
        cmd = _pin([p["py"], os.path.join(HERE, p["script"]), "run", "--db", db,
                    "--max-seconds", str(max_seconds)], PEER_CPU)
        self.fo, self.fe = open(self.so, "w"), open(self.se, "w")
        self.t_launch = time.time()
        self.proc = subprocess.Popen(cmd, stdout=self.fo, stderr=self.fe,
                                     env=peer_env(peer, sink.url), cwd=HERE)
        self.ready = None

    def wait_ready(self, timeout):
        end = time.time() + timeout
        while time.time() < end:
            r = parse_lines(self.so, "READY")
            if r:
                self.ready = r[0]
                return self.ready
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        raise RuntimeError(f"runner not ready; stderr tail:\n{open(self.se).read()[-1500:]}")

    def daemon_pid(self):
        """The scheduler process: the adapter's child (schedd) or the adapter itself."""
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                kids = [int(x) for x in f.read().split()]
        except OSError:
            kids = []
        return kids[0] if kids else self.proc.pid

    def rss_mb(self):
        """(current RSS, peak RSS) of the scheduler process in MB, from /proc."""
        out = {}
        try:
            with open(f"/proc/{self.daemon_pid()}/status") as f:
                for line in f:
                    if line.startswith(("VmRSS:", "VmHWM:")):
                        out[line.split(":")[0]] = round(int(line.split()[1]) / 1024, 1)
        except OSError:
            pass
        return out.get("VmRSS"), out.get("VmHWM")

    def start_profiler(self, tag, seconds):
        """py-spy record on the scheduler process (BENCH_PYSPY = the py-spy executable);
        for diagnosis runs only: sampling costs the profiled process some time."""
        spy = os.environ.get("BENCH_PYSPY")
        if not spy:
            return None
        out = f"{RUN_DIR}/{tag}.pyspy"
        cmd = [spy, "record", "-p", str(self.daemon_pid()), "-r", "200", "-d", str(int(seconds)),
               "--threads", "--nonblocking",
               "--format", os.environ.get("BENCH_PYSPY_FORMAT", "raw"), "-o", out + ".txt"]
        log(f"   profiling pid {self.daemon_pid()} for {seconds:.0f} s -> {out}.txt")
        self.spy = subprocess.Popen(_pin(cmd, SINK_CPU), stdout=open(out + ".log", "w"),
                                    stderr=subprocess.STDOUT)
        return self.spy

    def stop(self):
        spy = getattr(self, "spy", None)
        if spy is not None:
            try:
                spy.wait(60)
            except subprocess.TimeoutExpired:
                spy.kill()
        rss_now, rss_peak = self.rss_mb()
        try:
            self.proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        status, ru = wait4_timeout(self.proc.pid, 30)
        self.fo.close()
        self.fe.close()
        done = parse_lines(self.so, "RUN_DONE")
        d = ru_dict(ru)
        d["exit_status"] = status
        d["daemon_rss_at_stop_mb"] = rss_now
        d["daemon_peak_rss_mb"] = rss_peak
        d["fire_errors"] = done[-1].get("errors") if done else None
        return d


# ------------------------------------------------------------------- stats
def pct(sorted_vals, q):
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(math.ceil(q * len(sorted_vals))) - 1))
    return sorted_vals[k]


def lat_stats(lat):
    lat = sorted(lat)
    if not lat:
        return {"p50_s": None, "p99_s": None, "max_s": None, "min_s": None}
    return {"p50_s": round(pct(lat, 0.50), 4), "p99_s": round(pct(lat, 0.99), 4),
            "max_s": round(lat[-1], 4), "min_s": round(lat[0], 4)}


def fresh_db(peer, name):
    d = f"{RUN_DIR}/{peer}"
    os.makedirs(d, exist_ok=True)
    db = f"{d}/{name}.db"
    for suf in ("", "-wal", "-shm", "-journal", ".key"):
        if os.path.exists(db + suf):
            os.remove(db + suf)
    return db


def median_of(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    if not vals:
        return None
    return statistics.median(vals)


# --------------------------------------------------------------- workloads
def w1_register(peer, n, kind, rep):
    db = fresh_db(peer, f"w1_{kind}_{rep}")
    # an hour ahead: nothing fires during W1, and a slow registrar never reaches
    # the due time (schedd answers 422 to a once-time in the past, SPEC 3.3)
    due = time.time() + 3600
    args = ["register", "--db", db, "--kind", kind, "--n", str(n), "--due", f"{due:.6f}",
            "--period", "60", "--via", "api"]
    reg, ru, wall = run_cmd(peer, args, f"{peer}_w1_{kind}_{rep}", timeout=600)
    return {"peer": peer, "workload": "w1", "kind": kind, "rep": rep, "n": n,
            "seconds": round(reg["seconds"], 3), "jobs_per_s": round(reg["rate"], 1),
            "register_cpu_s": round(reg["cpu_s"], 3), "process_wall_s": round(wall, 2),
            "process": ru}


def w2_burst(peer, n, rep, lead, max_drain):
    tag = f"{peer}_w2_{n}_{rep}"
    db = fresh_db(peer, f"w2_{n}_{rep}")
    sink = Sink(tag)
    t0 = time.time()
    T = t0 + lead
    try:
        reg, reg_ru, _ = run_cmd(peer, ["register", "--db", db, "--kind", "oneshot", "--n", str(n),
                                        "--due", f"{T:.6f}", "--via", PEERS[peer]["prep_via"]],
                                 tag + "_reg", timeout=lead + 600, sink_url=sink.url)
    except Exception:
        sink.stop()
        raise
    t_reg_done = time.time()
    runner = Runner(peer, db, sink, tag)
    res = {"peer": peer, "workload": "w2", "n": n, "rep": rep, "T": T,
           "register_s": round(reg["seconds"], 2)}
    try:
        ready = runner.wait_ready(max(30.0, T - time.time() + 30))
        res["ready_before_T_s"] = round(T - ready["t"], 2)
        if PROFILE:
            while time.time() < T - 1.0:
                time.sleep(0.05)
            runner.start_profiler(tag, max(3.0, min(max_drain, 4.0 + 3.0 * n / 2000)))
        deadline = T + max_drain
        seen_all_at = None
        while time.time() < deadline:
            c = sink.count()
            if c >= n:
                seen_all_at = seen_all_at or time.time()
                if time.time() - seen_all_at > 1.0:  # linger 1 s for duplicates
                    break
            time.sleep(0.1)
    finally:
        proc = runner.stop()
        recs = sink.stop()
    res["process"] = proc
    hooks = [r for r in recs if r["path"].startswith("/hook")]
    jobs = {}
    for r in hooks:
        jobs[r["job"]] = jobs.get(r["job"], 0) + 1
    lat = [r["arrival"] - r["due"] for r in hooks if r.get("due") is not None]
    res.update(lat_stats(lat))
    res["received"] = len(hooks)
    res["distinct"] = len(jobs)
    res["missing"] = n - len(jobs)
    res["duplicates"] = sum(v - 1 for v in jobs.values() if v > 1)
    res["registered_late"] = t_reg_done > T - 2
    if hooks:
        last = max(r["arrival"] for r in hooks)
        first = min(r["arrival"] for r in hooks)
        res["first_arrival_s"] = round(first - T, 4)
        res["drain_s"] = round(last - T, 4)
        res["fires_per_s"] = round(len(hooks) / (last - T), 1) if last > T else None
        res["complete"] = res["missing"] == 0
    else:
        res["drain_s"] = res["fires_per_s"] = res["first_arrival_s"] = None
        res["complete"] = False
    res["cpu_s_per_fire_ms"] = (round(1000 * proc["cpu_s"] / len(hooks), 3)
                                if hooks and proc.get("cpu_s") is not None else None)
    if PEERS[peer].get("api"):
        res["db"] = db_runs(db)
    return res


def w3_steady(peer, jobs, period, duration, rep, lead):
    tag = f"{peer}_w3_{rep}"
    db = fresh_db(peer, f"w3_{rep}")
    sink = Sink(tag)
    S = time.time() + lead
    try:
        run_cmd(peer, ["register", "--db", db, "--kind", "interval", "--n", str(jobs),
                       "--due", f"{S:.6f}", "--period", str(period), "--prefix", "i",
                       "--via", PEERS[peer]["prep_via"]], tag + "_reg", timeout=120, sink_url=sink.url)
    except Exception:
        sink.stop()
        raise
    runner = Runner(peer, db, sink, tag)
    res = {"peer": peer, "workload": "w3", "rep": rep, "jobs": jobs, "period_s": period,
           "duration_s": duration, "S": S}
    try:
        ready = runner.wait_ready(max(30.0, S - time.time() + 30))
        res["ready_before_S_s"] = round(S - ready["t"], 2)
        if PROFILE:
            runner.start_profiler(tag, max(1.0, S + duration - time.time()))
        end = S + duration + 3.0
        while time.time() < end:
            time.sleep(min(0.5, max(0.0, end - time.time())))
    finally:
        proc = runner.stop()
        recs = sink.stop()
    res["process"] = proc
    res.update(w3_count(recs, S, period, duration, jobs))
    res["cpu_pct_of_core"] = (round(100 * proc["cpu_s"] / (time.time() - runner.t_launch), 1)
                              if proc.get("cpu_s") is not None else None)
    if PEERS[peer].get("api"):
        res["db"] = db_runs(db)
    return res


def w3_count(recs, S, period, duration, jobs):
    """Lateness, missing and duplicate occurrences on the grid S + k*period, k < slots."""
    res = {}
    slots = int(round(duration / period))
    expected = jobs * slots
    seen = {}
    lat = []
    off_grid = 0
    for r in recs:
        if not r["path"].startswith("/hook") or r.get("due") is None:
            continue
        k = (r["due"] - S) / period
        kr = int(round(k))
        if abs(k - kr) > 0.01:
            off_grid += 1
            continue
        if 0 <= kr < slots:
            key = (r["job"], kr)
            seen[key] = seen.get(key, 0) + 1
            lat.append(r["arrival"] - r["due"])
    res.update(lat_stats(lat))
    res["received_total"] = sum(1 for r in recs if r["path"].startswith("/hook"))
    res["expected"] = expected
    res["received_in_window"] = sum(seen.values())
    res["missing"] = expected - len(seen)
    res["duplicates"] = sum(v - 1 for v in seen.values() if v > 1)
    res["off_grid"] = off_grid
    res["late_over_1s"] = sum(1 for x in lat if x > 1.0)
    return res


def w4_prepare(peer, n):
    db = fresh_db(peer, "w4_template")
    due = time.time() + 7 * 86400
    reg, ru, wall = run_cmd(peer, ["register", "--db", db, "--kind", "oneshot", "--n", str(n),
                                   "--due", f"{due:.6f}", "--spread", "86400", "--prefix", "f",
                                   "--via", PEERS[peer]["w4_via"]], f"{peer}_w4_prep", timeout=900)
    return db, {"peer": peer, "workload": "w4_prep", "n": reg["n"], "via": PEERS[peer]["w4_via"],
                "seconds": round(reg["seconds"], 2), "process_wall_s": round(wall, 2),
                "db_mb": round(sum(os.path.getsize(db + s) for s in ("", "-wal")
                                   if os.path.exists(db + s)) / 2**20, 1)}


def w4_restart(peer, template, n, rep, canary_lead=2.0):
    api = PEERS[peer].get("api")
    tag = f"{peer}_w4_{n}_{rep}" if api else f"{peer}_w4_{rep}"
    db = fresh_db(peer, f"w4_{n}_{rep}" if api else f"w4_{rep}")
    # ".key": schedd writes its API key next to the store on the store's first start
    # only (SPEC 3.1), so a copied store needs its key file too
    for suf in ("", "-wal", "-shm", ".key"):
        if os.path.exists(template + suf):
            shutil.copyfile(template + suf, db + suf)
            shutil.copymode(template + suf, db + suf)
    reg_budget = 5.0
    sink = Sink(tag)  # started before the runner; its own start-up is not counted
    D = time.time() + reg_budget + canary_lead
    try:
        run_cmd(peer, ["register", "--db", db, "--kind", "oneshot", "--n", "1", "--due", f"{D:.6f}",
                       "--prefix", "canary", "--via", PEERS[peer]["prep_via"]], tag + "_canary",
                timeout=60, sink_url=sink.url)
    except Exception:
        sink.stop()
        raise
    launch_at = D - canary_lead
    late_reg = time.time() > launch_at
    while time.time() < launch_at:
        time.sleep(min(0.01, max(0.0, launch_at - time.time())))
    sample = sample_ids_from_db(template) if api else None
    runner = Runner(peer, db, sink, tag)
    res = {"peer": peer, "workload": "w4", "rep": rep, "n_persisted": n, "canary_due_after_launch_s": round(D - runner.t_launch, 3),
           "canary_registration_late": late_reg}
    try:
        ready = runner.wait_ready(120)
        res["ready_s"] = round(ready["t"] - runner.t_launch, 3)
        res["rss_at_ready_mb"] = runner.rss_mb()[0]
        end = D + 60
        while time.time() < end and sink.count() < 1:
            time.sleep(0.02)
        time.sleep(0.3)
        res["rss_after_canary_mb"], res["peak_rss_after_canary_mb"] = runner.rss_mb()
        if api:
            # with n rows in the store: sequential point reads, creates, list pages
            res["probe"] = schedd_probe(db, sample)
            res["rss_after_probe_mb"] = runner.rss_mb()[0]
    finally:
        proc = runner.stop()
        recs = sink.stop()
    res["process"] = proc
    can = [r for r in recs if (r.get("job") or "").startswith("canary")]
    res["unexpected_fires"] = len([r for r in recs if not (r.get("job") or "").startswith("canary")])
    if can:
        a = min(r["arrival"] for r in can)
        res["first_fire_s"] = round(a - runner.t_launch, 3)
        res["canary_lateness_s"] = round(a - D, 3)
    else:
        res["first_fire_s"] = res["canary_lateness_s"] = None
    if api and n > 100000:  # large copies are not kept (disk); the template is
        for suf in ("", "-wal", "-shm"):
            if os.path.exists(db + suf):
                os.remove(db + suf)
    return res


# ------------------------------------------------------- schedd-only helpers
def schedd_key(db):
    k = os.environ.get("SCHEDD_API_KEY")
    if k:
        return k.strip()
    with open(db + ".key") as f:
        return f.read().strip()


class Api:
    """Sequential requests to the schedd under test over one keep-alive connection."""

    def __init__(self, db):
        import http.client
        self.hdr = {"Authorization": f"Bearer {schedd_key(db)}", "Content-Type": "application/json"}
        self.conn = http.client.HTTPConnection("127.0.0.1", SCHEDD_PORT, timeout=30)

    def call(self, method, path, body=None):
        t0 = time.perf_counter()
        self.conn.request(method, path, body=None if body is None else json.dumps(body).encode(),
                          headers=self.hdr)
        r = self.conn.getresponse()
        data = r.read()
        return r.status, data, time.perf_counter() - t0

    def close(self):
        self.conn.close()


def schedd_ids(db, limit=None):
    """Schedule ids through the API (GET /v1/schedules, paged by 200)."""
    api = Api(db)
    ids, off = [], 0
    try:
        while limit is None or len(ids) < limit:
            st, data, _ = api.call("GET", f"/v1/schedules?limit=200&offset={off}")
            if st != 200:
                raise RuntimeError(f"list schedules: HTTP {st} {data[:300]!r}")
            page = json.loads(data)
            ids += [x["id"] for x in page["schedules"]]
            off += len(page["schedules"])
            if not page.get("has_more"):
                break
    finally:
        api.close()
    return ids


def db_runs(db):
    """What schedd recorded: runs by status, and the sum of the schedules' run_count."""
    import sqlite3
    try:
        c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        by = dict(c.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall())
        dup = c.execute("SELECT count(*) FROM (SELECT 1 FROM runs WHERE manual = 0 AND attempt = 1"
                        " GROUP BY schedule_id, scheduled_for_ms HAVING count(*) > 1)").fetchone()[0]
        rc = c.execute("SELECT coalesce(sum(run_count), 0) FROM schedules").fetchone()[0]
        c.close()
        return {"runs_by_status": by, "dup_occurrences": dup, "sum_run_count": rc}
    except Exception as e:  # the report shows it; never fails a run
        return {"error": str(e)[:300]}


def lat_ms(vals):
    vals = sorted(vals)
    if not vals:
        return {}
    return {"n": len(vals), "p50_ms": round(1000 * pct(vals, 0.5), 2),
            "p99_ms": round(1000 * pct(vals, 0.99), 2), "max_ms": round(1000 * vals[-1], 2)}


def schedd_probe(db, sample_ids, n_reads=300, n_creates=100, n_lists=20):
    """Sequential latency of point reads, creates and list pages on the running daemon."""
    sys.path.insert(0, HERE)
    import peer_schedd
    api = Api(db)
    out = {}
    try:
        ids = sample_ids or []
        t = []
        bad = 0
        for i in range(min(n_reads, 10 * len(ids))):
            st, _, dt = api.call("GET", f"/v1/schedules/{ids[i % len(ids)]}")
            bad += st != 200
            t.append(dt)
        out["get_by_id"] = dict(lat_ms(t), errors=bad)
        t, bad = [], 0
        for i in range(n_creates):
            body = peer_schedd.schedule_body(f"probe{i}", "oneshot", time.time() + 30 * 86400, 60,
                                             NO_SINK_URL)
            st, _, dt = api.call("POST", "/v1/schedules", body)
            bad += st not in (200, 201)
            t.append(dt)
        out["create"] = dict(lat_ms(t), errors=bad)
        t, bad = [], 0
        for _ in range(n_lists):
            st, _, dt = api.call("GET", "/v1/schedules?limit=50")
            bad += st != 200
            t.append(dt)
        out["list_50"] = dict(lat_ms(t), errors=bad)
    finally:
        api.close()
    return out


def sample_ids_from_db(db, k=300):
    import random
    import sqlite3
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    hi = c.execute("SELECT max(seq) FROM schedules").fetchone()[0] or 0
    seqs = random.Random(42).sample(range(1, hi + 1), min(k, hi))
    ids = [r[0] for r in c.execute(
        f"SELECT id FROM schedules WHERE seq IN ({','.join('?' * len(seqs))})", seqs)]
    c.close()
    return ids


def w4_prepare_schedd(peer, sizes):
    """Seed through the API (the smallest size), clone with sqlite3 to the larger ones."""
    seed_n = min(sizes)
    seed = fresh_db(peer, f"w4_template_{seed_n}")
    due = time.time() + 7 * 86400
    reg, ru, wall = run_cmd(peer, ["register", "--db", seed, "--kind", "oneshot", "--n", str(seed_n),
                                   "--due", f"{due:.6f}", "--spread", "86400", "--prefix", "f",
                                   "--via", "api"], f"{peer}_w4_seed", timeout=900)
    out = [(seed, {"peer": peer, "workload": "w4_prep", "n": seed_n, "via": "api",
                   "seconds": round(reg["seconds"], 2), "process_wall_s": round(wall, 2),
                   "db_mb": round(os.path.getsize(seed) / 2**20, 1)})]
    for n in sorted(sizes):
        if n == seed_n:
            continue
        db = fresh_db(peer, f"w4_template_{n}")
        so = f"{RUN_DIR}/{peer}_w4_populate_{n}.out"
        cmd = [f"{VENV}/bin/python", os.path.join(HERE, "populate_schedd.py"), "--src", seed,
               "--db", db, "--n", str(n), "--due", f"{due:.6f}", "--spread", "86400"]
        with open(so, "w") as fo:
            subprocess.run(_pin(cmd, PEER_CPU), stdout=fo, stderr=subprocess.STDOUT, timeout=900,
                           check=True)
        pop = parse_lines(so, "POPULATED")[-1]
        out.append((db, {"peer": peer, "workload": "w4_prep", "n": pop["n"], "via": "sql-clone",
                         "seconds": pop["seconds"], "db_mb": pop["db_mb"],
                         "seed_seconds": round(reg["seconds"], 2)}))
    return out


# ------------------------------------------------------------- W5 load process
WRK_DONE = r'''
done = function(summary, latency, requests)
  io.write(string.format('WRK_JSON {"requests":%d,"duration_us":%d,"status_errors":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,"p50_us":%d,' ..
    '"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n', summary.requests,
    summary.duration, summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
'''


def load_phase(name, kind, key, ids, seconds, conns, tag):
    """One bounded load phase from a separate process: wrk when installed, else
    loadgen.py (aiohttp) in its own process.  Returns req/s and latency percentiles."""
    base = f"http://127.0.0.1:{SCHEDD_PORT}"
    create_body = None
    if kind == "create":
        sys.path.insert(0, HERE)
        import peer_schedd
        create_body = json.dumps(peer_schedd.schedule_body(
            "w5create", "oneshot", time.time() + 30 * 86400, 60, NO_SINK_URL))
    out = f"{RUN_DIR}/{tag}.{name}.txt"
    tool = "wrk" if (shutil.which("wrk") and os.environ.get("BENCH_LOADGEN", "wrk") == "wrk") \
        else "loadgen.py"
    if tool == "wrk":
        lua = [f'wrk.headers["Authorization"] = "Bearer {key}"',
               'wrk.headers["Content-Type"] = "application/json"']
        if kind == "get":
            lua.append("ids = {" + ",".join(f'"{i}"' for i in ids) + "}")
            lua.append("n = 0")
            lua.append('request = function() n = n + 1; return wrk.format("GET", '
                       '"/v1/schedules/" .. ids[(n % #ids) + 1]) end')
            url = base + "/v1/schedules/"
        elif kind == "list":
            url = base + "/v1/schedules?limit=50"
        else:
            lua.append('wrk.method = "POST"')
            lua.append("wrk.body = " + json.dumps(create_body))
            url = base + "/v1/schedules"
        with open(f"{RUN_DIR}/{tag}.{name}.lua", "w") as f:
            f.write("\n".join(lua) + "\n" + WRK_DONE)
        cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "5s",
               "-s", f"{RUN_DIR}/{tag}.{name}.lua", url]
    else:
        cmd = [f"{VENV}/bin/python", os.path.join(HERE, "loadgen.py"), "--kind", kind,
               "--base", base, "--key", key, "--seconds", str(seconds), "--conns", str(conns),
               "--ids", ",".join(ids)]
        if create_body:
            cmd += ["--body", create_body]
    with open(out, "w") as fo:
        subprocess.run(_pin(cmd, SINK_CPU), stdout=fo, stderr=subprocess.STDOUT,
                       timeout=seconds + 30)
    r = parse_lines(out, "WRK_JSON") or parse_lines(out, "LOAD_JSON")
    if not r:
        raise RuntimeError(f"load phase {name}: no result; see {out}")
    r = r[-1]
    secs = r["duration_us"] / 1e6
    errors = sum(r[k] for k in ("status_errors", "connect_errors", "read_errors", "write_errors",
                                "timeouts"))
    return {"phase": name, "tool": tool, "conns": conns, "seconds": round(secs, 2),
            "requests": r["requests"], "req_per_s": round(r["requests"] / secs, 1),
            "p50_ms": round(r["p50_us"] / 1000, 2), "p90_ms": round(r["p90_us"] / 1000, 2),
            "p99_ms": round(r["p99_us"] / 1000, 2), "max_ms": round(r["max_us"] / 1000, 2),
            "errors": errors}


def w5_api(peer, jobs, period, duration, rep, lead, phases, conns):
    """W3 again, with a separate load process driving the API during its window."""
    tag = f"{peer}_w5_{rep}"
    db = fresh_db(peer, f"w5_{rep}")
    sink = Sink(tag)
    S = time.time() + lead
    try:
        run_cmd(peer, ["register", "--db", db, "--kind", "interval", "--n", str(jobs),
                       "--due", f"{S:.6f}", "--period", str(period), "--prefix", "i",
                       "--via", PEERS[peer]["prep_via"]], tag + "_reg", timeout=120, sink_url=sink.url)
    except Exception:
        sink.stop()
        raise
    runner = Runner(peer, db, sink, tag)
    res = {"peer": peer, "workload": "w5", "rep": rep, "jobs": jobs, "period_s": period,
           "duration_s": duration, "S": S, "phases": []}
    try:
        runner.wait_ready(max(30.0, S - time.time() + 30))
        ids = schedd_ids(db)
        key = schedd_key(db)
        while time.time() < S + 2:
            time.sleep(0.05)
        for name, kind, secs in phases:
            if time.time() + secs > S + duration - 1:
                log(f"   W5 phase {name} skipped: it would outlast the W3 window")
                continue
            ph = load_phase(name, kind, key, ids, secs, conns, tag)
            res["phases"].append(ph)
            log(f"   W5 {name}: {ph['req_per_s']} req/s p50 {ph['p50_ms']} ms p99 {ph['p99_ms']} ms "
                f"errors {ph['errors']}")
            time.sleep(1.0)
        end = S + duration + 3.0
        while time.time() < end:
            time.sleep(min(0.5, max(0.0, end - time.time())))
    finally:
        proc = runner.stop()
        recs = sink.stop()
    res["process"] = proc
    res.update(w3_count(recs, S, period, duration, jobs))
    res["db"] = db_runs(db)
    return res


# ------------------------------------------------------------------ report
def fmt(v, nd=2):
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.{nd}f}"


def med(runs, *path):
    vals = []
    for r in runs:
        x = r
        for p in path:
            x = x.get(p) if isinstance(x, dict) else None
        if x is not None:
            vals.append(x)
    return statistics.median(vals) if vals else None


def report(raw):
    runs = raw["runs"]
    peers = [p for p in raw["meta"]["peers"]]
    L = []
    L.append(f"Generated {raw['meta']['finished']} by bench.py; {raw['meta']['host']}; "
             f"pinning sink->cpu{SINK_CPU}, scheduler->cpu{PEER_CPU}: {raw['meta']['pinned']}; "
             f"client={raw['meta']['client']} conc={raw['meta']['conc']}; "
             f"total {raw['meta']['elapsed_s']:.0f} s.\n")

    def sel(**kw):
        return [r for r in runs if all(r.get(k) == v for k, v in kw.items())]

    # summary table
    L.append("| workload | metric | " + " | ".join(peers) + " |")
    L.append("|---|---|" + "---|" * len(peers))

    def row(wl, metric, fn):
        cells = []
        for p in peers:
            try:
                cells.append(fn(p))
            except Exception as e:  # pragma: no cover
                cells.append(f"err {e}")
        L.append(f"| {wl} | {metric} | " + " | ".join(cells) + " |")

    def nreps(rs):
        return f" (n={len(rs)})" if len(rs) != 3 else ""

    n1 = max([r["n"] for r in runs if r["workload"] == "w1"] or [0])
    n4 = max([r["n"] for r in runs if r["workload"] == "w4_prep"] or [0])
    for kind in ("oneshot", "interval"):
        def f_w1(p, kind=kind):
            rs = sel(peer=p, workload="w1", kind=kind)
            if not rs:
                sk = raw["meta"].get("skipped", {})
                return sk.get(f"{p}/w1/{kind}", sk.get(f"{p}/w1", "—"))
            return fmt(med(rs, "jobs_per_s")) + nreps(rs)
        row(f"W1 register {n1:,} {kind}", "jobs/s (median)", f_w1)

    for n in sorted({r["n"] for r in runs if r["workload"] == "w2"}):
        for metric, key, nd in (("lateness p50 s", "p50_s", 3), ("lateness p99 s", "p99_s", 3),
                                ("lateness max s", "max_s", 3), ("first fire s (first-T)", "first_arrival_s", 3),
                                ("drain s (last-T)", "drain_s", 2),
                                ("fires/s", "fires_per_s", 0), ("missing+dup", None, 0),
                                ("sched CPU s", "cpu", 2), ("peak RSS MB", "rss", 0)):
            def f_w2(p, key=key, n=n, nd=nd):
                rs = sel(peer=p, workload="w2", n=n)
                if not rs:
                    sk = raw["meta"].get("skipped", {})
                    return sk.get(f"{p}/w2/{n}", sk.get(f"{p}/w2", "—"))
                if key is None:
                    return "/".join(str(int(med(rs, k) or 0)) for k in ("missing", "duplicates"))
                if key == "cpu":
                    return fmt(med(rs, "process", "cpu_s"), nd)
                if key == "rss":
                    return fmt(med(rs, "process", "maxrss_mb"), 0)
                return fmt(med(rs, key), nd) + (nreps(rs) if key == "p50_s" else "")
            row(f"W2 burst {n:,}", metric, f_w2)

    for metric, key, nd in (("lateness p50 s", "p50_s", 3), ("lateness p99 s", "p99_s", 3),
                            ("lateness max s", "max_s", 3), ("missing / dup (of expected)", None, 0),
                            ("CPU % of a core", "cpu_pct_of_core", 0), ("peak RSS MB", "rss", 0)):
        def f_w3(p, key=key, nd=nd):
            rs = sel(peer=p, workload="w3")
            if not rs:
                return raw["meta"].get("skipped", {}).get(f"{p}/w3", "—")
            if key is None:
                return f"{int(med(rs, 'missing'))} / {int(med(rs, 'duplicates'))}"
            if key == "rss":
                return fmt(med(rs, "process", "maxrss_mb"), 0)
            return fmt(med(rs, key), nd) + (nreps(rs) if key == "p50_s" else "")
        w3 = [r for r in runs if r["workload"] == "w3"]
        w3lbl = (f"W3 steady {w3[0]['jobs']}×{w3[0]['period_s']:g} s×{w3[0]['duration_s']} s"
                 if w3 else "W3 steady")
        row(w3lbl, metric, f_w3)

    ns4 = sorted({r["n_persisted"] for r in runs if r["workload"] == "w4"}
                 | {r["n"] for r in runs if r["workload"] == "w4_prep"})
    for n4 in ns4:
        for metric, key, nd in (("populate s (via)", "prep", 1), ("ready after launch s", "ready_s", 2),
                                ("first fire after launch s", "first_fire_s", 2),
                                ("canary lateness s", "canary_lateness_s", 3),
                                ("peak RSS MB", "rss", 0), ("RSS after canary MB (daemon)", "rss_c", 0),
                                ("CPU s until canary", "cpu", 2),
                                ("GET by id p50/p99 ms (sequential)", ("get_by_id",), 1),
                                ("create p50/p99 ms (sequential)", ("create",), 1),
                                ("list 50 p50/p99 ms (sequential)", ("list_50",), 1)):
            def f_w4(p, key=key, nd=nd, n4=n4):
                if key == "prep":
                    rs = sel(peer=p, workload="w4_prep", n=n4)
                    if not rs:
                        if sel(peer=p, workload="w4_prep"):
                            return "—"
                        return raw["meta"].get("skipped", {}).get(f"{p}/w4", "—")
                    return f"{fmt(rs[0]['seconds'], 1)} ({rs[0]['via']})"
                rs = sel(peer=p, workload="w4", n_persisted=n4)
                if not rs:
                    return "—"
                if key == "rss":
                    return fmt(med(rs, "process", "maxrss_mb"), 0)
                if key == "rss_c":
                    return fmt(med(rs, "rss_after_canary_mb"), 0)
                if key == "cpu":
                    return fmt(med(rs, "process", "cpu_s"), 2)
                if isinstance(key, tuple):
                    a, b = med(rs, "probe", key[0], "p50_ms"), med(rs, "probe", key[0], "p99_ms")
                    return "—" if a is None else f"{fmt(a, nd)} / {fmt(b, nd)}"
                return fmt(med(rs, key), nd) + (nreps(rs) if key == "ready_s" else "")
            if isinstance(key, tuple) and not any(
                    r.get("probe") for r in sel(workload="w4", n_persisted=n4)):
                continue
            row(f"W4 restart {n4:,}", metric, f_w4)

    for metric, key in (("W3 p50/p99 s under load", "w3"), ("W3 missing / dup under load", "md"),
                        ("GET /v1/schedules/{id}", "get_by_id"), ("GET /v1/schedules?limit=50", "list"),
                        ("POST /v1/schedules", "create")):
        def f_w5(p, key=key):
            rs = sel(peer=p, workload="w5")
            if not rs:
                return raw["meta"].get("skipped", {}).get(f"{p}/w5", "—")
            r = rs[0]
            if key == "w3":
                return f"{fmt(r.get('p50_s'), 3)} / {fmt(r.get('p99_s'), 3)}"
            if key == "md":
                return f"{r.get('missing')} / {r.get('duplicates')}"
            ph = [x for x in r["phases"] if x["phase"] == key]
            if not ph:
                return "—"
            x = ph[0]
            return (f"{fmt(x['req_per_s'], 0)} req/s, p50 {fmt(x['p50_ms'], 1)} ms, "
                    f"p99 {fmt(x['p99_ms'], 1)} ms, err {x['errors']}")
        if any(r["workload"] == "w5" for r in runs):
            row("W5 API while W3 runs", metric, f_w5)

    for metric, wl in (("W2 runs recorded: succeeded/all (N)", "w2"),
                       ("W3 runs recorded: succeeded/all", "w3"), ("W5 runs recorded", "w5")):
        def f_db(p, wl=wl):
            rs = [r for r in sel(peer=p, workload=wl) if r.get("db")]
            if not rs:
                return "—"
            cells = []
            for r in rs:
                by = r["db"].get("runs_by_status", {})
                got = f"{by.get('succeeded', 0)}/{sum(by.values())}"
                exp = r.get("n") or r.get("received_total")
                cells.append(f"{got} ({'' if r.get('n') else 'fires received: '}{exp})" + (f" dupocc {r['db']['dup_occurrences']}"
                                                  if r["db"].get("dup_occurrences") else ""))
            return "; ".join(cells)
        if any(r.get("db") for r in runs if r["workload"] == wl):
            row("schedd store", metric, f_db)

    L.append("")
    L += targets(raw)
    L.append("")
    L.append("Peers: " + "; ".join(f"**{p}** = {PEERS[p]['label']}" for p in peers if p in PEERS) + ".")
    L.append("")
    L.append("(n=K) marks a median over K repetitions instead of 3; '—' = not run.")
    return "\n".join(L) + "\n"


def targets(raw, me="schedd", floor="baseline"):
    """Issue 6's targets: schedd's ratios against the floor and the best peer."""
    runs = raw["runs"]
    peers = raw["meta"]["peers"]
    others = [p for p in peers if p not in (me, floor)]
    if me not in peers:
        return []

    def m(peer, wl, key, **kw):
        rs = [r for r in runs if r["peer"] == peer and r["workload"] == wl
              and all(r.get(k) == v for k, v in kw.items())]
        return med(rs, *key) if rs else None

    def ratio(a, b):
        return None if a is None or not b else a / b

    out = ["### schedd against issue 6's targets", "",
           "| target | schedd | floor (baseline) | best peer | ratio | met? |", "|---|---|---|---|---|---|"]

    def line(name, mine, fl, best, r, ok):
        def f(v):
            return v if isinstance(v, str) else fmt(v, 3)
        out.append(f"| {name} | {f(mine)} | {f(fl)} | {f(best)} | {f(r)} | "
                   f"{'—' if ok is None else ('yes' if ok else '**no**')} |")

    for n in sorted({r["n"] for r in runs if r["workload"] == "w2"}):
        me_f, fl_f = m(me, "w2", ("fires_per_s",), n=n), m(floor, "w2", ("fires_per_s",), n=n)
        bp = [(m(p, "w2", ("fires_per_s",), n=n), p) for p in others]
        bp = max([x for x in bp if x[0] is not None], default=(None, None))
        r1, r2 = ratio(me_f, fl_f), ratio(me_f, bp[0])
        line(f"W2 {n:,} fires/s ≥ 0.9× floor", me_f, fl_f, f"{fmt(bp[0], 0)} ({bp[1]})", r1,
             None if r1 is None else r1 >= 0.9)
        line(f"W2 {n:,} fires/s ≥ 2× best peer", me_f, fl_f, f"{fmt(bp[0], 0)} ({bp[1]})", r2,
             None if r2 is None else r2 >= 2.0)
        me_p, fl_p = m(me, "w2", ("p99_s",), n=n), m(floor, "w2", ("p99_s",), n=n)
        r3 = ratio(me_p, fl_p)
        line(f"W2 {n:,} lateness p99 ≤ 1.2× floor (s)", me_p, fl_p, "", r3,
             None if r3 is None else r3 <= 1.2)
        rs = [r for r in runs if r["peer"] == me and r["workload"] == "w2" and r["n"] == n]
        rec = [r["db"].get("runs_by_status", {}).get("succeeded", 0) for r in rs if r.get("db")]
        md = [r.get("missing", 0) + r.get("duplicates", 0) for r in rs]
        line(f"W2 {n:,} every run recorded, none missing/doubled",
             f"recorded {rec} of {n}; missing+dup {md}", "", "", None,
             bool(rs) and all(x == n for x in rec) and not any(md))
    me_p, fl_p = m(me, "w3", ("p99_s",)), m(floor, "w3", ("p99_s",))
    bp = max([(m(p, "w3", ("p99_s",)), p) for p in others if m(p, "w3", ("p99_s",)) is not None],
             key=lambda x: -x[0], default=(None, None))
    r = ratio(me_p, fl_p)
    line("W3 lateness p99 ≤ 1.2× floor (s)", me_p, fl_p, f"{fmt(bp[0], 3)} ({bp[1]})", r,
         None if r is None else r <= 1.2)
    r = ratio(me_p, bp[0])
    line("W3 lateness p99 < 0.5× best peer (s)", me_p, fl_p, f"{fmt(bp[0], 3)} ({bp[1]})", r,
         None if r is None else r < 0.5)
    w3 = [x for x in runs if x["peer"] == me and x["workload"] == "w3"]
    if w3:
        line("W3 zero missing / doubled", f"{w3[0]['missing']} / {w3[0]['duplicates']}", "", "", None,
             w3[0]["missing"] == 0 and w3[0]["duplicates"] == 0)
    ns = sorted({x["n_persisted"] for x in runs if x["peer"] == me and x["workload"] == "w4"})
    if ns:
        lo, hi = ns[0], ns[-1]
        a = m(me, "w4", ("process", "maxrss_mb"), n_persisted=hi)
        b = m(me, "w4", ("process", "maxrss_mb"), n_persisted=lo)
        line(f"W4 peak RSS with {hi:,} − with {lo:,} ≤ 20 MB", f"{fmt(a, 1)} − {fmt(b, 1)}", "", "",
             None if a is None or b is None else a - b,
             None if a is None or b is None else a - b <= 20)
        rd = m(me, "w4", ("ready_s",), n_persisted=hi)
        line(f"W4 ready ≤ 1 s with {hi:,} (s)", rd, m(floor, "w4", ("ready_s",)), "", None,
             None if rd is None else rd <= 1.0)
        lt = m(me, "w4", ("canary_lateness_s",), n_persisted=hi)
        line(f"W4 first-fire lateness ≤ 20 ms with {hi:,} (s)", lt,
             m(floor, "w4", ("canary_lateness_s",)), "", None, None if lt is None else lt <= 0.020)
    w5 = [x for x in runs if x["peer"] == me and x["workload"] == "w5"]
    if w5:
        ph = [x for x in w5[0]["phases"] if x["phase"] == "get_by_id"]
        if ph:
            x = ph[0]
            line(f"W5 GET by id ≥ 3,000 req/s while W3 runs ({x['conns']} conns)", x["req_per_s"],
                 "", "", None, x["req_per_s"] >= 3000 and x["errors"] == 0)
            line("W5 GET by id p99 ≤ 20 ms while W3 runs (ms)", x["p99_ms"], "", "", None,
                 x["p99_ms"] <= 20)
    return out


def schedd_meta():
    """Which schedd was measured: the command, its version, the repo's commit, PYTHONPATH."""
    import shlex
    d = {"cmd": os.environ.get("SCHEDD_CMD"), "pythonpath": os.environ.get("PYTHONPATH"),
         "port": SCHEDD_PORT, "measured_commit": os.environ.get("BENCH_SCHEDD_COMMIT")}
    try:
        d["version"] = subprocess.run(shlex.split(d["cmd"]) + ["version"], capture_output=True,
                                      text=True, timeout=30).stdout.strip()
        d["module"] = subprocess.run(
            [os.path.join(os.path.dirname(shlex.split(d["cmd"])[0]), "python"), "-c",
             "import schedd; print(schedd.__file__)"], capture_output=True, text=True,
            timeout=30, cwd="/").stdout.strip()
        d["repo_head"] = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                                        capture_output=True, text=True, timeout=10).stdout.strip()
        d["repo_dirty"] = bool(subprocess.run(["git", "-C", REPO, "status", "--porcelain", "schedd"],
                                              capture_output=True, text=True, timeout=10).stdout)
    except Exception as e:
        d["error"] = str(e)[:200]
    return d


# -------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", default="baseline,ap3,huey,schedd")
    ap.add_argument("--workloads", default="w1,w2,w3,w4,w5")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 1 rep: a smoke test")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--budget-s", type=float, default=1500.0,
                    help="soft budget: optional steps are skipped once it is spent")
    ap.add_argument("--report-only", default=None)
    a = ap.parse_args()

    if a.report_only:
        raw = json.load(open(a.report_only))
        sys.stdout.write(report(raw))
        return 0

    os.makedirs(RUN_DIR, exist_ok=True)
    os.makedirs(a.out, exist_ok=True)
    peers = [p for p in a.peers.split(",") if p]
    wls = set(a.workloads.split(","))
    q = a.quick
    reps = 1 if q else a.reps
    N1 = 500 if q else 10000
    N2 = 300 if q else 2000
    N2B = 1000 if q else 10000
    W3_DUR = 10 if q else 60
    N4 = 2000 if q else 100000
    # schedd's W4 sizes: a seed of 1,000 through the API, then sqlite3 clones
    N4S = [int(x) for x in os.environ.get(
        "BENCH_W4_SCHEDD_SIZES", "1000,20000" if q else "1000,100000,1000000").split(",")]
    # W5 load phases (name, kind, seconds) during a W3 window; separate load process
    W5_PHASES = ([("get_by_id", "get", 2), ("list", "list", 1), ("create", "create", 1)] if q else
                 [("get_by_id", "get", 15), ("list", "list", 10), ("create", "create", 10)])
    W5_CONNS = int(os.environ.get("BENCH_W5_CONNS", "16"))
    LEAD = 8.0 if q else 15.0
    # per-peer repetition overrides, chosen so that the whole run fits ~25 min
    # on this 2-core machine (see results.md): AP4 registers ~250 jobs/s.
    w1_reps = {"ap4": 1}

    t_start = time.time()
    raw = {"meta": {"peers": peers, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "host": f"{os.cpu_count()} cpus, python {sys.version.split()[0]}",
                    "pinned": PIN, "client": os.environ.get("BENCH_CLIENT", "aiohttp"),
                    "conc": int(os.environ.get("BENCH_CONC", "64")), "quick": q,
                    "skipped": {}, "errors": [], "schedd": schedd_meta() if "schedd" in peers else None},
           "runs": []}
    out_json = os.path.join(a.out, "raw.json")

    def save():
        raw["meta"]["elapsed_s"] = time.time() - t_start
        raw["meta"]["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(out_json + ".tmp", "w") as f:
            json.dump(raw, f, indent=1)
        os.replace(out_json + ".tmp", out_json)
        with open(os.path.join(a.out, "table.md"), "w") as f:
            f.write(report(raw))

    def spent():
        return time.time() - t_start

    def attempt(what, fn, *args):
        try:
            r = fn(*args)
            return r
        except Exception as e:
            log(f"FAILED {what}: {e}")
            raw["meta"]["errors"].append(f"{what}: {str(e)[:800]}")
            return None

    def runs_here(p, wl):
        only = PEERS[p].get("only")
        if only is not None and wl not in only:
            raw["meta"]["skipped"].setdefault(f"{p}/{wl}", "not run (variant)")
            return False
        return True

    w1_rate = {}
    if "w1" in wls:
        for p in peers:
            if not runs_here(p, "w1"):
                continue
            for kind in ("oneshot", "interval"):
                if kind == "interval" and not PEERS[p]["w1_interval"]:
                    raw["meta"]["skipped"][f"{p}/w1/{kind}"] = "n/a"
                    continue
                for rep in range(min(reps, w1_reps.get(p, reps))):
                    log(f"W1 {p} {kind} rep {rep} N={N1}")
                    r = attempt(f"w1 {p} {kind} {rep}", w1_register, p, N1, kind, rep)
                    if r:
                        raw["runs"].append(r)
                        log(f"   -> {r['jobs_per_s']} jobs/s")
                        if kind == "oneshot":
                            w1_rate[p] = r["jobs_per_s"]
                save()
        # reference: the baseline's one-transaction bulk insert
        if "baseline" in peers:
            db = fresh_db("baseline", "w1_batch")
            try:
                reg, ru, wall = run_cmd("baseline", ["register", "--db", db, "--n", str(N1), "--due",
                                                     f"{time.time() + 60:.6f}", "--via", "batch"],
                                        "baseline_w1_batch", 120)
                raw["runs"].append({"peer": "baseline", "workload": "w1_batch", "n": N1,
                                    "jobs_per_s": round(reg["rate"], 1)})
            except Exception as e:
                raw["meta"]["errors"].append(f"w1 batch: {e}")
            save()

    w2_drain = {}
    if "w2" in wls:
        for p in peers:
            if not runs_here(p, "w2"):
                continue
            rate = w1_rate.get(p, PEERS[p]["rate_guess"])
            lead = max(LEAD, N2 / rate * 1.3 + 6)
            for rep in range(min(reps, PEERS[p].get("reps", reps))):
                log(f"W2 {p} N={N2} rep {rep} lead={lead:.0f}s")
                r = attempt(f"w2 {p} {N2} {rep}", w2_burst, p, N2, rep, lead, 90 if not q else 30)
                if r:
                    raw["runs"].append(r)
                    w2_drain.setdefault(p, []).append(r.get("drain_s") or 1e9)
                    log(f"   -> p50 {r['p50_s']} p99 {r['p99_s']} max {r['max_s']} drain {r['drain_s']} "
                        f"recv {r['received']}/{N2} cpu {r['process'].get('cpu_s')}")
                save()
        big = []
        for p in peers:
            if not runs_here(p, "w2"):
                continue
            rate = w1_rate.get(p, PEERS[p]["rate_guess"])
            lead = max(LEAD, N2B / rate * 1.3 + 6)
            d = statistics.median(w2_drain.get(p, [1e9]))
            est = lead + d * N2B / N2 + 10
            if PEERS[p].get("reps") == 1:
                raw["meta"]["skipped"][f"{p}/w2/{N2B}"] = "not run"
                continue
            if est > 300:
                raw["meta"]["skipped"][f"{p}/w2/{N2B}"] = f"skipped: est. {est:.0f} s > 5 min"
                log(f"W2 {p} N={N2B} skipped (estimated {est:.0f} s)")
                continue
            big.append((p, lead))
        # schedd's copy: BENCH_W2_BIG_REPS=K repeats the big burst K times, the peers
        # interleaved rep by rep (this shared box drifts by +-20% over minutes); the table
        # shows medians. Default 1, as shared/bench-peers.
        for rep in range(max(1, int(os.environ.get("BENCH_W2_BIG_REPS", "1")))):
            for p, lead in big:
                if spent() > a.budget_s * 0.55:
                    raw["meta"]["skipped"][f"{p}/w2/{N2B}"] = "skipped: time budget"
                    continue
                log(f"W2 {p} N={N2B} rep {rep} lead={lead:.0f}s")
                r = attempt(f"w2 {p} {N2B} {rep}", w2_burst, p, N2B, rep, lead,
                            240 if not q else 30)
                if r:
                    raw["runs"].append(r)
                    log(f"   -> p50 {r['p50_s']} p99 {r['p99_s']} max {r['max_s']} drain "
                        f"{r['drain_s']} recv {r['received']}/{N2B}")
                save()

    if "w3" in wls:
        for p in peers:
            if not runs_here(p, "w3"):
                continue
            log(f"W3 {p} 200 jobs x 1 s x {W3_DUR} s")
            r = attempt(f"w3 {p}", w3_steady, p, 200, 1.0, W3_DUR, 0, 6.0)
            if r:
                raw["runs"].append(r)
                log(f"   -> p50 {r['p50_s']} p99 {r['p99_s']} max {r['max_s']} missing {r['missing']} "
                    f"dup {r['duplicates']} cpu% {r['cpu_pct_of_core']}")
            save()

    if "w4" in wls:
        for p in peers:
            if not runs_here(p, "w4"):
                continue
            if PEERS[p].get("api"):
                log(f"W4 {p} populate {N4S} (seed through the API, sqlite3 clones)")
                preps = attempt(f"w4 prep {p}", w4_prepare_schedd, p, N4S)
                if not preps:
                    continue
            else:
                log(f"W4 {p} populate {N4} via {PEERS[p]['w4_via']}")
                prep = attempt(f"w4 prep {p}", w4_prepare, p, N4)
                if not prep:
                    continue
                preps = [prep]
            for template, info in preps:
                raw["runs"].append(info)
                log(f"   -> {info}")
                save()
            for template, info in preps:
                for rep in range(reps):
                    r = attempt(f"w4 {p} {info['n']} {rep}", w4_restart, p, template, info["n"], rep)
                    if r:
                        raw["runs"].append(r)
                        log(f"   -> n={info['n']} ready {r.get('ready_s')} first fire "
                            f"{r.get('first_fire_s')} late {r.get('canary_lateness_s')} "
                            f"rss {r['process'].get('maxrss_mb')} probe {r.get('probe')}")
                    save()

    if "w5" in wls:
        for p in peers:
            if not PEERS[p].get("api"):
                raw["meta"]["skipped"][f"{p}/w5"] = "n/a (no HTTP API)"
                continue
            log(f"W5 {p}: W3 ({W3_DUR} s) with API load ({W5_PHASES}, {W5_CONNS} connections)")
            r = attempt(f"w5 {p}", w5_api, p, 200, 1.0, W3_DUR, 0, 6.0, W5_PHASES, W5_CONNS)
            if r:
                raw["runs"].append(r)
                log(f"   -> W3 under load: p50 {r['p50_s']} p99 {r['p99_s']} missing {r['missing']} "
                    f"dup {r['duplicates']}")
            save()

    save()
    sys.stdout.write(report(raw))
    log(f"done in {spent():.0f} s; raw results: {out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
