"""Decide and write, inside a Ray task: the last step of the DAG.

For each shard in the batch, rows go to OUT/curated, OUT/rejected (with
drop_reason) or OUT/quarantine (with error). Each part is written under a temporary
name, flushed and renamed, and named after its shard key and first source row, so a
retried task rewrites the same file instead of adding one. The task returns one
tally row per shard; the driver marks a shard done when its tallies cover all its rows.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from thresher.pipeline.rules import Rule

OUTCOMES = ("curated", "rejected", "quarantine")
TALLY_SCHEMA = pa.schema([
    ("shard", pa.string()), ("rows", pa.int64()), ("curated", pa.int64()),
    ("rejected", pa.int64()), ("quarantined", pa.int64()), ("reasons", pa.string()),
    ("errors", pa.string()), ("stage_seconds", pa.string()), ("parts", pa.int64()),
])


def decide(batch: pa.Table, rules: list[Rule]) -> pa.Array:
    """drop_reason per row: the early reason, else the first rule it fails, else null."""
    reason = batch.column("_pre")
    for rule in rules:
        fails = pc.and_(pc.is_null(reason), pc.invert(rule.passes(batch)))
        reason = pc.if_else(fails, pa.scalar(rule.reason), reason)
    return pc.if_else(pc.is_null(batch.column("_error")), reason, pa.scalar(None, pa.string()))


def settle(batch: pa.Table, *, rules: list[Rule], out_dir: str, part_max_rows: int,
           part_max_bytes: int = 256 * 1024 * 1024) -> pa.Table:
    """Ray map_batches UDF: decide, write parts, return tallies (TALLY_SCHEMA)."""
    batch = batch.append_column("drop_reason", decide(batch, rules))
    tallies = []
    for key in pc.unique(batch.column("_shard")).to_pylist():
        rows = batch.filter(pc.equal(batch.column("_shard"), key))
        tallies.append(_settle_shard(rows, key, Path(out_dir), part_max_rows, part_max_bytes))
    return pa.Table.from_pylist(tallies, schema=TALLY_SCHEMA)


def _settle_shard(rows: pa.Table, key: str, out: Path, part_max_rows: int,
                  part_max_bytes: int) -> dict:
    quarantined = pc.is_valid(rows.column("_error"))
    rejected = pc.and_(pc.invert(quarantined), pc.is_valid(rows.column("drop_reason")))
    curated = pc.invert(pc.or_(quarantined, rejected))
    timing = [c for c in rows.column_names if c.startswith("_t_")]
    tally = {
        "shard": key,
        "rows": pc.sum(rows.column("_count")).as_py() or 0,
        "curated": pc.sum(curated).as_py() or 0,
        "rejected": pc.sum(rejected).as_py() or 0,
        "quarantined": pc.sum(rows.filter(quarantined).column("_count")).as_py() or 0,
        "reasons": json.dumps(Counter(rows.column("drop_reason").drop_null().to_pylist())),
        "errors": json.dumps(Counter(_head(e) for e in rows.column("_error").drop_null().to_pylist())),
        "stage_seconds": json.dumps({c[3:]: pc.sum(rows.column(c)).as_py() or 0.0 for c in timing}),
        "parts": 0,
    }
    internal = ["_shard", "_pre", *timing]
    outputs = {
        "curated": rows.filter(curated).drop_columns(internal + ["_count", "_error", "drop_reason"]),
        "rejected": rows.filter(rejected).drop_columns(internal + ["_count", "_error"]),
        "quarantine": rows.filter(quarantined).drop_columns(internal + ["drop_reason"])
        .rename_columns({"_error": "error", "_count": "rows"}),
    }
    for outcome, table in outputs.items():
        per_part = _rows_per_part(table, part_max_rows, part_max_bytes)
        for start in range(0, table.num_rows, per_part):
            part = table.slice(start, per_part)
            first = part.column("source_row")[0].as_py()
            write_atomic(part, out / outcome / part_name(key, first))
            tally["parts"] += 1
    return tally


def _rows_per_part(table: pa.Table, max_rows: int, max_bytes: int) -> int:
    """Rows per part so that a part stays under both bounds (bytes by the average row)."""
    if table.num_rows == 0:
        return max_rows
    average = max(1, table.nbytes // table.num_rows)
    return max(1, min(max_rows, max_bytes // average))


def part_name(shard_key: str, first_row: int) -> str:
    return f"part-{shard_key}-{first_row:010d}.parquet"


def part_shard_key(part: Path) -> str:
    """The shard key in a part's name (the inverse of part_name)."""
    return part.name[len("part-"):].rsplit("-", 1)[0]


def write_atomic(table: pa.Table, path: Path) -> None:
    _write_atomic(path, lambda handle: pq.write_table(table, handle, compression="zstd"))


def write_text_atomic(path: Path, text: str) -> None:
    _write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))


def _write_atomic(path: Path, write) -> None:
    """Write under a temporary name in the same folder, fsync, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _head(message: str) -> str:
    """Error messages grouped by their first 120 characters, for the manifest."""
    return message[:120]
