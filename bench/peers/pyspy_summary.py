#!/usr/bin/env python3
"""Summarise a py-spy `--format raw` profile (collapsed stacks, one "a;b;c COUNT" a line).

    pyspy_summary.py PROFILE.txt [--top 25] [--match schedd/]

Prints, as % of all samples: a breakdown of schedd's work by category (each sample is
counted once, under the first category in CATEGORIES whose test matches its stack),
samples per thread, the functions with the most inclusive time (on the stack) and the most
self time (the innermost frame), and the inclusive time of frames whose file matches
--match (e.g. schedd's own code).
"""
import argparse
import collections
import re

FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")


# (category, test on (thread name, frames)); the first match wins
CATEGORIES = [
    ("SQLite statements (aiosqlite worker threads)", lambda t, fr: "MainThread" not in t),
    ("logging (a line per run transition)", lambda t, fr: any("logging/" in f for f in fr)),
    ("HTTP API (uvicorn + Litestar handlers)",
     lambda t, fr: any("litestar/" in f or "uvicorn/" in f for f in fr)),
    ("recorder: finish runs (_flush/_record)",
     lambda t, fr: any("Engine._flush" in f or "Engine._record" in f for f in fr)),
    ("dispatch (create the run task, context, metrics)",
     lambda t, fr: any("Engine._dispatch" in f for f in fr)),
    ("claim tick (Engine.tick: claim tx, plan, resolve)", lambda t, fr: any("Engine.tick" in f for f in fr)),
    ("loop: next wake / sleep (Engine._loop outside tick)", lambda t, fr: any("Engine._loop" in f for f in fr)),
    ("webhook request (schedd/actions.py + aiohttp client)",
     lambda t, fr: any("_run_webhook" in f or "aiohttp/" in f for f in fr)),
    ("event loop itself (uvloop, callbacks, awaiting aiosqlite futures)", lambda t, fr: True),
]


def short(frame):
    m = FRAME.match(frame)
    if not m:
        return frame
    f = m.group("file")
    for cut in ("site-packages/", "lib/python3.11/", "schedd-src/"):
        if cut in f:
            f = f.split(cut, 1)[1]
    return f"{m.group('fn')} ({f})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("profile")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--match", default="schedd/")
    a = ap.parse_args()
    total = 0
    threads = collections.Counter()
    incl = collections.Counter()
    self_ = collections.Counter()
    mine = collections.Counter()
    cats = collections.Counter()
    with open(a.profile) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, n = line.rpartition(" ")
            try:
                n = int(n)
            except ValueError:
                continue
            frames = stack.split(";")
            total += n
            tname = ""
            while frames and frames[0].startswith(("thread", "process")):
                if frames[0].startswith("thread"):
                    threads[frames[0]] += n
                    tname = frames[0]
                frames = frames[1:]
            for name, test in CATEGORIES:
                if test(tname, frames):
                    cats[name] += n
                    break
            seen = set()
            for fr in frames:
                s = short(fr)
                if s not in seen:
                    incl[s] += n
                    seen.add(s)
                    if a.match in fr:
                        mine[s] += n
            if frames:
                self_[short(frames[-1])] += n
    if not total:
        print("no samples")
        return
    pc = lambda n: f"{100.0 * n / total:5.1f}%"  # noqa: E731
    print(f"{total} samples")
    print("\n== where the time goes (each sample once, first matching category)")
    for name, _ in CATEGORIES:
        print(f"{pc(cats[name])}  {name}")
    print("\n== samples by thread")
    for t, n in threads.most_common(10):
        print(f"{pc(n)}  {t}")
    print(f"\n== inclusive (on the stack), top {a.top}")
    for s, n in incl.most_common(a.top):
        print(f"{pc(n)}  {s}")
    print(f"\n== self (innermost frame), top {a.top}")
    for s, n in self_.most_common(a.top):
        print(f"{pc(n)}  {s}")
    print(f"\n== inclusive, frames in files matching {a.match!r}, top {a.top}")
    for s, n in mine.most_common(a.top):
        print(f"{pc(n)}  {s}")


if __name__ == "__main__":
    main()
