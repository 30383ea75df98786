"""Build the Ray Data DAG: shards -> read -> one map_batches per stage -> settle.

Every operator asks for a fraction of a CPU, so that on a 2-core machine the read
tasks, the stage actors and the writers all fit at once and none starves another.
"""

from __future__ import annotations

import logging
import os

import ray

from thresher.pipeline.apply import StageRunner, run_stateless
from thresher.pipeline.config import Config, ConfigError
from thresher.pipeline.read import read_shards
from thresher.pipeline.shards import Shard
from thresher.pipeline.write import settle

log = logging.getLogger(__name__)

READ_CPUS = 0.25
# What one read task holds at most (a batch of a row group, decoded). Declaring it
# also keeps Ray from fusing the read into the first stage's operator: fused, the
# read would run inside the stage's actors and Ray would bundle several one-row
# shard descriptors into one call, so shards would finish together, not one by one.
READ_MEMORY = 256 * 1024 * 1024
SETTLE_CPUS = 0.25
# No retry settings here on purpose: Ray Data restarts a dead stage actor and retries
# its batch (max_restarts=-1, max_task_retries=-1), and Ray retries a task whose
# worker died 3 times. A batch whose *code* raises is handled in apply.py instead.


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster at `address` (or RAY_ADDRESS), else start an in-process one."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        log.info("connecting to the Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=False)
        return
    # A short temp dir of our own: Ray's socket paths must stay under ~100 bytes, and
    # `ray stop` elsewhere must not reach us.
    # Loopback only: the embedded cluster has no business on the network.
    ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
             _node_ip_address="127.0.0.1", _temp_dir=f"/tmp/thresher-ray-{os.getuid()}",
             log_to_driver=False)


def build(shards: list[Shard], config: Config, out_dir: str,
          progress: bool = True) -> ray.data.Dataset:
    """The whole run: read, stages, then decide and write (one tally row per shard)."""
    ray.data.DataContext.get_current().enable_progress_bars = progress
    return scored(shards, config).map_batches(
        settle, batch_size=None, batch_format="pyarrow", num_cpus=SETTLE_CPUS,
        fn_kwargs={"rules": config.filters, "out_dir": out_dir,
                   "part_max_rows": config.run.part_max_rows,
                   "part_max_bytes": config.run.part_max_bytes,
                   "synthetic_ratio": _synthetic_ratio(config)})


def _synthetic_ratio(config: Config) -> float | None:
    """The WRAP stage's synthetic:real token ratio, for the writer; None: no WRAP."""
    for spec in config.stages:
        if spec.name == "wrap":
            return float(spec.params.get("ratio", 1.0))
    return None


def check_fits(config: Config) -> None:
    """Refuse a pipeline the cluster cannot run at once: Ray Data would wait for
    resources that never come, and the run would hang without a word."""
    have = ray.cluster_resources()
    cpus = READ_CPUS + SETTLE_CPUS + sum(s.resources.num_cpus * s.resources.concurrency
                                         for s in config.stages)
    if cpus > have.get("CPU", 0) + 1e-9:
        raise ConfigError(f"{config.source}: the stages' actors plus a read and a write task "
                          f"ask for {cpus:g} CPUs at once, and the cluster has "
                          f"{have.get('CPU', 0):g}: lower resources.num_cpus or concurrency")
    for spec in config.stages:
        gpus = spec.resources.num_gpus * spec.resources.concurrency
        if gpus > have.get("GPU", 0) + 1e-9:
            raise ConfigError(f"{config.source}: stage {spec.name} asks for {gpus:g} GPUs and "
                              f"the cluster has {have.get('GPU', 0):g}")


def scored(shards: list[Shard], config: Config, rows_per_shard: int | None = None):
    """Read (at most rows_per_shard rows of each shard) and run every stage."""
    check_fits(config)
    items = [{"path": s.path, "key": s.key} for s in shards]
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    ds = ds.map_batches(
        read_shards, batch_size=1, batch_format="pyarrow", num_cpus=READ_CPUS,
        memory=READ_MEMORY,
        fn_kwargs={"batch_rows": config.run.read_batch_rows,
                   "max_text_bytes": config.run.max_text_bytes, "limit": rows_per_shard})
    for spec in config.stages:
        res = spec.resources
        common = dict(batch_size=res.batch_size, batch_format="pyarrow", num_cpus=res.num_cpus,
                      num_gpus=res.num_gpus or None)
        if spec.cls.stateful:
            ds = ds.map_batches(
                StageRunner, compute=ray.data.ActorPoolStrategy(size=res.concurrency),
                fn_constructor_args=(spec.cls, spec.params, res, tuple(config.filters)),
                **common)
        else:
            ds = ds.map_batches(
                run_stateless,
                fn_kwargs={"stage_cls": spec.cls, "params": spec.params, "resources": res,
                           "rules": tuple(config.filters)},
                **common)
    return ds
