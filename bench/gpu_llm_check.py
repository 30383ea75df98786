"""Check the transformers LLM engine on CUDA (or --device cpu) without any download.

  python bench/gpu_llm_check.py [--device cuda] [--prompts 64]

The GPU machine cannot receive the SmolLM2 GGUF, so this builds a small random Llama
model and a word-level tokenizer with a chat template locally. It checks the engine's
device placement, bfloat16, left-padded batched greedy generation (batch == one by
one) and token counts, and prints generated tokens/s. Model quality is not the point.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> "
                 "{% endfor %}{% if add_generation_prompt %}<|assistant|> {% endif %}")


def build_tiny_model(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>",
             "<|end|>"] + [f"w{i}" for i in range(2000)] + "the a river city is of and to".split()
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<s>", eos_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    config = LlamaConfig(vocab_size=len(words), hidden_size=256, intermediate_size=512,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=1024, pad_token_id=0, bos_token_id=2,
                         eos_token_id=3)
    LlamaForCausalLM(config).save_pretrained(folder)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--engine", default="transformers", choices=["transformers", "vllm"])
    args = parser.parse_args()
    if args.engine == "vllm":
        return check_vllm(args.prompts)
    import torch

    from thresher.models.llm import Sampling
    from thresher.models.llm.transformers_engine import TransformersEngine

    torch.manual_seed(0)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_model(Path(tmp))
        engine = TransformersEngine(tmp, device=args.device, dtype=args.dtype, batch_size=32)
        print(f"device {engine.device}, dtype {engine.model.dtype}, "
              f"{torch.cuda.get_device_name() if engine.device == 'cuda' else 'cpu'}")
        conversations = [[{"role": "user", "content": " ".join(f"w{(i * 7 + j) % 2000}"
                                                               for j in range(5 + i % 40))}]
                         for i in range(args.prompts)]
        sampling = Sampling(max_new_tokens=32)
        engine.generate(conversations[:2], sampling)  # warm-up
        start = time.perf_counter()
        batched = engine.generate(conversations, sampling)
        seconds = time.perf_counter() - start
        single = [engine.generate([c], sampling)[0] for c in conversations[:8]]
        same = [b.text for b in batched[:8]] == [s.text for s in single]
        tokens = sum(g.completion_tokens for g in batched)
        print(f"{len(batched)} prompts, {tokens} generated tokens in {seconds:.2f} s: "
              f"{tokens / seconds:,.0f} tokens/s")
        print(f"batched == one by one (first 8, greedy): {same}")
        print(f"token counts positive: {all(g.completion_tokens > 0 for g in batched)}")
        return 0 if same and tokens > 0 else 1


def check_vllm(prompts: int) -> int:
    """The vLLM engine vs bare vllm LLM.chat on the same prompts: tokens/s of each."""
    from vllm import SamplingParams

    from thresher.models.llm import Sampling, load_engine

    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_model(Path(tmp))
        engine = load_engine({"engine": "vllm", "model": tmp, "max_model_len": 512,
                              "gpu_memory_utilization": 0.5, "batch_size": prompts})
        conversations = [[{"role": "user", "content": " ".join(f"w{(i * 7 + j) % 2000}"
                                                               for j in range(5 + i % 40))}]
                         for i in range(prompts)]
        engine.generate(conversations[:4], Sampling(max_new_tokens=8))  # warm-up
        start = time.perf_counter()
        ours = engine.generate(conversations, Sampling(max_new_tokens=64))
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        bare = engine.llm.chat(conversations, SamplingParams(temperature=0, max_tokens=64),
                               use_tqdm=False)
        bare_s = time.perf_counter() - start
        ours_tokens = sum(g.completion_tokens for g in ours)
        bare_tokens = sum(len(r.outputs[0].token_ids) for r in bare)
        print(f"vLLM engine: {ours_tokens} tokens in {ours_s:.2f} s: {ours_tokens / ours_s:,.0f} tokens/s")
        print(f"bare LLM.chat: {bare_tokens} tokens in {bare_s:.2f} s: {bare_tokens / bare_s:,.0f} tokens/s")
        same = [g.text for g in ours] == [r.outputs[0].text for r in bare]
        print(f"same greedy texts: {same}")
        return 0 if ours_tokens > 0 and same else 1


if __name__ == "__main__":
    sys.exit(main())
