"""Decide and write, inside a Ray task: the last step of the DAG.

For each shard in the batch, rows go to OUT/curated, OUT/rejected (with
drop_reason) or OUT/quarantine (with error). Each part is written under a temporary
name, flushed and renamed, and named after its shard key and first source row, so a
retried task rewrites the same file instead of adding one. The task returns one
tally row per shard; the driver marks a shard done when its tallies cover all its rows.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from thresher.pipeline.engine.rules import Rule
from thresher.pipeline.io.storage import Store

OUTCOMES = ("curated", "rejected", "quarantine")
TALLY_SCHEMA = pa.schema([
    ("shard", pa.string()), ("rows", pa.int64()), ("curated", pa.int64()),
    ("rejected", pa.int64()), ("quarantined", pa.int64()), ("reasons", pa.string()),
    ("errors", pa.string()), ("stage_seconds", pa.string()),
    ("synthetic", pa.string()), ("workers", pa.string()), ("files", pa.string()),
])
SYNTHETIC_PART = "syn"  # part-<shard key>-syn<first parent row>.parquet, in curated/


def decide(batch: pa.Table, rules: list[Rule]) -> pa.Array:
    """drop_reason per row: the early reason, else the first rule it fails, else null."""
    reason = batch.column("_pre")
    for rule in rules:
        fails = pc.and_(pc.is_null(reason), pc.invert(rule.passes(batch)))
        reason = pc.if_else(fails, rule.reasons(batch), reason)
    return pc.if_else(pc.is_null(batch.column("_error")), reason, pa.scalar(None, pa.string()))


def settle(batch: pa.Table, *, rules: list[Rule], out_dir: str, part_max_rows: int,
           part_max_bytes: int = 256 * 1024 * 1024,
           synthetic_ratio: float | None = None) -> pa.Table:
    """Ray map_batches UDF: decide, write parts, return tallies (TALLY_SCHEMA)."""
    batch = batch.append_column("drop_reason", decide(batch, rules))
    tallies = []
    for key in pc.unique(batch.column("_shard")).to_pylist():
        rows = batch.filter(pc.equal(batch.column("_shard"), key))
        tallies.append(_settle_shard(rows, key, Store.at(out_dir), part_max_rows,
                                     part_max_bytes, synthetic_ratio))
    return pa.Table.from_pylist(tallies, schema=TALLY_SCHEMA)


def _settle_shard(rows: pa.Table, key: str, out: Store, part_max_rows: int,
                  part_max_bytes: int, synthetic_ratio: float | None = None) -> dict:
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
        "synthetic": "{}",
        # Per worker (<node id>/<pid>) that read and scored them: rows, peak RSS.
        "workers": json.dumps(_per_worker(rows)),
        "files": "[]",  # the real parts written, as <outcome>/<name>: what the recount reads
    }
    synthetic = None
    if "wrap_rephrasings" in rows.column_names:  # WRAP ran: its paraphrases become rows
        synthetic, mix = synthetic_rows(rows.filter(curated), synthetic_ratio or 1.0)
        tally["synthetic"] = json.dumps(mix)
        rows = rows.drop_columns(["wrap_rephrasings"]).append_column(
            "synthetic", pa.array([False] * rows.num_rows))
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
    if synthetic is not None:
        _write_parts(synthetic, out, "curated", key, SYNTHETIC_PART, part_max_rows,
                     part_max_bytes)
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


# What a paraphrase takes from its parent, when the parent has it: the labels a
# mixture groups by and the crawl's own metadata. Scores are not taken: they were
# computed on the parent's text, not on the paraphrase's.
INHERITED = ("lang", "dataman_domain", "dataman_domain_name", "url", "source", "crawl",
             "date")


def synthetic_rows(curated: pa.Table, ratio: float) -> tuple[pa.Table, dict]:
    """The WRAP paraphrases of curated documents as rows of their own, at most `ratio`
    synthetic tokens per real token over all styles together (the paper mixes real
    and synthetic 1:1; tokens: whitespace words). Which ones go over the cap is
    decided by a hash of the id, not by order or style."""
    real_tokens = sum(len(t.split()) for t in curated.column("text").to_pylist())
    keep = [c for c in INHERITED if c in curated.column_names]
    made = []
    for row in curated.select(["id", "source_shard", "source_row", "wrap_rephrasings", *keep]
                              ).to_pylist():
        for one in row["wrap_rephrasings"] or []:
            made.append({
                "id": f"{row['id']}-wrap-{one['style']}", "text": one["text"],
                "synthetic": True, "parent_id": row["id"], "style": one["style"],
                "model": one["model"], "chunk_count": one["chunk_count"],
                "wrap_prompt_tokens": one["prompt_tokens"],
                "wrap_completion_tokens": one["completion_tokens"],
                "source_shard": row["source_shard"], "source_row": row["source_row"],
                **{c: row[c] for c in keep}})
    made.sort(key=lambda r: hashlib.sha1(r["id"].encode()).digest())
    mix: dict = {"real_tokens": real_tokens, "styles": {}}
    out, tokens = [], 0
    for row in made:
        n = len(row["text"].split())
        stats = mix["styles"].setdefault(row["style"], {"rows": 0, "tokens": 0, "over_ratio": 0})
        if tokens + n > ratio * real_tokens:
            stats["over_ratio"] += 1
            continue
        tokens += n
        stats["rows"] += 1
        stats["tokens"] += n
        out.append(row)
    out.sort(key=lambda r: (r["source_row"], r["style"]))
    schema = SYNTHETIC_SCHEMA
    for column in keep:
        schema = schema.append(curated.schema.field(column))
    return pa.Table.from_pylist(out, schema=schema), mix


SYNTHETIC_SCHEMA = pa.schema([
    ("id", pa.string()), ("text", pa.string()), ("synthetic", pa.bool_()),
    ("parent_id", pa.string()), ("style", pa.string()), ("model", pa.string()),
    ("chunk_count", pa.int32()), ("wrap_prompt_tokens", pa.int32()),
    ("wrap_completion_tokens", pa.int32()), ("source_shard", pa.string()),
    ("source_row", pa.int64()),
])


def _rows_per_part(table: pa.Table, max_rows: int, max_bytes: int) -> int:
    """Rows per part so that a part stays under both bounds (bytes by the average row)."""
    if table.num_rows == 0:
        return max_rows
    average = max(1, table.nbytes // table.num_rows)
    return max(1, min(max_rows, max_bytes // average))


def part_name(shard_key: str, first_row: int, kind: str = "") -> str:
    return f"part-{shard_key}-{kind}{first_row:010d}.parquet"


def is_synthetic_part(part: str) -> bool:
    return _base_name(part).rsplit("-", 1)[-1].startswith(SYNTHETIC_PART)


def part_shard_key(part: str) -> str:
    """The shard key in a part's name (the inverse of part_name)."""
    return _base_name(part)[len("part-"):].rsplit("-", 1)[0]


def _base_name(path) -> str:
    return str(path).rsplit("/", 1)[-1]


def _head(message: str) -> str:
    """Error messages grouped by their first 120 characters, for the manifest."""
    return message[:120]
