"""The lines step: which lines paragraph dedup removes, found on the cluster before the
stream (stages/lines.py has the method; docs/stages.md, `lines`, its costs).

1. hashes   one pass over the new shards through the stages before `lines` (the
            documents that reach it): each shard's distinct line hashes, with how many
            of its documents hold each (1, or 2 for "two or more"), written to
            OUT/dedup/lines/hashes/<shard>.parquet and streamed on as rows.
2. count    the rows shuffled by hash bucket: per group of `group_shards` shards (this
            run's, in shard-number order, as cc_net groups its shards), a hash that
            two documents or more hold is duplicated. With `scope: all`, a hash of a
            shard not yet in the Bloom filter is also tested against it (each bucket
            reads one part of the filter): found, it was in an earlier crawl.
3. sets     the duplicated hashes shuffled by group: one sorted file per group,
            OUT/dedup/lines/runs/<run>/group-<g>.parquet, which the stage reads.
After the stream (scope: all), the finished shards' hashes join the filter, part by
part, each part written as a new file and the filter's record (bloom.json) replaced
last; a shard already in the filter (a rerun, or a changed input at the same path)
is not tested against it, since a Bloom filter cannot forget its old lines.

The driver holds counts per group, never hashes.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.models.bloom import BloomShape, share
from thresher.models.line_hash import documents_per_hash, line_hashes
from thresher.pipeline.engine.config import Config, ConfigError
from thresher.pipeline.engine.read import read_unit
from thresher.pipeline.engine.run import RunState, Step, phase
from thresher.pipeline.io.storage import Store
from thresher.pipeline.steps.dedup.common import shuffles_as_tasks
from thresher.pipeline.steps.shard_pass import check_before, over_shards, read_options, stage_index
from thresher.stages.dedup import shard_folder

log = logging.getLogger(__name__)

HASHES = "dedup/lines/hashes"  # <shard folder>.parquet: distinct hashes, documents (1|2)
RUNS = "dedup/lines/runs"      # <run>/groups.json, <run>/group-<g>.parquet
BLOOM = "dedup/lines/bloom"    # bloom.json, part-<p>.<run>.bin, shards/<shard folder>
HASH_ROWS_PER_PARTITION = 8_000_000  # about 200 MB of hash rows per shuffle partition
ROW_SCHEMA = pa.schema([("bucket", pa.int64()), ("group", pa.int32()), ("hash", pa.uint64()),
                        ("docs", pa.uint8()), ("fresh", pa.bool_())])


class LinesError(ConfigError):
    """The lines step cannot run as configured."""


def find_stage(config: Config) -> int | None:
    return stage_index(config, "lines")


class LinesStep(Step):
    name = "lines"

    def __init__(self):
        self.hashed: list[str] = []

    def check(self, config: Config) -> None:
        check_before(config, "lines", LinesError)

    def wanted(self, config: Config) -> bool:
        return find_stage(config) is not None

    def before(self, run: RunState) -> dict:
        at = find_stage(run.config)
        spec = run.config.stages[at]
        stage = spec.build()
        numbers = run.ledger.shard_numbers([(s.path, s.fingerprint) for s in run.shards])
        order = sorted(run.shards, key=lambda s: numbers.get(s.path, 0))
        groups = {shard_folder(s.path): i // stage.group_shards for i, s in enumerate(order)}
        summary = find_duplicates(run.config, at, order, groups, run.store, run.run_id)
        self.hashed = [s.path for s in order]
        specs = list(run.config.stages)
        specs[at] = spec.with_params({"sets": run.store.uri(RUNS, run.run_id)})
        run.config = replace(run.config, stages=specs)
        return summary

    def after(self, run: RunState) -> dict:
        at = find_stage(run.config)
        stage = run.config.stages[at].build()
        result = {}
        if stage.scope == "all":
            finished = set(run.finished_paths())
            folders = [shard_folder(p) for p in self.hashed if p in finished]
            result["bloom"] = add_to_bloom(run.store, bloom_shape(stage), folders, run.run_id)
        # The stream has read its group files: they go (a rerun of an unfinished shard
        # groups it again, under its own run).
        for path in run.store.files(f"{RUNS}/{run.run_id}"):
            run.store.delete(path)
        return result


def bloom_shape(stage) -> BloomShape:
    return BloomShape.sized(stage.capacity, stage.fp_rate)


def read_bloom(store: Store, shape: BloomShape) -> dict:
    """The filter's record: its shape, each part's file, the lines added so far.
    A filter made with another shape is refused: its bits mean nothing to this one."""
    path = store.path(BLOOM, "bloom.json")
    if not store.exists(path):
        return {"shape": shape.to_dict(), "parts": {}, "added": 0, "shards": 0}
    record = json.loads(store.read_text(path))
    if record["shape"] != shape.to_dict():
        made = record["shape"]
        raise LinesError(f"the lines Bloom filter in {store.uri(BLOOM)} was made for capacity "
                         f"{made['capacity']} at fp_rate {made['fp_rate']}; give the lines stage "
                         "those, or write to a new output (a Bloom filter cannot be resized)")
    return record


def find_duplicates(config: Config, at: int, shards: list, groups: dict, store: Store,
                    run_id: str) -> dict:
    """Phases 1-3: each group's duplicated hashes written for the stage; counts."""
    import ray

    stage = config.stages[at].build()
    started, phases = time.perf_counter(), {}
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    scope_all = stage.scope == "all"
    shape = bloom_shape(stage) if scope_all else None
    record = read_bloom(store, shape) if scope_all else None
    rows_guess = sum(s.num_rows or 0 for s in shards) * 20  # distinct lines, roughly
    partitions = (stage.partitions if stage.partitions != "auto"
                  else max(cpus, math.ceil(rows_guess / HASH_ROWS_PER_PARTITION)))
    parts = shape.parts if shape else 1
    buckets = parts * max(1, math.ceil(4 * partitions / parts))  # a multiple of the parts
    if not shards:
        store.write_text(store.path(RUNS, run_id, "groups.json"), "{}")
        return {"shards": 0}
    units = [{"path": s.path, "key": s.key, "folder": shard_folder(s.path),
              "group": groups[shard_folder(s.path)]} for s in shards]
    ray.data.DataContext.get_current().enable_progress_bars = False
    count = len(set(groups.values()))
    log.info("lines: hashing the lines of %d shards in %d group%s of up to %d", len(shards),
             count, "" if count == 1 else "s", stage.group_shards)
    with shuffles_as_tasks(rows_guess <= 20_000_000):
        with phase(phases, "hashes"):
            rows = _hash_pass(units, config, at, store, buckets, scope_all, cpus).materialize()
        hash_rows = rows.count()
        with phase(phases, "count"):
            found = rows.groupby("bucket", num_partitions=partitions).map_groups(
                _count_bucket, batch_format="pyarrow",
                fn_kwargs={"out": store.location, "shape": shape,
                           "parts": (record or {}).get("parts", {})}).materialize()
        with phase(phases, "sets"):
            written = found.groupby("group", num_partitions=max(1, min(partitions, len(units)))) \
                .map_groups(_write_group, batch_format="pyarrow",
                            fn_kwargs={"out": store.location, "run_id": run_id}).materialize()
            counts = written.take_all()
    done = {c["group"] for c in counts}
    empty = pa.table({"hash": pa.array([], pa.uint64()), "earlier": pa.array([], pa.bool_())})
    for group in sorted(set(groups.values()) - done):  # no duplicated line: an empty set
        store.write_table(empty, store.path(RUNS, run_id, f"group-{group:06d}.parquet"))
    store.write_text(store.path(RUNS, run_id, "groups.json"), json.dumps(groups))
    duplicated = sum(c["duplicated"] for c in counts)
    earlier = sum(c["earlier"] for c in counts)
    summary = {"shards": len(shards), "groups": len(set(groups.values())),
               "group_shards": stage.group_shards, "scope": stage.scope,
               "hash_rows": hash_rows, "duplicated_hashes": duplicated,
               "earlier_crawl_hashes": earlier, "partitions": partitions,
               "seconds": {k: round(v, 2) for k, v in phases.items()}}
    summary["seconds"]["total"] = round(time.perf_counter() - started, 2)
    log.info("lines: %s distinct lines per shard hashed; %s duplicated within their group%s "
             "(%.0f s)", f"{hash_rows:,}", f"{duplicated:,}",
             f", {earlier:,} more seen in earlier crawls" if scope_all else "",
             summary["seconds"]["total"])
    return summary


def _hash_pass(units: list[dict], config: Config, at: int, store: Store, buckets: int,
               scope_all: bool, cpus: int):
    return over_shards(units, Hasher, (config.stages[:at], tuple(config.filters),
                                       read_options(config), store.location, buckets,
                                       scope_all), cpus)


class Hasher:
    """A Ray Data callable class: reads its shards (through the stages before lines,
    keeping the rows still in play), writes each shard's distinct hashes and yields
    them as rows for the count."""

    def __init__(self, before, rules, read: dict, out: str, buckets: int, scope_all: bool):
        from thresher.pipeline.engine.worker import SegmentWorker

        self.before = SegmentWorker(before, rules, None, None) if before else None
        self.read, self.out, self.buckets = read, Store.at(out), buckets
        self.scope_all = scope_all

    def __call__(self, batch: pa.Table):
        for unit in batch.to_pylist():
            hashes = []
            if self.before is None:
                unit = {**unit, "columns": []}
            for table in read_unit(unit, **self.read):
                if self.before is not None:
                    table = self.before.score(table)
                    table = table.filter(pc.and_(pc.is_null(table.column("_error")),
                                                 pc.is_null(table.column("_pre"))))
                hashes += [line_hashes(t) for t in table.column("text").to_pylist() if t]
            distinct, docs = documents_per_hash(hashes)
            docs = np.minimum(docs, 2).astype(np.uint8)
            self.out.write_table(pa.table({"hash": distinct, "docs": docs}),
                                 self.out.path(HASHES, f"{unit['folder']}.parquet"))
            fresh = self.scope_all and not self.out.exists(
                self.out.path(BLOOM, "shards", unit["folder"]))
            yield pa.table({"bucket": _bucket(distinct, self.buckets),
                            "group": np.full(len(distinct), unit["group"], np.int32),
                            "hash": distinct, "docs": docs,
                            "fresh": np.full(len(distinct), fresh)}, schema=ROW_SCHEMA)


def _bucket(hashes: np.ndarray, buckets: int) -> np.ndarray:
    """The shuffle bucket: the Bloom filter's part mix, so that a bucket's hashes are all
    of one part (part = bucket % parts, buckets being a multiple of the parts)."""
    return share(hashes, buckets)


_PART_CACHE: dict = {}


def _count_bucket(rows: pa.Table, out: str, shape: BloomShape | None, parts: dict) -> pa.Table:
    """One bucket's rows -> (group, hash, earlier) of each hash to remove in a group:
    held by two documents or more of the group, or (scope all) by a fresh shard's
    document and the Bloom filter."""
    group = rows.column("group").to_numpy()
    hashes = rows.column("hash").to_numpy()
    docs = rows.column("docs").to_numpy().astype(np.int64)
    fresh = rows.column("fresh").to_numpy(zero_copy_only=False)
    order = np.lexsort((hashes, group))
    group, hashes, docs, fresh = group[order], hashes[order], docs[order], fresh[order]
    start = np.r_[True, (group[1:] != group[:-1]) | (hashes[1:] != hashes[:-1])] \
        if len(hashes) else np.zeros(0, bool)
    first = np.flatnonzero(start)
    total = np.add.reduceat(docs, first) if len(first) else np.zeros(0, np.int64)
    any_fresh = np.logical_or.reduceat(fresh, first) if len(first) else np.zeros(0, bool)
    g, h = group[first], hashes[first]
    duplicated = total >= 2
    earlier = np.zeros(len(h), bool)
    if shape is not None and parts:
        test = ~duplicated & any_fresh
        if test.any():
            bucket = int(rows.column("bucket")[0].as_py())
            part = _load_part(Store.at(out), shape, parts, bucket % shape.parts)
            if part is not None:
                earlier[test] = shape.contains(part, h[test])
    keep = duplicated | earlier
    return pa.table({"group": pa.array(g[keep], pa.int32()), "hash": pa.array(h[keep], pa.uint64()),
                     "earlier": pa.array(earlier[keep], pa.bool_())})


def _load_part(store: Store, shape: BloomShape, parts: dict, part: int) -> np.ndarray | None:
    name = parts.get(str(part))
    if name is None:
        return None
    if _PART_CACHE.get("name") != name:
        with store.fs.open_input_stream(store.path(BLOOM, name)) as handle:
            data = np.frombuffer(handle.read(), np.uint8)
        if len(data) != shape.part_bytes:
            raise RuntimeError(f"lines: Bloom part {name} holds {len(data)} bytes, not "
                               f"{shape.part_bytes}: the filter is damaged")
        _PART_CACHE.clear()
        _PART_CACHE.update(name=name, bits=data)
    return _PART_CACHE["bits"]


def _write_group(rows: pa.Table, out: str, run_id: str) -> pa.Table:
    """One group's hashes to remove, sorted, as the file the stage reads."""
    store = Store.at(out)
    group = int(rows.column("group")[0].as_py())
    table = rows.select(["hash", "earlier"]).sort_by("hash")
    store.write_table(table, store.path(RUNS, run_id, f"group-{group:06d}.parquet"))
    earlier = int(pc.sum(table.column("earlier")).as_py() or 0)
    return pa.table({"group": [group], "duplicated": [table.num_rows - earlier],
                     "earlier": [earlier]})


def add_to_bloom(store: Store, shape: BloomShape, folders: list[str], run_id: str) -> dict:
    """The finished shards' hashes join the filter: each part they touch is written as a
    new file, then bloom.json names the new files (the filter changes there, at once);
    then the shards are marked as in the filter and the replaced files removed. A run
    killed before bloom.json leaves the old filter whole and its shards unmarked."""
    import ray

    record = read_bloom(store, shape)
    fresh = [f for f in folders if not store.exists(store.path(BLOOM, "shards", f))]
    if not fresh:
        return _bloom_summary(record, shape)
    started = time.perf_counter()
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    with shuffles_as_tasks(len(fresh) < 200):
        items = ray.data.from_items([{"folder": f} for f in fresh],
                                    override_num_blocks=max(1, min(len(fresh), 4 * cpus)))
        rows = items.map_batches(_shard_rows, batch_format="pyarrow",
                                 fn_kwargs={"out": store.location, "shape": shape})
        written = rows.groupby("part", num_partitions=min(shape.parts, 4 * cpus)).map_groups(
            _add_part, batch_format="pyarrow",
            fn_kwargs={"out": store.location, "shape": shape, "parts": record["parts"],
                       "run_id": run_id}).take_all()
    old = dict(record["parts"])
    for row in written:
        record["parts"][str(row["part"])] = row["name"]
    record["added"] += sum(row["added"] for row in written)
    record["shards"] += len(fresh)
    store.write_text(store.path(BLOOM, "bloom.json"), json.dumps(record, indent=1))
    for folder in fresh:
        store.write_text(store.path(BLOOM, "shards", folder), run_id)
    for part, name in old.items():
        if record["parts"][part] != name:
            store.delete(store.path(BLOOM, name))
    summary = _bloom_summary(record, shape)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    log.info("lines: %d shards' lines added to the Bloom filter: it holds %s of %s "
             "(false positives now about %.2g)", len(fresh), f"{record['added']:,}",
             f"{shape.capacity:,}", summary["fp_rate_now"])
    if record["added"] > shape.capacity:
        log.warning("lines: the Bloom filter holds more lines than its capacity (%s): its "
                    "false-positive rate is above %s; give a new output a larger capacity",
                    f"{shape.capacity:,}", shape.fp_rate)
    return summary


def _bloom_summary(record: dict, shape: BloomShape) -> dict:
    """The filter's fill and its false-positive rate at that fill (added counts a line
    once per shard that held it, so the true rate is at most this)."""
    bits = shape.parts * shape.part_bits
    rate = (1 - math.exp(-shape.probes * record["added"] / bits)) ** shape.probes
    return {"capacity": shape.capacity, "fp_rate": shape.fp_rate, "added": record["added"],
            "shards": record["shards"], "bytes": bits // 8, "fp_rate_now": rate}


def _shard_rows(batch: pa.Table, out: str, shape: BloomShape) -> pa.Table:
    store = Store.at(out)
    tables = [store.read_table(store.path(HASHES, f"{f}.parquet"), columns=["hash"])
              for f in batch.column("folder").to_pylist()]
    hashes = pa.concat_tables(tables).column("hash").to_numpy() if tables else \
        np.zeros(0, np.uint64)
    return pa.table({"part": shape.part_of(hashes), "hash": pa.array(hashes, pa.uint64())})


def _add_part(rows: pa.Table, out: str, shape: BloomShape, parts: dict, run_id: str) -> pa.Table:
    store = Store.at(out)
    part = int(rows.column("part")[0].as_py())
    bits = _load_part(store, shape, parts, part)
    bits = shape.empty_part() if bits is None else bits.copy()
    hashes = rows.column("hash").to_numpy()
    shape.add(bits, hashes)
    name = f"part-{part:05d}.{run_id}.bin"
    store.write_bytes(store.path(BLOOM, name), bits.tobytes())
    _PART_CACHE.clear()
    return pa.table({"part": [part], "name": [name], "added": [len(hashes)]})
