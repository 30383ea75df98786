"""WRAP on a GPU: output tokens/s of the wrap stage vs the engine's bare generation on
the same chunk prompts, in the same run (goal: the stage within 10% of bare vLLM).

  python bench/gpu_wrap.py [--engine vllm|transformers] [--docs 64] [--model DIR]

Without --model it builds the small random Llama of gpu_llm_check.py (nothing to
download; its paraphrases are noise and the guards drop them, but every token it
generates is counted). Bare: vLLM's own LLM.chat (or transformers generate on the
templated prompts), not thresher's engine, on the same prompts with the same
sampling, after the stage, on the same loaded model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gpu_llm_check import build_tiny_model  # noqa: E402
from thresher.models.llm import Sampling  # noqa: E402
from thresher.models.wrap import build_request, chunk_text  # noqa: E402
from thresher.pipeline.engine.apply import apply_stage  # noqa: E402
from thresher.stages.wrap import WrapRephrase  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="vllm", choices=["vllm", "transformers"])
    parser.add_argument("--docs", type=int, default=64)
    parser.add_argument("--model")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or tmp
        if not args.model:
            build_tiny_model(Path(tmp))
        spec = {"engine": args.engine, "model": model, "batch_size": 256}
        if args.engine == "vllm":
            spec.update(max_model_len=512, gpu_memory_utilization=0.5)
        stage = WrapRephrase(engine=spec, styles=["medium"], chunk_tokens=64,
                             language_check=False, languages=None)
        stage.setup()
        words = "the a river city is of and to".split() + [f"w{i}" for i in range(300)]
        texts = [". ".join(" ".join(words[(d * 13 + s * 7 + k) % len(words)] for k in range(12))
                           for s in range(12)) + "." for d in range(args.docs)]
        n = len(texts)
        batch = pa.table({"id": [f"g{i}" for i in range(n)], "text": texts,
                          "_error": pa.nulls(n, pa.string()), "_pre": pa.nulls(n, pa.string())})
        generate = stage._engine.generate
        generate([[{"role": "user", "content": "w1 w2 the river"}]] * 4,
                 Sampling(max_new_tokens=8))  # warm-up, so neither side pays it
        generated = []
        stage._engine.generate = lambda reqs, s: generated.extend(generate(reqs, s)) or \
            generated[-len(reqs):]
        start = time.perf_counter()
        apply_stage(stage, batch)
        ours = time.perf_counter() - start
        ours_tokens = sum(g.completion_tokens for g in generated)

        chunks = [c for t in texts for c in chunk_text(t, stage._count, 64)]
        requests = [build_request(c.text, "medium", stage._markers) for c in chunks]
        sampling = Sampling(max_new_tokens=int(max(c.tokens for c in chunks) * 2.0) + 8,
                            temperature=0.7, top_p=0.9)
        bare_tokens, bare_s = bare_run(stage._engine, args.engine, requests, sampling)
        print(f"{args.engine}: {n} documents, {len(chunks)} chunks")
        print("| implementation | s | new tokens | new tokens/s |")
        print("|---|---|---|---|")
        print(f"| wrap stage | {ours:.2f} | {ours_tokens:,} | {ours_tokens / ours:,.0f} |")
        print(f"| bare {'vLLM LLM.chat' if args.engine == 'vllm' else 'transformers generate'}"
              f" | {bare_s:.2f} | {bare_tokens:,} | "
              f"{bare_tokens / bare_s:,.0f} |")
        ratio = (ours_tokens / ours) / (bare_tokens / bare_s)
        print(f"stage / bare tokens/s: {ratio:.2f} (goal >= 0.90)")
        return 0


def bare_run(engine, kind: str, requests, sampling: Sampling) -> tuple[int, float]:
    """The library alone on the same loaded model and requests, with nothing of
    thresher's around it: vLLM's LLM.chat with the same sampling (the same call the
    vllm engine makes), or transformers generate on the same templated prompts."""
    if kind == "vllm":
        from vllm import SamplingParams

        params = SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p,
                                max_tokens=sampling.max_new_tokens, seed=sampling.seed)
        start = time.perf_counter()
        results = engine.llm.chat(requests, params, use_tqdm=False)
        seconds = time.perf_counter() - start
        return sum(len(r.outputs[0].token_ids) for r in results), seconds
    from bench.peers import bare_generate

    prompts = [engine.tokenizer.apply_chat_template(r, tokenize=False, add_generation_prompt=True)
               for r in requests]
    return bare_generate(engine.tokenizer, engine.model, prompts, sampling.max_new_tokens,
                         sample={"temperature": sampling.temperature, "top_p": sampling.top_p},
                         batch=engine.batch_size)


if __name__ == "__main__":
    sys.exit(main())
