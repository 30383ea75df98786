#!/usr/bin/env bash
# WRAP on a GPU machine in under 5 minutes, nothing downloaded:  bash bench/gpu_wrap.sh
# The wrap stage vs the bare engine on the same prompts (vLLM where installed, else the
# transformers engine on CUDA), and the GPU tests. Needs torch, transformers, pyarrow,
# nltk and thresher importable (see bench/gpu_llm.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if "$PY" -c "import vllm" 2>/dev/null; then
  timeout 240 "$PY" bench/gpu_wrap.py --engine vllm --docs 128
else
  echo "vllm is not installed here: the transformers engine on CUDA instead"
  timeout 240 "$PY" bench/gpu_wrap.py --engine transformers --docs 32
fi
# A failing GPU test fails the script; pytest's 5 (no GPU test selected here) says so.
rc=0; timeout 60 "$PY" -m pytest -q -m gpu tests/stages/test_vllm_engine.py -p no:cacheprovider || rc=$?
if [ "$rc" -eq 5 ]; then echo "== no GPU test selected here"; elif [ "$rc" -ne 0 ]; then exit "$rc"; fi
