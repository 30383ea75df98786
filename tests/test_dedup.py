"""Deduplication through the pipeline (pipeline/steps/dedup.py) on a real local Ray:
the labelled set, a reference union-find, runs over successive crawls, a kill."""

import glob
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import write_shard
from e2e_helpers import assert_each_row_once
from thresher.pipeline.engine.config import ConfigError, load_config, parse_config
from thresher.pipeline.engine.run import curate
from thresher.pipeline.io import labelled_dups

ROOT = Path(__file__).resolve().parents[1]
CRAWL = ROOT / "data" / "demo-crawl"
THRESHER = str(Path(sys.executable).with_name("thresher"))
DEDUP_ONLY = "stages:\n  - stage: dedup\nfilters: ['dup_keep != false']\n"
LIGHT = ("original", "exact", "words", "frame", "case")

pytestmark = pytest.mark.usefixtures("ray_cluster")


@pytest.fixture(scope="module")
def dedup_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "dedup.yaml"
    path.write_text(DEDUP_ONLY)
    return path


@pytest.fixture(scope="module")
def labelled() -> pa.Table:
    return labelled_dups.build(CRAWL, originals=60, seed=1)


def rows_of(out: Path, outcome: str) -> pa.Table:
    files = sorted(glob.glob(f"{out}/{outcome}/part-*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive") \
        if files else pa.table({"id": pa.array([], pa.string())})


def everything(out: Path) -> dict[str, dict]:
    found = {}
    for outcome in ("curated", "rejected"):
        for row in rows_of(out, outcome).to_pylist():
            found[row["id"]] = {**row, "outcome": outcome}
    return found


def chain(length: int, seed: int) -> list[str]:
    """Documents each a light edit of the one before: the first and last share little,
    so only the chain of candidates joins them (a long path for the components)."""
    rng = random.Random(seed)
    words = [f"{''.join(rng.choice('abcdefghij') for _ in range(5))}" for _ in range(400)]
    docs = []
    for _ in range(length):
        for i in rng.sample(range(len(words)), 6):
            words[i] = "".join(rng.choice("klmnopqrst") for _ in range(5))
        docs.append(" ".join(words))
    return docs


def test_light_copies_are_removed_and_siblings_kept(tmp_path, dedup_config, labelled):
    crawl = tmp_path / "crawl"
    write_shard(crawl / "a.parquet", labelled.slice(0, 240))
    write_shard(crawl / "b.parquet", labelled.slice(240))
    result = curate([str(crawl)], tmp_path / "out", load_config(dedup_config), progress=False)
    assert result.state == "finished"
    rows = everything(tmp_path / "out")
    for group in range(60):
        members = [rows[f"g{group:04d}-{kind}"] for kind in LIGHT]
        assert len({m["dup_cluster"] for m in members}) == 1, group  # one cluster
        assert sum(m["dup_keep"] for m in members) <= 1
        for kind in ("sibling-1", "sibling-2"):
            assert rows[f"g{group:04d}-{kind}"]["dup_cluster"] != members[0]["dup_cluster"]
            assert rows[f"g{group:04d}-{kind}"]["dup_keep"] is True
    removed = {i for i, r in rows.items() if r["outcome"] == "rejected"}
    scores = labelled_dups.score(labelled, removed)
    assert scores["recall"] == 1.0 and scores["siblings_removed"] == 0
    assert {r["drop_reason"] for r in rows.values() if r["outcome"] == "rejected"} == \
        {"dup_keep=false"}
    kept = [r for r in rows.values() if r["dup_keep"] and r["dup_cluster_size"] > 1]
    assert all(r["dup_cluster"] == r["id"] for r in kept)  # a cluster is named by its keeper
    assert_each_row_once(tmp_path / "out", [crawl / "a.parquet", crawl / "b.parquet"])


def reference_clusters(out: Path) -> list[set[int]]:
    """Connected components of equal keys, by a union-find in this process."""
    sig = pa.concat_tables(pq.read_table(f) for f in
                           glob.glob(f"{out}/dedup/signatures/*/*.parquet"))
    uid = sig.column("uid").to_pylist()
    keys = np.asarray(pc.list_flatten(sig.column("keys")).to_numpy()).reshape(len(uid), -1)
    parent = {u: u for u in uid}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x
    first = {}
    for u, row in zip(uid, keys.tolist()):
        for k in row:
            if k and k in first:
                parent[find(u)] = find(first[k])
            elif k:
                first[k] = u
    groups: dict[int, set[int]] = {}
    for u in uid:
        groups.setdefault(find(u), set()).add(u)
    return [g for g in groups.values() if len(g) > 1]


def test_clusters_equal_a_reference_union_find(tmp_path, dedup_config, labelled):
    crawl = tmp_path / "crawl"
    docs = chain(14, seed=2) + chain(9, seed=3)
    extra = pa.table({"id": [f"chain-{i}" for i in range(len(docs))], "text": docs,
                      "url": pa.nulls(len(docs), pa.string()), "group": [-1] * len(docs),
                      "kind": ["chain"] * len(docs)})
    mixed = pa.concat_tables([labelled, extra]).take(
        np.random.default_rng(0).permutation(labelled.num_rows + extra.num_rows))
    for i in range(3):
        write_shard(crawl / f"p{i}.parquet", mixed.slice(i * 170, 170))
    out = tmp_path / "out"
    result = curate([str(crawl)], out, load_config(dedup_config), progress=False)
    expected = reference_clusters(out)
    decisions = pa.concat_tables(pq.read_table(f) for f in
                                 glob.glob(f"{out}/dedup/clusters/*/*.parquet"))
    rep = dict(zip(decisions.column("uid").to_pylist(), decisions.column("rep").to_pylist()))
    size = dict(zip(decisions.column("uid").to_pylist(), decisions.column("size").to_pylist()))
    assert set(rep) == set().union(*expected)
    for members in expected:
        assert len({rep[u] for u in members}) == 1  # one cluster, one keeper
        assert next(iter({rep[u] for u in members})) in members
        assert all(size[u] == len(members) for u in members)
    assert len({rep[next(iter(m))] for m in expected}) == len(expected)
    chains = [m for m in expected if len(m) >= 9]
    assert sorted(len(m) for m in chains)[-2:] == [9, 14]  # each chain is one cluster
    removed = sum(len(m) - 1 for m in expected)
    assert result.totals["rejected"] == removed
    assert result.plan == {"new": 3, "changed": 0, "resumed": 0, "done": 0}


def file_hashes(out: Path, patterns: list[str]) -> dict[str, str]:
    return {f: hashlib.sha1(Path(f).read_bytes()).hexdigest()
            for p in patterns for f in glob.glob(f"{out}/{p}", recursive=True)
            if Path(f).is_file()}


def test_a_second_crawl_is_deduplicated_against_the_first(tmp_path, dedup_config, labelled):
    first, second, out = tmp_path / "crawl-1", tmp_path / "crawl-2", tmp_path / "out"
    originals = labelled.filter(pc.is_in(labelled.column("kind"),
                                         pa.array(["original", "exact", "sibling"])))
    write_shard(first / "a.parquet", originals.slice(0, 120))
    write_shard(first / "b.parquet", originals.slice(120))
    config = load_config(dedup_config)
    curate([str(first)], out, config, progress=False)
    before = everything(out)
    kept_before = {i for i, r in before.items() if r["outcome"] == "curated"}
    frozen = file_hashes(out, ["curated/*", "rejected/*", "dedup/signatures/**/*",
                               "dedup/clusters/**/*"])

    # The new crawl: light edits of documents of the first (kept or removed there),
    # and documents of its own.
    later = labelled.filter(pc.is_in(labelled.column("kind"), pa.array(["words", "frame"])))
    fresh = pa.table({"id": [f"new-{i}" for i in range(40)],
                      "text": [f"{t} fresh" for t in chain(40, seed=9)],
                      "url": pa.nulls(40, pa.string()), "group": [-1] * 40,
                      "kind": ["new"] * 40})
    write_shard(second / "c.parquet", pa.concat_tables([later, fresh]))
    result = curate([str(second)], out, config, progress=False)
    assert result.plan == {"new": 1, "changed": 0, "resumed": 0, "done": 0}
    assert file_hashes(out, ["curated/*", "rejected/*", "dedup/signatures/**/*",
                             "dedup/clusters/**/*"]).items() >= frozen.items()  # untouched
    after = everything(out)
    for row in later.to_pylist():
        mine = after[row["id"]]
        assert mine["outcome"] == "rejected" and mine["dup_keep"] is False
        group = [i for i in kept_before if i.startswith(f"g{row['group']:04d}-")
                 and before[i]["kind"] in ("original", "exact")]
        assert mine["dup_cluster"] in group  # the copy the first run kept
        # original + exact from the first run, words + frame from this one
        assert mine["dup_cluster_size"] in (3, 4)
    sizes = [after[f"g{g:04d}-{k}"]["dup_cluster_size"] for g in range(60)
             for k in ("words", "frame")]
    assert sizes.count(4) > 0
    new_rows = [after[f"new-{i}"] for i in range(40)]
    assert sum(r["outcome"] == "curated" for r in new_rows) >= 1
    assert result.totals["rejected"] == 120 + sum(r["outcome"] == "rejected" for r in new_rows)

    # The same crawl again: nothing to do. A shard whose content changed replaces its
    # old index entries.
    assert curate([str(second)], out, config, progress=False).state == "nothing-to-do"
    write_shard(second / "c.parquet", fresh)
    again = curate([str(second)], out, config, progress=False)
    assert again.plan["changed"] == 1
    index = __import__("json").loads((out / "dedup" / "index.json").read_text())
    assert index["docs"] == originals.num_rows + fresh.num_rows
    run = __import__("json").loads(again.manifest_path.read_text())
    assert run["dedup"]["index"]["documents"] == originals.num_rows + fresh.num_rows
    for command in (["status", "-o", str(out)], ["plan", "-i", str(second), "-o", str(out)]):
        shown = subprocess.run([THRESHER, *command], capture_output=True, text=True,
                               cwd=tmp_path, check=True).stdout
        assert f"dedup index: {originals.num_rows + fresh.num_rows:,} documents from 3 " \
            "shards" in shown


def test_dups_skip_the_later_stages(tmp_path):
    text = "the committee published its annual report on the state of public libraries " * 5
    rows = [{"id": f"d{i}", "text": text} for i in range(3)]
    write_shard(tmp_path / "crawl" / "a.parquet", rows)
    config = parse_config({"stages": [{"stage": "dedup"}, {"stage": "lang"}],
                           "filters": ["dup_keep != false"]}, "test")
    result = curate([str(tmp_path / "crawl")], tmp_path / "out", config, progress=False)
    assert result.totals == {"rows_in": 3, "curated": 1, "rejected": 2, "quarantined": 0}
    rejected = rows_of(tmp_path / "out", "rejected").to_pylist()
    assert all(r["lang"] is None and r["dup_cluster_size"] == 3 for r in rejected)
    assert rows_of(tmp_path / "out", "curated").column("lang").to_pylist() == ["en"]


def test_keep_by_keeps_the_highest_score(tmp_path):
    text = "the committee published its annual report on the state of public libraries " * 5
    rows = [{"id": f"d{i}", "text": text, "quality": q} for i, q in enumerate([0.2, 0.9, 0.5])]
    write_shard(tmp_path / "crawl" / "a.parquet", rows)
    config = parse_config({"stages": [{"stage": "dedup", "keep_by": "quality"}],
                           "filters": ["dup_keep != false"]}, "test")
    curate([str(tmp_path / "crawl")], tmp_path / "out", config, progress=False)
    assert rows_of(tmp_path / "out", "curated").column("id").to_pylist() == ["d1"]

    missing = parse_config({"stages": [{"stage": "dedup", "keep_by": "nope"}]}, "test.yaml")
    with pytest.raises(ConfigError, match="keep_by 'nope'"):
        curate([str(tmp_path / "crawl")], tmp_path / "out2", missing, progress=False)


def test_a_stage_needing_calibration_before_dedup_is_refused():
    with pytest.raises(ConfigError, match="put dedup before it"):
        parse_config({"stages": [{"stage": "ccnet"}, {"stage": "dedup"}]}, "mine.yaml")


def test_killed_while_clustering_then_rerun_accounts_every_row_once(tmp_path, dedup_config,
                                                                     labelled):
    crawl = tmp_path / "crawl"
    shards = [write_shard(crawl / f"p{i}.parquet", labelled.slice(i * 120, 120))
              for i in range(4)]
    out = tmp_path / "out"
    driver = subprocess.Popen(
        [THRESHER, "curate", "-i", str(crawl), "-o", str(out), "-c", str(dedup_config),
         "--no-progress", "--num-cpus", "2"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    for line in driver.stderr:
        if "signatures written" in line or time.time() > deadline:
            break
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and its Ray, mid-clustering
    driver.wait()
    assert glob.glob(f"{out}/dedup/signatures/*/*.parquet")
    assert not glob.glob(f"{out}/curated/*.parquet")

    result = curate([str(crawl)], out, load_config(dedup_config), progress=False)
    assert result.plan == {"new": 0, "changed": 0, "resumed": 4, "done": 0}
    assert_each_row_once(out, shards)
    clean = curate([str(crawl)], tmp_path / "clean", load_config(dedup_config), progress=False)
    assert result.totals == clean.totals
    assert set(rows_of(out, "rejected").column("id").to_pylist()) == \
        set(rows_of(tmp_path / "clean", "rejected").column("id").to_pylist())
