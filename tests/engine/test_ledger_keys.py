"""One file, one ledger key; change detection; `status` against what is on disk."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import good_rows, write_shard
from e2e_helpers import assert_each_row_once, output_rows
from thresher.pipeline.engine.shards import canonical, inspect_shard

THRESHER = str(Path(sys.executable).with_name("thresher"))


def thresher(*args, cwd=None):
    done = subprocess.run([THRESHER, *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def test_canonical_names_one_file_one_way(tmp_path):
    shard = write_shard(tmp_path / "crawl" / "a.parquet", good_rows(3))
    (tmp_path / "link").symlink_to(tmp_path / "crawl")
    real = os.path.realpath(shard)
    assert canonical(str(shard)) == canonical(f"file://{shard}") == real
    assert canonical(str(tmp_path / "link" / "a.parquet")) == real
    assert canonical("s3://bucket/crawl/a.parquet") == "s3://bucket/crawl/a.parquet"


def test_the_same_shards_as_a_uri_and_as_a_path_are_curated_once(tmp_path, lang_only_config):
    crawl, out = tmp_path / "crawl", tmp_path / "out"
    shards = [write_shard(crawl / f"{n}.parquet", good_rows(8, n)) for n in "ab"]
    first = thresher("curate", "-i", f"file://{crawl}/*.parquet", "-o", str(out), "-c",
                     str(lang_only_config), "--no-progress")
    assert "2 shards new" in first
    second = thresher("curate", "-i", "crawl", "-o", str(out), "-c", str(lang_only_config),
                      "--no-progress", cwd=tmp_path)
    assert "2 shards in input: 2 done" in second and "nothing new to do" in second
    assert_each_row_once(out, shards)


def test_a_rewrite_with_the_same_size_and_footer_is_seen_by_its_mtime(tmp_path):
    shard = write_shard(tmp_path / "a.parquet", good_rows(5))
    before = inspect_shard(str(shard))
    stat = shard.stat()
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same bytes, rewritten
    assert inspect_shard(str(shard)).fingerprint != before.fingerprint


def test_status_totals_are_what_the_output_holds_after_a_changed_shard(tmp_path,
                                                                       lang_only_config):
    crawl, out = tmp_path / "crawl", tmp_path / "out"
    first = write_shard(crawl / "a.parquet", good_rows(30, "a"))
    second = write_shard(crawl / "b.parquet", good_rows(20, "b"))
    args = ["curate", "-i", str(crawl), "-o", str(out), "-c", str(lang_only_config),
            "--no-progress"]
    thresher(*args)
    write_shard(first, good_rows(12, "a2"))  # changed: the old 30 rows are superseded
    thresher(*args)
    status = thresher("status", "-o", str(out))
    on_disk = output_rows(out)
    held = {k: sum(v.values()) for k, v in on_disk.items()}
    assert sum(held.values()) == 32
    assert (f"now in the output: 32 rows in -> {held['curated']:,} curated, "
            f"{held['rejected']:,} rejected, {held['quarantine']:,} quarantined") in status
    assert "history" in status
    assert_each_row_once(out, [first, second])
