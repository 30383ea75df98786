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

ROOT = Path(__file__).resolve().parents[2]
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


# ---- over many crawls: identities, keepers that leave, URLs, the index's format ----

PAGE = ("the harbour office posted new rules for small boats entering the bay after dark, "
        "asking every skipper to call the tower before passing the outer buoy and to keep "
        "the green light on the right side of the channel until the second pier")
OTHER = ("our garden club meets on the first tuesday of each month to trade seeds, swap "
         "cuttings and argue about whether tomatoes belong in a greenhouse or outside "
         "where the bees can find them without any help from us")


def page(i: int, words: int = 40) -> str:
    rng = random.Random(i)
    return " ".join("".join(rng.choice("abcdefghijklmnop") for _ in range(6))
                    for _ in range(words))


def curated_texts(out: Path) -> list[str]:
    return rows_of(out, "curated").column("text").to_pylist()


def keep_by_config(tmp_path: Path, **params) -> Path:
    import yaml

    path = tmp_path / "dedup-quality.yaml"
    path.write_text(yaml.safe_dump({"stages": [{"stage": "dedup", "keep_by": "quality",
                                                **params}],
                                    "filters": ["dup_keep != false", "dup_url_keep != false"]}))
    return path


def test_a_kept_documents_shard_changes_and_its_content_stays_once(tmp_path):
    """uids are never reused: a changed shard's documents are new documents. The
    cluster whose kept document left chooses again: a new copy if one arrives, else
    an earlier copy, promoted (its shard written again)."""
    crawl, out = tmp_path / "crawl", tmp_path / "out"
    config = load_config(keep_by_config(tmp_path))
    a = write_shard(crawl / "a.parquet", [
        {"id": "keeper", "text": PAGE, "quality": 0.9},
        *({"id": f"a{i}", "text": page(i), "quality": 0.5} for i in range(1, 4))])
    b = write_shard(crawl / "b.parquet", [
        {"id": "early-copy", "text": PAGE + " ", "quality": 0.1},
        *({"id": f"b{i}", "text": page(10 + i), "quality": 0.5} for i in range(3))])
    curate([str(crawl)], out, config, progress=False)
    assert curated_texts(out).count(PAGE) == 1
    assert everything(out)["early-copy"]["dup_cluster"] == "keeper"

    # a changes: an unrelated page now sits at the kept document's row, and a new
    # shard brings another copy of the kept content.
    write_shard(crawl / "a.parquet", [
        {"id": "unrelated", "text": OTHER, "quality": 0.5},
        *({"id": f"a{i}", "text": page(i), "quality": 0.5} for i in range(1, 4))])
    c = write_shard(crawl / "c.parquet", [{"id": "late-copy", "text": "  " + PAGE,
                                           "quality": 0.2}])
    result = curate([str(crawl)], out, config, progress=False)
    assert result.plan == {"new": 1, "changed": 1, "resumed": 0, "done": 1}
    rows = everything(out)
    assert rows["unrelated"]["outcome"] == "curated"
    assert rows["unrelated"]["dup_cluster"] == "unrelated"  # inherits nothing
    assert rows["unrelated"]["dup_cluster_size"] == 1
    assert rows["late-copy"]["outcome"] == "curated"  # the cluster's new keeper
    assert [t.strip() for t in curated_texts(out)].count(PAGE) == 1
    manifest = __import__("json").loads(result.manifest_path.read_text())
    assert manifest["dedup"]["kept_documents_departed"] == 1
    assert manifest["dedup"]["cluster_invariant_violations"] == 0

    # c changes too: no new copy now, so the earliest copy is promoted and b is
    # written again (its rows once, its copy curated with every later stage's columns).
    write_shard(crawl / "c.parquet", [{"id": "c0", "text": page(99), "quality": 0.5}])
    result = curate([str(crawl)], out, config, progress=False)
    rows = everything(out)
    assert rows["early-copy"]["outcome"] == "curated" and rows["early-copy"]["dup_keep"]
    assert [t.strip() for t in curated_texts(out)].count(PAGE) == 1
    manifest = __import__("json").loads(result.manifest_path.read_text())
    assert manifest["dedup"]["promoted"] == 1 and manifest["dedup"]["repair"] == [str(b)]
    assert_each_row_once(out, [a, b, c])


def test_urls_never_join_content_and_crawls_follow_the_policy(tmp_path):
    first, second = tmp_path / "crawl-1", tmp_path / "crawl-2"
    write_shard(first / "a.parquet", [
        {"id": "x1", "text": PAGE, "url": "https://site.invalid/shared", "quality": 0.9},
        {"id": "x2", "text": PAGE + " again", "url": "https://site.invalid/x", "quality": 0.1},
        {"id": "y1", "text": OTHER, "url": "http://www.site.invalid/shared/", "quality": 0.1},
        {"id": "y2", "text": OTHER.replace(" ", "\n"), "url": "https://site.invalid/y",
         "quality": 0.9},
        {"id": "old-news", "text": page(1), "url": "https://news.invalid/today",
         "quality": 0.5}])
    write_shard(second / "b.parquet", [
        {"id": "new-news", "text": page(2), "url": "https://news.invalid/today",
         "quality": 0.5}])
    outcomes = {}
    for policy in ("off", "keep_first", "keep_newest"):
        out = tmp_path / f"out-{policy}"
        config = load_config(keep_by_config(tmp_path, url_crawls=policy))
        curate([str(first)], out, config, progress=False)
        curate([str(second)], out, config, progress=False)
        rows = everything(out)
        outcomes[policy] = {i: (r["outcome"], r.get("drop_reason")) for i, r in rows.items()
                            if "news" in i}
        # Two content clusters that share a URL stay two clusters; a line break is a
        # space (y2 is y1 with line breaks for spaces).
        assert rows["x1"]["dup_cluster"] == rows["x2"]["dup_cluster"] == "x1"
        assert rows["y1"]["dup_cluster"] == rows["y2"]["dup_cluster"] == "y2"
        assert {rows[i]["dup_cluster_size"] for i in ("x1", "x2", "y1", "y2")} == {2}
        # Within a crawl, one document per URL: y1 is a content copy anyway, and x1
        # keeps the shared URL.
        assert rows["x1"]["dup_url_keep"] is True
        assert rows["y1"]["dup_url_keep"] is False
        assert rows["y1"]["dup_url_keep_reason"] == "same URL in this crawl"
    assert outcomes["off"] == {"old-news": ("curated", None), "new-news": ("curated", None)}
    assert outcomes["keep_first"] == {
        "old-news": ("curated", None),
        "new-news": ("rejected", "dup_url_keep=false:URL kept in an earlier crawl")}
    assert outcomes["keep_newest"] == {
        "old-news": ("rejected", "dup_url_keep=false:URL re-crawled later"),
        "new-news": ("curated", None)}


def test_an_index_of_another_format_is_refused_until_rebuilt(tmp_path, dedup_config):
    import json

    crawl, out = tmp_path / "crawl", tmp_path / "out"
    write_shard(crawl / "a.parquet", [{"id": "first", "text": PAGE},
                                      {"id": "other", "text": OTHER}])
    curate([str(crawl)], out, load_config(dedup_config), progress=False)
    # As an index of the previous version looks: no format file, no format in index.json.
    (out / "dedup" / "format.json").unlink()
    summary = json.loads((out / "dedup" / "index.json").read_text())
    summary.pop("format")
    (out / "dedup" / "index.json").write_text(json.dumps(summary))
    write_shard(crawl / "b.parquet", [{"id": "copy", "text": PAGE.replace(" ", "\n")}])
    command = [THRESHER, "curate", "-i", str(crawl), "-o", str(out), "-c", str(dedup_config),
               "--no-progress", "--num-cpus", "2"]
    refused = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert refused.returncode == 2
    error = [line for line in refused.stderr.splitlines() if line.startswith("thresher:")]
    assert len(error) == 1 and "has format 1" in error[0]
    assert f"thresher dedup rebuild --output {out}" in error[0]
    assert not (out / "dedup" / "format.json").exists()

    rebuilt = subprocess.run([THRESHER, "dedup", "rebuild", "-o", str(out), "-c",
                              str(dedup_config), "--num-cpus", "2"],
                             capture_output=True, text=True, cwd=tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "dedup index rebuilt from the outputs of 1 shards: 2 documents" in rebuilt.stdout
    assert json.loads((out / "dedup" / "format.json").read_text())["format"] == 3
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = everything(out)
    assert rows["copy"]["outcome"] == "rejected" and rows["copy"]["dup_cluster"] == "first"

    other = tmp_path / "bands.yaml"
    other.write_text(DEDUP_ONLY.replace("- stage: dedup", "- stage: dedup\n    bands: 10"))
    write_shard(crawl / "c.parquet", [{"id": "c", "text": page(5)}])
    refused = subprocess.run([*command[:7], str(other), *command[8:]], capture_output=True,
                             text=True, cwd=tmp_path)
    assert refused.returncode == 2 and "'bands': 10" in refused.stderr


def test_when_a_urls_kept_document_leaves_another_under_it_is_kept(tmp_path):
    crawl, out = tmp_path / "crawl", tmp_path / "out"
    config = load_config(keep_by_config(tmp_path))
    url = "https://site.invalid/page"
    write_shard(crawl / "a.parquet", [{"id": "first", "text": PAGE, "url": url,
                                       "quality": 0.9, "crawl": "CC-1"}])
    b = write_shard(crawl / "b.parquet", [{"id": "second", "text": OTHER, "url": url,
                                           "quality": 0.1, "crawl": "CC-1"}])
    curate([str(crawl)], out, config, progress=False)
    assert everything(out)["second"]["drop_reason"] == \
        "dup_url_keep=false:same URL in this crawl"
    a = write_shard(crawl / "a.parquet", [{"id": "moved", "text": page(3),
                                           "url": "https://site.invalid/elsewhere",
                                           "quality": 0.5, "crawl": "CC-1"}])
    result = curate([str(crawl)], out, config, progress=False)
    rows = everything(out)
    assert rows["second"]["outcome"] == "curated" and rows["second"]["dup_url_keep"] is True
    manifest = __import__("json").loads(result.manifest_path.read_text())
    assert manifest["dedup"]["url_keys_departed"] == 1
    assert manifest["dedup"]["repair"] == [str(b)]
    assert_each_row_once(out, [a, b])


def test_a_run_moves_only_its_new_keys_and_a_lone_keeper_that_leaves_is_replaced(tmp_path):
    """The key index is read by ranges, not shuffled: a run of one new document moves
    its 15 key rows and reads the index rows of those keys only. A document kept
    alone in run 1 that gains a copy in run 2 has its decision written again, so
    when its shard changes in run 3 the copy is promoted, not left dropped."""
    import json

    crawl, out = tmp_path / "crawl", tmp_path / "out"
    config = load_config(keep_by_config(tmp_path))
    write_shard(crawl / "a.parquet", [
        {"id": "keeper", "text": PAGE, "quality": 0.9},
        *({"id": f"a{i}", "text": page(i), "quality": 0.5} for i in range(1, 4))])
    write_shard(crawl / "b.parquet", [{"id": f"b{i}", "text": page(10 + i), "quality": 0.5}
                                      for i in range(3)])
    curate([str(crawl)], out, config, progress=False)

    c = write_shard(crawl / "c.parquet", [{"id": "copy", "text": "  " + PAGE,
                                           "quality": 0.1}])
    result = curate([str(crawl)], out, config, progress=False)
    dedup = json.loads(result.manifest_path.read_text())["dedup"]
    assert dedup["rows_shuffled"]["key_rows"] == 15  # 14 bands and the exact key
    assert dedup["index_rows_read"]["keys"] == 15  # the keeper's, no other document's
    assert dedup["rows_shuffled"]["decisions"] == 2  # the copy; the keeper, size 2 now
    rows = everything(out)
    assert rows["copy"]["outcome"] == "rejected" and rows["copy"]["dup_cluster"] == "keeper"
    assert rows["copy"]["dup_cluster_size"] == 2

    a = write_shard(crawl / "a.parquet", [
        {"id": "unrelated", "text": OTHER, "quality": 0.5},
        *({"id": f"a{i}", "text": page(i), "quality": 0.5} for i in range(1, 4))])
    result = curate([str(crawl)], out, config, progress=False)
    dedup = json.loads(result.manifest_path.read_text())["dedup"]
    assert dedup["kept_documents_departed"] == 1 and dedup["promoted"] == 1
    assert dedup["repair"] == [str(c)]
    rows = everything(out)
    assert rows["copy"]["outcome"] == "curated" and rows["copy"]["dup_keep"] is True
    assert [t.strip() for t in curated_texts(out)].count(PAGE) == 1
    assert_each_row_once(out, [a, crawl / "b.parquet", c])


def test_scope_crawl_keeps_one_per_crawl_and_counts_sizes_across_crawls(tmp_path):
    crawl, out = tmp_path / "crawl", tmp_path / "out"
    config = load_config(keep_by_config(tmp_path, scope="crawl"))
    write_shard(crawl / "a.parquet", [
        {"id": "first", "text": PAGE, "quality": 0.9, "crawl": "CC-1"},
        {"id": "first-copy", "text": PAGE + " ", "quality": 0.1, "crawl": "CC-1"},
        {"id": "other", "text": OTHER, "quality": 0.5, "crawl": "CC-1"}])
    curate([str(crawl)], out, config, progress=False)
    write_shard(crawl / "b.parquet", [
        {"id": "second", "text": "\n" + PAGE, "quality": 0.5, "crawl": "CC-2"}])
    curate([str(crawl)], out, config, progress=False)
    rows = everything(out)
    assert rows["first"]["outcome"] == rows["second"]["outcome"] == "curated"
    assert rows["first-copy"]["outcome"] == "rejected"
    assert rows["second"]["dup_cluster"] == "second"  # its crawl's own cluster
    assert rows["first"]["dup_cluster_size"] == 2  # written before CC-2 came
    assert rows["second"]["dup_cluster_size"] == 3  # across both crawls
    assert rows["other"]["dup_cluster_size"] == 1
