"""Aioli vs stratified sampling on the demo crawl's curated documents: the same
proxy, budget and seeds; average test perplexity over groups, with the spread over
seeds, and the wall time of each (Aioli's overhead is its LearnParams evaluations).
Methods: `aioli` (its changing schedule), `aioli_static` (its final p, the mixture
thresher writes, held fixed from the start) and `stratified`.

  python bench/aioli_experiment.py [--output out/demo] [--seeds 0 1 2 3 4] [--steps 2500]

The paper's m=3 setting (Chen et al. 2024: 5k steps in rounds of 250, LearnParams 4
sweeps x 6 steps, ohf 0.5, eta 0.1, gamma 0.5; AdamW, 10% warm-up, cosine, clip 1.0),
scaled to this machine: a 2-layer byte-level proxy instead of Pythia-160M, and 2,500
steps (10 rounds instead of 20). Groups: `lang` of the curated rows (en, de and
`other`), 1,000 documents per group, so that every group has 128 validation and 128
test windows (the script says when one has fewer).
Run `make curate` first: it reads OUT/curated.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from thresher.pipeline.engine.config import MixtureOptions  # noqa: E402
from thresher.pipeline.steps.mixture import estimate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="out/demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--group-by", default="lang")
    parser.add_argument("--docs", type=int, default=1000,
                        help="documents per group (10%% validation, 10%% test)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    base = MixtureOptions(
        group_by=args.group_by, max_groups=2, docs_per_group=args.docs,
        proxy={"context": 64, "width": 64, "layers": 2, "heads": 4, "batch_size": 8,
               "lr": 0.003, "threads": 2, "val_sequences": 128},
        aioli={"total_steps": args.steps, "round_steps": 250, "lp_rounds": 4, "lp_steps": 6,
               "ohf": 0.5, "eta": 0.1, "gamma": 0.5})
    rows = []
    for seed in args.seeds:
        result = estimate(Path(args.output), replace(base, seed=seed))
        for method, r in result["methods"].items():
            rows.append((seed, method, r["test_perplexity_mean"], r["test_loss_mean"],
                         r["seconds"], r["p"][-1]))
        groups, windows = result["groups"], result["methods"]["aioli"]["windows"]
        short = {k: {g: n for g, n in w.items() if n < 128} for k, w in windows.items()}
        if any(short.values()):
            print(f"seed {seed}: fewer than 128 windows: {short} (raise --docs)")
    print(f"groups: {groups}; {args.steps} steps; seeds {args.seeds}; windows per group "
          f"(last seed): validation {windows['val']}, test {windows['test']}")
    print("| seed | method | mean test perplexity | mean test loss | s | final p |")
    print("|---|---|---|---|---|---|")
    for seed, method, ppl, loss, sec, p in rows:
        print(f"| {seed} | {method} | {ppl:.3f} | {loss:.4f} | {sec:.1f} | "
              f"{[round(x, 3) for x in p]} |")
    for method in ("aioli", "aioli_static", "stratified"):
        ppl = np.array([r[2] for r in rows if r[1] == method])
        sec = np.array([r[4] for r in rows if r[1] == method])
        print(f"{method}: mean test perplexity {ppl.mean():.3f} +- "
              f"{ppl.std(ddof=1) if len(ppl) > 1 else 0:.3f} over {len(ppl)} seeds; "
              f"{sec.mean():.1f} s a run")
    stratified = [r for r in rows if r[1] == "stratified"]
    for method in ("aioli", "aioli_static"):
        wins = sum(a[2] < s[2] for a, s in zip([r for r in rows if r[1] == method], stratified))
        print(f"{method} lower than stratified in {wins} of {len(args.seeds)} seeds")


if __name__ == "__main__":
    main()
