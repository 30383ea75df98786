"""The vLLM backend: vllm.LLM in the worker that runs the stage (a Ray actor with
`num_gpus` from the stage's resources), offline batched generation with vLLM's own
continuous batching.

vllm is imported here only, so that the rest of thresher runs where it is not
installed (`pip install -c constraints-gpu.txt 'thresher[gpu]'` adds it). The calls
below are those of the pinned vLLM (0.33.0); tests/test_vllm_api.py checks them
against that release's source.

Failures: any error of one batch (vLLM's own VLLMError, a chat template that refuses
a conversation, a bad input) is an EngineError, and the stage retries the batch, then
fails it alone. A dead engine (EngineDeadError) cannot serve another batch: the worker
ends with its child processes (vLLM's engine core holds the GPU memory) and Ray
restarts it; the stage's attempt guard quarantines a batch that keeps killing workers.

Loading: thresher's own deadline (`timeout_s`, 900 s) ends a load that hangs, and
vLLM's engine-ready wait (VLLM_ENGINE_READY_TIMEOUT_S, 600 s in vLLM 0.33.0's
vllm/envs.py, read once when vllm/v1/engine/core_client.py is imported) is set above it
before vllm is imported, so the two do not race. Ray restarts an actor whose load was
ended without limit, so the loads of one model by one Ray job on one node are
counted: after LOAD_TRIES the constructor raises, and the run stops with that message.

Sampling: no per-request seed. vLLM 0.33.0 samples the requests that carry their own
seed one by one, each with its own generator (vllm/v1/sample/ops/topk_topp_sampler.py,
random_sample: "This can be slow because we handle each request one by one"), and
requests that share a seed draw the same noise. The engine is seeded once instead.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

from thresher.models.llm import EngineError, Generation, Sampling, fit_conversation
from thresher.models.llm.watchdog import deadline, end_worker

# The GPU memory vLLM may take on a GPU the worker has to itself; a worker with a share
# of a GPU (num_gpus: 0.5) takes that share of it, so that its neighbours can start.
GPU_MEMORY_FRACTION = 0.9
LOAD_TRIES = 3  # loads of one model by one Ray job on one node before the run stops
READY_MARGIN_S = 120  # vLLM's engine-ready wait, above thresher's load deadline


# What this process is to the run, as the engine tells it (pipeline/engine/ray_llm.py
# place_worker, in each worker): the share of a GPU Ray gave it and the run's job id.
# Outside a run: a GPU of its own, job "local".
PLACE = {"gpu_share": 1.0, "job": "local"}


def gpu_share() -> float:
    """The GPUs Ray gave this worker (0.5 for `num_gpus: 0.5`); 1 outside Ray."""
    return float(PLACE["gpu_share"])


class VLLMEngine:
    def __init__(self, model: str | Path, max_model_len: int = 4096,
                 gpu_memory_utilization: float | None = None, dtype: str = "auto",
                 batch_size: int = 256, max_input_tokens: int | None = None,
                 timeout_s: float | None = 900, tokenizer: str | None = None,
                 enforce_eager: bool = False, seed: int = 0, **engine_args):
        os.environ.setdefault("VLLM_ENGINE_READY_TIMEOUT_S",
                              str(int(timeout_s or 600) + READY_MARGIN_S))
        try:
            from vllm import LLM
        except ImportError as err:
            raise ImportError("the vllm engine needs vllm: pip install -c constraints-gpu.txt "
                              "'thresher[gpu]' on a machine with a GPU (or use engine: "
                              "transformers)") from err
        self.name = Path(model).name
        # Explicit max_model_len: vLLM otherwise sizes the KV cache for the model's
        # full context (32k for Qwen2) and may not fit next to other actors.
        self.max_model_len = max_model_len
        self.max_input_tokens = max_input_tokens or max_model_len - 64
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        if gpu_memory_utilization is None:
            gpu_memory_utilization = round(GPU_MEMORY_FRACTION * gpu_share(), 3)
        self.gpu_memory_utilization = gpu_memory_utilization
        tries = _count_load(str(model))
        if tries > LOAD_TRIES:
            raise EngineError(
                f"loading {self.name} in vLLM failed {LOAD_TRIES} times on this node (each "
                f"ended after {timeout_s:g} s or by an error): see the worker logs; a first "
                "load compiles kernels, so keep VLLM_CACHE_ROOT on a volume, or raise "
                "timeout_s")
        with deadline(timeout_s, f"loading {self.name} in vLLM"):
            self.llm = LLM(model=str(model), tokenizer=tokenizer, max_model_len=max_model_len,
                           gpu_memory_utilization=gpu_memory_utilization, dtype=dtype,
                           enforce_eager=enforce_eager, seed=seed, **engine_args)
        _count_load(str(model), reset=True)

    @property
    def text_tokenizer(self):
        return self.llm.get_tokenizer()

    def generate(self, conversations: list[list[dict]], sampling: Sampling = Sampling()
                 ) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.exceptions import VLLMError
        from vllm.v1.engine.exceptions import EngineDeadError

        # No truncate_prompt_tokens (gone from SamplingParams since vLLM 0.17, and it
        # cut the template): the document is cut to fit before the call. No seed: see
        # the module's docstring.
        params = SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p,
                                max_tokens=sampling.max_new_tokens,
                                stop_token_ids=list(sampling.stop_token_ids) or None)
        try:
            tokenizer = self.llm.get_tokenizer()
            fitted = [fit_conversation(c, tokenizer, self.max_input_tokens)
                      for c in conversations]
        except Exception as err:  # a template that refuses the conversation, a bad input
            raise EngineError(f"vLLM could not render a batch of {len(conversations)}: "
                              f"{type(err).__name__}: {err}") from err
        out: list[Generation] = []
        for start in range(0, len(conversations), self.batch_size):
            chunk = [conv for conv, _, _, _ in fitted[start:start + self.batch_size]]
            cut = [was for _, _, _, was in fitted[start:start + self.batch_size]]
            started = time.perf_counter()
            try:
                with deadline(self.timeout_s, f"vLLM generating a batch of {len(chunk)}"):
                    results = self.llm.chat(chunk, params, use_tqdm=False)
            except EngineDeadError as err:
                end_worker(f"vLLM's engine died: {err}")
            except (VLLMError, Exception) as err:  # any error fails the batch, not its rows
                raise EngineError(f"vLLM failed on a batch of {len(chunk)}: "
                                  f"{type(err).__name__}: {err}") from err
            seconds = time.perf_counter() - started
            for result, was_cut in zip(results, cut):
                completion = result.outputs[0]
                out.append(Generation(
                    text=completion.text, prompt_tokens=len(result.prompt_token_ids or []),
                    completion_tokens=len(completion.token_ids),
                    truncated_prompt=was_cut, seconds=seconds,
                    truncated_output=completion.finish_reason == "length"))
        return out


def _count_load(model: str, reset: bool = False) -> int:
    """This load's number among the loads of `model` by this Ray job on this node (a
    file in the node's temp folder, since a restarted actor is a new process); reset
    after a load that finished."""
    name = hashlib.sha1(f"{PLACE['job']}:{model}".encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / "thresher-loads" / name
    if reset:
        path.unlink(missing_ok=True)
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    tries = (int(path.read_text() or 0) if path.exists() else 0) + 1
    path.write_text(str(tries))
    return tries
