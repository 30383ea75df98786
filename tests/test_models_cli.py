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
