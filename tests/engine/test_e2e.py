"""The real engine on a real in-process Ray: bad input, resume, new and changed shards,
a stage that raises, and a worker that dies."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import LANG_ONLY, SENTENCES, good_rows, write_shard
from e2e_helpers import assert_each_row_once, output_rows
from thresher.pipeline.engine.config import load_config
from thresher.pipeline.engine.ledger import Ledger
from thresher.pipeline.engine.run import curate

pytestmark = pytest.mark.usefixtures("ray_cluster")


def run(inputs, out, config=None):
    from thresher.pipeline.engine.config import parse_config
    import yaml

    config = config or parse_config(yaml.safe_load(LANG_ONLY), "lang-only test config")
    return curate([str(p) for p in inputs], out, config, progress=False)


def config_file(tmp_path, text):
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return load_config(path)


def test_bad_input_ends_in_quarantine_or_rejected_and_good_shards_finish(tmp_path):
    crawl = tmp_path / "crawl"
    good = write_shard(crawl / "good.parquet", good_rows(40))
    truncated = crawl / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[:-100])
    (crawl / "notes.parquet").write_text("this is a text file, not Parquet\n")
    write_shard(crawl / "empty.parquet", pa.table({"text": pa.array([], pa.string())}))
    write_shard(crawl / "no_text.parquet", [{"body": "x"}] * 3)
    write_shard(crawl / "int_text.parquet", pa.table({"text": [1, 2, 3, 4]}))
    huge = "word " * (10 * 1024 * 1024)  # 50 MB
    mixed = write_shard(crawl / "mixed.parquet", [
        {"id": "a", "text": SENTENCES["en"]}, {"id": "b", "text": None},
        {"id": "c", "text": ""}, {"id": "d", "text": huge}, {"id": "a", "text": SENTENCES["de"]},
    ])
    result = run([crawl], tmp_path / "out")

    assert result.state == "finished" and not result.violations
    manifest = json.loads(result.manifest_path.read_text())
    by_path = {Path(s["path"]).name: s for s in manifest["shards"]}
    assert by_path["good.parquet"]["curated"] == 40
    assert "not a readable Parquet file" in by_path["truncated.parquet"]["error"]
    assert "not a readable Parquet file" in by_path["notes.parquet"]["error"]
    assert "no `text` column" in by_path["no_text.parquet"]["error"]
    assert by_path["no_text.parquet"]["quarantined"] == 3
    assert "has type int64" in by_path["int_text.parquet"]["error"]
    assert by_path["empty.parquet"]["rows_in"] == 0
    mixed_counts = by_path["mixed.parquet"]
    assert (mixed_counts["curated"], mixed_counts["rejected"], mixed_counts["quarantined"]) == (1, 3, 1)
    assert manifest["drop_reasons"] == {"empty_text": 1, "too_long": 1, "duplicate_id": 1}
    assert manifest["invariant"]["ok"]
    for s in manifest["shards"]:
        assert s["rows_in"] == s["curated"] + s["rejected"] + s["quarantined"]
    # Whole-shard quarantines are notes, not row parts: check the row-level shards.
    assert_each_row_once(tmp_path / "out", [good, mixed])
    notes = sorted(p.name for p in (tmp_path / "out" / "quarantine").glob("shard-*.json"))
    assert len(notes) == 4
    assert result.report_path.exists()


def test_rerun_does_nothing_new_shards_only_and_changed_shards_superseded(tmp_path):
    crawl, out = tmp_path / "crawl", tmp_path / "out"
    first = write_shard(crawl / "2026-01" / "a.parquet", good_rows(30, "a"))
    second = write_shard(crawl / "2026-01" / "b.parquet", good_rows(20, "b"))
    assert run([crawl], out).totals["rows_in"] == 50

    again = run([crawl], out)
    assert again.state == "nothing-to-do" and again.plan["done"] == 2

    new = write_shard(crawl / "2026-02" / "c.parquet", good_rows(10, "c"))
    third = run([crawl], out)
    assert third.plan == {"new": 1, "changed": 0, "resumed": 0, "done": 2}
    assert third.totals["rows_in"] == 10

    write_shard(first, good_rows(25, "a2"))  # same path, new content
    fourth = run([crawl], out)
    assert fourth.plan["changed"] == 1 and fourth.totals["rows_in"] == 25
    assert_each_row_once(out, [first, second, new])
    ids = pa.concat_tables(pq.read_table(p, columns=["id"]) for p in (out / "curated").glob("*.parquet"))
    assert not any(i.startswith("a-") for i in ids.column("id").to_pylist())  # old version gone

    ledger = Ledger(out)
    assert {r["state"] for r in ledger.shards()} == {"done"}
    assert [r["state"] for r in ledger.runs()] == ["finished", "nothing-to-do", "finished", "finished"]
    ledger.close()


def test_a_stage_that_raises_quarantines_only_its_documents(tmp_path):
    rows = good_rows(50)
    rows[17]["text"] = "this document will BOOM the stage"
    shard = write_shard(tmp_path / "crawl" / "s.parquet", rows)
    config = config_file(tmp_path, "stages:\n  - stage: lang\n  - stage: 'faulty:RaiseOnMarker'\n"
                                   "filters: ['lang_score >= 0.5']\n")
    result = run([shard], tmp_path / "out", config)
    assert result.totals == {"rows_in": 50, "curated": 49, "rejected": 0, "quarantined": 1}
    quarantine = pq.read_table(next((tmp_path / "out" / "quarantine").glob("part-*"))).to_pylist()
    assert quarantine[0]["id"] == "doc-17"
    assert "stage raiser: ValueError" in quarantine[0]["error"]
    assert quarantine[0]["lang"] == "en"  # scores from the stages before it are kept
    assert_each_row_once(tmp_path / "out", [shard])


def test_a_killed_worker_is_replaced_and_every_row_lands_once(tmp_path):
    rows = good_rows(300)
    rows[150]["text"] += " KILL"
    shards = [write_shard(tmp_path / "crawl" / f"s{i}.parquet", rows[i::3]) for i in range(3)]
    flag = tmp_path / "killed.flag"
    config = config_file(tmp_path, f"stages:\n  - stage: lang\n  - stage: 'faulty:KillWorkerOnce'\n"
                                   f"    flag_file: '{flag}'\n")
    result = run(shards, tmp_path / "out", config)
    assert flag.exists(), "the worker was never killed: the test proved nothing"
    assert result.state == "finished"
    assert result.totals == {"rows_in": 300, "curated": 300, "rejected": 0, "quarantined": 0}
    assert_each_row_once(tmp_path / "out", shards)
    assert sum(output_rows(tmp_path / "out")["curated"].values()) == 300


def test_plan_says_what_a_run_would_do_and_writes_nothing(tmp_path, capsys):
    from thresher.pipeline.tools.cli import main

    crawl, out = tmp_path / "crawl", tmp_path / "out"
    write_shard(crawl / "a.parquet", good_rows(30, "a"))
    assert main(["plan", "-i", str(crawl), "-o", str(out)]) == 0
    assert "1 input shards against" in capsys.readouterr().out and not out.exists()

    run([crawl], out)
    write_shard(crawl / "b.parquet", good_rows(12, "b"))
    write_shard(crawl / "a.parquet", good_rows(31, "a"))  # changed since the run
    (crawl / "bad.parquet").write_bytes(b"not parquet")
    assert main(["plan", "-i", str(crawl), "-o", str(out), "--json"]) == 0
    entries = {e["path"].rsplit("/", 1)[-1]: e
               for e in map(json.loads, capsys.readouterr().out.splitlines())}
    assert entries["a.parquet"]["action"] == "changed" and entries["a.parquet"]["rows"] == 31
    assert entries["b.parquet"]["action"] == "new" and entries["b.parquet"]["rows"] == 12
    assert entries["bad.parquet"]["action"] == "new" and entries["bad.parquet"]["error"]
    run([crawl], out)
    assert main(["plan", "-i", str(crawl), "-o", str(out)]) == 0
    assert "3 done" in capsys.readouterr().out


def test_a_failed_invariant_is_recorded_as_failed(tmp_path, monkeypatch):
    """Rows that do not add up on disk: the run raises, and the ledger and the
    manifest say `failed`, never `finished`."""
    from thresher.pipeline.engine.run import InvariantError
    from thresher.pipeline.io.storage import Store

    shard = write_shard(tmp_path / "crawl" / "a.parquet", good_rows(10))
    out = tmp_path / "out"
    real = Store.num_rows
    monkeypatch.setattr(Store, "num_rows", lambda self, path: real(self, path) + 1)
    with pytest.raises(InvariantError, match="rows do not add up"):
        run([shard.parent], out)
    ledger = Ledger(out)
    try:
        assert [r["state"] for r in ledger.runs()] == ["failed"]
        assert [r["state"] for r in ledger.shards()] == ["running"]  # redone next run
    finally:
        ledger.close()
    manifest = json.loads(next((out / "runs").glob("*/manifest.json")).read_text())
    assert manifest["state"] == "failed" and not manifest["invariant"]["ok"]


def test_the_default_mixture_writes_training_tokens_megatron_reads(tmp_path):
    """The default config's mixture step (a smaller proxy and budget: the Aioli part is
    tested in test_mixture.py) after a real run: its tokenized training set, read by
    Megatron-LM's own reader, holds every training row as SmolLM2 ids + EOS."""
    import warnings
    from dataclasses import replace

    import yaml

    from thresher.models.tokenizer import load_tokenizer
    from thresher.pipeline.engine.config import parse_config

    default = load_config().mixture
    mixture = replace(default, proxy={"context": 32, "width": 32, "layers": 1, "heads": 2,
                                      "batch_size": 4, "val_sequences": 4},
                      aioli={"total_steps": 60, "round_steps": 30, "lp_rounds": 1, "lp_steps": 3})
    config = replace(parse_config(yaml.safe_load(LANG_ONLY), "lang-only"), mixture=mixture)
    result = run([write_shard(tmp_path / "crawl" / "a.parquet", good_rows(120))],
                 tmp_path / "out", config)
    assert result.state == "finished"
    training = tmp_path / "out" / "training"
    index = json.loads((training / "index.json").read_text())
    tokenizer = load_tokenizer(default.tokenize["tokenizer"], default.tokenize["eos"])
    assert index["tokenized"]["format"] == "megatron" and index["tokenized"]["eos_id"] == 0
    with warnings.catch_warnings():  # megatron-core without Transformer Engine says so
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDataset
    total = 0
    for shard in index["shards"]:
        dataset = IndexedDataset(str(training / shard["file"].removesuffix(".parquet")))
        texts = pq.read_table(training / shard["file"]).column("text").to_pylist()
        assert len(dataset) == len(texts) == shard["tokenized"]["docs"] > 0
        for i, ids in enumerate(tokenizer.encode(texts)):
            assert dataset[i].tolist() == ids.tolist() + [0]
        total += int(dataset.sequence_lengths.sum())
    assert total == index["tokenized"]["tokens"] == sum(index["tokenized"]["groups"].values())
