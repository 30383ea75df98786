"""What the steps that read every new shard before the stream share (dedup's
signatures, paragraph dedup's line hashes): the rule for the stages before their stage,
and the pass itself, one shard a task on a pool of actors sized to the cluster."""

from __future__ import annotations

from thresher.pipeline.engine.config import Config, ConfigError


def stage_index(config: Config, name: str) -> int | None:
    names = [spec.name for spec in config.stages]
    return names.index(name) if name in names else None


def check_before(config: Config, name: str, error: type[ConfigError], hint: str = "") -> None:
    """The stages before `name` run in its step's pass over the shards too, before
    calibration and outside the stream's pools, so none may need a calibration, a GPU
    or an LLM."""
    at = stage_index(config, name)
    if at is None:
        return
    for spec in config.stages[:at]:
        stage = spec.build()
        if stage.needs_calibration or spec.resources.num_gpus or not spec.fusable:
            raise error(f"{config.source}: stage {spec.name} is before {name} but needs a "
                        f"calibration, a GPU or an LLM; put {name} before it{hint}")


def read_options(config: Config) -> dict:
    return {"batch_rows": config.run.read_batch_rows, "max_text_bytes": config.run.max_text_bytes}


def over_shards(units: list[dict], worker: type, args: tuple, cpus: int):
    """A lazy dataset of what `worker(*args)` yields for each unit (one shard each),
    on actors that grow to the cluster's CPUs."""
    import ray

    pool = ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, cpus),
                                      initial_size=max(1, min(cpus, len(units))),
                                      max_tasks_in_flight_per_actor=2)
    return ray.data.from_items(units, override_num_blocks=max(1, len(units))).map_batches(
        worker, compute=pool, batch_size=1, batch_format="pyarrow", num_cpus=0.75,
        fn_constructor_args=args)
