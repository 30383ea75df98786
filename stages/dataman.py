"""DataMan rating (Peng et al. 2025; DESIGN.md 4, `dataman`): 14 quality ratings and
one of 15 domains per document.

At web scale an LLM (the teacher) rates a sample and a fast student rates the rest.
In the default `mode: student`, calibration (once per run config, saved for later
runs) draws `teacher_sample` documents from the calibration sample, rates them with
the teacher through an LLM engine, and trains the fastText student on the answers
(or loads the `student` folder a config names). The full pass then rates every
document with the student, except the sampled ones, which keep the teacher's
rating (`dataman_source`). `mode: teacher` rates every document with the LLM, for
GPU runs with a real rater such as DataMan-1.5B-EN.

Selection follows the paper. "Overall score l=5" is a plain filter
(`dataman_overall_score >= 5`). Top-k by a rating, or by the sum of the 14, with
per-domain token quotas in proportion to each domain's share, is `select:` here:
the paper sorts the whole corpus; to stream, the cut-off of each domain is set on
the calibration sample so that `keep_fraction` of that domain's tokens lies above
it (ties at the cut-off are split by a hash of the id), and `dataman_selected`
says what each document got. The manifest reports the realized fractions.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from thresher.models.dataman import (DOMAINS, FORMATS, MAX_TOKENS, RATINGS, STATUS_FAILED,
                                     STATUS_OK, Rating, rate)
from thresher.models.hashing import unit_hash
from thresher.models.llm import ENGINES
from thresher.stages.base import Resources, Stage, call_engine
from thresher.stages.base import runner as base_runner

log = logging.getLogger(__name__)

# The embedded default: SmolLM2-135M-Instruct on CPU, documents cut to 512 of its
# tokens (the paper: 1894) so that rating a sample stays short on a laptop.
DEFAULT_TEACHER = {"engine": "transformers", "model": "smollm2-135m-instruct",
                   "format": "instruct", "batch_size": 8, "num_cpus": 2, "max_doc_tokens": 512}
MODES = ("student", "teacher")
METRIC_SUM = "sum"
TEACHER_CHUNK = 16  # documents per call to the teacher during calibration


class DataManRating(Stage):
    name = "dataman"
    mixture_group = "dataman_domain"  # the mixing step's groups, unless the config says
    columns = {**{f"dataman_{r}": pa.int8() for r in RATINGS},
               "dataman_domain": pa.string(), "dataman_domain_name": pa.string(),
               "dataman_source": pa.string(), "dataman_status": pa.string(),
               "dataman_raw": pa.string(), "dataman_metric": pa.float32(),
               "dataman_selected": pa.bool_()}
    default_resources = Resources(batch_size=256)
    calibration_columns = ("id", "text") + tuple(columns)
    worker_files = ("student", "annotations")  # made at calibration, in the driver's state

    def __init__(self, mode: str = "student", teacher: dict | None = None,
                 teacher_sample: int = 64, student: str = "auto", select: dict | None = None,
                 calibration_rows: int = 2000, annotations: str | None = None,
                 cutoffs: dict | None = None, resources: Resources | None = None):
        super().__init__(resources)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        # The teacher on every row is an LLM: its own operator, and only rows still kept
        # (a config may say otherwise). The student is as cheap as fastText.
        self.fusable = mode == "student"
        self.kept_only = mode == "teacher"
        self.teacher = _teacher_spec(teacher)
        self.teacher_sample = int(teacher_sample)
        self.student_dir = None if student == "auto" else Path(student).expanduser()
        if self.student_dir is not None and not self.student_dir.is_dir():
            raise ValueError(f"student {student!r} is not a folder (train one with `thresher "
                             "models train-dataman-student`, or write student: auto)")
        if mode == "student" and self.student_dir is None and self.teacher_sample < 10:
            raise ValueError("student: auto trains the student on the teacher's ratings; "
                             "teacher_sample must be at least 10")
        self.select = _select_spec(select)
        # The teacher rates documents of the calibration sample: the sample is drawn
        # as large as the teacher's share asks (the engine takes the largest ask).
        self.calibration_rows = max(int(calibration_rows), self.teacher_sample
                                    if mode == "student" else 0)
        if mode == "teacher" and not self.resources.num_gpus and \
                self.teacher.get("num_gpus"):
            # The teacher runs in this stage's own workers: they hold its GPU.
            self.resources = replace(self.resources, num_gpus=float(self.teacher["num_gpus"]),
                                     num_cpus=self.teacher.get("num_cpus",
                                                               self.resources.num_cpus))
        self.annotations_path = Path(annotations) if annotations else None
        self.cutoffs = cutoffs
        self._engine = None
        self._student = None
        self._teacher_rows: dict[str, dict] = {}

    # --- calibration --------------------------------------------------------------

    @property
    def needs_calibration(self) -> bool:
        student_missing = self.mode == "student" and (
            self.student_dir is None or (self.teacher_sample > 0 and not self.annotations_path))
        return student_missing or (self.select is not None and self.cutoffs is None)

    def calibration_usable(self, values: dict) -> bool:
        return all(Path(values[k]).exists() for k in ("student", "annotations") if values.get(k))

    def calibrate(self, sample: pa.Table, workdir: Path) -> dict:
        values: dict = {}
        workdir.mkdir(parents=True, exist_ok=True)
        if self.mode == "student":
            annotations = None
            if self.teacher_sample > 0 and not self.annotations_path:
                annotations = self._annotate(sample, workdir / "annotations.parquet")
                values["annotations"] = str(workdir / "annotations.parquet")
            if self.student_dir is None:
                from thresher.models.dataman_student import train_student

                if annotations is None:  # ratings given (`annotations: FILE`)
                    annotations = pq.read_table(self.annotations_path)

                card = train_student(annotations, workdir / "student")
                values["student"] = str(workdir / "student")
                log.info("dataman student trained on %d teacher ratings; held-out agreement: %s",
                         card["train_rows"], (card["agreement"] or {}).get("overall"))
        if self.select is not None:
            values["cutoffs"] = self._estimate_cutoffs(sample, values.get("student"))
        return values

    def _annotate(self, sample: pa.Table, path: Path) -> pa.Table:
        """Teacher ratings of `teacher_sample` documents of the calibration sample (the
        ones whose id hashes lowest: a deterministic, shard-spread choice)."""
        ids, texts = sample.column("id").to_pylist(), sample.column("text").to_pylist()
        order = sorted(range(len(ids)), key=lambda i: hashlib.sha1(ids[i].encode()).digest())
        chosen = [i for i in order if texts[i]][: self.teacher_sample]
        if len(chosen) < self.teacher_sample:
            log.warning("dataman: teacher_sample is %d but the calibration sample has %d "
                        "documents with text: the teacher rates %d (the crawl is smaller)",
                        self.teacher_sample, len(chosen), len(chosen))
        rows = _run_teacher(self.teacher, [texts[i] for i in chosen])
        table = pa.Table.from_pylist(
            [{"id": ids[i], "text": texts[i], **row} for i, row in zip(chosen, rows)])
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
            pq.write_table(table, tmp.name)
        os.replace(tmp.name, path)
        statuses = [r["dataman_status"] for r in rows]
        counts = {status: statuses.count(status) for status in sorted(set(statuses))}
        log.info("dataman teacher rated %d sampled documents: %s", len(rows), counts)
        return table

    def _estimate_cutoffs(self, sample: pa.Table, student: str | None) -> dict:
        texts = sample.column("text").to_pylist()
        if self.mode == "student":
            from thresher.models.dataman_student import DataManStudent

            columns = DataManStudent(Path(student) if student else self.student_dir).predict(texts)
        else:
            columns = {c: sample.column(c).to_pylist() for c in self.columns}
        metric = _metric(columns, self.select["metric"])
        domains = np.array([d or "?" for d in columns["dataman_domain"]])
        weights = np.array([len(t.split()) for t in texts], float)
        ok = ~np.isnan(metric)
        fraction = self.select["keep_fraction"]
        cutoffs = {"all": token_cutoff(metric[ok], weights[ok], fraction)}
        if self.select["quotas"] == "domain":
            cutoffs["by_domain"] = {
                d: token_cutoff(metric[ok & (domains == d)], weights[ok & (domains == d)],
                                fraction) for d in sorted(set(domains[ok]))}
        return cutoffs

    # --- the full pass -------------------------------------------------------------

    def model_files(self) -> list[Path]:
        files = [p for p in [self.student_dir, self.annotations_path] if p]
        model = Path(str(self.teacher.get("model", "")))
        return files + ([model] if model.exists() else [])

    def memory_estimate(self) -> int:
        if self.mode == "teacher":
            from thresher.models.llm import engine_memory_estimate

            return engine_memory_estimate(self.teacher)
        if self.student_dir is None:  # trained at calibration: 15 small fastText models
            return 64 << 20
        return int(sum(f.stat().st_size for f in self.student_dir.glob("*.bin")) * 1.25)

    def describe(self) -> dict:
        info = {"mode": self.mode, "teacher": self.teacher, "teacher_sample": self.teacher_sample,
                "student": str(self.student_dir) if self.student_dir else "auto",
                "select": self.select, "cutoffs": self.cutoffs}
        card = self.student_dir / "card.json" if self.student_dir else None
        if card and card.is_file():
            import json

            info["student_card"] = json.loads(card.read_text())
        return info

    def check(self) -> None:
        """Config-time check: the teacher's model resolves, the student loads."""
        if self.teacher.get("engine") != "openai":
            from thresher.models.registry import resolve_model

            resolve_model(str(self.teacher.get("model")))
        if self.student_dir is not None:
            from thresher.models.dataman_student import DataManStudent

            DataManStudent(self.student_dir)

    def setup(self) -> None:
        if self.mode == "teacher":
            from thresher.models.llm import load_engine

            self._engine = load_engine(_engine_options(self.teacher))
            return
        if self.student_dir is None:
            return  # the calibration sample pass: no student yet, rows stay unrated
        from thresher.models.dataman_student import DataManStudent

        self._student = DataManStudent(self.student_dir)
        if self.annotations_path and self.annotations_path.is_file():
            table = pq.read_table(self.annotations_path)
            self._teacher_rows = {r["id"]: r for r in table.to_pylist()
                                  if r["dataman_status"] == STATUS_OK}

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.mode == "teacher":
            columns = self._rate_with_teacher(batch)
        elif self._student is None:
            return _append(batch, self.empty_columns(batch.num_rows))
        else:
            columns = self._rate_with_student(batch)
        columns["dataman_metric"] = (_metric(columns, self.select["metric"]) if self.select
                                     else np.full(batch.num_rows, np.nan))
        columns["dataman_selected"] = self._selected(batch, columns)
        return _append(batch, self._typed(columns, batch.num_rows))

    def _rate_with_student(self, batch: pa.Table) -> dict:
        ids = batch.column("id").to_pylist()
        columns = self._student.predict(batch.column("text").to_pylist())
        columns["dataman_source"] = ["student"] * batch.num_rows
        columns["dataman_status"] = [STATUS_OK] * batch.num_rows
        columns["dataman_raw"] = [None] * batch.num_rows
        for i, doc_id in enumerate(ids):
            rated = self._teacher_rows.get(doc_id)
            if rated:
                for r in RATINGS:
                    columns[f"dataman_{r}"][i] = rated[f"dataman_{r}"]
                columns["dataman_domain"][i] = rated["dataman_domain"]
                columns["dataman_source"][i] = "teacher"
        columns["dataman_domain_name"] = [DOMAINS.get(d) for d in columns["dataman_domain"]]
        return columns

    def _rate_with_teacher(self, batch: pa.Table) -> dict:
        texts = batch.column("text").to_pylist()
        ratings, _ = call_engine(lambda: _rate(self._engine, texts, self.teacher),
                                 batch.column("id").to_pylist(), self.name)
        rows = [r.as_row() for r in ratings]
        columns = {c: [row[c] for row in rows] for c in rows[0]}
        columns["dataman_source"] = ["teacher"] * batch.num_rows
        return columns

    def _selected(self, batch: pa.Table, columns: dict) -> list:
        if not self.select or not self.cutoffs:
            return [None] * batch.num_rows
        ids = batch.column("id").to_pylist()
        by_domain = self.cutoffs.get("by_domain", {})
        out = []
        for doc_id, value, domain in zip(ids, columns["dataman_metric"], columns["dataman_domain"]):
            if value is None or np.isnan(value):
                out.append(None)
                continue
            threshold, tie_share = by_domain.get(domain, self.cutoffs["all"])
            out.append(bool(value > threshold or (value == threshold
                                                  and unit_hash(doc_id) < tie_share)))
        return out

    def _typed(self, columns: dict, num_rows: int) -> dict[str, pa.Array]:
        typed = {}
        for name, typ in self.columns.items():
            values = columns.get(name, [None] * num_rows)
            if name == "dataman_metric":
                values = [None if v is None or np.isnan(v) else float(v) for v in values]
            typed[name] = pa.array(values, typ)
        return typed


# --- helpers ---------------------------------------------------------------------

def _teacher_spec(teacher: dict | None) -> dict:
    """The embedded default when no teacher is given. A given teacher keeps only what
    it says (plus the engine, transformers, and the format, instruct, when it says
    none): the default's cut at 512 tokens or its small model must not leak into a
    DataMan-1.5B teacher, which reads the paper's 1894 tokens."""
    if not teacher:
        return dict(DEFAULT_TEACHER)
    spec = {"engine": "transformers", "format": "instruct", **teacher}
    if spec["engine"] not in ENGINES:
        raise ValueError(f"teacher engine must be one of {ENGINES}, got {spec['engine']!r}")
    if spec.get("format") not in FORMATS:
        raise ValueError(f"teacher format must be one of {FORMATS} (dataman: the released "
                         f"DataMan models; instruct: any chat model), got {spec.get('format')!r}")
    if spec["engine"] == "openai" and not spec.get("url"):
        raise ValueError("teacher engine openai needs url: (e.g. http://127.0.0.1:8000)")
    if not spec.get("model") and spec["engine"] != "openai":
        raise ValueError("teacher needs model: (a local folder, a GGUF file or a registry "
                         "name such as smollm2-135m-instruct)")
    return spec


def _engine_options(teacher: dict) -> dict:
    """The engine's own options: the teacher spec less what the stage reads itself."""
    return {k: v for k, v in teacher.items()
            if k not in ("format", "max_new_tokens", "max_doc_tokens", "num_cpus", "num_gpus")}


def _select_spec(select: dict | None) -> dict | None:
    if not select:
        return None
    unknown = set(select) - {"metric", "keep_fraction", "quotas"}
    if unknown:
        raise ValueError(f"select: unknown keys {sorted(unknown)}; known: metric, "
                         "keep_fraction, quotas")
    spec = {"metric": METRIC_SUM, "quotas": "domain", **select}
    if spec["metric"] != METRIC_SUM and spec["metric"] not in RATINGS:
        raise ValueError(f"select.metric must be `sum` (of the 14 ratings) or one of "
                         f"{', '.join(RATINGS)}; got {spec['metric']!r}")
    fraction = spec.get("keep_fraction")
    if not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"select.keep_fraction must be in (0, 1], got {fraction!r}")
    if spec["quotas"] not in ("domain", "none"):
        raise ValueError(f"select.quotas must be domain or none, got {spec['quotas']!r}")
    return spec


def _metric(columns: dict, metric: str) -> np.ndarray:
    names = RATINGS if metric == METRIC_SUM else (metric,)
    values = np.array([[np.nan if v is None else v for v in columns[f"dataman_{n}"]]
                       for n in names], float)
    return values.sum(axis=0)


def token_cutoff(metric: np.ndarray, weights: np.ndarray, fraction: float) -> list[float]:
    """[threshold, tie_share]: keeping metric > threshold, and the tie_share of the
    rows at the threshold, keeps `fraction` of the weight (tokens), best first."""
    if len(metric) == 0:
        return [float("-inf"), 1.0]
    target = fraction * weights.sum()
    above = 0.0
    for value in np.unique(metric)[::-1]:
        at = weights[metric == value].sum()
        if above + at >= target:
            return [float(value), float((target - above) / at) if at else 1.0]
        above += at
    return [float(metric.min()), 1.0]


def _rate(engine, texts: list[str], teacher: dict):
    return rate(engine, texts, teacher["format"], teacher.get("max_new_tokens"),
                teacher.get("max_doc_tokens", MAX_TOKENS))


def _append(batch: pa.Table, columns: dict[str, pa.Array]) -> pa.Table:
    for name, array in columns.items():
        batch = batch.append_column(name, array)
    return batch


def _run_teacher(teacher: dict, texts: list[str]) -> list[dict]:
    """Rate texts with the teacher, where the engine's runner puts it (stages.base
    .Runner): on a Ray cluster, a vLLM or HTTP teacher goes through Ray Data's LLM
    processor, and the transformers teacher rates in chunks in an actor that holds the
    engine (with the teacher's CPUs/GPUs); without one, here. A document or chunk that
    fails is marked `failed`, and calibration goes on with the rest."""
    runner = base_runner()
    options = _engine_options(teacher)
    if runner.cluster and options.get("engine") in ("vllm", "openai"):
        return _run_teacher_processor(teacher, options, texts, runner)
    cpus = min(float(teacher.get("num_cpus", 1)), runner.cpus())
    threads = int(max(1, cpus)) if runner.cluster else None
    rows: list[dict] = []
    with runner.actor(_TeacherActor, (options, threads), num_cpus=cpus,
                      num_gpus=float(teacher.get("num_gpus", 0))) as rater:
        for start in range(0, len(texts), TEACHER_CHUNK):
            chunk = texts[start:start + TEACHER_CHUNK]
            try:
                rows += rater.call("rate", chunk, teacher)
            except Exception as err:  # engine error, or the actor died (watchdog, OOM)
                log.warning("dataman teacher failed on %d documents: %s", len(chunk), err)
                failed = Rating(STATUS_FAILED, raw=f"{type(err).__name__}: {err}"[:500])
                rows += [_teacher_row(failed) for _ in chunk]
            log.info("dataman teacher: %d/%d sampled documents rated", len(rows), len(texts))
    return rows


def _run_teacher_processor(teacher: dict, options: dict, texts: list[str],
                           runner) -> list[dict]:
    """The teacher's prompts, made here (the document cut in the rater's tokens, then
    fitted to the engine's input limit), answered by the processor, parsed here."""
    import time

    from thresher.models.dataman import parse_answer, requests_for, sampling_for
    from thresher.models.llm import end_of_turn_ids, fit_conversation

    tokenizer = _teacher_tokenizer(options)
    requests = requests_for(texts, tokenizer, teacher["format"],
                            teacher.get("max_doc_tokens", MAX_TOKENS))
    limit = options.get("max_input_tokens") or (
        int(options.get("max_model_len", 4096)) - 64 if options["engine"] == "vllm" else None)
    if tokenizer is not None and limit:
        requests = [fit_conversation(r, tokenizer, limit)[0] for r in requests]
    model_name = options.get("model")
    if options["engine"] == "openai" and not model_name:
        from thresher.models.llm.openai_engine import OpenAIEngine

        model_name = OpenAIEngine(options["url"]).model  # what the server serves
    started = time.perf_counter()
    sampling = sampling_for(teacher["format"], teacher.get("max_new_tokens"),
                            end_of_turn_ids(tokenizer))
    results = runner.generate_rows(options, requests, sampling, model_name, tokenizer)
    seconds = (time.perf_counter() - started) / max(1, len(texts))
    rows = [_teacher_row(Rating(STATUS_FAILED, raw=result["error"][:500]) if result["error"]
                         else parse_answer(result["text"]), result["prompt_tokens"],
                         result["completion_tokens"], seconds, result["truncated_output"])
            for result in results]
    failed = sum(bool(r["error"]) for r in results)
    log.info("dataman teacher (%s processor): %d documents rated, %d failed",
             options["engine"], len(rows) - failed, failed)
    return rows


def _teacher_row(rating: Rating, prompt_tokens: int = 0, completion_tokens: int = 0,
                 seconds: float = 0.0, truncated_output: bool = False) -> dict:
    """One row of the teacher's annotations: the rating and what the answer cost."""
    return {**rating.as_row(), "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens, "seconds": seconds,
            "truncated_output": truncated_output}


def _teacher_tokenizer(options: dict):
    """The rater's own tokenizer when it is on this disk (a vLLM model folder, or the
    `tokenizer` an HTTP teacher names), else None: documents are then cut by
    characters."""
    from thresher.models.registry import resolve_model

    path = options.get("tokenizer")
    if not path and options["engine"] == "vllm":
        path = str(resolve_model(options["model"]))
    if not path or not Path(path).is_dir():
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


class _TeacherActor:
    def __init__(self, options: dict, threads: int | None):
        from thresher.models.llm import load_engine

        if threads and options.get("engine", "transformers") == "transformers":
            options = {**options, "threads": threads}
        self.engine = load_engine(options)

    def rate(self, texts: list[str], teacher: dict) -> list[dict]:
        ratings, generations = _rate(self.engine, texts, teacher)
        return [_teacher_row(r, g.prompt_tokens, g.completion_tokens, g.seconds,
                             g.truncated_output) for r, g in zip(ratings, generations)]
