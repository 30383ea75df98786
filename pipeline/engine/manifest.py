"""OUT/runs/<run_id>/manifest.json: what a run did, shard by shard, and the report."""

from __future__ import annotations

import json
import logging
import platform
import time
from collections import Counter
from importlib import metadata
from pathlib import Path

from thresher.pipeline.io.storage import Store, write_text

log = logging.getLogger(__name__)

_VERSIONED = ("thresher", "ray", "pyarrow", "numpy", "fasttext-numpy2-wheel", "kenlm",
              "sentencepiece", "datatrove", "torch", "transformers", "vllm")


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def build(run_id, state, started, config, inputs, plan, tallies, violations,
          extra: dict | None = None) -> dict:
    shards, reasons, errors, seconds, made = [], Counter(), Counter(), Counter(), {}
    workers: dict = {}
    for tally in tallies.values():
        shard = tally.shard
        shards.append({"path": shard.path, "key": shard.key, "size": shard.size,
                       "fingerprint": shard.fingerprint, "error": shard.error,
                       "complete": tally.complete or bool(shard.error), **tally.counts(),
                       "drop_reasons": dict(tally.reasons)})
        reasons.update(tally.reasons)
        errors.update(tally.errors)
        seconds.update(tally.stage_seconds)
        for stage, counts in tally.made.items():
            made.setdefault(stage, Counter()).update(counts)
        for name, (rows_done, rss) in tally.workers.items():
            seen = workers.setdefault(name, {"rows": 0, "peak_rss_bytes": 0})
            seen["rows"] += rows_done
            seen["peak_rss_bytes"] = max(seen["peak_rss_bytes"], rss)
    totals = Counter()
    for entry in shards:
        totals.update({k: entry[k] for k in ("rows_in", "curated", "rejected", "quarantined")})
    rows = totals["rows_in"]
    finished = time.time()
    return {
        "run_id": run_id,
        "state": state,
        "started": _iso(started),
        "finished": _iso(finished),
        "seconds": round(finished - started, 3),
        "inputs": list(inputs),
        "plan": plan,
        "config_source": config.source,
        "config": config.raw,
        "versions": versions(),
        "totals": {k: totals[k] for k in ("rows_in", "curated", "rejected", "quarantined")},
        "invariant": {"checked": "rows_in == curated + rejected + quarantined, per shard, "
                                 "against the parts on disk",
                      "ok": not violations and state in ("finished", "nothing-to-do"),
                      "violations": violations},
        # Worker seconds summed over all workers (not wall time), and rows per worker-second.
        "stages": {name: {"worker_seconds": round(sec, 3), "rows": rows,
                          "rows_per_worker_second": round(rows / sec, 1) if sec else None}
                   for name, sec in seconds.items()},
        # calibration: values estimated from the data (CCNet cut-offs, harmful tau) and
        # where from; stage_settings: each stage's models, thresholds and their sources.
        **(extra or {}),
        # Which node and process read and scored how many rows, and each worker's peak
        # RSS (against the memory its operator declared, in `operators`).
        "workers": dict(sorted(workers.items())),
        "nodes": _per_node(workers),
        # Rows stages made after the decision (outside the invariant), per stage.
        "made_rows": {spec.name: spec.build().made_summary(dict(made[spec.name]))
                      for spec in config.stages if spec.name in made},
        "drop_reasons": dict(reasons.most_common()),
        "quarantine_errors": dict(errors.most_common(50)),
        "shards": shards,
    }


def write(out: Store, state_dir: Path, run_id, state, started, config, inputs, plan, tallies,
          violations, extra: dict | None = None):
    """Write manifest.json and, when the run scored anything, report.html, into the
    driver's state folder, and a copy of both next to the outputs when those are
    elsewhere (an object store)."""
    run_dir = state_dir / "runs" / run_id
    data = build(run_id, state, started, config, inputs, plan, tallies, violations, extra)
    data["output"] = out.location
    manifest_path = run_dir / "manifest.json"
    text = json.dumps(data, indent=1, default=str)
    report_path = None
    if data["totals"]["rows_in"]:
        from thresher.pipeline.engine import report  # matplotlib: only when there is something to plot

        start = time.perf_counter()
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            report_path = report.write(out, run_dir, data,
                                       [spec.build() for spec in config.stages])
        except Exception:  # a report must never cost the run its results
            log.exception("could not write the report for run %s", run_id)
        data.setdefault("phases", {})["report"] = round(time.perf_counter() - start, 3)
        text = json.dumps(data, indent=1, default=str)
    write_text(str(manifest_path), text)
    if Path(out.root) != state_dir or not out.is_local:
        _copy_to_output(out, run_id, text, report_path)
    return manifest_path, report_path


def _copy_to_output(out: Store, run_id: str, manifest: str, report_path: Path | None) -> None:
    try:
        out.write_text(out.path("runs", run_id, "manifest.json"), manifest)
        if report_path:
            out.write_text(out.path("runs", run_id, "report.html"), report_path.read_text())
    except OSError:  # the local copy stands; the outputs themselves are already written
        log.exception("could not copy the manifest of run %s to %s", run_id, out.location)


def _per_node(workers: dict) -> dict:
    nodes = Counter()
    for name, seen in workers.items():
        nodes[name.split("/")[0]] += seen["rows"]
    return dict(nodes)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
