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


@pytest.mark.parametrize("text", ["lang_score >=>= 0.5", "lang in [en, de", 'lang == "en',
                                  "lang_score >= .nan", "lang == {a: 1}", "lang in [[en]]",
                                  "lang_score < .inf"])
def test_malformed_rules_are_one_line_errors_with_exit_2(tmp_path, text):
    import subprocess
    import sys
    from pathlib import Path

    config = tmp_path / "bad.yaml"
    config.write_text("stages:\n  - stage: lang\nfilters:\n  - " + yaml_quote(text) + "\n")
    run = subprocess.run([str(Path(sys.executable).with_name("thresher")), "config", "--check",
                          str(config)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("thresher: error:"), run.stderr
    assert "Traceback" not in run.stderr


def yaml_quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
