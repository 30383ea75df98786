"""LLM engines behind one small interface, for the DataMan and WRAP stages.

    engine.generate(conversations, Sampling(...)) -> [Generation, ...]

A conversation is a list of chat messages ({"role", "content"}); each Generation has
the text and its token counts. Backends: `transformers` (CPU, or CUDA where there is
no vLLM) in transformers_engine.py. vLLM on GPU actors and an OpenAI-compatible HTTP
client are to come (issue 4).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0: greedy, deterministic
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    truncated_prompt: bool = False  # the prompt was cut to fit max_input_tokens
