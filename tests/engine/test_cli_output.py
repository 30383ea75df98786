"""What a run prints without a terminal: thresher's lines, not Ray's."""

import subprocess
import sys
from pathlib import Path

from conftest import good_rows, write_shard

THRESHER = str(Path(sys.executable).with_name("thresher"))


def test_a_run_in_a_log_prints_its_shards_and_not_rays_chatter(tmp_path, lang_only_config):
    for name in "ab":
        write_shard(tmp_path / "crawl" / f"{name}.parquet", good_rows(20, name))
    run = subprocess.run([THRESHER, "curate", "-i", str(tmp_path / "crawl"), "-o",
                          str(tmp_path / "out"), "-c", str(lang_only_config)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    printed = run.stdout + run.stderr
    assert "shard 1/2 done" in printed and "shard 2/2 done" in printed
    for chatter in ("logging_progress", "streaming_executor", "Started a local Ray instance",
                    "Token authentication is enabled", "Execution plan of Dataset"):
        assert chatter not in printed, chatter
    quiet = subprocess.run([THRESHER, "--log-level", "WARNING", "curate", "-i",
                            str(tmp_path / "crawl"), "-o", str(tmp_path / "out2"), "-c",
                            str(lang_only_config)], capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0
    lines = [l for l in (quiet.stdout + quiet.stderr).splitlines()
             if "core_worker.cc" not in l]  # Ray's C++ note, see dag.quiet_ray
    assert lines[0].startswith("thresher: run ") and len(lines) == 4, lines
