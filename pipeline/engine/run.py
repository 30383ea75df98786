"""One curation run: plan against the ledger, stream the DAG, account for every row.

The driver holds only per-shard tallies (a few numbers per shard), never documents.
A shard is marked done in the ledger the moment its tallies cover all its rows; at
the end of the run the parts on disk are counted again against the ledger, and any
shard whose rows do not add up fails the run loudly and is left to be redone.
"""

from __future__ import annotations

import fcntl
import json
import logging
import secrets
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from thresher.pipeline.engine import manifest as manifest_mod
from thresher.pipeline.engine.config import Config, load_config
from thresher.pipeline.engine.ledger import FINAL_STATES, Ledger
from thresher.pipeline.engine.shards import Shard, expand_inputs, inspect_shards, path_key
from thresher.pipeline.io.storage import Store, state_folder
from thresher.pipeline.engine.write import OUTCOMES

log = logging.getLogger(__name__)


SUMMARY_EVERY_S = 30  # a progress line between shard lines, for long shards


class RunError(RuntimeError):
    """The run could not finish; its message says what to do."""


class OutputBusy(RunError):
    """Another run holds the output's lock: a user mistake, not a failed run."""


class InvariantError(RunError):
    """Rows read != curated + rejected + quarantined for some shard."""


@dataclass
class Tally:
    shard: Shard
    rows: int = 0
    curated: int = 0
    rejected: int = 0
    quarantined: int = 0
    reasons: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    stage_seconds: Counter = field(default_factory=Counter)
    synthetic: Counter = field(default_factory=Counter)  # "real_tokens", "<style>.rows", ...
    workers: dict = field(default_factory=dict)  # "<node id>/<pid>" -> [rows, peak RSS]
    files: list = field(default_factory=list)  # "<outcome>/<part name>" of its real parts

    def add(self, row: dict) -> None:
        for name in ("rows", "curated", "rejected", "quarantined"):
            setattr(self, name, getattr(self, name) + row[name])
        self.reasons.update(json.loads(row["reasons"]))
        self.errors.update(json.loads(row["errors"]))
        self.stage_seconds.update(json.loads(row["stage_seconds"]))
        self.files += json.loads(row.get("files") or "[]")
        for name, (rows, peak) in json.loads(row.get("workers") or "{}").items():
            seen = self.workers.setdefault(name, [0, 0])
            seen[0], seen[1] = seen[0] + rows, max(seen[1], peak)
        mix = json.loads(row.get("synthetic") or "{}")
        if mix:
            self.synthetic["real_tokens"] += mix["real_tokens"]
            for style, counts in mix["styles"].items():
                self.synthetic.update({f"{style}.{k}": v for k, v in counts.items()})

    @property
    def complete(self) -> bool:
        return self.rows == self.shard.num_rows

    def counts(self) -> dict:
        return {"rows_in": self.rows, "curated": self.curated, "rejected": self.rejected,
                "quarantined": self.quarantined}


@dataclass
class RunResult:
    run_id: str
    state: str  # finished | nothing-to-do | failed | interrupted
    out_dir: str  # a local path or a URI
    totals: dict
    manifest_path: Path
    report_path: Path | None
    plan: dict
    violations: list[str] = field(default_factory=list)


def curate(inputs: list[str], out_dir: str | Path, config: Config | None = None,
           address: str | None = None, num_cpus: int | None = None,
           progress: bool = True, state_dir: str | Path | None = None) -> RunResult:
    """Curate `inputs` into `out_dir` (a path or a URI): only shards the ledger has not
    finished. The ledger, the lock and the run manifests live in `state_dir`: the
    output folder itself when it is local, else a folder on the driver's machine."""
    config = config or load_config()
    store = Store.at(str(out_dir))
    _check_writable(store)
    state = state_folder(store, state_dir)
    state.mkdir(parents=True, exist_ok=True)
    with exclusive(state):
        return _run(inputs, store, state, config, address, num_cpus, progress)


def _check_writable(store: Store) -> None:
    """Fail before any work when the output cannot be written (a missing bucket, no
    credentials, a read-only folder), not in the middle of the DAG."""
    probe = store.path(f".write-check-{secrets.token_hex(4)}")
    try:
        store.write_text(probe, "thresher")
        store.delete(probe)
    except OSError as err:
        raise RunError(f"cannot write to the output {store.location}: "
                       f"{' '.join(str(err).split())[:300]}") from None


def _run(inputs, store: Store, state_dir: Path, config: Config, address, num_cpus,
         progress) -> RunResult:
    started = time.time()
    phases: dict[str, float] = {}  # where the seconds go, for the manifest
    with phase(phases, "plan"):
        shards = inspect_shards(expand_inputs(inputs))
        ledger = Ledger(state_dir)
        run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(2)
        todo, plan = _plan(shards, ledger)
        ledger.start_run(run_id, config.to_json())
    log.info("run %s: %d shards in input: %s", run_id, len(shards),
             ", ".join(f"{v} {k}" for k, v in plan.items() if v))
    tallies: dict[str, Tally] = {}
    state, violations, calibration, settings, mixture = "nothing-to-do", [], {}, {}, None
    dedup, index = {}, None
    operators: list[dict] = []
    try:
        if todo:
            state = "failed"
            with phase(phases, "clear"):
                _clear_old_parts(store, todo)
                readable = _settle_unreadable(run_id, store, todo, ledger, tallies)
            if readable:
                with phase(phases, "ray_start"):
                    from thresher.pipeline.engine import dag  # imports Ray: keep `status` fast
                    from thresher.pipeline.steps.calibrate import calibrate

                    dag.connect(address, num_cpus)
                with phase(phases, "dedup"):
                    config, dedup = _dedup(run_id, store, config, readable, ledger)
                    readable += _repairs(run_id, store, dedup, ledger, tallies)
                with phase(phases, "calibration"):
                    config, calibration = calibrate(config, readable, state_dir, run_id)
                    settings = {spec.name: spec.build().describe() for spec in config.stages}
                with phase(phases, "stream"):
                    _stream(run_id, store, config, readable, ledger, tallies, progress,
                            operators)
            with phase(phases, "recount"):
                violations = _verify_on_disk(run_id, store, tallies, ledger)
            if dedup:
                index = _record_index(store, config, dedup, tallies, ledger)
            if config.mixture and not violations:
                with phase(phases, "mixture"):
                    mixture = _mix(store, config)
            state = "failed" if violations else "finished"
    except KeyboardInterrupt:
        state = "interrupted"
        raise
    finally:
        totals = _totals(tallies)
        manifest_path, report_path = manifest_mod.write(
            store, state_dir, run_id, state, started, config, inputs, plan, tallies, violations,
            {"calibration": calibration, "stage_settings": settings, "mixture": mixture,
             "operators": operators, "phases": phases,
             "dedup": {k: v for k, v in dedup.items() if k != "pending_index"}
             | ({"index": index} if index else {})})
        ledger.finish_run(run_id, state, totals)
        ledger.close()
    result = RunResult(run_id, state, store.location, totals, manifest_path, report_path, plan,
                       violations)
    if violations:
        raise InvariantError(
            f"run {run_id}: rows do not add up for {len(violations)} shard(s): "
            + "; ".join(violations[:5]) + f". They stay pending; see {manifest_path}")
    return result


def plan(inputs: list[str], out_dir: str | Path,
         state_dir: str | Path | None = None) -> list[dict]:
    """What `curate` would do with these inputs, without doing it or writing anything:
    one entry per input shard with its action (new, changed, resumed, done)."""
    state = state_folder(Store.at(str(out_dir)), state_dir)
    shards = inspect_shards(expand_inputs(inputs))
    ledger = Ledger(state) if (state / "ledger.sqlite").exists() else None
    entries = [{"path": shard.path, "action": _action(shard, ledger), "rows": shard.num_rows,
                "size": shard.size, "error": shard.error} for shard in shards]
    if ledger:
        ledger.close()
    return entries


def _plan(shards: list[Shard], ledger: Ledger) -> tuple[list[Shard], dict]:
    todo, plan = [], Counter(new=0, changed=0, resumed=0, done=0)
    for shard in shards:
        action = _action(shard, ledger)
        plan[action] += 1
        if action != "done":
            todo.append(shard)
    return todo, dict(plan)


def _action(shard: Shard, ledger: Ledger | None) -> str:
    """new, changed (fingerprint differs), done (in a final state) or resumed."""
    known = ledger.get(shard.path) if ledger else None
    if known is None:
        return "new"
    if known["fingerprint"] != shard.fingerprint:
        return "changed"
    return "done" if known["state"] in FINAL_STATES else "resumed"


def _clear_old_parts(out: Store, shards: list[Shard]) -> None:
    """Remove what earlier runs wrote for shards about to be (re)processed: parts of
    a crashed run, or of a shard whose content changed. This is what keeps a rerun
    free of duplicates."""
    keys = {path_key(shard.path) for shard in shards}
    removed = 0
    # One listing per folder, not one per shard: on an object store a listing is a request.
    for folder, pattern in [*((o, "part-*.parquet") for o in OUTCOMES),
                            ("quarantine", "shard-*.json")]:
        for path in out.files(folder, pattern):
            if _name_key(path) in keys:
                out.delete(path)
                removed += 1
    if removed:
        log.info("removed %d output parts left by earlier runs of these shards", removed)


def _name_key(path: str) -> str:
    """The path key in a part's or note's name: part-<key>-<fp>-..., shard-<key>-<fp>.json."""
    return path.rsplit("/", 1)[-1].split("-", 2)[1]


def _settle_unreadable(run_id, out: Store, todo, ledger, tallies) -> list[Shard]:
    """Quarantine shards that cannot be read at all and finish empty ones; return
    the shards for the DAG."""
    readable = []
    for shard in todo:
        tally = tallies[shard.key] = Tally(shard)
        if shard.error:
            rows = shard.num_rows or 0
            tally.rows = tally.quarantined = rows
            tally.errors[shard.error[:120]] += 1
            note = out.path("quarantine", f"shard-{shard.key}.json")
            out.write_text(note, json.dumps({"path": shard.path, "rows": shard.num_rows,
                                        "error": shard.error, "run_id": run_id}, indent=1))
            log.warning("quarantined shard %s: %s", shard.path, shard.error)
            ledger.finish_shard(run_id, shard.path, shard.size, shard.fingerprint,
                                "quarantined", tally.counts(), shard.error)
        elif shard.num_rows == 0:
            log.warning("shard %s is empty (0 rows); nothing to do", shard.path)
            ledger.finish_shard(run_id, shard.path, shard.size, shard.fingerprint, "done",
                                tally.counts())
        else:
            ledger.claim(run_id, shard.path, shard.size, shard.fingerprint)
            readable.append(shard)
    return readable


def _dedup(run_id, store: Store, config: Config, shards: list[Shard], ledger: Ledger):
    """Clusters of duplicates before the stream, when the config has a dedup stage."""
    from thresher.pipeline.steps.dedup import find_stage, run_dedup

    if find_stage(config) is None:
        return config, {}
    done = ledger.done_shards()
    numbers = ledger.shard_numbers([(s.path, s.fingerprint) for s in shards] + done)
    return run_dedup(config, shards, store, numbers, [p for p, _ in done], run_id)


def _repairs(run_id, store: Store, dedup: dict, ledger: Ledger, tallies) -> list[Shard]:
    """Earlier shards whose dedup decisions this run changed (a promoted keeper, a URL
    replaced by a newer crawl's): claimed at once, so that a crash leaves them to be
    redone, and streamed again with the rest."""
    paths = dedup.get("repair") or []
    if not paths:
        return []
    shards = inspect_shards(paths)
    for shard in shards:
        known = ledger.get(shard.path)
        why = shard.error or (known["fingerprint"] != shard.fingerprint
                              and "its content changed since; give it as an input")
        if why:
            raise RunError(f"dedup changed decisions of {shard.path}, done by an earlier run, "
                           f"but it cannot be written again: {why}")
    log.info("dedup: writing %d earlier shards again with changed decisions", len(shards))
    _clear_old_parts(store, shards)
    for shard in shards:
        ledger.claim(run_id, shard.path, shard.size, shard.fingerprint)
        tallies[shard.key] = Tally(shard)
    return shards


def _record_index(store: Store, config: Config, dedup: dict, tallies, ledger: Ledger) -> dict:
    """The dedup index gains the shards this run finished (done in the ledger: their
    rows add up on disk)."""
    from thresher.pipeline.steps.dedup import index_size, record_index
    from thresher.stages.dedup import shard_folder

    finished = {shard_folder(t.shard.path) for t in tallies.values()
                if (ledger.get(t.shard.path) or {"state": None})["state"] == "done"}
    record_index(store, config, dedup, finished)
    return index_size(store)


def _pool_text(seg) -> str:
    if seg.pool is None:
        return f"{seg.concurrency} workers x {seg.num_cpus:g} CPU"
    low, high, initial = seg.pool
    return (f"{initial} workers x {seg.num_cpus:.3g} CPU, may grow to "
            f"{'the cluster' if high is None else high}")


def _stream(run_id, out, config, shards, ledger, tallies, progress, operators) -> None:
    from thresher.pipeline.engine import dag

    dataset, segments = dag.build(shards, config, out.location, progress)
    operators.extend(seg.describe() for seg in segments)
    log.info("operators: %s", "; ".join(
        f"{'+'.join(seg.names)} ({_pool_text(seg)})" for seg in segments))
    done = rows = 0
    started = last_summary = time.monotonic()
    for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
        for row in batch.to_pylist():
            tally = tallies[row["shard"]]
            tally.add(row)
            rows += row["rows"]
            if tally.rows > tally.shard.num_rows:
                raise InvariantError(f"shard {tally.shard.path}: {tally.rows} rows accounted "
                                     f"but it holds {tally.shard.num_rows}")
            if tally.complete:
                ledger.finish_shard(run_id, tally.shard.path, tally.shard.size,
                                    tally.shard.fingerprint, "done", tally.counts())
                done += 1
                log.info("shard %d/%d done: %s (%d curated, %d rejected, %d quarantined)",
                         done, len(shards), tally.shard.path.rsplit("/", 1)[-1], tally.curated,
                         tally.rejected, tally.quarantined)
        now = time.monotonic()
        if now - last_summary >= SUMMARY_EVERY_S:
            last_summary = now
            log.info("progress: %d/%d shards, %s rows in %.0f s (%s rows/s)", done, len(shards),
                     f"{rows:,}", now - started, f"{rows / (now - started):,.0f}")


def _verify_on_disk(run_id, out: Store, tallies: dict[str, Tally], ledger: Ledger) -> list[str]:
    """Count the rows of every part this run wrote again, from the parts' footers, and
    compare with the tallies, shard by shard. Only this run's parts are read: a run
    over a new crawl costs the same however large the output has grown."""
    violations = []
    for tally in tallies.values():
        shard = tally.shard
        if shard.error or shard.num_rows == 0:
            continue
        disk = Counter()
        for name in tally.files:
            outcome, _, part = name.partition("/")
            try:
                if outcome == "quarantine":
                    rows = out.read_table(out.path(outcome, part), columns=["rows"]).column("rows")
                    disk[outcome] += sum(rows.to_pylist())
                else:
                    disk[outcome] += out.num_rows(out.path(outcome, part))
            except (OSError, pa.ArrowException) as err:
                disk["missing"] += 1
                log.error("part %s of shard %s cannot be read back: %s", name, shard.path, err)
        found = (disk["curated"], disk["rejected"], disk["quarantine"])
        expected = (tally.curated, tally.rejected, tally.quarantined)
        if (not tally.complete or disk["missing"] or found != expected
                or sum(found) != shard.num_rows):
            violations.append(f"{shard.path}: {shard.num_rows} rows in, tallied "
                              f"{tally.rows}, on disk curated/rejected/quarantined={found}"
                              + (f", {disk['missing']} parts unreadable" if disk["missing"] else ""))
            ledger.claim(run_id, shard.path, shard.size, shard.fingerprint)  # redo next run
    return violations


def _mix(out: Store, config: Config) -> dict:
    """Aioli and the training shards over everything curated so far (this run's shards
    and earlier ones), after the invariant holds."""
    from thresher.pipeline.steps.mixture import run_mixture

    log.info("mixture: Aioli over groups of `%s`, then training shards",
             config.mixture.group_by)
    try:
        summary = run_mixture(out, config.mixture)
    except ValueError as err:  # too few groups or texts: the curation itself stands
        log.warning("mixture step skipped: %s", err)
        return {"skipped": str(err)}
    log.info("mixture: p=%s over %s; mean test loss %s; %d training shards in %s",
             [round(x, 3) for x in summary["p"]], summary["groups"],
             {k: round(v, 4) for k, v in summary["test_loss_mean"].items()},
             summary["training"]["shards"], out.uri("training"))
    return summary


def _totals(tallies: dict[str, Tally]) -> dict:
    totals = Counter()
    for tally in tallies.values():
        totals.update(tally.counts())
    return {k: totals[k] for k in ("rows_in", "curated", "rejected", "quarantined")}


@contextmanager
def phase(phases: dict, name: str):
    """Time a block into phases[name] (seconds), for the manifest."""
    start = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = round(time.perf_counter() - start, 3)


@contextmanager
def exclusive(out: Path):
    """One run (or index rebuild) per output directory at a time."""
    with open(out / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputBusy(f"another thresher run is writing to {out}; wait for it or use "
                             "another --output") from None
        yield
