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
timeout 60 "$PY" -m pytest -q -m gpu tests/test_vllm_engine.py -p no:cacheprovider || true
