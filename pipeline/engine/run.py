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


SUMMARY_EVERY_S = 30  # a progress line between shard reports, for long shards


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
    made: dict = field(default_factory=dict)  # stage -> Counter of its settle() counts
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
        for stage, counts in json.loads(row.get("made") or "{}").items():
            self.made.setdefault(stage, Counter()).update(counts)

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


@dataclass
class RunState:
    """One run, as the phases see it: what is to be done, what was found so far, and
    where the seconds went. The driver holds only this (tallies: a few numbers per
    shard)."""

    run_id: str
    store: Store
    state_dir: Path
    config: Config
    ledger: Ledger
    inputs: list
    plan: dict = field(default_factory=dict)
    shards: list[Shard] = field(default_factory=list)  # to stream
    tallies: dict[str, Tally] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)  # seconds, for the manifest
    sections: dict[str, dict] = field(default_factory=dict)  # each step's manifest entry
    operators: list[dict] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    outcome: str = "nothing-to-do"
    started: float = field(default_factory=time.time)

    def rewrite(self, paths: list[str], why: str) -> None:
        """Earlier shards that a step's new decisions change (a promoted keeper, a URL
        replaced by a newer crawl's): claimed at once, so that a crash leaves them to
        be redone, and streamed again with the rest."""
        if not paths:
            return
        shards = inspect_shards(paths)
        for shard in shards:
            known = self.ledger.get(shard.path)
            problem = shard.error or (known["fingerprint"] != shard.fingerprint
                                      and "its content changed since; give it as an input")
            if problem:
                raise RunError(f"{why} changed decisions of {shard.path}, done by an earlier "
                               f"run, but it cannot be written again: {problem}")
        log.info("%s: writing %d earlier shards again with changed decisions", why, len(shards))
        _clear_old_parts(self.store, shards)
        for shard in shards:
            self.ledger.claim(self.run_id, shard.path, shard.size, shard.fingerprint)
            self.tallies[shard.key] = Tally(shard)
        self.shards += shards

    def finished_paths(self) -> list[str]:
        """This run's shards that ended done in the ledger (their rows add up on disk)."""
        return [t.shard.path for t in self.tallies.values()
                if (self.ledger.get(t.shard.path) or {"state": None})["state"] == "done"]


class Step:
    """A step before the stream that feeds values into stages (a stage's decisions
    made across the whole input, calibrated cut-offs). pipeline/steps lists them in order (before_stream());
    the engine calls each whose stage is in the config and knows none by name."""

    name: str  # its phase and its entry in the manifest

    def check(self, config: Config) -> None:
        """At the config check: refuse a config the step cannot run (ConfigError)."""

    def wanted(self, config: Config) -> bool:
        return True

    def before(self, run: RunState) -> dict:
        """Before the stream: may give stages new values (run.config) and ask for
        earlier shards to be written again (run.rewrite); returns its manifest entry."""
        return {}

    def after(self, run: RunState) -> dict:
        """After the recount: what to add to its manifest entry."""
        return {}


def _run(inputs, store: Store, state_dir: Path, config: Config, address, num_cpus,
         progress) -> RunResult:
    run = RunState(run_id=time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-"
                   + secrets.token_hex(2), store=store, state_dir=state_dir, config=config,
                   ledger=Ledger(state_dir), inputs=inputs)
    with phase(run.phases, "plan"):
        shards = inspect_shards(expand_inputs(inputs))
        todo, run.plan = _plan(shards, run.ledger)
        run.ledger.start_run(run.run_id, config.to_json())
    log.info("run %s: %d shards in input: %s", run.run_id, len(shards),
             ", ".join(f"{v} {k}" for k, v in run.plan.items() if v))
    mixture, settings, steps = None, {}, []
    try:
        if todo:
            run.outcome = "failed"
            with phase(run.phases, "clear"):
                _clear_old_parts(store, todo)
                run.shards = _settle_unreadable(run, todo)
            if run.shards:
                with phase(run.phases, "ray_start"):
                    from thresher.pipeline.engine import dag  # imports Ray: keep `status` fast
                    from thresher.pipeline.steps import before_stream

                    dag.connect(address, num_cpus)
                steps = [step for step in before_stream() if step.wanted(run.config)]
                for step in steps:
                    with phase(run.phases, step.name):
                        run.sections[step.name] = step.before(run)
                settings = {spec.name: spec.build().describe() for spec in run.config.stages}
                with phase(run.phases, "stream"):
                    _stream(run, progress)
            with phase(run.phases, "recount"):
                run.violations = _verify_on_disk(run)
            for step in steps:
                run.sections[step.name] |= step.after(run)
            if run.config.mixture and not run.violations:
                with phase(run.phases, "mixture"):
                    mixture = _mix(store, run.config)
            run.outcome = "failed" if run.violations else "finished"
    except KeyboardInterrupt:
        run.outcome = "interrupted"
        raise
    finally:
        totals = _totals(run.tallies)
        manifest_path, report_path = manifest_mod.write(
            store, state_dir, run.run_id, run.outcome, run.started, run.config, inputs,
            run.plan, run.tallies, run.violations,
            {"calibration": {}, **run.sections, "stage_settings": settings,
             "mixture": mixture, "operators": run.operators, "phases": run.phases})
        run.ledger.finish_run(run.run_id, run.outcome, totals)
        run.ledger.close()
    result = RunResult(run.run_id, run.outcome, store.location, totals, manifest_path,
                       report_path, run.plan, run.violations)
    if run.violations:
        raise InvariantError(
            f"run {run.run_id}: rows do not add up for {len(run.violations)} shard(s): "
            + "; ".join(run.violations[:5]) + f". They stay pending; see {manifest_path}")
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


def _settle_unreadable(run: RunState, todo: list[Shard]) -> list[Shard]:
    """Quarantine shards that cannot be read at all and finish empty ones; return
    the shards for the DAG."""
    run_id, out, ledger, tallies = run.run_id, run.store, run.ledger, run.tallies
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


def _pool_text(seg) -> str:
    if seg.pool is None:
        return f"{seg.concurrency} workers x {seg.num_cpus:g} CPU"
    low, high, initial = seg.pool
    return (f"{initial} workers x {seg.num_cpus:.3g} CPU, may grow to "
            f"{'the cluster' if high is None else high}")


def _stream(run: RunState, progress: bool) -> None:
    from thresher.pipeline.engine import dag

    run_id, ledger, tallies, shards = run.run_id, run.ledger, run.tallies, run.shards
    dataset, segments = dag.build(shards, run.config, run.store.location, progress)
    run.operators.extend(seg.describe() for seg in segments)
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


def _verify_on_disk(run: RunState) -> list[str]:
    """Count the rows of every part this run wrote again, from the parts' footers, and
    compare with the tallies, shard by shard. Only this run's parts are read: a run
    over a new crawl costs the same however large the output has grown."""
    run_id, out, tallies, ledger = run.run_id, run.store, run.tallies, run.ledger
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
