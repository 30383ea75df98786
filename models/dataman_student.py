"""The DataMan student: fastText classifiers trained on a teacher LLM's ratings, one
per rating and one for the domain, so that every document can be rated on a CPU
while the LLM rates only a sample (DESIGN.md 4, `dataman`).

    thresher models train-dataman-student --annotations FILE --out DIR

A folder holds <rating>.bin for the 14 ratings, domain.bin, and card.json with how
well the student agrees with the teacher on held-out rows.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from thresher.models.dataman import DOMAINS, RATINGS, STATUS_OK, clean
from thresher.models.hashing import unit_hash

TARGETS = RATINGS + ("domain",)
STUDENT_CHARS = 4000  # what the student reads of a document: enough, and bounded cost
# Small models on purpose: 15 of them are loaded in every worker.
FASTTEXT = dict(epoch=30, lr=0.3, wordNgrams=2, dim=32, bucket=50_000, minCount=1,
                loss="softmax", thread=1, seed=0, verbose=0)
MIN_ROWS = 10
TRAIN_ATTEMPTS = 5  # trainings (each with its own seed) before a non-finite model is an error

_SPACE = re.compile(r"\s+")


def student_text(text: str) -> str:
    """One line, lower case: what fastText reads."""
    return _SPACE.sub(" ", clean(text[: STUDENT_CHARS * 2]).lower()).strip()[:STUDENT_CHARS]


def _label_column(target: str) -> str:
    return "dataman_domain" if target == "domain" else f"dataman_{target}"


def _held_out(key: str, fraction: float) -> bool:
    # Salted: the teacher's sample itself is chosen by the plain hash of the id.
    return unit_hash(f"held-out:{key}") < fraction


def train_student(annotations: pa.Table, out: Path, holdout: float = 0.2) -> dict:
    """Train the 15 classifiers on rows the teacher rated `ok`; return the card."""
    rows = [r for r in annotations.to_pylist() if r.get("dataman_status") == STATUS_OK]
    if len(rows) < MIN_ROWS:
        raise ValueError(f"{len(rows)} teacher ratings parsed (of {annotations.num_rows}); the "
                         f"student needs at least {MIN_ROWS}: rate a larger sample, or look "
                         "at dataman_raw in the annotations to see what the teacher answered")
    keys = [str(r.get("id") or r["text"]) for r in rows]
    test = [r for r, k in zip(rows, keys) if _held_out(k, holdout)]
    train = [r for r, k in zip(rows, keys) if not _held_out(k, holdout)]
    if len(test) < 2 or len(train) < MIN_ROWS // 2:  # too few to split: train on all
        train, test = rows, []
    out.mkdir(parents=True, exist_ok=True)
    texts = [student_text(r["text"]) for r in train]
    with tempfile.TemporaryDirectory() as tmp:
        jobs = []
        for target in TARGETS:
            path = Path(tmp) / f"{target}.txt"
            column = _label_column(target)
            path.write_text("".join(f"__label__{r[column]} {t}\n" for r, t in zip(train, texts)))
            jobs.append((str(path), str(out / f"{target}.bin")))
        _train_in_fresh_process(jobs)
    card = {"teacher_rows": annotations.num_rows, "ok_rows": len(rows), "train_rows": len(train),
            "held_out_rows": len(test), "fasttext": FASTTEXT,
            "agreement": evaluate(DataManStudent(out), test, train) if test else None}
    (out / "card.json").write_text(json.dumps(card, indent=1))
    return card


def _train_in_fresh_process(jobs: list[tuple[str, str]]) -> None:
    """Train each model in a process of its own, and retry one whose weights come out
    non-finite in another new process with another seed. fastText's supervised
    training can end with NaN rows when its process's heap has been used before (a
    Ray worker, a test run, or the previous model's training: seen in 2 of 15 models,
    1 run in 6, when the 15 trained in one process, and in CI with all 5 retries in
    that same process); a fresh process gets zeroed pages from the OS. Measured: 11
    NaN in 20 trainings after freeing 13 MB of 0xff bytes, 0 in 40 without."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                             max_tasks_per_child=1) as pool:
        _train_until_finite(jobs, lambda *job: pool.submit(_train_one, *job).result())


def _train_until_finite(jobs: list[tuple[str, str]], train) -> None:
    """train(source, target, seed) -> '' (saved) or what is non-finite; each model gets
    up to TRAIN_ATTEMPTS seeds, then a clear error."""
    pending, problems = list(jobs), {}
    for attempt in range(TRAIN_ATTEMPTS):
        failed = []
        for source, target in pending:
            problem = train(source, target, FASTTEXT["seed"] + attempt)
            if problem:
                problems[source] = problem
                failed.append((source, target))
        pending = failed
        if not pending:
            return
    source = pending[0][0]
    raise ValueError(f"fastText training on {Path(source).name} ended with non-finite "
                     f"weights {TRAIN_ATTEMPTS} times ({problems[source]})")


def _train_one(source: str, target: str, seed: int) -> str:
    """One training; the model is saved when its weights are all finite. Returns ''
    then, else what is not finite."""
    import fasttext

    try:
        model = fasttext.train_supervised(input=source, **{**FASTTEXT, "seed": seed})
    except RuntimeError as err:
        if "NaN" not in str(err):
            raise ValueError(f"fastText failed on {Path(source).name}: {err}") from err
        return str(err)
    problem = nonfinite(model)
    if not problem:
        model.save_model(target)
    return problem


def nonfinite(model) -> str:
    """'' when every weight of a fastText model is finite, else where they are not."""
    found = []
    for name, matrix in (("input", model.get_input_matrix()),
                         ("output", model.get_output_matrix())):
        bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
        if len(bad):
            found.append(f"{len(bad)} {name} rows, e.g. row {int(bad[0])}")
    return "; ".join(found)


def evaluate(student: "DataManStudent", test: list[dict], train: list[dict]) -> dict:
    """Per-rating accuracy (exact and within one point) against the teacher, the
    majority-class baseline for comparison, and the overall-score agreement."""
    predicted = student.predict([r["text"] for r in test])
    report = {}
    for target in TARGETS:
        column = _label_column(target)
        truth = [r[column] for r in test]
        guess = predicted[column]
        values, counts = np.unique([r[column] for r in train], return_counts=True)
        majority = values[np.argmax(counts)]
        entry = {"accuracy": _mean(g == t for g, t in zip(guess, truth)),
                 "majority_baseline": _mean(str(t) == str(majority) for t in truth)}
        if target != "domain":
            entry["within_one"] = _mean(abs(g - t) <= 1 for g, t in zip(guess, truth))
        report[target] = entry
    teacher_sum = np.array([sum(r[f"dataman_{k}"] for k in RATINGS) for r in test], float)
    student_sum = np.sum([predicted[f"dataman_{k}"] for k in RATINGS], axis=0).astype(float)
    report["overall"] = {
        "overall_score_accuracy": report["overall_score"]["accuracy"],
        "overall_score_pearson": _pearson([r["dataman_overall_score"] for r in test],
                                          predicted["dataman_overall_score"]),
        "sum_of_14_pearson": _pearson(teacher_sum, student_sum)}
    return report


def _mean(values) -> float:
    values = list(values)
    return round(float(np.mean(values)), 4) if values else float("nan")


def _pearson(a, b) -> float | None:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return None  # undefined when either side is constant
    return round(float(np.corrcoef(a, b)[0, 1]), 4)


class DataManStudent:
    """The trained classifiers of a student folder."""

    def __init__(self, folder: Path):
        import fasttext

        folder = Path(folder)
        missing = [t for t in TARGETS if not (folder / f"{t}.bin").is_file()]
        if missing:
            raise FileNotFoundError(f"DataMan student {folder} lacks {missing} (.bin); train "
                                    "one with `thresher models train-dataman-student`")
        self.folder = folder
        self.models = {t: fasttext.load_model(str(folder / f"{t}.bin")) for t in TARGETS}
        for target, model in self.models.items():
            problem = nonfinite(model)
            if problem:  # would fail every document that hashes to those rows
                raise ValueError(f"DataMan student {folder / (target + '.bin')} has non-finite "
                                 f"weights ({problem}): retrain it with `thresher models "
                                 "train-dataman-student`")

    def predict(self, texts: list[str]) -> dict[str, list]:
        lines = [student_text(t) for t in texts]
        columns = {}
        for target, model in self.models.items():
            labels, _ = model.predict(lines, k=1)
            values = [label[0][len("__label__"):] for label in labels]
            if target == "domain":
                columns["dataman_domain"] = [v if v in DOMAINS else "O" for v in values]
            else:
                columns[f"dataman_{target}"] = [int(v) for v in values]
        return columns
