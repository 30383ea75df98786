"""Paragraph dedup (DESIGN.md 4, `lines`): cc_net's first step, line for line, and
across crawls as Dolma does it.

cc_net (Wenzek et al. 2019, cc_net/dedup.py and mine.py) hashes every line of every
document of a group of shards (models/line_hash.py: its normalization, the first 8
bytes of the SHA-1) and removes, from every document of the group, each line that two
documents or more hold: the first occurrence too. Of the lines left, a line repeated
within one document keeps its first occurrence. A document left with no line is dropped.

The work is split as for dedup: the pipeline's lines step (pipeline/steps/lines.py)
hashes the new shards, counts each line's documents per group through a shuffle and
writes each group's duplicated hashes; with `scope: all` it also tests the new lines
against a Bloom filter of every earlier crawl's lines (OUT/dedup/lines/) and adds them
once the run is done. This stage then removes the lines, row by row. It rewrites
`text` (`rewrites_text`): the stages after it score what is left, as cc_net's
language model does. A document with nothing left keeps its text and gets
`lines_kept = 0`, which the default rule rejects; the stage is a gate, so no later
stage spends time on it.

Called without the step's sets (a test, a bench), the batch is its own group.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from thresher.models.line_hash import documents_per_hash, keep_lines, line_hashes
from thresher.stages.base import Chart, Resources, Stage, filesystem_at
from thresher.stages.dedup import shard_folder

SCOPES = ("group", "all")


class Lines(Stage):
    name = "lines"
    columns = {"lines_kept": pa.int32(), "lines_removed_lines": pa.int32(),
               "lines_removed_chars": pa.int64(), "lines_seen_before": pa.int32()}
    reads = ("source_shard",)
    rewrites_text = True
    gate = True
    default_resources = Resources(batch_size=1024)

    def __init__(self, scope: str = "group", group_shards: int = 50,
                 capacity: int = 1_000_000_000, fp_rate: float = 0.001,
                 partitions: int | str = "auto", sets: str | None = None,
                 resources: Resources | None = None):
        super().__init__(resources)
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        if not isinstance(group_shards, int) or group_shards < 1:
            raise ValueError(f"group_shards must be a positive integer, got {group_shards!r}")
        if partitions != "auto" and (not isinstance(partitions, int) or partitions < 1):
            raise ValueError(f"partitions must be a positive integer or auto, got {partitions!r}")
        if scope == "all":
            from thresher.models.bloom import BloomShape

            BloomShape.sized(capacity, fp_rate)  # says what is wrong with them, now
        self.scope, self.group_shards, self.partitions = scope, group_shards, partitions
        self.capacity, self.fp_rate = capacity, fp_rate
        self.sets = sets  # the step's folder for this run: groups.json, group-<g>.parquet
        self._groups: dict | None = None
        self._loaded: tuple[int, np.ndarray, np.ndarray] | None = None

    def describe(self) -> dict:
        return {"method": "cc_net paragraph dedup (normalize_for_dedup, SHA-1[:8])",
                "group_shards": self.group_shards, "scope": self.scope,
                **({"bloom": {"capacity": self.capacity, "fp_rate": self.fp_rate}}
                   if self.scope == "all" else {})}

    def memory_estimate(self) -> int:
        """No model: one group's duplicated hashes at a time (9 bytes each)."""
        return 256 << 20

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = [t or "" for t in batch.column("text").to_pylist()]
        hashes = [line_hashes(t) if t else np.zeros(0, np.uint64) for t in texts]
        shards = (batch.column("source_shard").to_pylist() if self.sets is not None
                  else [None] * len(texts))
        found = self._found(hashes, shards)
        new_texts, kept, removed, chars, before = [], [], [], [], []
        for text, h, (dup, earlier) in zip(texts, hashes, found):
            new, n = keep_lines(text, h, dup) if text else (text, 0)
            new_texts.append(new)
            kept.append(n)
            removed.append(len(h) - n if n else len(h))
            chars.append(len(text) - len(new) if n else len(text))
            before.append(int(earlier.sum()))
        return (batch.set_column(batch.schema.get_field_index("text"), "text",
                                 pa.array(new_texts, pa.string()))
                .append_column("lines_kept", pa.array(kept, pa.int32()))
                .append_column("lines_removed_lines", pa.array(removed, pa.int32()))
                .append_column("lines_removed_chars", pa.array(chars, pa.int64()))
                .append_column("lines_seen_before", pa.array(before, pa.int32())))

    def _found(self, hashes: list[np.ndarray], shards: list) -> list:
        """(duplicated, found only in an earlier crawl) per line of each row: one lookup
        for all the rows of a shard."""
        own = self.own_sets(hashes) if self.sets is None else None
        rows_of: dict = {}
        for i, shard in enumerate(shards):
            rows_of.setdefault(shard, []).append(i)
        found = [None] * len(hashes)
        for shard, rows in rows_of.items():
            sets = own if shard is None else self._set(shard)
            dup, earlier = self._lookup(np.concatenate([hashes[i] for i in rows]), sets)
            bounds = np.cumsum([len(hashes[i]) for i in rows])[:-1]
            for i, d, e in zip(rows, np.split(dup, bounds), np.split(earlier, bounds)):
                found[i] = (d, e)
        return found

    @staticmethod
    def own_sets(hashes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The batch as its own group: the hashes two of its documents or more hold."""
        distinct, docs = documents_per_hash([h for h in hashes if len(h)])
        dup = distinct[docs >= 2]
        return dup, np.zeros(len(dup), bool)

    @staticmethod
    def _lookup(hashes: np.ndarray, sets: tuple[np.ndarray, np.ndarray]):
        """(duplicated, found only in an earlier crawl) per line."""
        values, earlier = sets
        if not len(values) or not len(hashes):
            return np.zeros(len(hashes), bool), np.zeros(len(hashes), bool)
        at = np.minimum(np.searchsorted(values, hashes), len(values) - 1)
        found = values[at] == hashes
        return found, found & earlier[at]

    def _set(self, source_shard: str) -> tuple[np.ndarray, np.ndarray]:
        """The duplicated hashes of the shard's group (sorted) and whether each was
        found only in an earlier crawl; the last group read is kept."""
        fs, base = filesystem_at(self.sets)
        base = base.rstrip("/")
        if self._groups is None:
            import json

            with fs.open_input_stream(f"{base}/groups.json") as handle:
                self._groups = json.loads(handle.read())
        group = self._groups.get(shard_folder(source_shard))
        if group is None:
            raise RuntimeError(f"lines: the lines step did not hash {source_shard} (a shard "
                               "outside this run's plan?); rerun the shard")
        if self._loaded is None or self._loaded[0] != group:
            table = pq.read_table(f"{base}/group-{group:06d}.parquet", filesystem=fs)
            self._loaded = (group, table.column("hash").to_numpy(),
                            table.column("earlier").to_numpy(zero_copy_only=False))
        return self._loaded[1], self._loaded[2]

    def charts(self, curated: pa.Table, rejected: pa.Table, manifest: dict) -> list[Chart]:
        """How much of each document paragraph dedup removed (its share of lines),
        curated and rejected stacked."""
        title = "lines removed by paragraph dedup, per document (sample)"
        labels = ["none", "<10%", "10-25%", "25-50%", "50-99%", "all"]
        series = {}
        for name, table in (("curated", curated), ("rejected", rejected)):
            counts = [0] * len(labels)
            if "lines_removed_lines" in table.column_names:
                for kept, removed in zip(table.column("lines_kept").to_pylist(),
                                         table.column("lines_removed_lines").to_pylist()):
                    if removed is not None:
                        counts[_bin(kept, removed)] += 1
            series[name] = counts
        if not any(sum(v) for v in series.values()):
            return [Chart(title, why_not="no sampled row went through paragraph dedup")]
        return [Chart(title, labels, series, xlabel="share of the document's lines removed",
                      ylabel="documents")]


def _bin(kept: int, removed: int) -> int:
    if removed == 0:
        return 0
    if not kept:
        return 5
    share = removed / (kept + removed)
    return 1 if share < 0.1 else 2 if share < 0.25 else 3 if share < 0.5 else 4
