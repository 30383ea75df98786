"""Runs as separate processes: a driver killed with SIGKILL mid-run and resumed, and a
run on a `ray start --head` cluster of the test's own (own temp dir and token)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import good_rows, write_shard
from e2e_helpers import assert_each_row_once
from thresher.pipeline.engine.ledger import Ledger
from thresher.pipeline.tools.local_cluster import _ours, client_env
from thresher.pipeline.engine.config import load_config
from thresher.pipeline.engine.run import curate

THRESHER = str(Path(sys.executable).with_name("thresher"))


def done_count(out: Path) -> int:
    if not (out / "ledger.sqlite").exists():
        return 0
    ledger = Ledger(out)
    try:
        return sum(r["state"] == "done" for r in ledger.shards())
    finally:
        ledger.close()


@pytest.mark.usefixtures("ray_cluster")
def test_driver_killed_mid_run_then_rerun_accounts_every_row_once(tmp_path):
    shards = []
    for i in range(6):
        rows = good_rows(160, f"s{i}")
        if i >= 3:  # these take 10 batches x 1 s: the kill lands while they are in flight
            rows = [{**r, "text": r["text"] + " SLOW"} for r in rows]
        shards.append(write_shard(tmp_path / "crawl" / f"s{i}.parquet", rows))
    config = tmp_path / "slow.yaml"
    config.write_text("stages:\n  - stage: 'faulty:Slow'\n    seconds: 1.0\n")
    out = tmp_path / "out"
    driver = subprocess.Popen(
        [THRESHER, "curate", "-i", str(tmp_path / "crawl"), "-o", str(out), "-c", str(config),
         "--no-progress", "--num-cpus", "2"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while done_count(out) < 1 and driver.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and its in-process Ray, no clean-up
    driver.wait()
    done_before = done_count(out)
    assert 1 <= done_before < 6, f"kill landed with {done_before}/6 shards done"

    result = curate([str(tmp_path / "crawl")], out, load_config(config), progress=False)
    assert result.plan["done"] == done_before
    assert result.plan["resumed"] + result.plan["new"] == 6 - done_before
    assert done_count(out) == 6
    assert_each_row_once(out, shards)


def test_ray_job_submit_twice_processes_only_the_new_shard(tmp_path, lang_only_config):
    """The cluster path end to end: a private head with a job server (as `make
    cluster-up`), `ray job submit` of a curation, a new shard, a second submission."""
    cluster = tmp_path / "cluster"
    up = subprocess.run([THRESHER, "cluster", "up", "--dir", str(cluster), "--port",
                         "0", "--dashboard-port", "0", "--num-cpus", "2"],
                        capture_output=True, text=True, timeout=180)
    assert up.returncode == 0, up.stderr[-3000:]
    try:
        env = client_env(cluster)
        assert env["RAY_API_SERVER_ADDRESS"].startswith("http://127.0.0.1:")
        crawl, out = tmp_path / "crawl", tmp_path / "out"
        first = write_shard(crawl / "a.parquet", good_rows(20, "a"))
        submit = [str(Path(sys.executable).with_name("ray")), "job", "submit", "--",
                  THRESHER, "curate", "-i", str(crawl), "-o", str(out), "--no-progress",
                  "--config", str(lang_only_config)]
        run1 = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=300)
        assert run1.returncode == 0, (run1.stdout + run1.stderr)[-3000:]
        assert "20 rows in" in run1.stdout and "succeeded" in run1.stdout
        second = write_shard(crawl / "b.parquet", good_rows(7, "b"))
        run2 = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=300)
        assert run2.returncode == 0, (run2.stdout + run2.stderr)[-3000:]
        assert "7 rows in" in run2.stdout and "1 shards new, 1 shards done" in run2.stdout
        assert "connecting to the Ray cluster at" in run2.stdout  # the job joined the head
        assert_each_row_once(out, [first, second])
        failing = subprocess.run(submit[:5] + ["curate", "-i", str(tmp_path / "nothing"), "-o",
                                               str(out)], env=env, capture_output=True,
                                 text=True, timeout=300)
        assert failing.returncode != 0 and "does not exist" in failing.stdout + failing.stderr
    finally:
        down = subprocess.run([THRESHER, "cluster", "down", "--dir", str(cluster)],
                              capture_output=True, text=True, timeout=120)
    assert down.returncode == 0 and "stopped the Ray head" in down.stdout
    assert not _ours(cluster.resolve()), "processes of the test cluster are still running"
