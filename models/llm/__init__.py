"""LLM engines behind one small interface, for the DataMan and WRAP stages.

    engine = load_engine({"engine": "transformers", "model": "smollm2-135m-instruct"})
    engine.generate(conversations, Sampling(...)) -> [Generation, ...]

A conversation is a list of chat messages ({"role", "content"}); each Generation has
the text, its token counts and the seconds its batch took. Backends:

- `transformers` (transformers_engine.py): CPU, or CUDA where there is no vLLM; the
  default for the embedded run and for tests.
- `vllm` (vllm_engine.py): vllm.LLM inside a GPU actor, the production path.
- `openai` (openai_engine.py): a server the user already runs (`vllm serve`, or
  `thresher models serve-llm`), over the OpenAI-compatible chat API.

Document text is data: put it in a message only through `escape_special`, so that a
document holding a chat-template marker cannot end the user turn.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0: greedy, deterministic
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0  # the transformers engine's per-batch seed; vLLM seeds its engine once
    stop_token_ids: tuple[int, ...] = ()  # ends of turn: the answer ends there, complete


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    truncated_prompt: bool = False  # the prompt was cut to fit max_input_tokens
    truncated_output: bool = False  # the answer stopped at max_new_tokens, not by itself
    seconds: float = 0.0  # wall time of the batch this generation was part of


class EngineError(RuntimeError):
    """The engine failed on a batch (crash, timeout, server error): the batch failed,
    not the documents in it."""


ENGINES = ("transformers", "vllm", "openai")

# Markers of the common chat templates, escaped even when the engine's own
# tokenizer is unknown (the HTTP backend).
COMMON_MARKERS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>",
                  "<|start_header_id|>", "<|end_header_id|>", "<|begin_of_text|>",
                  "<|user|>", "<|assistant|>", "<|system|>", "<|end|>", "<s>", "</s>",
                  "[INST]", "[/INST]", "<start_of_turn>", "<end_of_turn>")
WORD_JOINER = "\u2060"  # invisible; splits a marker so no tokenizer reads it as one


def escape_special(text: str, markers: tuple[str, ...] | list[str] = COMMON_MARKERS) -> str:
    """The text with every chat-template marker broken by an invisible character, so
    that it is read as plain characters, never as a control token."""
    for marker in sorted(set(markers), key=len, reverse=True):
        if len(marker) > 1 and marker in text:
            text = text.replace(marker, marker[0] + WORD_JOINER + marker[1:])
    return text


def special_markers(tokenizer) -> tuple[str, ...]:
    """The control-token strings of a Hugging Face tokenizer, plus the common ones."""
    if tokenizer is None:
        return COMMON_MARKERS
    added = getattr(tokenizer, "get_added_vocab", lambda: {})()
    return tuple(set(COMMON_MARKERS) | set(tokenizer.all_special_tokens) | set(added))


def end_of_turn_ids(tokenizer) -> tuple[int, ...]:
    """The token ids that end an assistant's turn: the tokenizer's end of sequence and
    the common end-of-turn markers it knows. DataMan's own inference stops on them."""
    if tokenizer is None:
        return ()
    ids = {tokenizer.eos_token_id} if getattr(tokenizer, "eos_token_id", None) is not None \
        else set()
    vocab = getattr(tokenizer, "get_vocab", dict)()
    ids |= {vocab[m] for m in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>",
                               "<end_of_turn>", "</s>") if m in vocab}
    return tuple(sorted(int(i) for i in ids))


def fold_system(conversation: list[dict]) -> list[dict]:
    """The conversation with its system turns folded into the first user turn, for the
    chat templates that refuse a system turn (Mistral's v0.1 raises on one)."""
    system = "\n\n".join(m["content"] for m in conversation if m["role"] == "system")
    rest = [m for m in conversation if m["role"] != "system"]
    if not system or not rest:
        return conversation
    first = next(i for i, m in enumerate(rest) if m["role"] == "user")
    rest[first] = {**rest[first], "content": f"{system}\n\n{rest[first]['content']}"}
    return rest


def render(conversation: list[dict], tokenizer) -> tuple[list[dict], str]:
    """(the conversation as rendered, the prompt text): the model's chat template, with
    the system turn folded into the user's where the template refuses one."""
    try:
        return conversation, tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=True)
    except Exception:
        if not any(m["role"] == "system" for m in conversation):
            raise
        folded = fold_system(conversation)
        return folded, tokenizer.apply_chat_template(folded, tokenize=False,
                                                     add_generation_prompt=True)


def prompt_ids(conversation: list[dict], tokenizer) -> list[int]:
    """The prompt's token ids as the engine should get them: rendered here, so that no
    worker of the engine needs the tokenizer or the template."""
    _, text = render(conversation, tokenizer)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def fit_conversation(conversation: list[dict], tokenizer, max_tokens: int,
                     margin: int = 8) -> tuple[list[dict], str, int, bool]:
    """The conversation with its last message's text (the document) cut in the middle
    until the whole prompt, chat template included, fits `max_tokens`: (conversation,
    prompt text, prompt tokens, whether it was cut). Cutting the prompt itself would
    lose its end, where the template opens the assistant's turn. A system turn that
    the template refuses is folded into the user's (`render`)."""
    def measure(conv):
        conv, text = render(conv, tokenizer)
        return conv, text, len(tokenizer(text, add_special_tokens=False)["input_ids"])

    conversation, prompt, n = measure(conversation)
    cut = False
    for _ in range(4):  # token counts of a cut text move a little: a few tries settle it
        if n <= max_tokens:
            return conversation, prompt, n, cut
        last = conversation[-1]
        ids = tokenizer(last["content"], add_special_tokens=False)["input_ids"]
        keep = len(ids) - (n - max_tokens) - margin
        if keep < 2:
            raise ValueError(f"the prompt's template alone takes {n - len(ids)} tokens, more "
                             f"than max_input_tokens={max_tokens}")
        head, tail = tokenizer.decode(ids[: keep // 2]), tokenizer.decode(ids[-(keep // 2):])
        conversation = [*conversation[:-1], {**last, "content": f"{head} ... {tail}"}]
        conversation, prompt, n = measure(conversation)
        cut = True
    raise ValueError(f"could not fit the prompt into max_input_tokens={max_tokens}")


def load_engine(spec: dict):
    """Build the engine a config names: {"engine": ..., "model": ..., options}."""
    options = dict(spec)
    kind = options.pop("engine", "transformers")
    if kind not in ENGINES:
        raise ValueError(f"unknown LLM engine {kind!r}; one of {ENGINES}")
    if kind == "openai":
        from thresher.models.llm.openai_engine import OpenAIEngine

        return OpenAIEngine(**options)
    from thresher.models.registry import resolve_model

    options["model"] = resolve_model(options.get("model", "smollm2-135m-instruct"))
    if kind == "vllm":
        from thresher.models.llm.vllm_engine import VLLMEngine

        return VLLMEngine(**options)
    from thresher.models.llm.transformers_engine import TransformersEngine

    return TransformersEngine(**options)


def engine_memory_estimate(spec: dict) -> int:
    """Host memory (bytes) a worker holding this engine needs. A GGUF is dequantized to
    float32 by transformers, and generation adds its buffers (about 8x a Q4 file, as
    measured with SmolLM2); a folder's weights load about as
    large as their files; vLLM and HTTP engines keep the weights off the host heap."""
    kind = spec.get("engine", "transformers")
    if kind == "openai":
        return 256 << 20
    from thresher.models.registry import resolve_model

    try:
        model = resolve_model(str(spec.get("model", "smollm2-135m-instruct")))
    except Exception:  # the config check reports a missing model, with its name
        return 1 << 30
    if model.is_file():
        size = model.stat().st_size * (8 if model.suffix == ".gguf" else 1.5)
    else:
        size = sum(f.stat().st_size for f in model.rglob("*") if f.is_file()) * 1.2
    return int(size if kind == "transformers" else 2 << 30)
