"""The stage protocol (DESIGN.md section 3).

A stage turns an Arrow batch into the same rows with more columns. It never drops
rows and never imports the pipeline: the pipeline decides, stages only score.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar

import pyarrow as pa

from thresher.models.llm import EngineError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage asks of Ray.

    None means "let the engine decide": num_cpus None is one core per worker, shared
    out so that the workers fill the cluster; concurrency None is a pool that grows to
    the cluster's free CPUs; memory None is the stage's own estimate (bytes)."""

    num_cpus: float | None = None
    num_gpus: float = 0.0
    concurrency: int | None = None
    batch_size: int = 512
    memory: int | None = None

    @classmethod
    def from_dict(cls, values: dict) -> "Resources":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown resource keys {sorted(unknown)}; known: {sorted(known)}")
        values = {k: None if v == "auto" else v for k, v in values.items()}
        try:
            res = cls(**values)
            bad = ((res.num_cpus is not None and res.num_cpus < 0) or res.num_gpus < 0
                   or (res.concurrency is not None and res.concurrency < 1)
                   or res.batch_size < 1 or (res.memory is not None and res.memory < 1))
        except TypeError:
            bad = True
        if bad:
            raise ValueError(f"resources out of range: {values} (num_cpus >= 0, num_gpus >= 0, "
                             "concurrency >= 1 or auto, batch_size >= 1, memory in bytes)")
        return res


MAX_BATCH_ATTEMPTS = 3


class BatchFailure(RuntimeError):
    """The batch failed as a whole (an engine crashed or timed out on it again and
    again), not one of its documents: the pipeline quarantines every row of the
    batch with this message instead of splitting it to find a culprit."""


# name -> class of every stage defined in the thresher.stages package: a module there
# registers its stage by defining it (stages/__init__.py imports them all). Stages of
# other packages are named in a config by their `module:Class` path.
REGISTRY: dict[str, type["Stage"]] = {}


@dataclass
class Chart:
    """A bar chart for the run's report, as data (the report draws it): `series`
    maps a name to one value per label; several series stack (`curated` and
    `rejected` get their usual colours). `why_not` instead of values says why there is
    nothing to draw."""

    title: str
    labels: list[str] = field(default_factory=list)
    series: dict[str, list[float]] = field(default_factory=dict)
    ylabel: str = ""
    xlabel: str = ""
    log_y: bool = False
    why_not: str | None = None


def filesystem_at(root: str):
    """(pyarrow filesystem, path) of a folder the pipeline gave a stage: a URI
    (s3://, gs://, ...) or a local path (a step's files that workers read)."""
    import pyarrow.fs as pafs

    if "://" in root:
        return pafs.FileSystem.from_uri(root)
    return pafs.LocalFileSystem(), root


def present(table: pa.Table, column: str) -> list:
    """The column's non-null values; none when the table lacks the column (a chart's
    sample of a stage that did not run)."""
    if column not in table.column_names:
        return []
    return table.column(column).drop_null().to_pylist()


class Stage:
    """Base class: subclasses set `name` and `columns`, load models in `setup`.

    Everything the engine reads is declared here with its default; a stage overrides
    only what it needs (docs/stages.md, "Writing a stage")."""

    name: ClassVar[str]
    columns: ClassVar[dict[str, pa.DataType]]  # what __call__ adds, by type
    # Columns of other stages (or of the input) that __call__ reads, besides `text` and
    # `id`: the config check refuses a pipeline that makes one after this stage.
    reads: ClassVar[tuple[str, ...]] = ()
    # True: the stage sees only rows that still pass the config's filters on the
    # columns earlier stages added (for costly stages whose work on a dropped row
    # would be thrown away, such as WRAP); the others get the stage's columns as nulls.
    # A config may override it per stage (`kept_only: true|false`).
    kept_only: bool = False
    # True: the stage rewrites `text` (a text transform: PII redaction). The stages after
    # it see the new text, curated rows are written with it, a row rejected later keeps
    # the text it had when it was decided, and `source_shard`/`source_row` still name
    # the original. Its columns say what changed. No other stage may touch `text`.
    rewrites_text: ClassVar[bool] = False
    # True: a row that fails a filter on this stage's own columns is decided at once
    # (its drop reason set before the later stages), so that no later stage spends
    # time on it: dedup, whose dropped copies need no score of their own.
    gate: bool = False
    # False for stages that hold an LLM: they keep an operator of their own, so that a
    # pool of cheap CPU workers does not load the LLM into every worker.
    fusable: bool = True
    default_resources: ClassVar[Resources] = Resources()
    # Parameters whose values are files or folders made on the driver (a trained model)
    # that workers load: the engine ships them to every worker through Ray's object
    # store, so a worker on a node that cannot see the driver's folders has them too.
    worker_files: ClassVar[tuple[str, ...]] = ()

    # A column this stage's rows are grouped by when the run mixes its curated output
    # (Aioli's groups, `mixture.group_by`); the first stage in the config that names
    # one gives the default.
    mixture_group: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__ and cls.__module__.startswith("thresher.stages."):
            REGISTRY[cls.name] = cls

    def __init__(self, resources: Resources | None = None):
        self.resources = resources or self.default_resources
        self._ready = False

    # Calibration (see pipeline/steps/calibrate.py): a stage that needs values estimated
    # from the data sets needs_calibration, names the columns it needs from a sample
    # in calibration_columns, and turns that sample into parameters in calibrate().
    # It may keep files (a trained model) in workdir and name them in its values.
    needs_calibration: bool = False
    calibration_columns: tuple[str, ...] = ()
    calibration_rows: int = 5000  # the sample's size it asks for (the largest ask wins)

    def calibrate(self, sample: pa.Table, workdir: Path) -> dict:
        raise NotImplementedError

    def calibration_usable(self, values: dict) -> bool:
        """Whether values saved by an earlier run still hold (their files exist)."""
        return True

    def check(self) -> None:
        """Fail early, on the driver, when a model file cannot be loaded; the config
        check calls it so a corrupt or wrong file is an error at set-up, not mid-run.
        The default loads what setup() loads (once: see ready())."""
        self.ready()

    def ready(self) -> "Stage":
        """setup() once for this instance: the config check's loaded models serve the
        driver's calibration too, instead of being loaded again."""
        if not getattr(self, "_ready", False):
            self.setup()
            self._ready = True
        return self

    def model_files(self) -> list[Path]:
        """The files this stage's scores depend on: saved calibration is reused only
        while they are unchanged."""
        return []

    def memory_estimate(self) -> int:
        """Bytes a worker holds for this stage's models: their files' sizes, with room
        for what loading adds. Stages whose models grow when loaded say so."""
        return int(sum(f.stat().st_size for f in self.model_files() if f.exists()) * 1.25)

    def describe(self) -> dict:
        """What the run manifest records about this stage: models, thresholds, sources."""
        return {}

    def setup(self) -> None:
        """Load models; runs once per worker, never on the driver."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        raise NotImplementedError

    def empty_columns(self, num_rows: int) -> dict[str, pa.Array]:
        """Null columns of the right types, for rows this stage did not score."""
        return {col: pa.nulls(num_rows, typ) for col, typ in self.columns.items()}

    # --- hooks the engine calls around the stream; the defaults do nothing ---------

    def settle(self, rows: pa.Table, curated: pa.Array) -> tuple[pa.Table, pa.Table | None, dict]:
        """Once a shard's rows are decided (`curated`: a mask over `rows`), before they
        are written: (the rows to write, rows this stage makes from them, or None, and
        counts for the run's tally). A stage that makes rows (WRAP's paraphrases)
        overrides it; its rows go to curated/ beside the real ones, outside the row
        invariant, and its counts are summed over the run for made_summary()."""
        return rows, None, {}

    def made_summary(self, counts: dict) -> dict:
        """The manifest's `made_rows` entry for this stage, from the summed counts."""
        return dict(counts)

    def charts(self, curated: pa.Table, rejected: pa.Table, manifest: dict) -> list[Chart]:
        """The report's charts for this stage, from a sample of the scalar columns of
        the curated and rejected rows (no text) and the run's manifest. Histograms of
        float score columns are drawn for every stage without asking."""
        return []


class _FileCounts:
    """Outside a run's workers (a stage called directly, in tests or benches): a file
    per batch under this machine's temp folder."""

    def __init__(self, stage: str):
        self.folder = Path(tempfile.gettempdir()) / f"thresher-attempts-{os.getuid()}" / stage
        self.folder.mkdir(parents=True, exist_ok=True)

    def bump(self, key: str) -> int:
        marker = self.folder / key
        deaths = int(marker.read_text() or 0) if marker.exists() else 0
        marker.write_text(str(deaths + 1))
        return deaths

    def clear(self, key: str) -> None:
        (self.folder / key).unlink(missing_ok=True)


def batch_key(ids: list[str], stage: str) -> str:
    return f"{stage}-" + hashlib.sha1("\n".join(ids).encode()).hexdigest()[:20]


# Where attempt_guard counts deaths: the engine installs the run's shared counter in
# each of its workers (pipeline/engine/ray_attempts.py); stages know no Ray.
_counts_for = _FileCounts


class Runner:
    """Where a stage runs work that needs resources of its own, off the batch path
    (DataMan's LLM teacher during calibration). This default runs it here, in this
    process; the engine installs its Ray runner (pipeline/engine/ray_llm.py) when it
    connects to a cluster, so that stages hold no Ray calls."""

    cluster = False  # True: a Ray cluster runs the work, with the resources asked

    def cpus(self) -> float:
        return float(os.cpu_count() or 1)

    @contextmanager
    def actor(self, cls, args: tuple, num_cpus: float = 1, num_gpus: float = 0):
        """An instance of cls(*args) that holds a model while the block runs;
        `.call(method, *args)` calls one of its methods."""
        yield _Here(cls(*args))

    def generate_rows(self, spec: dict, conversations: list, sampling, model_name=None,
                      tokenizer=None) -> list[dict]:
        """One result per conversation through Ray Data's LLM processor."""
        raise RuntimeError(f"engine {spec.get('engine')!r} runs through Ray Data's LLM "
                           "processor: run thresher on a Ray cluster")


class _Here:
    def __init__(self, obj):
        self.obj = obj

    def call(self, method: str, *args):
        return getattr(self.obj, method)(*args)


_runner = Runner()


def use_runner(runner: Runner) -> None:
    global _runner
    _runner = runner


def runner() -> Runner:
    return _runner


def use_attempt_counts(factory) -> None:
    """factory(stage name) -> an object with bump(key) -> deaths so far, and clear(key)."""
    global _counts_for
    _counts_for = factory


@contextmanager
def attempt_guard(ids: list[str], stage: str):
    """Around an engine call that may kill its worker (watchdog, CUDA crash): Ray
    retries such a batch without end, so the tries of this exact batch are counted
    (by the counter the engine installed: the run's, which every node reaches), and after
    MAX_BATCH_ATTEMPTS deaths the batch is failed as a whole (BatchFailure). The count
    is dropped once the call returns or raises: only a dead process leaves it behind."""
    key = batch_key(ids, stage)
    counts = _counts_for(stage)
    deaths = counts.bump(key)
    if deaths >= MAX_BATCH_ATTEMPTS:
        counts.clear(key)
        raise BatchFailure(f"the {stage} engine died on this batch {deaths} times (crash or "
                           "timeout); giving up on it")
    try:
        yield
    finally:
        counts.clear(key)


def call_engine(call, ids: list[str], stage: str):
    """An engine call for a batch: retried once when the engine fails (EngineError),
    then failed as a whole (BatchFailure); under attempt_guard, so that a batch whose
    call keeps killing the worker also ends."""
    with attempt_guard(ids, stage):
        try:
            return call()
        except EngineError as first:
            log.warning("%s: the engine failed once on a batch, retrying: %s", stage, first)
            try:
                return call()
            except EngineError as err:
                raise BatchFailure(f"the {stage} engine failed twice on this batch: "
                                   f"{err}") from err
