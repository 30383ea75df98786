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


@pytest.mark.skipif(not _gpu_with_vllm(), reason="needs vllm and a CUDA device")
def test_wrap_stage_runs_on_vllm(tmp_path):
    import pyarrow as pa

    from bench.gpu_llm_check import build_tiny_model
    from thresher.pipeline.engine.apply import apply_stage
    from thresher.stages.wrap import WrapRephrase

    build_tiny_model(tmp_path)
    stage = WrapRephrase(engine={"engine": "vllm", "model": str(tmp_path), "max_model_len": 512,
                                 "gpu_memory_utilization": 0.3, "enforce_eager": True},
                         chunk_tokens=32, language_check=False, languages=None)
    stage.setup()
    texts = ["w1 w2 the river. w3 w4 a city. " * 6] * 4
    batch = pa.table({"id": ["a", "b", "c", "d"], "text": texts,
                      "_error": pa.nulls(4, pa.string()), "_pre": pa.nulls(4, pa.string())})
    out = apply_stage(stage, batch)
    made = out.column("wrap_rephrasings").to_pylist()
    drops = out.column("wrap_guard_drops").to_pylist()
    assert all(m or d for m, d in zip(made, drops))  # a paraphrase or a reason, each
