import pyarrow as pa
import pytest

from thresher.pipeline.engine.rules import Rule


def test_parse_and_reason_is_the_negation():
    assert Rule.parse("lang_score >= 0.5").reason == "lang_score<0.5"
    assert Rule.parse("ccnet_bucket != tail").reason == "ccnet_bucket=tail"
    assert Rule.parse("lang in [en, de]").reason == "lang not in [en,de]"
    assert Rule.parse("lang not in [xx]").reason == "lang in [xx]"


def test_passes_treats_null_as_not_applicable():
    table = pa.table({"score": pa.array([0.9, 0.1, None], pa.float32())})
    assert Rule.parse("score >= 0.5").passes(table).to_pylist() == [True, False, True]


def test_in_rule_on_strings():
    table = pa.table({"lang": ["en", "it", None]})
    assert Rule.parse("lang in [en, de]").passes(table).to_pylist() == [True, False, True]


@pytest.mark.parametrize("text", ["lang_score >= high", "lang_score", "lang in en",
                                  "x >= true", "lang in []"])
def test_bad_rules_are_refused(text):
    with pytest.raises(ValueError):
        Rule.parse(text)
