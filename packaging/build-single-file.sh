#!/usr/bin/env bash
# Build one self-contained executable, dist/schedd.pyz, with shiv (the standard zipapp
# cannot load compiled modules such as msgspec and uvloop). It runs as `./schedd.pyz serve`
# on a machine with the same CPython minor version and platform it was built with; its
# first start unpacks to ~/.shiv (or $SHIV_ROOT).
#
#   packaging/build-single-file.sh [OUTPUT]      (default dist/schedd.pyz)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist/schedd.pyz}"
python="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$python" -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --upgrade pip
"$work/venv/bin/pip" install --quiet "shiv>=1.0.8"
mkdir -p "$(dirname "$out")"
"$work/venv/bin/shiv" --quiet --compressed --reproducible \
  --python "/usr/bin/env python3" --console-script schedd --output-file "$out" .
echo "built $out ($(du -h "$out" | cut -f1))"
