"""Build the Ray Data DAG: shards -> operators of fused stages -> tallies.

Consecutive stages that ask for the same kind of resources run in one operator (a
*segment*): one worker holds all their models and a batch passes through them in one
process. GPU stages, stages holding an LLM, and stages whose config asks for other
resources get a segment of their own. The first segment reads its shards itself and
the last one decides and writes, when they run on CPUs; so in the common CPU-only
pipeline a document never crosses the object store: shard paths go in, one tally row
per shard comes out, and each worker is one process per core doing the whole job.

Pools size themselves to the cluster: an `auto` pool starts with as many workers as
the free CPUs hold (one core each, less the share the other operators need) and may
grow when the cluster grows; an explicit `concurrency` is a fixed pool.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass

import pyarrow as pa
import ray

from thresher.pipeline.engine.config import Config, ConfigError, StageSpec
from thresher.pipeline.engine.ship import ship
from thresher.pipeline.engine.worker import SegmentWorker
from thresher.stages import Resources, Stage
from thresher.pipeline.engine import ray_attempts

log = logging.getLogger(__name__)

# Operators that do not hold a stage: a read task before a GPU segment, a write task
# after one. Their CPU shares are what a pool must leave free.
READ_CPUS = 0.25
SETTLE_CPUS = 0.25
# What one read task holds at most (a batch of a row group, decoded). Declaring it
# also keeps Ray from fusing the read task into the next actor operator.
READ_MEMORY = 256 << 20
SETTLE_MEMORY = 512 << 20
# A worker's own memory before any model: the Python process with Ray, pyarrow and
# the stage libraries imported (measured at about 300 MB), plus the batches in flight.
WORKER_BASE_MEMORY = 400 << 20
BATCH_MEMORY = 128 << 20
_ATTEMPTS = None  # the run's attempt counter actor, held while the driver lives


@dataclass
class Segment:
    """Stages that run in one operator, and what each of its workers asks for."""

    specs: list[StageSpec]
    num_cpus: float
    num_gpus: float
    memory: int
    pool: tuple[int, int | None, int] | None  # (min, max, initial); None: a fixed pool
    concurrency: int | None  # the fixed pool's size
    batch_size: int
    reads: bool = False  # reads its shards itself (the first segment, on CPUs)
    settles: bool = False  # decides and writes itself (the last segment, on CPUs)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def describe(self) -> dict:
        return {"stages": self.names, "num_cpus": round(self.num_cpus, 4),
                "num_gpus": self.num_gpus, "memory_bytes": self.memory,
                "pool": ({"min": self.pool[0], "max": self.pool[1], "initial": self.pool[2]}
                         if self.pool else {"fixed": self.concurrency}),
                "reads": self.reads, "settles": self.settles}


def quiet_ray(verbose: bool = False) -> None:
    """Ray's and Ray Data's own console output (start-up notes, per-operator progress)
    only when `verbose`; Ray keeps writing them to its session logs either way.
    thresher prints one line per shard and a periodic summary. (Ray's C++ core worker
    still prints one `core_worker.cc` line per run about actor constructor arguments:
    silencing it with RAY_BACKEND_LOG_LEVEL prints another line in its place.)"""
    level = logging.DEBUG if verbose else logging.ERROR
    logging.getLogger("ray").setLevel(level)
    import ray.data  # noqa: F401  (configures the ray.data logger on import)
    from ray._private.log import PlainRayHandler

    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, PlainRayHandler):  # the console one; its file one stays
            handler.setLevel(level)


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster at `address` (or RAY_ADDRESS), else start an in-process one."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from thresher.pipeline.engine import ray_llm

    ray_llm.install()  # stages' work off the batch path (an LLM teacher) runs on Ray
    if ray.is_initialized():
        return
    verbose = logging.getLogger("thresher").getEffectiveLevel() <= logging.DEBUG
    quiet_ray(verbose)
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        log.info("connecting to the Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=False,
                 logging_level=logging.DEBUG if verbose else logging.ERROR)
        return
    # A short temp dir of our own: Ray's socket paths must stay under ~100 bytes, and
    # `ray stop` elsewhere must not reach us.
    # Loopback only: the embedded cluster has no business on the network.
    ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
             _node_ip_address="127.0.0.1", _temp_dir=f"/tmp/thresher-ray-{os.getuid()}",
             log_to_driver=False, logging_level=logging.DEBUG if verbose else logging.ERROR)


def _group_key(spec: StageSpec):
    """Stages with equal keys may share a worker: CPU-only, fusable, and asking for
    the same explicit resources."""
    res = spec.resources
    if res.num_gpus or not spec.fusable:
        return None
    return (res.num_cpus, res.concurrency, res.memory)


def plan_segments(config: Config, cluster: dict, units: int,
                  settle: bool = True) -> list[Segment]:
    """The operators of the DAG for a cluster with these resources (Ray's
    cluster_resources()) and `units` work items (shards): consecutive stages of equal
    group key fuse."""
    groups: list[list[StageSpec]] = []
    for spec in config.stages:
        key = _group_key(spec)
        if groups and key is not None and _group_key(groups[-1][-1]) == key:
            groups[-1].append(spec)
        else:
            groups.append([spec])
    segments = [_segment(group) for group in groups]
    if segments and not segments[0].num_gpus:
        segments[0].reads = True
    if settle and segments and not segments[-1].num_gpus:
        segments[-1].settles = True
    _size_pools(segments, cluster.get("CPU", 0), cluster.get("GPU", 0), units,
                read_task=not segments or not segments[0].reads,
                settle_task=settle and (not segments or not segments[-1].settles))
    return segments


def _segment(specs: list[StageSpec]) -> Segment:
    res: Resources = specs[0].resources
    memory = res.memory or (WORKER_BASE_MEMORY + BATCH_MEMORY
                            + sum(s.memory_estimate for s in specs))
    return Segment(specs=specs, num_cpus=res.num_cpus if res.num_cpus is not None else 1.0,
                   num_gpus=res.num_gpus, memory=int(memory), pool=None,
                   concurrency=res.concurrency,
                   batch_size=max(s.resources.batch_size for s in specs))


def _size_pools(segments: list[Segment], cpus: float, gpus: float, units: int,
                read_task: bool, settle_task: bool) -> None:
    """Fixed pools keep their size. A GPU pool grows to the cluster's GPUs. CPU pools
    share the CPUs the rest leave free; one whose workers ask for no set number of CPUs
    gets as many workers as its share holds whole cores (at least one), each asking
    for an equal part of the share, so that every operator fits at once."""
    fixed = (READ_CPUS if read_task else 0) + (SETTLE_CPUS if settle_task else 0)
    fixed += sum(seg.num_cpus * seg.concurrency for seg in segments if seg.concurrency)
    growing = [seg for seg in segments if seg.concurrency is None]
    sizes = {}
    for seg in growing:
        if seg.num_gpus:
            sizes[id(seg)] = max(1, math.floor(gpus / seg.num_gpus + 1e-9))
            fixed += seg.num_cpus * sizes[id(seg)]
    cpu_pools = [seg for seg in growing if not seg.num_gpus]
    share = max(cpus - fixed, 0.0) / max(1, len(cpu_pools))
    for seg in cpu_pools:
        if seg.specs[0].resources.num_cpus is None:
            sizes[id(seg)] = max(1, round(share))
            seg.num_cpus = min(1.0, share / sizes[id(seg)]) if share > 0 else 1.0
        else:
            sizes[id(seg)] = max(1, math.floor(share / max(seg.num_cpus, 1e-9) + 1e-9))
    # Alone on the cluster, a pool may grow with it (an autoscaling cluster adds
    # nodes); beside other operators it stops at its share so that they keep theirs.
    # A GPU pool always may: GPU nodes bring their own CPUs, and a GPU group that
    # idles at 0 replicas has one GPU (or none) when the run plans, so a pool sized
    # then would never use the GPUs the autoscaler adds.
    alone = len(segments) == 1 and not read_task and not settle_task
    for seg in growing:
        workers = sizes[id(seg)]
        initial = min(workers, units) if seg.reads else 1
        seg.pool = (1, None if alone or seg.num_gpus else workers, max(1, initial))


# On an autoscaling cluster (KubeRay), how long to wait for the autoscaler to add the
# nodes the stages' first workers need (a GPU group that idles at 0 replicas); 0: do
# not wait, refuse at once (the embedded cluster, a fixed one).
WAIT_ENV = "THRESHER_WAIT_FOR_RESOURCES"


def _wait_hint() -> str:
    waited = float(os.environ.get(WAIT_ENV) or 0)
    if waited > 0:
        return f", after waiting {waited:g} s for the autoscaler ({WAIT_ENV})"
    return (f" (on an autoscaling cluster, {WAIT_ENV}=SECONDS lets the run wait for the "
            "autoscaler to add them)")


def _first_workers(segments: list[Segment]) -> list[dict]:
    """One resource bundle per worker each operator starts with, and the read and
    write tasks' shares where those run on their own."""
    bundles = [] if segments and segments[0].reads else [{"CPU": READ_CPUS}]
    if not segments or not segments[-1].settles:
        bundles.append({"CPU": SETTLE_CPUS})
    for seg in segments:
        bundle = {"CPU": seg.num_cpus, **({"GPU": seg.num_gpus} if seg.num_gpus else {})}
        bundles += [bundle] * (seg.concurrency or seg.pool[0])
    return bundles


def _fits(bundles: list[dict], have: dict) -> bool:
    return all(sum(b.get(k, 0) for b in bundles) <= have.get(k, 0) + 1e-9 for k in ("CPU", "GPU"))


def wait_for_resources(segments: list[Segment], seconds: float | None = None) -> bool:
    """Ask the autoscaler for the first workers' resources and wait until the cluster
    has them, for at most `seconds` (default: $THRESHER_WAIT_FOR_RESOURCES, else 0).
    True when it waited (the caller plans again with the grown cluster)."""
    if seconds is None:
        seconds = float(os.environ.get(WAIT_ENV) or 0)
    bundles = _first_workers(segments)
    if seconds <= 0 or _fits(bundles, ray.cluster_resources()):
        return False
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=bundles)
    wanted = {k: round(sum(b.get(k, 0) for b in bundles), 3) for k in ("CPU", "GPU")}
    log.info("waiting up to %g s for the autoscaler to add %s (the cluster has %s)", seconds,
             wanted, {k: ray.cluster_resources().get(k, 0) for k in ("CPU", "GPU")})
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not _fits(bundles, ray.cluster_resources()):
        time.sleep(2)
    return True


def check_fits(config: Config, segments: list[Segment]) -> None:
    """Refuse a pipeline the cluster cannot run at once: Ray Data would wait for
    resources that never come, and the run would hang without a word."""
    have = ray.cluster_resources()
    cpus = sum(bundle["CPU"] for bundle in _first_workers(segments))
    if cpus > have.get("CPU", 0) + 1e-9:
        raise ConfigError(f"{config.source}: the stages' workers plus the read and write "
                          f"tasks ask for {cpus:g} CPUs at once, and the cluster has "
                          f"{have.get('CPU', 0):g}: lower resources.num_cpus or concurrency"
                          f"{_wait_hint()}")
    for seg in segments:
        gpus = seg.num_gpus * (seg.concurrency or 1)
        if gpus > have.get("GPU", 0) + 1e-9:
            raise ConfigError(f"{config.source}: stage {'+'.join(seg.names)} asks for "
                              f"{gpus:g} GPUs and the cluster has {have.get('GPU', 0):g}"
                              f"{_wait_hint()}")


def build(shards, config: Config, out_dir: str, progress: bool = True):
    """The whole run: read, stages, decide and write; one tally row per shard (or per
    batch, when a separate write task settles). Returns the dataset and its segments."""
    settle = {"rules": tuple(config.filters), "out_dir": out_dir,
              "part_max_rows": config.run.part_max_rows,
              "part_max_bytes": config.run.part_max_bytes,
              # Stages whose settle() hook makes rows: the writer builds its own copy.
              "makers": tuple(ship([spec for spec in config.stages
                                    if spec.cls.settle is not Stage.settle]))}
    units = [{"path": s.path, "key": s.key} for s in shards]
    return _dataset(units, config, settle, progress)


def scored(units: list[dict], config: Config, progress: bool = False):
    """Every stage over the rows the read units name (calibration's sample): the
    scored batches, not written anywhere."""
    return _dataset(units, config, None, progress)[0]


def score_here(units: list[dict], config: Config):
    """The same as scored(), in this process: for small samples through CPU stages."""
    read = {"batch_rows": config.run.read_batch_rows, "max_text_bytes": config.run.max_text_bytes}
    worker = SegmentWorker(config.stages, tuple(config.filters), read, None)
    for unit in units:
        yield from worker(pa.Table.from_pylist([unit]))


def _dataset(units: list[dict], config: Config, settle: dict | None, progress: bool):
    from thresher.pipeline.engine.read import read_units
    from thresher.pipeline.engine.write import settle as settle_batch

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress
    # Grow a pool when every worker is busy: Ray's default (175% utilization) waits
    # until most workers also have a second task queued, which with shard-long tasks
    # comes late or never.
    context.autoscaling_config.actor_pool_util_upscaling_threshold = 0.95
    segments = plan_segments(config, ray.cluster_resources(), len(units),
                             settle=settle is not None)
    if wait_for_resources(segments):  # pools sized for the cluster the autoscaler grew
        segments = plan_segments(config, ray.cluster_resources(), len(units),
                                 settle=settle is not None)
    check_fits(config, segments)
    read = {"batch_rows": config.run.read_batch_rows, "max_text_bytes": config.run.max_text_bytes}
    log.debug("operators: %s", [s.describe() for s in segments])
    global _ATTEMPTS
    _ATTEMPTS = ray_attempts.start()  # batch deaths, seen from every node
    ds = ray.data.from_items(units, override_num_blocks=max(1, len(units)))
    if not segments or not segments[0].reads:
        ds = ds.map_batches(read_units, batch_size=1, batch_format="pyarrow",
                            num_cpus=READ_CPUS, memory=READ_MEMORY, fn_kwargs=read)
    rules = tuple(config.filters)
    for seg in segments:
        if seg.pool:
            low, high, initial = seg.pool
            # Two tasks in flight: a worker has its next shard queued and never waits for
            # the driver between shards (at most one shard of imbalance at the end).
            compute = ray.data.ActorPoolStrategy(min_size=low, max_size=high,
                                                 initial_size=initial,
                                                 max_tasks_in_flight_per_actor=2)
        else:
            compute = ray.data.ActorPoolStrategy(size=seg.concurrency)
        ds = ds.map_batches(
            SegmentWorker, compute=compute,
            fn_constructor_args=(ship(seg.specs), rules, read if seg.reads else None,
                                 settle if seg.settles else None),
            batch_size=1 if seg.reads else seg.batch_size, batch_format="pyarrow",
            num_cpus=seg.num_cpus, num_gpus=seg.num_gpus or None, memory=seg.memory)
    if settle is not None and (not segments or not segments[-1].settles):
        ds = ds.map_batches(settle_batch, batch_size=None, batch_format="pyarrow",
                            num_cpus=SETTLE_CPUS, memory=SETTLE_MEMORY, fn_kwargs=settle)
    return ds, segments
