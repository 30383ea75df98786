"""Published recipes through the CLI as README uses it: printed, checked, refused
without their model in one line, and run."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from thresher.pipeline.recipes import load_recipe, names, recipe_text

THRESHER = str(Path(sys.executable).with_name("thresher"))
RECIPES = Path(__file__).resolve().parents[2] / "pipeline" / "recipes"


def run(*args, cwd=None):
    return subprocess.run([THRESHER, *args], capture_output=True, text=True, timeout=600,
                          cwd=cwd)


def test_the_shipped_recipes_are_listed_and_printed_as_shipped(tmp_path):
    assert names() == ["dclm", "fineweb", "fineweb-edu"]
    for name in names():
        printed = run("config", "--recipe", name, cwd=tmp_path)
        assert printed.returncode == 0
        assert printed.stdout == (RECIPES / f"{name}.yaml").read_text() == recipe_text(name)
        header = __import__("yaml").safe_load(printed.stdout)["recipe"]
        assert header["reproduces"] and header["differs"] and "variables" in header


@pytest.mark.parametrize("name, where", [
    ("dclm", "huggingface.co/mlfoundations/fasttext-oh-eli5"),
    ("fineweb-edu", "huggingface.co/HuggingFaceFW/fineweb-edu-classifier"),
])
def test_a_recipe_without_its_classifier_is_refused_in_one_line(tmp_path, name, where):
    result = run("curate", "--recipe", name, "-i", str(tmp_path), "-o", str(tmp_path / "o"))
    assert result.returncode == 2
    line, = result.stderr.strip().splitlines()
    assert line.startswith(f"thresher: error: recipe {name} needs --set classifier=PATH: ")
    assert where in line


def test_bad_recipe_arguments_are_user_errors(tmp_path):
    for args, message in ((["--recipe", "nope"], "no recipe 'nope'; the recipes: dclm, fineweb"),
                          (["--recipe", "dclm", "--set", "model=x"], "no variable model"),
                          (["--set", "classifier=x"], "give --recipe too"),
                          (["--recipe", "dclm", "-c", "x.yaml"], "not both")):
        result = run("curate", *args, "-i", str(tmp_path), "-o", str(tmp_path / "o"))
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)


def test_the_recipes_pass_the_config_check(quality_fasttext, tiny_bert):
    dclm = load_recipe("dclm", {"classifier": str(quality_fasttext)})
    assert [s.name for s in dclm.stages] == ["dedup", "lines", "lang", "heuristics", "classify"]
    edu = load_recipe("fineweb-edu", {"classifier": str(tiny_bert / "regression")})
    assert [s.name for s in edu.stages][-2:] == ["classify", "pii"]
    assert "classify_score > 2.5" in [str(r) for r in edu.filters]
    fineweb = load_recipe("fineweb", {})
    for config in (dclm, edu, fineweb):
        for spec in config.stages:
            spec.build().check()


def test_dclm_keeps_the_top_tenth_of_its_pool(tmp_path, quality_fasttext):
    """A real run of the recipe on 1,500 demo documents: the cut is calibrated on the
    documents the earlier filters keep, and about a tenth of them stay."""
    source = pq.read_table(sorted((RECIPES.parents[1] / "data" / "demo-crawl")
                                  .glob("*.parquet"))[0]).slice(0, 1500)
    pq.write_table(source, tmp_path / "crawl.parquet")
    result = run("curate", "--recipe", "dclm", "--set", f"classifier={quality_fasttext}",
                 "-i", str(tmp_path / "crawl.parquet"), "-o", str(tmp_path / "out"),
                 "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads(next((tmp_path / "out" / "runs").glob("*/manifest.json")).read_text())
    assert manifest["config_source"] == "recipe dclm"
    assert manifest["calibration"]["classify"]["source"].startswith("estimated on a sample")
    pool = manifest["totals"]["curated"] + manifest["drop_reasons"]["classify_keep=false"]
    assert 0.05 <= manifest["totals"]["curated"] / pool <= 0.15, manifest["drop_reasons"]


def test_fineweb_runs_from_a_small_warc_and_keeps_the_first_copy(tmp_path):
    """The fineweb recipe as README runs it: the demo crawl as WARC (two copies of 12
    documents a shard), imported, then curated. Every row is accounted for, and of
    each kept document's two copies the first in input order is kept, its copy rejected
    by MinHash as datatrove's keeps the lower (file, document)."""
    from thresher.pipeline.io.demo_crawl import record_uuid

    crawl = RECIPES.parents[1] / "data" / "demo-crawl"
    made = run("demo-crawl", "--format", "warc", "--output", str(tmp_path / "warc"),
               "--copies", "2", "--docs-per-shard", "12", cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-3000:]
    imported = run("import", "--format", "warc", "--input", str(tmp_path / "warc"),
                   "--output", str(tmp_path / "shards"), "--workers", "1", cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr[-3000:]
    result = run("curate", "--recipe", "fineweb", "--input", str(tmp_path / "shards"),
                 "--output", str(tmp_path / "out"), "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads(next((tmp_path / "out" / "runs").glob("*/manifest.json")).read_text())
    assert manifest["config_source"] == "recipe fineweb"
    totals = manifest["totals"]
    assert totals["curated"] + totals["rejected"] + totals["quarantined"] == 8 * 12 * 2
    curated = pq.read_table(tmp_path / "out" / "curated").to_pylist()
    rejected = {r["id"]: r for r in pq.read_table(tmp_path / "out" / "rejected").to_pylist()}
    first = {record_uuid(i, 0): i for p in sorted(crawl.glob("*.parquet"))
             for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()[:12]}
    assert curated and all(row["id"] in first for row in curated)
    for row in curated:
        twin = rejected[record_uuid(first[row["id"]], 1)]
        assert twin["drop_reason"] == "dup_keep=false" and twin["dup_cluster"] == row["id"]
    reasons = manifest["drop_reasons"]
    # only what the filters kept was deduplicated: a non-English pair is rejected as such
    assert reasons.get("lang!=en", 0) > 0 and reasons.get("dup_keep=false", 0) >= len(curated)
    assert all(r["drop_reason"] == "lang!=en" for r in rejected.values() if r["lang"] not in ("en", None))
