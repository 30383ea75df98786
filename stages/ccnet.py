"""CCNet perplexity quality buckets (Wenzek et al. 2019; DESIGN.md 4, `ccnet`).

Per language: cc_net's normalization, SentencePiece, a 5-gram KenLM, document
perplexity rounded to 0.1, then head (< p30), middle (< p60) or tail from that
language's cut-offs. Languages without a model get bucket `all` and no perplexity.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa

from thresher.models.kenlm_lm import CCNetLM, lm_dir_languages
from thresher.models.registry import resolve_dir
from thresher.stages.base import Resources, Stage

Cutoffs = dict[str, tuple[float, float]]  # lang -> (head cut-off, tail cut-off)


class CCNetPerplexity(Stage):
    name = "ccnet"
    columns = {"ccnet_ppl": pa.float32(), "ccnet_bucket": pa.string()}
    default_resources = Resources(batch_size=256)
    reads = ("lang",)  # the language picks the model
    calibration_columns = ("lang", "ccnet_ppl")

    def __init__(self, lm_dir: str = "ccnet-default", cutoffs: str | dict | None = None,
                 head_percentile: int = 30, tail_percentile: int = 60,
                 calibration_rows: int = 5000, resources: Resources | None = None):
        super().__init__(resources)
        self.lm_dir = resolve_dir(lm_dir)
        self.languages = lm_dir_languages(self.lm_dir)
        if not self.languages:
            raise ValueError(f"lm_dir {self.lm_dir} holds no <lang>.arpa.bin + <lang>.sp.model pair")
        if not 0 < head_percentile < tail_percentile < 100:
            raise ValueError(f"need 0 < head_percentile < tail_percentile < 100, got "
                             f"{head_percentile}, {tail_percentile}")
        self.head_percentile, self.tail_percentile = head_percentile, tail_percentile
        self.calibration_rows = calibration_rows
        if isinstance(cutoffs, (str, Path)):
            cutoffs = read_cutoff_csv(cutoffs, head_percentile, tail_percentile)
        self.cutoffs: Cutoffs | None = {k: tuple(v) for k, v in cutoffs.items()} if cutoffs else None
        self._models: dict[str, CCNetLM] = {}

    @property
    def needs_calibration(self) -> bool:
        return self.cutoffs is None

    def calibrate(self, sample: pa.Table, workdir: Path) -> dict:
        """Cut-offs per language from the perplexities of a sample of the run."""
        return {"cutoffs": estimate_cutoffs(sample, self.head_percentile, self.tail_percentile)}

    def model_files(self) -> list[Path]:
        return [f for pair in self.languages.values() for f in pair]

    def describe(self) -> dict:
        return {"lm_dir": str(self.lm_dir), "languages": sorted(self.languages),
                "percentiles": [self.head_percentile, self.tail_percentile],
                "cutoffs": self.cutoffs}

    def setup(self) -> None:
        self._models = {lang: CCNetLM(lm, sp) for lang, (lm, sp) in self.languages.items()}

    def __call__(self, batch: pa.Table) -> pa.Table:
        if not self._models:
            self.setup()
        texts = batch.column("text").to_pylist()
        langs = batch.column("lang").to_pylist()
        ppl: list[float | None] = [None] * len(texts)
        for lang, model in self._models.items():
            rows = [i for i, l in enumerate(langs) if l == lang]
            if rows:
                for i, value in zip(rows, model.perplexities([texts[i] for i in rows])):
                    ppl[i] = value
        buckets = [bucket(p, self.cutoffs.get(l) if self.cutoffs else None)
                   for p, l in zip(ppl, langs)]
        batch = batch.append_column("ccnet_ppl", pa.array(ppl, pa.float32()))
        return batch.append_column("ccnet_bucket", pa.array(buckets, pa.string()))


def bucket(ppl: float | None, cutoffs: tuple[float, float] | None) -> str:
    """cc_net's PerplexityBucket: head if ppl < p_head, middle if ppl < p_tail, else tail;
    `all` when the language has no model or no cut-offs."""
    if ppl is None or ppl < 0 or cutoffs is None:
        return "all"
    head, tail = cutoffs
    if ppl < head:
        return "head"
    return "middle" if ppl < tail else "tail"


def estimate_cutoffs(sample: pa.Table, head: int, tail: int, min_docs: int = 20) -> Cutoffs:
    """Per-language percentiles of ccnet_ppl in a sample (languages with too few
    scored documents get none, and so stay in bucket `all`)."""
    by_lang: dict[str, list[float]] = {}
    for lang, ppl in zip(sample.column("lang").to_pylist(), sample.column("ccnet_ppl").to_pylist()):
        if lang is not None and ppl is not None:
            by_lang.setdefault(lang, []).append(ppl)
    return {lang: (float(np.percentile(v, head)), float(np.percentile(v, tail)))
            for lang, v in sorted(by_lang.items()) if len(v) >= min_docs}


def read_cutoff_csv(path: str | Path, head: int, tail: int) -> Cutoffs:
    """cc_net's cutoff.csv: a header of languages, one row per percentile (first column)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cut-off file {path} does not exist")
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    langs = rows[0][1:]
    table = {int(float(r[0])): [float(x) for x in r[1:]] for r in rows[1:] if r}
    missing = [p for p in (head, tail) if p not in table]
    if missing:
        raise ValueError(f"{path}: no row for percentile(s) {missing}")
    return {lang: (table[head][i], table[tail][i]) for i, lang in enumerate(langs)}


def write_cutoff_csv(path: str | Path, cutoffs: Cutoffs, head: int, tail: int) -> None:
    langs = sorted(cutoffs)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["", *langs])
        writer.writerow([head, *(cutoffs[l][0] for l in langs)])
        writer.writerow([tail, *(cutoffs[l][1] for l in langs)])
