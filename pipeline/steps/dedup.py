"""The dedup step: clusters of duplicates across this run's shards and every shard
done before, computed on the cluster before the run (DESIGN.md 4, `dedup`; the
design and its costs are in docs/dedup.md).

1. Signatures: one pass over the new shards' text (only the columns dedup reads).
   Each document's keys (stages/dedup.py) go to OUT/dedup/signatures/<shard>/, the
   index later runs match against, and stream on as (key, document) rows.
2. Candidates: those rows and the index's are shuffled by key (Ray Data groupby on a
   hash bucket of the key). Equal keys are sorted together; a key shared by two
   documents, one of them new, gives edges from each member to the group's first.
3. Clusters: connected components of the edges, by rounds of min-label propagation.
   Each round is one shuffle by node: a bucket finds the components of its own
   edges (scipy) and sends each member the smallest label seen; it ends when no
   label moves. Only documents with a candidate take part, never the whole corpus.
4. Decisions: labels meet the documents' ids and earlier decisions (a shuffle by
   document), each cluster picks the member to keep (a shuffle by cluster: an earlier
   run's kept document if there is one, else the highest `keep_by`, else the lowest
   hash of the id), sizes are counted with earlier members (a shuffle by kept
   document), and each shard's decisions are written to OUT/dedup/clusters/<shard>/.
The run's stage then attaches them row by row. Nothing here gathers documents,
keys or edges on the driver: it holds counts.

A document's name here is its uid: the ledger's shard number << 32 | its row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from thresher.models.minhash import _finalize
from thresher.pipeline.engine.config import Config, ConfigError
from thresher.pipeline.engine.read import read_unit
from thresher.pipeline.engine.run import phase
from thresher.pipeline.io.storage import Store
from thresher.stages.dedup import Dedup, shard_folder

log = logging.getLogger(__name__)

SIGNATURES = "dedup/signatures"
CLUSTERS = "dedup/clusters"
INDEX_FILE = "dedup/index.json"
KEY_ROWS_PER_PARTITION = 4_000_000
FILE_ROWS = 500_000  # signatures a worker holds before writing them (about 90 MB)  # about 100 MB of key rows per shuffle partition
MAX_ROUNDS = 60
NONE = -1  # no uid (an old document that was in no cluster)

# Rows of the component search: an edge (a, b); a node's own label; a message
# carrying a label to a node from another bucket.
EDGE, OWN, MESSAGE = 0, 1, 2
CC_SCHEMA = pa.schema([("bucket", pa.int64()), ("kind", pa.int8()), ("a", pa.int64()),
                       ("b", pa.int64()), ("changed", pa.int8())])
KEY_SCHEMA = pa.schema([("bucket", pa.int64()), ("key", pa.uint64()), ("uid", pa.int64()),
                        ("new", pa.bool_()), ("rep", pa.int64())])


class DedupError(ConfigError):
    """The dedup step cannot run as configured; says why."""


def find_stage(config: Config) -> int | None:
    names = [spec.name for spec in config.stages]
    return names.index("dedup") if "dedup" in names else None


def check_placement(config: Config) -> None:
    """Stages before dedup run in the signature pass too, so they must not need a
    calibration (it runs after dedup, on deduplicated rows) or a GPU."""
    at = find_stage(config)
    if at is None:
        return
    for spec in config.stages[:at]:
        stage = spec.build()
        if stage.needs_calibration or spec.resources.num_gpus or not spec.fusable:
            raise DedupError(
                f"{config.source}: stage {spec.name} is before dedup but needs a calibration, "
                "a GPU or an LLM; put dedup before it (keep_by may name a column of the input "
                "or of a stage before dedup that needs none of these)")


def run_dedup(config: Config, shards, store: Store, numbers: dict[str, int],
              done_paths: list[str], run_id: str) -> tuple[Config, dict]:
    """Cluster the new shards' documents with each other and with the index; returns
    the config with the dedup stage pointed at the decisions, and a summary."""
    at = find_stage(config)
    if at is None:
        return config, {}
    import ray

    spec = config.stages[at]
    stage: Dedup = spec.build()
    started, phases = time.perf_counter(), {}
    _check_index_settings(store, stage)
    todo = list(shards)  # new, changed or unfinished: their old entries are replaced
    redo = {shard_folder(s.path) for s in todo}
    done = {shard_folder(p): numbers[p] for p in done_paths
            if p in numbers and shard_folder(p) not in redo}
    _clear(store, todo)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    index_docs = _index_summary(store).get("docs", 0)
    new_docs = sum(s.num_rows or 0 for s in todo)
    partitions = (stage.partitions if stage.partitions != "auto" else
                  max(cpus, math.ceil((new_docs + index_docs) * stage.num_keys
                                      / KEY_ROWS_PER_PARTITION)))
    buckets = 4 * partitions  # more buckets than partitions: even partitions
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False

    _check_keep_by(config, at, todo)
    log.info("dedup: signing %d shards (%s rows), then finding clusters against an index of "
             "%s documents", len(todo), f"{new_docs:,}", f"{index_docs:,}")
    units = [{"path": s.path, "key": s.key, "folder": shard_folder(s.path),
              "number": numbers[s.path]} for s in todo]
    new_keys = _signature_pass(units, config, at, store, buckets, cpus, config.run)
    old = [{"folder": f, "number": n} for f, n in sorted(done.items())]
    keys = new_keys
    if old:
        keys = keys.union(_units(old, cpus).map_batches(
            _old_keys, batch_size=1, batch_format="pyarrow",
            fn_kwargs={"out": store.location, "buckets": buckets}))
    with phase(phases, "signatures+candidates"):
        graph = keys.groupby("bucket", num_partitions=partitions).map_groups(
            _candidates, batch_format="pyarrow", fn_kwargs={"buckets": buckets}).materialize()
    edges = _count(graph, EDGE) // 2  # with repeats: a pair that shares several keys
    log.info("dedup: signatures written; finding clusters among %s key matches",
             f"{edges:,}")
    rounds = 0
    with phase(phases, "components"):
        while edges:
            rounds += 1
            graph = graph.groupby("bucket", num_partitions=partitions).map_groups(
                _propagate, batch_format="pyarrow", fn_kwargs={"buckets": buckets}
            ).materialize()
            moved = graph.sum("changed") or 0
            if rounds == 1:  # a bucket dedups the copies of an edge found by many keys
                edges = _count(graph, EDGE) // 2
            log.debug("dedup: round %d moved %d labels", rounds, moved)
            # Messages sent in a round are taken in the next: a round that moves no
            # label proves a fixed point only after a round of messages (round 2 on).
            if not moved and rounds >= 2:
                break
            if rounds >= MAX_ROUNDS:
                raise RuntimeError(f"dedup: components did not settle in {MAX_ROUNDS} rounds")
    with phase(phases, "decisions"):
        written = (_decide(graph, store, todo, old, buckets, partitions, cpus, run_id)
                   if edges else [])
    per_shard = _signed_counts(store, todo)
    paths = {shard_folder(s.path): s.path for s in todo}
    summary = {
        "documents_signed": sum(per_shard.values()), "index_documents_before": index_docs,
        "partitions": partitions, "candidate_edges": edges, "rounds": rounds,
        "documents_in_clusters": sum(w["members"] for w in written),
        "removed": sum(w["removed"] for w in written),
        "clusters_touched": sum(w["kept"] for w in written),
        "seconds": {k: round(v, 2) for k, v in phases.items()},
        "removed_per_shard": {paths[w["folder"]]: w["removed"] for w in written
                              if w["removed"]},
    }
    summary["seconds"]["total"] = round(time.perf_counter() - started, 2)
    log.info("dedup: %s documents signed against an index of %s; %s candidate pairs, "
             "%d rounds; %d documents in clusters of 2+, %d to drop (%.0f s)",
             f"{summary['documents_signed']:,}", f"{index_docs:,}", f"{edges:,}", rounds,
             summary["documents_in_clusters"], summary["removed"],
             summary["seconds"]["total"])
    pending = {shard_folder(s.path): per_shard.get(shard_folder(s.path), 0) for s in todo}
    summary["pending_index"] = pending
    specs = list(config.stages)
    specs[at] = replace(spec, params={**spec.params, "clusters": store.uri(CLUSTERS)})
    return replace(config, stages=specs), summary


def _check_keep_by(config: Config, at: int, shards) -> None:
    """keep_by must name a column of the input or of a stage before dedup: said now,
    not as a failed worker."""
    keep_by = config.stages[at].params.get("keep_by")
    if not keep_by or not shards:
        return
    from thresher.pipeline.io.storage import open_input
    import pyarrow.parquet as pq

    made = {c for spec in config.stages[:at] for c in spec.cls.columns}
    with open_input(shards[0].path) as handle:
        present = set(pq.read_schema(handle).names)
    if keep_by not in made | present:
        raise DedupError(f"{config.source}: dedup keep_by {keep_by!r} is neither a column of "
                         f"the input ({', '.join(sorted(present))}) nor one that a stage before "
                         "dedup adds")


# ---- 1. signatures ---------------------------------------------------------------

def _signature_pass(units, config: Config, at: int, store: Store, buckets: int, cpus: int,
                    run_options):
    import ray

    read = {"batch_rows": run_options.read_batch_rows,
            "max_text_bytes": run_options.max_text_bytes}
    # Leave a quarter of the CPUs to the shuffle's tasks, which start while the
    # workers still sign: Ray Data streams from one to the other.
    workers = max(1, cpus)
    pool = ray.data.ActorPoolStrategy(min_size=1, max_size=workers,
                                      initial_size=max(1, min(workers, len(units))),
                                      max_tasks_in_flight_per_actor=2)
    return ray.data.from_items(units, override_num_blocks=max(1, len(units))).map_batches(
        Signer, compute=pool, batch_size=1, batch_format="pyarrow", num_cpus=0.75,
        fn_constructor_args=(config.stages[:at], config.stages[at], tuple(config.filters),
                             read, store.location, buckets))


class Signer:
    """A Ray Data callable class: reads its shards (only the columns dedup needs
    when no stage runs before it), writes their signatures and yields key rows."""

    def __init__(self, before, spec, rules, read: dict, out: str, buckets: int):
        from thresher.pipeline.engine.worker import SegmentWorker

        self.before = SegmentWorker(before, rules, None, None) if before else None
        self.stage: Dedup = spec.build()
        self.stage.setup()
        self.read, self.out, self.buckets = read, Store.at(out), buckets

    def __call__(self, batch: pa.Table):
        for unit in batch.to_pylist():
            if self.before is None:
                unit = {**unit, "columns": self.stage.input_columns()}
            held, rows = [], 0
            for table in read_unit(unit, **self.read):
                if self.before is not None:
                    table = self.before.score(table)
                play = pc.and_(pc.is_null(table.column("_error")),
                               pc.is_null(table.column("_pre")))
                table = table.filter(play)
                if not table.num_rows:
                    continue
                signature, keys = self._sign(table, unit)
                held.append(signature)
                rows += signature.num_rows
                yield keys
                if rows >= FILE_ROWS:
                    self._write(held, unit)
                    held, rows = [], 0
            self._write(held, unit)

    def _sign(self, table: pa.Table, unit: dict) -> tuple[pa.Table, pa.Table]:
        """The rows' signature entries, and their key rows for the shuffle."""
        rows = table.column("source_row").to_numpy().astype(np.int64)
        uid = (np.int64(unit["number"]) << np.int64(32)) | rows
        keys = self.stage.keys(table)
        signature = pa.table({
            "uid": uid, "row": rows, "id": table.column("id"),
            "prio": self.stage.priority(table),
            "keys": pa.FixedSizeListArray.from_arrays(pa.array(keys.reshape(-1), pa.uint64()),
                                                      keys.shape[1])})
        return signature, _key_rows(keys, uid, np.ones(len(uid), bool),
                                    np.full(len(uid), NONE), self.buckets)

    def _write(self, held: list[pa.Table], unit: dict) -> None:
        """One index file per shard (per FILE_ROWS rows of a large one), named by its
        first row: a retried shard rewrites the same files."""
        if held:
            table = pa.concat_tables(held)
            first = table.column("row")[0].as_py()
            self.out.write_table(table, self.out.path(SIGNATURES, unit["folder"],
                                                      f"{first:010d}.parquet"))


def _key_rows(keys: np.ndarray, uid, new, rep, buckets: int) -> pa.Table:
    """(key, uid) rows, one per present key (0 is no key), with the key's bucket."""
    k = keys.shape[1]
    flat = keys.reshape(-1)
    present = flat != 0
    flat = flat[present]
    rep_each = lambda v: np.repeat(v, k)[present]  # noqa: E731
    return pa.table({"bucket": _bucket(flat, buckets), "key": flat,
                     "uid": rep_each(uid), "new": rep_each(new), "rep": rep_each(rep)},
                    schema=KEY_SCHEMA)


def _old_keys(batch: pa.Table, *, out: str, buckets: int) -> pa.Table:
    """Key rows of shards done before, each with its earlier cluster's kept document."""
    store = Store.at(out)
    tables = []
    for unit in batch.to_pylist():
        sig = _read_folder(store, f"{SIGNATURES}/{unit['folder']}", ["uid", "keys"])
        if sig is None or not sig.num_rows:
            continue
        uid = sig.column("uid").to_numpy()
        keys = np.asarray(pc.list_flatten(sig.column("keys")).to_numpy()).reshape(len(uid), -1)
        rep = np.full(len(uid), NONE)
        clusters = _read_folder(store, f"{CLUSTERS}/{unit['folder']}", ["uid", "rep"])
        if clusters is not None and clusters.num_rows:
            where = np.searchsorted(uid, clusters.column("uid").to_numpy())
            rep[where] = clusters.column("rep").to_numpy()
        tables.append(_key_rows(keys, uid, np.zeros(len(uid), bool), rep, buckets))
    return pa.concat_tables(tables) if tables else KEY_SCHEMA.empty_table()


# ---- 2. candidates ---------------------------------------------------------------

def _candidates(group: pa.Table, *, buckets: int) -> pa.Table:
    """The keys of one bucket: for every key that two or more documents share, one of
    them new, an edge between each member and the key's first member (both ways),
    and each member's own label (itself). An earlier run's member also gets an edge
    to the document its cluster kept, so that the cluster comes in whole."""
    key = group.column("key").to_numpy()
    uid = group.column("uid").to_numpy()
    new = group.column("new").to_numpy(zero_copy_only=False)
    rep = group.column("rep").to_numpy()
    order = np.lexsort((uid, key))
    key, uid, new, rep = key[order], uid[order], new[order], rep[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, int)
    sizes = np.diff(np.r_[starts, len(key)])
    member = np.repeat((sizes >= 2) & (np.add.reduceat(new.astype(np.int64), starts) > 0
                                       if len(key) else np.zeros(0, bool)), sizes)
    first = np.repeat(uid[starts], sizes)
    pairs = [np.stack([uid, first], 1)[member & (uid != first)]]
    linked = member & ~new & (rep != NONE) & (rep != uid)
    pairs.append(np.stack([uid, rep], 1)[linked])
    pairs = np.concatenate(pairs)
    pairs = np.unique(np.concatenate([pairs, pairs[:, ::-1]]), axis=0) if len(pairs) else \
        np.zeros((0, 2), np.int64)
    nodes = np.unique(pairs[:, 0])
    return _cc_table(pairs, nodes, nodes, np.zeros(0, np.int64), np.zeros(0, np.int64),
                     np.zeros(len(nodes), np.int8), buckets)


def _cc_table(pairs, own_nodes, own_labels, msg_nodes, msg_labels, changed, buckets):
    a = np.concatenate([pairs[:, 0], own_nodes, msg_nodes]).astype(np.int64)
    b = np.concatenate([pairs[:, 1], own_labels, msg_labels]).astype(np.int64)
    kind = np.concatenate([np.full(len(pairs), EDGE), np.full(len(own_nodes), OWN),
                           np.full(len(msg_nodes), MESSAGE)]).astype(np.int8)
    flags = np.concatenate([np.zeros(len(pairs), np.int8), changed,
                            np.zeros(len(msg_nodes), np.int8)])
    return pa.table({"bucket": _bucket(a, buckets), "kind": kind, "a": a, "b": b,
                     "changed": flags}, schema=CC_SCHEMA)


# ---- 3. components ---------------------------------------------------------------

def _propagate(group: pa.Table, *, buckets: int) -> pa.Table:
    """One round in one bucket: each node of the bucket takes the smallest label it
    was sent; the components of the bucket's edges then share their smallest label,
    and the members that live in other buckets are sent it."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    kind = group.column("kind").to_numpy()
    a, b = group.column("a").to_numpy(), group.column("b").to_numpy()
    # Every copy of an edge is in this bucket (the bucket of its first node): the
    # copies that several shared keys made become one here.
    pairs = np.unique(np.stack([a[kind == EDGE], b[kind == EDGE]], 1), axis=0)
    own_nodes, own_labels = a[kind == OWN], b[kind == OWN]
    incoming = kind != EDGE
    nodes, where = np.unique(a[incoming], return_inverse=True)
    label = np.full(len(nodes), np.iinfo(np.int64).max)
    np.minimum.at(label, where, b[incoming])
    before = np.full(len(nodes), np.iinfo(np.int64).max)
    np.minimum.at(before, np.searchsorted(nodes, own_nodes), own_labels)
    if len(pairs):
        members, index = np.unique(pairs, return_inverse=True)
        index = index.reshape(-1, 2)
        graph = coo_matrix((np.ones(len(index)), (index[:, 0], index[:, 1])),
                           shape=(len(members), len(members)))
        _, component = connected_components(graph, directed=False)
        known = np.full(len(members), np.iinfo(np.int64).max)
        here = np.isin(members, nodes)
        known[here] = label[np.searchsorted(nodes, members[here])]
        lowest = np.full(component.max() + 1, np.iinfo(np.int64).max)
        np.minimum.at(lowest, component, known)
        offered = lowest[component]
        label[np.searchsorted(nodes, members[here])] = np.minimum(
            label[np.searchsorted(nodes, members[here])], offered[here])
        away = ~here
        msg_nodes, msg_labels = members[away], offered[away]
    else:
        msg_nodes = msg_labels = np.zeros(0, np.int64)
    changed = (label < before).astype(np.int8)
    return _cc_table(pairs, nodes, label, msg_nodes, msg_labels, changed, buckets)


# ---- 4. decisions ----------------------------------------------------------------

ATTR_SCHEMA = pa.schema([("bucket", pa.int64()), ("uid", pa.int64()), ("label", pa.int64()),
                         ("folder", pa.string()), ("row", pa.int64()), ("id", pa.string()),
                         ("prio", pa.float64()), ("new", pa.bool_()), ("rep", pa.int64()),
                         ("rep_id", pa.string())])


def _decide(graph, store: Store, todo, old, buckets: int, partitions: int, cpus: int,
            run_id: str):
    labels = graph.filter(expr=col("kind") == OWN).map_batches(
        _labels, batch_format="pyarrow", fn_kwargs={"buckets": buckets})
    folders = [{"folder": shard_folder(s.path), "new": True} for s in todo] + \
        [{"folder": o["folder"], "new": False} for o in old]
    attrs = _units(folders, cpus).map_batches(
        _attributes, batch_size=1, batch_format="pyarrow",
        fn_kwargs={"out": store.location, "buckets": buckets})
    members = labels.union(attrs).groupby("bucket", num_partitions=partitions).map_groups(
        _members, batch_format="pyarrow", fn_kwargs={"buckets": buckets})
    chosen = members.groupby("bucket", num_partitions=partitions).map_groups(
        _choose, batch_format="pyarrow", fn_kwargs={"buckets": buckets})
    earlier = _units(old, cpus).map_batches(
        _earlier_members, batch_size=1, batch_format="pyarrow",
        fn_kwargs={"out": store.location, "buckets": buckets}) if old else None
    sized = (chosen.union(earlier) if earlier is not None else chosen).groupby(
        "bucket", num_partitions=partitions).map_groups(_sizes, batch_format="pyarrow")
    written = sized.groupby("folder", num_partitions=partitions).map_groups(
        _write_decisions, batch_format="pyarrow",
        fn_kwargs={"out": store.location, "run_id": run_id})
    return [row for batch in written.iter_batches(batch_format="pyarrow", batch_size=None)
            for row in batch.to_pylist()]


def _labels(batch: pa.Table, *, buckets: int) -> pa.Table:
    uid = batch.column("a").to_numpy()
    n = len(uid)
    return pa.table({"bucket": _bucket(uid, buckets), "uid": uid, "label": batch.column("b"),
                     "folder": pa.nulls(n, pa.string()), "row": pa.nulls(n, pa.int64()),
                     "id": pa.nulls(n, pa.string()), "prio": pa.nulls(n, pa.float64()),
                     "new": pa.nulls(n, pa.bool_()), "rep": pa.nulls(n, pa.int64()),
                     "rep_id": pa.nulls(n, pa.string())}, schema=ATTR_SCHEMA)


def _attributes(batch: pa.Table, *, out: str, buckets: int) -> pa.Table:
    """Every signed document's id, row and score, and for earlier shards the kept
    document of its cluster: what a cluster needs to choose and to name its keeper."""
    store = Store.at(out)
    (unit,) = batch.to_pylist()
    sig = _read_folder(store, f"{SIGNATURES}/{unit['folder']}", ["uid", "row", "id", "prio"])
    if sig is None or not sig.num_rows:
        return ATTR_SCHEMA.empty_table()
    uid = sig.column("uid").to_numpy()
    n = len(uid)
    rep, rep_id = pa.nulls(n, pa.int64()), pa.nulls(n, pa.string())
    if not unit["new"]:
        rep_np, rep_ids = uid.copy(), sig.column("id").to_pylist()
        clusters = _read_folder(store, f"{CLUSTERS}/{unit['folder']}", ["uid", "rep", "cluster_id"])
        if clusters is not None and clusters.num_rows:
            where = np.searchsorted(uid, clusters.column("uid").to_numpy())
            rep_np[where] = clusters.column("rep").to_numpy()
            for i, cid in zip(where, clusters.column("cluster_id").to_pylist()):
                rep_ids[i] = cid
        rep, rep_id = pa.array(rep_np, pa.int64()), pa.array(rep_ids, pa.string())
    return pa.table({"bucket": _bucket(uid, buckets), "uid": uid,
                     "label": pa.nulls(n, pa.int64()), "folder": [unit["folder"]] * n,
                     "row": sig.column("row"), "id": sig.column("id"), "prio": sig.column("prio"),
                     "new": [unit["new"]] * n, "rep": rep, "rep_id": rep_id}, schema=ATTR_SCHEMA)


def _members(group: pa.Table, *, buckets: int) -> pa.Table:
    """The documents that have a label, with their attributes, sent to their label's
    bucket."""
    labelled = group.filter(pc.is_valid(group.column("label")))
    info = group.filter(pc.is_null(group.column("label")))
    order = np.argsort(info.column("uid").to_numpy(), kind="stable")
    info = info.take(order)
    uid = labelled.column("uid").to_numpy()
    known = info.column("uid").to_numpy()
    where = np.minimum(np.searchsorted(known, uid), max(len(known) - 1, 0))
    # A kept document whose shard was replaced since has no entry any more: its
    # cluster goes on without it.
    present = (known[where] == uid) if len(known) else np.zeros(len(uid), bool)
    found = info.take(where[present]).drop_columns(["bucket", "label"])
    label = labelled.column("label").to_numpy()[present]
    return found.add_column(0, "label", pa.array(label)).add_column(
        0, "bucket", pa.array(_bucket(label, buckets)))


DECISION_SCHEMA = pa.schema([("bucket", pa.int64()), ("folder", pa.string()),
                             ("row", pa.int64()), ("uid", pa.int64()), ("rep", pa.int64()),
                             ("cluster_id", pa.string()), ("keep", pa.bool_()),
                             ("size", pa.int64()), ("earlier", pa.bool_())])


def _choose(group: pa.Table, *, buckets: int) -> pa.Table:
    """Per cluster (label): the member to keep, for the new members' decisions."""
    rows = []
    table = group.sort_by([("label", "ascending")])
    labels = table.column("label").to_numpy()
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]]) if len(labels) else []
    bounds = list(starts) + [len(labels)]
    cols = {c: table.column(c).to_pylist() for c in ("uid", "folder", "row", "id", "prio",
                                                      "new", "rep", "rep_id")}
    for start, end in zip(bounds[:-1], bounds[1:]):
        members = range(start, end)
        earlier = [i for i in members if not cols["new"][i]]
        if earlier:
            # A document kept by an earlier run stays kept: the new copies join it.
            keeper = min(earlier, key=lambda i: cols["rep"][i])
            rep, rep_id = cols["rep"][keeper], cols["rep_id"][keeper]
        else:
            keeper = min(members, key=lambda i: _rank(cols["prio"][i], cols["id"][i]))
            rep, rep_id = cols["uid"][keeper], cols["id"][keeper]
        for i in members:
            if cols["new"][i]:
                rows.append((cols["folder"][i], cols["row"][i], cols["uid"][i], rep, rep_id,
                             cols["uid"][i] == rep))
    return _decision_table(rows, buckets)


def _rank(prio: float | None, doc_id: str) -> tuple:
    """Highest keep_by score first, then the lowest hash of the id."""
    score = -prio if prio is not None and not math.isnan(prio) else math.inf
    return score, hashlib.blake2b(doc_id.encode(), digest_size=8).digest()


def _decision_table(rows, buckets) -> pa.Table:
    folder, row, uid, rep, rep_id, keep = (list(c) for c in zip(*rows)) if rows else \
        ([], [], [], [], [], [])
    rep = np.array(rep, np.int64)
    n = len(rows)
    return pa.table({"bucket": _bucket(rep, buckets), "folder": pa.array(folder, pa.string()),
                     "row": pa.array(row, pa.int64()), "uid": pa.array(uid, pa.int64()),
                     "rep": rep, "cluster_id": pa.array(rep_id, pa.string()),
                     "keep": pa.array(keep, pa.bool_()), "size": pa.nulls(n, pa.int64()),
                     "earlier": pa.array([False] * n)}, schema=DECISION_SCHEMA)


def _earlier_members(batch: pa.Table, *, out: str, buckets: int) -> pa.Table:
    """The members of earlier clusters (from the shards done before), by kept document,
    for the sizes."""
    store = Store.at(out)
    (unit,) = batch.to_pylist()
    clusters = _read_folder(store, f"{CLUSTERS}/{unit['folder']}", ["uid", "rep"])
    if clusters is None or not clusters.num_rows:
        return DECISION_SCHEMA.empty_table()
    rep = clusters.column("rep").to_numpy()
    n = len(rep)
    return pa.table({"bucket": _bucket(rep, buckets), "folder": pa.nulls(n, pa.string()),
                     "row": pa.nulls(n, pa.int64()), "uid": clusters.column("uid"), "rep": rep,
                     "cluster_id": pa.nulls(n, pa.string()), "keep": pa.nulls(n, pa.bool_()),
                     "size": pa.nulls(n, pa.int64()), "earlier": [True] * n},
                    schema=DECISION_SCHEMA)


def _sizes(group: pa.Table) -> pa.Table:
    """Cluster sizes across runs: this run's members of a kept document, plus its
    members from earlier runs, plus the kept document itself when an earlier run
    found it alone (it has no entry then)."""
    rep = group.column("rep").to_numpy()
    earlier = group.column("earlier").to_numpy(zero_copy_only=False)
    uid = group.column("uid").to_numpy()
    reps, where = np.unique(rep, return_inverse=True)
    total = np.bincount(where, minlength=len(reps))
    has_entry = np.zeros(len(reps), bool)
    has_entry[where[uid == rep]] = True
    chosen_new = np.zeros(len(reps), bool)
    chosen_new[where[~earlier & (uid == rep)]] = True
    total = total + (~has_entry & ~chosen_new)
    fresh = group.filter(pc.invert(group.column("earlier")))
    sizes = total[np.searchsorted(reps, fresh.column("rep").to_numpy())]
    return fresh.set_column(fresh.schema.get_field_index("size"), "size",
                            pa.array(sizes, pa.int64())).drop_columns(["bucket", "earlier"])


def _write_decisions(group: pa.Table, *, out: str, run_id: str) -> pa.Table:
    """One shard's decisions, as one file: OUT/dedup/clusters/<shard>/<run>.parquet."""
    store = Store.at(out)
    folder = group.column("folder")[0].as_py()
    table = group.drop_columns(["folder"]).sort_by("row")
    store.write_table(table, store.path(CLUSTERS, folder, f"{run_id}.parquet"))
    keep = table.column("keep")
    return pa.table({"folder": [folder], "members": [table.num_rows],
                     "removed": [table.num_rows - (pc.sum(keep).as_py() or 0)],
                     "kept": [pc.sum(keep).as_py() or 0]})


# ---- the index -------------------------------------------------------------------

def _units(items: list[dict], cpus: int):
    """Per-shard work items as a dataset of a few blocks per CPU: one task reads many
    small index files, not one task each."""
    import ray

    return ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 4 * cpus)))


def _bucket(values: np.ndarray, buckets: int) -> np.ndarray:
    return (_finalize(np.asarray(values).astype(np.uint64)) % np.uint64(buckets)).astype(np.int64)


def _read_folder(store: Store, folder: str, columns: list[str]) -> pa.Table | None:
    files = store.files(folder, "*.parquet")
    if not files:
        return None
    table = pa.concat_tables(store.read_table(f, columns=columns) for f in files)
    return table.sort_by("uid")


def _clear(store: Store, todo) -> None:
    """Entries of shards about to be (re)done: signatures and decisions of a crashed
    run, or of a shard whose content changed. Removed before anything new is written."""
    for shard in todo:
        for folder in (SIGNATURES, CLUSTERS):
            for path in store.files(f"{folder}/{shard_folder(shard.path)}", "*"):
                store.delete(path)


def _signed_counts(store: Store, todo) -> dict[str, int]:
    counts = {}
    for shard in todo:
        folder = shard_folder(shard.path)
        counts[folder] = sum(store.num_rows(f) for f in
                             store.files(f"{SIGNATURES}/{folder}", "*.parquet"))
    return counts


def col(name: str):
    from ray.data.expressions import col as column

    return column(name)


def _count(ds, kind: int) -> int:
    return ds.filter(expr=col("kind") == kind).count()


def _index_summary(store: Store) -> dict:
    path = store.path(INDEX_FILE)
    return json.loads(store.read_text(path)) if store.exists(path) else {}


def _check_index_settings(store: Store, stage: Dedup) -> None:
    saved = _index_summary(store).get("settings")
    if saved and saved != _settings(stage):
        raise DedupError(f"the dedup index in {store.uri('dedup')} was built with other "
                         f"settings ({saved}); this config asks for {_settings(stage)}. "
                         "Keys from different settings never match: keep the settings, or "
                         "use a new output folder")


def _settings(stage: Dedup) -> dict:
    s = stage.settings
    return {"bands": s.bands, "rows": s.rows, "ngram": s.ngram, "seed": s.seed,
            "near": stage.near, "exact": stage.exact, "url": stage.url}


def record_index(store: Store, config: Config, summary: dict, finished: set[str]) -> dict:
    """After the run: the index summary (documents per shard folder) with this run's
    finished shards in it; what `thresher plan` and `status` show."""
    at = find_stage(config)
    if at is None or not summary:
        return _index_summary(store)
    index = _index_summary(store)
    shards = index.get("shards", {})
    for folder, docs in summary.get("pending_index", {}).items():
        if folder in finished:
            shards[folder] = docs
        else:
            shards.pop(folder, None)
    index = {"settings": _settings(config.stages[at].build()), "shards": shards,
             "docs": sum(shards.values()), "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                     time.gmtime())}
    store.write_text(store.path(INDEX_FILE), json.dumps(index))
    return index


def index_size(store: Store) -> dict:
    """Documents and shards in the dedup index, and the bytes its files take."""
    index = _index_summary(store)
    if not index:
        return {}
    nbytes = 0
    for info in store.fs.get_file_info(pafs.FileSelector(store.path("dedup"), recursive=True,
                                                         allow_not_found=True)):
        nbytes += info.size or 0
    return {"documents": index.get("docs", 0), "shards": len(index.get("shards", {})),
            "bytes": nbytes}
