"""The engine's operators: fused CPU stages, pools sized to the cluster, declared
memory, and runs across the nodes of a cluster (one of which may die)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from conftest import good_rows, write_shard
from e2e_helpers import assert_each_row_once
from thresher.pipeline.engine.config import load_config
from thresher.pipeline.engine.dag import WORKER_BASE_MEMORY, plan_segments
from thresher.pipeline.tools.local_cluster import start_head, start_node, stop_head
from thresher.pipeline.engine.run import curate

THRESHER = str(Path(sys.executable).with_name("thresher"))
# A second of work per shard: a worker that starts slowly on a busy machine still
# gets shards before the first has done them all.
PIDS = ("stages:\n  - stage: 'faulty:RecordPid'\n    seconds: 1\n"
        "  - stage: 'faulty:RecordPidAgain'\n")


def config_file(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return load_config(path)


def test_default_config_fuses_the_cpu_stages_and_gives_the_llm_its_own_operator():
    segments = plan_segments(load_config(), {"CPU": 2.0}, units=8)
    assert [s.names for s in segments] == [
        ["url", "dedup", "lines", "length", "lang", "heuristics", "ccnet", "harm", "classify", "decont", "dataman",
         "pii"], ["wrap"]]
    cpu, llm = segments
    assert cpu.reads and not cpu.settles and llm.settles and not llm.reads
    # WRAP's fixed 0.25 CPU leaves 1.75 for the CPU pool: two workers of 0.875 each.
    assert llm.concurrency == 1 and llm.num_cpus == 0.25
    assert cpu.pool == (1, 2, 2) and cpu.num_cpus == pytest.approx(0.875)
    # Memory: a worker's base plus what each stage's models take.
    stages = load_config().stages
    assert cpu.memory > WORKER_BASE_MEMORY + sum(s.memory_estimate for s in stages[:10]) - 1
    modelless = {"length", "pii"}  # Python's string methods, regular expressions
    assert all(s.memory_estimate > 0 for s in stages if s.name not in modelless)


def test_pools_follow_the_cluster_size(tmp_path):
    config = config_file(tmp_path, "stages:\n  - stage: lang\n  - stage: ccnet\n")
    small, = plan_segments(config, {"CPU": 2.0}, units=100)
    big, = plan_segments(config, {"CPU": 64.0}, units=100)
    few_shards, = plan_segments(config, {"CPU": 64.0}, units=3)
    assert small.names == ["lang", "ccnet"] and small.reads and small.settles
    # Alone on the cluster: one core per worker, all cores at once, free to grow.
    assert (small.pool, small.num_cpus) == ((1, None, 2), 1.0)
    assert (big.pool, big.num_cpus) == ((1, None, 64), 1.0)
    assert few_shards.pool == (1, None, 3)


def test_gpu_and_explicit_resources_split_the_pipeline(tmp_path):
    config = config_file(tmp_path, """stages:
  - stage: lang
  - stage: 'faulty:RecordPid'
    resources: {num_gpus: 1}
  - stage: ccnet
    resources: {concurrency: 3, num_cpus: 0.5}
  - stage: harm
""")
    segments = plan_segments(config, {"CPU": 16.0, "GPU": 2.0}, units=50)
    assert [s.names for s in segments] == [["lang"], ["pid"], ["ccnet"], ["harm"]]
    lang, gpu, ccnet, harm = segments
    assert lang.reads and harm.settles and not gpu.reads and not gpu.settles
    # A GPU pool grows with the GPUs an autoscaler adds: no ceiling at planning time.
    assert gpu.pool == (1, None, 1) and gpu.num_gpus == 1
    assert ccnet.pool is None and ccnet.concurrency == 3
    # The CPU pools share what the fixed ones leave, 16 - 1.5 (ccnet) - 2 (GPU workers),
    # in whole cores: 6 workers each.
    assert lang.pool == (1, 6, 6) and harm.pool == (1, 6, 1)
    assert lang.num_cpus == harm.num_cpus == 1.0


def test_a_gpu_first_pipeline_reads_and_writes_in_tasks(tmp_path):
    config = config_file(tmp_path, "stages:\n  - stage: 'faulty:RecordPid'\n"
                                   "    resources: {num_gpus: 1}\n")
    gpu, = plan_segments(config, {"CPU": 4.0, "GPU": 1.0}, units=5)
    assert not gpu.reads and not gpu.settles  # a read task before it, a write task after


def test_kept_only_is_a_config_choice_per_stage(tmp_path):
    config = config_file(tmp_path, "stages:\n  - stage: lang\n    kept_only: true\n"
                                   "  - stage: ccnet\n")
    lang, ccnet = (spec.build() for spec in config.stages)
    assert lang.kept_only and not ccnet.kept_only
    default = {spec.name: spec.build() for spec in load_config().stages}
    assert not default["lang"].kept_only  # cheap scores: every row
    assert default["wrap"].kept_only  # WRAP: only what is kept


@pytest.mark.usefixtures("ray_cluster")
def test_a_batch_passes_through_fused_stages_in_one_worker_process(tmp_path):
    crawl = tmp_path / "crawl"
    shards = [write_shard(crawl / f"s{i}.parquet", good_rows(300, f"s{i}")) for i in range(4)]
    config = config_file(tmp_path, PIDS)
    result = curate([str(crawl)], tmp_path / "out", config, progress=False)
    assert result.totals["curated"] == 1200
    rows = pq.read_table(tmp_path / "out" / "curated").to_pylist()
    assert all(r["pid"] == r["pid2"] for r in rows)
    manifest = json.loads(result.manifest_path.read_text())
    assert [op["stages"] for op in manifest["operators"]] == [["pid", "pid2"]]
    # The pool uses both CPUs of the embedded cluster: two workers did the work.
    workers = manifest["workers"]
    assert len(workers) == 2 and sum(w["rows"] for w in workers.values()) == 1200
    assert {int(name.split("/")[1]) for name in workers} == {r["pid"] for r in rows}
    assert all(w["peak_rss_bytes"] > 50 << 20 for w in workers.values())
    assert set(manifest["stages"]) == {"pid", "pid2"}  # timed per stage, fused or not
    assert_each_row_once(tmp_path / "out", shards)


def test_a_pool_grows_onto_a_node_that_joins_and_survives_losing_it(tmp_path):
    """A head with one CPU runs a curation; a second node joins mid-run and the pool
    grows onto it; then that node is killed, and every row still ends exactly once."""
    from thresher.pipeline.tools.local_cluster import client_env

    cluster = tmp_path / "cluster"
    start_head(cluster, port=0, num_cpus=1)  # the tests' PYTHONPATH reaches workers
    try:
        crawl = tmp_path / "crawl"
        shards = [write_shard(crawl / f"s{i}.parquet", good_rows(400, f"s{i}"))
                  for i in range(12)]
        config = tmp_path / "slow.yaml"
        # Every batch of 100 rows sleeps 0.75 s: 3 s a shard, 36 s on one worker. Ray
        # Data sees a new node within 20 s (its autoscaling coordinator's tick).
        config.write_text("stages:\n  - stage: 'faulty:Slow'\n    seconds: 0.75\n    marker: ' '\n"
                          "    resources: {batch_size: 100, num_cpus: auto, concurrency: auto}\n"
                          "  - stage: 'faulty:RecordPid'\n")
        out = tmp_path / "out"
        driver = subprocess.Popen([THRESHER, "curate", "-i", str(crawl), "-o", str(out), "-c",
                                   str(config), "--no-progress"], env=client_env(cluster),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        node = start_node(cluster, num_cpus=1)
        deadline = time.time() + 240
        while time.time() < deadline and driver.poll() is None and not _worked_on(node, out):
            time.sleep(0.3)
        time.sleep(1)  # that shard's tally reaches the driver
        assert driver.poll() is None, "the run ended before the node could be killed"
        os.killpg(node.pid, signal.SIGKILL)  # the node and its workers, mid-run
        output, _ = driver.communicate(timeout=400)
        assert driver.returncode == 0, output[-3000:]
    finally:
        stop_head(cluster)
    manifest = json.loads(next((out / "runs").glob("*/manifest.json")).read_text())
    assert manifest["totals"]["rows_in"] == 4800 and manifest["invariant"]["ok"]
    assert manifest["operators"][0]["pool"] == {"min": 1, "max": None, "initial": 1}
    assert len(manifest["nodes"]) == 2, manifest["nodes"]  # the pool grew onto the new node
    assert_each_row_once(out, shards)


def test_a_gpu_pool_grows_onto_a_gpu_node_that_joins(tmp_path):
    """A GPU group that idles at 0 replicas has one GPU when the run plans (what the
    wait for the autoscaler brought); the pool must still grow onto the GPU nodes the
    autoscaler adds later. Nodes declare GPUs that do not exist: the stage uses none."""
    from thresher.pipeline.tools.local_cluster import client_env

    cluster = tmp_path / "cluster"
    start_head(cluster, port=0, num_cpus=1)
    try:
        first = start_node(cluster, num_cpus=4, num_gpus=1)  # GPU nodes bring CPUs
        crawl = tmp_path / "crawl"
        shards = [write_shard(crawl / f"s{i}.parquet", good_rows(200, f"s{i}"))
                  for i in range(24)]  # 1.5 s a shard: 36 s on one worker
        config = tmp_path / "gpu.yaml"
        config.write_text("stages:\n  - stage: 'faulty:RecordPid'\n    seconds: 0.75\n"
                          "    resources: {batch_size: 100, num_gpus: 1, concurrency: auto}\n")
        out = tmp_path / "out"
        driver = subprocess.Popen([THRESHER, "curate", "-i", str(crawl), "-o", str(out), "-c",
                                   str(config), "--no-progress"], env=client_env(cluster),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        second = start_node(cluster, num_cpus=4, num_gpus=1)
        worked = [False, False]  # while it runs: a node's worker processes end with it
        deadline = time.time() + 400
        while time.time() < deadline and driver.poll() is None and not all(worked):
            worked = [w or _worked_on(node, out) for w, node in zip(worked, (first, second))]
            time.sleep(0.3)
        output, _ = driver.communicate(timeout=400)
        assert driver.returncode == 0, output[-3000:]
    finally:
        stop_head(cluster)
    manifest = json.loads(next((out / "runs").glob("*/manifest.json")).read_text())
    gpu = [op["pool"]["max"] for op in manifest["operators"] if op.get("num_gpus")]
    assert gpu == [None]  # the GPU stage's pool: planned with 1 GPU, free to grow
    assert worked == [True, True], "the GPU pool did not grow onto the second GPU node"
    assert_each_row_once(out, shards)


def _worked_on(node, out: Path) -> bool:
    """Whether a curated part holds rows scored by a worker process of the node."""
    try:
        ours = {p.pid for p in psutil.Process(node.pid).children(recursive=True)}
    except psutil.Error:
        return False
    for part in (out / "curated").glob("part-*.parquet") if (out / "curated").exists() else []:
        if ours & set(pq.read_table(part, columns=["pid"]).column(0).to_pylist()):
            return True
    return False


def test_a_run_waits_for_the_autoscaler_when_told_and_refuses_clearly_otherwise(tmp_path):
    """A head with no CPU (as on KubeRay: num-cpus 0, workers added by the autoscaler).
    Without THRESHER_WAIT_FOR_RESOURCES the run refuses at once and names the variable;
    with it, the run waits, a node joins (what the autoscaler would add), and it ends
    with every row once."""
    from thresher.pipeline.tools.local_cluster import client_env

    cluster = tmp_path / "cluster"
    start_head(cluster, port=0, num_cpus=0)
    try:
        crawl = tmp_path / "crawl"
        shards = [write_shard(crawl / f"s{i}.parquet", good_rows(30, f"s{i}")) for i in range(2)]
        config = tmp_path / "pid.yaml"
        config.write_text("stages:\n  - stage: 'faulty:RecordPid'\n")
        command = [THRESHER, "curate", "-i", str(crawl), "-o", str(tmp_path / "out"), "-c",
                   str(config), "--no-progress"]
        env = client_env(cluster)
        refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "THRESHER_WAIT_FOR_RESOURCES=SECONDS" in refused.stderr
        driver = subprocess.Popen(command, env={**env, "THRESHER_WAIT_FOR_RESOURCES": "180"},
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        for line in driver.stdout:  # the run says it waits before the node joins
            lines.append(line)
            if "waiting up to 180 s for the autoscaler" in line:
                break
        assert driver.poll() is None, "".join(lines)[-3000:]
        start_node(cluster, num_cpus=2)
        output, _ = driver.communicate(timeout=300)
        assert driver.returncode == 0, ("".join(lines) + output)[-3000:]
    finally:
        stop_head(cluster)
    assert_each_row_once(tmp_path / "out", shards)
