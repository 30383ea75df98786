"""Choosing tau for the harmful-content filter (Jansen et al. 2022).

A document is flagged harmful when its score (perplexity under the harmful LM, or
the cross-entropy difference) is *below* tau.
  sweep:  with labelled positives (harmful) and negatives, try 100 candidate values
          between the lowest and highest score and keep the one with the best
          macro-F1 over the two classes, as the paper does.
  valley: without labels, tau sits at the lowest point between the two modes of the
          (log-)score distribution of a sample.
"""

from __future__ import annotations


from pathlib import Path

import numpy as np

_MODEL_SUFFIXES = (".arpa.bin", ".binary", ".bin", ".arpa")


def card_path(model: str | Path) -> Path:
    """Where fit-tau writes, and the harm stage reads, a model's tau: next to it,
    `es.arpa.bin` -> `es.tau.json` (also for OSCAR's `.binary` files)."""
    model = Path(model)
    name = model.name
    for suffix in _MODEL_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return model.with_name(name + ".tau.json")


def classify(scores: list[float], tau: float) -> np.ndarray:
    return np.asarray(scores, dtype=float) < tau


def evaluate(positives: list[float], negatives: list[float], tau: float) -> dict:
    """Precision, recall and F1 of the harmful class, F1 of the other, macro-F1."""
    tp = int(classify(positives, tau).sum())
    fn = len(positives) - tp
    fp = int(classify(negatives, tau).sum())
    tn = len(negatives) - fp
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1_harm = _f1(tp, fp, fn)
    f1_clean = _f1(tn, fn, fp)
    return {"tau": tau, "precision": precision, "recall": recall, "f1_harmful": f1_harm,
            "f1_clean": f1_clean, "macro_f1": (f1_harm + f1_clean) / 2,
            "positives": len(positives), "negatives": len(negatives)}


def sweep_tau(positives: list[float], negatives: list[float], candidates: int = 100,
              log: bool = True) -> dict:
    """The candidate tau with the highest macro-F1 (ties: the smallest tau)."""
    if not positives or not negatives:
        raise ValueError("fitting tau needs both harmful and clean examples")
    values = np.asarray(positives + negatives, dtype=float)
    lo, hi = values.min(), values.max()
    grid = np.geomspace(lo, hi, candidates) if log and lo > 0 else np.linspace(lo, hi, candidates)
    results = [evaluate(positives, negatives, float(t)) for t in grid]
    best = max(results, key=lambda r: (r["macro_f1"], -r["tau"]))
    return {**best, "method": "macro-F1 sweep", "candidates": candidates}


def best_rule(card: dict) -> str:
    """The rule with the higher macro-F1 on the labelled examples tau was fitted on
    (validation), the paper's perplexity rule on a tie; a card with one rule names it."""
    def f1(rule):
        fitted = card.get(rule) or {}
        return fitted.get("validation", fitted).get("macro_f1", -1.0)

    return "xent" if f1("xent") > f1("ppl") else "ppl"


def valley_tau(values: list[float], log: bool = True, bins: int = 40) -> float:
    """The lowest point between the two highest modes of the score histogram."""
    x = np.asarray([v for v in values if v is not None and (v > 0 or not log)], dtype=float)
    if len(x) < 20:
        raise ValueError(f"only {len(x)} scored documents: too few to place tau in a valley; "
                         "set tau in the config or fit it on labelled data (thresher models fit-tau)")
    if log:
        x = np.log10(x)
    counts, edges = np.histogram(x, bins=bins)
    smooth = np.convolve(counts, np.array([1, 2, 3, 2, 1]) / 9, mode="same")
    peaks = [i for i in range(len(smooth))
             if smooth[i] > 0 and smooth[i] >= smooth[max(i - 1, 0)]
             and smooth[i] >= smooth[min(i + 1, len(smooth) - 1)]]
    if len(peaks) < 2:
        raise ValueError("the score distribution has a single mode, so there is no valley to "
                         "place tau in; set tau in the config or fit it on labelled data")
    first, second = sorted(sorted(peaks, key=lambda i: smooth[i])[-2:])
    valley = first + int(np.argmin(smooth[first:second + 1]))
    center = (edges[valley] + edges[valley + 1]) / 2
    return float(10 ** center) if log else float(center)


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0



