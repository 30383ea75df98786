"""Phase 4, decisions: which member of each cluster is kept, and how large the
cluster is across all runs.

Four shuffles, each of clustered documents only: labels meet the documents'
attributes (by uid), each cluster chooses (by label), sizes are counted with the
earlier runs' members (by kept document), and each shard's decisions are written
as one file, OUT/dedup/clusters/<shard>/<run>.parquet (by shard).

The keep rule, in order:
1. A document an earlier run decided to keep stays kept: new copies join it. (Two
   such documents bridged by a new one each keep their own cluster.)
2. When the kept document left the output (its shard changed), the cluster chooses
   again: a new member if it has one (it is being written now), else an earlier
   member, which is then *promoted*: its shard is written again by this run.
3. Among those, the highest `keep_by`, then the lowest hash of the id.
With `scope: crawl`, each crawl's members of a component choose on their own.
Everything inside a group is numpy over the group's arrays: a cluster of millions of
copies is a few arrays, not millions of Python objects.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.pipeline.io.storage import Store
from thresher.pipeline.steps.dedup.common import (CLUSTERS, NONE, SIGNATURES, bucket, id_rank,
                                                  read_folder, read_latest, units)

ATTR_SCHEMA = pa.schema([("bucket", pa.int64()), ("uid", pa.int64()), ("label", pa.int64()),
                         ("folder", pa.string()), ("row", pa.int64()), ("id", pa.string()),
                         ("prio", pa.float64()), ("crawl", pa.string()), ("new", pa.bool_()),
                         ("rep", pa.int64())])
DECISION_SCHEMA = pa.schema([("bucket", pa.int64()), ("folder", pa.string()),
                             ("row", pa.int64()), ("uid", pa.int64()), ("rep", pa.int64()),
                             ("cluster_id", pa.string()), ("keep", pa.bool_()),
                             ("size", pa.int64()), ("earlier", pa.bool_()),
                             ("promoted", pa.bool_()), ("violation", pa.bool_())])


def decide(labels, store: Store, folders: list[dict], old: list[dict], *, buckets: int,
           partitions: int, cpus: int, run_id: str, scope: str) -> list[dict]:
    """Write this run's decisions; returns one summary row per shard folder written."""
    attrs = units(folders, cpus).map_batches(
        _attributes, batch_size=1, batch_format="pyarrow",
        fn_kwargs={"out": store.location, "buckets": buckets})
    members = labels.map_batches(_as_attr_rows, batch_format="pyarrow").union(attrs) \
        .groupby("bucket", num_partitions=partitions).map_groups(
            _members, batch_format="pyarrow", fn_kwargs={"buckets": buckets})
    chosen = members.groupby("bucket", num_partitions=partitions).map_groups(
        choose, batch_format="pyarrow", fn_kwargs={"buckets": buckets, "scope": scope})
    if old:
        chosen = chosen.union(units(old, cpus).map_batches(
            _earlier_members, batch_size=1, batch_format="pyarrow",
            fn_kwargs={"out": store.location, "buckets": buckets}))
    sized = chosen.groupby("bucket", num_partitions=partitions).map_groups(
        sizes, batch_format="pyarrow")
    written = sized.groupby("folder", num_partitions=partitions).map_groups(
        _write, batch_format="pyarrow", fn_kwargs={"out": store.location, "run_id": run_id})
    return [row for batch in written.iter_batches(batch_format="pyarrow", batch_size=None)
            for row in batch.to_pylist()]


def _as_attr_rows(batch: pa.Table) -> pa.Table:
    n = batch.num_rows
    return pa.table({"bucket": batch.column("bucket"), "uid": batch.column("uid"),
                     "label": batch.column("label"), **{
                         f.name: pa.nulls(n, f.type) for f in ATTR_SCHEMA
                         if f.name not in ("bucket", "uid", "label")}}, schema=ATTR_SCHEMA)


def _attributes(batch: pa.Table, *, out: str, buckets: int) -> pa.Table:
    """Every signed document's id, row, score and crawl, and for earlier shards the
    kept document of its cluster (itself when it is in none)."""
    store = Store.at(out)
    (unit,) = batch.to_pylist()
    sig = read_folder(store, f"{SIGNATURES}/{unit['folder']}",
                      ["uid", "row", "id", "prio", "crawl"])
    if sig is None or not sig.num_rows:
        return ATTR_SCHEMA.empty_table()
    uid = sig.column("uid").to_numpy()
    n = len(uid)
    rep = np.full(n, NONE)
    if not unit["new"]:
        rep = uid.copy()
        clusters = read_latest(store, f"{CLUSTERS}/{unit['folder']}", ["rep"])
        if clusters is not None and clusters.num_rows:
            decided = clusters.column("uid").to_numpy()
            where = np.minimum(np.searchsorted(uid, decided), n - 1)
            inside = uid[where] == decided
            rep[where[inside]] = clusters.column("rep").to_numpy()[inside]
    return pa.table({"bucket": bucket(uid, buckets), "uid": uid,
                     "label": pa.nulls(n, pa.int64()), "folder": [unit["folder"]] * n,
                     "row": sig.column("row"), "id": sig.column("id"),
                     "prio": sig.column("prio"), "crawl": sig.column("crawl"),
                     "new": [unit["new"]] * n, "rep": rep}, schema=ATTR_SCHEMA)


def _members(group: pa.Table, *, buckets: int) -> pa.Table:
    """The documents that have a label, with their attributes, sent to their label's
    bucket. A node with no entry (a kept document that left) has none and drops out."""
    labelled = group.filter(pc.is_valid(group.column("label")))
    info = group.filter(pc.is_null(group.column("label")))
    info = info.take(np.argsort(info.column("uid").to_numpy(), kind="stable"))
    uid = labelled.column("uid").to_numpy()
    known = info.column("uid").to_numpy()
    if not len(known):
        return ATTR_SCHEMA.empty_table()
    where = np.minimum(np.searchsorted(known, uid), len(known) - 1)
    present = known[where] == uid
    found = info.take(where[present]).drop_columns(["bucket", "label"])
    label = labelled.column("label").to_numpy()[present]
    return found.add_column(0, "label", pa.array(label)).add_column(
        0, "bucket", pa.array(bucket(label, buckets)))


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
    # Earlier members are decided again only when their kept document left.
    moved = np.zeros(n, bool)
    moved[old[~rep_present]] = True
    out = np.flatnonzero(new | moved)
    keep = out == mine[out]
    ids = group.column("id")
    return pa.table({
        "bucket": bucket(uid[mine[out]], buckets), "folder": group.column("folder").take(out),
        "row": group.column("row").take(out), "uid": uid[out], "rep": uid[mine[out]],
        "cluster_id": ids.take(mine[out]), "keep": keep, "size": pa.nulls(len(out), pa.int64()),
        "earlier": np.zeros(len(out), bool), "promoted": keep & moved[out],
        "violation": np.zeros(len(out), bool)}, schema=DECISION_SCHEMA)


def _crawl_codes(crawl: pa.ChunkedArray) -> np.ndarray:
    encoded = pc.dictionary_encode(crawl.combine_chunks())
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def _earlier_members(batch: pa.Table, *, out: str, buckets: int) -> pa.Table:
    """The members of earlier clusters (from the shards done before), by kept document,
    for the sizes."""
    store = Store.at(out)
    (unit,) = batch.to_pylist()
    clusters = read_latest(store, f"{CLUSTERS}/{unit['folder']}", ["rep", "keep"])
    if clusters is None or not clusters.num_rows:
        return DECISION_SCHEMA.empty_table()
    rep = clusters.column("rep").to_numpy()
    n = len(rep)
    return pa.table({"bucket": bucket(rep, buckets), "folder": pa.nulls(n, pa.string()),
                     "row": pa.nulls(n, pa.int64()), "uid": clusters.column("uid"), "rep": rep,
                     "cluster_id": pa.nulls(n, pa.string()), "keep": clusters.column("keep"),
                     "size": pa.nulls(n, pa.int64()), "earlier": np.ones(n, bool),
                     "promoted": np.zeros(n, bool), "violation": np.zeros(n, bool)},
                    schema=DECISION_SCHEMA)


def sizes(group: pa.Table) -> pa.Table:
    """Cluster sizes across runs, and the cluster invariant, per kept document: this
    run's members and the earlier ones (an earlier entry of a document decided again
    now is replaced), plus the kept document itself when an earlier run found it
    alone (it has no entry then). A cluster this run touched must have exactly one
    kept member; `violation` marks the rows of one that has not."""
    earlier = group.column("earlier").to_numpy(zero_copy_only=False)
    uid = group.column("uid").to_numpy()
    order = np.lexsort((earlier, uid))  # per uid, this run's row first
    latest = order[np.r_[True, uid[order][1:] != uid[order][:-1]]] if len(uid) else order
    rep = group.column("rep").to_numpy()[latest]
    keep = group.column("keep").to_numpy(zero_copy_only=False)[latest].astype(bool)
    reps, where = np.unique(rep, return_inverse=True)
    where = where.reshape(-1)
    total = np.bincount(where, minlength=len(reps))
    kept = np.bincount(where, weights=keep, minlength=len(reps)).astype(np.int64)
    own_entry = np.zeros(len(reps), bool)
    own_entry[where[uid[latest] == rep]] = True
    total += ~own_entry
    kept += ~own_entry
    fresh = group.filter(pc.invert(group.column("earlier")))
    at = np.searchsorted(reps, fresh.column("rep").to_numpy())
    fresh = fresh.set_column(fresh.schema.get_field_index("size"), "size",
                             pa.array(total[at], pa.int64()))
    fresh = fresh.set_column(fresh.schema.get_field_index("violation"), "violation",
                             pa.array(kept[at] != 1))
    return fresh.drop_columns(["bucket", "earlier"])


def _write(group: pa.Table, *, out: str, run_id: str) -> pa.Table:
    """One shard's decisions, as one file: OUT/dedup/clusters/<shard>/<run>.parquet."""
    store = Store.at(out)
    folder = group.column("folder")[0].as_py()
    table = group.drop_columns(["folder", "violation"]).sort_by("row")
    store.write_table(table.drop_columns(["promoted"]),
                      store.path(CLUSTERS, folder, f"{run_id}.parquet"))
    kept = int(pc.sum(table.column("keep")).as_py() or 0)
    return pa.table({"folder": [folder], "members": [table.num_rows],
                     "removed": [table.num_rows - kept], "kept": [kept],
                     "promoted": [int(pc.sum(group.column("promoted")).as_py() or 0)],
                     "violations": [int(pc.sum(group.column("violation")).as_py() or 0)]})
