"""The lines step through real runs: groups of shards as cc_net forms them, the lines
of earlier crawls through the Bloom filter, and no content lost when a shard that is
already in the filter is read again."""

import json

import pyarrow.parquet as pq
import pytest
import yaml

from conftest import write_shard
from thresher.pipeline.engine.config import parse_config
from thresher.pipeline.engine.run import curate

CONFIG = """
stages:
  - stage: lines
    group_shards: 1
    scope: all
    capacity: 10000
    fp_rate: 0.001
filters: ["lines_kept > 0"]
"""
MENU = "Menu | Home | News"


def docs(prefix, texts):
    return [{"id": f"{prefix}{i}", "text": t} for i, t in enumerate(texts)]


def curated(out) -> dict:
    rows = {}
    for path in sorted((out / "curated").glob("*.parquet")):
        for row in pq.read_table(path, columns=["id", "text", "lines_seen_before"]).to_pylist():
            rows[row["id"]] = (row["text"], row["lines_seen_before"])
    return rows


@pytest.fixture(scope="module")
def config():
    return parse_config(yaml.safe_load(CONFIG), "lines test")


def test_groups_then_earlier_crawls_then_a_changed_shard(tmp_path, ray_cluster, config):
    crawl = tmp_path / "crawl"
    a = write_shard(crawl / "a.parquet", docs("a", [f"{MENU}\nRiver {w} rises." for w in
                                                   ("one", "two", "three")]))
    b_rows = docs("b", [f"{MENU}\nA bridge of stone.", "Only in b."])
    b = write_shard(crawl / "b.parquet", b_rows)
    out = tmp_path / "out"
    first = curate([str(a), str(b)], out, config, progress=False)
    assert first.totals == {**first.totals, "curated": 5, "rejected": 0}
    rows = curated(out)
    # a: the menu is in three of its documents, so it goes; b is a group of its own
    assert [rows[f"a{i}"][0] for i in range(3)] == ["River one rises.", "River two rises.",
                                                    "River three rises."]
    assert rows["b0"][0] == f"{MENU}\nA bridge of stone."
    manifest = json.loads(first.manifest_path.read_text())["lines"]
    assert (manifest["groups"], manifest["duplicated_hashes"]) == (2, 1)
    assert manifest["bloom"]["shards"] == 2
    assert (out / "dedup" / "lines" / "bloom" / "bloom.json").exists()
    assert not list((out / "dedup" / "lines" / "runs").rglob("*.*"))  # read, then gone

    c = write_shard(crawl / "c.parquet", docs("c", [f"{MENU}\nA bridge of stone.\nNew here.",
                                                    "Only in b."]))
    second = curate([str(c)], out, config, progress=False)
    assert second.totals["rejected"] == 1  # all of c1 was in an earlier crawl
    rows = curated(out)
    assert rows["c0"] == ("New here.", 2)
    assert json.loads(second.manifest_path.read_text())["drop_reasons"] == {
        "lines_kept<=0": 1}

    # b changes at the same path: its lines are in the filter already, and must not
    # match themselves
    write_shard(b, b_rows + docs("b-new", ["Only in b, now."]))
    third = curate([str(b)], out, config, progress=False)
    assert third.totals["curated"] == 3
    rows = curated(out)
    assert rows["b1"] == ("Only in b.", 0) and rows["b0"][0] == f"{MENU}\nA bridge of stone."


def test_a_filter_of_another_size_is_refused(tmp_path, ray_cluster, config):
    shard = write_shard(tmp_path / "crawl" / "a.parquet", docs("a", ["one", "two"]))
    curate([str(shard)], tmp_path / "out", config, progress=False)
    bigger = parse_config(yaml.safe_load(CONFIG.replace("10000", "20000")), "lines test")
    other = write_shard(tmp_path / "crawl" / "b.parquet", docs("b", ["three"]))
    with pytest.raises(Exception, match="capacity 10000 at fp_rate 0.001"):
        curate([str(other)], tmp_path / "out", bigger, progress=False)


def test_a_stage_that_calibrates_before_lines_is_refused_by_the_config_check(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    config = tmp_path / "c.yaml"
    config.write_text("stages:\n  - stage: ccnet\n  - stage: lines\nfilters: []\n")
    result = subprocess.run([str(Path(sys.executable).with_name("thresher")), "config",
                             "--check", str(config)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"thresher: error: {config}: stage ccnet is before lines but needs a calibration, a "
        "GPU or an LLM; put lines before it")
