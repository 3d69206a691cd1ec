#!/usr/bin/env bash
# Start a single-file build on a temporary database and port, and require 200 from
# /healthz within 60 s; always stops it. Used by CI on a clean clone.
#
#   packaging/probe-single-file.sh dist/schedd.pyz
set -euo pipefail
pyz="$1"
tmp="$(mktemp -d)"
port="${PROBE_PORT:-18321}"
SHIV_ROOT="$tmp/shiv" "$pyz" serve --db "$tmp/probe.db" --port "$port" >"$tmp/log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 1 600); do
  if code=$(python3 -c "import urllib.request,sys
try:
    print(urllib.request.urlopen('http://127.0.0.1:$port/healthz', timeout=1).status)
except Exception:
    sys.exit(1)" 2>/dev/null); then
    if [ "$code" = "200" ]; then
      echo "single-file build answered 200 on /healthz"
      # the console's templates and static files are package data: the build must carry them
      python3 -c "import urllib.request
page = urllib.request.urlopen('http://127.0.0.1:$port/ui/signin', timeout=5).read().decode()
assert 'name=\"key\"' in page, page[:300]
css = urllib.request.urlopen('http://127.0.0.1:$port/ui/static/console.css', timeout=5)
assert css.status == 200" || { echo "the console did not answer" >&2; cat "$tmp/log" >&2; exit 1; }
      echo "single-file build serves the console at /ui"
      exit 0
    fi
  fi
  if ! kill -0 $pid 2>/dev/null; then
    echo "the single-file build exited:" >&2; cat "$tmp/log" >&2; exit 1
  fi
  sleep 0.1
done
echo "no 200 from /healthz within 60 s" >&2; cat "$tmp/log" >&2
exit 1
