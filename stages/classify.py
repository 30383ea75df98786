"""A model classifier as columns (DESIGN.md 4, `classify`): the quality classifiers the
published recipes filter with.

Two engines, each used the way its recipe uses it:
- `fasttext`: a fastText supervised model (`.bin`), as DCLM uses
  `openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train.bin`: the probability of one named
  label (`label: hq` for `__label__hq`), newlines read as spaces (datatrove's
  FastTextClassifierFilter does the same; fastText refuses them).
- `transformers`: a sequence-classification model folder, as FineWeb-Edu's classifier is
  used: with one output (`output: regression`) the logit is the score and the label is
  the score rounded and clipped to [min_label, max_label] (FineWeb-Edu's `int_score`);
  with several (`output: softmax`) the score is the softmax probability of `label` and
  the label is the most probable one. Documents are cut at `max_length` tokens and
  batched by length (longest first), on a GPU when the stage's resources ask for one.

Columns: `classify_score`, `classify_label`, and `classify_keep` when a threshold is
set: `threshold` given, or `keep_top` (DCLM keeps the top 10%: 0.1), a quantile cut
calibrated on the run's sample and saved for later crawls (the calibrated threshold
then holds). Nothing is fetched: model
paths are the user's.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa

from thresher.stages.base import Chart, Resources, Stage

ENGINES = ("fasttext", "transformers")
OUTPUTS = ("auto", "regression", "softmax")


class Classify(Stage):
    name = "classify"
    columns = {"classify_score": pa.float32(), "classify_label": pa.string(),
               "classify_keep": pa.bool_()}
    calibration_columns = ("classify_score",)
    # Only rows every filter so far keeps are classified: the model's time goes to the
    # pool a recipe filters (DCLM's top 10% are of the documents left by then), and
    # keep_top's cut is calibrated on that pool, not on rows already rejected.
    kept_only = True
    default_resources = Resources(batch_size=256)

    def __init__(self, model: str | None = None, engine: str = "fasttext",
                 label: str | None = None, output: str = "auto", max_length: int = 512,
                 batch_size: int = 32, min_label: int = 0, max_label: int = 5,
                 threshold: float | None = None, keep_top: float | None = None,
                 calibration_rows: int = 5000, resources: Resources | None = None):
        super().__init__(resources)
        if not model:
            raise ValueError("classify: give `model`, the path of the classifier (nothing is "
                             "downloaded)")
        if engine not in ENGINES:
            raise ValueError(f"classify: engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        if output not in OUTPUTS:
            raise ValueError(f"classify: output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        model = _resolve(model, engine)
        if not Path(model).exists():
            raise ValueError(f"classify: model {model} does not exist")
        if engine == "fasttext" and not label:
            raise ValueError("classify: a fastText classifier needs `label`, the label whose "
                             "probability is the score (e.g. hq for __label__hq)")
        if keep_top is not None and not 0 < keep_top < 1:
            raise ValueError(f"classify: keep_top is a share of documents in (0, 1), got {keep_top!r}")
        self.model_path, self.engine, self.label, self.output = Path(model), engine, label, output
        self.max_length, self.batch_size = max_length, batch_size
        self.min_label, self.max_label = min_label, max_label
        self.threshold, self.keep_top = threshold, keep_top
        self.calibration_rows = calibration_rows
        self._model = None

    @property
    def needs_calibration(self) -> bool:
        return self.keep_top is not None and self.threshold is None

    def calibrate(self, sample: pa.Table, workdir: Path) -> dict:
        """The score above which the top `keep_top` of the sample lies."""
        scores = [s for s in sample.column("classify_score").to_pylist()
                  if s is not None and math.isfinite(s)]
        if not scores:
            raise ValueError("classify: no document of the sample got a score")
        return {"threshold": float(np.quantile(np.array(scores, np.float64), 1 - self.keep_top))}

    def model_files(self) -> list[Path]:
        if self.model_path.is_dir():
            return sorted(p for p in self.model_path.iterdir() if p.is_file())
        return [self.model_path]

    def memory_estimate(self) -> int:
        return int(super().memory_estimate() * (1.6 if self.engine == "transformers" else 1.1))

    def describe(self) -> dict:
        return {"engine": self.engine, "model": str(self.model_path), "label": self.label,
                "output": self.output, "threshold": self.threshold, "keep_top": self.keep_top}

    def setup(self) -> None:
        self._model = (_FastText(self.model_path, self.label) if self.engine == "fasttext"
                       else _Transformers(self.model_path, self.label, self.output,
                                          self.max_length, self.batch_size, self.min_label,
                                          self.max_label, gpu=bool(self.resources.num_gpus)))

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self._model is None:
            self.setup()
        texts = [t or "" for t in batch.column("text").to_pylist()]
        scores, labels = self._model.classify(texts) if texts else ([], [])
        keep = ([None] * len(texts) if self.threshold is None
                else [s >= self.threshold for s in scores])
        return (batch.append_column("classify_score", pa.array(scores, pa.float32()))
                .append_column("classify_label", pa.array(labels, pa.string()))
                .append_column("classify_keep", pa.array(keep, pa.bool_())))

    def charts(self, curated: pa.Table, rejected: pa.Table, manifest: dict) -> list[Chart]:
        title = "classifier labels (sample)"
        counts: dict[str, dict[str, int]] = {}
        for name, table in (("curated", curated), ("rejected", rejected)):
            if "classify_label" in table.column_names:
                for label in table.column("classify_label").drop_null().to_pylist():
                    counts.setdefault(label, {}).setdefault(name, 0)
                    counts[label][name] += 1
        if not counts:
            return [Chart(title, why_not="no sampled row was classified")]
        labels = sorted(counts)
        return [Chart(title, labels, {k: [counts[label].get(k, 0) for label in labels]
                                      for k in ("curated", "rejected")})]


def _resolve(model: str, engine: str) -> str:
    """A built-in folder name (quality-default: the demo's classifier, built by `make
    setup`) to its fastText file; paths as given."""
    from thresher.models.registry import BUILTIN_DIRS, resolve_dir

    if model in BUILTIN_DIRS:
        folder = resolve_dir(model)
        return str(folder / "model.bin") if engine == "fasttext" else str(folder)
    return model


class _FastText:
    def __init__(self, path: Path, label: str):
        import fasttext

        self.model = fasttext.load_model(str(path))
        self.label = label if label.startswith("__label__") else f"__label__{label}"
        if self.label not in self.model.get_labels():
            raise ValueError(f"classify: {path} has no label {self.label!r}; its labels: "
                             f"{', '.join(self.model.get_labels()[:10])}")

    def classify(self, texts: list[str]) -> tuple[list[float], list[str]]:
        labels, probs = self.model.predict([t.replace("\n", " ") for t in texts], k=-1)
        label, cut = self.label, len("__label__")
        scores = [float(values[names.index(label)]) if label in names else 0.0
                  for names, values in zip(labels, probs)]
        return scores, [names[0][cut:] if names else None for names in labels]


class _Transformers:
    def __init__(self, path: Path, label: str | None, output: str, max_length: int,
                 batch_size: int, min_label: int, max_label: int, gpu: bool):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.torch = torch
        self.device = "cuda" if gpu and torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            str(path), local_files_only=True).to(self.device).eval()
        outputs = self.model.config.num_labels
        self.output = output if output != "auto" else ("regression" if outputs == 1 else "softmax")
        if self.output == "regression" and outputs != 1:
            raise ValueError(f"classify: {path} has {outputs} outputs; regression needs one")
        names = self.model.config.id2label
        self.index = None
        if self.output == "softmax":
            by_name = {str(v): int(k) for k, v in names.items()}
            if label is None or str(label) not in by_name:
                raise ValueError(f"classify: give `label`, one of {', '.join(by_name)} "
                                 f"(the labels of {path})")
            self.index = by_name[str(label)]
        self.names = [str(names[i]) for i in range(outputs)]
        self.max_length, self.batch_size = max_length, batch_size
        self.min_label, self.max_label = min_label, max_label

    def logits(self, texts: list[str]) -> np.ndarray:
        """(documents, outputs) logits, in the input's order; batches of similar length."""
        lengths = [len(t) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        out = np.zeros((len(texts), len(self.names)), np.float32)
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            encoded = self.tokenizer([texts[i] for i in rows], padding="longest",
                                     truncation=True, max_length=self.max_length,
                                     return_tensors="pt").to(self.device)
            with self.torch.inference_mode():
                out[rows] = self.model(**encoded).logits.float().cpu().numpy()
        return out

    def classify(self, texts: list[str]) -> tuple[list[float], list[str]]:
        logits = self.logits(texts)
        if self.output == "regression":
            scores = logits[:, 0]
            labels = [str(int(round(max(self.min_label, min(float(s), self.max_label)))))
                      for s in scores]
            return scores.tolist(), labels
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = shifted / shifted.sum(axis=1, keepdims=True)
        return probs[:, self.index].tolist(), [self.names[i] for i in probs.argmax(axis=1)]
