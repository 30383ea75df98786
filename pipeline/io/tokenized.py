"""Tokenized training data in the formats trainers read, from documents' token ids.

- megatron: Megatron-LM's indexed dataset (megatron/core/datasets/indexed_dataset.py):
  PREFIX.bin holds the tokens of every document back to back; PREFIX.idx is the
  MMIDIDX index, version 1. One sequence per document (as preprocess_data.py writes
  without --split-sentences), so the document indices are 0, 1, ..., n.
- datatrove: what datatrove's DocumentTokenizer writes and DatatroveFolderDataset
  reads: NAME.ds (the tokens), NAME.ds.index (each document's end, in tokens, uint64)
  and NAME.ds.metadata ("tokenizer|token size", the token count, the count for people).

All integers are little-endian, as both libraries read them.
"""

from __future__ import annotations

import struct

import numpy as np

FORMATS = ("megatron", "datatrove")
# Every file a format may have written for a shard, to clear a previous run's.
PATTERNS = ("shard-*.bin", "shard-*.idx", "shard-*.ds", "shard-*.ds.index",
            "shard-*.ds.metadata")

_MEGATRON_HEADER = b"MMIDIDX\x00\x00"
_MEGATRON_VERSION = 1
# Megatron's DType codes (its enum has no unsigned 32-bit type).
_MEGATRON_CODES = {"u2": 8, "i4": 4}  # uint16, int32


def token_dtype(fmt: str, vocab_size: int) -> np.dtype:
    """The token type each format picks for a vocabulary of this size."""
    if fmt == "megatron":  # DType.optimal_dtype, as preprocess_data.py calls it
        return np.dtype("<u2" if vocab_size < 65500 else "<i4")
    if fmt == "datatrove":  # PipelineStepWithTokenizer.token_size: 2 bytes up to 65536 ids
        return np.dtype("<u2" if vocab_size <= 65536 else "<u4")
    raise ValueError(f"unknown tokenized format {fmt!r}; known: {', '.join(FORMATS)}")


def files_for(fmt: str, stem: str, docs: list[np.ndarray], dtype: np.dtype,
              tokenizer: str) -> dict[str, bytes]:
    """File name -> content for documents (each already ending with its EOS)."""
    tokens = np.concatenate(docs).astype(dtype) if docs else np.zeros(0, dtype)
    lengths = np.array([len(d) for d in docs], dtype=np.int64)
    if fmt == "megatron":
        return {f"{stem}.bin": tokens.tobytes(), f"{stem}.idx": megatron_index(lengths, dtype)}
    if fmt == "datatrove":
        name = f"{stem}.ds"
        return {name: tokens.tobytes(),
                f"{name}.index": np.cumsum(lengths).astype("<u8").tobytes(),
                f"{name}.metadata": _datatrove_metadata(tokenizer, dtype, len(tokens))}
    raise ValueError(f"unknown tokenized format {fmt!r}; known: {', '.join(FORMATS)}")


def megatron_index(lengths: np.ndarray, dtype: np.dtype) -> bytes:
    """The .idx of an indexed dataset with one sequence per document: header, version,
    dtype code, sequence count, document-index count, then the sequence lengths
    (int32), their byte offsets in the .bin (int64) and the document indices (int64)."""
    pointers = (np.cumsum(lengths, dtype=np.int64) - lengths) * dtype.itemsize
    documents = np.arange(len(lengths) + 1)  # document i is sequences [i, i + 1)
    head = (_MEGATRON_HEADER + struct.pack("<Q", _MEGATRON_VERSION)
            + struct.pack("<B", _MEGATRON_CODES[f"{dtype.kind}{dtype.itemsize}"])
            + struct.pack("<Q", len(lengths)) + struct.pack("<Q", len(documents)))
    return b"".join([head, lengths.astype("<i4").tobytes(),
                     pointers.astype("<i8").tobytes(),
                     documents.astype("<i8").tobytes()])


def _datatrove_metadata(tokenizer: str, dtype: np.dtype, count: int) -> bytes:
    # DocumentTokenizerMerger reads the first line's token size; the rest is for people.
    return f"{tokenizer}|{dtype.itemsize}\n{count}\n{count / 1e6:.2f}M tokens".encode()
