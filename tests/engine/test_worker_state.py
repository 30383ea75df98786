"""State the driver makes reaches workers that cannot see the driver's folders."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import good_rows, write_shard
from e2e_helpers import assert_each_row_once
from thresher.models.dataman import RATINGS
from thresher.pipeline.tools.local_cluster import (client_env, start_head, start_node, stop_head)

THRESHER = str(Path(sys.executable).with_name("thresher"))
TOPICS = ["the library opens a new reading room for children",
          "the council votes on the budget for public transport",
          "a recipe for bread with whole wheat flour and seeds",
          "how to configure a firewall on a small office network"]


def ratings(n: int) -> pa.Table:
    """Teacher ratings as DataMan's calibration writes them (ids not in the crawl)."""
    rng = random.Random(0)
    rows = []
    for i in range(n):
        row = {"id": f"rated-{i}", "text": f"{TOPICS[i % 4]} ({i})", "dataman_status": "ok",
               "dataman_domain": "ABCD"[i % 4]}
        row.update({f"dataman_{r}": rng.randint(1, 5) for r in RATINGS})
        rows.append(row)
    return pa.Table.from_pylist(rows)


def test_a_worker_that_cannot_see_the_drivers_state_loads_the_dataman_student(tmp_path):
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode:
        pytest.skip("needs root to give a node its own mount namespace (unshare --mount)")
    state, out, crawl = tmp_path / "state", tmp_path / "out", tmp_path / "crawl"
    state.mkdir()
    pq.write_table(ratings(40), state / "ratings.parquet")
    shards = [write_shard(crawl / f"s{i}.parquet", good_rows(50, f"s{i}")) for i in range(2)]
    config = tmp_path / "dataman.yaml"
    config.write_text("stages:\n  - stage: lang\n  - stage: dataman\n    teacher_sample: 40\n"
                      f"    annotations: {state / 'ratings.parquet'}\n"
                      "filters: ['lang_score >= 0.5']\n")
    cluster = tmp_path / "cluster"
    start_head(cluster, port=0, num_cpus=0)  # the driver's node runs no worker
    try:
        start_node(cluster, num_cpus=2, hide=state)  # like a worker pod without the volume
        run = subprocess.run([THRESHER, "curate", "-i", str(crawl), "-o", str(out), "--state",
                              str(state), "-c", str(config), "--no-progress"],
                             env=client_env(cluster), capture_output=True, text=True, timeout=400)
    finally:
        stop_head(cluster)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert (state / "calibration" / "dataman" / "student" / "card.json").exists()  # driver-side
    manifest = json.loads(next((state / "runs").glob("*/manifest.json")).read_text())
    assert len(manifest["nodes"]) == 1 and manifest["totals"]["rows_in"] == 100
    rated = pq.read_table(out / "curated").to_pylist()
    assert rated and all(r["dataman_source"] == "student" for r in rated)
    assert all(r["dataman_overall_score"] in range(1, 6) for r in rated)
    assert_each_row_once(out, shards)
