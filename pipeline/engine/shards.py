"""Input shards: find them, fingerprint them, and check them before any work.

Everything here reads only file sizes and Parquet footers, so planning a run over a
crawl costs one small read per shard, not a pass over the data.
"""

from __future__ import annotations

import hashlib
import os
from urllib.parse import unquote, urlsplit
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from thresher.pipeline.io import storage

TEXT_TYPES = (pa.string(), pa.large_string(), pa.binary(), pa.large_binary())
# Hashing the tail covers a Parquet footer (schema, row groups, column statistics and
# offsets), which changes with the content, without reading a multi-GB shard; the
# mtime catches a same-size rewrite whose footer happens to be unchanged.
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
    row_groups: tuple[int, ...] = ()  # rows in each row group

    @property
    def key(self) -> str:
        """Names this shard's output parts: path hash + content fingerprint."""
        return f"{path_key(self.path)}-{self.fingerprint[:8]}"


def path_key(path: str) -> str:
    return hashlib.sha1(path.encode()).hexdigest()[:12]


def expand_inputs(inputs: list[str], suffixes: tuple[str, ...] = (".parquet",)) -> list[str]:
    """Files named by files, folders (searched recursively for names ending in one of
    `suffixes`) or globs, as local paths or URIs (see storage.py)."""
    found: list[str] = []
    for item in inputs:
        try:
            found += _files_named_by(item, suffixes)
        except OSError as err:  # unreachable endpoint, missing bucket, no credentials
            raise InputError(f"cannot read input {item!r}: {_one_line(err)}") from None
    return list(dict.fromkeys(canonical(p) for p in found))


def canonical(path: str) -> str:
    """One name per file, whatever form named it: a local file (a path, relative or not,
    through symlinks, or a file:// URI) is its real absolute path; other URIs stay as
    given. The ledger keys shards by this name, so the same file is never curated twice."""
    if storage.is_uri(path):
        parts = urlsplit(path)
        if parts.scheme != "file":
            return path
        path = unquote(parts.path)
    return os.path.realpath(path)


def _files_named_by(item: str, suffixes: tuple[str, ...]) -> list[str]:
    if storage.has_glob(item):
        matches = storage.glob_files(item)
        if not matches:
            raise InputError(f"input glob {item!r} matches no file")
        return matches
    kind = storage.file_info(item).type
    if kind == pafs.FileType.Directory:
        matches = [p for p in storage.glob_files(storage.below(item, "**/*"))
                   if p.split("?")[0].endswith(suffixes)]
        if not matches:
            raise InputError(f"input directory {item!r} holds no "
                             f"{' or '.join('*' + s for s in suffixes)} file")
        return matches
    if kind == pafs.FileType.File:
        return [item if storage.is_uri(item) else os.path.abspath(item)]
    raise InputError(f"input path {item!r} does not exist")


def fingerprint(path: str, size: int, mtime_ns: int | None = None) -> str:
    """Size, modification time, the first 4 bytes and the last 64 KiB (the Parquet
    footer: schema, row groups, statistics, offsets). Undetected: a rewrite that keeps
    the size, the mtime (set back on purpose) and the footer."""
    digest = hashlib.sha256(f"{size}:{mtime_ns}".encode())
    with storage.open_input(path) as handle:
        digest.update(handle.read(4))
        handle.seek(max(0, size - _TAIL_BYTES))
        digest.update(handle.read())
    return digest.hexdigest()


def inspect_shard(path: str) -> Shard:
    info = storage.file_info(path)
    size = info.size
    fp = fingerprint(path, size, info.mtime_ns)
    try:
        with storage.open_input(path) as handle:
            meta = pq.read_metadata(handle)
            schema = meta.schema.to_arrow_schema()
    except Exception as err:  # pyarrow raises several types for non-Parquet bytes
        return Shard(path, size, fp, None, f"not a readable Parquet file: {_one_line(err)}")
    error = None
    if "text" not in schema.names:
        error = f"no `text` column (columns: {', '.join(schema.names) or 'none'})"
    elif schema.field("text").type not in TEXT_TYPES:
        error = f"column `text` has type {schema.field('text').type}; expected string"
    groups = tuple(meta.row_group(g).num_rows for g in range(meta.num_row_groups))
    return Shard(path, size, fp, meta.num_rows, error, groups)


def inspect_shards(paths: list[str], threads: int = 16) -> list[Shard]:
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(_inspect_or_explain, paths))


def _inspect_or_explain(path: str) -> Shard:
    """A shard that cannot even be opened (permissions, a store that went away) stops
    the run with its name: quarantining it would hide what may be a passing outage."""
    try:
        return inspect_shard(path)
    except OSError as err:
        raise InputError(f"cannot read input shard {path!r}: {_one_line(err)}") from None


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
