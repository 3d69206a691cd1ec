#!/usr/bin/env bash
# Creates the benchmark venvs under /tmp (never system-wide).  This is the only step that
# uses the network (PyPI through pip); the benchmark itself talks to 127.0.0.1 only.
# The peers are installed from PyPI at the exact versions measured; none of their code is
# kept in this repository.
#   setup_venvs.sh              # the peers venv: sink, baseline, APScheduler 3, Huey
#   setup_venvs.sh --with-ap4   # also APScheduler 4.0.0a6 (its own venv: same package name)
# schedd itself runs from the project's venv (SCHEDD_CMD, see run_all.sh).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${BENCH_PYTHON:-python3.11}
V=${BENCH_VENV:-/tmp/peers-venv}
V4=${BENCH_VENV_AP4:-/tmp/peers-venv-ap4}
[ -x "$V/bin/python" ] || "$PY" -m venv "$V"
"$V/bin/pip" install -q -r "$HERE/requirements-peers.txt"
"$V/bin/python" -c "import apscheduler, huey, aiohttp, httpx, sniffio; print('peers venv ok: apscheduler', apscheduler.__version__ if hasattr(apscheduler,'__version__') else '3.x', 'huey', huey.__version__)"
if [ "${1:-}" = "--with-ap4" ]; then
  [ -x "$V4/bin/python" ] || "$PY" -m venv "$V4"
  # 4.0.0a6 is a pre-release; the exact pin makes --pre unnecessary
  "$V4/bin/pip" install -q -r "$HERE/requirements-ap4.txt"
  "$V4/bin/python" -c "import apscheduler.datastores.sqlalchemy, aiosqlite, aiohttp; from importlib.metadata import version; print('ap4 venv ok: apscheduler', version('apscheduler'))"
fi
