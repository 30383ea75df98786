"""WRAP on CPU: new tokens/s of the wrap stage vs bare transformers `generate` on the
same chunk prompts, in one process, on the same SmolLM2-135M-Instruct.

  python bench/wrap_throughput.py [--input data/demo-crawl] [--docs 8] [--threads 2]

  wrap stage   WrapRephrase.__call__ via apply_stage: chunking, prompts, length-sorted
               batches of 8, guards, language check, reassembly
  bare         the same chat prompts (built once, untimed) through model.generate in
               batches of 8 in input order, same sampling settings and max_new_tokens
English documents of the demo crawl, 100-400 words, style medium, chunks of 128 tokens.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.peers import bare_generate  # noqa: E402
from thresher.models.langid import FastTextLID  # noqa: E402
from thresher.models.registry import resolve  # noqa: E402
from thresher.models.wrap import build_request, chunk_text  # noqa: E402
from thresher.pipeline.engine.apply import apply_stage  # noqa: E402
from thresher.stages.wrap import WrapRephrase  # noqa: E402


def english_docs(inputs: str, n: int) -> list[str]:
    table = pq.read_table(sorted(Path(inputs).glob("part-*.parquet"))[0], columns=["text"])
    texts = [t for t in table.column("text").to_pylist() if 100 <= len(t.split()) <= 400]
    langs, scores = FastTextLID(resolve("lid176")).predict(texts)
    return [t for t, l, s in zip(texts, langs, scores) if l == "en" and s > 0.9][:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default="data/demo-crawl")
    parser.add_argument("--docs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    texts = english_docs(args.input, args.docs)
    n = len(texts)
    stage = WrapRephrase(styles=["medium"], chunk_tokens=128, resources=None)
    stage.setup()
    batch = pa.table({"id": [f"b{i}" for i in range(n)], "text": texts, "lang": ["en"] * n,
                      "_error": pa.nulls(n, pa.string()), "_pre": pa.nulls(n, pa.string())})
    generated = []  # every generation, kept by the guards or not
    generate = stage._engine.generate
    stage._engine.generate = lambda reqs, sampling: generated.extend(
        generate(reqs, sampling)) or generated[-len(reqs):]
    started = time.perf_counter()
    out = apply_stage(stage, batch)
    ours = time.perf_counter() - started
    made = [m for ms in out.column("wrap_rephrasings").to_pylist() for m in ms or []]
    ours_tokens = sum(g.completion_tokens for g in generated)
    drops = [d for ds in out.column("wrap_guard_drops").to_pylist() for d in ds or []]

    engine = stage._engine
    tok, model = engine.tokenizer, engine.model
    chunks = [c for t in texts for c in chunk_text(t, stage._count, 128)]
    prompts = [tok.apply_chat_template(build_request(c.text, "medium", stage._markers),
                                       tokenize=False, add_generation_prompt=True) for c in chunks]
    longest = max(c.tokens for c in chunks)
    torch.manual_seed(0)
    bare_tokens, bare = bare_generate(tok, model, prompts, int(longest * 2.0) + 8,
                                      sample={"temperature": 0.7, "top_p": 0.9})
    print(f"{n} documents, {len(chunks)} chunks; stage: {len(made)} paraphrases kept, "
          f"guards dropped {len(drops)} ({drops}); {args.threads} threads")
    print("| implementation | chunks | s | new tokens | new tokens/s |")
    print("|---|---|---|---|---|")
    print(f"| wrap stage | {len(chunks)} | {ours:.1f} | {ours_tokens:,} | {ours_tokens / ours:,.1f} |")
    print(f"| bare transformers generate | {len(chunks)} | {bare:.1f} | {bare_tokens:,} | "
          f"{bare_tokens / bare:,.1f} |")


if __name__ == "__main__":
    main()
