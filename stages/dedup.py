"""Deduplication (DESIGN.md 4, `dedup`): exact, URL and MinHash near-duplicates.

Which copy of a document survives depends on every other copy, in this crawl and in
the crawls before it, so the work is split in two:
- keys(): this stage's pure part. Each document's 64-bit keys: one per MinHash band,
  one for its normalized text, one for its normalized URL. The pipeline's dedup step
  (pipeline/steps/dedup.py) computes them for every document, groups equal keys
  through Ray Data's shuffle, finds the clusters and decides which member to keep.
- __call__(): during the run, each document gets the step's decision: `dup_cluster`
  (the id of the kept member), `dup_cluster_size` and `dup_keep`. A document in no
  cluster is its own cluster of one.

The stage is a *gate*: rows that fail a filter on its columns (`dup_keep != false`)
are decided at once, and the later stages do not spend time on them.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from thresher.models.minhash import (MinHasher, MinHashSettings, dedup_words, digest64,
                                     url_form)
from thresher.stages.base import Resources, Stage


def shard_folder(source_shard: str) -> str:
    """The index folder of an input shard: a hash of its path, so that a shard whose
    content changed replaces its old entries."""
    return hashlib.sha1(source_shard.encode()).hexdigest()[:12]


class Dedup(Stage):
    name = "dedup"
    columns = {"dup_cluster": pa.string(), "dup_cluster_size": pa.int64(),
               "dup_keep": pa.bool_()}
    gate = True
    default_resources = Resources(batch_size=1024)

    def __init__(self, bands: int = 14, rows: int = 8, ngram: int = 5, seed: int = 1,
                 near: bool = True, exact: bool = True, url: bool = True,
                 url_column: str = "url", keep_by: str | None = None,
                 partitions: int | str = "auto", clusters: str | None = None,
                 resources: Resources | None = None):
        super().__init__(resources)
        for label, value in (("bands", bands), ("rows", rows), ("ngram", ngram)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be a positive integer, got {value!r}")
        if not (near or exact or url):
            raise ValueError("near, exact and url are all off: nothing to deduplicate by")
        if partitions != "auto" and (not isinstance(partitions, int) or partitions < 1):
            raise ValueError(f"partitions must be a positive integer or auto, got {partitions!r}")
        self.settings = MinHashSettings(bands=bands, rows=rows, ngram=ngram, seed=seed)
        self.near, self.exact, self.url = near, exact, url
        self.url_column, self.keep_by = url_column, keep_by
        self.partitions = partitions
        self.clusters = clusters  # the dedup step's decisions for this run (a folder)
        self._hasher: MinHasher | None = None
        self._decided: tuple[str, dict] | None = None  # the last shard's decisions

    @property
    def num_keys(self) -> int:
        return (self.settings.bands if self.near else 0) + int(self.exact) + int(self.url)

    def input_columns(self) -> list[str]:
        """What keys() reads besides the text."""
        return [c for c in ((self.url_column if self.url else None), self.keep_by) if c]

    def describe(self) -> dict:
        s = self.settings
        return {"near": self.near and {"bands": s.bands, "rows": s.rows, "ngram": s.ngram,
                                       "seed": s.seed, "hashes": s.num_hashes},
                "exact": self.exact, "url": self.url and self.url_column,
                "keep_by": self.keep_by or "hash of the id"}

    def memory_estimate(self) -> int:
        """No model: the permutation blocks (about 60 MB at once) and one shard's
        decisions."""
        return 96 << 20

    def setup(self) -> None:
        self._hasher = MinHasher(self.settings)

    def check(self) -> None:
        self.setup()

    def keys(self, batch: pa.Table) -> np.ndarray:
        """(rows, num_keys) uint64: the bands' keys, then the text's, then the URL's.
        0 stands for no key (no words, no URL)."""
        if self._hasher is None:
            self.setup()
        words = [dedup_words(t) for t in batch.column("text").to_pylist()]
        has_words = np.array([bool(w) for w in words])
        parts = []
        if self.near:
            bands = self._hasher.band_keys(self._hasher.signatures(words))
            parts.append(np.where(has_words[:, None], bands, np.uint64(0)))
        if self.exact:
            parts.append(np.array([digest64(w, "thresher-text") if w else 0 for w in words],
                                  np.uint64)[:, None])
        if self.url:
            urls = (batch.column(self.url_column).cast(pa.string()).to_pylist()
                    if self.url_column in batch.column_names else [None] * batch.num_rows)
            forms = [url_form(u) if u else "" for u in urls]
            parts.append(np.array([digest64(f, "thresher-url") if f else 0 for f in forms],
                                  np.uint64)[:, None])
        return np.hstack(parts) if parts else np.zeros((batch.num_rows, 0), np.uint64)

    def priority(self, batch: pa.Table) -> pa.Array:
        """The keep_by score of each row (higher is kept first); null without one."""
        if not self.keep_by:
            return pa.nulls(batch.num_rows, pa.float64())
        if self.keep_by not in batch.column_names:
            raise ValueError(f"keep_by column {self.keep_by!r} is not in the data (columns: "
                             f"{', '.join(batch.column_names)})")
        return pc.cast(batch.column(self.keep_by), pa.float64())

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.clusters is None:
            raise RuntimeError("dedup has no clusters: the pipeline's dedup step computes "
                               "them before the run (thresher curate does it)")
        ids = batch.column("id").to_pylist()
        cluster, size, keep = list(ids), [1] * len(ids), [True] * len(ids)
        for i, (shard, row) in enumerate(zip(batch.column("source_shard").to_pylist(),
                                             batch.column("source_row").to_pylist())):
            found = self._decisions(shard).get(row)
            if found is not None:
                cluster[i], size[i], keep[i] = found
        return (batch.append_column("dup_cluster", pa.array(cluster, pa.string()))
                .append_column("dup_cluster_size", pa.array(size, pa.int64()))
                .append_column("dup_keep", pa.array(keep, pa.bool_())))

    def _decisions(self, source_shard: str) -> dict:
        """row -> (cluster id, size, keep) for the shard's rows in clusters of 2+."""
        if self._decided is None or self._decided[0] != source_shard:
            self._decided = (source_shard, read_decisions(self.clusters, source_shard))
        return self._decided[1]


def read_decisions(clusters: str, source_shard: str) -> dict:
    fs, root = pafs.FileSystem.from_uri(clusters) if "://" in clusters else \
        (pafs.LocalFileSystem(), clusters)
    selector = pafs.FileSelector(f"{root.rstrip('/')}/{shard_folder(source_shard)}",
                                 allow_not_found=True)
    found = {}
    for info in fs.get_file_info(selector):
        if info.type != pafs.FileType.File or not info.path.endswith(".parquet"):
            continue
        table = pq.read_table(info.path, filesystem=fs,
                              columns=["row", "cluster_id", "size", "keep"])
        for row, cluster, size, keep in zip(*(table.column(c).to_pylist()
                                              for c in table.column_names)):
            found[row] = (cluster, size, keep)
    return found
