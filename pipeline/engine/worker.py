"""One worker of a segment (dag.py): the models of its stages, loaded once, and a
batch passed through them in this process.

The first segment's workers also read their shards (and stamp each row with their
name and peak RSS, for the manifest), and the last segment's also
decide and write, so that where the whole pipeline is one segment a worker takes a
shard path and gives back that shard's tallies. Each stage still runs through
apply_stage: its own row isolation on errors, its own timing column.
"""

from __future__ import annotations

import os
import resource
from typing import Iterator

import pyarrow as pa

from thresher.pipeline.engine.apply import apply_stage
from thresher.pipeline.engine.read import read_unit
from thresher.pipeline.engine.ship import land
from thresher.pipeline.engine.write import settle


def worker_name() -> str:
    """<node id>/<pid>: which node and process did the work, for the manifest."""
    import ray

    return f"{ray.get_runtime_context().get_node_id()}/{os.getpid()}"


class SegmentWorker:
    """A Ray Data callable class (one per actor)."""

    def __init__(self, specs, rules: tuple, read: dict | None, settle_args: dict | None):
        from thresher.pipeline.engine import ray_attempts, ray_llm

        ray_attempts.install()  # an LLM stage's batch deaths count for the whole run
        ray_llm.place_worker()  # the GPU share and job its engines see
        self.stages = []
        for spec in land(specs):  # files the driver made, unpacked here
            # Built and loaded once per process: in the driver (calibration's small
            # sample) this is the config check's instance, its models already loaded.
            self.stages.append((spec.build().ready(), spec.resources.batch_size))
        self.rules = rules
        self.read = read
        self.settle = settle_args
        self.name = worker_name()

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        if self.read is None:
            yield self._finish(self.score(batch))
            return
        for unit in batch.to_pylist():
            tallies = []
            for table in read_unit(unit, **self.read):
                done = self._finish(self._stamp(self.score(table)))
                if self.settle is None:
                    yield done
                else:
                    tallies.append(done)
            if tallies:
                # One output per shard, after all its parts are written: a worker that
                # dies mid-shard has given nothing back, and the retry rewrites the
                # same part names.
                yield pa.concat_tables(tallies)

    def score(self, table: pa.Table) -> pa.Table:
        for stage, batch_size in self.stages:
            if table.num_rows <= batch_size:
                table = apply_stage(stage, table, self.rules)
                continue
            parts = [apply_stage(stage, table.slice(i, batch_size), self.rules)
                     for i in range(0, table.num_rows, batch_size)]
            table = pa.concat_tables(parts, promote_options="permissive")
        return table

    def _stamp(self, table: pa.Table) -> pa.Table:
        """Which worker read and scored these rows, and its peak RSS so far (bytes)."""
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return (table.append_column("_worker", pa.array([self.name] * table.num_rows, pa.string()))
                .append_column("_rss", pa.array([peak] * table.num_rows, pa.int64())))

    def _finish(self, table: pa.Table) -> pa.Table:
        return table if self.settle is None else settle(table, **self.settle)
