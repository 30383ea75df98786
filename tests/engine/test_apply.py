import pyarrow as pa
import pytest

from faulty import RaiseOnMarker
from thresher.pipeline.engine.apply import apply_stage
from thresher.stages.base import Stage


def batch(texts, pre=None):
    n = len(texts)
    return pa.table({"text": texts, "_error": pa.nulls(n, pa.string()),
                     "_pre": pa.array(pre or [None] * n, pa.string())})


def test_failing_rows_are_isolated_and_the_rest_scored():
    texts = [f"doc {i}" for i in range(20)]
    texts[7] = "doc BOOM"
    out = apply_stage(RaiseOnMarker(), batch(texts)).to_pylist()
    assert len(out) == 20
    bad = [r for r in out if r["_error"]]
    assert [r["text"] for r in bad] == ["doc BOOM"]
    assert "stage raiser: ValueError: cannot score this document" in bad[0]["_error"]
    assert bad[0]["raiser_len"] is None
    assert all(r["raiser_len"] == len(r["text"]) for r in out if not r["_error"])
    assert all(r["_t_raiser"] >= 0 for r in out)


def test_rows_out_of_play_are_not_shown_to_the_stage():
    out = apply_stage(RaiseOnMarker(), batch(["fine", "BOOM"], pre=[None, "too_long"]))
    rows = {r["text"]: r for r in out.to_pylist()}
    assert rows["fine"]["raiser_len"] == 4
    assert rows["BOOM"]["raiser_len"] is None and rows["BOOM"]["_error"] is None


class DropsRows(Stage):
    name = "dropper"
    columns = {"dropper_x": pa.int64()}

    def __call__(self, table):
        return table.slice(1).append_column("dropper_x", pa.array([1] * (table.num_rows - 1)))


def test_a_stage_that_drops_rows_fails_loudly():
    with pytest.raises(RuntimeError, match="must not add or drop rows"):
        apply_stage(DropsRows(), batch(["a", "b"]))
