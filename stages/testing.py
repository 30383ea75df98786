"""The stage contract as one assertion, for every stage's tests (and a plugin's).

    from thresher.stages.testing import assert_stage_contract
    out = assert_stage_contract(MyStage(), table)

It calls the stage on `table` the way a worker does (after setup) and checks what the
engine relies on: the same rows in the same order, the input's columns untouched
(`text` may change only in a stage that declares `rewrites_text`),
exactly the declared columns added with the declared types, and the same result when
the stage is given only `id`, `text` and the columns it declares in `reads`.
"""

from __future__ import annotations

import pyarrow as pa

from thresher.stages.base import Stage


def assert_stage_contract(stage: Stage, table: pa.Table) -> pa.Table:
    """The stage's output on `table`, after checking the contract; AssertionError
    naming the broken rule otherwise."""
    stage.ready()
    out = stage(table)
    name = stage.name
    assert out.num_rows == table.num_rows, \
        f"{name}: {out.num_rows} rows out for {table.num_rows} in (stages keep every row)"
    for column in table.column_names:
        assert column in out.column_names, f"{name}: dropped input column {column!r}"
        if column == "text" and stage.rewrites_text:
            assert out.schema.field("text").type == pa.string(), f"{name}: text is not a string"
            continue
        assert out.column(column).equals(table.column(column)), \
            f"{name}: changed input column {column!r}"
    added = [c for c in out.column_names if c not in table.column_names]
    assert sorted(added) == sorted(stage.columns), \
        f"{name}: added {sorted(added)}, declares {sorted(stage.columns)}"
    for column, typ in stage.columns.items():
        assert out.schema.field(column).type == typ, \
            f"{name}: {column!r} is {out.schema.field(column).type}, declared {typ}"
    empty = stage.empty_columns(2)
    assert {c: v.type for c, v in empty.items()} == dict(stage.columns), \
        f"{name}: empty_columns() does not match the declared columns"
    given = [c for c in ("id", "text", *stage.reads) if c in table.column_names]
    missing = [c for c in stage.reads if c not in table.column_names]
    assert not missing, f"{name}: reads {missing}, which the test table lacks"
    if len(given) < table.num_columns:
        narrow = stage(table.select(given))
        for column in stage.columns:
            assert narrow.column(column).equals(out.column(column)), \
                (f"{name}: {column!r} differs when the stage gets only {given}: it reads a "
                 "column it does not declare in `reads`")
    return out
