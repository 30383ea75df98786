"""Phase 4, decisions: which member of each cluster is kept, and how large the
cluster is across all runs.

Three shuffles, each of clustered documents only: labels go to their documents'
shards (by shard number), where each document's id, score and crawl, and for an
earlier document its cluster and size, are read; each cluster chooses (by label);
each shard's decisions are written as one file, OUT/dedup/clusters/<shard>/<run>.parquet
(by shard). Each clustered member's cluster key (rep_key) then joins the key index.

The keep rule, in order:
1. A document an earlier run decided to keep stays kept: new copies join it, and
   its own decision is written again with the cluster's new size. (Two such
   documents bridged by a new one each keep their own cluster.)
2. When the kept document left the output (its shard changed), the cluster chooses
   again: a new member if it has one (it is being written now), else an earlier
   member, which is then *promoted*: its shard is written again by this run.
3. Among those, the highest `keep_by`, then the lowest hash of the id.
With `scope: crawl`, each crawl's members of a component choose on their own, and
`size_all` (what `dup_cluster_size` shows) counts the component's clusters in every
crawl: FineWeb-2 and TxT360 upsample by it.
A cluster's size is its kept document's earlier size plus the members that join it
now, so no run reads the decisions of clusters it does not touch. Everything inside
a group is numpy over the group's arrays: a cluster of millions of copies is a few
arrays, not millions of Python objects.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.pipeline.io.storage import Store
from thresher.pipeline.steps.dedup import ranged
from thresher.pipeline.steps.dedup.common import (CLUSTERS, KEYS, NONE, SIGNATURES, bucket,
                                                  id_rank, read_folder, read_latest, rep_key)
from thresher.pipeline.steps.dedup.signatures import key_rows

ATTR_SCHEMA = pa.schema([("bucket", pa.int64()), ("uid", pa.int64()), ("label", pa.int64()),
                         ("folder", pa.string()), ("row", pa.int64()), ("id", pa.string()),
                         ("prio", pa.float64()), ("crawl", pa.string()), ("new", pa.bool_()),
                         ("rep", pa.int64()), ("size", pa.int64())])
DECISION_SCHEMA = pa.schema([("bucket", pa.int64()), ("folder", pa.string()),
                             ("row", pa.int64()), ("uid", pa.int64()), ("rep", pa.int64()),
                             ("cluster_id", pa.string()), ("keep", pa.bool_()),
                             ("size", pa.int64()), ("size_all", pa.int64()),
                             ("promoted", pa.bool_()),
                             ("violation", pa.bool_())])
NUMBERED = pa.schema([("number", pa.int64()), ("uid", pa.int64()), ("label", pa.int64())])


def decide(labels, store: Store, folders: dict[int, tuple[str, bool]], *, buckets: int,
           level: int, partitions: int, run_id: str, scope: str) -> list[dict]:
    """Write this run's decisions; returns one summary row per shard folder written,
    and the rows each shuffle moved. `folders`: every signed shard's folder, and
    whether it is new, by shard number."""
    members = labels.map_batches(_numbered, batch_format="pyarrow") \
        .groupby("number", num_partitions=partitions).map_groups(
            _attributes, batch_format="pyarrow",
            fn_kwargs={"out": store.location, "folders": folders, "buckets": buckets})
    chosen = members.groupby("bucket", num_partitions=partitions).map_groups(
        choose, batch_format="pyarrow", fn_kwargs={"buckets": buckets, "scope": scope}) \
        .materialize()
    cluster_keys = chosen.map_batches(_cluster_keys, batch_format="pyarrow",
                                      fn_kwargs={"level": level}).materialize()
    cluster_keys.groupby("bucket", num_partitions=partitions).map_groups(
            _index_cluster_keys, batch_format="pyarrow",
            fn_kwargs={"out": store.location, "level": level, "run_id": run_id}).materialize()
    written = chosen.groupby("folder", num_partitions=partitions).map_groups(
        _write, batch_format="pyarrow", fn_kwargs={"out": store.location, "run_id": run_id})
    rows = [row for batch in written.iter_batches(batch_format="pyarrow", batch_size=None)
            for row in batch.to_pylist()]
    return rows, {"labels": labels.count(), "decisions": chosen.count(),
                  "cluster_keys": cluster_keys.count()}


def _numbered(batch: pa.Table) -> pa.Table:
    uid = batch.column("uid").to_numpy()
    return pa.table({"number": uid >> np.int64(32), "uid": uid, "label": batch.column("label")},
                    schema=NUMBERED)


def _attributes(group: pa.Table, *, out: str, folders: dict, buckets: int) -> pa.Table:
    """The labelled documents of one shard with their id, row, score and crawl, and for
    an earlier shard the kept document and size of each one's cluster (itself and 1
    when it is in none). A node with no entry (a kept document that left) drops out."""
    number = int(group.column("number")[0].as_py())
    if number not in folders:
        return ATTR_SCHEMA.empty_table()
    folder, new = folders[number]
    store = Store.at(out)
    sig = read_folder(store, f"{SIGNATURES}/{folder}", ["uid", "row", "id", "prio", "crawl"])
    if sig is None or not sig.num_rows:
        return ATTR_SCHEMA.empty_table()
    known = sig.column("uid").to_numpy()
    uid = group.column("uid").to_numpy()
    where = np.minimum(np.searchsorted(known, uid), len(known) - 1)
    present = known[where] == uid
    sig, label, uid = sig.take(where[present]), group.column("label").to_numpy()[present], \
        uid[present]
    n = len(uid)
    rep, size = (np.full(n, NONE), np.ones(n, np.int64)) if new else (uid.copy(),
                                                                      np.ones(n, np.int64))
    if not new:
        clusters = read_latest(store, f"{CLUSTERS}/{folder}", ["rep", "size"])
        if clusters is not None and clusters.num_rows:
            decided = clusters.column("uid").to_numpy()
            at = np.minimum(np.searchsorted(decided, uid), len(decided) - 1)
            inside = decided[at] == uid
            rep[inside] = clusters.column("rep").to_numpy()[at[inside]]
            size[inside] = clusters.column("size").to_numpy()[at[inside]]
    return pa.table({"bucket": bucket(label, buckets), "uid": uid, "label": label,
                     "folder": [folder] * n, "row": sig.column("row"), "id": sig.column("id"),
                     "prio": sig.column("prio"), "crawl": sig.column("crawl"),
                     "new": np.full(n, new), "rep": rep, "size": size}, schema=ATTR_SCHEMA)


def _pair_ids(g: np.ndarray, values: list[np.ndarray]) -> list[np.ndarray]:
    """Ids for (group, value) pairs, equal where both are equal: for membership tests
    within a group, without Python sets."""
    stacked = np.concatenate([np.stack([np.take(g, idx), v], 1) for idx, v in values]) \
        if values else np.zeros((0, 2), np.int64)
    _, inverse = np.unique(stacked, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    out, start = [], 0
    for _, v in values:
        out.append(inverse[start:start + len(v)])
        start += len(v)
    return out


def choose(group: pa.Table, *, buckets: int, scope: str = "all") -> pa.Table:
    """Per cluster (label, and crawl with scope: crawl): the member kept. Returns the
    decisions of the new members and of the earlier members whose kept document left."""
    if not group.num_rows:
        return DECISION_SCHEMA.empty_table()
    label = group.column("label").to_numpy()
    keys = [label] if scope == "all" else [label, _crawl_codes(group.column("crawl"))]
    _, g = np.unique(np.stack(keys, 1), axis=0, return_inverse=True)
    g = g.reshape(-1)
    uid = group.column("uid").to_numpy()
    rep = group.column("rep").to_numpy()
    new = group.column("new").to_numpy(zero_copy_only=False)
    n = len(uid)
    everyone = np.arange(n)
    old = np.flatnonzero(~new)
    member_ids, old_rep_ids = _pair_ids(g, [(everyone, uid), (old, rep[old])])
    decided = np.isin(member_ids, old_rep_ids)  # an earlier run keeps it
    rep_present = np.isin(old_rep_ids, member_ids)
    tier = np.where(decided, 0, np.where(new, 1, 2))
    prio = group.column("prio").to_numpy(zero_copy_only=False).astype(np.float64)
    score = np.where(np.isnan(prio), np.inf, -prio)
    score[decided] = 0.0
    rank = id_rank(group.column("id").to_pylist())
    rank[decided] = uid[decided].astype(np.uint64)  # rule 1: the lowest earlier keeper
    order = np.lexsort((rank, score, tier, g))
    first = order[np.r_[True, g[order][1:] != g[order][:-1]]]
    keeper = np.empty(g.max() + 1, np.int64)
    keeper[g[first]] = first
    mine = keeper[g]
    # Earlier members are decided again only when their kept document left; an
    # earlier kept document that gains members has its decision written again.
    moved = np.zeros(n, bool)
    moved[old[~rep_present]] = True
    out_mask = new | moved
    groups = g.max() + 1
    joined_any = np.bincount(g[out_mask], minlength=groups) > 0
    out_mask |= (tier == 0) & (mine == everyone) & joined_any[g]
    out = np.flatnonzero(out_mask)
    keep = out == mine[out]
    joined = np.bincount(g[out], weights=~keep, minlength=groups).astype(np.int64)
    earlier = group.column("size").to_numpy()[keeper]
    size = np.where(tier[keeper] == 0, earlier, 1) + joined
    size_all = size  # with scope: crawl, the component's clusters in every crawl together
    if scope != "all":
        _, component = np.unique(label[keeper], return_inverse=True)
        size_all = np.bincount(component.reshape(-1), weights=size).astype(np.int64)[
            component.reshape(-1)]
    kept = np.bincount(g[out], weights=keep, minlength=groups).astype(np.int64)
    ids = group.column("id")
    return pa.table({
        "bucket": bucket(uid[mine[out]], buckets), "folder": group.column("folder").take(out),
        "row": group.column("row").take(out), "uid": uid[out], "rep": uid[mine[out]],
        "cluster_id": ids.take(mine[out]), "keep": keep, "size": size[g[out]],
        "size_all": size_all[g[out]], "promoted": keep & moved[out], "violation": kept[g[out]] != 1},
        schema=DECISION_SCHEMA)


def _crawl_codes(crawl: pa.ChunkedArray) -> np.ndarray:
    encoded = pc.dictionary_encode(crawl.combine_chunks())
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def _cluster_keys(batch: pa.Table, *, level: int) -> pa.Table:
    """Each clustered member's cluster key, for the key index: with it, a cluster whose
    kept document leaves comes into a later run's graph whole."""
    clustered = batch.filter(pc.greater(batch.column("size"), 1))
    return key_rows(rep_key(clustered.column("rep").to_numpy())[:, None],
                    clustered.column("uid").to_numpy(), np.ones(clustered.num_rows, bool),
                    level)


def _index_cluster_keys(group: pa.Table, *, out: str, level: int, run_id: str) -> pa.Table:
    at = int(group.column("bucket")[0].as_py())
    ranged.write(Store.at(out), KEYS, level, at, f"{run_id}.reps",
                 group.select(["key", "uid"]), "key")
    return pa.table({"rows": [group.num_rows]})


def _write(group: pa.Table, *, out: str, run_id: str) -> pa.Table:
    """One shard's decisions, as one file: OUT/dedup/clusters/<shard>/<run>.parquet."""
    store = Store.at(out)
    folder = group.column("folder")[0].as_py()
    table = group.drop_columns(["bucket", "folder", "violation"]).sort_by("row")
    store.write_table(table.drop_columns(["promoted"]),
                      store.path(CLUSTERS, folder, f"{run_id}.parquet"))
    kept = int(pc.sum(table.column("keep")).as_py() or 0)
    return pa.table({"folder": [folder], "members": [table.num_rows],
                     "removed": [table.num_rows - kept], "kept": [kept],
                     "promoted": [int(pc.sum(group.column("promoted")).as_py() or 0)],
                     "violations": [int(pc.sum(group.column("violation")).as_py() or 0)]})
