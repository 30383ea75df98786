"""Phase 2, candidates: this run's key rows, shuffled by key range (ranged.py), each
range merged against the key index's rows for the same keys. Documents that share a
content key, one of them new, are candidates: each member of such a key gets an edge
to the key's first member. The range's new rows are then added to the index, so the
index is read by ranges and never shuffled.

Then each earlier document in an edge gets an edge to the document its cluster kept
(read from its shard's decisions, one shuffle of those documents by shard), so that
the graph knows whether that document is still there.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

from thresher.pipeline.io.storage import Store
from thresher.pipeline.steps.dedup import ranged
from thresher.pipeline.steps.dedup.common import (CLUSTERS, EDGE_SCHEMA, KEYS, NONE, bucket,
                                                  col, read_latest)

ENDS_SCHEMA = pa.schema([("number", pa.int64()), ("uid", pa.int64())])


def candidates(group: pa.Table, *, out: str, level: int, written: list[int],
               live: np.ndarray, run_id: str, buckets: int) -> pa.Table:
    """The edges of one key range, each once, as (a, b) with a > b, and a count row
    (bucket -1, b: the index rows read); the range's new rows go to the key index."""
    store = Store.at(out)
    at = int(group.column("bucket")[0].as_py())
    key = group.column("key").to_numpy()
    uid = group.column("uid").to_numpy()
    kept = group.column("store").to_numpy(zero_copy_only=False)
    ranged.compact(store, KEYS, level, at, run_id, "key", ["key", "uid"], live)
    files = [f for f in ranged.overlapping(store, KEYS, level, at, written)
             if not f.endswith(f"/{run_id}.parquet")]
    old = ranged.read(store, files, "key", np.unique(key), live, level, at)
    ranged.write(store, KEYS, level, at, run_id,
                 pa.table({"key": key[kept], "uid": uid[kept]}), "key")
    new = np.ones(len(key), bool)
    read = counted(0)
    if old is not None:
        read = counted(old.num_rows)
        pairs = np.unique(np.stack([old.column("key").to_numpy().astype(np.int64),
                                    old.column("uid").to_numpy()], 1), axis=0)
        key = np.concatenate([key, pairs[:, 0].astype(np.uint64)])
        uid = np.concatenate([uid, pairs[:, 1]])
        new = np.r_[new, np.zeros(len(pairs), bool)]
    return pa.concat_tables([edges_of(key, uid, new, buckets), read])


def counted(rows: int) -> pa.Table:
    """The row that carries a task's count of index rows read (see split_counts)."""
    return pa.table({"bucket": [-1], "a": [-1], "b": [rows]}, schema=EDGE_SCHEMA)


def split_counts(edges) -> tuple[object, int]:
    """(the edges, the index rows their tasks read), from a materialized dataset."""
    counts = edges.filter(expr=col("bucket") < 0)
    read = sum(int(pa.compute.sum(b.column("b")).as_py() or 0)
               for b in counts.iter_batches(batch_format="pyarrow", batch_size=None))
    return edges.filter(expr=col("bucket") >= 0).materialize(), read


def edges_of(key: np.ndarray, uid: np.ndarray, new: np.ndarray, buckets: int) -> pa.Table:
    """Per key with two or more documents, one of them new: an edge from each member
    to the key's first (smallest) member."""
    if not len(key):
        return EDGE_SCHEMA.empty_table()
    order = np.lexsort((uid, key))
    key, uid, new = key[order], uid[order], new[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    sizes = np.diff(np.r_[starts, len(key)])
    touched = (sizes >= 2) & (np.add.reduceat(new.astype(np.int64), starts) > 0)
    member = np.repeat(touched, sizes)
    first = np.repeat(uid[starts], sizes)
    pick = member & (uid != first)
    return edge_table(uid[pick], first[pick], buckets)


def edge_table(a: np.ndarray, b: np.ndarray, buckets: int) -> pa.Table:
    """Undirected edges, each once, as (max, min), in the bucket of the larger end."""
    hi, lo = np.maximum(a, b), np.minimum(a, b)
    pairs = np.unique(np.stack([hi, lo], 1)[hi != lo], axis=0) if len(hi) else \
        np.zeros((0, 2), np.int64)
    return pa.table({"bucket": bucket(pairs[:, 0], buckets), "a": pairs[:, 0].astype(np.int64),
                     "b": pairs[:, 1].astype(np.int64)}, schema=EDGE_SCHEMA)


def with_keepers(edges, *, out: str, folders: dict[int, str], live: np.ndarray,
                 buckets: int, partitions: int):
    """The edges, and one from each earlier document in them to its cluster's kept
    document (`folders`: the earlier shards' folders by number)."""
    ends = edges.map_batches(_old_ends, batch_format="pyarrow", fn_kwargs={"live": live})
    links = ends.groupby("number", num_partitions=partitions).map_groups(
        _keeper_edges, batch_format="pyarrow",
        fn_kwargs={"out": out, "folders": folders, "buckets": buckets})
    return edges.union(links)


def _old_ends(batch: pa.Table, *, live: np.ndarray) -> pa.Table:
    nodes = np.unique(np.concatenate([batch.column("a").to_numpy(),
                                      batch.column("b").to_numpy()]))
    number = nodes >> np.int64(32)
    mask = ranged.within(number, live)
    return pa.table({"number": number[mask], "uid": nodes[mask]}, schema=ENDS_SCHEMA)


def _keeper_edges(group: pa.Table, *, out: str, folders: dict[int, str],
                  buckets: int) -> pa.Table:
    number = int(group.column("number")[0].as_py())
    decided = read_latest(Store.at(out), f"{CLUSTERS}/{folders[number]}", ["rep"]) \
        if number in folders else None
    if decided is None or not decided.num_rows:
        return EDGE_SCHEMA.empty_table()
    uid = np.unique(group.column("uid").to_numpy())
    known = decided.column("uid").to_numpy()
    where = np.minimum(np.searchsorted(known, uid), len(known) - 1)
    found = known[where] == uid
    rep = decided.column("rep").to_numpy()[where[found]]
    uid = uid[found]
    linked = (rep != NONE) & (rep != uid)
    return edge_table(uid[linked], rep[linked], buckets)
