#!/usr/bin/env bash
# The LLM engines on a GPU machine, in under 5 minutes, with nothing downloaded:
#   bash bench/gpu_llm.sh
# 1. the transformers engine on CUDA (bfloat16 and float32): tokens/s, batched == single
# 2. the GPU tests (tests/stages/test_vllm_engine.py runs where vllm is installed)
# 3. where vllm is installed: the vLLM engine on the same tiny model: tokens/s
# It needs torch, transformers and pyarrow; thresher importable (pip install -e . or
# PYTHONPATH pointing at a folder whose thresher/ links pipeline, stages, models).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
echo "== transformers engine, CUDA, bfloat16"; timeout 120 "$PY" bench/gpu_llm_check.py --device cuda --dtype bfloat16 --prompts 256
echo "== transformers engine, CUDA, float32";  timeout 120 "$PY" bench/gpu_llm_check.py --device cuda --dtype float32 --prompts 256
echo "== GPU tests"
# A failing GPU test fails the script; pytest's 5 (no GPU test selected here) says so.
rc=0; timeout 120 "$PY" -m pytest -q -m gpu tests/stages/test_vllm_engine.py tests/stages/test_llm_engine.py -k "cuda or vllm" -p no:cacheprovider || rc=$?
if [ "$rc" -eq 5 ]; then echo "== no GPU test selected here"; elif [ "$rc" -ne 0 ]; then exit "$rc"; fi
if "$PY" -c "import vllm" 2>/dev/null; then
  echo "== vLLM engine"; timeout 180 "$PY" bench/gpu_llm_check.py --engine vllm --prompts 256
else
  echo "== vLLM engine: vllm is not installed here; skipped (pip install -c constraints-gpu.txt 'thresher[gpu]')"
fi
