"""Input shards: find them, fingerprint them, and check them before any work.

Everything here reads only file sizes and Parquet footers, so planning a run over a
crawl costs one small read per shard, not a pass over the data.
"""

from __future__ import annotations

import glob
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

TEXT_TYPES = (pa.string(), pa.large_string(), pa.binary(), pa.large_binary())
# Hashing the tail covers a Parquet footer (schema, row groups, column statistics and
# offsets), which changes with the content, without reading a multi-GB shard.
_TAIL_BYTES = 1 << 16


class InputError(ValueError):
    """An input path the user gave cannot be used (does not exist, matches nothing)."""


@dataclass(frozen=True)
class Shard:
    path: str
    size: int
    fingerprint: str
    num_rows: int | None  # None when the footer is unreadable
    error: str | None  # why the whole shard cannot be read, if it cannot

    @property
    def key(self) -> str:
        """Names this shard's output parts: path hash + content fingerprint."""
        return f"{path_key(self.path)}-{self.fingerprint[:8]}"


def path_key(path: str) -> str:
    return hashlib.sha1(path.encode()).hexdigest()[:12]


def expand_inputs(inputs: list[str]) -> list[str]:
    """Parquet files named by files, directories (searched recursively) or globs."""
    found: list[str] = []
    for item in inputs:
        if any(ch in item for ch in "*?["):
            matches = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not matches:
                raise InputError(f"input glob {item!r} matches no file")
            found += matches
        elif os.path.isdir(item):
            matches = sorted(glob.glob(os.path.join(item, "**", "*.parquet"), recursive=True))
            if not matches:
                raise InputError(f"input directory {item!r} holds no *.parquet file")
            found += matches
        elif os.path.isfile(item):
            found.append(item)
        else:
            raise InputError(f"input path {item!r} does not exist")
    unique = list(dict.fromkeys(os.path.abspath(p) for p in found))
    return unique


def fingerprint(path: str, size: int) -> str:
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(4))
        handle.seek(max(0, size - _TAIL_BYTES))
        digest.update(handle.read())
    return digest.hexdigest()


def inspect_shard(path: str) -> Shard:
    size = os.path.getsize(path)
    fp = fingerprint(path, size)
    try:
        meta = pq.read_metadata(path)
        schema = pq.read_schema(path)
    except Exception as err:  # pyarrow raises several types for non-Parquet bytes
        return Shard(path, size, fp, None, f"not a readable Parquet file: {_one_line(err)}")
    error = None
    if "text" not in schema.names:
        error = f"no `text` column (columns: {', '.join(schema.names) or 'none'})"
    elif schema.field("text").type not in TEXT_TYPES:
        error = f"column `text` has type {schema.field('text').type}; expected string"
    return Shard(path, size, fp, meta.num_rows, error)


def inspect_shards(paths: list[str], threads: int = 16) -> list[Shard]:
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(inspect_shard, paths))


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
