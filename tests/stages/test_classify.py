"""The classify stage gives exactly what its library gives: fastText's own predict
probabilities, and the logits of the transformers model called directly."""

import numpy as np
import pyarrow as pa
import pytest

from thresher.stages.classify import Classify
from thresher.stages.testing import assert_stage_contract

def test_fasttext_scores_are_fasttexts_own_predictions(quality_fasttext, demo_docs):
    import fasttext

    out = assert_stage_contract(Classify(model=str(quality_fasttext), label="hq"), demo_docs)
    model = fasttext.load_model(str(quality_fasttext))
    expected, top = [], []
    for text in demo_docs.column("text").to_pylist():
        labels, probs = model.predict(text.replace("\n", " "), k=-1)
        expected.append(dict(zip(labels, probs))["__label__hq"])
        top.append(labels[0][len("__label__"):])
    assert out.column("classify_score").to_pylist() == pa.array(expected, pa.float32()).to_pylist()
    assert out.column("classify_label").to_pylist() == top
    assert out.column("classify_keep").null_count == demo_docs.num_rows
    assert len(set(top)) == 2  # the model tells the two apart


def test_regression_logits_are_the_models_and_labels_are_fineweb_edus_int_score(tiny_bert,
                                                                               demo_docs):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    docs = demo_docs.slice(0, 40)
    stage = Classify(model=str(tiny_bert / "regression"), engine="transformers",
                     max_length=64, batch_size=1, threshold=0.0)
    out = assert_stage_contract(stage, docs)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert / "regression"))
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert / "regression"))
    direct = []
    with torch.inference_mode():
        for text in docs.column("text").to_pylist():
            encoded = tokenizer(text, truncation=True, max_length=64, return_tensors="pt")
            direct.append(float(model(**encoded).logits[0, 0]))
    assert out.column("classify_score").to_pylist() == pa.array(direct, pa.float32()).to_pylist()
    assert out.column("classify_label").to_pylist() == [
        str(int(round(max(0, min(s, 5))))) for s in pa.array(direct, pa.float32()).to_pylist()]
    assert out.column("classify_keep").to_pylist() == [s >= 0 for s in
                                                       out.column("classify_score").to_pylist()]
    batched = Classify(model=str(tiny_bert / "regression"), engine="transformers",
                       max_length=64, batch_size=16)(docs)
    np.testing.assert_allclose(batched.column("classify_score").to_numpy(), direct, atol=1e-5)


def test_softmax_scores_the_named_label(tiny_bert, demo_docs):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    docs = demo_docs.slice(0, 20)
    out = Classify(model=str(tiny_bert / "labels"), engine="transformers", label="high",
                   max_length=64, batch_size=1)(docs)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert / "labels"))
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert / "labels"))
    with torch.inference_mode():
        probs = [torch.softmax(model(**tokenizer(t, truncation=True, max_length=64,
                                                  return_tensors="pt")).logits[0], -1)
                 for t in docs.column("text").to_pylist()]
    np.testing.assert_allclose(out.column("classify_score").to_numpy(),
                               [float(p[2]) for p in probs], rtol=1e-5)
    assert out.column("classify_label").to_pylist() == [
        ["low", "mid", "high"][int(p.argmax())] for p in probs]


def test_keep_top_is_a_calibrated_quantile(quality_fasttext, demo_docs, tmp_path):
    stage = Classify(model=str(quality_fasttext), label="hq", keep_top=0.1)
    assert stage.needs_calibration
    scored = stage(demo_docs)
    values = stage.calibrate(scored.select(["classify_score"]), tmp_path)
    kept = Classify(model=str(quality_fasttext), label="hq", **values)(demo_docs)
    share = sum(kept.column("classify_keep").to_pylist()) / demo_docs.num_rows
    assert 0.09 <= share <= 0.11


@pytest.mark.parametrize("params, message", [
    ({"model": None}, "give `model`"),
    ({"model": "/nowhere.bin", "label": "hq"}, "does not exist"),
    ({"engine": "onnx"}, "engine must be one of"),
    ({"keep_top": 1.5, "label": "hq"}, "keep_top"),
    ({"label": None}, "needs `label`"),
    ({"label": "nope"}, "has no label '__label__nope'"),
])
def test_bad_parameters_say_what_is_wrong(quality_fasttext, params, message):
    params = {"model": str(quality_fasttext), "label": "hq", **params}
    with pytest.raises(ValueError, match=message):
        Classify(**params).ready()
