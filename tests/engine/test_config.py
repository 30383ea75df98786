import pytest

from thresher.pipeline.engine.config import ConfigError, load_config


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_default_config_runs_every_built_stage():
    config = load_config()
    assert [s.name for s in config.stages] == ["url", "dedup", "lines", "length", "lang", "heuristics",
                                               "ccnet", "harm", "classify", "decont", "dataman", "pii", "wrap"]
    from thresher.stages import STAGES

    assert sorted(STAGES) == sorted(s.name for s in config.stages)  # every one of them
    assert [str(r) for r in config.filters] == [
        "url_blocked != true", "dup_keep != false", "dup_url_keep != false",
        "lines_kept > 0", "lang_score >= 0.5",
        "heuristics_gopher_repetition != false", "heuristics_fineweb != false",
        "ccnet_bucket != tail", "harm_flag != true", "decont_contaminated != true",
        "dataman_selected != false"]
    # Its smallest pools fit on 2 cores at once, and its pools fill them.
    from thresher.pipeline.engine.dag import plan_segments

    segments = plan_segments(config, {"CPU": 2.0}, units=8)
    assert sum(s.num_cpus * (s.concurrency or s.pool[1]) for s in segments) == 2


@pytest.mark.parametrize("text, message", [
    ("stages:\n  - stage: nosuch\n", "unknown stage 'nosuch'"),
    ("stages:\n  - stage: lang\nfilters: ['lang_score >= lots']\n", "bad threshold"),
    ("stages:\n  - stage: lang\n    model: /no/such/lid.bin\n", "not found"),
    ("stages:\n  - stage: lang\n    colour: red\n", "colour"),
    ("stages:\n  - stage: lang\nfilters: ['ccnet_ppl < 300']\n", "no configured stage adds"),
    ("stages:\n  - stage: lang\n    resources: {gpus: 1}\n", "unknown resource keys"),
    ("run:\n  max_text_bytes: -1\n", "positive integer"),
    ("stagez: []\n", "unknown top-level keys"),
    ("stages:\n  - stage: ccnet\n  - stage: lang\n",
     "stage ccnet reads column 'lang', which stage lang adds after it: put lang before ccnet"),
    ("stages: [\n", "not valid YAML"),
])
def test_config_errors_name_the_problem(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(write(tmp_path, text))
    assert str(tmp_path) in str(info.value)  # says which file


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_plugin_stage_by_import_path(tmp_path):
    config = load_config(write(tmp_path, "stages:\n  - stage: 'faulty:RaiseOnMarker'\n"))
    assert config.stages[0].name == "raiser"
