"""Decide and write, inside a Ray task: the last step of the DAG.

For each shard in the batch, rows go to OUT/curated, OUT/rejected (with
drop_reason) or OUT/quarantine (with error). Each part is written under a temporary
name, flushed and renamed, and named after its shard key and first source row, so a
retried task rewrites the same file instead of adding one. The task returns one
tally row per shard; the driver marks a shard done when its tallies cover all its rows.
"""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from thresher.pipeline.engine.rules import Rule
from thresher.pipeline.engine.ship import land
from thresher.pipeline.io.storage import Store

OUTCOMES = ("curated", "rejected", "quarantine")
TALLY_SCHEMA = pa.schema([
    ("shard", pa.string()), ("rows", pa.int64()), ("curated", pa.int64()),
    ("rejected", pa.int64()), ("quarantined", pa.int64()), ("reasons", pa.string()),
    ("errors", pa.string()), ("stage_seconds", pa.string()),
    ("made", pa.string()), ("workers", pa.string()), ("files", pa.string()),
])
# Rows a stage made (Stage.settle) go to curated/ as part-<shard key>-syn<first parent
# row>.parquet: beside the real rows, apart from the row invariant.
MADE_PART = "syn"


def decide(batch: pa.Table, rules: list[Rule]) -> pa.Array:
    """drop_reason per row: the early reason, else the first rule it fails, else null."""
    reason = batch.column("_pre")
    for rule in rules:
        fails = pc.and_(pc.is_null(reason), pc.invert(rule.passes(batch)))
        reason = pc.if_else(fails, rule.reasons(batch), reason)
    return pc.if_else(pc.is_null(batch.column("_error")), reason, pa.scalar(None, pa.string()))


def settle(batch: pa.Table, *, rules: list[Rule], out_dir: str, part_max_rows: int,
           part_max_bytes: int = 256 * 1024 * 1024, makers: tuple = ()) -> pa.Table:
    """Ray map_batches UDF: decide, write parts, return tallies (TALLY_SCHEMA).
    makers: the specs of the stages whose settle() hook may make rows."""
    batch = batch.append_column("drop_reason", decide(batch, rules))
    stages = [spec.build() for spec in land(makers)]
    tallies = []
    for key in pc.unique(batch.column("_shard")).to_pylist():
        rows = batch.filter(pc.equal(batch.column("_shard"), key))
        tallies.append(_settle_shard(rows, key, Store.at(out_dir), part_max_rows,
                                     part_max_bytes, stages))
    return pa.Table.from_pylist(tallies, schema=TALLY_SCHEMA)


def _settle_shard(rows: pa.Table, key: str, out: Store, part_max_rows: int,
                  part_max_bytes: int, makers: list = ()) -> dict:
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
        # Per worker (<node id>/<pid>) that read and scored them: rows, peak RSS.
        "workers": json.dumps(_per_worker(rows)),
        "files": "[]",  # the real parts written, as <outcome>/<name>: what the recount reads
    }
    made, counts = [], {}
    for stage in makers:
        rows, extra, counts[stage.name] = stage.settle(rows, curated)
        if extra is not None and extra.num_rows:
            made.append(extra)
    tally["made"] = json.dumps({k: v for k, v in counts.items() if v})
    internal = ["_shard", "_pre", *timing,
                *(c for c in ("_worker", "_rss") if c in rows.column_names)]
    outputs = {
        "curated": rows.filter(curated).drop_columns(internal + ["_count", "_error", "drop_reason"]),
        "rejected": rows.filter(rejected).drop_columns(internal + ["_count", "_error"]),
        "quarantine": rows.filter(quarantined).drop_columns(internal + ["drop_reason"])
        .rename_columns({"_error": "error", "_count": "rows"}),
    }
    files = []
    for outcome, table in outputs.items():
        files += [f"{outcome}/{name}" for name in _write_parts(
            table, out, outcome, key, "", part_max_rows, part_max_bytes)]
    tally["files"] = json.dumps(files)
    if made:
        _write_parts(pa.concat_tables(made, promote_options="permissive"), out, "curated",
                     key, MADE_PART, part_max_rows, part_max_bytes)
    return tally


def _per_worker(rows: pa.Table) -> dict:
    if "_worker" not in rows.column_names:
        return {}
    found: dict = {}
    for name, rss in zip(rows.column("_worker").to_pylist(), rows.column("_rss").to_pylist()):
        entry = found.setdefault(name, [0, 0])
        entry[0] += 1
        entry[1] = max(entry[1], rss or 0)
    return found


def _write_parts(table: pa.Table, out: Store, folder: str, key: str, kind: str,
                 max_rows: int, max_bytes: int) -> list[str]:
    """The table as bounded parts named after their first source row; their names."""
    per_part = _rows_per_part(table, max_rows, max_bytes)
    names = []
    for start in range(0, table.num_rows, per_part):
        part = table.slice(start, per_part)
        names.append(part_name(key, part.column("source_row")[0].as_py(), kind))
        out.write_table(part, out.path(folder, names[-1]))
    return names


def _rows_per_part(table: pa.Table, max_rows: int, max_bytes: int) -> int:
    """Rows per part so that a part stays under both bounds (bytes by the average row)."""
    if table.num_rows == 0:
        return max_rows
    average = max(1, table.nbytes // table.num_rows)
    return max(1, min(max_rows, max_bytes // average))


def part_name(shard_key: str, first_row: int, kind: str = "") -> str:
    return f"part-{shard_key}-{kind}{first_row:010d}.parquet"


def is_made_part(part: str) -> bool:
    """A part of rows a stage made (not input rows): outside the row invariant."""
    return _base_name(part).rsplit("-", 1)[-1].startswith(MADE_PART)


def part_shard_key(part: str) -> str:
    """The shard key in a part's name (the inverse of part_name)."""
    return _base_name(part)[len("part-"):].rsplit("-", 1)[0]


def _base_name(path) -> str:
    return str(path).rsplit("/", 1)[-1]


def _head(message: str) -> str:
    """Error messages grouped by their first 120 characters, for the manifest."""
    return message[:120]
