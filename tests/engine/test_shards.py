import pyarrow as pa
import pytest

from conftest import good_rows, write_shard
from thresher.pipeline.engine.shards import InputError, expand_inputs, inspect_shard


def test_expand_files_dirs_and_globs(tmp_path):
    a = write_shard(tmp_path / "crawl" / "a.parquet", good_rows(2))
    b = write_shard(tmp_path / "crawl" / "sub" / "b.parquet", good_rows(2))
    assert expand_inputs([str(tmp_path / "crawl")]) == [str(a), str(b)]
    assert expand_inputs([str(tmp_path / "crawl" / "*.parquet"), str(a)]) == [str(a)]


@pytest.mark.parametrize("make, message", [
    (lambda p: str(p / "missing.parquet"), "does not exist"),
    (lambda p: str(p / "*.nothing"), "matches no file"),
    (lambda p: (p / "empty").mkdir() or str(p / "empty"), "holds no"),
])
def test_bad_input_paths_fail_at_once(tmp_path, make, message):
    with pytest.raises(InputError, match=message):
        expand_inputs([make(tmp_path)])


def test_shard_errors_found_from_the_footer(tmp_path):
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 this is not parquet")
    assert "not a readable Parquet file" in inspect_shard(str(junk)).error
    no_text = write_shard(tmp_path / "n.parquet", [{"body": "x"}])
    assert "no `text` column" in inspect_shard(str(no_text)).error
    ints = write_shard(tmp_path / "i.parquet", pa.table({"text": [1, 2]}))
    assert "has type int64" in inspect_shard(str(ints)).error
    good = inspect_shard(str(write_shard(tmp_path / "g.parquet", good_rows(3))))
    assert good.error is None and good.num_rows == 3


def test_fingerprint_follows_content_and_mtime_not_name(tmp_path):
    import os

    first = write_shard(tmp_path / "a.parquet", good_rows(3))
    copy = write_shard(tmp_path / "b.parquet", good_rows(3))
    stat = first.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # a copy that keeps the mtime
    a, same = inspect_shard(str(first)), inspect_shard(str(copy))
    other = inspect_shard(str(write_shard(tmp_path / "a.parquet", good_rows(4))))
    assert a.fingerprint == same.fingerprint
    assert a.fingerprint != other.fingerprint and a.key != other.key
