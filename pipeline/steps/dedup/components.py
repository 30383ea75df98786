"""Phase 3, components: the connected components of the candidate edges, each
labelled by its smallest uid.

Large-star/small-star (Kiveris et al. 2014, "Connected Components in MapReduce and
Beyond"): each round is two shuffles by node, and the number of rounds grows with
the logarithm of the graph's size, not with its longest path. Large-star links every
larger neighbour of a node to the smallest node of its neighbourhood; small-star
links a node and its smaller neighbours to the smallest of them. The graph stops
changing when it is a set of stars, each centred on its component's smallest node.
Once the edges left fit one worker (`finish_below`), one task finishes them with
scipy. The same numpy functions run inside a bucket and over a whole graph, so the
tests check them on many small graphs against a union-find.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

from thresher.pipeline.steps.dedup.common import (EDGE_SCHEMA, SMALL_SHUFFLE_ROWS, bucket, col,
                                                  on_tasks)

log = logging.getLogger(__name__)

FINISH_BELOW = 4_000_000  # edges that one worker finishes (about 64 MB of pairs)
SLOW_ROUNDS = 40  # rounds after which the run says that the graph is slow to settle
LABEL_SCHEMA = pa.schema([("bucket", pa.int64()), ("uid", pa.int64()), ("label", pa.int64())])
STAR_SCHEMA = pa.schema([*EDGE_SCHEMA, ("unsettled", pa.int64())])


def large_star(node: np.ndarray, nbr: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """`node`, `nbr`: every edge in both directions. Returns the new edges (a > b) and
    how many nodes are not yet a star's leaf or centre (a smaller neighbour and a
    degree above 1): 0 means the graph was already a set of stars."""
    if not len(node):
        return node, nbr, 0
    order = np.lexsort((nbr, node))
    node, nbr = node[order], nbr[order]
    starts = np.flatnonzero(np.r_[True, node[1:] != node[:-1]])
    degree = np.diff(np.r_[starts, len(node)])
    smallest = np.minimum(node[starts], nbr[starts])  # sorted: nbr[starts] is the min
    unsettled = int(np.count_nonzero((nbr[starts] < node[starts]) & (degree > 1)))
    larger = nbr > node
    return nbr[larger], np.repeat(smallest, degree)[larger], unsettled


def small_star(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`a` > `b` for every edge, grouped by `a`: a node and its smaller neighbours all
    link to the smallest of them."""
    if not len(a):
        return a, b
    order = np.lexsort((b, a))
    a, b = a[order], b[order]
    starts = np.flatnonzero(np.r_[True, a[1:] != a[:-1]])
    degree = np.diff(np.r_[starts, len(a)])
    smallest = np.repeat(b[starts], degree)
    keep = b != smallest
    return np.concatenate([b[keep], a[starts]]), np.concatenate([smallest[keep], b[starts]])


def star_labels(node: np.ndarray, nbr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each node of a set of stars (edges in both directions) and its smallest
    neighbour or itself: its component's label."""
    if not len(node):
        return node, nbr
    order = np.lexsort((nbr, node))
    node, nbr = node[order], nbr[order]
    starts = np.flatnonzero(np.r_[True, node[1:] != node[:-1]])
    return node[starts], np.minimum(node[starts], nbr[starts])


def local_labels(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every node of the edges and the smallest node of its component, on one worker."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nodes, index = np.unique(np.concatenate([a, b]), return_inverse=True)
    index = index.reshape(2, -1)
    graph = coo_matrix((np.ones(index.shape[1], np.int8), (index[0], index[1])),
                       shape=(len(nodes), len(nodes)))
    _, component = connected_components(graph, directed=False)
    lowest = np.full(component.max() + 1 if len(component) else 0, np.iinfo(np.int64).max)
    np.minimum.at(lowest, component, nodes)
    return nodes, lowest[component]


def components(edges, *, buckets: int, partitions: int, finish_below: int = FINISH_BELOW):
    """(labels dataset of (bucket of uid, uid, label), {rounds, edges per round}).
    `edges` is a materialized dataset of EDGE_SCHEMA rows."""
    count = edges.count()
    stats = {"rounds": 0, "edges": [count]}
    if count <= SMALL_SHUFFLE_ROWS:
        edges = on_tasks(edges)
    return _rounds(edges, count, stats, buckets, partitions, finish_below)


def _rounds(edges, count: int, stats: dict, buckets: int, partitions: int, finish_below: int):
    while count > finish_below:
        starred = _both_ways(edges, buckets).groupby("bucket", num_partitions=partitions) \
            .map_groups(_large_star_group, batch_format="pyarrow",
                        fn_kwargs={"buckets": buckets}).materialize()
        if not _unsettled(starred):  # the edges were stars already
            return _labels_of_stars(edges, buckets, partitions), stats
        edges = starred.filter(expr=col("a") >= 0).drop_columns(["unsettled"]) \
            .groupby("bucket", num_partitions=partitions) \
            .map_groups(_small_star_group, batch_format="pyarrow",
                        fn_kwargs={"buckets": buckets}).materialize()
        count = edges.count()
        stats["rounds"] += 1
        stats["edges"].append(count)
        log.info("dedup: components round %d: %s edges left", stats["rounds"], f"{count:,}")
        if stats["rounds"] >= SLOW_ROUNDS:
            log.warning("dedup: the components have not settled after %d rounds (%s edges "
                        "left); going on", stats["rounds"], f"{count:,}")
    stats["finished_on_one_worker"] = count
    labels = edges.repartition(1).map_batches(
        _local_group, batch_size=None, batch_format="pyarrow", fn_kwargs={"buckets": buckets})
    return labels.materialize(), stats


def _unsettled(starred) -> int:
    """The nodes not yet in a star, from the one count row of each bucket (a few rows
    a partition: a Ray Data aggregate costs seconds more here)."""
    counts = starred.filter(expr=col("a") < 0).select_columns(["unsettled"])
    return sum(int(pa.compute.sum(batch.column("unsettled")).as_py() or 0)
               for batch in counts.iter_batches(batch_format="pyarrow", batch_size=None))


def _both_ways(edges, buckets: int):
    def flip(batch: pa.Table) -> pa.Table:
        a, b = batch.column("a").to_numpy(), batch.column("b").to_numpy()
        node, nbr = np.concatenate([a, b]), np.concatenate([b, a])
        return pa.table({"bucket": bucket(node, buckets), "a": node, "b": nbr},
                        schema=EDGE_SCHEMA)
    return edges.map_batches(flip, batch_format="pyarrow")


def _large_star_group(group: pa.Table, *, buckets: int) -> pa.Table:
    a, b, unsettled = large_star(group.column("a").to_numpy(), group.column("b").to_numpy())
    pairs = np.unique(np.stack([a, b], 1), axis=0) if len(a) else np.zeros((0, 2), np.int64)
    # One row that carries the bucket's count (a = -1), dropped before small-star.
    a = np.r_[pairs[:, 0], -1].astype(np.int64)
    b = np.r_[pairs[:, 1], -1].astype(np.int64)
    flag = np.zeros(len(a), np.int64)
    flag[-1] = unsettled
    return pa.table({"bucket": bucket(a, buckets), "a": a, "b": b, "unsettled": flag},
                    schema=STAR_SCHEMA)


def _small_star_group(group: pa.Table, *, buckets: int) -> pa.Table:
    from thresher.pipeline.steps.dedup.candidates import edge_table

    a, b = small_star(group.column("a").to_numpy(), group.column("b").to_numpy())
    return edge_table(a, b, buckets)


def _labels_of_stars(edges, buckets: int, partitions: int):
    def labels(group: pa.Table) -> pa.Table:
        uid, label = star_labels(group.column("a").to_numpy(), group.column("b").to_numpy())
        return _label_table(uid, label, buckets)
    return _both_ways(edges, buckets).groupby("bucket", num_partitions=partitions) \
        .map_groups(labels, batch_format="pyarrow").materialize()


def _local_group(batch: pa.Table, *, buckets: int) -> pa.Table:
    if not batch.num_rows:
        return LABEL_SCHEMA.empty_table()
    uid, label = local_labels(batch.column("a").to_numpy(), batch.column("b").to_numpy())
    return _label_table(uid, label, buckets)


def _label_table(uid: np.ndarray, label: np.ndarray, buckets: int) -> pa.Table:
    return pa.table({"bucket": bucket(uid, buckets), "uid": uid.astype(np.int64),
                     "label": label.astype(np.int64)}, schema=LABEL_SCHEMA)
