"""WRAP end to end on CPU with SmolLM2-135M-Instruct (the real transformers engine in
a Ray actor): paraphrases of kept English documents become synthetic rows with their
lineage, German and rejected documents are left alone, the guards and the mix are
counted, and every input row is accounted for once."""

import json

import pyarrow.parquet as pq

from conftest import SENTENCES, write_shard
from e2e_helpers import assert_each_row_once
from thresher.pipeline.engine.config import load_config
from thresher.pipeline.engine.run import curate

ENGLISH = [
    "The river Thames flows through London. It is the longest river entirely in England. "
    "Many bridges cross it, and boats carry tourists past the Houses of Parliament.",
    "Photosynthesis is the process by which green plants use sunlight to make food from "
    "carbon dioxide and water. Oxygen is released as a by-product.",
    "A compiler translates source code into machine code. It checks the program for "
    "errors first, then produces an executable file that the computer can run.",
    "Bees collect nectar from flowers and turn it into honey. A single hive can hold "
    "tens of thousands of bees, led by one queen.",
]


def test_wrap_makes_synthetic_rows_with_lineage(tmp_path, ray_cluster):
    rows = [{"id": f"en{i}", "text": t} for i, t in enumerate(ENGLISH)]
    rows += [{"id": "de0", "text": SENTENCES["de"] * 3},
             {"id": "junk", "text": "zzkq xxv qqpl vvrt"}]  # dropped by the lang filter
    shards = [write_shard(tmp_path / "crawl" / "a.parquet", rows)]
    config = tmp_path / "c.yaml"
    config.write_text("""
stages:
  - stage: lang
  - stage: wrap
    styles: [medium, qa]
    chunk_tokens: 64
    engine: {engine: transformers, model: smollm2-135m-instruct, batch_size: 8}
    resources: {num_cpus: 1, batch_size: 8}
filters: ["lang_score >= 0.6"]
""")
    result = curate([str(tmp_path / "crawl")], tmp_path / "out", load_config(config),
                    progress=False)
    assert_each_row_once(tmp_path / "out", shards)
    assert result.totals["rows_in"] == 6  # the invariant counts real rows only

    curated = tmp_path / "out" / "curated"
    real = [r for p in curated.glob("part-*.parquet") if "-syn" not in p.name
            for r in pq.read_table(p).to_pylist()]
    synthetic = [r for p in curated.glob("part-*-syn*.parquet")
                 for r in pq.read_table(p).to_pylist()]
    assert {r["id"] for r in real} == {"en0", "en1", "en2", "en3", "de0"}
    assert all(r["synthetic"] is False for r in real)
    by_id = {r["id"]: r for r in real}
    assert by_id["de0"]["wrap_guard_drops"] is None  # not in languages: [en]
    rejected = [r for p in (tmp_path / "out" / "rejected").glob("*.parquet")
                for r in pq.read_table(p).to_pylist()]
    assert [r["id"] for r in rejected] == ["junk"] and rejected[0]["wrap_guard_drops"] is None

    # Each English document got a paraphrase or a recorded reason, per style.
    for i in range(4):
        made = {s["style"] for s in synthetic if s["parent_id"] == f"en{i}"}
        dropped = {d.split(":")[0] for d in by_id[f"en{i}"]["wrap_guard_drops"] or []}
        assert made | dropped == {"medium", "qa"} and not made & dropped
    assert synthetic, "the 135M model should get at least one paraphrase past the guards"
    for s in synthetic:
        assert s["synthetic"] is True and s["style"] in ("medium", "qa")
        assert s["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and s["chunk_count"] >= 1
        assert s["wrap_completion_tokens"] > 0 and s["lang"] == "en" and s["text"].strip()
        assert s["id"] == f"{s['parent_id']}-wrap-{s['style']}"

    manifest = json.loads(result.manifest_path.read_text())
    mix = manifest["made_rows"]["wrap"]
    assert mix["real_tokens"] == sum(len(r["text"].split()) for r in real)
    for style, counts in mix["styles"].items():
        assert counts["synthetic_to_real_tokens"] <= 1.0
        assert counts["rows"] == sum(s["style"] == style for s in synthetic)
    assert manifest["stage_settings"]["wrap"]["styles"] == ["medium", "qa"]
