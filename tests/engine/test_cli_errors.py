"""README's promise on errors: a user mistake is one line `thresher: error: ...` and
exit code 2, whatever command it comes through."""

import fcntl
import subprocess
import sys
from pathlib import Path

from conftest import good_rows, write_shard

THRESHER = str(Path(sys.executable).with_name("thresher"))


def run(*args, cwd=None):
    return subprocess.run([THRESHER, *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd)


def assert_one_line_error(result, expected: str):
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("thresher: error:"), result.stderr
    assert expected in lines[0]


def test_another_run_writing_to_the_output_is_exit_2(tmp_path, lang_only_config):
    write_shard(tmp_path / "crawl" / "a.parquet", good_rows(5))
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".lock", "w") as held:  # as a running curation holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = run("curate", "-i", str(tmp_path / "crawl"), "-o", str(out), "-c",
                     str(lang_only_config), "--no-progress")
    assert_one_line_error(result, "another thresher run is writing to")


def test_cluster_env_without_a_cluster_is_exit_2(tmp_path):
    assert_one_line_error(run("cluster", "env", "--dir", str(tmp_path / "none")),
                          "no cluster is running")


def test_fit_tau_with_a_missing_model_is_exit_2(tmp_path):
    (tmp_path / "docs.txt").write_text("some text\n")
    assert_one_line_error(run("models", "fit-tau", "--model", str(tmp_path / "missing.arpa.bin"),
                              "--unlabelled", str(tmp_path / "docs.txt")), "does not exist")


def test_train_lm_without_kenlm_is_exit_2_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    import thresher.models.train_lm as train_lm_module
    from thresher.pipeline.tools.cli import main

    def missing(name):
        raise FileNotFoundError(f"KenLM's {name} not found: run `make setup`")

    monkeypatch.setattr(train_lm_module, "kenlm_tool", missing)
    (tmp_path / "en.txt").write_text("a line about books\n" * 50)
    code = main(["models", "train-lm", "--lang", "en", "--corpus", str(tmp_path / "en.txt"),
                 "--out", str(tmp_path / "lm")])
    assert code == 2
    assert "KenLM's lmplz not found" in capsys.readouterr().err
    assert not list((tmp_path / "lm").glob("en.*"))  # no half-built model
