#!/usr/bin/env bash
# One command that reproduces every number in bench/RESULTS.md.
#
#   bench/peers/run_all.sh                 # baseline, ap3, huey, schedd; W1..W5 (~30 min)
#   bench/peers/run_all.sh --quick         # smoke test, ~5 min, tiny N (not comparable)
#   bench/peers/run_all.sh --peers baseline,schedd --workloads w2,w4   # any subset
#
# schedd: SCHEDD_CMD (default: the repo's .venv/bin/schedd, else /tmp/venv/bin/schedd).
# Bounded in time: bench.py has a soft budget and every step its own timeout;
# this script adds a hard wall-clock cap (BENCH_HARD_TIMEOUT, default 2400 s).
# Network: the benchmark talks to 127.0.0.1 only.  If the venvs are missing,
# setup_venvs.sh creates them first (that one step uses PyPI via pip).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
export BENCH_VENV=${BENCH_VENV:-/tmp/peers-venv}
export BENCH_VENV_AP4=${BENCH_VENV_AP4:-/tmp/peers-venv-ap4}
export BENCH_RUN_DIR=${BENCH_RUN_DIR:-/tmp/peers-run}
export TZ=UTC
if [ -z "${SCHEDD_CMD:-}" ]; then
  if [ -x "$REPO/.venv/bin/schedd" ]; then export SCHEDD_CMD="$REPO/.venv/bin/schedd"
  else export SCHEDD_CMD=/tmp/venv/bin/schedd; fi
fi
OUT=${BENCH_OUT:-$HERE/results}
WITH_AP4=
prev=
for a in "$@"; do
  [ "$a" = "--quick" ] && OUT=${BENCH_OUT:-$BENCH_RUN_DIR/quick-results}
  if [ "$prev" = "--peers" ]; then case ",$a," in *,ap4,*) WITH_AP4=--with-ap4;; esac; fi
  prev=$a
done

if [ ! -x "$BENCH_VENV/bin/python" ] || { [ -n "$WITH_AP4" ] && [ ! -x "$BENCH_VENV_AP4/bin/python" ]; }; then
  echo "== creating venvs (PyPI) =="; "$HERE/setup_venvs.sh" $WITH_AP4
fi
rm -rf "$BENCH_RUN_DIR"; mkdir -p "$BENCH_RUN_DIR" "$OUT"
# BENCH_SCHEDD_REV=HEAD (any git revision): measure that commit's schedd package, copied
# out of git, instead of the work tree (other edits in progress then cannot disturb a run).
# The venv's interpreter and dependencies are kept; PYTHONPATH puts the copy first.
if [ -n "${BENCH_SCHEDD_REV:-}" ]; then
  SRC="$BENCH_RUN_DIR/schedd-src"; mkdir -p "$SRC"
  git -C "$REPO" archive "$BENCH_SCHEDD_REV" schedd | tar -x -C "$SRC"
  export PYTHONPATH="$SRC${PYTHONPATH:+:$PYTHONPATH}"
  export BENCH_SCHEDD_COMMIT=$(git -C "$REPO" rev-parse --short "$BENCH_SCHEDD_REV")
  echo "schedd source: $BENCH_SCHEDD_REV = $BENCH_SCHEDD_COMMIT, copied to $SRC"
fi
echo "schedd: $SCHEDD_CMD ($(bash -c "$SCHEDD_CMD version" 2>&1 || true))"

# Sink capacity check (is the sink ever the bottleneck?): wrk for 3 s, pinned
# to the other core.  Optional: only when wrk is installed (apt-get install wrk).
if command -v wrk >/dev/null 2>&1; then
  echo "== sink capacity (wrk, 3 s, 50 connections) =="
  taskset -c 0 "$BENCH_VENV/bin/python" "$HERE/sink.py" --port 0 --out "$BENCH_RUN_DIR/wrk.jsonl" \
      --ready-file "$BENCH_RUN_DIR/wrk.port" > "$BENCH_RUN_DIR/wrk.sink.log" 2>&1 &
  SINK_PID=$!
  for _ in $(seq 1 100); do [ -s "$BENCH_RUN_DIR/wrk.port" ] && break; sleep 0.05; done
  printf 'wrk.method = "POST"\nwrk.body = "{\\"job\\":\\"w\\",\\"due\\":1.0}"\nwrk.headers["Content-Type"] = "application/json"\n' > "$BENCH_RUN_DIR/post.lua"
  timeout 20 taskset -c 1 wrk -t1 -c50 -d3s -s "$BENCH_RUN_DIR/post.lua" \
      "http://127.0.0.1:$(cat "$BENCH_RUN_DIR/wrk.port")/hook" > "$OUT/sink_capacity.txt" 2>&1 || true
  kill -TERM "$SINK_PID" 2>/dev/null || true; wait "$SINK_PID" 2>/dev/null || true
  grep -E "Requests/sec|Latency" "$OUT/sink_capacity.txt" || true
fi

echo "== bench.py (progress on stderr, table on stdout) =="
timeout --signal=TERM --kill-after=30 "${BENCH_HARD_TIMEOUT:-2400}" \
  "$BENCH_VENV/bin/python" "$HERE/bench.py" --out "$OUT" "$@" | tee "$OUT/stdout.txt"
echo "results: $OUT/table.md  $OUT/raw.json   (per-run logs: $BENCH_RUN_DIR)"
