"""The ccnet and harm stages on small models the tests train, and the calibration
pass end to end on a real Ray."""

import json
import shutil

import pyarrow as pa
import pytest

from conftest import SENTENCES, write_shard
from thresher.pipeline.engine.config import ConfigError, load_config
from thresher.pipeline.engine.run import curate
from thresher.stages.ccnet import CCNetPerplexity
from thresher.stages.harm import HarmfulPerplexity
from thresher.stages.testing import assert_stage_contract

WIKI_LIKE = "The river flows through the city and the province is named after it."


def batch(texts, langs, **more):
    """more: columns the stage must not need (the contract checks it without them)."""
    return pa.table({"text": texts, "lang": langs, **more})


def test_ccnet_scores_languages_with_a_model_and_buckets_them(tiny_lm_dir):
    stage = CCNetPerplexity(lm_dir=str(tiny_lm_dir), cutoffs={"en": (50.0, 5000.0)})
    out = assert_stage_contract(stage, batch(
        [WIKI_LIKE, "zzqx vvkw plof", SENTENCES["de"], "", "12345 !!!"],
        ["en", "en", "de", "en", "en"], source=["a", "b", "c", "d", "e"])).to_pylist()
    assert out[0]["ccnet_ppl"] < out[1]["ccnet_ppl"]  # wiki-like text is more probable
    assert out[2]["ccnet_ppl"] is None and out[2]["ccnet_bucket"] == "all"  # no German LM
    assert all(r["ccnet_ppl"] > 0 for r in (out[0], out[3], out[4]))  # defined, no crash
    assert {r["ccnet_bucket"] for r in out[:2]} <= {"head", "middle", "tail"}


def test_ccnet_without_cutoffs_asks_for_calibration(tiny_lm_dir):
    stage = CCNetPerplexity(lm_dir=str(tiny_lm_dir))
    assert stage.needs_calibration
    stage.setup()
    assert stage(batch([WIKI_LIKE], ["en"])).column("ccnet_bucket").to_pylist() == ["all"]


def harm_dir(tmp_path, tiny_lm_dir, tau=None):
    folder = tmp_path / "harm"
    folder.mkdir()
    shutil.copy(tiny_lm_dir / "en.arpa.bin", folder / "en.arpa.bin")
    if tau is not None:
        (folder / "en.tau.json").write_text(json.dumps({"ppl": {"tau": tau}}))
    return folder


def test_harm_flags_documents_below_tau(tmp_path, tiny_lm_dir):
    stage = HarmfulPerplexity(models=str(harm_dir(tmp_path, tiny_lm_dir, tau=1000.0)))
    assert not stage.needs_calibration
    out = assert_stage_contract(stage, batch([WIKI_LIKE, "zzqx vvkw plof qqq", SENTENCES["es"]],
                                             ["en", "en", "es"], source=["a", "b", "c"]))
    rows = out.to_pylist()
    assert rows[0]["harm_flag"] is (rows[0]["harm_ppl"] < 1000.0)
    assert rows[0]["harm_ppl"] < rows[1]["harm_ppl"]
    assert rows[2]["harm_ppl"] is None and rows[2]["harm_flag"] is None  # no Spanish model


def test_harm_config_errors(tmp_path, tiny_lm_dir):
    folder = harm_dir(tmp_path, tiny_lm_dir)
    config = tmp_path / "c.yaml"
    config.write_text(f"stages:\n  - stage: lang\n  - stage: harm\n    models: '{folder}'\n"
                      "    rule: xent\n")
    with pytest.raises(ConfigError, match="needs a reference LM"):
        load_config(config)
    config.write_text("stages:\n  - stage: lang\n  - stage: ccnet\n    lm_dir: /no/such/dir\n")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(config)


@pytest.mark.usefixtures("ray_cluster")
def test_cutoffs_estimated_once_then_reused_for_a_new_crawl(tmp_path, tiny_lm_dir):
    texts = [p for p in (WIKI_LIKE + " " + SENTENCES["en"]).split(". ")]
    rows = [{"id": f"d{i}", "text": f"{texts[i % len(texts)]} number {i} of many pages"}
            for i in range(120)]
    write_shard(tmp_path / "crawl" / "a.parquet", rows[:60])
    write_shard(tmp_path / "crawl" / "b.parquet", rows[60:])
    config_path = tmp_path / "c.yaml"
    config_path.write_text(f"stages:\n  - stage: lang\n  - stage: ccnet\n    lm_dir: '{tiny_lm_dir}'\n"
                           "filters: ['ccnet_bucket != tail']\n")
    out = tmp_path / "out"
    first = curate([str(tmp_path / "crawl")], out, load_config(config_path), progress=False)
    manifest = json.loads(first.manifest_path.read_text())
    head, tail = manifest["calibration"]["ccnet"]["values"]["cutoffs"]["en"]
    assert head < tail and "estimated on a sample" in manifest["calibration"]["ccnet"]["source"]
    assert manifest["drop_reasons"].get("ccnet_bucket=tail", 0) > 0

    write_shard(tmp_path / "crawl" / "c.parquet", rows[:30])
    second = curate([str(tmp_path / "crawl")], out, load_config(config_path), progress=False)
    again = json.loads(second.manifest_path.read_text())["calibration"]["ccnet"]
    assert again["source"] == f"saved by run {first.run_id}"
    assert again["values"]["cutoffs"]["en"] == [head, tail]

    # A rebuilt model invalidates the saved cut-offs.
    import os

    os.utime(tiny_lm_dir / "en.arpa.bin", ns=(1, 1))
    write_shard(tmp_path / "crawl" / "d.parquet", rows[30:90])
    third = curate([str(tmp_path / "crawl")], out, load_config(config_path), progress=False)
    fresh = json.loads(third.manifest_path.read_text())["calibration"]["ccnet"]
    assert "estimated on a sample" in fresh["source"]


@pytest.mark.parametrize("victim", ["en.arpa.bin", "en.sp.model"])
def test_a_corrupt_model_file_is_a_config_error_naming_it(tmp_path, tiny_lm_dir, victim):
    lm_dir = tmp_path / "lm"
    lm_dir.mkdir()
    for name in ("en.arpa.bin", "en.sp.model"):
        shutil.copy(tiny_lm_dir / name, lm_dir / name)
    (lm_dir / victim).write_bytes(b"\x00not a model\x00" * 64)
    config = tmp_path / "c.yaml"
    config.write_text(f"stages:\n  - stage: lang\n  - stage: ccnet\n    lm_dir: '{lm_dir}'\n")
    with pytest.raises(ConfigError, match=victim.replace(".", r"\.")):
        load_config(config)


def test_a_50_mb_document_gets_a_defined_score(tiny_lm_dir):
    from thresher.models.kenlm_lm import CCNetLM

    huge = ("The river flows through the city. " * 1_550_000)[:50 * 2**20]
    [ppl] = CCNetLM(tiny_lm_dir / "en.arpa.bin", tiny_lm_dir / "en.sp.model").perplexities([huge])
    assert 1.0 < ppl < 1000.0


@pytest.mark.usefixtures("ray_cluster")
def test_harm_without_tau_or_a_valley_is_a_clear_calibration_error(tmp_path, tiny_lm_dir):
    from thresher.pipeline.steps.calibrate import CalibrationError

    folder = harm_dir(tmp_path, tiny_lm_dir)  # no tau card, no tau in the config
    write_shard(tmp_path / "crawl" / "a.parquet", [{"id": f"d{i}", "text": WIKI_LIKE}
                                                   for i in range(30)])
    config = tmp_path / "c.yaml"
    config.write_text(f"stages:\n  - stage: lang\n  - stage: harm\n    models: '{folder}'\n")
    with pytest.raises(CalibrationError, match="calibrating stage harm .* failed: .*tau"):
        curate([str(tmp_path / "crawl")], tmp_path / "out", load_config(config), progress=False)
