"""Sorted runs over a 64-bit key space: how the key index and the URL index are kept,
so that a run shuffles only its new rows and never the index.

Keys are uniform hashes, so the top `level` bits of a key name its range. A run
picks its level from its own size (more ranges for a bigger crawl or cluster) and
shuffles its new rows by range; each range's task reads only the index files that
overlap its range, whatever level wrote them, keeps the rows whose key is among its
new keys, and writes its new rows as one sorted file:

    OUT/dedup/<index>/L<level>/<range>/<run>[.<part>].parquet

Rows of shards that are no longer done (changed since, or left by a crashed run) are
skipped by every read, and dropped when a range with COMPACT_AT files or more is
compacted into one `<run>.base.parquet` by the task that reads it anyway. A retried
task reads the base it wrote, so compaction is safe to repeat. A row that changes
(a URL decision) is written again with its run id, and the latest run's row wins,
whatever file or level holds it.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from thresher.pipeline.io.storage import Store

COMPACT_AT = 8  # index files in one range before they are merged into one


def level_for(buckets: int) -> int:
    """The level (bits of key) that gives at least `buckets` ranges."""
    return max(1, math.ceil(math.log2(max(2, buckets))))


def range_of(keys: np.ndarray, level: int) -> np.ndarray:
    return (np.asarray(keys).astype(np.uint64) >> np.uint64(64 - level)).astype(np.int64)


def folder(root: str, level: int, at: int) -> str:
    return f"{root}/L{level:02d}/{at:0{(level + 3) // 4}x}"


def levels(store: Store, root: str) -> list[int]:
    """The levels that earlier runs wrote at (listed once per run, on the driver)."""
    infos = store.fs.get_file_info(pafs.FileSelector(store.path(root), allow_not_found=True))
    return sorted(int(i.base_name[1:]) for i in infos
                  if i.type == pafs.FileType.Directory and i.base_name.startswith("L"))


def overlapping(store: Store, root: str, level: int, at: int, written: list[int]) -> list[str]:
    """The index files whose ranges overlap range `at` of `level`."""
    files = []
    for other in written:
        if other <= level:
            files += store.files(folder(root, other, at >> (level - other)), "*.parquet")
            continue
        shift = other - level
        for sub in range(at << shift, (at + 1) << shift):
            files += store.files(folder(root, other, sub), "*.parquet")
    return files


def read(store: Store, files: list[str], column: str, wanted: np.ndarray | None,
         live: np.ndarray, level: int, at: int) -> pa.Table | None:
    """The rows of `files` in range `at` of `level` whose shard is live (its number in
    sorted `live`) and, when `wanted` (sorted) is given, whose key is in it."""
    tables = []
    for path in files:
        table = store.read_table(path)
        key = table.column(column).to_numpy()
        number = table.column("uid").to_numpy() >> np.int64(32)
        mask = within(number, live) & (range_of(key, level) == at)
        if wanted is not None:
            mask &= within(key, wanted)
        if mask.any():
            tables.append(table.filter(pa.array(mask)))
    return pa.concat_tables(tables) if tables else None


def within(values: np.ndarray, sorted_values: np.ndarray) -> np.ndarray:
    if not len(sorted_values):
        return np.zeros(len(values), bool)
    at = np.minimum(np.searchsorted(sorted_values, values), len(sorted_values) - 1)
    return sorted_values[at] == values


def latest(table: pa.Table, unique_by: list[str], version: str | None = None) -> pa.Table:
    """One row per `unique_by` value: the one of the latest `version` (a run id)."""
    cols = [table.column(c).to_numpy() for c in unique_by]
    rank = np.zeros(table.num_rows, np.int64)
    if version is not None:
        _, rank = np.unique(np.asarray(table.column(version).to_pylist(), dtype=str),
                            return_inverse=True)
    order = np.lexsort((-rank.reshape(-1), *reversed(cols)))
    firsts = np.ones(len(order), bool)
    if len(order):
        same = np.ones(len(order) - 1, bool)
        for c in cols:
            s = c[order]
            same &= s[1:] == s[:-1]
        firsts[1:] = ~same
    return table.take(order[firsts])


def write(store: Store, root: str, level: int, at: int, name: str, table: pa.Table,
          column: str) -> None:
    if table.num_rows:
        store.write_table(table.sort_by(column), store.path(folder(root, level, at),
                                                            f"{name}.parquet"))


def compact(store: Store, root: str, level: int, at: int, run_id: str, column: str,
            unique_by: list[str], live: np.ndarray, version: str | None = None) -> None:
    """Merge a range's own files into one base file when they are COMPACT_AT or more:
    rows of shards no longer done are dropped, repeated rows kept once (the latest)."""
    files = [f for f in store.files(folder(root, level, at), "*.parquet")
             if not f.endswith(f"/{run_id}.parquet")]
    if len(files) < COMPACT_AT:
        return
    table = read(store, files, column, None, live, level, at)
    base = f"{run_id}.base"
    if table is not None:
        write(store, root, level, at, base, latest(table, unique_by, version), column)
    for path in files:
        if not path.endswith(f"/{base}.parquet"):
            store.delete(path)
