"""The fastText student, the selection cut-offs, and the stage without an LLM."""

import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from thresher.models.dataman import RATINGS
from thresher.models import dataman_student
from thresher.models.dataman_student import DataManStudent, nonfinite, train_student
from thresher.stages.dataman import DataManRating, token_cutoff
from thresher.stages.testing import assert_stage_contract

TOPICS = {  # domain letter, overall score, words
    "A": (5, "patient doctor clinical dose symptoms treatment hospital diagnosis therapy"),
    "H": (4, "function compile python variable loop return class module import"),
    "L": (1, "buy cheap discount sale click now offer free shipping deal"),
}


def synthetic_annotations(n: int, seed: int = 0) -> pa.Table:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        letter = list(TOPICS)[i % 3]
        score, words = TOPICS[letter]
        text = " ".join(rng.choice(words.split()) for _ in range(rng.randint(20, 60)))
        rows.append({"id": f"a{i}", "text": text, "dataman_domain": letter,
                     "dataman_status": "ok", **{f"dataman_{r}": score for r in RATINGS}})
    return pa.Table.from_pylist(rows)


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("student")
    train_student(synthetic_annotations(150), out)
    return out


def test_student_learns_what_the_teacher_said_and_reports_agreement(student_dir):
    card = json.loads((student_dir / "card.json").read_text())
    assert card["ok_rows"] == 150 and 0 < card["held_out_rows"] < 60
    agreement = card["agreement"]
    for target in RATINGS + ("domain",):
        assert agreement[target]["accuracy"] >= 0.9
        assert agreement[target]["accuracy"] > agreement[target]["majority_baseline"]
    assert agreement["overall"]["sum_of_14_pearson"] > 0.9
    predicted = DataManStudent(student_dir).predict(["cheap sale click now free deal offer",
                                                     "the patient needs a dose of therapy"])
    assert predicted["dataman_domain"] == ["L", "A"]
    assert predicted["dataman_overall_score"] == [1, 5]


def test_student_refuses_too_few_parsed_ratings(tmp_path):
    table = synthetic_annotations(30)
    status = ["unparsed"] * 25 + ["ok"] * 5
    table = table.set_column(table.schema.get_field_index("dataman_status"), "dataman_status",
                             pa.array(status))
    with pytest.raises(ValueError, match="5 teacher ratings parsed .of 30.*dataman_raw"):
        train_student(table, tmp_path / "s")


def test_a_missing_student_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-dataman-student"):
        DataManStudent(tmp_path)


def plant_nan(model, row: int = 3):
    inputs, outputs = model.get_input_matrix().copy(), model.get_output_matrix().copy()
    inputs[row, :] = np.nan
    model.set_matrices(inputs, outputs)
    return model


def test_a_student_with_a_nan_weight_is_refused_at_load(student_dir, tmp_path):
    import shutil

    import fasttext

    broken = tmp_path / "broken"
    shutil.copytree(student_dir, broken)
    model = plant_nan(fasttext.load_model(str(broken / "coherence.bin")))
    assert nonfinite(model) == "1 input rows, e.g. row 3"
    model.save_model(str(broken / "coherence.bin"))
    with pytest.raises(ValueError, match=r"coherence.bin has non-finite weights .1 input rows"):
        DataManStudent(broken)
    assert nonfinite(fasttext.load_model(str(student_dir / "coherence.bin"))) == ""


def test_training_retries_until_the_weights_are_finite(tmp_path, monkeypatch):
    import fasttext

    source = tmp_path / "train.txt"
    source.write_text("".join(f"__label__{i % 2} word{i % 2} other{i}\n" for i in range(40)))
    real = fasttext.train_supervised
    seeds = []

    def finite(model):  # this process's heap is used: a real training here may be NaN
        inputs, outputs = model.get_input_matrix(), model.get_output_matrix()
        model.set_matrices(np.nan_to_num(inputs), np.nan_to_num(outputs))
        return model

    def flaky(**kwargs):  # the first two trainings come out with a NaN row
        seeds.append(kwargs["seed"])
        model = finite(real(**kwargs))
        return plant_nan(model) if len(seeds) <= 2 else model
    monkeypatch.setattr(fasttext, "train_supervised", flaky)
    dataman_student._train_until_finite([(str(source), str(tmp_path / "m.bin"))],
                                        dataman_student._train_one)
    assert seeds == [0, 1, 2]  # another seed each time
    assert nonfinite(fasttext.load_model(str(tmp_path / "m.bin"))) == ""

    seeds.clear()
    monkeypatch.setattr(fasttext, "train_supervised", lambda **kw: plant_nan(real(**kw)))
    with pytest.raises(ValueError, match="non-finite weights 5 times"):
        dataman_student._train_until_finite([(str(source), str(tmp_path / "n.bin"))],
                                            dataman_student._train_one)


def test_token_cutoff_keeps_the_asked_share_of_tokens_best_first():
    metric = np.array([70, 60, 60, 60, 50, 40], float)
    weights = np.array([10, 10, 10, 10, 30, 30], float)
    # 50% of 100 tokens: 10 above 60, then 40 of the 30 at 60 -> all of 60 plus...
    threshold, tie = token_cutoff(metric, weights, 0.5)
    assert threshold == 50 and tie == pytest.approx(10 / 30)
    threshold, tie = token_cutoff(metric, weights, 0.25)
    assert threshold == 60 and tie == pytest.approx(0.5)
    assert token_cutoff(metric, weights, 1.0) == [40.0, 1.0]


def rows_with_domains(n: int) -> pa.Table:
    rng = random.Random(1)
    rows = []
    for i in range(n):
        letter = "A" if i % 4 else "L"  # A holds 3/4 of the documents
        score, words = TOPICS[letter]
        text = " ".join(rng.choice(words.split()) for _ in range(40))
        rows.append({"id": f"d{i}", "text": text})
    return pa.Table.from_pylist(rows)


def test_per_domain_quotas_keep_each_domains_share(student_dir, tmp_path):
    sample = rows_with_domains(400)
    stage = DataManRating(student=str(student_dir), teacher_sample=0,
                          select={"metric": "sum", "keep_fraction": 0.3, "quotas": "domain"})
    assert stage.needs_calibration
    values = stage.calibrate(sample, tmp_path)
    assert set(values["cutoffs"]["by_domain"]) == {"A", "L"}
    scored = DataManRating(student=str(student_dir), teacher_sample=0,
                           select={"keep_fraction": 0.3}, **values)
    out = assert_stage_contract(scored, sample.append_column("source", pa.array(
        ["web"] * sample.num_rows)))
    kept = np.array(out.column("dataman_selected").to_pylist())
    domains = np.array(out.column("dataman_domain").to_pylist())
    for letter in ("A", "L"):  # even L, the worst-rated domain, keeps its 30%
        assert kept[domains == letter].mean() == pytest.approx(0.3, abs=0.08)
    assert set(out.column("dataman_source").to_pylist()) == {"student"}
    assert out.column("dataman_metric").to_pylist()[0] in (14.0, 56.0, 70.0)


def test_teacher_ratings_win_over_the_students_for_the_sampled_rows(student_dir, tmp_path):
    sample = rows_with_domains(20)
    teacher = pa.Table.from_pylist([{"id": "d1", "text": "x", "dataman_status": "ok",
                                     "dataman_domain": "N",
                                     **{f"dataman_{r}": 2 for r in RATINGS}}])
    pq.write_table(teacher, tmp_path / "annotations.parquet")
    stage = DataManRating(student=str(student_dir), annotations=str(tmp_path / "annotations.parquet"))
    stage.setup()
    out = stage(sample).to_pylist()
    assert out[1]["dataman_source"] == "teacher" and out[1]["dataman_domain"] == "N"
    assert out[1]["dataman_domain_name"] == "Agriculture" and out[1]["dataman_accuracy"] == 2
    assert out[0]["dataman_source"] == "student" and out[0]["dataman_selected"] is None


@pytest.mark.parametrize("params, message", [
    ({"mode": "both"}, "mode must be"),
    ({"teacher": {"engine": "ollama"}}, "teacher engine"),
    ({"teacher": {"format": "json"}}, "teacher format"),
    ({"teacher": {"engine": "openai"}}, "needs url"),
    ({"teacher": {"engine": "transformers"}}, "teacher needs model"),
    ({"teacher_sample": 3}, "at least 10"),
    ({"select": {"keep_fraction": 0}}, "keep_fraction"),
    ({"select": {"keep_fraction": 0.5, "metric": "beauty"}}, "select.metric"),
    ({"select": {"keep": 0.5}}, "unknown keys"),
    ({"student": "/no/such/dir"}, "not a folder"),
])
def test_bad_settings_are_clear_errors(params, message):
    with pytest.raises(ValueError, match=message):
        DataManRating(**params)


def test_a_given_teacher_does_not_inherit_the_embedded_defaults():
    from thresher.models.dataman import MAX_TOKENS
    from thresher.stages.dataman import DEFAULT_TEACHER, _teacher_spec

    assert _teacher_spec(None) == DEFAULT_TEACHER  # the embedded default: cut at 512
    given = _teacher_spec({"engine": "vllm", "model": "/models/DataMan-1.5B-EN",
                           "format": "dataman", "num_gpus": 1})
    assert given == {"engine": "vllm", "model": "/models/DataMan-1.5B-EN",
                     "format": "dataman", "num_gpus": 1}
    assert given.get("max_doc_tokens", MAX_TOKENS) == 1894  # the paper's cut
