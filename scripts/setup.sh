#!/usr/bin/env bash
# Create .venv and install convgen (editable) with the pinned torch. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
args=(-q -c constraints.txt)
# A local wheel directory (the CPU build of torch on the project machines), when present.
[ -d /opt/wheels ] && args+=(--find-links /opt/wheels)
extras=${CONVGEN_EXTRAS:-dev,tensorboard}
log=.venv/pip-install.log
if ! .venv/bin/python -m pip install "${args[@]}" -e ".[${extras}]" >"$log" 2>&1; then
    grep -v "^WARNING: Location" "$log" | tail -30
    echo "setup: pip install failed (full log: $log)" >&2
    exit 1
fi
grep -v "^WARNING: Location" "$log" || true
.venv/bin/python -c "import convgen, torch; print(f'convgen {convgen.__version__} with torch {torch.__version__} ready')"
