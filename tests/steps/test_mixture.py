"""The global mixing step on a small curated output: proportions.json with Aioli and
the stratified baseline, and training shards drawn per group with Aioli's p."""

import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from thresher.pipeline.engine.config import ConfigError, MixtureOptions, parse_config
from thresher.pipeline.steps.mixture import run_mixture

WORDS = {"en": "the river city bridge water boat people street market old".split(),
         "de": "der fluss stadt brücke wasser boot leute straße markt alt".split(),
         "es": "el río ciudad puente agua barco gente calle mercado viejo".split()}


def curated_output(tmp_path, per_group=(120, 60, 30)):
    rng = random.Random(0)
    rows = []
    for (lang, words), n in zip(WORDS.items(), per_group):
        for i in range(n):
            rows.append({"id": f"{lang}{i}", "lang": lang, "source_shard": "s",
                         "source_row": len(rows), "synthetic": False,
                         "text": " ".join(rng.choice(words) for _ in range(60))})
    out = tmp_path / "out"
    (out / "curated").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), out / "curated" / "part-abc-0000000000.parquet")
    synthetic = [{"id": "en0-wrap-qa", "text": "Question: what? Answer: the river.",
                  "synthetic": True, "parent_id": "en0", "style": "qa", "lang": "en",
                  "source_shard": "s", "source_row": 0}]
    pq.write_table(pa.Table.from_pylist(synthetic),
                   out / "curated" / "part-abc-syn0000000000.parquet")
    return out


OPTIONS = MixtureOptions(
    group_by="lang", max_groups=2, docs_per_group=40,
    proxy={"context": 32, "width": 32, "layers": 1, "heads": 2, "batch_size": 4,
           "val_sequences": 4, "threads": 1},
    aioli={"total_steps": 60, "round_steps": 30, "lp_rounds": 1, "lp_steps": 3},
    baselines=("stratified", {"fixed": {"en": 0.5, "de": 0.3, "other": 0.2}}),
    training_tokens=6000, shard_max_rows=50)


def test_synthetic_rows_are_drawn_like_real_ones(tmp_path):
    """A budget larger than what curated holds: every group is upsampled, so each of
    its documents, the WRAP paraphrase included, is drawn floor(k) or floor(k)+1 times."""
    from dataclasses import replace

    out = curated_output(tmp_path)
    options = replace(OPTIONS, training_tokens=40_000)
    run_mixture(out, options)
    index = json.loads((out / "training" / "index.json").read_text())
    k = index["groups"]["en"]["sampling_factor"]
    assert k > 1
    table = pa.concat_tables([pq.read_table(p) for p in (out / "training").glob("shard-*")])
    copies = [r for r in table.to_pylist() if r["id"] == "en0-wrap-qa"]
    assert int(k) <= len(copies) <= int(k) + 1
    assert all(r["synthetic"] and r["parent_id"] == "en0" and r["group"] == "en" for r in copies)


def test_mixture_writes_proportions_and_training_shards(tmp_path):
    out = curated_output(tmp_path)
    summary = run_mixture(out, OPTIONS)
    assert summary["groups"] == ["de", "en", "other"]  # es is the smallest: merged
    mixture = json.loads((out / "mixture" / "proportions.json").read_text())
    assert set(mixture["methods"]) == {"aioli", "aioli_static", "stratified", "fixed"}
    # the written mixture is Aioli's last p, and it was trained and tested on its own
    static = mixture["methods"]["aioli_static"]
    assert static["p"][0] == pytest.approx(mixture["p"]) and len(static["test_losses"]) == 3
    aioli = mixture["methods"]["aioli"]
    assert len(aioli["p"]) == len(aioli["A"]) == 2 and aioli["steps"] == 60
    assert sum(mixture["p"]) == pytest.approx(1)
    assert mixture["methods"]["stratified"]["p"][0] == pytest.approx([1 / 3] * 3)
    for method in mixture["methods"].values():
        assert len(method["test_losses"]) == 3 and method["test_loss_mean"] > 0

    index = json.loads((out / "training" / "index.json").read_text())
    shards = sorted((out / "training").glob("shard-*.parquet"))
    assert [s["file"] for s in index["shards"]] == [p.name for p in shards]
    table = pa.concat_tables([pq.read_table(p) for p in shards])
    assert all(pq.read_metadata(p).num_rows <= 50 for p in shards)
    total = sum(len(t.split()) for t in table.column("text").to_pylist())
    assert total == pytest.approx(6000, rel=0.2)
    for group, stats in index["groups"].items():
        got = sum(len(r["text"].split()) for r in table.to_pylist() if r["group"] == group)
        assert got == stats["tokens"]
        assert stats["target_tokens"] == round(mixture["p"][mixture["groups"].index(group)] * 6000)
        assert stats["upsampled"] == (stats["sampling_factor"] > 1)
    # The WRAP row counts in its group like a real one: 120 x 60 words + its 5.
    assert index["groups"]["en"]["available_tokens"] == 120 * 60 + 5

    # Deterministic given the seed.
    again = run_mixture(out, OPTIONS)
    assert again["p"] == summary["p"]
    assert pa.concat_tables([pq.read_table(p) for p in sorted(
        (out / "training").glob("shard-*.parquet"))]).equals(table)


def test_a_short_group_is_upsampled_and_says_so(tmp_path):
    out = curated_output(tmp_path, per_group=(60, 60, 60))
    options = MixtureOptions(**{**OPTIONS.__dict__, "max_groups": 3,
                                "training_tokens": 60 * 60 * 3 * 2})
    run_mixture(out, options)
    index = json.loads((out / "training" / "index.json").read_text())
    assert all(g["upsampled"] and g["repeats"] > 0 for g in index["groups"].values())


def test_mixture_config_errors():
    for text, message in [
        ({"mixture": {"proxy": {"depth": 3}}}, "mixture.proxy: unknown keys"),
        ({"mixture": {"baselines": ["uniform"]}}, "not `stratified`"),
        ({"mixture": {"colour": 1}}, "mixture"),
        ({"mixture": {"docs_per_group": 5}}, "docs_per_group"),
        ({"mixture": {"seed": 1}}, "mixture.group_by is missing, and no configured stage"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_config({"stages": [], **text}, "c.yaml")


def test_the_groups_default_to_the_column_a_stage_names():
    from thresher.stages import STAGES

    assert STAGES["dataman"].mixture_group == "dataman_domain"
    config = parse_config({"stages": [{"stage": "lang"}], "mixture": {"group_by": "lang"}}, "c")
    assert config.mixture.group_by == "lang"


def test_curate_runs_the_mixture_step_and_reports_it(tmp_path, ray_cluster):
    from conftest import write_shard
    from thresher.pipeline.engine.config import load_config
    from thresher.pipeline.engine.run import curate

    rng = random.Random(1)
    rows = [{"id": f"{lang}{i}", "text": " ".join(rng.choice(words) for _ in range(40))}
            for lang, words in WORDS.items() for i in range(50)]
    write_shard(tmp_path / "crawl" / "a.parquet", rows)
    config = tmp_path / "c.yaml"
    config.write_text("""
stages: [{stage: lang}]
mixture:
  group_by: lang
  max_groups: 3
  docs_per_group: 40
  proxy: {context: 32, width: 32, layers: 1, heads: 2, batch_size: 4, val_sequences: 4}
  aioli: {total_steps: 60, round_steps: 30, lp_rounds: 1, lp_steps: 3}
""")
    result = curate([str(tmp_path / "crawl")], tmp_path / "out", load_config(config),
                    progress=False)
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["mixture"]["groups"] == ["de", "en", "es"]
    assert set(manifest["mixture"]["test_loss_mean"]) == {"aioli", "aioli_static", "stratified"}
    assert (tmp_path / "out" / "training" / "index.json").is_file()
    assert "Aioli mixture proportions" not in result.report_path.read_text()  # images only
    assert result.report_path.read_text().count("data:image/png") >= 4


def test_the_proxy_warms_up_then_decays_like_the_authors_schedule():
    from thresher.models.proxy_lm import ProxySettings

    s = ProxySettings(lr=1e-3, total_steps=1000)
    assert s.warmup == 100  # a tenth of the budget, at most 500
    assert s.lr_at(0) == pytest.approx(1e-5) and s.lr_at(99) == pytest.approx(1e-3)
    assert s.lr_at(100) == pytest.approx(1e-3)
    assert s.lr_at(550) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))  # half way down
    assert s.lr_at(1000) == pytest.approx(1e-4)  # ends at min_lr_ratio
    assert ProxySettings(total_steps=40_000).warmup == 500
    assert ProxySettings(lr=2e-3).lr_at(10_000) == 2e-3  # no budget: constant


def test_validation_takes_many_windows_from_few_documents():
    from thresher.models.proxy_lm import ProxySettings, ProxyTrainer

    text = {"a": ["x" * 1000], "b": ["y" * 1000]}
    trainer = ProxyTrainer(text, text, ProxySettings(context=32, width=16, layers=1, heads=2,
                                                     val_sequences=128))
    assert trainer.val["a"].shape == (1000 // 33, 33)  # successive windows of one document


def test_a_token_level_proxy_reads_the_tokenizer_ids_and_learns():
    """proxy.tokenizer: the proxy's vocabulary and windows are the tokenizer's."""
    import numpy as np

    from thresher.models.proxy_lm import ProxySettings, ProxyTrainer
    from thresher.models.tokenizer import load_tokenizer

    rng = random.Random(0)
    texts = {lang: [" ".join(rng.choice(words) for _ in range(60)) for _ in range(12)]
             for lang, words in WORDS.items()}
    train = {g: t[:10] for g, t in texts.items()}
    val = {g: t[10:] for g, t in texts.items()}
    settings = ProxySettings(context=32, width=32, layers=1, heads=2, batch_size=8, lr=3e-3,
                             val_sequences=4, threads=1, tokenizer="smollm2-135m-instruct")
    trainer = ProxyTrainer(train, val, settings)
    tokenizer = load_tokenizer("smollm2-135m-instruct")
    assert trainer.vocab == tokenizer.vocab_size == 49152
    assert trainer.model.embed.num_embeddings == 49152
    assert np.array_equal(trainer.train_docs["de"][0], tokenizer.encode([train["de"][0]])[0])
    assert trainer.val["de"][0].tolist() == tokenizer.encode([val["de"][0]])[0][:33].tolist()
    before = trainer.losses()
    trainer.train(np.ones(3) / 3, 20)
    assert (trainer.losses() < before - 0.5).all()


def test_scoring_in_chunks_gives_the_same_losses(monkeypatch):
    """Held-out windows are scored a few at a time for a large vocabulary; the losses
    are the same as all at once."""
    import numpy as np

    from thresher.models import proxy_lm

    text = {"a": ["the river city " * 40], "b": ["der fluss stadt " * 40]}
    settings = proxy_lm.ProxySettings(context=16, width=16, layers=1, heads=2, threads=1)
    whole = proxy_lm.ProxyTrainer(text, text, settings).losses()
    monkeypatch.setattr(proxy_lm, "SCORE_LOGITS", 16 * 256 * 3)  # 3 windows at a time
    chunked = proxy_lm.ProxyTrainer(text, text, settings)
    assert chunked._score_chunk() == 3 and chunked.val["a"].shape[0] > 3
    assert np.allclose(chunked.losses(), whole, atol=1e-6)


def test_mixture_with_a_token_level_proxy_records_its_tokenizer(tmp_path):
    from dataclasses import replace

    out = curated_output(tmp_path)
    options = replace(OPTIONS, proxy={**OPTIONS.proxy, "tokenizer": "smollm2-135m-instruct"})
    run_mixture(out, options)
    mixture = json.loads((out / "mixture" / "proportions.json").read_text())
    assert mixture["proxy"]["tokenizer"] == "smollm2-135m-instruct"
    assert all(m["test_loss_mean"] > 0 for m in mixture["methods"].values())
