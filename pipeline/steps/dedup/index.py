"""The index in OUT/dedup: its format, what each run adds and retires, its size.

The index records its format version and key settings (dedup/format.json) before its
first signature is written; an index of another version or other settings is
refused, never mixed, since its keys would silently never match. `thresher dedup
rebuild` makes it current from the outputs (rebuild.py).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pyarrow.fs as pafs

from thresher.models.minhash import FORMAT_VERSION as KEYS_VERSION
from thresher.pipeline.io.storage import Store
from thresher.pipeline.steps.dedup.common import (CLUSTERS, FORMAT_FILE, INDEX_FILE,
                                                  SIGNATURES, URLS, DedupError, read_folder,
                                                  read_latest)
from thresher.pipeline.steps.dedup.urls import dropped_by_url
from thresher.stages.dedup import Dedup, shard_folder


FORMAT_VERSION = 3  # 3: key and URL indexes by key range; 2: keys of words split at any space


def settings(stage: Dedup) -> dict:
    """What makes keys comparable: another value of any of these makes other keys."""
    s = stage.settings
    found = {"bands": s.bands, "rows": s.rows, "ngram": s.ngram, "seed": s.seed,
             "near": stage.near, "exact": stage.exact, "url": stage.url, "keys": KEYS_VERSION}
    if s.shingles != "thresher":  # said only when not the default: older indexes match
        found["shingles"] = s.shingles
    return found


def saved_format(store: Store) -> dict | None:
    """The index's format and settings; format 1 for an index written before versions
    were recorded; None when there is no index yet."""
    path = store.path(FORMAT_FILE)
    if store.exists(path):
        return json.loads(store.read_text(path))
    folders = store.fs.get_file_info(pafs.FileSelector(store.path(SIGNATURES),
                                                       allow_not_found=True))
    if store.exists(store.path(INDEX_FILE)) or folders:
        old = summary(store)
        return {"format": 1, "settings": old.get("settings")}
    return None


def current(stage: Dedup) -> dict:
    return {"format": FORMAT_VERSION, "settings": settings(stage)}


def check_format(store: Store, stage: Dedup, output: str) -> None:
    """Refuse an index of another format or other settings, in one line; record this
    one's before anything is written to a new index."""
    mine = current(stage)
    saved = saved_format(store)
    if saved is None:
        store.write_text(store.path(FORMAT_FILE), json.dumps(mine))
        return
    if saved != mine:
        raise DedupError(
            f"the dedup index in {store.uri('dedup')} has format {saved['format']} with "
            f"settings {saved['settings']}, and this run needs format {FORMAT_VERSION} with "
            f"{mine['settings']}: run `thresher dedup rebuild --output {output}` (with this "
            "config) to rebuild it from the outputs, or use a new output folder")


def retire(store: Store, todo, numbers: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Remove the entries of shards about to be (re)done: those of a crashed run, or of
    a shard whose content changed. Returns what leaves with a changed shard: the uids of
    kept documents of clusters of 2+ (their clusters choose again this run) and the URL
    keys of documents kept under their URL (the others under it choose again)."""
    departed, urls = [], []
    for shard in todo:
        folder = shard_folder(shard.path)
        decided = read_latest(store, f"{CLUSTERS}/{folder}", ["keep", "size"])
        if decided is not None and decided.num_rows:
            uid = decided.column("uid").to_numpy()
            keeper = decided.column("keep").to_numpy(zero_copy_only=False).astype(bool) & \
                (decided.column("size").to_numpy() > 1)
            departed.append(uid[keeper & ((uid >> 32) != numbers[shard.path])])
        urls.append(_kept_urls(store, folder, numbers[shard.path]))
        for root in (SIGNATURES, CLUSTERS, URLS):
            for path in store.files(f"{root}/{folder}", "*"):
                store.delete(path)
    return (np.concatenate(departed) if departed else np.zeros(0, np.int64),
            np.concatenate(urls) if urls else np.zeros(0, np.uint64))


def _kept_urls(store: Store, folder: str, number: int) -> np.ndarray:
    """The URL keys of a shard's old documents (another number than now) that no URL
    decision dropped."""
    sig = read_folder(store, f"{SIGNATURES}/{folder}", ["uid", "url"])
    if sig is None or not sig.num_rows or "url" not in sig.column_names:
        return np.zeros(0, np.uint64)
    uid, url = sig.column("uid").to_numpy(), sig.column("url").to_numpy()
    kept = (url != 0) & ((uid >> 32) != number) & ~np.isin(uid, dropped_by_url(store, folder))
    return np.unique(url[kept])


def summary(store: Store) -> dict:
    path = store.path(INDEX_FILE)
    return json.loads(store.read_text(path)) if store.exists(path) else {}


def signed_counts(store: Store, paths: list[str]) -> dict[str, int]:
    """Signed documents per shard folder, from the signature files' footers."""
    counts = {}
    for path in paths:
        folder = shard_folder(path)
        counts[folder] = sum(store.num_rows(f) for f in
                             store.files(f"{SIGNATURES}/{folder}", "*.parquet"))
    return counts


def record(store: Store, stage: Dedup, pending: dict[str, int], finished: set[str]) -> dict:
    """After the run: the index summary (documents per shard folder) with this run's
    finished shards in it; what `thresher plan` and `status` show."""
    index = summary(store)
    shards = index.get("shards", {})
    for folder, docs in pending.items():
        if folder in finished:
            shards[folder] = docs
        else:
            shards.pop(folder, None)
    index = {"format": FORMAT_VERSION, "settings": settings(stage), "shards": shards,
             "docs": sum(shards.values()),
             "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    store.write_text(store.path(INDEX_FILE), json.dumps(index))
    return index


def size(store: Store) -> dict:
    """Documents and shards in the dedup index, and the bytes its files take."""
    index = summary(store)
    if not index:
        return {}
    nbytes = 0
    for info in store.fs.get_file_info(pafs.FileSelector(store.path("dedup"), recursive=True,
                                                         allow_not_found=True)):
        nbytes += info.size or 0
    return {"documents": index.get("docs", 0), "shards": len(index.get("shards", {})),
            "bytes": nbytes}
