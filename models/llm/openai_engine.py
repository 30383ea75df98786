"""The HTTP backend: a server that speaks the OpenAI chat-completions API, such as
`vllm serve MODEL` that the user already runs, or `thresher models serve-llm`.

A batch is sent as concurrent requests (the server batches them itself); each
request has a timeout and is retried with backoff on connection errors, 429 and 5xx.
A request that still fails fails the whole batch with EngineError.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from thresher.models.llm import EngineError, Generation, Sampling, fit_conversation

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
# What vLLM's server (0.33) would otherwise fill from the model's generation_config;
# top_k 0 is "off" there. A server-side cut (truncate_prompt_tokens) keeps the prompt's
# end, where the assistant's turn opens: truncation_side left.
VLLM_SAMPLING = {"top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0}


def vllm_server_fields(max_input_tokens: int | None) -> dict:
    """The fields beyond OpenAI's API that a request to vLLM's server carries."""
    fields = dict(VLLM_SAMPLING)
    if max_input_tokens:  # the server's own cut, should the local one fall short
        fields.update(truncate_prompt_tokens=int(max_input_tokens), truncation_side="left")
    return fields


class OpenAIEngine:
    def __init__(self, url: str, model: str | None = None, batch_size: int = 16,
                 timeout_s: float = 120, retries: int = 3, api_key_env: str = "OPENAI_API_KEY",
                 tokenizer: str | None = None, max_input_tokens: int | None = None,
                 vllm_sampling: bool = True):
        self.base = url.rstrip("/")
        if not self.base.endswith("/v1"):
            self.base += "/v1"
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.retries = retries
        self.session = requests.Session()
        key = os.environ.get(api_key_env)
        if key:
            self.session.headers["Authorization"] = f"Bearer {key}"
        self.model = model or self._served_model()
        self.name = self.model
        self._tokenizer_path = tokenizer
        self._tokenizer = None
        # With a local tokenizer, prompts over this many tokens have their document cut
        # (fit_conversation), as the offline engines do; without one, the stages cut
        # the document by characters before it gets here.
        self.max_input_tokens = max_input_tokens
        # vLLM's server fills sampling fields a request leaves out from the model's
        # generation_config (repetition_penalty, top_k, ...): send them, so that a
        # greedy answer is the offline engines' greedy answer, and send the input
        # limit as vLLM's truncation. Off for servers that reject fields outside
        # OpenAI's API.
        self.vllm_sampling = vllm_sampling

    @property
    def text_tokenizer(self):
        """The model's tokenizer when the config names a local copy, else None (then
        document text is cut by characters, at about 4 per token)."""
        if not self._tokenizer_path:
            return None
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self._tokenizer_path,
                                                            local_files_only=True)
        return self._tokenizer

    def _served_model(self) -> str:
        reply = self._request("GET", "/models", None)
        models = [m["id"] for m in reply.get("data", [])]
        if not models:
            raise EngineError(f"{self.base}/models lists no model")
        return models[0]

    def generate(self, conversations: list[list[dict]], sampling: Sampling = Sampling()
                 ) -> list[Generation]:
        started = time.perf_counter()
        cut = [False] * len(conversations)
        if self.max_input_tokens and self.text_tokenizer is not None:
            fitted = [fit_conversation(c, self.text_tokenizer, self.max_input_tokens)
                      for c in conversations]
            conversations = [f[0] for f in fitted]
            cut = [f[3] for f in fitted]
        with ThreadPoolExecutor(max_workers=self.batch_size) as pool:
            replies = list(pool.map(lambda c: self._chat(c, sampling), conversations))
        seconds = time.perf_counter() - started
        return [Generation(text=text, prompt_tokens=p, completion_tokens=c,
                           truncated_prompt=was_cut, seconds=seconds, truncated_output=stopped)
                for (text, p, c, stopped), was_cut in zip(replies, cut)]

    def _chat(self, conversation: list[dict], sampling: Sampling) -> tuple[str, int, int, bool]:
        body = {"model": self.model, "messages": conversation,
                "temperature": sampling.temperature, "top_p": sampling.top_p,
                "max_tokens": sampling.max_new_tokens}  # no seed: see vllm_engine.py
        if self.vllm_sampling:
            body.update(vllm_server_fields(self.max_input_tokens))
            if sampling.stop_token_ids:
                body["stop_token_ids"] = list(sampling.stop_token_ids)
        reply = self._request("POST", "/chat/completions", body)
        try:
            choice = reply["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as err:
            raise EngineError(f"{self.base}: malformed chat completion: {str(reply)[:200]}") from err
        usage = reply.get("usage") or {}
        return (text, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)),
                choice.get("finish_reason") == "length")

    def _request(self, method: str, path: str, body: dict | None) -> dict:
        last = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(2 ** attempt * 0.25, 8))
            try:
                response = self.session.request(method, self.base + path, json=body,
                                                timeout=self.timeout_s)
            except requests.RequestException as err:  # refused, reset, timed out
                last = f"{type(err).__name__}: {err}"
                continue
            if response.status_code in RETRY_STATUS:
                last = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code != 200:
                raise EngineError(f"{method} {self.base + path}: HTTP {response.status_code}: "
                                  f"{response.text[:300]}")
            return response.json()
        raise EngineError(f"{method} {self.base + path} failed {self.retries + 1} times; "
                          f"last: {last}")
