"""The vLLM backend, where vllm and a CUDA device exist (bench/gpu_llm.sh runs it)."""

import importlib.util

import pytest

pytestmark = pytest.mark.gpu


def _gpu_with_vllm() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(not _gpu_with_vllm(), reason="needs vllm and a CUDA device")
def test_vllm_engine_generates_greedy_and_counts_tokens(tmp_path):
    from bench.gpu_llm_check import build_tiny_model
    from thresher.models.llm import Sampling, load_engine

    build_tiny_model(tmp_path)
    engine = load_engine({"engine": "vllm", "model": str(tmp_path), "max_model_len": 512,
                          "gpu_memory_utilization": 0.3, "enforce_eager": True})
    conversations = [[{"role": "user", "content": f"w{i} w{i + 1} the river"}] for i in range(16)]
    first = engine.generate(conversations, Sampling(max_new_tokens=12))
    again = engine.generate(conversations, Sampling(max_new_tokens=12))
    assert [g.text for g in first] == [g.text for g in again]
    assert all(0 < g.completion_tokens <= 12 and g.prompt_tokens > 3 for g in first)
