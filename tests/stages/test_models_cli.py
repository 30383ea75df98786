"""`thresher models train-lm` and `fit-tau`, as a user runs them."""

import json

from thresher.pipeline.tools.cli import main
from thresher.stages.harm import HarmfulPerplexity


def test_train_lm_writes_cc_nets_layout_and_a_card(tmp_path):
    corpus = tmp_path / "de.txt"
    corpus.write_text("\n".join(f"Das ist der Satz Nummer {i} über Bücher und Städte." for i in
                                range(300)), encoding="utf-8")
    assert main(["models", "train-lm", "--lang", "de", "--corpus", str(corpus),
                 "--out", str(tmp_path / "lm"), "--vocab", "300"]) == 0
    card = json.loads((tmp_path / "lm" / "de.card.json").read_text())
    assert card["order"] == 5 and card["normalized"] and card["lines"] == 300
    assert (tmp_path / "lm" / "de.arpa.bin").exists() and (tmp_path / "lm" / "de.sp.model").exists()


def test_train_lm_word_level_raw(tmp_path):
    corpus = tmp_path / "x.txt"
    corpus.write_text("\n".join(f"Palabra número {i} aquí" for i in range(200)), encoding="utf-8")
    assert main(["models", "train-lm", "--lang", "es", "--corpus", str(corpus),
                 "--out", str(tmp_path / "harm"), "--no-sp", "--raw"]) == 0
    card = json.loads((tmp_path / "harm" / "es.card.json").read_text())
    assert card["kind"] == "word kenlm" and not card["normalized"]
    assert not (tmp_path / "harm" / "es.sp.model").exists()


def test_fit_tau_writes_the_card_the_harm_stage_reads(tmp_path, tiny_lm_dir):
    harmful = tmp_path / "pos.txt"
    clean = tmp_path / "neg.txt"
    harmful.write_text("zzq vvx plok\nqqq zzz xxv\nkkz vvq plk\n" * 5)
    clean.write_text("the city is the capital of the province\nthe river flows through it\n" * 5)
    model = tmp_path / "en.arpa.bin"
    model.write_bytes((tiny_lm_dir / "en.arpa.bin").read_bytes())
    assert main(["models", "fit-tau", "--model", str(model), "--positive", str(harmful),
                 "--negative", str(clean)]) == 0
    card = json.loads((tmp_path / "en.tau.json").read_text())
    assert card["ppl"]["candidates"] == 100 and "macro-F1" in card["ppl"]["method"]
    stage = HarmfulPerplexity(models={"en": str(model)})
    assert stage.tau == {"en": card["ppl"]["tau"]}
    assert stage.describe()["tau_sources"]["en"]["card"] == str(tmp_path / "en.tau.json")


def test_fit_tau_needs_labels_or_a_sample(tmp_path, tiny_lm_dir, capsys):
    assert main(["models", "fit-tau", "--model", str(tiny_lm_dir / "en.arpa.bin")]) == 2
    assert "give --positive and --negative, or --unlabelled" in capsys.readouterr().err


def test_train_dataman_student_from_jsonl_prints_agreement(tmp_path, capsys):
    from test_dataman_student import synthetic_annotations

    table = synthetic_annotations(90).drop_columns(["dataman_status"])
    path = tmp_path / "annotations.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))
    assert main(["models", "train-dataman-student", "--annotations", str(path),
                 "--out", str(tmp_path / "student")]) == 0
    agreement = json.loads(capsys.readouterr().out)
    assert agreement["domain"]["accuracy"] >= 0.9
    assert (tmp_path / "student" / "overall_score.bin").is_file()


def test_train_dataman_student_names_missing_columns(tmp_path, capsys):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "hello", "dataman_domain": "A"}\n')
    assert main(["models", "train-dataman-student", "--annotations", str(path),
                 "--out", str(tmp_path / "s")]) == 2
    assert "lack columns ['dataman_accuracy'" in capsys.readouterr().err


def test_built_in_models_and_kenlm_resolve_from_any_folder(tmp_path):
    """As README says: the default config and train-lm work outside the checkout."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    thresher = str(Path(sys.executable).with_name("thresher"))
    env = {k: v for k, v in os.environ.items()
           if k not in ("THRESHER_MODELS", "THRESHER_KENLM_BIN")}
    default = subprocess.run([thresher, "config"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=120)
    (tmp_path / "mine.yaml").write_text(default.stdout)
    check = subprocess.run([thresher, "config", "--check", "mine.yaml"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr[-2000:]
    assert "stage ccnet" in check.stdout and "stage harm" in check.stdout
    (tmp_path / "en.txt").write_text("\n".join(f"a line about books number {i}" for i in range(200)))
    trained = subprocess.run([thresher, "models", "train-lm", "--lang", "en", "--corpus", "en.txt",
                              "--out", "lm", "--no-sp", "--raw"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert (tmp_path / "lm" / "en.arpa.bin").is_file()


def test_train_lm_order_auto_chooses_on_held_out_lines(tmp_path):
    """Text where each word follows from the two before it: a bigram model cannot
    know the next word, so the held-out choice must be order 3 or more, and the card
    lists what was tried (4 orders, with and without pruning)."""
    import random

    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(30)]
    successor = {(a, b): rng.choice(vocab) for a in vocab for b in vocab}
    lines = []
    for _ in range(1500):
        words = rng.sample(vocab, 2)
        for _ in range(10):
            words.append(successor[words[-2], words[-1]])
        lines.append(" ".join(words))
    corpus = tmp_path / "x.txt"
    corpus.write_text("\n".join(lines) + "\n")
    assert main(["models", "train-lm", "--lang", "xx", "--corpus", str(corpus), "--out",
                 str(tmp_path / "lm"), "--no-sp", "--raw", "--order", "auto"]) == 0
    card = json.loads((tmp_path / "lm" / "xx.card.json").read_text())
    tried = card["order_selection"]["candidates"]
    assert len(tried) == 8 and {t["order"] for t in tried} == {2, 3, 4, 5}
    best = min(tried, key=lambda t: t["heldout_ppl"])
    assert (card["order"], card["prune"]) == (best["order"], best["prune"])
    assert card["order"] >= 3
    bigram = min(t["heldout_ppl"] for t in tried if t["order"] == 2)
    assert best["heldout_ppl"] < bigram / 2  # the context the text has is found


def test_train_lm_rejects_a_bad_order(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["models", "train-lm", "--lang", "x", "--corpus", "c", "--out", "o",
              "--order", "five"])
    assert "order must be a number or auto" in capsys.readouterr().err


def test_harm_rule_auto_takes_the_cards_better_rule(tmp_path, tiny_lm_dir):
    """rule: auto uses the rule fit-tau found better on validation, when a reference
    LM exists; the paper's perplexity rule otherwise, or when the config says so."""
    import shutil

    from thresher.models.harm_tau import best_rule

    card = {"ppl": {"tau": 300.0, "validation": {"macro_f1": 0.64}},
            "xent": {"tau": -1.0, "validation": {"macro_f1": 0.72}}}
    assert best_rule(card) == "xent"
    assert best_rule({**card, "xent": {"tau": -1.0, "macro_f1": 0.5}}) == "ppl"  # fit-tau's layout
    folder = tmp_path / "harm"
    folder.mkdir()
    shutil.copy(tiny_lm_dir / "en.arpa.bin", folder / "en.arpa.bin")
    (folder / "en.tau.json").write_text(json.dumps({**card, "best": "xent"}))
    alone = HarmfulPerplexity(models=str(folder))
    assert alone.rules == {"en": "ppl"} and alone.tau == {"en": 300.0}  # no reference LM
    shutil.copy(tiny_lm_dir / "en.arpa.bin", folder / "en.ref.arpa.bin")
    auto = HarmfulPerplexity(models=str(folder))
    assert auto.rules == {"en": "xent"} and auto.tau == {"en": -1.0}
    assert HarmfulPerplexity(models=str(folder), rule="ppl").tau == {"en": 300.0}


def test_fit_tau_with_a_reference_names_the_better_rule(tmp_path, tiny_lm_dir, capsys):
    """The "harmful" examples are lines the model was trained on, the clean ones
    gibberish: perplexity separates them. The reference is the model itself, so every
    cross-entropy difference is 0 and that rule separates nothing."""
    harmful, clean = tmp_path / "pos.txt", tmp_path / "neg.txt"
    harmful.write_text("\n".join((tiny_lm_dir / "en.txt").read_text().splitlines()[:30]))
    clean.write_text("zzq vvx plok\nqqq zzz xxv\nkkz vvq plk\n" * 10)
    model = tmp_path / "en.arpa.bin"
    model.write_bytes((tiny_lm_dir / "en.arpa.bin").read_bytes())
    assert main(["models", "fit-tau", "--model", str(model), "--positive", str(harmful),
                 "--negative", str(clean), "--reference", str(model)]) == 0
    card = json.loads((tmp_path / "en.tau.json").read_text())
    assert card["best"] == "ppl" and card["ppl"]["macro_f1"] > 0.7
    assert card["xent"]["macro_f1"] == 1 / 3  # all flagged or none: F1 0 and 2/3
    assert "rule: auto uses ppl" in capsys.readouterr().err
