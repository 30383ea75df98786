"""Phase 1, signatures: one pass over the new shards' text, through the engine's own
reading path (read_unit, only the columns dedup reads when no stage runs before it).

Each document's entry goes to OUT/dedup/signatures/<shard>/: uid, row, id, keep_by
score, content keys, URL key, crawl. Its content keys stream on as (key, uid) rows to
the candidate shuffle. The earlier shards' key rows are read back from their entries,
with the document each one's cluster keeps.

A document's uid is its shard's number << 32 | its row. The ledger numbers a shard by
(path, fingerprint), so a shard whose content changed gets a new number and none of
its documents inherits an identity, or a decision, of the old content.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.pipeline.engine.read import read_unit
from thresher.pipeline.io.storage import Store
from thresher.pipeline.steps.dedup.common import (CLUSTERS, FILE_ROWS, KEY_SCHEMA, NONE,
                                                  SIGNATURES, bucket, read_folder,
                                                  read_latest, rep_key)
from thresher.stages.dedup import Dedup


def signature_pass(units, config, at: int, store: Store, buckets: int, cpus: int, run_id: str):
    """The new shards' content key rows (a lazy dataset); signing writes the entries."""
    import ray

    read = {"batch_rows": config.run.read_batch_rows,
            "max_text_bytes": config.run.max_text_bytes}
    pool = ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, cpus),
                                      initial_size=max(1, min(cpus, len(units))),
                                      max_tasks_in_flight_per_actor=2)
    return ray.data.from_items(units, override_num_blocks=max(1, len(units))).map_batches(
        Signer, compute=pool, batch_size=1, batch_format="pyarrow", num_cpus=0.75,
        fn_constructor_args=(config.stages[:at], config.stages[at], tuple(config.filters),
                             read, store.location, buckets, run_id))


class Signer:
    """A Ray Data callable class: reads its shards (only the columns dedup needs
    when no stage runs before it), writes their signatures and yields key rows."""

    def __init__(self, before, spec, rules, read: dict, out: str, buckets: int, run_id: str):
        from thresher.pipeline.engine.worker import SegmentWorker

        self.before = SegmentWorker(before, rules, None, None) if before else None
        self.stage: Dedup = spec.build()
        self.stage.setup()
        self.read, self.out, self.buckets = read, Store.at(out), buckets
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
            "prio": self.stage.priority(table),
            "keys": pa.FixedSizeListArray.from_arrays(pa.array(keys.reshape(-1), pa.uint64()),
                                                      keys.shape[1]),
            "url": pa.array(urls, pa.uint64()),
            "crawl": self.stage.crawls(table, self.run_id)})
        return signature, key_rows(keys, uid, np.ones(len(uid), bool),
                                   np.full(len(uid), NONE), self.buckets)

    def _write(self, held: list[pa.Table], unit: dict) -> None:
        """One index file per shard (per FILE_ROWS rows of a large one), named by its
        first row: a retried shard rewrites the same files."""
        if held:
            table = pa.concat_tables(held)
            first = table.column("row")[0].as_py()
            self.out.write_table(table, self.out.path(SIGNATURES, unit["folder"],
                                                      f"{first:010d}.parquet"))


def key_rows(keys: np.ndarray, uid, new, rep, buckets: int) -> pa.Table:
    """(key, uid) rows, one per present key (0 is no key), with the key's bucket."""
    k = keys.shape[1]
    flat = keys.reshape(-1)
    present = flat != 0
    flat = flat[present]

    def each(values):
        return np.repeat(values, k)[present]
    return pa.table({"bucket": bucket(flat, buckets), "key": flat, "uid": each(uid),
                     "new": each(new), "rep": each(rep)}, schema=KEY_SCHEMA)


def old_keys(batch: pa.Table, *, out: str, buckets: int) -> pa.Table:
    """Key rows of shards done before, each with its cluster's kept document; a member
    of a cluster also carries its cluster's key (rep_key), which pulls the cluster in
    whole when its kept document has left."""
    store = Store.at(out)
    tables = []
    for unit in batch.to_pylist():
        sig = read_folder(store, f"{SIGNATURES}/{unit['folder']}", ["uid", "keys"])
        if sig is None or not sig.num_rows:
            continue
        uid = sig.column("uid").to_numpy()
        keys = np.asarray(pc.list_flatten(sig.column("keys")).to_numpy()).reshape(len(uid), -1)
        rep = np.full(len(uid), NONE)
        clusters = read_latest(store, f"{CLUSTERS}/{unit['folder']}", ["rep"])
        if clusters is not None and clusters.num_rows:
            decided = clusters.column("uid").to_numpy()
            where = np.minimum(np.searchsorted(uid, decided), len(uid) - 1)
            inside = uid[where] == decided
            rep[where[inside]] = clusters.column("rep").to_numpy()[inside]
        clustered = rep != NONE
        keys = np.hstack([keys, np.where(clustered, rep_key(rep), np.uint64(0))[:, None]])
        tables.append(key_rows(keys, uid, np.zeros(len(uid), bool), rep, buckets))
    return pa.concat_tables(tables) if tables else KEY_SCHEMA.empty_table()


def departed_keys(departed: np.ndarray, buckets: int) -> pa.Table:
    """For each kept document that left (its shard changed), a new-marked row on its
    cluster's key: the cluster comes into this run's graph and chooses a new keeper.
    The departed uid is a node with no entry, so it is never chosen itself."""
    departed = np.asarray(departed, np.int64)
    return key_rows(rep_key(departed)[:, None], departed, np.ones(len(departed), bool),
                    np.full(len(departed), NONE), buckets)
