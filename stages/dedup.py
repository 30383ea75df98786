"""Deduplication (DESIGN.md 4, `dedup`): exact and MinHash near-duplicates, and one
document per URL.

Which copy of a document survives depends on every other copy, in this crawl and in
the crawls before it, so the work is split in two:
- keys(): this stage's pure part. Each document's 64-bit content keys (one per MinHash
  band, one for its normalized text) and the key of its normalized URL. The pipeline's
  dedup step (pipeline/steps/dedup/) computes them for every document, groups equal
  keys through Ray Data's shuffles, finds the clusters and decides which member to keep.
- __call__(): during the run, each document gets the step's decisions: `dup_cluster`
  (the id of the kept member), `dup_cluster_size`, `dup_keep`, and for URLs
  `dup_url_keep` with `dup_url_keep_reason`. A document in no cluster is its own
  cluster of one. URL matches never join content clusters: they are decided apart.

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
from thresher.stages.base import Chart, Resources, Stage, filesystem_at

SCOPES = ("all", "crawl")
SHINGLES = ("thresher", "datatrove")
URL_CRAWLS = ("off", "keep_first", "keep_newest")


def shard_folder(source_shard: str) -> str:
    """The index folder of an input shard: a hash of its path, so that a shard whose
    content changed replaces its old entries."""
    return hashlib.sha1(source_shard.encode()).hexdigest()[:12]


class Dedup(Stage):
    name = "dedup"
    columns = {"dup_cluster": pa.string(), "dup_cluster_size": pa.int64(),
               "dup_keep": pa.bool_(), "dup_url_keep": pa.bool_(),
               "dup_url_keep_reason": pa.string()}
    gate = True
    default_resources = Resources(batch_size=1024)

    def __init__(self, bands: int = 14, rows: int = 8, ngram: int = 5, seed: int = 1,
                 near: bool = True, exact: bool = True, url: bool = True,
                 url_column: str = "url", url_crawls: str = "off", scope: str = "all",
                 crawl_column: str = "crawl", keep_by: str | None = None,
                 partitions: int | str = "auto", decisions: str | None = None,
                 run_id: str | None = None, shingles: str = "thresher",
                 keep_first: bool = False, resources: Resources | None = None):
        super().__init__(resources)
        for label, value in (("bands", bands), ("rows", rows), ("ngram", ngram)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be a positive integer, got {value!r}")
        if not (near or exact or url):
            raise ValueError("near, exact and url are all off: nothing to deduplicate by")
        if partitions != "auto" and (not isinstance(partitions, int) or partitions < 1):
            raise ValueError(f"partitions must be a positive integer or auto, got {partitions!r}")
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        if url_crawls is False:  # YAML reads a bare `off` as false
            url_crawls = "off"
        if url_crawls not in URL_CRAWLS:
            raise ValueError(f"url_crawls must be one of {', '.join(URL_CRAWLS)}, "
                             f"got {url_crawls!r}")
        if shingles not in SHINGLES:
            raise ValueError(f"shingles must be one of {', '.join(SHINGLES)}, got {shingles!r}")
        if keep_first and keep_by:
            raise ValueError("keep_first and keep_by both choose the kept copy: give one")
        self.settings = MinHashSettings(bands=bands, rows=rows, ngram=ngram, seed=seed,
                                        shingles=shingles)
        # The copy first in input order (the ledger's shard number, then the row) is
        # kept, as datatrove's MinHash keeps the lowest (file, document) of a pair.
        self.keep_first = keep_first
        self.near, self.exact, self.url = near, exact, url
        self.url_column, self.url_crawls = url_column, url_crawls
        self.scope, self.crawl_column = scope, crawl_column
        self.keep_by, self.partitions = keep_by, partitions
        self.decisions = decisions  # the index folder holding the step's decisions
        self.run_id = run_id  # the crawl of rows without a crawl column
        self._hasher: MinHasher | None = None
        self._decided: tuple[str, dict] | None = None  # the last shard's decisions

    @property
    def num_keys(self) -> int:
        """Content keys per document (the URL's is apart)."""
        return (self.settings.bands if self.near else 0) + int(self.exact)

    def input_columns(self) -> list[str]:
        """What keys() and crawls() read besides the text."""
        return [c for c in ((self.url_column if self.url else None), self.keep_by,
                            self.crawl_column) if c]

    def describe(self) -> dict:
        s = self.settings
        return {"near": self.near and {"bands": s.bands, "rows": s.rows, "ngram": s.ngram,
                                       "seed": s.seed, "hashes": s.num_hashes,
                                       "shingles": s.shingles},
                "exact": self.exact, "url": self.url and self.url_column,
                "url_crawls": self.url_crawls, "scope": self.scope,
                "crawl": f"column {self.crawl_column}, else the run",
                "keep_by": self.keep_by or ("first in input order" if self.keep_first
                                            else "hash of the id")}

    def memory_estimate(self) -> int:
        """No model: the permutation blocks (about 60 MB at once) and one shard's
        decisions."""
        return 96 << 20

    def setup(self) -> None:
        self._hasher = MinHasher(self.settings)

    def check(self) -> None:
        self.setup()

    def keys(self, batch: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """(rows, num_keys) uint64 content keys (the bands', then the text's), and the
        rows' URL keys. 0 stands for no key (no words, no URL)."""
        if self._hasher is None:
            self.setup()
        texts = batch.column("text").to_pylist()
        datatrove_near = self.near and self.settings.shingles == "datatrove"
        # dedup_words feeds thresher's shingles and the exact key: not made when unused
        words = [dedup_words(t) for t in texts] if self.exact or (self.near and not
                                                                  datatrove_near) else []
        parts = []
        if datatrove_near:
            shingle, offsets = self._hasher.datatrove_shingles(texts)
            bands = self._hasher.band_keys(self._hasher.sign(shingle, offsets))
            parts.append(np.where((np.diff(offsets) > 0)[:, None], bands, np.uint64(0)))
        elif self.near:
            bands = self._hasher.band_keys(self._hasher.signatures(words))
            has_words = np.array([bool(w) for w in words])
            parts.append(np.where(has_words[:, None], bands, np.uint64(0)))
        if self.exact:
            parts.append(np.array([digest64(w, "thresher-text") if w else 0 for w in words],
                                  np.uint64)[:, None])
        content = np.hstack(parts) if parts else np.zeros((batch.num_rows, 0), np.uint64)
        urls = np.zeros(batch.num_rows, np.uint64)
        if self.url and self.url_column in batch.column_names:
            forms = [url_form(u) if u else "" for u in
                     batch.column(self.url_column).cast(pa.string()).to_pylist()]
            urls = np.array([digest64(f, "thresher-url") if f else 0 for f in forms], np.uint64)
        return content, urls

    def crawls(self, batch: pa.Table, run_id: str) -> pa.Array:
        """Each row's crawl: its crawl column, else this run (one run, one crawl)."""
        if self.crawl_column not in batch.column_names:
            return pa.array([run_id] * batch.num_rows, pa.string())
        return pc.fill_null(batch.column(self.crawl_column).cast(pa.string()), run_id)

    def priority(self, batch: pa.Table, uid: np.ndarray) -> pa.Array:
        """The keep_by score of each row (higher is kept first); null without one. With
        keep_first, minus the rows' uids (shard number << 32 | row: exact in a float
        below 2^53, about two million shards)."""
        if self.keep_first:
            return pa.array(-np.asarray(uid).astype(np.float64))
        if not self.keep_by:
            return pa.nulls(batch.num_rows, pa.float64())
        if self.keep_by not in batch.column_names:
            raise ValueError(f"keep_by column {self.keep_by!r} is not in the data (columns: "
                             f"{', '.join(batch.column_names)})")
        return pc.cast(batch.column(self.keep_by), pa.float64())

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.decisions is None:
            raise RuntimeError("dedup has no decisions: the pipeline's dedup step computes "
                               "them before the run (thresher curate does it)")
        ids = batch.column("id").to_pylist()
        n = len(ids)
        cluster, size, keep = list(ids), [1] * n, [True] * n
        url_keep = [True if self.url else None] * n
        url_reason: list[str | None] = [None] * n
        for i, (shard, row) in enumerate(zip(batch.column("source_shard").to_pylist(),
                                             batch.column("source_row").to_pylist())):
            found = self._decisions(shard).get(row)
            if found is None:
                continue
            content, url = found
            if content is not None:
                cluster[i], size[i], keep[i] = content
            if url is not None:
                url_keep[i], url_reason[i] = url
        return (batch.append_column("dup_cluster", pa.array(cluster, pa.string()))
                .append_column("dup_cluster_size", pa.array(size, pa.int64()))
                .append_column("dup_keep", pa.array(keep, pa.bool_()))
                .append_column("dup_url_keep", pa.array(url_keep, pa.bool_()))
                .append_column("dup_url_keep_reason", pa.array(url_reason, pa.string())))

    def charts(self, curated: pa.Table, rejected: pa.Table, manifest: dict) -> list[Chart]:
        """Clusters by size (from the dedup step's manifest entry), and the share of
        documents removed per source and per crawl, where the input has them."""
        return [_clusters((manifest.get("dedup") or {}).get("clusters_by_size") or {}),
                *(chart for by in ("source", "crawl")
                  if (chart := _dup_rate(curated, rejected, by)) is not None)]

    def _decisions(self, source_shard: str) -> dict:
        """row -> (content decision or None, URL decision or None) for the shard's rows
        that some decision names."""
        if self._decided is None or self._decided[0] != source_shard:
            self._decided = (source_shard, read_decisions(self.decisions, source_shard))
        return self._decided[1]


def read_decisions(root: str, source_shard: str) -> dict:
    """A shard's decisions from the index (OUT/dedup): the content decisions in
    clusters/<shard>/ and the URL decisions in urls/<shard>/, one file per run that
    decided any of its rows; a later run's decision of a row replaces an earlier one."""
    fs, base = filesystem_at(root)
    found: dict[int, list] = {}
    for slot, (folder, columns) in enumerate(
            (("clusters", ["row", "cluster_id", "size", "keep"]),
             ("urls", ["row", "url_keep", "url_reason"]))):
        selector = pafs.FileSelector(f"{base.rstrip('/')}/{folder}/{shard_folder(source_shard)}",
                                     allow_not_found=True)
        paths = sorted(info.path for info in fs.get_file_info(selector)
                       if info.type == pafs.FileType.File and info.path.endswith(".parquet"))
        for path in paths:  # named by run: in the order they were decided
            wanted = _across_crawls(columns, pq.read_schema(path, filesystem=fs).names)
            table = pq.read_table(path, filesystem=fs, columns=wanted)
            for row, *values in zip(*(table.column(c).to_pylist() for c in wanted)):
                found.setdefault(row, [None, None])[slot] = tuple(values)
    return found


def _across_crawls(columns: list[str], present: list[str]) -> list[str]:
    """The size across all crawls where the file has it (`scope: crawl` counts a
    cluster within its crawl, and the component across crawls as `size_all`)."""
    return [("size_all" if c == "size" and "size_all" in present else c) for c in columns]


def _clusters(sizes: dict) -> Chart:
    title = "duplicate clusters by size (this run's, counting earlier runs' members)"
    if not sizes:
        return Chart(title, why_not="dedup found no cluster of duplicates in this run")
    order = sorted(sizes, key=int)  # read back from JSON, the sizes are strings
    return Chart(title, [str(k) for k in order], {"clusters": [sizes[k] for k in order]},
                 xlabel="documents in the cluster", log_y=True)


def _dup_rate(curated: pa.Table, rejected: pa.Table, by: str) -> Chart | None:
    """The share of documents dedup removed, per value of `by` (top 25 by count);
    None when the input has no such column."""
    title = f"duplicate rate by {by} (sample)"
    if by not in curated.column_names + rejected.column_names:
        return None
    counts: dict[str, list[int]] = {}  # value -> [rows, rows removed]
    for table in (curated, rejected):
        if by not in table.column_names or "dup_keep" not in table.column_names:
            continue
        for value, keep in zip(table.column(by).to_pylist(), table.column("dup_keep").to_pylist()):
            if value is not None and keep is not None:  # no value or no decision: no rate
                entry = counts.setdefault(str(value), [0, 0])
                entry[0] += 1
                entry[1] += keep is False
    if not counts:
        return Chart(title, why_not=f"no sampled row has both a `{by}` and a dedup decision")
    if not any(removed for _, removed in counts.values()):
        return Chart(title, why_not="dedup removed no sampled document")
    names = sorted(counts, key=lambda k: -counts[k][0])[:25]
    return Chart(title, names, {"removed": [100 * counts[n][1] / counts[n][0] for n in names]},
                 ylabel="% removed as duplicates")
