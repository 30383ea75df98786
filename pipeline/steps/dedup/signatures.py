"""Phase 1, signatures: one pass over the new shards' text, through the engine's own
reading path (read_unit, only the columns dedup reads when no stage runs before it).

Each document's entry goes to OUT/dedup/signatures/<shard>/: uid, row, id, keep_by
score, content keys, URL key, crawl. Its content keys stream on as (key, uid) rows to
the candidate shuffle, by key range; the earlier shards' keys are in the key index
(candidates.py), not shuffled again.

A document's uid is its shard's number << 32 | its row. The ledger numbers a shard by
(path, fingerprint), so a shard whose content changed gets a new number and none of
its documents inherits an identity, or a decision, of the old content.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.pipeline.engine.apply import kept_so_far
from thresher.pipeline.engine.read import read_unit
from thresher.pipeline.io.storage import Store
from thresher.pipeline.steps.dedup.common import FILE_ROWS, KEY_SCHEMA, SIGNATURES, rep_key
from thresher.pipeline.steps.dedup.ranged import range_of
from thresher.pipeline.steps.shard_pass import over_shards, read_options
from thresher.stages.dedup import Dedup


def signature_pass(units, config, at: int, store: Store, level: int, cpus: int, run_id: str):
    """The new shards' content key rows (a lazy dataset); signing writes the entries."""
    return over_shards(units, Signer, (config.stages[:at], config.stages[at],
                                       tuple(config.filters), read_options(config),
                                       store.location, level, run_id), cpus)


class Signer:
    """A Ray Data callable class: reads its shards (only the columns dedup needs
    when no stage runs before it), writes their signatures and yields key rows."""

    def __init__(self, before, spec, rules, read: dict, out: str, level: int, run_id: str):
        from thresher.pipeline.engine.worker import SegmentWorker

        self.before = SegmentWorker(before, rules, None, None) if before else None
        self.rules = rules
        self.stage: Dedup = spec.build()
        self.stage.setup()
        self.read, self.out, self.level = read, Store.at(out), level
        self.run_id = run_id

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
                if self.stage.kept_only:  # only what the rules before dedup keep is signed
                    play = kept_so_far(table, self.rules, play)
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
        keys, urls = self.stage.keys(table)
        signature = pa.table({
            "uid": uid, "row": rows, "id": table.column("id"),
            "prio": self.stage.priority(table, uid),
            "keys": pa.FixedSizeListArray.from_arrays(pa.array(keys.reshape(-1), pa.uint64()),
                                                      keys.shape[1]),
            "url": pa.array(urls, pa.uint64()),
            "crawl": self.stage.crawls(table, self.run_id)})
        return signature, key_rows(keys, uid, np.ones(len(uid), bool), self.level)

    def _write(self, held: list[pa.Table], unit: dict) -> None:
        """One index file per shard (per FILE_ROWS rows of a large one), named by its
        first row: a retried shard rewrites the same files."""
        if held:
            table = pa.concat_tables(held)
            first = table.column("row")[0].as_py()
            self.out.write_table(table, self.out.path(SIGNATURES, unit["folder"],
                                                      f"{first:010d}.parquet"))


def key_rows(keys: np.ndarray, uid, store, level: int) -> pa.Table:
    """(key, uid) rows, one per present key (0 is no key), with the key's range."""
    k = keys.shape[1]
    flat = keys.reshape(-1)
    present = flat != 0
    flat = flat[present]

    def each(values):
        return np.repeat(values, k)[present]
    return pa.table({"bucket": range_of(flat, level), "key": flat, "uid": each(uid),
                     "store": each(store)}, schema=KEY_SCHEMA)


def departed_keys(departed: np.ndarray, level: int) -> pa.Table:
    """For each kept document that left (its shard changed), a row on its cluster's key
    (every member of the cluster has one in the key index): the cluster comes into
    this run's graph and chooses a new keeper. The departed uid is a node with no
    entry, so it is never chosen itself; the row does not join the index."""
    departed = np.asarray(departed, np.int64)
    return key_rows(rep_key(departed)[:, None], departed, np.zeros(len(departed), bool), level)
