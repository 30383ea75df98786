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
