#!/usr/bin/env bash
# The GPU path's smoke test: offline, one GPU, under 10 minutes.
#   bash bench/gpu_smoke.sh [WHEELHOUSE] [--model FOLDER]
# vllm is installed from WHEELHOUSE (a folder of wheels: pip download -c constraints-gpu.txt
# 'thresher[gpu]' on a machine with internet) when it is missing. Then bench/gpu_smoke.py
# runs each check and prints one line per check (PASS or FAIL); the script exits non-zero
# on any failure. --model: a DataMan model folder (e.g. DataMan-1.5B-EN) for a real parse
# rate; without it a tiny random model checks the plumbing, and the parse rate is shown
# but not judged.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then WHEELHOUSE=$1; shift; else WHEELHOUSE=; fi
if ! "$PY" -c "import vllm" 2>/dev/null; then
  if [ -z "$WHEELHOUSE" ]; then
    echo "FAIL install: vllm is not installed and no wheelhouse was given"; exit 1
  fi
  "$PY" -m pip install -q --no-index --find-links "$WHEELHOUSE" -c constraints-gpu.txt vllm \
    || { echo "FAIL install: vllm from $WHEELHOUSE"; exit 1; }
  echo "PASS install: vllm from $WHEELHOUSE"
fi
export RAY_USAGE_STATS_ENABLED=0
timeout 570 "$PY" bench/gpu_smoke.py "$@"
