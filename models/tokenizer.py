"""A local tokenizer for the tokenized training shards and the token-level proxy LM.

A name is a built-in LLM (its GGUF's tokenizer, e.g. `smollm2-135m-instruct`), a
.gguf file, or a Hugging Face tokenizer folder (tokenizer.json or
tokenizer_config.json). Loaded with transformers, never downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from thresher.models.registry import BUILTIN, ModelNotFound, resolve


def tokenizer_path(name: str) -> Path:
    """The file or folder a tokenizer name stands for; ModelNotFound when there is none.
    Cheap (no loading), so the config check can call it."""
    path = Path(name).expanduser()
    if name not in BUILTIN and path.is_dir():
        if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
            raise ModelNotFound(f"tokenizer folder {name!r} has no tokenizer.json or "
                                "tokenizer_config.json: not a Hugging Face tokenizer folder")
        return path.resolve()
    if name not in BUILTIN and not path.exists():
        raise ModelNotFound(f"tokenizer {name!r} not found: give a Hugging Face tokenizer "
                            "folder, a .gguf file, or a built-in LLM name such as "
                            "smollm2-135m-instruct")
    path = resolve(name)
    if path.suffix != ".gguf":
        raise ModelNotFound(f"tokenizer {name!r} is {path.name}: a tokenizer file must be a "
                            ".gguf (for a tokenizer.json, give its folder)")
    return path


@dataclass(frozen=True)
class TextTokenizer:
    name: str  # as configured
    eos_id: int  # appended after each document
    vocab_size: int  # every id is below it
    hf: object  # the transformers tokenizer

    def encode(self, texts: list[str], batch_size: int = 1024) -> list[np.ndarray]:
        """Token ids per text (int64), without special tokens: a document is its text's
        tokens only, and the caller decides what separates documents. In batches: the
        tokenizer's per-token objects are large, the ids are small."""
        out = []
        for start in range(0, len(texts), batch_size):
            out.extend(np.asarray(ids, dtype=np.int64)
                       for ids in self._ids(texts[start:start + batch_size]))
        return out

    def _ids(self, texts: list[str]) -> list[list[int]]:
        backend = getattr(self.hf, "backend_tokenizer", None)
        if backend is not None:  # the Rust tokenizer, batched on its own threads
            return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
        return self.hf(texts, add_special_tokens=False)["input_ids"]


@lru_cache(maxsize=4)  # once per process: a GGUF's tokenizer takes seconds to read
def load_tokenizer(name: str, eos: str | None = None) -> TextTokenizer:
    """The tokenizer `name`; `eos` (a token's text) overrides its EOS token."""
    from transformers import AutoTokenizer

    path = tokenizer_path(name)
    folder, extra = (path.parent, {"gguf_file": path.name}) if path.is_file() else (path, {})
    hf = AutoTokenizer.from_pretrained(folder, local_files_only=True, **extra)
    if eos is None:
        eos_id = hf.eos_token_id
        if eos_id is None:
            raise ValueError(f"tokenizer {name!r} has no EOS token; name one (eos: ...)")
    else:
        eos_id = hf.convert_tokens_to_ids(eos)
        # An unknown token maps to the unknown id: check the way back.
        if eos_id is None or hf.convert_ids_to_tokens(eos_id) != eos:
            raise ValueError(f"tokenizer {name!r} has no token {eos!r} to end documents with")
    return TextTokenizer(name=name, eos_id=int(eos_id), vocab_size=len(hf), hf=hf)
