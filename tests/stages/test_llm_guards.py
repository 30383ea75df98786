"""What keeps an LLM stage from losing rows or hanging the job: batch failures are
quarantined whole, a batch that keeps killing its worker stops being retried, and a
call past its deadline ends the worker instead of hanging."""

import os
import subprocess
import sys

import pyarrow as pa
import pytest

from thresher.pipeline.engine.apply import apply_stage
from thresher.stages import base
from thresher.stages.base import BatchFailure, Stage


class EngineDown(Stage):
    name = "engine_down"
    columns = {"engine_down_x": pa.int8()}

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        raise BatchFailure("the teacher failed twice on this batch: HTTP 503")


def test_a_batch_failure_quarantines_the_whole_batch_without_bisecting():
    n = 8
    batch = pa.table({"id": [str(i) for i in range(n)], "text": ["t"] * n,
                      "_error": pa.nulls(n, pa.string()), "_pre": pa.nulls(n, pa.string())})
    stage = EngineDown()
    out = apply_stage(stage, batch)
    assert stage.calls == 1  # no culprit hunt over 8 rows
    assert out.num_rows == n
    errors = out.column("_error").to_pylist()
    assert all(e == "stage engine_down: the teacher failed twice on this batch: HTTP 503"
               for e in errors)


def test_a_batch_that_keeps_killing_its_worker_is_failed_after_three_deaths(tmp_path,
                                                                          monkeypatch):
    monkeypatch.setattr(base.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(base, "_counts_for", base._FileCounts)  # outside a run's workers
    ids = ["x1", "x2"]
    marker_dir = tmp_path / f"thresher-attempts-{os.getuid()}" / "dataman"
    dead = []  # held, so that no finally runs: as when the process is gone
    for _ in range(base.MAX_BATCH_ATTEMPTS):  # each time the worker dies inside the call
        dead.append(base.attempt_guard(ids, "dataman"))
        dead[-1].__enter__()
    with pytest.raises(BatchFailure, match="died on this batch 3 times"):
        with base.attempt_guard(ids, "dataman"):
            pass
    assert not list(marker_dir.iterdir())  # given up: the count is cleared


def test_a_batch_that_returns_leaves_no_count_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(base.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(base, "_counts_for", base._FileCounts)
    for _ in range(5):  # the same batch in run after run is never failed for it
        with base.attempt_guard(["same"], "wrap"):
            pass
    with pytest.raises(ValueError):
        with base.attempt_guard(["same"], "wrap"):
            raise ValueError("engine said no")
    assert not list((tmp_path / f"thresher-attempts-{os.getuid()}" / "wrap").iterdir())


def test_a_call_past_its_deadline_ends_the_worker_with_a_message():
    code = ("import time\nfrom thresher.models.llm.watchdog import deadline\n"
            "with deadline(0.5, 'vLLM generating a batch of 4'):\n    time.sleep(30)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=20, env={**os.environ})
    assert done.returncode == 75
    assert "vLLM generating a batch of 4 did not finish within 0.5 s" in done.stderr


def test_a_call_within_its_deadline_is_untouched():
    from thresher.models.llm.watchdog import deadline

    with deadline(5, "quick"):
        value = sum(range(10))
    assert value == 45


@pytest.mark.usefixtures("ray_cluster")
def test_deaths_are_counted_by_the_run_not_by_a_workers_node(tmp_path):
    """Each try dies in a fresh worker process; the run's counter actor, which every
    node reaches, holds the three deaths (not a file in one node's temp folder)."""
    import ray

    from thresher.pipeline.engine import ray_attempts

    counter = ray_attempts.start()  # as the driver does for a run
    ids = [f"doc-{tmp_path.name}"]

    @ray.remote(max_retries=0)
    def dies_inside_the_call(ids):
        ray_attempts.install()  # as a run's worker does
        with base.attempt_guard(ids, "wrap"):
            os._exit(1)

    @ray.remote(max_retries=0)
    def tries_again(ids):
        ray_attempts.install()
        try:
            with base.attempt_guard(ids, "wrap"):
                return "ran"
        except BatchFailure as err:
            return str(err)

    for _ in range(base.MAX_BATCH_ATTEMPTS):
        with pytest.raises(ray.exceptions.RayError):
            ray.get(dies_inside_the_call.remote(ids))
    assert ray.get(counter.count.remote(base.batch_key(ids, "wrap"))) == 3  # in the actor
    assert "died on this batch 3 times" in ray.get(tries_again.remote(ids))
    assert ray.get(tries_again.remote(ids)) == "ran"  # given up once: the count is cleared
