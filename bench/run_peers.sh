#!/usr/bin/env bash
# schedd side by side with its peers (issue 6): W1 register, W2 burst, W3 steady,
# W4 restart with 1,000 / 100,000 / 1,000,000 schedules, W5 API under load.
# Results and how to read them: bench/RESULTS.md.  The harness lives in bench/peers/.
#
#   bench/run_peers.sh                          # the full run (~20-30 min, 2 cores)
#   bench/run_peers.sh --quick                  # ~4 min, tiny sizes (not comparable)
#   bench/run_peers.sh --peers baseline,schedd --workloads w2,w3
#   BENCH_SCHEDD_REV=HEAD bench/run_peers.sh    # measure a commit, not the work tree
#   SCHEDD_CMD=/path/to/schedd bench/run_peers.sh
#
# The peers (APScheduler 3, Huey; APScheduler 4 with --peers ...,ap4) are installed from
# PyPI into venvs under /tmp on first use (bench/peers/setup_venvs.sh); none of their
# code is in this repository.  W5 uses wrk when it is installed (apt-get install wrk),
# else bench/peers/loadgen.py.  Every request goes to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null 2>&1 || echo "note: wrk is not installed; W5 falls back to bench/peers/loadgen.py (aiohttp)" >&2
exec bench/peers/run_all.sh "$@"
