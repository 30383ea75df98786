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

Only this run's documents are shuffled, by URL key range (ranged.py); each range
reads the earlier documents under its URLs from the URL index (what the choice
needs, and whether each is kept under its URL now), and writes back the rows this
run decided, so the index is read by ranges and never shuffled.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.pipeline.io.storage import Store
from thresher.pipeline.steps.dedup import ranged
from thresher.pipeline.steps.dedup.common import (NONE, SIGNATURES, URL_INDEX, URLS, col,
                                                  id_rank, read_folder, read_latest, units)
from thresher.pipeline.steps.dedup.ranged import range_of

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
COUNT = -3  # the uid of the row that carries a range's count of index rows read
INDEXED = ["url", "uid", "folder", "row", "crawl", "prio", "rank", "kept"]
INDEX_SCHEMA = pa.schema([URL_ROW_SCHEMA.field(c) for c in INDEXED] + [("run", pa.string())])


def decide_urls(store: Store, folders: list[str], departed, *, level: int, written: list[int],
                live: np.ndarray, partitions: int, cpus: int, run_id: str,
                policy: str) -> list[dict]:
    """Write the URL decisions of this run's shards (`folders`) and of the earlier
    documents they change; one summary row per shard folder written. `departed`: URL
    keys whose kept document left (its shard changed): those URLs choose again, and
    an earlier document under one may be kept now (promoted)."""
    import ray

    rows = units([{"folder": f} for f in folders], cpus).map_batches(
        _url_rows, batch_size=1, batch_format="pyarrow",
        fn_kwargs={"out": store.location, "level": level})
    if len(departed):
        rows = rows.union(ray.data.from_arrow(_departed_rows(departed, level)))
    rows = rows.materialize()
    decided = rows.groupby("bucket", num_partitions=partitions).map_groups(
        _decide_range, batch_format="pyarrow",
        fn_kwargs={"out": store.location, "level": level, "written": written, "live": live,
                   "run_id": run_id, "policy": policy}).materialize()
    read = sum(int(pc.sum(b.column("row")).as_py() or 0) for b in decided.filter(
        expr=col("uid") == COUNT).iter_batches(batch_format="pyarrow", batch_size=None))
    decided = decided.filter(expr=col("uid") != COUNT).materialize()
    written_rows = decided.groupby("folder", num_partitions=partitions).map_groups(
        _write, batch_format="pyarrow", fn_kwargs={"out": store.location, "run_id": run_id})
    stats = {"url_rows": rows.count(), "url_decisions": decided.count(),
             "url_index_rows_read": read}
    return [row for batch in written_rows.iter_batches(batch_format="pyarrow", batch_size=None)
            for row in batch.to_pylist()], stats


def with_url(store: Store, folder: str) -> pa.Table | None:
    """A shard's signed documents that have a URL, with what the URL choice needs."""
    sig = read_folder(store, f"{SIGNATURES}/{folder}", ["uid", "row", "id", "prio", "url", "crawl"])
    return None if sig is None else sig.filter(pa.array(sig.column("url").to_numpy() != 0))


def dropped_by_url(store: Store, folder: str) -> np.ndarray:
    """The uids of a shard's documents that their latest URL decision drops."""
    decided = read_latest(store, f"{URLS}/{folder}", ["url_keep"])
    if decided is None or not decided.num_rows:
        return np.zeros(0, np.int64)
    keep = decided.column("url_keep").to_numpy(zero_copy_only=False).astype(bool)
    return decided.column("uid").to_numpy()[~keep]


def _url_rows(batch: pa.Table, *, out: str, level: int) -> pa.Table:
    """A new shard's documents that have a URL, with what the choice needs."""
    (unit,) = batch.to_pylist()
    sig = with_url(Store.at(out), unit["folder"])
    n = 0 if sig is None else sig.num_rows
    if not n:
        return URL_ROW_SCHEMA.empty_table()
    url = sig.column("url").to_numpy()
    return pa.table({"bucket": range_of(url, level), "url": url, "uid": sig.column("uid"),
                     "folder": [unit["folder"]] * n, "row": sig.column("row"),
                     "new": np.ones(n, bool), "crawl": sig.column("crawl"),
                     "prio": sig.column("prio"), "rank": id_rank(sig.column("id").to_pylist()),
                     "kept": np.zeros(n, bool)}, schema=URL_ROW_SCHEMA)


def _departed_rows(urls: np.ndarray, level: int) -> pa.Table:
    """New-marked rows with no document (uid NONE): they touch a URL, nothing more."""
    n = len(urls)
    urls = np.asarray(urls, np.uint64)
    return pa.table({"bucket": range_of(urls, level), "url": urls, "uid": np.full(n, NONE),
                     "folder": pa.nulls(n, pa.string()), "row": pa.nulls(n, pa.int64()),
                     "new": np.ones(n, bool), "crawl": pa.nulls(n, pa.string()),
                     "prio": pa.nulls(n, pa.float64()), "rank": np.zeros(n, np.uint64),
                     "kept": np.zeros(n, bool)}, schema=URL_ROW_SCHEMA)


def _decide_range(group: pa.Table, *, out: str, level: int, written: list[int],
                  live: np.ndarray, run_id: str, policy: str) -> pa.Table:
    """One URL range: this run's rows with the index's earlier documents under the same
    URLs; the rows decided now go back to the index with whether each is kept. A last
    row (uid COUNT) carries the index rows read, as its `row`."""
    store = Store.at(out)
    at = int(group.column("bucket")[0].as_py())
    ranged.compact(store, URL_INDEX, level, at, run_id, "url", ["uid"], live, version="run")
    files = [f for f in ranged.overlapping(store, URL_INDEX, level, at, written)
             if not f.endswith(f"/{run_id}.parquet")]
    old = ranged.read(store, files, "url", np.unique(group.column("url").to_numpy()), live,
                      level, at)
    rows = group.drop_columns(["bucket"])
    if old is not None:
        old = ranged.latest(old, ["uid"], version="run")
        old = old.select(INDEXED).append_column("new", pa.array(np.zeros(old.num_rows, bool)))
        rows = pa.concat_tables([rows, old.select(rows.column_names)])
    decided = decide_group(rows, policy=policy)  # sorted by uid
    uid, decided_uid = rows.column("uid").to_numpy(), decided.column("uid").to_numpy()
    hit = ranged.within(uid, decided_uid)
    now = rows.filter(pa.array(hit)).select(INDEXED)
    now = now.set_column(INDEXED.index("kept"), "kept", decided.column("url_keep").take(
        pa.array(np.searchsorted(decided_uid, uid[hit])))) \
        .append_column("run", pa.array([run_id] * now.num_rows, pa.string()))
    ranged.write(store, URL_INDEX, level, at, run_id, now, "url")
    count = pa.table({"folder": [None], "row": [0 if old is None else old.num_rows],
                      "uid": [COUNT], "url_keep": [None], "url_reason": [None],
                      "changed": [None]}, schema=URL_DECISION_SCHEMA)
    return pa.concat_tables([decided, count])


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
    order = np.argsort(uid[out], kind="stable")
    return pa.table({"folder": group.column("folder").filter(pa.array(out)),
                     "row": group.column("row").filter(pa.array(out)), "uid": uid[out],
                     "url_keep": keep[out], "url_reason": pa.array(reason[out], pa.string()),
                     "changed": changed[out]}, schema=URL_DECISION_SCHEMA).take(order)


def _write(group: pa.Table, *, out: str, run_id: str) -> pa.Table:
    store = Store.at(out)
    folder = group.column("folder")[0].as_py()
    table = group.drop_columns(["folder"]).sort_by("row")
    store.write_table(table.drop_columns(["changed"]),
                      store.path(URLS, folder, f"{run_id}.parquet"))
    dropped = table.num_rows - int(pc.sum(table.column("url_keep")).as_py() or 0)
    return pa.table({"folder": [folder], "url_dropped": [dropped],
                     "changed": [int(pc.sum(table.column("changed")).as_py() or 0)]})
