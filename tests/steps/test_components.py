"""Connected components by large-star/small-star (pipeline/steps/dedup/components.py):
the numpy steps on many random graphs against a union-find, and a long chain through
Ray Data's shuffles in a logarithmic number of rounds."""

import numpy as np
import pyarrow as pa
import pytest

from thresher.pipeline.steps.dedup.candidates import edge_table
from thresher.pipeline.steps.dedup.components import (components, large_star, local_labels,
                                                      small_star, star_labels)


def union_find(a, b) -> dict[int, int]:
    parent: dict[int, int] = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x
    for x, y in zip(a.tolist(), b.tolist()):
        rx, ry = find(x), find(y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)
    return {x: find(x) for x in list(parent)}


def star_rounds(a, b) -> tuple[dict[int, int], int]:
    """The rounds as the Ray path runs them, on one array instead of in buckets."""
    rounds = 0
    edges = edge_table(a, b, 1)
    while True:
        hi, lo = edges.column("a").to_numpy(), edges.column("b").to_numpy()
        node, nbr = np.r_[hi, lo], np.r_[lo, hi]
        la, lb, unsettled = large_star(node, nbr)
        if not unsettled:
            return dict(zip(*(x.tolist() for x in star_labels(node, nbr)))), rounds
        edges = edge_table(*small_star(*(c.to_numpy() for c in edge_table(la, lb, 1)
                                         .select(["a", "b"]).columns)), 1)
        rounds += 1


def test_random_graphs_give_the_components_of_a_union_find():
    rng = np.random.default_rng(0)
    for _ in range(1000):
        n, m = int(rng.integers(2, 60)), int(rng.integers(1, 90))
        a, b = rng.integers(0, n, m), rng.integers(0, n, m)
        a, b = a[a != b], b[a != b]
        if not len(a):
            continue
        expected = union_find(a, b)
        labels, rounds = star_rounds(a, b)
        assert labels == expected and rounds <= 8
        assert dict(zip(*(x.tolist() for x in local_labels(a, b)))) == expected


@pytest.mark.usefixtures("ray_cluster")
def test_a_chain_of_10000_settles_in_few_rounds_on_ray():
    import ray

    order = np.random.default_rng(1).permutation(10_000).astype(np.int64) + (7 << 32)
    edges = ray.data.from_arrow(edge_table(order[:-1], order[1:], 8)).materialize()
    labels, stats = components(edges, buckets=8, partitions=2, finish_below=0)
    table = pa.concat_tables(labels.iter_batches(batch_format="pyarrow", batch_size=None))
    assert table.num_rows == 10_000
    assert set(table.column("label").to_pylist()) == {int(order.min())}
    assert 1 <= stats["rounds"] <= 30, stats
    assert stats["edges"][0] == 9_999
