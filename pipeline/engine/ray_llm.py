"""Everything Ray does for LLM stages: the runner that holds a stage's model in an actor
with the resources it asks (install(): an LLM teacher during calibration), and Ray
Data LLM processors (Ray 2.60's `ray.data.llm`) for a set of conversations:
vLLM's async engine in GPU actors (`engine: vllm`), or an OpenAI-compatible server
(`engine: openai`: `vllm serve`, or `thresher models serve-llm`).

    results = generate_rows(spec, conversations, sampling)  # one dict per conversation

The processor keeps several batches in each vLLM engine at once (no idle GPU while a
batch's slowest prompts finish), sizes tensor/pipeline parallel replicas, and restarts
an engine actor that dies. What thresher adds: documents are cut to fit before they
reach it (fit_conversation, never the template), sampling is explicit, and a failed
row comes back as an error rather than failing the run.

The prompts reach vLLM as token ids, rendered and tokenized here: Ray's own
chat-template, tokenize and detokenize stages are off. Those stages are CPU actors
that load the tokenizer from `model_source` on whatever node Ray places them, and on
KubeRay the CPU workers do not mount the models volume, so they could not start and
every row failed. vLLM detokenizes the answer itself (SamplingParams.detokenize).

Each result: text, prompt_tokens, completion_tokens, truncated_output (the answer
stopped at max_new_tokens) and error ("" when none). Ray's vLLM stage does not pass
vLLM's finish_reason on, so truncation is read from the token count and the last
token there.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager

from thresher.models.llm import Sampling
from thresher.stages import base

log = logging.getLogger(__name__)

ROW = "thresher_row"  # each request's position, to put the answers back in order
ERROR = "__inference_error__"  # what ray.data.llm names a failed row's error


def vllm_config(spec: dict, gpus: float):
    """The vLLMEngineProcessorConfig for an engine spec ({"engine": "vllm", "model", ...
    vLLM engine args}): one engine replica per `tensor_parallel_size x
    pipeline_parallel_size` GPUs, as many replicas as the cluster's GPUs hold unless
    the spec says `concurrency`."""
    from ray.data.llm import vLLMEngineProcessorConfig

    from thresher.models.registry import resolve_model

    options = dict(spec)
    options.pop("engine", None)
    model = str(resolve_model(options.pop("model")))
    batch_size = int(options.pop("batch_size", 64))
    per_replica = int(options.get("tensor_parallel_size", 1)) * int(
        options.get("pipeline_parallel_size", 1))
    concurrency = int(options.pop("concurrency", 0) or max(1, int(gpus // per_replica)))
    options.pop("max_input_tokens", None)  # the cut happens before (fit_conversation)
    options.pop("timeout_s", None)
    engine_kwargs = {"max_model_len": 4096, "gpu_memory_utilization": 0.9, **options}
    return vLLMEngineProcessorConfig(
        model_source=model, engine_kwargs=engine_kwargs, batch_size=batch_size,
        concurrency=concurrency, should_continue_on_error=True,
        chat_template_stage=False, tokenize_stage=False, detokenize_stage=False)


def http_config(spec: dict):
    """The HttpRequestProcessorConfig for an `openai` engine spec (its server's address,
    retries, rate): requests to
    the server's chat-completions route, retried with backoff (429, 5xx, timeouts)."""
    from ray.data.llm import HttpRequestProcessorConfig

    base = spec["url"].rstrip("/")
    base = base if base.endswith("/v1") else base + "/v1"
    headers = {}
    key = os.environ.get(spec.get("api_key_env", "OPENAI_API_KEY"))
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return HttpRequestProcessorConfig(
        url=base + "/chat/completions", headers=headers or None,
        qps=spec.get("qps"), max_retries=int(spec.get("retries", 3)),
        base_retry_wait_time_in_s=0.5, batch_size=int(spec.get("batch_size", 16)),
        concurrency=int(spec.get("concurrency", 1)))


def build(spec: dict, sampling: Sampling, model_name: str | None = None, gpus: float = 0):
    """The processor: rows {ROW, "conversation"} in (and "tokens", the prompt's ids, for
    vLLM), result rows out."""
    from ray.data.llm import build_processor

    params = {"temperature": sampling.temperature, "top_p": sampling.top_p,
              "max_tokens": sampling.max_new_tokens}  # no seed: see vllm_engine.py
    if sampling.stop_token_ids:
        params["stop_token_ids"] = list(sampling.stop_token_ids)
    if spec["engine"] == "vllm":
        def to_request(row):
            return {ROW: row[ROW], "tokenized_prompt": list(row["tokens"]),
                    "sampling_params": params}

        def to_result(row):
            # Ray's stage does not pass finish_reason on: an answer that reached the
            # limit without ending on an end-of-turn token was cut.
            made = int(row.get("num_generated_tokens") or 0)
            tokens = list(row.get("generated_tokens") or [])
            ended = bool(tokens) and int(tokens[-1]) in sampling.stop_token_ids
            return {ROW: row[ROW], "text": row.get("generated_text") or "",
                    "prompt_tokens": int(row.get("num_input_tokens") or 0),
                    "completion_tokens": made,
                    "truncated_output": made >= sampling.max_new_tokens and not ended,
                    ERROR: ""}

        return build_processor(vllm_config(spec, gpus), preprocess=to_request,
                               postprocess=to_result)
    if spec["engine"] != "openai":
        raise ValueError(f"no ray.data.llm processor for engine {spec['engine']!r}")
    from thresher.models.llm.openai_engine import vllm_server_fields

    body = {k: v for k, v in params.items() if k != "stop_token_ids"}
    if spec.get("vllm_sampling", True):  # see OpenAIEngine: the offline engines' greedy
        body.update(vllm_server_fields(spec.get("max_input_tokens")))
        body.update({k: v for k, v in params.items() if k == "stop_token_ids"})

    def to_payload(row):
        return {ROW: row[ROW], "payload": {"model": model_name, "messages": row["conversation"],
                                           **body}}

    return build_processor(http_config(spec), preprocess=to_payload,
                           postprocess=lambda row: _from_http(row, sampling))


def _from_http(row: dict, sampling: Sampling) -> dict:
    reply = row.get("http_response") or {}
    try:
        choice = reply["choices"][0]
        text = choice["message"]["content"] or ""
    except (KeyError, IndexError, TypeError):
        return {ROW: row[ROW], "text": "", "prompt_tokens": 0, "completion_tokens": 0,
                "truncated_output": False, ERROR: f"malformed chat completion: {str(reply)[:200]}"}
    usage = reply.get("usage") or {}
    made = int(usage.get("completion_tokens", 0))
    return {ROW: row[ROW], "text": text, "prompt_tokens": int(usage.get("prompt_tokens", 0)),
            "completion_tokens": made, ERROR: "",
            "truncated_output": choice.get("finish_reason") == "length"
            or made >= sampling.max_new_tokens}


def generate_rows(spec: dict, conversations: list[list[dict]], sampling: Sampling,
                  model_name: str | None = None, tokenizer=None) -> list[dict]:
    """Run the conversations through the spec's processor on the Ray cluster; one
    result per conversation, in order. vLLM needs the model's `tokenizer` here (the
    prompts go as token ids). When the processor run itself fails (a server that
    stays down past the retries), the rows that did not come back get that error,
    and the caller decides (a teacher marks them failed)."""
    import ray

    from thresher.models.llm import prompt_ids

    rows = [{ROW: i, "conversation": c} for i, c in enumerate(conversations)]
    if spec["engine"] == "vllm":
        if tokenizer is None:
            raise ValueError(f"the vLLM processor renders prompts where the run starts: "
                             f"{spec.get('model')} must be a model folder on this machine too "
                             "(mount the models volume on the head node)")
        rows = [{**row, "tokens": prompt_ids(row["conversation"], tokenizer)} for row in rows]
    results: dict[int, dict] = {}
    if rows:
        dataset = ray.data.from_items(rows)
        processor = build(spec, sampling, model_name, ray.cluster_resources().get("GPU", 0))
        try:
            for row in processor(dataset).iter_rows():
                results[int(row[ROW])] = _result(row)
        except Exception as err:  # the run failed: what came back stays
            log.warning("the %s processor failed after %d of %d rows: %s", spec["engine"],
                        len(results), len(rows), str(err).splitlines()[0][:300])
            failure = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
            for i in range(len(rows)):
                results.setdefault(i, _failed(failure))
    return [results[i] for i in range(len(rows))]


def _result(row: dict) -> dict:
    error = row.get(ERROR) or ""
    if error:  # ray.data.llm passes a failed row on as is, without postprocess
        return _failed(str(error)[:500])
    return {"text": row["text"], "prompt_tokens": row["prompt_tokens"],
            "completion_tokens": row["completion_tokens"],
            "truncated_output": bool(row["truncated_output"]), "error": ""}


def _failed(error: str) -> dict:
    """The result of a row that got no answer."""
    return {"text": "", "prompt_tokens": 0, "completion_tokens": 0, "truncated_output": False,
            "error": error}


class RayRunner(base.Runner):
    """stages.base.Runner on the Ray cluster this driver is connected to."""

    cluster = True

    def cpus(self) -> float:
        import ray

        return float(ray.cluster_resources().get("CPU", 1))

    @contextmanager
    def actor(self, cls, args: tuple, num_cpus: float = 1, num_gpus: float = 0):
        import ray

        handle = ray.remote(cls).options(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=1,
                                         max_task_retries=1).remote(*args)
        try:
            yield _Actor(handle)
        finally:
            ray.kill(handle)

    def generate_rows(self, spec: dict, conversations: list, sampling, model_name=None,
                      tokenizer=None) -> list[dict]:
        return generate_rows(spec, conversations, sampling, model_name, tokenizer)


class _Actor:
    def __init__(self, handle):
        self.handle = handle

    def call(self, method: str, *args):
        import ray

        return ray.get(getattr(self.handle, method).remote(*args))


def install() -> None:
    """On the driver, once connected: stages' off-batch work runs on the cluster."""
    base.use_runner(RayRunner())


def place_worker() -> None:
    """In a worker, before its stages load: tell the LLM engines the share of a GPU Ray
    gave this process (vLLM takes that share of the GPU's memory) and the run's job id
    (loads are counted per job and node)."""
    import ray

    from thresher.models.llm import vllm_engine

    context = ray.get_runtime_context()
    try:
        share = context.get_assigned_resources().get("GPU")
    except AssertionError:  # the driver (calibration's sample, scored in-process)
        share = None
    vllm_engine.PLACE.update(gpu_share=min(float(share), 1.0) if share else 1.0,
                             job=context.get_job_id())
