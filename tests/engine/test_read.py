import pyarrow as pa
import pyarrow.parquet as pq

from conftest import good_rows, write_shard
from thresher.pipeline.engine.read import content_id, read_shard


def read_all(path, **kw):
    tables = list(read_shard(str(path), "k", batch_rows=kw.get("batch_rows", 100),
                             max_text_bytes=kw.get("max_text_bytes", 1000)))
    return pa.concat_tables(tables, promote_options="permissive").to_pylist()


def test_triage_marks_each_kind_of_bad_row(tmp_path):
    rows = [{"id": "a", "text": "fine"}, {"id": "b", "text": None}, {"id": "c", "text": "  \n"},
            {"id": "d", "text": "x" * 2000}, {"id": "a", "text": "again"}]
    out = read_all(write_shard(tmp_path / "s.parquet", rows))
    assert [(r["id"], r["_error"], r["_pre"]) for r in out] == [
        ("a", None, None), ("b", "text is null", None), ("c", None, "empty_text"),
        ("d", None, "too_long"), ("a", None, "duplicate_id")]
    assert [r["source_row"] for r in out] == [0, 1, 2, 3, 4]
    assert all(r["_count"] == 1 and r["_shard"] == "k" for r in out)


def test_duplicate_ids_are_found_across_batches_of_a_shard(tmp_path):
    rows = [{"id": str(i % 3), "text": f"t{i}"} for i in range(6)]
    out = read_all(write_shard(tmp_path / "s.parquet", rows), batch_rows=2)
    assert [r["_pre"] for r in out] == [None] * 3 + ["duplicate_id"] * 3


def test_ids_derived_from_content_when_absent(tmp_path):
    out = read_all(write_shard(tmp_path / "s.parquet", [{"text": "hello"}]))
    assert out[0]["id"] == content_id("hello")


def test_binary_text_with_bad_utf8_is_quarantined_per_row(tmp_path):
    table = pa.table({"text": pa.array([b"ok \xc3\xa9", b"bad \xff\xfe"], pa.binary())})
    out = read_all(write_shard(tmp_path / "s.parquet", table))
    assert out[0]["text"] == "ok é" and out[0]["_error"] is None
    assert out[1]["text"] is None and "not valid UTF-8" in out[1]["_error"]


def test_corrupt_row_group_becomes_one_row_standing_for_it(tmp_path):
    path = write_shard(tmp_path / "s.parquet", good_rows(30), row_group_size=10,
                       compression="none")
    meta = pq.read_metadata(path)
    column = meta.row_group(1).column(1)  # the `text` column of row group 1
    data = bytearray(path.read_bytes())
    start = column.dictionary_page_offset or column.data_page_offset
    data[start:start + column.total_compressed_size] = b"\xff" * column.total_compressed_size
    path.write_bytes(bytes(data))
    out = read_all(path)
    lost = [r for r in out if r["_error"]]
    assert len(lost) == 1 and lost[0]["_count"] == 10 and lost[0]["source_row"] == 10
    assert "row group 1 unreadable" in lost[0]["_error"]
    assert sum(r["_count"] for r in out) == 30  # nothing lost from the accounting


def test_a_bug_in_triage_is_raised_not_quarantined_as_bad_data(tmp_path, monkeypatch):
    import pytest

    from thresher.pipeline.engine import read

    shard = write_shard(tmp_path / "a.parquet", good_rows(5))

    def broken(*args, **kwargs):
        raise KeyError("a bug in thresher, not in the shard")

    monkeypatch.setattr(read, "triage", broken)
    with pytest.raises(KeyError, match="a bug in thresher"):
        read_all(shard)
