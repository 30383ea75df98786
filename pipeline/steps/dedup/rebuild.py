"""`thresher dedup rebuild`: the index made again, in this version's format and with
the config's settings, from the outputs, without touching them.

For every shard the ledger has done, its curated and rejected rows that reached
dedup (a dedup decision in their columns) are signed again from their text: the
output holds every document that was signed, so nothing needs the input shards.
The decisions that were published are kept as they are: each cluster is named by
the id in `dup_cluster` and its kept member (`dup_keep`) is found by one shuffle of
the clustered rows; a cluster whose kept member is in no output any more keeps its
members dropped until a new copy arrives, which then chooses a new keeper. URL
drops are carried over as they were. The old index is removed first, and the
format file is written last, so a rebuild that dies is refused by the next run
until a rebuild finishes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from thresher.pipeline.engine.config import Config
from thresher.pipeline.engine.write import is_made_part
from thresher.pipeline.io.storage import Store
from thresher.pipeline.steps.dedup import index
from thresher.pipeline.steps.dedup import ranged
from thresher.pipeline.steps.dedup.common import (CLUSTERS, FORMAT_FILE, KEY_SCHEMA, KEYS,
                                                  SIGNATURES, URL_INDEX, URLS, DedupError,
                                                  bucket, id_rank, read_folder, read_latest,
                                                  rep_key, units)
from thresher.pipeline.steps.dedup.ranged import range_of
from thresher.pipeline.steps.dedup.signatures import key_rows
from thresher.pipeline.steps.dedup.urls import INDEX_SCHEMA, dropped_by_url, with_url
from thresher.stages.dedup import Dedup, shard_folder

log = logging.getLogger(__name__)

MEMBER_SCHEMA = pa.schema([("bucket", pa.int64()), ("folder", pa.string()), ("row", pa.int64()),
                           ("uid", pa.int64()), ("cluster_id", pa.string()),
                           ("keep", pa.bool_()), ("size", pa.int64())])
OUTCOMES = ("curated", "rejected")
URL_INDEX_ROWS = pa.schema([("bucket", pa.int64()), *INDEX_SCHEMA])


def rebuild_index(out_dir: str, config: Config, address: str | None = None,
                  num_cpus: int | None = None, state_dir: str | None = None) -> dict:
    """`thresher dedup rebuild`: the index made again from the outputs of the shards the
    ledger has done, under the output's lock (no run meanwhile)."""
    from thresher.pipeline.engine import dag
    from thresher.pipeline.engine.ledger import Ledger
    from thresher.pipeline.engine.run import RunError, exclusive
    from thresher.pipeline.engine.shards import path_key
    from thresher.pipeline.io.storage import state_folder

    store = Store.at(str(out_dir))
    state = state_folder(store, state_dir)
    if not (state / "ledger.sqlite").exists():
        raise RunError(f"no ledger in {state}: nothing has been curated into {out_dir}")
    with exclusive(state):
        ledger = Ledger(state)
        try:
            done = ledger.done_shards()
            numbers = ledger.shard_numbers(done)
            shards = [{"path": path, "key": f"{path_key(path)}-{fp[:8]}",
                       "number": numbers[path], "run_id": ledger.get(path)["run_id"]}
                      for path, fp in done]
        finally:
            ledger.close()
        dag.connect(address, num_cpus)
        return rebuild(store, config, shards)


def rebuild(store: Store, config: Config, shards: list[dict]) -> dict:
    """`shards`: the ledger's done shards as {path, fingerprint, number, run_id}."""
    from thresher.pipeline.steps.dedup import find_stage

    at = find_stage(config)
    if at is None:
        raise DedupError(f"{config.source}: the config has no dedup stage to rebuild the "
                         "index for")
    import ray

    stage: Dedup = config.stages[at].build()
    started = time.perf_counter()
    _remove_index(store)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    buckets = 4 * cpus
    ray.data.DataContext.get_current().enable_progress_bars = False
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-rebuild"
    work = [{**s, "folder": shard_folder(s["path"])} for s in shards]
    members = units(work, cpus).map_batches(
        _sign_outputs, batch_size=1, batch_format="pyarrow",
        fn_kwargs={"out": store.location, "spec": config.stages[at], "buckets": buckets,
                   "stamp": stamp})
    written = members.groupby("bucket", num_partitions=cpus).map_groups(
        _name_keepers, batch_format="pyarrow").groupby("folder", num_partitions=cpus) \
        .map_groups(_write, batch_format="pyarrow",
                    fn_kwargs={"out": store.location, "stamp": stamp})
    clustered = sum(int(pc.sum(b.column("members")).as_py() or 0)
                    for b in written.iter_batches(batch_format="pyarrow", batch_size=None))
    _index_by_range(store, work, stage, cpus, stamp)
    counts = index.signed_counts(store, [s["path"] for s in shards])
    index.record(store, stage, counts, set(counts))
    store.write_text(store.path(FORMAT_FILE), json.dumps(index.current(stage)))
    return {"shards": len(shards), "documents": sum(counts.values()),
            "documents_in_clusters": clustered,
            "seconds": round(time.perf_counter() - started, 2)}


def _index_by_range(store: Store, work: list[dict], stage: Dedup, cpus: int, stamp: str) -> None:
    """The key index (every document's content keys, and its cluster's key when it is
    in a cluster of 2+) and the URL index, from the signatures and decisions just made."""
    level = ranged.level_for(max(4 * cpus, len(work)))
    kinds = [(KEYS, "key", _key_rows)] + ([(URL_INDEX, "url", _url_rows)] if stage.url else [])
    for root, column, rows in kinds:
        units(work, cpus).map_batches(
            rows, batch_size=1, batch_format="pyarrow",
            fn_kwargs={"out": store.location, "level": level, "stamp": stamp}) \
            .groupby("bucket", num_partitions=cpus).map_groups(
                _write_range, batch_format="pyarrow",
                fn_kwargs={"out": store.location, "root": root, "column": column,
                           "level": level, "stamp": stamp}).materialize()


def _key_rows(batch: pa.Table, *, out: str, level: int, stamp: str) -> pa.Table:
    store = Store.at(out)
    (unit,) = batch.to_pylist()
    sig = read_folder(store, f"{SIGNATURES}/{unit['folder']}", ["uid", "keys"])
    if sig is None or not sig.num_rows:
        return KEY_SCHEMA.empty_table()
    uid = sig.column("uid").to_numpy()
    keys = np.asarray(pc.list_flatten(sig.column("keys")).to_numpy()).reshape(len(uid), -1)
    cluster = np.zeros(len(uid), np.uint64)
    decided = read_latest(store, f"{CLUSTERS}/{unit['folder']}", ["rep", "size"])
    if decided is not None and decided.num_rows:
        clustered = decided.filter(pc.greater(decided.column("size"), 1))
        member = clustered.column("uid").to_numpy()
        inside = ranged.within(member, uid)
        cluster[np.searchsorted(uid, member[inside])] = \
            rep_key(clustered.column("rep").to_numpy()[inside])
    return key_rows(np.hstack([keys, cluster[:, None]]), uid, np.ones(len(uid), bool), level)


def _url_rows(batch: pa.Table, *, out: str, level: int, stamp: str) -> pa.Table:
    store = Store.at(out)
    (unit,) = batch.to_pylist()
    sig = with_url(store, unit["folder"])
    if sig is None:
        return URL_INDEX_ROWS.empty_table()
    uid, n = sig.column("uid").to_numpy(), sig.num_rows
    kept = ~np.isin(uid, dropped_by_url(store, unit["folder"]))
    url = sig.column("url").to_numpy()
    return pa.table({"bucket": range_of(url, level), "url": url, "uid": uid,
                     "folder": [unit["folder"]] * n, "row": sig.column("row"),
                     "crawl": sig.column("crawl"), "prio": sig.column("prio"),
                     "rank": id_rank(sig.column("id").to_pylist()), "kept": kept,
                     "run": [stamp] * n}, schema=URL_INDEX_ROWS)


def _write_range(group: pa.Table, *, out: str, root: str, column: str, level: int,
                 stamp: str) -> pa.Table:
    at = int(group.column("bucket")[0].as_py())
    ranged.write(Store.at(out), root, level, at, stamp, group.drop_columns(["bucket"]), column)
    return pa.table({"rows": [group.num_rows]})


def _remove_index(store: Store) -> None:
    for info in store.fs.get_file_info(pafs.FileSelector(store.path("dedup"), recursive=True,
                                                         allow_not_found=True)):
        if info.type == pafs.FileType.File:
            store.delete(info.path)


def _sign_outputs(batch: pa.Table, *, out: str, spec, buckets: int, stamp: str) -> pa.Table:
    """One done shard: its rows that reached dedup, signed again from the outputs; its
    URL drops carried over; its clustered rows on to the keeper shuffle."""
    store = Store.at(out)
    (unit,) = batch.to_pylist()
    stage: Dedup = spec.build()
    rows = _output_rows(store, unit, stage)
    if rows is None or not rows.num_rows:
        return MEMBER_SCHEMA.empty_table()
    rows = rows.sort_by("source_row")
    source_row = rows.column("source_row").to_numpy().astype(np.int64)
    uid = (np.int64(unit["number"]) << np.int64(32)) | source_row
    keys, urls = stage.keys(rows)
    store.write_table(pa.table({
        "uid": uid, "row": source_row, "id": rows.column("id"), "prio": stage.priority(rows, uid),
        "keys": pa.FixedSizeListArray.from_arrays(pa.array(keys.reshape(-1), pa.uint64()),
                                                  keys.shape[1]),
        "url": pa.array(urls, pa.uint64()), "crawl": stage.crawls(rows, unit["run_id"])}),
        store.path(SIGNATURES, unit["folder"], f"{int(source_row[0]):010d}.parquet"))
    if "dup_url_keep" in rows.column_names:
        dropped = pc.equal(rows.column("dup_url_keep"), False).fill_null(False)
        if pc.any(dropped).as_py():
            lost = rows.filter(dropped)
            store.write_table(pa.table({
                "row": lost.column("source_row").cast(pa.int64()),
                "uid": pa.array(uid[dropped.to_numpy(zero_copy_only=False)]),
                "url_keep": pa.array([False] * lost.num_rows),
                "url_reason": lost.column("dup_url_keep_reason")}),
                store.path(URLS, unit["folder"], f"{stamp}.parquet"))
    clustered = pc.greater(rows.column("dup_cluster_size"), 1).fill_null(False)
    mine = rows.filter(clustered)
    return pa.table({
        "bucket": bucket(_cluster_hash(mine.column("dup_cluster").to_pylist()), buckets),
        "folder": [unit["folder"]] * mine.num_rows,
        "row": mine.column("source_row").cast(pa.int64()),
        "uid": pa.array(uid[clustered.to_numpy(zero_copy_only=False)]),
        "cluster_id": mine.column("dup_cluster"), "keep": mine.column("dup_keep"),
        "size": mine.column("dup_cluster_size")}, schema=MEMBER_SCHEMA)


def _output_rows(store: Store, unit: dict, stage: Dedup) -> pa.Table | None:
    """A shard's real rows in curated and rejected output that got a dedup decision."""
    prefix = f"part-{unit['key']}-"
    tables = []
    for outcome in OUTCOMES:
        for path in store.files(outcome, f"{prefix}*.parquet"):
            if is_made_part(path):
                continue
            present = store.schema(path).names
            wanted = ["id", "text", "source_row", "dup_cluster", "dup_cluster_size", "dup_keep",
                      "dup_url_keep", "dup_url_keep_reason", *stage.input_columns()]
            table = store.read_table(path, columns=[c for c in dict.fromkeys(wanted)
                                                    if c in present])
            if "dup_keep" in table.column_names:
                tables.append(table.filter(pc.is_valid(table.column("dup_keep"))))
    return pa.concat_tables(tables, promote_options="permissive") if tables else None


def _cluster_hash(ids: list[str]) -> np.ndarray:
    return np.array([int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "big")
                     for i in ids], np.uint64)


def _name_keepers(group: pa.Table) -> pa.Table:
    """Per published cluster (its dup_cluster id): the uid of its kept member, or, when
    none is in the output any more, a uid no document has (the cluster chooses again
    when a new copy arrives)."""
    group = group.sort_by([("cluster_id", "ascending"), ("keep", "descending"),
                           ("uid", "ascending")])
    cid = group.column("cluster_id").to_pylist()
    uid = group.column("uid").to_numpy()
    keep = group.column("keep").to_numpy(zero_copy_only=False)
    starts = [i for i in range(len(cid)) if i == 0 or cid[i] != cid[i - 1]]
    bounds = starts + [len(cid)]
    rep = np.empty(len(cid), np.int64)
    size = group.column("size").to_numpy().copy()
    for start, end in zip(bounds[:-1], bounds[1:]):
        rep[start:end] = uid[start] if keep[start] else \
            -2 - (int(_cluster_hash([cid[start]])[0]) >> 2)
        size[start:end] = size[start:end].max()  # members written later saw it larger
    return group.set_column(group.schema.get_field_index("size"), "size", pa.array(size)) \
        .append_column("rep", pa.array(rep))


def _write(group: pa.Table, *, out: str, stamp: str) -> pa.Table:
    store = Store.at(out)
    folder = group.column("folder")[0].as_py()
    table = group.select(["row", "uid", "rep", "cluster_id", "keep", "size"]).sort_by("row")
    store.write_table(table, store.path(CLUSTERS, folder, f"{stamp}.parquet"))
    return pa.table({"folder": [folder], "members": [table.num_rows]})
