"""Calibration: values a stage needs from the data itself before the full run, such
as CCNet's per-language perplexity cut-offs or the harmful filter's tau.

One pass over a bounded sample (row groups and rows chosen by a hash, from across the
whole input) runs the stages up to the last one that calibrates (in the driver when
they are CPU stages, else on the cluster) and keeps only the calibration columns; each
stage then turns them into parameters. The values are saved in
OUT/calibration.json and reused by later runs with the same stage parameters, so a
new crawl is bucketed with the same cut-offs as the crawls before it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path

import pyarrow as pa

from thresher.pipeline.engine.config import Config
from thresher.pipeline.engine.read import sample_hash
from thresher.pipeline.engine.run import RunState, Step
from thresher.pipeline.engine.shards import Shard
from thresher.pipeline.io.storage import write_text

log = logging.getLogger(__name__)


class CalibrationError(ValueError):
    """A stage could not estimate its values from the sample; says which and why."""


class CalibrationStep(Step):
    """The engine's step: the stages' calibrated values, saved or estimated now."""

    name = "calibration"

    def before(self, run: RunState) -> dict:
        run.config, report = calibrate(run.config, run.shards, run.state_dir, run.run_id)
        return report


def calibrate(config: Config, shards: list[Shard], out: Path, run_id: str) -> tuple[Config, dict]:
    """The config with calibrated stage parameters, and what was done (for the manifest)."""
    path = out / "calibration.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    report, pending = {}, []
    specs = list(config.stages)
    for i, spec in enumerate(specs):
        stage = spec.build()
        if not stage.needs_calibration:
            continue
        key = _calibration_key(spec.params, stage.model_files())
        if (spec.name in saved and saved[spec.name]["key"] == key
                and stage.calibration_usable(saved[spec.name]["values"])):
            specs[i] = spec.with_params(saved[spec.name]["values"])
            report[spec.name] = {"source": f"saved by run {saved[spec.name]['run_id']}",
                                 "values": saved[spec.name]["values"]}
        else:
            pending.append((i, stage, key))
    if pending:
        sample = _sample(config, shards, [s for _, s, _ in pending], max(i for i, _, _ in pending))
        for i, stage, key in pending:
            spec = specs[i]
            try:
                values = stage.calibrate(sample, out / "calibration" / spec.name)
            except ValueError as err:
                raise CalibrationError(f"calibrating stage {spec.name} on {sample.num_rows} "
                                       f"sampled rows failed: {err}") from None
            specs[i] = spec.with_params(values)
            saved[spec.name] = {"key": key, "values": values, "run_id": run_id,
                                "sample_rows": sample.num_rows}
            source = (f"estimated on a sample of {sample.num_rows} rows"
                      if stage.calibration_rows else "made without a sample")
            report[spec.name] = {"source": source,
                                 "values": values}
            log.info("calibrated %s (%s): %s", spec.name, source, values)
        write_text(str(path), json.dumps(saved, indent=1))
    return replace(config, stages=specs), report


def _sample(config: Config, shards: list[Shard], stages, last: int) -> pa.Table:
    """The calibration columns of a sample drawn across shards and row groups, scored
    by the stages up to the last one that calibrates (the later ones are not needed)."""
    from thresher.pipeline.engine import dag

    wanted = max(s.calibration_rows for s in stages)
    columns = sorted({c for s in stages for c in s.calibration_columns})
    partial = replace(config, stages=config.stages[: last + 1])
    units = sample_units(shards, wanted)
    if all(spec.fusable and not spec.resources.num_gpus for spec in partial.stages):
        # A few thousand rows through CPU stages whose models the config check has just
        # loaded here anyway: scoring them in this process takes a second or two, where
        # starting a pool of workers for them costs more than the scoring.
        found = (t.select(columns) for t in dag.score_here(units, partial))
    else:
        found = dag.scored(units, partial).select_columns(columns).iter_batches(
            batch_format="pyarrow", batch_size=None)
    tables = [t for t in found if t.num_rows]
    if not tables:
        return pa.table({c: pa.array([]) for c in columns})
    return pa.concat_tables(tables, promote_options="permissive")


def sample_units(shards: list[Shard], wanted: int, spread: int = 4) -> list[dict]:
    """Read units for a sample of about `wanted` rows: row groups taken in the order of
    a hash (so from across the crawl, not the head of each shard) until they hold
    `spread` times the rows wanted, then that share of their rows by a hash of the row.
    Reading the extra rows costs little next to scoring them; spreading the sample
    over more row groups keeps a sorted shard from skewing it."""
    groups = sorted((sample_hash(shard.key, -1 - g), i, g, n)
                    for i, shard in enumerate(shards) for g, n in enumerate(shard.row_groups) if n)
    target = min(sum(n for *_, n in groups), wanted * spread)
    chosen: dict[int, list[int]] = {}
    covered = 0
    for _, i, g, n in groups:
        if covered >= target:
            break
        chosen.setdefault(i, []).append(g)
        covered += n
    rate = min(1.0, wanted / covered) if covered else 1.0
    return [{"path": shards[i].path, "key": shards[i].key, "row_groups": sorted(gs), "rate": rate}
            for i, gs in sorted(chosen.items())]


def _calibration_key(params: dict, files: list[Path]) -> str:
    """Same parameters and same model files (path, size, mtime) -> same calibration."""
    stats = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    blob = json.dumps([params, stats], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]
