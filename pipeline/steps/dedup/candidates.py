"""Phase 2, candidates: key rows grouped by a hash bucket of the key (one Ray Data
shuffle). Documents that share a content key, one of them new, are candidates: each
member of such a key gets an edge to the key's first member. An earlier run's member
also gets an edge to the document its cluster kept, so the graph knows whether that
document is still there.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from thresher.pipeline.steps.dedup.common import EDGE_SCHEMA, NONE, bucket


def candidates(group: pa.Table, *, buckets: int) -> pa.Table:
    """The edges of one bucket of keys, each once, as (a, b) with a > b."""
    key = group.column("key").to_numpy()
    uid = group.column("uid").to_numpy()
    new = group.column("new").to_numpy(zero_copy_only=False)
    rep = group.column("rep").to_numpy()
    order = np.lexsort((uid, key))
    key, uid, new, rep = key[order], uid[order], new[order], rep[order]
    if not len(key):
        return EDGE_SCHEMA.empty_table()
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    sizes = np.diff(np.r_[starts, len(key)])
    touched = (sizes >= 2) & (np.add.reduceat(new.astype(np.int64), starts) > 0)
    member = np.repeat(touched, sizes)
    first = np.repeat(uid[starts], sizes)
    linked = member & ~new & (rep != NONE) & (rep != uid)
    a = np.concatenate([uid[member & (uid != first)], uid[linked]])
    b = np.concatenate([first[member & (uid != first)], rep[linked]])
    return edge_table(a, b, buckets)


def edge_table(a: np.ndarray, b: np.ndarray, buckets: int) -> pa.Table:
    """Undirected edges, each once, as (max, min), in the bucket of the larger end."""
    hi, lo = np.maximum(a, b), np.minimum(a, b)
    pairs = np.unique(np.stack([hi, lo], 1)[hi != lo], axis=0) if len(hi) else \
        np.zeros((0, 2), np.int64)
    return pa.table({"bucket": bucket(pairs[:, 0], buckets), "a": pairs[:, 0].astype(np.int64),
                     "b": pairs[:, 1].astype(np.int64)}, schema=EDGE_SCHEMA)
