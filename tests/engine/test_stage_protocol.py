"""The stage protocol: stages register themselves, declare what they read and write
(and assert_stage_contract holds them to it), the engine knows none of them by name,
and the stage docs/stages.md shows a newcomer works as written."""

import io
import pickle
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pyarrow as pa
import pytest

from thresher.pipeline.engine.config import load_config, parse_config
from thresher.stages import STAGES, Stage, stage_class
from thresher.stages.length import Length
from thresher.stages.testing import assert_stage_contract

ROOT = Path(__file__).resolve().parents[2]
THRESHER = str(Path(sys.executable).with_name("thresher"))


def table(texts, **columns):
    n = len(texts)
    return pa.table({"id": [f"d{i}" for i in range(n)], "text": texts, **columns})


# Where a stage's name is also a word of another API, in pipeline/engine/ (file, token).
NOT_A_STAGE = {
    ("ray_llm.py", "url"): "HttpRequestProcessorConfig's keyword",
    ("ray_llm.py", '"url"'): "an HTTP engine spec's server address",
    ("ray_llm.py", '"length"'): "an OpenAI-compatible server's finish_reason",
}


def test_the_engine_names_no_stage_and_no_stage_column():
    """Identifiers (by their `_` parts, not attributes of other objects), strings,
    docstrings and comments in pipeline/engine/ mention no stage and no column a
    stage adds: what a stage means lives in its own module."""
    names = set(STAGES) | {c for cls in STAGES.values() for c in cls.columns}
    assert {"dedup", "wrap", "length", "dup_keep", "wrap_rephrasings"} <= names
    in_text = re.compile(r"\b(" + "|".join(map(re.escape, sorted(names))) + r")\b")
    found = []
    for path in sorted((ROOT / "pipeline" / "engine").glob("*.py")):
        previous = None
        for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
            if (path.name, tok.string) in NOT_A_STAGE:
                pass
            elif tok.type == tokenize.NAME and previous != ".":
                if tok.string in names or set(tok.string.split("_")) & set(STAGES):
                    found.append(f"{path.name}:{tok.start[0]}: {tok.string}")
            elif tok.type in (tokenize.STRING, tokenize.COMMENT):
                found += [f"{path.name}:{tok.start[0]}: {m}" for m in in_text.findall(tok.string)]
            previous = tok.string
    assert found == []


def test_stages_register_themselves_from_their_modules():
    modules = {p.stem for p in (ROOT / "stages").glob("*.py")} - {"__init__", "base", "testing"}
    assert {cls.__module__.rsplit(".", 1)[1] for cls in STAGES.values()} == modules
    assert stage_class("length") is Length

    class Elsewhere(Stage):  # a test's or a plugin's class: named by its path instead
        name = "length"
        columns = {}
    assert STAGES["length"] is Length


def test_length_counts_as_python_does_and_keeps_the_contract():
    texts = ["a  b\n\nc", "", "Héllo wörld", "one\r\ntwo\u2028three", "x" * 5]
    out = assert_stage_contract(Length(), table(texts))
    assert out.column("length_chars").to_pylist() == [7, 0, 11, 14, 5]
    assert out.column("length_words").to_pylist() == [3, 0, 2, 3, 1]  # U+2028 is a space
    assert out.column("length_lines").to_pylist() == [3, 0, 1, 3, 1]  # and a line break
    assert out.column("length_mean_word").to_pylist() == pytest.approx(
        [1.0, None, 5.0, 11 / 3, 5.0])


def test_length_is_in_the_default_pipeline_before_lang():
    names = [spec.name for spec in load_config().stages]
    assert names.index("length") < names.index("lang")


class ReadsUndeclared(Stage):
    name = "sneaky"
    columns = {"sneaky_x": pa.int64()}

    def __call__(self, batch):
        extra = batch.column("lang").to_pylist() if "lang" in batch.column_names else []
        values = [len(x or "") for x in extra] or [0] * batch.num_rows
        return batch.append_column("sneaky_x", pa.array(values, pa.int64()))


class WrongType(Stage):
    name = "wrongtype"
    columns = {"wrongtype_x": pa.int32()}

    def __call__(self, batch):
        return batch.append_column("wrongtype_x", pa.array([1] * batch.num_rows, pa.int64()))


class DropsARow(Stage):
    name = "dropper"
    columns = {"dropper_x": pa.bool_()}

    def __call__(self, batch):
        return batch.slice(1).append_column("dropper_x", pa.array([True] * (batch.num_rows - 1)))


@pytest.mark.parametrize("stage, broken", [
    (ReadsUndeclared(), "reads a column it does not declare"),
    (WrongType(), "'wrongtype_x' is int64, declared int32"),
    (DropsARow(), "2 rows out for 3 in"),
])
def test_the_contract_helper_names_the_broken_rule(stage, broken):
    with pytest.raises(AssertionError, match=re.escape(broken)):
        assert_stage_contract(stage, table(["ab", "c", "dd"], lang=["en", "de", "fr"]))


def test_built_in_cpu_stages_keep_the_contract():
    t = table(["The cat sat on the mat. " * 20, "Der Hund schläft im Garten. " * 20, ""],
              url=["https://a.example/x", "https://junk.example/y", None])
    out = assert_stage_contract(STAGES["url"](domains=["junk.example"]), t)
    assert out.column("url_blocked").to_pylist() == [False, True, None]  # no URL: no say
    t = assert_stage_contract(STAGES["lang"](), t)
    assert t.column("lang").to_pylist()[:2] == ["en", "de"]
    out = assert_stage_contract(STAGES["heuristics"](), t)
    assert out.column("heuristics_c4").to_pylist()[2] is False  # nothing to keep


def test_a_stage_is_built_once_per_spec_and_sent_to_workers_without_its_models():
    config = load_config()
    spec = next(s for s in config.stages if s.name == "lang")
    stage = spec.build()
    assert spec.build() is stage and stage._ready  # the config check loaded it once
    copy = pickle.loads(pickle.dumps(spec))
    assert copy._stage is None and copy.build() is not stage
    assert spec.with_params({}).build() is not stage  # new values: a new instance


def docs_blocks(kind: str) -> list[str]:
    text = (ROOT / "docs" / "stages.md").read_text()
    section = text.split("## Writing a stage", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{kind}\n(.*?)```", section, re.S)


def test_the_stage_in_the_docs_runs_as_written(tmp_path, monkeypatch):
    [code], [entry] = docs_blocks("python"), docs_blocks("yaml")
    assert len(code.splitlines()) < 40
    (tmp_path / "my_stages").mkdir()
    (tmp_path / "my_stages" / "digits.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    cls = stage_class("my_stages.digits:DigitShare")
    out = assert_stage_contract(cls(min_chars=2), table(["a1b2", "7", "none here"]))
    assert out.column("digits_share").to_pylist() == [0.5, None, 0.0]
    config = parse_config(__import__("yaml").safe_load(entry), "docs")
    assert [s.name for s in config.stages] == ["digits"]
    assert str(config.filters[0]) == "digits_share <= 0.3" or config.filters[0].column == \
        "digits_share"


def test_config_check_refuses_a_stage_before_the_stage_it_reads_from_in_one_line(tmp_path):
    config = tmp_path / "misplaced.yaml"
    config.write_text("stages:\n  - stage: harm\n  - stage: lang\n")
    done = subprocess.run([THRESHER, "config", "--check", str(config)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"thresher: error: {config}: stage harm reads column 'lang', which stage lang adds "
        "after it: put lang before harm"]


def test_stages_and_models_hold_no_ray_calls():
    found = [f"{p.relative_to(ROOT)}:{i}" for folder in ("stages", "models")
             for p in sorted((ROOT / folder).rglob("*.py"))
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if re.match(r"\s*(import ray\b|from ray\b)", line)]
    assert found == []


def test_the_runner_holds_a_stages_model_here_or_in_a_ray_actor(ray_cluster):
    import os

    from holder import Holder  # tests/plugins: the workers import it too
    from thresher.pipeline.engine.ray_llm import RayRunner
    from thresher.stages.base import Runner, runner

    with Runner().actor(Holder, (40,)) as here:
        assert here.call("add", 2) == (42, os.getpid())
    assert isinstance(runner(), RayRunner)  # installed when the driver connected
    with RayRunner().actor(Holder, (40,), num_cpus=0.1) as there:
        total, pid = there.call("add", 2)
    assert total == 42 and pid != os.getpid()  # in an actor of its own, killed after
