"""Run one stage over a batch, inside a Ray worker.

Only rows still in play (no error, no early drop reason) reach the stage; the others
get the stage's columns as nulls. When the stage raises, the batch is split in halves
until the failing rows are isolated: they are quarantined with the error, and the
rest of the batch is scored as usual. The time spent is spread over the batch's rows
in `_t_<stage>`, so that the writer can sum it per shard.
"""

from __future__ import annotations

import time
import traceback

import pyarrow as pa
import pyarrow.compute as pc

from thresher.stages import Stage
from thresher.pipeline.engine.rules import Rule
from thresher.stages.base import BatchFailure


def apply_stage(stage: Stage, batch: pa.Table, rules: tuple[Rule, ...] = ()) -> pa.Table:
    """rules: the config's filters, which a `kept_only` stage's rows must still pass
    (those on columns earlier stages added; the later ones cannot be known yet)."""
    start = time.perf_counter()
    in_play = pc.and_(pc.is_null(batch.column("_error")), pc.is_null(batch.column("_pre")))
    if stage.kept_only:
        in_play = kept_so_far(batch, rules, in_play)
    active = batch.filter(in_play)
    waiting = batch.filter(pc.invert(in_play))
    scored, failed = _score_isolating(stage, active)
    parts = scored + [_with_stage_nulls(stage, t) for t in failed]
    if waiting.num_rows:
        parts.append(_with_stage_nulls(stage, waiting))
    out = pa.concat_tables(parts, promote_options="permissive") if parts else \
        _with_stage_nulls(stage, batch)
    if stage.gate:
        out = _gate(stage, out, rules)
    per_row = (time.perf_counter() - start) / max(batch.num_rows, 1)
    return out.append_column(f"_t_{stage.name}", pa.array([per_row] * out.num_rows, pa.float64()))


def kept_so_far(batch: pa.Table, rules: tuple[Rule, ...], in_play):
    """in_play and the rules on the columns the batch has so far: what a `kept_only`
    stage works on (the rules on later columns cannot be known yet)."""
    for rule in rules:
        if rule.column in batch.column_names:
            in_play = pc.and_(in_play, rule.passes(batch))
    return in_play


def _gate(stage: Stage, table: pa.Table, rules: tuple[Rule, ...]) -> pa.Table:
    """Rows in play that fail a rule on the gate stage's columns get that rule's drop
    reason now (in `_pre`): the later stages skip them."""
    pre = table.column("_pre")
    in_play = pc.and_(pc.is_null(table.column("_error")), pc.is_null(pre))
    for rule in rules:
        if rule.column in stage.columns:
            fails = pc.and_(in_play, pc.invert(rule.passes(table)))
            pre = pc.if_else(fails, rule.reasons(table), pre)
            in_play = pc.and_(in_play, pc.invert(fails))
    return table.set_column(table.schema.get_field_index("_pre"), "_pre", pre)


def _score_isolating(stage: Stage, table: pa.Table) -> tuple[list[pa.Table], list[pa.Table]]:
    """(scored tables, quarantined one-row tables with _error set)."""
    if table.num_rows == 0:
        return [], []
    try:
        out = stage(table)
    except BatchFailure as err:  # the engine, not a document: no culprit to look for
        message = pa.array([f"stage {stage.name}: {err}"] * table.num_rows, pa.string())
        return [], [table.set_column(table.schema.get_field_index("_error"), "_error", message)]
    except Exception as err:  # a stage bug or a document it cannot handle
        if table.num_rows == 1:
            message = f"stage {stage.name}: {type(err).__name__}: {err}"
            detail = traceback.format_exc(limit=3).strip().splitlines()[-1]
            error = pa.array([message if detail in message else f"{message} [{detail}]"])
            return [], [table.set_column(table.schema.get_field_index("_error"), "_error", error)]
        half = table.num_rows // 2
        left = _score_isolating(stage, table.slice(0, half))
        right = _score_isolating(stage, table.slice(half))
        return left[0] + right[0], left[1] + right[1]
    _check_contract(stage, table, out)
    return [out], []


def _check_contract(stage: Stage, table: pa.Table, out: pa.Table) -> None:
    if out.num_rows != table.num_rows:
        raise RuntimeError(f"stage {stage.name} returned {out.num_rows} rows for "
                           f"{table.num_rows}: stages must not add or drop rows")
    missing = [c for c in stage.columns if c not in out.column_names]
    if missing:
        raise RuntimeError(f"stage {stage.name} did not add its columns {missing}")


def _with_stage_nulls(stage: Stage, table: pa.Table) -> pa.Table:
    for name, values in stage.empty_columns(table.num_rows).items():
        if name not in table.column_names:
            table = table.append_column(name, values)
    return table
