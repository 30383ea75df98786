"""The training shards tokenized for a trainer (mixture.tokenize in the config).

Each Parquet training shard (OUT/training/shard-NNNNN.parquet) becomes the same
documents, in the same order, as token ids in Megatron's or datatrove's format
(pipeline/io/tokenized.py), named after the shard: shard-NNNNN.bin/.idx or
shard-NNNNN.ds(.index, .metadata). Each document is its text's tokens followed by
the EOS id. One task per shard reads that shard only, so no text gathers on the
driver; the shards are Ray tasks when Ray runs (as in `curate`), else one after
another in this process.
"""

from __future__ import annotations

import sys
from collections import Counter

import numpy as np

from thresher.models.tokenizer import load_tokenizer
from thresher.pipeline.io.storage import Store
from thresher.pipeline.io.tokenized import files_for, token_dtype


def tokenize_shards(out: Store, names: list[str], spec: dict) -> list[dict]:
    """Per training shard name, in order: its tokenized files and token counts."""
    # Ray is imported only by the steps that start it: when it is not imported, it
    # does not run, and importing it here would cost a second for nothing.
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        task = ray.remote(num_cpus=1, max_retries=3)(tokenize_shard)
        return ray.get([task.remote(out.location, name, spec) for name in names])
    return [tokenize_shard(out.location, name, spec) for name in names]


def tokenize_shard(location: str, name: str, spec: dict) -> dict:
    """One Parquet training shard to its tokenized files (in a worker, or here)."""
    out = Store.at(location)
    table = out.read_table(out.path("training", name), columns=["text", "group"])
    tokenizer = load_tokenizer(spec["tokenizer"], spec.get("eos"))
    fmt = spec.get("format", "megatron")
    dtype = token_dtype(fmt, tokenizer.vocab_size)
    docs = [np.append(ids, tokenizer.eos_id)
            for ids in tokenizer.encode(table.column("text").to_pylist())]
    # Ids past the vocabulary would wrap around in a narrow token type, silently.
    if docs and max(int(d.max()) for d in docs) >= tokenizer.vocab_size:
        raise ValueError(f"tokenizer {spec['tokenizer']!r} gave an id beyond its "
                         f"vocabulary of {tokenizer.vocab_size}")
    files = files_for(fmt, name.removesuffix(".parquet"), docs, dtype, spec["tokenizer"])
    for file, data in files.items():  # the index last: it names data already written
        out.write_bytes(out.path("training", file), data)
    tokens = Counter()
    for group, doc in zip(table.column("group").to_pylist(), docs):
        tokens[group] += len(doc)
    return {"files": list(files), "docs": len(docs), "tokens": dict(tokens),
            "eos_id": tokenizer.eos_id, "vocab_size": tokenizer.vocab_size,
            "dtype": dtype.name}
