"""URL decisions, apart from content: a URL match never joins content clusters.

Documents are grouped by their normalized URL's key (one shuffle of the documents
that have a URL). Within one crawl, one document per URL is kept: one an earlier
run kept, else the keep rule's (highest `keep_by`, then the lowest hash of the id).
Across crawls, `url_crawls` says what a URL seen in another crawl means:
- `off` (the default): nothing; content decides. FineWeb deduplicated each dump on
  its own and found that better than deduplicating across dumps.
- `keep_first`: a URL kept in an earlier crawl drops later crawls' documents under
  it, as RefinedWeb dropped URLs seen in earlier dumps.
- `keep_newest`: the newest crawl's document replaces the earlier one, which moves
  to rejected (its shard is written again by this run).
Crawls are ordered by their names (Common Crawl's CC-MAIN-YYYY-WW, or run ids,
which sort by time). Decisions go to OUT/dedup/urls/<shard>/<run>.parquet.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.pipeline.io.storage import Store
from thresher.pipeline.steps.dedup.common import (NONE, SIGNATURES, URLS, bucket, id_rank,
                                                  read_folder, read_latest, units)

SAME_CRAWL = "same URL in this crawl"
EARLIER_CRAWL = "URL kept in an earlier crawl"
NEWER_CRAWL = "URL re-crawled later"
URL_ROW_SCHEMA = pa.schema([("bucket", pa.int64()), ("url", pa.uint64()), ("uid", pa.int64()),
                            ("folder", pa.string()), ("row", pa.int64()), ("new", pa.bool_()),
                            ("crawl", pa.string()), ("prio", pa.float64()),
                            ("rank", pa.uint64()), ("kept", pa.bool_())])
URL_DECISION_SCHEMA = pa.schema([("folder", pa.string()), ("row", pa.int64()),
                                 ("uid", pa.int64()), ("url_keep", pa.bool_()),
                                 ("url_reason", pa.string()), ("changed", pa.bool_())])


def decide_urls(store: Store, folders: list[dict], departed, *, buckets: int,
                partitions: int, cpus: int, run_id: str, policy: str) -> list[dict]:
    """Write this run's URL decisions; one summary row per shard folder written.
    `departed`: URL keys whose kept document left (its shard changed): those URLs
    choose again, and an earlier document under one may be kept now (promoted)."""
    import ray

    rows = units(folders, cpus).map_batches(
        _url_rows, batch_size=1, batch_format="pyarrow",
        fn_kwargs={"out": store.location, "buckets": buckets})
    if len(departed):
        rows = rows.union(ray.data.from_arrow(_departed_rows(departed, buckets)))
    decided = rows.groupby("bucket", num_partitions=partitions).map_groups(
        decide_group, batch_format="pyarrow", fn_kwargs={"policy": policy})
    written = decided.groupby("folder", num_partitions=partitions).map_groups(
        _write, batch_format="pyarrow", fn_kwargs={"out": store.location, "run_id": run_id})
    return [row for batch in written.iter_batches(batch_format="pyarrow", batch_size=None)
            for row in batch.to_pylist()]


def _url_rows(batch: pa.Table, *, out: str, buckets: int) -> pa.Table:
    """A shard's documents that have a URL, with what the choice needs; for earlier
    shards whether the document is kept under its URL now."""
    store = Store.at(out)
    (unit,) = batch.to_pylist()
    sig = read_folder(store, f"{SIGNATURES}/{unit['folder']}",
                      ["uid", "row", "id", "prio", "url", "crawl"])
    if sig is None:
        return URL_ROW_SCHEMA.empty_table()
    sig = sig.filter(pa.array(sig.column("url").to_numpy() != 0))
    if not sig.num_rows:
        return URL_ROW_SCHEMA.empty_table()
    uid = sig.column("uid").to_numpy()
    n = len(uid)
    kept = np.full(n, not unit["new"])
    if not unit["new"]:
        decided = read_latest(store, f"{URLS}/{unit['folder']}", ["url_keep"])
        if decided is not None and decided.num_rows:
            duid = decided.column("uid").to_numpy()
            where = np.minimum(np.searchsorted(uid, duid), n - 1)
            inside = uid[where] == duid
            kept[where[inside]] = decided.column("url_keep").to_numpy(
                zero_copy_only=False)[inside]
    url = sig.column("url").to_numpy()
    return pa.table({"bucket": bucket(url, buckets), "url": url, "uid": uid,
                     "folder": [unit["folder"]] * n, "row": sig.column("row"),
                     "new": np.full(n, unit["new"]), "crawl": sig.column("crawl"),
                     "prio": sig.column("prio"), "rank": id_rank(sig.column("id").to_pylist()),
                     "kept": kept}, schema=URL_ROW_SCHEMA)


def _departed_rows(urls: np.ndarray, buckets: int) -> pa.Table:
    """New-marked rows with no document (uid NONE): they touch a URL, nothing more."""
    n = len(urls)
    urls = np.asarray(urls, np.uint64)
    return pa.table({"bucket": bucket(urls, buckets), "url": urls, "uid": np.full(n, NONE),
                     "folder": pa.nulls(n, pa.string()), "row": pa.nulls(n, pa.int64()),
                     "new": np.ones(n, bool), "crawl": pa.nulls(n, pa.string()),
                     "prio": pa.nulls(n, pa.float64()), "rank": np.zeros(n, np.uint64),
                     "kept": np.zeros(n, bool)}, schema=URL_ROW_SCHEMA)


def decide_group(group: pa.Table, *, policy: str) -> pa.Table:
    """The URL decisions of one bucket: for every URL that a new document has, or
    whose kept document left."""
    url = group.column("url").to_numpy()
    new = group.column("new").to_numpy(zero_copy_only=False)
    touched = np.isin(url, np.unique(url[new])) & (group.column("uid").to_numpy() != NONE)
    group = group.filter(pa.array(touched))
    if not group.num_rows:
        return URL_DECISION_SCHEMA.empty_table()
    url, new = group.column("url").to_numpy(), group.column("new").to_numpy(zero_copy_only=False)
    crawl = group.column("crawl").to_pylist()
    kept = group.column("kept").to_numpy(zero_copy_only=False)
    prio = group.column("prio").to_numpy(zero_copy_only=False).astype(np.float64)
    score = np.where(np.isnan(prio), np.inf, -prio)
    rank = group.column("rank").to_numpy()
    uid = group.column("uid").to_numpy()
    keep = np.ones(len(url), bool)
    reason = np.full(len(url), None, object)
    # Per URL, then per crawl in order: the crawl's keeper first (kept before, then
    # the keep rule), the others of that crawl after it.
    tier = np.where(kept, 0, np.where(new, 1, 2))  # kept before, new, dropped before
    _, crawl_order = np.unique(np.array(crawl, dtype=str), return_inverse=True)
    order = np.lexsort((rank, score, np.where(kept, uid, 0), tier, crawl_order.reshape(-1),
                        url))
    bounds = np.flatnonzero(np.r_[True, url[order][1:] != url[order][:-1], True])
    for start, end in zip(bounds[:-1], bounds[1:]):
        rows = order[start:end]
        keepers = []
        for i, at in enumerate(rows):
            if i and crawl[at] == crawl[rows[i - 1]]:
                keep[at], reason[at] = False, SAME_CRAWL
            else:
                keepers.append(at)
        if policy == "keep_first":
            for at in keepers[1:]:
                keep[at], reason[at] = False, EARLIER_CRAWL
        elif policy == "keep_newest":
            for at in keepers[:-1]:
                keep[at], reason[at] = False, NEWER_CRAWL
    changed = ~new & (keep != kept)  # an earlier document dropped now, or kept now
    out = new | changed
    return pa.table({"folder": group.column("folder").filter(pa.array(out)),
                     "row": group.column("row").filter(pa.array(out)), "uid": uid[out],
                     "url_keep": keep[out], "url_reason": pa.array(reason[out], pa.string()),
                     "changed": changed[out]}, schema=URL_DECISION_SCHEMA)


def _write(group: pa.Table, *, out: str, run_id: str) -> pa.Table:
    store = Store.at(out)
    folder = group.column("folder")[0].as_py()
    table = group.drop_columns(["folder"]).sort_by("row")
    store.write_table(table.drop_columns(["changed"]),
                      store.path(URLS, folder, f"{run_id}.parquet"))
    dropped = table.num_rows - int(pc.sum(table.column("url_keep")).as_py() or 0)
    return pa.table({"folder": [folder], "url_dropped": [dropped],
                     "changed": [int(pc.sum(table.column("changed")).as_py() or 0)]})
